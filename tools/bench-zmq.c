/*  bench-zmq.c — gridq-bench-zmq: the ceiling that gridq's message path is measured against.

    The same three hops as gridq, with nothing else: a client DEALER sends a job to a bare ROUTER
    loop in a process of its own, which forwards it round-robin to one of W worker processes
    (DEALER, echo), whose reply goes back through the ROUTER to the client. No JSON, no store,
    no matching, no queue, no per-job allocation: frames are moved, never copied.

        client  [J][payload]            -> ROUTER  -> [client id][payload]  -> worker
        client  <- [payload]            <- ROUTER  <- [R][client id][payload] worker

    Modes: throughput (a window of jobs in flight, jobs/s from the first send to the last reply)
    and latency (one job in flight: the 3-hop round trip, p50/p99/p999 in microseconds).
    Only libzmq is used, as the lowest layer gridq itself sits on (through czmq). */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "gq_common.h"

#define S_MAX_WORKERS      64      /* worker processes */
#define S_ID_MAX           256     /* ZeroMQ routing ids are at most 255 bytes */
#define S_STALL_MS         10000   /* no reply for this long: the run failed */
#define S_START_TIMEOUT_MS 10000   /* workers registered within this */

typedef struct {
    bool latency;              /* latency mode, else throughput */
    long jobs;                 /* jobs to run */
    long window;               /* throughput: jobs in flight */
    int workers;               /* worker processes */
    int payload_bytes;         /* bytes per job */
    long warmup;               /* latency: round trips before measuring */
    bool json;                 /* one JSON object on stdout */
} s_opts_t;

static pid_t s_children[S_MAX_WORKERS + 1];
static int s_nchildren;

static int64_t
s_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
s_die (const char *what)
{
    fprintf (stderr, "gridq-bench-zmq: %s: %s\n", what, zmq_strerror (zmq_errno ()));
    exit (1);
}

/* A socket with no high-water mark (a full window must never be dropped) and no linger. */
static void *
s_socket (void *ctx, int type)
{
    void *sock = zmq_socket (ctx, type);
    if (!sock) {
        s_die ("zmq_socket");
    }
    int zero = 0;
    zmq_setsockopt (sock, ZMQ_SNDHWM, &zero, sizeof zero);
    zmq_setsockopt (sock, ZMQ_RCVHWM, &zero, sizeof zero);
    zmq_setsockopt (sock, ZMQ_LINGER, &zero, sizeof zero);
    return sock;
}

/* Receives the next frame into msg; false when it was the last frame of a message. */
static bool
s_recv_frame (void *sock, zmq_msg_t *msg)
{
    while (zmq_msg_recv (msg, sock, 0) < 0) {
        if (zmq_errno () != EINTR) {
            s_die ("receive");
        }
    }
    return zmq_msg_more (msg);
}

static void
s_send_frame (void *sock, zmq_msg_t *msg, bool more)
{
    while (zmq_msg_send (msg, sock, more ? ZMQ_SNDMORE : 0) < 0) {
        if (zmq_errno () != EINTR) {
            s_die ("send");
        }
    }
}

/* Drops the rest of a malformed message. */
static void
s_drain (void *sock, zmq_msg_t *msg, bool more)
{
    while (more) {
        more = s_recv_frame (sock, msg);
    }
}

/* ---- Broker: the bare ROUTER loop ------------------------------------------------------------ */

