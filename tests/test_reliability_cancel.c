/*  test_reliability_cancel.c — cancelling a running job frees its slot at once: on a 1-slot
    worker a 30 s sleep is cancelled, and a new slot job then completes promptly. Also: a queued
    job is cancelled without running, and cancelling a finished job reports its final state. */
#include <czmq.h>

#include "harness.h"

int
main (void)
{
    h_init ("rel-cancel", 60);
    h_start_broker (NULL, NULL);
    gq_client_t *client = h_start_workers (1, 3000, "w1", NULL);

    /* A long job takes the only slot; a second waits behind it. */
    int64_t running = h_submit_sleep (client, 30000);
    CHECK (h_wait_state (client, running, "running", 5000));
    int64_t queued = h_submit_sleep (client, 30000);
    json_t *status = h_status (client, queued);
    CHECK_STR (h_str (status, "state"), "queued");
    json_decref (status);

    /* Cancel the queued one first: it never runs. */
    CHECK_STR (h_cancel (client, queued), "cancelled");

    /* Cancel the running one: its slot is free at once. The proof is the next job on the
       one-slot worker finishing long before the cancelled 30 s job could have ended. */
    CHECK_STR (h_cancel (client, running), "cancelled");
    int64_t next_id = h_submit_sleep (client, 20);
    CHECK (h_wait_state (client, next_id, "done", 5000));
    json_t *done = h_result (client, next_id);
    CHECK_STR (h_str (done, "node"), "w1");
    CHECK_EQ (h_int (done, "attempts"), 1);
    json_decref (done);

    /* STATUS and RESULT show the cancellation, with the attempt recorded as cancelled. */
    status = h_status (client, running);
    CHECK_STR (h_str (status, "state"), "cancelled");
    json_decref (status);
    json_t *result = h_result (client, running);
    CHECK_STR (h_str (result, "state"), "cancelled");
    CHECK (json_is_null (json_object_get (result, "result")));
    json_t *detail = json_object_get (result, "attempts_detail");
    CHECK_EQ (json_array_size (detail), 1);
    CHECK_STR (h_str (json_array_get (detail, 0), "outcome"), "cancelled");
    CHECK_STR (h_str (json_array_get (detail, 0), "node"), "w1");
    json_decref (result);
    result = h_result (client, queued);
    CHECK_STR (h_str (result, "state"), "cancelled");
    CHECK_EQ (json_array_size (json_object_get (result, "attempts_detail")), 0);
    json_decref (result);

    /* Cancelling what has ended changes nothing and says the final state. */
    CHECK_STR (h_cancel (client, next_id), "done");
    CHECK_STR (h_cancel (client, running), "cancelled");
    json_t *reply = gq_client_call (client, "CANCEL", json_pack ("{s:[i]}", "ids", 999999));
    CHECK (reply);
    CHECK_EQ (json_array_size (json_object_get (reply, "missing")), 1);
    json_decref (reply);

    /* The worker's view: nothing left running there (its slot thread stopped the sleep). */
    json_t *node = h_node (client, "w1");
    CHECK_EQ (h_int (node, "running"), 0);
    json_decref (node);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs where state = 4"), 2);

    printf ("cancel: the next job ran at once after cancelling a 30 s job\n");
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
