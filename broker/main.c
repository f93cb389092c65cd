/*  main.c — gridq-broker: command line, then the broker loop. */
#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "broker.h"
#include "gq_common.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: gridq-broker [options]\n"
             "\n"
             "The gridq broker: accepts jobs from clients, keeps them in SQLite, places each on the\n"
             "best idle worker and returns the results.\n"
             "\n"
             "  --endpoint EP        ROUTER endpoint to bind (default tcp://127.0.0.1:5555)\n"
             "  --db FILE            SQLite store (default gridq.db; created when absent)\n"
             "  --heartbeat-ms N     heartbeat interval told to workers (default 1000)\n"
             "  --liveness N         missed heartbeats before a worker is offline (default 3)\n"
             "  --config FILE        JSON: {\"weights\": {fit, compute, cost, warm, load, latency,\n"
             "                       reliability}, \"aging_ms\", \"backfill_window\",\n"
             "                       \"reserve_after_ms\", \"backoff_base_ms\", \"node_grace_ms\",\n"
             "                       \"prefetch_max\", \"prefetch_below_ms\",\n"
             "                       \"prefetch_recall_ms\"}\n"
             "  --durability MODE    full (fsync per commit, default) or normal\n"
             "  --retention DUR      keep finished jobs this long (default 7d)\n"
             "  --cert FILE --clients-dir DIR --workers-dir DIR   CURVE keys and roles\n"
             "  --insecure           allow a non-loopback endpoint without CURVE\n"
             "  --rate N/s --burst M per-client submission rate limit\n"
             "  --max-queued N       unfinished jobs one client key may have (CURVE; default\n"
             "                       unlimited)\n"
             "  --metrics HOST:PORT  serve Prometheus metrics at /metrics\n"
             "  --prefetch-max N     jobs a node gets beyond its slots, at most (default 16; 0:\n"
             "                       none): for kinds measured short there, as many as cover\n"
             "                       the round trip (RTT / run time), so a slot that frees\n"
             "                       starts the next job at once\n"
             "  --prefetch-below MS  a kind counts as short on a node below this measured run\n"
             "                       time (default 20)\n"
             "  --prefetch-recall-ms MS  a prefetched job that waited this long on its node\n"
             "                       goes back to the queue when another node could take it\n"
             "                       now (default 50)\n"
             "  --help               this text\n"
             "\n"
             "example:\n"
             "  gridq-broker --endpoint tcp://127.0.0.1:5555 --db /var/lib/gridq/gridq.db\n");
}

static int
s_fail (const char *format, const char *value)
{
    fprintf (stderr, "gridq-broker: ");
    fprintf (stderr, format, value);
    fprintf (stderr, "\n(see gridq-broker --help)\n");
    return 2;
}