static void
s_broker (const char *endpoint)
{
    void *ctx = zmq_ctx_new ();
    void *router = s_socket (ctx, ZMQ_ROUTER);
    if (zmq_bind (router, endpoint)) {
        s_die ("bind");
    }
    unsigned char ids[S_MAX_WORKERS][S_ID_MAX];
    size_t id_sizes[S_MAX_WORKERS];
    int n_workers = 0, next = 0;
    zmq_msg_t from, kind, a, b;
    zmq_msg_init (&from);
    zmq_msg_init (&kind);
    zmq_msg_init (&a);
    zmq_msg_init (&b);
    for (;;) {
        bool more = s_recv_frame (router, &from);
        if (!more) {
            continue;
        }
        more = s_recv_frame (router, &kind);
        char type = zmq_msg_size (&kind) == 1 ? *(char *) zmq_msg_data (&kind) : 0;
        if (type == 'J' && more && n_workers > 0) {
            /* A job: [worker][client][payload], round-robin. */
            s_recv_frame (router, &a);
            zmq_msg_t to;
            zmq_msg_init_size (&to, id_sizes[next]);
            memcpy (zmq_msg_data (&to), ids[next], id_sizes[next]);
            next = (next + 1) % n_workers;
            s_send_frame (router, &to, true);
            s_send_frame (router, &from, true);
            s_send_frame (router, &a, false);
        } else if (type == 'R' && more) {
            /* A result: [client][payload]. */
            more = s_recv_frame (router, &a);
            if (more) {
                s_recv_frame (router, &b);
                s_send_frame (router, &a, true);
                s_send_frame (router, &b, false);
            }
        } else if (type == 'W' && n_workers < S_MAX_WORKERS && zmq_msg_size (&from) < S_ID_MAX) {
            id_sizes[n_workers] = zmq_msg_size (&from);
            memcpy (ids[n_workers], zmq_msg_data (&from), id_sizes[n_workers]);
            n_workers++;
            s_drain (router, &kind, more);
        } else if (type == 'H') {
            /* Hello: how many workers have registered. */
            char text[16];
            int len = snprintf (text, sizeof text, "%d", n_workers);
            zmq_msg_t reply;
            zmq_msg_init_size (&reply, (size_t) len);
            memcpy (zmq_msg_data (&reply), text, (size_t) len);
            s_send_frame (router, &from, true);
            s_send_frame (router, &reply, false);
            s_drain (router, &kind, more);
        } else {
            s_drain (router, &kind, more);
        }
    }
}

/* ---- Worker: DEALER echo --------------------------------------------------------------------- */

static void
s_worker (const char *endpoint)
{
    void *ctx = zmq_ctx_new ();
    void *dealer = s_socket (ctx, ZMQ_DEALER);
    if (zmq_connect (dealer, endpoint)) {
        s_die ("connect");
    }
    zmq_send (dealer, "W", 1, 0);
    zmq_msg_t client, payload, tag;
    zmq_msg_init (&client);
    zmq_msg_init (&payload);
    for (;;) {
        bool more = s_recv_frame (dealer, &client);
        if (!more) {
            continue;
        }
        more = s_recv_frame (dealer, &payload);
        if (more) {
            s_drain (dealer, &payload, more);
            continue;
        }
        zmq_msg_init_size (&tag, 1);
        *(char *) zmq_msg_data (&tag) = 'R';
        s_send_frame (dealer, &tag, true);
        s_send_frame (dealer, &client, true);
        s_send_frame (dealer, &payload, false);
    }
}

/* ---- Client ------------------------------------------------------------------------------------ */

