/*  matcher.h — the node registry and the placement decision. Pure: nodes, a job and `now` in, a
    ranked choice out. No I/O, no clock, no logging, no allocation per decision.

    The matcher owns the node table. Node indexes are stable for the matcher's lifetime: a node
    that goes offline and comes back under the same name keeps its index. Callers may read a
    node through gq_matcher_node() and change its fields, but must then call
    gq_matcher_node_changed() so the indexes follow (incrementally, never a wholesale rebuild). */
#ifndef GQ_MATCHER_H_INCLUDED
#define GQ_MATCHER_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "gq_common.h"
#include "job.h"
#include "opts.h"

typedef enum {
    GQ_NODE_ONLINE = 0,   /* connected, takes jobs (may be partly used) */
    GQ_NODE_BUSY = 1,     /* connected, every slot in use */
    GQ_NODE_DRAINING = 2, /* connected, finishes its jobs, takes no new ones */
    GQ_NODE_OFFLINE = 3   /* missed its heartbeats or said goodbye */
} gq_node_status_t;
/* "online", "busy", "draining", "offline"; "unknown" for an unknown status. */
const char *gq_node_status_name (int status);

/* The defaults: the seed's fit / compute / cost retuned so that the card just big enough wins
   (1.0 / 0.3 / 0.3), plus the terms gridq adds (warm 0.6, load 0.1, latency 0.05, reliability
   0.2); matcher.c says why. */
void gq_weights_default (gq_weights_t *w);

typedef struct {
    char name[GQ_NAME_MAX];           /* the worker's --name */
    char gpu_model[GQ_GPU_MODEL_MAX]; /* "NVIDIA H100 80GB HBM3", "cpu" */
    int32_t vram_total_mb;
    int32_t vram_free_mb;    /* effective free VRAM (reported, less reservations) */
    float tflops;
    float price_per_hour;
    int32_t slots;           /* concurrent jobs */
    int32_t running;         /* jobs dispatched and not finished (prefetched ones included) */
    int32_t prefetch;        /* jobs it may hold beyond slots (set by the broker from its
                                round trip and run times), while slow < slots */
    int32_t slow;            /* jobs on it of kinds not in short_kinds when they came */
    uint64_t short_kinds;    /* bit i: kind i runs short there (prefetch pays; set by the
                                broker) */
    uint64_t kinds;          /* bit i set: supports kind id i */
    uint32_t *models_available; /* sorted model ids (owned by the matcher) */
    uint32_t *models_loaded;    /* sorted model ids loaded now (owned by the matcher) */
    uint16_t n_available, n_loaded;
    float rtt_ms;            /* heartbeat round trip, smoothed */
    float reliability;       /* recent success ratio 0..1 (1 for a new node) */
    uint32_t jobs_ok, jobs_failed;
    int64_t idle_since_ms;   /* when running last dropped to 0 (tie-break: idle longest wins) */
    int64_t backoff_until_ms;/* not chosen before this time (failing node), 0 for none */
    uint8_t status;          /* gq_node_status_t */
} gq_node_t;

/* Filter verdicts, in the order they are checked. */
typedef enum {
    GQ_FILTER_OK = 0,
    GQ_FILTER_OFFLINE,
    GQ_FILTER_DRAINING,
    GQ_FILTER_NO_SLOT,
    GQ_FILTER_BACKOFF,
    GQ_FILTER_KIND,
    GQ_FILTER_MODEL,
    GQ_FILTER_VRAM,
    GQ_FILTER_GPU_PATTERN,
    GQ_FILTER_PRICE,
    GQ_FILTER_TFLOPS,
    GQ_FILTER_EXCLUDED,
    GQ_FILTER_RESERVED    /* held for another job that starves (see gq_matcher_reserve) */
} gq_filter_t;
/* "ok", "offline", "draining", "no_slot", ... ; "unknown" for an unknown verdict. */
const char *gq_filter_name (int verdict);

/* Score terms of one node for one job, each 0..1, and the weighted total. */
typedef struct {
    double fit, compute, cost, warm, load, latency, reliability, total;
} gq_score_t;

typedef struct _gq_matcher_t gq_matcher_t;

/* A new, empty matcher with the given weights (NULL: defaults). */
gq_matcher_t *gq_matcher_new (const gq_weights_t *weights);
void gq_matcher_destroy (gq_matcher_t **self_p);
void gq_matcher_set_weights (gq_matcher_t *self, const gq_weights_t *weights);

/* Interning of kind and model names. Returns the id, or -1 when the name is unknown and create
   is false, or when the table is full (kinds: GQ_MAX_KINDS, models: GQ_MAX_MODEL_NAMES). Model
   id 0 is never used. */
int gq_matcher_kind_id (gq_matcher_t *self, const char *kind, bool create);
int64_t gq_matcher_model_id (gq_matcher_t *self, const char *model, bool create);
/* How many kinds are interned (at most GQ_MAX_KINDS). */
size_t gq_matcher_kinds (gq_matcher_t *self);
/* How many model names are interned (at most GQ_MAX_MODEL_NAMES). */
size_t gq_matcher_model_names (gq_matcher_t *self);
const char *gq_matcher_kind_name (gq_matcher_t *self, int id);
const char *gq_matcher_model_name (gq_matcher_t *self, uint32_t id);

