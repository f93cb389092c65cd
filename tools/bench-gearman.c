/*  bench-gearman.c — gridq-bench-gearman: the Gearman side of gridq's peer benchmark, driving a
    running gearmand through libgearman with the same load that gridq-bench puts on gridq.

    W worker processes register an echo function (result = workload); one client then runs:
        throughput   foreground jobs, --batch per gearman_client_add_task round, each round
                     completed by gearman_client_run_tasks; jobs/s from the first add to the
                     last completion the client observes
        throughput --background
                     background jobs (the only ones gearmand's persistent queues store), in
                     rounds of --batch; the workers count the jobs they ran in shared memory, and
                     the clock stops when that count reaches --jobs
        latency      one job in flight (gearman_client_do): p50/p99/p999 in microseconds

    gearmand itself is started by tools/bench-peers (or by hand); this program only connects. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <libgearman/gearman.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench_common.h"
#include "gq_common.h"
#include "tuning.h"

#define S_FUNCTION "gq_echo" /* the function the workers register */

typedef struct {
    bench_load_t load;         /* mode, jobs, workers, payload, warmup, json */
    const char *host;          /* gearmand address */
    int port;                  /* gearmand port */
    bool background;           /* throughput with background jobs */
    long batch;                /* tasks added per run_tasks round */
    const char *label;         /* reported as "queue" in JSON (memory, sqlite, ...) */
} s_opts_t;

/* Shared with the worker processes (MAP_SHARED): jobs they ran. */
typedef struct {
    atomic_long ran;
} s_shared_t;

/* What a worker process is started with. */
typedef struct {
    const s_opts_t *opts;      /* the server to register with */
    s_shared_t *shared;        /* where it counts the jobs it ran */
} s_worker_arg_t;

/* ---- Workers ----------------------------------------------------------------------------------- */

/* The echo function: the result is a copy of the workload (libgearman frees it). */
static void *
s_echo (gearman_job_st *job, void *context, size_t *result_size, gearman_return_t *ret_ptr)
{
    s_shared_t *shared = (s_shared_t *) context;
    size_t size = gearman_job_workload_size (job);
    void *result = malloc (size ? size : 1);
    if (!result) {
        *ret_ptr = GEARMAN_WORK_FAIL;
        return NULL;
    }
    memcpy (result, gearman_job_workload (job), size);
    *result_size = size;
    *ret_ptr = GEARMAN_SUCCESS;
    atomic_fetch_add_explicit (&shared->ran, 1, memory_order_relaxed);
    return result;
}

static void
s_worker (void *arg)
{
    const s_opts_t *opts = ((s_worker_arg_t *) arg)->opts;
    s_shared_t *shared = ((s_worker_arg_t *) arg)->shared;
    gearman_worker_st *worker = gearman_worker_create (NULL);
    if (!worker) {
        fprintf (stderr, "gridq-bench-gearman: worker: out of memory\n");
        _exit (1);
    }
    if (gearman_worker_add_server (worker, opts->host, (in_port_t) opts->port) !=
            GEARMAN_SUCCESS ||
        gearman_worker_add_function (worker, S_FUNCTION, 0, s_echo, shared) != GEARMAN_SUCCESS) {
        fprintf (stderr, "gridq-bench-gearman: worker: %s\n", gearman_worker_error (worker));
        _exit (1);
    }
    for (;;) {
        gearman_return_t ret = gearman_worker_work (worker);
        if (ret != GEARMAN_SUCCESS && ret != GEARMAN_IO_WAIT && ret != GEARMAN_TIMEOUT) {
            /* The server went away (the run is over) or the connection broke: try again
               shortly; the parent stops us by PID. */
            usleep (10000);
        }
    }
}

/* Workers gearmand counts as available for S_FUNCTION, per its admin "status" command; -1 when
   it cannot be asked. */
static int
s_registered (const s_opts_t *opts)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons ((uint16_t) opts->port);
    if (fd < 0 || inet_pton (AF_INET, opts->host, &addr.sin_addr) != 1 ||
        connect (fd, (struct sockaddr *) &addr, sizeof addr) != 0) {
        if (fd >= 0) {
            close (fd);
        }
        return -1;
    }
    struct timeval tv = {1, 0};
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    const char *command = "status\n";
    if (write (fd, command, strlen (command)) != (ssize_t) strlen (command)) {
        close (fd);
        return -1;
    }
    /* Lines "FUNCTION\tQUEUED\tRUNNING\tAVAILABLE_WORKERS", ended by ".\n". */
    char text[8192];
    size_t size = 0;
    while (size < sizeof text - 1) {
        ssize_t n = read (fd, text + size, sizeof text - 1 - size);
        if (n <= 0) {
            break;
        }
        size += (size_t) n;
        text[size] = 0;
        if (strstr (text, "\n.\n") || strncmp (text, ".\n", 2) == 0) {
            break;
        }
    }
    close (fd);
    text[size] = 0;
    int workers = 0;
    for (char *line = strtok (text, "\n"); line; line = strtok (NULL, "\n")) {
        char name[128];
        long queued, running, available;
        if (sscanf (line, "%127[^\t]\t%ld\t%ld\t%ld", name, &queued, &running, &available) == 4 &&
            strcmp (name, S_FUNCTION) == 0) {
            workers = (int) available;
        }
    }
    return workers;
}

