/*  http.h — the gateway's HTTP side: libmicrohttpd, routes, bodies, answers (see http.c). */
#ifndef GW_HTTP_H_INCLUDED
#define GW_HTTP_H_INCLUDED

#include <netinet/in.h>

#include "relay.h"
#include "tokens.h"

typedef struct _gw_http_t gw_http_t;

typedef struct {
    struct sockaddr_in addr; /* where to listen */
    const char *listen;      /* the same as given ("127.0.0.1:8080"), for messages */
    size_t max_body;         /* request bodies above this many bytes get 413 */
    unsigned idle_s;         /* a connection idle (not waiting on the relay) this long closes */
    gw_tokens_t *tokens;     /* bearer tokens (borrowed), or NULL: none needed */
    int affinity;            /* gw_affinity_t (request.h): chat requests' affinity keys */
} gw_http_opts_t;

/* Starts serving; calls go to relay (borrowed; it must outlive the server). NULL with a
   reason in why. */
gw_http_t *gw_http_new (const gw_http_opts_t *opts, gw_relay_t *relay, char *why, size_t whylen);
/* Stops serving (closing every connection) and frees. Stop the relay first: it answers what
   it holds, so that no connection waits. */
void gw_http_destroy (gw_http_t **self_p);

#endif
