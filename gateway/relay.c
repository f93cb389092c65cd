/*  relay.c — the gateway's broker thread.

    One zactor owns the one gq_client (one DEALER socket to the broker) and multiplexes every
    HTTP request in flight over it: each broker request gets its own req id (gq_client_send),
    replies come back through gq_client_recv and find their call by that id, and FINISHED and
    PARTIAL messages find theirs by job id. Several calls that follow one job share one broker
    watch, since the broker relays each partial once per watch and the client API names only
    the job. The HTTP threads post calls through one PUSH socket (under a mutex, the only one
    here), and the relay answers through call.h, which resumes their connections. The relay
    never blocks on HTTP and HTTP never blocks on the broker.

    A call moves through stages; each stage awaits one broker reply (with a deadline) or one
    job's end (a watch). A timer every GW_CRON_MS gives up on late replies (504), ends ?wait=
    at its time, and looks at the sockets of waiting connections: a client that left has its
    connection aborted, and its chat or completion job cancelled. */
#include "relay.h"
#include "tuning.h"

#include <string.h>

typedef enum {
    S_OWNER,        /* a client token's call about a job: awaiting STATUS (is it the token's?) */
    S_REPLY,        /* awaiting the reply of the op's one request */
    S_WAITING,      /* GW_OP_STATUS with ?wait=: in the job's watch until it ends or time ends */
    S_STATUS,       /* GW_OP_STATUS: awaiting STATUS */
    S_RESULT,       /* GW_OP_STATUS of a failed job: awaiting RESULT (its attempts) */
    S_EVENTS_STATUS, /* GW_OP_EVENTS: in the watch, awaiting STATUS for the first state */
    S_EVENTS,       /* GW_OP_EVENTS: streaming partials until the job ends */
    S_NODES,        /* GW_OP_INFER: awaiting NODES (does an online node offer the model?) */
    S_SUBMIT,       /* GW_OP_INFER: awaiting SUBMIT */
    S_INFER         /* GW_OP_INFER: in the job's watch until it ends */
} s_stage_t;

struct _gw_relay_t {
    gw_relay_opts_t opts;         /* as given (strings borrowed from the caller) */
    zactor_t *actor;              /* the relay thread */
    zsock_t *push;                /* HTTP threads -> relay: ["call"|"gone", pointer] */
    pthread_mutex_t push_mutex;   /* serialises push among HTTP threads */
    bool stopping;                /* under push_mutex: no more posts */
    char endpoint[128];           /* the inproc name of push */
    /* The relay thread only. */
    gq_client_t *client;          /* the one broker client */
    zsock_t *pull;                /* posts in */
    zlistx_t *calls;              /* every call the relay holds (a reference each) */
    zhashx_t *by_req;             /* "req" -> call awaiting that reply */
    zhashx_t *watches;            /* "job id" -> zlistx_t of calls following that job */
    json_t *nodes;                /* the last NODES reply's nodes, or NULL */
    zhashx_t *open;               /* --max-queued: "job id" -> its token's name, until it ends */
    zhashx_t *counts;             /* --max-queued: token name -> jobs in open or being submitted */
    int64_t recheck_req;          /* the STATUS that asks after the jobs in open, or 0 */
    int64_t recheck_us;           /* when the next one goes (monotonic) */
    int64_t nodes_us;             /* when it came (monotonic) */
};

static void s_finish (gw_relay_t *self, gw_call_t *call);

static char *
s_key (char buf[24], int64_t value)
{
    snprintf (buf, 24, "%lld", (long long) value);
    return buf;
}

static int
s_same_pointer (const void *a, const void *b)
{
    return a == b ? 0 : (a < b ? -1 : 1);
}

/* ---- Broker requests ----------------------------------------------------------------------- */

/* Sends a request for call (takes body); its reply comes to s_on_reply in stage. */
static void
s_send (gw_relay_t *self, gw_call_t *call, s_stage_t stage, const char *command, json_t *body)
{
    int64_t req = gq_client_send (self->client, command, body);
    if (req < 0) {
        gw_call_error (call, 502, "broker", NULL, "cannot reach the broker: %s",
                       gq_client_error (self->client));
        s_finish (self, call);
        return;
    }
    char key[24];
    call->stage = stage;
    call->req = req;
    call->deadline_us = gq_mono_us () + (int64_t) gq_client_timeout (self->client) * 1000;
    zhashx_update (self->by_req, s_key (key, req), call);
}

/* A request no reply is awaited for (a cancel for a client that left). */
static void
s_send_forget (gw_relay_t *self, const char *command, json_t *body)
{
    if (gq_client_send (self->client, command, body) < 0) {
        zsys_warning ("gateway: %s not sent: %s", command, gq_client_error (self->client));
    }
}

/* Joins the watch of job; the first call to follow it asks the broker (WAIT, with the job's
   states) unless ask is false (a SUBMIT with watch asked already). A call that resumes (events
   with Last-Event-ID) asks again, with "after_seq": the broker replays the partials it keeps
   after it; the partials that then come twice go once to each call (last_seq). */
