/*  test_reliability_idem.c — a repeated idempotency key gives one job: the same id, one row in
    the store, one run. Repeats come one by one, inside one batch, from a second client, after
    the job finished, and with a different payload (the first job wins). */
#include <czmq.h>

#include "harness.h"

static int64_t
s_submit_idem (gq_client_t *client, const char *idem, int n)
{
    json_t *job = json_pack ("{s:s, s:s, s:{s:i}}", "kind", "sleep", "idem", idem, "payload",
                             "ms", n);
    int64_t id = h_submit (client, job);
    json_decref (job);
    return id;
}

int
main (void)
{
    h_init ("rel-idem", 60);
    h_start_broker (NULL, NULL);
    gq_client_t *client = h_start_workers (1, 3000, "w1", NULL);
    gq_client_t *other = h_client (3000);

    /* The same key, again and again, while the job runs: one id. */
    int64_t id = s_submit_idem (client, "order-42", 300);
    CHECK_EQ (s_submit_idem (client, "order-42", 300), id);
    CHECK_EQ (s_submit_idem (other, "order-42", 300), id);
    /* A different payload under the same key still names the first job. */
    CHECK_EQ (s_submit_idem (client, "order-42", 7), id);

    /* Within one batch, and mixed with a new key. */
    json_t *batch = json_pack ("[{s:s, s:s, s:{s:i}}, {s:s, s:s, s:{s:i}}, {s:s, s:s, s:{s:i}}]",
                               "kind", "sleep", "idem", "order-42", "payload", "ms", 300,
                               "kind", "sleep", "idem", "order-43", "payload", "ms", 10,
                               "kind", "sleep", "idem", "order-43", "payload", "ms", 10);
    int64_t ids[3] = {0, 0, 0};
    CHECK_EQ (gq_client_submit (client, batch, false, ids), 0);
    json_decref (batch);
    CHECK_EQ (ids[0], id);
    CHECK (ids[1] > id);
    CHECK_EQ (ids[2], ids[1]);

    /* Once finished, a repeat still gives the same id and does not run it again. */
    CHECK (h_wait_state (client, id, "done", 10000));
    CHECK (h_wait_state (client, ids[1], "done", 10000));
    json_t *before = h_result (client, id);
    CHECK_EQ (s_submit_idem (client, "order-42", 300), id);
    CHECK_EQ (s_submit_idem (other, "order-43", 10), ids[1]);
    /* A non-idem job behind them: when it is done, a repeat that was wrongly queued would have
       had its chance to run on the one slot. */
    int64_t last = h_submit_sleep (client, 10);
    CHECK (h_wait_state (client, last, "done", 10000));
    json_t *after = h_result (client, id);
    CHECK_STR (h_str (after, "state"), "done");
    CHECK_EQ (h_int (after, "attempts"), 1);
    CHECK_STR (h_str (after, "finished_at"), h_str (before, "finished_at"));
    CHECK_EQ (json_array_size (json_object_get (after, "attempts_detail")), 1);
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (after, "payload"), "ms")),
              300);
    CHECK_STR (h_str (after, "idem"), "order-42");
    json_decref (before);
    json_decref (after);

    /* The store: one row per key, three jobs in all, each done once: no attempt but a first
       one that succeeded (a quick one is told by the job's row alone; one that lasted, like the
       300 ms job, by a row recorded while it ran, then ended ok). */
    CHECK_EQ (h_sql_settled (NULL, "select count(*) from jobs where state = 2", 3, 5000), 3);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs where idem_key = 'order-42'"), 1);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs where idem_key = 'order-43'"), 1);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs"), 3);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from attempts where attempt != 1 or outcome != 'ok'"),
              0);
    json_t *stats = gq_client_call (client, "STATS", NULL);
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (stats, "jobs"), "done")), 3);
    json_decref (stats);
    json_t *node = h_node (client, "w1");
    CHECK_EQ (h_int (node, "jobs_ok"), 3);
    json_decref (node);

    printf ("idem: 8 submissions of 2 keys gave jobs %lld and %lld, each run once\n",
            (long long) id, (long long) ids[1]);
    gq_client_destroy (&other);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
