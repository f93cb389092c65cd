/*  test_reliability_pipeline.c — the broker is killed with SIGKILL in the middle of a 300-job,
    3-stage pipeline submitted as one request (issue 18) and restarted on the same store: every
    job ends done, with one successful run each, no job started before its parent's end was
    recorded, and each stage-2 job got its parent's result as its input.

    One SUBMIT of 300 named jobs: a0..a99 (stage 1), bj after_ok aj with "inputs": "after"
    (stage 2), cj after_ok bj (stage 3). Stages 1 and 2 are a handler that answers its payload
    after a moment (so stage 2's result shows the inputs it ran with); stage 3 is echo. Later
    stages have higher priorities, so a released child runs before the rest of stage 1 (depth
    first), and the broker is killed once 10 stage-2 jobs are done: stage-1 and stage-2 jobs are
    running, others waiting, some released. Two workers of 4 slots run them. */
#include <czmq.h>
#include <signal.h>

#include "harness.h"

#define S_WIDTH   100 /* jobs per stage */
#define S_STAGES  3
#define S_KILL_AT 10  /* stage-2 jobs done in the store when the broker is killed */

static pid_t s_broker;
static int64_t s_ids[S_STAGES * S_WIDTH];

static void
s_start_broker (void)
{
    s_broker = h_start_broker ("--heartbeat-ms", "250", "--liveness", "4", NULL);
}

/* The pipeline, stage by stage: job j of stage s is named "<a|b|c>j" and depends on job j of
   the stage before. */
static json_t *
s_pipeline (void)
{
    json_t *jobs = json_array ();
    for (int s = 0; s < S_STAGES; s++) {
        for (int j = 0; j < S_WIDTH; j++) {
            char name[16], parent[16];
            snprintf (name, sizeof name, "%c%d", 'a' + s, j);
            snprintf (parent, sizeof parent, "%c%d", 'a' + s - 1, j);
            json_t *job = json_pack ("{s:s, s:s, s:i, s:{s:i, s:i}}", "name", name, "kind",
                                     s < 2 ? "relay" : "echo", "priority", 5 + 2 * s, "payload",
                                     "stage", s + 1, "j", j);
            if (s > 0) {
                json_object_set_new (job, "after_ok", json_pack ("[s]", parent));
            }
            if (s == 1) {
                json_object_set_new (job, "inputs", json_string ("after"));
            }
            json_array_append_new (jobs, job);
        }
    }
    return jobs;
}

/* Jobs of stage (1..3) done in the store. */
static int64_t
s_done (int stage)
{
    char sql[200];
    snprintf (sql, sizeof sql, "select count(*) from jobs where state = 2 and id between %lld and "
              "%lld", (long long) s_ids[(stage - 1) * S_WIDTH],
              (long long) s_ids[stage * S_WIDTH - 1]);
    return h_sql_int (NULL, sql);
}

static bool
s_killable (void *arg)
{
    (void) arg;
    return s_done (2) >= S_KILL_AT;
}

int
main (void)
{
    h_init ("rel-pipeline", 80);
    s_start_broker ();
    h_start_worker ("w1", 4, "--handler", "relay=sleep 0.15; cat", NULL);
    h_start_worker ("w2", 4, "--handler", "relay=sleep 0.15; cat", NULL);
    gq_client_t *client = h_client (3000);
    h_wait_nodes (client, 2, 20000);
    json_t *jobs = s_pipeline ();
    CHECK_EQ (gq_client_submit (client, jobs, false, s_ids), 0); /* 300 jobs: one SUBMIT */
    json_decref (jobs);
    for (int i = 1; i < S_STAGES * S_WIDTH; i++) {
        CHECK_EQ (s_ids[i], s_ids[0] + i);
    }
    CHECK (h_wait_until (s_killable, NULL, 30000));
    h_kill (s_broker, SIGKILL);
    /* Mid-way: stage 1 and stage 2 had not ended (the store is still now). */
    int64_t done_at_kill[S_STAGES];
    for (int s = 0; s < S_STAGES; s++) {
        done_at_kill[s] = s_done (s + 1);
    }
    CHECK (done_at_kill[0] < S_WIDTH);
    CHECK (done_at_kill[1] >= S_KILL_AT && done_at_kill[1] < S_WIDTH);
    s_start_broker ();
    h_wait_broker (client, 10000);

    /* Everything ends, and ends done: no parent failed, so no child was cancelled. */
    h_sql_all_done (S_STAGES * S_WIDTH, (S_STAGES - 1) * S_WIDTH, 60000);
    /* One successful run per job: its one 'ok' row, or none when its first attempt succeeded
       (the job's row tells that one). A run the kill cut short is 'lost' (execution is at
       least once); no run failed. */
    CHECK_EQ (h_sql_int (NULL, H_SQL_RUN_TWICE), 0);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs j where attempts != 1 and not exists "
                               "(select 1 from attempts a where a.job_id = j.id and a.outcome = "
                               "'ok')"),
              0);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from attempts where outcome in ('failed', "
                               "'timeout')"),
              0);
    /* In order: no run of a child (its job row's, or any recorded attempt's) started before
       its parent's end was recorded. */
    CHECK_EQ (h_sql_int (NULL, H_SQL_CHILD_EARLY), 0);
    /* Each stage-2 job ran with its parent's result as its input (its result is the payload it
       ran with), under the parent's name; each result is its own job's. */
    CHECK_EQ (h_sql_int (NULL, "select count(*) from deps d join jobs c on c.id = d.child "
                               "join jobs p on p.id = d.parent where d.inputs = 1 and "
                               "json_extract(c.result, '$.inputs.' || d.name) = p.result and "
                               "json_extract(p.result, '$.stage') = 1 and "
                               "json_extract(p.result, '$.j') = json_extract(c.result, '$.j')"),
              S_WIDTH);
    char sql[300];
    snprintf (sql, sizeof sql, "select count(*) from jobs where id >= %lld and "
              "json_extract(result, '$.j') = (id - %lld) %% %d and json_extract(result, "
              "'$.stage') = (id - %lld) / %d + 1", (long long) s_ids[0], (long long) s_ids[0],
              S_WIDTH, (long long) s_ids[0], S_WIDTH);
    CHECK_EQ (h_sql_int (NULL, sql), S_STAGES * S_WIDTH);
    int64_t rows = h_sql_int (NULL, "select count(*) from attempts");
    int64_t lost = h_sql_int (NULL, "select count(*) from attempts where outcome = 'lost'");
    printf ("pipeline: %d jobs in %d stages in one request, %lld/%lld/%lld done at the kill, all "
            "done once after the restart, in order, with their inputs (%lld attempt rows, %lld "
            "runs lost with the broker)\n",
            S_STAGES * S_WIDTH, S_STAGES, (long long) done_at_kill[0],
            (long long) done_at_kill[1], (long long) done_at_kill[2], (long long) rows,
            (long long) lost);
    h_kill (s_broker, SIGKILL);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