static void
s_watch (gw_relay_t *self, gw_call_t *call, int64_t job, bool ask)
{
    char key[24];
    zlistx_t *list = (zlistx_t *) zhashx_lookup (self->watches, s_key (key, job));
    bool resume = call->op == GW_OP_EVENTS && call->after_seq >= -1;
    if (!list) {
        list = zlistx_new ();
        zlistx_set_comparator (list, s_same_pointer);
        zhashx_insert (self->watches, key, list);
    } else {
        ask = false; /* the broker's watch of the job is there already */
    }
    if (ask || resume) {
        json_t *wait = json_pack ("{s:[I], s:b}", "ids", (json_int_t) job, "states", 1);
        if (resume) {
            json_object_set_new (wait, "after_seq", json_integer (call->after_seq));
            call->last_seq = call->after_seq;
        }
        s_send_forget (self, "WAIT", wait);
    }
    zlistx_add_end (list, call);
    call->job = job;
    call->watching = true;
}

/* Leaves the job's watch. The entry stays until the job ends: the broker's watch does too,
   and a second WAIT for the same job would have every partial come twice. */
static void
s_unwatch (gw_relay_t *self, gw_call_t *call)
{
    if (!call->watching) {
        return;
    }
    char key[24];
    zlistx_t *list = (zlistx_t *) zhashx_lookup (self->watches, s_key (key, call->job));
    if (list && zlistx_find (list, call)) {
        zlistx_delete (list, NULL);
    }
    call->watching = false;
}

/* The call is answered (or its client left): the relay lets go of it. */
static void
s_finish (gw_relay_t *self, gw_call_t *call)
{
    if (call->req) {
        char key[24];
        zhashx_delete (self->by_req, s_key (key, call->req));
        call->req = 0;
    }
    s_unwatch (self, call);
    if (call->handle) {
        zlistx_delete (self->calls, call->handle);
        call->handle = NULL;
        gw_call_unref (&call);
    }
}

/* ---- Jobs per token (--max-queued) --------------------------------------------------------- */

static int64_t
s_count (gw_relay_t *self, const char *name)
{
    return (int64_t) (intptr_t) zhashx_lookup (self->counts, name);
}

static void
s_count_add (gw_relay_t *self, const char *name, int64_t delta)
{
    int64_t count = s_count (self, name) + delta;
    if (count > 0) {
        zhashx_update (self->counts, name, (void *) (intptr_t) count);
    } else {
        zhashx_delete (self->counts, name);
    }
}

/* A job counted for its token ended (or the broker does not know it). */
static void
s_open_end (gw_relay_t *self, int64_t id)
{
    char key[24];
    snprintf (key, sizeof key, "%lld", (long long) id);
    const char *name = (const char *) zhashx_lookup (self->open, key);
    if (name) {
        s_count_add (self, name, -1);
        zhashx_delete (self->open, key);
    }
}

/* A submission counted against its token was answered: its jobs are followed until they end,
   or (refused) no longer counted. An idempotent repeat of a job counted already counts once. */
static void
s_open_submitted (gw_relay_t *self, gw_call_t *call, const char *command, json_t *body)
{
    int64_t counted = call->submitted;
    call->submitted = 0;
    size_t i;
    json_t *id;
    json_array_foreach (streq (command, "SUBMIT") ? json_object_get (body, "ids") : NULL, i, id) {
        char key[24];
        snprintf (key, sizeof key, "%lld", (long long) json_integer_value (id));
        if (!zhashx_lookup (self->open, key) &&
            zhashx_insert (self->open, key, strdup (call->token)) == 0) {
            counted--;
        }
    }
    s_count_add (self, call->token, -counted);
}

/* Whether a token may submit n more jobs; else the call is answered 429. Counted when it may. */
static bool
s_open_take (gw_relay_t *self, gw_call_t *call, int64_t n)
{
    if (!self->opts.max_queued || !*call->token) {
        return true;
    }
    int64_t count = s_count (self, call->token);
    if (count + n > self->opts.max_queued) {
        pthread_mutex_lock (&call->mutex);
        call->retry_after_s = 1;
        pthread_mutex_unlock (&call->mutex);
        gw_call_error (call, 429, call->openai ? "rate_limit_exceeded" : "RATE_LIMITED", NULL,
                       "token %s has %lld jobs that have not ended; --max-queued is %lld",
                       call->token, (long long) count, (long long) self->opts.max_queued);
        return false;
    }
    s_count_add (self, call->token, n);
    call->submitted = n;
    return true;
}

/* The periodic question about every job counted: those that ended while no watch told us (a
   broker restart forgets watches) stop counting. */
static void
s_open_recheck (gw_relay_t *self)
{
    if (self->recheck_req || zhashx_size (self->open) == 0) {
        return;
    }
    json_t *ids = json_array ();
    for (void *name = zhashx_first (self->open); name && json_array_size (ids) < GQ_MAX_IDS;
         name = zhashx_next (self->open)) {
        const char *key = (const char *) zhashx_cursor (self->open);
        json_array_append_new (ids, json_integer (atoll (key)));
    }
    int64_t req = gq_client_send (self->client, "STATUS", json_pack ("{s:o}", "ids", ids));
    self->recheck_req = req > 0 ? req : 0;
}

static void
s_open_rechecked (gw_relay_t *self, json_t *body)
{
    size_t i;
    json_t *item;
    json_array_foreach (json_object_get (body, "jobs"), i, item) {
        const char *state = json_string_value (json_object_get (item, "state"));
        if (state && (streq (state, "done") || streq (state, "failed") ||
                      streq (state, "cancelled"))) {
            s_open_end (self, json_integer_value (json_object_get (item, "id")));
        }
    }
    json_array_foreach (json_object_get (body, "missing"), i, item) {
        s_open_end (self, json_integer_value (item));
    }
}

