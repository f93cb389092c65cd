/*  test_engine.c — persistent engines end to end, through a real broker and two workers that
    run tests/engine_test.py with --engine (worker wa's engine holds model "ma", wb's "mb"):
    (1) many jobs share one engine process (every result carries the same pid); (2) a job that
    names an engine's model is placed on that worker, which advertises the model as loaded;
    (3) an engine that crashes mid-job is restarted, and the job succeeds on its second attempt;
    (4) cancelling a running engine job reaches the engine as a cancel line, and the job ends
    cancelled (a time limit too: the job fails as timed out); (5) binary blobs to an engine kind
   fail with a clear error. */
#include <czmq.h>

#include "harness.h"

static char s_path[512];

static bool
s_file_exists (void *arg)
{
    return access ((const char *) arg, F_OK) == 0;
}

/* Lines in a file (0 when it is missing). */
static int
s_lines (const char *path)
{
    FILE *f = fopen (path, "r");
    int n = 0;
    for (int c; f && (c = fgetc (f)) != EOF;) {
        n += c == '\n';
    }
    if (f) {
        fclose (f);
    }
    return n;
}

static bool
s_restarted (void *arg)
{
    return s_lines ((const char *) arg) >= 2;
}

typedef struct {
    gq_client_t *client; /* to ask NODES */
    bool want;           /* whether wa should offer kind eng */
} s_offers_t;

/* Whether wa's kinds, as the broker has them, include eng as wanted. */
static bool
s_offers_eng (void *arg)
{
    s_offers_t *offers = (s_offers_t *) arg;
    return h_node_offers (offers->client, "wa", "eng") == offers->want;
}

/* Waits for job id to be done and returns RESULT's job (new reference). */
static json_t *
s_done (gq_client_t *client, int64_t id)
{
    if (!h_wait_state (client, id, "done", 30000)) {
        json_t *job = h_result (client, id);
        fprintf (stderr, "job %lld is not done: %s %s\n", (long long) id, h_str (job, "state"),
                 h_str (job, "error"));
        h_fail ();
    }
    json_t *job = h_result (client, id);
    CHECK (job);
    return job;
}

