/*  tuning.h — the constants that tune gridq-gateway, each with its unit in its name. */
#ifndef GW_TUNING_H_INCLUDED
#define GW_TUNING_H_INCLUDED

#define GW_DEFAULT_LISTEN          "127.0.0.1:8080"
#define GW_DEFAULT_MAX_BODY_BYTES  (16 * 1024 * 1024) /* --max-body: larger bodies get 413 */
#define GW_DEFAULT_TIMEOUT_MS      10000   /* --timeout: a broker reply later than this is 504 */
#define GW_LIST_DEFAULT            100     /* GET /v1/jobs without ?limit= (as JOBS) */
#define GW_MAX_WAIT_MS             (10LL * 60 * 1000) /* ?wait= is cut to this */
#define GW_CRON_MS                 100     /* the relay's timer: deadlines, clients gone */
#define GW_NODES_FRESH_MS          1000    /* a chat request reuses a NODES answer this young */
#define GW_STREAM_BUFFER_BYTES     (8 * 1024 * 1024) /* a stream further behind is closed */
#define GW_HTTP_CONNECTIONS        4096    /* connections libmicrohttpd accepts at once */
#define GW_HTTP_IDLE_S             60      /* --idle-timeout: an idle (not suspended) connection
                                              is closed */
#define GW_HTTP_MEMORY_BYTES       (64 * 1024) /* a connection's buffer: headers larger than
                                                  about half of it get 431 */
#define GW_OPEN_RECHECK_MS         5000    /* --max-queued: how often the jobs counted are
                                              asked for (a watch lost to a broker restart) */
#define GW_SSE_BLOCK_BYTES         16384   /* what a stream hands libmicrohttpd per call, at most */

#endif