/* ---- Answers ------------------------------------------------------------------------------- */

/* A job as the call's client sees it (new reference): with its owner, under tokens. */
static json_t *
s_job_out (gw_call_t *call, json_t *job)
{
    if (!*call->token || !job) {
        return json_incref (job);
    }
    json_t *copy = json_deep_copy (job);
    gw_owner_show (copy);
    return copy;
}

/* The HTTP status of a broker ERROR code. */
static unsigned
s_http_status (const char *code)
{
    static const struct {
        const char *code;
        unsigned status;
    } map[] = {{"BAD_REQUEST", 400}, {"TOO_BIG", 413},      {"NOT_FOUND", 404},
               {"BAD_STATE", 409},   {"RATE_LIMITED", 429}, {"DENIED", 403},
               {"STORE", 503}};
    for (size_t i = 0; i < sizeof map / sizeof *map; i++) {
        if (streq (code, map[i].code)) {
            return map[i].status;
        }
    }
    return 502;
}

/* Answers call with the broker's ERROR: the status for its code, the field its message names
   (the first quoted word), Retry-After for RATE_LIMITED. */
static void
s_broker_error (gw_relay_t *self, gw_call_t *call, json_t *body)
{
    const char *code = json_string_value (json_object_get (body, "code"));
    const char *message = json_string_value (json_object_get (body, "message"));
    code = code ? code : "PROTOCOL";
    message = message ? message : "the broker refused the request";
    unsigned status = s_http_status (code);
    /* One job submitted alone: "jobs[0]: " says nothing to its sender. */
    if (call->op == GW_OP_SUBMIT && !call->batch && strncmp (message, "jobs[0]: ", 9) == 0) {
        message += 9;
    }
    char field[64] = "";
    const char *open = strchr (message, '"');
    const char *close = open ? strchr (open + 1, '"') : NULL;
    if (status == 400 && close && close - open - 1 < (long) sizeof field) {
        memcpy (field, open + 1, (size_t) (close - open - 1));
        field[close - open - 1] = 0;
    }
    if (status == 429) {
        int64_t ms = json_integer_value (json_object_get (body, "retry_after_ms"));
        pthread_mutex_lock (&call->mutex);
        call->retry_after_s = ms > 0 ? (ms + 999) / 1000 : 1;
        pthread_mutex_unlock (&call->mutex);
    }
    const char *openai_code = status == 429 ? "rate_limit_exceeded" : code;
    gw_call_error (call, status, call->openai ? openai_code : code, *field ? field : NULL, "%s",
                   message);
    (void) self;
}

/* A reply body as the answer: without the broker's "req". */
static void
s_reply_body (gw_call_t *call, unsigned status, json_t *body)
{
    json_object_del (body, "req");
    gw_call_reply (call, status, json_incref (body));
}

/* ---- OpenAI: models, and a chat or completion job ----------------------------------------- */

static bool
s_node_online (json_t *node)
{
    const char *status = json_string_value (json_object_get (node, "status"));
    return status && (streq (status, "online") || streq (status, "busy"));
}

static bool
s_array_has (json_t *array, const char *name)
{
    size_t i;
    json_t *item;
    json_array_foreach (array, i, item) {
        if (json_is_string (item) && streq (json_string_value (item), name)) {
            return true;
        }
    }
    return false;
}

/* GET /v1/models: every model an online node offers, once each, in OpenAI's list. */
static void
s_models (gw_call_t *call, json_t *nodes)
{
    json_t *seen = json_object ();
    json_t *data = json_array ();
    size_t i, j;
    json_t *node, *model;
    json_array_foreach (nodes, i, node) {
        if (!s_node_online (node)) {
            continue;
        }
        json_array_foreach (json_object_get (node, "models_available"), j, model) {
            const char *name = json_string_value (model);
            if (name && !json_object_get (seen, name)) {
                json_object_set_new (seen, name, json_true ());
                json_array_append_new (data, json_pack ("{s:s, s:s, s:i, s:s}", "id", name,
                                                        "object", "model", "created", 0,
                                                        "owned_by", "gridq"));
            }
        }
    }
    json_decref (seen);
    gw_call_reply (call, 200, json_pack ("{s:s, s:o}", "object", "list", "data", data));
}

/* A chat or completion request: refused with 404 model_not_found unless an online node
   offers its kind and model; else submitted, watched. */
static void
s_infer_submit (gw_relay_t *self, gw_call_t *call)
{
    size_t i;
    json_t *node;
    bool offered = false;
    json_array_foreach (self->nodes, i, node) {
        offered |= s_node_online (node) &&
                   s_array_has (json_object_get (node, "kinds"), call->kind) &&
                   s_array_has (json_object_get (node, "models_available"), call->model);
    }
    if (!offered) {
        gw_call_error (call, 404, "model_not_found", "model",
                       "The model '%s' does not exist: no online node serves it for %s",
                       call->model, call->kind);
        s_finish (self, call);
        return;
    }
    if (!s_open_take (self, call, 1)) {
        s_finish (self, call);
        return;
    }
    json_t *job = json_pack ("{s:s, s:s, s:O}", "kind", call->kind, "model", call->model,
                             "payload", call->body);
    if (*call->affinity) {
        json_object_set_new (job, "affinity", json_string (call->affinity));
    }
    char why[256];
    if (*call->token && gw_owner_tag (job, call->token, why, sizeof why) != 0) {
        json_decref (job);
        gw_call_error (call, 400, "BAD_REQUEST", NULL, "%s", why);
        s_finish (self, call);
        return;
    }
    /* With states: a job queued again (a new attempt) numbers its partials from 0 again. */
    s_send (self, call, S_SUBMIT, "SUBMIT",
            json_pack ("{s:[o], s:b, s:b, s:b}", "jobs", job, "watch", 1, "brief", 1, "states",
                       1));
}

