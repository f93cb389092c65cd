/*  test_gateway.c — gridq-gateway end to end, real processes on loopback: a broker, a worker
    with tests/engine_stream.py as the engine of kind "stream" and tests/openai_server.py behind
    --openai chat and completion, and the gateway, spoken to with curl.
    integration_gateway: (a) /healthz; (b) every REST endpoint and its codes: 201 (one job, a
    batch), 200, 400 (a bad field named, malformed JSON), 404 (path, job), 405 with Allow, 413
    (--max-body), 415; ?wait= returns the job once done; JOBS, NODES, STATS, EXPLAIN, DELETE;
    (c) SSE of a job read line by line: its state first, partials in order with their seq as
    id, then done, then the stream ends; (d) OpenAI: /v1/models lists the server's model, a chat
    without stream is the assembled chat.completion, with stream its chunks then [DONE], an
    unknown model is 404 model_not_found; (e) a client that leaves a streaming chat has its job
    cancelled and the server sees its client go; (f) --listen on a non-loopback address is
    refused.
    integration_gateway_node (argument "node"): the official `openai` npm package, run by node,
    streaming and not; skipped (77) without node or the package. */
#include <czmq.h>

#include "harness.h"

static char s_base[96]; /* http://127.0.0.1:PORT */

/* curl with args (shell words); the HTTP status returned, the body into *body (malloc'd). */
static int
s_curl (char **body, const char *format, ...)
{
    char args[2048], command[2600];
    va_list list;
    va_start (list, format);
    vsnprintf (args, sizeof args, format, list);
    va_end (list);
    snprintf (command, sizeof command, "curl -s -m 60 -w '\\n%%{http_code}' %s", args);
    char *out = NULL;
    CHECK_EQ (h_run (command, &out), 0);
    char *last = strrchr (out, '\n');
    CHECK (last);
    int status = atoi (last + 1);
    *last = 0;
    *body = out;
    return status;
}

/* curl's answer as JSON (new reference), checking its status. */
static json_t *
s_json (int want, const char *format, const char *arg)
{
    char *body;
    int status = s_curl (&body, format, arg);
    if (status != want) {
        fprintf (stderr, "curl %s: %s\n", arg, body);
    }
    CHECK_EQ (status, want);
    json_t *json = json_loads (body, 0, NULL);
    CHECK (json);
    free (body);
    return json;
}

/* POST of a JSON body to path; the status, the body parsed into *json. */
static int
s_post (const char *path, const char *body, json_t **json)
{
    char *text;
    int status = s_curl (&text, "-X POST -H 'Content-Type: application/json' --data-binary '%s' "
                                "%s%s",
                         body, s_base, path);
    *json = json_loads (text, 0, NULL);
    CHECK (*json);
    free (text);
    return status;
}

static const char *
s_error_field (json_t *json, const char *key)
{
    return h_str (json_object_get (json, "error"), key);
}

/* Whether a file holds a string (arg: {path, string}). */
static bool
s_file_has (void *arg)
{
    const char **what = (const char **) arg;
    FILE *file = fopen (what[0], "r");
    bool found = false;
    if (file) {
        char line[4096];
        while (!found && fgets (line, sizeof line, file)) {
            found = strstr (line, what[1]) != NULL;
        }
        fclose (file);
    }
    return found;
}

static bool
s_dead (void *arg)
{
    return !h_alive (*(pid_t *) arg);
}

static bool
s_healthy (void *arg)
{
    (void) arg;
    char command[200];
    snprintf (command, sizeof command, "curl -s -f -o /dev/null %s/healthz", s_base);
    return h_run (command, NULL) == 0;
}

/* The fleet: an OpenAI server, a broker, a worker, a gateway (--max-body 4096). */
static gq_client_t *
s_start_all (const char *server)
{
    int port = 0;
    h_start_openai_server (server, "server", "vllm", "tiny-llm", &port);
    char chat[128], completion[128], engine[600];
    snprintf (chat, sizeof chat, "chat=http://127.0.0.1:%d/v1", port);
    snprintf (completion, sizeof completion, "completion=http://127.0.0.1:%d/v1", port);
    snprintf (engine, sizeof engine, "stream=exec python3 %s", getenv ("GQ_ENGINE_STREAM"));
    h_start_broker (NULL, NULL);
    h_start_worker ("w1", 4, "--openai", chat, "--openai", completion, "--engine", engine, NULL);
    gq_client_t *client = h_client (5000);
    h_wait_nodes (client, 1, 30000);
    port = h_free_port ();
    char listen[64];
    snprintf (listen, sizeof listen, "127.0.0.1:%d", port);
    snprintf (s_base, sizeof s_base, "http://%s", listen);
    h_start ("gridq-gateway", "gateway", "--broker", h_endpoint (), "--listen", listen,
             "--max-body", "4096", NULL);
    CHECK (h_wait_until (s_healthy, NULL, 20000));
    return client;
}

