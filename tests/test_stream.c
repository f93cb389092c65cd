/*  test_stream.c — partial results streamed from an engine to clients, through a real broker
    and a worker that runs tests/engine_stream.py with --engine: (a) `gridq submit --stream`
    prints the first partial while the engine still works (the engine waits for a file that
    this test creates only after it read that line), then the rest in order, then the result;
    (b) through the C API, every partial comes in order before the job's FINISHED; (c) bad
    PARTIAL messages from a raw worker socket (a job it does not run, bad fields) are counted
    as rejected and the broker goes on; (d) partials are never written to the store; (e) a
    partial above GQ_MAX_PARTIAL_BYTES fails its job, not the worker; (f) `gridq watch ID`
    attached to a running job prints its partials from then on, then its result; (g) Ctrl-C
    (SIGINT) during `gridq submit --stream` cancels the job; (h) a WAIT with "partials": false
    gets no PARTIAL, one without the field gets them; (i) a WAIT with "after_seq" gets the
    partials the broker keeps of a running job, then the rest; (j) a WAIT with "states" gets
    STATE queued and running of a job released by its parent, then its FINISHED. */
#include <czmq.h>
#include <sys/wait.h>

#include "harness.h"

/* What the C API's partial callback saw of one job. */
/* STATS "rejected". */
static int64_t
s_rejected (gq_client_t *client)
{
    json_t *stats = gq_client_call (client, "STATS", NULL);
    CHECK (stats);
    int64_t rejected = h_int (stats, "rejected");
    json_decref (stats);
    return rejected;
}

typedef struct {
    gq_client_t *client;
    int64_t want;
} s_rejected_t;

static bool
s_rejected_reached (void *arg)
{
    s_rejected_t *r = (s_rejected_t *) arg;
    return s_rejected (r->client) >= r->want;
}

/* One line of gridq's stdout (fails the test at end of file), parsed. */
static json_t *
s_line (FILE *out)
{
    char line[8192];
    CHECK (fgets (line, sizeof line, out) != NULL);
    json_error_t error;
    json_t *json = json_loads (line, JSON_DECODE_ANY, &error);
    if (!json) {
        fprintf (stderr, "not JSON from gridq: %s", line);
        h_fail ();
    }
    return json;
}

/* Whether a file holds a string (arg: {path, string}). */
static bool
s_file_has (void *arg)
{
    const char **what = (const char **) arg;
    char *text = NULL;
    char command[1200];
    snprintf (command, sizeof command, "cat %s 2>/dev/null", what[0]);
    h_run (command, &text);
    bool has = text && strstr (text, what[1]);
    free (text);
    return has;
}

/* Sends a message of protocol (GQW1: a worker's, GQC1: a client's) with a JSON body on a raw
   socket. */
static void
s_raw_send (zsock_t *sock, const char *protocol, const char *command, const char *body)
{
    zmsg_t *zmsg = zmsg_new ();
    zmsg_addstr (zmsg, protocol);
    zmsg_addstr (zmsg, command);
    zmsg_addstr (zmsg, body);
    CHECK_EQ (zmsg_send (&zmsg, sock), 0);
}

/* Waits (5 s at most) for a message with command on a raw socket. */
static void
s_raw_expect (zsock_t *sock, const char *command)
{
    zpoller_t *poller = zpoller_new (sock, NULL);
    int64_t deadline = zclock_mono () + 5000;
    bool found = false;
    while (!found && zclock_mono () < deadline) {
        if (!zpoller_wait (poller, (int) (deadline - zclock_mono ()))) {
            break;
        }
        zmsg_t *zmsg = zmsg_recv (sock);
        zframe_t *frame = zmsg ? zmsg_first (zmsg) : NULL;
        frame = frame ? zmsg_next (zmsg) : NULL;
        found = frame && zframe_streq (frame, command);
        zmsg_destroy (&zmsg);
    }
    zpoller_destroy (&poller);
    CHECK (found);
}

/* A client DEALER on the test broker, for messages the C API does not send as such. */
static zsock_t *
s_raw_client (void)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    CHECK (sock);
    zsock_set_linger (sock, 0);
    CHECK (zsock_connect (sock, "%s", h_endpoint ()) == 0);
    return sock;
}

/* The next message on a raw client socket (10 s at most): its command (32 bytes), and its
   body returned (new reference). */
