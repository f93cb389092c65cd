/*  main.c — gridq-gateway: the command line, then the relay (broker thread) and the HTTP
    server; the main thread waits for SIGINT or SIGTERM and stops them in order.

    Threads: libmicrohttpd's one polling thread (http.c) takes requests and never blocks; the
    relay (relay.c), a zactor, owns the only broker socket and answers every request; they meet
    in call.h. The main thread blocks SIGINT and SIGTERM before starting either, so both reach
    it alone, through sigwait. */
#include <czmq.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "http.h"
#include "relay.h"
#include "request.h"
#include "tool.h"
#include "tuning.h"

static void
s_help (void)
{
    printf (
        "usage: gridq-gateway [options]\n"
        "\n"
        "HTTP in front of a gridq broker: REST for jobs, server-sent events for their partial\n"
        "results, and the OpenAI API (/v1/chat/completions, /v1/completions, /v1/models), so\n"
        "that curl, a browser or any OpenAI client library can use the fleet (docs/API.md).\n"
        "\n"
        "  --broker EP          broker endpoint (default $GRIDQ_BROKER or tcp://127.0.0.1:5555)\n"
        "  --listen HOST:PORT   where to serve HTTP (default %s); without --tokens only a\n"
        "                       loopback address (127.0.0.0/8)\n"
        "  --tokens FILE        bearer tokens, lines \"NAME ROLE SHA256-HEX\" (role client or\n"
        "                       admin): every request but /healthz needs one (401)\n"
        "  --add-token NAME ROLE  with --tokens FILE: print a new token for NAME once, append\n"
        "                       its hash to FILE (created 0600), and exit\n"
        "  --rate N/s           requests per second for each token (default: no limit): 429\n"
        "  --burst M            requests one token may make at once (default: the rate)\n"
        "  --max-queued N       jobs of one token that have not ended (default: no cap): 429\n"
        "  --idle-timeout DURATION  close a connection idle this long, or one that sends half\n"
        "                       a request (default 60s; a waiting request is not idle)\n"
        "  --cert FILE          client secret certificate, CURVE (or $GRIDQ_CERT)\n"
        "  --server-cert FILE   broker public certificate (or $GRIDQ_SERVER_CERT)\n"
        "  --kind-map MAP       job kinds of the OpenAI paths (default chat=chat,completion=\n"
        "                       completion): e.g. chat=llama,completion=llama-text\n"
        "  --affinity MODE      chat requests' cache-affinity key, so that a conversation's\n"
        "                       turns go to the node that holds its KV cache: prefix (default:\n"
        "                       X-Session-Id when given, else a hash of the system prompt and\n"
        "                       first user message), session (X-Session-Id only), or off\n"
        "  --max-body SIZE      largest request body, bytes or 64K, 16M (default 16M): 413\n"
        "  --timeout DURATION   how long a broker reply may take (default 10s): 504\n"
        "  --help               this text\n"
        "\n"
        "Every request is logged: method, path, status, milliseconds, token name.\n"
        "exit status: 0 after SIGINT/SIGTERM, 1 on an error, 2 on a usage error\n"
        "\n"
        "examples:\n"
        "  gridq-gateway --broker tcp://127.0.0.1:5555 --listen 127.0.0.1:8080\n"
        "  gridq-gateway --add-token alice client --tokens /etc/gridq/tokens\n"
        "  gridq-gateway --tokens /etc/gridq/tokens --listen 0.0.0.0:8080 --rate 20/s\n"
        "  curl -s localhost:8080/v1/jobs -H 'Content-Type: application/json' \\\n"
        "       -d '{\"kind\": \"echo\", \"payload\": {\"x\": 1}}'\n",
        GW_DEFAULT_LISTEN);
}

/* "4096", "64K", "16M", "1G" -> bytes; 0 or -1. */
static int
s_parse_bytes (const char *text, size_t *bytes)
{
    char *end;
    double value = strtod (text, &end);
    double scale = 1;
    if (*end == 'K' || *end == 'k') {
        scale = 1024, end++;
    } else if (*end == 'M' || *end == 'm') {
        scale = 1024 * 1024, end++;
    } else if (*end == 'G' || *end == 'g') {
        scale = 1024.0 * 1024 * 1024, end++;
    }
    if (end == text || *end || value < 1 || value * scale > 4.0 * 1024 * 1024 * 1024) {
        return -1;
    }
    *bytes = (size_t) (value * scale);
    return 0;
}

