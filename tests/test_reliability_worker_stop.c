/*  test_reliability_worker_stop.c — a worker frozen with SIGSTOP (a hung box: the TCP
    connection stays up, nothing is said) is detected by missed heartbeats (liveness x heartbeat),
    its job moves to the other node and completes there. Then SIGCONT: the frozen worker wakes
    up, finishes its stale copy of the job and reports it; the broker keeps the first result
    (one row, two attempts: lost, ok), and the worker registers again and takes work. */
#include <czmq.h>
#include <signal.h>

#include "harness.h"

#define S_HEARTBEAT_MS 200
#define S_LIVENESS     3
#define S_SLEEP_MS     1500

int
main (void)
{
    h_init ("rel-worker-stop", 60);
    h_start_broker ("--heartbeat-ms", "200", "--liveness", "3", NULL);
    /* Distinct GPU models, so that a job can be sent to w1 alone at the end. */
    pid_t w1 = h_start_worker ("w1", 1, "--gpu-model", "GPU-ONE", NULL);
    pid_t w2 = h_start_worker ("w2", 1, "--gpu-model", "GPU-TWO", NULL);
    gq_client_t *client = h_client (3000);
    h_wait_nodes (client, 2, 20000);

    int64_t id = h_submit_sleep (client, S_SLEEP_MS);
    CHECK (h_wait_state (client, id, "running", 5000));
    char frozen[GQ_NAME_MAX], other[GQ_NAME_MAX];
    pid_t frozen_pid = h_running_on (client, id, frozen, other) ? w1 : w2;

    int64_t t0 = gq_mono_us ();
    h_kill (frozen_pid, SIGSTOP);
    /* Detected by missed heartbeats, within a bounded wait of a few liveness periods; and not
       before the liveness period has passed (a lower bound, which load cannot break). */
    int wait_ms = 4 * S_LIVENESS * S_HEARTBEAT_MS;
    if (!h_wait_node_status (client, frozen, "offline", wait_ms)) {
        fprintf (stderr, "%s not offline %d ms after SIGSTOP\n", frozen, wait_ms);
        h_fail ();
    }
    int64_t detected_ms = (gq_mono_us () - t0) / 1000;
    CHECK (detected_ms >= S_LIVENESS * S_HEARTBEAT_MS - S_HEARTBEAT_MS);

    /* The job moves to the other node and completes there. */
    CHECK (h_wait_state (client, id, "done", S_SLEEP_MS + 5000));
    json_t *first = h_result (client, id);
    CHECK_STR (h_str (first, "node"), other);
    CHECK_EQ (h_int (first, "attempts"), 2);

    /* Wake the frozen worker: its copy of the job ends at once (its time has passed) and it
       reports; it also notices the broker's silence and registers again. */
    h_kill (frozen_pid, SIGCONT);
    if (!h_wait_node_status (client, frozen, "online", 5000)) {
        fprintf (stderr, "%s did not come back after SIGCONT\n", frozen);
        h_fail ();
    }
    /* A job only the woken worker can take: once it is done, whatever the worker said before
       it (the stale RESULT) has been handled. */
    json_t *pinned = json_pack ("{s:s, s:{s:i}, s:s}", "kind", "sleep", "payload", "ms", 10,
                                "gpu", strcmp (frozen, "w1") == 0 ? "GPU-ONE" : "GPU-TWO");
    int64_t pinned_id = h_submit (client, pinned);
    json_decref (pinned);
    CHECK (h_wait_state (client, pinned_id, "done", 5000));
    json_t *check = h_status (client, pinned_id);
    CHECK_STR (h_str (check, "node"), frozen);
    json_decref (check);

    /* Nothing recorded twice: the first result stands, with its two attempts. */
    json_t *after = h_result (client, id);
    CHECK_STR (h_str (after, "state"), "done");
    CHECK_STR (h_str (after, "node"), other);
    CHECK_EQ (h_int (after, "attempts"), 2);
    CHECK_STR (h_str (after, "finished_at"), h_str (first, "finished_at"));
    CHECK (json_equal (json_object_get (after, "result"), json_object_get (first, "result")));
    json_t *detail = json_object_get (after, "attempts_detail");
    CHECK_EQ (json_array_size (detail), 2);
    CHECK_STR (h_str (json_array_get (detail, 0), "outcome"), "lost");
    CHECK_STR (h_str (json_array_get (detail, 0), "node"), frozen);
    CHECK_STR (h_str (json_array_get (detail, 1), "outcome"), "ok");
    CHECK_STR (h_str (json_array_get (detail, 1), "node"), other);
    json_decref (first);
    json_decref (after);
    char sql[200];
    snprintf (sql, sizeof sql, "select count(*) from attempts where job_id = %lld",
              (long long) id);
    CHECK_EQ (h_sql_int (NULL, sql), 2);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs"), 2);
    json_t *stats = gq_client_call (client, "STATS", NULL);
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (stats, "jobs"), "done")), 2);
    json_decref (stats);

    printf ("worker_stop: %s frozen, offline after %lld ms; job done on %s; stale result "
            "ignored\n",
            frozen, (long long) detected_ms, other);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
