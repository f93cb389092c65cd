/*  http.c — the gateway's HTTP side, on libmicrohttpd.

    One internal polling thread (epoll where there is one) serves every connection. Its
    callbacks never block: a request is parsed and checked here (routes, methods, body size,
    content type, JSON), answered here when it is wrong, and otherwise posted to the relay
    (relay.c) and its connection suspended. The relay answers it through call.h and resumes
    the connection; libmicrohttpd then calls the access handler again, which queues the answer.
    A stream (SSE) is a callback response whose reader suspends the connection whenever it has
    sent all there is, and is resumed by the relay's next write. So a waiting request, however
    long it waits, holds no thread: one thread serves thousands of waiters, which a
    thread-per-connection server could not. */
#define _GNU_SOURCE
#include "http.h"
#include "tuning.h"

#include <arpa/inet.h>
#include <microhttpd.h>
#include <signal.h>
#include <string.h>

#if MHD_VERSION < 0x00097002
typedef int s_mhd_result_t; /* before 0.9.71 handlers returned int */
#else
typedef enum MHD_Result s_mhd_result_t;
#endif

struct _gw_http_t {
    gw_http_opts_t opts;       /* as given */
    gw_relay_t *relay;         /* where calls go (not owned) */
    struct MHD_Daemon *daemon; /* the server */
};

/* ---- Routes -------------------------------------------------------------------------------- */

typedef struct {
    const char *path;   /* "{id}" matches one path segment */
    const char *method; /* GET, POST or DELETE */
    gw_op_t op;
    bool openai;        /* errors in OpenAI's shape */
} s_route_t;

static const s_route_t s_routes[] = {
    {"/healthz", "GET", GW_OP_HEALTH, false},
    {"/v1/jobs", "POST", GW_OP_SUBMIT, false},
    {"/v1/jobs", "GET", GW_OP_LIST, false},
    {"/v1/jobs/{id}", "GET", GW_OP_STATUS, false},
    {"/v1/jobs/{id}", "DELETE", GW_OP_CANCEL, false},
    {"/v1/jobs/{id}/explain", "GET", GW_OP_EXPLAIN, false},
    {"/v1/jobs/{id}/events", "GET", GW_OP_EVENTS, false},
    {"/v1/nodes", "GET", GW_OP_NODES, false},
    {"/v1/stats", "GET", GW_OP_STATS, false},
    {"/v1/models", "GET", GW_OP_MODELS, true},
    {"/v1/chat/completions", "POST", GW_OP_INFER, true},
    {"/v1/completions", "POST", GW_OP_INFER, true},
};
#define S_ROUTES (sizeof s_routes / sizeof *s_routes)

/* Whether url matches pattern; the {id} segment into id (NULL-terminated, at most 31 bytes). */
static bool
s_match (const char *pattern, const char *url, char id[32])
{
    const char *hole = strstr (pattern, "{id}");
    if (!hole) {
        return streq (pattern, url);
    }
    size_t head = (size_t) (hole - pattern);
    if (strncmp (url, pattern, head) != 0) {
        return false;
    }
    const char *segment = url + head;
    size_t n = strcspn (segment, "/");
    if (n == 0 || n >= 32) {
        return false;
    }
    memcpy (id, segment, n);
    id[n] = 0;
    return streq (segment + n, hole + 4);
}

/* ---- Requests ------------------------------------------------------------------------------ */

static const char *
s_arg (gw_call_t *call, const char *name)
{
    return MHD_lookup_connection_value (call->connection, MHD_GET_ARGUMENT_KIND, name);
}

/* The body as a JSON object into call->body; false after answering 400 or 415. */
static bool
s_parse_body (gw_call_t *call)
{
    const char *type = MHD_lookup_connection_value (call->connection, MHD_HEADER_KIND,
                                                    MHD_HTTP_HEADER_CONTENT_TYPE);
    if (type && strncasecmp (type, "application/json", 16) != 0) {
        gw_call_error (call, 415, "unsupported_media_type", NULL,
                       "the body must be application/json, not %s", type);
        return false;
    }
    json_error_t error;
    call->body = call->upload ? json_loadb (call->upload, call->upload_len, JSON_REJECT_DUPLICATES,
                                            &error)
                              : NULL;
    if (!call->upload) {
        gw_call_error (call, 400, "invalid_json", NULL, "the request needs a JSON body");
        return false;
    }
    if (!call->body) {
        gw_call_error (call, 400, "invalid_json", NULL, "the body is not JSON: %s (line %d)",
                       error.text, error.line);
        return false;
    }
    if (!json_is_object (call->body)) {
        gw_call_error (call, 400, "invalid_json", NULL, "the body must be a JSON object");
        return false;
    }
    return true;
}