/* "chat=K,completion=K" into the relay's kinds; 0 or -1. */
static int
s_parse_kind_map (const char *text, gw_relay_opts_t *opts)
{
    char copy[256];
    snprintf (copy, sizeof copy, "%s", text);
    char *save = NULL;
    for (char *item = strtok_r (copy, ",", &save); item; item = strtok_r (NULL, ",", &save)) {
        char *equals = strchr (item, '=');
        if (!equals || !gq_valid_kind (equals + 1)) {
            return -1;
        }
        *equals = 0;
        if (streq (item, "chat")) {
            snprintf (opts->chat_kind, sizeof opts->chat_kind, "%s", equals + 1);
        } else if (streq (item, "completion")) {
            snprintf (opts->completion_kind, sizeof opts->completion_kind, "%s", equals + 1);
        } else {
            return -1;
        }
    }
    return 0;
}

int
main (int argc, char **argv)
{
    tool_set_name ("gridq-gateway");
    gw_relay_opts_t relay_opts;
    memset (&relay_opts, 0, sizeof relay_opts);
    relay_opts.client.timeout_ms = GW_DEFAULT_TIMEOUT_MS;
    snprintf (relay_opts.chat_kind, sizeof relay_opts.chat_kind, "chat");
    snprintf (relay_opts.completion_kind, sizeof relay_opts.completion_kind, "completion");
    gw_http_opts_t http_opts;
    memset (&http_opts, 0, sizeof http_opts);
    http_opts.listen = GW_DEFAULT_LISTEN;
    http_opts.max_body = GW_DEFAULT_MAX_BODY_BYTES;
    http_opts.idle_s = GW_HTTP_IDLE_S;
    const char *tokens_path = NULL, *add_name = NULL, *add_role = NULL;
    double rate_per_s = 0, burst = 0;
    enum { O_BROKER = 1000, O_LISTEN, O_CERT, O_SERVER_CERT, O_KIND_MAP, O_MAX_BODY, O_TIMEOUT,
           O_TOKENS, O_ADD_TOKEN, O_RATE, O_BURST, O_MAX_QUEUED, O_IDLE_TIMEOUT, O_AFFINITY,
           O_HELP };
    static const struct option options[] = {{"broker", required_argument, NULL, O_BROKER},
                                            {"listen", required_argument, NULL, O_LISTEN},
                                            {"cert", required_argument, NULL, O_CERT},
                                            {"server-cert", required_argument, NULL, O_SERVER_CERT},
                                            {"kind-map", required_argument, NULL, O_KIND_MAP},
                                            {"max-body", required_argument, NULL, O_MAX_BODY},
                                            {"timeout", required_argument, NULL, O_TIMEOUT},
                                            {"tokens", required_argument, NULL, O_TOKENS},
                                            {"add-token", required_argument, NULL, O_ADD_TOKEN},
                                            {"rate", required_argument, NULL, O_RATE},
                                            {"burst", required_argument, NULL, O_BURST},
                                            {"max-queued", required_argument, NULL, O_MAX_QUEUED},
                                            {"idle-timeout", required_argument, NULL,
                                             O_IDLE_TIMEOUT},
                                            {"affinity", required_argument, NULL, O_AFFINITY},
                                            {"help", no_argument, NULL, O_HELP},
                                            {NULL, 0, NULL, 0}};
    opterr = 0;
    int option;
    while ((option = getopt_long (argc, argv, ":h", options, NULL)) != -1) {
        int64_t ms;
        char *end;
        switch (option) {
        case O_TOKENS:
            tokens_path = optarg;
            break;
        case O_ADD_TOKEN:
            /* NAME ROLE: the role is the next word. */
            if (optind >= argc) {
                return tool_usage ("--add-token needs NAME ROLE");
            }
            add_name = optarg;
            add_role = argv[optind++];
            break;
        case O_RATE:
            rate_per_s = strtod (optarg, &end);
            if ((*end && !streq (end, "/s")) || !(rate_per_s > 0)) {
                return tool_usage ("--rate \"%s\" is not a positive rate like 100/s", optarg);
            }
            break;
        case O_BURST:
            burst = strtod (optarg, &end);
            if (*end || !(burst >= 1)) {
                return tool_usage ("--burst \"%s\" is not a number >= 1", optarg);
            }
            break;
        case O_MAX_QUEUED:
            if (gq_parse_int (optarg, 1, INT32_MAX, &relay_opts.max_queued)) {
                return tool_usage ("--max-queued \"%s\" is not a positive number of jobs", optarg);
            }
            break;
        case O_IDLE_TIMEOUT:
            if (gq_parse_duration_ms (optarg, &ms) || ms < 1000 || ms > 86400000) {
                return tool_usage ("--idle-timeout \"%s\" is not a duration in 1s..24h", optarg);
            }
            http_opts.idle_s = (unsigned) (ms / 1000);
            break;
        case O_AFFINITY:
            if (streq (optarg, "prefix")) {
                http_opts.affinity = GW_AFFINITY_PREFIX;
            } else if (streq (optarg, "session")) {
                http_opts.affinity = GW_AFFINITY_SESSION;
            } else if (streq (optarg, "off")) {
                http_opts.affinity = GW_AFFINITY_OFF;
            } else {
                return tool_usage ("--affinity \"%s\" must be prefix, session or off", optarg);
            }
            break;
        case O_BROKER:
            relay_opts.client.endpoint = optarg;
            break;
        case O_LISTEN:
            http_opts.listen = optarg;
            break;
        case O_CERT:
            relay_opts.client.cert_path = optarg;
            break;
        case O_SERVER_CERT:
            relay_opts.client.server_cert_path = optarg;
            break;
        case O_KIND_MAP:
            if (s_parse_kind_map (optarg, &relay_opts)) {
                return tool_usage ("--kind-map \"%s\" is not chat=KIND,completion=KIND", optarg);
            }
            break;
        case O_MAX_BODY:
            if (s_parse_bytes (optarg, &http_opts.max_body)) {
                return tool_usage ("--max-body \"%s\" is not a size like 4096, 64K or 16M", optarg);
            }
            break;
        case O_TIMEOUT:
            if (gq_parse_duration_ms (optarg, &ms) || ms <= 0 || ms > INT32_MAX) {
                return tool_usage ("--timeout \"%s\" is not a duration like 10s", optarg);
            }
            relay_opts.client.timeout_ms = (int) ms;
            break;
        case O_HELP:
        case 'h':
            s_help ();
            return 0;
        case ':':
            return tool_usage ("option %s needs a value", argv[optind - 1]);
        default:
            return tool_usage ("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc) {
        return tool_usage ("unexpected argument \"%s\"", argv[optind]);
    }
    char why[512];
    if (add_name) {
        if (!tokens_path) {
            return tool_usage ("--add-token NAME ROLE needs --tokens FILE: the file to append to");
        }
        char token[128];
        if (gw_tokens_add (tokens_path, add_name, add_role, token, sizeof token, why,
                           sizeof why)) {
            return tool_fail ("%s", why);
        }
        printf ("%s\n", token);
        fprintf (stderr, "gridq-gateway: the token of %s (%s) is above; it is shown only this once "
                         "(%s holds its hash)\n",
                 add_name, add_role, tokens_path);
        return 0;
    }
    if ((rate_per_s > 0 || burst > 0 || relay_opts.max_queued) && !tokens_path) {
        return tool_usage ("--rate, --burst and --max-queued are per token: they need --tokens");
    }
    gw_tokens_t *tokens = NULL;
    if (tokens_path) {
        tokens = gw_tokens_load (tokens_path, why, sizeof why);
        if (!tokens) {
            return tool_usage ("%s", why);
        }
        gw_tokens_set_rate (tokens, rate_per_s, burst);
        http_opts.tokens = tokens;
    }
    if (gq_parse_host_port (http_opts.listen, "--listen", 8080, &http_opts.addr, why,
                            sizeof why)) {
        return tool_usage ("%s", why);
    }
    if (!tokens && (ntohl (http_opts.addr.sin_addr.s_addr) >> 24) != 127) {
        return tool_usage ("--listen %s is not a loopback address: without bearer tokens the "
                           "gateway serves only 127.0.0.0/8; give it --tokens FILE (made with "
                           "--add-token) to serve other hosts",
                           http_opts.listen);
    }
    /* Both signals reach the main thread alone: every thread started below inherits the mask. */
    zsys_handler_set (NULL);
    sigset_t stop;
    sigemptyset (&stop);
    sigaddset (&stop, SIGINT);
    sigaddset (&stop, SIGTERM);
    pthread_sigmask (SIG_BLOCK, &stop, NULL);
    signal (SIGPIPE, SIG_IGN);
    gw_relay_t *relay = gw_relay_new (&relay_opts, why, sizeof why);
    if (!relay) {
        gw_tokens_destroy (&tokens);
        return tool_usage ("%s", why);
    }
    gw_http_t *http = gw_http_new (&http_opts, relay, why, sizeof why);
    if (!http) {
        gw_relay_destroy (&relay);
        gw_tokens_destroy (&tokens);
        return tool_fail ("%s", why);
    }
    zsys_info ("gateway: serving http://%s/ for the broker at %s%s", http_opts.listen,
               relay_opts.client.endpoint ? relay_opts.client.endpoint
               : getenv ("GRIDQ_BROKER") ? getenv ("GRIDQ_BROKER")
                                          : GQ_DEFAULT_ENDPOINT,
               tokens ? ", with bearer tokens" : ", loopback only, without tokens");
    int sig = 0;
    sigwait (&stop, &sig);
    zsys_info ("gateway: %s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    gw_relay_stop (relay);
    gw_http_destroy (&http);
    gw_relay_destroy (&relay);
    gw_tokens_destroy (&tokens);
    return 0;
}
