/*  tuning.h — the numbers that tune the broker, each named with its unit, for every broker
    module. Defaults that users set (heartbeat, liveness, retention, aging, backfill) live in
    proto/gq_common.h beside the wire limits; these are the broker's own. Sizes of arrays and
    formats that a module is written around stay in that module. */
#ifndef GQ_TUNING_H_INCLUDED
#define GQ_TUNING_H_INCLUDED

/* ---- The loop ------------------------------------------------------------------------------ */
#define GQ_TURN_MESSAGES          4096   /* messages read per loop turn before committing */
#define GQ_SLOW_TURN_US           200000 /* a loop turn longer than this is logged */
#define GQ_SOCKET_HWM_MESSAGES    200000 /* messages queued per peer before ZeroMQ drops */
#define GQ_CRON_MS                50     /* cron tick */
#define GQ_WATCH_HELD_PARTIALS_COUNT 1024 /* partials kept for a SUBMIT's watch until its
                                             acknowledgement, at most (later ones drop) */
#define GQ_TIMEOUTS_PERIOD_MS     100    /* cron period: time limits of running jobs */
#define GQ_RETENTION_PERIOD_MS    10000  /* cron period: purge of expired jobs, node history */
#define GQ_PURGE_CHUNK_JOBS       2000   /* jobs purged per retention run */

/* ---- Dispatch ------------------------------------------------------------------------------ */
#define GQ_DISPATCH_BATCH_JOBS    1024   /* placements asked of the scheduler per call */
/* Jobs in one JOB message: the worker starts on a part while the broker places the rest. */
#define GQ_JOB_MESSAGE_JOBS       128
/* A run that lasts this long is recorded "running" (shorter ones only when they end). */
#define GQ_RUN_RECORD_AFTER_MS    100
/* A worker's JOB text buffer larger than this is freed after sending, not kept after a burst. */
#define GQ_JOB_MESSAGE_KEEP_BYTES (1024 * 1024)

/* ---- Payloads ------------------------------------------------------------------------------ */
/* A payload with its parents' results ("inputs": "after") past this fails its job: no job may
   carry more than a client could have sent it with (GQ_MAX_JSON_BYTES of JSON). */
#define GQ_INPUTS_MAX_BYTES       (GQ_MAX_JSON_BYTES - 64 * 1024)

/* ---- Node health --------------------------------------------------------------------------- */
#define GQ_RELIABILITY_EWMA_WEIGHT 0.1   /* weight of the newest outcome in a node's reliability */
#define GQ_BACKOFF_AFTER_FAILURES 3      /* consecutive failures before a node is backed off */
#define GQ_BACKOFF_BASE_MS        1000   /* first backoff (default of backoff_base_ms) */
#define GQ_BACKOFF_MAX_MS         300000 /* longest backoff */
#define GQ_RESERVE_AFTER_MS       30000  /* default: a blocked head job gets a node reserved */

/* ---- Prefetch (workers.c): jobs sent beyond a node's slots, for kinds that run short ------- */
#define GQ_PREFETCH_MAX_JOBS      16     /* default of --prefetch-max */
#define GQ_PREFETCH_MAX_LIMIT     1024   /* --prefetch-max at most */
#define GQ_PREFETCH_BELOW_MS      20.0   /* default of --prefetch-below: a kind runs short on a
                                            node below this measured run time */
#define GQ_PREFETCH_EWMA_WEIGHT   0.2    /* weight of a new run time in a kind's average */
#define GQ_PREFETCH_RECALL_MS     50     /* default of --prefetch-recall-ms */
#define GQ_PREFETCH_RECALL_PICKS  256    /* prefetched jobs weighed for recall per cron tick */

/* ---- Partials kept for a resuming watch (watch.c) --------------------------------------- */
#define GQ_PARTIALS_KEPT_COUNT    64     /* a running job's last partials kept, at most */
#define GQ_PARTIALS_KEPT_BYTES    (256 * 1024) /* and at most these bytes of them */

