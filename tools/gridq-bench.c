/*  gridq-bench.c — gridq-bench: drives a live broker with real worker processes through the
    client API and measures it.

    Modes:
        throughput  N echo jobs in batches (one SUBMIT with watch per batch), a window of W
                    batches in flight; jobs/s from the first SUBMIT to the last FINISHED. With
                    --poll P, a thread of its own keeps asking STATUS about P finished ids and P
                    unknown ones meanwhile; its CPU time and the broker's are reported too
        latency     one job in flight: SUBMIT with watch, wait for its FINISHED; p50/p99/p999
        batch       one big batch through gq_client_submit, then gq_client_wait for all of it
        memory      (--spawn, no workers) M queued jobs; the broker's VmRSS before and after
        partials    an engine's partials through the broker to this client (one worker running
                    gridq-bench-engine): the PING round trip; engine write -> client callback
                    per partial at a modest rate, and engine result -> FINISHED per job, p50/p99;
                    then partials/s of --jobs jobs streaming at once, dropped ones counted

    With --spawn it starts its own broker (SQLite in a temporary folder) and worker processes on a
    free loopback port, waits for them to register, runs, and stops them by PID. Without it,
    --broker names a broker that is already running with workers that offer kind echo (partials:
    kind partials, from `gridq-worker --engine partials=gridq-bench-engine`).

    The client, broker and workers share the machine: on a small one the client's own JSON work
    is part of what is measured, as it would be for any real client. */
#define _GNU_SOURCE
#include <czmq.h>
#include <stdatomic.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <libgen.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench_common.h"
#include "gq_client.h"
#include "gq_common.h"
#include "tuning.h"

typedef enum { S_THROUGHPUT, S_LATENCY, S_BATCH, S_MEMORY, S_PARTIALS, S_MIXED } s_mode_t;

static const char *s_mode_names[] = {"throughput", "latency", "batch", "memory", "partials",
                                     "mixed"};
#define S_MODES ((int) (sizeof s_mode_names / sizeof s_mode_names[0]))

typedef struct {
    s_mode_t mode;             /* what to measure */
    int64_t jobs;              /* jobs to run; 0: the mode's default */
    int batch;                 /* jobs per SUBMIT; 0: the mode's default */
    int window;                /* SUBMITs in flight */
    int payload_bytes;         /* length of the payload's string */
    int warmup;                /* latency: round trips before measuring */
    bool spawn;                /* start our own broker and workers */
    const char *broker;        /* endpoint of an existing broker (without --spawn) */
    const char *bin;           /* folder of gridq-broker and gridq-worker */
    const char *durability;    /* full or normal (--spawn) */
    bool durability_given;     /* --durability on the command line */
    int workers;               /* worker processes (--spawn) */
    int slots;                 /* slots per worker (--spawn) */
    const char *tmp;           /* parent of the temporary folder (--spawn) */
    bool keep;                 /* keep the temporary folder and its logs */
    bool full;                 /* FINISHED with whole jobs rather than brief ones */
    bool json;                 /* one JSON object on stdout */
    int64_t poll;              /* throughput: finished ids (and as many unknown) polled; 0: no */
    int64_t partials;          /* partials: partials in all, over --jobs jobs at once; 0: none */
    int interval_us;           /* partials: between a job's partials in the latency run */
    int load_interval_us;      /* partials: likewise in the throughput run; 0: no pause */
    int samples;               /* partials: latency samples of each kind; 0: no latency runs */
    int stream_window;         /* partials: the worker's --stream-window; 0: its default */
    int64_t long_ms;           /* mixed: the long (sleep) job's length */
    bool slots_given;          /* --slots on the command line */
} s_opts_t;

typedef struct {
    int64_t jobs;              /* jobs that finished done */
    int64_t failed;            /* jobs that finished otherwise, or were missing */
    double seconds;            /* measured interval */
    double submit_seconds;     /* batch: first SUBMIT to last acknowledgement */
    bench_latency_t latency;   /* latency mode's figures; NAN elsewhere */
    int64_t rss_before_kb;     /* memory: broker VmRSS before submitting */
    int64_t rss_after_kb;      /* memory: broker VmRSS with every job queued */
    double bytes_per_job;      /* memory: RSS growth per job */
    double payload_json_bytes; /* memory: size of one job's payload as JSON text */
    int64_t poll_requests;     /* --poll: STATUS requests answered */
    int64_t poll_ids;          /* --poll: ids asked in them */
    int cpus;                  /* --poll: CPUs online, the shares' denominator with seconds */
    double poller_cpu_seconds; /* --poll: the poller thread's CPU time over the measured run */
    double broker_cpu_seconds; /* --poll: the spawned broker's CPU time over it; NAN otherwise */
} s_result_t;

/* ---- Processes started with --spawn ---------------------------------------------------------- */

/* Set by SIGINT/SIGTERM/SIGHUP: the run stops and the fleet is stopped by PID on the way out. */
static volatile sig_atomic_t s_interrupted;

typedef struct {
    char dir[512];             /* temporary folder: database and logs */
    char endpoint[64];         /* tcp://127.0.0.1:PORT */
    pid_t broker;              /* broker PID, or 0 */
    pid_t workers[GQ_BENCH_MAX_WORKERS]; /* worker PIDs */
    int n_workers;             /* started workers */
} s_fleet_t;

static void
s_on_signal (int sig)
{
    (void) sig;
    s_interrupted = 1;
    /* The client library checks this after an interrupted receive and returns GQ_EIO, so the
       main path unwinds and stops the fleet itself. */
    zsys_interrupted = 1;
}

static void
s_install_signals (void)
{
    /* czmq's handler would only set zsys_interrupted; ours also marks the run as interrupted. */
    zsys_handler_set (NULL);
    struct sigaction action;
    memset (&action, 0, sizeof action);
    action.sa_handler = s_on_signal;
    sigemptyset (&action.sa_mask);
    sigaction (SIGINT, &action, NULL);
    sigaction (SIGTERM, &action, NULL);
    sigaction (SIGHUP, &action, NULL);
}

/* Starts bin/program with argv (argv[0] is replaced), its output appended to log. */
static pid_t
s_spawn (const char *bin, const char *program, char **argv, const char *log)
{
    char path[1024];
    snprintf (path, sizeof path, "%s/%s", bin, program);
    if (access (path, X_OK) != 0) {
        fprintf (stderr, "gridq-bench: %s: %s (see --bin)\n", path, strerror (errno));
        return -1;
    }
    argv[0] = path;
    pid_t parent = getpid ();
    pid_t pid = fork ();
    if (pid == 0) {
        /* Dies with us, even when we are killed with SIGKILL. */
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        if (getppid () != parent) {
            _exit (127);
        }
        int fd = open (log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2 (fd, 1);
            dup2 (fd, 2);
            close (fd);
        }
        execv (path, argv);
        perror (path);
        _exit (127);
    }
    if (pid < 0) {
        fprintf (stderr, "gridq-bench: cannot start %s: %s\n", path, strerror (errno));
        return -1;
    }
    return pid;
}

static bool
s_running (pid_t pid)
{
    int status;
    return pid > 0 && waitpid (pid, &status, WNOHANG) == 0;
}

/* SIGTERM, then SIGKILL after GQ_BENCH_STOP_TIMEOUT_MS; reaps it. */
static void
s_stop (pid_t pid)
{
    if (pid <= 0) {
        return;
    }
    kill (pid, SIGTERM);
    int status;
    int64_t deadline = gq_mono_us () + GQ_BENCH_STOP_TIMEOUT_MS * 1000LL;
    while (waitpid (pid, &status, WNOHANG) == 0) {
        if (gq_mono_us () >= deadline) {
            kill (pid, SIGKILL);
            waitpid (pid, &status, 0);
            break;
        }
        usleep (5000);
    }
}

static void
s_tail (const char *log)
{
    FILE *file = fopen (log, "r");
    if (!file) {
        return;
    }
    char line[512];
    char lines[20][512];
    int n = 0;
    while (fgets (line, sizeof line, file)) {
        snprintf (lines[n % 20], sizeof lines[0], "%s", line);
        n++;
    }
    fclose (file);
    fprintf (stderr, "--- %s\n", log);
    for (int i = n > 20 ? n - 20 : 0; i < n; i++) {
        fputs (lines[i % 20], stderr);
    }
}

static int
s_unlink_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st;
    (void) flag;
    (void) ftw;
    return remove (path);
}