/* ---- (b) REST ------------------------------------------------------------------------------ */

static void
s_rest (gq_client_t *client)
{
    json_t *json;
    CHECK_EQ (s_post ("/v1/jobs", "{\"kind\": \"echo\", \"payload\": {\"x\": 7}}", &json), 201);
    int64_t id = h_int (json, "id");
    CHECK (id > 0);
    json_decref (json);
    CHECK_EQ (s_post ("/v1/jobs", "{\"jobs\": [{\"kind\": \"echo\"}, {\"kind\": \"echo\"}]}",
                      &json),
              201);
    CHECK_EQ (json_array_size (json_object_get (json, "ids")), 2);
    json_decref (json);

    /* The broker's refusal, its field named. */
    CHECK_EQ (s_post ("/v1/jobs", "{\"kind\": \"echo\", \"priority\": 99}", &json), 400);
    CHECK_STR (s_error_field (json, "field"), "priority");
    CHECK (strstr (s_error_field (json, "message"), "outside 0..9"));
    json_decref (json);
    CHECK_EQ (s_post ("/v1/jobs", "{\"kind\": ", &json), 400);
    CHECK (strstr (s_error_field (json, "message"), "not JSON"));
    json_decref (json);

    char *body, url[256];
    CHECK_EQ (s_curl (&body, "-X POST -d '{}' %s/v1/jobs", s_base), 415);
    free (body);
    CHECK_EQ (s_curl (&body, "-X POST -H 'Content-Type: application/json' --data-binary "
                             "@%s/big.json %s/v1/jobs",
                      h_dir (), s_base),
              413);
    CHECK (strstr (body, "max-body"));
    free (body);
    CHECK_EQ (s_curl (&body, "-i -X PUT %s/v1/jobs", s_base), 405);
    CHECK (strstr (body, "Allow: POST, GET"));
    free (body);
    CHECK_EQ (s_curl (&body, "%s/v1/no-such-thing", s_base), 404);
    free (body);
    CHECK_EQ (s_curl (&body, "%s/v1/jobs/987654", s_base), 404);
    free (body);
    CHECK_EQ (s_curl (&body, "%s/v1/jobs/abc", s_base), 404);
    free (body);

    /* ?wait= returns the job once it ended, result and all. */
    snprintf (url, sizeof url, "%s/v1/jobs/%lld?wait=30s", s_base, (long long) id);
    json = s_json (200, "'%s'", url);
    CHECK_STR (h_str (json, "state"), "done");
    CHECK_EQ (h_int (json_object_get (json, "result"), "x"), 7);
    json_decref (json);
    snprintf (url, sizeof url, "%s/v1/jobs?state=done&limit=1", s_base);
    json = s_json (200, "'%s'", url);
    CHECK_EQ (json_array_size (json_object_get (json, "jobs")), 1);
    json_decref (json);
    snprintf (url, sizeof url, "%s/v1/jobs?state=sleeping", s_base);
    CHECK_EQ (s_curl (&body, "'%s'", url), 400);
    free (body);
    snprintf (url, sizeof url, "%s/v1/nodes", s_base);
    json = s_json (200, "%s", url);
    CHECK_STR (h_str (json_array_get (json_object_get (json, "nodes"), 0), "name"), "w1");
    json_decref (json);
    snprintf (url, sizeof url, "%s/v1/stats", s_base);
    json = s_json (200, "%s", url);
    CHECK (h_int (json_object_get (json, "jobs"), "done") >= 3);
    json_decref (json);
    snprintf (url, sizeof url, "%s/v1/jobs/%lld/explain", s_base, (long long) id);
    json = s_json (200, "%s", url);
    CHECK_STR (h_str (json, "node"), "w1");
    json_decref (json);

    /* DELETE cancels a running job (a sleep: the stream engine takes one job at a time). */
    CHECK_EQ (s_post ("/v1/jobs", "{\"kind\": \"sleep\", \"payload\": {\"ms\": 60000}}", &json),
              201);
    id = h_int (json, "id");
    json_decref (json);
    CHECK (h_wait_state (client, id, "running", 20000));
    snprintf (url, sizeof url, "-X DELETE %s/v1/jobs/%lld", s_base, (long long) id);
    json = s_json (200, "%s", url);
    CHECK_STR (h_str (json, "state"), "cancelled");
    json_decref (json);
    printf ("gateway: REST endpoints answered 201, 200, 400, 404, 405, 413, 415 as they should\n");
}

