/*  gq_client.c — libgridq's client API: one DEALER socket to the broker, many requests in
    flight matched by their "req" correlation id, every call bounded by the client's timeout.

    Messages that arrive for a request nobody is waiting on yet (FINISHED for a watched SUBMIT,
    replies to requests sent with gq_client_send) are kept in a pending list, in arrival order,
    for gq_client_recv and gq_client_wait. */
#include "gq_client.h"
#include "gq_check.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <unistd.h>

#include "gq_json.h"
#include "gq_msg.h"
#include "gq_spec.h"

/* A WAIT is sent again after this much silence (or the client timeout, if longer); the period
   doubles while nothing arrives, up to GQ_CLIENT_REWAIT_MAX_MS, so that a long job does not make
   the client flood the broker, yet a restarted broker hears from us again soon. */
#define GQ_CLIENT_REWAIT_MIN_MS 1000
#define GQ_CLIENT_REWAIT_MAX_MS 10000
/* A SUBMIT whose jobs all carry idem keys is sent this many more times within the timeout. */
#define GQ_CLIENT_IDEM_RESENDS  2
/* Requests in flight at once while submitting a large batch in chunks. */
#define GQ_CLIENT_SUBMIT_WINDOW 4
/* Timed-out requests remembered, so that their late replies are dropped, not kept forever. */
#define GQ_CLIENT_ABANDONED     64
/* Messages the socket may queue for us; ROUTER drops above the peer's HWM, so keep it high. */
#define GQ_CLIENT_RCVHWM        100000
#define GQ_CLIENT_LINGER_MS     200

struct _gq_client_t {
    zsock_t *sock;               /* DEALER connected to the broker */
    char *endpoint;              /* the broker endpoint, as connected */
    int timeout_ms;              /* bound on each call */
    int64_t last_req;            /* last correlation id used; ids increase from 1 */
    zlistx_t *pending;           /* gq_msg_t: received, not yet claimed, in arrival order */
    int64_t abandoned[GQ_CLIENT_ABANDONED]; /* ring of timed-out req ids */
    size_t n_abandoned;          /* entries written to abandoned, ever */
    int64_t *watched;            /* ids submitted with watch whose FINISHED is on its way */
    size_t n_watched;            /* used entries of watched */
    size_t cap_watched;          /* allocated entries of watched */
    size_t submit_chunk;         /* jobs per SUBMIT when splitting a batch */
    size_t submit_window;        /* SUBMITs in flight at once */
    size_t rate_retries;         /* RATE_LIMITED refusals of a chunk, with nothing accepted
                                    meanwhile, after which a submit gives up past its timeout */
    size_t refused_first;        /* input index of the chunk the broker refused in the last */
    size_t refused_count;        /* submit, and its jobs (0: none was refused) */
    int errcode;                 /* gq_err_t of the last failure */
    int64_t error_index;         /* input job index named by the last ERROR, or -1 */
    char error[1024];            /* text of the last failure */
    gq_client_partial_fn *partial_fn; /* where PARTIAL messages go, or NULL (dropped) */
    void *partial_arg;           /* partial_fn's first argument */
};

/* ---- Errors -------------------------------------------------------------------------------- */