/* ---- Client ------------------------------------------------------------------------------------ */

static long s_completed; /* foreground tasks completed (the client is one thread) */
static long s_failed;    /* tasks that failed or raised an exception */

static gearman_return_t
s_on_complete (gearman_task_st *task)
{
    (void) task;
    s_completed++;
    return GEARMAN_SUCCESS;
}

static gearman_return_t
s_on_fail (gearman_task_st *task)
{
    (void) task;
    s_failed++;
    return GEARMAN_SUCCESS;
}

static gearman_client_st *
s_client (const s_opts_t *opts)
{
    gearman_client_st *client = gearman_client_create (NULL);
    if (!client) {
        fprintf (stderr, "gridq-bench-gearman: out of memory\n");
        return NULL;
    }
    if (gearman_client_add_server (client, opts->host, (in_port_t) opts->port) !=
        GEARMAN_SUCCESS) {
        fprintf (stderr, "gridq-bench-gearman: %s\n", gearman_client_error (client));
        gearman_client_free (client);
        return NULL;
    }
    gearman_client_set_timeout (client, GQ_BENCH_GEARMAN_IO_TIMEOUT_MS);
    /* Tasks are freed as they complete, so a long run does not keep them all. */
    gearman_client_add_options (client, GEARMAN_CLIENT_FREE_TASKS);
    gearman_client_set_complete_fn (client, s_on_complete);
    gearman_client_set_fail_fn (client, s_on_fail);
    gearman_client_set_exception_fn (client, s_on_fail);
    return client;
}

/* Adds count tasks and runs them: foreground rounds complete when every result is in,
   background rounds when gearmand has acknowledged (and, with a persistent queue, stored) every
   job. 0 or -1. */
static int
s_round (gearman_client_st *client, const s_opts_t *opts, const char *payload, long count)
{
    for (long i = 0; i < count; i++) {
        gearman_return_t ret;
        gearman_task_st *task =
            opts->background
                ? gearman_client_add_task_background (client, NULL, NULL, S_FUNCTION, NULL,
                                                      payload, (size_t) opts->load.payload_bytes,
                                                      &ret)
                : gearman_client_add_task (client, NULL, NULL, S_FUNCTION, NULL, payload,
                                           (size_t) opts->load.payload_bytes, &ret);
        if (!task || ret != GEARMAN_SUCCESS) {
            fprintf (stderr, "gridq-bench-gearman: add task: %s\n",
                     gearman_client_error (client));
            return -1;
        }
    }
    gearman_return_t ret = gearman_client_run_tasks (client);
    if (ret != GEARMAN_SUCCESS) {
        fprintf (stderr, "gridq-bench-gearman: run tasks: %s\n", gearman_client_error (client));
        return -1;
    }
    return 0;
}

static int
s_throughput (gearman_client_st *client, const s_opts_t *opts, const char *payload,
              s_shared_t *shared, long *done)
{
    long added = 0;
    while (added < opts->load.jobs) {
        long count = opts->load.jobs - added < opts->batch ? opts->load.jobs - added : opts->batch;
        if (s_round (client, opts, payload, count)) {
            return -1;
        }
        added += count;
    }
    if (!opts->background) {
        *done = s_completed;
        return s_failed ? -1 : 0;
    }
    /* Background: the workers' count is the only completion there is. */
    long last = -1;
    int64_t progress_us = gq_mono_us ();
    for (;;) {
        long ran = atomic_load (&shared->ran);
        if (ran >= opts->load.jobs) {
            *done = ran;
            return 0;
        }
        if (ran != last) {
            last = ran;
            progress_us = gq_mono_us ();
        } else if (gq_mono_us () - progress_us > GQ_BENCH_GEARMAN_STALL_MS * 1000LL) {
            fprintf (stderr, "gridq-bench-gearman: no progress for %d s: %ld of %ld jobs ran\n",
                     GQ_BENCH_GEARMAN_STALL_MS / 1000, ran, opts->load.jobs);
            *done = ran;
            return -1;
        }
        usleep (200);
    }
}

