/*  metrics.c — histograms recorded on the broker's hot path; /metrics served by libmicrohttpd.

    Two threads meet here and share nothing but one inproc socket pair:

        MHD thread:  GET /metrics -> [seq] on the asking socket, waits (bounded) for [seq, text]
        broker loop: zloop reader on the answering socket -> render (arg, chunk) -> [seq, text]

    The broker thread never blocks on the HTTP side and never takes a lock; the mutex below only
    serialises HTTP requests among themselves (libmicrohttpd may run handlers concurrently in
    other threading modes). A reply that comes after its request gave up (503) carries an old
    sequence number and is dropped by the next request. */
#define _GNU_SOURCE
#include "metrics.h"
#include "tuning.h"
#include "gq_json.h"
#include "gq_check.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef GQ_HAVE_MHD
#include <microhttpd.h>
#if MHD_VERSION < 0x00097002
typedef int s_mhd_result_t;  /* before 0.9.71 handlers returned int */
#else
typedef enum MHD_Result s_mhd_result_t;
#endif
#endif

#define S_BUCKETS           16    /* most bounds a histogram may have (+Inf comes on top) */
#define S_CONTENT_TYPE      "text/plain; version=0.0.4; charset=utf-8"

typedef struct {
    const char *name;               /* metric name, Prometheus style */
    const char *help;               /* HELP text */
    double divisor;                 /* recorded unit -> exported unit (1e6: us -> s) */
    size_t nbounds;                 /* bounds in use */
    double bounds[S_BUCKETS];       /* upper bounds in the recorded unit, ascending */
    uint64_t counts[S_BUCKETS + 1]; /* observations per bucket (not cumulative); last is +Inf */
    double sum;                     /* sum of observations, recorded unit */
    uint64_t count;                 /* observations */
} s_hist_t;

struct _gq_metrics_t {
    s_hist_t hists[GQ_HISTS];       /* one per gq_hist_t; written by the broker thread only */
    zloop_t *loop;                  /* the broker's loop (not owned) */
    gq_metrics_render_fn *render;   /* makes the text of one scrape, on the loop thread */
    void *arg;                      /* for render */
    zsock_t *answerer;              /* PAIR, loop side: requests in, texts out */
    zsock_t *asker;                 /* PAIR, HTTP side: used under mutex only */
    pthread_mutex_t mutex;          /* serialises HTTP requests over asker */
    bool have_mutex;                /* mutex was initialised */
    int64_t seq;                    /* last request number (under mutex) */
    int reply_timeout_ms;           /* how long a request waits for the loop */
    atomic_bool stopping;           /* destroy began: waiting requests give up */
    atomic_bool starting;           /* in MHD_start_daemon: its complaints are ours to explain */
#ifdef GQ_HAVE_MHD
    struct MHD_Daemon *daemon;      /* the HTTP server, or NULL */
#endif
};

/* ---- Histograms: recording and Prometheus text --------------------------------------------- */

static void
s_hist_init (s_hist_t *h, const char *name, const char *help, double divisor,
             const double *bounds, size_t nbounds)
{
    assert (nbounds <= S_BUCKETS);
    h->name = name;
    h->help = help;
    h->divisor = divisor;
    h->nbounds = nbounds;
    memcpy (h->bounds, bounds, nbounds * sizeof *bounds);
}

void
gq_metrics_observe (gq_metrics_t *self, gq_hist_t hist, double value)
{
    if (!self || (unsigned) hist >= GQ_HISTS || isnan (value)) {
        return;
    }
    s_hist_t *h = &self->hists[hist];
    size_t b = 0;
    while (b < h->nbounds && value > h->bounds[b]) {
        b++;
    }
    h->counts[b]++;  /* b == nbounds: the +Inf bucket */
    h->sum += value;
    h->count++;
}

/* The shortest text that reads back as the same double, plain where it reads well ("0.005",
   "30", "1.53") and with an exponent where it is tiny or huge ("5e-07"). */
static void
s_format_double (double value, char *buf, size_t size)
{
    if (isinf (value)) {
        snprintf (buf, size, value > 0 ? "+Inf" : "-Inf");
        return;
    }
    int digits = 1;
    while (digits < 17) {
        snprintf (buf, size, "%.*e", digits - 1, value);
        if (strtod (buf, NULL) == value) {
            break;
        }
        digits++;
    }
    const char *e = strchr (buf, 'e');
    int exponent = e ? atoi (e + 1) : 0;
    if (exponent >= -4 && exponent < 15) {
        int decimals = digits - 1 - exponent;
        snprintf (buf, size, "%.*f", decimals > 0 ? decimals : 0, value);
    } else {
        snprintf (buf, size, "%.*g", digits, value);
    }
}

