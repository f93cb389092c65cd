/*  test_prefetch.c — prefetch, by behaviour (no timings), with real processes. Workers run two
    handler kinds that wait on files this test creates: "gate" (DIR/open) and "hold"
    (DIR/release); with the file there they answer at once. One slot per worker.
    (a) a kind not measured yet gets no prefetch: the node's prefetch is 0 until a kind ran
        short there;
    (b) a slow kind (hold, never measured short) holds the node's only slot and takes no
        prefetch: short jobs wait in the broker's queue, not behind it on the node;
    (c) a prefetched job (gate closed: the first blocks the slot, the next waits on the node)
        shows in EXPLAIN as prefetched; SIGKILL the worker: with one attempt allowed, the job
        that ran fails, the prefetched one goes back to the queue (its attempt not counted)
        and runs elsewhere;
    (d) cancel of a prefetched job: cancelled at once, never run;
    (e) a prefetched job that waits while another node could take it is recalled (RECALL,
        RECALLED) and runs there, with one attempt allowed. */
#include <czmq.h>

#include "harness.h"

static char s_open[600];    /* DIR/open: gate jobs pass */
static char s_release[600]; /* DIR/release: hold jobs pass */

/* Submits one job of kind at priority, one attempt at most; returns its id. */
static int64_t
s_submit (gq_client_t *client, const char *kind, int priority)
{
    json_t *job = json_pack ("{s:s, s:{}, s:i, s:i}", "kind", kind, "payload", "priority",
                             priority, "max_attempts", 1);
    int64_t id = h_submit (client, job);
    json_decref (job);
    return id;
}

typedef struct {
    gq_client_t *client;
    const char *node;
    bool positive; /* wait for prefetch > 0 (else == 0) */
} s_prefetch_t;

static int64_t
s_node_int (gq_client_t *client, const char *node, const char *key)
{
    json_t *json = h_node (client, node);
    int64_t value = h_int (json, key);
    json_decref (json);
    return value;
}

static bool
s_prefetch_is (void *arg)
{
    s_prefetch_t *p = (s_prefetch_t *) arg;
    int64_t prefetch = s_node_int (p->client, p->node, "prefetch");
    return p->positive ? prefetch > 0 : prefetch == 0;
}

static bool
s_job_node_is (gq_client_t *client, int64_t id, const char *node)
{
    json_t *job = h_status (client, id);
    bool is = streq (h_str (job, "node"), node) && streq (h_str (job, "state"), "running");
    json_decref (job);
    return is;
}

typedef struct {
    gq_client_t *client;
    int64_t id;
    const char *node;
} s_on_t;

static bool
s_runs_on (void *arg)
{
    s_on_t *on = (s_on_t *) arg;
    return s_job_node_is (on->client, on->id, on->node);
}

/* Runs gate jobs with the gate open until the node's prefetch is positive. */
static void
s_warm_up (gq_client_t *client, const char *node)
{
    h_touch (s_open);
    s_prefetch_t want = {client, node, true};
    for (int i = 0; i < 50 && !s_prefetch_is (&want); i++) {
        int64_t id = s_submit (client, "gate", 5);
        CHECK (h_wait_state (client, id, "done", 20000));
    }
    CHECK (h_wait_until (s_prefetch_is, &want, 20000));
}

/* With node measured and its gate closed: *running holds its slot, *waiting is prefetched
   behind it on the node. */
static void
s_block_and_prefetch (gq_client_t *client, const char *node, int64_t *running, int64_t *waiting)
{
    s_warm_up (client, node);
    unlink (s_open);
    *running = s_submit (client, "gate", 5);
    s_on_t on = {client, *running, node};
    CHECK (h_wait_until (s_runs_on, &on, 20000));
    *waiting = s_submit (client, "gate", 5);
    on.id = *waiting;
    CHECK (h_wait_until (s_runs_on, &on, 20000));
}

/* EXPLAIN's "prefetched" of a job (new reference), or NULL. */
static json_t *
s_prefetched (gq_client_t *client, int64_t id)
{
    json_t *reply = gq_client_call (client, "EXPLAIN", json_pack ("{s:I}", "id", (json_int_t) id));
    CHECK (reply);
    json_t *prefetched = json_incref (json_object_get (reply, "prefetched"));
    json_decref (reply);
    return prefetched;
}

/* A job of one attempt at most (max_attempts 1) ended done on node: it ran once, there; any
   other attempt on record is a prefetch taken back before it started (recorded "running"
   while it waited on its first node), which does not count. */
static void
s_check_ran_once (gq_client_t *client, int64_t id, const char *node)
{
    json_t *job = h_result (client, id);
    CHECK_STR (h_str (job, "state"), "done");
    CHECK_STR (h_str (job, "node"), node);
    int ok = 0;
    size_t n;
    json_t *attempt;
    json_array_foreach (json_object_get (job, "attempts_detail"), n, attempt) {
        if (streq (h_str (attempt, "outcome"), "ok")) {
            ok++;
        } else {
            CHECK_STR (h_str (attempt, "reason"), "recalled before it started");
        }
    }
    CHECK_EQ (ok, 1);
    json_decref (job);
}

