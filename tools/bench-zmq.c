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
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zmq.h>

#include "bench_common.h"
#include "gq_common.h"
#include "tuning.h"

#define S_ID_MAX 256 /* ZeroMQ routing ids are at most 255 bytes */

typedef struct {
    bench_load_t load;         /* mode, jobs, workers, payload, warmup, json */
    long window;               /* throughput: jobs in flight */
} s_opts_t;

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
s_broker (void *endpoint)
{
    void *ctx = zmq_ctx_new ();
    void *router = s_socket (ctx, ZMQ_ROUTER);
    if (zmq_bind (router, (const char *) endpoint)) {
        s_die ("bind");
    }
    unsigned char ids[GQ_BENCH_ZMQ_MAX_WORKERS][S_ID_MAX];
    size_t id_sizes[GQ_BENCH_ZMQ_MAX_WORKERS];
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
        } else if (type == 'W' && n_workers < GQ_BENCH_ZMQ_MAX_WORKERS &&
                   zmq_msg_size (&from) < S_ID_MAX) {
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
s_worker (void *endpoint)
{
    void *ctx = zmq_ctx_new ();
    void *dealer = s_socket (ctx, ZMQ_DEALER);
    if (zmq_connect (dealer, (const char *) endpoint)) {
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

/* Receives one reply within GQ_BENCH_ZMQ_STALL_MS; false on timeout. */
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
    int64_t deadline = gq_mono_us () + GQ_BENCH_ZMQ_START_TIMEOUT_MS * 1000LL;
    int timeout = 100;
    zmq_setsockopt (dealer, ZMQ_RCVTIMEO, &timeout, sizeof timeout);
    int up = 0;
    while (gq_mono_us () < deadline) {
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
             GQ_BENCH_ZMQ_START_TIMEOUT_MS / 1000);
    return -1;
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
s_parse (int argc, char **argv, s_opts_t *opts)
{
    static const struct option options[] = {{"mode", required_argument, 0, BENCH_OPT_MODE},
                                            {"jobs", required_argument, 0, BENCH_OPT_JOBS},
                                            {"window", required_argument, 0, 'w'},
                                            {"workers", required_argument, 0, BENCH_OPT_WORKERS},
                                            {"payload", required_argument, 0, BENCH_OPT_PAYLOAD},
                                            {"warmup", required_argument, 0, BENCH_OPT_WARMUP},
                                            {"json", no_argument, 0, BENCH_OPT_JSON},
                                            {"help", no_argument, 0, 'h'},
                                            {0, 0, 0, 0}};
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        int taken = bench_load_option (&opts->load, opt, optarg);
        if (taken < 0) {
            return 2;
        }
        int64_t value;
        if (taken) {
            continue;
        } else if (opt == 'w') {
            if (gq_parse_int (optarg, 1, 1000000, &value)) {
                return bench_bad_value (opts->load.program, "--window", optarg);
            }
            opts->window = (long) value;
        } else if (opt == 'h') {
            s_usage (stdout);
            exit (0);
        } else {
            s_usage (stderr);
            return 2;
        }
    }
    return bench_load_finish (&opts->load, argc - optind, argv + optind);
}

int
main (int argc, char **argv)
{
    s_opts_t opts = {.load = {.program = "gridq-bench-zmq",
                              .min_payload_bytes = 0,
                              .max_workers = GQ_BENCH_ZMQ_MAX_WORKERS,
                              .workers = 2,
                              .payload_bytes = 27,
                              .warmup = 100},
                     .window = 4000};
    int rc = s_parse (argc, argv, &opts);
    if (rc) {
        return rc;
    }
    const bench_load_t *load = &opts.load;
    int port = gq_loopback_port ();
    if (port < 0) {
        fprintf (stderr, "gridq-bench-zmq: no free loopback port\n");
        return 1;
    }
    char endpoint[64];
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    bench_children_kill_on_signal ();
    pid_t started = bench_fork (s_broker, endpoint);
    for (int i = 0; started > 0 && i < load->workers; i++) {
        started = bench_fork (s_worker, endpoint);
    }
    if (started < 0) {
        perror ("gridq-bench-zmq: fork");
        bench_children_stop ();
        return 1;
    }

    void *ctx = zmq_ctx_new ();
    void *dealer = s_socket (ctx, ZMQ_DEALER);
    if (zmq_connect (dealer, endpoint)) {
        s_die ("connect");
    }
    char *payload = (char *) malloc ((size_t) load->payload_bytes + 1);
    bench_samples_t *samples = load->latency ? bench_samples_new ((size_t) load->jobs) : NULL;
    if (!payload || (load->latency && !samples)) {
        fprintf (stderr, "gridq-bench-zmq: out of memory\n");
        bench_children_stop ();
        return 1;
    }
    memset (payload, 'x', (size_t) load->payload_bytes);
    if (s_wait_workers (dealer, (int) load->workers)) {
        bench_children_stop ();
        return 1;
    }
    int stall = GQ_BENCH_ZMQ_STALL_MS;
    zmq_setsockopt (dealer, ZMQ_RCVTIMEO, &stall, sizeof stall);
    zmq_msg_t reply;
    zmq_msg_init (&reply);
    bench_run_t run = {0, 0, bench_latency_none ()};
    int64_t start_us = gq_mono_us ();
    if (load->latency) {
        for (long i = 0; i < load->warmup + load->jobs; i++) {
            if (i == load->warmup) {
                start_us = gq_mono_us ();
            }
            int64_t t0 = gq_mono_us ();
            s_send_job (dealer, payload, (size_t) load->payload_bytes);
            if (!s_recv_reply (dealer, &reply)) {
                break;
            }
            if (i >= load->warmup) {
                bench_samples_add (samples, gq_mono_us () - t0);
                run.done++;
            }
        }
        run.latency = bench_samples_latency (samples);
    } else {
        long sent = 0;
        while (run.done < load->jobs) {
            while (sent < load->jobs && sent - run.done < opts.window) {
                s_send_job (dealer, payload, (size_t) load->payload_bytes);
                sent++;
            }
            if (!s_recv_reply (dealer, &reply)) {
                break;
            }
            run.done++;
        }
    }
    run.seconds = (gq_mono_us () - start_us) / 1e6;
    zmq_msg_close (&reply);
    zmq_close (dealer);
    zmq_ctx_term (ctx);
    bench_children_stop ();
    free (payload);
    bench_samples_destroy (&samples);
    if (run.done < load->jobs) {
        fprintf (stderr, "gridq-bench-zmq: no reply for %d s: %ld of %ld jobs came back\n",
                 GQ_BENCH_ZMQ_STALL_MS / 1000, run.done, load->jobs);
        return 1;
    }
    char setup[64], json_more[128];
    snprintf (setup, sizeof setup, "window %ld", opts.window);
    snprintf (json_more, sizeof json_more, "\"window\":%ld,\"payload_bytes\":%ld",
              load->latency ? 1L : opts.window, load->payload_bytes);
    bench_load_report (load, &run,
                       load->latency ? "bare ZeroMQ, 3 hops" : "bare ZeroMQ", setup, json_more);
    return 0;
}
