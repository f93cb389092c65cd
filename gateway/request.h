/*  request.h — what the gateway checks of a request before the broker sees it, on bytes alone:
    the token, the rate, the route and method, the role, the query, the body and its JSON, and
    the owner tag of submitted jobs (see request.c). No socket and no libmicrohttpd here, so that
    tests/fuzz_gateway.c can feed it anything. */
#ifndef GW_REQUEST_H_INCLUDED
#define GW_REQUEST_H_INCLUDED

#include "call.h"
#include "tokens.h"

/* A request as the HTTP thread has it. */
typedef struct {
    const char *method;                                 /* "GET", ... */
    const char *url;                                    /* the path, without the query */
    const char *(*header) (void *cls, const char *name); /* a header's value, or NULL */
    const char *(*arg) (void *cls, const char *name);    /* a query argument, or NULL */
    void *cls;                                           /* for header and arg */
} gw_request_t;

/* Where a chat request's affinity key comes from (--affinity). */
typedef enum {
    GW_AFFINITY_PREFIX,  /* X-Session-Id when given, else the conversation's leading messages */
    GW_AFFINITY_SESSION, /* X-Session-Id only */
    GW_AFFINITY_OFF      /* none */
} gw_affinity_t;

/* What the checks depend on (borrowed). */
typedef struct {
    gw_tokens_t *tokens;         /* NULL: no tokens, every request may do everything */
    size_t max_body;             /* for the 413's message */
    const char *chat_kind;       /* the job kind of /v1/chat/completions */
    const char *completion_kind; /* the job kind of /v1/completions */
    gw_affinity_t affinity;      /* how chat requests get their affinity key */
} gw_rules_t;

/* Checks request against rules and fills in call (its upload and too_big are set already: the
   body has been read). 0 when call is ready for the relay; otherwise the HTTP status that call
   was answered with. now_us feeds the token's rate bucket. */
unsigned gw_request_check (const gw_rules_t *rules, const gw_request_t *request, gw_call_t *call,
                           int64_t now_us);

#endif