static json_t *
s_raw_next (zsock_t *sock, char *command)
{
    zpoller_t *poller = zpoller_new (sock, NULL);
    CHECK (zpoller_wait (poller, 10000));
    zpoller_destroy (&poller);
    zmsg_t *zmsg = zmsg_recv (sock);
    CHECK (zmsg && zmsg_size (zmsg) >= 3);
    zframe_t *frame = zmsg_first (zmsg); /* the protocol, then the command, then the body */
    frame = zmsg_next (zmsg);
    snprintf (command, 32, "%.*s", (int) zframe_size (frame), (const char *) zframe_data (frame));
    frame = zmsg_next (zmsg);
    json_t *body = json_loadb ((const char *) zframe_data (frame), zframe_size (frame), 0, NULL);
    zmsg_destroy (&zmsg);
    CHECK (body);
    return body;
}

/* The next message's command only. */
static void
s_raw_command (zsock_t *sock, char *command)
{
    json_decref (s_raw_next (sock, command));
}

/* PARTIAL messages a raw client got before FINISHED. */
static int
s_partials_before_finished (zsock_t *sock)
{
    char command[32];
    int partials = 0;
    for (;;) {
        json_t *body = s_raw_next (sock, command);
        bool finished = streq (command, "FINISHED");
        /* Partial 0 may come or not: the engine writes it as the job starts, which may be
           before or after the WAIT is in place. The others come after the gate. */
        partials += streq (command, "PARTIAL") &&
                    h_int (json_object_get (body, "partial"), "i") >= 1;
        json_decref (body);
        if (finished) {
            return partials;
        }
    }
}

/* Submits one stream job of n partials (gate: the file its engine waits for, or NULL; parent:
   a job it waits on (after_ok), or 0), one attempt; returns its id. */
static int64_t
s_submit_stream (gq_client_t *client, bool watch, int n, const char *gate, int64_t parent)
{
    json_t *job = json_pack ("{s:s, s:i, s:{s:i}}", "kind", "stream", "max_attempts", 1,
                             "payload", "n", n);
    if (gate) {
        json_object_set_new (json_object_get (job, "payload"), "gate", json_string (gate));
    }
    if (parent) {
        json_object_set_new (job, "after_ok", json_pack ("[I]", (json_int_t) parent));
    }
    json_t *jobs = json_pack ("[o]", job);
    int64_t id;
    CHECK_EQ (gq_client_submit (client, jobs, watch, &id), GQ_OK);
    json_decref (jobs);
    return id;
}

/* Sends a raw client's WAIT (body: its JSON) and makes sure the broker has it in place: a PING
   behind it is answered in order, and nothing comes before that answer. */
static void
s_raw_watch (zsock_t *sock, const char *body)
{
    char command[32];
    s_raw_send (sock, "GQC1", "WAIT", body);
    s_raw_send (sock, "GQC1", "PING", "{\"req\":2}");
    s_raw_command (sock, command);
    CHECK_STR (command, "PING");
}

