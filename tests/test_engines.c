/*  test_engines.c — the PyTorch engines of tools/engines/ behind real workers (`--engine`), a
    real broker and the `gridq` CLI; skipped (77) where /usr/bin/python3 cannot import torch.
    Each engine runs with --log, a JSON line per start and per job, which is how this test sees
    the engine's own work. Two tests in one program (ctest passes the name):

    integration_engines_mlp: tools/engines/torch_mlp.py on two workers, wa (models net32, net16,
    netbf: one per file dtype) and wb (model other). (1) Each worker advertises its engine's
    models; 20 jobs naming wa's models all run on wa, in one engine process (one pid in every
    result, one start in its log), and wb's model goes to wb; (2) every output equals
    `gridq-model run` (the worker's built-in mlp code) on the same file within 1e-4, argmax too;
    softmax as well; (3) bad payloads fail their job alone: the engine answers on, same pid.

    integration_engines_generate: tools/engines/torch_generate.py (weights written by its
    --write-weights, loaded with --weights) on wa (model tiny-a) and wb (tiny-b). (1) Through
    the C API, a job's partials come one per token, seq and index in order, all before its
    FINISHED, and spell the result's text; the same prompt gives the same text on the other
    worker; (2) `gridq submit --stream` prints the partials in order as they come; `gridq
    cancel` mid-stream stops the engine: its log says the job was cancelled after fewer tokens
    than asked (so the partials printed before came while it still worked), and the next job
    runs in the same process; (3) an engine that crashes mid-job ("crash_after", once through
    --crash-marker) is restarted with a new pid, and the job succeeds on retry (attempts 2). */
#include <czmq.h>
#include <math.h>
#include <sys/wait.h>

#include "harness.h"

#define S_PYTHON "/usr/bin/python3" /* Debian's interpreter, where python3-torch lives */

static const char *s_engines; /* tools/engines/ */

/* ---- Helpers -------------------------------------------------------------------------------- */

/* The lines of an engine's --log file, parsed (new reference; empty when it is missing). */
static json_t *
s_log (const char *path)
{
    json_t *lines = json_array ();
    FILE *f = fopen (path, "r");
    char line[4096];
    while (f && fgets (line, sizeof line, f)) {
        json_t *entry = json_loads (line, 0, NULL);
        CHECK (entry);
        json_array_append_new (lines, entry);
    }
    if (f) {
        fclose (f);
    }
    return lines;
}

/* The pids of the engine's starts in its log, at most max; returns how many it started. */
static int
s_log_starts (const char *path, int64_t *pids, int max)
{
    json_t *lines = s_log (path);
    int n = 0;
    size_t i;
    json_t *entry;
    json_array_foreach (lines, i, entry)
    {
        if (streq (h_str (entry, "event"), "start")) {
            if (n < max) {
                pids[n] = h_int (entry, "pid");
            }
            n++;
        }
    }
    json_decref (lines);
    return n;
}

/* The log's line for job id (new reference), or NULL; *index its position in the log. */
static json_t *
s_log_job (const char *path, int64_t id, size_t *index)
{
    json_t *lines = s_log (path);
    json_t *found = NULL;
    size_t i;
    json_t *entry;
    json_array_foreach (lines, i, entry)
    {
        if (!found && h_int (entry, "id") == id) {
            found = json_incref (entry);
            *index = i;
        }
    }
    json_decref (lines);
    return found;
}

typedef struct {
    const char *path; /* an engine's log */
    int64_t id;       /* a job id, or 0 */
    int starts;       /* starts wanted, when id is 0 */
} s_log_wait_t;

/* Whether the log has the job's line (id), or that many starts (id 0). */
static bool
s_log_has (void *arg)
{
    s_log_wait_t *wait = (s_log_wait_t *) arg;
    int64_t pids[4];
    size_t index;
    if (wait->id == 0) {
        return s_log_starts (wait->path, pids, 4) >= wait->starts;
    }
    json_t *entry = s_log_job (wait->path, wait->id, &index);
    json_decref (entry);
    return entry != NULL;
}

/* Waits for job id to end in state and returns RESULT's job (new reference). */
static json_t *
s_ended (gq_client_t *client, int64_t id, const char *state)
{
    if (!h_wait_state (client, id, state, 60000)) {
        json_t *job = h_result (client, id);
        fprintf (stderr, "job %lld is not %s: %s %s\n", (long long) id, state,
                 h_str (job, "state"), h_str (job, "error"));
        h_fail ();
    }
    json_t *job = h_result (client, id);
    CHECK (job);
    return job;
}