static int
s_latency (gearman_client_st *client, const s_opts_t *opts, const char *payload,
           bench_samples_t *samples, long *done, int64_t *start_us)
{
    for (long i = 0; i < opts->load.warmup + opts->load.jobs; i++) {
        if (i == opts->load.warmup) {
            *start_us = gq_mono_us ();
        }
        int64_t t0 = gq_mono_us ();
        size_t size = 0;
        gearman_return_t ret;
        void *result = gearman_client_do (client, S_FUNCTION, NULL, payload,
                                          (size_t) opts->load.payload_bytes, &size, &ret);
        if (ret != GEARMAN_SUCCESS || size != (size_t) opts->load.payload_bytes) {
            fprintf (stderr, "gridq-bench-gearman: do: %s\n", gearman_client_error (client));
            free (result);
            return -1;
        }
        free (result);
        if (i >= opts->load.warmup) {
            bench_samples_add (samples, gq_mono_us () - t0);
            (*done)++;
        }
    }
    return 0;
}

/* ---- Command line ------------------------------------------------------------------------------ */

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: gridq-bench-gearman --server HOST:PORT [--mode throughput|latency] [options]\n"
             "\n"
             "Drives a running gearmand with the load gridq-bench puts on gridq: W worker\n"
             "processes with an echo function (" S_FUNCTION "), one client.\n"
             "\n"
             "  --server HOST:PORT  gearmand (default 127.0.0.1:4730)\n"
             "  --mode M            throughput (default): --jobs foreground tasks, --batch per\n"
             "                      add_task/run_tasks round; jobs/s to the last completion\n"
             "                      latency: one job in flight (gearman_client_do); p50/p99/p999\n"
             "  --background        throughput with background jobs (those that a persistent\n"
             "                      queue stores); completion counted by the workers\n"
             "  --jobs N            jobs (default: throughput 100000, latency 2000)\n"
             "  --batch N           tasks per run_tasks round (default 1000)\n"
             "  --workers N         worker processes (default 2)\n"
             "  --payload BYTES     bytes per job (default 27, as gridq-bench's payload JSON)\n"
             "  --warmup N          latency: round trips before measuring (default 100)\n"
             "  --label S           the queue, reported in JSON (e.g. memory, sqlite)\n"
             "  --json              one JSON object: mode, jobs, seconds, jobs_per_s, p50_us,\n"
             "                      p99_us, p999_us, workers\n"
             "  --help              this text\n");
}

static int
s_parse (int argc, char **argv, s_opts_t *opts)
{
    static char host[256];
    static const struct option options[] = {{"server", required_argument, 0, 's'},
                                            {"mode", required_argument, 0, BENCH_OPT_MODE},
                                            {"background", no_argument, 0, 'b'},
                                            {"jobs", required_argument, 0, BENCH_OPT_JOBS},
                                            {"batch", required_argument, 0, 'B'},
                                            {"workers", required_argument, 0, BENCH_OPT_WORKERS},
                                            {"payload", required_argument, 0, BENCH_OPT_PAYLOAD},
                                            {"warmup", required_argument, 0, BENCH_OPT_WARMUP},
                                            {"label", required_argument, 0, 'l'},
                                            {"json", no_argument, 0, BENCH_OPT_JSON},
                                            {"help", no_argument, 0, 'h'},
                                            {0, 0, 0, 0}};
    const char *program = opts->load.program;
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        int taken = bench_load_option (&opts->load, opt, optarg);
        if (taken < 0) {
            return 2;
        }
        if (taken) {
            continue;
        }
        int64_t value;
        switch (opt) {
        case 's': {
            const char *colon = strrchr (optarg, ':');
            if (!colon || colon == optarg || (size_t) (colon - optarg) >= sizeof host) {
                return bench_bad_value (program, "--server", optarg);
            }
            memcpy (host, optarg, (size_t) (colon - optarg));
            host[colon - optarg] = 0;
            opts->host = host;
            opts->port = atoi (colon + 1);
            if (opts->port <= 0 || opts->port > 65535) {
                return bench_bad_value (program, "--server", optarg);
            }
            break;
        }
        case 'b':
            opts->background = true;
            break;
        case 'B':
            if (gq_parse_int (optarg, 1, 1000000, &value)) {
                return bench_bad_value (program, "--batch", optarg);
            }
            opts->batch = (long) value;
            break;
        case 'l':
            /* Printed into JSON as is: keep it to characters that need no escaping. */
            if (!*optarg || strspn (optarg, "abcdefghijklmnopqrstuvwxyz0123456789_.-") !=
                                strlen (optarg)) {
                return bench_bad_value (program, "--label", optarg);
            }
            opts->label = optarg;
            break;
        case 'h':
            s_usage (stdout);
            exit (0);
        default:
            s_usage (stderr);
            return 2;
        }
    }
    int rc = bench_load_finish (&opts->load, argc - optind, argv + optind);
    if (rc == 0 && opts->load.latency && opts->background) {
        rc = bench_bad_value (program, "--background",
                              "with --mode latency (a background job has no reply)");
    }
    return rc;
}