/* Stops workers first (they say BYE), then the broker; removes the folder unless kept. */
static void
s_fleet_stop (s_fleet_t *fleet, bool keep, bool show_logs)
{
    for (int i = 0; i < fleet->n_workers; i++) {
        s_stop (fleet->workers[i]);
    }
    fleet->n_workers = 0;
    s_stop (fleet->broker);
    fleet->broker = 0;
    if (!fleet->dir[0]) {
        return;
    }
    if (show_logs) {
        char log[600];
        snprintf (log, sizeof log, "%s/broker.log", fleet->dir);
        s_tail (log);
        snprintf (log, sizeof log, "%s/worker-0.log", fleet->dir);
        s_tail (log);
    }
    if (keep) {
        fprintf (stderr, "gridq-bench: kept %s\n", fleet->dir);
    } else {
        nftw (fleet->dir, s_unlink_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    fleet->dir[0] = 0;
}

/* Nodes online or busy, per STATS; -1 when the broker does not answer. */
static int
s_nodes_up (gq_client_t *client)
{
    json_t *stats = gq_client_call (client, "STATS", NULL);
    if (!stats) {
        return -1;
    }
    json_t *nodes = json_object_get (stats, "nodes");
    int n = (int) (json_integer_value (json_object_get (nodes, "online")) +
                   json_integer_value (json_object_get (nodes, "busy")));
    json_decref (stats);
    return n;
}

static gq_client_t *
s_client (const char *endpoint, int timeout_ms)
{
    gq_client_opts_t opts = {endpoint, timeout_ms, NULL, NULL};
    char why[256];
    gq_client_t *client = gq_client_new (&opts, why, sizeof why);
    if (!client) {
        fprintf (stderr, "gridq-bench: %s\n", why);
    }
    return client;
}

/* Waits until the broker answers and at least n nodes are up; false on timeout or death. */
static bool
s_fleet_wait (s_fleet_t *fleet, int n)
{
    gq_client_t *client = s_client (fleet->endpoint, 500);
    if (!client) {
        return false;
    }
    int64_t deadline = gq_mono_us () + GQ_BENCH_START_TIMEOUT_MS * 1000LL;
    int up = -1;
    while (!s_interrupted && gq_mono_us () < deadline) {
        if (!s_running (fleet->broker)) {
            fprintf (stderr, "gridq-bench: the broker exited during start-up\n");
            gq_client_destroy (&client);
            return false;
        }
        up = s_nodes_up (client);
        if (up >= n) {
            break;
        }
        usleep (up < 0 ? 50000 : 20000);
    }
    gq_client_destroy (&client);
    if (up < n) {
        fprintf (stderr, "gridq-bench: %d of %d workers registered within %d s\n",
                 up < 0 ? 0 : up, n, GQ_BENCH_START_TIMEOUT_MS / 1000);
        return false;
    }
    return true;
}

static int
s_fleet_start (s_fleet_t *fleet, const s_opts_t *opts)
{
    const char *tmp = opts->tmp ? opts->tmp : getenv ("TMPDIR");
    snprintf (fleet->dir, sizeof fleet->dir, "%s/gridq-bench-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp (fleet->dir)) {
        fprintf (stderr, "gridq-bench: cannot create %s: %s\n", fleet->dir, strerror (errno));
        fleet->dir[0] = 0;
        return -1;
    }
    int port = gq_loopback_port ();
    if (port < 0) {
        fprintf (stderr, "gridq-bench: no free loopback port\n");
        return -1;
    }
    snprintf (fleet->endpoint, sizeof fleet->endpoint, "tcp://127.0.0.1:%d", port);
    char db[600], log[600];
    snprintf (db, sizeof db, "%s/gridq.db", fleet->dir);
    snprintf (log, sizeof log, "%s/broker.log", fleet->dir);
    char *broker_argv[] = {NULL, "--endpoint", fleet->endpoint, "--db", db, "--durability",
                           (char *) opts->durability, NULL};
    fleet->broker = s_spawn (opts->bin, "gridq-broker", broker_argv, log);
    if (fleet->broker < 0) {
        fleet->broker = 0;
        return -1;
    }
    if (!s_fleet_wait (fleet, 0)) {
        return -1;
    }
    char slots[16], engine[1100], window[16];
    snprintf (slots, sizeof slots, "%d", opts->slots);
    if (opts->mode == S_PARTIALS && strchr (opts->bin, '\'')) {
        fprintf (stderr, "gridq-bench: --bin '%s': a quote in the path\n", opts->bin);
        return -1;
    }
    for (int i = 0; i < opts->workers; i++) {
        char name[32];
        snprintf (name, sizeof name, "bench-%d", i);
        snprintf (log, sizeof log, "%s/worker-%d.log", fleet->dir, i);
        char *worker_argv[] = {NULL,  "--broker", fleet->endpoint, "--name", name, "--backend",
                               "cpu", "--slots",  slots,           NULL,   NULL, NULL, NULL,
                               NULL};
        if (opts->mode == S_PARTIALS) {
            /* The engine beside us, its path quoted for the worker's /bin/sh -c. */
            snprintf (engine, sizeof engine, "partials='%s/gridq-bench-engine'", opts->bin);
            worker_argv[9] = "--engine";
            worker_argv[10] = engine;
            if (opts->stream_window) {
                snprintf (window, sizeof window, "%d", opts->stream_window);
                worker_argv[11] = "--stream-window";
                worker_argv[12] = window;
            }
        }
        pid_t pid = s_spawn (opts->bin, "gridq-worker", worker_argv, log);
        if (pid < 0) {
            return -1;
        }
        fleet->workers[fleet->n_workers++] = pid;
    }
    return s_fleet_wait (fleet, opts->workers) ? 0 : -1;
}

/* VmRSS of pid in KiB, or -1. */
static int64_t
s_rss_kb (pid_t pid)
{
    char path[64], line[256];
    snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *file = fopen (path, "r");
    if (!file) {
        return -1;
    }
    int64_t kb = -1;
    while (fgets (line, sizeof line, file)) {
        if (strncmp (line, "VmRSS:", 6) == 0) {
            kb = strtoll (line + 6, NULL, 10);
            break;
        }
    }
    fclose (file);
    return kb;
}

/* CPU time of pid (user and system, /proc/PID/stat) in seconds, to a clock tick; NAN when it
   cannot be read. */
static double
s_cpu_seconds (pid_t pid)
{
    char path[64], line[1024];
    snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
    FILE *file = fopen (path, "r");
    if (!file) {
        return NAN;
    }
    char *got = fgets (line, sizeof line, file);
    fclose (file);
    /* The command name (field 2) may hold spaces and parentheses: count from its last ')'. */
    char *fields = got ? strrchr (line, ')') : NULL;
    unsigned long long utime, stime;
    if (!fields || sscanf (fields + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                           &utime, &stime) != 2) {
        return NAN;
    }
    return (double) (utime + stime) / (double) sysconf (_SC_CLK_TCK);
}

/* ---- Jobs ------------------------------------------------------------------------------------ */

/* The payload every job carries: {"data": "xxxx..."} with payload_bytes characters. */
static json_t *
s_payload (int payload_bytes)
{
    char *text = (char *) malloc ((size_t) payload_bytes + 1);
    if (!text) {
        return NULL;
    }
    memset (text, 'x', (size_t) payload_bytes);
    text[payload_bytes] = 0;
    json_t *payload = json_pack ("{s:s}", "data", text);
    free (text);
    return payload;
}

/* count echo jobs sharing one payload object (jansson serialises a shared value each time). */
static json_t *
s_jobs (size_t count, json_t *payload)
{
    json_t *jobs = json_array ();
    for (size_t i = 0; jobs && i < count; i++) {
        if (json_array_append_new (jobs, json_pack ("{s:s, s:O}", "kind", "echo", "payload",
                                                    payload))) {
            json_decref (jobs);
            return NULL;
        }
    }
    return jobs;
}

/* Counts the jobs of a FINISHED body: done ones whose result is their payload (echo: a string
   of opts->payload_bytes) in *done, others (and missing ids) in *failed. Returns how many jobs
   the message reported. */
static int64_t
s_count_finished (json_t *body, const s_opts_t *opts, int64_t *done, int64_t *failed)
{
    json_t *jobs = json_object_get (body, "jobs");
    json_t *missing = json_object_get (body, "missing");
    size_t i;
    json_t *job;
    json_array_foreach (jobs, i, job) {
        const char *state = json_string_value (json_object_get (job, "state"));
        /* An echo job's result is its payload: {"data": "xxx..."}. */
        json_t *data = json_object_get (json_object_get (job, "result"), "data");
        if (state && streq (state, "done") && json_is_string (data) &&
            json_string_length (data) == (size_t) opts->payload_bytes) {
            (*done)++;
        } else {
            if (*failed == 0) {
                char *text = json_dumps (job, JSON_COMPACT);
                fprintf (stderr, "gridq-bench: a job did not finish done: %.400s\n",
                         text ? text : "?");
                free (text);
            }
            (*failed)++;
        }
    }
    *failed += (int64_t) json_array_size (missing);
    return (int64_t) (json_array_size (jobs) + json_array_size (missing));
}

/* What gq_client_wait reports, counted (s_on_finished). */
typedef struct {
    int64_t done;
    int64_t failed;
} s_tally_t;

static int
s_on_finished (void *arg, json_t *job)
{
    s_tally_t *tally = (s_tally_t *) arg;
    const char *state = json_string_value (json_object_get (job, "state"));
    if (state && streq (state, "done")) {
        tally->done++;
    } else {
        tally->failed++;
    }
    return 0;
}

static void
s_report_error (const char *what, json_t *body)
{
    const char *code = json_string_value (json_object_get (body, "code"));
    const char *message = json_string_value (json_object_get (body, "message"));
    fprintf (stderr, "gridq-bench: %s: %s: %s\n", what, code ? code : "?",
             message ? message : "?");
}

/* ---- Polling: STATUS about finished and unknown ids while a throughput run goes on ----------- */

/* What the poller thread reads; its owner keeps it until the thread has been destroyed. */
typedef struct {
    const char *endpoint;      /* the broker */
    const int64_t *finished;   /* ids of jobs that have finished */
    int64_t count;             /* finished ids, and unknown ones alike */
    int64_t unknown_first;     /* first unknown id: beyond any id the run hands out */
    atomic_uint ended;         /* bumped (release) as the thread's last act, read (acquire) by
                                  its owner after zactor_destroy: the pipe's signal is not what
                                  ThreadSanitizer sees */
} s_poller_args_t;

/* ids[0..count), or without ids first, first + 1, ..., as a new JSON array; NULL when out of
   memory. */
static json_t *
s_ids_json (const int64_t *ids, int64_t first, int64_t count)
{
    json_t *array = json_array ();
    for (int64_t i = 0; array && i < count; i++) {
        if (json_array_append_new (array, json_integer (ids ? ids[i] : first + i))) {
            json_decref (array);
            return NULL;
        }
    }
    return array;
}

_Static_assert (GQ_BENCH_POLL_CHUNK_IDS <= GQ_MAX_IDS, "a STATUS takes GQ_MAX_IDS ids at most");

/* The poller thread (a zactor) with a client of its own. Sends "ii" on the pipe once connected
   (0 or -1, the thread's CPU-time clock), waits for GO, then asks STATUS about
   GQ_BENCH_POLL_CHUNK_IDS ids at a time, finished and unknown chunks in turn, until STOP; answers
   STOP with "i88" (0 or -1, requests answered, ids asked in them) and waits for $TERM. A reply
   that does not find every finished id, or that finds an unknown one, is an error: polling
   stops there. */
static void
s_poller (zsock_t *pipe, void *arg)
{
    const s_poller_args_t *args = (const s_poller_args_t *) arg;
    zsock_signal (pipe, 0);
    json_t *chunks = json_array ();
    for (int64_t first = 0; chunks && first < args->count; first += GQ_BENCH_POLL_CHUNK_IDS) {
        int64_t n = args->count - first < GQ_BENCH_POLL_CHUNK_IDS ? args->count - first
                                                                  : GQ_BENCH_POLL_CHUNK_IDS;
        if (json_array_append_new (chunks, s_ids_json (args->finished + first, 0, n)) ||
            json_array_append_new (chunks, s_ids_json (NULL, args->unknown_first + first, n))) {
            json_decref (chunks);
            chunks = NULL;
        }
    }
    int rc = chunks ? 0 : -1;
    if (!chunks) {
        fprintf (stderr, "gridq-bench: poll: out of memory\n");
    }
    gq_client_t *client = rc ? NULL : s_client (args->endpoint, GQ_BENCH_CLIENT_TIMEOUT_MS);
    /* Connected before the run starts: the connection is not part of what is measured. */
    json_t *pong = client ? gq_client_call (client, "PING", NULL) : NULL;
    if (client && !pong) {
        fprintf (stderr, "gridq-bench: poll: %s\n", gq_client_error (client));
    }
    clockid_t clock = 0;
    if (!pong || pthread_getcpuclockid (pthread_self (), &clock)) {
        rc = -1;
    }
    json_decref (pong);
    zsock_send (pipe, "ii", rc, (int) clock);

    size_t n_chunks = json_array_size (chunks);
    uint64_t requests = 0, ids = 0;
    bool polling = false;
    while (true) {
        if (!polling || (zsock_events (pipe) & ZMQ_POLLIN)) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            if (command && streq (command, "GO")) {
                polling = rc == 0;
            } else if (command && streq (command, "STOP")) {
                polling = false;
                zsock_send (pipe, "i88", rc, requests, ids);
            }
            zstr_free (&command);
            if (term) {
                break;
            }
            continue;
        }
        size_t index = (size_t) (requests % n_chunks);
        bool unknown = index % 2 == 1;
        json_t *chunk = json_array_get (chunks, index);
        size_t asked = json_array_size (chunk);
        json_t *reply = gq_client_call (client, "STATUS", json_pack ("{s:O}", "ids", chunk));
        size_t found = json_array_size (json_object_get (reply, "jobs"));
        size_t missing = json_array_size (json_object_get (reply, "missing"));
        if (!reply) {
            if (!s_interrupted) {
                fprintf (stderr, "gridq-bench: poll: %s\n", gq_client_error (client));
            }
            rc = -1;
        } else if (found != (unknown ? 0 : asked) || missing != (unknown ? asked : 0)) {
            fprintf (stderr,
                     "gridq-bench: poll: STATUS of %zu %s ids found %zu of them and missed %zu\n",
                     asked, unknown ? "unknown" : "finished", found, missing);
            rc = -1;
        } else {
            requests++;
            ids += asked;
        }
        polling = rc == 0;
        json_decref (reply);
    }
    gq_client_destroy (&client);
    json_decref (chunks);
    atomic_fetch_add_explicit (&((s_poller_args_t *) arg)->ended, 1, memory_order_release);
}

/* A throughput run's polling, from the jobs it polls to the CPU time it took. */
typedef struct {
    s_poller_args_t args;      /* what the poller reads */
    int64_t *finished;         /* the finished ids (args.finished), ours */
    zactor_t *poller;          /* the poller thread, or NULL */
    clockid_t clock;           /* its CPU-time clock */
    pid_t broker;              /* the spawned broker, or 0 */
    double poller_cpu_start;   /* the poller's CPU seconds at the start of the measured run */
    double broker_cpu_start;   /* the broker's likewise; NAN without one */
} s_poll_t;

static double
s_clock_seconds (clockid_t clock)
{
    struct timespec now;
    return clock_gettime (clock, &now) ? NAN : (double) now.tv_sec + now.tv_nsec / 1e9;
}

/* Before the measured run: submits opts->poll echo jobs and waits until all are done, then
   starts the poller and waits until it is connected. broker: the spawned broker's PID, or 0.
   0, or -1 after saying why; s_poll_end frees self either way. */
static int
s_poll_prepare (s_poll_t *self, gq_client_t *client, const s_opts_t *opts, pid_t broker)
{
    memset (self, 0, sizeof *self);
    self->broker = broker;
    self->broker_cpu_start = NAN;
    self->poller_cpu_start = NAN;
    json_t *payload = s_payload (opts->payload_bytes);
    json_t *jobs = s_jobs ((size_t) opts->poll, payload);
    self->finished = (int64_t *) calloc ((size_t) opts->poll, sizeof *self->finished);
    int rc = 0;
    if (!jobs || !self->finished) {
        fprintf (stderr, "gridq-bench: out of memory\n");
        rc = -1;
    }
    gq_client_set_submit_window (client, (size_t) opts->batch, (size_t) opts->window);
    if (rc == 0 && gq_client_submit (client, jobs, true, self->finished)) {
        fprintf (stderr, "gridq-bench: poll: submit: %s\n", gq_client_error (client));
        rc = -1;
    }
    s_tally_t tally = {0, 0};
    if (rc == 0 &&
        gq_client_wait (client, self->finished, (size_t) opts->poll, -1, s_on_finished, &tally)) {
        fprintf (stderr, "gridq-bench: poll: wait: %s\n", gq_client_error (client));
        rc = -1;
    }
    if (rc == 0 && tally.done != opts->poll) {
        fprintf (stderr, "gridq-bench: poll: %lld of the %lld jobs to poll did not finish done\n",
                 (long long) (opts->poll - tally.done), (long long) opts->poll);
        rc = -1;
    }
    json_decref (jobs);
    json_decref (payload);
    if (rc) {
        return rc;
    }
    /* Unknown ids lie beyond the last one handed out, and beyond those the run hands out. */
    int64_t last = 0;
    for (int64_t i = 0; i < opts->poll; i++) {
        last = self->finished[i] > last ? self->finished[i] : last;
    }
    self->args = (s_poller_args_t) {gq_client_endpoint (client), self->finished, opts->poll,
                                    last + opts->jobs + GQ_BENCH_POLL_GAP_IDS, 0};
    self->poller = zactor_new (s_poller, &self->args);
    int ready = -1, clock = 0;
    if (!self->poller || zsock_recv (self->poller, "ii", &ready, &clock) || ready) {
        fprintf (stderr, "gridq-bench: poll: the poller did not start\n");
        return -1;
    }
    self->clock = (clockid_t) clock;
    return 0;
}

/* At the start of the measured run: reads the CPU clocks and tells the poller to begin. */
static void
s_poll_go (s_poll_t *self)
{
    if (self->broker) {
        self->broker_cpu_start = s_cpu_seconds (self->broker);
    }
    self->poller_cpu_start = s_clock_seconds (self->clock);
    zstr_send (self->poller, "GO");
}

/* At the end of the measured run (result->seconds set): the CPU times and the poller's counts
   into result; stops the poller and frees what self holds. 0, or -1 when polling failed. */
static int
s_poll_end (s_poll_t *self, s_result_t *result)
{
    int rc = -1;
    if (self->poller) {
        result->poller_cpu_seconds = s_clock_seconds (self->clock) - self->poller_cpu_start;
        if (self->broker) {
            result->broker_cpu_seconds = s_cpu_seconds (self->broker) - self->broker_cpu_start;
        }
        uint64_t requests = 0, ids = 0;
        zstr_send (self->poller, "STOP");
        if (zsock_recv (self->poller, "i88", &rc, &requests, &ids)) {
            rc = -1;
        }
        result->poll_requests = (int64_t) requests;
        result->poll_ids = (int64_t) ids;
    }
    result->cpus = (int) sysconf (_SC_NPROCESSORS_ONLN);
    zactor_destroy (&self->poller);
    atomic_load_explicit (&self->args.ended, memory_order_acquire);
    free (self->finished);
    self->finished = NULL;
    return rc;
}

/* ---- Throughput: a window of watched SUBMITs, refilled as batches finish --------------------- */

typedef struct {
    int64_t req;               /* the SUBMIT's correlation id; 0 for a free entry */
    int64_t left;              /* jobs of it not finished yet */
} s_batch_t;

/* broker: the spawned broker's PID (--poll reads its CPU time), or 0. */
static int
s_run_throughput (gq_client_t *client, const s_opts_t *opts, pid_t broker, s_result_t *result)
{
    json_t *payload = s_payload (opts->payload_bytes);
    json_t *full = s_jobs ((size_t) opts->batch, payload);
    size_t last_count = (size_t) (opts->jobs % opts->batch);
    json_t *last = last_count ? s_jobs (last_count, payload) : NULL;
    s_batch_t *batches = (s_batch_t *) calloc ((size_t) opts->window, sizeof *batches);
    int rc = 0;
    if (!full || (last_count && !last) || !batches) {
        fprintf (stderr, "gridq-bench: out of memory\n");
        rc = -1;
    }
    s_poll_t poll;
    memset (&poll, 0, sizeof poll);
    if (opts->poll && rc == 0) {
        rc = s_poll_prepare (&poll, client, opts, broker);
        if (rc == 0) {
            s_poll_go (&poll);
        }
    }
    int64_t submitted = 0, reported = 0;
    int in_flight = 0;
    int64_t start_us = gq_mono_us (), end_us = start_us;
    while (rc == 0 && reported < opts->jobs && !s_interrupted) {
        /* Keep the window full. */
        while (in_flight < opts->window && submitted < opts->jobs) {
            int64_t left = opts->jobs - submitted;
            json_t *jobs = left >= opts->batch ? full : last;
            int64_t count = (int64_t) json_array_size (jobs);
            int64_t req = gq_client_send (client, "SUBMIT",
                                          json_pack ("{s:O, s:b, s:b}", "jobs", jobs, "watch", 1,
                                                     "brief", !opts->full));
            if (req < 0) {
                fprintf (stderr, "gridq-bench: submit: %s\n", gq_client_error (client));
                rc = -1;
                break;
            }
            int slot = 0;
            while (batches[slot].req) {
                slot++;
            }
            batches[slot] = (s_batch_t) {req, count};
            submitted += count;
            in_flight++;
        }
        if (rc) {
            break;
        }
        char command[32];
        int64_t req;
        json_t *body = NULL;
        int got = gq_client_recv (client, GQ_BENCH_STALL_MS, command, &req, &body, NULL);
        if (got) {
            fprintf (stderr, "gridq-bench: %s (%lld of %lld jobs finished)\n",
                     gq_client_error (client), (long long) reported, (long long) opts->jobs);
            rc = -1;
            break;
        }
        int slot = -1;
        for (int i = 0; i < opts->window && slot < 0; i++) {
            if (batches[i].req == req) {
                slot = i;
            }
        }
        if (streq (command, "ERROR")) {
            s_report_error ("SUBMIT refused", body);
            rc = -1;
        } else if (slot >= 0 && streq (command, "FINISHED")) {
            /* The SUBMIT reply itself needs nothing: its jobs are counted as they finish. */
            int64_t n = s_count_finished (body, opts, &result->jobs, &result->failed);
            reported += n;
            batches[slot].left -= n;
            if (batches[slot].left <= 0) {
                batches[slot].req = 0;
                in_flight--;
            }
            end_us = gq_mono_us ();
        }
        json_decref (body);
    }
    result->seconds = (end_us - start_us) / 1e6;
    if (opts->poll && s_poll_end (&poll, result)) {
        rc = -1;
    }
    free (batches);
    json_decref (last);
    json_decref (full);
    json_decref (payload);
    return rc;
}

/* ---- Latency: one job in flight ---------------------------------------------------------------- */

static int
s_run_latency (gq_client_t *client, const s_opts_t *opts, s_result_t *result)
{
    json_t *payload = s_payload (opts->payload_bytes);
    json_t *one = s_jobs (1, payload);
    bench_samples_t *samples = bench_samples_new ((size_t) opts->jobs);
    int rc = 0;
    if (!one || !samples) {
        fprintf (stderr, "gridq-bench: out of memory\n");
        rc = -1;
    }
    int64_t start_us = gq_mono_us ();
    for (int64_t i = 0; rc == 0 && !s_interrupted && i < opts->warmup + opts->jobs; i++) {
        if (i == opts->warmup) {
            start_us = gq_mono_us ();
        }
        int64_t t0 = gq_mono_us ();
        int64_t req =
            gq_client_send (client, "SUBMIT", json_pack ("{s:O, s:b, s:b}", "jobs", one, "watch", 1,
                                                         "brief", !opts->full));
        if (req < 0) {
            fprintf (stderr, "gridq-bench: submit: %s\n", gq_client_error (client));
            rc = -1;
            break;
        }
        bool finished = false;
        while (!finished) {
            char command[32];
            int64_t got_req;
            json_t *body = NULL;
            if (gq_client_recv (client, GQ_BENCH_STALL_MS, command, &got_req, &body, NULL)) {
                fprintf (stderr, "gridq-bench: %s (after %lld round trips)\n",
                         gq_client_error (client), (long long) i);
                rc = -1;
                break;
            }
            if (streq (command, "ERROR")) {
                s_report_error ("SUBMIT refused", body);
                rc = -1;
                finished = true;
            } else if (got_req == req && streq (command, "FINISHED")) {
                int64_t done = 0;
                s_count_finished (body, opts, i >= opts->warmup ? &result->jobs : &done,
                                  &result->failed);
                finished = true;
            }
            json_decref (body);
        }
        if (rc == 0 && i >= opts->warmup) {
            bench_samples_add (samples, gq_mono_us () - t0);
        }
    }
    result->seconds = (gq_mono_us () - start_us) / 1e6;
    if (rc == 0) {
        result->latency = bench_samples_latency (samples);
    }
    bench_samples_destroy (&samples);
    json_decref (one);
    json_decref (payload);
    return rc;
}

/* ---- Batch: one big submit through the high-level API, then one wait ----------------------- */

static int
s_run_batch (gq_client_t *client, const s_opts_t *opts, s_result_t *result)
{
    json_t *payload = s_payload (opts->payload_bytes);
    json_t *jobs = s_jobs ((size_t) opts->jobs, payload);
    int64_t *ids = (int64_t *) calloc ((size_t) opts->jobs, sizeof *ids);
    if (!jobs || !ids) {
        fprintf (stderr, "gridq-bench: out of memory\n");
        free (ids);
        json_decref (jobs);
        json_decref (payload);
        return -1;
    }
    gq_client_set_submit_window (client, (size_t) opts->batch, (size_t) opts->window);
    int64_t start_us = gq_mono_us ();
    int rc = gq_client_submit (client, jobs, true, ids);
    int64_t acked_us = gq_mono_us ();
    if (rc) {
        fprintf (stderr, "gridq-bench: submit: %s\n", gq_client_error (client));
    } else {
        s_tally_t tally = {0, 0};
        rc = gq_client_wait (client, ids, (size_t) opts->jobs, -1, s_on_finished, &tally);
        if (rc) {
            fprintf (stderr, "gridq-bench: wait: %s\n", gq_client_error (client));
        }
        result->jobs = tally.done;
        result->failed = tally.failed;
    }
    result->submit_seconds = (acked_us - start_us) / 1e6;
    result->seconds = (gq_mono_us () - start_us) / 1e6;
    free (ids);
    json_decref (jobs);
    json_decref (payload);
    return rc ? -1 : 0;
}

/* ---- Memory: queued jobs and the broker's resident set --------------------------------------- */

static int
s_run_memory (gq_client_t *client, const s_opts_t *opts, pid_t broker, s_result_t *result)
{
    json_t *payload = s_payload (opts->payload_bytes);
    char *payload_text = json_dumps (payload, JSON_COMPACT);
    result->payload_json_bytes = payload_text ? (double) strlen (payload_text) : 0;
    free (payload_text);
    size_t chunk = opts->jobs < GQ_BENCH_MEMORY_CHUNK_JOBS ? (size_t) opts->jobs
                                                           : GQ_BENCH_MEMORY_CHUNK_JOBS;
    json_t *full = s_jobs (chunk, payload);
    int64_t *ids = (int64_t *) calloc (chunk, sizeof *ids);
    int rc = 0;
    if (!full || !ids) {
        fprintf (stderr, "gridq-bench: out of memory\n");
        rc = -1;
    }
    gq_client_set_submit_window (client, (size_t) opts->batch, (size_t) opts->window);
    /* The baseline is the broker as it stands after start-up: schema, SQLite cache, czmq. */
    result->rss_before_kb = s_rss_kb (broker);
    int64_t start_us = gq_mono_us ();
    int64_t queued = 0;
    while (rc == 0 && queued < opts->jobs && !s_interrupted) {
        json_t *jobs = full;
        size_t left = (size_t) (opts->jobs - queued);
        if (left < chunk) {
            jobs = s_jobs (left, payload);
        }
        if (gq_client_submit (client, jobs, false, ids)) {
            fprintf (stderr, "gridq-bench: submit: %s (%lld jobs queued)\n",
                     gq_client_error (client), (long long) queued);
            rc = -1;
        } else {
            queued += (int64_t) json_array_size (jobs);
        }
        if (jobs != full) {
            json_decref (jobs);
        }
    }
    result->seconds = (gq_mono_us () - start_us) / 1e6;
    result->jobs = queued;
    if (rc == 0) {
        /* Every SUBMIT was acknowledged after its commit: the jobs are in the broker's queue. */
        json_t *stats = gq_client_call (client, "STATS", NULL);
        int64_t in_queue =
            json_integer_value (json_object_get (json_object_get (stats, "jobs"), "queued"));
        json_decref (stats);
        if (in_queue < queued) {
            fprintf (stderr, "gridq-bench: the broker reports %lld queued jobs, expected %lld\n",
                     (long long) in_queue, (long long) queued);
        }
        result->rss_after_kb = s_rss_kb (broker);
        result->bytes_per_job =
            (double) (result->rss_after_kb - result->rss_before_kb) * 1024.0 / (double) queued;
    }
    free (ids);
    json_decref (full);
    json_decref (payload);
    return rc;
}

/* ---- Partials: an engine's partials through the broker to this client ----------------------- */

/* A job of a partials run, as its partials arrive. */
typedef struct {
    int64_t id;                /* the job's id; 0 for a free entry */
    int64_t received;          /* partials received */
    int64_t dropped;           /* partials the worker says it dropped ("dropped" of the next) */
    int64_t next_seq;          /* seq expected next */
    int64_t disorder;          /* partials with a seq below next_seq (must stay 0) */
} s_stream_job_t;

/* What the partial callback and a stream run's loop count. */
typedef struct {
    s_stream_job_t *jobs;      /* the run's jobs, in the order their first partial came */
    size_t count;              /* entries of jobs in use */
    size_t cap;                /* entries of jobs */
    int64_t skip;              /* a partial whose "i" is below this is not sampled (warm-up) */
    bench_samples_t *samples;  /* engine write -> callback in us, or NULL */
    int64_t unstamped;         /* partials without a "t" (must stay 0) */
    int64_t written;           /* partials the engine says it wrote (results' "partials") */
    int64_t done;              /* jobs that finished done */
    int64_t failed;            /* jobs that finished otherwise */
} s_stream_t;

/* A partials run's figures. */
typedef struct {
    bench_latency_t ping;      /* PING round trip */
    bench_latency_t partial;   /* engine write -> partial callback, one partial every interval */
    bench_latency_t finished;  /* engine result write -> FINISHED read, one job at a time */
    int64_t samples;           /* samples of each of the three */
    int64_t jobs;              /* jobs streaming at once in the throughput run */
    int64_t written;           /* partials the engine wrote in it */
    int64_t received;          /* partials received in it */
    int64_t dropped;           /* partials dropped at the worker (the messages' "dropped") */
    int64_t lost;              /* written, neither received nor reported dropped */
    double seconds;            /* SUBMIT to the last FINISHED of the throughput run */
    bench_latency_t loaded;    /* engine write -> callback in the throughput run (queueing) */
    int64_t failed;            /* jobs that did not finish done, and broken counts */
} s_partials_result_t;

/* gq_client_partial_fn: counts the partial for its job and samples its engine -> here time. */
static void
s_on_partial (void *arg, int64_t id, int64_t seq, json_t *partial, int64_t dropped)
{
    int64_t now_us = bench_wall_us ();
    s_stream_t *stream = (s_stream_t *) arg;
    s_stream_job_t *job = NULL;
    for (size_t i = stream->count; i > 0 && !job; i--) {
        job = stream->jobs[i - 1].id == id ? &stream->jobs[i - 1] : NULL;
    }
    if (!job && stream->count < stream->cap) {
        job = &stream->jobs[stream->count++];
        job->id = id;
    }
    if (!job) {
        return; /* not a job of ours: the FINISHED check counts what is missing */
    }
    job->received++;
    job->dropped += dropped;
    if (seq < job->next_seq) {
        job->disorder++;
    }
    job->next_seq = seq + 1;
    json_t *stamp = json_object_get (partial, "t");
    if (!json_is_integer (stamp)) {
        stream->unstamped++;
    } else if (stream->samples &&
               json_integer_value (json_object_get (partial, "i")) >= stream->skip) {
        bench_samples_add (stream->samples, now_us - (int64_t) json_integer_value (stamp));
    }
}

/* The kind partials job: n partials interval_us apart, each with a pad of pad characters. */
static json_t *
s_stream_job (int64_t n, int interval_us, int pad)
{
    return json_pack ("{s:s, s:{s:I, s:i, s:i}}", "kind", "partials", "payload", "partials",
                      (json_int_t) n, "interval_us", interval_us, "pad", pad);
}

/* Submits jobs (taken) with watch and reads until every one has finished, the partials going
   through s_on_partial to stream. For each job that finished done, its result's "partials"
   adds to stream->written; with finished (not NULL), its result's stamp gives a sample of
   engine result -> FINISHED. 0, or -1 after saying why. */
static int
s_stream_run (gq_client_t *client, s_stream_t *stream, json_t *jobs, bench_samples_t *finished)
{
    int64_t count = (int64_t) json_array_size (jobs);
    int64_t req = gq_client_send (client, "SUBMIT",
                                  json_pack ("{s:o, s:b, s:b}", "jobs", jobs, "watch", 1,
                                             "brief", 1));
    if (req < 0) {
        fprintf (stderr, "gridq-bench: submit: %s\n", gq_client_error (client));
        return -1;
    }
    int64_t reported = 0;
    int rc = 0;
    while (rc == 0 && reported < count && !s_interrupted) {
        char command[32];
        int64_t got_req;
        json_t *body = NULL;
        if (gq_client_recv (client, GQ_BENCH_STALL_MS, command, &got_req, &body, NULL)) {
            fprintf (stderr, "gridq-bench: %s (%lld of %lld jobs finished)\n",
                     gq_client_error (client), (long long) reported, (long long) count);
            rc = -1;
            break;
        }
        int64_t now_us = bench_wall_us ();
        if (streq (command, "ERROR")) {
            s_report_error ("SUBMIT refused", body);
            rc = -1;
        } else if (got_req == req && streq (command, "FINISHED")) {
            size_t i;
            json_t *job;
            json_array_foreach (json_object_get (body, "jobs"), i, job) {
                const char *state = json_string_value (json_object_get (job, "state"));
                json_t *result = json_object_get (job, "result");
                json_t *written = json_object_get (result, "partials");
                json_t *stamp = json_object_get (result, "t");
                if (state && streq (state, "done") && json_is_integer (written) &&
                    json_is_integer (stamp)) {
                    stream->done++;
                    stream->written += (int64_t) json_integer_value (written);
                    if (finished) {
                        bench_samples_add (finished, now_us - (int64_t) json_integer_value (stamp));
                    }
                } else {
                    char *text = json_dumps (job, JSON_COMPACT);
                    fprintf (stderr, "gridq-bench: a job did not finish done: %.400s\n",
                             text ? text : "?");
                    free (text);
                    stream->failed++;
                }
            }
            json_t *missing = json_object_get (body, "missing");
            stream->failed += (int64_t) json_array_size (missing);
            reported += (int64_t) (json_array_size (json_object_get (body, "jobs")) +
                                   json_array_size (missing));
        }
        json_decref (body);
    }
    return s_interrupted ? -1 : rc;
}

/* The PING round trip, warm-up first. */
static int
s_partials_ping (gq_client_t *client, const s_opts_t *opts, bench_latency_t *latency)
{
    bench_samples_t *samples = bench_samples_new ((size_t) opts->samples);
    int rc = samples ? 0 : -1;
    for (int i = 0; rc == 0 && !s_interrupted && i < opts->warmup + opts->samples; i++) {
        int64_t t0 = gq_mono_us ();
        json_t *pong = gq_client_call (client, "PING", NULL);
        if (!pong) {
            fprintf (stderr, "gridq-bench: PING: %s\n", gq_client_error (client));
            rc = -1;
        } else if (i >= opts->warmup) {
            bench_samples_add (samples, gq_mono_us () - t0);
        }
        json_decref (pong);
    }
    if (rc == 0 && !s_interrupted) {
        *latency = bench_samples_latency (samples);
    }
    bench_samples_destroy (&samples);
    return s_interrupted ? -1 : rc;
}

/* Checks a stream run's counts: every job done, every partial in order and stamped, and no
   more received than written. Adds the trouble to result->failed; 0, or -1 when there was some. */
static int
s_stream_check (const s_stream_t *stream, int64_t jobs, s_partials_result_t *result)
{
    int64_t received = 0, dropped = 0, disorder = 0;
    for (size_t i = 0; i < stream->count; i++) {
        received += stream->jobs[i].received;
        dropped += stream->jobs[i].dropped;
        disorder += stream->jobs[i].disorder;
    }
    int64_t trouble = stream->failed + (jobs - stream->done - stream->failed) + disorder +
                      stream->unstamped + (received + dropped > stream->written);
    if (disorder || stream->unstamped || received + dropped > stream->written) {
        fprintf (stderr,
                 "gridq-bench: partials: %lld out of order, %lld without a stamp, %lld received "
                 "+ %lld dropped of %lld written\n",
                 (long long) disorder, (long long) stream->unstamped, (long long) received,
                 (long long) dropped, (long long) stream->written);
    }
    result->failed += trouble;
    return trouble ? -1 : 0;
}

static int
s_run_partials (gq_client_t *client, const s_opts_t *opts, s_partials_result_t *result)
{
    size_t cap = (size_t) (opts->jobs > 1 ? opts->jobs : 1);
    s_stream_t stream;
    memset (&stream, 0, sizeof stream);
    stream.jobs = (s_stream_job_t *) calloc (cap, sizeof *stream.jobs);
    stream.cap = cap;
    bench_samples_t *samples = bench_samples_new ((size_t) opts->samples);
    bench_samples_t *finished = bench_samples_new ((size_t) opts->samples);
    int rc = stream.jobs && samples && finished ? 0 : -1;
    gq_client_set_partial_fn (client, s_on_partial, &stream);
    result->samples = opts->samples;
    result->jobs = opts->jobs;

    /* Latency: the PING round trip for reference; one job's partials one every interval (no
       queueing: the engine -> client path itself); then jobs with no partial, one at a time,
       their result's stamp against their FINISHED. */
    if (rc == 0 && opts->samples) {
        rc = s_partials_ping (client, opts, &result->ping);
        stream.samples = samples;
        stream.skip = opts->warmup;
        int64_t n = opts->warmup + opts->samples;
        json_t *one = json_pack ("[o]", s_stream_job (n, opts->interval_us, opts->payload_bytes));
        rc = rc ? rc : s_stream_run (client, &stream, one, NULL);
        result->partial = bench_samples_latency (samples);
        /* At this pace nothing should wait, let alone drop: a loss here is a finding. */
        if (rc == 0 && stream.jobs[0].received < n) {
            fprintf (stderr, "gridq-bench: partials: the latency run received %lld of %lld "
                     "partials (%lld dropped at the worker)\n",
                     (long long) stream.jobs[0].received, (long long) n,
                     (long long) stream.jobs[0].dropped);
            result->failed++;
            rc = -1;
        }
        stream.samples = NULL;
        for (int i = 0; rc == 0 && i < opts->warmup + opts->samples; i++) {
            json_t *none = json_pack ("[o]", s_stream_job (0, 0, 0));
            rc = s_stream_run (client, &stream, none, i >= opts->warmup ? finished : NULL);
        }
        result->finished = bench_samples_latency (finished);
        rc = rc ? rc : s_stream_check (&stream, 1 + opts->warmup + opts->samples, result);
    }

    /* Throughput: --partials in all from --jobs jobs at once, each as fast as the engine writes
       or one every --throughput-interval-us. */
    if (rc == 0 && opts->partials) {
        bench_samples_destroy (&samples);
        samples = bench_samples_new ((size_t) opts->partials);
        s_stream_job_t *entries = stream.jobs;
        memset (entries, 0, cap * sizeof *entries);
        memset (&stream, 0, sizeof stream);
        stream.jobs = entries;
        stream.cap = cap;
        stream.samples = samples;
        json_t *jobs = json_array ();
        for (int64_t i = 0; jobs && i < opts->jobs; i++) {
            int64_t n = opts->partials / opts->jobs + (i < opts->partials % opts->jobs);
            json_array_append_new (jobs,
                                   s_stream_job (n, opts->load_interval_us, opts->payload_bytes));
        }
        int64_t start_us = gq_mono_us ();
        rc = samples ? s_stream_run (client, &stream, jobs, NULL) : -1;
        result->seconds = (gq_mono_us () - start_us) / 1e6;
        rc = rc ? rc : s_stream_check (&stream, opts->jobs, result);
        for (size_t i = 0; i < stream.count; i++) {
            result->received += stream.jobs[i].received;
            result->dropped += stream.jobs[i].dropped;
        }
        result->written = stream.written;
        result->lost = stream.written - result->received - result->dropped;
        result->loaded = bench_samples_latency (samples);
    }
    gq_client_set_partial_fn (client, NULL, NULL);
    bench_samples_destroy (&finished);
    bench_samples_destroy (&samples);
    free (stream.jobs);
    return rc;
}

/* ---- Mixed: one long job first, short ones right after (placement) --------------------------- */

typedef struct {
    int64_t jobs;              /* echo jobs measured */
    int64_t long_ms;           /* the sleep job's length */
    bench_latency_t echo;      /* echo jobs: their SUBMIT sent -> their FINISHED read */
    double echo_last_ms;       /* the last echo job's FINISHED, after the long job's SUBMIT */
    double long_finished_ms;   /* the long job's FINISHED, after its SUBMIT */
    double long_start_ms;      /* the long job's started_at - submitted_at (broker, to 1 ms) */
    int64_t echo_after_long;   /* echo jobs whose FINISHED came after the long job's */
    int64_t echo_on_long_node; /* echo jobs that ran on the long job's node */
    int64_t failed;            /* jobs that did not finish done */
} s_mixed_result_t;

/* Milliseconds since the epoch of an RFC 3339 UTC time with milliseconds, or -1. */
static int64_t
s_time_ms (json_t *job, const char *key)
{
    const char *text = json_string_value (json_object_get (job, key));
    struct tm tm;
    int ms;
    memset (&tm, 0, sizeof tm);
    if (!text || sscanf (text, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &tm.tm_year, &tm.tm_mon,
                         &tm.tm_mday, &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7) {
        return -1;
    }
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return (int64_t) timegm (&tm) * 1000 + ms;
}

/* Runs --warmup echo jobs to the end (so that the broker has measured the kind), then sends one
   sleep job of long_ms and, right after it, --jobs echo jobs in SUBMITs of --batch; every job
   watched with whole FINISHED jobs (node and times). */
static int
s_run_mixed (gq_client_t *client, const s_opts_t *opts, s_mixed_result_t *result)
{
    json_t *payload = s_payload (opts->payload_bytes);
    json_t *warm = opts->warmup ? s_jobs ((size_t) opts->warmup, payload) : NULL;
    json_t *sleep = json_pack ("[{s:s, s:{s:I}}]", "kind", "sleep", "payload", "ms",
                               (json_int_t) opts->long_ms);
    bench_samples_t *samples = bench_samples_new ((size_t) opts->jobs);
    int64_t *ids = opts->warmup ? (int64_t *) calloc ((size_t) opts->warmup, sizeof *ids) : NULL;
    int rc = 0;
    if ((opts->warmup && (!warm || !ids)) || !sleep || !samples || !payload) {
        fprintf (stderr, "gridq-bench: out of memory\n");
        rc = -1;
    }
    if (rc == 0 && opts->warmup) {
        s_tally_t tally = {0, 0};
        rc = gq_client_submit (client, warm, true, ids) ||
             gq_client_wait (client, ids, (size_t) opts->warmup, -1, s_on_finished, &tally);
        if (rc || tally.failed) {
            fprintf (stderr, "gridq-bench: warm-up: %s\n",
                     rc ? gq_client_error (client) : "a job did not finish done");
            rc = -1;
        }
    }
    result->long_ms = opts->long_ms;
    int64_t long_req = -1, long_sent_us = 0, echo_sent = 0;
    size_t submits = (size_t) (opts->jobs / opts->batch + 2);
    int64_t *sent_us = (int64_t *) calloc (submits, sizeof *sent_us); /* per echo SUBMIT */
    int64_t *reqs = (int64_t *) calloc (submits, sizeof *reqs);
    int n_reqs = 0;
    if (rc == 0 && (!sent_us || !reqs)) {
        fprintf (stderr, "gridq-bench: out of memory\n");
        rc = -1;
    }
    if (rc == 0) {
        long_sent_us = gq_mono_us ();
        long_req = gq_client_send (client, "SUBMIT",
                                   json_pack ("{s:O, s:b}", "jobs", sleep, "watch", 1));
        rc = long_req < 0 ? -1 : 0;
    }
    while (rc == 0 && echo_sent < opts->jobs) {
        size_t count = (size_t) (opts->jobs - echo_sent < opts->batch ? opts->jobs - echo_sent
                                                                       : opts->batch);
        json_t *jobs = s_jobs (count, payload);
        sent_us[n_reqs] = gq_mono_us ();
        reqs[n_reqs] = jobs ? gq_client_send (client, "SUBMIT",
                                              json_pack ("{s:o, s:b}", "jobs", jobs, "watch", 1))
                            : -1;
        rc = reqs[n_reqs++] < 0 ? -1 : 0;
        echo_sent += (int64_t) count;
    }
    if (rc) {
        fprintf (stderr, "gridq-bench: submit: %s\n", gq_client_error (client));
    }
    const char *long_node = NULL;
    json_t *long_job = NULL;
    int64_t long_finished_us = 0, echo_finished = 0, last_echo_us = 0;
    json_t *echo_nodes = json_array ();
    while (rc == 0 && !s_interrupted && (echo_finished < opts->jobs || !long_job)) {
        char command[32];
        int64_t req;
        json_t *body = NULL;
        if (gq_client_recv (client, GQ_BENCH_STALL_MS + (int) opts->long_ms, command, &req,
                            &body, NULL)) {
            fprintf (stderr, "gridq-bench: %s (%lld of %lld echo jobs finished)\n",
                     gq_client_error (client), (long long) echo_finished, (long long) opts->jobs);
            rc = -1;
            break;
        }
        int64_t now_us = gq_mono_us ();
        if (streq (command, "ERROR")) {
            s_report_error ("SUBMIT refused", body);
            rc = -1;
        } else if (streq (command, "FINISHED")) {
            json_t *jobs = json_object_get (body, "jobs");
            size_t i;
            json_t *job;
            result->failed += (int64_t) json_array_size (json_object_get (body, "missing"));
            json_array_foreach (jobs, i, job) {
                const char *state = json_string_value (json_object_get (job, "state"));
                if (!state || !streq (state, "done")) {
                    result->failed++;
                }
                if (req == long_req) {
                    long_job = json_incref (job);
                    long_finished_us = now_us;
                    continue;
                }
                int at = 0;
                while (at < n_reqs && reqs[at] != req) {
                    at++;
                }
                if (at == n_reqs) {
                    continue; /* not ours */
                }
                bench_samples_add (samples, now_us - sent_us[at]);
                result->echo_after_long += long_job != NULL;
                json_array_append (echo_nodes, json_object_get (job, "node"));
                echo_finished++;
                last_echo_us = now_us;
            }
        }
        json_decref (body);
    }
    if (rc == 0 && long_job) {
        long_node = json_string_value (json_object_get (long_job, "node"));
        size_t i;
        json_t *node;
        json_array_foreach (echo_nodes, i, node) {
            result->echo_on_long_node +=
                long_node && json_is_string (node) && streq (json_string_value (node), long_node);
        }
        int64_t submitted = s_time_ms (long_job, "submitted_at");
        int64_t started = s_time_ms (long_job, "started_at");
        result->long_start_ms = submitted >= 0 && started >= 0 ? (double) (started - submitted)
                                                               : NAN;
        result->long_finished_ms = (long_finished_us - long_sent_us) / 1e3;
        result->echo_last_ms = (last_echo_us - long_sent_us) / 1e3;
        result->echo = bench_samples_latency (samples);
        result->jobs = echo_finished;
    }
    json_decref (long_job);
    json_decref (echo_nodes);
    free (reqs);
    free (sent_us);
    free (ids);
    bench_samples_destroy (&samples);
    json_decref (sleep);
    json_decref (warm);
    json_decref (payload);
    return rc;
}

/* ---- Command line ------------------------------------------------------------------------------ */

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: gridq-bench [--mode throughput|latency|batch|memory|partials|mixed]\n"
             "                   [options]\n"
             "\n"
             "Measures a gridq broker with real workers through the client API. Jobs are of\n"
             "kind echo with a small payload {\"data\": \"xxx...\"}.\n"
             "\n"
             "  --mode M           throughput (default): --jobs in SUBMITs of --batch jobs with\n"
             "                     watch, --window SUBMITs in flight; jobs/s from the first\n"
             "                     SUBMIT to the last FINISHED\n"
             "                     latency: one job in flight (SUBMIT with watch, wait for its\n"
             "                     FINISHED); p50/p99/p999 of the round trip in microseconds\n"
             "                     batch: one big batch through gq_client_submit (chunks of\n"
             "                     --batch, --window in flight), then gq_client_wait\n"
             "                     memory: (--spawn) queues --jobs with no worker; the broker's\n"
             "                     VmRSS before and after, in bytes per job\n"
             "                     partials: one worker runs gridq-bench-engine (kind partials),\n"
             "                     which stamps each partial and result with the wall clock.\n"
             "                     Latency (--samples each, after --warmup): the PING round\n"
             "                     trip; one job's partials, one every --interval-us, engine\n"
             "                     write -> partial callback; jobs with no partial one at a\n"
             "                     time, engine result write -> FINISHED. Then throughput:\n"
             "                     --partials from --jobs jobs at once, partials/s received,\n"
             "                     and those dropped at the worker or lost on the way\n"
             "                     mixed: placement with a long job in the way. --warmup echo\n"
             "                     jobs run to the end first; then one sleep job of --long-ms\n"
             "                     is sent, and --jobs echo jobs right after it (SUBMITs of\n"
             "                     --batch). Reports whether every echo job finished before\n"
             "                     the long one, when the long job started after its submit,\n"
             "                     and the echo jobs' SUBMIT -> FINISHED p50/p99. Exits 1 when\n"
             "                     an echo job finished after the long one\n"
             "  --jobs N           jobs (default: throughput and batch 100000, latency 2000,\n"
             "                     memory 1000000; partials: jobs at once, 1; mixed: 1000)\n"
             "  --batch N          jobs per SUBMIT (default 1000; batch and memory 10000)\n"
             "  --window N         SUBMITs in flight (default 4)\n"
             "  --payload BYTES    length of the payload's string (default 16; partials: of\n"
             "                     each partial's pad)\n"
             "  --warmup N         latency and partials: samples not counted first (default 100)\n"
             "  --poll N           throughput: first run N echo jobs to the end; then, during\n"
             "                     the run, a thread with a client of its own sends STATUS\n"
             "                     (5000 ids at most each) for those N finished ids and N\n"
             "                     unknown ones in turn, until the run ends. Reports its\n"
             "                     requests and CPU time, and the broker's CPU time (--spawn),\n"
             "                     each also as a share of wall time x CPUs online\n"
             "  --partials N       partials: partials in all in the throughput run, over --jobs\n"
             "                     (default 100000; 0: no throughput run)\n"
             "  --throughput-interval-us U  partials: microseconds between a job's partials\n"
             "                     in the throughput run (default 0: as fast as it writes)\n"
             "  --interval-us U    partials: microseconds between the latency run's partials\n"
             "                     (default 1000)\n"
             "  --samples N        partials: samples of each latency (default 2000; 0: no\n"
             "                     latency runs)\n"
             "  --stream-window N  partials: the spawned worker's --stream-window (default:\n"
             "                     its own, 64)\n"
             "  --spawn            start a broker and workers of our own on a free loopback\n"
             "                     port, with the database in a temporary folder; stop them\n"
             "                     by PID at the end\n"
             "  --bin DIR          where gridq-broker and gridq-worker are (default: the\n"
             "                     folder of this program)\n"
             "  --durability D     full (default) or normal: the spawned broker's SQLite mode\n"
             "  --workers N        worker processes to spawn (default 2; memory: 0; partials: 1)\n"
             "  --slots N          slots per spawned worker (default 32; mixed: 1)\n"
             "  --long-ms MS       mixed: the long job's length (default 2000)\n"
             "  --tmp DIR          parent of the temporary folder (default $TMPDIR or /tmp)\n"
             "  --keep             keep the temporary folder (database and logs)\n"
             "  --full             throughput and latency: FINISHED with whole jobs (payload,\n"
             "                     times, node...) instead of brief ones {id, state, result,\n"
             "                     error}\n"
             "  --broker EP        without --spawn: the broker to measure (default\n"
             "                     $GRIDQ_BROKER or tcp://127.0.0.1:5555)\n"
             "  --json             print one JSON object: mode, jobs, seconds, jobs_per_s,\n"
             "                     p50_us, p99_us, p999_us, durability, workers (and more;\n"
             "                     partials: p50_us.. are engine write -> partial callback)\n"
             "  --help             this text\n"
             "\n"
             "examples:\n"
             "  gridq-bench --spawn --durability full --workers 2\n"
             "  gridq-bench --spawn --mode latency --jobs 5000 --json\n"
             "  gridq-bench --spawn --mode memory --jobs 1000000\n"
             "  gridq-bench --spawn --jobs 200000 --poll 10000\n"
             "  gridq-bench --spawn --mode partials --partials 100000 --jobs 8\n"
             "  gridq-bench --spawn --mode mixed --workers 2 --slots 1\n"
             "  gridq-bench --broker tcp://10.0.0.5:5555 --jobs 20000 --window 8\n");
}

