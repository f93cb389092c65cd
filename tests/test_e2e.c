/*  test_e2e.c — the walking skeleton end to end: a real broker with an SQLite file, two CPU
    workers, the client API on loopback; 1,000 jobs of two kinds, every result checked; brief
    FINISHED; one serializer of a job; a STATUS larger than one message. */
#include <czmq.h>
#include <math.h>

#include "harness.h"

#define N_JOBS 1000

typedef struct {
    int64_t *ids;              /* submitted ids, in order */
    json_t **payloads;         /* what each job was given */
    int done;                  /* jobs finished done */
    int seen[N_JOBS];          /* finish notices per job */
    json_t *by_node;           /* node name -> count */
} s_run_t;

static int
s_index_of (s_run_t *run, int64_t id)
{
    for (int i = 0; i < N_JOBS; i++) {
        if (run->ids[i] == id) {
            return i;
        }
    }
    return -1;
}

/* Checks one finished job against what was submitted. */
static int
s_on_finished (void *arg, json_t *job)
{
    s_run_t *run = (s_run_t *) arg;
    int64_t id = (int64_t) json_integer_value (json_object_get (job, "id"));
    int i = s_index_of (run, id);
    CHECK (i >= 0);
    run->seen[i]++;
    CHECK_STR (json_string_value (json_object_get (job, "state")), "done");
    json_t *result = json_object_get (job, "result");
    json_t *payload = run->payloads[i];
    const char *kind = json_string_value (json_object_get (job, "kind"));
    if (strcmp (kind, "echo") == 0) {
        CHECK (json_equal (result, payload));
    } else {
        /* matmul: c = a . b for 2x2 matrices, checked element by element. */
        CHECK_STR (kind, "matmul");
        json_t *a = json_object_get (payload, "a"), *b = json_object_get (payload, "b");
        json_t *c = json_object_get (result, "c");
        CHECK_EQ (json_array_size (c), 2);
        for (int r = 0; r < 2; r++) {
            for (int col = 0; col < 2; col++) {
                double want = 0;
                for (int k = 0; k < 2; k++) {
                    want += json_number_value (json_array_get (json_array_get (a, r), k)) *
                            json_number_value (json_array_get (json_array_get (b, k), col));
                }
                double got = json_number_value (json_array_get (json_array_get (c, r), col));
                if (fabs (got - want) > 1e-3 * (1 + fabs (want))) {
                    fprintf (stderr, "job %lld: c[%d][%d] = %g, expected %g\n", (long long) id, r,
                             col, got, want);
                    h_fail ();
                }
            }
        }
    }
    const char *node = json_string_value (json_object_get (job, "node"));
    CHECK (node && (strcmp (node, "w1") == 0 || strcmp (node, "w2") == 0));
    json_object_set_new (run->by_node, node,
                         json_integer (json_integer_value (json_object_get (run->by_node, node)) + 1));
    CHECK (json_is_string (json_object_get (job, "finished_at")));
    CHECK_EQ (json_integer_value (json_object_get (job, "attempts")), 1);
    run->done++;
    return 0;
}

/* The large jobs: each comes back done with its payload as its result. */
typedef struct {
    json_t *jobs;
    int64_t *ids;
    int done;
} s_large_run_t;

static int
s_on_large (void *arg, json_t *job)
{
    s_large_run_t *run = (s_large_run_t *) arg;
    int64_t id = (int64_t) json_integer_value (json_object_get (job, "id"));
    int i = (int) (id - run->ids[0]);
    CHECK (i >= 0 && i < (int) json_array_size (run->jobs) && run->ids[i] == id);
    CHECK_STR (json_string_value (json_object_get (job, "state")), "done");
    json_t *payload = json_object_get (json_array_get (run->jobs, (size_t) i), "payload");
    CHECK (json_equal (json_object_get (job, "result"), payload));
    run->done++;
    return 0;
}

