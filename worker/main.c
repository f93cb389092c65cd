/*  main.c — gridq-worker: command line, then the worker daemon. */
#include <czmq.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gq_common.h"
#include "worker.h"

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: gridq-worker [options]\n"
             "\n"
             "A gridq worker: one per GPU. Registers with the broker, heartbeats, runs jobs on the\n"
             "CUDA backend (cuBLAS and gridq's kernels) or the CPU backend, and external handlers.\n"
             "\n"
             "  --broker EP          broker endpoint (default $GRIDQ_BROKER or tcp://127.0.0.1:5555)\n"
             "  --name NAME          node name (default HOST-BACKEND-DEVICE)\n"
             "  --backend B          auto (CUDA when a device is present), cuda or cpu\n"
             "  --device N           CUDA device index (default 0); one worker per GPU\n"
             "  --slots N            concurrent jobs (default 1)\n"
             "  --gpu-model S        report this GPU model instead of the detected one\n"
             "  --vram SIZE          report this much VRAM (512M, 24G) instead of the detected\n"
             "  --tflops X           report this compute figure instead of the detected one\n"
             "  --price X            hourly price of this node (default 0)\n"
             "  --models DIR         folder of .safetensors models for kind mlp\n"
             "  --handler KIND=CMD   run CMD (via /bin/sh) for jobs of KIND; repeatable\n"
             "  --engine KIND=CMD    keep CMD (via /bin/sh) running for jobs of KIND, one JSON\n"
             "                       line per job in, one per answer out (docs/PROTOCOL.md,\n"
             "                       Engines); repeatable\n"
             "  --openai KIND=URL    send jobs of KIND to the OpenAI-compatible server at URL\n"
             "                       (vllm serve, llama-server; e.g.\n"
             "                       chat=http://127.0.0.1:8000/v1), streamed; KIND completion\n"
             "                       uses URL/completions, any other URL/chat/completions; its\n"
             "                       models are advertised as loaded;\n"
             "                       OPENAI_API_KEY, when set, is sent as the bearer token;\n"
             "                       repeatable\n"
             "  --engine-slots N     jobs in flight on one engine or server (default: --slots)\n"
             "  --engine-ready-timeout MS  wait this long for an engine's ready line (a server's\n"
             "                       first answer) before registering (default 60000)\n"
             "  --stream-window N    partials of one job sent to the broker and not yet\n"
             "                       acknowledged, at most (default 64); past it as many wait,\n"
             "                       and the oldest waiting drop (counted as \"dropped\")\n"
             "  --cert FILE --server-cert FILE   CURVE keys (or GRIDQ_CERT, GRIDQ_SERVER_CERT)\n"
             "  --help               this text\n"
             "\n"
             "exit status: 0 after SIGINT/SIGTERM, 1 on an error, 2 on a usage error, 3 when the\n"
             "GPU is lost (a sticky CUDA error such as an illegal address): restart the worker,\n"
             "as systemd's Restart=always does, to get a working device again\n"
             "\n"
             "examples:\n"
             "  gridq-worker --name a100-0 --device 0 --slots 4 --price 1.80 --models /srv/models\n"
             "  gridq-worker --backend cpu --gpu-model 'RTX 4090' --vram 24G --tflops 82.6\n"
             "  gridq-worker --handler 'llama=llama-cli -m /srv/llama-7b.gguf -f /dev/stdin'\n"
             "  gridq-worker --slots 8 --engine 'chat=python3 /srv/engines/chat.py'\n"
             "  gridq-worker --slots 16 --openai chat=http://127.0.0.1:8000/v1\n");
}

static int
s_fail (const char *format, const char *value)
{
    fprintf (stderr, "gridq-worker: ");
    fprintf (stderr, format, value);
    fprintf (stderr, "\n(see gridq-worker --help)\n");
    return 2;
}

