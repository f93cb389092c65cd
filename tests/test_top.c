/*  test_top.c — gridq-top against a live broker with two CPU workers: --once as text and as
    JSON (node names and fields, job counts, the failure and its reason, measured rates), arrays
    as one row each with their bars (and their elements with --expand), the full screen on a
    pseudo-terminal (names shown, sort, pause, arrays expanded and collapsed by 'a', resize, 'q'
    and Ctrl-C both restore the terminal), and a broker that does not answer (exit 3 and the
    reason). */
#include <czmq.h>
#include <signal.h>
#include <unistd.h>

#include "harness.h"
#include "ops_pty.h"

#define N_OK 6
#define XTERM_LEAVE "\033[?1049l" /* xterm's rmcup: back from the alternate screen */

static const char *s_node_fields[] = {
    "name",          "gpu_model",   "backend",       "vram_total_mb",    "vram_free_mb",
    "tflops",        "price_per_hour", "slots",      "running",          "kinds",
    "models_available", "models_loaded", "rtt_ms",   "status",           "last_seen",
    "jobs_ok",       "jobs_failed", "reliability",   "backoff_until",    "jobs_per_min"};

static char s_top[512];

/* Runs "gridq-top --broker EP ARGS" (stderr folded in); its exit status, output in *out. */
static int
s_run_top (const char *args, char **out)
{
    char command[1024];
    snprintf (command, sizeof command, "timeout -k 2 30 '%s' --broker %s %s 2>&1", s_top,
              h_endpoint (), args);
    return h_run (command, out);
}

static json_t *
s_once_json (const char *extra)
{
    char args[256], *out = NULL;
    snprintf (args, sizeof args, "--once --json %s", extra);
    int rc = s_run_top (args, &out);
    if (rc != 0) {
        fprintf (stderr, "gridq-top %s exited %d:\n%s\n", args, rc, out ? out : "");
        h_fail ();
    }
    json_error_t error;
    json_t *snapshot = json_loads (out, 0, &error);
    if (!snapshot) {
        fprintf (stderr, "gridq-top --once --json printed no JSON (%s):\n%s\n", error.text, out);
        h_fail ();
    }
    free (out);
    return snapshot;
}

static json_t *
s_node_named (json_t *snapshot, const char *name)
{
    size_t i;
    json_t *node;
    json_array_foreach (json_object_get (snapshot, "nodes"), i, node) {
        if (streq (json_string_value (json_object_get (node, "name")), name)) {
            return node;
        }
    }
    return NULL;
}

/* The full screen: starts gridq-top on a terminal and waits for both node names. */
static ops_pty_t *
s_screen_start (int rows, int cols)
{
    char endpoint[128];
    snprintf (endpoint, sizeof endpoint, "%s", h_endpoint ());
    char *argv[] = {s_top, "--broker", endpoint, "--interval", "200ms", "--timeout", "1s", NULL};
    ops_pty_t *pty = ops_pty_start (rows, cols, argv);
    CHECK (pty);
    if (!ops_pty_wait_for (pty, 0, "top-a", 10000) || !ops_pty_wait_for (pty, 0, "top-b", 5000)) {
        char *plain = ops_pty_plain (ops_pty_output (pty));
        fprintf (stderr, "the screen never showed both nodes:\n%s\n", plain);
        free (plain);
        ops_pty_destroy (&pty);
        h_fail ();
    }
    return pty;
}

static void
s_expect_screen (ops_pty_t *pty, size_t from, const char *text)
{
    if (!ops_pty_wait_for (pty, from, text, 5000)) {
        char *plain = ops_pty_plain (ops_pty_output (pty) + from);
        fprintf (stderr, "the screen never showed \"%s\"; it showed:\n%s\n", text, plain);
        free (plain);
        ops_pty_destroy (&pty);
        h_fail ();
    }
}

/* The entry of array id among a listing's (NULL when it has none), failing when an element of
   it stands in the listing on its own. */
static json_t *
s_array_entry (json_t *list, int64_t id, int64_t count)
{
    json_t *found = NULL;
    size_t i;
    json_t *entry;
    json_array_foreach (list, i, entry) {
        int64_t at = json_integer_value (json_object_get (entry, "id"));
        if (at > id && at <= id + count) {
            fprintf (stderr, "element %lld of array %lld listed on its own\n", (long long) at,
                     (long long) id);
            h_fail ();
        }
        found = at == id ? entry : found;
    }
    return found;
}