/* A partial of a streamed chat or completion: one SSE data line. The usage-only chunk that
   the worker asked the server for (choices empty) goes only to clients that asked for it. */
static void
s_infer_partial (gw_call_t *call, json_t *partial)
{
    json_t *choices = json_object_get (partial, "choices");
    if (!call->stream ||
        (!call->usage_asked && json_is_array (choices) && json_array_size (choices) == 0)) {
        return;
    }
    char *data = json_dumps (partial, JSON_COMPACT);
    char *line = data ? zsys_sprintf ("data: %s\n\n", data) : NULL;
    if (!line || !gw_call_stream_write (call, line)) {
        gw_call_abort (call); /* the client is too far behind */
    }
    free (line);
    free (data);
}

/* The job of a chat or completion ended (job: FINISHED's brief job, NULL when missing). */
static void
s_infer_end (gw_relay_t *self, gw_call_t *call, json_t *job)
{
    const char *state = json_string_value (json_object_get (job, "state"));
    const char *error = json_string_value (json_object_get (job, "error"));
    bool done = state && streq (state, "done");
    const char *code = state && streq (state, "cancelled") ? "job_cancelled" : "job_failed";
    char message[1024];
    snprintf (message, sizeof message, "job %lld %s: %s", (long long) call->job,
              state ? state : "is missing", error ? error : "no error recorded");
    if (!call->stream) {
        if (done) {
            gw_call_reply (call, 200, json_incref (json_object_get (job, "result")));
        } else {
            gw_call_error (call, 502, code, NULL, "%s", message);
        }
    } else {
        char *line;
        if (done) {
            line = strdup ("data: [DONE]\n\n");
        } else {
            json_t *chunk = json_pack ("{s:{s:s, s:s, s:n, s:s}}", "error", "message", message,
                                       "type", "server_error", "param", "code", code);
            char *data = json_dumps (chunk, JSON_COMPACT);
            line = zsys_sprintf ("data: %s\n\n", data);
            free (data);
            json_decref (chunk);
        }
        gw_call_stream_write (call, line);
        free (line);
        gw_call_stream_end (call);
    }
    s_finish (self, call);
}

/* ---- Job events (SSE) ---------------------------------------------------------------------- */

/* One SSE event: "event: NAME\n[id: ID\n]data: JSON\n\n" (malloc'd). */
static char *
s_event (const char *name, int64_t id, json_t *data)
{
    char *text = json_dumps (data, JSON_COMPACT | JSON_ENCODE_ANY);
    char *event = id >= 0 ? zsys_sprintf ("event: %s\nid: %lld\ndata: %s\n\n", name,
                                          (long long) id, text ? text : "null")
                          : zsys_sprintf ("event: %s\ndata: %s\n\n", name, text ? text : "null");
    free (text);
    return event;
}

/* Writes an event to the stream, or holds it until the first state is out. */
static void
s_events_write (gw_call_t *call, char *event)
{
    if (!event) {
        gw_call_abort (call);
    } else if (call->state_sent) {
        if (!gw_call_stream_write (call, event)) {
            gw_call_abort (call);
        }
    } else {
        char *held = zsys_sprintf ("%s%s", call->held ? call->held : "", event);
        free (call->held);
        call->held = held;
    }
    free (event);
}

static void
s_events_done (gw_relay_t *self, gw_call_t *call, json_t *job)
{
    json_t *shown = s_job_out (call, job);
    s_events_write (call, s_event ("done", -1, shown));
    json_decref (shown);
    gw_call_stream_end (call);
    s_finish (self, call);
}

/* ---- Replies and the job's end ------------------------------------------------------------- */

/* The first job of a reply's "jobs", or NULL. */
static json_t *
s_first_job (json_t *body)
{
    return json_array_get (json_object_get (body, "jobs"), 0);
}

static bool
s_is_failed (json_t *job)
{
    const char *state = json_string_value (json_object_get (job, "state"));
    return state && streq (state, "failed");
}

static void s_begin (gw_relay_t *self, gw_call_t *call);

/* GET /v1/jobs: the broker's list, or (a client token) the token's jobs in it. */
static void
s_list (gw_call_t *call, json_t *body)
{
    json_t *jobs = json_array ();
    int64_t limit = call->limit ? call->limit : GW_LIST_DEFAULT;
    size_t i;
    json_t *job;
    json_array_foreach (json_object_get (body, "jobs"), i, job) {
        if ((int64_t) json_array_size (jobs) >= limit) {
            break;
        }
        if (call->admin || gw_owner_is (job, call->token)) {
            json_array_append_new (jobs, s_job_out (call, job));
        }
    }
    gw_call_reply (call, 200, json_pack ("{s:o}", "jobs", jobs));
}