static int
s_bad (const char *format, const char *value)
{
    if (!value) {
        value = "";
    }
    fprintf (stderr, "gridq-bench: ");
    fprintf (stderr, format, value);
    fprintf (stderr, "\n(see gridq-bench --help)\n");
    return 2;
}

/* getopt_long's values of the options. */
enum { O_MODE = 1000, O_JOBS, O_BATCH, O_WINDOW, O_PAYLOAD, O_WARMUP, O_SPAWN, O_BIN,
       O_DURABILITY, O_WORKERS, O_SLOTS, O_TMP, O_KEEP, O_FULL, O_BROKER, O_JSON, O_POLL,
       O_PARTIALS, O_INTERVAL, O_LOAD_INTERVAL, O_SAMPLES, O_STREAM_WINDOW, O_LONG_MS,
       O_HELP };

/* --mode partials's whole-number options (getopt_long's opt, its arg) into opts; 0, or -1
   after saying that arg is out of range. */
static int
s_parse_partials_option (int opt, const char *arg, s_opts_t *opts)
{
    int64_t partials = opts->partials;
    const struct {
        int opt;               /* getopt_long's value */
        const char *name;      /* for the message about a bad value */
        int64_t lo, hi;        /* the range allowed */
        int64_t *wide;         /* where it goes, when an int64_t */
        int *value;            /* where it goes otherwise */
    } numbers[] = {
        {O_PARTIALS, "--partials", 0, 1000000000, &partials, NULL},
        {O_INTERVAL, "--interval-us", 0, 1000000, NULL, &opts->interval_us},
        {O_LOAD_INTERVAL, "--throughput-interval-us", 0, 1000000, NULL, &opts->load_interval_us},
        {O_SAMPLES, "--samples", 0, 1000000, NULL, &opts->samples},
        {O_STREAM_WINDOW, "--stream-window", 1, 1000000, NULL, &opts->stream_window},
    };
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        int64_t value;
        if (numbers[i].opt != opt) {
            continue;
        }
        if (gq_parse_int (arg, numbers[i].lo, numbers[i].hi, &value)) {
            fprintf (stderr, "gridq-bench: %s '%s' must be %lld..%lld\n(see gridq-bench --help)\n",
                     numbers[i].name, arg, (long long) numbers[i].lo, (long long) numbers[i].hi);
            return -1;
        }
        if (numbers[i].wide) {
            *numbers[i].wide = value;
        } else {
            *numbers[i].value = (int) value;
        }
    }
    opts->partials = partials;
    return 0;
}

