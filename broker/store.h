/*  store.h — the SQLite store: every job, attempt and node the broker has accepted or seen.

    The broker decides from memory; the store is written through and read only at start
    (gq_store_recover, gq_store_counts, gq_store_max_id) and for questions about finished jobs.
    store.c is the only file that speaks SQL.

    Writes are grouped: the broker calls gq_store_begin, any number of inserts and updates, then
    gq_store_commit once per loop turn, and acknowledges that turn's submissions only after the
    commit. Outside begin/commit every write is a transaction of its own.

    The running state of a job is not written on its row (at 50k jobs/s it would double the
    writes): a job row is inserted queued and updated once, when the job ends. A run that lasts
    is recorded as an attempt "running" (the broker records runs older than a few milliseconds,
    so that short jobs cost no write), and its row is updated when it ends. At start the runs
    still "running" are recorded lost, and every job that had not ended is queued again (at least
    once), its attempts counted from its rows.

    Errors: functions return 0 or a negative gq_err_t (GQ_ESTORE with the text in
    gq_store_errmsg; GQ_EINVAL for a bad argument; GQ_ENOTFOUND, GQ_ESTATE where said).
    gq_store_row_fault tells the two kinds of failure apart: a write's own (a constraint, a bad
    value) fails that statement alone, and the transaction goes on; any other (a full disk, an
    I/O error, a lock) means the caller must gq_store_rollback and treat the whole transaction as
    not written (SQLite may already have rolled it back itself, e.g. on a full disk).

    One connection, one thread: the store must not be used from two threads (it is opened
    without SQLite's mutexes). */
#ifndef GQ_STORE_H_INCLUDED
#define GQ_STORE_H_INCLUDED

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gq_common.h"
#include "job.h"
#include "opts.h"

typedef struct _gq_store_t gq_store_t;

/* Opens (creating it when absent) the database at path and brings its schema up to date: a new
   database gets schema.sql, an older one the numbered migrations it lacks, each in a
   transaction of its own. Returns the store, or NULL with the reason in why, e.g.
   "store: cannot open gridq.db: unable to open database file"; a database written by a newer
   gridq (a schema version this build does not know) is refused, never downgraded. */
gq_store_t *gq_store_open (const char *path, gq_durability_t durability, char *why,
                           size_t whylen);
/* Closes the store (rolling back an open transaction) and NULLs the pointer; safe on NULL. */
void gq_store_close (gq_store_t **self_p);

/* Group commit. begin fails when a transaction is open already. rollback succeeds when none is
   open (SQLite may have ended it after an error). 0 or GQ_ESTORE. */
int gq_store_begin (gq_store_t *self);
int gq_store_commit (gq_store_t *self);
int gq_store_rollback (gq_store_t *self);
/* true between begin and commit/rollback (false also after SQLite rolled back by itself). */
bool gq_store_in_transaction (gq_store_t *self);
/* A group of writes inside the transaction that stands or falls together (one submission):
   group_end keeps its writes, or with keep false undoes them and the transaction goes on. */
int gq_store_group_begin (gq_store_t *self);
int gq_store_group_end (gq_store_t *self, bool keep);
/* true when the last call failed for the write's own sake (a constraint, a bad value, a bad
   argument): that write alone failed, and the same write would fail again. false after a
   success, and after a failure of the database or the disk, which a retry may cure. */
bool gq_store_row_fault (gq_store_t *self);
/* Whether commits on this connection checkpoint the WAL when it grows past 1000 pages (SQLite's
   default: on). Off, they only count its pages (gq_store_wal_pages): the broker's loop turns it
   off for its own connection and has the writer thread checkpoint when the count says so. */
int gq_store_autocheckpoint (gq_store_t *self, bool on);
/* Pages in the WAL after this connection's last commit (with autocheckpoint off). */
int gq_store_wal_pages (gq_store_t *self);
/* A passive WAL checkpoint now (pages no reader needs go back into the database). 0 or
   GQ_ESTORE. */