void
gq_metrics_render_histograms (gq_metrics_t *self, zchunk_t *out)
{
    if (!self || !out) {
        return;
    }
    for (int i = 0; i < GQ_HISTS; i++) {
        s_hist_t *h = &self->hists[i];
        gq_chunk_printf (out, "# HELP %s %s\n# TYPE %s histogram\n", h->name, h->help, h->name);
        uint64_t cumulative = 0;
        char le[40];
        for (size_t b = 0; b < h->nbounds; b++) {
            cumulative += h->counts[b];
            s_format_double (h->bounds[b] / h->divisor, le, sizeof le);
            gq_chunk_printf (out, "%s_bucket{le=\"%s\"} %llu\n", h->name, le,
                            (unsigned long long) cumulative);
        }
        cumulative += h->counts[h->nbounds];
        gq_chunk_printf (out, "%s_bucket{le=\"+Inf\"} %llu\n", h->name,
                        (unsigned long long) cumulative);
        char sum[40];
        s_format_double (h->sum / h->divisor, sum, sizeof sum);
        gq_chunk_printf (out, "%s_sum %s\n%s_count %llu\n", h->name, sum, h->name,
                        (unsigned long long) h->count);
    }
}

#ifdef GQ_HAVE_MHD
/* ---- The loop side: one request in, the text of one scrape out ----------------------------- */

static int
s_on_request (zloop_t *loop, zsock_t *reader, void *arg)
{
    gq_metrics_t *self = (gq_metrics_t *) arg;
    zmsg_t *request = zmsg_recv (reader);
    if (!request) {
        return 0;
    }
    zframe_t *seq = zmsg_pop (request);
    zmsg_destroy (&request);
    if (!seq) {
        return 0;
    }
    zchunk_t *text = zchunk_new (NULL, 16384);
    self->render (self->arg, text);
    zmsg_t *reply = zmsg_new ();
    zmsg_append (reply, &seq);
    zmsg_addmem (reply, zchunk_data (text), zchunk_size (text));
    zchunk_destroy (&text);
    /* sndtimeo 0: never blocks the loop, whatever the HTTP side does. */
    if (zmsg_send (&reply, reader) < 0) {
        zmsg_destroy (&reply);
    }
    return 0;
}

/* ---- The HTTP side (libmicrohttpd's thread) ------------------------------------------------ */

/* Asks the loop for the text of one scrape. Returns it (caller frees, *size set) or NULL when
   the loop did not answer in time. Called on the HTTP thread; takes the mutex. */
static char *
s_ask_loop (gq_metrics_t *self, size_t *size)
{
    char *text = NULL;
    pthread_mutex_lock (&self->mutex);
    int64_t seq = ++self->seq;
    zmsg_t *request = zmsg_new ();
    zmsg_addmem (request, &seq, sizeof seq);
    if (zmsg_send (&request, self->asker) < 0) {
        zmsg_destroy (&request);
        pthread_mutex_unlock (&self->mutex);
        return NULL;
    }
    int64_t deadline = zclock_mono () + self->reply_timeout_ms;
    void *handle = zsock_resolve (self->asker);
    while (!text && !atomic_load (&self->stopping)) {
        int64_t left = deadline - zclock_mono ();
        if (left <= 0) {
            break;
        }
        zmq_pollitem_t item = {handle, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll (&item, 1, left < GQ_METRICS_POLL_SLICE_MS ? (long) left : GQ_METRICS_POLL_SLICE_MS);
        if (rc < 0 && zmq_errno () != EINTR) {
            break;
        }
        if (rc <= 0) {
            continue;
        }
        zmsg_t *reply = zmsg_recv (self->asker);
        zframe_t *got = reply ? zmsg_first (reply) : NULL;
        zframe_t *body = reply ? zmsg_next (reply) : NULL;
        int64_t got_seq = -1;
        if (got && zframe_size (got) == sizeof got_seq) {
            memcpy (&got_seq, zframe_data (got), sizeof got_seq);
        }
        /* A late answer to a request that gave up: not ours, drop it. */
        if (body && got_seq == seq) {
            *size = zframe_size (body);
            text = (char *) malloc (*size + 1);
            if (text) {
                memcpy (text, zframe_data (body), *size);
                text[*size] = 0;
            }
        }
        zmsg_destroy (&reply);
    }
    pthread_mutex_unlock (&self->mutex);
    return text;
}

static s_mhd_result_t
s_respond (struct MHD_Connection *connection, unsigned int status, const char *body, size_t size)
{
    struct MHD_Response *response =
        MHD_create_response_from_buffer (size, (void *) body, MHD_RESPMEM_MUST_COPY);
    if (!response) {
        return MHD_NO;
    }
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, S_CONTENT_TYPE);
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED) {
        MHD_add_response_header (response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    }
    s_mhd_result_t rc = MHD_queue_response (connection, status, response);
    MHD_destroy_response (response);
    return rc;
}