static int
s_parse (int argc, char **argv, s_opts_t *opts)
{
    static const struct option options[] = {{"mode", required_argument, 0, O_MODE},
                                            {"jobs", required_argument, 0, O_JOBS},
                                            {"batch", required_argument, 0, O_BATCH},
                                            {"window", required_argument, 0, O_WINDOW},
                                            {"payload", required_argument, 0, O_PAYLOAD},
                                            {"warmup", required_argument, 0, O_WARMUP},
                                            {"spawn", no_argument, 0, O_SPAWN},
                                            {"bin", required_argument, 0, O_BIN},
                                            {"durability", required_argument, 0, O_DURABILITY},
                                            {"workers", required_argument, 0, O_WORKERS},
                                            {"slots", required_argument, 0, O_SLOTS},
                                            {"tmp", required_argument, 0, O_TMP},
                                            {"keep", no_argument, 0, O_KEEP},
                                            {"full", no_argument, 0, O_FULL},
                                            {"broker", required_argument, 0, O_BROKER},
                                            {"json", no_argument, 0, O_JSON},
                                            {"poll", required_argument, 0, O_POLL},
                                            {"partials", required_argument, 0, O_PARTIALS},
                                            {"interval-us", required_argument, 0, O_INTERVAL},
                                            {"throughput-interval-us", required_argument, 0,
                                             O_LOAD_INTERVAL},
                                            {"samples", required_argument, 0, O_SAMPLES},
                                            {"stream-window", required_argument, 0,
                                             O_STREAM_WINDOW},
                                            {"long-ms", required_argument, 0, O_LONG_MS},
                                            {"help", no_argument, 0, O_HELP},
                                            {0, 0, 0, 0}};
    int workers = -1;
    bool partials_options = false; /* one of --partials, --interval-us, --samples, --stream-window */
    bool long_given = false;       /* --long-ms */
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        int64_t value = 0;
        switch (opt) {
        case O_MODE: {
            int found = -1;
            for (int m = 0; m < S_MODES; m++) {
                if (streq (optarg, s_mode_names[m])) {
                    found = m;
                }
            }
            if (found < 0) {
                return s_bad ("--mode '%s' must be throughput, latency, batch, memory, partials "
                              "or mixed",
                              optarg);
            }
            opts->mode = (s_mode_t) found;
            break;
        }
        case O_JOBS:
            if (gq_parse_int (optarg, 1, 1000000000, &value)) {
                return s_bad ("--jobs '%s' must be 1..1000000000", optarg);
            }
            opts->jobs = value;
            break;
        case O_BATCH:
            if (gq_parse_int (optarg, 1, GQ_MAX_BATCH_JOBS, &value)) {
                return s_bad ("--batch '%s' must be 1..10000", optarg);
            }
            opts->batch = (int) value;
            break;
        case O_WINDOW:
            if (gq_parse_int (optarg, 1, 1024, &value)) {
                return s_bad ("--window '%s' must be 1..1024", optarg);
            }
            opts->window = (int) value;
            break;
        case O_PAYLOAD:
            if (gq_parse_int (optarg, 0, 1000000, &value)) {
                return s_bad ("--payload '%s' must be 0..1000000 bytes", optarg);
            }
            opts->payload_bytes = (int) value;
            break;
        case O_WARMUP:
            if (gq_parse_int (optarg, 0, 1000000, &value)) {
                return s_bad ("--warmup '%s' must be 0..1000000", optarg);
            }
            opts->warmup = (int) value;
            break;
        case O_SPAWN:
            opts->spawn = true;
            break;
        case O_BIN:
            opts->bin = optarg;
            break;
        case O_DURABILITY:
            if (!streq (optarg, "full") && !streq (optarg, "normal")) {
                return s_bad ("--durability '%s' must be full or normal", optarg);
            }
            opts->durability = optarg;
            opts->durability_given = true;
            break;
        case O_WORKERS:
            if (gq_parse_int (optarg, 0, GQ_BENCH_MAX_WORKERS, &value)) {
                return s_bad ("--workers '%s' must be 0..64", optarg);
            }
            workers = (int) value;
            break;
        case O_SLOTS:
            if (gq_parse_int (optarg, 1, GQ_MAX_SLOTS, &value)) {
                return s_bad ("--slots '%s' must be 1..1024", optarg);
            }
            opts->slots = (int) value;
            opts->slots_given = true;
            break;
        case O_TMP:
            opts->tmp = optarg;
            break;
        case O_KEEP:
            opts->keep = true;
            break;
        case O_FULL:
            opts->full = true;
            break;
        case O_BROKER:
            opts->broker = optarg;
            break;
        case O_JSON:
            opts->json = true;
            break;
        case O_POLL:
            if (gq_parse_int (optarg, 1, 1000000, &value)) {
                return s_bad ("--poll '%s' must be 1..1000000", optarg);
            }
            opts->poll = value;
            break;
        case O_PARTIALS:
        case O_INTERVAL:
        case O_LOAD_INTERVAL:
        case O_SAMPLES:
        case O_STREAM_WINDOW:
            if (s_parse_partials_option (opt, optarg, opts)) {
                return 2;
            }
            partials_options = true;
            break;
        case O_LONG_MS:
            if (gq_parse_int (optarg, 1, 3600000, &value)) {
                return s_bad ("--long-ms '%s' must be 1..3600000", optarg);
            }
            opts->long_ms = value;
            long_given = true;
            break;
        case O_HELP:
            s_usage (stdout);
            exit (0);
        default:
            s_usage (stderr);
            return 2;
        }
    }
    if (optind < argc) {
        return s_bad ("unexpected argument '%s'", argv[optind]);
    }
    if (opts->spawn && opts->broker) {
        return s_bad ("--broker and --spawn exclude each other%s", NULL);
    }
    if (opts->mode == S_MEMORY) {
        if (!opts->spawn) {
            return s_bad ("--mode memory reads the broker's RSS: it needs --spawn%s", NULL);
        }
        if (workers > 0) {
            return s_bad ("--mode memory queues jobs with no worker: drop --workers%s", NULL);
        }
        workers = 0;
    }
    if (partials_options && opts->mode != S_PARTIALS) {
        return s_bad ("--partials, --interval-us, --throughput-interval-us, --samples and "
                      "--stream-window are for --mode partials%s", NULL);
    }
    if (long_given && opts->mode != S_MIXED) {
        return s_bad ("--long-ms is for --mode mixed%s", NULL);
    }
    if (opts->mode == S_MIXED && !opts->slots_given) {
        opts->slots = 1; /* a GPU worker runs one job at a time */
    }
    if (opts->poll && opts->mode != S_THROUGHPUT) {
        return s_bad ("--poll is for --mode throughput%s", NULL);
    }
    if (opts->spawn && workers == 0 && opts->mode != S_MEMORY) {
        return s_bad ("--workers 0 would leave the jobs queued forever%s", NULL);
    }
    if (opts->mode == S_PARTIALS && opts->jobs > GQ_MAX_BATCH_JOBS) {
        return s_bad ("--mode partials: --jobs (at once, in one SUBMIT) must be 1..10000%s", NULL);
    }
    opts->workers = workers < 0 ? (opts->mode == S_PARTIALS ? 1 : 2) : workers;
    if (opts->jobs == 0) {
        opts->jobs = opts->mode == S_LATENCY    ? 2000
                     : opts->mode == S_MEMORY   ? 1000000
                     : opts->mode == S_PARTIALS ? 1
                     : opts->mode == S_MIXED    ? 1000
                                                : 100000;
    }
    if (opts->batch == 0) {
        opts->batch = opts->mode == S_BATCH || opts->mode == S_MEMORY ? GQ_MAX_BATCH_JOBS : 1000;
    }
    return 0;
}

