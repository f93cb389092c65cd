/*  gq_common.h — error codes, tuning constants (with units), clocks, size and duration parsing,
    names on the wire, a 64-bit hash mixer.
    Everything here is shared by every gridq program. */
#ifndef GQ_COMMON_H_INCLUDED
#define GQ_COMMON_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A flag one thread sets and another polls (a job's cancel): atomic, so that the poller sees it
   and the C memory model (and ThreadSanitizer) know it. C++ (the CUDA backend) only passes the
   pointer along and never reads it. */
#ifdef __cplusplus
typedef int gq_flag_t;
#else
#include <stdatomic.h>
typedef atomic_int gq_flag_t;
#endif

/* ---- Error codes: 0 is success, negatives are failures; gq_strerror names them. ---------- */
typedef enum {
    GQ_OK = 0,
    GQ_EINVAL = -1,     /* a field is missing, of the wrong type or out of range */
    GQ_ENOMEM = -2,     /* allocation failed */
    GQ_EPROTO = -3,     /* a frame layout violates the wire protocol */
    GQ_ETOOBIG = -4,    /* a frame, message or string exceeds its size limit */
    GQ_ETIMEOUT = -5,   /* no answer within the deadline */
    GQ_ENOTFOUND = -6,  /* no such job, node or file */
    GQ_ESTORE = -7,     /* the SQLite store failed */
    GQ_EBACKEND = -8,   /* a compute backend (CPU/CUDA) failed */
    GQ_ERATE = -9,      /* rate limited; retry later */
    GQ_EDENIED = -10,   /* the peer's role does not allow the command */
    GQ_ESTATE = -11,    /* the object is in a state that forbids the operation */
    GQ_EIO = -12,       /* an operating-system or socket call failed */
    GQ_EMODEL = -13,    /* a model file is malformed or does not fit the input */
    GQ_EUNSUPPORTED = -14 /* a kind, dtype or feature this peer does not offer */
} gq_err_t;

/* Static English text for an error code. */
const char *gq_strerror (int err);
/* Wire name of an error code ("BAD_REQUEST", "RATE_LIMITED", ...), used in ERROR replies. */
const char *gq_errname (int err);
/* Inverse of gq_errname; unknown names map to GQ_EPROTO. */
int gq_err_from_name (const char *name);
/* Writes the reason for a failure, printf-style, into why (whylen bytes, always terminated) and
   returns code, so that a check fails in one line: return gq_why (why, whylen, GQ_EINVAL, ...). */
int gq_why (char *why, size_t whylen, int code, const char *format, ...)
    __attribute__ ((format (printf, 4, 5)));

/* ---- Tuning constants (units in the name) -------------------------------------------------- */
#define GQ_DEFAULT_ENDPOINT     "tcp://127.0.0.1:5555"
#define GQ_HEARTBEAT_MS         1000    /* broker <-> worker heartbeat interval */
#define GQ_LIVENESS             3       /* missed heartbeats before a peer counts as dead */
#define GQ_CLIENT_TIMEOUT_MS    5000    /* default client wait for a broker reply */
#define GQ_MAX_ATTEMPTS         3       /* default attempts per job */
#define GQ_MAX_ATTEMPTS_LIMIT   100     /* largest accepted max_attempts */
#define GQ_RETENTION_MS         (7LL * 24 * 3600 * 1000)
#define GQ_AGING_MS             60000   /* one priority level gained per this much waiting */
#define GQ_BACKFILL_WINDOW      64      /* queued jobs looked at past a blocked head job */

/* ---- Wire size limits (also enforced by ZMQ_MAXMSGSIZE on sockets) ------------------------- */
#define GQ_MAX_FRAMES           (3 + GQ_MAX_BLOBS)
#define GQ_MAX_BLOBS            16
#define GQ_MAX_JSON_BYTES       (4 * 1024 * 1024)
/* A message that carries many jobs (FINISHED, JOB, a STATUS reply, a worker's RESULT) is cut at
   about this much JSON and goes on in the next: within GQ_MAX_JSON_BYTES, with room for one job
   more where a message takes the job that passes it. */
#define GQ_MESSAGE_BUDGET_BYTES (3 * 1024 * 1024)
/* What a client or a worker takes from its broker (an unrouted message): one job's whole text,
   payload and result of up to GQ_MAX_JSON_BYTES each, must fit a FINISHED, RESULT or JOB. */
#define GQ_MAX_FROM_BROKER_JSON_BYTES (16 * 1024 * 1024)
#define GQ_MAX_BLOB_BYTES       (256 * 1024 * 1024)
#define GQ_MAX_MSG_BYTES        (512LL * 1024 * 1024)
#define GQ_MAX_JSON_DEPTH       32
#define GQ_MAX_BATCH_JOBS       10000   /* jobs in one SUBMIT */
#define GQ_MAX_PARTIAL_BYTES    (64 * 1024) /* one partial result (compact JSON) from an engine:
                                           a larger one fails its job at the worker */
