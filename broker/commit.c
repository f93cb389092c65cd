/*  commit.c — the commit pipeline: the loop records each turn's writes in the pending batch;
    a due batch goes to the writer thread (writer.h), which commits it while the loop goes on
    (group commit: the next batch grows meanwhile), or, when small and nothing else waits, is
    committed by the loop itself. What waits on a batch (acknowledgements of submissions,
    replies that promise a write, jobs that ended) is settled when it is back. Job ids are
    reserved ahead by a committed next_job_id, so that no id is ever handed out twice. */
#include "broker_internal.h"

#include <string.h>

/* ---- Batches: recorded by the loop, committed by the writer -------------------------------- */

/* Notes a write recorded in the pending batch; rc is the gq_batch_* result (a failure spoiled
   the batch: it comes back failed, and its submissions are refused). */
void
gq_commit_recorded (gq_broker_t *self, int rc)
{
    if (!self->pending->opened_us) {
        self->pending->opened_us = gq_mono_us ();
    }
    self->turn_wrote = true;
    if (rc) {
        zsys_error ("broker: out of memory recording a write: its batch will be refused");
    }
}

gq_pending_t *
gq_pending_new (gq_broker_t *self)
{
    gq_pending_t *pending = (gq_pending_t *) calloc (1, sizeof *pending);
    if (!pending) {
        return NULL;
    }
    pending->batch = gq_batch_new ();
    pending->submits = zlist_new ();
    pending->replies = zlist_new ();
    pending->dead = zlist_new ();
    pending->idems = zlist_new ();
    if (!pending->batch || !pending->submits || !pending->replies || !pending->dead ||
        !pending->idems) {
        gq_pending_destroy (self, &pending);
        return NULL;
    }
    zlist_autofree (pending->idems);
    return pending;
}

/* Frees a pending batch and everything waiting on it (at shutdown, or once it is settled). */
void
gq_pending_destroy (gq_broker_t *self, gq_pending_t **pending_p)
{
    gq_pending_t *pending = *pending_p;
    if (!pending) {
        return;
    }
    gq_submit_t *submit;
    while (pending->submits && (submit = (gq_submit_t *) zlist_pop (pending->submits))) {
        gq_intake_submit_free (self, &submit);
    }
    gq_msg_t *msg;
    while (pending->replies && (msg = (gq_msg_t *) zlist_pop (pending->replies))) {
        gq_msg_destroy (&msg);
    }
    gq_job_t *job;
    while (pending->dead && (job = (gq_job_t *) zlist_pop (pending->dead))) {
        gq_broker_job_free (self, &job);
    }
    zlist_destroy (&pending->submits);
    zlist_destroy (&pending->replies);
    zlist_destroy (&pending->dead);
    zlist_destroy (&pending->idems);
    gq_batch_destroy (&pending->batch);
    free (pending);
    *pending_p = NULL;
}

static bool
s_pending_empty (const gq_pending_t *pending)
{
    return gq_batch_size (pending->batch) == 0 && zlist_size (pending->submits) == 0 &&
           zlist_size (pending->replies) == 0 && zlist_size (pending->dead) == 0 &&
           zlist_size (pending->idems) == 0 && gq_batch_status (pending->batch) == GQ_OK;
}

/* Records a next_job_id ahead of the ids handed out, once they come within half a block of
   the last one recorded. */
void
gq_commit_reserve_ids (gq_broker_t *self)
{
    if (self->next_id + GQ_ID_BLOCK_IDS / 2 <= self->id_recorded) {
        return;
    }
    self->id_recorded = self->next_id + GQ_ID_BLOCK_IDS;
    self->pending->id_mark = self->id_recorded;
    gq_commit_recorded (self,
                        gq_batch_meta (self->pending->batch, "next_job_id", self->id_recorded));
}

/* A batch is back from the writer: what waited on it is settled, then it is freed. */
void
gq_commit_back (gq_broker_t *self, gq_batch_t *batch)
{
    gq_pending_t *done = (gq_pending_t *) zlist_pop (self->inflight);
    if (!done || done->batch != batch) {
        zsys_error ("broker: the writer returned a batch out of order; stopping");
        zsys_interrupted = 1;
        return;
    }
    bool committed = gq_batch_status (batch) == GQ_OK;
    if (!committed) {
        zsys_error ("broker: a batch of %zu writes was not committed: %s", gq_batch_size (batch),
                    gq_batch_errmsg (batch));
    }
    gq_metrics_observe (self->metrics, GQ_HIST_COMMIT_BATCH, (double) gq_batch_size (batch));
    if (done->id_mark) {
        if (committed && done->id_mark > self->id_committed) {
            self->id_committed = done->id_mark;
        } else if (!committed) {
            self->id_recorded = self->id_committed; /* recorded again by the next submission */
        }
    }
    int64_t purged[GQ_JOB_STATES];
    if (gq_batch_purged (batch, purged) > 0) {
        for (int state = GQ_JOB_DONE; state < GQ_JOB_STATES; state++) {
            self->counts[state] -= purged[state];
        }
        zsys_info ("broker: retention: purged %d finished jobs", gq_batch_purged (batch, NULL));
    }
    if (!committed && done->id_first) {
        gq_batch_forget (self->pending->batch, done->id_first, done->id_last);
    }
    char *idem;
    while ((idem = (char *) zlist_pop (done->idems))) {
        zhashx_delete (self->idem_pending, idem);
        free (idem);
    }
    const char *fault = NULL;
    size_t faults = gq_batch_faults (batch, &fault);
    if (committed && faults) {
        zsys_warning ("broker: %zu write%s failed alone (the rest committed); the first: %s",
                      faults, faults == 1 ? "" : "s", fault);
    }
    gq_submit_t *submit;
    while ((submit = (gq_submit_t *) zlist_pop (done->submits))) {
        bool refused = !committed || gq_batch_group_failed (batch, submit->group);
        if (committed && refused) {
            /* Its own writes failed (a constraint): it alone is refused, and what was recorded
               for its jobs since goes too. */
            int64_t first = 0, last = 0;
            gq_intake_id_range (submit, &first, &last);
            if (first) {
                gq_batch_forget (self->pending->batch, first, last);
            }
        }
        gq_intake_settle (self, submit, !refused, committed ? fault : gq_batch_errmsg (batch));
    }
    gq_msg_t *reply;
    while ((reply = (gq_msg_t *) zlist_pop (done->replies))) {
        gq_msg_send (&reply, self->router);
    }
    gq_pending_destroy (self, &done);
}

