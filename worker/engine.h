/*  engine.h — persistent engines: `--engine KIND=COMMAND` keeps one process of COMMAND running
    for many jobs of KIND and talks to it in JSON lines (docs/PROTOCOL.md, "Engines").

    The process: `/bin/sh -c COMMAND` in a session (and process group) of its own, with the
    worker's environment plus GRIDQ_KIND and CUDA_VISIBLE_DEVICES (as a handler gets it, see
    gq_handler_cuda_devices). Its stderr goes to the worker's log, a line at a time.
    - worker -> engine (stdin), a line per job: {"id": ID, "kind": K, "model": M|null,
      "payload": P}; to stop one: {"id": ID, "cancel": true}.
    - engine -> worker (stdout): optionally first {"ready": true, "models": [names]}; then per
      job any number of {"id": ID, "partial": JSON} (handed to the job's on_partial, each at
      most GQ_MAX_PARTIAL_BYTES as compact JSON) and exactly one {"id": ID, "result": JSON}
      or {"id": ID, "error": "text"}. Lines of different jobs may interleave.
    An engine that exits, or writes a line outside this contract, fails the jobs it was running
    and is started again after a back-off (GQ_ENGINE_BACKOFF_MIN_MS doubling up to
    GQ_ENGINE_BACKOFF_MAX_MS). While it is down, jobs of its kind fail at once ("restarting");
    a job is never written to a dead engine.

    Threads: each engine has one I/O thread of its own (reads stdout and stderr, restarts the
    process). gq_engine_run is called from slot threads, several at once, and blocks its caller
    only: the worker's socket thread never calls it. Shared state is behind the engine's mutex;
    stdin is written under a second one, so a slow reader never stalls the I/O thread. */
#ifndef GQ_ENGINE_H_INCLUDED
#define GQ_ENGINE_H_INCLUDED

#include <czmq.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "gq_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _gq_engine_t gq_engine_t;

/* How to run an engine; read, not kept. */
typedef struct {
    const char *cuda_devices; /* CUDA_VISIBLE_DEVICES for the process, or NULL to inherit */
    int slots;                /* jobs in flight on the engine at most (>= 1) */
    int64_t ready_timeout_ms; /* how long gq_engine_wait_ready waits for the ready line */
} gq_engine_opts_t;

/* Where a job's partials go: called by gq_engine_run on its caller's thread (never the engine's
   I/O thread), without the engine's lock, once per partial and in order, all before
   gq_engine_run returns. text is the partial's compact JSON (taken: the callee frees it with
   free); dropped counts the partials of the job lost just before this one (the queue between
   the engine's reader and the caller holds GQ_ENGINE_PARTIALS_COUNT at most). */
typedef void (gq_partial_fn) (void *arg, int64_t id, char *text, int64_t dropped);

/* One job; everything borrowed for the duration of gq_engine_run. */
typedef struct {
    int64_t id;         /* job id: the line's "id" */
    int64_t array_id;   /* the line's "array": {"id", "index"}, for an array's element (an
                           engine serves many jobs: they cannot be in its environment) */
    int64_t array_index;
    const char *kind;   /* the line's "kind" (NULL: the engine's kind) */
    const char *model;  /* the line's "model", or NULL */
    json_t *payload;    /* the line's "payload" (NULL: null) */
    int64_t timeout_ms; /* 0: no limit */
    gq_flag_t *cancel;  /* set non-zero from another thread to stop the job (may be NULL) */
    gq_partial_fn *on_partial; /* where its partials go; NULL: they are dropped */
    void *partial_arg;  /* on_partial's first argument */
} gq_engine_job_t;

/* An engine from "KIND=COMMAND", started at once; NULL with a reason (bad spec, cannot start
   its thread). A command that cannot run is not an error here: it exits, and is restarted. */
gq_engine_t *gq_engine_new (const char *spec, const gq_engine_opts_t *opts, char *why,
                            size_t whylen);
/* Stops the I/O thread and the process group (SIGTERM, then SIGKILL after GQ_HANDLER_GRACE_MS);
   every gq_engine_run must have returned. NULLs the pointer; safe on NULL. */
void gq_engine_destroy (gq_engine_t **self_p);

const char *gq_engine_kind (gq_engine_t *self);
const char *gq_engine_command (gq_engine_t *self);

/* Blocks until the first start is settled: the ready line came, or another first line (no
   handshake), or the process exited, or ready_timeout_ms passed. true when the engine is up. */
bool gq_engine_wait_ready (gq_engine_t *self);
/* The models of the last ready line, as a new array of names (empty without one). */
json_t *gq_engine_models (gq_engine_t *self);
/* Whether the engine is down (exited or broke the contract, and not started again yet): its
   jobs are refused meanwhile. Thread-safe. */
bool gq_engine_down (gq_engine_t *self);
/* The pid of the running process (its group), or 0 while it is down. For tests and logs. */
int gq_engine_pid (gq_engine_t *self);

/* Runs one job on the engine and blocks until its result, error, cancel or time limit. Returns
   0 with *result (a new reference), or an error with the reason in error: GQ_ETOOBIG (a
   partial above GQ_MAX_PARTIAL_BYTES: "partial too large"; the engine gets the cancel line),
   GQ_EBACKEND (the
   engine's "error", or it died or broke the contract while running the job, or it is down and
   restarting), GQ_ETIMEOUT ("timed out after N ms"), GQ_ESTATE ("cancelled"), GQ_ENOMEM.
   On cancel and time-out the engine gets the cancel line. Thread-safe. */
int gq_engine_run (gq_engine_t *self, const gq_engine_job_t *job, json_t **result, char *error,
                   size_t errlen);

/* Whether the job must stop now: GQ_ESTATE ("cancelled") when its cancel flag is set,
   GQ_ETIMEOUT ("timed out after N ms") past deadline_us (monotonic; 0: none); else 0. Shared
   with OpenAI servers (openai.c). */
int gq_engine_job_stopped (const gq_engine_job_t *job, int64_t deadline_us, char *error,
                           size_t errlen);

void gq_engine_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