#define GQ_MAX_IDS              10000   /* ids in one STATUS/WAIT/CANCEL */
#define GQ_MAX_DEPS             1000    /* parents of one job (after_ok, after_any, after_fail
                                           together) */
#define GQ_JOB_NAME_MAX         64      /* a job's name within a SUBMIT, including NUL */
#define GQ_MAX_ARRAY_ELEMENTS   1000000 /* elements of one array, and of one SUBMIT in all */
#define GQ_MAX_ARRAY_PARTS      64      /* comma-separated parts of an array spec ("1,3,5-9") */
#define GQ_MAX_ARRAY_INDEX      2147483647 /* largest array index */
#define GQ_NAME_MAX             64      /* node name, including NUL */
#define GQ_KIND_MAX             32
#define GQ_MODEL_MAX            128
#define GQ_GPU_MODEL_MAX        64
#define GQ_PATTERN_MAX          128
#define GQ_IDEM_MAX             256
#define GQ_AFFINITY_MAX         256     /* a job's affinity key, bytes with the NUL */
#define GQ_MAX_SLOTS            1024
#define GQ_MAX_NODES            250000  /* distinct node names a broker remembers */
#define GQ_MAX_MODEL_NAMES      100000  /* distinct model names a broker remembers */
#define GQ_MAX_MODELS           256     /* models a node may report */
#define GQ_MAX_KINDS            64      /* distinct kinds a broker knows (bit mask) */
#define GQ_MAX_VRAM_MB          (16LL * 1024 * 1024)   /* 16 TiB: above that is a lie */
#define GQ_MAX_TFLOPS           1.0e6
#define GQ_MAX_PRICE            1.0e6
#define GQ_MAX_TIMEOUT_MS       (30LL * 24 * 3600 * 1000)

/* ---- Clocks -------------------------------------------------------------------------------- */
/* Wall clock in milliseconds since the Unix epoch (for stored timestamps). */
int64_t gq_now_ms (void);
/* Monotonic clock in microseconds (for intervals and timers). */
int64_t gq_mono_us (void);
/* Writes "2026-11-29T10:21:13.123Z" into buf (at least GQ_TIME_BUF bytes); 0 ms gives "". */
#define GQ_TIME_BUF 32
char *gq_format_time (int64_t ms, char *buf);

/* ---- Parsing of command-line values -------------------------------------------------------- */
/* A whole decimal number within lo..hi -> *out (untouched otherwise). 0 or GQ_EINVAL. */
int gq_parse_int (const char *text, int64_t lo, int64_t hi, int64_t *out);
/* "512M", "24G", "1T" or a bare number of MiB -> MiB. Returns 0 or GQ_EINVAL. */
int gq_parse_size_mb (const char *text, int64_t *mb);
/* "250ms", "30s", "5m", "2h", "7d" or a bare number of seconds -> ms. 0 or GQ_EINVAL. */
int gq_parse_duration_ms (const char *text, int64_t *ms);

/* ---- Loopback ports (tests, benchmarks, demos) ------------------------------------------- */
/* A TCP port on 127.0.0.1 that was free a moment ago, picked by the kernel (not ZeroMQ's "*",
   which scans up from 49152 and so hands one port to runs started together); -1 on failure. */
int gq_loopback_port (void);

/* ---- Listening addresses (the broker's --metrics, gridq-gateway's --listen) ---------------- */
struct sockaddr_in;
/* "HOST:PORT" -> an IPv4 address (written to addr, a struct sockaddr_in). HOST is a dotted IPv4
   address or "localhost"; PORT 1..65535. option names the flag in messages ("--metrics"),
   example_port the port its examples show. 0, or GQ_EINVAL with a reason in why. */
int gq_parse_host_port (const char *text, const char *option, int example_port,
                        struct sockaddr_in *addr, char *why, size_t whylen);
/* Why a server could not listen on addr (host_port as given): it tries the bind itself, since
   libmicrohttpd does not say. Writes "cannot serve WHAT on HOST:PORT: REASON" into why. */
void gq_explain_bind (const struct sockaddr_in *addr, const char *host_port, const char *what,
                      char *why, size_t whylen);

/* ---- Names on the wire --------------------------------------------------------------------- */
/* A kind: [a-z0-9_.-]{1,31}. A model or node name: [A-Za-z0-9_.:@+-]{1,max-1}. Safe to embed in
   JSON text without escaping; that is why the broker may splice them into messages. */
bool gq_valid_kind (const char *s);
bool gq_valid_name (const char *s, size_t max);

/* ---- Hashing ------------------------------------------------------------------------------- */
/* SplitMix64's finalizer: a bijection on 64 bits in which every output bit depends on every input
   bit. The broker's matcher hashes ids with it; the worker's random fill (gq_rand_uniform)
   depends on its exact bits, which worker/cuda/backend_cuda.cu computes again on the device. */
static inline uint64_t
gq_mix64 (uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

#endif