/* Hands the pending batch to the writer and starts a new one. */
static bool
s_hand_over (gq_broker_t *self)
{
    gq_pending_t *next = gq_pending_new (self);
    if (!next) {
        return false; /* out of memory: keep recording into this one */
    }
    if (gq_writer_send (self->writer, self->pending->batch)) {
        zsys_error ("broker: cannot reach the store's writer thread");
        gq_pending_destroy (self, &next);
        return false;
    }
    zlist_append (self->inflight, self->pending);
    self->pending = next;
    return true;
}

/* The lazy timer: a batch that waited GQ_LAZY_COMMIT_MS is due; the turn ends again. */
static int
s_on_lazy (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    gq_broker_t *self = (gq_broker_t *) arg;
    self->lazy_timer = -1;
    gq_broker_turn_end (self);
    return 0;
}

/* Commits the pending batch in the loop itself, on the loop's own connection, and settles it.
   For a small batch when nothing else waits: handing it to the writer thread and hearing back
   costs two thread wake-ups, more than the loop saves by not waiting for the fsync. */
static void
s_commit_here (gq_broker_t *self)
{
    gq_pending_t *next = gq_pending_new (self);
    if (!next) {
        return; /* out of memory: keep recording into this one */
    }
    gq_pending_t *pending = self->pending;
    self->pending = next;
    zlist_append (self->inflight, pending); /* the writer is idle: it is the only one */
    gq_batch_apply (pending->batch, self->store);
    gq_commit_back (self, pending->batch);
}

/* Commits the pending batch when the writer is idle and the batch is due: something waits on
   it, or it is big, or it has waited GQ_LAZY_COMMIT_MS (then a timer brings us
   back). A small batch with no message waiting is committed here; others go to the writer
   thread, one at a time: while it commits, the next one grows (group commit). Returns true when it
   committed here (its jobs may have joined the queue). */
bool
gq_commit_kick (gq_broker_t *self)
{
    gq_pending_t *pending = self->pending;
    if (gq_writer_busy (self->writer) || s_pending_empty (pending)) {
        return false;
    }
    bool due = zlist_size (pending->submits) || zlist_size (pending->replies) ||
               gq_batch_size (pending->batch) >= GQ_EAGER_COMMIT_WRITES || !pending->opened_us ||
               gq_mono_us () - pending->opened_us >= GQ_LAZY_COMMIT_MS * 1000;
    if (!due) {
        if (self->lazy_timer < 0) {
            self->lazy_timer = zloop_timer (self->loop, GQ_LAZY_COMMIT_MS, 1, s_on_lazy, self);
        }
        return false;
    }
    if (gq_batch_size (pending->batch) <= GQ_INLINE_COMMIT_WRITES &&
        !(zsock_events (self->router) & ZMQ_POLLIN)) {
        s_commit_here (self);
        return true;
    }
    s_hand_over (self);
    return false;
}

/* Makes every write recorded so far visible to reads of self->store: waits for the writer to
   commit it all. Blocks the loop; only for questions about jobs no longer in memory. */
void
gq_commit_sync (gq_broker_t *self)
{
    while (gq_writer_busy (self->writer)) {
        gq_batch_t *batch = gq_writer_recv (self->writer);
        if (!batch) {
            return;
        }
        gq_commit_back (self, batch);
    }
    if (!s_pending_empty (self->pending) && s_hand_over (self)) {
        gq_batch_t *batch = gq_writer_recv (self->writer);
        if (batch) {
            gq_commit_back (self, batch);
        }
    }
}

/* The job of that id in memory; when it is not there, looked for again once the writer has
   committed all that was recorded (it may have ended, or joined memory, in a batch not yet
   back), so that a NULL means the store has the last word on it. */
gq_job_t *
gq_commit_find (gq_broker_t *self, int64_t id)
{
    gq_job_t *job = gq_broker_job_lookup (self, id);
    if (!job) {
        gq_commit_sync (self);
        job = gq_broker_job_lookup (self, id);
    }
    return job;
}

/* Cron: finished jobs past the retention period are purged. */
void
gq_commit_retention (gq_broker_t *self, int64_t now_ms)
{
    /* In the writer, like every write; its batch tells what it purged (gq_commit_back). */
    gq_commit_recorded (self,
                        gq_batch_purge (self->pending->batch, now_ms - self->opts.retention_ms,
                                        GQ_PURGE_CHUNK_JOBS));
}