/* The folder of this executable (for --bin's default), in buf. */
static const char *
s_self_dir (char *buf, size_t size)
{
    ssize_t n = readlink ("/proc/self/exe", buf, size - 1);
    if (n <= 0) {
        return ".";
    }
    buf[n] = 0;
    return dirname (buf);
}

/* ---- Report ------------------------------------------------------------------------------------ */

static json_t *
s_number_or_null (double value)
{
    return isnan (value) ? json_null () : json_real (round (value * 10) / 10);
}

/* cpu_seconds / wall_cpu_seconds to four places, or null when either is unknown. */
static json_t *
s_share_or_null (double cpu_seconds, double wall_cpu_seconds)
{
    return isnan (cpu_seconds) || !(wall_cpu_seconds > 0)
               ? json_null ()
               : json_real (round (cpu_seconds / wall_cpu_seconds * 1e4) / 1e4);
}

/* The lines --poll adds below the throughput line. */
static void
s_report_poll (const s_opts_t *opts, const s_result_t *result)
{
    double wall = result->seconds * result->cpus;
    printf ("polling: %lld STATUS requests for %lld ids (%lld finished, %lld unknown); poller CPU "
            "%.3f s = %.1f%% of %d CPUs\n",
            (long long) result->poll_requests, (long long) result->poll_ids,
            (long long) opts->poll, (long long) opts->poll, result->poller_cpu_seconds,
            wall > 0 ? 100 * result->poller_cpu_seconds / wall : 0, result->cpus);
    if (!isnan (result->broker_cpu_seconds)) {
        printf ("broker: CPU %.2f s during the run = %.1f%% of %d CPUs\n",
                result->broker_cpu_seconds,
                wall > 0 ? 100 * result->broker_cpu_seconds / wall : 0, result->cpus);
    }
}