/* Whether the listing entry's elements are exactly the ids first, first - 1, ... (n of them). */
static bool
s_elements_are (json_t *entry, int64_t first, size_t n)
{
    json_t *elements = json_object_get (entry, "elements");
    bool same = json_array_size (elements) == n;
    for (size_t i = 0; same && i < n; i++) {
        same = json_integer_value (json_object_get (json_array_get (elements, i), "id")) ==
               first - (int64_t) i;
    }
    return same;
}

/* Arrays: an array of 8 echo jobs (all done) and one of 4 sleeps past their time limit (all
   failed) are one row each, in the recent jobs and among the failures, with their bars; their
   elements show only when asked (--expand, and 'a' on the screen), under them, newest first,
   named as squeue names an array's task. */
static void
s_test_arrays (gq_client_t *client)
{
    json_t *jobs = json_pack ("[{s:s, s:s}, {s:s, s:s, s:{s:i}, s:i, s:i}]", "kind", "echo",
                              "array", "0-7", "kind", "sleep", "array", "0-3", "payload", "ms",
                              5000, "timeout_ms", 200, "max_attempts", 1);
    int64_t arrays[2];
    CHECK_EQ (gq_client_submit (client, jobs, false, arrays), 0);
    json_decref (jobs);
    int64_t done = arrays[0], failed = arrays[1], elements[12];
    for (int i = 0; i < 12; i++) {
        elements[i] = i < 8 ? done + 1 + i : failed + 1 + (i - 8);
    }
    CHECK_EQ (gq_client_wait (client, elements, 12, 30000, NULL, NULL), 0);

    json_t *snapshot = s_once_json ("--interval 0");
    json_t *entry = s_array_entry (json_object_get (snapshot, "recent"), done, 8);
    CHECK (entry);
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (json_object_get (
                  entry, "array"), "counts"), "done")), 8);
    CHECK (!json_object_get (entry, "elements"));
    CHECK (s_array_entry (json_object_get (snapshot, "recent"), failed, 4));
    entry = json_array_get (json_object_get (snapshot, "failures"), 0);
    CHECK_EQ (json_integer_value (json_object_get (entry, "id")), failed);
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (json_object_get (
                  entry, "array"), "counts"), "failed")), 4);
    s_array_entry (json_object_get (snapshot, "failures"), failed, 4);
    json_decref (snapshot);

    snapshot = s_once_json ("--interval 0 --expand");
    CHECK (s_elements_are (s_array_entry (json_object_get (snapshot, "recent"), done, 8),
                           done + 8, 8));
    CHECK (s_elements_are (json_array_get (json_object_get (snapshot, "failures"), 0),
                           failed + 4, 4));
    json_decref (snapshot);

    /* As text: the bars (16 cells: two an element of the 8, four of the 4), the elements only
       with --expand. */
    char *out = NULL, row[64], task[64];
    CHECK_EQ (s_run_top ("--once --interval 0", &out), 0);
    snprintf (row, sizeof row, "%lld_[0-7]", (long long) done);
    CHECK (strstr (out, row));
    CHECK (strstr (out, "[################] 8/8: 8 done"));
    CHECK (strstr (out, "[!!!!!!!!!!!!!!!!] 4/4: 4 failed"));
    snprintf (task, sizeof task, "%lld_3 (%lld)", (long long) failed, (long long) failed + 4);
    CHECK (!strstr (out, task));
    free (out);
    CHECK_EQ (s_run_top ("--once --interval 0 --expand", &out), 0);
    CHECK (strstr (out, task));
    free (out);

    /* The screen: collapsed at first, 'a' expands, 'a' again collapses. */
    ops_pty_t *pty = s_screen_start (40, 160);
    snprintf (row, sizeof row, "%lld_[0-3]", (long long) failed);
    s_expect_screen (pty, 0, row);
    s_expect_screen (pty, 0, "a expand arrays");
    CHECK (!strstr (ops_pty_output (pty), task));
    size_t mark = ops_pty_size (pty);
    ops_pty_type (pty, "a");
    s_expect_screen (pty, mark, "collapse");
    s_expect_screen (pty, mark, task);
    mark = ops_pty_size (pty);
    ops_pty_type (pty, "a");
    s_expect_screen (pty, mark, "expand");
    ops_pty_type (pty, "q");
    CHECK_EQ (ops_pty_wait_exit (pty, 5000), 0);
    ops_pty_destroy (&pty);
}