int
main (int argc, char **argv)
{
    gq_broker_opts_t opts;
    gq_broker_opts_default (&opts);
    const char *config = NULL;
    enum { O_ENDPOINT = 1000, O_DB, O_HB, O_LIVENESS, O_CONFIG, O_DURABILITY, O_RETENTION,
           O_CERT, O_CLIENTS, O_WORKERS, O_INSECURE, O_RATE, O_BURST, O_METRICS, O_MAX_QUEUED,
           O_PREFETCH_MAX, O_PREFETCH_BELOW, O_PREFETCH_RECALL, O_HELP };
    static const struct option options[] = {
        {"endpoint", required_argument, 0, O_ENDPOINT},
        {"db", required_argument, 0, O_DB},
        {"heartbeat-ms", required_argument, 0, O_HB},
        {"liveness", required_argument, 0, O_LIVENESS},
        {"config", required_argument, 0, O_CONFIG},
        {"durability", required_argument, 0, O_DURABILITY},
        {"retention", required_argument, 0, O_RETENTION},
        {"cert", required_argument, 0, O_CERT},
        {"clients-dir", required_argument, 0, O_CLIENTS},
        {"workers-dir", required_argument, 0, O_WORKERS},
        {"insecure", no_argument, 0, O_INSECURE},
        {"rate", required_argument, 0, O_RATE},
        {"burst", required_argument, 0, O_BURST},
        {"metrics", required_argument, 0, O_METRICS},
        {"prefetch-max", required_argument, 0, O_PREFETCH_MAX},
        {"prefetch-below", required_argument, 0, O_PREFETCH_BELOW},
        {"prefetch-recall-ms", required_argument, 0, O_PREFETCH_RECALL},
        {"max-queued", required_argument, 0, O_MAX_QUEUED},
        {"help", no_argument, 0, O_HELP},
        {0, 0, 0, 0}};
    /* First pass: the config file, so that flags given on the command line win over it. */
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        if (opt == O_CONFIG) {
            config = optarg;
        } else if (opt == O_HELP) {
            s_usage (stdout);
            return 0;
        } else if (opt == '?') {
            s_usage (stderr);
            return 2;
        }
    }
    if (optind < argc) {
        return s_fail ("unexpected argument '%s'", argv[optind]);
    }
    char why[512];
    if (config && gq_broker_opts_load (&opts, config, why, sizeof why)) {
        return s_fail ("%s", why);
    }
    optind = 1;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        char *end;
        switch (opt) {
        case O_ENDPOINT:
            opts.endpoint = optarg;
            break;
        case O_DB:
            opts.db_path = optarg;
            break;
        case O_HB:
            opts.heartbeat_ms = (int) strtol (optarg, &end, 10);
            if (*end || opts.heartbeat_ms < 10 || opts.heartbeat_ms > 3600000) {
                return s_fail ("--heartbeat-ms '%s' must be 10..3600000", optarg);
            }
            break;
        case O_LIVENESS:
            opts.liveness = (int) strtol (optarg, &end, 10);
            if (*end || opts.liveness < 1 || opts.liveness > 1000) {
                return s_fail ("--liveness '%s' must be 1..1000", optarg);
            }
            break;
        case O_DURABILITY:
            if (strcmp (optarg, "full") == 0) {
                opts.durability = GQ_DURABILITY_FULL;
            } else if (strcmp (optarg, "normal") == 0) {
                opts.durability = GQ_DURABILITY_NORMAL;
            } else {
                return s_fail ("--durability '%s' must be full or normal", optarg);
            }
            break;
        case O_RETENTION:
            if (gq_parse_duration_ms (optarg, &opts.retention_ms)) {
                return s_fail ("--retention '%s' is not a duration like 7d or 12h", optarg);
            }
            break;
        case O_CERT:
            opts.cert_path = optarg;
            break;
        case O_CLIENTS:
            opts.clients_dir = optarg;
            break;
        case O_WORKERS:
            opts.workers_dir = optarg;
            break;
        case O_INSECURE:
            opts.insecure = true;
            break;
        case O_RATE:
            opts.rate_per_s = strtod (optarg, &end);
            if ((*end && strcmp (end, "/s") != 0) || !(opts.rate_per_s > 0)) {
                return s_fail ("--rate '%s' must be a positive rate like 100/s", optarg);
            }
            if (opts.burst <= 0) {
                opts.burst = opts.rate_per_s;
            }
            break;
        case O_BURST:
            opts.burst = strtod (optarg, &end);
            if (*end || !(opts.burst >= 1)) {
                return s_fail ("--burst '%s' must be a number >= 1", optarg);
            }
            break;
        case O_METRICS:
            opts.metrics = optarg;
            break;
        case O_MAX_QUEUED:
            opts.max_queued_per_client = strtoll (optarg, &end, 10);
            if (*end || opts.max_queued_per_client < 1) {
                return s_fail ("--max-queued '%s' must be a positive number of jobs", optarg);
            }
            break;
        case O_PREFETCH_MAX:
            opts.prefetch_max = (int) strtol (optarg, &end, 10);
            if (*end || opts.prefetch_max < 0 || opts.prefetch_max > 1024) {
                return s_fail ("--prefetch-max '%s' must be 0..1024 jobs", optarg);
            }
            break;
        case O_PREFETCH_BELOW:
            opts.prefetch_below_ms = strtod (optarg, &end);
            if (*end || !(opts.prefetch_below_ms >= 0) || opts.prefetch_below_ms > 3600000) {
                return s_fail ("--prefetch-below '%s' must be 0..3600000 ms", optarg);
            }
            break;
        case O_PREFETCH_RECALL:
            opts.prefetch_recall_ms = strtoll (optarg, &end, 10);
            if (*end || opts.prefetch_recall_ms < 0 || opts.prefetch_recall_ms > 3600000) {
                return s_fail ("--prefetch-recall-ms '%s' must be 0..3600000", optarg);
            }
            break;
        default:
            break;
        }
    }
    zsys_init ();
    zsys_set_logident ("gridq-broker");
    zsys_set_logstream (stderr);
    gq_broker_t *broker = gq_broker_new (&opts, why, sizeof why);
    if (!broker) {
        fprintf (stderr, "gridq-broker: %s\n", why);
        return 1;
    }
    int rc = gq_broker_run (broker);
    gq_broker_destroy (&broker);
    return rc ? 1 : 0;
}