static s_mhd_result_t
s_on_http (void *cls, struct MHD_Connection *connection, const char *url, const char *method,
           const char *version, const char *upload_data, size_t *upload_data_size, void **state)
{
    static int first_call_seen;  /* address only: marks a request whose headers we have seen */
    gq_metrics_t *self = (gq_metrics_t *) cls;
    if (*state == NULL) {
        /* libmicrohttpd calls twice: headers first, then (with any body) to answer. */
        *state = &first_call_seen;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;  /* a body we do not want: swallow it */
        return MHD_YES;
    }
    if (strcmp (method, "GET") != 0 && strcmp (method, "HEAD") != 0) {
        const char *text = "only GET is served here\n";
        return s_respond (connection, MHD_HTTP_METHOD_NOT_ALLOWED, text, strlen (text));
    }
    if (strcmp (url, "/metrics") != 0) {
        const char *text = "not found: gridq serves /metrics\n";
        return s_respond (connection, MHD_HTTP_NOT_FOUND, text, strlen (text));
    }
    size_t size = 0;
    char *text = s_ask_loop (self, &size);
    if (!text) {
        const char *busy = "the broker loop did not answer in time; try again\n";
        return s_respond (connection, MHD_HTTP_SERVICE_UNAVAILABLE, busy, strlen (busy));
    }
    s_mhd_result_t rc = s_respond (connection, MHD_HTTP_OK, text, size);
    free (text);
    return rc;
}

static void
s_on_mhd_log (void *cls, const char *format, va_list args)
{
    gq_metrics_t *self = (gq_metrics_t *) cls;
    char text[512];
    vsnprintf (text, sizeof text, format, args);
    size_t n = strlen (text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r')) {
        text[--n] = 0;
    }
    if (atomic_load (&self->starting)) {
        /* A failed start is explained once, by gq_metrics_new's reason. */
        zsys_debug ("metrics: %s", text);
    } else {
        zsys_warning ("metrics: %s", text);
    }
}
#endif /* GQ_HAVE_MHD */

/* ---- Construction -------------------------------------------------------------------------- */


