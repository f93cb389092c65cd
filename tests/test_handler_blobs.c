/*  test_handler_blobs.c — a job's binary blobs reach an external handler, end to end: a client
    submits a job with two blob frames to a kind that a worker serves with --handler; the broker
    stores them and hands them to the worker, which writes them to files in GRIDQ_BLOB_DIR for
    the command; the result shows that the command read both, byte for byte. */
#include <czmq.h>

#include "gq_msg.h"
#include "harness.h"

#define S_REQ 900001 /* our SUBMIT's correlation id, far above the client's own */

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

    /* SUBMIT with blob frames: the client API sends JSON only, so the message is built here. */
    json_t *body = json_pack ("{s:i, s:[{s:s, s:[i, i], s:{s:{s:i}}}]}", "req", S_REQ, "jobs",
                              "kind", "sizes", "blobs", 0, 2, "payload", "image", "blob", 1);
    gq_msg_t *msg = gq_msg_new (GQ_ROLE_CLIENT, "SUBMIT", body);
    CHECK (msg);
    zframe_t *text = zframe_new ("hello", 5);
    unsigned char binary[1000];
    for (size_t i = 0; i < sizeof binary; i++) {
        binary[i] = (unsigned char) (i % 7 == 0 ? 0 : i);
    }
    zframe_t *data = zframe_new (binary, sizeof binary);
    CHECK_EQ (gq_msg_add_blob (msg, &text), 0);
    CHECK_EQ (gq_msg_add_blob (msg, &data), 0);
    CHECK_EQ (gq_msg_send (&msg, gq_client_socket (client)), 0);
    char command[32];
    int64_t req = 0;
    json_t *reply = NULL;
    CHECK_EQ (gq_client_recv (client, 5000, command, &req, &reply, NULL), 0);
    CHECK_EQ (req, S_REQ);
    CHECK_STR (command, "SUBMIT");
    int64_t id = (int64_t) json_integer_value (json_array_get (json_object_get (reply, "ids"), 0));
    CHECK (id > 0);
    json_decref (reply);

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
