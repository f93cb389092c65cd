/*  writer.h — the store's writer thread, and the batches of writes it applies.

    The broker loop never waits on the disk. It records each turn's writes as operations in a
    batch (gq_batch_t) and hands whole batches to the writer (gq_writer_new: a lane, lane.h), a
    thread with a store connection of its own that applies each batch in one transaction,
    commits (the fsync of full durability happens there), and hands the batch back through a
    socket the loop reads. Batches
    come back in the order they went; the loop acknowledges what a batch carried only when it is
    back and committed.

    A batch borrows what it says it borrows (a job's payload, constraints, blobs and end,
    interned names, a request's idem key), all of which never change once made: the caller keeps them
    alive until the batch is back. Everything else is copied when recorded, so the writer never
    reads or writes what the loop goes on changing. Only one thread touches a batch at a time:
    the loop until it hands it over, the writer until it hands it back.

    Failure policy of a batch's writes:
    - a write that fails for its own sake (a constraint, a bad value: gq_store_row_fault) fails
      alone: the transaction goes on, and gq_batch_faults counts it;
    - the writes of a group (one submission: its jobs and blobs) stand or fall together: a write
      of the group that fails for its own sake undoes the group alone (gq_batch_group_failed);
    - a failure of the database or the disk (full, I/O, a lock) fails the whole batch: nothing
      of it is written, and it can be applied again as it is (the broker retries it);
    - a finish of a job that ended already is no failure (the first end wins), and a run
      recorded again updates its own row or keeps it (gq_store_attempt_record). */
#ifndef GQ_WRITER_H_INCLUDED
#define GQ_WRITER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "lane.h"
#include "store.h"

typedef struct _gq_batch_t gq_batch_t;

gq_batch_t *gq_batch_new (void);
/* Frees the batch and what it copied or was given; safe on NULL. */
void gq_batch_destroy (gq_batch_t **self_p);
/* Operations recorded and not forgotten. */
size_t gq_batch_size (const gq_batch_t *self);

/* Recording. Each returns 0, or GQ_ENOMEM: then the batch is spoiled (it will not be applied,
   and comes back failed), so the caller needs no rollback of its own. */

/* Insert job as queued with its id (> 0): its fields are copied; its payload and constraints,
   kind, model, idem and client are borrowed. */
int gq_batch_job_insert (gq_batch_t *self, const gq_job_t *job, const char *kind,
                         const char *model, const char *idem, const char *client);
/* A dependency of job child (inserted before it in the batch, in the same group) on job parent,
   with condition kind (gq_dep_kind_t); name (copied, < GQ_NAME_MAX bytes) is the parent's name
   in the child's SUBMIT or NULL, inputs whether the child takes its parents' results. */
int gq_batch_dep_insert (gq_batch_t *self, int64_t child, int64_t parent, int kind,
                         const char *name, bool inputs);
/* Job id (failed or cancelled) is queued again with max_attempts (retry.c). */
int gq_batch_job_retry (gq_batch_t *self, int64_t id, int max_attempts);
/* Array id with elements first .. first + count - 1 (inserted after it, in the same group); spec
   is borrowed until the batch is applied. */
int gq_batch_array_insert (gq_batch_t *self, int64_t id, int64_t first, int64_t count,
                           const char *spec, int64_t submitted_ms);
/* An input frame of a job ("in"). Borrows data. */
int gq_batch_blob_insert (gq_batch_t *self, int64_t job_id, int idx, const void *data,
                          size_t size);
/* A run of a job (gq_store_attempt_record: update says whether a run recorded already is
   updated or kept). outcome is one of the store's static names; node and reason are copied. */
int gq_batch_attempt (gq_batch_t *self, int64_t job_id, int attempt, const char *node,
                      int64_t started_ms, int64_t finished_ms, const char *outcome,
                      const char *reason, bool update);
/* Opens a group of writes that stand or fall together (closed by group_end): returns its number
   (>= 0), or GQ_ENOMEM. Groups do not nest. */
int gq_batch_group_begin (gq_batch_t *self);
int gq_batch_group_end (gq_batch_t *self);
/* A job's end. Borrows result (JSON text, or NULL) and error (or NULL); node is copied. */
int gq_batch_job_finish (gq_batch_t *self, int64_t job_id, int state, int attempts,
                         const char *node, int64_t started_ms, int64_t finished_ms,
                         const char *result, const char *error);
/* A node as seen now (every string is copied). */
int gq_batch_node (gq_batch_t *self, const char *name, const char *gpu_model,
                   int64_t vram_total_mb, double tflops, double price, int64_t now_ms,
                   int64_t jobs_ok, int64_t jobs_failed);
/* A named integer (key is a string literal). */
int gq_batch_meta (gq_batch_t *self, const char *key, int64_t value);
/* A WAL checkpoint after the commit. A batch with a checkpoint or a purge is heavy: the broker
   hands it to the writer thread, never commits it in its loop. */
int gq_batch_checkpoint (gq_batch_t *self);
bool gq_batch_heavy (const gq_batch_t *self);
/* Retention: purge at most limit jobs that finished before before_ms. */
int gq_batch_purge (gq_batch_t *self, int64_t before_ms, int limit);

/* Drops every operation recorded for the jobs first_id..last_id (jobs withdrawn because the
   batch that inserted them failed): those left would fail this batch too. One pass. */
void gq_batch_forget (gq_batch_t *self, int64_t first_id, int64_t last_id);

/* Applies the batch in one transaction on store and commits, under the failure policy above.
   Returns and remembers 0 (committed, perhaps with writes or groups that failed alone),
   GQ_ESTORE (nothing written; it may be applied again) or GQ_ENOMEM (a spoiled batch, never
   applied). Called by the writer, or by the loop for a small batch. */
int gq_batch_apply (gq_batch_t *self, gq_store_t *store);
/* After apply: its result, the reason of a failure ("" after success), and how many jobs its
   purges deleted (by_state, which may be NULL, gets them per state). */
int gq_batch_status (const gq_batch_t *self);
const char *gq_batch_errmsg (const gq_batch_t *self);
int gq_batch_purged (const gq_batch_t *self, int64_t by_state[GQ_JOB_STATES]);
/* After a committed apply: whether a group's writes were undone, and how many writes outside
   groups failed alone (*first, which may be NULL, gets the reason of the first such failure). */
bool gq_batch_group_failed (const gq_batch_t *self, int group);
size_t gq_batch_faults (const gq_batch_t *self, const char **first);

/* The writer thread: a lane (lane.h) whose connection applies each batch handed to it (with the
   fsync of full durability); NULL with why. */
gq_lane_t *gq_writer_new (const char *db_path, gq_durability_t durability, char *why,
                          size_t whylen);

void gq_writer_test (bool verbose);

#endif
