/*  bench-affinity.c — gridq-bench-affinity: how often a conversation's turn runs on the node
    that ran its previous turn (where its KV cache would be), with and without affinity keys.

    Against a running broker and its workers (tools/bench-affinity starts four): --conversations
    conversations of --turns turns each; a conversation's turns are sequential (the next is sent
    when the last FINISHED), --window conversations are in flight at once, each turn a `sleep`
    job of --ms (it holds a slot, as a generation does), with "affinity": "conversation-N" unless
    --no-key. Prints the share of turns (after the first) that stayed on their conversation's
    previous node, and the turns per node against the mean. */
#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gq_client.h"
#include "gq_common.h"
#include "tool.h"

#define S_MAX_NODES 64

typedef struct {
    int turn;            /* turns sent so far */
    char node[GQ_NAME_MAX]; /* the node of its last turn, "" before */
} s_conversation_t;

typedef struct {
    char name[GQ_NAME_MAX];
    int64_t turns;
} s_node_t;

/* Sends conversation c's next turn; its job id into *id. 0 or an error. */
static int
s_send (gq_client_t *client, int c, bool key, int64_t ms, int64_t *id)
{
    json_t *job = json_pack ("{s:s, s:{s:I}}", "kind", "sleep", "payload", "ms", (json_int_t) ms);
    if (key) {
        char name[32];
        snprintf (name, sizeof name, "conversation-%d", c);
        json_object_set_new (job, "affinity", json_string (name));
    }
    json_t *jobs = json_pack ("[o]", job);
    int rc = gq_client_submit (client, jobs, true, id);
    json_decref (jobs);
    return rc;
}

static void
s_help (void)
{
    printf ("usage: gridq-bench-affinity [--broker EP] [--conversations N] [--turns T]\n"
            "                            [--window W] [--ms MS] [--no-key] [--json]\n"
            "\n"
            "Runs conversations of turns against a broker (sleep jobs of MS each, W conversations\n"
            "in flight, a conversation's turns one after the other) and says how many turns ran on\n"
            "the node of their conversation's previous turn, and how the turns spread over nodes.\n"
            "  --broker EP         default $GRIDQ_BROKER or tcp://127.0.0.1:5555\n"
            "  --conversations N   default 200\n"
            "  --turns T           default 5\n"
            "  --window W          conversations in flight (default 16)\n"
            "  --ms MS             each turn's sleep (default 2)\n"
            "  --no-key            send no affinity key (the control)\n"
            "  --json              one JSON object: turns, stayed, stayed_share, nodes, max_over_mean\n"
            "  --help              this text\n"
            "\n"
            "example (tools/bench-affinity starts a broker and four workers):\n"
            "  gridq-bench-affinity --broker tcp://127.0.0.1:5555 --conversations 200 --json\n");
}