int gq_store_checkpoint (gq_store_t *self);
/* For tests: the database may grow to pages pages at most (-1: not at all; 0: SQLite's limit).
   A write past it fails as on a full disk. 0 or GQ_ESTORE. */
int gq_store_max_pages (gq_store_t *self, int64_t pages);

/* The text of the last failure ("store: insert job: database or disk is full"), kept until the
   next failure (a later success does not clear it); "" before any. */
const char *gq_store_errmsg (gq_store_t *self);
/* The code of the last failure (0 when the last call succeeded): how a function that returns a
   pointer tells "absent" (GQ_ENOTFOUND) from "broken" (GQ_ESTORE). */
int gq_store_error (gq_store_t *self);

/* Inserts job as queued with id job->id when that is > 0 (the broker chooses ids), else with
   SQLite's next id, and sets job->id. kind (required) and model (NULL or "" for none) are
   the names of the job's interned ids; idem is the idempotency key or NULL; client is the
   submitter's CURVE key or ""/NULL. The job's payload is bound without a copy. Returns 0 when
   inserted; 1 when a job with that idem key exists already, with its id in *existing_id and
   nothing inserted (this sees the jobs of the open transaction too); GQ_EINVAL or GQ_ESTORE.
   With existing_id NULL the key is not looked up (the caller has, with gq_store_job_by_idem):
   a key taken then fails the insert with GQ_ESTORE. */
int gq_store_job_insert (gq_store_t *self, gq_job_t *job, const char *kind, const char *model,
                         const char *idem, const char *client, int64_t *existing_id);

/* Stores binary frame idx (0-based) of a job: direction "in" (sent with the job) or "out" (its
   result). The data is bound without a copy. 0, GQ_EINVAL or GQ_ESTORE (also for a job that
   does not exist, or an idx stored already). */
int gq_store_job_blob_insert (gq_store_t *self, int64_t job_id, const char *direction, int idx,
                              const void *data, size_t size);
/* A job's blobs of one direction, in idx order: returns their count n >= 0 and sets *data_p to
   a malloc'd array of n malloc'd buffers and *sizes_p to a malloc'd array of n sizes (both NULL
   when n is 0); the caller frees them with gq_store_blobs_free. GQ_EINVAL, GQ_ENOMEM or
   GQ_ESTORE (then nothing is returned). May be called from a gq_store_recover callback. */
int gq_store_job_blobs (gq_store_t *self, int64_t job_id, const char *direction, void ***data_p,
                        size_t **sizes_p);
void gq_store_blobs_free (void **data, size_t *sizes, int n);

/* Records a run of a job: attempt (from 1) on node, started_ms, finished_ms (0 while it runs),
   outcome "running", "ok", "failed", "timeout", "lost" or "cancelled", reason or NULL. A run is
   (job, attempt, node): recorded again, its row is updated when update is true (a running run
   that ended, a lost run that finished after all) and kept as it is otherwise; never a second
   row. A run of another node under a number taken is numbered after the job's last (and found
   again there by its node and start). 0,
   GQ_EINVAL or GQ_ESTORE (also when the job does not exist). */
int gq_store_attempt_record (gq_store_t *self, int64_t job_id, int attempt, const char *node,
                             int64_t started_ms, int64_t finished_ms, const char *outcome,
                             const char *reason, bool update);

/* Records that a job ended: state done, failed or cancelled, with its attempts, the node of the
   last attempt (NULL for none), times, result (JSON text of result_len bytes, or NULL) and error
   (NULL for none); strings are bound without a copy. The first end wins: 0; GQ_ESTATE when the
   job has ended already (nothing changed); GQ_ENOTFOUND; GQ_EINVAL; GQ_ESTORE. */
int gq_store_job_finish (gq_store_t *self, int64_t job_id, int state, int attempts,
                         const char *node, int64_t started_ms, int64_t finished_ms,
                         const char *result, size_t result_len, const char *error);

