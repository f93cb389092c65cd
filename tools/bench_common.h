/*  bench_common.h — what the benchmark programs share: latency samples and their percentiles,
    and for the two load generators beside gridq-bench (gridq-bench-zmq, gridq-bench-gearman)
    their common options, the line or JSON object that reports a run (tools/bench-peers reads it)
    and child processes that die with them. The clock and whole-number option values are
    gq_common.h's (gq_mono_us, gq_parse_int); the wall clock that processes compare stamps by
    is bench_wall_us. libc, libm and gq_common only: gridq-bench-gearman does not link libgridq. */
#ifndef GQ_BENCH_COMMON_H_INCLUDED
#define GQ_BENCH_COMMON_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Wall clock (CLOCK_REALTIME) in microseconds since the Unix epoch: a stamp that another
   process on the same machine subtracts from its own reading (gridq-bench-engine stamps its
   partials and results with it; an engine in any language can read this clock). */
int64_t bench_wall_us (void);

/* ---- Latency samples ----------------------------------------------------------------------- */

typedef struct _bench_samples_t bench_samples_t;

/* A latency run's figures in microseconds; NAN where nothing was measured. */
typedef struct {
    double p50_us;             /* median round trip */
    double p99_us;             /* 99th percentile */
    double p999_us;            /* 99.9th percentile */
} bench_latency_t;

/* Room for cap round trips; NULL when out of memory. */
bench_samples_t *bench_samples_new (size_t cap);
/* Frees the samples and NULLs the caller's pointer; safe on NULL and twice. */
void bench_samples_destroy (bench_samples_t **self_p);
/* Records a round trip of us microseconds (beyond cap: dropped). */
void bench_samples_add (bench_samples_t *self, int64_t us);
/* Nearest-rank p50, p99 and p999 of the round trips (sorts them); NAN each when there are
   none. */
bench_latency_t bench_samples_latency (bench_samples_t *self);
/* Nothing measured (a throughput run): NAN each. */
bench_latency_t bench_latency_none (void);
/* "p50 12 us, p99 30 us, p999 41 us" into buf, which it returns. */
const char *bench_latency_text (const bench_latency_t *latency, char *buf, size_t size);

/* ---- Load generators: common options and the report ---------------------------------------- */

/* The options gridq-bench-zmq and gridq-bench-gearman take alike. The program fills the
   first three fields and the defaults; bench_load_option sets the others from the command
   line. */
typedef struct {
    const char *program;       /* name that starts messages: "gridq-bench-zmq" */
    long min_payload_bytes;    /* smallest --payload */
    long max_workers;          /* largest --workers */
    bool latency;              /* --mode latency, else throughput */
    long jobs;                 /* --jobs; 0: the mode's default (bench_load_finish) */
    long workers;              /* --workers: worker processes */
    long payload_bytes;        /* --payload: bytes per job */
    long warmup;               /* --warmup: latency round trips before measuring */
    bool json;                 /* --json: one JSON object on stdout */
} bench_load_t;

/* getopt_long values of those options, for the program's own option table. */
enum {
    BENCH_OPT_MODE = 'm',
    BENCH_OPT_JOBS = 'n',
    BENCH_OPT_WORKERS = 'W',
    BENCH_OPT_PAYLOAD = 'p',
    BENCH_OPT_WARMUP = 'u',
    BENCH_OPT_JSON = 'j'
};

/* Takes getopt_long's opt (with its optarg, arg) when it is one of the options above: 1 when
   taken, 0 when opt is another, -1 after printing that arg is a bad value. */
int bench_load_option (bench_load_t *self, int opt, const char *arg);
/* After the options, given the arguments left over: 0, with --jobs set to the mode's default
   where it was not given, or 2 (the usage exit code) after printing that one was left over. */
int bench_load_finish (bench_load_t *self, int argc, char **argv);
/* "PROGRAM: bad value 'VALUE' for OPTION" and where to read more, on stderr; returns 2. */
int bench_bad_value (const char *program, const char *option, const char *value);

/* What a load generator measured. */
typedef struct {
    long done;                 /* jobs that came back */
    double seconds;            /* measured interval */
    bench_latency_t latency;   /* latency mode's figures; NAN in throughput mode */
} bench_run_t;

/* Reports a run on stdout. With --json one object: {"mode", "jobs", "seconds", "jobs_per_s",
   "p50_us", "p99_us", "p999_us", "durability": null, "workers", then json_more (members of the
   program's own, no leading comma)}, the fields in gridq-bench's order. Else one line:
   "latency (SYSTEM): N round trips: p50 .. us, p99 .. us, p999 .. us (W workers)" or
   "throughput (SYSTEM): N jobs in S s = R jobs/s (SETUP, W workers)". */
void bench_load_report (const bench_load_t *load, const bench_run_t *run, const char *system,
                        const char *setup, const char *json_more);

/* ---- Child processes that die with us ------------------------------------------------------ */

/* Forks a child that runs body (arg), then exits 0; it dies with us (PR_SET_PDEATHSIG), even
   when we are killed with SIGKILL. Returns its PID, kept for bench_children_stop, or -1 (errno
   set) when it cannot be started or GQ_BENCH_MAX_CHILDREN already run. */
pid_t bench_fork (void (*body) (void *arg), void *arg);
/* Sends SIGTERM to every child from bench_fork, then reaps them. */
void bench_children_stop (void);
/* From now on SIGINT and SIGTERM kill every child (SIGKILL) and exit 128 + the signal. */
void bench_children_kill_on_signal (void);

#endif
