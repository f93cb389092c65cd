/*  writer.h — the store's writer thread, and the batches of writes it applies.

    The broker loop never waits on the disk. It records each turn's writes as operations in a
    batch (gq_batch_t) and hands whole batches to the writer (gq_writer_t), a thread with a store
    connection of its own that applies each batch in one transaction, commits (the fsync of full
    durability happens there), and hands the batch back through a socket the loop reads. Batches
    come back in the order they went; the loop acknowledges what a batch carried only when it is
    back and committed.

    A batch borrows what it says it borrows (a job, its payload and blobs, interned names, a
    request's idem key): the caller keeps those alive until the batch is back. Everything else
    is copied. Only one thread touches a batch at a time: the loop until it hands it over, the
    writer until it hands it back. */
#ifndef GQ_WRITER_H_INCLUDED
#define GQ_WRITER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "store.h"

typedef struct _gq_batch_t gq_batch_t;

gq_batch_t *gq_batch_new (void);
/* Frees the batch and what it copied or was given; safe on NULL. */
void gq_batch_destroy (gq_batch_t **self_p);
/* Operations recorded and not forgotten. */
size_t gq_batch_size (const gq_batch_t *self);

/* Recording. Each returns 0, or GQ_ENOMEM: then the batch is spoiled (it will not be applied,
   and comes back failed), so the caller needs no rollback of its own. */

/* Insert job as queued with its id (> 0). Borrows job, kind, model, idem and client. */
int gq_batch_job_insert (gq_batch_t *self, const gq_job_t *job, const char *kind,
                         const char *model, const char *idem, const char *client);
/* An input frame of a job ("in"). Borrows data. */
int gq_batch_blob_insert (gq_batch_t *self, int64_t job_id, int idx, const void *data,
                          size_t size);
/* An ended attempt. outcome is one of the store's static names; node and reason are copied. */
int gq_batch_attempt (gq_batch_t *self, int64_t job_id, int attempt, const char *node,
                      int64_t started_ms, int64_t finished_ms, const char *outcome,
                      const char *reason);
/* A job's end. Takes result (malloc'd JSON text, or NULL); node and error are copied. */
int gq_batch_job_finish (gq_batch_t *self, int64_t job_id, int state, int attempts,
                         const char *node, int64_t started_ms, int64_t finished_ms, char *result,
                         const char *error);
/* A node as seen now (every string is copied). */
int gq_batch_node (gq_batch_t *self, const char *name, const char *gpu_model,
                   int64_t vram_total_mb, double tflops, double price, int64_t now_ms,
                   int64_t jobs_ok, int64_t jobs_failed);
/* A named integer (key is a string literal). */
int gq_batch_meta (gq_batch_t *self, const char *key, int64_t value);
/* Retention: purge at most limit jobs that finished before before_ms. */
int gq_batch_purge (gq_batch_t *self, int64_t before_ms, int limit);

/* Drops every operation recorded for the jobs first_id..last_id (jobs withdrawn because the
   batch that inserted them failed): those left would fail this batch too. One pass. */
void gq_batch_forget (gq_batch_t *self, int64_t first_id, int64_t last_id);

/* Applies the batch in one transaction on store and commits; a failure rolls it all back. A
   finish of a job already ended or unknown is no failure (the first end wins). Returns and
   remembers 0, GQ_ESTORE or GQ_ENOMEM (a spoiled batch, not applied). Called by the writer; the
   selftest calls it directly. */
int gq_batch_apply (gq_batch_t *self, gq_store_t *store);
/* After apply: its result, the reason of a failure ("" after success), and how many jobs its
   purges deleted (by_state, which may be NULL, gets them per state). */
int gq_batch_status (const gq_batch_t *self);
const char *gq_batch_errmsg (const gq_batch_t *self);
int gq_batch_purged (const gq_batch_t *self, int64_t by_state[GQ_JOB_STATES]);

typedef struct _gq_writer_t gq_writer_t;

/* Opens a store connection of its own on db_path and starts the thread; NULL with why. */
gq_writer_t *gq_writer_new (const char *db_path, gq_durability_t durability, char *why,
                            size_t whylen);
/* Stops the thread after the batch it is applying, and closes its connection. Batches handed
   over and not received back are lost: drain first (gq_writer_busy). Safe on NULL. */
void gq_writer_destroy (gq_writer_t **self_p);
/* Hands a batch over; it is applied after every batch handed over before it. 0 or GQ_EIO. */
int gq_writer_send (gq_writer_t *self, gq_batch_t *batch);
/* The next batch back, applied (blocks until there is one); NULL if the thread is gone. */
gq_batch_t *gq_writer_recv (gq_writer_t *self);
/* Batches handed over and not received back yet. */
size_t gq_writer_busy (const gq_writer_t *self);
/* The socket that is readable when a batch is back (for zloop_reader). */
zsock_t *gq_writer_sock (gq_writer_t *self);

void gq_writer_test (bool verbose);

#endif
