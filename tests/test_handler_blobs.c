/*  test_handler_blobs.c — a job's binary blobs reach an external handler, end to end: a client
    submits a job with two blob frames to a kind that a worker serves with --handler; the broker
    stores them and hands them to the worker, which writes them to files in GRIDQ_BLOB_DIR for
    the command; the result shows that the command read both, byte for byte. */
#include <czmq.h>

#include "harness.h"

/* The handler: the blob count, the text of blob 0, the size of blob 1 (binary, with NULs). */
#define S_HANDLER                                                                              \
    "sizes=printf '{\"count\": %s, \"first\": \"%s\", \"bytes\": %s}' \"$GRIDQ_BLOBS\" "         \
    "\"$(cat \"$GRIDQ_BLOB_DIR/0\")\" \"$(wc -c < \"$GRIDQ_BLOB_DIR/1\")\""

static int
s_on_finished (void *arg, json_t *job)
{
    json_t **finished = (json_t **) arg;
    *finished = json_incref (job);
    return 0;
}

int
main (void)
{
    h_init ("handler_blobs", 60);
    h_require ("gridq-broker");
    h_require ("gridq-worker");
    h_start_broker (NULL, NULL);
    h_start_worker ("w-handler", 1, "--handler", S_HANDLER, NULL);
    gq_client_t *client = h_client (5000);
    h_wait_nodes (client, 1, 20000);

    /* Two blob frames: text, then binary with NULs. */
    json_t *submit =
        json_pack ("{s:s, s:{s:{s:i}}}", "kind", "sizes", "payload", "image", "blob", 1);
    unsigned char binary[1000];
    for (size_t i = 0; i < sizeof binary; i++) {
        binary[i] = (unsigned char) (i % 7 == 0 ? 0 : i);
    }
    zframe_t *blobs[2] = {zframe_new ("hello", 5), zframe_new (binary, sizeof binary)};
    int64_t id = h_submit_blobs (client, submit, blobs, 2);
    json_decref (submit);

    json_t *job = NULL;
    CHECK_EQ (gq_client_wait (client, &id, 1, 20000, s_on_finished, &job), 0);
    CHECK (job);
    const char *error = json_string_value (json_object_get (job, "error"));
    if (error) {
        fprintf (stderr, "job %lld failed: %s\n", (long long) id, error);
    }
    CHECK_STR (json_string_value (json_object_get (job, "state")), "done");
    json_t *result = json_object_get (job, "result");
    CHECK_EQ (json_integer_value (json_object_get (result, "count")), 2);
    CHECK_STR (json_string_value (json_object_get (result, "first")), "hello");
    CHECK_EQ (json_integer_value (json_object_get (result, "bytes")), sizeof binary);
    json_decref (job);
    gq_client_destroy (&client);
    printf ("handler blobs: job %lld read both blobs through GRIDQ_BLOB_DIR\n", (long long) id);
    h_cleanup ();
    return 0;
}