int
main (int argc, char **argv)
{
    gq_worker_opts_t opts;
    gq_worker_opts_default (&opts);
    if (getenv ("GRIDQ_BROKER")) {
        opts.broker = getenv ("GRIDQ_BROKER");
    }
    opts.cert_path = getenv ("GRIDQ_CERT");
    opts.server_cert_path = getenv ("GRIDQ_SERVER_CERT");
    enum { O_BROKER = 1000, O_NAME, O_BACKEND, O_DEVICE, O_SLOTS, O_GPU, O_VRAM, O_TFLOPS,
           O_PRICE, O_MODELS, O_HANDLER, O_ENGINE, O_OPENAI, O_ENGINE_SLOTS, O_ENGINE_READY,
           O_STREAM, O_CERT, O_SERVER_CERT, O_HELP };
    static const struct option options[] = {{"broker", required_argument, 0, O_BROKER},
                                            {"name", required_argument, 0, O_NAME},
                                            {"backend", required_argument, 0, O_BACKEND},
                                            {"device", required_argument, 0, O_DEVICE},
                                            {"slots", required_argument, 0, O_SLOTS},
                                            {"gpu-model", required_argument, 0, O_GPU},
                                            {"vram", required_argument, 0, O_VRAM},
                                            {"tflops", required_argument, 0, O_TFLOPS},
                                            {"price", required_argument, 0, O_PRICE},
                                            {"models", required_argument, 0, O_MODELS},
                                            {"handler", required_argument, 0, O_HANDLER},
                                            {"engine", required_argument, 0, O_ENGINE},
                                            {"openai", required_argument, 0, O_OPENAI},
                                            {"engine-slots", required_argument, 0, O_ENGINE_SLOTS},
                                            {"engine-ready-timeout", required_argument, 0,
                                             O_ENGINE_READY},
                                            {"stream-window", required_argument, 0, O_STREAM},
                                            {"cert", required_argument, 0, O_CERT},
                                            {"server-cert", required_argument, 0, O_SERVER_CERT},
                                            {"help", no_argument, 0, O_HELP},
                                            {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        char *end;
        switch (opt) {
        case O_BROKER:
            opts.broker = optarg;
            break;
        case O_NAME:
            opts.name = optarg;
            break;
        case O_BACKEND:
            if (strcmp (optarg, "auto") && strcmp (optarg, "cuda") && strcmp (optarg, "cpu")) {
                return s_fail ("--backend '%s' must be auto, cuda or cpu", optarg);
            }
            opts.backend = optarg;
            break;
        case O_DEVICE:
            opts.device = (int) strtol (optarg, &end, 10);
            if (*end || opts.device < 0 || opts.device > 255) {
                return s_fail ("--device '%s' must be a device index 0..255", optarg);
            }
            break;
        case O_SLOTS:
            opts.slots = (int) strtol (optarg, &end, 10);
            if (*end || opts.slots < 1 || opts.slots > GQ_MAX_SLOTS) {
                return s_fail ("--slots '%s' must be 1..1024", optarg);
            }
            break;
        case O_GPU:
            if (!*optarg || strlen (optarg) >= GQ_GPU_MODEL_MAX) {
                return s_fail ("--gpu-model '%s' must be 1..63 characters", optarg);
            }
            opts.gpu_model = optarg;
            break;
        case O_VRAM:
            if (gq_parse_size_mb (optarg, &opts.vram_mb)) {
                return s_fail ("--vram '%s' is not a size like 24G or 512M", optarg);
            }
            break;
        case O_TFLOPS:
            opts.tflops = strtod (optarg, &end);
            if (*end || !(opts.tflops >= 0 && opts.tflops <= GQ_MAX_TFLOPS)) {
                return s_fail ("--tflops '%s' must be a number >= 0", optarg);
            }
            break;
        case O_PRICE:
            opts.price = strtod (optarg, &end);
            if (*end || !(opts.price >= 0 && opts.price <= GQ_MAX_PRICE)) {
                return s_fail ("--price '%s' must be a number >= 0", optarg);
            }
            break;
        case O_MODELS:
            opts.models_dir = optarg;
            break;
        case O_HANDLER:
            if (opts.n_handlers >= GQ_WORKER_MAX_HANDLERS) {
                return s_fail ("too many --handler options (at most %s)", "32");
            }
            opts.handlers[opts.n_handlers++] = optarg;
            break;
        case O_ENGINE:
            if (opts.n_engines >= GQ_WORKER_MAX_HANDLERS) {
                return s_fail ("too many --engine options (at most %s)", "32");
            }
            opts.engines[opts.n_engines++] = optarg;
            break;
        case O_OPENAI:
            if (opts.n_openai >= GQ_WORKER_MAX_HANDLERS) {
                return s_fail ("too many --openai options (at most %s)", "32");
            }
            opts.openai[opts.n_openai++] = optarg;
            break;
        case O_ENGINE_SLOTS:
            opts.engine_slots = (int) strtol (optarg, &end, 10);
            if (*end || opts.engine_slots < 1 || opts.engine_slots > GQ_MAX_SLOTS) {
                return s_fail ("--engine-slots '%s' must be 1..1024", optarg);
            }
            break;
        case O_ENGINE_READY:
            opts.engine_ready_timeout_ms = strtoll (optarg, &end, 10);
            if (*end || opts.engine_ready_timeout_ms < 0 ||
                opts.engine_ready_timeout_ms > 3600000) {
                return s_fail ("--engine-ready-timeout '%s' must be 0..3600000 ms", optarg);
            }
            break;
        case O_STREAM:
            opts.stream_window = (int) strtol (optarg, &end, 10);
            if (*end || opts.stream_window < 1 || opts.stream_window > 1000000) {
                return s_fail ("--stream-window '%s' must be 1..1000000", optarg);
            }
            break;
        case O_CERT:
            opts.cert_path = optarg;
            break;
        case O_SERVER_CERT:
            opts.server_cert_path = optarg;
            break;
        case O_HELP:
            s_usage (stdout);
            return 0;
        default:
            s_usage (stderr);
            return 2;
        }
    }
    if (optind < argc) {
        return s_fail ("unexpected argument '%s'", argv[optind]);
    }
    zsys_init ();
    zsys_set_logident ("gridq-worker");
    zsys_set_logstream (stderr);
    char why[512];
    gq_worker_t *worker = gq_worker_new (&opts, why, sizeof why);
    if (!worker) {
        fprintf (stderr, "gridq-worker: %s\n", why);
        return 1;
    }
    int rc = gq_worker_run (worker); /* the exit status */
    gq_worker_destroy (&worker);
    return rc;
}