static pid_t
s_fork (void (*body) (const char *), const char *endpoint)
{
    pid_t parent = getpid ();
    pid_t pid = fork ();
    if (pid == 0) {
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        if (getppid () != parent) {
            _exit (1);
        }
        body (endpoint);
        _exit (0);
    }
    if (pid < 0) {
        perror ("gridq-bench-zmq: fork");
        exit (1);
    }
    s_children[s_nchildren++] = pid;
    return pid;
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

/* Sends one job; the payload buffer is constant and outlives the sends (zero copy). */
static void
s_send_job (void *dealer, const char *payload, size_t size)
{
    while (zmq_send (dealer, "J", 1, ZMQ_SNDMORE) < 0 && zmq_errno () == EINTR) {
    }
    zmq_msg_t msg;
    zmq_msg_init_data (&msg, (void *) payload, size, NULL, NULL);
    s_send_frame (dealer, &msg, false);
}

/* Receives one reply within S_STALL_MS; false on timeout. */
static bool
s_recv_reply (void *dealer, zmq_msg_t *msg)
{
    while (zmq_msg_recv (msg, dealer, 0) < 0) {
        if (zmq_errno () == EAGAIN) {
            return false;
        }
        if (zmq_errno () != EINTR) {
            s_die ("receive");
        }
    }
    s_drain (dealer, msg, zmq_msg_more (msg));
    return true;
}

static int
s_wait_workers (void *dealer, int n)
{
    int64_t deadline = s_mono_us () + S_START_TIMEOUT_MS * 1000LL;
    int timeout = 100;
    zmq_setsockopt (dealer, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    int up = 0;
    while (s_mono_us () < deadline) {
        zmq_send (dealer, "H", 1, 0);
        char text[16] = "";
        int size = zmq_recv (dealer, text, sizeof text - 1, 0);
        if (size > 0) {
            text[size] = 0;
            up = atoi (text);
            if (up >= n) {
                return 0;
            }
        }
        usleep (10000);
    }
    fprintf (stderr, "gridq-bench-zmq: %d of %d workers registered within %d s\n", up, n,
             S_START_TIMEOUT_MS / 1000);
    return -1;
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

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: gridq-bench-zmq [--mode throughput|latency] [options]\n"
             "\n"
             "The ceiling for gridq's message path: a bare ZeroMQ ROUTER loop (one process)\n"
             "forwarding jobs from a client DEALER to W echo worker DEALERs (processes of their\n"
             "own) and the replies back, on a free loopback port.\n"
             "\n"
             "  --mode M         throughput (default): --window jobs in flight, jobs/s\n"
             "                   latency: one job in flight; 3-hop round trip p50/p99/p999 (us)\n"
             "  --jobs N         jobs (default: throughput 100000, latency 2000)\n"
             "  --window N       jobs in flight in throughput mode (default 4000)\n"
             "  --workers N      echo worker processes (default 2)\n"
             "  --payload BYTES  bytes per job (default 27: the size of gridq-bench's payload\n"
             "                   {\"data\":\"xxxxxxxxxxxxxxxx\"})\n"
             "  --warmup N       latency: round trips before measuring (default 100)\n"
             "  --json           one JSON object: mode, jobs, seconds, jobs_per_s, p50_us,\n"
             "                   p99_us, p999_us, workers\n"
             "  --help           this text\n");
}

static int
s_bad (const char *option, const char *value)
{
    fprintf (stderr, "gridq-bench-zmq: bad value '%s' for %s\n(see gridq-bench-zmq --help)\n",
             value, option);
    return 2;
}

static int
s_parse (int argc, char **argv, s_opts_t *opts)
{
    static const struct option options[] = {
        {"mode", required_argument, 0, 'm'},    {"jobs", required_argument, 0, 'n'},
        {"window", required_argument, 0, 'w'},  {"workers", required_argument, 0, 'W'},
        {"payload", required_argument, 0, 'p'}, {"warmup", required_argument, 0, 'u'},
        {"json", no_argument, 0, 'j'},          {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0}};
    int opt;
    long jobs = 0;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        char *end = NULL;
        long value = optarg ? strtol (optarg, &end, 10) : 0;
        bool number = optarg && end != optarg && *end == 0;
        switch (opt) {
        case 'm':
            if (strcmp (optarg, "throughput") && strcmp (optarg, "latency")) {
                return s_bad ("--mode", optarg);
            }
            opts->latency = strcmp (optarg, "latency") == 0;
            break;
        case 'n':
            if (!number || value < 1 || value > 1000000000) {
                return s_bad ("--jobs", optarg);
            }
            jobs = value;
            break;
        case 'w':
            if (!number || value < 1 || value > 1000000) {
                return s_bad ("--window", optarg);
            }
            opts->window = value;
            break;
        case 'W':
            if (!number || value < 1 || value > S_MAX_WORKERS) {
                return s_bad ("--workers", optarg);
            }
            opts->workers = (int) value;
            break;
        case 'p':
            if (!number || value < 0 || value > 1000000) {
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
    opts->jobs = jobs ? jobs : opts->latency ? 2000 : 100000;
    return 0;
}

int
main (int argc, char **argv)
{
    s_opts_t opts = {false, 0, 4000, 2, 27, 100, false};
    int rc = s_parse (argc, argv, &opts);
    if (rc) {
        return rc;
    }
    int port = gq_loopback_port ();
    if (port < 0) {
        fprintf (stderr, "gridq-bench-zmq: no free loopback port\n");
        return 1;
    }
    char endpoint[64];
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    signal (SIGINT, s_on_signal);
    signal (SIGTERM, s_on_signal);
    s_fork (s_broker, endpoint);
    for (int i = 0; i < opts.workers; i++) {
        s_fork (s_worker, endpoint);
    }

    void *ctx = zmq_ctx_new ();
    void *dealer = s_socket (ctx, ZMQ_DEALER);
    if (zmq_connect (dealer, endpoint)) {
        s_die ("connect");
    }
    char *payload = (char *) malloc ((size_t) opts.payload_bytes + 1);
    int64_t *samples = opts.latency ? (int64_t *) malloc ((size_t) opts.jobs * sizeof *samples)
                                    : NULL;
    if (!payload || (opts.latency && !samples)) {
        fprintf (stderr, "gridq-bench-zmq: out of memory\n");
        s_stop_children ();
        return 1;
    }
    memset (payload, 'x', (size_t) opts.payload_bytes);
    if (s_wait_workers (dealer, opts.workers)) {
        s_stop_children ();
        return 1;
    }
    int stall = S_STALL_MS;
    zmq_setsockopt (dealer, ZMQ_RCVTIMEO, &stall, sizeof stall);
    zmq_msg_t reply;
    zmq_msg_init (&reply);
    long done = 0;
    double p50 = NAN, p99 = NAN, p999 = NAN;
    int64_t start_us = s_mono_us ();
    if (opts.latency) {
        for (long i = 0; i < opts.warmup + opts.jobs; i++) {
            if (i == opts.warmup) {
                start_us = s_mono_us ();
            }
            int64_t t0 = s_mono_us ();
            s_send_job (dealer, payload, (size_t) opts.payload_bytes);
            if (!s_recv_reply (dealer, &reply)) {
                break;
            }
            if (i >= opts.warmup) {
                samples[done++] = s_mono_us () - t0;
            }
        }
        qsort (samples, (size_t) done, sizeof *samples, s_cmp_i64);
        p50 = s_percentile (samples, done, 0.50);
        p99 = s_percentile (samples, done, 0.99);
        p999 = s_percentile (samples, done, 0.999);
    } else {
        long sent = 0;
        while (done < opts.jobs) {
            while (sent < opts.jobs && sent - done < opts.window) {
                s_send_job (dealer, payload, (size_t) opts.payload_bytes);
                sent++;
            }
            if (!s_recv_reply (dealer, &reply)) {
                break;
            }
            done++;
        }
    }
    double seconds = (s_mono_us () - start_us) / 1e6;
    zmq_msg_close (&reply);
    zmq_close (dealer);
    zmq_ctx_term (ctx);
    s_stop_children ();
    free (payload);
    free (samples);
    if (done < opts.jobs) {
        fprintf (stderr, "gridq-bench-zmq: no reply for %d s: %ld of %ld jobs came back\n",
                 S_STALL_MS / 1000, done, opts.jobs);
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
                "\"workers\":%d,\"window\":%ld,\"payload_bytes\":%d}\n",
                mode, done, seconds, per_s, p50_text, p99_text, p999_text, opts.workers,
                opts.latency ? 1L : opts.window, opts.payload_bytes);
    } else if (opts.latency) {
        printf ("latency (bare ZeroMQ, 3 hops): %ld round trips: p50 %.0f us, p99 %.0f us, "
                "p999 %.0f us (%d workers)\n",
                done, p50, p99, p999, opts.workers);
    } else {
        printf ("throughput (bare ZeroMQ): %ld jobs in %.3f s = %.0f jobs/s (window %ld, "
                "%d workers)\n",
                done, seconds, per_s, opts.window, opts.workers);
    }
    return 0;
}