/* The models a node advertises, as compact JSON (caller frees). */
static char *
s_models (gq_client_t *client, const char *name)
{
    json_t *node = h_node (client, name);
    CHECK (node);
    char *text = json_dumps (json_object_get (node, "models_available"), JSON_COMPACT);
    json_decref (node);
    return text;
}

/* ---- torch_mlp.py --------------------------------------------------------------------------- */

/* Checks an engine's result against `gridq-model run` on the model's file, softmax or not. */
static void
s_check_mlp (json_t *result, const char *file, json_t *input, bool softmax)
{
    char *rows = json_dumps (input, JSON_COMPACT);
    char command[2048], *out = NULL;
    snprintf (command, sizeof command, "%s/gridq-model run '%s' --input '%s'%s", h_bin (), file,
              rows, softmax ? " --softmax" : "");
    free (rows);
    CHECK_EQ (h_run (command, &out), 0);
    json_t *want = json_loads (out, 0, NULL);
    free (out);
    CHECK (want);
    json_t *got_rows = json_object_get (result, "output");
    json_t *want_rows = json_object_get (want, "output");
    CHECK_EQ (json_array_size (got_rows), json_array_size (want_rows));
    for (size_t r = 0; r < json_array_size (want_rows); r++) {
        json_t *got_row = json_array_get (got_rows, r), *want_row = json_array_get (want_rows, r);
        CHECK_EQ (json_array_size (got_row), json_array_size (want_row));
        for (size_t c = 0; c < json_array_size (want_row); c++) {
            double got = json_number_value (json_array_get (got_row, c));
            double expected = json_number_value (json_array_get (want_row, c));
            if (fabs (got - expected) > 1e-4 * (1 + fabs (expected))) {
                fprintf (stderr, "%s row %zu col %zu: the engine gives %.9g, gridq-model %.9g\n",
                         file, r, c, got, expected);
                h_fail ();
            }
        }
        int64_t got_max = json_integer_value (json_array_get (json_object_get (result, "argmax"),
                                                              r));
        int64_t want_max = json_integer_value (json_array_get (json_object_get (want, "argmax"),
                                                               r));
        /* Equal, or a tie within the tolerance (the sums may round apart). */
        double a = json_number_value (json_array_get (want_row, (size_t) got_max));
        double b = json_number_value (json_array_get (want_row, (size_t) want_max));
        CHECK (got_max == want_max || fabs (a - b) <= 1e-4 * (1 + fabs (b)));
    }
    json_decref (want);
}