/* What an op needs of the request, checked; false after answering. */
static bool
s_prepare (gw_http_t *self, gw_call_t *call, const char *url, const char *id)
{
    if (*id) {
        int64_t value;
        if (gq_parse_int (id, 1, INT64_MAX, &value) != 0) {
            gw_call_error (call, 404, "NOT_FOUND", NULL, "no job \"%s\": ids are numbers", id);
            return false;
        }
        call->id = value;
    }
    const char *text;
    switch (call->op) {
    case GW_OP_SUBMIT:
        if (!s_parse_body (call)) {
            return false;
        }
        if (json_object_get (call->body, "jobs")) {
            json_t *jobs = json_object_get (call->body, "jobs");
            if (!json_is_array (jobs) || json_array_size (jobs) == 0) {
                gw_call_error (call, 400, "BAD_REQUEST", "jobs",
                               "\"jobs\" must be a non-empty array of job objects");
                return false;
            }
            call->batch = true;
        }
        return true;
    case GW_OP_STATUS:
        if ((text = s_arg (call, "wait"))) {
            if (gq_parse_duration_ms (text, &call->wait_ms) != 0 || call->wait_ms < 0) {
                gw_call_error (call, 400, "BAD_REQUEST", "wait",
                               "wait=%s is not a duration like 30s or 500ms", text);
                return false;
            }
            call->wait_ms = call->wait_ms > GW_MAX_WAIT_MS ? GW_MAX_WAIT_MS : call->wait_ms;
        }
        return true;
    case GW_OP_LIST:
        if ((text = s_arg (call, "state"))) {
            static const char *states[] = {"queued", "running", "done", "failed", "cancelled"};
            bool known = false;
            for (size_t i = 0; i < 5; i++) {
                known |= streq (text, states[i]);
            }
            if (!known) {
                gw_call_error (call, 400, "BAD_REQUEST", "state",
                               "state=%s is not one of queued, running, done, failed, cancelled",
                               text);
                return false;
            }
            snprintf (call->state, sizeof call->state, "%s", text);
        }
        if ((text = s_arg (call, "limit")) &&
            gq_parse_int (text, 1, GQ_MAX_IDS, &call->limit) != 0) {
            gw_call_error (call, 400, "BAD_REQUEST", "limit", "limit=%s is not in 1..%d", text,
                           GQ_MAX_IDS);
            return false;
        }
        return true;
    case GW_OP_INFER: {
        if (!s_parse_body (call)) {
            return false;
        }
        const char *model = json_string_value (json_object_get (call->body, "model"));
        if (!model) {
            gw_call_error (call, 400, "missing_model", "model",
                           "the request needs \"model\", a string");
            return false;
        }
        if (!gq_valid_name (model, GQ_MODEL_MAX)) {
            gw_call_error (call, 404, "model_not_found", "model",
                           "The model '%.200s' does not exist", model);
            return false;
        }
        snprintf (call->model, sizeof call->model, "%s", model);
        bool chat = streq (url, "/v1/chat/completions");
        snprintf (call->kind, sizeof call->kind, "%s", gw_relay_kind (self->relay, chat));
        call->stream = json_is_true (json_object_get (call->body, "stream"));
        call->usage_asked = json_is_true (
            json_object_get (json_object_get (call->body, "stream_options"), "include_usage"));
        return true;
    }
    default:
        return true;
    }
}