/* POSTs one job (JSON text) to /v1/jobs; returns its id (201, or the test fails). */
static int64_t
s_post_id (const char *job)
{
    json_t *json;
    CHECK_EQ (s_post ("/v1/jobs", job, &json), 201);
    int64_t id = h_int (json, "id");
    json_decref (json);
    return id;
}

/* Starts curl on job id's events (header: one more request header, or NULL), its output in
   DIR/NAME.log (into log, 600 bytes); returns its pid. */
static pid_t
s_follow (int64_t id, const char *name, const char *header, char *log)
{
    char url[256];
    snprintf (url, sizeof url, "%s/v1/jobs/%lld/events", s_base, (long long) id);
    snprintf (log, 600, "%s/%s.log", h_dir (), name);
    return header ? h_start ("/usr/bin/env", name, "curl", "-s", "-N", "-H", header, url, NULL)
                  : h_start ("/usr/bin/env", name, "curl", "-s", "-N", url, NULL);
}

/* ---- (c) SSE of a job ---------------------------------------------------------------------- */

static void
s_events (gq_client_t *client)
{
    char gate[600], job[800], log[600];
    snprintf (gate, sizeof gate, "%s/gate", h_dir ());
    snprintf (job, sizeof job,
              "{\"kind\": \"stream\", \"payload\": {\"n\": 5, \"tick\": true, \"gate\": \"%s\"}}",
              gate);
    int64_t id = s_post_id (job);
    CHECK (h_wait_state (client, id, "running", 20000));
    pid_t curl = s_follow (id, "events", NULL, log);
    const char *tick[] = {log, "\"tick\""};
    CHECK (h_wait_until (s_file_has, tick, 20000));
    h_touch (gate);
    CHECK (h_wait_until (s_dead, &curl, 20000));

    /* Line by line: state, partials (ticks, then i = 1..4) with ids counting up, done. */
    FILE *file = fopen (log, "r");
    CHECK (file);
    char line[4096], event[4096] = "";
    int64_t last_id = -1, seen_i = 0;
    int states = 0, dones = 0, partials = 0;
    while (fgets (line, sizeof line, file)) {
        line[strcspn (line, "\n")] = 0;
        if (strncmp (line, "event: ", 7) == 0) {
            snprintf (event, sizeof event, "%s", line + 7);
            CHECK (dones == 0); /* nothing after done */
        } else if (strncmp (line, "id: ", 4) == 0) {
            CHECK_STR (event, "partial");
            int64_t seq = atoll (line + 4);
            CHECK (last_id < 0 || seq == last_id + 1);
            last_id = seq;
        } else if (strncmp (line, "data: ", 6) == 0) {
            json_t *data = json_loads (line + 6, 0, NULL);
            CHECK (data);
            if (streq (event, "state")) {
                CHECK_EQ (partials, 0);
                CHECK_STR (h_str (data, "state"), "running");
                states++;
            } else if (streq (event, "partial")) {
                if (json_object_get (data, "i")) {
                    CHECK_EQ (h_int (data, "i"), seen_i + 1);
                    seen_i++;
                }
                partials++;
            } else {
                CHECK_STR (event, "done");
                CHECK_STR (h_str (data, "state"), "done");
                CHECK_EQ (h_int (json_object_get (data, "result"), "n"), 5);
                dones++;
            }
            json_decref (data);
        }
    }
    fclose (file);
    CHECK_EQ (states, 1);
    CHECK_EQ (seen_i, 4);
    CHECK_EQ (dones, 1);
    printf ("gateway: SSE gave the state, %d partials in order, then done\n", partials);
}

/* The events of an SSE log, in order: "state:waiting", "partial:0", "done" ... (a JSON array
   of strings, new reference). */
