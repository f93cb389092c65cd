/*  exec.h — the worker's compute runtime and per-slot job execution: what the daemon calls.

    One gq_runtime_t per worker process: the backend, its device, the model cache and the
    handlers. One gq_exec_t per slot thread: its context (CUDA stream, cuBLAS handle, scratch).

    Threading rules:
    - gq_runtime_new, gq_runtime_add_handler, gq_runtime_add_engine and gq_runtime_destroy run
      before the slot threads start or after they have stopped: the lists of handlers and
      engines are read without a lock (each engine locks its own state).
    - gq_runtime_device, gq_runtime_kinds and gq_runtime_models are thread-safe; the model cache
      is the one structure shared by slot threads (it has its own mutex).
    - A gq_exec_t is used by one thread at a time (it may be made on another one). Several slots
      run gq_exec_run at once, each on its own gq_exec_t.

    Cancel and timeout: gq_exec_run polls *task->cancel (set by the daemon from any thread) and
    task->timeout_ms between steps: every few ms in sleep, every 20 ms in handlers (which then
    kill the process group), between GEMM blocks on the CPU, between layers and GEMM launches
    on the GPU (a running kernel is not interrupted). A cancelled job ends with GQ_ESTATE
    "cancelled", a timed-out one with GQ_ETIMEOUT "timed out after N ms". */
#ifndef GQ_EXEC_H_INCLUDED
#define GQ_EXEC_H_INCLUDED

#include <czmq.h>
#include <jansson.h>

#include "backend.h"
#include "engine.h"

