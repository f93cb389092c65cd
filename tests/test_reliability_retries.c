/*  test_reliability_retries.c — a job that fails on every node: three workers whose handler for
    kind "fail" is /bin/false. Each job ends failed after 3 attempts, once on each node: with
    max_attempts 3 by running out of attempts, with max_attempts 10 because every node that can
    run it has failed it. Every attempt's reason is in RESULT's attempts_detail. Each node fails
    three jobs in a row and is backed off (NODES and `gridq nodes --json` show backoff_until); a
    job submitted then waits for the backoff to pass, and the node's first success clears it. */
#include <czmq.h>

#include "harness.h"

#define S_JOBS       3
#define S_BACKOFF_MS 4000

int
main (void)
{
    h_init ("rel-retries", 60);
    char json[100];
    snprintf (json, sizeof json, "{\"backoff_base_ms\": %d}\n", S_BACKOFF_MS);
    const char *config = h_broker_config (json);
    h_start_broker ("--config", config, NULL);
    const char *names[3] = {"w1", "w2", "w3"};
    for (int i = 0; i < 3; i++) {
        h_start_worker (names[i], 1, "--handler", "fail=false", NULL);
    }
    gq_client_t *client = h_client (3000);
    h_wait_nodes (client, 3, 20000);

    json_t *jobs = json_array ();
    for (int i = 0; i < S_JOBS; i++) {
        /* Odd jobs may try more often than there are nodes: once every node has failed them
           they fail anyway, rather than wait forever for a node they may not use. */
        json_array_append_new (jobs, json_pack ("{s:s, s:{s:i}, s:i}", "kind", "fail", "payload",
                                                "n", i, "max_attempts", i % 2 ? 10 : 3));
    }
    int64_t ids[S_JOBS];
    CHECK_EQ (gq_client_submit (client, jobs, false, ids), 0);
    json_decref (jobs);
    CHECK_EQ (gq_client_wait (client, ids, S_JOBS, 20000, NULL, NULL), 0);

    for (int j = 0; j < S_JOBS; j++) {
        json_t *result = h_result (client, ids[j]);
        CHECK (result);
        CHECK_STR (h_str (result, "state"), "failed");
        CHECK_EQ (h_int (result, "attempts"), 3);
        CHECK (strstr (h_str (result, "error"),
                       j % 2 ? "failed on every node that can run it (3 attempts)"
                             : "failed after 3 attempts") != NULL);
        json_t *detail = json_object_get (result, "attempts_detail");
        CHECK_EQ (json_array_size (detail), 3);
        bool ran_on[3] = {false, false, false};
        for (size_t a = 0; a < json_array_size (detail); a++) {
            json_t *attempt = json_array_get (detail, a);
            CHECK_EQ (h_int (attempt, "attempt"), (int64_t) a + 1);
            CHECK_STR (h_str (attempt, "outcome"), "failed");
            if (!strstr (h_str (attempt, "reason"), "status 1")) {
                fprintf (stderr, "job %lld attempt %zu: reason \"%s\" lacks the exit status\n",
                         (long long) ids[j], a + 1, h_str (attempt, "reason"));
                h_fail ();
            }
            const char *node = h_str (attempt, "node");
            CHECK (strlen (node) == 2 && node[0] == 'w' && node[1] >= '1' && node[1] <= '3');
            CHECK (!ran_on[node[1] - '1']); /* a node that failed a job is not tried again */
            ran_on[node[1] - '1'] = true;
        }
        json_decref (result);
    }

    /* Every node failed three in a row: each is backed off. */
    for (int i = 0; i < 3; i++) {
        json_t *node = h_node (client, names[i]);
        CHECK (node);
        CHECK_EQ (h_int (node, "jobs_failed"), S_JOBS);
        CHECK_EQ (h_int (node, "jobs_ok"), 0);
        if (!json_is_string (json_object_get (node, "backoff_until"))) {
            fprintf (stderr, "node %s is not backed off after %d failures in a row\n", names[i],
                     S_JOBS);
            h_fail ();
        }
        json_decref (node);
    }
    char command[800];
    char *out = NULL;
    snprintf (command, sizeof command, "'%s/gridq' --broker '%s' nodes --json", h_bin (),
              h_endpoint ());
    CHECK_EQ (h_run (command, &out), 0);
    json_t *listed = out ? json_loads (out, 0, NULL) : NULL;
    CHECK (json_is_array (listed));
    CHECK_EQ (json_array_size (listed), 3);
    size_t i;
    json_t *row;
    json_array_foreach (listed, i, row) {
        CHECK (json_is_string (json_object_get (row, "backoff_until")));
    }
    json_decref (listed);
    free (out);
    /* The human table says it too. */
    snprintf (command, sizeof command, "'%s/gridq' --broker '%s' nodes", h_bin (),
              h_endpoint ());
    CHECK_EQ (h_run (command, &out), 0);
    CHECK (out && strstr (out, "backoff until") != NULL);
    free (out);

    /* A job submitted now waits: every node is backing off. EXPLAIN says so. */
    int64_t t0 = gq_mono_us ();
    json_t *echo = json_pack ("{s:s, s:{s:s}}", "kind", "echo", "payload", "x", "after");
    int64_t echo_id = h_submit (client, echo);
    json_decref (echo);
    json_t *status = h_status (client, echo_id);
    CHECK_STR (h_str (status, "state"), "queued");
    json_decref (status);
    json_t *explain = gq_client_call (client, "EXPLAIN",
                                      json_pack ("{s:I}", "id", (json_int_t) echo_id));
    CHECK (explain);
    json_array_foreach (json_object_get (explain, "nodes"), i, row) {
        CHECK_STR (h_str (row, "verdict"), "backoff");
    }
    json_decref (explain);

    /* Then it runs once a backoff ends, and that node's success clears its backoff. */
    CHECK (h_wait_state (client, echo_id, "done", S_BACKOFF_MS + 5000));
    int64_t waited_ms = (gq_mono_us () - t0) / 1000;
    json_t *result = h_result (client, echo_id);
    char ran[16];
    snprintf (ran, sizeof ran, "%s", h_str (result, "node"));
    json_decref (result);
    json_t *node = h_node (client, ran);
    CHECK (json_is_null (json_object_get (node, "backoff_until")) ||
           !json_object_get (node, "backoff_until"));
    CHECK_EQ (h_int (node, "jobs_ok"), 1);
    json_decref (node);

    printf ("retries: %d jobs failed on all 3 nodes; nodes backed off; next job waited %lld ms\n",
            S_JOBS, (long long) waited_ms);
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