int
main (void)
{
    h_init ("stream", 80);
    h_require ("gridq-broker");
    h_require ("gridq-worker");
    h_require ("gridq");
    const char *script = getenv ("GQ_ENGINE_STREAM");
    if (!script || h_run ("python3 --version >/dev/null 2>&1", NULL) != 0) {
        printf ("SKIP: python3 or GQ_ENGINE_STREAM (tests/engine_stream.py) missing\n");
        h_cleanup ();
        return 77;
    }
    const char *dir = h_dir ();
    char engine[1024];
    snprintf (engine, sizeof engine, "stream=exec python3 -u %s", script);
    h_start_broker (NULL, NULL);
    h_start_worker ("ws", 2, "--engine", engine, NULL);
    gq_client_t *client = h_client (5000);
    h_wait_nodes (client, 1, 30000);

    /* (a) gridq submit --stream: the id, the first partial while the engine waits for the gate,
       then (gate opened) the other partials in order, then the result; exit 0. */
    char gate[600], command[2048];
    snprintf (gate, sizeof gate, "%s/gate", dir);
    snprintf (command, sizeof command,
              "GRIDQ_BROKER=%s %s/gridq submit --kind stream --max-attempts 1 --payload "
              "'{\"n\": 5, \"gate\": \"%s\"}' --stream",
              h_endpoint (), h_bin (), gate);
    FILE *out = popen (command, "r");
    CHECK (out);
    char line[256];
    CHECK (fgets (line, sizeof line, out) != NULL);
    int64_t id = strtoll (line, NULL, 10);
    CHECK (id > 0);
    json_t *partial = s_line (out);
    CHECK_EQ (h_int (partial, "i"), 0);
    CHECK_STR (h_str (partial, "marker"), "PARTIALMARK");
    json_decref (partial);
    /* The engine cannot have finished: it waits for the gate, which is not there yet. */
    json_t *job = h_status (client, id);
    CHECK_STR (h_str (job, "state"), "running");
    json_decref (job);
    h_touch (gate);
    for (int i = 1; i < 5; i++) {
        partial = s_line (out);
        CHECK_EQ (h_int (partial, "i"), i);
        json_decref (partial);
    }
    json_t *result = s_line (out);
    CHECK_EQ (h_int (result, "n"), 5);
    json_decref (result);
    CHECK (fgets (line, sizeof line, out) == NULL);
    int status = pclose (out);
    CHECK (WIFEXITED (status));
    CHECK_EQ (WEXITSTATUS (status), 0);

    /* (b) The C API: a watched SUBMIT sees its 8 partials, seq 0..7 in order, all before
       FINISHED. */
    h_seen_t seen = {0};
    h_seen_reset (&seen);
    gq_client_set_partial_fn (client, h_on_partial, &seen);
    int64_t id_b = s_submit_stream (client, true, 8, NULL, 0);
    CHECK_EQ (gq_client_wait (client, &id_b, 1, 30000, h_on_finished, &seen), GQ_OK);
    CHECK_STR (seen.state, "done");
    CHECK_EQ (seen.at_finish, 8);
    for (int i = 0; i < 8; i++) {
        CHECK_EQ (seen.seqs[i], i);
        CHECK_EQ (h_int (json_array_get (seen.partials, (size_t) i), "i"), i);
    }
    json_decref (seen.partials);
    gq_client_set_partial_fn (client, NULL, NULL);

    /* (c) A raw worker registers, then sends bad PARTIALs: for a job that runs on ws, for no
       job, with bad fields. Each is counted as rejected; the broker answers on. */
    char gate2[600];
    snprintf (gate2, sizeof gate2, "%s/gate2", dir);
    json_t *job_c = json_pack ("{s:s, s:i, s:{s:i, s:s}}", "kind", "stream", "max_attempts", 1,
                               "payload", "n", 2, "gate", gate2);
    int64_t id_c = h_submit (client, job_c);
    json_decref (job_c);
    CHECK (h_wait_state (client, id_c, "running", 20000));
    zsock_t *raw = zsock_new (ZMQ_DEALER);
    CHECK (raw);
    zsock_set_linger (raw, 0);
    CHECK_EQ (zsock_connect (raw, "%s", h_endpoint ()), 0);
    s_raw_send (raw, "GQW1", "READY",
                "{\"spec\":{\"name\":\"raw\",\"vram_total_mb\":1024,\"slots\":1,"
                "\"kinds\":[\"nothing\"]},\"running\":[]}");
    s_raw_expect (raw, "WELCOME");
    int64_t rejected = s_rejected (client);
    char bad[6][200];
    snprintf (bad[0], sizeof bad[0], "{\"id\":%lld,\"seq\":0,\"partial\":{\"i\":99}}",
              (long long) id_c); /* runs on ws, not here */
    snprintf (bad[1], sizeof bad[1], "{\"id\":999999,\"seq\":0,\"partial\":1}");
    snprintf (bad[2], sizeof bad[2], "{\"id\":\"x\",\"seq\":0,\"partial\":1}");
    snprintf (bad[3], sizeof bad[3], "{\"seq\":0,\"partial\":1}");
    snprintf (bad[4], sizeof bad[4], "{\"id\":%lld,\"seq\":\"a\",\"partial\":1}",
              (long long) id_c);
    snprintf (bad[5], sizeof bad[5], "{\"id\":%lld,\"seq\":-1}", (long long) id_c);
    for (int i = 0; i < 6; i++) {
        s_raw_send (raw, "GQW1", "PARTIAL", bad[i]);
    }
    s_rejected_t want = {client, rejected + 6};
    CHECK (h_wait_until (s_rejected_reached, &want, 10000));
    CHECK_EQ (s_rejected (client), rejected + 6);
    zsock_destroy (&raw);
    h_touch (gate2);
    CHECK (h_wait_state (client, id_c, "done", 20000));
    json_t *ping = gq_client_call (client, "PING", NULL);
    CHECK (ping);
    json_decref (ping);

    /* (d) The store holds the jobs and their results, not one partial: three rows, a result
       as long as the result itself, and no marker anywhere in the database's files. */
    CHECK_EQ (h_sql_settled (NULL, "select count(*) from jobs where result is not null", 3,
                             10000),
              3);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs"), 3);
    json_t *whole = h_result (client, id_b);
    char *text = json_dumps (json_object_get (whole, "result"), JSON_COMPACT);
    char sql[200];
    snprintf (sql, sizeof sql, "select length(result) from jobs where id = %lld",
              (long long) id_b);
    CHECK_EQ (h_sql_int (NULL, sql), (int64_t) strlen (text));
    free (text);
    json_decref (whole);
    char *grep = NULL;
    snprintf (command, sizeof command,
              "cat %s/gridq.db %s/gridq.db-wal 2>/dev/null | grep -a -c PARTIALMARK", dir, dir);
    h_run (command, &grep);
    CHECK_STR (grep, "0\n");
    free (grep);

    /* (e) A partial above the limit fails its job ("partial too large"); the worker and its
       engine go on. */
    json_t *big = json_pack ("{s:s, s:i, s:{s:i, s:b}}", "kind", "stream", "max_attempts", 1,
                             "payload", "n", 1, "big", 1);
    int64_t id_e = h_submit (client, big);
    json_decref (big);
    CHECK (h_wait_state (client, id_e, "failed", 20000));
    json_t *failed = h_result (client, id_e);
    CHECK (strstr (h_str (failed, "error"), "partial too large"));
    json_decref (failed);
    json_t *after = json_pack ("{s:s, s:i, s:{s:i}}", "kind", "stream", "max_attempts", 1,
                               "payload", "n", 1);
    int64_t id_after = h_submit (client, after);
    json_decref (after);
    CHECK (h_wait_state (client, id_after, "done", 20000));

    /* (f) gridq watch on a running job: once it printed a tick (it is attached), the gate
       opens; the partials after it come in order, then the result; exit 0. */
    char gate3[600];
    snprintf (gate3, sizeof gate3, "%s/gate3", dir);
    json_t *job_f = json_pack ("{s:s, s:i, s:{s:i, s:s, s:b}}", "kind", "stream", "max_attempts",
                               1, "payload", "n", 3, "gate", gate3, "tick", 1);
    int64_t id_f = h_submit (client, job_f);
    json_decref (job_f);
    CHECK (h_wait_state (client, id_f, "running", 20000));
    snprintf (command, sizeof command, "GRIDQ_BROKER=%s %s/gridq watch %lld", h_endpoint (),
              h_bin (), (long long) id_f);
    out = popen (command, "r");
    CHECK (out);
    partial = s_line (out);
    CHECK (json_object_get (partial, "tick"));
    json_decref (partial);
    h_touch (gate3);
    int next = 1;
    while (next < 3) {
        partial = s_line (out);
        if (!json_object_get (partial, "tick")) {
            CHECK_EQ (h_int (partial, "i"), next);
            next++;
        }
        json_decref (partial);
    }
    result = s_line (out);
    CHECK_EQ (h_int (result, "n"), 3);
    json_decref (result);
    CHECK (fgets (line, sizeof line, out) == NULL);
    status = pclose (out);
    CHECK (WIFEXITED (status));
    CHECK_EQ (WEXITSTATUS (status), 0);

    /* (h) "partials": false: a WAIT that asks for none gets the job's FINISHED and no PARTIAL;
       one that does not say gets them. Two raw client sockets wait on one gated job; a PING
       behind each WAIT (answered in order) makes sure both are in place before the gate
       opens. */
    char gate_h[600], wait_body[200];
    snprintf (gate_h, sizeof gate_h, "%s/gate_h", dir);
    int64_t id_h = s_submit_stream (client, false, 4, gate_h, 0);
    CHECK (h_wait_state (client, id_h, "running", 10000));
    zsock_t *quiet = s_raw_client (), *loud = s_raw_client ();
    snprintf (wait_body, sizeof wait_body, "{\"req\":1,\"ids\":[%lld],\"partials\":false}",
              (long long) id_h);
    s_raw_watch (quiet, wait_body);
    snprintf (wait_body, sizeof wait_body, "{\"req\":1,\"ids\":[%lld]}", (long long) id_h);
    s_raw_watch (loud, wait_body);
    h_touch (gate_h);
    CHECK_EQ (s_partials_before_finished (quiet), 0);
    CHECK_EQ (s_partials_before_finished (loud), 3); /* i = 1..3, after the gate */
    zsock_destroy (&quiet);
    zsock_destroy (&loud);
    printf ("stream: a WAIT with \"partials\": false got the FINISHED and no partial\n");

    /* (i) A WAIT that resumes ("after_seq": -1) gets the partials the broker still keeps of
       a running job, then the rest: partial 0 came before it attached, 1..3 after. */
    char gate_i[600];
    snprintf (gate_i, sizeof gate_i, "%s/gate_i", dir);
    h_seen_t seen_i = {0};
    h_seen_reset (&seen_i);
    gq_client_set_partial_fn (client, h_on_partial, &seen_i);
    int64_t id_i = s_submit_stream (client, true, 4, gate_i, 0);
    int64_t deadline = zclock_mono () + 20000;
    while (seen_i.n < 1 && zclock_mono () < deadline) {
        json_decref (gq_client_call (client, "PING", NULL)); /* partials come in on calls */
        zclock_sleep (10);
    }
    CHECK_EQ (seen_i.n, 1); /* partial 0 was relayed before the resuming WAIT */
    gq_client_set_partial_fn (client, NULL, NULL);
    json_decref (seen_i.partials);
    zsock_t *late = s_raw_client ();
    char command_h[32];
    snprintf (wait_body, sizeof wait_body, "{\"req\":1,\"ids\":[%lld],\"after_seq\":-1}",
              (long long) id_i);
    s_raw_send (late, "GQC1", "WAIT", wait_body);
    s_raw_send (late, "GQC1", "PING", "{\"req\":2}");
    json_t *msg = s_raw_next (late, command_h);
    CHECK_STR (command_h, "PARTIAL");
    CHECK_EQ (h_int (msg, "seq"), 0);
    json_decref (msg);
    msg = s_raw_next (late, command_h);
    CHECK_STR (command_h, "PING");
    json_decref (msg);
    h_touch (gate_i);
    for (int s = 1; s < 4; s++) {
        msg = s_raw_next (late, command_h);
        CHECK_STR (command_h, "PARTIAL");
        CHECK_EQ (h_int (msg, "seq"), s);
        json_decref (msg);
    }
    msg = s_raw_next (late, command_h);
    CHECK_STR (command_h, "FINISHED");
    json_decref (msg);
    zsock_destroy (&late);
    printf ("stream: a WAIT with after_seq got the kept partial 0, then 1..3, then FINISHED\n");

    /* (j) "states": true: a job waiting on a parent (the gate of (i) is open: it ends done)
       is watched from its waiting state; it says queued, then running, then FINISHED. */
    char gate_j[600];
    snprintf (gate_j, sizeof gate_j, "%s/gate_j", dir);
    int64_t parent = s_submit_stream (client, false, 1, gate_j, 0);
    int64_t child = s_submit_stream (client, false, 1, NULL, parent);
    zsock_t *states = s_raw_client ();
    snprintf (wait_body, sizeof wait_body,
              "{\"req\":1,\"ids\":[%lld],\"states\":true,\"partials\":false}",
              (long long) child);
    s_raw_watch (states, wait_body);
    h_touch (gate_j);
    const char *want_states[] = {"queued", "running"};
    for (int k = 0; k < 2; k++) {
        msg = s_raw_next (states, command_h);
        CHECK_STR (command_h, "STATE");
        CHECK_EQ (h_int (msg, "id"), child);
        CHECK_STR (h_str (msg, "state"), want_states[k]);
        json_decref (msg);
    }
    msg = s_raw_next (states, command_h);
    CHECK_STR (command_h, "FINISHED");
    json_decref (msg);
    zsock_destroy (&states);
    printf ("stream: a WAIT with states got STATE queued, running, then FINISHED\n");

    /* (g) Ctrl-C while gridq streams: the job (its engine waiting for a gate that never opens)
       is cancelled. Last: the engine stays busy with it until its gate's wait ends. */
    char payload[800], log[600];
    snprintf (payload, sizeof payload, "{\"n\": 2, \"gate\": \"%s/never\"}", dir);
    snprintf (log, sizeof log, "%s/stream_cli.log", dir);
    pid_t cli = h_start ("gridq", "stream_cli", "--broker", h_endpoint (), "submit", "--kind",
                         "stream", "--max-attempts", "1", "--payload", payload, "--stream", NULL);
    const char *first_partial[] = {log, "PARTIALMARK"};
    CHECK (h_wait_until (s_file_has, first_partial, 20000));
    FILE *f = fopen (log, "r");
    CHECK (f);
    CHECK (fgets (line, sizeof line, f) != NULL);
    fclose (f);
    int64_t id_g = strtoll (line, NULL, 10);
    CHECK (id_g > 0);
    h_kill (cli, SIGINT);
    CHECK (h_wait_state (client, id_g, "cancelled", 10000));
    const char *said[] = {log, "cancelled"};
    CHECK (s_file_has (said));

    gq_client_destroy (&client);
    h_cleanup ();
    printf ("stream: ok\n");
    return 0;
}