#ifdef __cplusplus
extern "C" {
#endif

/* gq_device_info_t is in backend.h. */

/* How to build the runtime. */
typedef struct {
    const char *backend;    /* "auto" (or NULL) | "cuda" | "cpu" */
    int device;             /* device ordinal */
    const char *models_dir; /* the models folder, or NULL for none */
    int64_t cache_mb;       /* model cache budget; 0: 80% of free VRAM on CUDA, 4096 on CPU */
} gq_runtime_opts_t;

typedef struct _gq_runtime_t gq_runtime_t;

/* The runtime, or NULL with a reason. "auto" with no usable CUDA device takes the CPU backend
   (logged once); "cuda" with none fails. opts is read, not kept. */
gq_runtime_t *gq_runtime_new (const gq_runtime_opts_t *opts, char *why, size_t whylen);
/* Frees everything (every gq_exec_t must be destroyed first); NULLs the pointer; NULL-safe. */
void gq_runtime_destroy (gq_runtime_t **self_p);

/* "cuda" or "cpu". */
const char *gq_runtime_backend_name (gq_runtime_t *self);
/* Device facts, free memory measured now. The CPU fills "cpu", is_gpu false and 0 VRAM (the
   daemon's flags fill in what it advertises). Returns 0 or an error. */
int gq_runtime_device (gq_runtime_t *self, gq_device_info_t *info);
/* Whether the device is lost (a sticky CUDA error; see dev_lost in backend.h): no job can run on
   it again in this process. true with the error in why. Thread-safe. */
bool gq_runtime_lost (gq_runtime_t *self, char *why, size_t whylen);
/* Adds a handler "KIND=COMMAND" (before the slots start). 0, or GQ_EINVAL with a reason (bad
   spec, a built-in kind, a kind given twice). */
int gq_runtime_add_handler (gq_runtime_t *self, const char *spec, char *why, size_t whylen);
/* Adds an engine "KIND=COMMAND" (before the slots start) and starts its process: at most slots
   jobs in flight on it; gq_runtime_wait_engines waits ready_timeout_ms at most for its ready
   line. 0, or GQ_EINVAL with a reason (bad spec, a kind taken already). See engine.h. */
int gq_runtime_add_engine (gq_runtime_t *self, const char *spec, int slots,
                           int64_t ready_timeout_ms, char *why, size_t whylen);
/* Adds an OpenAI-compatible server "KIND=URL" (before the slots start) and starts probing it:
   at most slots jobs in flight on it; gq_runtime_wait_engines waits ready_timeout_ms at most
   for its first answer. 0, or GQ_EINVAL with a reason (bad spec, a kind taken already). See
   openai.h. Engines and OpenAI servers are "servers" below: long-lived, and down at times. */
int gq_runtime_add_openai (gq_runtime_t *self, const char *spec, int slots,
                           int64_t ready_timeout_ms, char *why, size_t whylen);
/* Blocks until every server's first start is settled (an engine's ready line, another first
   line, exit, or its ready timeout; an OpenAI server's first answer, or its ready timeout);
   logs those that are not up. Before the worker registers. */
void gq_runtime_wait_engines (gq_runtime_t *self);
/* Which servers are down now: bit i for the i-th added. Thread-safe. */
uint64_t gq_runtime_engines_down (gq_runtime_t *self);
/* [{"kind", "via": "engine"|"openai", "state": "up"|"restarting"|"unreachable"}], one per
   server, for READY's spec (gridq nodes shows those not up): a new reference. Thread-safe. */
json_t *gq_runtime_engines (gq_runtime_t *self);
/* ["echo", "sleep", "matmul", "mlp", handler kinds..., server kinds...]: a new reference. A
   server that is down is left out, so that a READY built now offers only what runs. */
json_t *gq_runtime_kinds (gq_runtime_t *self);
/* {"available": [model names], "loaded": [{"name", "load_ms", "bytes"}]}: a new reference. The
   models of the servers that are up (engines' ready lines, OpenAI servers' lists) are in both
   (load_ms 0). */
json_t *gq_runtime_models (gq_runtime_t *self);
/* The model cache budget in bytes. */
int64_t gq_runtime_cache_budget (gq_runtime_t *self);

/* ---- Jobs ------------------------------------------------------------------------------------ */

/* One job to run. Everything is borrowed for the duration of gq_exec_run. */
typedef struct {
    int64_t id;           /* job id (handlers see GRIDQ_JOB_ID) */
    int attempt;          /* attempt number (GRIDQ_ATTEMPT) */
    int64_t array_id;     /* the job's array (GRIDQ_ARRAY_ID), 0 when it is none's element */
    int64_t array_index;  /* its index there (GRIDQ_ARRAY_INDEX) */
    const char *kind;     /* "echo", "sleep", "matmul", "mlp", a handler's or an engine's kind */
    const char *model;    /* model name for mlp (NULL: the payload's "model", if any) */
    json_t *payload;      /* the job's JSON payload */
    zframe_t **blobs;     /* binary inputs, referenced from the payload as {"blob": i} */
    size_t n_blobs;       /* how many */
    int64_t timeout_ms;   /* 0: no limit */
    gq_flag_t *cancel; /* set non-zero by the daemon to cancel; may be NULL */
    gq_partial_fn *on_partial; /* an engine's partials of the job, on the running thread (see
                                  gq_engine_job_t); NULL: dropped */
    void *partial_arg;    /* on_partial's first argument */
} gq_task_t;

/* What a job produced. gq_exec_run fills it from scratch; the caller owns result and blobs. */
typedef struct {
    json_t *result;            /* the result (NULL on failure) */
    zframe_t *blobs[GQ_MAX_BLOBS]; /* output blobs, referenced from result as {"blob": i} */
    size_t n_blobs;            /* how many */
    char error[1024];          /* why it failed ("" on success) */
    int code;                  /* 0 or a gq_err_t */
} gq_outcome_t;

typedef struct _gq_exec_t gq_exec_t;

/* A slot's executor, or NULL (logged) when the backend cannot make a context. */
gq_exec_t *gq_exec_new (gq_runtime_t *rt, int slot);
/* NULLs the pointer; safe on NULL. */
void gq_exec_destroy (gq_exec_t **self_p);
/* Runs one job to its end and returns out->code. Never aborts on bad input or backend errors:
   those become the outcome's code and error. */
int gq_exec_run (gq_exec_t *self, const gq_task_t *task, gq_outcome_t *out);
/* Frees the outcome's result and blobs (for callers that are done with it); NULL-safe. */
void gq_outcome_clear (gq_outcome_t *out);

void gq_exec_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