/* Under CURVE: a client key given by --cert/--server-cert or by $GRIDQ_CERT/$GRIDQ_SERVER_CERT
   sees the fleet; a worker's key is refused (exit 4, DENIED). */
static void
s_test_curve (void)
{
    char keygen[512];
    snprintf (keygen, sizeof keygen, "%s/gridq-keygen", h_bin ());
    if (access (keygen, X_OK) || !zsys_has_curve ()) {
        printf ("top: no gridq-keygen or no CURVE: the CURVE part is skipped\n");
        return;
    }
    char command[2048], *out = NULL;
    snprintf (command, sizeof command,
              "cd '%s' && for k in broker ops gpu; do '%s' --dir . $k >/dev/null || exit 1; "
              "done && mkdir -p clients workers && cp ops.pub clients/ && cp gpu.pub workers/",
              h_dir (), keygen);
    CHECK_EQ (h_run (command, NULL), 0);
    char endpoint[64], db[600], secret[600], clients[600], workers[600], gpu[600], pub[600];
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", h_free_port ());
    snprintf (db, sizeof db, "%s/curve.db", h_dir ());
    snprintf (secret, sizeof secret, "%s/broker.secret", h_dir ());
    snprintf (clients, sizeof clients, "%s/clients", h_dir ());
    snprintf (workers, sizeof workers, "%s/workers", h_dir ());
    snprintf (gpu, sizeof gpu, "%s/gpu.secret", h_dir ());
    snprintf (pub, sizeof pub, "%s/broker.pub", h_dir ());
    h_start ("gridq-broker", "broker-curve", "--endpoint", endpoint, "--db", db, "--cert", secret,
             "--clients-dir", clients, "--workers-dir", workers, NULL);
    h_start ("gridq-worker", "top-c", "--broker", endpoint, "--name", "top-c", "--backend", "cpu",
             "--cert", gpu, "--server-cert", pub, NULL);
    /* The options, until the CURVE worker is listed. */
    bool seen = false;
    for (int attempt = 0; attempt < 100 && !seen; attempt++) {
        snprintf (command, sizeof command,
                  "timeout -k 2 30 '%s' --broker %s --cert '%s/ops.secret' --server-cert '%s' "
                  "--timeout 2s --once --json --interval 0 2>&1",
                  s_top, endpoint, h_dir (), pub);
        int rc = h_run (command, &out);
        if (rc != 0) {
            fprintf (stderr, "gridq-top with --cert exited %d:\n%s\n", rc, out);
            h_fail ();
        }
        seen = strstr (out, "\"top-c\"") != NULL;
        free (out);
        if (!seen) {
            usleep (100000);  /* the worker is still registering: poll, bounded */
        }
    }
    CHECK (seen);
    /* The same through the environment. */
    snprintf (command, sizeof command,
              "GRIDQ_BROKER=%s GRIDQ_CERT='%s/ops.secret' GRIDQ_SERVER_CERT='%s' timeout -k 2 30 "
              "'%s' --timeout 2s --once --interval 0 2>&1",
              endpoint, h_dir (), pub, s_top);
    CHECK_EQ (h_run (command, &out), 0);
    CHECK (strstr (out, "top-c"));
    free (out);
    /* A worker's key is not a client's: refused, said so, exit 4. */
    snprintf (command, sizeof command,
              "timeout -k 2 30 '%s' --broker %s --cert '%s' --server-cert '%s' --timeout 2s "
              "--once 2>&1",
              s_top, endpoint, gpu, pub);
    int rc = h_run (command, &out);
    if (rc != 4 || !strstr (out, "DENIED")) {
        fprintf (stderr, "gridq-top with a worker key: exit %d, expected 4 and DENIED:\n%s\n", rc,
                 out);
        h_fail ();
    }
    free (out);
}