gq_metrics_t *
gq_metrics_new (const char *host_port, zloop_t *loop, gq_metrics_render_fn *render, void *arg,
                char *why, size_t whylen)
{
    struct sockaddr_in addr;
    if (host_port) {
        if (gq_parse_host_port (host_port, "--metrics", 9090, &addr, why, whylen)) {
            return NULL;
        }
#ifndef GQ_HAVE_MHD
        snprintf (why, whylen,
                  "--metrics %s: this gridq-broker was built without libmicrohttpd (install "
                  "libmicrohttpd-dev and rebuild)",
                  host_port);
        return NULL;
#endif
        if (!loop || !render) {
            snprintf (why, whylen, "--metrics needs the broker loop");
            return NULL;
        }
    }
    gq_metrics_t *self = (gq_metrics_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    static const double match_us[] = {0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000};
    static const double latency_ms[] = {1,   2,   5,    10,   25,    50,    100,
                                        250, 500, 1000, 5000, 30000, 300000};
    static const double writes[] = {1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000, 20000};
    s_hist_init (&self->hists[GQ_HIST_MATCH_US], "gridq_match_decision_seconds",
                 "Time the matcher took to place one job.", 1e6, match_us,
                 sizeof match_us / sizeof *match_us);
    s_hist_init (&self->hists[GQ_HIST_LATENCY_MS], "gridq_job_latency_seconds",
                 "Time from dispatch to a worker until the job's result, for jobs done.", 1e3,
                 latency_ms, sizeof latency_ms / sizeof *latency_ms);
    s_hist_init (&self->hists[GQ_HIST_COMMIT_BATCH], "gridq_commit_batch_writes",
                 "Store writes grouped in one SQLite commit.", 1, writes,
                 sizeof writes / sizeof *writes);
    self->reply_timeout_ms = GQ_METRICS_REPLY_TIMEOUT_MS;
    atomic_init (&self->stopping, false);
    atomic_init (&self->starting, false);
    if (!host_port) {
        return self;
    }
#ifdef GQ_HAVE_MHD
    self->loop = loop;
    self->render = render;
    self->arg = arg;
    if (pthread_mutex_init (&self->mutex, NULL) != 0) {
        snprintf (why, whylen, "metrics: cannot create a mutex");
        gq_metrics_destroy (&self);
        return NULL;
    }
    self->have_mutex = true;
    /* A name never used before in this process: a closed socket's inproc name is released
       asynchronously, so reusing one (an address malloc gave again) could find it still bound. */
    static atomic_uint instances;
    char endpoint[64];
    snprintf (endpoint, sizeof endpoint, "inproc://gq-metrics-%u",
              atomic_fetch_add (&instances, 1));
    self->answerer = zsock_new (ZMQ_PAIR);
    self->asker = zsock_new (ZMQ_PAIR);
    if (!self->answerer || !self->asker || zsock_bind (self->answerer, "%s", endpoint) < 0 ||
        zsock_connect (self->asker, "%s", endpoint) < 0) {
        snprintf (why, whylen, "metrics: cannot create the inproc socket pair");
        gq_metrics_destroy (&self);
        return NULL;
    }
    /* Neither side ever blocks on a send: a request or a reply nobody takes is dropped. */
    zsock_set_linger (self->answerer, 0);
    zsock_set_sndtimeo (self->answerer, 0);
    zsock_set_linger (self->asker, 0);
    zsock_set_sndtimeo (self->asker, 0);
    if (zloop_reader (loop, self->answerer, s_on_request, self) < 0) {
        snprintf (why, whylen, "metrics: cannot register with the broker loop");
        gq_metrics_destroy (&self);
        return NULL;
    }
    /* One internal thread polls and answers; MHD_OPTION_SOCK_ADDR decides the address (the
       port argument only shows in libmicrohttpd's own messages). */
    /* The HTTP thread inherits a mask that blocks SIGINT and SIGTERM, so that they reach the
       broker thread and wake its poll at once (libzmq does the same for its own threads). */
    sigset_t block, saved;
    sigemptyset (&block);
    sigaddset (&block, SIGINT);
    sigaddset (&block, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &block, &saved);
    atomic_store (&self->starting, true);
    self->daemon = MHD_start_daemon (
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, ntohs (addr.sin_port), NULL, NULL,
        s_on_http, self, MHD_OPTION_EXTERNAL_LOGGER, s_on_mhd_log, self, MHD_OPTION_SOCK_ADDR,
        (struct sockaddr *) &addr, MHD_OPTION_CONNECTION_LIMIT, (unsigned int) GQ_METRICS_HTTP_CONNECTIONS,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) GQ_METRICS_HTTP_IDLE_S, MHD_OPTION_END);
    atomic_store (&self->starting, false);
    pthread_sigmask (SIG_SETMASK, &saved, NULL);
    if (!self->daemon) {
        gq_explain_bind (&addr, host_port, "/metrics", why, whylen);
        gq_metrics_destroy (&self);
        return NULL;
    }
    zsys_info ("metrics: serving http://%s/metrics", host_port);
#endif
    return self;
}

void
gq_metrics_destroy (gq_metrics_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_metrics_t *self = *self_p;
    atomic_store (&self->stopping, true);
#ifdef GQ_HAVE_MHD
    if (self->daemon) {
        /* Joins the HTTP thread; a request waiting for the loop gives up within a slice. */
        MHD_stop_daemon (self->daemon);
        self->daemon = NULL;
    }
#endif
    if (self->answerer) {
        if (self->loop) {
            zloop_reader_end (self->loop, self->answerer);
        }
        zsock_destroy (&self->answerer);
    }
    zsock_destroy (&self->asker);
    if (self->have_mutex) {
        pthread_mutex_destroy (&self->mutex);
    }
    free (self);
    *self_p = NULL;
}

