/*  test_reliability_reregister.c — a worker that a restarted broker does not know registers
    again by itself, and keeps what it runs.

    1. Idle worker, broker SIGKILLed and restarted on the same store and endpoint: the worker
       hears nothing for liveness x heartbeat, reconnects and registers; the node is online
       again and jobs flow.
    2. Worker running a job across the restart with a short liveness: it re-registers while
       the job runs, listing it in READY's "running"; the broker keeps the job there and does
       not run it twice.
    3. Worker running a job across the restart with a long liveness, so it does not reconnect
       by itself first: its RESULT reaches a broker that does not know it; the broker records
       that first result and answers REGISTER; the worker registers again. The job is recorded
       once, done on that node, with one attempt.
    4. A job that finishes while no broker runs at all: its RESULT goes nowhere; the worker keeps
       it and sends it again right behind READY when a broker is back, so the restarted broker
       records it before it could place the job again: done once, one attempt. */
#include <czmq.h>
#include <signal.h>

#include "harness.h"

/* The job ran once, on w1, and is recorded done with one ok attempt there. */
static void
s_check_once (gq_client_t *client, int64_t id, int ms)
{
    json_t *result = h_result (client, id);
    CHECK (result);
    json_t *detail = json_object_get (result, "attempts_detail");
    bool ok = strcmp (h_str (result, "state"), "done") == 0 &&
              strcmp (h_str (result, "node"), "w1") == 0 && h_int (result, "attempts") == 1 &&
              json_integer_value (json_object_get (json_object_get (result, "result"),
                                                   "slept_ms")) == ms &&
              json_array_size (detail) == 1 &&
              strcmp (h_str (json_array_get (detail, 0), "outcome"), "ok") == 0 &&
              strcmp (h_str (json_array_get (detail, 0), "node"), "w1") == 0;
    if (!ok) {
        json_object_del (result, "payload");
        char *text = json_dumps (result, JSON_COMPACT);
        fprintf (stderr, "job %lld is recorded as %s\nexpected: done on w1, attempts 1, "
                 "slept_ms %d, one ok attempt on w1\n", (long long) id, text, ms);
        free (text);
        h_fail ();
    }
    json_decref (result);
}

/* Kills the broker (SIGKILL), leaves it down for down_ms, and starts another on the same store
   with these timings; returns its PID once it answers. */
static pid_t
s_restart (gq_client_t *client, pid_t broker, const char *heartbeat_ms, const char *liveness,
           int down_ms)
{
    h_kill (broker, SIGKILL);
    if (down_ms) {
        zclock_sleep (down_ms); /* an outage of that length is what the caller tests */
    }
    broker = h_start_broker ("--heartbeat-ms", heartbeat_ms, "--liveness", liveness, NULL);
    h_wait_broker (client, 10000);
    return broker;
}

/* The step of parts 2 to 4: a restart with these timings, w1 back online, a sleep job of ms
   running on it, and another restart under that job (down for down_ms). Returns the job's id;
   *broker follows the restarts. */
static int64_t
s_job_across_restart (gq_client_t *client, pid_t *broker, const char *heartbeat_ms,
                      const char *liveness, int ms, int down_ms)
{
    *broker = s_restart (client, *broker, heartbeat_ms, liveness, 0);
    CHECK (h_wait_node_status (client, "w1", "online", 5000));
    int64_t id = h_submit_sleep (client, ms);
    CHECK (h_wait_state (client, id, "running", 5000));
    *broker = s_restart (client, *broker, heartbeat_ms, liveness, down_ms);
    return id;
}

int
main (void)
{
    h_init ("rel-reregister", 60);
    gq_client_t *client = h_client (2000);

    /* 1. Idle worker. */
    pid_t broker = h_start_broker ("--heartbeat-ms", "200", "--liveness", "3", NULL);
    h_start_worker ("w1", 1, NULL);
    h_wait_nodes (client, 1, 20000);
    h_kill (broker, SIGKILL);
    int64_t t0 = gq_mono_us ();
    broker = h_start_broker ("--heartbeat-ms", "200", "--liveness", "3", NULL);
    h_wait_broker (client, 10000);
    /* The restarted broker knows the node from the store only once it registers. */
    if (!h_wait_node_status (client, "w1", "online", 5000)) {
        fprintf (stderr, "w1 did not register again within 5 s of the broker restart\n");
        h_fail ();
    }
    int64_t back_ms = (gq_mono_us () - t0) / 1000;
    json_t *echo = json_pack ("{s:s, s:{s:s}}", "kind", "echo", "payload", "x", "flows");
    int64_t id = h_submit (client, echo);
    json_decref (echo);
    CHECK (h_wait_state (client, id, "done", 5000));
    json_t *result = h_result (client, id);
    CHECK_STR (h_str (result, "node"), "w1");
    json_decref (result);

    /* 2. A job runs across the restart; the worker re-registers while it still runs. */
    int64_t kept = s_job_across_restart (client, &broker, "200", "3", 2500, 0);
    CHECK (h_wait_node_status (client, "w1", "busy", 2000)); /* registered, holding the job */
    json_t *status = h_status (client, kept);
    CHECK_STR (h_str (status, "state"), "running");
    CHECK_STR (h_str (status, "node"), "w1");
    json_decref (status);
    CHECK (h_wait_state (client, kept, "done", 5000));
    s_check_once (client, kept, 2500);

    /* 3. A job runs across the restart; its result comes before the worker re-registers.
       Liveness 10 x 1000 ms: the worker will not reconnect by itself within this part. */
    int64_t across = s_job_across_restart (client, &broker, "1000", "10", 2000, 0);
    CHECK (h_wait_state (client, across, "done", 10000));
    /* The worker was told REGISTER when its result came, and registered. */
    if (!h_wait_node_status (client, "w1", "online", 3000)) {
        fprintf (stderr, "w1 did not register again after its RESULT was answered REGISTER\n");
        h_fail ();
    }
    s_check_once (client, across, 2000);
    int64_t after = h_submit_sleep (client, 10);
    CHECK (h_wait_state (client, after, "done", 5000));

    /* 4. The job ends while no broker runs: the second restart leaves the broker down for
       1500 ms, the whole rest of the job (that wait is the thing under test). */
    int64_t orphan = s_job_across_restart (client, &broker, "200", "3", 500, 1500);
    CHECK (h_wait_state (client, orphan, "done", 5000));
    s_check_once (client, orphan, 500);

    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs"), 5);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs where state = 2"), 5);
    printf ("reregister: idle worker back %lld ms after the restart; results across restarts "
            "recorded once\n",
            (long long) back_ms);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
