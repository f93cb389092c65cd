/*  test_reliability_durability.c — --durability normal and full both keep acknowledged jobs
    through a broker SIGKILL: jobs are submitted, the acknowledgement comes, the broker is
    killed at once and restarted on the same store; STATUS shows every job (finished ones with
    their results, the others queued), the idem keys still hold, and the queued jobs run when a
    worker comes. (A process crash leaves the WAL in the page cache, so both modes keep
    everything here; what "normal" may lose on power loss cannot be tested on one machine.) */
#include <czmq.h>
#include <signal.h>

#include "harness.h"

#define S_FINISHED 20
#define S_PENDING  50

static int
s_check_echo (void *arg, json_t *job)
{
    (void) arg;
    CHECK_STR (h_str (job, "state"), "done");
    json_t *payload = json_object_get (job, "payload");
    json_t *result = json_object_get (job, "result");
    /* FINISHED has no payload; the echo payload carries its own id check. */
    CHECK (payload == NULL || json_equal (payload, result));
    CHECK (json_integer_value (json_object_get (result, "n")) >= 0);
    return 0;
}

static void
s_round (gq_client_t *client, const char *mode)
{
    char db[300], name[32];
    snprintf (db, sizeof db, "%s/%s.db", h_dir (), mode);
    snprintf (name, sizeof name, "w-%s", mode);
    pid_t broker = h_start_broker ("--durability", mode, "--db", db, NULL);
    pid_t worker = h_start_worker (name, 1, NULL);
    h_wait_broker (client, 10000);
    CHECK (h_wait_node_status (client, name, "online", 10000));

    /* Finished jobs first. */
    json_t *jobs = json_array ();
    for (int i = 0; i < S_FINISHED; i++) {
        json_array_append_new (jobs, json_pack ("{s:s, s:{s:i, s:s}}", "kind", "echo", "payload",
                                                "n", i, "mode", mode));
    }
    int64_t done_ids[S_FINISHED];
    CHECK_EQ (gq_client_submit (client, jobs, false, done_ids), 0);
    json_decref (jobs);
    CHECK_EQ (gq_client_wait (client, done_ids, S_FINISHED, 10000, s_check_echo, NULL), 0);

    /* The worker leaves cleanly (BYE): what comes next stays queued. */
    h_kill (worker, SIGTERM);
    CHECK (h_wait_node_status (client, name, "offline", 5000));

    /* Acknowledged, then the broker dies at once. Half carry idem keys. */
    jobs = json_array ();
    for (int i = 0; i < S_PENDING; i++) {
        json_t *job = json_pack ("{s:s, s:{s:i, s:s}}", "kind", "echo", "payload", "n",
                                 S_FINISHED + i, "mode", mode);
        if (i % 2 == 0) {
            char idem[64];
            snprintf (idem, sizeof idem, "%s-%d", mode, i);
            json_object_set_new (job, "idem", json_string (idem));
        }
        json_array_append_new (jobs, job);
    }
    int64_t pending_ids[S_PENDING];
    CHECK_EQ (gq_client_submit (client, jobs, false, pending_ids), 0);
    h_kill (broker, SIGKILL);

    broker = h_start_broker ("--durability", mode, "--db", db, NULL);
    h_wait_broker (client, 10000);
    json_t *ids = json_array ();
    for (int i = 0; i < S_FINISHED; i++) {
        json_array_append_new (ids, json_integer (done_ids[i]));
    }
    for (int i = 0; i < S_PENDING; i++) {
        json_array_append_new (ids, json_integer (pending_ids[i]));
    }
    json_t *reply = gq_client_call (client, "STATUS", json_pack ("{s:o}", "ids", ids));
    CHECK (reply);
    CHECK_EQ (json_array_size (json_object_get (reply, "missing")), 0);
    json_t *listed = json_object_get (reply, "jobs");
    CHECK_EQ (json_array_size (listed), S_FINISHED + S_PENDING);
    for (size_t i = 0; i < json_array_size (listed); i++) {
        CHECK_STR (h_str (json_array_get (listed, i), "state"),
                   i < S_FINISHED ? "done" : "queued");
    }
    json_decref (reply);
    json_t *result = h_result (client, done_ids[S_FINISHED - 1]);
    CHECK (result);
    CHECK (json_equal (json_object_get (result, "result"), json_object_get (result, "payload")));
    json_decref (result);
    CHECK_EQ (h_sql_int (db, "select count(*) from jobs"), S_FINISHED + S_PENDING);

    /* The idem keys were committed with their jobs: repeats give the same ids. */
    int64_t again[S_PENDING];
    CHECK_EQ (gq_client_submit (client, jobs, false, again), 0);
    json_decref (jobs);
    for (int i = 0; i < S_PENDING; i += 2) {
        CHECK_EQ (again[i], pending_ids[i]);
    }
    /* The odd ones had no key: they are new jobs (and run too). */
    int64_t extra = 0;
    for (int i = 1; i < S_PENDING; i += 2) {
        CHECK (again[i] > pending_ids[S_PENDING - 1]);
        extra++;
    }

    /* A worker comes back: every queued job runs. */
    worker = h_start_worker (name, 1, NULL);
    CHECK_EQ (gq_client_wait (client, pending_ids, S_PENDING, 20000, s_check_echo, NULL), 0);
    CHECK_EQ (gq_client_wait (client, again, S_PENDING, 20000, s_check_echo, NULL), 0);
    CHECK_EQ (h_sql_settled (db, "select count(*) from jobs where state = 2",
                             S_FINISHED + S_PENDING + extra, 5000),
              S_FINISHED + S_PENDING + extra);
    CHECK_EQ (h_sql_int (db, "select count(*) from jobs"), S_FINISHED + S_PENDING + extra);
    h_kill (worker, SIGKILL);
    h_kill (broker, SIGKILL);
    printf ("durability %s: %d finished and %d acknowledged jobs survived SIGKILL\n", mode,
            S_FINISHED, S_PENDING);
}

int
main (void)
{
    h_init ("rel-durability", 60);
    gq_client_t *client = h_client (3000);
    s_round (client, "normal");
    s_round (client, "full");
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
