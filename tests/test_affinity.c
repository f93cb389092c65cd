/*  test_affinity.c — cache affinity through a real broker and four workers of four slots:
    (a) twelve conversations of five turns each, every turn with its conversation's affinity
    key: every turn runs on the node of its conversation's first turn, and the conversations
    spread over the nodes (none over 1.5x the mean); (b) the same turns without a key move from
    node to node; (c) EXPLAIN of a queued job with a key names the node that ran the last job
    of its key, and the bonus. */
#include <czmq.h>

#include "harness.h"

#define S_CONVERSATIONS 12
#define S_TURNS 5
#define S_NODES 4

static const char *s_nodes[S_NODES] = {"w1", "w2", "w3", "w4"};

/* The index of the node a finished job ran on. */
static int
s_node_of (gq_client_t *client, int64_t id)
{
    json_t *status = h_status (client, id);
    CHECK_STR (h_str (status, "state"), "done");
    int found = -1;
    for (int n = 0; n < S_NODES; n++) {
        found = streq (h_str (status, "node"), s_nodes[n]) ? n : found;
    }
    json_decref (status);
    CHECK (found >= 0);
    return found;
}

/* The conversations' turns: turn t of every conversation goes in one SUBMIT (all placed in
   one pass, as a burst of chat requests would be), in an order that changes from turn to turn
   (as requests arrive in real life), and ends before turn t + 1. node[c][t] gets each turn's
   node. Returns how many turns ran on the node of their conversation's previous turn. */
static int
s_conversations (gq_client_t *client, bool keyed, int node[S_CONVERSATIONS][S_TURNS])
{
    int stayed = 0;
    for (int t = 0; t < S_TURNS; t++) {
        int order[S_CONVERSATIONS];
        json_t *jobs = json_array ();
        for (int k = 0; k < S_CONVERSATIONS; k++) {
            order[k] = (k * 5 + t * 7) % S_CONVERSATIONS; /* 5 is prime to 12: a permutation */
            json_t *job = json_pack ("{s:s, s:{}}", "kind", "echo", "payload");
            if (keyed) {
                char key[32];
                snprintf (key, sizeof key, "conversation-%d", order[k]);
                json_object_set_new (job, "affinity", json_string (key));
            }
            json_array_append_new (jobs, job);
        }
        int64_t ids[S_CONVERSATIONS];
        CHECK_EQ (gq_client_submit (client, jobs, true, ids), GQ_OK);
        json_decref (jobs);
        CHECK_EQ (gq_client_wait (client, ids, S_CONVERSATIONS, 20000, NULL, NULL), GQ_OK);
        for (int k = 0; k < S_CONVERSATIONS; k++) {
            int c = order[k];
            node[c][t] = s_node_of (client, ids[k]);
            stayed += t > 0 && node[c][t] == node[c][t - 1];
        }
    }
    return stayed;
}

int
main (void)
{
    h_init ("affinity", 90);
    h_require ("gridq-broker");
    h_require ("gridq-worker");
    h_start_broker (NULL, NULL);
    gq_client_t *client = h_start_workers (4, 5000, "w1", "w2", "w3", "w4", NULL);

    /* (a) With keys: every turn on its conversation's node; the nodes share the load. */
    int node[S_CONVERSATIONS][S_TURNS];
    int stayed = s_conversations (client, true, node);
    CHECK_EQ (stayed, S_CONVERSATIONS * (S_TURNS - 1));
    int per_node[S_NODES] = {0};
    for (int c = 0; c < S_CONVERSATIONS; c++) {
        per_node[node[c][0]]++;
    }
    for (int n = 0; n < S_NODES; n++) {
        CHECK (per_node[n] * 2 * S_NODES <= 3 * S_CONVERSATIONS); /* at most 1.5x the mean */
    }
    int home = node[0][S_TURNS - 1]; /* conversation-0's node */
    printf ("affinity: with keys, %d of %d turns stayed on their conversation's node; "
            "conversations per node %d %d %d %d\n",
            stayed, S_CONVERSATIONS * (S_TURNS - 1), per_node[0], per_node[1], per_node[2],
            per_node[3]);

    /* (b) Without keys the matcher spreads the same turns over the idle nodes. */
    int loose = s_conversations (client, false, node);
    CHECK (loose < S_CONVERSATIONS * (S_TURNS - 1));
    printf ("affinity: without keys, %d of %d turns stayed\n", loose,
            S_CONVERSATIONS * (S_TURNS - 1));

    /* (c) A job of conversation-0 that no node can run (a kind nobody offers) stays queued:
       EXPLAIN names conversation-0's node and shows the bonus on its row. */
    json_t *job = json_pack ("{s:s, s:{}, s:s}", "kind", "nobody-runs-this", "payload",
                             "affinity", "conversation-0");
    int64_t id = h_submit (client, job);
    json_decref (job);
    json_t *reply = gq_client_call (client, "EXPLAIN", json_pack ("{s:I}", "id", (json_int_t) id));
    CHECK (reply);
    json_t *affinity = json_object_get (reply, "affinity");
    CHECK_STR (h_str (affinity, "key"), "conversation-0");
    CHECK_STR (h_str (affinity, "node"), s_nodes[home]);
    CHECK (json_number_value (json_object_get (affinity, "bonus")) > 0);
    json_decref (reply);
    printf ("affinity: EXPLAIN names %s for conversation-0\n", s_nodes[home]);

    gq_client_destroy (&client);
    h_cleanup ();
    return 0;
}