int
main (int argc, char **argv)
{
    s_opts_t opts = {.load = {.program = "gridq-bench-gearman",
                              .min_payload_bytes = 1,
                              .max_workers = GQ_BENCH_GEARMAN_MAX_WORKERS,
                              .workers = 2,
                              .payload_bytes = 27,
                              .warmup = 100},
                     .host = "127.0.0.1",
                     .port = 4730,
                     .batch = 1000};
    int rc = s_parse (argc, argv, &opts);
    if (rc) {
        return rc;
    }
    const bench_load_t *load = &opts.load;
    s_shared_t *shared = (s_shared_t *) mmap (NULL, sizeof *shared, PROT_READ | PROT_WRITE,
                                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    char *payload = (char *) malloc ((size_t) load->payload_bytes);
    bench_samples_t *samples = load->latency ? bench_samples_new ((size_t) load->jobs) : NULL;
    if (shared == MAP_FAILED || !payload || (load->latency && !samples)) {
        fprintf (stderr, "gridq-bench-gearman: out of memory\n");
        return 1;
    }
    atomic_init (&shared->ran, 0);
    memset (payload, 'x', (size_t) load->payload_bytes);
    bench_children_kill_on_signal ();
    signal (SIGPIPE, SIG_IGN);
    s_worker_arg_t worker = {&opts, shared};
    for (int i = 0; i < load->workers; i++) {
        if (bench_fork (s_worker, &worker) < 0) {
            perror ("gridq-bench-gearman: fork");
            bench_children_stop ();
            return 1;
        }
    }
    /* Wait until gearmand knows every worker, so the clock does not time their start-up. */
    int64_t deadline = gq_mono_us () + GQ_BENCH_GEARMAN_START_TIMEOUT_MS * 1000LL;
    int up = 0;
    while ((up = s_registered (&opts)) < load->workers && gq_mono_us () < deadline) {
        usleep (10000);
    }
    if (up < load->workers) {
        fprintf (stderr, "gridq-bench-gearman: %d of %ld workers registered at %s:%d within %d s\n",
                 up < 0 ? 0 : up, load->workers, opts.host, opts.port,
                 GQ_BENCH_GEARMAN_START_TIMEOUT_MS / 1000);
        bench_children_stop ();
        return 1;
    }
    gearman_client_st *client = s_client (&opts);
    if (!client) {
        bench_children_stop ();
        return 1;
    }
    bench_run_t run = {0, 0, bench_latency_none ()};
    int64_t start_us = gq_mono_us ();
    if (load->latency) {
        rc = s_latency (client, &opts, payload, samples, &run.done, &start_us);
    } else {
        rc = s_throughput (client, &opts, payload, shared, &run.done);
    }
    run.seconds = (gq_mono_us () - start_us) / 1e6;
    gearman_client_free (client);
    bench_children_stop ();
    if (load->latency && rc == 0) {
        run.latency = bench_samples_latency (samples);
    }
    bench_samples_destroy (&samples);
    free (payload);
    munmap (shared, sizeof *shared);
    if (rc) {
        fprintf (stderr, "gridq-bench-gearman: %ld of %ld jobs done, %ld failed\n", run.done,
                 load->jobs, s_failed);
        return 1;
    }
    /* The label is the user's: as long as it likes. */
    char setup[64], *json_more = NULL;
    snprintf (setup, sizeof setup, "batch %ld", opts.batch);
    if (asprintf (&json_more,
                  "\"background\":%s,\"batch\":%ld,\"payload_bytes\":%ld,\"queue\":\"%s\"",
                  opts.background ? "true" : "false", load->latency ? 1L : opts.batch,
                  load->payload_bytes, opts.label ? opts.label : "") < 0) {
        fprintf (stderr, "gridq-bench-gearman: out of memory\n");
        return 1;
    }
    /* A latency run has no background jobs (s_parse refuses them). */
    bench_load_report (load, &run, opts.background ? "gearmand, background" : "gearmand", setup,
                       json_more);
    free (json_more);
    return 0;
}
