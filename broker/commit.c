/*  commit.c — the commit pipeline: batches recorded, committed in order, settled when back; a
    batch the store refuses kept and retried. The contract is in commit.h. */
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
    pending->held = zlist_new ();
    if (!pending->batch || !pending->submits || !pending->replies || !pending->dead ||
        !pending->idems || !pending->held) {
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
        if (self->ended) {
            zhashx_delete (self->ended, GQ_ID_KEY (job->id));
        }
        gq_broker_job_free (self, &job);
    }
    while (pending->held && (msg = (gq_msg_t *) zlist_pop (pending->held))) {
        gq_msg_destroy (&msg);
    }
    zlist_destroy (&pending->submits);
    zlist_destroy (&pending->replies);
    zlist_destroy (&pending->dead);
    zlist_destroy (&pending->idems);
    zlist_destroy (&pending->held);
    free (pending->released);
    gq_batch_destroy (&pending->batch);
    free (pending);
    *pending_p = NULL;
}

static bool
s_pending_empty (const gq_pending_t *pending)
{
    return gq_batch_size (pending->batch) == 0 && zlist_size (pending->submits) == 0 &&
           zlist_size (pending->replies) == 0 && zlist_size (pending->dead) == 0 &&
           zlist_size (pending->idems) == 0 && zlist_size (pending->held) == 0 &&
           pending->released_count == 0 && gq_batch_status (pending->batch) == GQ_OK;
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

/* Refuses a submission whose writes did not commit, and forgets what was recorded for its jobs
   in batch and in the batch being recorded. */
static void
s_refuse (gq_broker_t *self, gq_batch_t *batch, gq_submit_t *submit, const char *why)
{
    int64_t first = 0, last = 0;
    gq_intake_id_range (submit, &first, &last);
    if (first) {
        gq_batch_forget (batch, first, last);
        gq_batch_forget (self->pending->batch, first, last);
    }
    gq_intake_settle (self, submit, false, why);
}

/* Idem keys a batch inserted are no longer pending; the requests held for the batch are handled
   now: submissions that repeated one of its keys (they find the key stored, or free when its
   batch was refused), questions about jobs whose end it committed. */
static void
s_idems_settled (gq_broker_t *self, gq_pending_t *done)
{
    char *idem;
    while ((idem = (char *) zlist_pop (done->idems))) {
        zhashx_delete (self->idem_pending, idem);
        free (idem);
    }
    gq_msg_t *held;
    while ((held = (gq_msg_t *) zlist_pop (done->held))) {
        gq_broker_handle (self, &held);
        gq_msg_destroy (&held);
    }
}

static int s_on_retry (zloop_t *loop, int timer_id, void *arg);

/* The store refused a whole batch (the disk or the database failed: nothing of it is written).
   Its submissions are refused; every other write is kept and the batch applied again after a
   backoff, before anything recorded since. Meanwhile the broker places no new work and refuses
   submissions (intake.c, dispatch.c); the first failure of an outage is logged, not each. */
static void
s_store_failed (gq_broker_t *self, gq_pending_t *done)
{
    gq_batch_t *batch = done->batch;
    int64_t now_ms = gq_now_ms ();
    snprintf (self->store_error, sizeof self->store_error, "%s", gq_batch_errmsg (batch));
    self->store_failures++;
    if (!self->store_down_ms) {
        self->store_down_ms = now_ms;
        self->retry_delay_ms = GQ_STORE_RETRY_MIN_MS;
        zsys_error ("broker: the store cannot commit (%s): new work is paused and submissions "
                    "are refused until a commit succeeds; the writes waiting are kept and "
                    "retried",
                    self->store_error);
    } else {
        self->retry_delay_ms = self->retry_delay_ms * 2 < GQ_STORE_RETRY_MAX_MS
                                   ? self->retry_delay_ms * 2
                                   : GQ_STORE_RETRY_MAX_MS;
    }
    gq_submit_t *submit;
    while ((submit = (gq_submit_t *) zlist_pop (done->submits))) {
        s_refuse (self, batch, submit, self->store_error);
    }
    s_idems_settled (self, done);
    self->retry = done;
    self->retry_timer = zloop_timer (self->loop, (size_t) self->retry_delay_ms, 1, s_on_retry,
                                     self);
}

/* A batch the store refused is applied again, by the writer. */
static int
s_on_retry (zloop_t *loop, int timer_id, void *arg)
{
    gq_broker_t *self = (gq_broker_t *) arg;
    self->retry_timer = -1;
    gq_pending_t *retry = self->retry;
    if (retry && !gq_lane_busy (self->writer) && gq_lane_send (self->writer, retry->batch) == 0) {
        self->retry = NULL;
        zlist_append (self->inflight, retry);
    } else if (retry) {
        self->retry_timer = zloop_timer (loop, (size_t) self->retry_delay_ms, 1, s_on_retry, self);
    }
    return 0;
}

/* A batch is back from the writer (or the loop): what waited on it is settled, then it is
   freed; a batch the store refused is kept for another try. */
void
gq_commit_back (gq_broker_t *self, gq_batch_t *batch)
{
    gq_pending_t *done = (gq_pending_t *) zlist_pop (self->inflight);
    if (!done || done->batch != batch) {
        zsys_error ("broker: the writer returned a batch out of order; stopping");
        zsys_interrupted = 1;
        return;
    }
    int status = gq_batch_status (batch);
    if (status == GQ_ESTORE) {
        s_store_failed (self, done);
        return;
    }
    bool committed = status == GQ_OK;
    if (committed && self->store_down_ms) {
        zsys_info ("broker: the store commits again after %lld ms; the writes kept are committed, "
                   "and new work resumes",
                   (long long) (gq_now_ms () - self->store_down_ms));
        self->store_down_ms = 0;
        self->store_error[0] = '\0';
    }
    if (!committed) {
        /* Spoiled while recorded (out of memory): never applied, nothing of it written. */
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
        for (int state = GQ_JOB_DONE; state <= GQ_JOB_CANCELLED; state++) {
            self->counts[state] -= purged[state];
        }
        zsys_info ("broker: retention: purged %d finished jobs", gq_batch_purged (batch, NULL));
    }
    const char *fault = NULL;
    size_t faults = gq_batch_faults (batch, &fault);
    if (committed && faults) {
        zsys_warning ("broker: %zu write%s failed alone (the rest committed); the first: %s",
                      faults, faults == 1 ? "" : "s", fault);
    }
    gq_submit_t *submit;
    while ((submit = (gq_submit_t *) zlist_pop (done->submits))) {
        if (!committed || gq_batch_group_failed (batch, submit->group)) {
            /* Its own writes failed (a constraint), or the batch never was: it alone is
               refused, and what was recorded for its jobs since goes too. */
            s_refuse (self, batch, submit, committed ? fault : gq_batch_errmsg (batch));
        } else {
            gq_intake_settle (self, submit, true, NULL);
        }
    }
    gq_msg_t *reply;
    while ((reply = (gq_msg_t *) zlist_pop (done->replies))) {
        gq_msg_send (&reply, self->router);
    }
    /* Ended jobs whose end is committed leave memory: the store answers for them now. */
    gq_job_t *job;
    while ((job = (gq_job_t *) zlist_pop (done->dead))) {
        zhashx_delete (self->ended, GQ_ID_KEY (job->id));
        gq_broker_job_free (self, &job);
    }
    gq_deps_released (self, done);
    s_idems_settled (self, done);
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
    if (gq_lane_send (self->writer, self->pending->batch)) {
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
    if (gq_store_wal_pages (self->store) >= GQ_WAL_CHECKPOINT_PAGES) {
        /* A WAL that only grows makes every commit extend the file (a costlier fsync): the
           next batch goes to the writer, which checkpoints after it. */
        gq_batch_checkpoint (self->pending->batch);
    }
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
    if (self->retry || gq_lane_busy (self->writer) || s_pending_empty (pending)) {
        return false; /* batches commit in order: a refused one first */
    }
    bool due = zlist_size (pending->submits) || zlist_size (pending->replies) ||
               pending->released_count ||
               gq_batch_size (pending->batch) >= GQ_EAGER_COMMIT_WRITES || !pending->opened_us ||
               gq_mono_us () - pending->opened_us >= GQ_LAZY_COMMIT_MS * 1000;
    if (!due) {
        if (self->lazy_timer < 0) {
            self->lazy_timer = zloop_timer (self->loop, GQ_LAZY_COMMIT_MS, 1, s_on_lazy, self);
        }
        return false;
    }
    if (gq_batch_size (pending->batch) <= GQ_INLINE_COMMIT_WRITES &&
        !gq_batch_heavy (pending->batch) && !(zsock_events (self->router) & ZMQ_POLLIN)) {
        s_commit_here (self);
        return true;
    }
    s_hand_over (self);
    return false;
}

/* At shutdown: commits everything recorded, waiting for the writer. A batch the store refuses is
   tried again a few times; what still cannot commit is lost, and said (its jobs run again after a
   restart: execution is at least once). */
void
gq_commit_drain (gq_broker_t *self)
{
    for (int tries = 0; tries < GQ_STORE_DRAIN_TRIES; tries++) {
        while (gq_lane_busy (self->writer)) {
            gq_batch_t *batch = gq_lane_recv (self->writer);
            if (!batch) {
                return;
            }
            gq_commit_back (self, batch);
        }
        if (self->retry) {
            s_on_retry (self->loop, self->retry_timer, self);
        } else if (!s_pending_empty (self->pending)) {
            s_hand_over (self);
        }
        if (!gq_lane_busy (self->writer)) {
            break;
        }
        if (tries) {
            zclock_sleep ((int) self->retry_delay_ms);
        }
    }
    if (self->retry) {
        zsys_error ("broker: %zu writes could not be committed before the broker stopped (%s): "
                    "the jobs that ended in them will run again after a restart",
                    gq_batch_size (self->retry->batch), self->store_error);
    }
}

/* Cron: finished jobs past the retention period are purged. */
void
gq_commit_retention (gq_broker_t *self, int64_t now_ms)
{
    /* In the writer, like every write; its batch tells what it purged (gq_commit_back). The
       writer checkpoints the WAL after it (the loop's own commits never do). */
    gq_commit_recorded (self, gq_batch_checkpoint (self->pending->batch));
    gq_commit_recorded (self,
                        gq_batch_purge (self->pending->batch, now_ms - self->opts.retention_ms,
                                        GQ_PURGE_CHUNK_JOBS));
}
