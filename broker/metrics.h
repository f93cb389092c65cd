/*  metrics.h — Prometheus text at /metrics (libmicrohttpd), and the counters and histograms the
    broker loop records on its hot path (plain increments: no lock, no allocation).

    The HTTP server runs in libmicrohttpd's thread; it never reads broker state. It asks the
    broker loop over an inproc socket, and the loop answers with the text made by render: the
    broker stays the only thread that touches its state. */
#ifndef GQ_METRICS_H_INCLUDED
#define GQ_METRICS_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

typedef enum {
    GQ_HIST_MATCH_US = 0,    /* matcher decision time, microseconds */
    GQ_HIST_LATENCY_MS = 1,  /* dispatch to result, milliseconds */
    GQ_HIST_COMMIT_BATCH = 2,/* store writes grouped in one commit */
    GQ_HISTS = 3
} gq_hist_t;

typedef struct _gq_metrics_t gq_metrics_t;

/* Makes the text for one scrape: appends Prometheus text to out (a zchunk). */
typedef void (gq_metrics_render_fn) (void *arg, zchunk_t *out);

/* Starts serving /metrics on host_port ("127.0.0.1:9090"), answering from loop through render.
   host_port NULL: records only (no server). NULL with a reason on a bad address or a port in use. */
gq_metrics_t *gq_metrics_new (const char *host_port, zloop_t *loop, gq_metrics_render_fn *render,
                              void *arg, char *why, size_t whylen);
void gq_metrics_destroy (gq_metrics_t **self_p);
/* Records one observation. */
void gq_metrics_observe (gq_metrics_t *self, gq_hist_t hist, double value);
/* Appends the histograms in Prometheus text (for render functions). */
void gq_metrics_render_histograms (gq_metrics_t *self, zchunk_t *out);

/* A plain HTTP/1.0 GET of path on 127.0.0.1:port (5 s timeouts), for tests and scrapers of
   /metrics: returns the status, or -1 when it could not connect or read a response; *body is
   the body (malloc'd, the caller frees; NULL on -1), ctype the Content-Type ("" when none). */
int gq_metrics_http_get (int port, const char *path, char **body, char *ctype, size_t ctlen);

void gq_metrics_test (bool verbose);

#endif
