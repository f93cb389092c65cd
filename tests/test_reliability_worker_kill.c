/*  test_reliability_worker_kill.c — a worker killed with SIGKILL in the middle of a job: the
    broker notices the silence (heartbeat 200 ms x liveness 3), records the attempt as lost on
    that node, and the job completes on the other node with attempts = 2. */
#include <czmq.h>
#include <signal.h>

#include "harness.h"

#define S_SLEEP_MS 1500

int
main (void)
{
    h_init ("rel-worker-kill", 60);
    h_start_broker ("--heartbeat-ms", "200", "--liveness", "3", NULL);
    pid_t w1 = h_start_worker ("w1", 1, NULL);
    pid_t w2 = h_start_worker ("w2", 1, NULL);
    gq_client_t *client = h_client (3000);
    h_wait_nodes (client, 2, 20000);

    int64_t id = h_submit_sleep (client, S_SLEEP_MS);

    /* STATUS tells the node that runs it. */
    if (!h_wait_state (client, id, "running", 10000)) {
        fprintf (stderr, "job %lld never ran\n", (long long) id);
        h_fail ();
    }
    char victim[GQ_NAME_MAX], survivor[GQ_NAME_MAX];
    pid_t victim_pid = h_running_on (client, id, victim, survivor) ? w1 : w2;
    int64_t killed_us = gq_mono_us ();
    h_kill (victim_pid, SIGKILL);

    /* The node goes offline by missed heartbeats (liveness 3 x 200 ms), well within this wait. */
    CHECK (h_wait_node_status (client, victim, "offline", 3000));
    int64_t detected_ms = (gq_mono_us () - killed_us) / 1000;

    /* Then the job completes on the other node. */
    CHECK (h_wait_state (client, id, "done", S_SLEEP_MS + 10000));
    json_t *result = h_result (client, id);
    CHECK (result);
    CHECK_STR (h_str (result, "state"), "done");
    CHECK_EQ (h_int (result, "attempts"), 2);
    CHECK_STR (h_str (result, "node"), survivor);
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (result, "result"),
                                                   "slept_ms")),
              S_SLEEP_MS);
    json_t *detail = json_object_get (result, "attempts_detail");
    CHECK_EQ (json_array_size (detail), 2);
    json_t *first = json_array_get (detail, 0), *second = json_array_get (detail, 1);
    CHECK_EQ (h_int (first, "attempt"), 1);
    CHECK_STR (h_str (first, "outcome"), "lost");
    CHECK_STR (h_str (first, "node"), victim);
    CHECK (strstr (h_str (first, "reason"), "heartbeat") != NULL);
    CHECK_EQ (h_int (second, "attempt"), 2);
    CHECK_STR (h_str (second, "outcome"), "ok");
    CHECK_STR (h_str (second, "node"), survivor);
    json_decref (result);

    /* The store agrees: one job, two attempt rows. */
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs"), 1);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from attempts"), 2);
    CHECK_EQ (h_sql_int (NULL, "select attempts from jobs"), 2);

    printf ("worker_kill: job %lld lost on %s (detected in %lld ms), done on %s\n",
            (long long) id, victim, (long long) detected_ms, survivor);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