static void
s_set_error (gq_client_t *self, int code, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

static void
s_set_error (gq_client_t *self, int code, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (self->error, sizeof self->error, format, args);
    va_end (args);
    self->errcode = code;
}

/* The one text users see when the broker is silent; tests and scripts match it. */
static void
s_set_timeout (gq_client_t *self, int timeout_ms)
{
    s_set_error (self, GQ_ETIMEOUT,
                 "no broker answered at %s within %g s: is gridq-broker running?", self->endpoint,
                 timeout_ms / 1000.0);
}

/* Turns an ERROR body into the client's error: "CODE: message". Returns the code. */
static int
s_set_error_reply (gq_client_t *self, json_t *body, int64_t index_base)
{
    const char *name = json_string_value (json_object_get (body, "code"));
    const char *message = json_string_value (json_object_get (body, "message"));
    json_t *index = json_object_get (body, "index");
    int code = gq_err_from_name (name);
    /* An unknown code is still the broker refusing; PROTOCOL is what gq_err_from_name says. */
    s_set_error (self, code, "%s: %s", name ? name : "PROTOCOL",
                 message ? message : "(no message)");
    self->error_index = json_is_integer (index) ? index_base + json_integer_value (index) : -1;
    return code;
}

static void
s_msg_destructor (void **item)
{
    gq_msg_destroy ((gq_msg_t **) item);
}

/* ---- Certificates -------------------------------------------------------------------------- */

static const char *
s_option (const char *given, const char *env)
{
    if (given && *given) {
        return given;
    }
    const char *value = getenv (env);
    return value && *value ? value : NULL;
}

/* Loads a certificate; with need_secret it must hold a secret key. NULL with a reason. */
static zcert_t *
s_load_cert (const char *path, bool need_secret, char *why, size_t whylen)
{
    if (access (path, R_OK) != 0) {
        snprintf (why, whylen, "cannot load certificate %s: %s", path, strerror (errno));
        return NULL;
    }
    zcert_t *cert = zcert_load (path);
    if (!cert) {
        snprintf (why, whylen,
                  "cannot load certificate %s: not a ZeroMQ certificate (make one with "
                  "gridq-keygen)",
                  path);
        return NULL;
    }
    /* zcert_load fills a missing secret key with zeros, which Z85 writes as forty '0'. */
    if (need_secret && strspn (zcert_secret_txt (cert), "0") == 40) {
        snprintf (why, whylen,
                  "cannot load certificate %s: it holds no secret key (give NAME.secret, not "
                  "NAME.pub)",
                  path);
        zcert_destroy (&cert);
        return NULL;
    }
    return cert;
}

/* Applies CURVE to the socket when certificates are configured. 0, or -1 with a reason. */
static int
s_apply_curve (zsock_t *sock, const gq_client_opts_t *opts, char *why, size_t whylen)
{
    const char *cert_path = s_option (opts->cert_path, "GRIDQ_CERT");
    const char *server_path = s_option (opts->server_cert_path, "GRIDQ_SERVER_CERT");
    if (!cert_path && !server_path) {
        return 0;
    }
    if (!cert_path || !server_path) {
        snprintf (why, whylen,
                  "CURVE needs both a client certificate (--cert, GRIDQ_CERT) and the broker's "
                  "public certificate (--server-cert, GRIDQ_SERVER_CERT)");
        return -1;
    }
    if (!zsys_has_curve ()) {
        snprintf (why, whylen, "this libzmq was built without CURVE support");
        return -1;
    }
    zcert_t *cert = s_load_cert (cert_path, true, why, whylen);
    if (!cert) {
        return -1;
    }
    zcert_t *server = s_load_cert (server_path, false, why, whylen);
    if (!server) {
        zcert_destroy (&cert);
        return -1;
    }
    zcert_apply (cert, sock);
    zsock_set_curve_serverkey (sock, zcert_public_txt (server));
    zcert_destroy (&cert);
    zcert_destroy (&server);
    return 0;
}

/* ---- Construction -------------------------------------------------------------------------- */

gq_client_t *
gq_client_new (const gq_client_opts_t *opts, char *why, size_t whylen)
{
    gq_client_opts_t none = {0};
    if (!opts) {
        opts = &none;
    }
    const char *endpoint = s_option (opts->endpoint, "GRIDQ_BROKER");
    if (!endpoint) {
        endpoint = GQ_DEFAULT_ENDPOINT;
    }
    gq_client_t *self = (gq_client_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    self->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : GQ_CLIENT_TIMEOUT_MS;
    self->endpoint = strdup (endpoint);
    self->pending = zlistx_new ();
    self->sock = zsock_new (ZMQ_DEALER);
    self->submit_chunk = GQ_MAX_BATCH_JOBS;
    self->submit_window = GQ_CLIENT_SUBMIT_WINDOW;
    self->error_index = -1;
    if (!self->endpoint || !self->pending || !self->sock) {
        snprintf (why, whylen, "cannot create the client socket: %s", zmq_strerror (zmq_errno ()));
        gq_client_destroy (&self);
        return NULL;
    }
    zlistx_set_destructor (self->pending, s_msg_destructor);
    /* A short linger: a CLI that exits right after its last reply must not hang on a dead
       broker, yet a final request still gets a moment to leave. */
    zsock_set_linger (self->sock, GQ_CLIENT_LINGER_MS);
    zsock_set_maxmsgsize (self->sock, (int) GQ_MAX_MSG_BYTES);
    zsock_set_rcvhwm (self->sock, GQ_CLIENT_RCVHWM);
    /* Sends queue while the broker is away; the timeout keeps a full queue from blocking. */
    zsock_set_sndtimeo (self->sock, self->timeout_ms);
    if (s_apply_curve (self->sock, opts, why, whylen)) {
        gq_client_destroy (&self);
        return NULL;
    }
    if (zsock_connect (self->sock, "%s", self->endpoint)) {
        snprintf (why, whylen, "bad broker endpoint \"%s\": %s (expected e.g. %s)",
                  self->endpoint, zmq_strerror (zmq_errno ()), GQ_DEFAULT_ENDPOINT);
        gq_client_destroy (&self);
        return NULL;
    }
    return self;
}

void
gq_client_destroy (gq_client_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_client_t *self = *self_p;
    zsock_destroy (&self->sock);
    zlistx_destroy (&self->pending);
    free (self->watched);
    free (self->endpoint);
    free (self);
    *self_p = NULL;
}

const char *
gq_client_error (gq_client_t *self)
{
    return self->error;
}

int
gq_client_errcode (gq_client_t *self)
{
    return self->errcode;
}

int64_t
gq_client_error_index (gq_client_t *self)
{
    return self->error_index;
}

const char *
gq_client_endpoint (gq_client_t *self)
{
    return self->endpoint;
}

zsock_t *
gq_client_socket (gq_client_t *self)
{
    return self->sock;
}

int
gq_client_timeout (gq_client_t *self)
{
    return self->timeout_ms;
}

void
gq_client_set_submit_window (gq_client_t *self, size_t chunk_jobs, size_t in_flight)
{
    self->submit_chunk = chunk_jobs == 0 || chunk_jobs > GQ_MAX_BATCH_JOBS ? GQ_MAX_BATCH_JOBS
                                                                          : chunk_jobs;
    self->submit_window = in_flight == 0 ? 1 : in_flight;
}

void
gq_client_set_rate_retries (gq_client_t *self, size_t retries)
{
    self->rate_retries = retries;
}

bool
gq_client_refused (gq_client_t *self, size_t *first, size_t *count)
{
    *first = self->refused_first;
    *count = self->refused_count;
    return self->refused_count > 0;
}

/* ---- Sending and receiving ----------------------------------------------------------------- */

static int64_t s_send_msg (gq_client_t *self, gq_msg_t **msg_p, int64_t req);

int64_t
gq_client_send (gq_client_t *self, const char *command, json_t *body)
{
    if (!body) {
        body = json_object ();
    }
    if (!json_is_object (body)) {
        json_decref (body);
        s_set_error (self, GQ_EINVAL, "a request body must be a JSON object");
        return GQ_EINVAL;
    }
    int64_t req = ++self->last_req;
    json_object_set_new (body, "req", json_integer (req));
    gq_msg_t *msg = gq_msg_new (GQ_ROLE_CLIENT, command, body);
    if (!msg) {
        s_set_error (self, GQ_EINVAL, "\"%s\" is not a command name", command);
        return GQ_EINVAL;
    }
    return s_send_msg (self, &msg, req);
}

/* Sends a request built by the caller; req is its id. req, or a negative gq_err_t. */
static int64_t
s_send_msg (gq_client_t *self, gq_msg_t **msg_p, int64_t req)
{
    if (gq_msg_send (msg_p, zsock_resolve (self->sock)) != GQ_OK) {
        /* EAGAIN: the send queue is full because nobody has been reading it for a while. */
        if (zmq_errno () == EAGAIN) {
            s_set_timeout (self, self->timeout_ms);
            return GQ_ETIMEOUT;
        }
        s_set_error (self, GQ_EIO, "cannot send to %s: %s", self->endpoint,
                     zmq_strerror (zmq_errno ()));
        return GQ_EIO;
    }
    return req;
}

/* Sends a request whose JSON text we wrote: text is an object of one member or more without its
   closing brace; ,"req":N} is added. The request's id, or a negative gq_err_t. */
static int64_t
s_send_text (gq_client_t *self, const char *command, zchunk_t *text)
{
    int64_t req = ++self->last_req;
    gq_chunk_printf (text, ",\"req\":%lld}", (long long) req);
    gq_msg_t *msg = gq_msg_new_raw (GQ_ROLE_CLIENT, command, (const char *) zchunk_data (text),
                                    zchunk_size (text));
    if (!msg) {
        s_set_error (self, GQ_ENOMEM, "out of memory");
        return GQ_ENOMEM;
    }
    return s_send_msg (self, &msg, req);
}

static bool
s_abandoned (gq_client_t *self, int64_t req)
{
    size_t n = self->n_abandoned < GQ_CLIENT_ABANDONED ? self->n_abandoned : GQ_CLIENT_ABANDONED;
    for (size_t i = 0; i < n; i++) {
        if (self->abandoned[i] == req) {
            return true;
        }
    }
    return false;
}

static void
s_abandon (gq_client_t *self, int64_t req)
{
    self->abandoned[self->n_abandoned++ % GQ_CLIENT_ABANDONED] = req;
}

void
gq_client_set_partial_fn (gq_client_t *self, gq_client_partial_fn *fn, void *arg)
{
    self->partial_fn = fn;
    self->partial_arg = arg;
}

/* A PARTIAL: to the callback when its fields are sound, else dropped. */
static void
s_partial (gq_client_t *self, gq_msg_t *msg)
{
    json_t *body = gq_msg_body (msg);
    json_t *id = json_object_get (body, "id");
    json_t *seq = json_object_get (body, "seq");
    json_t *partial = json_object_get (body, "partial");
    json_t *dropped = json_object_get (body, "dropped");
    if (!self->partial_fn || !json_is_integer (id) || !json_is_integer (seq) || !partial) {
        return;
    }
    self->partial_fn (self->partial_arg, (int64_t) json_integer_value (id),
                      (int64_t) json_integer_value (seq), partial,
                      json_is_integer (dropped) ? (int64_t) json_integer_value (dropped) : 0);
}

/* Receives one well-formed message from the broker until deadline_us (monotonic). 0, or
   GQ_ETIMEOUT, or GQ_EIO when interrupted (SIGINT). Bad messages are logged and skipped; late
   replies to abandoned requests are dropped (FINISHED are kept: gq_client_wait matches those by
   job id, whatever request they answer). */
static int
s_recv_until (gq_client_t *self, int64_t deadline_us, gq_msg_t **msg_p)
{
    *msg_p = NULL;
    while (true) {
        int64_t left_us = deadline_us - gq_mono_us ();
        int wait_ms = 0;
        if (left_us >= (int64_t) INT32_MAX * 1000) {
            wait_ms = INT32_MAX; /* "forever", in the units the socket takes */
        } else if (left_us > 0) {
            wait_ms = (int) ((left_us + 999) / 1000);
        }
        zsock_set_rcvtimeo (self->sock, wait_ms);
        zmsg_t *zmsg = zmsg_recv (self->sock);
        if (!zmsg) {
            if (zsys_interrupted) {
                s_set_error (self, GQ_EIO, "interrupted");
                return GQ_EIO;
            }
            if (gq_mono_us () >= deadline_us) {
                return GQ_ETIMEOUT;
            }
            continue; /* EINTR from another signal */
        }
        gq_msg_t *msg = NULL;
        char why[256];
        if (gq_msg_decode (&zmsg, false, &msg, why, sizeof why) != GQ_OK) {
            zsys_warning ("client: dropped a bad message from %s: %s", self->endpoint, why);
            gq_msg_destroy (&msg);
            continue;
        }
        if (gq_msg_role (msg) != GQ_ROLE_CLIENT) {
            zsys_warning ("client: dropped a %s message with a worker protocol frame",
                          gq_msg_command (msg));
            gq_msg_destroy (&msg);
            continue;
        }
        if (streq (gq_msg_command (msg), "PARTIAL")) {
            s_partial (self, msg);
            gq_msg_destroy (&msg);
            continue;
        }
        if (!streq (gq_msg_command (msg), "FINISHED") && s_abandoned (self, gq_msg_req (msg))) {
            gq_msg_destroy (&msg);
            continue;
        }
        *msg_p = msg;
        return GQ_OK;
    }
}

static int64_t
s_deadline_us (int64_t timeout_ms)
{
    return gq_mono_us () + timeout_ms * 1000;
}

int
gq_client_recv (gq_client_t *self, int timeout_ms, char command[32], int64_t *req,
                json_t **body, zlist_t **blobs)
{
    gq_msg_t *msg = (gq_msg_t *) zlistx_first (self->pending);
    if (msg) {
        zlistx_detach_cur (self->pending);
    } else {
        int rc = s_recv_until (self, s_deadline_us (timeout_ms), &msg);
        if (rc) {
            if (rc == GQ_ETIMEOUT) {
                s_set_timeout (self, timeout_ms);
            }
            return rc;
        }
    }
    snprintf (command, GQ_COMMAND_MAX, "%s", gq_msg_command (msg));
    if (req) {
        *req = gq_msg_req (msg);
    }
    if (body) {
        *body = json_incref (gq_msg_body (msg));
    }
    if (blobs) {
        /* gq_msg keeps its frames; copies cost one memcpy, and output blobs are rare. */
        *blobs = zlist_new ();
        for (size_t i = 0; i < gq_msg_blobs (msg); i++) {
            zlist_append (*blobs, zframe_dup (gq_msg_blob (msg, i)));
        }
    }
    gq_msg_destroy (&msg);
    return GQ_OK;
}

/* Removes and returns the first pending message for req with the given command (or ERROR). */
static gq_msg_t *
s_pending_reply (gq_client_t *self, int64_t req, const char *command)
{
    for (gq_msg_t *msg = (gq_msg_t *) zlistx_first (self->pending); msg;
         msg = (gq_msg_t *) zlistx_next (self->pending)) {
        if (gq_msg_req (msg) == req &&
            (streq (gq_msg_command (msg), command) || streq (gq_msg_command (msg), "ERROR"))) {
            return (gq_msg_t *) zlistx_detach_cur (self->pending);
        }
    }
    return NULL;
}

/* Waits for the reply to req: a message with that req and the request's command or ERROR.
   Anything else (FINISHED for a watched SUBMIT, replies to other requests) is kept pending. */
static int
s_await_reply (gq_client_t *self, int64_t req, const char *command, int64_t deadline_us,
               gq_msg_t **reply_p)
{
    *reply_p = s_pending_reply (self, req, command);
    while (!*reply_p) {
        gq_msg_t *msg;
        int rc = s_recv_until (self, deadline_us, &msg);
        if (rc) {
            return rc;
        }
        if (gq_msg_req (msg) == req &&
            (streq (gq_msg_command (msg), command) || streq (gq_msg_command (msg), "ERROR"))) {
            *reply_p = msg;
        } else {
            zlistx_add_end (self->pending, msg);
        }
    }
    return GQ_OK;
}

/* The retry hint of a RATE_LIMITED reply, at least 1 ms. */
static int64_t
s_retry_after_ms (json_t *body)
{
    json_t *hint = json_object_get (body, "retry_after_ms");
    int64_t ms = json_is_integer (hint) ? (int64_t) json_integer_value (hint) : 100;
    return ms < 1 ? 1 : ms;
}

static bool
s_is_rate_limited (gq_msg_t *msg)
{
    const char *code = json_string_value (json_object_get (gq_msg_body (msg), "code"));
    return streq (gq_msg_command (msg), "ERROR") && code && streq (code, "RATE_LIMITED");
}

json_t *
gq_client_call (gq_client_t *self, const char *command, json_t *body)
{
    if (!body) {
        body = json_object ();
    }
    int64_t deadline_us = s_deadline_us (self->timeout_ms);
    json_t *result = NULL;
    while (true) {
        /* A fresh copy per attempt: gq_client_send takes what it is given. */
        int64_t req = gq_client_send (self, command, json_copy (body));
        if (req < 0) {
            break;
        }
        gq_msg_t *reply;
        int rc = s_await_reply (self, req, command, deadline_us, &reply);
        if (rc == GQ_ETIMEOUT) {
            s_abandon (self, req);
            s_set_timeout (self, self->timeout_ms);
            break;
        }
        if (rc) {
            break;
        }
        if (s_is_rate_limited (reply)) {
            int64_t wait_us = s_retry_after_ms (gq_msg_body (reply)) * 1000;
            if (gq_mono_us () + wait_us < deadline_us) {
                gq_msg_destroy (&reply);
                zclock_sleep ((int) (wait_us / 1000));
                continue;
            }
        }
        if (streq (gq_msg_command (reply), "ERROR")) {
            s_set_error_reply (self, gq_msg_body (reply), 0);
        } else {
            result = json_incref (gq_msg_body (reply));
            json_object_del (result, "req");
        }
        gq_msg_destroy (&reply);
        break;
    }
    json_decref (body);
    return result;
}

/* ---- Submit -------------------------------------------------------------------------------- */

static void
s_watch (gq_client_t *self, const int64_t *ids, size_t count)
{
    if (self->n_watched + count > self->cap_watched) {
        size_t cap = self->cap_watched ? self->cap_watched : 1024;
        while (cap < self->n_watched + count) {
            cap *= 2;
        }
        int64_t *grown = (int64_t *) realloc (self->watched, cap * sizeof *grown);
        if (!grown) {
            return; /* only costs an early WAIT in gq_client_wait */
        }
        self->watched = grown;
        self->cap_watched = cap;
    }
    memcpy (self->watched + self->n_watched, ids, count * sizeof *ids);
    self->n_watched += count;
}

/* The elements of the arrays among jobs that the broker accepted (ids): watched too, since the
   broker's watch of a SUBMIT covers them (an array's own id names no job). */
static void
s_watch_elements (gq_client_t *self, json_t *jobs, const int64_t *ids)
{
    size_t i;
    json_t *job;
    json_array_foreach (jobs, i, job) {
        gq_arrayspec_t spec;
        char why[128];
        const char *text = json_string_value (json_object_get (job, "array"));
        if (!ids[i] || !text || gq_arrayspec_parse (text, &spec, why, sizeof why)) {
            continue;
        }
        for (int64_t k = 1; k <= spec.count; k++) {
            int64_t id = ids[i] + k;
            s_watch (self, &id, 1);
        }
    }
}

typedef enum { S_CHUNK_UNSENT, S_CHUNK_SENT, S_CHUNK_DONE } s_chunk_state_t;

typedef struct {
    size_t first;            /* index of the chunk's first job in the input */
    size_t count;            /* jobs in the chunk */
    s_chunk_state_t state;   /* unsent, in flight, or acknowledged */
    int64_t deadline_us;     /* when its reply is overdue (from the first send) */
    int64_t resend_us;       /* when to send it again (idem resend, rate limit), 0 for never */
    bool rate_wait;          /* refused with RATE_LIMITED: waits for resend_us to go again */
    size_t refusals;         /* RATE_LIMITED replies since a chunk of the submit was accepted */
    int64_t reqs[8];         /* req ids it was sent with; any of their replies completes it */
    size_t n_reqs;           /* used entries of reqs */
} s_chunk_t;

int64_t
gq_client_job_bytes (json_t *job)
{
    return (int64_t) json_dumpb (job, NULL, 0, JSON_COMPACT);
}

/* The jobs of a submit as JSON text, each written once: job i is text[at[i] .. at[i + 1]). The
   chunks' SUBMITs splice them (and splice them again when a chunk is sent again). */
typedef struct {
    zchunk_t *text;
    size_t *at;
} s_texts_t;

static void
s_texts_free (s_texts_t *texts)
{
    zchunk_destroy (&texts->text);
    free (texts->at);
}

/* 0, or GQ_EINVAL naming (error_index) a job that cannot be written as JSON, or GQ_ENOMEM. */
static int
s_texts_write (gq_client_t *self, json_t *jobs, s_texts_t *texts)
{
    size_t count = json_array_size (jobs);
    texts->text = zchunk_new (NULL, count * 64 + 64);
    texts->at = (size_t *) malloc ((count + 1) * sizeof *texts->at);
    if (!texts->text || !texts->at) {
        s_texts_free (texts);
        s_set_error (self, GQ_ENOMEM, "out of memory");
        return GQ_ENOMEM;
    }
    for (size_t i = 0; i < count; i++) {
        texts->at[i] = zchunk_size (texts->text);
        int rc = gq_chunk_json (texts->text, json_array_get (jobs, i));
        if (rc) {
            s_texts_free (texts);
            self->error_index = (int64_t) i;
            s_set_error (self, rc, "job %zu cannot be written as JSON (%s)", i,
                         rc == GQ_ENOMEM ? "out of memory" : "a string that is not UTF-8?");
            return rc;
        }
    }
    texts->at[count] = zchunk_size (texts->text);
    return GQ_OK;
}

/* Splits jobs into chunks of at most submit_chunk jobs whose JSON fits one frame. 0, or
   GQ_ETOOBIG naming a job that cannot fit any frame (error_index says which). */
static int
s_plan_chunks (gq_client_t *self, size_t count, const s_texts_t *texts, s_chunk_t **chunks_p,
               size_t *n_chunks)
{
    size_t cap = count / self->submit_chunk + 1;
    s_chunk_t *chunks = (s_chunk_t *) calloc (cap, sizeof *chunks);
    size_t n = 0;
    int64_t bytes = 0;
    for (size_t i = 0; chunks && i < count; i++) {
        int64_t size = (int64_t) (texts->at[i + 1] - texts->at[i]) + 1; /* and a comma */
        if (size > GQ_CLIENT_SUBMIT_BYTES) {
            s_set_error (self, GQ_ETOOBIG,
                         "job %zu is %lld bytes of JSON; a job may have at most %d (send large "
                         "inputs as blobs)",
                         i, (long long) size - 1, GQ_CLIENT_SUBMIT_BYTES);
            self->error_index = (int64_t) i;
            free (chunks);
            return GQ_ETOOBIG;
        }
        if (n == 0 || chunks[n - 1].count == self->submit_chunk ||
            bytes + size > GQ_CLIENT_SUBMIT_BYTES) {
            if (n == cap) {
                cap *= 2;
                s_chunk_t *grown = (s_chunk_t *) realloc (chunks, cap * sizeof *chunks);
                if (!grown) {
                    break;
                }
                chunks = grown;
            }
            memset (&chunks[n], 0, sizeof chunks[n]);
            chunks[n++].first = i;
            bytes = 0;
        }
        chunks[n - 1].count++;
        bytes += size;
    }
    if (!chunks || (count && chunks[n - 1].first + chunks[n - 1].count != count)) {
        free (chunks);
        s_set_error (self, GQ_ENOMEM, "out of memory");
        return GQ_ENOMEM;
    }
    *chunks_p = chunks;
    *n_chunks = n;
    return GQ_OK;
}

static int
s_send_chunk (gq_client_t *self, const s_texts_t *texts, s_chunk_t *chunk, bool watch)
{
    size_t from = texts->at[chunk->first], to = texts->at[chunk->first + chunk->count];
    zchunk_t *text = zchunk_new (NULL, to - from + 96);
    if (!text) {
        s_set_error (self, GQ_ENOMEM, "out of memory");
        return GQ_ENOMEM;
    }
    gq_chunk_raw (text, "{\"jobs\":[");
    for (size_t i = chunk->first; i < chunk->first + chunk->count; i++) {
        if (i > chunk->first) {
            gq_chunk_raw (text, ",");
        }
        zchunk_extend (text, zchunk_data (texts->text) + texts->at[i],
                       texts->at[i + 1] - texts->at[i]);
    }
    /* A client with no partial callback asks for none: the broker does not send them. */
    gq_chunk_raw (text, watch ? "],\"watch\":true" : "],\"watch\":false");
    gq_chunk_raw (text, self->partial_fn ? ",\"partials\":true" : ",\"partials\":false");
    int64_t req = s_send_text (self, "SUBMIT", text);
    zchunk_destroy (&text);
    if (req < 0) {
        return (int) req;
    }
    if (chunk->n_reqs == sizeof chunk->reqs / sizeof chunk->reqs[0]) {
        /* Forget the oldest: its late reply is then dropped, a newer one still counts. */
        s_abandon (self, chunk->reqs[0]);
        memmove (chunk->reqs, chunk->reqs + 1, (chunk->n_reqs - 1) * sizeof chunk->reqs[0]);
        chunk->n_reqs--;
    }
    chunk->reqs[chunk->n_reqs++] = req;
    return GQ_OK;
}

static s_chunk_t *
s_chunk_of (s_chunk_t *chunks, size_t n_chunks, int64_t req)
{
    for (size_t c = 0; c < n_chunks; c++) {
        for (size_t r = 0; chunks[c].state == S_CHUNK_SENT && r < chunks[c].n_reqs; r++) {
            if (chunks[c].reqs[r] == req) {
                return &chunks[c];
            }
        }
    }
    return NULL;
}

/* A chunk is settled: later replies to any of its requests are dropped on arrival. */
static void
s_chunk_settle (gq_client_t *self, s_chunk_t *chunk)
{
    chunk->state = S_CHUNK_DONE;
    for (size_t r = 0; r < chunk->n_reqs; r++) {
        s_abandon (self, chunk->reqs[r]);
    }
}

/* Handles the reply to a chunk: settles it unless it is to be sent again after a rate limit.
   0, or the error that ends the submit. */
static int
s_chunk_reply (gq_client_t *self, s_chunk_t *chunk, gq_msg_t *reply, bool watch, int64_t *ids)
{
    json_t *body = gq_msg_body (reply);
    if (s_is_rate_limited (reply)) {
        int64_t at = gq_mono_us () + s_retry_after_ms (body) * 1000;
        /* Within the timeout it goes again, as any call does. Past it, only while the submit
           makes progress: a broker that answers is busy, not gone, and a rate limit lets every
           chunk through in its turn; a cap that nothing frees does not. */
        bool patient = chunk->refusals++ < self->rate_retries;
        if (at < chunk->deadline_us || patient) {
            chunk->resend_us = at;
            chunk->rate_wait = true;
            if (at >= chunk->deadline_us) {
                chunk->deadline_us = at + (int64_t) self->timeout_ms * 1000;
            }
            return GQ_OK;
        }
    }
    s_chunk_settle (self, chunk);
    if (streq (gq_msg_command (reply), "ERROR")) {
        const char *name = json_string_value (json_object_get (body, "code"));
        if (self->refused_count) {
            return gq_err_from_name (name); /* the first refusal is the one reported */
        }
        self->refused_first = chunk->first;
        self->refused_count = chunk->count;
        return s_set_error_reply (self, body, (int64_t) chunk->first);
    }
    json_t *got = json_object_get (body, "ids");
    if (json_array_size (got) != chunk->count) {
        s_set_error (self, GQ_EPROTO, "the broker answered %zu ids for %zu jobs",
                     json_array_size (got), chunk->count);
        return GQ_EPROTO;
    }
    for (size_t i = 0; i < chunk->count; i++) {
        json_t *id = json_array_get (got, i);
        if (!json_is_integer (id) || json_integer_value (id) <= 0) {
            s_set_error (self, GQ_EPROTO, "the broker answered a bad id at ids[%zu]", i);
            return GQ_EPROTO;
        }
        ids[chunk->first + i] = (int64_t) json_integer_value (id);
    }
    if (watch) {
        s_watch (self, ids + chunk->first, chunk->count);
    }
    return GQ_OK;
}

int
gq_client_submit (gq_client_t *self, json_t *jobs, bool watch, int64_t *ids)
{
    size_t count = json_array_size (jobs);
    self->error_index = -1;
    self->refused_count = 0;
    if (count == 0) {
        s_set_error (self, GQ_EINVAL, "nothing to submit: the job list is empty");
        return GQ_EINVAL;
    }
    /* Sending again is safe only when the broker can recognise every job as a repeat. */
    bool all_idem = true;
    for (size_t i = 0; i < count; i++) {
        all_idem = all_idem && json_is_string (json_object_get (json_array_get (jobs, i), "idem"));
        ids[i] = 0;
    }
    s_chunk_t *chunks = NULL;
    size_t n_chunks = 0;
    s_texts_t texts = {NULL, NULL};
    int rc = s_texts_write (self, jobs, &texts);
    if (rc == GQ_OK) {
        rc = s_plan_chunks (self, count, &texts, &chunks, &n_chunks);
    }
    if (rc) {
        s_texts_free (&texts);
        return rc; /* nothing was sent */
    }
    int64_t timeout_us = (int64_t) self->timeout_ms * 1000;
    int64_t resend_every_us = all_idem ? timeout_us / (GQ_CLIENT_IDEM_RESENDS + 1) : 0;
    size_t next = 0;      /* first unsent chunk */
    size_t in_flight = 0; /* chunks sent, not acknowledged */
    size_t done = 0;
    while (done < n_chunks && (rc == GQ_OK || in_flight > 0)) {
        /* Keep the window full, unless an error already ends this submit. */
        while (rc == GQ_OK && next < n_chunks && in_flight < self->submit_window) {
            s_chunk_t *chunk = &chunks[next++];
            rc = s_send_chunk (self, &texts, chunk, watch);
            if (rc) {
                break;
            }
            chunk->state = S_CHUNK_SENT;
            chunk->deadline_us = gq_mono_us () + timeout_us;
            chunk->resend_us = resend_every_us ? gq_mono_us () + resend_every_us : 0;
            in_flight++;
        }
        if (in_flight == 0) {
            break;
        }
        /* Sleep until the next reply, resend or deadline. */
        int64_t now = gq_mono_us ();
        int64_t wake = INT64_MAX;
        for (size_t c = 0; c < n_chunks; c++) {
            if (chunks[c].state != S_CHUNK_SENT) {
                continue;
            }
            if (rc != GQ_OK && chunks[c].rate_wait) {
                /* The submit ends: a chunk waiting out a rate limit is not sent again. */
                s_chunk_settle (self, &chunks[c]);
                in_flight--;
                done++;
                continue;
            }
            if (chunks[c].deadline_us <= now) {
                /* Whatever else is in flight, the broker is not answering. An earlier error
                   stays the one reported: it is the cause. */
                for (size_t r = 0; r < chunks[c].n_reqs; r++) {
                    s_abandon (self, chunks[c].reqs[r]);
                }
                if (rc == GQ_OK) {
                    s_set_timeout (self, self->timeout_ms);
                    rc = GQ_ETIMEOUT;
                }
                free (chunks);
                s_texts_free (&texts);
                return rc;
            }
            if (rc == GQ_OK && chunks[c].resend_us && chunks[c].resend_us <= now) {
                int sent = s_send_chunk (self, &texts, &chunks[c], watch);
                if (sent) {
                    rc = sent;
                    continue;
                }
                chunks[c].rate_wait = false;
                chunks[c].resend_us = resend_every_us ? now + resend_every_us : 0;
            }
            if (chunks[c].deadline_us < wake) {
                wake = chunks[c].deadline_us;
            }
            if (rc == GQ_OK && chunks[c].resend_us && chunks[c].resend_us < wake) {
                wake = chunks[c].resend_us;
            }
        }
        if (in_flight == 0) {
            continue; /* the last chunks were given up above */
        }
        gq_msg_t *msg;
        int got = s_recv_until (self, wake, &msg);
        if (got == GQ_ETIMEOUT) {
            continue; /* the loop above resends or gives up */
        }
        if (got) {
            rc = got;
            break;
        }
        s_chunk_t *chunk = s_chunk_of (chunks, n_chunks, gq_msg_req (msg));
        const char *command = gq_msg_command (msg);
        if (!chunk || !(streq (command, "SUBMIT") || streq (command, "ERROR"))) {
            zlistx_add_end (self->pending, msg); /* FINISHED for watched jobs, other replies */
            continue;
        }
        int status = s_chunk_reply (self, chunk, msg, watch, ids);
        gq_msg_destroy (&msg);
        if (chunk->state == S_CHUNK_DONE) {
            in_flight--;
            done++;
            if (status && rc == GQ_OK) {
                /* Refused: nothing of this chunk was accepted; stop sending, collect the rest
                   so that the ids of chunks accepted meanwhile are known. */
                rc = status;
            }
            for (size_t c = 0; status == GQ_OK && c < n_chunks; c++) {
                chunks[c].refusals = 0; /* progress: rate-limited chunks start counting again */
            }
        }
    }
    free (chunks);
    s_texts_free (&texts);
    if (watch) {
        s_watch_elements (self, jobs, ids);
    }
    return rc;
}

/* ---- Wait ---------------------------------------------------------------------------------- */

typedef struct {
    int64_t *ids;            /* sorted, unique ids waited for */
    bool *finished;          /* per entry of ids */
    size_t count;            /* entries of ids */
    size_t left;             /* entries not finished */
    int64_t *reqs;           /* WAIT requests sent by this wait, for their ERROR replies */
    size_t n_reqs;           /* used entries of reqs */
    size_t cap_reqs;         /* allocated entries of reqs */
} s_waitset_t;

static int
s_cmp_id (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

static ssize_t
s_waitset_find (s_waitset_t *set, int64_t id)
{
    int64_t *hit = (int64_t *) bsearch (&id, set->ids, set->count, sizeof id, s_cmp_id);
    return hit ? hit - set->ids : -1;
}

static bool
s_watched (gq_client_t *self, int64_t id)
{
    return self->n_watched &&
           bsearch (&id, self->watched, self->n_watched, sizeof id, s_cmp_id) != NULL;
}

/* Sends WAIT for the unfinished ids (those watched only when all is true), in chunks of
   GQ_MAX_IDS. 0 or a gq_err_t. */
static int
s_send_wait (gq_client_t *self, s_waitset_t *set, bool all)
{
    json_t *ids = json_array ();
    for (size_t i = 0; i <= set->count; i++) {
        bool flush = i == set->count || json_array_size (ids) == GQ_MAX_IDS;
        if (flush && json_array_size (ids) > 0) {
            int64_t req =
                gq_client_send (self, "WAIT", json_pack ("{s:o, s:b}", "ids", ids, "partials",
                                                         self->partial_fn ? 1 : 0));
            if (req < 0) {
                return (int) req;
            }
            if (set->n_reqs == set->cap_reqs) {
                size_t cap = set->cap_reqs ? set->cap_reqs * 2 : 16;
                int64_t *grown = (int64_t *) realloc (set->reqs, cap * sizeof *grown);
                if (!grown) {
                    s_set_error (self, GQ_ENOMEM, "out of memory");
                    return GQ_ENOMEM;
                }
                set->reqs = grown;
                set->cap_reqs = cap;
            }
            set->reqs[set->n_reqs++] = req;
            ids = json_array ();
        }
        if (i < set->count && !set->finished[i] && (all || !s_watched (self, set->ids[i]))) {
            json_array_append_new (ids, json_integer (set->ids[i]));
        }
    }
    json_decref (ids);
    return GQ_OK;
}

/* Marks one job finished and reports it. Returns fn's verdict (non-zero stops), or 0. */
static int
s_finish (s_waitset_t *set, int64_t id, json_t *job, gq_finished_fn *fn, void *arg)
{
    ssize_t at = s_waitset_find (set, id);
    if (at < 0 || set->finished[at]) {
        return 0; /* not ours, or a repeat (WAIT sent twice, watch and WAIT) */
    }
    set->finished[at] = true;
    set->left--;
    return fn ? fn (arg, job) : 0;
}

/* Takes a FINISHED body in. Sets *ours when it named any job waited for. fn's verdict or 0. */
static int
s_finished_body (s_waitset_t *set, json_t *body, gq_finished_fn *fn, void *arg, bool *ours)
{
    size_t before = set->left;
    size_t i;
    json_t *job;
    int stop = 0;
    json_array_foreach (json_object_get (body, "jobs"), i, job) {
        json_t *id = json_object_get (job, "id");
        const char *state = json_string_value (json_object_get (job, "state"));
        /* Only final states finish a wait; anything else would be a broker bug. */
        if (!json_is_integer (id) || !state ||
            !(streq (state, "done") || streq (state, "failed") || streq (state, "cancelled"))) {
            continue;
        }
        stop = s_finish (set, (int64_t) json_integer_value (id), job, fn, arg);
        if (stop) {
            break;
        }
    }
    json_t *missing = json_object_get (body, "missing");
    json_array_foreach (missing, i, job) {
        if (stop || !json_is_integer (job)) {
            continue;
        }
        json_t *gone = json_pack ("{s:O, s:s}", "id", job, "state", "missing");
        stop = s_finish (set, (int64_t) json_integer_value (job), gone, fn, arg);
        json_decref (gone);
    }
    *ours = set->left < before;
    return stop;
}

/* Drops finished ids from the watched list: their FINISHED has come. */
static void
s_unwatch (gq_client_t *self, s_waitset_t *set)
{
    size_t kept = 0;
    for (size_t i = 0; i < self->n_watched; i++) {
        ssize_t at = s_waitset_find (set, self->watched[i]);
        if (at < 0 || !set->finished[at]) {
            self->watched[kept++] = self->watched[i];
        }
    }
    self->n_watched = kept;
}

int
gq_client_wait (gq_client_t *self, const int64_t *ids, size_t count, int64_t total_timeout_ms,
                gq_finished_fn *fn, void *arg)
{
    s_waitset_t set = {0};
    if (count == 0) {
        return GQ_OK;
    }
    set.ids = (int64_t *) malloc (count * sizeof *set.ids);
    set.finished = (bool *) calloc (count, sizeof *set.finished);
    if (!set.ids || !set.finished) {
        free (set.ids);
        free (set.finished);
        s_set_error (self, GQ_ENOMEM, "out of memory");
        return GQ_ENOMEM;
    }
    memcpy (set.ids, ids, count * sizeof *ids);
    qsort (set.ids, count, sizeof *set.ids, s_cmp_id);
    for (size_t i = 0; i < count; i++) {
        if (set.count == 0 || set.ids[set.count - 1] != set.ids[i]) {
            set.ids[set.count++] = set.ids[i];
        }
    }
    set.left = set.count;
    if (self->n_watched) {
        qsort (self->watched, self->n_watched, sizeof *self->watched, s_cmp_id);
    }
    int64_t start_us = gq_mono_us ();
    int64_t deadline_us = total_timeout_ms < 0 ? INT64_MAX : start_us + total_timeout_ms * 1000;
    int64_t quiet0_us = (int64_t) (self->timeout_ms > GQ_CLIENT_REWAIT_MIN_MS
                                       ? self->timeout_ms
                                       : GQ_CLIENT_REWAIT_MIN_MS) * 1000;
    int64_t quiet_us = quiet0_us;
    int64_t quiet_max_us = quiet0_us > GQ_CLIENT_REWAIT_MAX_MS * 1000
                               ? quiet0_us
                               : (int64_t) GQ_CLIENT_REWAIT_MAX_MS * 1000;
    bool sent_first = false;
    int64_t heard_us = start_us;
    int rc = GQ_OK;
    while (set.left > 0 && rc == GQ_OK) {
        /* FINISHED that arrived while someone else read the socket (a submit with watch, a
           call made from fn) come first. */
        bool ours = false;
        for (gq_msg_t *msg = (gq_msg_t *) zlistx_first (self->pending); msg && rc == GQ_OK;
             msg = (gq_msg_t *) zlistx_next (self->pending)) {
            if (streq (gq_msg_command (msg), "FINISHED")) {
                msg = (gq_msg_t *) zlistx_detach_cur (self->pending);
                bool hit;
                rc = s_finished_body (&set, gq_msg_body (msg), fn, arg, &hit);
                ours = ours || hit;
                gq_msg_destroy (&msg);
            }
        }
        if (ours) {
            heard_us = gq_mono_us ();
            quiet_us = quiet0_us;
        }
        if (rc || set.left == 0) {
            break;
        }
        if (!sent_first) {
            /* Watched jobs report by themselves; ask only for the others. */
            sent_first = true;
            rc = s_send_wait (self, &set, false);
            continue;
        }
        int64_t now = gq_mono_us ();
        if (now >= deadline_us) {
            s_set_error (self, GQ_ETIMEOUT, "waited %g s: %zu of %zu jobs not finished",
                         (now - start_us) / 1e6, set.left, set.count);
            rc = GQ_ETIMEOUT;
            break;
        }
        if (now - heard_us >= quiet_us) {
            /* Silence: the broker may have restarted or lost a message; ask again. */
            rc = s_send_wait (self, &set, true);
            heard_us = now;
            quiet_us = quiet_us * 2 < quiet_max_us ? quiet_us * 2 : quiet_max_us;
            continue;
        }
        int64_t wake = heard_us + quiet_us < deadline_us ? heard_us + quiet_us : deadline_us;
        gq_msg_t *msg;
        int got = s_recv_until (self, wake, &msg);
        if (got == GQ_ETIMEOUT) {
            continue;
        }
        if (got) {
            rc = got;
            break;
        }
        const char *command = gq_msg_command (msg);
        int64_t req = gq_msg_req (msg);
        bool mine = false;
        for (size_t r = 0; r < set.n_reqs && !mine; r++) {
            mine = set.reqs[r] == req;
        }
        if (streq (command, "FINISHED")) {
            bool hit;
            rc = s_finished_body (&set, gq_msg_body (msg), fn, arg, &hit);
            if (hit) {
                heard_us = gq_mono_us ();
                quiet_us = quiet0_us;
            }
            gq_msg_destroy (&msg);
        } else if (mine && s_is_rate_limited (msg)) {
            /* Ask again once the hint has passed: pretend we last heard just long enough ago. */
            heard_us = gq_mono_us () + s_retry_after_ms (gq_msg_body (msg)) * 1000 - quiet_us;
            gq_msg_destroy (&msg);
        } else if (mine && streq (command, "ERROR")) {
            rc = s_set_error_reply (self, gq_msg_body (msg), 0);
            gq_msg_destroy (&msg);
        } else {
            zlistx_add_end (self->pending, msg);
        }
    }
    s_unwatch (self, &set);
    free (set.ids);
    free (set.finished);
    free (set.reqs);
    return rc;
}

/* ---- Selftest ------------------------------------------------------------------------------ */
/*  A fake broker in an actor answers on inproc:
      PING      at once
      STATUS    {"ids":[1]} is held until the next STATUS is answered (out of order replies)
      CANCEL    first ERROR RATE_LIMITED (retry_after_ms 50), then CANCEL
      JOBS      ERROR BAD_REQUEST
      NODES     never (timeout)
      SUBMIT    ids from a counter; watch: FINISHED for the jobs with the SUBMIT's req; a batch
                whose first idem is "drop-once" is ignored the first time, one whose first idem
                is "slow" is RATE_LIMITED the first time; a job of kind "refuse" fails the batch
                with BAD_REQUEST naming its index; a batch whose first kind is "capped" is
                RATE_LIMITED (retry_after_ms 400, above the client's timeout) its first three
                times, one whose first kind is "walled" always
      WAIT      ignored the first time, then FINISHED for ids < 1000000, missing for the rest
    The pipe answers "COUNT" with the number of SUBMITs and WAITs seen. */

#define S_CHECK_RANGE(a, lo, hi)                                                              \
    do {                                                                                      \
        long long _a = (long long) (a);                                                       \
        if (_a < (long long) (lo) || _a > (long long) (hi)) {                                 \
            fprintf (stderr, "%s:%d: %s == %lld, expected %lld..%lld\n", __FILE__, __LINE__, #a,  \
                     _a, (long long) (lo), (long long) (hi));                                 \
            abort ();                                                                         \
        }                                                                                     \
    } while (0)

#define S_CHECK_HAS(text, needle)                                                             \
    do {                                                                                      \
        const char *_t = (text), *_n = (needle);                                              \
        if (!_t || !strstr (_t, _n)) {                                                        \
            fprintf (stderr, "%s:%d: %s == \"%s\", expected it to contain \"%s\"\n", __FILE__, \
                     __LINE__, #text, _t ? _t : "(null)", _n);                                \
            abort ();                                                                         \
        }                                                                                     \
    } while (0)

/* A call that must succeed: on failure, say why. */
#define S_CHECK_PTR(p, reason)                                                                \
    do {                                                                                      \
        if (!(p)) {                                                                           \
            fprintf (stderr, "%s:%d: %s is NULL: %s\n", __FILE__, __LINE__, #p, (reason));      \
            abort ();                                                                         \
        }                                                                                     \
    } while (0)

static void
s_fake_finished (zsock_t *router, gq_msg_t *request, json_t *ids)
{
    json_t *jobs = json_array ();
    json_t *missing = json_array ();
    size_t i;
    json_t *id;
    json_array_foreach (ids, i, id) {
        if (json_integer_value (id) < 1000000) {
            json_array_append_new (jobs, json_pack ("{s:O, s:s, s:{s:O}}", "id", id, "state",
                                                    "done", "result", "echo", id));
        } else {
            json_array_append (missing, id);
        }
    }
    gq_msg_t *finished = gq_msg_reply (request, "FINISHED",
                                       json_pack ("{s:o, s:o}", "jobs", jobs, "missing", missing));
    gq_msg_send (&finished, router);
}

static void
s_fake_broker (zsock_t *pipe, void *args)
{
    zsock_t *router = zsock_new_router ((const char *) args);
    assert (router);
    zpoller_t *poller = zpoller_new (pipe, router, NULL);
    zsock_signal (pipe, 0);
    gq_msg_t *held = NULL;
    int64_t next_id = 1;
    int submits = 0, waits = 0, cancels = 0, capped = 0;
    bool dropped = false, slowed = false;
    while (true) {
        zsock_t *which = (zsock_t *) zpoller_wait (poller, -1);
        if (which == pipe) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            if (command && streq (command, "COUNT")) {
                zsock_send (pipe, "ii", submits, waits);
            }
            zstr_free (&command);
            if (term) {
                break;
            }
            continue;
        }
        if (which != router) {
            break;
        }
        gq_msg_t *msg;
        char why[256];
        if (gq_msg_recv (router, true, &msg, why, sizeof why) != GQ_OK) {
            gq_msg_destroy (&msg);
            continue;
        }
        const char *command = gq_msg_command (msg);
        json_t *body = gq_msg_body (msg);
        gq_msg_t *reply = NULL;
        if (streq (command, "PING")) {
            reply = gq_msg_reply (msg, "PING", json_pack ("{s:s}", "version", "0.1.0"));
        } else if (streq (command, "STATUS")) {
            json_t *id = json_array_get (json_object_get (body, "ids"), 0);
            if (json_integer_value (id) == 1 && !held) {
                held = msg;
                continue;
            }
            /* An unclaimed FINISHED first: the client must keep it for gq_client_recv. */
            gq_msg_t *extra = gq_msg_reply (msg, "FINISHED", json_pack ("{s:[]}", "jobs"));
            json_object_set_new (gq_msg_body (extra), "req", json_integer (777));
            gq_msg_send (&extra, router);
            reply = gq_msg_reply (msg, "STATUS", json_pack ("{s:[{s:O}]}", "jobs", "id", id));
            gq_msg_send (&reply, router);
            if (held) {
                json_t *first = json_array_get (json_object_get (gq_msg_body (held), "ids"), 0);
                reply = gq_msg_reply (held, "STATUS",
                                      json_pack ("{s:[{s:O}]}", "jobs", "id", first));
                gq_msg_destroy (&held);
            }
        } else if (streq (command, "CANCEL")) {
            if (cancels++ == 0) {
                reply = gq_msg_error (msg, GQ_ERATE, "slow down");
                json_object_set_new (gq_msg_body (reply), "retry_after_ms", json_integer (50));
            } else {
                reply = gq_msg_reply (msg, "CANCEL", json_pack ("{s:[], s:[]}", "jobs",
                                                                "missing"));
            }
        } else if (streq (command, "JOBS")) {
            reply = gq_msg_error (msg, GQ_EINVAL, "jobs[3]: \"priority\" is 99, outside 0..9");
            json_object_set_new (gq_msg_body (reply), "index", json_integer (3));
        } else if (streq (command, "SUBMIT")) {
            submits++;
            json_t *jobs = json_object_get (body, "jobs");
            const char *idem =
                json_string_value (json_object_get (json_array_get (jobs, 0), "idem"));
            if (idem && streq (idem, "drop-once") && !dropped) {
                dropped = true;
                gq_msg_destroy (&msg);
                continue;
            }
            const char *first =
                json_string_value (json_object_get (json_array_get (jobs, 0), "kind"));
            bool walled = first && (streq (first, "walled") ||
                                    (streq (first, "capped") && capped++ < 3));
            if ((idem && streq (idem, "slow") && !slowed) || walled) {
                slowed = slowed || !walled;
                reply = gq_msg_error (msg, GQ_ERATE, "slow down");
                json_object_set_new (gq_msg_body (reply), "retry_after_ms",
                                     json_integer (walled ? 400 : 30));
                gq_msg_send (&reply, router);
                gq_msg_destroy (&msg);
                continue;
            }
            size_t i;
            json_t *job;
            json_array_foreach (jobs, i, job) {
                const char *kind = json_string_value (json_object_get (job, "kind"));
                if (kind && streq (kind, "refuse")) {
                    reply = gq_msg_error (msg, GQ_EINVAL, "jobs[%zu]: kind refused", i);
                    json_object_set_new (gq_msg_body (reply), "index", json_integer ((int) i));
                    break;
                }
            }
            if (reply) {
                gq_msg_send (&reply, router);
                gq_msg_destroy (&msg);
                continue;
            }
            json_t *ids = json_array ();
            for (size_t i = 0; i < json_array_size (jobs); i++) {
                json_array_append_new (ids, json_integer (next_id++));
            }
            reply = gq_msg_reply (msg, "SUBMIT", json_pack ("{s:O}", "ids", ids));
            gq_msg_send (&reply, router);
            if (json_is_true (json_object_get (body, "watch"))) {
                s_fake_finished (router, msg, ids);
            }
            json_decref (ids);
        } else if (streq (command, "WAIT")) {
            if (waits++ > 0) {
                s_fake_finished (router, msg, json_object_get (body, "ids"));
            }
        }
        /* NODES: silence. */
        if (reply) {
            gq_msg_send (&reply, router);
        }
        gq_msg_destroy (&msg);
    }
    gq_msg_destroy (&held);
    zpoller_destroy (&poller);
    zsock_destroy (&router);
}

static void
s_fake_count (zactor_t *broker, int *submits, int *waits)
{
    zstr_send (broker, "COUNT");
    zsock_recv (broker, "ii", submits, waits);
}

typedef struct {
    int calls;              /* fn invocations */
    int missing;            /* of which state "missing" */
    int64_t seen[16];       /* ids reported, in order */
} s_seen_t;

static int
s_on_finished (void *arg, json_t *job)
{
    s_seen_t *seen = (s_seen_t *) arg;
    if (seen->calls < 16) {
        seen->seen[seen->calls] = json_integer_value (json_object_get (job, "id"));
    }
    seen->calls++;
    if (streq (json_string_value (json_object_get (job, "state")), "missing")) {
        seen->missing++;
    }
    return 0;
}

void
gq_client_test (bool verbose)
{
    const char *endpoint = "inproc://gq_client_test";
    zactor_t *broker = zactor_new (s_fake_broker, (void *) endpoint);
    assert (broker);
    char why[256] = "";
    gq_client_opts_t opts = {.endpoint = endpoint, .timeout_ms = 300};
    gq_client_t *client = gq_client_new (&opts, why, sizeof why);
    S_CHECK_PTR (client, why);
    GQ_CHECK_STR (gq_client_endpoint (client), endpoint);

    /* PING round trip; "req" is not part of what the caller gets. */
    json_t *pong = gq_client_call (client, "PING", NULL);
    S_CHECK_PTR (pong, gq_client_error (client));
    GQ_CHECK_STR (json_string_value (json_object_get (pong, "version")), "0.1.0");
    assert (json_object_get (pong, "req") == NULL);
    json_decref (pong);

    /* Out-of-order replies reach the right request. */
    int64_t req1 = gq_client_send (client, "STATUS", json_pack ("{s:[i]}", "ids", 1));
    assert (req1 > 0);
    json_t *status = gq_client_call (client, "STATUS", json_pack ("{s:[i]}", "ids", 2));
    S_CHECK_PTR (status, gq_client_error (client));
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_array_get (
                    json_object_get (status, "jobs"), 0), "id")), 2);
    json_decref (status);
    /* The held reply and the unclaimed FINISHED wait in the pending list, in arrival order. */
    char command[32];
    int64_t req;
    json_t *body;
    GQ_CHECK_EQ (gq_client_recv (client, 1000, command, &req, &body, NULL), GQ_OK);
    GQ_CHECK_STR (command, "FINISHED");
    GQ_CHECK_EQ (req, 777);
    json_decref (body);
    zlist_t *blobs = NULL;
    GQ_CHECK_EQ (gq_client_recv (client, 1000, command, &req, &body, &blobs), GQ_OK);
    GQ_CHECK_STR (command, "STATUS");
    GQ_CHECK_EQ (req, req1);
    GQ_CHECK_EQ (zlist_size (blobs), 0);
    zlist_destroy (&blobs);
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_array_get (
                    json_object_get (body, "jobs"), 0), "id")), 1);
    json_decref (body);

    /* RATE_LIMITED is retried after its hint within the timeout. */
    json_t *cancelled = gq_client_call (client, "CANCEL", json_pack ("{s:[i]}", "ids", 5));
    S_CHECK_PTR (cancelled, gq_client_error (client));
    json_decref (cancelled);

    /* ERROR replies become code and text. */
    assert (gq_client_call (client, "JOBS", NULL) == NULL);
    GQ_CHECK_EQ (gq_client_errcode (client), GQ_EINVAL);
    GQ_CHECK_STR (gq_client_error (client), "BAD_REQUEST: jobs[3]: \"priority\" is 99, outside 0..9");
    GQ_CHECK_EQ (gq_client_error_index (client), 3);

    /* Silence: the exact timeout text, within a bounded time. */
    int64_t t0 = gq_mono_us ();
    assert (gq_client_call (client, "NODES", NULL) == NULL);
    int64_t took_ms = (gq_mono_us () - t0) / 1000;
    S_CHECK_RANGE (took_ms, 290, 2000);
    GQ_CHECK_EQ (gq_client_errcode (client), GQ_ETIMEOUT);
    GQ_CHECK_STR (gq_client_error (client), "no broker answered at inproc://gq_client_test within "
                                           "0.3 s: is gridq-broker running?");

    /* A batch above the limit is split; ids come back in input order. */
    size_t big = GQ_MAX_BATCH_JOBS + 5;
    json_t *jobs = json_array ();
    for (size_t i = 0; i < big; i++) {
        json_array_append_new (jobs, json_object ());
    }
    int64_t *ids = (int64_t *) calloc (big, sizeof *ids);
    int submits, waits;
    s_fake_count (broker, &submits, &waits);
    int submits0 = submits;
    GQ_CHECK_EQ (gq_client_submit (client, jobs, false, ids), GQ_OK);
    s_fake_count (broker, &submits, &waits);
    GQ_CHECK_EQ (submits - submits0, 2);
    for (size_t i = 1; i < big; i++) {
        GQ_CHECK_EQ (ids[i], ids[i - 1] + 1);
    }
    json_decref (jobs);
    free (ids);

    /* Smaller chunks, several in flight. */
    gq_client_set_submit_window (client, 3, 2);
    jobs = json_array ();
    for (size_t i = 0; i < 10; i++) {
        json_array_append_new (jobs, json_object ());
    }
    int64_t few[10];
    GQ_CHECK_EQ (gq_client_submit (client, jobs, false, few), GQ_OK);
    for (size_t i = 1; i < 10; i++) {
        GQ_CHECK_EQ (few[i], few[i - 1] + 1);
    }
    json_decref (jobs);

    /* A refused chunk: the error names the job by its input index; earlier chunks stand. */
    jobs = json_pack ("[{}, {}, {}, {}, {s:s}, {}]", "kind", "refuse");
    int64_t six[6];
    GQ_CHECK_EQ (gq_client_submit (client, jobs, false, six), GQ_EINVAL);
    GQ_CHECK_EQ (gq_client_error_index (client), 4);
    GQ_CHECK_STR (gq_client_error (client), "BAD_REQUEST: jobs[1]: kind refused");
    size_t refused_first = 0, refused_count = 0;
    assert (gq_client_refused (client, &refused_first, &refused_count));
    GQ_CHECK_EQ (refused_first, 3);
    GQ_CHECK_EQ (refused_count, 3);
    S_CHECK_RANGE (six[0], 1, INT64_MAX);
    GQ_CHECK_EQ (six[1], six[0] + 1);
    GQ_CHECK_EQ (six[2], six[0] + 2);
    GQ_CHECK_EQ (six[3], 0);
    GQ_CHECK_EQ (six[5], 0);
    json_decref (jobs);
    gq_client_set_submit_window (client, 0, 0);

    /* Large jobs: chunks split by bytes as well; a job too big for any frame is refused before
       anything is sent. */
    size_t half = GQ_CLIENT_SUBMIT_BYTES / 2 - 100;
    char *filler = (char *) malloc (half + 1);
    memset (filler, 'x', half);
    filler[half] = 0;
    jobs = json_pack ("[{s:s}, {s:s}, {s:s}]", "payload", filler, "payload", filler, "payload",
                      filler);
    int64_t three[3];
    s_fake_count (broker, &submits, &waits);
    submits0 = submits;
    /* Megabytes through the fake broker may take longer than 0.3 s on a slow build (sanitizers):
       a client of its own with room to wait, for this step. */
    gq_client_opts_t patient = {.endpoint = endpoint, .timeout_ms = 30000};
    gq_client_t *big_client = gq_client_new (&patient, why, sizeof why);
    S_CHECK_PTR (big_client, why);
    GQ_CHECK_EQ (gq_client_submit (big_client, jobs, false, three), GQ_OK);
    gq_client_destroy (&big_client);
    s_fake_count (broker, &submits, &waits);
    GQ_CHECK_EQ (submits - submits0, 2);
    GQ_CHECK_EQ (three[2], three[0] + 2);
    json_decref (jobs);
    free (filler);
    filler = (char *) calloc (GQ_CLIENT_SUBMIT_BYTES, 1);
    memset (filler, 'y', GQ_CLIENT_SUBMIT_BYTES - 1);
    jobs = json_pack ("[{}, {s:s}]", "payload", filler);
    GQ_CHECK_EQ (gq_client_submit (client, jobs, false, three), GQ_ETOOBIG);
    GQ_CHECK_EQ (gq_client_error_index (client), 1);
    S_CHECK_HAS (gq_client_error (client), "job 1 is");
    s_fake_count (broker, &submits0, &waits);
    GQ_CHECK_EQ (submits0, submits);
    json_decref (jobs);
    free (filler);

    /* A rate-limited SUBMIT is sent again after the hint. */
    jobs = json_pack ("[{s:s}]", "idem", "slow");
    int64_t slow_id = 0;
    GQ_CHECK_EQ (gq_client_submit (client, jobs, false, &slow_id), GQ_OK);
    S_CHECK_RANGE (slow_id, 1, INT64_MAX);
    json_decref (jobs);

    /* Past the timeout, a rate-limited chunk goes again only with rate retries, and only as
       many times in a row as they allow: "capped" is refused three times, then accepted. */
    jobs = json_pack ("[{s:s}]", "kind", "capped");
    s_fake_count (broker, &submits, &waits);
    submits0 = submits;
    GQ_CHECK_EQ (gq_client_submit (client, jobs, false, &slow_id), GQ_ERATE);
    GQ_CHECK_STR (gq_client_error (client), "RATE_LIMITED: slow down");
    assert (gq_client_refused (client, &refused_first, &refused_count));
    GQ_CHECK_EQ (refused_first, 0);
    GQ_CHECK_EQ (refused_count, 1);
    gq_client_set_rate_retries (client, 2);
    GQ_CHECK_EQ (gq_client_submit (client, jobs, false, &slow_id), GQ_OK);
    assert (!gq_client_refused (client, &refused_first, &refused_count));
    s_fake_count (broker, &submits, &waits);
    GQ_CHECK_EQ (submits - submits0, 4);
    json_decref (jobs);
    jobs = json_pack ("[{s:s}]", "kind", "walled");
    submits0 = submits;
    GQ_CHECK_EQ (gq_client_submit (client, jobs, false, &slow_id), GQ_ERATE);
    s_fake_count (broker, &submits, &waits);
    GQ_CHECK_EQ (submits - submits0, 3);
    gq_client_set_rate_retries (client, 0);
    json_decref (jobs);

    /* A lost SUBMIT is sent again when every job has an idem key. */
    jobs = json_pack ("[{s:s}, {s:s}]", "idem", "drop-once", "idem", "k2");
    int64_t two[2];
    s_fake_count (broker, &submits, &waits);
    submits0 = submits;
    GQ_CHECK_EQ (gq_client_submit (client, jobs, false, two), GQ_OK);
    s_fake_count (broker, &submits, &waits);
    GQ_CHECK_EQ (submits - submits0, 2);
    GQ_CHECK_EQ (two[1], two[0] + 1);
    json_decref (jobs);

    /* Watched submit: FINISHED come with the SUBMIT's req; wait needs no WAIT and reports each
       id once even when it is named twice. */
    jobs = json_pack ("[{}, {}]");
    GQ_CHECK_EQ (gq_client_submit (client, jobs, true, two), GQ_OK);
    json_decref (jobs);
    s_fake_count (broker, &submits, &waits);
    int waits0 = waits;
    int64_t twice[3] = {two[0], two[1], two[0]};
    s_seen_t seen = {0};
    GQ_CHECK_EQ (gq_client_wait (client, twice, 3, 2000, s_on_finished, &seen), GQ_OK);
    GQ_CHECK_EQ (seen.calls, 2);
    GQ_CHECK_EQ (seen.missing, 0);
    s_fake_count (broker, &submits, &waits);
    GQ_CHECK_EQ (waits, waits0);

    /* The first WAIT goes unanswered: the client asks again after the quiet period; unknown
       ids come back as "missing". */
    int64_t wanted[2] = {two[0], 5000000};
    memset (&seen, 0, sizeof seen);
    t0 = gq_mono_us ();
    GQ_CHECK_EQ (gq_client_wait (client, wanted, 2, 5000, s_on_finished, &seen), GQ_OK);
    took_ms = (gq_mono_us () - t0) / 1000;
    GQ_CHECK_EQ (seen.calls, 2);
    GQ_CHECK_EQ (seen.missing, 1);
    s_fake_count (broker, &submits, &waits);
    GQ_CHECK_EQ (waits - waits0, 2);
    S_CHECK_RANGE (took_ms, GQ_CLIENT_REWAIT_MIN_MS - 10, 4000);

    /* A wait that cannot finish in time says so. */
    gq_client_t *silent = NULL;
    gq_client_opts_t nowhere = {.endpoint = "inproc://gq_client_test_nobody", .timeout_ms = 100};
    silent = gq_client_new (&nowhere, why, sizeof why);
    S_CHECK_PTR (silent, why);
    int64_t one = 42;
    GQ_CHECK_EQ (gq_client_wait (silent, &one, 1, 200, s_on_finished, &seen), GQ_ETIMEOUT);
    S_CHECK_HAS (gq_client_error (silent), "1 of 1 jobs not finished");
    int64_t unsent[1];
    jobs = json_pack ("[{}]");
    GQ_CHECK_EQ (gq_client_submit (silent, jobs, false, unsent), GQ_ETIMEOUT);
    json_decref (jobs);
    gq_client_destroy (&silent);

    /* Bad endpoints and certificates are refused with a reason. */
    gq_client_opts_t bad = {.endpoint = "nonsense://x"};
    assert (gq_client_new (&bad, why, sizeof why) == NULL);
    S_CHECK_HAS (why, "bad broker endpoint \"nonsense://x\"");
    gq_client_opts_t nocert = {.endpoint = endpoint, .cert_path = "/nonexistent/me.secret",
                               .server_cert_path = "/nonexistent/broker.pub"};
    if (zsys_has_curve ()) {
        assert (gq_client_new (&nocert, why, sizeof why) == NULL);
        GQ_CHECK_STR (why, "cannot load certificate /nonexistent/me.secret: No such file or "
                          "directory");
        /* A real pair: the secret certificate applies, the public one names the server. */
        char dir[] = "/tmp/gq_client_test.XXXXXX";
        assert (mkdtemp (dir));
        char pub[64], secret_path[80];
        snprintf (secret_path, sizeof secret_path, "%s/me.secret", dir);
        snprintf (pub, sizeof pub, "%s/broker.pub", dir);
        zcert_t *mine = zcert_new ();
        zcert_t *theirs = zcert_new ();
        GQ_CHECK_EQ (zcert_save_secret (mine, secret_path), 0);
        GQ_CHECK_EQ (zcert_save_public (theirs, pub), 0);
        gq_client_opts_t curve = {.endpoint = endpoint, .cert_path = secret_path,
                                  .server_cert_path = pub};
        gq_client_t *secure = gq_client_new (&curve, why, sizeof why);
        S_CHECK_PTR (secure, why);
        char *server_key = zsock_curve_serverkey (gq_client_socket (secure));
        GQ_CHECK_STR (server_key, zcert_public_txt (theirs));
        zstr_free (&server_key);
        gq_client_destroy (&secure);
        /* The public half alone cannot authenticate us. */
        curve.cert_path = pub;
        assert (gq_client_new (&curve, why, sizeof why) == NULL);
        S_CHECK_HAS (why, "holds no secret key");
        curve.cert_path = secret_path;
        curve.server_cert_path = NULL;
        assert (gq_client_new (&curve, why, sizeof why) == NULL);
        S_CHECK_HAS (why, "CURVE needs both");
        zcert_destroy (&mine);
        zcert_destroy (&theirs);
        unlink (secret_path);
        unlink (pub);
        rmdir (dir);
    }

    gq_client_destroy (&client);
    gq_client_destroy (&client); /* safe twice */
    zactor_destroy (&broker);
    if (verbose) {
        printf ("(last reason: %s) ", why);
    }
}
