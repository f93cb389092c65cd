/*  tuning.h — the numbers that tune gridq-worker: periods, buffer sizes, limits on what one job
    may ask for. Each name says its unit: _MS, _US, _BYTES, _MB, _PERCENT for quantities; a count
    ends in what it counts (_THREADS, _MESSAGES, _RESULTS, _ELEMENTS, _ROWS, _COLUMNS, _COUNT).

    What stays in a module's own header is what is not a setting: sizes of arrays in its public
    structs (GQ_MODEL_MAX_LAYERS, GQ_ST_MAX_DIMS, GQ_SCRATCH_SLOTS, GQ_WORKER_MAX_HANDLERS), the
    limits of a file format (model.h, safetensors.h), and constants the code is written for (the
    CPU GEMM's 6x16 register tile, alignments). Limits shared by every gridq program, the wire's
    among them, are in gq_common.h. */
#ifndef GQ_TUNING_H_INCLUDED
#define GQ_TUNING_H_INCLUDED

#include "gq_common.h"

/* ---- The daemon (worker.c) ----------------------------------------------------------------- */
#define GQ_WORKER_TICK_MS              100    /* how often the socket thread checks the broker's
                                                 liveness */
#define GQ_WORKER_MAX_THREADS          64     /* slot threads at most, whatever --slots says */
#define GQ_WORKER_TURN_MESSAGES        1024   /* messages read per loop turn before results are
                                                 flushed */
#define GQ_WORKER_RESULTS_PER_MESSAGE  64     /* results sent at once: small enough that the
                                                 broker works on them while this worker runs the
                                                 rest (a pipeline) */
#define GQ_WORKER_SENT_MAX_RESULTS     200000 /* results kept for a resend, at most */
#define GQ_WORKER_SOCKET_HWM_MESSAGES  100000 /* messages queued each way on the DEALER before
                                                 ZeroMQ blocks or drops */

/* ---- Models (model.c) ---------------------------------------------------------------------- */
#define GQ_MODEL_BATCH_BYTES           (256 * 1024 * 1024) /* activations of one chunk of rows,
                                                              at most */
#define GQ_MODEL_WAIT_TICK_MS          20     /* how often a waiting cache acquire polls cancel */

/* ---- The CPU GEMM's cache blocking (backend_cpu.c) ----------------------------------------- */
/* Sized for common x86-64 caches; rows and columns must stay multiples of the 6x16 register tile
   (backend_cpu.c checks it). */
#define GQ_CPU_GEMM_KC_ELEMENTS        256    /* depth of a packed panel: an A and a B micro-panel
                                                 stay in L1 */
#define GQ_CPU_GEMM_MC_ROWS            96     /* rows of A packed at a time (about 96 KiB, L2) */
#define GQ_CPU_GEMM_NC_COLUMNS         2048   /* columns of B packed at a time (2 MiB, L3) */

#endif
