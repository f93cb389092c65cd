/*  call.h — one HTTP request on its way through the gateway, shared by two threads.

    The HTTP thread (libmicrohttpd) creates a call, fills in what the request asks (op, job id,
    body), and posts it to the relay; the relay (the broker thread) answers it through the
    functions below, which lock the call, set the answer and resume the connection when the
    HTTP thread had suspended it. Fields are grouped by who may touch them. A call is
    reference-counted: the HTTP side, the relay and a streamed response each hold one. */
#ifndef GW_CALL_H_INCLUDED
#define GW_CALL_H_INCLUDED

#include <czmq.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "gq_common.h"
#include "tokens.h"

struct MHD_Connection;

typedef enum {
    GW_OP_HEALTH,  /* GET /healthz: PING */
    GW_OP_SUBMIT,  /* POST /v1/jobs: SUBMIT */
    GW_OP_STATUS,  /* GET /v1/jobs/{id}[?wait=]: [WAIT], STATUS[, RESULT] */
    GW_OP_LIST,    /* GET /v1/jobs: JOBS */
    GW_OP_CANCEL,  /* DELETE /v1/jobs/{id}: CANCEL */
    GW_OP_NODES,   /* GET /v1/nodes: NODES */
    GW_OP_STATS,   /* GET /v1/stats: STATS */
    GW_OP_EXPLAIN, /* GET /v1/jobs/{id}/explain: EXPLAIN */
    GW_OP_EVENTS,  /* GET /v1/jobs/{id}/events: WAIT + STATUS, then an SSE stream */
    GW_OP_MODELS,  /* GET /v1/models: NODES */
    GW_OP_INFER    /* POST /v1/chat/completions, /v1/completions: NODES, SUBMIT with watch */
} gw_op_t;

typedef struct _gw_call_t gw_call_t;
struct _gw_call_t {
    /* ---- Set by the HTTP thread before the call is posted; read-only afterwards ---- */
    gw_op_t op;                        /* what the request asks */
    struct MHD_Connection *connection; /* its connection (valid until the completed callback) */
    bool openai;                       /* errors in OpenAI's shape */
    int64_t id;                        /* the job id in the path, or 0 */
    int64_t wait_ms;                   /* GW_OP_STATUS: ?wait=, 0 for none */
    int64_t after_seq;                 /* GW_OP_EVENTS: Last-Event-ID (the partials after it are
                                          replayed, as far as the broker keeps them), -2 none */
    json_t *body;                      /* the request's JSON (owned), or NULL */
    bool batch;                        /* GW_OP_SUBMIT: {"jobs": [...]} */
    bool stream;                       /* GW_OP_INFER: "stream": true */
    bool usage_asked;                  /* GW_OP_INFER: stream_options.include_usage given */
    char kind[GQ_KIND_MAX];            /* GW_OP_INFER: the job's kind */
    char model[GQ_MODEL_MAX];          /* GW_OP_INFER: the body's model */
    char affinity[GQ_AFFINITY_MAX];    /* GW_OP_INFER: the job's affinity key, or "" */
    char state[16];                    /* GW_OP_LIST: ?state=, or "" */
    int64_t limit;                     /* GW_OP_LIST: ?limit=, or 0 */
    char token[GW_TOKEN_NAME_MAX];     /* the bearer token's name, "" without --tokens */
    bool admin;                        /* may see every job, the nodes, the stats (true
                                          without --tokens) */

    /* ---- Shared: under mutex ---- */
    pthread_mutex_t mutex;
    bool suspended;           /* the HTTP thread suspended the connection; the relay resumes it */
    bool answered;            /* status, content type and text are set */
    bool streaming;           /* the answer is an SSE stream: text grows until ended */
    bool ended;               /* the stream is complete */
    bool aborted;             /* close the connection without (more of) an answer */
    unsigned status;          /* HTTP status of the answer */
    int64_t retry_after_s;    /* Retry-After, or 0 */
    char *location;           /* Location header (malloc'd), or NULL */
    char *text;               /* the answer's body (malloc'd); for a stream, what is not sent */
    size_t len;               /* bytes in text */
    size_t sent;              /* stream: bytes of text handed to libmicrohttpd */
    atomic_int refs;          /* holders: the HTTP side, the relay, a streamed response */
    /* Bumped (release) by the thread that posts the call to the relay, read (acquire) by the
       relay when it takes it: the pipe carries the pointer, this the ordering of everything
       written before, in terms that the C memory model and ThreadSanitizer see. */
    atomic_uint handoff;

