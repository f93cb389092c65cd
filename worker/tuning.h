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
/* A RESULT message goes once it holds GQ_MESSAGE_BUDGET_BYTES of JSON; one job's entry past this
   fails its job instead (no RESULT could carry it: a broker takes GQ_MAX_JSON_BYTES). */
#define GQ_WORKER_RESULT_MAX_BYTES     (GQ_MAX_JSON_BYTES - 4096)
#define GQ_WORKER_SENT_MAX_RESULTS     200000 /* results kept for a resend, at most */
#define GQ_WORKER_SOCKET_HWM_MESSAGES  100000 /* messages queued each way on the DEALER before
                                                 ZeroMQ blocks or drops */
#define GQ_WORKER_STREAM_WINDOW_COUNT  64     /* partials of one job sent and not yet acknowledged
                                                 by the broker, at most, by default
                                                 (--stream-window); as many more wait, the
                                                 oldest dropped beyond that */
#define GQ_WORKER_LOST_LINGER_MS       2000   /* a worker whose GPU is lost waits this long at
                                                 most for its last RESULT and BYE to leave */

/* ---- Job execution (exec.c) ---------------------------------------------------------------- */
#define GQ_EXEC_SCRATCH_KEEP_BYTES     (256LL * 1024 * 1024) /* scratch a slot keeps between jobs */
#define GQ_EXEC_SLEEP_TICK_MS          5      /* how often sleep polls cancel */
#define GQ_MATMUL_MAX_DIM_ELEMENTS     65536  /* m, n, k of a generated matmul, each */
#define GQ_MATMUL_MAX_BYTES            (16LL << 30) /* device bytes of one matmul */
#define GQ_MATMUL_MAX_REPEAT_COUNT     1000   /* GEMMs timed in one job ("repeat") */
#define GQ_MATRIX_JSON_MAX_ELEMENTS    (256 * 1024) /* elements of a matrix sent as JSON */
#define GQ_MODEL_CACHE_CPU_MB          4096   /* model cache budget on the CPU, by default */
#define GQ_MODEL_CACHE_GPU_PERCENT     80     /* model cache budget on a GPU: of free VRAM, by
                                                 default */

/* ---- Models (model.c) ---------------------------------------------------------------------- */
#define GQ_MODEL_BATCH_BYTES           (256 * 1024 * 1024) /* activations of one chunk of rows,
                                                              at most */
#define GQ_MODEL_WAIT_TICK_MS          20     /* how often a waiting cache acquire polls cancel */

/* ---- External handlers (handler.c) --------------------------------------------------------- */
#define GQ_HANDLER_MAX_OUTPUT_BYTES    GQ_MAX_JSON_BYTES /* stdout kept, at most: the wire's
                                                            limit for a result */
#define GQ_HANDLER_STDERR_TAIL_BYTES   2048   /* bytes of stderr kept for the message */
#define GQ_HANDLER_TICK_MS             20     /* poll tick: how fast cancel is seen */
#define GQ_HANDLER_GRACE_MS            2000   /* SIGTERM to SIGKILL */
#define GQ_HANDLER_LINGER_MS           1000   /* wait for pipes after the command exits */

/* ---- Persistent engines (engine.c) ------------------------------------------------------- */
#define GQ_ENGINE_TICK_MS              20     /* poll tick: how fast cancel and stop are seen */
#define GQ_ENGINE_READY_TIMEOUT_MS     60000  /* wait for the ready line, by default
                                                 (--engine-ready-timeout) */
#define GQ_ENGINE_PARTIALS_COUNT       1024   /* partials of one job queued between the engine's
                                                 reader and its slot, at most (the oldest drop) */
#define GQ_ENGINE_BACKOFF_MIN_MS       100    /* first restart after a crash */
#define GQ_ENGINE_BACKOFF_MAX_MS       10000  /* restarts back off, doubling, up to this */
#define GQ_ENGINE_MAX_LINE_BYTES       (GQ_MAX_JSON_BYTES + 4096) /* one stdout line, at most:
                                                 a result as large as the wire takes, wrapped */
#define GQ_ENGINE_READ_BYTES           65536  /* read from the engine's pipes at once */
#define GQ_ENGINE_STDERR_LINE_BYTES    2048   /* a stderr line logged at once, at most */

/* ---- OpenAI-compatible servers (openai.c; back-off and tick as engines) -------------------- */
#define GQ_OPENAI_PROBE_MS             5000   /* GET URL/models this often while the server is up */
#define GQ_OPENAI_PROBE_TIMEOUT_MS     2000   /* one probe, at most */
#define GQ_OPENAI_CONNECT_TIMEOUT_MS   2000   /* a job's connection, at most */
#define GQ_OPENAI_MAX_BODY_BYTES       (1024 * 1024) /* a models list or an answer that is not a
                                                 stream (an HTTP error), kept at most */
#define GQ_OPENAI_MAX_CHOICES          64     /* choices of one completion ("n"), at most */

/* ---- The CPU GEMM's cache blocking (backend_cpu.c) ----------------------------------------- */
/* Sized for common x86-64 caches; rows and columns must stay multiples of the 6x16 register tile
   (backend_cpu.c checks it). */
#define GQ_CPU_GEMM_KC_ELEMENTS        256    /* depth of a packed panel: an A and a B micro-panel
                                                 stay in L1 */
#define GQ_CPU_GEMM_MC_ROWS            96     /* rows of A packed at a time (about 96 KiB, L2) */
#define GQ_CPU_GEMM_NC_COLUMNS         2048   /* columns of B packed at a time (2 MiB, L3) */

#endif