static void
s_on_reply (gw_relay_t *self, gw_call_t *call, const char *command, json_t *body)
{
    if (call->submitted) {
        s_open_submitted (self, call, command, body);
    }
    if (call->gone) {
        /* A chat whose client left before its SUBMIT reply: the job goes now. */
        if (call->stage == S_SUBMIT && streq (command, "SUBMIT")) {
            json_t *ids = json_object_get (body, "ids");
            s_send_forget (self, "CANCEL", json_pack ("{s:O}", "ids", ids));
        }
        s_finish (self, call);
        return;
    }
    if (streq (command, "ERROR")) {
        s_broker_error (self, call, body);
        s_finish (self, call);
        return;
    }
    json_t *job = s_first_job (body);
    char message[64];
    snprintf (message, sizeof message, "no job %lld", (long long) call->id);
    switch (call->stage) {
    case S_OWNER:
        /* Another token's job is answered as one that does not exist: no hint either way. */
        if (!job || !gw_owner_is (job, call->token)) {
            gw_call_error (call, 404, "NOT_FOUND", NULL, "%s", message);
            break;
        }
        s_begin (self, call);
        return;
    case S_REPLY:
        if (call->op == GW_OP_HEALTH) {
            gw_call_reply (call, 200, json_pack ("{s:s, s:s, s:O}", "status", "ok", "broker",
                                                 gq_client_endpoint (self->client), "version",
                                                 json_object_get (body, "version")));
        } else if (call->op == GW_OP_SUBMIT) {
            json_t *ids = json_object_get (body, "ids");
            if (call->batch) {
                gw_call_reply (call, 201, json_pack ("{s:O}", "ids", ids));
            } else {
                int64_t id = json_integer_value (json_array_get (ids, 0));
                pthread_mutex_lock (&call->mutex);
                call->location = zsys_sprintf ("/v1/jobs/%lld", (long long) id);
                pthread_mutex_unlock (&call->mutex);
                gw_call_reply (call, 201, json_pack ("{s:I}", "id", (json_int_t) id));
            }
        } else if (call->op == GW_OP_CANCEL) {
            if (job) {
                gw_call_reply (call, 200, s_job_out (call, job));
            } else {
                gw_call_error (call, 404, "NOT_FOUND", NULL, "%s", message);
            }
        } else if (call->op == GW_OP_MODELS) {
            s_models (call, json_object_get (body, "nodes"));
        } else if (call->op == GW_OP_LIST) {
            s_list (call, body);
        } else {
            s_reply_body (call, 200, body);
        }
        break;
    case S_STATUS:
        if (!job) {
            gw_call_error (call, 404, "NOT_FOUND", NULL, "%s", message);
        } else if (s_is_failed (job)) {
            /* As gridq status --json: a failed job carries every attempt's reason. */
            json_decref (call->finished);
            call->finished = json_incref (job);
            s_send (self, call, S_RESULT, "RESULT",
                    json_pack ("{s:I}", "id", (json_int_t) call->id));
            return;
        } else {
            gw_call_reply (call, 200, s_job_out (call, job));
        }
        break;
    case S_RESULT: {
        json_t *whole = s_job_out (call, call->finished);
        json_object_set (whole, "attempts_detail",
                         json_object_get (json_object_get (body, "job"), "attempts_detail"));
        gw_call_reply (call, 200, whole);
        break;
    }
    case S_EVENTS_STATUS:
        if (!job) {
            gw_call_error (call, 404, "NOT_FOUND", NULL, "%s", message);
            break;
        }
        gw_call_stream_open (call);
        call->state_sent = true;
        json_t *shown = s_job_out (call, job);
        char *state = s_event ("state", -1, shown);
        json_decref (shown);
        bool written = state && gw_call_stream_write (call, state) &&
                       (!call->held || gw_call_stream_write (call, call->held));
        free (state);
        if (!written) {
            gw_call_abort (call);
            break;
        }
        if (call->finished) {
            s_events_done (self, call, call->finished);
            return;
        }
        call->stage = S_EVENTS;
        call->deadline_us = 0;
        return;
    case S_NODES:
        json_decref (self->nodes);
        self->nodes = json_incref (json_object_get (body, "nodes"));
        self->nodes_us = gq_mono_us ();
        s_infer_submit (self, call);
        return;
    case S_SUBMIT: {
        int64_t id = json_integer_value (json_array_get (json_object_get (body, "ids"), 0));
        s_watch (self, call, id, false);
        call->stage = S_INFER;
        call->deadline_us = 0;
        if (call->stream) {
            gw_call_stream_open (call);
        }
        return;
    }
    default:
        break;
    }
    s_finish (self, call);
}

/* A job that calls follow ended (job NULL: the broker does not know it). */
static void
s_on_job_end (gw_relay_t *self, gw_call_t *call, json_t *job)
{
    call->watching = false; /* the watch is being taken apart by the caller */
    switch (call->stage) {
    case S_WAITING:
        s_send (self, call, S_STATUS, "STATUS",
                json_pack ("{s:[I]}", "ids", (json_int_t) call->id));
        break;
    case S_EVENTS_STATUS:
        call->finished = json_incref (job); /* the state event goes first */
        break;
    case S_EVENTS:
        s_events_done (self, call, job);
        break;
    case S_INFER:
        s_infer_end (self, call, job);
        break;
    default:
        break;
    }
}

