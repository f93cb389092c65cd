/*  test_reliability_arrays.c — the broker is killed with SIGKILL in the middle of an array
    (issue 18) and restarted on the same store: every element ends done exactly once (one job
    row each, one successful run each, its own index), the array keeps its limit among the runs
    the restarted broker starts, and a job after_ok on the array runs after all of it.

    The array is 0-299%6 of sleep jobs (two workers of 4 slots: the limit, not the fleet, holds
    them back). The broker is killed once 60 elements are done, so that elements are running,
    admitted and held; the restarted broker rebuilds the array and its limit from the store. */
#include <czmq.h>
#include <signal.h>

#include "harness.h"

#define S_COUNT   300 /* elements */
#define S_LIMIT   6   /* %K */
#define S_KILL_AT 60  /* elements done in the store when the broker is killed */

static pid_t s_broker;

static void
s_start_broker (void)
{
    s_broker = h_start_broker ("--heartbeat-ms", "250", "--liveness", "4", NULL);
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
    h_init ("rel-arrays", 80);
    s_start_broker ();
    gq_client_t *client = h_start_workers (4, 3000, "w1", "w2", NULL);
    json_t *jobs = json_pack ("[{s:s, s:s, s:{s:i}}]", "kind", "sleep", "array", "0-299%6",
                              "payload", "ms", 20);
    int64_t array;
    CHECK_EQ (gq_client_submit (client, jobs, false, &array), 0);
    json_decref (jobs);
    jobs = json_pack ("[{s:s, s:{s:b}, s:[I]}]", "kind", "echo", "payload", "after", 1,
                      "after_ok", (json_int_t) array);
    int64_t child;
    CHECK_EQ (gq_client_submit (client, jobs, false, &child), 0);
    json_decref (jobs);
    CHECK (h_wait_until (s_killable, NULL, 20000));
    h_kill (s_broker, SIGKILL);
    int64_t done_at_kill = h_sql_int (NULL, "select count(*) from jobs where state = 2");
    CHECK (done_at_kill < S_COUNT); /* mid-array */
    int64_t restarted_ms = (int64_t) zclock_time ();
    s_start_broker ();
    h_wait_broker (client, 10000);

    h_sql_all_done (S_COUNT + 1, 1, 60000); /* the elements, the child and its one edge */
    char sql[1024];
    /* One row per element, each done, its payload its own index. */
    snprintf (sql, sizeof sql,
              "select count(*) from jobs where id between %lld and %lld and state = 2 and "
              "json_extract(payload, '$.array_index') = id - %lld",
              (long long) array + 1, (long long) array + S_COUNT, (long long) array + 1);
    CHECK_EQ (h_sql_int (NULL, sql), S_COUNT);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from arrays"), 1);
    /* Each result recorded once: at most one successful run per element. */
    CHECK_EQ (h_sql_int (NULL, H_SQL_RUN_TWICE), 0);
    /* The child ran after every element ended. */
    snprintf (sql, sizeof sql,
              "select count(*) from jobs e, jobs c where c.id = %lld and e.id between %lld and "
              "%lld and (c.started_at is null or c.started_at < e.finished_at)",
              (long long) child, (long long) array + 1, (long long) array + S_COUNT);
    CHECK_EQ (h_sql_int (NULL, sql), 0);
    /* Runs the restarted broker started (runs a worker kept through the restart count from
       when the broker took them over) never exceed the limit. */
    snprintf (sql, sizeof sql,
              "with runs (s, e) as (select started_at, finished_at from attempts where job_id "
              "between %lld and %lld and started_at > %lld union all select started_at, "
              "finished_at from jobs j where id between %lld and %lld and started_at > %lld and "
              "not exists (select 1 from attempts a where a.job_id = j.id)) select "
              "coalesce(max(c), 0) from (select (select count(*) from runs b where b.s <= a.s "
              "and b.e > a.s) c from runs a)",
              (long long) array + 1, (long long) array + S_COUNT, (long long) restarted_ms,
              (long long) array + 1, (long long) array + S_COUNT, (long long) restarted_ms);
    int64_t peak = h_sql_int (NULL, sql);
    CHECK (peak <= S_LIMIT);
    printf ("arrays: %d elements, %lld done at the kill, all done once after the restart (peak "
            "%lld running after it, limit %d)\n",
            S_COUNT, (long long) done_at_kill, (long long) peak, S_LIMIT);
    h_kill (s_broker, SIGKILL);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
