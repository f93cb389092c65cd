/*  test_reliability_retention.c — a broker with --retention 1s purges finished jobs at its
    periodic retention run (every 10 s, so this test takes about 11 s): STATUS reports them
    missing, RESULT says NOT_FOUND, the rows and their attempts are gone from the store, STATS
    counts agree. Jobs not finished stay, whatever their age, and so does the newest job (the
    store keeps the largest id so that SQLite never hands it out again). */
#include <czmq.h>

#include "harness.h"

#define S_DONE 5

int
main (void)
{
    h_init ("rel-retention", 60);
    h_start_broker ("--retention", "1s", NULL);
    gq_client_t *client = h_start_workers (1, 3000, "w1", NULL);

    /* A job no node can run: it stays queued, older than the retention. */
    json_t *stuck = json_pack ("{s:s}", "kind", "nosuchkind");
    int64_t queued = h_submit (client, stuck);
    json_decref (stuck);

    /* Finished jobs, then the newest one. */
    json_t *jobs = h_echo_jobs (S_DONE + 1);
    int64_t ids[S_DONE + 1];
    CHECK_EQ (gq_client_submit (client, jobs, false, ids), 0);
    json_decref (jobs);
    CHECK_EQ (gq_client_wait (client, ids, S_DONE + 1, 10000, NULL, NULL), 0);
    int64_t newest = ids[S_DONE];
    CHECK_EQ (h_sql_settled (NULL, "select count(*) from jobs where state = 2", S_DONE + 1, 5000),
              S_DONE + 1);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs"), S_DONE + 2);
    /* First attempts that succeeded have no rows of their own (the job's row tells them). */
    CHECK_EQ (h_sql_int (NULL, "select count(*) from attempts"), 0);

    /* The retention run comes within 10 s (plus a margin); the jobs are then missing. */
    int64_t t0 = gq_mono_us ();
    for (int i = 0; i < S_DONE; i++) {
        if (!h_wait_state (client, ids[i], "missing", 15000)) {
            fprintf (stderr, "job %lld was not purged within 15 s\n", (long long) ids[i]);
            h_fail ();
        }
    }
    int64_t waited_ms = (gq_mono_us () - t0) / 1000;
    json_t *reply = gq_client_call (client, "RESULT", json_pack ("{s:I}", "id",
                                                                 (json_int_t) ids[0]));
    CHECK (!reply);
    CHECK_EQ (gq_client_errcode (client), GQ_ENOTFOUND);
    json_t *status = h_status (client, queued);
    CHECK_STR (h_str (status, "state"), "queued");
    json_decref (status);
    status = h_status (client, newest);
    CHECK_STR (h_str (status, "state"), "done");
    json_decref (status);

    /* The store: the queued job and the newest job, whose one attempt RESULT still shows. */
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs"), 2);
    json_t *newest_job = h_result (client, newest);
    CHECK (newest_job);
    CHECK_EQ (json_array_size (json_object_get (newest_job, "attempts_detail")), 1);
    json_decref (newest_job);
    json_t *stats = gq_client_call (client, "STATS", NULL);
    CHECK (stats);
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (stats, "jobs"), "done")), 1);
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (stats, "jobs"), "queued")), 1);
    json_decref (stats);

    printf ("retention: %d finished jobs purged %lld ms after they were due\n", S_DONE,
            (long long) waited_ms);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