static json_t *
s_event_list (const char *log)
{
    json_t *list = json_array ();
    FILE *file = fopen (log, "r");
    CHECK (file);
    char line[4096], event[64] = "";
    int64_t id = -1;
    size_t width = sizeof event - 1;
    while (fgets (line, sizeof line, file)) {
        line[strcspn (line, "\n")] = 0;
        if (strncmp (line, "event: ", 7) == 0) {
            snprintf (event, sizeof event, "%.*s", (int) width, line + 7);
            id = -1;
        } else if (strncmp (line, "id: ", 4) == 0) {
            id = atoll (line + 4);
        } else if (strncmp (line, "data: ", 6) == 0) {
            json_t *data = json_loads (line + 6, 0, NULL);
            CHECK (data);
            char item[128];
            if (streq (event, "state")) {
                snprintf (item, sizeof item, "state:%s", h_str (data, "state"));
            } else if (streq (event, "partial")) {
                snprintf (item, sizeof item, "partial:%lld", (long long) id);
            } else {
                snprintf (item, sizeof item, "%s", event);
            }
            json_array_append_new (list, json_string (item));
            json_decref (data);
        }
    }
    fclose (file);
    return list;
}

/* (c2) States and resume: job J waits on a gated parent; a first client follows J from its
   waiting state, and sees it queued, running, its partial 0; a second client then attaches with
   Last-Event-ID: -1 and gets partial 0 all the same (the broker keeps a running job's last
   partials); J's gate opens: both get partials 1 and 2, then done. */
static void
s_events_resume (gq_client_t *client)
{
    char gate_p[600], gate_j[600], job[900], first[600], second[600];
    snprintf (gate_p, sizeof gate_p, "%s/gate_parent", h_dir ());
    snprintf (gate_j, sizeof gate_j, "%s/gate_job", h_dir ());
    snprintf (job, sizeof job,
              "{\"kind\": \"stream\", \"payload\": {\"n\": 1, \"gate\": \"%s\"}}", gate_p);
    int64_t parent = s_post_id (job);
    snprintf (job, sizeof job,
              "{\"kind\": \"stream\", \"payload\": {\"n\": 3, \"gate\": \"%s\"}, "
              "\"after_ok\": [%lld]}",
              gate_j, (long long) parent);
    int64_t id = s_post_id (job);
    CHECK (h_wait_state (client, id, "waiting", 20000));
    pid_t one = s_follow (id, "follow1", NULL, first);
    const char *waiting[] = {first, "\"waiting\""};
    CHECK (h_wait_until (s_file_has, waiting, 20000));
    h_touch (gate_p);
    const char *zero[] = {first, "id: 0"};
    CHECK (h_wait_until (s_file_has, zero, 20000));
    pid_t two = s_follow (id, "follow2", "Last-Event-ID: -1", second);
    const char *replayed[] = {second, "id: 0"};
    CHECK (h_wait_until (s_file_has, replayed, 20000));
    h_touch (gate_j);
    CHECK (h_wait_until (s_dead, &one, 20000));
    CHECK (h_wait_until (s_dead, &two, 20000));
    json_t *events = s_event_list (first);
    char *text = json_dumps (events, JSON_COMPACT);
    CHECK_STR (text, "[\"state:waiting\",\"state:queued\",\"state:running\",\"partial:0\","
                     "\"partial:1\",\"partial:2\",\"done\"]");
    free (text);
    json_decref (events);
    events = s_event_list (second);
    text = json_dumps (events, JSON_COMPACT);
    CHECK_STR (text, "[\"state:running\",\"partial:0\",\"partial:1\",\"partial:2\",\"done\"]");
    free (text);
    json_decref (events);
    printf ("gateway: SSE followed a job's states (waiting, queued, running); Last-Event-ID: -1 "
            "replayed the partial a late client had missed\n");
}

/* ---- (d) OpenAI ---------------------------------------------------------------------------- */

static const char *s_chat = "{\"model\": \"tiny-llm\", \"messages\": [{\"role\": \"user\", "
                            "\"content\": \"alpha beta gamma\"}]%s}";

