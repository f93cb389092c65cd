/*  commit.h — the broker's commit pipeline (commit.c), and its contract.

    Every write the broker makes goes through here. The loop records the writes of its turns in
    the pending batch (gq_commit_recorded after each gq_batch_* call); a batch that is due goes
    to the writer thread (writer.h), or is committed by the loop itself when small and nothing
    else waits, one batch at a time and in order. What waits on a batch is settled when it is
    back: submissions acknowledged (or refused), replies that promise a write sent, requests
    held for it handled again, jobs that ended freed. Job ids are reserved ahead by a committed
    next_job_id, so that no id is ever handed out twice.

    Failure policy (each write's own is in writer.h): a write that fails for its own sake fails
    alone, or refuses its submission alone; a batch the database or the disk refuses is kept and
    applied again with a backoff, its submissions refused (STORE) and every other write kept,
    and nothing recorded later is handed over before it; meanwhile store_down_ms is set: the
    broker places no new work and refuses SUBMIT, says so once, and resumes by itself when a
    commit succeeds. Replies that promise a write go with the batch that holds it. */
#ifndef GQ_COMMIT_H_INCLUDED
#define GQ_COMMIT_H_INCLUDED

#include <czmq.h>

#include "broker.h"
#include "writer.h"

/* The writes of one or more turns, and what waits for them to commit. */
typedef struct {
    gq_batch_t *batch; /* the writes */
    zlist_t *submits;  /* gq_submit_t: acknowledged when it is back */
    zlist_t *replies;  /* gq_msg_t: sent when it is back */
    zlist_t *dead;     /* gq_job_t that ended: the batch borrows them; freed when it is back */
    zlist_t *idems;    /* idem keys it inserts (strings): no longer pending when it is back */
    zlist_t *held;     /* gq_msg_t requests handled again when it is back: SUBMITs that repeat
                          one of its idem keys, questions about jobs whose end it commits */
    int64_t id_mark;   /* the next_job_id it records, 0 for none */
    int64_t id_first, id_last; /* the ids of the jobs it inserts (0, 0 for none) */
    int64_t *released;         /* waiting jobs whose parents all ended as they ask: they join
                                  the queue when it is back, so that no job runs before the end
                                  of its parent is committed (deps.c) */
    size_t released_count, released_size; /* its entries, allocated entries */
    int64_t opened_us;         /* when its first write was recorded */
} gq_pending_t;

/* A new, empty pending batch, or NULL when out of memory. */
gq_pending_t *gq_pending_new (gq_broker_t *self);
/* Frees a pending batch and everything waiting on it (at shutdown, or once it is settled). */
void gq_pending_destroy (gq_broker_t *self, gq_pending_t **pending_p);
/* Notes a write recorded in the pending batch; rc is the gq_batch_* result (a failure spoiled
   the batch: it comes back failed, and its submissions are refused). */
void gq_commit_recorded (gq_broker_t *self, int rc);
/* Records a next_job_id ahead of the ids handed out, once they come within half a block of
   the last one recorded. */
void gq_commit_reserve_ids (gq_broker_t *self);
/* A batch is back from the writer: what waited on it is settled, then it is freed. */
void gq_commit_back (gq_broker_t *self, gq_batch_t *batch);
/* Commits the pending batch when the writer is idle and the batch is due. Returns true when it
   committed in the loop itself (its jobs may have joined the queue). */
bool gq_commit_kick (gq_broker_t *self);
/* At shutdown: commits everything recorded, waiting for the writer (blocks the loop). */
void gq_commit_drain (gq_broker_t *self);
/* Cron: finished jobs past the retention period are purged (in the next batch). */
void gq_commit_retention (gq_broker_t *self, int64_t now_ms);

#endif
