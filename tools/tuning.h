/*  tuning.h — the constants that tune the tools' behaviour, one section per program, each with
    its unit in its name (the protocol's own limits are in proto/gq_common.h). */
#ifndef GQ_TOOLS_TUNING_H_INCLUDED
#define GQ_TOOLS_TUNING_H_INCLUDED

/* ---- gridq-bench --------------------------------------------------------------------------- */
#define GQ_BENCH_MAX_WORKERS        64     /* worker processes --spawn may start */
#define GQ_BENCH_STALL_MS           30000  /* no message for this long: the run failed */
#define GQ_BENCH_START_TIMEOUT_MS   30000  /* broker answering and workers registered within this */
#define GQ_BENCH_STOP_TIMEOUT_MS    5000   /* SIGTERM, then SIGKILL after this */
#define GQ_BENCH_CLIENT_TIMEOUT_MS  30000  /* per call (a 10000-job SUBMIT commits in one go) */
#define GQ_BENCH_MEMORY_CHUNK_JOBS  100000 /* jobs per gq_client_submit call in memory mode */
/* --poll: unknown ids start this far past the last id the run hands out. */
#define GQ_BENCH_POLL_GAP_IDS       1000000000
/* --poll: ids per STATUS. Not GQ_MAX_IDS: STATUS of 10000 finished jobs is ~4.8 MB of JSON, over
   GQ_MAX_JSON_BYTES, and the client drops the reply. */
#define GQ_BENCH_POLL_CHUNK_IDS     5000

/* ---- bench_common.c: the load generators' child processes ---------------------------------- */
#define GQ_BENCH_MAX_CHILDREN       128    /* processes bench_fork keeps: workers and a broker */

/* ---- gridq-bench-zmq ----------------------------------------------------------------------- */
#define GQ_BENCH_ZMQ_MAX_WORKERS      64    /* worker processes */
#define GQ_BENCH_ZMQ_STALL_MS         10000 /* no reply for this long: the run failed */
#define GQ_BENCH_ZMQ_START_TIMEOUT_MS 10000 /* workers registered within this */

/* ---- gridq-bench-gearman ------------------------------------------------------------------- */
#define GQ_BENCH_GEARMAN_MAX_WORKERS      64    /* worker processes */
#define GQ_BENCH_GEARMAN_STALL_MS         30000 /* no progress for this long: the run failed */
#define GQ_BENCH_GEARMAN_START_TIMEOUT_MS 10000 /* workers registered within this */
#define GQ_BENCH_GEARMAN_IO_TIMEOUT_MS    30000 /* libgearman's bound on each blocking call */

/* ---- gridq-top ----------------------------------------------------------------------------- */
#define GQ_TOP_INTERVAL_MS      1000               /* default time between refreshes */
#define GQ_TOP_MIN_INTERVAL_MS  100                /* faster than this only loads the broker */
#define GQ_TOP_HISTORY_SAMPLES  128                /* samples kept per counter series */
#define GQ_TOP_NODE_WINDOW_US   (60 * 1000000LL)   /* jobs per minute measured over at most this */
#define GQ_TOP_RATE_WINDOW_US   (5 * 1000000LL)    /* done / failed per second over at most this */
#define GQ_TOP_FAILED_JOBS      50                 /* recent failures asked for */
#define GQ_TOP_POLL_MAX_MS      250                /* the screen loop wakes at least this often */
#define GQ_TOP_NAME_COLS        20                 /* widest node name column */
#define GQ_TOP_GPU_COLS         22                 /* widest GPU model column */
#define GQ_TOP_BAR_COLS         12                 /* VRAM bar, inside its brackets */
#define GQ_TOP_RECENT_JOBS      50                 /* recent jobs asked for (an array counts one) */
#define GQ_TOP_ARRAY_ELEMENTS   20                 /* elements under an array, expanded ('a') */
#define GQ_TOP_ARRAY_BAR_COLS   16                 /* an array's progress bar, inside brackets */
#define GQ_TOP_ID_COLS          24                 /* widest ID column of the jobs lists */

#endif