static void
s_openai (void)
{
    char url[256], body[512];
    snprintf (url, sizeof url, "%s/v1/models", s_base);
    json_t *json = s_json (200, "%s", url);
    CHECK_STR (h_str (json, "object"), "list");
    json_t *model = json_array_get (json_object_get (json, "data"), 0);
    CHECK_STR (h_str (model, "id"), "tiny-llm");
    CHECK_STR (h_str (model, "object"), "model");
    json_decref (json);

    snprintf (body, sizeof body, s_chat, ", \"stream\": false");
    CHECK_EQ (s_post ("/v1/chat/completions", body, &json), 200);
    CHECK_STR (h_str (json, "object"), "chat.completion");
    json_t *choice = json_array_get (json_object_get (json, "choices"), 0);
    CHECK_STR (h_str (json_object_get (choice, "message"), "content"), "gamma beta alpha");
    json_decref (json);

    CHECK_EQ (s_post ("/v1/completions", "{\"model\": \"tiny-llm\", \"prompt\": \"one two\"}",
                      &json),
              200);
    CHECK_STR (h_str (json, "object"), "text_completion");
    json_decref (json);

    CHECK_EQ (s_post ("/v1/chat/completions", "{\"model\": \"no-such\", \"messages\": []}", &json),
              404);
    CHECK_STR (s_error_field (json, "code"), "model_not_found");
    CHECK_STR (s_error_field (json, "type"), "invalid_request_error");
    json_decref (json);

    /* Streaming: a data line per chunk, in order, then [DONE]; no usage chunk unasked. */
    char *text;
    snprintf (body, sizeof body, s_chat, ", \"stream\": true");
    CHECK_EQ (s_curl (&text, "-N -H 'Content-Type: application/json' -d '%s' "
                             "%s/v1/chat/completions",
                      body, s_base),
              200);
    json_t *list = h_sse_chunks (text);
    free (text);
    char joined[256];
    h_sse_text (list, joined, sizeof joined);
    size_t chunks = json_array_size (list);
    size_t i;
    json_t *chunk;
    json_array_foreach (list, i, chunk) {
        CHECK_EQ (json_array_size (json_object_get (chunk, "choices")), 1);
    }
    json_decref (list);
    CHECK_EQ (chunks, 5); /* role, three words, finish */
    CHECK_STR (joined, "gamma beta alpha");
    printf ("gateway: OpenAI chat answered whole and as %zu chunks then [DONE]\n", chunks);
}

/* ---- (e) A client that leaves ----------------------------------------------------------- */

static bool
s_chat_cancelled (void *arg)
{
    gq_client_t *client = (gq_client_t *) arg;
    json_t *reply = gq_client_call (client, "JOBS", json_pack ("{s:s}", "state", "cancelled"));
    bool found = false;
    size_t i;
    json_t *job;
    json_array_foreach (json_object_get (reply, "jobs"), i, job) {
        found |= streq (h_str (job, "kind"), "chat");
    }
    json_decref (reply);
    return found;
}

/* The affinity key EXPLAIN gives for the running chat job (a static buffer; "" for none). */
static const char *
s_running_affinity (gq_client_t *client)
{
    static char key[300];
    key[0] = 0;
    json_t *reply = gq_client_call (client, "JOBS", json_pack ("{s:s}", "state", "running"));
    size_t i;
    json_t *job;
    json_array_foreach (json_object_get (reply, "jobs"), i, job) {
        if (streq (h_str (job, "kind"), "chat")) {
            json_t *explain = gq_client_call (
                client, "EXPLAIN", json_pack ("{s:I}", "id", (json_int_t) h_int (job, "id")));
            snprintf (key, sizeof key, "%s",
                      h_str (json_object_get (explain, "affinity"), "key"));
            json_decref (explain);
        }
    }
    json_decref (reply);
    return key;
}

