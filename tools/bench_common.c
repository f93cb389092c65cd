/*  bench_common.c — what the benchmark programs share (see bench_common.h). */
#define _GNU_SOURCE
#include "bench_common.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "gq_common.h"
#include "tuning.h"

int64_t
bench_wall_us (void)
{
    struct timespec now;
    clock_gettime (CLOCK_REALTIME, &now);
    return (int64_t) now.tv_sec * 1000000 + now.tv_nsec / 1000;
}

/* ---- Latency samples ----------------------------------------------------------------------- */

struct _bench_samples_t {
    int64_t *us;               /* round trips in microseconds, in the order taken */
    size_t count;              /* entries of us in use */
    size_t cap;                /* entries of us */
};

bench_samples_t *
bench_samples_new (size_t cap)
{
    bench_samples_t *self = (bench_samples_t *) calloc (1, sizeof *self);
    if (self) {
        self->us = (int64_t *) malloc ((cap ? cap : 1) * sizeof *self->us);
        self->cap = cap;
    }
    if (self && !self->us) {
        bench_samples_destroy (&self);
    }
    return self;
}

void
bench_samples_destroy (bench_samples_t **self_p)
{
    if (self_p && *self_p) {
        free ((*self_p)->us);
        free (*self_p);
        *self_p = NULL;
    }
}

void
bench_samples_add (bench_samples_t *self, int64_t us)
{
    if (self->count < self->cap) {
        self->us[self->count++] = us;
    }
}

static int
s_cmp_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of n sorted samples. */
static double
s_percentile (const int64_t *sorted, size_t n, double p)
{
    if (n == 0) {
        return NAN;
    }
    size_t rank = (size_t) ceil (p * (double) n);
    return (double) sorted[rank ? rank - 1 : 0];
}

bench_latency_t
bench_samples_latency (bench_samples_t *self)
{
    qsort (self->us, self->count, sizeof *self->us, s_cmp_i64);
    bench_latency_t latency = {s_percentile (self->us, self->count, 0.50),
                               s_percentile (self->us, self->count, 0.99),
                               s_percentile (self->us, self->count, 0.999)};
    return latency;
}

bench_latency_t
bench_latency_none (void)
{
    bench_latency_t latency = {NAN, NAN, NAN};
    return latency;
}

const char *
bench_latency_text (const bench_latency_t *latency, char *buf, size_t size)
{
    snprintf (buf, size, "p50 %.0f us, p99 %.0f us, p999 %.0f us", latency->p50_us,
              latency->p99_us, latency->p999_us);
    return buf;
}

/* ---- Load generators: common options and the report ---------------------------------------- */

int
bench_bad_value (const char *program, const char *option, const char *value)
{
    fprintf (stderr, "%s: bad value '%s' for %s\n(see %s --help)\n", program, value, option,
             program);
    return 2;
}

int
bench_load_option (bench_load_t *self, int opt, const char *arg)
{
    if (opt == BENCH_OPT_MODE) {
        if (strcmp (arg, "throughput") && strcmp (arg, "latency")) {
            bench_bad_value (self->program, "--mode", arg);
            return -1;
        }
        self->latency = strcmp (arg, "latency") == 0;
        return 1;
    }
    if (opt == BENCH_OPT_JSON) {
        self->json = true;
        return 1;
    }
    /* The others are whole numbers, each within its range. */
    const struct {
        int opt;               /* getopt_long's value */
        const char *name;      /* for the message about a bad value */
        int64_t lo, hi;        /* the range allowed */
        long *value;           /* where it goes */
    } numbers[] = {
        {BENCH_OPT_JOBS, "--jobs", 1, 1000000000, &self->jobs},
        {BENCH_OPT_WORKERS, "--workers", 1, self->max_workers, &self->workers},
        {BENCH_OPT_PAYLOAD, "--payload", self->min_payload_bytes, 1000000, &self->payload_bytes},
        {BENCH_OPT_WARMUP, "--warmup", 0, 1000000, &self->warmup},
    };
    for (size_t i = 0; i < sizeof numbers / sizeof numbers[0]; i++) {
        if (numbers[i].opt == opt) {
            int64_t value;
            if (gq_parse_int (arg, numbers[i].lo, numbers[i].hi, &value)) {
                bench_bad_value (self->program, numbers[i].name, arg);
                return -1;
            }
            *numbers[i].value = (long) value;
            return 1;
        }
    }
    return 0;
}

int
bench_load_finish (bench_load_t *self, int argc, char **argv)
{
    if (argc > 0) {
        return bench_bad_value (self->program, "an argument", argv[0]);
    }
    if (self->jobs == 0) {
        self->jobs = self->latency ? 2000 : 100000;
    }
    return 0;
}

void
bench_load_report (const bench_load_t *load, const bench_run_t *run, const char *system,
                   const char *setup, const char *json_more)
{
    double per_s = run->seconds > 0 ? (double) run->done / run->seconds : 0;
    const bench_latency_t *latency = &run->latency;
    if (load->json) {
        char p50[32] = "null", p99[32] = "null", p999[32] = "null";
        if (load->latency) {
            snprintf (p50, sizeof p50, "%.1f", latency->p50_us);
            snprintf (p99, sizeof p99, "%.1f", latency->p99_us);
            snprintf (p999, sizeof p999, "%.1f", latency->p999_us);
        }
        printf ("{\"mode\":\"%s\",\"jobs\":%ld,\"seconds\":%.6f,\"jobs_per_s\":%.0f,"
                "\"p50_us\":%s,\"p99_us\":%s,\"p999_us\":%s,\"durability\":null,"
                "\"workers\":%ld,%s}\n",
                load->latency ? "latency" : "throughput", run->done, run->seconds, per_s, p50,
                p99, p999, load->workers, json_more);
    } else if (load->latency) {
        char text[128];
        printf ("latency (%s): %ld round trips: %s (%ld workers)\n", system, run->done,
                bench_latency_text (latency, text, sizeof text), load->workers);
    } else {
        printf ("throughput (%s): %ld jobs in %.3f s = %.0f jobs/s (%s, %ld workers)\n", system,
                run->done, run->seconds, per_s, setup, load->workers);
    }
}

/* ---- Child processes that die with us ------------------------------------------------------ */

static pid_t s_children[GQ_BENCH_MAX_CHILDREN]; /* started by bench_fork, not yet stopped */
static int s_nchildren;                         /* entries of s_children */

pid_t
bench_fork (void (*body) (void *arg), void *arg)
{
    if (s_nchildren == GQ_BENCH_MAX_CHILDREN) {
        errno = EAGAIN;
        return -1;
    }
    pid_t parent = getpid ();
    pid_t pid = fork ();
    if (pid == 0) {
        prctl (PR_SET_PDEATHSIG, SIGKILL);
        if (getppid () != parent) {
            _exit (1); /* the parent died before the death signal was armed */
        }
        body (arg);
        _exit (0);
    }
    if (pid > 0) {
        s_children[s_nchildren++] = pid;
    }
    return pid;
}

void
bench_children_stop (void)
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

void
bench_children_kill_on_signal (void)
{
    signal (SIGINT, s_on_signal);
    signal (SIGTERM, s_on_signal);
}
