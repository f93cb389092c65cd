/*  test_reliability_broker_kill.c — the broker is killed with SIGKILL while 3,000 jobs flow
    through two workers, and restarted on the same store and endpoint. Every job is done exactly
    once in the store, with the right result.

    The jobs are submitted in batches of 100, every job with an idempotency key. The first 2,000
    are acknowledged and awaited; when 400 have finished, five more batches are sent without
    waiting for their replies and the broker is killed at once, then restarted. The waiting
    client rides through (gq_client_wait sends WAIT again when the broker is silent). Then the
    batches whose reply never came (and those whose reply did come) are sent again with the
    same keys, and the last batches are submitted: the store must hold exactly 3,000 jobs. */
#include <czmq.h>
#include <signal.h>

#include "harness.h"

#define S_JOBS      3000
#define S_BATCH     100
#define S_FIRST     2000 /* submitted and acknowledged before the kill */
#define S_IN_FLIGHT 5    /* batches sent just before the kill, replies unread */
#define S_KILL_AT   400  /* finished jobs seen when the broker is killed */
#define S_SLEEP_MS  5

typedef struct {
    json_t *jobs;                  /* every job, by input index */
    json_t *index;                 /* "id" -> input index */
    int seen[S_JOBS];              /* finish notices per input index */
    int finished;                  /* jobs seen finished */
    int64_t raw_reqs[S_IN_FLIGHT]; /* SUBMITs sent just before the kill */
    bool killed;                   /* the kill has been done */
    pid_t broker;                  /* the broker running now */
} s_run_t;

static s_run_t s_run;

static void
s_start_broker (void)
{
    s_run.broker = h_start_broker ("--heartbeat-ms", "250", "--liveness", "4", NULL);
}

static json_t *
s_batch (int first)
{
    json_t *batch = json_array ();
    for (int i = first; i < first + S_BATCH; i++) {
        json_array_append (batch, json_array_get (s_run.jobs, (size_t) i));
    }
    return batch;
}

static void
s_remember (const int64_t *ids, int first, int count)
{
    for (int i = 0; i < count; i++) {
        char key[32];
        snprintf (key, sizeof key, "%lld", (long long) ids[i]);
        json_t *known = json_object_get (s_run.index, key);
        if (known && json_integer_value (known) != first + i) {
            fprintf (stderr, "id %s names two input jobs: %lld and %d\n", key,
                     (long long) json_integer_value (known), first + i);
            h_fail ();
        }
        json_object_set_new (s_run.index, key, json_integer (first + i));
    }
}

/* Checks one finished job; at the S_KILL_AT-th, sends S_IN_FLIGHT batches and kills the
   broker before their replies are read, then restarts it. */
static int
s_on_finished (void *arg, json_t *job)
{
    char key[32];
    snprintf (key, sizeof key, "%lld", (long long) h_int (job, "id"));
    json_t *at = json_object_get (s_run.index, key);
    CHECK (at);
    int i = (int) json_integer_value (at);
    s_run.seen[i]++;
    CHECK_STR (h_str (job, "state"), "done");
    json_t *input = json_array_get (s_run.jobs, (size_t) i);
    json_t *payload = json_object_get (input, "payload");
    json_t *result = json_object_get (job, "result");
    if (strcmp (h_str (input, "kind"), "echo") == 0) {
        if (!json_equal (result, payload)) {
            char *text = json_dumps (result, JSON_COMPACT | JSON_ENCODE_ANY);
            fprintf (stderr, "job %s (input %d): result %s is not its payload\n", key, i, text);
            free (text);
            h_fail ();
        }
    } else {
        CHECK_EQ (h_int (result, "slept_ms"), S_SLEEP_MS);
    }
    s_run.finished++;
    if (s_run.finished == S_KILL_AT && !s_run.killed) {
        gq_client_t *client = (gq_client_t *) arg;
        for (int b = 0; b < S_IN_FLIGHT; b++) {
            s_run.raw_reqs[b] = gq_client_send (
                client, "SUBMIT",
                json_pack ("{s:o, s:b}", "jobs", s_batch (S_FIRST + b * S_BATCH), "watch", 0));
            CHECK (s_run.raw_reqs[b] > 0);
        }
        h_kill (s_run.broker, SIGKILL);
        s_run.killed = true;
        s_start_broker ();
    }
    return 0;
}

