/*  request.c — a request's checks before the broker sees it (see request.h).

    In order: the token (401; /healthz needs none), the token's rate (429), the route and method
    (404, 405), the body's size (413), the role (403), then what the op needs of the query and
    the body (400, 415), and the owner tag of the jobs a token submits. Every refusal is
    answered on the call here; whatever passes is posted to the relay as it is. */
#define _GNU_SOURCE
#include "request.h"
#include "tuning.h"

#include <string.h>

/* ---- Routes -------------------------------------------------------------------------------- */

typedef struct {
    const char *path;   /* "{id}" matches one path segment */
    const char *method; /* GET, POST or DELETE */
    gw_op_t op;
    bool openai;        /* errors in OpenAI's shape */
    bool admin;         /* only an admin token may */
} s_route_t;

static const s_route_t s_routes[] = {
    {"/healthz", "GET", GW_OP_HEALTH, false, false},
    {"/v1/jobs", "POST", GW_OP_SUBMIT, false, false},
    {"/v1/jobs", "GET", GW_OP_LIST, false, false},
    {"/v1/jobs/{id}", "GET", GW_OP_STATUS, false, false},
    {"/v1/jobs/{id}", "DELETE", GW_OP_CANCEL, false, false},
    {"/v1/jobs/{id}/explain", "GET", GW_OP_EXPLAIN, false, false},
    {"/v1/jobs/{id}/events", "GET", GW_OP_EVENTS, false, false},
    {"/v1/nodes", "GET", GW_OP_NODES, false, true},
    {"/v1/stats", "GET", GW_OP_STATS, false, true},
    {"/v1/models", "GET", GW_OP_MODELS, true, false},
    {"/v1/chat/completions", "POST", GW_OP_INFER, true, false},
    {"/v1/completions", "POST", GW_OP_INFER, true, false},
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

/* The status call was answered with. */
static unsigned
s_status (gw_call_t *call)
{
    pthread_mutex_lock (&call->mutex);
    unsigned status = call->answered ? call->status : 500;
    pthread_mutex_unlock (&call->mutex);
    return status;
}

/* ---- Bodies and queries -------------------------------------------------------------------- */

/* The body as a JSON object into call->body; false after answering 400 or 415. */
static bool
s_parse_body (const gw_request_t *request, gw_call_t *call)
{
    const char *type = request->header (request->cls, "Content-Type");
    if (type && strncasecmp (type, "application/json", 16) != 0) {
        gw_call_error (call, 415, "unsupported_media_type", NULL,
                       "the body must be application/json, not %.200s", type);
        return false;
    }
    if (!call->upload) {
        gw_call_error (call, 400, "invalid_json", NULL, "the request needs a JSON body");
        return false;
    }
    json_error_t error;
    call->body = json_loadb (call->upload, call->upload_len, JSON_REJECT_DUPLICATES, &error);
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

/* Tags every job of a submission with the call's token; false after answering 400. */
static bool
s_tag_jobs (gw_call_t *call)
{
    char why[256];
    json_t *jobs = call->batch ? json_object_get (call->body, "jobs") : NULL;
    size_t count = call->batch ? json_array_size (jobs) : 1;
    for (size_t i = 0; i < count; i++) {
        json_t *job = call->batch ? json_array_get (jobs, i) : call->body;
        if (gw_owner_tag (job, call->token, why, sizeof why) != 0) {
            gw_call_error (call, 400, "BAD_REQUEST", "idem", "%s%s", call->batch ? "a job: " : "",
                           why);
            return false;
        }
    }
    return true;
}

/* A chat request's affinity key, as LLM routers make one (so that a conversation's turns go
   where its KV cache is): "session:" and X-Session-Id when the client gives one, else (in
   prefix mode) "prefix:" and the SHA-256 of its leading messages, up to and with the first
   user message: the system prompt and the opening, the same for every turn. */
static void
s_affinity (const gw_rules_t *rules, const gw_request_t *request, gw_call_t *call, bool chat)
{
    call->affinity[0] = 0;
    if (rules->affinity == GW_AFFINITY_OFF) {
        return;
    }
    const char *session = request->header (request->cls, "X-Session-Id");
    if (session && *session) {
        snprintf (call->affinity, sizeof call->affinity, "session:%s", session);
        return;
    }
    json_t *messages = json_object_get (call->body, "messages");
    if (rules->affinity != GW_AFFINITY_PREFIX || !chat || !json_is_array (messages)) {
        return;
    }
    json_t *leading = json_array ();
    size_t i;
    json_t *message;
    json_array_foreach (messages, i, message) {
        json_array_append (leading, message);
        if (streq (json_string_value (json_object_get (message, "role")) ?: "", "user")) {
            break;
        }
    }
    char *text = json_dumps (leading, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref (leading);
    if (text) {
        char hex[65];
        gw_sha256_hex (text, strlen (text), hex);
        snprintf (call->affinity, sizeof call->affinity, "prefix:%s", hex);
        free (text);
    }
}

/* What an op needs of the request, checked; false after answering. */
static bool
s_prepare (const gw_rules_t *rules, const gw_request_t *request, gw_call_t *call,
           const char *id)
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
        if (!s_parse_body (request, call)) {
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
        return !*call->token || s_tag_jobs (call);
    case GW_OP_EVENTS:
        /* A client that reconnects resumes after the last event it got (EventSource sends
           its id back). */
        call->after_seq = -2;
        if ((text = request->header (request->cls, "Last-Event-ID")) &&
            gq_parse_int (text, -1, INT64_MAX / 2, &call->after_seq) != 0) {
            gw_call_error (call, 400, "BAD_REQUEST", "Last-Event-ID",
                           "Last-Event-ID: %.40s is not a partial's id", text);
            return false;
        }
        return true;
    case GW_OP_STATUS:
        if ((text = request->arg (request->cls, "wait"))) {
            if (gq_parse_duration_ms (text, &call->wait_ms) != 0 || call->wait_ms < 0) {
                gw_call_error (call, 400, "BAD_REQUEST", "wait",
                               "wait=%.100s is not a duration like 30s or 500ms", text);
                return false;
            }
            call->wait_ms = call->wait_ms > GW_MAX_WAIT_MS ? GW_MAX_WAIT_MS : call->wait_ms;
        }
        return true;
    case GW_OP_LIST:
        if ((text = request->arg (request->cls, "state"))) {
            static const char *states[] = {"queued", "running", "done", "failed", "cancelled"};
            bool known = false;
            for (size_t i = 0; i < 5; i++) {
                known |= streq (text, states[i]);
            }
            if (!known) {
                gw_call_error (call, 400, "BAD_REQUEST", "state",
                               "state=%.100s is not one of queued, running, done, failed, "
                               "cancelled",
                               text);
                return false;
            }
            snprintf (call->state, sizeof call->state, "%s", text);
        }
        if ((text = request->arg (request->cls, "limit")) &&
            gq_parse_int (text, 1, GQ_MAX_IDS, &call->limit) != 0) {
            gw_call_error (call, 400, "BAD_REQUEST", "limit", "limit=%.100s is not in 1..%d",
                           text, GQ_MAX_IDS);
            return false;
        }
        return true;
    case GW_OP_INFER: {
        if (!s_parse_body (request, call)) {
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
        bool chat = streq (request->url, "/v1/chat/completions");
        snprintf (call->kind, sizeof call->kind, "%s",
                  chat ? rules->chat_kind : rules->completion_kind);
        call->stream = json_is_true (json_object_get (call->body, "stream"));
        call->usage_asked = json_is_true (
            json_object_get (json_object_get (call->body, "stream_options"), "include_usage"));
        s_affinity (rules, request, call, chat);
        return true;
    }
    default:
        return true;
    }
}

/* ---- The request --------------------------------------------------------------------------- */

/* Whether url is one of the OpenAI paths, whose errors take OpenAI's shape. */
static bool
s_openai_path (const char *url)
{
    for (size_t i = 0; i < S_ROUTES; i++) {
        if (s_routes[i].openai && streq (s_routes[i].path, url)) {
            return true;
        }
    }
    return false;
}

/* The token and its rate; false after answering 401 or 429. */
static bool
s_authorize (const gw_rules_t *rules, const gw_request_t *request, gw_call_t *call,
             int64_t now_us)
{
    call->admin = true;
    if (!rules->tokens || streq (request->url, "/healthz")) {
        return true;
    }
    gw_token_t *token =
        gw_tokens_check (rules->tokens, request->header (request->cls, "Authorization"));
    if (!token) {
        /* One answer for a missing token, a wrong one and a revoked one. */
        call->challenge = true;
        gw_call_error (call, 401, call->openai ? "invalid_api_key" : "unauthorized", NULL,
                       "this gateway needs a valid bearer token (Authorization: Bearer TOKEN)");
        return false;
    }
    snprintf (call->token, sizeof call->token, "%s", token->name);
    call->admin = token->role == GW_ROLE_ADMIN;
    int64_t retry_after_s = gw_tokens_take (rules->tokens, token, now_us);
    if (retry_after_s > 0) {
        pthread_mutex_lock (&call->mutex);
        call->retry_after_s = retry_after_s;
        pthread_mutex_unlock (&call->mutex);
        gw_call_error (call, 429, call->openai ? "rate_limit_exceeded" : "RATE_LIMITED", NULL,
                       "token %s is over its rate (--rate): retry in %lld s", token->name,
                       (long long) retry_after_s);
        return false;
    }
    return true;
}

unsigned
gw_request_check (const gw_rules_t *rules, const gw_request_t *request, gw_call_t *call,
                  int64_t now_us)
{
    call->openai = s_openai_path (request->url);
    if (!s_authorize (rules, request, call, now_us)) {
        return s_status (call);
    }
    char id[32] = "";
    const s_route_t *route = NULL;
    bool path_known = false;
    for (size_t i = 0; i < S_ROUTES && !route; i++) {
        char got[32] = "";
        if (s_match (s_routes[i].path, request->url, got)) {
            path_known = true;
            if (streq (request->method, s_routes[i].method)) {
                route = &s_routes[i];
                memcpy (id, got, sizeof id);
            } else if (!call->allow) {
                /* Every method of this path, e.g. "GET, DELETE". */
                for (size_t j = 0; j < S_ROUTES; j++) {
                    if (streq (s_routes[j].path, s_routes[i].path)) {
                        size_t n = strlen (call->allow_text);
                        snprintf (call->allow_text + n, sizeof call->allow_text - n, "%s%s",
                                  n ? ", " : "", s_routes[j].method);
                    }
                }
                call->allow = call->allow_text;
            }
        }
    }
    if (!path_known) {
        gw_call_error (call, 404, "not_found", NULL, "no such path: %.200s", request->url);
        return s_status (call);
    }
    if (!route) {
        gw_call_error (call, 405, "method_not_allowed", NULL,
                       "%.20s %.200s: the methods here are %s", request->method, request->url,
                       call->allow);
        return s_status (call);
    }
    call->allow = NULL;
    call->op = route->op;
    if (call->too_big) {
        gw_call_error (call, 413, "too_big", NULL, "the body is larger than --max-body (%zu bytes)",
                       rules->max_body);
        return s_status (call);
    }
    if (route->admin && !call->admin) {
        gw_call_error (call, 403, "forbidden", NULL, "%s %s is for admin tokens only",
                       route->method, route->path);
        return s_status (call);
    }
    return s_prepare (rules, request, call, id) ? 0 : s_status (call);
}
