/*  handler.h — external job handlers: `--handler KIND=COMMAND` runs COMMAND for jobs of KIND.

    One job is one run of `/bin/sh -c COMMAND` in a session (and process group) of its own:
    - stdin: the job's payload as compact JSON, then end of file;
    - environment: the worker's, plus GRIDQ_JOB_ID, GRIDQ_ATTEMPT, GRIDQ_KIND, GRIDQ_MODEL (when
      the job names one) and CUDA_VISIBLE_DEVICES (when the job names the device, see
      gq_handler_cuda_devices; else it stays as the worker inherited it);
    - binary blobs (when the job has them): written to files 0, 1, ... in a folder of their own
      (mode 0700, under $TMPDIR or /tmp), named by GRIDQ_BLOB_DIR, their count in GRIDQ_BLOBS;
      the payload refers to them by index ({"blob": i, ...}). The folder and whatever the
      command left in it are removed when the run ends. A handler returns no blobs;
    - stdout (at most GQ_HANDLER_MAX_OUTPUT_BYTES, the wire's limit for a result) is the result:
      its JSON value when it parses, else the text as a JSON string (trailing newlines dropped);
    - exit 0 is success; a non-zero status or a signal fails the job with the last
      GQ_HANDLER_STDERR_TAIL_BYTES bytes of stderr in the message;
    - on timeout or cancel the whole process group gets SIGTERM, then SIGKILL after
      GQ_HANDLER_GRACE_MS. When the command ends, anything it left running in its group is
      killed too: a job's processes end with the job.
    The caller's thread blocks until the command is over; the child is always reaped. The
    process must not set SIGCHLD to SIG_IGN (that would make the child unwaitable). SIGPIPE is
    blocked in the calling thread while the payload is written, so a command that does not read
    its input cannot kill the worker. The limits and periods named here are in tuning.h. */
#ifndef GQ_HANDLER_H_INCLUDED
#define GQ_HANDLER_H_INCLUDED

#include <czmq.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "gq_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct _gq_handler_t gq_handler_t;

/* What one run needs to know; all borrowed for the duration of gq_handler_run. */
typedef struct {
    int64_t id;           /* job id: GRIDQ_JOB_ID */
    int attempt;          /* attempt number: GRIDQ_ATTEMPT */
    int64_t array_id;     /* GRIDQ_ARRAY_ID, 0 (unset) for a job of no array */
    int64_t array_index;  /* GRIDQ_ARRAY_INDEX */
    const char *kind;     /* GRIDQ_KIND (NULL: the handler's kind) */
    const char *model;    /* GRIDQ_MODEL, or NULL */
    const char *cuda_devices; /* CUDA_VISIBLE_DEVICES, or NULL to leave it as inherited */
    json_t *payload;      /* written to stdin (NULL: JSON null) */
    zframe_t **blobs;     /* binary inputs, written to files under GRIDQ_BLOB_DIR (may be NULL) */
    size_t n_blobs;       /* how many */
    int64_t timeout_ms;   /* 0: no limit */
    gq_flag_t *cancel; /* set non-zero from another thread to stop the run (may be NULL) */
} gq_handler_job_t;

/* The CUDA_VISIBLE_DEVICES that makes a handler see exactly the worker's device. `inherited` is
   the worker's own value (NULL when unset): its entries are what the worker's CUDA runtime
   enumerates, and `device` indexes them. An entry that names a device by UUID already ("GPU-…",
   "MIG-…") is passed as it is; otherwise the device's `uuid` ("GPU-…"; "" when unknown), which no
   enumeration order or container can change; without a UUID, the entry itself (the physical
   index), or `device` when nothing was inherited. Writes at most outlen bytes to out; returns
   out. */
const char *gq_handler_cuda_devices (const char *inherited, int device, const char *uuid,
                                     char *out, size_t outlen);

/* Splits "KIND=COMMAND" (what names the option in the reason: "handler", "engine"): the kind,
   checked, into kind (kindlen bytes); *command points into spec, past the spaces after '='.
   0, or GQ_EINVAL with a reason. Shared with engines (engine.c). */
int gq_handler_spec (const char *spec, const char *what, char *kind, size_t kindlen,
                     const char **command, char *why, size_t whylen);
/* The worker's environment for a child, less the variables that drop names by prefix ("NAME=",
   n_drop of them), with room for n_more entries and the terminating NULL after the *n_p it
   fills. Free it with gq_handler_env_free. NULL when out of memory. Shared with engines. */
char **gq_handler_env_inherit (const char *const *drop, size_t n_drop, size_t n_more,
                               size_t *n_p);
/* Frees an environment from gq_handler_env_inherit (and the entries added to it); NULL-safe. */
void gq_handler_env_free (char **env);
/* Starts `/bin/sh -c command` with env in a session (and process group) of its own, its stdin,
   stdout and stderr dup'ed from the three descriptors, default signal dispositions and an empty
   mask. 0 with *pid, or an errno. Shared with engines (engine.c). */
int gq_handler_spawn (const char *command, char **env, int in_fd, int out_fd, int err_fd,
                      pid_t *pid);
/* A handler from "KIND=COMMAND" (a valid kind, a non-empty command); NULL with a reason. */
gq_handler_t *gq_handler_new (const char *spec, char *why, size_t whylen);
/* NULLs the pointer; safe on NULL. */
void gq_handler_destroy (gq_handler_t **self_p);

const char *gq_handler_kind (gq_handler_t *self);
const char *gq_handler_command (gq_handler_t *self);

/* Runs the command for one job and blocks until it is over. Thread-safe: slots may run one
   handler concurrently. Returns 0 with *result (a new reference), or an error with the reason
   in error: GQ_EBACKEND (non-zero exit or signal), GQ_ETIMEOUT ("timed out after N ms"),
   GQ_ESTATE ("cancelled"), GQ_ETOOBIG (output too large or too deep), GQ_EINVAL (output is
   neither JSON nor UTF-8 text), GQ_EIO (the blobs could not be written, or the command could
   not be started). */
int gq_handler_run (gq_handler_t *self, const gq_handler_job_t *job, json_t **result,
                    char *error, size_t errlen);

void gq_handler_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