/* Finds the route, checks the request; false after answering (404, 405, 4xx). */
static bool
s_route (gw_http_t *self, gw_call_t *call, const char *url, const char *method)
{
    char id[32] = "";
    const s_route_t *route = NULL;
    bool path_known = false;
    static char allow[S_ROUTES][32];
    for (size_t i = 0; i < S_ROUTES && !route; i++) {
        char got[32] = "";
        if (s_match (s_routes[i].path, url, got)) {
            path_known = true;
            call->openai = s_routes[i].openai;
            if (streq (method, s_routes[i].method)) {
                route = &s_routes[i];
                memcpy (id, got, sizeof id);
            } else if (!call->allow) {
                /* Every method of this path, e.g. "GET, DELETE": built once per route. */
                if (!*allow[i]) {
                    char text[32] = "";
                    for (size_t j = 0; j < S_ROUTES; j++) {
                        if (streq (s_routes[j].path, s_routes[i].path)) {
                            size_t n = strlen (text);
                            snprintf (text + n, sizeof text - n, "%s%s", n ? ", " : "",
                                      s_routes[j].method);
                        }
                    }
                    memcpy (allow[i], text, sizeof text);
                }
                call->allow = allow[i];
            }
        }
    }
    if (!path_known) {
        gw_call_error (call, 404, "not_found", NULL, "no such path: %s", url);
        return false;
    }
    if (!route) {
        gw_call_error (call, 405, "method_not_allowed", NULL, "%s %s: the methods here are %s",
                       method, url, call->allow);
        return false;
    }
    call->allow = NULL;
    call->op = route->op;
    if (call->too_big) {
        gw_call_error (call, 413, "too_big", NULL, "the body is larger than --max-body (%zu bytes)",
                       self->opts.max_body);
        return false;
    }
    return s_prepare (self, call, url, id);
}

/* ---- Answers ------------------------------------------------------------------------------- */

static ssize_t
s_read_stream (void *cls, uint64_t pos, char *buf, size_t max)
{
    (void) pos;
    return gw_call_stream_read ((gw_call_t *) cls, buf, max);
}

static void
s_free_stream (void *cls)
{
    gw_call_t *call = (gw_call_t *) cls;
    gw_call_unref (&call);
}

/* Queues the call's answer; MHD_NO (close the connection) when it was aborted. */
static s_mhd_result_t
s_queue (gw_call_t *call)
{
    pthread_mutex_lock (&call->mutex);
    bool aborted = call->aborted;
    bool streaming = call->streaming;
    unsigned status = call->status;
    int64_t retry_after_s = call->retry_after_s;
    char location[64] = "";
    if (call->location) {
        snprintf (location, sizeof location, "%s", call->location);
    }
    struct MHD_Response *response = NULL;
    if (!aborted && !streaming) {
        response = MHD_create_response_from_buffer (call->len, call->text, MHD_RESPMEM_MUST_COPY);
    }
    pthread_mutex_unlock (&call->mutex);
    if (aborted) {
        return MHD_NO;
    }
    if (streaming) {
        response = MHD_create_response_from_callback (MHD_SIZE_UNKNOWN, GW_SSE_BLOCK_BYTES,
                                                      s_read_stream, gw_call_ref (call),
                                                      s_free_stream);
    }
    if (!response) {
        return MHD_NO;
    }
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE,
                             streaming ? "text/event-stream; charset=utf-8" : "application/json");
    if (streaming) {
        MHD_add_response_header (response, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    }
    if (retry_after_s > 0) {
        char value[24];
        snprintf (value, sizeof value, "%lld", (long long) retry_after_s);
        MHD_add_response_header (response, MHD_HTTP_HEADER_RETRY_AFTER, value);
    }
    if (*location) {
        MHD_add_response_header (response, MHD_HTTP_HEADER_LOCATION, location);
    }
    if (call->allow) {
        MHD_add_response_header (response, MHD_HTTP_HEADER_ALLOW, call->allow);
    }
    s_mhd_result_t rc = MHD_queue_response (call->connection, status, response);
    MHD_destroy_response (response);
    return rc;
}

/* ---- libmicrohttpd's callbacks (its thread) ------------------------------------------------ */