/* ---- A plain HTTP GET, for the selftest and the tests ------------------------------------ */

int
gq_metrics_http_get (int port, const char *path, char **body, char *ctype, size_t ctlen)
{
    *body = NULL;
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons ((uint16_t) port);
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    struct timeval tv = {5, 0};
    if (fd < 0) {
        return -1;
    }
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    if (connect (fd, (struct sockaddr *) &addr, sizeof addr) < 0) {
        close (fd);
        return -1;
    }
    char request[256];
    int n = snprintf (request, sizeof request, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    if (send (fd, request, (size_t) n, MSG_NOSIGNAL) != n) {
        close (fd);
        return -1;
    }
    size_t size = 0, cap = 65536;
    char *buf = (char *) malloc (cap);
    ssize_t got;
    while (buf && (got = recv (fd, buf + size, cap - size - 1, 0)) > 0) {
        size += (size_t) got;
        if (cap - size < 2) {
            cap *= 2;
            buf = (char *) realloc (buf, cap);
        }
    }
    close (fd);
    if (!buf) {
        return -1;
    }
    buf[size] = 0;
    int status = -1;
    char *headers_end = strstr (buf, "\r\n\r\n");
    if (sscanf (buf, "HTTP/1.%*d %d", &status) != 1 || !headers_end) {
        free (buf);
        return -1;
    }
    *headers_end = 0;
    ctype[0] = 0;
    const char *ct = strcasestr (buf, "\r\nContent-Type: ");
    if (ct) {
        ct += 16;
        size_t len = strcspn (ct, "\r\n");
        snprintf (ctype, ctlen, "%.*s", (int) len, ct);
    }
    *body = strdup (headers_end + 4);
    free (buf);
    return status;
}

/* ---- Selftest ------------------------------------------------------------------------------ */

#define S_CHECK(cond)                                                                         \
    do {                                                                                      \
        if (!(cond)) {                                                                        \
            fprintf (stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);         \
            abort ();                                                                         \
        }                                                                                     \
    } while (0)
/* The value of the sample line "NAME VALUE" (NAME with its labels, exactly), or NAN. */
static double
s_sample (const char *text, const char *name)
{
    size_t len = strlen (name);
    const char *line = text;
    while (line && *line) {
        if (strncmp (line, name, len) == 0 && line[len] == ' ') {
            return strtod (line + len + 1, NULL);
        }
        line = strchr (line, '\n');
        line = line ? line + 1 : NULL;
    }
    return NAN;
}

/* Checks the text-format grammar of every line and, for each histogram, that the buckets are
   cumulative, end with +Inf and that +Inf equals _count. Returns the histograms seen. */
static int
s_check_exposition (const char *text)
{
    int histograms = 0;
    char *copy = strdup (text);
    char *saveptr = NULL;
    char current[128] = "";     /* histogram whose buckets we are reading */
    double last = -1;
    bool inf_seen = false;
    for (char *line = strtok_r (copy, "\n", &saveptr); line;
         line = strtok_r (NULL, "\n", &saveptr)) {
        if (line[0] == '#') {
            char kind[8] = "", name[128] = "", type[32] = "";
            S_CHECK (sscanf (line, "# %7s %127s %31s", kind, name, type) >= 2);
            S_CHECK (streq (kind, "HELP") || streq (kind, "TYPE"));
            if (streq (kind, "TYPE") && streq (type, "histogram")) {
                snprintf (current, sizeof current, "%s", name);
                last = -1;
                inf_seen = false;
                histograms++;
            }
            continue;
        }
        /* NAME[{labels}] VALUE */
        char *space = strrchr (line, ' ');
        S_CHECK (space && space != line);
        char *end;
        double value = strtod (space + 1, &end);
        S_CHECK (*end == 0 && !isnan (value));
        size_t clen = strlen (current);
        if (clen && strncmp (line, current, clen) == 0) {
            const char *suffix = line + clen;
            if (strncmp (suffix, "_bucket{le=\"", 12) == 0) {
                S_CHECK (!inf_seen);
                S_CHECK (value >= last);  /* cumulative */
                last = value;
                inf_seen = strncmp (suffix + 12, "+Inf\"}", 6) == 0;
            } else if (strncmp (suffix, "_count ", 7) == 0) {
                S_CHECK (inf_seen);
                S_CHECK (value == last);
            } else {
                S_CHECK (strncmp (suffix, "_sum ", 5) == 0);
            }
        }
    }
    free (copy);
    return histograms;
}

typedef struct {
    gq_metrics_t *metrics;  /* whose histograms are rendered */
    int renders;            /* scrapes answered */
} s_test_state_t;

static void
s_test_render (void *arg, zchunk_t *out)
{
    s_test_state_t *state = (s_test_state_t *) arg;
    state->renders++;
    gq_chunk_printf (out, "# HELP test_renders_total Scrapes answered.\n"
                         "# TYPE test_renders_total counter\ntest_renders_total %d\n",
                    state->renders);
    gq_metrics_render_histograms (state->metrics, out);
}

#ifdef GQ_HAVE_MHD
/* The scraper runs in its own thread, as Prometheus would: it GETs /metrics and /nope and sends
   back "STATUS CTYPE", body, "STATUS" for each. */
static void
s_scraper (zsock_t *pipe, void *arg)
{
    int port = (int) (intptr_t) arg; /* a value: nothing shared with the test's stack */
    zsock_signal (pipe, 0);
    char *body, ctype[128];
    int status = gq_metrics_http_get (port, "/metrics", &body, ctype, sizeof ctype);
    zstr_sendm (pipe, "metrics");
    zstr_sendfm (pipe, "%d", status);
    zstr_sendm (pipe, ctype);
    zstr_send (pipe, body ? body : "");
    free (body);
    status = gq_metrics_http_get (port, "/nope", &body, ctype, sizeof ctype);
    free (body);
    zstr_sendf (pipe, "%d", status);
    /* Wait for $TERM, so that zactor_destroy sees our exit signal and nobody else does. */
    char *command = zstr_recv (pipe);
    zstr_free (&command);
}

typedef struct {
    char *status;  /* "200" */
    char *ctype;   /* Content-Type */
    char *body;    /* the text */
    char *status404; /* status of /nope */
} s_scrape_t;

static int
s_on_scraped (zloop_t *loop, zsock_t *reader, void *arg)
{
    s_scrape_t *scrape = (s_scrape_t *) arg;
    char *tag = NULL;
    zstr_recvx (reader, &tag, &scrape->status, &scrape->ctype, &scrape->body, NULL);
    zstr_free (&tag);
    scrape->status404 = zstr_recv (reader);
    return -1;  /* ends the loop */
}

static int
s_on_deadline (zloop_t *loop, int timer_id, void *arg)
{
    fprintf (stderr, "metrics: the scrape did not finish in time\n");
    abort ();
}

/* Runs loop until one scrape by a scraper thread is done. */
static void
s_scrape_once (zloop_t *loop, int port, s_scrape_t *scrape)
{
    memset (scrape, 0, sizeof *scrape);
    zactor_t *scraper = zactor_new (s_scraper, (void *) (intptr_t) port);
    S_CHECK (scraper);
    zloop_reader (loop, zactor_sock (scraper), s_on_scraped, scrape);
    int timer = zloop_timer (loop, 20000, 1, s_on_deadline, NULL);
    zloop_start (loop);
    zloop_timer_end (loop, timer);
    zloop_reader_end (loop, zactor_sock (scraper));
    zactor_destroy (&scraper);
}

static void
s_scrape_free (s_scrape_t *scrape)
{
    zstr_free (&scrape->status);
    zstr_free (&scrape->ctype);
    zstr_free (&scrape->body);
    zstr_free (&scrape->status404);
}

static int
s_test_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    S_CHECK (fd >= 0);
    S_CHECK (bind (fd, (struct sockaddr *) &addr, sizeof addr) == 0);
    S_CHECK (getsockname (fd, (struct sockaddr *) &addr, &len) == 0);
    close (fd);
    return ntohs (addr.sin_port);
}

