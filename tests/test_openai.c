/*  test_openai.c — `gridq-worker --openai KIND=URL` end to end, against tests/openai_server.py,
    which streams as vLLM (worker wv) and as llama.cpp's llama-server (worker wl) do: (a) each
    worker advertises its server's model, loaded, and its kinds; (b) a chat job's partials are
    the server's chunks, in order, before FINISHED, and its result the assembled
    chat.completion with usage; the request went out with stream on, usage asked for and the
    job's model; (c) kind completion goes to URL/completions; (d) a job naming llama.cpp's
    model runs on wl, whose usage rides on the finish chunk; (e) cancel mid-stream closes the
    connection: the server sees the client go away and stops generating; (f) an HTTP error
    fails the job with the server's message; (g) a server that dies is seen: its worker stops
    offering the kind and `gridq nodes` says "server chat unreachable"; back on the same port,
    it is offered again and runs jobs. */
#include <czmq.h>

#include "harness.h"

/* The chunks' text joined: chat deltas' content, or completions' text. */
static void
s_chunks_text (const h_seen_t *seen, char *text, size_t size)
{
    text[0] = 0;
    size_t i;
    json_t *chunk;
    json_array_foreach (seen->partials, i, chunk) {
        json_t *choice = json_array_get (json_object_get (chunk, "choices"), 0);
        json_t *delta = json_object_get (choice, "delta");
        const char *piece = delta ? json_string_value (json_object_get (delta, "content"))
                                  : json_string_value (json_object_get (choice, "text"));
        size_t len = strlen (text);
        snprintf (text + len, size - len, "%s", piece ? piece : "");
    }
}

/* Whether some chunk carried usage. */
static bool
s_chunks_usage (const h_seen_t *seen)
{
    bool usage = false;
    size_t i;
    json_t *chunk;
    json_array_foreach (seen->partials, i, chunk) {
        usage |= json_is_object (json_object_get (chunk, "usage"));
    }
    return usage;
}

/* Submits one job watched through the partial callback, waits for its end, and returns its
   RESULT job (new reference). */
static json_t *
s_run (gq_client_t *client, h_seen_t *seen, const char *kind, const char *model, json_t *payload)
{
    h_seen_reset (seen);
    gq_client_set_partial_fn (client, h_on_partial, seen);
    json_t *jobs = json_pack ("[{s:s, s:o, s:i}]", "kind", kind, "payload", payload,
                              "max_attempts", 1);
    if (model) {
        json_object_set_new (json_array_get (jobs, 0), "model", json_string (model));
    }
    int64_t id;
    CHECK_EQ (gq_client_submit (client, jobs, true, &id), GQ_OK);
    json_decref (jobs);
    CHECK_EQ (gq_client_wait (client, &id, 1, 30000, h_on_finished, seen), GQ_OK);
    gq_client_set_partial_fn (client, NULL, NULL);
    return h_result (client, id);
}

/* Whether a server's event log (DIR/NAME.events) holds a string (arg: {name, string}). */
static bool
s_events_have (void *arg)
{
    const char **what = (const char **) arg;
    char command[1200];
    snprintf (command, sizeof command, "grep -c -F '%s' %s/%s.events 2>/dev/null", what[1],
              h_dir (), what[0]);
    return h_run (command, NULL) == 0;
}

typedef struct {
    gq_client_t *client;
    const char *node;
    bool want; /* whether node should offer kind chat */
} s_offers_t;

static bool
s_offers_chat (void *arg)
{
    s_offers_t *offers = (s_offers_t *) arg;
    return h_node_offers (offers->client, offers->node, "chat") == offers->want;
}

/* The last line of a server's event log, parsed (new reference). */
static json_t *
s_last_event (const char *name)
{
    char command[700], *text = NULL;
    snprintf (command, sizeof command, "tail -n 1 %s/%s.events", h_dir (), name);
    CHECK_EQ (h_run (command, &text), 0);
    json_t *event = json_loads (text, 0, NULL);
    CHECK (event);
    free (text);
    return event;
}

