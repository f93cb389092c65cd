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
#include "request.h"
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
    gw_rules_t rules;          /* what request.c checks against */
    gw_relay_t *relay;         /* where calls go (not owned) */
    struct MHD_Daemon *daemon; /* the server */
};

/* ---- Requests ------------------------------------------------------------------------------ */

static const char *
s_header (void *cls, const char *name)
{
    return MHD_lookup_connection_value ((struct MHD_Connection *) cls, MHD_HEADER_KIND, name);
}

static const char *
s_arg (void *cls, const char *name)
{
    return MHD_lookup_connection_value ((struct MHD_Connection *) cls, MHD_GET_ARGUMENT_KIND,
                                        name);
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
    if (call->challenge) {
        MHD_add_response_header (response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
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
    gw_request_t request = {method, url, s_header, s_arg, connection};
    if (gw_request_check (&self->rules, &request, call, gq_mono_us ()) != 0) {
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
    zsys_info ("gateway: %s %s %u %.1f ms %s%s", call->method, call->path, status, ms,
               *call->token ? call->token : "-",
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
    self->rules.tokens = opts->tokens;
    self->rules.max_body = opts->max_body;
    self->rules.chat_kind = gw_relay_kind (relay, true);
    self->rules.completion_kind = gw_relay_kind (relay, false);
    self->rules.affinity = (gw_affinity_t) opts->affinity;
    struct sockaddr_in addr = opts->addr;
    self->daemon = MHD_start_daemon (
        MHD_USE_AUTO_INTERNAL_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG,
        ntohs (addr.sin_port), NULL, NULL, s_on_request, self, MHD_OPTION_EXTERNAL_LOGGER,
        s_on_mhd_log, self, MHD_OPTION_NOTIFY_COMPLETED, s_on_completed, self,
        MHD_OPTION_SOCK_ADDR, (struct sockaddr *) &addr, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int) GW_HTTP_CONNECTIONS, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int) opts->idle_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t) GW_HTTP_MEMORY_BYTES, MHD_OPTION_END);
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