static void
s_report (const s_opts_t *opts, const s_result_t *result, int workers)
{
    double per_s = result->seconds > 0 ? (double) result->jobs / result->seconds : 0;
    const char *durability = opts->spawn || opts->durability_given ? opts->durability : NULL;
    if (opts->json) {
        json_t *out = json_pack (
            "{s:s, s:I, s:f, s:o, s:o, s:o, s:o, s:o, s:o, s:I, s:i, s:i, s:i, s:i}", "mode",
            s_mode_names[opts->mode], "jobs", (json_int_t) result->jobs, "seconds",
            round (result->seconds * 1e6) / 1e6, "jobs_per_s",
            opts->mode == S_MEMORY ? json_null () : json_integer ((json_int_t) llround (per_s)), "p50_us",
            s_number_or_null (result->latency.p50_us), "p99_us",
            s_number_or_null (result->latency.p99_us), "p999_us",
            s_number_or_null (result->latency.p999_us), "durability",
            durability ? json_string (durability) : json_null (), "workers",
            workers < 0 ? json_null () : json_integer (workers), "failed",
            (json_int_t) result->failed, "batch", opts->batch, "window", opts->window, "slots",
            opts->slots, "payload_bytes", opts->payload_bytes);
        json_object_set_new (out, "finished", json_string (opts->full ? "full" : "brief"));
        json_t *payload = s_payload (opts->payload_bytes);
        char *payload_text = json_dumps (payload, JSON_COMPACT);
        json_object_set_new (out, "payload_json_bytes",
                             json_integer (payload_text ? (json_int_t) strlen (payload_text) : 0));
        free (payload_text);
        json_decref (payload);
        if (opts->mode == S_BATCH) {
            json_object_set_new (out, "submit_seconds",
                                 json_real (round (result->submit_seconds * 1e6) / 1e6));
        }
        if (opts->mode == S_MEMORY) {
            json_object_set_new (out, "rss_before_kb", json_integer (result->rss_before_kb));
            json_object_set_new (out, "rss_after_kb", json_integer (result->rss_after_kb));
            json_object_set_new (out, "bytes_per_job",
                                 json_real (round (result->bytes_per_job * 10) / 10));
            json_object_set_new (
                out, "bytes_per_job_beyond_payload",
                json_real (round ((result->bytes_per_job - result->payload_json_bytes) * 10) /
                           10));
        }
        if (opts->poll) {
            double wall = result->seconds * result->cpus;
            json_object_set_new (out, "poll", json_integer (opts->poll));
            json_object_set_new (out, "poll_requests", json_integer (result->poll_requests));
            json_object_set_new (out, "poll_ids", json_integer (result->poll_ids));
            json_object_set_new (out, "cpus", json_integer (result->cpus));
            json_object_set_new (out, "poller_cpu_s",
                                 json_real (round (result->poller_cpu_seconds * 1e6) / 1e6));
            json_object_set_new (out, "poller_cpu_share",
                                 s_share_or_null (result->poller_cpu_seconds, wall));
            json_object_set_new (out, "broker_cpu_s",
                                 isnan (result->broker_cpu_seconds)
                                     ? json_null ()
                                     : json_real (round (result->broker_cpu_seconds * 1e3) / 1e3));
            json_object_set_new (out, "broker_cpu_share",
                                 s_share_or_null (result->broker_cpu_seconds, wall));
        }
        char *text = json_dumps (out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION (10));
        printf ("%s\n", text ? text : "{}");
        free (text);
        json_decref (out);
        return;
    }
    char fleet[128];
    if (workers >= 0) {
        snprintf (fleet, sizeof fleet, "%d worker%s", workers, workers == 1 ? "" : "s");
    } else {
        snprintf (fleet, sizeof fleet, "workers unknown");
    }
    char setup[256];
    snprintf (setup, sizeof setup, "%s%s, durability %s", fleet,
              opts->spawn ? " (spawned)" : "", durability ? durability : "as configured");
    switch (opts->mode) {
    case S_THROUGHPUT:
        printf ("throughput: %lld jobs in %.3f s = %.0f jobs/s (batch %d, window %d, %s)\n",
                (long long) result->jobs, result->seconds, per_s, opts->batch, opts->window,
                setup);
        if (opts->poll) {
            s_report_poll (opts, result);
        }
        break;
    case S_LATENCY: {
        char latency[128];
        printf ("latency: %lld round trips (one in flight): %s (%s)\n", (long long) result->jobs,
                bench_latency_text (&result->latency, latency, sizeof latency), setup);
        break;
    }
    case S_BATCH:
        printf ("batch: %lld jobs acknowledged in %.3f s (%.0f jobs/s), all finished in %.3f s "
                "= %.0f jobs/s (%s)\n",
                (long long) result->jobs, result->submit_seconds,
                result->submit_seconds > 0 ? (double) result->jobs / result->submit_seconds : 0,
                result->seconds, per_s, setup);
        break;
    case S_MEMORY:
        printf ("memory: %lld queued jobs: broker VmRSS %lld -> %lld KiB = %.0f bytes per job, "
                "%.0f beyond its %.0f-byte payload (%s)\n",
                (long long) result->jobs, (long long) result->rss_before_kb,
                (long long) result->rss_after_kb, result->bytes_per_job,
                result->bytes_per_job - result->payload_json_bytes, result->payload_json_bytes,
                setup);
        break;
    case S_PARTIALS:
    case S_MIXED:
        break; /* s_report_partials, s_report_mixed */
    }
    if (result->failed) {
        printf ("%lld jobs did not finish done\n", (long long) result->failed);
    }
}