int
main (void)
{
    h_init ("engine", 80);
    h_require ("gridq-broker");
    h_require ("gridq-worker");
    const char *script = getenv ("GQ_ENGINE");
    if (!script || h_run ("python3 --version >/dev/null 2>&1", NULL) != 0) {
        printf ("SKIP: python3 or GQ_ENGINE (tests/engine_test.py) missing\n");
        h_cleanup ();
        return 77;
    }
    const char *dir = h_dir ();
    char engine_a[1024], engine_b[1024];
    /* wa's engine cannot start while DIR/block exists (step 6). */
    snprintf (engine_a, sizeof engine_a, "eng=[ -e %s/block ] && exit 9; exec python3 -u %s ma %s",
              dir, script, dir);
    snprintf (engine_b, sizeof engine_b, "eng=exec python3 -u %s mb %s", script, dir);
    h_start_broker (NULL, NULL);
    h_start_worker ("wa", 2, "--engine", engine_a, NULL);
    h_start_worker ("wb", 2, "--engine", engine_b, NULL);
    gq_client_t *client = h_client (5000);
    h_wait_nodes (client, 2, 30000);

    /* (2) Each worker advertises its engine's model, available and loaded. */
    json_t *node = h_node (client, "wa");
    CHECK (node);
    char *text = json_dumps (json_object_get (node, "models_available"), JSON_COMPACT);
    CHECK_STR (text, "[\"ma\"]");
    free (text);
    CHECK_STR (h_str (json_array_get (json_object_get (node, "models_loaded"), 0), "name"), "ma");
    json_decref (node);

    /* (1) and (2): ten jobs naming model ma all run on wa, in one engine process. */
    int64_t ids[10];
    for (int i = 0; i < 10; i++) {
        ids[i] = h_submit_payload (client, "eng", "ma", json_pack ("{s:i}", "i", i), 1);
    }
    int64_t pid_a = 0;
    for (int i = 0; i < 10; i++) {
        json_t *job = s_done (client, ids[i]);
        json_t *result = json_object_get (job, "result");
        CHECK_STR (h_str (job, "node"), "wa");
        CHECK_STR (h_str (result, "engine_model"), "ma");
        CHECK_STR (h_str (result, "model"), "ma");
        CHECK_STR (h_str (result, "kind"), "eng");
        CHECK_EQ (h_int (json_object_get (result, "payload"), "i"), i);
        if (i == 0) {
            pid_a = h_int (result, "pid");
        }
        CHECK_EQ (h_int (result, "pid"), pid_a);
        json_decref (job);
    }
    snprintf (s_path, sizeof s_path, "%s/started-ma", dir);
    CHECK_EQ (s_lines (s_path), 1);
    json_t *job = s_done (client, h_submit_payload (client, "eng", "mb", json_object (), 1));
    CHECK_STR (h_str (job, "node"), "wb");
    json_decref (job);
    printf ("engine: 10 jobs ran in one engine process (pid %lld) on wa\n", (long long) pid_a);

    /* (3) A crash mid-job: the job fails there, runs again on the other worker and succeeds;
       the crashed engine is started again and serves its model's jobs as a new process. */
    int64_t id = h_submit_payload (client, "eng", NULL, json_pack ("{s:b}", "crash_once", 1), 3);
    job = s_done (client, id);
    CHECK_EQ (h_int (job, "attempts"), 2);
    json_decref (job);
    snprintf (s_path, sizeof s_path, "%s/crashed", dir);
    char *crashed = NULL;
    char command[1100];
    snprintf (command, sizeof command, "cat '%s'", s_path);
    CHECK_EQ (h_run (command, &crashed), 0);
    char model[8] = "";
    long long crashed_pid = 0;
    CHECK_EQ (sscanf (crashed, "%7s %lld", model, &crashed_pid), 2);
    free (crashed);
    snprintf (s_path, sizeof s_path, "%s/started-%s", dir, model);
    CHECK (h_wait_until (s_restarted, s_path, 30000));
    job = s_done (client, h_submit_payload (client, "eng", model, json_object (), 1));
    int64_t new_pid = h_int (json_object_get (job, "result"), "pid");
    CHECK (new_pid != crashed_pid);
    CHECK_STR (h_str (job, "node"), streq (model, "ma") ? "wa" : "wb");
    json_decref (job);
    printf ("engine: %s's engine crashed (pid %lld); the job succeeded on attempt 2; the engine "
            "came back as pid %lld\n",
            model, crashed_pid, (long long) new_pid);

    /* (4) Cancel reaches the engine. */
    id = h_submit_payload (client, "eng", "ma", json_pack ("{s:b}", "hang", 1), 1);
    snprintf (s_path, sizeof s_path, "%s/hanging-%lld", dir, (long long) id);
    CHECK (h_wait_until (s_file_exists, s_path, 30000));
    CHECK_STR (h_cancel (client, id), "cancelled");
    snprintf (s_path, sizeof s_path, "%s/cancel-%lld", dir, (long long) id);
    CHECK (h_wait_until (s_file_exists, s_path, 30000));
    CHECK (h_wait_state (client, id, "cancelled", 5000));
    /* The engine goes on: the next job runs in the same process. */
    job = s_done (client, h_submit_payload (client, "eng", "ma", json_object (), 1));
    CHECK_EQ (h_int (json_object_get (job, "result"), "pid"),
              pid_a == crashed_pid ? new_pid : pid_a);
    json_decref (job);
    printf ("engine: cancel of job %lld reached the engine\n", (long long) id);

    /* A time limit reaches the engine the same way; the job fails as timed out. */
    json_t *limited = json_pack ("{s:s, s:s, s:i, s:i, s:{s:b}}", "kind", "eng", "model", "ma",
                                 "max_attempts", 1, "timeout_ms", 300, "payload", "hang", 1);
    id = h_submit (client, limited);
    json_decref (limited);
    CHECK (h_wait_state (client, id, "failed", 30000));
    job = h_result (client, id);
    /* The worker's deadline says "timed out after 300 ms", the broker's "time limit of 300 ms
       exceeded": whichever comes first is the recorded reason (a loaded machine decides). */
    const char *error = h_str (job, "error");
    CHECK (strstr (error, "timed out") || strstr (error, "time limit"));
    json_decref (job);
    snprintf (s_path, sizeof s_path, "%s/cancel-%lld", dir, (long long) id);
    CHECK (h_wait_until (s_file_exists, s_path, 30000));
    printf ("engine: the time limit of job %lld reached the engine\n", (long long) id);

    /* (5) Blobs to an engine kind: a clear error. */
    json_t *submit = json_pack ("{s:s, s:s, s:i, s:{s:{s:i}}}", "kind", "eng", "model", "ma",
                                "max_attempts", 1, "payload", "image", "blob", 0);
    zframe_t *blob = zframe_new ("hello", 5);
    id = h_submit_blobs (client, submit, &blob, 1);
    json_decref (submit);
    CHECK (h_wait_state (client, id, "failed", 30000));
    job = h_result (client, id);
    CHECK (strstr (h_str (job, "error"), "runs on an engine, which takes JSON only"));
    printf ("engine: blobs refused: %s\n", h_str (job, "error"));
    json_decref (job);

    /* (6) While an engine is down its worker does not offer the kind: wa's engine exits and
       cannot start again until DIR/block goes; wa then registers without "eng", and with it
       again once the engine is back. */
    snprintf (s_path, sizeof s_path, "%s/block", dir);
    FILE *block = fopen (s_path, "w");
    CHECK (block);
    fclose (block);
    id = h_submit_payload (client, "eng", "ma", json_pack ("{s:b}", "exit", 1), 1);
    CHECK (h_wait_state (client, id, "failed", 30000));
    s_offers_t offers = {client, false};
    CHECK (h_wait_until (s_offers_eng, &offers, 30000));
    /* NODES says why, and so does gridq nodes. */
    node = h_node (client, "wa");
    json_t *engine = json_array_get (json_object_get (node, "engines"), 0);
    CHECK_STR (h_str (engine, "kind"), "eng");
    CHECK_STR (h_str (engine, "state"), "restarting");
    json_decref (node);
    char *out = NULL;
    snprintf (command, sizeof command, "GRIDQ_BROKER=%s %s/gridq nodes", h_endpoint (), h_bin ());
    CHECK_EQ (h_run (command, &out), 0);
    CHECK (out && strstr (out, "engine eng restarting"));
    free (out);
    unlink (s_path);
    offers.want = true;
    CHECK (h_wait_until (s_offers_eng, &offers, 30000));
    job = s_done (client, h_submit_payload (client, "eng", "ma", json_object (), 1));
    json_decref (job);
    printf (
        "engine: wa stopped offering kind eng while its engine was down, and offers it again\n");

    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