    /* ---- The HTTP thread only ---- */
    int64_t started_us;       /* when the request came (monotonic), for the log line */
    char method[16];          /* for the log line */
    char path[256];           /* for the log line */
    char *upload;             /* the body as it comes (malloc'd), or NULL */
    size_t upload_len;        /* bytes in upload */
    bool too_big;             /* the body passed --max-body: 413 */
    bool posted;              /* handed to the relay */
    const char *allow;        /* the Allow header of a 405, or NULL */
    char allow_text[32];      /* what allow points at */
    bool challenge;           /* a 401: WWW-Authenticate: Bearer */

    /* ---- The relay only ---- */
    int stage;                /* where the relay is in the op (relay.c) */
    int64_t req;              /* the broker request awaited, or 0 */
    int64_t job;              /* the job followed (watched), or 0 */
    int64_t deadline_us;      /* monotonic: when the current stage gives up, or 0 */
    bool watching;            /* in the watch of job */
    bool gone;                /* the HTTP side is done with it (the client left, or it ended) */
    bool state_sent;          /* GW_OP_EVENTS: the first "state" event is out */
    int64_t last_seq;         /* the seq of the last partial passed on, -1 before: a partial
                                 that comes twice (two broker watches of one job) goes once */
    char *held;               /* GW_OP_EVENTS: events that came before the first state */
    json_t *finished;         /* GW_OP_EVENTS: FINISHED's job, held until the state is out */
    void *handle;             /* its item in the relay's list of calls */
    int64_t submitted;        /* jobs counted against the token's --max-queued, awaiting SUBMIT */
};

/* A call for a request on connection (borrowed), one reference (the caller's). NULL on OOM. */
gw_call_t *gw_call_new (struct MHD_Connection *connection, const char *method, const char *url);
/* One more holder. */
gw_call_t *gw_call_ref (gw_call_t *self);
/* Drops the caller's reference and NULLs *self_p; the last frees the call. */
void gw_call_unref (gw_call_t **self_p);

/* ---- Answers (either thread; they resume the connection when it waits) ---- */
/* A one-shot JSON answer; takes body. */
void gw_call_reply (gw_call_t *self, unsigned status, json_t *body);
/* An error answer: {"error": {"message", "field"?, "code"}} for REST, {"error": {"message",
   "type", "param", "code"}} for OpenAI calls. field and code may be NULL. */
void gw_call_error (gw_call_t *self, unsigned status, const char *code, const char *field,
                    const char *format, ...) __attribute__ ((format (printf, 5, 6)));
/* Starts an SSE answer: 200, text/event-stream. */
void gw_call_stream_open (gw_call_t *self);
/* Appends to a stream; false (and nothing appended) when the client is more than
   GW_STREAM_BUFFER_BYTES behind. */
bool gw_call_stream_write (gw_call_t *self, const char *text);
/* The stream is complete: it ends once the client has it all. */
void gw_call_stream_end (gw_call_t *self);
/* Closes the connection without (more of) an answer. */
void gw_call_abort (gw_call_t *self);
/* true when the connection waits (suspended) and its client has closed it: only then can the
   relay look at its socket without racing the HTTP thread. */
bool gw_call_client_left (gw_call_t *self);

/* ---- The HTTP thread ---- */
/* Suspends the connection unless an answer is there already; true when it suspended. */
bool gw_call_suspend (gw_call_t *self);
/* Copies up to max bytes of a stream into buf: the count, 0 after suspending the connection
   when nothing is there yet, -1 at its end, -2 when it was aborted. */
ssize_t gw_call_stream_read (gw_call_t *self, char *buf, size_t max);

#endif