/* A latency's three figures as members "NAME_p50_us", "NAME_p99_us", "NAME_p999_us" of out. */
static void
s_latency_json (json_t *out, const char *name, const bench_latency_t *latency)
{
    const struct {
        const char *suffix;
        double value;
    } figures[] = {{"p50_us", latency->p50_us},
                   {"p99_us", latency->p99_us},
                   {"p999_us", latency->p999_us}};
    for (size_t i = 0; i < sizeof figures / sizeof figures[0]; i++) {
        char key[64];
        snprintf (key, sizeof key, "%s%s%s", name, *name ? "_" : "", figures[i].suffix);
        json_object_set_new (out, key, s_number_or_null (figures[i].value));
    }
}

/* --mode partials: four lines, or one JSON object whose p50_us/p99_us/p999_us are engine write
   -> partial callback at --interval-us. */
static void
s_report_partials (const s_opts_t *opts, const s_partials_result_t *result, int workers)
{
    double per_s = result->seconds > 0 ? (double) result->received / result->seconds : 0;
    const char *durability = opts->spawn || opts->durability_given ? opts->durability : NULL;
    if (opts->json) {
        json_t *out = json_pack ("{s:s, s:I, s:f, s:n}", "mode", "partials", "jobs",
                                 (json_int_t) result->jobs, "seconds",
                                 round (result->seconds * 1e6) / 1e6, "jobs_per_s");
        s_latency_json (out, "", &result->partial);
        json_object_set_new (out, "durability",
                             durability ? json_string (durability) : json_null ());
        json_object_set_new (out, "workers", workers < 0 ? json_null () : json_integer (workers));
        json_object_set_new (out, "failed", json_integer (result->failed));
        json_object_set_new (out, "partials", json_integer (result->written));
        json_object_set_new (out, "partials_received", json_integer (result->received));
        json_object_set_new (out, "partials_dropped", json_integer (result->dropped));
        json_object_set_new (out, "partials_lost", json_integer (result->lost));
        json_object_set_new (out, "partials_per_s", json_integer ((json_int_t) llround (per_s)));
        s_latency_json (out, "loaded", &result->loaded);
        json_object_set_new (out, "samples", json_integer (result->samples));
        json_object_set_new (out, "interval_us", json_integer (opts->interval_us));
        json_object_set_new (out, "throughput_interval_us", json_integer (opts->load_interval_us));
        s_latency_json (out, "finished", &result->finished);
        s_latency_json (out, "ping", &result->ping);
        json_object_set_new (out, "stream_window", opts->stream_window
                                                       ? json_integer (opts->stream_window)
                                                       : json_null ());
        json_object_set_new (out, "slots", json_integer (opts->slots));
        json_object_set_new (out, "payload_bytes", json_integer (opts->payload_bytes));
        char *text = json_dumps (out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION (10));
        printf ("%s\n", text ? text : "{}");
        free (text);
        json_decref (out);
        return;
    }
    char window[32] = "the worker's default";
    if (opts->stream_window) {
        snprintf (window, sizeof window, "%d", opts->stream_window);
    }
    char text[128], pace[64] = "each as fast as the engine writes";
    if (opts->load_interval_us) {
        snprintf (pace, sizeof pace, "each one every %d us", opts->load_interval_us);
    }
    if (result->samples) {
        printf ("partials: PING round trip (client -> broker -> client): %s\n",
                bench_latency_text (&result->ping, text, sizeof text));
        printf ("partials: engine write -> partial callback, one every %d us: %lld partials: %s\n",
                opts->interval_us, (long long) result->samples,
                bench_latency_text (&result->partial, text, sizeof text));
        printf ("partials: engine result write -> FINISHED, one job at a time: %lld jobs: %s\n",
                (long long) result->samples,
                bench_latency_text (&result->finished, text, sizeof text));
    }
    if (opts->partials) {
        printf ("partials: %lld written by %lld job%s at once (%s), %lld received in %.3f s = %.0f "
                "partials/s; dropped at the worker %lld, lost %lld; engine write -> callback "
                "%s (%d worker%s, stream window %s, durability %s)\n",
                (long long) result->written, (long long) result->jobs,
                result->jobs == 1 ? "" : "s", pace, (long long) result->received, result->seconds,
                per_s, (long long) result->dropped, (long long) result->lost,
                bench_latency_text (&result->loaded, text, sizeof text), workers,
                workers == 1 ? "" : "s", window, durability ? durability : "as configured");
    }
}