int
main (void)
{
    h_init ("e2e", 150);
    h_start_broker (NULL, NULL);
    gq_client_t *client = h_start_workers (4, 5000, "w1", "w2", NULL);

    s_run_t run = {0};
    run.ids = (int64_t *) calloc (N_JOBS, sizeof *run.ids);
    run.payloads = (json_t **) calloc (N_JOBS, sizeof *run.payloads);
    run.by_node = json_object ();
    json_t *jobs = json_array ();
    for (int i = 0; i < N_JOBS; i++) {
        json_t *payload;
        if (i % 4 == 3) {
            payload = json_pack ("{s:[[f,f],[f,f]], s:[[f,f],[f,f]]}", "a", (double) i, 1.0, 2.0,
                                 -0.5 * i, "b", 3.0, (double) (i % 7), -1.0, 0.25);
            json_array_append_new (jobs, json_pack ("{s:s, s:O}", "kind", "matmul", "payload",
                                                    payload));
        } else {
            payload = json_pack ("{s:i, s:s, s:[i,i]}", "n", i, "text", "héllo ✓", "list", i, -i);
            json_array_append_new (jobs, json_pack ("{s:s, s:O}", "kind", "echo", "payload",
                                                    payload));
        }
        run.payloads[i] = payload;
    }
    CHECK_EQ (gq_client_submit (client, jobs, true, run.ids), 0);
    for (int i = 0; i < N_JOBS; i++) {
        CHECK (run.ids[i] > 0);
        CHECK (i == 0 || run.ids[i] > run.ids[i - 1]);
    }
    CHECK_EQ (gq_client_wait (client, run.ids, N_JOBS, 60000, s_on_finished, &run), 0);
    CHECK_EQ (run.done, N_JOBS);
    for (int i = 0; i < N_JOBS; i++) {
        CHECK_EQ (run.seen[i], 1);
    }
    /* Both workers took a share. */
    CHECK (json_integer_value (json_object_get (run.by_node, "w1")) > 0);
    CHECK (json_integer_value (json_object_get (run.by_node, "w2")) > 0);

    /* The store agrees: stats count every job done, RESULT returns payload and result. */
    json_t *stats = gq_client_call (client, "STATS", NULL);
    CHECK (stats);
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (stats, "jobs"), "done")),
              N_JOBS);
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (stats, "jobs"), "queued")), 0);
    json_decref (stats);
    json_t *reply = gq_client_call (client, "RESULT", json_pack ("{s:I}", "id",
                                                                 (json_int_t) run.ids[0]));
    CHECK (reply);
    json_t *job = json_object_get (reply, "job");
    CHECK (json_equal (json_object_get (job, "payload"), run.payloads[0]));
    CHECK (json_equal (json_object_get (job, "result"), run.payloads[0]));
    CHECK_EQ (json_array_size (json_object_get (job, "attempts_detail")), 1);
    json_decref (reply);

    /* A bad submission is refused whole, with the field named, and nothing is stored. */
    json_t *bad = json_pack ("[{s:s}, {s:s, s:i}]", "kind", "echo", "kind", "echo", "priority", 99);
    int64_t ids[2];
    CHECK (gq_client_submit (client, bad, false, ids) != 0);
    CHECK (strstr (gq_client_error (client), "priority") != NULL);
    json_decref (bad);
    stats = gq_client_call (client, "STATS", NULL);
    CHECK_EQ (json_integer_value (json_object_get (json_object_get (stats, "jobs"), "done")) +
                  json_integer_value (json_object_get (json_object_get (stats, "jobs"), "queued")),
              N_JOBS);
    json_decref (stats);

    /* Brief FINISHED: id, state, result and error only; for a job finishing now (SUBMIT with
       watch) and for one finished long ago (WAIT, from the store). */
    json_t *one = json_pack ("[{s:s, s:{s:i}}]", "kind", "echo", "payload", "brief", 1);
    int64_t req = gq_client_send (client, "SUBMIT",
                                  json_pack ("{s:O, s:b, s:b}", "jobs", one, "watch", 1, "brief", 1));
    CHECK (req > 0);
    int64_t brief_id = 0;
    for (int got = 0; got < 2;) {
        char command[32];
        int64_t got_req;
        json_t *body = NULL;
        CHECK_EQ (gq_client_recv (client, 10000, command, &got_req, &body, NULL), 0);
        if (got_req == req && strcmp (command, "SUBMIT") == 0) {
            brief_id = json_integer_value (json_array_get (json_object_get (body, "ids"), 0));
            got++;
        } else if (got_req == req && strcmp (command, "FINISHED") == 0) {
            json_t *job = json_array_get (json_object_get (body, "jobs"), 0);
            CHECK_EQ (json_object_size (job), 4);
            CHECK_STR (json_string_value (json_object_get (job, "state")), "done");
            CHECK_EQ (json_integer_value (json_object_get (json_object_get (job, "result"),
                                                          "brief")),
                      1);
            CHECK (json_is_null (json_object_get (job, "error")));
            CHECK (json_is_integer (json_object_get (job, "id")));
            got++;
        }
        json_decref (body);
    }
    CHECK (brief_id > 0);
    json_decref (one);
    req = gq_client_send (client, "WAIT",
                          json_pack ("{s:[I], s:b}", "ids", (json_int_t) run.ids[0], "brief", 1));
    CHECK (req > 0);
    for (bool got = false; !got;) {
        char command[32];
        int64_t got_req;
        json_t *body = NULL;
        CHECK_EQ (gq_client_recv (client, 10000, command, &got_req, &body, NULL), 0);
        if (got_req == req) {
            CHECK_STR (command, "FINISHED");
            json_t *job = json_array_get (json_object_get (body, "jobs"), 0);
            CHECK_EQ (json_object_size (job), 4);
            CHECK_EQ (json_integer_value (json_object_get (job, "id")), run.ids[0]);
            CHECK (json_equal (json_object_get (job, "result"), run.payloads[0]));
            got = true;
        }
        json_decref (body);
    }
    /* One serializer: the full FINISHED of a job ending now (from memory) is the JSON that
       RESULT gives of it once stored (less its attempts_detail), constraints and idem
       included. */
    json_t *full = json_pack ("[{s:s, s:{s:i}, s:s, s:f, s:s, s:i}]", "kind", "echo", "payload",
                              "same", 1, "idem", "one-serializer", "max_price", 9.5, "gpu", "cpu",
                              "priority", 7);
    req = gq_client_send (client, "SUBMIT", json_pack ("{s:O, s:b}", "jobs", full, "watch", 1));
    json_decref (full);
    json_t *finished = NULL;
    int64_t full_id = 0;
    while (!finished) {
        char command[32];
        int64_t got_req;
        json_t *body = NULL;
        CHECK_EQ (gq_client_recv (client, 10000, command, &got_req, &body, NULL), 0);
        if (got_req == req && strcmp (command, "FINISHED") == 0) {
            finished = json_incref (json_array_get (json_object_get (body, "jobs"), 0));
        } else if (got_req == req) {
            full_id = json_integer_value (json_array_get (json_object_get (body, "ids"), 0));
        }
        json_decref (body);
    }
    CHECK_STR (h_str (finished, "idem"), "one-serializer");
    CHECK (json_object_get (finished, "constraints"));
    char sql[100];
    snprintf (sql, sizeof sql, "select state from jobs where id = %lld",
              (long long) json_integer_value (json_object_get (finished, "id")));
    CHECK_EQ (h_sql_settled (NULL, sql, 2, 5000), 2); /* done, committed */
    json_t *stored = h_result (client, json_integer_value (json_object_get (finished, "id")));
    json_object_del (stored, "attempts_detail");
    if (!json_equal (stored, finished)) {
        char *a = json_dumps (finished, JSON_SORT_KEYS), *b = json_dumps (stored, JSON_SORT_KEYS);
        fprintf (stderr, "FINISHED %s\nRESULT   %s\n", a, b);
        h_fail ();
    }
    CHECK (full_id == 0 || full_id == json_integer_value (json_object_get (finished, "id")));
    json_decref (stored);
    json_decref (finished);

    /* A STATUS whose jobs exceed a message: the reply holds what fits and names the rest in
       "more"; gridq status asks again and shows every job. */
    enum { S_BIG = 6000 };
    json_t *big = json_array ();
    char pad[601];
    memset (pad, 'x', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < S_BIG; i++) {
        json_array_append_new (big, json_pack ("{s:s, s:{s:i, s:s}}", "kind", "echo", "payload",
                                               "i", i, "pad", pad));
    }
    int64_t *big_ids = (int64_t *) calloc (S_BIG, sizeof *big_ids);
    CHECK_EQ (gq_client_submit (client, big, false, big_ids), 0);
    CHECK_EQ (gq_client_wait (client, big_ids, S_BIG, 60000, NULL, NULL), 0);
    json_t *ask = json_array ();
    for (int i = 0; i < S_BIG; i++) {
        json_array_append_new (ask, json_integer (big_ids[i]));
    }
    reply = gq_client_call (client, "STATUS", json_pack ("{s:O}", "ids", ask));
    CHECK (reply);
    size_t held = json_array_size (json_object_get (reply, "jobs"));
    CHECK (held > 0 && held < S_BIG);
    CHECK_EQ (held + json_array_size (json_object_get (reply, "more")), S_BIG);
    json_decref (reply);
    char path[300], command[1000];
    snprintf (path, sizeof path, "%s/ids", h_dir ());
    FILE *ids_file = fopen (path, "w");
    CHECK (ids_file);
    for (int i = 0; i < S_BIG; i++) {
        fprintf (ids_file, "%lld ", (long long) big_ids[i]);
    }
    fclose (ids_file);
    char *lines = NULL;
    snprintf (command, sizeof command, "%s/gridq --broker %s status --json $(cat %s) | wc -l",
              h_bin (), h_endpoint (), path);
    CHECK_EQ (h_run (command, &lines), 0);
    CHECK_EQ (atoi (lines ? lines : "0"), S_BIG);
    free (lines);
    /* A WAIT for all of them (whole jobs, ~8 MB of FINISHED in one turn): the notices come in
       several messages, each within the wire's limit (a client drops a larger one), and every
       job is told once. */
    req = gq_client_send (client, "WAIT", json_pack ("{s:O}", "ids", ask));
    CHECK (req > 0);
    int told = 0, messages = 0;
    while (told < S_BIG) {
        char got_command[32];
        int64_t got_req;
        json_t *body = NULL;
        CHECK_EQ (gq_client_recv (client, 10000, got_command, &got_req, &body, NULL), 0);
        if (got_req == req) {
            CHECK_STR (got_command, "FINISHED");
            json_t *jobs_told = json_object_get (body, "jobs");
            CHECK (json_array_size (jobs_told) > 0);
            CHECK_EQ (json_integer_value (json_object_get (json_array_get (jobs_told, 0), "id")),
                      big_ids[told]);
            told += (int) json_array_size (jobs_told);
            messages++;
        }
        json_decref (body);
    }
    CHECK_EQ (told, S_BIG);
    CHECK (messages >= 3);
    free (big_ids);
    json_decref (ask);
    json_decref (big);

    /* Jobs larger than one message of the broker's own: one with a 3 MB payload (its FINISHED,
       payload and result, is twice what a client may send), and 12 of 1 MB dispatched together
       (JOB messages, and the RESULTs of those that end together, past 4 MiB unless cut); every
       result comes back whole. A client of its own, patient: sanitizer builds are slow. */
    enum { S_LARGE = 13 };
    gq_client_t *patient = h_client (120000);
    json_t *large = json_array ();
    for (int i = 0; i < S_LARGE; i++) {
        size_t size = i == 0 ? 3000000 : 1000000;
        char *text = (char *) malloc (size + 1);
        CHECK (text);
        memset (text, 'a' + i % 26, size);
        text[size] = 0;
        json_array_append_new (large, json_pack ("{s:s, s:{s:i, s:s}}", "kind", "echo",
                                                 "payload", "i", i, "data", text));
        free (text);
    }
    int64_t large_ids[S_LARGE];
    CHECK_EQ (gq_client_submit (patient, large, true, large_ids), 0);
    s_large_run_t large_run = {large, large_ids, 0};
    CHECK_EQ (gq_client_wait (patient, large_ids, S_LARGE, 120000, s_on_large, &large_run), 0);
    CHECK_EQ (large_run.done, S_LARGE);
    json_decref (large);
    gq_client_destroy (&patient);

    /* "brief" must be a boolean. */
    reply = gq_client_call (client, "WAIT", json_pack ("{s:[I], s:s}", "ids",
                                                       (json_int_t) run.ids[0], "brief", "yes"));
    CHECK (reply == NULL);
    CHECK (strstr (gq_client_error (client), "brief") != NULL);

    printf ("e2e: %d jobs done (w1 %lld, w2 %lld)\n", N_JOBS,
            (long long) json_integer_value (json_object_get (run.by_node, "w1")),
            (long long) json_integer_value (json_object_get (run.by_node, "w2")));
    for (int i = 0; i < N_JOBS; i++) {
        json_decref (run.payloads[i]);
    }
    json_decref (jobs);
    json_decref (run.by_node);
    free (run.ids);
    free (run.payloads);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