/* A server on HOST and a port that was free a moment ago; another process may take the port
   in between, so a few ports are tried. Sets *port and host_port. */
static gq_metrics_t *
s_test_server (const char *host, zloop_t *loop, s_test_state_t *state, int *port,
               char *host_port, size_t size)
{
    char why[256] = "";
    for (int attempt = 0; attempt < 5; attempt++) {
        *port = s_test_free_port ();
        snprintf (host_port, size, "%s:%d", host, *port);
        gq_metrics_t *metrics =
            gq_metrics_new (host_port, loop, s_test_render, state, why, sizeof why);
        if (metrics) {
            state->metrics = metrics;
            return metrics;
        }
    }
    fprintf (stderr, "metrics: %s\n", why);
    abort ();
}
#endif /* GQ_HAVE_MHD */

void
gq_metrics_test (bool verbose)
{
    printf (" * metrics: ");
    char why[256];

    /* Recording only: observations land in the right buckets, rendered cumulative, in
       seconds for *_seconds. */
    gq_metrics_t *metrics = gq_metrics_new (NULL, NULL, NULL, NULL, why, sizeof why);
    S_CHECK (metrics);
    gq_metrics_observe (metrics, GQ_HIST_MATCH_US, 0.3);    /* <= 0.5 us */
    gq_metrics_observe (metrics, GQ_HIST_MATCH_US, 3);      /* <= 5 us */
    gq_metrics_observe (metrics, GQ_HIST_MATCH_US, 5);      /* <= 5 us: bounds are inclusive */
    gq_metrics_observe (metrics, GQ_HIST_MATCH_US, 7000);   /* +Inf */
    gq_metrics_observe (metrics, GQ_HIST_MATCH_US, NAN);    /* ignored */
    gq_metrics_observe (metrics, GQ_HIST_LATENCY_MS, 30);   /* <= 50 ms */
    gq_metrics_observe (metrics, GQ_HIST_LATENCY_MS, 1500); /* <= 5000 ms */
    gq_metrics_observe (metrics, GQ_HIST_COMMIT_BATCH, 7);  /* <= 10 writes */
    gq_metrics_observe (metrics, GQ_HISTS, 1);              /* no such histogram: ignored */
    gq_metrics_observe (NULL, GQ_HIST_MATCH_US, 1);         /* no metrics: ignored */
    zchunk_t *chunk = zchunk_new (NULL, 4096);
    gq_metrics_render_histograms (metrics, chunk);
    char *text = zchunk_strdup (chunk);
    zchunk_destroy (&chunk);
    if (verbose) {
        printf ("\n%s", text);
    }
    GQ_CHECK_EQ (s_check_exposition (text), 3);
    S_CHECK (strstr (text, "# TYPE gridq_match_decision_seconds histogram\n"));
    S_CHECK (strstr (text, "# HELP gridq_job_latency_seconds "));
    GQ_CHECK_EQ (s_sample (text, "gridq_match_decision_seconds_bucket{le=\"5e-07\"}"), 1);
    GQ_CHECK_EQ (s_sample (text, "gridq_match_decision_seconds_bucket{le=\"2e-06\"}"), 1);
    GQ_CHECK_EQ (s_sample (text, "gridq_match_decision_seconds_bucket{le=\"5e-06\"}"), 3);
    GQ_CHECK_EQ (s_sample (text, "gridq_match_decision_seconds_bucket{le=\"0.005\"}"), 3);
    GQ_CHECK_EQ (s_sample (text, "gridq_match_decision_seconds_bucket{le=\"+Inf\"}"), 4);
    GQ_CHECK_EQ (s_sample (text, "gridq_match_decision_seconds_count"), 4);
    S_CHECK (fabs (s_sample (text, "gridq_match_decision_seconds_sum") - 7008.3e-6) < 1e-12);
    GQ_CHECK_EQ (s_sample (text, "gridq_job_latency_seconds_bucket{le=\"0.025\"}"), 0);
    GQ_CHECK_EQ (s_sample (text, "gridq_job_latency_seconds_bucket{le=\"0.05\"}"), 1);
    GQ_CHECK_EQ (s_sample (text, "gridq_job_latency_seconds_bucket{le=\"1\"}"), 1);
    GQ_CHECK_EQ (s_sample (text, "gridq_job_latency_seconds_bucket{le=\"5\"}"), 2);
    GQ_CHECK_EQ (s_sample (text, "gridq_job_latency_seconds_bucket{le=\"300\"}"), 2);
    S_CHECK (fabs (s_sample (text, "gridq_job_latency_seconds_sum") - 1.53) < 1e-12);
    GQ_CHECK_EQ (s_sample (text, "gridq_commit_batch_writes_bucket{le=\"5\"}"), 0);
    GQ_CHECK_EQ (s_sample (text, "gridq_commit_batch_writes_bucket{le=\"10\"}"), 1);
    GQ_CHECK_EQ (s_sample (text, "gridq_commit_batch_writes_sum"), 7);
    GQ_CHECK_EQ (s_sample (text, "gridq_commit_batch_writes_count"), 1);
    zstr_free (&text);
    gq_metrics_destroy (&metrics);
    gq_metrics_destroy (&metrics);  /* safe twice */

    /* Addresses: IPv4 or localhost and a port, refused clearly otherwise. */
    const char *bad[] = {"9090", ":9090", "example.com:9090", "[::1]:9090", "::1:9090",
                         "127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:90x",
                         "300.1.1.1:9090"};
    zloop_t *loop = zloop_new ();
    s_test_state_t state = {NULL, 0};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        why[0] = 0;
        S_CHECK (!gq_metrics_new (bad[i], loop, s_test_render, &state, why, sizeof why));
        S_CHECK (strstr (why, "--metrics"));
        if (verbose) {
            printf ("   %s -> %s\n", bad[i], why);
        }
    }