/* --mode mixed: three lines, or one JSON object (p50_us.. are the echo jobs'). */
static void
s_report_mixed (const s_opts_t *opts, const s_mixed_result_t *result, int workers)
{
    const char *durability = opts->spawn || opts->durability_given ? opts->durability : NULL;
    if (opts->json) {
        json_t *out = json_pack ("{s:s, s:I, s:I}", "mode", "mixed", "jobs",
                                 (json_int_t) result->jobs, "long_ms", (json_int_t) opts->long_ms);
        s_latency_json (out, "", &result->echo);
        json_object_set_new (out, "echo_all_before_long", json_boolean (!result->echo_after_long));
        json_object_set_new (out, "echo_after_long", json_integer (result->echo_after_long));
        json_object_set_new (out, "echo_on_long_node", json_integer (result->echo_on_long_node));
        json_object_set_new (out, "echo_last_ms", s_number_or_null (result->echo_last_ms));
        json_object_set_new (out, "long_start_ms", s_number_or_null (result->long_start_ms));
        json_object_set_new (out, "long_finished_ms", s_number_or_null (result->long_finished_ms));
        json_object_set_new (out, "durability",
                             durability ? json_string (durability) : json_null ());
        json_object_set_new (out, "workers", workers < 0 ? json_null () : json_integer (workers));
        json_object_set_new (out, "slots", json_integer (opts->slots));
        json_object_set_new (out, "batch", json_integer (opts->batch));
        json_object_set_new (out, "warmup", json_integer (opts->warmup));
        json_object_set_new (out, "failed", json_integer (result->failed));
        char *text = json_dumps (out, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION (10));
        printf ("%s\n", text ? text : "{}");
        free (text);
        json_decref (out);
        return;
    }
    char text[128];
    printf ("mixed: one %lld ms job, then %lld echo jobs (%d worker%s, %d slot%s each, durability "
            "%s)\n",
            (long long) opts->long_ms, (long long) result->jobs, workers, workers == 1 ? "" : "s",
            opts->slots, opts->slots == 1 ? "" : "s", durability ? durability : "as configured");
    printf ("mixed: every echo job finished before the long one: %s (%lld after it, %lld ran on "
            "its node); the last echo job finished %.1f ms after the long job's SUBMIT\n",
            result->echo_after_long ? "NO" : "yes", (long long) result->echo_after_long,
            (long long) result->echo_on_long_node, result->echo_last_ms);
    printf ("mixed: the long job started %.0f ms after its submit (broker clock, to 1 ms), "
            "finished %.1f ms after it; echo SUBMIT -> FINISHED %s\n",
            result->long_start_ms, result->long_finished_ms,
            bench_latency_text (&result->echo, text, sizeof text));
}

int
main (int argc, char **argv)
{
    char self_dir[1024];
    s_opts_t opts = {S_THROUGHPUT, 0, 0, 4, 16, 100, false, NULL, NULL, "full", false, 2, 32,
                     NULL, false, false, false, 0, 100000, 1000, 0, 2000, 0, 2000, false};
    int rc = s_parse (argc, argv, &opts);
    if (rc) {
        return rc;
    }
    if (!opts.bin) {
        opts.bin = s_self_dir (self_dir, sizeof self_dir);
    }
    s_install_signals ();
    zsys_init ();
    zsys_set_logstream (stderr);

    s_fleet_t fleet;
    memset (&fleet, 0, sizeof fleet);
    const char *endpoint = opts.broker;
    if (opts.spawn) {
        if (s_fleet_start (&fleet, &opts)) {
            s_fleet_stop (&fleet, opts.keep, !s_interrupted);
            return 1;
        }
        endpoint = fleet.endpoint;
    }
    gq_client_t *client = s_client (endpoint, GQ_BENCH_CLIENT_TIMEOUT_MS);
    int workers = opts.spawn ? opts.workers : -1;
    if (client && !opts.spawn) {
        /* Ask with the usual short timeout: a wrong endpoint should not take 30 s to report. */
        gq_client_t *probe = s_client (endpoint, GQ_CLIENT_TIMEOUT_MS);
        workers = probe ? s_nodes_up (probe) : -1;
        if (workers < 0) {
            fprintf (stderr, "gridq-bench: %s\n", probe ? gq_client_error (probe) : "no client");
            gq_client_destroy (&client);
        } else if (workers == 0) {
            fprintf (stderr, "gridq-bench: no worker is online at %s\n", endpoint);
            gq_client_destroy (&client);
        }
        gq_client_destroy (&probe);
    }
    s_result_t result = {0, 0, 0, 0, bench_latency_none (), 0, 0, 0, 0, 0, 0, 0, 0, NAN};
    s_partials_result_t partials = {bench_latency_none (), bench_latency_none (),
                                    bench_latency_none (), 0, 0, 0, 0, 0, 0, 0,
                                    bench_latency_none (), 0};
    s_mixed_result_t mixed = {0, 0, bench_latency_none (), NAN, NAN, NAN, 0, 0, 0};
    rc = client ? 0 : -1;
    if (rc == 0) {
        switch (opts.mode) {
        case S_THROUGHPUT:
            rc = s_run_throughput (client, &opts, fleet.broker, &result);
            break;
        case S_LATENCY:
            rc = s_run_latency (client, &opts, &result);
            break;
        case S_BATCH:
            rc = s_run_batch (client, &opts, &result);
            break;
        case S_MEMORY:
            rc = s_run_memory (client, &opts, fleet.broker, &result);
            break;
        case S_PARTIALS:
            rc = s_run_partials (client, &opts, &partials);
            result.failed = partials.failed;
            break;
        case S_MIXED:
            rc = s_run_mixed (client, &opts, &mixed);
            result.failed = mixed.failed;
            break;
        }
    }
    gq_client_destroy (&client);
    bool died = opts.spawn && !s_running (fleet.broker);
    if (died) {
        fprintf (stderr, "gridq-bench: the broker died during the run\n");
        rc = -1;
    }
    if (opts.spawn) {
        s_fleet_stop (&fleet, opts.keep, rc != 0 && !s_interrupted);
    }
    if (s_interrupted) {
        fprintf (stderr, "gridq-bench: interrupted\n");
        return 130;
    }
    if (rc == 0 && opts.mode == S_PARTIALS) {
        s_report_partials (&opts, &partials, workers);
    } else if (rc == 0 && opts.mode == S_MIXED) {
        s_report_mixed (&opts, &mixed, workers);
        rc = mixed.echo_after_long ? -1 : 0;
    } else if (rc == 0) {
        s_report (&opts, &result, workers);
    }
    return rc == 0 && result.failed == 0 ? 0 : 1;
}
