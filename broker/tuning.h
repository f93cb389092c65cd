/*  tuning.h — the numbers that tune the broker, each named with its unit. Defaults that users
    set (heartbeat, liveness, retention, aging, backfill) live in proto/gq_common.h beside the
    wire limits; these are the broker's own. */
#ifndef GQ_TUNING_H_INCLUDED
#define GQ_TUNING_H_INCLUDED

/* ---- The loop ------------------------------------------------------------------------------ */
#define GQ_TURN_MESSAGES       4096   /* messages read per loop turn before committing */
#define GQ_SLOW_TURN_US        200000 /* a loop turn longer than this is logged */
#define GQ_SOCKET_HWM_MESSAGES 200000 /* messages queued per peer before ZeroMQ drops */
#define GQ_CRON_MS             50     /* cron tick */
#define GQ_TIMEOUTS_PERIOD_MS  100    /* cron period: time limits of running jobs */
#define GQ_RETENTION_PERIOD_MS 10000  /* cron period: purge of expired jobs, node history */
#define GQ_PURGE_CHUNK_JOBS    2000   /* jobs purged per retention run */

/* ---- Dispatch ------------------------------------------------------------------------------ */
#define GQ_DISPATCH_BATCH_JOBS 1024 /* placements asked of the scheduler per call */
#define GQ_JOB_MESSAGE_JOBS                                                                        \
    128 /* jobs in one JOB message: the worker starts on a part                                    \
           while the broker places the rest */
#define GQ_JOB_MESSAGE_KEEP_BYTES                                                                  \
    (1024 * 1024) /* a worker's JOB buffer larger than this is                                     \
            freed after sending (not kept after a burst) */

/* ---- Node health --------------------------------------------------------------------------- */
#define GQ_RELIABILITY_EWMA_WEIGHT 0.1    /* weight of the newest outcome in a node's reliability */
#define GQ_BACKOFF_AFTER_FAILURES  3      /* consecutive failures before a node is backed off */
#define GQ_BACKOFF_BASE_MS         1000   /* first backoff (default of backoff_base_ms) */
#define GQ_BACKOFF_MAX_MS          300000 /* longest backoff */
#define GQ_RESERVE_AFTER_MS        30000  /* default: a blocked head job gets a node reserved */

/* ---- The commit pipeline ------------------------------------------------------------------- */
#define GQ_LAZY_COMMIT_MS                                                                          \
    2                               /* a batch with nothing to acknowledge (results, attempts)     \
                                       waits this long for company before it is committed */
#define GQ_EAGER_COMMIT_WRITES 8192 /* ... unless it has this many writes already */
#define GQ_INLINE_COMMIT_WRITES                                                                    \
    64                            /* a batch this small, when the writer and the socket are        \
                                     idle, is committed by the loop itself */
#define GQ_ID_BLOCK_IDS (1 << 20) /* job ids reserved by one committed next_job_id */

#endif
