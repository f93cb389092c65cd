/*  test_stream_window.c — the worker's flow control for partials, against a fake broker (a raw
    ROUTER socket in this test) that acknowledges only what the test says, so the outcome is
    exact: a real gridq-worker with --stream-window 2 and tests/engine_stream.py runs one job
    whose engine writes partial 0, waits for a gate file, then partials 1..N-1 and its result.
    (1) Seq 0 goes at once; the test acknowledges it and makes sure the worker has read the
    acknowledgement (a HEARTBEAT answered behind it) before it opens the gate. (2) Then the
    window (2) lets seq 1 and 2 go; of partials 3..N-1, a window's worth wait and the older
    ones drop; when the job ends the waiting ones go, the first saying how many dropped just
    before it, and then the RESULT: nothing blocks, nothing is reordered, every loss counted. */
#include <czmq.h>

#include "harness.h"

#define S_N 9 /* partials the engine writes: i = 0..8 */

int
main (void)
{
    h_init ("stream_window", 60);
    h_require ("gridq-worker");
    const char *script = getenv ("GQ_ENGINE_STREAM");
    if (!script || h_run ("python3 --version >/dev/null 2>&1", NULL) != 0) {
        printf ("SKIP: python3 or GQ_ENGINE_STREAM (tests/engine_stream.py) missing\n");
        h_cleanup ();
        return 77;
    }
    zsock_t *router = h_fake_broker ();
    char engine[1024];
    snprintf (engine, sizeof engine, "stream=exec python3 -u %s", script);
    h_start_worker ("wf", 1, "--engine", engine, "--stream-window", "2", NULL);

    zframe_t *worker = h_fake_welcome (router, "wf");
    char command[32];
    json_t *body;
    char gate[600], job[1024];
    snprintf (gate, sizeof gate, "%s/gate", h_dir ());
    snprintf (job, sizeof job,
              "{\"jobs\":[{\"id\":7,\"attempt\":1,\"kind\":\"stream\",\"model\":null,"
              "\"timeout_ms\":0,\"payload\":{\"n\":%d,\"gate\":\"%s\"}}]}",
              S_N, gate);
    h_fake_send (router, worker, "JOB", job);

    /* (1) Seq 0, acknowledged; the HEARTBEAT's answer comes after the worker read the ack. */
    body = h_fake_next (router, &worker, command);
    CHECK_STR (command, "PARTIAL");
    CHECK_EQ (h_int (body, "id"), 7);
    CHECK_EQ (h_int (body, "seq"), 0);
    CHECK_EQ (h_int (json_object_get (body, "partial"), "i"), 0);
    CHECK (json_object_get (body, "dropped") == NULL);
    json_decref (body);
    h_fake_send (router, worker, "PARTIAL_ACK", "{\"id\":7,\"seq\":0}");
    h_fake_send (router, worker, "HEARTBEAT", "{\"t\":1}");
    body = h_fake_next (router, &worker, command);
    CHECK_STR (command, "HEARTBEAT");
    CHECK_EQ (h_int (body, "echo"), 1);
    json_decref (body);
    FILE *f = fopen (gate, "w");
    CHECK (f);
    fclose (f);

    /* (2) Seq 1 and 2 carry i = 1 and 2 (the window); nothing acknowledged, so i = 3..6 drop
       and 7, 8 wait until the job ends: seq 3 says "dropped": 4, then seq 4, then RESULT. */
    int64_t want_i[] = {1, 2, 7, 8};
    for (int s = 1; s <= 4; s++) {
        body = h_fake_next (router, &worker, command);
        CHECK_STR (command, "PARTIAL");
        CHECK_EQ (h_int (body, "seq"), s);
        CHECK_EQ (h_int (json_object_get (body, "partial"), "i"), want_i[s - 1]);
        CHECK_EQ (h_int (body, "dropped"), s == 3 ? S_N - 5 : 0);
        json_decref (body);
    }
    body = h_fake_next (router, &worker, command);
    CHECK_STR (command, "RESULT");
    json_t *entry = json_array_get (json_object_get (body, "results"), 0);
    CHECK_EQ (h_int (entry, "id"), 7);
    CHECK (json_is_true (json_object_get (entry, "ok")));
    CHECK_EQ (h_int (json_object_get (entry, "result"), "n"), S_N);
    json_decref (body);

    zframe_destroy (&worker);
    zsock_destroy (&router);
    h_cleanup ();
    printf ("stream_window: ok\n");
    return 0;
}
