/*  test_reliability_ids.c — a job id is never handed out twice. The broker may dispatch a job
    before its batch is committed, so it keeps a committed next_job_id ahead of the ids it gives:
    after SIGKILL a restarted broker starts there (a gap, never a repeat of an id a worker may
    have run); after a clean stop it goes on from where it stopped. */
#include <czmq.h>
#include <signal.h>

#include "harness.h"

static int64_t
s_echo (gq_client_t *client, int n)
{
    json_t *job = json_pack ("{s:s, s:{s:i}}", "kind", "echo", "payload", "n", n);
    int64_t id = h_submit (client, job);
    json_decref (job);
    CHECK (id > 0);
    return id;
}

int
main (void)
{
    h_init ("rel-ids", 60);
    gq_client_t *client = h_client (3000);
    char db[300];
    snprintf (db, sizeof db, "%s/ids.db", h_dir ());
    pid_t broker = h_start_broker ("--db", db, NULL);
    h_wait_broker (client, 10000);

    /* No worker: the jobs stay queued. Ids follow each other. */
    int64_t a = s_echo (client, 1);
    int64_t b = s_echo (client, 2);
    CHECK_EQ (b, a + 1);
    /* Acknowledged, so its batch is committed, and with it a next_job_id ahead of b. */
    int64_t mark = h_sql_int (db, "select value from meta where key = 'next_job_id'");
    CHECK (mark > b);

    /* SIGKILL: the restarted broker starts at the committed mark, past every id it may have
       dispatched. */
    h_kill (broker, SIGKILL);
    broker = h_start_broker ("--db", db, NULL);
    h_wait_broker (client, 10000);
    int64_t c = s_echo (client, 3);
    CHECK_EQ (c, mark);
    CHECK (h_sql_int (db, "select value from meta where key = 'next_job_id'") > c);

    /* A clean stop records where it stopped: no gap. */
    h_kill (broker, SIGTERM);
    broker = h_start_broker ("--db", db, NULL);
    h_wait_broker (client, 10000);
    int64_t d = s_echo (client, 4);
    CHECK_EQ (d, c + 1);

    /* Every one of them is still there, queued. */
    int64_t ids[] = {a, b, c, d};
    for (size_t i = 0; i < 4; i++) {
        CHECK (h_wait_state (client, ids[i], "queued", 1000));
    }
    CHECK_EQ (h_sql_int (db, "select count(*) from jobs where state = 0"), 4);
    h_kill (broker, SIGKILL);
    printf ("ids: %lld %lld, then %lld after SIGKILL, %lld after a clean stop\n", (long long) a,
            (long long) b, (long long) c, (long long) d);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