int
main (void)
{
    h_init ("rel-broker-kill", 60);
    s_start_broker ();
    h_start_worker ("w1", 1, NULL);
    h_start_worker ("w2", 1, NULL);
    gq_client_t *client = h_client (2000);
    gq_client_set_submit_window (client, S_BATCH, 4);
    h_wait_nodes (client, 2, 20000);

    /* Two jobs in three echo their payload; the third sleeps a little, so that jobs are
       running (held by workers) when the broker dies. */
    s_run.jobs = json_array ();
    s_run.index = json_object ();
    for (int i = 0; i < S_JOBS; i++) {
        char idem[32];
        snprintf (idem, sizeof idem, "bk-%d", i);
        json_t *job = i % 3 == 2
                          ? json_pack ("{s:s, s:s, s:{s:i, s:i}}", "kind", "sleep", "idem", idem,
                                       "payload", "ms", S_SLEEP_MS, "i", i)
                          : json_pack ("{s:s, s:s, s:{s:i, s:s, s:[i,i]}}", "kind", "echo",
                                       "idem", idem, "payload", "i", i, "text", "payload ✓",
                                       "pair", i, -i);
        json_array_append_new (s_run.jobs, job);
    }
    int64_t *ids = (int64_t *) calloc (S_JOBS, sizeof *ids);
    CHECK (ids);

    /* The first 2,000, acknowledged. */
    json_t *first = json_array ();
    for (int i = 0; i < S_FIRST; i++) {
        json_array_append (first, json_array_get (s_run.jobs, (size_t) i));
    }
    CHECK_EQ (gq_client_submit (client, first, false, ids), 0);
    json_decref (first);
    s_remember (ids, 0, S_FIRST);

    /* Wait for them; the broker dies and comes back during this wait. */
    int64_t t0 = gq_mono_us ();
    int rc = gq_client_wait (client, ids, S_FIRST, 40000, s_on_finished, client);
    if (rc != 0) {
        fprintf (stderr, "wait: %s (%d of %d finished)\n", gq_client_error (client),
                 s_run.finished, S_FIRST);
        h_fail ();
    }
    CHECK (s_run.killed);
    int64_t first_ms = (gq_mono_us () - t0) / 1000;

    /* What the dead broker committed of the batches sent just before the kill. */
    int64_t stored = h_sql_int (NULL, "select count(*) from jobs");
    CHECK (stored >= S_FIRST && stored <= S_FIRST + S_IN_FLIGHT * S_BATCH);
    CHECK_EQ ((stored - S_FIRST) % S_BATCH, 0); /* a batch is all or nothing */

    /* Replies to the batches sent before the kill, if any came before it died. */
    int64_t raw_ids[S_IN_FLIGHT][S_BATCH];
    bool answered[S_IN_FLIGHT] = {false};
    int n_answered = 0;
    while (true) {
        char command[32];
        int64_t req;
        json_t *body = NULL;
        if (gq_client_recv (client, 0, command, &req, &body, NULL) != 0) {
            break;
        }
        for (int b = 0; b < S_IN_FLIGHT; b++) {
            json_t *got = json_object_get (body, "ids");
            if (req == s_run.raw_reqs[b] && strcmp (command, "SUBMIT") == 0 &&
                json_array_size (got) == S_BATCH) {
                for (int i = 0; i < S_BATCH; i++) {
                    raw_ids[b][i] = (int64_t) json_integer_value (json_array_get (got, i));
                }
                answered[b] = true;
                n_answered++;
            }
        }
        json_decref (body);
    }

    /* Everything from the first unacknowledged job on is sent again, with the same keys:
       whatever the dead broker had committed comes back with its first id. */
    json_t *rest = json_array ();
    for (int i = S_FIRST; i < S_JOBS; i++) {
        json_array_append (rest, json_array_get (s_run.jobs, (size_t) i));
    }
    CHECK_EQ (gq_client_submit (client, rest, false, ids + S_FIRST), 0);
    json_decref (rest);
    for (int b = 0; b < S_IN_FLIGHT; b++) {
        for (int i = 0; answered[b] && i < S_BATCH; i++) {
            CHECK_EQ (ids[S_FIRST + b * S_BATCH + i], raw_ids[b][i]);
        }
    }
    s_remember (ids + S_FIRST, S_FIRST, S_JOBS - S_FIRST);
    rc = gq_client_wait (client, ids + S_FIRST, S_JOBS - S_FIRST, 40000, s_on_finished, client);
    if (rc != 0) {
        fprintf (stderr, "wait: %s\n", gq_client_error (client));
        h_fail ();
    }
    for (int i = 0; i < S_JOBS; i++) {
        if (s_run.seen[i] != 1) {
            fprintf (stderr, "input job %d (id %lld) finished %d times in the client's view\n",
                     i, (long long) ids[i], s_run.seen[i]);
            h_fail ();
        }
    }

    /* The store: exactly 3,000 jobs, all done, one per key, each with its node, attempt count
       and its successful attempt. */
    CHECK_EQ (h_sql_settled (NULL, "select count(*) from jobs where state = 2", S_JOBS, 5000),
              S_JOBS);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs"), S_JOBS);
    CHECK_EQ (h_sql_int (NULL, "select count(distinct idem_key) from jobs"), S_JOBS);
    CHECK_EQ (h_sql_int (NULL, "select count(*) from jobs where result is null"), 0);
    int64_t no_node = h_sql_int (NULL, "select count(*) from jobs where node is null or "
                                       "node not in ('w1', 'w2') or attempts < 1");
    /* Every job has its successful attempt: a row, or (a first attempt that succeeded) the
       job's own row with one attempt and no attempt rows at all. */
    int64_t no_ok = h_sql_int (NULL, "select count(*) from jobs j where not exists (select 1 "
                                     "from attempts a where a.job_id = j.id and "
                                     "a.outcome = 'ok') and not (j.attempts = 1 and not exists "
                                     "(select 1 from attempts a where a.job_id = j.id))");
    json_t *stats = gq_client_call (client, "STATS", NULL);
    CHECK (stats);
    json_t *counts = json_object_get (stats, "jobs");
    CHECK_EQ (h_int (counts, "done"), S_JOBS);
    CHECK_EQ (h_int (counts, "queued"), 0);
    CHECK_EQ (h_int (counts, "running"), 0);
    json_decref (stats);
    if (no_node != 0 || no_ok != 0) {
        fprintf (stderr, "%lld done jobs lack their node or attempt count; %lld lack an ok "
                 "attempt row (results that reached the restarted broker before their worker "
                 "registered again)\n",
                 (long long) no_node, (long long) no_ok);
        h_fail ();
    }

    printf ("broker_kill: %d jobs done exactly once across a broker SIGKILL (first %d in "
            "%lld ms; of %d batches in flight at the kill, %lld committed, %d answered)\n",
            S_JOBS, S_FIRST, (long long) first_ms, S_IN_FLIGHT,
            (long long) (stored - S_FIRST) / S_BATCH, n_answered);
    json_decref (s_run.jobs);
    json_decref (s_run.index);
    free (ids);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
