/*  test_reliability_runs.c — every run that executed is in the history after a broker SIGKILL.
    Two workers run jobs whose handler writes a line for its run (job, attempt, a random token)
    before it works, then returns the token. The broker is killed while runs are going (some of
    them recorded "running", some too young to be) and restarted on the same store: the workers
    register again with the runs they still have, and report the results they kept. Then every
    job is done once, with the token of one of its own runs, no run is left "running", and every
    run a worker executed appears in the store (an attempt row, or the job's own row for a first
    attempt that succeeded quickly). */
#include <czmq.h>
#include <signal.h>

#include "harness.h"

#define S_JOBS   40
#define S_KILL_AT 10 /* jobs done when the broker is killed */

static bool
s_enough_done (void *arg)
{
    char sql[64];
    snprintf (sql, sizeof sql, "select count(*) >= %d from jobs where state = 2", S_KILL_AT);
    return h_sql_int (NULL, sql) == 1;
}

int
main (void)
{
    h_init ("rel-runs", 90);
    char handler[600];
    snprintf (handler, sizeof handler,
              "token=t=$(od -An -N8 -tx8 /dev/urandom | tr -d ' '); "
              "echo \"$GRIDQ_JOB_ID $GRIDQ_ATTEMPT $t\" >> %s/runs.log; sleep 0.3; "
              "echo \"{\\\"token\\\": \\\"$t\\\"}\"",
              h_dir ());
    pid_t broker = h_start_broker ("--heartbeat-ms", "200", "--liveness", "3", NULL);
    h_start_worker ("w1", 4, "--handler", handler, NULL);
    h_start_worker ("w2", 4, "--handler", handler, NULL);
    gq_client_t *client = h_client (3000);
    h_wait_nodes (client, 2, 20000);

    json_t *jobs = json_array ();
    for (int i = 0; i < S_JOBS; i++) {
        json_array_append_new (jobs, json_pack ("{s:s, s:{s:i}}", "kind", "token", "payload",
                                                "i", i));
    }
    int64_t ids[S_JOBS];
    CHECK_EQ (gq_client_submit (client, jobs, false, ids), 0);
    json_decref (jobs);
    CHECK (h_wait_until (s_enough_done, NULL, 20000));
    h_kill (broker, SIGKILL);
    h_start_broker ("--heartbeat-ms", "200", "--liveness", "3", NULL);
    CHECK_EQ (gq_client_wait (client, ids, S_JOBS, 30000, NULL, NULL), 0);

    /* The runs the workers executed: "job attempt token" lines. */
    char path[300];
    snprintf (path, sizeof path, "%s/runs.log", h_dir ());
    FILE *file = fopen (path, "r");
    CHECK (file);
    int runs[S_JOBS] = {0}, total = 0;
    char tokens[S_JOBS][8][20];
    long long job;
    int attempt;
    char token[20];
    while (fscanf (file, "%lld %d %19s", &job, &attempt, token) == 3) {
        int j = (int) (job - ids[0]);
        CHECK (j >= 0 && j < S_JOBS);
        if (runs[j] < 8) {
            snprintf (tokens[j][runs[j]], sizeof tokens[j][0], "%s", token);
        }
        runs[j]++;
        total++;
    }
    fclose (file);

    int twice = 0;
    for (int j = 0; j < S_JOBS; j++) {
        json_t *result = h_result (client, ids[j]);
        CHECK_STR (h_str (result, "state"), "done");
        const char *got = h_str (json_object_get (result, "result"), "token");
        bool own = false;
        for (int r = 0; r < runs[j] && r < 8; r++) {
            own = own || streq (got, tokens[j][r]);
        }
        if (!own) {
            fprintf (stderr, "job %lld: result token %s is none of its %d runs'\n",
                     (long long) ids[j], got, runs[j]);
            h_fail ();
        }
        /* Recorded runs: its attempt rows, and its own row for a quick first success. */
        char sql[200];
        snprintf (sql, sizeof sql,
                  "select count(*) + (sum(outcome = 'ok') is not 1) from attempts "
                  "where job_id = %lld",
                  (long long) ids[j]);
        int64_t recorded = h_sql_settled (NULL, sql, runs[j], 5000);
        if (recorded < runs[j]) {
            fprintf (stderr, "job %lld ran %d times; the store records %lld runs\n",
                     (long long) ids[j], runs[j], (long long) recorded);
            h_fail ();
        }
        twice += runs[j] > 1;
        json_decref (result);
    }
    CHECK_EQ (h_sql_int (NULL, "select count(*) from attempts where outcome = 'running'"), 0);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs where state = 2"), S_JOBS);

    printf ("runs: %d jobs done once after a broker SIGKILL; %d runs executed (%d jobs ran more "
            "than once), every one recorded\n",
            S_JOBS, total, twice);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