#ifdef GQ_HAVE_MHD
    /* The server: scraped from another thread while the loop runs here. */
    int port;
    char host_port[64];
    metrics = s_test_server ("127.0.0.1", loop, &state, &port, host_port, sizeof host_port);
    gq_metrics_observe (metrics, GQ_HIST_LATENCY_MS, 12);
    gq_metrics_observe (metrics, GQ_HIST_LATENCY_MS, 12000);
    s_scrape_t scrape;
    s_scrape_once (loop, port, &scrape);
    GQ_CHECK_STR (scrape.status, "200");
    S_CHECK (strstr (scrape.ctype, "text/plain; version=0.0.4"));
    GQ_CHECK_STR (scrape.status404, "404");
    GQ_CHECK_EQ (s_check_exposition (scrape.body), 3);
    GQ_CHECK_EQ (s_sample (scrape.body, "test_renders_total"), 1);
    GQ_CHECK_EQ (s_sample (scrape.body, "gridq_job_latency_seconds_bucket{le=\"0.025\"}"), 1);
    GQ_CHECK_EQ (s_sample (scrape.body, "gridq_job_latency_seconds_bucket{le=\"30\"}"), 2);
    GQ_CHECK_EQ (s_sample (scrape.body, "gridq_job_latency_seconds_count"), 2);
    s_scrape_free (&scrape);

    /* A second server on the same port is refused with the reason. */
    gq_metrics_t *twin = gq_metrics_new (host_port, loop, s_test_render, &state, why, sizeof why);
    S_CHECK (!twin);
    S_CHECK (strstr (why, "in use"));

    /* The loop does not run: the scrape gives up with 503 (and does not hang). */
    pthread_mutex_lock (&metrics->mutex);   /* the HTTP thread reads it under the mutex */
    metrics->reply_timeout_ms = 200;
    pthread_mutex_unlock (&metrics->mutex);
    char *body, ctype[128];
    int64_t t0 = zclock_mono ();
    GQ_CHECK_EQ (gq_metrics_http_get (port, "/metrics", &body, ctype, sizeof ctype), 503);
    S_CHECK (zclock_mono () - t0 < 5000);
    free (body);
    /* The late answer to that request is dropped; the next scrape gets its own. */
    s_scrape_once (loop, port, &scrape);
    GQ_CHECK_STR (scrape.status, "200");
    GQ_CHECK_EQ (s_sample (scrape.body, "test_renders_total"), 3);
    s_scrape_free (&scrape);
    gq_metrics_destroy (&metrics);

    /* localhost works too. */
    metrics = s_test_server ("localhost", loop, &state, &port, host_port, sizeof host_port);
    s_scrape_once (loop, port, &scrape);
    GQ_CHECK_STR (scrape.status, "200");
    s_scrape_free (&scrape);
    gq_metrics_destroy (&metrics);
#else
    why[0] = 0;
    S_CHECK (!gq_metrics_new ("127.0.0.1:9090", loop, s_test_render, &state, why, sizeof why));
    S_CHECK (strstr (why, "built without libmicrohttpd"));
    printf ("(no libmicrohttpd: HTTP part skipped) ");
#endif
    zloop_destroy (&loop);
    printf ("OK\n");
}