static void
s_leave (gq_client_t *client)
{
    char words[400] = "", body[700], url[256], log[600], events[600];
    for (int i = 0; i < 40; i++) {
        strcat (words, "w ");
    }
    snprintf (body, sizeof body,
              "{\"model\": \"tiny-llm\", \"stream\": true, \"delay_ms\": 100, \"messages\": "
              "[{\"role\": \"user\", \"content\": \"%s\"}]}",
              words);
    snprintf (url, sizeof url, "%s/v1/chat/completions", s_base);
    pid_t curl = h_start ("/usr/bin/env", "leave", "curl", "-s", "-N", "-H",
                          "Content-Type: application/json", "-H", "X-Session-Id: conv-7", "-d",
                          body, url, NULL);
    snprintf (log, sizeof log, "%s/leave.log", h_dir ());
    const char *word[] = {log, "\"content\":\"w\""};
    CHECK (h_wait_until (s_file_has, word, 20000));
    /* Its job carries the session's affinity key. */
    CHECK_STR (s_running_affinity (client), "session:conv-7");
    h_kill (curl, SIGKILL);
    CHECK (h_wait_until (s_chat_cancelled, client, 20000));
    snprintf (events, sizeof events, "%s/server.events", h_dir ());
    const char *gone[] = {events, "\"disconnected\""};
    CHECK (h_wait_until (s_file_has, gone, 20000));
    printf ("gateway: the client left mid-stream: its job was cancelled, the server saw it go\n");
    /* Without X-Session-Id the key is the hash of the leading messages. */
    curl = h_start ("/usr/bin/env", "leave2", "curl", "-s", "-N", "-H",
                    "Content-Type: application/json", "-d", body, url, NULL);
    snprintf (log, sizeof log, "%s/leave2.log", h_dir ());
    CHECK (h_wait_until (s_file_has, word, 20000));
    const char *key = s_running_affinity (client);
    CHECK (strncmp (key, "prefix:", 7) == 0 && strlen (key) == 7 + 64);
    h_kill (curl, SIGKILL);
    printf ("gateway: chat jobs carry an affinity key: the session's, or %.15s...\n", key);
}

static int
s_node_test (void)
{
    const char *dir = getenv ("GQ_NODE_DIR");
    char check[800];
    snprintf (check, sizeof check,
              "node --version >/dev/null 2>&1 && test -d %s/node_modules/openai", dir ? dir : "/nonexistent");
    if (!dir || h_run (check, NULL) != 0) {
        printf ("SKIP: node or the openai package (npm install --prefix %s openai) missing\n",
                dir ? dir : "GQ_NODE_DIR");
        return 77;
    }
    char command[1200], *out = NULL;
    snprintf (command, sizeof command, "node %s %s/v1 tiny-llm %s 2>&1", getenv ("GQ_OPENAI_JS"),
              s_base, dir);
    int rc = h_run (command, &out);
    printf ("%s", out ? out : "");
    CHECK_EQ (rc, 0);
    CHECK (strstr (out, "object: chat.completion\n"));
    CHECK (strstr (out, "content: gamma beta alpha\n"));
    CHECK (strstr (out, "finish: stop\n"));
    CHECK (strstr (out, "chunk: \" beta\"\n"));
    CHECK (strstr (out, "streamed: gamma beta alpha\n"));
    CHECK (strstr (out, "stream done: 5 chunks\n"));
    free (out);
    printf ("gateway: the openai npm package worked, streaming and not\n");
    return 0;
}

int
main (int argc, char **argv)
{
    bool node = argc > 1 && streq (argv[1], "node");
    h_init (node ? "gateway_node" : "gateway", 110);
    h_require ("gridq-broker");
    h_require ("gridq-worker");
    h_require ("gridq-gateway");
    const char *server = getenv ("GQ_OPENAI_SERVER");
    if (!server || !getenv ("GQ_ENGINE_STREAM") ||
        h_run ("python3 --version >/dev/null 2>&1 && curl --version >/dev/null 2>&1", NULL)) {
        printf ("SKIP: python3, curl or the test scripts missing\n");
        h_cleanup ();
        return 77;
    }
    if (node && h_run ("node --version >/dev/null 2>&1", NULL) != 0) {
        printf ("SKIP: node missing\n");
        h_cleanup ();
        return 77;
    }
    gq_client_t *client = s_start_all (server);
    int rc = 0;
    if (node) {
        rc = s_node_test ();
    } else {
        char command[700];
        snprintf (command, sizeof command, "head -c 5000 /dev/zero | tr '\\0' ' ' > %s/big.json",
                  h_dir ());
        CHECK_EQ (h_run (command, NULL), 0);
        s_rest (client);
        s_events (client);
        s_events_resume (client);
        s_openai ();
        s_leave (client);
        /* (f) Without tokens, loopback only. */
        char *out = NULL;
        snprintf (command, sizeof command, "%s/gridq-gateway --listen 0.0.0.0:%d 2>&1",
                  h_bin (), h_free_port ());
        CHECK_EQ (h_run (command, &out), 2);
        CHECK (strstr (out, "loopback") && strstr (out, "--tokens"));
        free (out);
    }
    gq_client_destroy (&client);
    h_cleanup ();
    return rc;
}
