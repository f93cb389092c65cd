/*  test_reliability_grace.c — a job whose able nodes have all failed it, but for one that went
    offline a moment ago (a missed heartbeat), waits for that node instead of failing for good:
    w1 fails the kind, w2 runs it but is frozen (SIGSTOP) when the job comes. With a grace of
    5 s, the job waits; w2 comes back, and the job is done there. Frozen for longer than the
    grace, w2 is not waited for: the job fails, saying that no node came back in time. */
#include <czmq.h>
#include <signal.h>

#include "harness.h"

int
main (void)
{
    h_init ("rel-grace", 60);
    const char *config = h_broker_config ("{\"node_grace_ms\": 5000}\n");
    h_start_broker ("--heartbeat-ms", "200", "--liveness", "3", "--config", config, NULL);
    h_start_worker ("w1", 1, "--handler", "grace=exit 1", NULL);
    pid_t w2 = h_start_worker ("w2", 1, "--handler", "grace=echo '{\"on\": \"w2\"}'", NULL);
    gq_client_t *client = h_client (3000);
    h_wait_nodes (client, 2, 20000);

    /* w2 goes silent; the job fails on w1 and waits for w2, which comes back. */
    h_kill (w2, SIGSTOP);
    CHECK (h_wait_node_status (client, "w2", "offline", 5000));
    json_t *spec = json_pack ("{s:s, s:{}, s:i}", "kind", "grace", "payload", "max_attempts", 3);
    int64_t id = h_submit (client, spec);
    /* Its first attempt ends (failed on w1): it is queued again, not failed for good. */
    json_t *job = NULL;
    for (int i = 0;
         i < 250 && (h_int (job, "attempts") < 1 || streq (h_str (job, "state"), "running"));
         i++) {
        json_decref (job);
        job = h_status (client, id);
        zclock_sleep (20);
    }
    CHECK_EQ (h_int (job, "attempts"), 1);
    CHECK_STR (h_str (job, "state"), "queued");
    json_decref (job);
    h_kill (w2, SIGCONT);
    CHECK (h_wait_state (client, id, "done", 10000));
    json_t *result = h_result (client, id);
    CHECK_STR (h_str (result, "node"), "w2");
    CHECK_STR (h_str (json_object_get (result, "result"), "on"), "w2");
    json_decref (result);

    /* Frozen for longer than the grace: the job fails, and says why. */
    CHECK (h_wait_node_status (client, "w2", "online", 5000));
    h_kill (w2, SIGSTOP);
    CHECK (h_wait_node_status (client, "w2", "offline", 5000));
    int64_t late = h_submit (client, spec);
    CHECK (h_wait_state (client, late, "failed", 15000));
    result = h_result (client, late);
    CHECK (strstr (h_str (result, "error"), "came back within 5000 ms") != NULL);
    CHECK_EQ (h_int (result, "attempts"), 1);
    json_decref (result);
    json_decref (spec);
    h_kill (w2, SIGCONT);

    printf ("grace: a job waited for a node that was offline a moment, and ran there; past the "
            "grace it failed, saying so\n");
    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