/* Records a node as seen now: inserted the first time (first_seen = now), updated after. */
int gq_store_node_upsert (gq_store_t *self, const char *name, const char *gpu_model,
                          int64_t vram_total_mb, double tflops, double price, int64_t now_ms,
                          int64_t jobs_ok, int64_t jobs_failed);

/* Recovery. fn is called once per job that had not ended, in id order, with the row as queued
   (state GQ_JOB_QUEUED; attempts = the larger of the stored count and the attempt rows) and the
   distinct nodes of its failed, lost and timed-out attempts, oldest first. Everything passed is
   valid only during the call. fn returns 0 to go on; any other value stops the walk and is
   returned. Otherwise 0 or GQ_ESTORE. */
typedef int (gq_store_recover_fn) (void *arg, const gq_job_row_t *row,
                                   const char *const *excluded, size_t n_excluded);
int gq_store_recover (gq_store_t *self, gq_store_recover_fn *fn, void *arg);

/* A stored job in the JSON form of gq_job_row_json (the payload only with with_payload), plus
   "attempts_detail": [{attempt, node, started_at, finished_at, outcome, reason}]. A new
   reference, or NULL with gq_store_error GQ_ENOTFOUND (no such job) or GQ_ESTORE/GQ_ENOMEM.
   The stored state of a job that has not ended is always "queued": the broker's memory knows
   better. */
json_t *gq_store_job_json (gq_store_t *self, int64_t job_id, bool with_payload);
/* A stored job as JSON text without its payload (gq_job_row_text) appended to out: 1, 0 when
   there is no such job (nothing appended), GQ_ESTORE. */
int gq_store_job_text (gq_store_t *self, int64_t job_id, zchunk_t *out);
/* The same without "attempts_detail" (one read less): for listings and status. */
json_t *gq_store_job_brief_json (gq_store_t *self, int64_t job_id, bool with_payload);
/* Stored jobs in state (or all for -1) with ids below below, newest first, at most limit,
   without payloads and attempts_detail: a new JSON array, or NULL on failure. A listing reads
   on in pages (below: the last id of the page before, or where it skips to). */
json_t *gq_store_jobs_json (gq_store_t *self, int state, int64_t below, size_t limit);
/* Every stored node: [{name, gpu_model, vram_total_mb, tflops, price_per_hour, first_seen,
   last_seen, jobs_ok, jobs_failed}] with times as RFC 3339 strings; NULL on failure. */
json_t *gq_store_nodes_json (gq_store_t *self);

/* Stored jobs per state (a scan of the state index: for start-up, not per request). */
int gq_store_counts (gq_store_t *self, int64_t counts[GQ_JOB_STATES]);
/* Retention: deletes at most limit ended jobs (with their attempts and blobs) that finished
   before before_ms, oldest first, and returns how many (>= 0) or GQ_ESTORE. Call it in small
   chunks from a timer so the loop never stalls. The job with the largest id is always kept, so
   SQLite never hands out an id that a client may still hold; a parent is kept while a child
   that has not ended depends on it (an array's elements while one depends on the array). An
   array counts its elements deleted, by state, in its row; its row goes with the last of them.
   purged (may be NULL) gets how many jobs of each state were deleted. */
int gq_store_purge (gq_store_t *self, int64_t before_ms, int limit,
                    int64_t purged[GQ_JOB_STATES]);
/* The id of the stored job with idempotency key idem: 1 with *id set, 0 when there is none,
   or GQ_EINVAL / GQ_ESTORE. */
int gq_store_job_by_idem (gq_store_t *self, const char *idem, int64_t *id);
/* Small named integers the broker keeps across restarts (table meta), e.g. "next_job_id".
   get leaves *value alone when the key is absent. 0 or GQ_ESTORE. */
int gq_store_meta_get (gq_store_t *self, const char *key, int64_t *value);
int gq_store_meta_set (gq_store_t *self, const char *key, int64_t value);
/* The largest job id stored, 0 for none, or GQ_ESTORE. */
int64_t gq_store_max_id (gq_store_t *self);
/* The database's schema version (PRAGMA user_version). */
int gq_store_schema_version (gq_store_t *self);