/* A late result's own end time ("at", the worker's clock) is trusted up to this far back. */
#define GQ_LATE_RESULT_MAX_MS     (24LL * 3600 * 1000)
/* Entries of one RESULT taken apart without a tree (gq_result.h); a RESULT with more is parsed
   whole. gridq-worker sends at most 64 per message, more only when it resends after a restart. */
#define GQ_RESULT_SCAN_ENTRIES    64

/* ---- Affinity (dispatch.c) ------------------------------------------------------------------ */
#define GQ_AFFINITY_KEYS          100000 /* keys whose last node is remembered, at most */

/* ---- The commit pipeline ------------------------------------------------------------------- */
/* A batch with nothing to acknowledge (results, attempts) waits this long for company before it
   is committed, unless it has GQ_EAGER_COMMIT_WRITES writes already. */
#define GQ_LAZY_COMMIT_MS         2
#define GQ_EAGER_COMMIT_WRITES    8192
/* A batch this small, when the writer and the socket are idle, is committed by the loop. */
#define GQ_INLINE_COMMIT_WRITES   64
/* When the loop's own commits have grown the WAL to this many pages, the writer checkpoints. */
#define GQ_WAL_CHECKPOINT_PAGES   1000
/* A batch the store refused is applied again after this, doubling while it fails, up to MAX. */
#define GQ_STORE_RETRY_MIN_MS     10
#define GQ_STORE_RETRY_MAX_MS     1000
#define GQ_STORE_DRAIN_TRIES      5      /* tries at shutdown before writes are given up */
#define GQ_ID_BLOCK_IDS           (1 << 20) /* job ids reserved by one committed next_job_id */

/* ---- Matching and scheduling (matcher.c, sched.c) ----------------------------------------- */
#define GQ_MATCH_COST_EPS_PER_HOUR   0.01  /* added to prices before 1/price: a free node scores 1 */
#define GQ_MATCH_LATENCY_HALF_MS     10.0  /* the round trip that halves the latency term */
#define GQ_SCHED_PARKED_WALK_JOBS    16384 /* parked jobs passed in one scheduler run at most */

/* ---- The guard (guard.c) ------------------------------------------------------------------- */
#define GQ_GUARD_RESCAN_MS           1000  /* period: look for changes in the allowed-keys folders */
#define GQ_GUARD_MISS_RESCAN_MS      100   /* an unknown key forces such a look at most this often */
#define GQ_GUARD_DENY_LOG_MS         1000  /* at most one "denied" log line per period */
#define GQ_GUARD_MAX_BUCKETS         65536 /* token buckets kept; refilled ones are swept beyond that */
#define GQ_GUARD_MAX_OWNERS          65536 /* distinct owners counted for the queued cap */
#define GQ_GUARD_CERT_FILE_MAX_BYTES 65536 /* a larger file in a keys folder is no certificate */

/* ---- /metrics (metrics.c) ------------------------------------------------------------------ */
#define GQ_METRICS_REPLY_TIMEOUT_MS  2000  /* an HTTP request waits this long for the loop, then 503 */
#define GQ_METRICS_POLL_SLICE_MS     50    /* the wait checks for shutdown this often */
#define GQ_METRICS_HTTP_CONNECTIONS  64    /* concurrent scrapers accepted */
#define GQ_METRICS_HTTP_IDLE_S       10    /* an idle HTTP connection is closed after this */

/* ---- The store (store.c) ------------------------------------------------------------------ */
/* How long a write waits for a lock held by another connection (an operator's sqlite3 shell)
   before it fails: short, because the broker loop waits with it. */
#define GQ_STORE_BUSY_MS   2000
/* SQLite page cache of the connection (KiB): the indexes' hot pages stay in memory. */
#define GQ_STORE_CACHE_KB  (64 * 1024)
/* The WAL file is truncated back to this after a checkpoint (it may grow past it in between). */
#define GQ_STORE_WAL_LIMIT_BYTES (64LL * 1024 * 1024)

#endif