int
main (void)
{
    h_init ("prefetch", 100);
    h_require ("gridq-broker");
    h_require ("gridq-worker");
    const char *dir = h_dir ();
    snprintf (s_open, sizeof s_open, "%s/open", dir);
    snprintf (s_release, sizeof s_release, "%s/release", dir);
    char gate[1400], hold[1400];
    /* A handler whose worker was killed waits on: it gives up once the test's folder is gone. */
    snprintf (gate, sizeof gate,
              "gate=while [ ! -e %s ]; do [ -d %s ] || exit 1; sleep 0.01; done; echo '{}'",
              s_open, dir);
    snprintf (hold, sizeof hold,
              "hold=while [ ! -e %s ]; do [ -d %s ] || exit 1; sleep 0.01; done; echo '{}'",
              s_release, dir);
    /* Fast heartbeats: the round trip is measured, and a dead worker found, within a second.
       A handler's process start counts as short (--prefetch-below 5000): this is about the
       rules, not about what is short on this machine. */
    h_start_broker ("--heartbeat-ms", "100", "--prefetch-max", "4", "--prefetch-below", "5000",
                    "--prefetch-recall-ms", "50", NULL);
    pid_t w1 = h_start_worker ("w1", 1, "--handler", gate, "--handler", hold, NULL);
    gq_client_t *client = h_client (5000);
    h_wait_nodes (client, 1, 20000);

    /* (a) Nothing measured: no prefetch; one short run of gate and there is. */
    CHECK_EQ (s_node_int (client, "w1", "prefetch"), 0);
    s_warm_up (client, "w1");
    printf ("prefetch: w1 prefetches %lld once gate ran short there\n",
            (long long) s_node_int (client, "w1", "prefetch"));

    /* (b) A hold job (a slow kind: never measured) takes the only slot and no prefetch: the
       gate jobs after it stay in the broker's queue while it holds. */
    int64_t held = s_submit (client, "hold", 5);
    s_on_t on = {client, held, "w1"};
    CHECK (h_wait_until (s_runs_on, &on, 20000));
    int64_t behind[2] = {s_submit (client, "gate", 5), s_submit (client, "gate", 5)};
    s_prefetch_t none = {client, "w1", false};
    CHECK (h_wait_until (s_prefetch_is, &none, 20000));
    for (int i = 0; i < 2; i++) {
        json_t *job = h_status (client, behind[i]);
        CHECK_STR (h_str (job, "state"), "queued");
        json_decref (job);
    }
    h_touch (s_release);
    for (int i = 0; i < 2; i++) {
        CHECK (h_wait_state (client, behind[i], "done", 20000));
    }
    CHECK (h_wait_state (client, held, "done", 20000));
    printf ("prefetch: no job waited on w1 behind the slow hold job\n");

    /* (c) Gate closed: the first gate job blocks the slot, the second is prefetched onto w1
       (EXPLAIN says so). SIGKILL w1: the prefetched one goes back with no attempt counted, the
       running one counts its attempt; a new worker runs both. */
    int64_t running, waiting;
    s_block_and_prefetch (client, "w1", &running, &waiting);
    json_t *prefetched = s_prefetched (client, waiting);
    CHECK (prefetched);
    CHECK_STR (h_str (prefetched, "node"), "w1");
    CHECK_EQ (h_int (prefetched, "ahead"), 1);
    json_decref (prefetched);
    CHECK (s_prefetched (client, running) == NULL);
    h_kill (w1, SIGKILL);
    /* Both jobs allow one attempt: the one that ran fails with it, the prefetched one waits
       for a node, its attempt not counted (its run, recorded "running" while it waited on
       w1, ends "recalled before it started"). */
    CHECK (h_wait_state (client, running, "failed", 20000));
    CHECK (h_wait_state (client, waiting, "queued", 20000));
    json_t *stats = gq_client_call (client, "STATS", NULL);
    CHECK (h_int (stats, "recalled") >= 1);
    json_decref (stats);
    h_touch (s_open);
    h_start_worker ("w2", 1, "--handler", gate, "--handler", hold, NULL);
    CHECK (h_wait_state (client, waiting, "done", 20000));
    s_check_ran_once (client, waiting, "w2");
    printf ("prefetch: w1 killed: its prefetched job came back with no attempt counted\n");

    /* (d) Cancel of a prefetched job. */
    s_block_and_prefetch (client, "w2", &running, &waiting);
    CHECK_STR (h_cancel (client, waiting), "cancelled");
    h_touch (s_open);
    CHECK (h_wait_state (client, running, "done", 20000));
    json_t *job = h_result (client, waiting);
    CHECK_STR (h_str (job, "state"), "cancelled");
    CHECK (json_is_null (json_object_get (job, "result")));
    json_decref (job);

    /* (e) Recall: w2's slot blocked, a job prefetched behind it; a new worker w3 could take it:
       it is recalled from w2 and runs on w3, one attempt. */
    s_block_and_prefetch (client, "w2", &running, &waiting);
    h_start_worker ("w3", 1, "--handler", gate, "--handler", hold, NULL);
    on = (s_on_t) {client, waiting, "w3"};
    CHECK (h_wait_until (s_runs_on, &on, 20000));
    h_touch (s_open);
    CHECK (h_wait_state (client, waiting, "done", 20000));
    CHECK (h_wait_state (client, running, "done", 20000));
    s_check_ran_once (client, waiting, "w3");
    printf ("prefetch: a job prefetched on w2 was recalled and ran on w3, one attempt\n");

    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
