/*  sched.h — the dispatch policy: which queued jobs go to which nodes now. Pure: the queue, the
    matcher and `now` in, a list of dispatches out; no I/O, no clock.

    The scheduler walks the queue in dispatch order and places every job the matcher finds a
    node for. A job that fits nowhere is skipped, so later jobs may backfill, but the walk
    stops after backfill_window + 1 consecutive jobs that fit nowhere. Against starvation, the
    first job in order that fits nowhere and has waited longer than reserve_after_ms gets one
    node reserved (see sched.c for which and why): no other job is placed there until it runs.

    The scheduler borrows the queue and the matcher; destroy it before them. */
#ifndef GQ_SCHED_H_INCLUDED
#define GQ_SCHED_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "matcher.h"
#include "queue.h"

/* One placement decided by gq_sched_run. */
typedef struct {
    gq_job_t *job; /* the job, removed from the queue, state running, node set */
    int32_t node;  /* the matcher index of its node */
} gq_dispatch_t;

typedef struct _gq_sched_t gq_sched_t;

/* A scheduler over queue and matcher (borrowed). backfill_window: consecutive unplaceable jobs
   looked at past a blocked one (0: strict order, no backfill; GQ_BACKFILL_WINDOW is the
   default). reserve_after_ms: how long the first blocked job waits before a node is reserved
   for it (< 0: never). */
gq_sched_t *gq_sched_new (gq_queue_t *queue, gq_matcher_t *matcher, size_t backfill_window,
                          int64_t reserve_after_ms);
/* Releases the reservation it holds (the matcher must still exist) and frees it. */
void gq_sched_destroy (gq_sched_t **self_p);

/* The node a job would rather run on (affinity: the node that ran the last job of its key), or
   -1. Called once per pick; must be cheap. */
typedef int32_t (gq_sched_prefer_fn) (void *arg, const gq_job_t *job);
/* Sets where preferences come from (fn NULL: none) and the bonus a preferred node's score
   gains (weights.affinity). */
void gq_sched_set_prefer (gq_sched_t *self, gq_sched_prefer_fn *fn, void *arg, double bonus);
/* The node for job now: the matcher's pick, or the job's preferred node when its score plus
   the bonus beats the pick's, it passes every filter and has a free slot. *preferred (may be
   NULL) gets the preferred node, -1 for none. -1 when no node can take the job. */
int32_t gq_sched_pick (gq_sched_t *self, const gq_job_t *job, int64_t now_ms,
                       int32_t *preferred);

/* Places what can be placed now: each job placed is removed from the queue, booked on its node
   (gq_matcher_assign), gets node, started_ms = now_ms and state running, and is appended to
   out. Returns the number of dispatches (at most max). O(1) when no node has a free slot. */
size_t gq_sched_run (gq_sched_t *self, int64_t now_ms, gq_dispatch_t *out, size_t max);

/* The node reserved now, -1 for none; *job_id (may be NULL) gets the job it is held for. */
int32_t gq_sched_reserved (gq_sched_t *self, int64_t *job_id);

void gq_sched_test (bool verbose);

#endif