/* Dependencies (deps.c keeps them in memory). Records that job child may start only when its
   condition kind (gq_dep_kind_t) on job parent holds; written in the child's group, after its
   insert; name is the parent's name in the child's SUBMIT (NULL when named by id), inputs
   whether the child takes its parents' results. 0, GQ_EINVAL or GQ_ESTORE (also for a child
   that does not exist, or an edge stored already). */
int gq_store_dep_insert (gq_store_t *self, int64_t child, int64_t parent, int kind,
                         const char *name, bool inputs);
/* The inputs of child ("inputs": "after"): {name: result} per parent (the name the child gave
   it, else its id as text; result null when the parent has none); an array parent's result is
   the array of its elements' results, in index order (null for an element without one). A new
   reference, or NULL when the store fails. */
json_t *gq_store_dep_inputs (gq_store_t *self, int64_t child);
/* The stored state of a job (a gq_job_state_t: queued for every job that has not ended), or
   GQ_ENOTFOUND (never stored, or purged), or GQ_ESTORE. */
int gq_store_job_state (gq_store_t *self, int64_t job_id);
/* Recovery of dependencies, after gq_store_recover: fn is called once per edge of a job that had
   not ended, ordered by child then parent, with the parent's stored state (-1 when the store has
   no such job) and whether the child takes its parents' results. fn returns 0 to go on; any other value stops the walk and is returned.
   Otherwise 0 or GQ_ESTORE. */
typedef int (gq_store_dep_fn) (void *arg, int64_t child, int64_t parent, int kind,
                               int parent_state, bool inputs);
int gq_store_deps_recover (gq_store_t *self, gq_store_dep_fn *fn, void *arg);

/* Retry (retry.c). Calls fn (as gq_store_recover does) with the stored row of job id, whatever
   its state; GQ_ENOTFOUND when there is none. */
int gq_store_job_reload (gq_store_t *self, int64_t id, gq_store_recover_fn *fn, void *arg);
/* Calls fn for each job that depends on parent, in id order, with its stored state and error
   (NULL when none). fn returning non-zero stops the walk with that code. 0 or GQ_ESTORE. */
typedef int (gq_store_child_fn) (void *arg, int64_t child, int state, const char *error);
int gq_store_dep_children (gq_store_t *self, int64_t parent, gq_store_child_fn *fn, void *arg);
/* Calls fn for each edge of job child, as gq_store_deps_recover does. 0 or GQ_ESTORE. */
int gq_store_deps_of (gq_store_t *self, int64_t child, gq_store_dep_fn *fn, void *arg);
/* Job id, failed or cancelled, is queued again with max_attempts (its attempts so far plus a
   new budget); nothing for a job in another state. 0 or GQ_ESTORE. */
int gq_store_job_retry (gq_store_t *self, int64_t id, int max_attempts);

/* Arrays (arrays.c keeps them in memory). Records array id, whose elements are the jobs first
   .. first + count - 1 (inserted after it, in the same group); spec is borrowed. 0, GQ_EINVAL or
   GQ_ESTORE. */
int gq_store_array_insert (gq_store_t *self, int64_t id, int64_t first, int64_t count,
                           const char *spec, int64_t submitted_ms);
/* Recovery of arrays, before the jobs': fn is called once per array, in id order, with how many
   of its elements ended, by state (the other entries 0): those stored and those retention
   purged. fn returning non-zero stops the walk
   with that code. 0 or GQ_ESTORE. */
typedef int (gq_store_array_fn) (void *arg, int64_t id, int64_t first, int64_t count,
                                 const char *spec, int64_t submitted_ms,
                                 const int64_t *ended_by_state);
int gq_store_arrays_recover (gq_store_t *self, gq_store_array_fn *fn, void *arg);

/* Selftest: uses a temporary directory under /tmp and removes it. */
void gq_store_test (bool verbose);

#endif