int
main (void)
{
    h_init ("top", 150);
    h_require ("gridq-top");
    h_require ("gridq-worker");
    snprintf (s_top, sizeof s_top, "%s/gridq-top", h_bin ());
    unsetenv ("GRIDQ_BROKER");
    unsetenv ("GRIDQ_CERT");
    unsetenv ("GRIDQ_SERVER_CERT");

    /* No broker yet: exit 3 and say why, within the timeout. */
    char *out = NULL;
    int64_t t0 = gq_mono_us ();
    CHECK_EQ (s_run_top ("--once --timeout 1s", &out), 3);
    CHECK (strstr (out, "no broker answered at"));
    CHECK (strstr (out, "is gridq-broker running?"));
    CHECK (gq_mono_us () - t0 < 10 * 1000000LL);
    free (out);
    /* Usage errors: exit 2 with a message. */
    CHECK_EQ (s_run_top ("--json", &out), 2);
    CHECK (strstr (out, "--once"));
    free (out);
    CHECK_EQ (s_run_top ("--once --sort bogus", &out), 2);
    free (out);

    pid_t broker = h_start_broker (NULL, NULL);
    gq_client_t *client = h_start_workers (2, 5000, "top-a", "top-b", NULL);

    /* Jobs that succeed, and one that fails for good (the sleep outlives its time limit). */
    json_t *jobs = h_echo_jobs (N_OK);
    json_array_append_new (jobs, json_pack ("{s:s, s:{s:i}, s:i, s:i}", "kind", "sleep",
                                            "payload", "ms", 5000, "timeout_ms", 200,
                                            "max_attempts", 1));
    int64_t ids[N_OK + 1];
    CHECK_EQ (gq_client_submit (client, jobs, true, ids), 0);
    json_decref (jobs);
    CHECK_EQ (gq_client_wait (client, ids, N_OK + 1, 30000, NULL, NULL), 0);
    json_t *failed = h_status (client, ids[N_OK]);
    CHECK_STR (json_string_value (json_object_get (failed, "state")), "failed");
    json_decref (failed);

    /* --once --json: every node field, the counts, the failure with its reason. */
    json_t *snapshot = s_once_json ("--interval 300ms");
    CHECK_EQ (json_array_size (json_object_get (snapshot, "nodes")), 2);
    int64_t ok_total = 0;
    const char *names[] = {"top-a", "top-b"};
    for (int n = 0; n < 2; n++) {
        json_t *node = s_node_named (snapshot, names[n]);
        if (!node) {
            fprintf (stderr, "node %s missing from %s\n", names[n],
                     json_dumps (snapshot, JSON_COMPACT));
            h_fail ();
        }
        for (size_t f = 0; f < sizeof s_node_fields / sizeof *s_node_fields; f++) {
            if (!json_object_get (node, s_node_fields[f])) {
                fprintf (stderr, "node %s lacks \"%s\"\n", names[n], s_node_fields[f]);
                h_fail ();
            }
        }
        CHECK_EQ (json_integer_value (json_object_get (node, "slots")), 2);
        CHECK (json_is_number (json_object_get (node, "jobs_per_min")));
        ok_total += json_integer_value (json_object_get (node, "jobs_ok"));
    }
    CHECK_EQ (ok_total, N_OK);
    json_t *counts = json_object_get (snapshot, "jobs");
    CHECK_EQ (json_integer_value (json_object_get (counts, "done")), N_OK);
    CHECK_EQ (json_integer_value (json_object_get (counts, "failed")), 1);
    CHECK_EQ (json_integer_value (json_object_get (counts, "queued")), 0);
    CHECK_EQ (json_integer_value (json_object_get (counts, "running")), 0);
    CHECK (json_object_get (counts, "cancelled"));
    json_t *queue = json_object_get (snapshot, "queue");
    CHECK_EQ (json_array_size (json_object_get (queue, "by_priority")), 10);
    CHECK (json_is_integer (json_object_get (queue, "oldest_wait_ms")));
    CHECK (json_is_number (json_object_get (queue, "done_per_s")));
    CHECK (json_is_number (json_object_get (queue, "failed_per_s")));
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (snapshot, "fleet"),
                                                   "online")) +
                  json_integer_value (json_object_get (json_object_get (snapshot, "fleet"),
                                                       "busy")),
              2);
    json_t *failures = json_object_get (snapshot, "failures");
    CHECK_EQ (json_array_size (failures), 1);
    json_t *failure = json_array_get (failures, 0);
    CHECK_EQ (json_integer_value (json_object_get (failure, "id")), ids[N_OK]);
    const char *reason = json_string_value (json_object_get (failure, "error"));
    CHECK (reason && *reason);
    char reason_head[24];
    snprintf (reason_head, sizeof reason_head, "%s", reason);
    json_decref (snapshot);

    /* Rates measured from deltas while work flows: jobs that finish during the interval. */
    jobs = json_array ();
    for (int i = 0; i < 120; i++) {
        json_array_append_new (jobs, json_pack ("{s:s, s:{s:i}}", "kind", "sleep", "payload",
                                                "ms", 50));
    }
    int64_t flow[120];
    CHECK_EQ (gq_client_submit (client, jobs, false, flow), 0);
    json_decref (jobs);
    bool measured = false;
    for (int attempt = 0; attempt < 5 && !measured; attempt++) {
        snapshot = s_once_json ("--interval 500ms");
        double per_s = json_number_value (json_object_get (json_object_get (snapshot, "queue"),
                                                           "done_per_s"));
        double per_min = 0;
        size_t i;
        json_t *node;
        json_array_foreach (json_object_get (snapshot, "nodes"), i, node) {
            per_min += json_number_value (json_object_get (node, "jobs_per_min"));
        }
        measured = per_s > 0 && per_min > 0;
        json_decref (snapshot);
    }
    CHECK (measured);
    CHECK_EQ (gq_client_wait (client, flow, 120, 60000, NULL, NULL), 0);

    /* --once as text: the fleet, the queue line, the failure and its reason. */
    CHECK_EQ (s_run_top ("--once --interval 0", &out), 0);
    const char *wants[] = {"top-a", "top-b", "NODE", "VRAM", "JOBS/MIN", "Jobs", "Queue",
                           "Recent failures", "online", reason_head};
    for (size_t w = 0; w < sizeof wants / sizeof *wants; w++) {
        if (!strstr (out, wants[w])) {
            fprintf (stderr, "gridq-top --once lacks \"%s\":\n%s\n", wants[w], out);
            h_fail ();
        }
    }
    char failed_id[32];
    snprintf (failed_id, sizeof failed_id, "%lld", (long long) ids[N_OK]);
    CHECK (strstr (out, failed_id));
    free (out);

    s_test_arrays (client);

    /* The full screen: both nodes shown, keys work, resize redraws, 'q' restores. */
    ops_pty_t *pty = s_screen_start (30, 120);
    size_t mark = ops_pty_size (pty);
    /* curses rewrites only what changed: the footer's "name" becomes "vram". */
    ops_pty_type (pty, "s");
    s_expect_screen (pty, mark, "vram");
    mark = ops_pty_size (pty);
    ops_pty_type (pty, "p");
    s_expect_screen (pty, mark, "PAUSED");
    ops_pty_type (pty, "p");
    mark = ops_pty_size (pty);
    ops_pty_resize (pty, 20, 90);
    s_expect_screen (pty, mark, "top-a");
    s_expect_screen (pty, mark, "top-b");
    ops_pty_type (pty, "q");
    CHECK_EQ (ops_pty_wait_exit (pty, 5000), 0);
    CHECK (strstr (ops_pty_output (pty), XTERM_LEAVE));
    ops_pty_destroy (&pty);

    /* Ctrl-C: a clean exit, the terminal restored. */
    pty = s_screen_start (24, 100);
    mark = ops_pty_size (pty);
    ops_pty_type (pty, "\003");
    CHECK_EQ (ops_pty_wait_exit (pty, 5000), 0);
    CHECK (strstr (ops_pty_output (pty) + mark, XTERM_LEAVE));
    ops_pty_destroy (&pty);

    /* The broker goes away under the screen: the reason is shown, 'q' still answers. */
    pty = s_screen_start (24, 160);
    h_kill (broker, SIGKILL);
    mark = ops_pty_size (pty);
    s_expect_screen (pty, mark, "no broker answered");
    ops_pty_type (pty, "q");
    CHECK_EQ (ops_pty_wait_exit (pty, 5000), 0);
    ops_pty_destroy (&pty);

    s_test_curve ();
    gq_client_destroy (&client);
    printf ("top: ok\n");
    h_cleanup ();
    return 0;
}