int
main (int argc, char **argv)
{
    tool_set_name ("gridq-bench-affinity");
    const char *broker = getenv ("GRIDQ_BROKER") ? getenv ("GRIDQ_BROKER") : GQ_DEFAULT_ENDPOINT;
    int64_t conversations = 200, turns = 5, window = 16, ms = 2;
    bool key = true, json = false;
    enum { O_BROKER = 1000, O_CONV, O_TURNS, O_WINDOW, O_MS, O_NO_KEY, O_JSON, O_HELP };
    static const struct option options[] = {{"broker", required_argument, NULL, O_BROKER},
                                            {"conversations", required_argument, NULL, O_CONV},
                                            {"turns", required_argument, NULL, O_TURNS},
                                            {"window", required_argument, NULL, O_WINDOW},
                                            {"ms", required_argument, NULL, O_MS},
                                            {"no-key", no_argument, NULL, O_NO_KEY},
                                            {"json", no_argument, NULL, O_JSON},
                                            {"help", no_argument, NULL, O_HELP},
                                            {NULL, 0, NULL, 0}};
    opterr = 0;
    int option;
    while ((option = getopt_long (argc, argv, "", options, NULL)) != -1) {
        switch (option) {
        case O_BROKER:
            broker = optarg;
            break;
        case O_CONV:
        case O_TURNS:
        case O_WINDOW:
        case O_MS: {
            int64_t *field = option == O_CONV    ? &conversations
                             : option == O_TURNS ? &turns
                             : option == O_WINDOW ? &window
                                                  : &ms;
            if (gq_parse_int (optarg, option == O_MS ? 0 : 1, 1000000, field)) {
                return tool_usage ("\"%s\" is not a count in range", optarg);
            }
            break;
        }
        case O_NO_KEY:
            key = false;
            break;
        case O_JSON:
            json = true;
            break;
        case O_HELP:
            s_help ();
            return 0;
        default:
            return tool_usage ("unknown option %s", argv[optind - 1]);
        }
    }
    gq_client_opts_t copts = {.endpoint = broker, .timeout_ms = 10000};
    char why[256];
    gq_client_t *client = gq_client_new (&copts, why, sizeof why);
    if (!client) {
        fprintf (stderr, "gridq-bench-affinity: %s\n", why);
        return 1;
    }
    s_conversation_t *conv = (s_conversation_t *) calloc ((size_t) conversations, sizeof *conv);
    zhashx_t *of_job = zhashx_new (); /* job id text -> conversation + 1 */
    s_node_t nodes[S_MAX_NODES];
    int n_nodes = 0;
    int64_t stayed = 0, counted = 0, next = 0, active = 0, failed = 0;
    int rc = conv && of_job ? 0 : 1;
    while (rc == 0 && (active > 0 || next < conversations)) {
        while (rc == 0 && active < window && next < conversations) {
            int64_t id;
            rc = s_send (client, (int) next, key, ms, &id);
            char text[24];
            snprintf (text, sizeof text, "%lld", (long long) id);
            zhashx_insert (of_job, text, (void *) (intptr_t) (next + 1));
            conv[next].turn = 1;
            next++;
            active++;
        }
        char command[32];
        int64_t req;
        json_t *body = NULL;
        if (rc || gq_client_recv (client, 30000, command, &req, &body, NULL) != 0) {
            fprintf (stderr, "gridq-bench-affinity: %s\n", gq_client_error (client));
            rc = 1;
            break;
        }
        size_t i;
        json_t *job;
        json_array_foreach (json_object_get (body, "jobs"), i, job) {
            char text[24];
            snprintf (text, sizeof text, "%lld",
                      (long long) json_integer_value (json_object_get (job, "id")));
            intptr_t c = (intptr_t) zhashx_lookup (of_job, text) - 1;
            if (c < 0) {
                continue;
            }
            zhashx_delete (of_job, text);
            const char *node = json_string_value (json_object_get (job, "node"));
            failed += !streq (json_string_value (json_object_get (job, "state")) ?: "", "done");
            node = node ? node : "?";
            int n = 0;
            while (n < n_nodes && !streq (nodes[n].name, node)) {
                n++;
            }
            if (n == n_nodes && n_nodes < S_MAX_NODES) {
                snprintf (nodes[n_nodes].name, sizeof nodes[0].name, "%s", node);
                nodes[n_nodes++].turns = 0;
            }
            if (n < n_nodes) {
                nodes[n].turns++;
            }
            if (conv[c].node[0]) {
                counted++;
                stayed += streq (conv[c].node, node);
            }
            snprintf (conv[c].node, sizeof conv[c].node, "%s", node);
            if (conv[c].turn < turns) {
                int64_t id;
                rc = s_send (client, (int) c, key, ms, &id);
                snprintf (text, sizeof text, "%lld", (long long) id);
                zhashx_insert (of_job, text, (void *) (c + 1));
                conv[c].turn++;
            } else {
                active--;
            }
        }
        json_decref (body);
    }
    int64_t total = 0, most = 0;
    for (int n = 0; n < n_nodes; n++) {
        total += nodes[n].turns;
        most = nodes[n].turns > most ? nodes[n].turns : most;
    }
    double mean = n_nodes ? (double) total / n_nodes : 0;
    double share = counted ? (double) stayed / (double) counted : 0;
    if (rc == 0 && json) {
        json_t *per = json_object ();
        for (int n = 0; n < n_nodes; n++) {
            json_object_set_new (per, nodes[n].name, json_integer (nodes[n].turns));
        }
        json_t *out = json_pack ("{s:b, s:I, s:I, s:I, s:f, s:o, s:f, s:I}", "key", key,
                                 "conversations", (json_int_t) conversations, "turns",
                                 (json_int_t) counted, "stayed", (json_int_t) stayed,
                                 "stayed_share", share, "nodes", per, "max_over_mean",
                                 mean > 0 ? (double) most / mean : 0.0, "failed",
                                 (json_int_t) failed);
        char *text = json_dumps (out, JSON_COMPACT | JSON_PRESERVE_ORDER);
        printf ("%s\n", text ? text : "{}");
        free (text);
        json_decref (out);
    } else if (rc == 0) {
        printf ("%s: %lld of %lld turns stayed on their conversation's node (%.1f%%); "
                "busiest node %.2fx the mean over %d nodes; %lld failed\n",
                key ? "with keys" : "without keys", (long long) stayed, (long long) counted,
                100 * share, mean > 0 ? (double) most / mean : 0.0, n_nodes, (long long) failed);
    }
    zhashx_destroy (&of_job);
    free (conv);
    gq_client_destroy (&client);
    return rc;
}
