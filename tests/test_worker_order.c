/*  test_worker_order.c — the worker's side of prefetch, against a fake broker (a raw ROUTER
    socket in this test), so every broker message is the test's and the outcome exact: a real
    gridq-worker with one slot and a handler kind "gate" that waits for a file.
    (1) Jobs past the free slot wait on the worker; a free slot takes the first of the highest
        priority: job 1 (priority 0) holds the slot; jobs 2, 3 (priority 0) and then 4
        (priority 9) come; once the gate opens they end 1, 4, 2, 3.
    (2) RECALL gives back what has not started: with job 5 in the slot and 6 waiting, RECALL of
        5 and 6 answers RECALLED [6]; 6 never runs, 5 ends as usual. */
#include <czmq.h>

#include "harness.h"

/* Sends one gate job. */
static void
s_job (zsock_t *router, zframe_t *worker, int id, int priority)
{
    char job[300];
    snprintf (job, sizeof job,
              "{\"jobs\":[{\"id\":%d,\"attempt\":1,\"kind\":\"gate\",\"model\":null,"
              "\"timeout_ms\":0,\"priority\":%d,\"payload\":{}}]}",
              id, priority);
    h_fake_send (router, worker, "JOB", job);
}

/* Makes sure the worker read everything sent so far: a HEARTBEAT's answer comes behind it. */
static void
s_sync (zsock_t *router, zframe_t *worker, int t)
{
    char beat[64], command[32];
    snprintf (beat, sizeof beat, "{\"t\":%d}", t);
    h_fake_send (router, worker, "HEARTBEAT", beat);
    json_t *body = h_fake_next (router, &worker, command);
    CHECK_STR (command, "HEARTBEAT");
    CHECK_EQ (h_int (body, "echo"), t);
    json_decref (body);
}

/* Reads RESULT messages until n entries came; their ids in order into ids. */
static void
s_results (zsock_t *router, zframe_t *worker, int64_t *ids, int n)
{
    int got = 0;
    char command[32];
    while (got < n) {
        json_t *body = h_fake_next (router, &worker, command);
        if (streq (command, "RESULT")) {
            size_t i;
            json_t *entry;
            json_array_foreach (json_object_get (body, "results"), i, entry) {
                CHECK (json_is_true (json_object_get (entry, "ok")));
                CHECK (got < n);
                ids[got++] = h_int (entry, "id");
            }
        }
        json_decref (body);
    }
}

int
main (void)
{
    h_init ("worker_order", 60);
    h_require ("gridq-worker");
    zsock_t *router = h_fake_broker ();
    char open_path[600], gate[1400];
    snprintf (open_path, sizeof open_path, "%s/open", h_dir ());
    snprintf (gate, sizeof gate,
              "gate=while [ ! -e %s ]; do [ -d %s ] || exit 1; sleep 0.01; done; echo '{}'",
              open_path, h_dir ());
    h_start_worker ("wo", 1, "--handler", gate, NULL);

    zframe_t *worker = h_fake_welcome (router, "wo");
    char command[32];
    json_t *body;

    /* (1) 1 takes the slot; 2, 3 and then 4 (priority 9) wait; the gate opens. */
    s_job (router, worker, 1, 0);
    s_job (router, worker, 2, 0);
    s_job (router, worker, 3, 0);
    s_job (router, worker, 4, 9);
    s_sync (router, worker, 1);
    FILE *f = fopen (open_path, "w");
    CHECK (f);
    fclose (f);
    int64_t ids[4];
    s_results (router, worker, ids, 4);
    CHECK_EQ (ids[0], 1);
    CHECK_EQ (ids[1], 4);
    CHECK_EQ (ids[2], 2);
    CHECK_EQ (ids[3], 3);
    printf ("worker_order: 1, then 4 (priority 9), then 2 and 3\n");

    /* (2) RECALL: 5 holds the slot (the gate closed again), 6 waits. */
    unlink (open_path);
    s_job (router, worker, 5, 0);
    s_job (router, worker, 6, 0);
    s_sync (router, worker, 2);
    h_fake_send (router, worker, "RECALL", "{\"ids\":[5,6,99]}");
    body = h_fake_next (router, &worker, command);
    CHECK_STR (command, "RECALLED");
    char *text = json_dumps (json_object_get (body, "ids"), JSON_COMPACT);
    CHECK_STR (text, "[6]");
    free (text);
    json_decref (body);
    f = fopen (open_path, "w");
    CHECK (f);
    fclose (f);
    s_results (router, worker, ids, 1);
    CHECK_EQ (ids[0], 5);
    /* Nothing more: 6 is gone (a HEARTBEAT's answer is the next message). */
    s_sync (router, worker, 3);
    printf ("worker_order: RECALL gave back 6, which had not started, and 5 ended as usual\n");

    zframe_destroy (&worker);
    zsock_destroy (&router);
    h_cleanup ();
    return 0;
}