int
main (void)
{
    h_init ("openai", 80);
    h_require ("gridq-broker");
    h_require ("gridq-worker");
    h_require ("gridq");
    const char *script = getenv ("GQ_OPENAI_SERVER");
    if (!script || h_run ("python3 --version >/dev/null 2>&1", NULL) != 0) {
        printf ("SKIP: python3 or GQ_OPENAI_SERVER (tests/openai_server.py) missing\n");
        h_cleanup ();
        return 77;
    }
    int port_v = 0, port_l = 0;
    h_start_openai_server (script, "vllm", "vllm", "tiny-llm", &port_v);
    pid_t server_l = h_start_openai_server (script, "llamacpp", "llamacpp", "tiny-cpp", &port_l);
    char chat_v[128], completion_v[128], chat_l[128];
    snprintf (chat_v, sizeof chat_v, "chat=http://127.0.0.1:%d/v1", port_v);
    snprintf (completion_v, sizeof completion_v, "completion=http://127.0.0.1:%d/v1/", port_v);
    snprintf (chat_l, sizeof chat_l, "chat=http://127.0.0.1:%d/v1", port_l);
    h_start_broker (NULL, NULL);
    h_start_worker ("wv", 2, "--openai", chat_v, "--openai", completion_v, NULL);
    h_start_worker ("wl", 2, "--openai", chat_l, NULL);
    gq_client_t *client = h_client (5000);
    h_wait_nodes (client, 2, 30000);

    /* (a) Models and kinds. */
    json_t *node = h_node (client, "wv");
    char *text = json_dumps (json_object_get (node, "models_available"), JSON_COMPACT);
    CHECK_STR (text, "[\"tiny-llm\"]");
    free (text);
    CHECK_STR (h_str (json_array_get (json_object_get (node, "models_loaded"), 0), "name"),
               "tiny-llm");
    CHECK (h_node_offers (client, "wv", "chat") && h_node_offers (client, "wv", "completion"));
    CHECK (!h_node_offers (client, "wl", "completion"));
    CHECK_STR (h_str (json_array_get (json_object_get (node, "engines"), 0), "state"), "up");
    json_decref (node);

    /* (b) Chat on wv: the partials are the chunks (role chunk first, then the words, then the
       finish chunk and the usage chunk), in order, before FINISHED; the result is the whole
       chat.completion. */
    h_seen_t seen = {0};
    char joined[1024];
    json_t *job = s_run (client, &seen, "chat", "tiny-llm",
                         json_pack ("{s:[{s:s, s:s}]}", "messages", "role", "user", "content",
                                    "alpha beta gamma"));
    CHECK_STR (h_str (job, "state"), "done");
    CHECK_STR (h_str (job, "node"), "wv");
    CHECK_EQ (seen.n, 6);
    CHECK_EQ (seen.at_finish, 6);
    for (int i = 0; i < seen.n; i++) {
        CHECK_EQ (seen.seqs[i], i);
    }
    json_t *first = json_array_get (json_object_get (json_array_get (seen.partials, 0), "choices"),
                                    0);
    CHECK_STR (h_str (json_object_get (first, "delta"), "role"), "assistant");
    CHECK (s_chunks_usage (&seen));
    s_chunks_text (&seen, joined, sizeof joined);
    CHECK_STR (joined, "gamma beta alpha");
    json_t *result = json_object_get (job, "result");
    CHECK_STR (h_str (result, "object"), "chat.completion");
    CHECK_STR (h_str (result, "model"), "tiny-llm");
    json_t *choice = json_array_get (json_object_get (result, "choices"), 0);
    CHECK_STR (h_str (choice, "finish_reason"), "stop");
    json_t *message = json_object_get (choice, "message");
    CHECK_STR (h_str (message, "role"), "assistant");
    CHECK_STR (h_str (message, "content"), "gamma beta alpha");
    CHECK_EQ (h_int (json_object_get (result, "usage"), "completion_tokens"), 3);
    CHECK_EQ (h_int (json_object_get (result, "usage"), "prompt_tokens"), 3);
    json_decref (job);
    const char *request[] = {"vllm", "\"stream\": true, \"stream_options\": {\"include_usage\": "
                                     "true}"};
    CHECK (s_events_have (request));
    printf ("openai: a chat job streamed 6 chunks and ended as one chat.completion\n");

    /* (c) Completions, cut by max_tokens; no model named: the server's own is sent. */
    job = s_run (client, &seen, "completion", NULL,
                 json_pack ("{s:s, s:i}", "prompt", "one two three four", "max_tokens", 2));
    result = json_object_get (job, "result");
    CHECK_STR (h_str (result, "object"), "text_completion");
    choice = json_array_get (json_object_get (result, "choices"), 0);
    CHECK_STR (h_str (choice, "text"), "four three");
    CHECK_STR (h_str (choice, "finish_reason"), "length");
    s_chunks_text (&seen, joined, sizeof joined);
    CHECK_STR (joined, "four three");
    json_decref (job);
    const char *path[] = {"vllm", "\"path\": \"/v1/completions\", \"model\": \"tiny-llm\""};
    CHECK (s_events_have (path));

    /* (d) The model routes: tiny-cpp is on wl only; llama.cpp's usage rides on the finish
       chunk and its fingerprint comes through. */
    job = s_run (client, &seen, "chat", "tiny-cpp",
                 json_pack ("{s:[{s:s, s:s}]}", "messages", "role", "user", "content", "x y"));
    CHECK_STR (h_str (job, "node"), "wl");
    result = json_object_get (job, "result");
    CHECK_STR (h_str (result, "system_fingerprint"), "b4000-test");
    CHECK_STR (h_str (json_object_get (json_array_get (json_object_get (result, "choices"), 0),
                                       "message"),
                      "content"),
               "y x");
    CHECK_EQ (h_int (json_object_get (result, "usage"), "total_tokens"), 4);
    CHECK_EQ (seen.n, 4); /* role, two words, finish with usage */
    json_decref (job);
    printf ("openai: the job naming tiny-cpp ran on wl, llama.cpp's stream assembled\n");

    /* (e) Cancel mid-stream: 40 words at 100 ms each; once a word came, cancel; the server
       sees its client go away and stops generating, well before the 40th. */
    h_seen_reset (&seen);
    gq_client_set_partial_fn (client, h_on_partial, &seen);
    char words[400] = "";
    for (int i = 0; i < 40; i++) {
        strcat (words, "w ");
    }
    json_t *jobs = json_pack ("[{s:s, s:s, s:i, s:{s:[{s:s, s:s}], s:i}}]", "kind", "chat",
                              "model", "tiny-llm", "max_attempts", 1, "payload", "messages",
                              "role", "user", "content", words, "delay_ms", 100);
    int64_t id;
    CHECK_EQ (gq_client_submit (client, jobs, true, &id), GQ_OK);
    json_decref (jobs);
    int64_t deadline = zclock_mono () + 20000;
    while (seen.n < 2 && zclock_mono () < deadline) {
        json_t *reply = gq_client_call (client, "PING", NULL); /* partials come in on calls */
        json_decref (reply);
        zclock_sleep (10);
    }
    CHECK (seen.n >= 2);
    gq_client_set_partial_fn (client, NULL, NULL);
    CHECK_STR (h_cancel (client, id), "cancelled");
    const char *gone[] = {"vllm", "\"disconnected\""};
    CHECK (h_wait_until (s_events_have, gone, 20000));
    json_t *event = s_last_event ("vllm");
    CHECK_STR (h_str (event, "event"), "disconnected");
    CHECK (h_int (event, "tokens") < 40);
    printf ("openai: cancel closed the stream after %lld of 40 tokens\n",
            (long long) h_int (event, "tokens"));
    json_decref (event);

    /* (f) An HTTP error: the server's message is the job's error. */
    job = s_run (client, &seen, "chat", NULL,
                 json_pack ("{s:s, s:[]}", "model", "no-such-model", "messages"));
    CHECK_STR (h_str (job, "state"), "failed");
    CHECK (strstr (h_str (job, "error"), "HTTP 404"));
    CHECK (strstr (h_str (job, "error"), "does not exist"));
    json_decref (job);

    /* (g) wl's server dies: wl stops offering chat and says why; back on the same port, wl
       offers it again and runs it. */
    h_kill (server_l, SIGKILL);
    s_offers_t offers = {client, "wl", false};
    CHECK (h_wait_until (s_offers_chat, &offers, 30000));
    node = h_node (client, "wl");
    CHECK_STR (h_str (json_array_get (json_object_get (node, "engines"), 0), "state"),
               "unreachable");
    CHECK_EQ (json_array_size (json_object_get (node, "models_available")), 0);
    json_decref (node);
    char command[700], *out = NULL;
    snprintf (command, sizeof command, "GRIDQ_BROKER=%s %s/gridq nodes", h_endpoint (), h_bin ());
    CHECK_EQ (h_run (command, &out), 0);
    CHECK (out && strstr (out, "server chat unreachable"));
    free (out);
    h_start_openai_server (script, "llamacpp", "llamacpp", "tiny-cpp", &port_l);
    offers.want = true;
    CHECK (h_wait_until (s_offers_chat, &offers, 30000));
    job = s_run (client, &seen, "chat", "tiny-cpp",
                 json_pack ("{s:[{s:s, s:s}]}", "messages", "role", "user", "content", "back"));
    CHECK_STR (h_str (job, "state"), "done");
    CHECK_STR (h_str (job, "node"), "wl");
    json_decref (job);
    printf ("openai: wl stopped offering chat while its server was gone, and offers it again\n");

    h_seen_reset (&seen);
    json_decref (seen.partials);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
