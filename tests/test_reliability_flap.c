/*  test_reliability_flap.c — a worker that flaps on a job's second attempt: attempt 1 fails on
    w1, attempt 2 runs on another worker, which is frozen (SIGSTOP) for 1.5 s with heartbeats of
    200 ms and a liveness of 3, while the third is busy. The broker records attempt 2 lost and
    queues the job again; the frozen worker comes back, registers again with its run, which the
    broker takes back under the same attempt number, and reports it. Before, that run's attempt
    row hit the (job, attempt) key, the whole batch holding it was refused, and the job stayed
    "queued" for ever, gridq wait never returning. Now: the job ends done, its attempts are
    1 failed, 2 ok (the lost run finished after all: one row), and no batch was refused. */
#include <czmq.h>
#include <signal.h>

#include "harness.h"

#define S_FREEZE_MS 1500

/* The worker running job id besides w1: "w2" or "w3" into node; its pid. */
static pid_t
s_running_on (gq_client_t *client, int64_t id, pid_t w2, pid_t w3, char *node)
{
    json_t *job = h_status (client, id);
    snprintf (node, GQ_NAME_MAX, "%s", h_str (job, "node"));
    json_decref (job);
    CHECK (strcmp (node, "w2") == 0 || strcmp (node, "w3") == 0);
    return strcmp (node, "w2") == 0 ? w2 : w3;
}

int
main (void)
{
    h_init ("rel-flap", 60);
    h_start_broker ("--heartbeat-ms", "200", "--liveness", "3", NULL);
    /* w1 fails the kind and is the matcher's first choice (faster and free); w2 and w3 run it
       for 3 s. Distinct GPU models, so that a job can be pinned to one of them. */
    h_start_worker ("w1", 1, "--handler", "flap=exit 1", "--tflops", "100", "--price", "0", NULL);
    pid_t w2 = h_start_worker ("w2", 1, "--handler", "flap=sleep 3; echo '{\"ran\": true}'",
                               "--tflops", "1", "--price", "5", "--gpu-model", "GPU-w2", NULL);
    pid_t w3 = h_start_worker ("w3", 1, "--handler", "flap=sleep 3; echo '{\"ran\": true}'",
                               "--tflops", "1", "--price", "5", "--gpu-model", "GPU-w3", NULL);
    gq_client_t *client = h_client (3000);
    h_wait_nodes (client, 3, 20000);

    json_t *spec = json_pack ("{s:s, s:{}, s:i}", "kind", "flap", "payload", "max_attempts", 3);
    int64_t id = h_submit (client, spec);
    json_decref (spec);
    /* Attempt 1 fails on w1; attempt 2 starts elsewhere. */
    json_t *job = NULL;
    for (int i = 0; i < 250; i++) {
        json_decref (job);
        job = h_status (client, id);
        if (h_int (job, "attempts") == 2 && streq (h_str (job, "state"), "running")) {
            break;
        }
        zclock_sleep (20);
    }
    CHECK_EQ (h_int (job, "attempts"), 2);
    json_decref (job);
    char flapper[GQ_NAME_MAX];
    pid_t pid = s_running_on (client, id, w2, w3, flapper);
    /* The third worker is busy, so that the job waits for the flapper to come back. */
    char pin[GQ_NAME_MAX + 8];
    snprintf (pin, sizeof pin, "GPU-%s", streq (flapper, "w2") ? "w3" : "w2");
    json_t *blocker_spec = json_pack ("{s:s, s:{s:i}, s:s}", "kind", "sleep", "payload", "ms",
                                      20000, "gpu", pin);
    int64_t blocker = h_submit (client, blocker_spec);
    json_decref (blocker_spec);
    CHECK (h_wait_state (client, blocker, "running", 5000));

    h_kill (pid, SIGSTOP);
    CHECK (h_wait_node_status (client, flapper, "offline", 5000));
    int64_t frozen_at = gq_mono_us ();
    while (gq_mono_us () - frozen_at < (S_FREEZE_MS - 600) * 1000LL) {
        zclock_sleep (50); /* the freeze itself: the worker stays stopped this long */
    }
    h_kill (pid, SIGCONT);
    CHECK (h_wait_node_status (client, flapper, "online", 5000));

    /* The job ends done; gridq wait returns. */
    CHECK (h_wait_state (client, id, "done", 15000));
    json_t *result = h_result (client, id);
    CHECK_STR (h_str (result, "state"), "done");
    json_t *detail = json_object_get (result, "attempts_detail");
    CHECK_EQ (json_array_size (detail), 2);
    CHECK_STR (h_str (json_array_get (detail, 0), "outcome"), "failed");
    CHECK_STR (h_str (json_array_get (detail, 0), "node"), "w1");
    CHECK_STR (h_str (json_array_get (detail, 1), "node"), flapper);
    CHECK_STR (h_str (json_array_get (detail, 1), "outcome"), "ok");
    CHECK_EQ (h_int (result, "attempts"), 2);
    CHECK_STR (h_str (result, "node"), flapper);
    /* The late run is one row, whatever happened to it. */
    char sql[200];
    snprintf (sql, sizeof sql,
              "select count(*) from attempts where job_id = %lld and node = '%s'", (long long) id,
              flapper);
    CHECK_EQ (h_sql_int (NULL, sql), 1);
    snprintf (sql, sizeof sql, "select count(*) from attempts where job_id = %lld",
              (long long) id);
    int64_t rows = (int64_t) json_array_size (detail);
    CHECK_EQ (h_sql_settled (NULL, sql, rows, 5000), rows);
    /* Nothing was refused, and the broker still commits: the blocker is cancelled. */
    json_t *cancel = gq_client_call (client, "CANCEL", json_pack ("{s:[I]}", "ids", blocker));
    CHECK (cancel);
    json_decref (cancel);
    CHECK (h_wait_state (client, blocker, "cancelled", 5000));
    char *log = NULL;
    char command[600];
    snprintf (command, sizeof command, "grep -c 'not committed\\|failed alone' %s/broker.log",
              h_dir ());
    h_run (command, &log);
    CHECK_EQ (atoi (log ? log : "0"), 0);
    free (log);
    json_decref (result);

    printf ("flap: attempt 2 on %s frozen for %d ms; job done after %zu attempts, one row each\n",
            flapper, S_FREEZE_MS, (size_t) rows);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