static void
s_test_mlp (gq_client_t *client)
{
    const char *dir = h_dir ();
    char command[2048], log_a[600], log_b[600];
    const char *names[] = {"net32", "net16", "netbf"};
    const char *dtypes[] = {"f32", "f16", "bf16"};
    for (int i = 0; i < 3; i++) {
        snprintf (command, sizeof command,
                  "mkdir -p %s/a && %s/gridq-model make --layers 6,16,8,3 --seed 7 --dtype %s "
                  "--out %s/a/%s.safetensors >/dev/null",
                  dir, h_bin (), dtypes[i], dir, names[i]);
        CHECK_EQ (h_run (command, NULL), 0);
    }
    snprintf (command, sizeof command,
              "mkdir -p %s/b && %s/gridq-model make --layers 4,5,2 --seed 9 --out "
              "%s/b/other.safetensors >/dev/null",
              dir, h_bin (), dir);
    CHECK_EQ (h_run (command, NULL), 0);
    snprintf (log_a, sizeof log_a, "%s/engine-wa.jsonl", dir);
    snprintf (log_b, sizeof log_b, "%s/engine-wb.jsonl", dir);
    char engine_a[4096], engine_b[4096];
    snprintf (engine_a, sizeof engine_a,
              "torch-mlp=exec " S_PYTHON " %s/torch_mlp.py --models %s/a --log %s", s_engines,
              dir, log_a);
    snprintf (engine_b, sizeof engine_b,
              "torch-mlp=exec " S_PYTHON " %s/torch_mlp.py --models %s/b --log %s", s_engines,
              dir, log_b);
    h_start_worker ("wa", 2, "--engine", engine_a, NULL);
    h_start_worker ("wb", 2, "--engine", engine_b, NULL);
    h_wait_nodes (client, 2, 60000);

    /* (1) The models each engine loaded, advertised by its worker. */
    char *models = s_models (client, "wa");
    CHECK_STR (models, "[\"net16\",\"net32\",\"netbf\"]");
    free (models);
    models = s_models (client, "wb");
    CHECK_STR (models, "[\"other\"]");
    free (models);

    /* (1) and (2): 20 jobs, each dtype in turn, all on wa in one process, each as gridq-model
       computes it. */
    int64_t ids[20];
    json_t *inputs[20];
    for (int i = 0; i < 20; i++) {
        inputs[i] = json_pack ("[[i, f, f, f, f, f], [f, f, f, f, f, i]]", i, 1.5, -2.0, 0.25,
                               3.0, -i / 4.0, 0.5, 0.0, -1.0, i / 3.0, 2.0, -i);
        ids[i] = h_submit_payload (client, "torch-mlp", names[i % 3],
                                   json_pack ("{s:O}", "input", inputs[i]), 1);
    }
    int64_t pid_a = 0;
    for (int i = 0; i < 20; i++) {
        json_t *job = s_ended (client, ids[i], "done");
        json_t *result = json_object_get (job, "result");
        CHECK_STR (h_str (job, "node"), "wa");
        if (i == 0) {
            pid_a = h_int (result, "engine_pid");
        }
        CHECK_EQ (h_int (result, "engine_pid"), pid_a);
        snprintf (command, sizeof command, "%s/a/%s.safetensors", dir, names[i % 3]);
        s_check_mlp (result, command, inputs[i], false);
        json_decref (job);
        json_decref (inputs[i]);
    }
    json_t *input = json_pack ("[[f, f, f, f, f, f]]", 1.0, -1.0, 2.0, 0.5, 0.0, 4.0);
    int64_t id = h_submit_payload (client, "torch-mlp", "net16",
                                   json_pack ("{s:O, s:b}", "input", input, "softmax", 1), 1);
    json_t *job = s_ended (client, id, "done");
    snprintf (command, sizeof command, "%s/a/net16.safetensors", dir);
    s_check_mlp (json_object_get (job, "result"), command, input, true);
    json_decref (job);
    json_decref (input);
    id = h_submit_payload (client, "torch-mlp", "other",
                           json_pack ("{s:[[i, i, i, i]]}", "input", 1, 2, 3, 4), 1);
    job = s_ended (client, id, "done");
    CHECK_STR (h_str (job, "node"), "wb");
    CHECK (h_int (json_object_get (job, "result"), "engine_pid") != pid_a);
    json_decref (job);
    printf ("engines_mlp: 21 jobs on wa's engine (pid %lld) as gridq-model computes them; "
            "model other on wb\n",
            (long long) pid_a);

    /* (3) Bad payloads fail their job alone; the engine answers on in the same process. */
    struct {
        json_t *payload;
        const char *error;
    } bad[] = {
        {json_pack ("{s:[[i, i]]}", "input", 1, 2), "input rows have 2 values but model 'net32' "
                                                    "takes 6"},
        {json_pack ("{s:s}", "input", "x"), "\"input\" must be a non-empty array of rows"},
        {json_pack ("{s:[[i, i, i, i, i, i]], s:s}", "input", 1, 2, 3, 4, 5, 6, "dtype", "f64"),
         "\"dtype\" must be one of"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        id = h_submit_payload (client, "torch-mlp", "net32", bad[i].payload, 1);
        job = s_ended (client, id, "failed");
        if (!strstr (h_str (job, "error"), bad[i].error)) {
            fprintf (stderr, "error \"%s\", expected \"%s\"\n", h_str (job, "error"),
                     bad[i].error);
            h_fail ();
        }
        json_decref (job);
    }
    id = h_submit_payload (client, "torch-mlp", "net32",
                           json_pack ("{s:[[i, i, i, i, i, i]]}", "input", 1, 2, 3, 4, 5, 6), 1);
    job = s_ended (client, id, "done");
    CHECK_EQ (h_int (json_object_get (job, "result"), "engine_pid"), pid_a);
    json_decref (job);
    int64_t pids[4];
    CHECK_EQ (s_log_starts (log_a, pids, 4), 1);
    CHECK_EQ (pids[0], pid_a);
    json_t *lines = s_log (log_a);
    CHECK_EQ (json_array_size (lines), 1 + 21 + 3 + 1);
    json_decref (lines);
    printf ("engines_mlp: bad payloads failed their jobs; the engine went on (one start)\n");
}

/* ---- torch_generate.py ---------------------------------------------------------------------- */

/* Whether a shell command (arg) succeeds. */
static bool
s_succeeds (void *arg)
{
    return h_run ((const char *) arg, NULL) == 0;
}


/* One line of gridq's stdout, parsed; NULL at end of file. */
static json_t *
s_line (FILE *out)
{
    char line[8192];
    if (!fgets (line, sizeof line, out)) {
        return NULL;
    }
    json_t *json = json_loads (line, JSON_DECODE_ANY, NULL);
    if (!json) {
        fprintf (stderr, "not JSON from gridq: %s", line);
        h_fail ();
    }
    return json;
}

/* The text a generate job gave (a static buffer). */
static const char *
s_text (gq_client_t *client, int64_t id)
{
    static char text[256];
    json_t *job = s_ended (client, id, "done");
    snprintf (text, sizeof text, "%s", h_str (json_object_get (job, "result"), "text"));
    json_decref (job);
    return text;
}

static void
s_test_generate (gq_client_t *client)
{
    const char *dir = h_dir ();
    char command[4096], weights[600], log[2][600], engine[4096], marker[600];
    snprintf (weights, sizeof weights, "%s/tiny.safetensors", dir);
    snprintf (command, sizeof command,
              S_PYTHON " %s/torch_generate.py --seed 3 --write-weights %s", s_engines, weights);
    CHECK_EQ (h_run (command, NULL), 0);
    snprintf (marker, sizeof marker, "%s/crashed", dir);
    const char *workers[] = {"wa", "wb"}, *models[] = {"tiny-a", "tiny-b"};
    for (int w = 0; w < 2; w++) {
        snprintf (log[w], sizeof log[w], "%s/engine-%s.jsonl", dir, workers[w]);
        snprintf (engine, sizeof engine,
                  "generate=exec " S_PYTHON " %s/torch_generate.py --weights %s --name %s "
                  "--log %s --crash-marker %s",
                  s_engines, weights, models[w], log[w], marker);
        h_start_worker (workers[w], 2, "--engine", engine, NULL);
    }
    h_wait_nodes (client, 2, 60000);

    /* (1) The C API: 24 partials, seq and index 0..23 in order, before FINISHED; they spell
       the result's text, which the other worker's engine gives too. */
    h_seen_t seen = {0};
    h_seen_reset (&seen);
    gq_client_set_partial_fn (client, h_on_partial, &seen);
    json_t *jobs = json_pack ("[{s:s, s:s, s:i, s:{s:s, s:i}}]", "kind", "generate", "model",
                              "tiny-a", "max_attempts", 1, "payload", "prompt", "Hello",
                              "max_tokens", 24);
    int64_t id;
    CHECK_EQ (gq_client_submit (client, jobs, true, &id), GQ_OK);
    json_decref (jobs);
    CHECK_EQ (gq_client_wait (client, &id, 1, 60000, h_on_finished, &seen), GQ_OK);
    gq_client_set_partial_fn (client, NULL, NULL);
    CHECK_STR (seen.state, "done");
    CHECK_EQ (seen.at_finish, 24);
    char spelt[25] = ""; /* the tokens, one character each */
    for (int i = 0; i < 24; i++) {
        json_t *partial = json_array_get (seen.partials, (size_t) i);
        CHECK_EQ (seen.seqs[i], i);
        CHECK_EQ (h_int (partial, "index"), i);
        CHECK_EQ (strlen (h_str (partial, "token")), 1);
        spelt[i] = h_str (partial, "token")[0];
    }
    json_decref (seen.partials);
    json_t *job = s_ended (client, id, "done");
    json_t *result = json_object_get (job, "result");
    CHECK_STR (h_str (result, "text"), spelt);
    CHECK_STR (h_str (result, "model"), "tiny-a");
    CHECK_EQ (h_int (json_object_get (result, "usage"), "completion_tokens"), 24);
    CHECK_EQ (h_int (json_object_get (result, "usage"), "total_tokens"), 29);
    int64_t pid_a = h_int (result, "engine_pid");
    json_decref (job);
    int64_t other = h_submit_payload (client, "generate", "tiny-b",
                                      json_pack ("{s:s, s:i}", "prompt", "Hello", "max_tokens", 24),
                                      1);
    CHECK_STR (s_text (client, other), spelt);
    json_t *spelled = json_string (spelt);
    char *quoted = json_dumps (spelled, JSON_ENCODE_ANY);
    printf ("engines_generate: 24 partials in order before the end, spelling %s\n", quoted);
    free (quoted);
    json_decref (spelled);

    /* (2) gridq submit --stream, then gridq cancel mid-stream: 2000 tokens, 20 ms apart. */
    snprintf (command, sizeof command,
              "GRIDQ_BROKER=%s %s/gridq submit --kind generate --model tiny-a --max-attempts 1 "
              "--payload '{\"prompt\": \"Hi\", \"max_tokens\": 2000, \"delay_ms\": 20}' --stream",
              h_endpoint (), h_bin ());
    FILE *out = popen (command, "r");
    CHECK (out);
    char line[256];
    CHECK (fgets (line, sizeof line, out) != NULL);
    id = strtoll (line, NULL, 10);
    CHECK (id > 0);
    for (int i = 0; i < 3; i++) {
        json_t *partial = s_line (out);
        CHECK (partial);
        CHECK_EQ (h_int (partial, "index"), i);
        json_decref (partial);
    }
    snprintf (command, sizeof command, "GRIDQ_BROKER=%s %s/gridq cancel %lld >/dev/null",
              h_endpoint (), h_bin (), (long long) id);
    CHECK_EQ (h_run (command, NULL), 0);
    /* The rest: partials still in order (no result: gridq says on stderr that the job was
       cancelled), and gridq exits 1. */
    int next = 3;
    for (json_t *partial; (partial = s_line (out)); next++) {
        CHECK_EQ (h_int (partial, "index"), next);
        json_decref (partial);
    }
    int status = pclose (out);
    CHECK (WIFEXITED (status));
    CHECK_EQ (WEXITSTATUS (status), 1);
    json_t *job_c = s_ended (client, id, "cancelled");
    json_decref (job_c);
    s_log_wait_t wait = {log[0], id, 0};
    CHECK (h_wait_until (s_log_has, &wait, 30000));
    size_t cancelled_at, next_at;
    json_t *entry = s_log_job (log[0], id, &cancelled_at);
    CHECK_STR (h_str (entry, "outcome"), "cancelled");
    int64_t tokens = h_int (entry, "tokens");
    CHECK (tokens >= next && tokens < 2000);
    json_decref (entry);
    /* The engine is free at once (it runs jobs one at a time), in the same process. */
    int64_t after = h_submit_payload (client, "generate", "tiny-a",
                                      json_pack ("{s:s, s:i}", "prompt", "Hello", "max_tokens", 24),
                                      1);
    CHECK_STR (s_text (client, after), spelt);
    job = h_result (client, after);
    CHECK_EQ (h_int (json_object_get (job, "result"), "engine_pid"), pid_a);
    json_decref (job);
    entry = s_log_job (log[0], after, &next_at);
    CHECK (entry && next_at > cancelled_at);
    json_decref (entry);
    printf ("engines_generate: cancelled after %d partials printed; the engine stopped at %lld "
            "tokens of 2000 and went on\n",
            next, (long long) tokens);

    /* (3) A crash mid-job (after 3 tokens, the first time only): the job succeeds on retry;
       the crashed engine comes back as a new process and serves its model again. */
    id = h_submit_payload (client, "generate", NULL,
                           json_pack ("{s:s, s:i, s:i}", "prompt", "crash", "max_tokens", 8,
                                      "crash_after", 3),
                           3);
    job = s_ended (client, id, "done");
    CHECK (h_int (job, "attempts") >= 2);
    int64_t retried_pid = h_int (json_object_get (job, "result"), "engine_pid");
    char text[64];
    snprintf (text, sizeof text, "%s", h_str (json_object_get (job, "result"), "text"));
    json_decref (job);
    char *crashed = NULL;
    snprintf (command, sizeof command, "cat '%s'", marker);
    CHECK_EQ (h_run (command, &crashed), 0);
    int64_t crashed_pid = strtoll (crashed, NULL, 10);
    free (crashed);
    CHECK (crashed_pid > 0 && crashed_pid != retried_pid);
    int64_t pids[4];
    int w = -1; /* the worker whose engine crashed: its first start has the crashed pid */
    for (int k = 0; k < 2; k++) {
        w = s_log_starts (log[k], pids, 4) >= 1 && pids[0] == crashed_pid ? k : w;
    }
    CHECK (w >= 0);
    s_log_wait_t restarted = {log[w], 0, 2};
    CHECK (h_wait_until (s_log_has, &restarted, 30000));
    CHECK_EQ (s_log_starts (log[w], pids, 4), 2);
    CHECK (pids[1] != crashed_pid);
    after = h_submit_payload (client, "generate", models[w],
                              json_pack ("{s:s, s:i}", "prompt", "crash", "max_tokens", 8), 1);
    CHECK_STR (s_text (client, after), text);
    job = h_result (client, after);
    CHECK_EQ (h_int (json_object_get (job, "result"), "engine_pid"), pids[1]);
    json_decref (job);
    printf ("engines_generate: %s's engine crashed mid-job (pid %lld); the job succeeded on "
            "retry; the engine came back as pid %lld\n",
            workers[w], (long long) crashed_pid, (long long) pids[1]);

    /* (4) Through gridq-gateway (where it is built): an OpenAI chat request, streamed, runs as
       a generate job; its chunks are OpenAI's (a role chunk, a delta per token, a finish
       chunk, then [DONE]) and spell the text of (1): the same model, prompt and length. */
    char gateway[700], url[128], listen[64];
    snprintf (gateway, sizeof gateway, "%s/gridq-gateway", h_bin ());
    if (access (gateway, X_OK) != 0 || h_run ("curl --version >/dev/null 2>&1", NULL) != 0) {
        printf ("engines_generate: no gridq-gateway or curl here: the chat step is skipped\n");
        return;
    }
    snprintf (listen, sizeof listen, "127.0.0.1:%d", h_free_port ());
    snprintf (url, sizeof url, "http://%s", listen);
    h_start ("gridq-gateway", "gateway", "--broker", h_endpoint (), "--listen", listen,
             "--kind-map", "chat=generate,completion=generate", NULL);
    snprintf (command, sizeof command, "curl -sf %s/healthz >/dev/null", url);
    CHECK (h_wait_until (s_succeeds, command, 20000));
    snprintf (command, sizeof command,
              "curl -sN %s/v1/chat/completions -H 'Content-Type: application/json' -d "
              "'{\"model\": \"tiny-a\", \"max_tokens\": 24, \"stream\": true, \"messages\": "
              "[{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", "
              "\"content\": \"Hello\"}]}'",
              url);
    char *answer = NULL;
    CHECK_EQ (h_run (command, &answer), 0);
    json_t *list = h_sse_chunks (answer);
    free (answer);
    size_t chunks = json_array_size (list);
    json_t *first = json_array_get (json_object_get (json_array_get (list, 0), "choices"), 0);
    json_t *last =
        json_array_get (json_object_get (json_array_get (list, chunks - 1), "choices"), 0);
    CHECK_STR (h_str (json_object_get (first, "delta"), "role"), "assistant");
    CHECK_STR (h_str (last, "finish_reason"), "length");
    char joined[64];
    h_sse_text (list, joined, sizeof joined);
    json_decref (list);
    CHECK_EQ (chunks, 24 + 2);
    CHECK_STR (joined, spelt);
    printf ("engines_generate: a streamed OpenAI chat through gridq-gateway: %zu chunks spelling "
            "the same text, then [DONE]\n",
            chunks);
}

int
main (int argc, char **argv)
{
    const char *which = argc > 1 ? argv[1] : "";
    if (!streq (which, "mlp") && !streq (which, "generate")) {
        fprintf (stderr, "usage: integration_engines mlp|generate\n");
        return 2;
    }
    h_init (streq (which, "mlp") ? "engines_mlp" : "engines_generate", 110);
    h_require ("gridq-broker");
    h_require ("gridq-worker");
    h_require ("gridq");
    h_require ("gridq-model");
    s_engines = getenv ("GQ_ENGINES");
    if (!s_engines || h_run (S_PYTHON " -c 'import torch' >/dev/null 2>&1", NULL) != 0) {
        printf ("SKIP: " S_PYTHON " cannot import torch (python3-torch), or GQ_ENGINES "
                "(tools/engines/) is not set\n");
        h_cleanup ();
        return 77;
    }
    h_start_broker (NULL, NULL);
    gq_client_t *client = h_client (5000);
    if (streq (which, "mlp")) {
        s_test_mlp (client);
    } else {
        s_test_generate (client);
    }
    gq_client_destroy (&client);
    h_cleanup ();
    printf ("engines_%s: ok\n", which);
    return 0;
}
