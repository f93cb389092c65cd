/*  test_reliability_deps.c — the broker is killed with SIGKILL in the middle of a 3-stage chain
    (issue 18) and restarted on the same store: every job ends done, its result recorded once,
    and no job ever started (any of its runs) before its parent's end was recorded.

    Stage 1 is 50 sleep jobs; stage 2 is 50 sleep jobs, job j after_ok stage 1's job j; stage 3
    is 50 echo jobs after_ok stage 2's. Two workers of 4 slots run them. The broker is killed
    once 10 jobs are done, so that parents are running, children waiting, and others released;
    the restarted broker rebuilds the waiting jobs and the index from the store. */
#include <czmq.h>
#include <signal.h>

#include "harness.h"

#define S_WIDTH   50 /* jobs per stage */
#define S_STAGES  3
#define S_KILL_AT 10 /* jobs done in the store when the broker is killed */

static pid_t s_broker;

static void
s_start_broker (void)
{
    s_broker = h_start_broker ("--heartbeat-ms", "250", "--liveness", "4", NULL);
}

/* Stage stage's jobs, job j after_ok parents[j] (NULL for the first stage). */
static void
s_stage (gq_client_t *client, int stage, const int64_t *parents, int64_t *ids)
{
    json_t *jobs = json_array ();
    for (int j = 0; j < S_WIDTH; j++) {
        json_t *job = stage < S_STAGES - 1
                          ? json_pack ("{s:s, s:{s:i, s:i, s:i}}", "kind", "sleep", "payload", "ms",
                                       60 + 10 * (j % 5), "stage", stage, "j", j)
                          : json_pack ("{s:s, s:{s:i, s:i}}", "kind", "echo", "payload", "stage",
                                       stage, "j", j);
        if (parents) {
            json_object_set_new (job, "after_ok", json_pack ("[I]", (json_int_t) parents[j]));
        }
        json_array_append_new (jobs, job);
    }
    CHECK_EQ (gq_client_submit (client, jobs, false, ids), 0);
    json_decref (jobs);
}

static bool
s_killable (void *arg)
{
    (void) arg;
    return h_sql_int (NULL, "select count(*) from jobs where state = 2") >= S_KILL_AT;
}

int
main (void)
{
    h_init ("rel-deps", 80);
    s_start_broker ();
    gq_client_t *client =
        h_start_workers (4, 3000, "w1", "w2", NULL); /* waits for both to register */
    int64_t ids[S_STAGES][S_WIDTH];
    s_stage (client, 0, NULL, ids[0]);
    s_stage (client, 1, ids[0], ids[1]);
    s_stage (client, 2, ids[1], ids[2]);
    CHECK (h_wait_until (s_killable, NULL, 20000));
    h_kill (s_broker, SIGKILL);
    int64_t done_at_kill = h_sql_int (NULL, "select count(*) from jobs where state = 2");
    CHECK (done_at_kill < S_STAGES * S_WIDTH); /* mid-chain: not all of it ran */
    s_start_broker ();
    h_wait_broker (client, 10000);

    /* Everything ends, and ends done: no parent failed, so no child was cancelled. */
    h_sql_all_done (S_STAGES * S_WIDTH, (S_STAGES - 1) * S_WIDTH, 60000);
    /* Each result recorded once: at most one successful run per job. */
    CHECK_EQ (h_sql_int (NULL, H_SQL_RUN_TWICE), 0);
    /* In order: no run of a child (its job row's, or any recorded attempt's) started before
       its parent's end was recorded. */
    CHECK_EQ (h_sql_int (NULL, H_SQL_CHILD_EARLY), 0);
    /* Every job's result is its own (echo of stage 3 names its own index). */
    for (int j = 0; j < S_WIDTH; j++) {
        json_t *job = h_status (client, ids[2][j]);
        CHECK_STR (h_str (job, "state"), "done");
        CHECK_EQ (h_int (json_object_get (job, "result"), "j"), j);
        json_decref (job);
    }
    int64_t runs = h_sql_int (NULL, "select count(*) from attempts");
    printf ("deps: %d jobs in %d stages, %lld done at the kill, all done after the restart in "
            "order (%lld attempt rows)\n",
            S_STAGES * S_WIDTH, S_STAGES, (long long) done_at_kill, (long long) runs);
    h_kill (s_broker, SIGKILL);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
