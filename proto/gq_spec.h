/*  gq_spec.h — validation of the two structured things peers send: a job to submit (client) and
    a node's spec (worker READY / HEARTBEAT). Strings and payload are borrowed from the JSON. */
#ifndef GQ_SPEC_H_INCLUDED
#define GQ_SPEC_H_INCLUDED

#include <jansson.h>

#include "gq_common.h"

/* The conditions a job may set on a parent (SUBMIT "after_ok", "after_any", "after_fail"). */
typedef enum {
    GQ_DEP_OK = 0,   /* start once the parent is done */
    GQ_DEP_ANY = 1,  /* once it ended, whatever the outcome */
    GQ_DEP_FAIL = 2  /* once it ended failed or cancelled (Slurm's afternotok) */
} gq_dep_kind_t;
#define GQ_DEP_KINDS 3

/* "after_ok", "after_any", "after_fail": the job fields, by gq_dep_kind_t. */
extern const char *const gq_dep_fields[GQ_DEP_KINDS];
/* "ok", "any", "fail": the names the store and EXPLAIN use, by gq_dep_kind_t. */
extern const char *const gq_dep_names[GQ_DEP_KINDS];

typedef struct {
    const char *kind;        /* "echo" when absent */
    const char *model;       /* NULL when none */
    int64_t min_vram_mb;     /* 0 .. GQ_MAX_VRAM_MB */
    int priority;            /* 0..9, default 5 */
    const char *gpu_pattern; /* NULL when none */
    double max_price;        /* < 0 when none */
    double min_tflops;       /* 0 when none */
    int64_t timeout_ms;      /* 0 when none */
    int max_attempts;        /* 1 .. GQ_MAX_ATTEMPTS_LIMIT, default GQ_MAX_ATTEMPTS */
    const char *idem;        /* NULL when none */
    const char *affinity;    /* a cache-affinity key (1 .. GQ_AFFINITY_MAX - 1 bytes), or NULL:
                                jobs of one key prefer the node that ran the last of them */
    json_t *payload;         /* any JSON value ({} when absent); borrowed */
    int blob_first;          /* first message blob that belongs to this job, -1 for none */
    int blob_count;          /* how many consecutive blobs belong to it */
    json_t *after[GQ_DEP_KINDS]; /* arrays of parent job ids (positive integers, each id once in
                                    all three), by gq_dep_kind_t; NULL when absent; borrowed */
    size_t n_after;          /* parents in all three, 0 .. GQ_MAX_DEPS */
    size_t n_named;          /* of which names (strings) of jobs of the same SUBMIT */
    const char *name;        /* the job's name within its SUBMIT (a pipeline), or NULL */
    bool inputs;             /* "inputs": "after": the parents' results go into its payload */
    const char *array;       /* an array's spec ("0-999%16"), NULL for one job; borrowed */
    int64_t array_count;     /* its elements (1 .. GQ_MAX_ARRAY_ELEMENTS), 0 for one job */
} gq_jobspec_t;

/* An array spec as Slurm's --array takes it: comma-separated parts, each an index ("7"), a range
   ("0-999") or a range with a step ("0-99:5"), then optionally "%K" (at most K elements running
   at once). Parts go up: each starts above the last index of the one before, so no index is
   named twice. */
typedef struct {
    int64_t count;  /* elements, 1 .. GQ_MAX_ARRAY_ELEMENTS */
    int64_t limit;  /* %K, 0 when none */
    int parts;      /* used entries of part */
    struct {
        int64_t first, step, count; /* indexes first, first + step, ... (count of them) */
    } part[GQ_MAX_ARRAY_PARTS];
} gq_arrayspec_t;

/* true for a job name: [A-Za-z0-9_.-], 1 .. GQ_JOB_NAME_MAX - 1 bytes, not starting with a digit
   (a name and a job id never look alike). */
bool gq_valid_job_name (const char *name);

/* Parses text into spec. 0, or GQ_EINVAL with a reason. */
int gq_arrayspec_parse (const char *text, gq_arrayspec_t *spec, char *why, size_t whylen);
/* The index of element k (0 .. count - 1), in order; -1 when k is out of range. */
int64_t gq_arrayspec_index (const gq_arrayspec_t *spec, int64_t k);

/* Validates one job object as sent in SUBMIT "jobs" (and as written in a JOBS.jsonl line).
   Accepts min_vram_mb (integer) or min_vram ("24G"), timeout_ms or time_limit ("30s"), and the
   constraints either at top level (gpu, max_price, min_tflops) or under "constraints".
   "blobs": [first, count] names message blobs (0-based) that travel with the job.
   "after_ok", "after_any", "after_fail": arrays of job ids the job depends on (whether they
   exist is the broker's to say).
   "name": the job's name, which later jobs of the same SUBMIT may name in their after_*
   fields (strings there); "inputs": "after" (only with after_*): the parents' results go into
   its payload as "inputs" when it is released.
   "array": an array spec (gq_arrayspec_t): the job stands for that many elements; then
   "payload" must be an object without "array_index" (each element's gets its index there), and
   "idem" and "blobs" are refused.
   Returns 0, or GQ_EINVAL with a reason naming the field. */
int gq_jobspec_parse (json_t *obj, gq_jobspec_t *spec, char *why, size_t whylen);

typedef struct {
    const char *name;        /* node name: gq_valid_name, < GQ_NAME_MAX */
    const char *gpu_model;   /* free text < GQ_GPU_MODEL_MAX */
    const char *backend;     /* "cuda" or "cpu" */
    int64_t vram_total_mb;   /* 0 .. GQ_MAX_VRAM_MB */
    int64_t vram_free_mb;    /* 0 .. vram_total_mb */
    double tflops;           /* 0 .. GQ_MAX_TFLOPS, finite */
    double price_per_hour;   /* 0 .. GQ_MAX_PRICE, finite */
    int slots;               /* 1 .. GQ_MAX_SLOTS */
    json_t *kinds;           /* array of kind names (each gq_valid_kind), 1..GQ_MAX_KINDS */
    json_t *models_available;/* array of model names, may be NULL */
    json_t *models_loaded;   /* array of {"name": s, "load_ms": x}, may be NULL */
    json_t *running;         /* array of {"id", "attempt"} the worker holds, may be NULL */
} gq_nodespec_t;

/* Validates a READY body's "spec" object. Returns 0 or GQ_EINVAL with a reason. */
int gq_nodespec_parse (json_t *obj, gq_nodespec_t *spec, char *why, size_t whylen);
/* Validates a models array (names, or {"name","load_ms"} objects with loaded = true). */
int gq_models_validate (json_t *models, bool loaded, char *why, size_t whylen);

void gq_spec_test (bool verbose);

#endif
