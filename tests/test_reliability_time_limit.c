/*  test_reliability_time_limit.c — a per-attempt time limit reaches the worker: a 5 s sleep with
    a 300 ms limit and max_attempts 1 fails with the timeout reason well before 5 s, and the
    worker's only slot is free again (a following slot job runs at once). Both the limit given
    as timeout_ms and as a time_limit string are checked. */
#include <czmq.h>

#include "harness.h"

/* Submits a 5 s sleep with the given limit field, waits for it to fail, checks the record.
   Returns how long the failure took, in ms. */
static int64_t
s_timed_out (gq_client_t *client, json_t *limit_fields)
{
    json_t *job = json_pack ("{s:s, s:{s:i}, s:i}", "kind", "sleep", "payload", "ms", 5000,
                             "max_attempts", 1);
    json_object_update (job, limit_fields);
    int64_t t0 = gq_mono_us ();
    int64_t id = h_submit (client, job);
    json_decref (job);
    if (!h_wait_state (client, id, "failed", 4000)) {
        json_t *status = h_status (client, id);
        fprintf (stderr, "job %lld did not fail within 4 s; state %s\n", (long long) id,
                 h_str (status, "state"));
        json_decref (status);
        h_fail ();
    }
    int64_t took_ms = (gq_mono_us () - t0) / 1000;
    json_t *result = h_result (client, id);
    CHECK (result);
    CHECK_EQ (h_int (result, "attempts"), 1);
    CHECK_STR (h_str (result, "node"), "w1");
    const char *error = h_str (result, "error");
    /* The broker's limit says "time limit of 300 ms exceeded"; the worker's own deadline says
       "timed out after 300 ms". Whichever comes first is the recorded reason. */
    if (!strstr (error, "time limit") && !strstr (error, "timed out")) {
        fprintf (stderr, "error \"%s\" does not name the time limit\n", error);
        h_fail ();
    }
    json_t *detail = json_object_get (result, "attempts_detail");
    CHECK_EQ (json_array_size (detail), 1);
    const char *outcome = h_str (json_array_get (detail, 0), "outcome");
    /* The protocol's outcome for an attempt stopped by its limit is "timeout". */
    CHECK_STR (outcome, "timeout");
    json_decref (result);
    return took_ms;
}

/* A short slot job (not echo: echo runs inline and needs no slot) must run promptly. */
static void
s_slot_free (gq_client_t *client)
{
    /* Done within a wait shorter than the 5 s job that timed out: its slot was freed. */
    int64_t id = h_submit_sleep (client, 20);
    CHECK (h_wait_state (client, id, "done", 4000));
}

int
main (void)
{
    h_init ("rel-time-limit", 60);
    h_start_broker (NULL, NULL);
    gq_client_t *client = h_start_workers (1, 3000, "w1", NULL);

    json_t *by_ms = json_pack ("{s:i}", "timeout_ms", 300);
    int64_t took1 = s_timed_out (client, by_ms);
    json_decref (by_ms);
    CHECK (took1 < 2500);
    s_slot_free (client);

    json_t *by_text = json_pack ("{s:s}", "time_limit", "300ms");
    int64_t took2 = s_timed_out (client, by_text);
    json_decref (by_text);
    CHECK (took2 < 2500);
    s_slot_free (client);

    /* The broker's view agrees: nothing running, the node has its slot back. */
    json_t *node = h_node (client, "w1");
    CHECK_EQ (h_int (node, "running"), 0);
    json_decref (node);

    printf ("time_limit: failed after %lld and %lld ms; slot free after each\n",
            (long long) took1, (long long) took2);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