/* Adds a node or finds the one of that name: returns its index, or -1 on allocation failure.
   A new node starts offline with zero capacity; fill it and call gq_matcher_node_changed. */
int32_t gq_matcher_node_find_or_add (gq_matcher_t *self, const char *name);
/* The index of the node of that name, or -1. */
int32_t gq_matcher_node_find (gq_matcher_t *self, const char *name);
size_t gq_matcher_nodes (gq_matcher_t *self);
/* Borrowed pointer into the table (valid until the next find_or_add). */
gq_node_t *gq_matcher_node (gq_matcher_t *self, int32_t index);
/* Replaces a node's model lists (ids copied and sorted; ids this matcher did not issue are
   dropped, and lists are cut at GQ_MAX_MODELS). The indexes follow: no node_changed needed.
   Never edit models_available / models_loaded through the node pointer. 0 or -1. */
int gq_matcher_node_set_models (gq_matcher_t *self, int32_t index, const uint32_t *available,
                                size_t n_available, const uint32_t *loaded, size_t n_loaded);
/* Tells the matcher a node's fields changed, so its indexes follow: O((1 + models) log n),
   cheaper when only rtt, reliability, backoff or idle_since moved, free when nothing did.
   Normalises status: a connected node (online or busy) is busy when running >=
   gq_node_capacity, online otherwise; draining and offline stay. */
void gq_matcher_node_changed (gq_matcher_t *self, int32_t index);

/* The best node for job at time now_ms, or -1 when no node passes the filters. Does not change
   any state (beyond internal caches: one thread only). No allocation; O(groups + log n) on a
   typical fleet, never more than the exhaustive scan, and always the same answer as it. */
int32_t gq_matcher_pick (gq_matcher_t *self, const gq_job_t *job, int64_t now_ms);
/* Jobs a node takes at once: its slots, plus its prefetch while fewer than slots of its jobs
   are slow (a slow job holds its slot long: prefetched jobs would wait behind it). */
static inline int32_t
gq_node_capacity (const gq_node_t *n)
{
    return n->slots + (n->slow < n->slots ? n->prefetch : 0);
}
/* Books job on node: running + 1 (slow + 1, and job->slow set, when its kind is not short
   there), vram_free - min_vram, status busy when full; indexes follow. */
void gq_matcher_assign (gq_matcher_t *self, int32_t node, gq_job_t *job);
/* Undoes gq_matcher_assign when the job ends: running - 1 (slow - 1 when job->slow, which is
   cleared), vram_free + min_vram (at most vram_total), online again; idle_since = now_ms when
   running drops to 0. */
void gq_matcher_release (gq_matcher_t *self, int32_t node, gq_job_t *job, int64_t now_ms);

/* The explanation of every node's verdict and the hint of a job that fits nowhere are in
   explain.h. */

/* Nodes online with a free slot (backing off or reserved ones included). O(1): the dispatcher
   asks this first, so a full fleet costs nothing however long the queue. */
size_t gq_matcher_available_count (gq_matcher_t *self);
/* Whether some connected node (online or busy, not draining) offers kind id kind. O(1). */
bool gq_matcher_kind_ready (gq_matcher_t *self, int kind);

/* Reservation against starvation. gq_matcher_reserve_candidate returns the node to hold for a
   job that fits nowhere now: among the connected nodes that pass its static requirements
   (kind, model, vram_total >= min_vram, constraints, not excluded, not reserved for another
   job) the one with the most free VRAM, then the fewest running jobs, then not backing off,
   then the lowest index; -1 when there is none. O(nodes). gq_matcher_reserve holds node for the
   job of id job_id (0 releases it): pick then offers that node to that job only. */
int32_t gq_matcher_reserve_candidate (gq_matcher_t *self, const gq_job_t *job, int64_t now_ms);
void gq_matcher_reserve (gq_matcher_t *self, int32_t node, int64_t job_id);
/* True when node is connected, not draining, and meets job's static requirements: it could run
   job once enough of its jobs end (the check that keeps a reservation worth holding). */
bool gq_matcher_could_run (gq_matcher_t *self, int32_t node, const gq_job_t *job);
/* True when node could run job once it is connected: job's static requirements (kind, model,
   VRAM, constraints) and no exclusion; its connection and load do not count. */
bool gq_matcher_fits (gq_matcher_t *self, int32_t node, const gq_job_t *job);
/* The job id a node is held for, 0 when none. */
int64_t gq_matcher_reserved_for (gq_matcher_t *self, int32_t node);

/* The verdict of one node for job, and its score terms when it passes; reason gets the
   sentence (may be NULL). */
gq_filter_t gq_matcher_score (gq_matcher_t *self, int32_t node, const gq_job_t *job,
                              int64_t now_ms, gq_score_t *score, char *reason, size_t size);
/* The exhaustive reference of gq_matcher_pick: every node filtered and scored in turn. Same
   answer, O(nodes); for tests and for the benchmark's baseline. */
int32_t gq_matcher_pick_exhaustive (gq_matcher_t *self, const gq_job_t *job, int64_t now_ms);

void gq_matcher_test (bool verbose);

#endif