static void
s_end_watch (gw_relay_t *self, int64_t id, json_t *job)
{
    char key[24];
    zlistx_t *list = (zlistx_t *) zhashx_lookup (self->watches, s_key (key, id));
    if (!list) {
        return;
    }
    zhashx_delete (self->watches, key);
    gw_call_t *call;
    while ((call = (gw_call_t *) zlistx_detach (list, NULL))) {
        s_on_job_end (self, call, job);
    }
    zlistx_destroy (&list);
}

static void
s_on_finished (gw_relay_t *self, json_t *body)
{
    size_t i;
    json_t *item;
    json_array_foreach (json_object_get (body, "jobs"), i, item) {
        int64_t id = json_integer_value (json_object_get (item, "id"));
        s_end_watch (self, id, item);
        s_open_end (self, id);
    }
    json_array_foreach (json_object_get (body, "missing"), i, item) {
        s_end_watch (self, json_integer_value (item), NULL);
        s_open_end (self, json_integer_value (item));
    }
}

static void
s_on_partial (void *arg, int64_t id, int64_t seq, json_t *partial, int64_t dropped)
{
    gw_relay_t *self = (gw_relay_t *) arg;
    char key[24];
    zlistx_t *list = (zlistx_t *) zhashx_lookup (self->watches, s_key (key, id));
    (void) dropped;
    for (gw_call_t *call = list ? (gw_call_t *) zlistx_first (list) : NULL; call;
         call = (gw_call_t *) zlistx_next (list)) {
        if (seq <= call->last_seq) {
            continue; /* it came twice: two broker watches of the job (s_watch) */
        }
        call->last_seq = seq;
        if (call->op == GW_OP_EVENTS) {
            s_events_write (call, s_event ("partial", seq, partial));
        } else if (call->op == GW_OP_INFER) {
            s_infer_partial (call, partial);
        }
    }
}

/* STATE: a watched job was queued again or started. Each events stream gets "event: state"
   with {id, state, node?}; a job queued again starts a new attempt, whose partials count
   from 0 again. */
static void
s_on_state (gw_relay_t *self, json_t *body)
{
    char key[24];
    int64_t id = (int64_t) json_integer_value (json_object_get (body, "id"));
    zlistx_t *list = (zlistx_t *) zhashx_lookup (self->watches, s_key (key, id));
    json_t *shown = json_deep_copy (body);
    json_object_del (shown, "req");
    bool again = streq (json_string_value (json_object_get (body, "state")) ?: "", "queued");
    for (gw_call_t *call = list ? (gw_call_t *) zlistx_first (list) : NULL; call;
         call = (gw_call_t *) zlistx_next (list)) {
        call->last_seq = again ? -1 : call->last_seq;
        if (call->op == GW_OP_EVENTS) {
            s_events_write (call, s_event ("state", -1, shown));
        }
    }
    json_decref (shown);
}

/* ---- Calls in ------------------------------------------------------------------------------ */

/* The op's first broker request (after the owner's check, for a client token). */
static void
s_begin (gw_relay_t *self, gw_call_t *call)
{
    json_t *ids = json_pack ("{s:[I]}", "ids", (json_int_t) call->id);
    switch (call->op) {
    case GW_OP_HEALTH:
        s_send (self, call, S_REPLY, "PING", NULL);
        break;
    case GW_OP_SUBMIT: {
        json_t *jobs = call->batch ? json_incref (json_object_get (call->body, "jobs"))
                                   : json_pack ("[O]", call->body);
        if (!s_open_take (self, call, (int64_t) json_array_size (jobs))) {
            json_decref (jobs);
            s_finish (self, call);
            break;
        }
        json_t *submit = json_pack ("{s:o}", "jobs", jobs);
        if (call->submitted) {
            /* Counted: FINISHED says when each ends (brief, no partials: the gateway's own). */
            json_object_set_new (submit, "watch", json_true ());
            json_object_set_new (submit, "brief", json_true ());
            json_object_set_new (submit, "partials", json_false ());
        }
        s_send (self, call, S_REPLY, "SUBMIT", submit);
        break;
    }
    case GW_OP_STATUS:
        if (call->wait_ms > 0) {
            s_watch (self, call, call->id, true);
            call->stage = S_WAITING;
            call->deadline_us = gq_mono_us () + call->wait_ms * 1000;
        } else {
            s_send (self, call, S_STATUS, "STATUS", json_incref (ids));
        }
        break;
    case GW_OP_LIST: {
        json_t *body = json_object ();
        if (*call->state) {
            json_object_set_new (body, "state", json_string (call->state));
        }
        if (!call->admin) {
            json_object_set_new (body, "limit", json_integer (GQ_MAX_IDS)); /* filtered here */
        } else if (call->limit) {
            json_object_set_new (body, "limit", json_integer (call->limit));
        }
        s_send (self, call, S_REPLY, "JOBS", body);
        break;
    }
    case GW_OP_CANCEL:
        s_send (self, call, S_REPLY, "CANCEL", json_incref (ids));
        break;
    case GW_OP_NODES:
    case GW_OP_MODELS:
        s_send (self, call, S_REPLY, "NODES", NULL);
        break;
    case GW_OP_STATS:
        s_send (self, call, S_REPLY, "STATS", NULL);
        break;
    case GW_OP_EXPLAIN:
        s_send (self, call, S_REPLY, "EXPLAIN", json_pack ("{s:I}", "id", (json_int_t) call->id));
        break;
    case GW_OP_EVENTS:
        s_watch (self, call, call->id, true);
        s_send (self, call, S_EVENTS_STATUS, "STATUS", json_incref (ids));
        break;
    case GW_OP_INFER:
        if (self->nodes && gq_mono_us () - self->nodes_us < GW_NODES_FRESH_MS * 1000LL) {
            s_infer_submit (self, call);
        } else {
            s_send (self, call, S_NODES, "NODES", NULL);
        }
        break;
    }
    json_decref (ids);
}

