/*  job.h — a job as the broker holds it in memory: compact, so a million queued jobs fit.
    The broker owns jobs; the queue links them, the matcher reads them, the store writes them. */
#ifndef GQ_JOB_H_INCLUDED
#define GQ_JOB_H_INCLUDED

#include <czmq.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "gq_common.h"

typedef enum {
    GQ_JOB_QUEUED = 0,
    GQ_JOB_RUNNING = 1,
    GQ_JOB_DONE = 2,
    GQ_JOB_FAILED = 3,
    GQ_JOB_CANCELLED = 4,
    GQ_JOB_WAITING = 5 /* for its dependencies, out of the queue (deps.c); stored as queued (0):
                          its deps rows tell it at recovery */
} gq_job_state_t;
#define GQ_JOB_STATES 6

/* "queued", "running", ... ; NULL for an unknown state. */
const char *gq_job_state_name (int state);
/* Inverse of gq_job_state_name; -1 for an unknown name. */
int gq_job_state_parse (const char *name);
/* true for done, failed and cancelled. */
#define gq_job_state_final(s) ((s) >= GQ_JOB_DONE && (s) <= GQ_JOB_CANCELLED)

/* Placement constraints; a job without any has constraints == NULL. */
typedef struct {
    char gpu_pattern[GQ_PATTERN_MAX]; /* "A100|H100": '|'-separated, case-insensitive substrings */
    double max_price;                 /* per hour; < 0 means no limit */
    double min_tflops;                /* 0 means no limit */
} gq_constraints_t;

#define GQ_JOB_MAX_EXCLUDED 16        /* nodes remembered as having failed one job */

/* What a job that ended keeps in memory until its end is committed, so that the broker answers
   for it without asking the store (the batch that writes the end borrows result and error). */
typedef struct {
    char *result;        /* JSON text (malloc'd), or NULL */
    char *error;         /* malloc'd, or NULL */
    int64_t finished_ms; /* wall clock */
    int32_t node;        /* matcher index of the last attempt's node, -1 for none */
} gq_job_end_t;

typedef struct _gq_job_t gq_job_t;
struct _gq_job_t {
    int64_t id;                   /* from SQLite, > 0 */
    int64_t submitted_ms;         /* wall clock at submission */
    int64_t started_ms;           /* wall clock when the current attempt was dispatched */
    union {
        int64_t queue_key;        /* queued: dispatch order key, maintained by the queue */
        int64_t started_mono_ms;  /* running: monotonic clock at dispatch (time limits) */
    };
    gq_job_t *qprev, *qnext;      /* queue links (owned by the queue) */
    char *payload;                /* JSON text, malloc'd, never NULL */
    gq_constraints_t *constraints;/* malloc'd or NULL */
    void *blobs;                  /* zlist of zframe_t blobs, or NULL (owned by the broker) */
    void *watchers;               /* broker bookkeeping for clients waiting on it, or NULL */
    char *idem;                   /* idempotency key (malloc'd), or NULL */
    gq_job_end_t *end;            /* once it ended (malloc'd), NULL before */
    uint32_t payload_len;         /* bytes of payload, without the NUL */
    uint32_t timeout_ms;          /* per-attempt time limit; 0 means none */
    int32_t min_vram_mb;          /* VRAM the job needs on the node */
    int32_t node;                 /* matcher index of the node running it, -1 when none */
    int32_t excluded[GQ_JOB_MAX_EXCLUDED]; /* matcher indexes of nodes that failed it */
    uint16_t kind_id;             /* interned kind (matcher's table) */
    uint8_t n_excluded;           /* used entries of excluded */
    uint8_t priority;             /* 0..9, 9 first */
    uint8_t state;                /* gq_job_state_t */
    uint8_t attempts;             /* attempts started so far */
    uint8_t max_attempts;         /* 1..GQ_MAX_ATTEMPTS_LIMIT */
    uint8_t run_recorded : 1;     /* its current run is recorded "running" in the store */
    uint8_t slow : 1;             /* counted in its node's slow jobs (gq_matcher_assign) */
    uint8_t recalling : 1;        /* RECALL sent for its current attempt (workers.c) */
    uint8_t recalls : 4;          /* attempts taken back unstarted but on record (their run was
                                     recorded "running"): not counted against max_attempts */
    uint8_t in_array : 1;         /* an element of an array (arrays.c keeps the rest out of
                                     line: the job grows by nothing) */
    uint32_t model_id;            /* interned model (matcher's table); 0 means none */
    uint32_t owner;               /* submitter, for the per-client cap (guard); 0 for none */
};

/* ---- A job as text: the row the store reads back, and the one JSON form of a job --------- */

/* A job with its names as text. Nothing is owned: every pointer is borrowed from whoever filled
   the row (a SQLite statement, the broker's tables) and valid only as long as that says. */
typedef struct {
    int64_t id;
    const char *idem;        /* idempotency key, or NULL */
    const char *kind;        /* never NULL in a valid row */
    const char *model;       /* NULL or "" when the job needs no model */
    int min_vram_mb;
    int priority;
    const char *gpu_pattern; /* constraint; NULL or "" when not set */
    double max_price;        /* constraint; < 0 when not set */
    double min_tflops;       /* constraint; <= 0 when not set */
    int64_t timeout_ms;      /* 0 means none */
    int max_attempts;
    const char *payload;     /* JSON text, or NULL to leave the payload out of the JSON */
    int state;               /* gq_job_state_t */
    int attempts;
    const char *node;        /* node of the current or last attempt, or NULL */
    int64_t submitted_ms;    /* 0 means not yet (JSON null) */
    int64_t started_ms;
    int64_t finished_ms;
    const char *result;      /* JSON text, or NULL */
    const char *error;       /* or NULL */
    const char *client;      /* submitter's CURVE key, or NULL/""; not part of the JSON */
} gq_job_row_t;

/* Fills row from an in-memory job. The names come from the caller (the job holds interned ids
   only); result, error and finished_ms come from its end, when it ended; client is left NULL.
   row borrows job->payload, its idem key and end, and the names. */
void gq_job_row_from (gq_job_row_t *row, const gq_job_t *job, const char *kind, const char *model,
                      const char *node);

/* The one JSON form of a job, for in-memory and stored jobs alike; a new reference, or NULL when
   out of memory:
     {id, state (name), kind, model (null if none), min_vram_mb, priority,
      constraints {gpu, max_price, min_tflops} (only those set; the key is absent when none is),
      timeout_ms, max_attempts, idem (only if set), payload (parsed JSON; absent when
      row->payload is NULL), node (null if none), attempts, result (parsed JSON or null),
      error (string or null), submitted_at, started_at, finished_at (RFC 3339 UTC with ms, null
      when 0)}
   Payload or result text that does not parse is embedded as a JSON string, so a bad row still
   shows. */
json_t *gq_job_row_json (const gq_job_row_t *row);
/* The same job as JSON text appended to out: the one serializer of a job (gq_job_row_json parses
   what it writes), spliced from the texts the row holds without building a tree, for the
   broker's hot path (FINISHED). Payload and result are spliced as they are. */
void gq_job_row_text (zchunk_t *out, const gq_job_row_t *row);

/* Selftest of the state names and the JSON form. */
void gq_job_test (bool verbose);

#endif
