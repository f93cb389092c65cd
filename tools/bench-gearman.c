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
#include <math.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define S_FUNCTION         "gq_echo" /* the function the workers register */
#define S_MAX_WORKERS      64        /* worker processes */
#define S_STALL_MS         30000     /* no progress for this long: the run failed */
#define S_START_TIMEOUT_MS 10000     /* workers registered within this */
#define S_IO_TIMEOUT_MS    30000     /* libgearman's bound on each blocking call */

typedef struct {
    const char *host;          /* gearmand address */
    int port;                  /* gearmand port */
    bool latency;              /* latency mode, else throughput */
    bool background;           /* throughput with background jobs */
    long jobs;                 /* jobs to run */
    long batch;                /* tasks added per run_tasks round */
    int workers;               /* worker processes */
    int payload_bytes;         /* bytes per job */
    long warmup;               /* latency: round trips before measuring */
    const char *label;         /* reported as "queue" in JSON (memory, sqlite, ...) */
    bool json;                 /* one JSON object on stdout */
} s_opts_t;

/* Shared with the worker processes (MAP_SHARED): jobs they ran. */
typedef struct {
    atomic_long ran;
} s_shared_t;

static pid_t s_children[S_MAX_WORKERS];
static int s_nchildren;

static int64_t
s_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

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
s_worker (const s_opts_t *opts, s_shared_t *shared)
{
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

static void
s_stop_children (void)
{
    for (int i = 0; i < s_nchildren; i++) {
        kill (s_children[i], SIGTERM);
    }
    for (int i = 0; i < s_nchildren; i++) {
        waitpid (s_children[i], NULL, 0);
    }
    s_nchildren = 0;
}

static void
s_on_signal (int sig)
{
    for (int i = 0; i < s_nchildren; i++) {
        kill (s_children[i], SIGKILL);
    }
    _exit (128 + sig);
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
    gearman_client_set_timeout (client, S_IO_TIMEOUT_MS);
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
                                                      payload, (size_t) opts->payload_bytes,
                                                      &ret)
                : gearman_client_add_task (client, NULL, NULL, S_FUNCTION, NULL, payload,
                                           (size_t) opts->payload_bytes, &ret);
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
    while (added < opts->jobs) {
        long count = opts->jobs - added < opts->batch ? opts->jobs - added : opts->batch;
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
    int64_t progress_us = s_mono_us ();
    for (;;) {
        long ran = atomic_load (&shared->ran);
        if (ran >= opts->jobs) {
            *done = ran;
            return 0;
        }
        if (ran != last) {
            last = ran;
            progress_us = s_mono_us ();
        } else if (s_mono_us () - progress_us > S_STALL_MS * 1000LL) {
            fprintf (stderr, "gridq-bench-gearman: no progress for %d s: %ld of %ld jobs ran\n",
                     S_STALL_MS / 1000, ran, opts->jobs);
            *done = ran;
            return -1;
        }
        usleep (200);
    }
}

static int
s_cmp_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

static double
s_percentile (const int64_t *sorted, long n, double p)
{
    long rank = (long) ceil (p * (double) n);
    return n ? (double) sorted[rank ? rank - 1 : 0] : NAN;
}

static int
s_latency (gearman_client_st *client, const s_opts_t *opts, const char *payload,
           int64_t *samples, long *done, int64_t *start_us)
{
    for (long i = 0; i < opts->warmup + opts->jobs; i++) {
        if (i == opts->warmup) {
            *start_us = s_mono_us ();
        }
        int64_t t0 = s_mono_us ();
        size_t size = 0;
        gearman_return_t ret;
        void *result = gearman_client_do (client, S_FUNCTION, NULL, payload,
                                          (size_t) opts->payload_bytes, &size, &ret);
        if (ret != GEARMAN_SUCCESS || size != (size_t) opts->payload_bytes) {
            fprintf (stderr, "gridq-bench-gearman: do: %s\n", gearman_client_error (client));
            free (result);
            return -1;
        }
        free (result);
        if (i >= opts->warmup) {
            samples[(*done)++] = s_mono_us () - t0;
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
s_bad (const char *option, const char *value)
{
    fprintf (stderr,
             "gridq-bench-gearman: bad value '%s' for %s\n(see gridq-bench-gearman --help)\n",
             value, option);
    return 2;
}

static int
s_parse (int argc, char **argv, s_opts_t *opts)
{
    static char host[256];
    static const struct option options[] = {
        {"server", required_argument, 0, 's'},  {"mode", required_argument, 0, 'm'},
        {"background", no_argument, 0, 'b'},    {"jobs", required_argument, 0, 'n'},
        {"batch", required_argument, 0, 'B'},   {"workers", required_argument, 0, 'W'},
        {"payload", required_argument, 0, 'p'}, {"warmup", required_argument, 0, 'u'},
        {"label", required_argument, 0, 'l'},   {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    long jobs = 0;
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        char *end = NULL;
        long value = optarg ? strtol (optarg, &end, 10) : 0;
        bool number = optarg && end != optarg && *end == 0;
        switch (opt) {
        case 's': {
            const char *colon = strrchr (optarg, ':');
            if (!colon || colon == optarg || (size_t) (colon - optarg) >= sizeof host) {
                return s_bad ("--server", optarg);
            }
            memcpy (host, optarg, (size_t) (colon - optarg));
            host[colon - optarg] = 0;
            opts->host = host;
            opts->port = atoi (colon + 1);
            if (opts->port <= 0 || opts->port > 65535) {
                return s_bad ("--server", optarg);
            }
            break;
        }
        case 'm':
            if (strcmp (optarg, "throughput") && strcmp (optarg, "latency")) {
                return s_bad ("--mode", optarg);
            }
            opts->latency = strcmp (optarg, "latency") == 0;
            break;
        case 'b':
            opts->background = true;
            break;
        case 'n':
            if (!number || value < 1 || value > 1000000000) {
                return s_bad ("--jobs", optarg);
            }
            jobs = value;
            break;
        case 'B':
            if (!number || value < 1 || value > 1000000) {
                return s_bad ("--batch", optarg);
            }
            opts->batch = value;
            break;
        case 'W':
            if (!number || value < 1 || value > S_MAX_WORKERS) {
                return s_bad ("--workers", optarg);
            }
            opts->workers = (int) value;
            break;
        case 'p':
            if (!number || value < 1 || value > 1000000) {
                return s_bad ("--payload", optarg);
            }
            opts->payload_bytes = (int) value;
            break;
        case 'u':
            if (!number || value < 0 || value > 1000000) {
                return s_bad ("--warmup", optarg);
            }
            opts->warmup = value;
            break;
        case 'l':
            /* Printed into JSON as is: keep it to characters that need no escaping. */
            if (!*optarg || strspn (optarg, "abcdefghijklmnopqrstuvwxyz0123456789_.-") !=
                                strlen (optarg)) {
                return s_bad ("--label", optarg);
            }
            opts->label = optarg;
            break;
        case 'j':
            opts->json = true;
            break;
        case 'h':
            s_usage (stdout);
            exit (0);
        default:
            s_usage (stderr);
            return 2;
        }
    }
    if (optind < argc) {
        return s_bad ("an argument", argv[optind]);
    }
    if (opts->latency && opts->background) {
        return s_bad ("--background", "with --mode latency (a background job has no reply)");
    }
    opts->jobs = jobs ? jobs : opts->latency ? 2000 : 100000;
    return 0;
}

int
main (int argc, char **argv)
{
    s_opts_t opts = {"127.0.0.1", 4730, false, false, 0, 1000, 2, 27, 100, NULL, false};
    int rc = s_parse (argc, argv, &opts);
    if (rc) {
        return rc;
    }
    s_shared_t *shared = (s_shared_t *) mmap (NULL, sizeof *shared, PROT_READ | PROT_WRITE,
                                              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    char *payload = (char *) malloc ((size_t) opts.payload_bytes);
    int64_t *samples = opts.latency ? (int64_t *) malloc ((size_t) opts.jobs * sizeof *samples)
                                    : NULL;
    if (shared == MAP_FAILED || !payload || (opts.latency && !samples)) {
        fprintf (stderr, "gridq-bench-gearman: out of memory\n");
        return 1;
    }
    atomic_init (&shared->ran, 0);
    memset (payload, 'x', (size_t) opts.payload_bytes);
    signal (SIGINT, s_on_signal);
    signal (SIGTERM, s_on_signal);
    signal (SIGPIPE, SIG_IGN);
    pid_t parent = getpid ();
    for (int i = 0; i < opts.workers; i++) {
        pid_t pid = fork ();
        if (pid == 0) {
            prctl (PR_SET_PDEATHSIG, SIGKILL);
            if (getppid () != parent) {
                _exit (1);
            }
            s_worker (&opts, shared);
        }
        if (pid < 0) {
            perror ("gridq-bench-gearman: fork");
            s_stop_children ();
            return 1;
        }
        s_children[s_nchildren++] = pid;
    }
    /* Wait until gearmand knows every worker, so the clock does not time their start-up. */
    int64_t deadline = s_mono_us () + S_START_TIMEOUT_MS * 1000LL;
    int up = 0;
    while ((up = s_registered (&opts)) < opts.workers && s_mono_us () < deadline) {
        usleep (10000);
    }
    if (up < opts.workers) {
        fprintf (stderr, "gridq-bench-gearman: %d of %d workers registered at %s:%d within %d s\n",
                 up < 0 ? 0 : up, opts.workers, opts.host, opts.port, S_START_TIMEOUT_MS / 1000);
        s_stop_children ();
        return 1;
    }
    gearman_client_st *client = s_client (&opts);
    if (!client) {
        s_stop_children ();
        return 1;
    }
    long done = 0;
    int64_t start_us = s_mono_us ();
    if (opts.latency) {
        rc = s_latency (client, &opts, payload, samples, &done, &start_us);
    } else {
        rc = s_throughput (client, &opts, payload, shared, &done);
    }
    double seconds = (s_mono_us () - start_us) / 1e6;
    gearman_client_free (client);
    s_stop_children ();
    double p50 = NAN, p99 = NAN, p999 = NAN;
    if (opts.latency && rc == 0) {
        qsort (samples, (size_t) done, sizeof *samples, s_cmp_i64);
        p50 = s_percentile (samples, done, 0.50);
        p99 = s_percentile (samples, done, 0.99);
        p999 = s_percentile (samples, done, 0.999);
    }
    free (samples);
    free (payload);
    munmap (shared, sizeof *shared);
    if (rc) {
        fprintf (stderr, "gridq-bench-gearman: %ld of %ld jobs done, %ld failed\n", done,
                 opts.jobs, s_failed);
        return 1;
    }
    double per_s = seconds > 0 ? (double) done / seconds : 0;
    const char *mode = opts.latency ? "latency" : "throughput";
    if (opts.json) {
        char p50_text[32] = "null", p99_text[32] = "null", p999_text[32] = "null";
        if (opts.latency) {
            snprintf (p50_text, sizeof p50_text, "%.1f", p50);
            snprintf (p99_text, sizeof p99_text, "%.1f", p99);
            snprintf (p999_text, sizeof p999_text, "%.1f", p999);
        }
        printf ("{\"mode\":\"%s\",\"jobs\":%ld,\"seconds\":%.6f,\"jobs_per_s\":%.0f,"
                "\"p50_us\":%s,\"p99_us\":%s,\"p999_us\":%s,\"durability\":null,"
                "\"workers\":%d,\"background\":%s,\"batch\":%ld,\"payload_bytes\":%d,"
                "\"queue\":\"%s\"}\n",
                mode, done, seconds, per_s, p50_text, p99_text, p999_text, opts.workers,
                opts.background ? "true" : "false", opts.latency ? 1L : opts.batch,
                opts.payload_bytes, opts.label ? opts.label : "");
    } else if (opts.latency) {
        printf ("latency (gearmand): %ld round trips: p50 %.0f us, p99 %.0f us, p999 %.0f us "
                "(%d workers)\n",
                done, p50, p99, p999, opts.workers);
    } else {
        printf ("throughput (gearmand%s): %ld jobs in %.3f s = %.0f jobs/s (batch %ld, "
                "%d workers)\n",
                opts.background ? ", background" : "", done, seconds, per_s, opts.batch,
                opts.workers);
    }
    return 0;
}