static void
s_start (gw_relay_t *self, gw_call_t *call)
{
    call->handle = zlistx_add_end (self->calls, call); /* the reference posted with it */
    bool about_a_job = call->op == GW_OP_STATUS || call->op == GW_OP_CANCEL ||
                       call->op == GW_OP_EXPLAIN || call->op == GW_OP_EVENTS;
    if (about_a_job && !call->admin) {
        s_send (self, call, S_OWNER, "STATUS", json_pack ("{s:[I]}", "ids", (json_int_t) call->id));
    } else {
        s_begin (self, call);
    }
}

/* The HTTP side let go of call: a chat or completion still running is cancelled. */
static void
s_gone (gw_relay_t *self, gw_call_t *call)
{
    call->gone = true;
    if (!call->handle) {
        return; /* answered already */
    }
    if (call->op == GW_OP_INFER && call->stage == S_INFER) {
        zsys_info ("gateway: the client of job %lld left: cancelling it", (long long) call->job);
        s_send_forget (self, "CANCEL", json_pack ("{s:[I]}", "ids", (json_int_t) call->job));
    } else if (call->op == GW_OP_INFER && call->stage == S_SUBMIT) {
        return; /* s_on_reply cancels it once its id is known */
    }
    s_finish (self, call);
}

/* The timer: late replies, ?wait= that ran out, clients that left waiting connections. */
static void
s_cron (gw_relay_t *self)
{
    int64_t now = gq_mono_us ();
    gw_call_t *call = (gw_call_t *) zlistx_first (self->calls);
    while (call) {
        gw_call_t *next = (gw_call_t *) zlistx_next (self->calls);
        if (call->deadline_us && now >= call->deadline_us) {
            call->deadline_us = 0;
            if (call->stage == S_WAITING) {
                s_unwatch (self, call);
                s_send (self, call, S_STATUS, "STATUS",
                        json_pack ("{s:[I]}", "ids", (json_int_t) call->id));
            } else {
                s_count_add (self, call->token, -call->submitted); /* its jobs go uncounted */
                call->submitted = 0;
                gw_call_error (call, 504, "timeout", NULL, "the broker did not answer within %d ms",
                               gq_client_timeout (self->client));
                s_finish (self, call);
            }
        } else if ((call->stage == S_WAITING || call->stage == S_EVENTS ||
                    call->stage == S_INFER) &&
                   gw_call_client_left (call)) {
            gw_call_abort (call); /* the HTTP side ends it, then says it is gone */
        }
        call = next;
    }
    if (self->opts.max_queued && now >= self->recheck_us) {
        s_open_recheck (self);
        self->recheck_us = now + GW_OPEN_RECHECK_MS * 1000LL;
    }
}

/* Reads what the HTTP threads posted. */
static void
s_on_post (gw_relay_t *self, bool stopping)
{
    char *what = NULL;
    void *pointer = NULL;
    while ((zsock_events (self->pull) & ZMQ_POLLIN) &&
           zsock_recv (self->pull, "sp", &what, &pointer) == 0) {
        gw_call_t *call = (gw_call_t *) pointer;
        atomic_load_explicit (&call->handoff, memory_order_acquire);
        if (streq (what, "call") && !stopping) {
            s_start (self, call);
        } else if (streq (what, "call")) {
            gw_call_error (call, 503, "stopping", NULL, "the gateway is stopping");
            gw_call_unref (&call);
        } else {
            s_gone (self, call);
            gw_call_unref (&call);
        }
        zstr_free (&what);
    }
}