static s_mhd_result_t
s_on_request (void *cls, struct MHD_Connection *connection, const char *url, const char *method,
              const char *version, const char *upload, size_t *upload_size, void **state)
{
    gw_http_t *self = (gw_http_t *) cls;
    gw_call_t *call = (gw_call_t *) *state;
    (void) version;
    if (!call) {
        /* Headers only: a body announced too big is refused before it is read. */
        call = gw_call_new (connection, method, url);
        if (!call) {
            return MHD_NO;
        }
        *state = call;
        const char *length = MHD_lookup_connection_value (connection, MHD_HEADER_KIND,
                                                          MHD_HTTP_HEADER_CONTENT_LENGTH);
        int64_t bytes;
        if (length && gq_parse_int (length, 0, INT64_MAX, &bytes) == 0 &&
            (uint64_t) bytes > self->opts.max_body) {
            call->too_big = true;
            gw_call_error (call, 413, "too_big", NULL,
                           "the body (%lld bytes) is larger than --max-body (%zu bytes)",
                           (long long) bytes, self->opts.max_body);
            return s_queue (call);
        }
        return MHD_YES;
    }
    if (*upload_size) {
        /* A body past the limit (chunked, so not announced) is read and dropped: answered 413. */
        if (!call->too_big && call->upload_len + *upload_size <= self->opts.max_body) {
            char *grown = (char *) realloc (call->upload, call->upload_len + *upload_size);
            if (!grown) {
                return MHD_NO;
            }
            memcpy (grown + call->upload_len, upload, *upload_size);
            call->upload = grown;
            call->upload_len += *upload_size;
        } else {
            call->too_big = true;
            free (call->upload);
            call->upload = NULL;
            call->upload_len = 0;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (call->posted) {
        /* Resumed by the relay: the answer is there (or the connection is to close). */
        return gw_call_suspend (call) ? MHD_YES : s_queue (call);
    }
    if (!s_route (self, call, url, method)) {
        return s_queue (call);
    }
    if (gw_relay_post (self->relay, call) != 0) {
        gw_call_error (call, 503, "stopping", NULL, "the gateway is stopping");
        return s_queue (call);
    }
    call->posted = true;
    return gw_call_suspend (call) ? MHD_YES : s_queue (call);
}

/* The request is over (answered, or its client left): the log line, and the relay is told. */
static void
s_on_completed (void *cls, struct MHD_Connection *connection, void **state,
                enum MHD_RequestTerminationCode toe)
{
    gw_http_t *self = (gw_http_t *) cls;
    gw_call_t *call = (gw_call_t *) *state;
    (void) connection;
    if (!call) {
        return;
    }
    *state = NULL;
    pthread_mutex_lock (&call->mutex);
    unsigned status = call->answered ? call->status : 0;
    pthread_mutex_unlock (&call->mutex);
    double ms = (double) (gq_mono_us () - call->started_us) / 1000.0;
    zsys_info ("gateway: %s %s %u %.1f ms%s", call->method, call->path, status, ms,
               toe == MHD_REQUEST_TERMINATED_COMPLETED_OK ? "" : " (connection closed early)");
    if (call->posted) {
        gw_relay_gone (self->relay, &call);
    } else {
        gw_call_unref (&call);
    }
}

static void
s_on_mhd_log (void *cls, const char *format, va_list args)
{
    char text[512];
    (void) cls;
    vsnprintf (text, sizeof text, format, args);
    size_t n = strlen (text);
    while (n && (text[n - 1] == '\n' || text[n - 1] == '\r')) {
        text[--n] = 0;
    }
    zsys_warning ("gateway: libmicrohttpd: %s", text);
}

/* ---- Construction -------------------------------------------------------------------------- */

gw_http_t *
gw_http_new (const gw_http_opts_t *opts, gw_relay_t *relay, char *why, size_t whylen)
{
    gw_http_t *self = (gw_http_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    self->opts = *opts;
    self->relay = relay;
    struct sockaddr_in addr = opts->addr;
    self->daemon = MHD_start_daemon (
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
        ntohs (addr.sin_port), NULL, NULL, s_on_request, self, MHD_OPTION_EXTERNAL_LOGGER,
        s_on_mhd_log, self, MHD_OPTION_NOTIFY_COMPLETED, s_on_completed, self,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int) GW_HTTP_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int) GW_HTTP_IDLE_S, MHD_OPTION_END);
    if (!self->daemon) {
        gq_explain_bind (&addr, opts->listen, "HTTP", why, whylen);
        free (self);
        return NULL;
    }
    return self;
}

void
gw_http_destroy (gw_http_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    MHD_stop_daemon ((*self_p)->daemon);
    free (*self_p);
    *self_p = NULL;
}
