/*  opts.h — the broker's configuration: the command line's options and the config file's
    fields, with their defaults. Options are plain data; the modules that use them take what
    they need. */
#ifndef GQ_OPTS_H_INCLUDED
#define GQ_OPTS_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* How hard a commit tries to reach the disk (--durability); the store applies it. */
typedef enum {
    /* WAL with synchronous=NORMAL: a commit is in the operating system's hands when it returns,
       so a broker killed (even SIGKILL) loses nothing it acknowledged; a power loss or kernel
       crash may lose the last commits (never corrupts the file). No fsync per commit. */
    GQ_DURABILITY_NORMAL = 0,
    /* WAL with synchronous=FULL: each commit is fsynced before it returns, so an acknowledged job
       survives a power loss too. Costs one fsync per loop turn (group commit amortises it). */
    GQ_DURABILITY_FULL = 1
} gq_durability_t;

/* Score weights (broker config "weights"); each term is normalised to 0..1 before weighting. */
typedef struct {
    double fit;         /* min_vram / vram_free: the card that is just big enough (a job
                           asking no VRAM: 1 - vram_free / the fleet's largest card) */
    double compute;     /* tflops over the fleet's largest */
    double cost;        /* cheaper is better, normalised over the fleet */
    double warm;        /* the job's model is loaded already */
    double load;        /* free slots over slots */
    double latency;     /* low heartbeat round trip */
    double reliability; /* recent success ratio */
    double affinity;    /* a bonus, not a term: the node that ran the last job of the same
                           affinity key gains this much, when it has a free slot (sched.c) */
} gq_weights_t;

typedef struct {
    const char *endpoint;          /* ROUTER bind endpoint */
    const char *db_path;           /* SQLite file */
    int heartbeat_ms;              /* heartbeat interval told to workers */
    int liveness;                  /* missed heartbeats before a worker is offline */
    gq_durability_t durability;    /* SQLite synchronous FULL or NORMAL */
    int64_t retention_ms;          /* how long finished jobs stay in the store */
    gq_weights_t weights;          /* matcher score weights */
    int64_t aging_ms;              /* one priority level per this much waiting */
    size_t backfill_window;        /* unplaceable jobs looked past before giving up */
    int64_t reserve_after_ms;      /* a blocked head job gets a node reserved after this wait */
    double backoff_base_ms;        /* first backoff of a failing node; doubles while it fails */
    int64_t node_grace_ms;         /* a job whose able nodes all failed it waits this long for
                                      one that just went offline; -1: the liveness window */
    int prefetch_max;              /* jobs sent to a node beyond its slots, at most, for kinds
                                      that run short there (0: no prefetch) */
    double prefetch_below_ms;      /* a kind runs short on a node when its measured run time
                                      there is below this */
    int64_t prefetch_recall_ms;    /* a prefetched job that waited this long on its node is
                                      recalled when another node could take it */
    const char *cert_path;         /* broker secret certificate (CURVE), or NULL */
    const char *clients_dir;       /* public keys allowed as clients */
    const char *workers_dir;       /* public keys allowed as workers */
    bool insecure;                 /* allow a non-loopback bind without CURVE */
    double rate_per_s;             /* client token bucket rate; 0: unlimited */
    double burst;                  /* client token bucket size */
    int64_t max_queued_per_client; /* 0: unlimited */
    const char *metrics;           /* HOST:PORT for /metrics, or NULL */
} gq_broker_opts_t;

/* Fills opts with the defaults of the command-line contract. */
void gq_broker_opts_default (gq_broker_opts_t *opts);
/* Reads a JSON config file into opts: {"weights": {fit, compute, ...}, "aging_ms",
   "backfill_window", "reserve_after_ms", "heartbeat_ms", "liveness", "prefetch_max",
   "prefetch_below_ms", "prefetch_recall_ms", ...}.
   0 or GQ_EINVAL with a reason. */
int gq_broker_opts_load (gq_broker_opts_t *opts, const char *path, char *why, size_t whylen);

#endif