static void
s_actor (zsock_t *pipe, void *args)
{
    gw_relay_t *self = (gw_relay_t *) args;
    char why[512];
    self->client = gq_client_new (&self->opts.client, why, sizeof why);
    self->pull = zsock_new_pull (self->endpoint);
    if (!self->client || !self->pull) {
        zsys_error ("gateway: %s", self->client ? "cannot bind the relay's socket" : why);
        zsock_signal (pipe, 1);
        gq_client_destroy (&self->client);
        zsock_destroy (&self->pull);
        return;
    }
    gq_client_set_partial_fn (self->client, s_on_partial, self);
    self->calls = zlistx_new ();
    self->by_req = zhashx_new ();
    self->watches = zhashx_new ();
    self->open = zhashx_new ();
    zhashx_set_destructor (self->open, (zhashx_destructor_fn *) zstr_free);
    self->counts = zhashx_new ();
    zsock_signal (pipe, 0);
    zsock_t *broker = gq_client_socket (self->client);
    zpoller_t *poller = zpoller_new (pipe, self->pull, broker, NULL);
    int64_t next_cron = gq_mono_us () + GW_CRON_MS * 1000;
    bool running = true;
    while (running) {
        int64_t left_ms = (next_cron - gq_mono_us ()) / 1000;
        void *which = zpoller_wait (poller, left_ms > 0 ? (int) left_ms : 0);
        if (which == pipe) {
            char *command = zstr_recv (pipe);
            running = !command || !streq (command, "$TERM");
            zstr_free (&command);
        } else if (which == self->pull) {
            s_on_post (self, false);
        } else if (which == broker) {
            char command[32];
            int64_t req;
            json_t *body;
            while (gq_client_recv (self->client, 0, command, &req, &body, NULL) == GQ_OK) {
                char key[24];
                gw_call_t *call = (gw_call_t *) zhashx_lookup (self->by_req, s_key (key, req));
                if (streq (command, "FINISHED")) {
                    s_on_finished (self, body);
                } else if (streq (command, "STATE")) {
                    s_on_state (self, body);
                } else if (req && req == self->recheck_req) {
                    self->recheck_req = 0;
                    s_open_rechecked (self, body);
                } else if (call) {
                    zhashx_delete (self->by_req, key);
                    call->req = 0;
                    call->deadline_us = 0;
                    s_on_reply (self, call, command, body);
                }
                json_decref (body);
            }
        } else if (zpoller_terminated (poller)) {
            running = false;
        }
        if (gq_mono_us () >= next_cron) {
            s_cron (self);
            next_cron = gq_mono_us () + GW_CRON_MS * 1000;
        }
    }
    /* Stopping: what was posted and every call held are answered (streams end). */
    s_on_post (self, true);
    gw_call_t *call;
    while ((call = (gw_call_t *) zlistx_first (self->calls))) {
        if (call->stage == S_EVENTS || call->stage == S_INFER) {
            gw_call_stream_end (call);
        }
        gw_call_error (call, 503, "stopping", NULL, "the gateway is stopping");
        s_finish (self, call);
    }
    zpoller_destroy (&poller);
    for (zlistx_t *list = (zlistx_t *) zhashx_first (self->watches); list;
         list = (zlistx_t *) zhashx_next (self->watches)) {
        zlistx_destroy (&list);
    }
    zhashx_destroy (&self->watches);
    zhashx_destroy (&self->open);
    zhashx_destroy (&self->counts);
    zhashx_destroy (&self->by_req);
    zlistx_destroy (&self->calls);
    json_decref (self->nodes);
    zsock_destroy (&self->pull);
    gq_client_destroy (&self->client);
}

/* ---- The HTTP side's end ------------------------------------------------------------------- */

gw_relay_t *
gw_relay_new (const gw_relay_opts_t *opts, char *why, size_t whylen)
{
    gw_relay_t *self = (gw_relay_t *) calloc (1, sizeof *self);
    if (!self || pthread_mutex_init (&self->push_mutex, NULL) != 0) {
        free (self);
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    self->opts = *opts;
    /* Checked here, in the caller's thread, so that a bad endpoint or key is a usage error. */
    gq_client_t *probe = gq_client_new (&self->opts.client, why, whylen);
    if (!probe) {
        pthread_mutex_destroy (&self->push_mutex);
        free (self);
        return NULL;
    }
    gq_client_destroy (&probe);
    static atomic_uint instances;
    snprintf (self->endpoint, sizeof self->endpoint, "inproc://gq-gateway-%u",
              atomic_fetch_add (&instances, 1));
    self->actor = zactor_new (s_actor, self);
    self->push = self->actor ? zsock_new_push (self->endpoint) : NULL;
    if (!self->push) {
        snprintf (why, whylen, "cannot start the broker thread");
        gw_relay_destroy (&self);
        return NULL;
    }
    return self;
}

void
gw_relay_stop (gw_relay_t *self)
{
    pthread_mutex_lock (&self->push_mutex);
    self->stopping = true;
    pthread_mutex_unlock (&self->push_mutex);
    zactor_destroy (&self->actor); /* $TERM: the relay answers what it holds, then exits */
}

void
gw_relay_destroy (gw_relay_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gw_relay_t *self = *self_p;
    gw_relay_stop (self);
    zsock_destroy (&self->push);
    pthread_mutex_destroy (&self->push_mutex);
    free (self);
    *self_p = NULL;
}

int
gw_relay_post (gw_relay_t *self, gw_call_t *call)
{
    pthread_mutex_lock (&self->push_mutex);
    int rc = -1;
    if (!self->stopping) {
        gw_call_ref (call);
        atomic_fetch_add_explicit (&call->handoff, 1, memory_order_release);
        rc = zsock_send (self->push, "sp", "call", call);
        if (rc != 0) {
            gw_call_unref (&call);
        }
    }
    pthread_mutex_unlock (&self->push_mutex);
    return rc;
}

void
gw_relay_gone (gw_relay_t *self, gw_call_t **call_p)
{
    pthread_mutex_lock (&self->push_mutex);
    atomic_fetch_add_explicit (&(*call_p)->handoff, 1, memory_order_release);
    if (!self->stopping && zsock_send (self->push, "sp", "gone", *call_p) == 0) {
        *call_p = NULL; /* the relay drops the reference */
    }
    pthread_mutex_unlock (&self->push_mutex);
    gw_call_unref (call_p);
}

const char *
gw_relay_kind (gw_relay_t *self, bool chat)
{
    return chat ? self->opts.chat_kind : self->opts.completion_kind;
}
