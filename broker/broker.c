/*  broker.c — the gridq broker loop.

    One ROUTER socket read by one zloop. Each loop turn reads every message waiting (up to
    S_TURN_MESSAGES) and applies them to the in-memory state; their writes are recorded in the
    pending batch (writer.h). At the end of the turn the scheduler's placements go out, and the
    batch goes to the writer thread, which commits it while the loop goes on (group commit: the
    next batch grows meanwhile). A small batch when nothing else waits is committed by the loop
    itself, which saves two thread wake-ups on a lone job's path. What a batch must make durable
    first (acknowledgements of submissions, replies to requests that wrote) is sent when the
    batch is back, committed.

    A submitted job may be dispatched before its batch commits, so that the commit overlaps the
    job's run; it is acknowledged only after. Its id is then below a committed "next_job_id", so a
    broker restarted after a crash never gives that id to another job. Results are sent to the
    clients waiting on them at once, and committed right after: if the broker dies in between,
    the worker sends the result again when it registers anew (or the job runs again).

    A cron timer does the periodic work (heartbeats, liveness, time limits, retention), each with
    a named period.

    Reading order: types; small helpers; workers; job lifecycle; batches (recorded, committed,
    back); client commands; worker commands; the turn (read, dispatch, commit); cron; recovery;
    construction. */
#include "broker.h"

#include <czmq.h>
#include <math.h>
#include <string.h>

#include "explain.h"
#include "gq_msg.h"
#include "gq_spec.h"
#include "guard.h"
#include "metrics.h"
#include "queue.h"
#include "sched.h"
#include "writer.h"

#define S_TURN_MESSAGES   4096  /* messages read per loop turn before committing */
#define S_DISPATCH_BATCH  1024  /* placements asked of the scheduler per call */
#define S_JOBS_PER_MESSAGE 128  /* jobs in one JOB message: the worker starts on a part while
                                   the broker places the rest */
#define S_CRON_MS         50    /* cron tick */
#define S_TIMEOUTS_MS     100   /* period: time limits of running jobs */
#define S_RETENTION_MS    10000 /* period: purge of expired jobs, node history */
#define S_PURGE_CHUNK     2000  /* jobs purged per retention run */
#define S_SOCKET_HWM      200000/* messages queued per peer before ZeroMQ drops */
#define S_RELIABILITY_EWMA 0.1  /* weight of the newest outcome in a node's reliability */
#define S_BACKOFF_AFTER   3     /* consecutive failures before a node is backed off */
#define S_BACKOFF_MAX_MS  300000
#define S_SLOW_TURN_US    200000 /* a loop turn longer than this is logged */
#define S_LAZY_MS         2     /* a batch with nothing to acknowledge (results, attempts) waits
                                   this long for company before it is committed */
#define S_EAGER_WRITES    8192  /* ... unless it has this many writes already */
#define S_INLINE_WRITES   64    /* a batch this small, when the writer and the socket are idle,
                                   is committed by the loop itself (s_commit_here) */
#define S_ID_BLOCK        (1 << 20) /* job ids reserved by one committed next_job_id */

/* ---- Types --------------------------------------------------------------------------------- */

/* A client waiting for jobs to finish (WAIT, or SUBMIT with watch): one per request. */
typedef struct {
    zframe_t *routing_id; /* the client's connection */
    int64_t req;          /* the request the FINISHED messages answer */
    size_t refs;          /* jobs still pointing at this watch */
    zchunk_t *pending;    /* finished jobs (JSON objects, comma-separated) to send, or NULL */
    bool brief;           /* FINISHED carries only id, state, result and error */
    bool held;            /* a SUBMIT's watch before its acknowledgement: nothing is sent */
    bool dead;            /* the SUBMIT was refused: nothing is ever sent */
} s_watch_t;

/* The watches of one job. */
typedef struct {
    size_t count;         /* used entries */
    s_watch_t *items[];   /* borrowed: refs counts them */
} s_watchers_t;

/* One connected (or once connected) worker; index = its matcher node index. */
typedef struct {
    int32_t node;          /* matcher index */
    zframe_t *routing_id;  /* current connection, NULL when offline */
    char key[520];         /* hex of routing_id (up to 255 bytes): workers-by-connection key */
    int64_t last_seen_us;  /* monotonic time of the last message */
    int64_t last_seen_ms;  /* wall time of the last message (for listings) */
    gq_job_t *running;     /* jobs running there, linked through qprev/qnext */
    zchunk_t *jobs_out;    /* JOB entries placed this turn, as JSON text, or NULL */
    size_t jobs_out_count; /* entries in jobs_out */
    json_t *spec;          /* the worker's last READY spec (kinds, models, backend) */
    json_t *models_loaded; /* last reported [{name, load_ms}] */
    char owner_key[48];    /* CURVE key that first registered this name ("" without CURVE):
                              no other key may take the name over */
    int failures_in_row;   /* consecutive failed jobs (backoff) */
    bool dirty;            /* has entries in jobs_out */
} s_worker_t;

/* A SUBMIT waiting for its batch to commit. */
typedef struct {
    gq_msg_t *request;     /* the SUBMIT (routing id, req, blobs; the batch borrows from it) */
    gq_job_t **jobs;       /* its new jobs (NULL entries for idem repeats); owned here until
                              they join memory, borrowed after (see covered) */
    int64_t *ids;          /* the id of each job of the batch */
    size_t count;
    uint32_t owner;        /* submitter, for the per-client cap */
    s_watch_t *watch;      /* SUBMIT with watch: held until the acknowledgement, or NULL */
    bool covered;          /* its ids are below a committed next_job_id: its jobs joined memory
                              and the queue at once; otherwise they join when it commits */
} s_submit_t;

/* The writes of one or more turns, and what waits for them to commit. */
typedef struct {
    gq_batch_t *batch;     /* the writes */
    zlist_t *submits;      /* s_submit_t: acknowledged when it is back */
    zlist_t *replies;      /* gq_msg_t: sent when it is back */
    zlist_t *dead;         /* gq_job_t that ended: the batch borrows them; freed when it is back */
    zlist_t *idems;        /* idem keys it inserts (strings): no longer pending when it is back */
    int64_t id_mark;       /* the next_job_id it records, 0 for none */
    int64_t id_first, id_last; /* the ids of the jobs it inserts (0, 0 for none) */
    int64_t opened_us;     /* when its first write was recorded */
} s_pending_t;

struct _gq_broker_t {
    gq_broker_opts_t opts;     /* configuration (strings borrowed from the caller) */
    zsock_t *router;           /* the one socket */
    zloop_t *loop;             /* its event loop */
    gq_store_t *store;         /* SQLite: start, reads, and the shutdown's next_job_id */
    gq_writer_t *writer;       /* the thread that commits batches */
    s_pending_t *pending;      /* the batch being recorded */
    zlist_t *inflight;         /* s_pending_t handed to the writer, oldest first */
    zhashx_t *idem_pending;    /* idem key -> job id, for inserts not yet committed */
    int64_t next_id;           /* the next job id */
    int64_t id_committed;      /* ids below it are covered by a committed next_job_id */
    int64_t id_recorded;       /* the largest next_job_id recorded (committed or not) */
    int lazy_timer;            /* zloop timer that hands a lazy batch over, or -1 */
    gq_matcher_t *matcher;     /* nodes and placement */
    gq_queue_t *queue;         /* queued jobs in dispatch order */
    gq_sched_t *sched;         /* placement policy over queue and matcher */
    gq_guard_t *guard;         /* CURVE roles and rate limits */
    gq_metrics_t *metrics;     /* counters, histograms and /metrics */
    int64_t submitted;         /* jobs accepted since start (counter) */
    int64_t finished[GQ_JOB_STATES]; /* jobs ended since start, per final state (counters) */
    zhashx_t *jobs;            /* id -> gq_job_t, every job not ended */
    zhashx_t *by_connection;   /* routing-id hex -> s_worker_t */
    s_worker_t **workers;      /* by node index */
    size_t workers_size;       /* allocated entries of workers */
    zlist_t *replies;          /* gq_msg_t of this turn */
    zlist_t *dirty_watches;    /* s_watch_t with pending FINISHED */
    zlist_t *dirty_workers;    /* s_worker_t with jobs to send */
    gq_dispatch_t *placed;     /* scheduler output buffer */
    int64_t counts[GQ_JOB_STATES]; /* jobs per state (queued/running from memory) */
    int64_t rejected;          /* bad messages dropped or answered with ERROR */
    int64_t started_ms;        /* wall clock at start */
    int64_t next_heartbeat_us, next_timeouts_us, next_retention_us; /* cron periods */
    bool turn_wrote;           /* this turn recorded writes: its replies wait for them */
};

/* ---- Small helpers ------------------------------------------------------------------------- */

static void
s_hex (zframe_t *frame, char *out, size_t size)
{
    static const char digits[] = "0123456789abcdef";
    size_t n = zframe_size (frame);
    const byte *data = zframe_data (frame);
    size_t o = 0;
    for (size_t i = 0; i < n && o + 2 < size; i++) {
        out[o++] = digits[data[i] >> 4];
        out[o++] = digits[data[i] & 15];
    }
    out[o] = 0;
}

static void
s_chunk_str (zchunk_t *chunk, const char *text)
{
    zchunk_extend (chunk, text, strlen (text));
}

static void
s_chunk_printf (zchunk_t *chunk, const char *format, ...) __attribute__ ((format (printf, 2, 3)));

static void
s_chunk_printf (zchunk_t *chunk, const char *format, ...)
{
    char text[256];
    va_list args;
    va_start (args, format);
    int n = vsnprintf (text, sizeof text, format, args);
    va_end (args);
    zchunk_extend (chunk, text, n < (int) sizeof text ? (size_t) n : sizeof text - 1);
}

/* Appends text, then a quoted name or null (names are validated on entry: no escaping). */
static void
s_chunk_name (zchunk_t *chunk, const char *before, const char *name)
{
    s_chunk_str (chunk, before);
    if (name) {
        zchunk_extend (chunk, "\"", 1);
        s_chunk_str (chunk, name);
        zchunk_extend (chunk, "\"", 1);
    } else {
        zchunk_extend (chunk, "null", 4);
    }
}

/* zhashx with int64 keys stored in the key pointer itself (no allocation per entry). */
static size_t
s_id_hash (const void *key)
{
    uint64_t x = (uint64_t) (uintptr_t) key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t) x;
}

static int
s_id_compare (const void *a, const void *b)
{
    return a == b ? 0 : ((uintptr_t) a < (uintptr_t) b ? -1 : 1);
}

#define S_KEY(id) ((void *) (uintptr_t) (id))

static gq_job_t *
s_job_lookup (gq_broker_t *self, int64_t id)
{
    return (gq_job_t *) zhashx_lookup (self->jobs, S_KEY (id));
}

static const char *
s_node_name (gq_broker_t *self, int32_t node)
{
    return node >= 0 ? gq_matcher_node (self->matcher, node)->name : NULL;
}

static const char *
s_model_name (gq_broker_t *self, const gq_job_t *job)
{
    return job->model_id ? gq_matcher_model_name (self->matcher, job->model_id) : NULL;
}

static void
s_reply (gq_broker_t *self, gq_msg_t *reply)
{
    if (reply) {
        zlist_append (self->replies, reply);
    }
}

static void
s_reject (gq_broker_t *self, gq_msg_t *request, int code, const char *why)
{
    self->rejected++;
    s_reply (self, gq_msg_error (request, code, "%s", why));
}

/* Notes a write recorded in the pending batch; rc is the gq_batch_* result (a failure spoiled
   the batch: it comes back failed, and its submissions are refused). */
static void
s_recorded (gq_broker_t *self, int rc)
{
    if (!self->pending->opened_us) {
        self->pending->opened_us = gq_mono_us ();
    }
    self->turn_wrote = true;
    if (rc) {
        zsys_error ("broker: out of memory recording a write: its batch will be refused");
    }
}

/* The JSON form of an in-memory job. with_payload includes the payload text. */
static json_t *
s_job_json (gq_broker_t *self, const gq_job_t *job, bool with_payload)
{
    gq_job_row_t row;
    gq_job_row_from (&row, job, gq_matcher_kind_name (self->matcher, job->kind_id),
                     s_model_name (self, job), s_node_name (self, job->node));
    if (!with_payload) {
        row.payload = NULL;
    }
    return gq_job_row_json (&row);
}

/* ---- Workers ------------------------------------------------------------------------------- */

static s_worker_t *
s_worker_for_node (gq_broker_t *self, int32_t node)
{
    if ((size_t) node >= self->workers_size) {
        size_t size = self->workers_size ? self->workers_size : 64;
        while (size <= (size_t) node) {
            size *= 2;
        }
        s_worker_t **grown = (s_worker_t **) realloc (self->workers, size * sizeof *grown);
        if (!grown) {
            return NULL;
        }
        memset (grown + self->workers_size, 0, (size - self->workers_size) * sizeof *grown);
        self->workers = grown;
        self->workers_size = size;
    }
    if (!self->workers[node]) {
        s_worker_t *worker = (s_worker_t *) calloc (1, sizeof *worker);
        if (!worker) {
            return NULL;
        }
        worker->node = node;
        self->workers[node] = worker;
    }
    return self->workers[node];
}

static s_worker_t *
s_worker_by_connection (gq_broker_t *self, zframe_t *routing_id)
{
    char key[520];
    s_hex (routing_id, key, sizeof key);
    return (s_worker_t *) zhashx_lookup (self->by_connection, key);
}

static void
s_running_link (s_worker_t *worker, gq_job_t *job)
{
    job->qprev = NULL;
    job->qnext = worker->running;
    if (worker->running) {
        worker->running->qprev = job;
    }
    worker->running = job;
}

static void
s_running_unlink (s_worker_t *worker, gq_job_t *job)
{
    if (job->qprev) {
        job->qprev->qnext = job->qnext;
    } else if (worker->running == job) {
        worker->running = job->qnext;
    }
    if (job->qnext) {
        job->qnext->qprev = job->qprev;
    }
    job->qprev = job->qnext = NULL;
}

static void
s_worker_send (gq_broker_t *self, s_worker_t *worker, const char *command, json_t *body)
{
    if (!worker->routing_id) {
        json_decref (body);
        return;
    }
    gq_msg_t *msg = gq_msg_new (GQ_ROLE_WORKER, command, body);
    if (msg) {
        gq_msg_set_routing_id (msg, worker->routing_id);
        gq_msg_send (&msg, self->router);
    }
}

/* ---- Job lifecycle ------------------------------------------------------------------------- */

static void
s_watch_release (gq_broker_t *self, s_watch_t *watch)
{
    if (--watch->refs == 0 && !watch->pending) {
        zframe_destroy (&watch->routing_id);
        free (watch);
    }
}

static int
s_watch_add (gq_job_t *job, s_watch_t *watch)
{
    s_watchers_t *list = (s_watchers_t *) job->watchers;
    size_t count = list ? list->count : 0;
    /* A client that asks again (it re-sends WAIT while it waits) is told once: clients match
       FINISHED by job id, whatever request it answers. */
    for (size_t i = 0; i < count; i++) {
        if (zframe_eq (list->items[i]->routing_id, watch->routing_id)) {
            return GQ_OK;
        }
    }
    /* Grow by powers of two: most jobs have one watcher. */
    if (!list || (count & (count - 1)) == 0) {
        size_t cap = count ? count * 2 : 1;
        list = (s_watchers_t *) realloc (list, sizeof *list + cap * sizeof list->items[0]);
        if (!list) {
            return GQ_ENOMEM;
        }
        job->watchers = list;
    }
    list->items[count] = watch;
    list->count = count + 1;
    watch->refs++;
    return GQ_OK;
}

/* Queues a finished job (JSON text of one object) for a client watching it: sent at the end of
   the turn, or when a held watch's SUBMIT is acknowledged. */
static void
s_watch_notify_text (gq_broker_t *self, s_watch_t *watch, const char *text, size_t size)
{
    if (watch->dead) {
        return;
    }
    if (!watch->pending) {
        watch->pending = zchunk_new (NULL, size + 64);
        if (!watch->held) {
            zlist_append (self->dirty_watches, watch);
        }
    } else {
        zchunk_extend (watch->pending, ",", 1);
    }
    zchunk_extend (watch->pending, text, size);
}

/* The keys of a job in a brief FINISHED. */
static const char *s_brief_keys[] = {"id", "state", "result", "error"};

static void
s_watch_notify (gq_broker_t *self, s_watch_t *watch, json_t *job_json)
{
    json_t *brief = NULL;
    if (watch->brief) {
        brief = json_object ();
        for (size_t k = 0; k < sizeof s_brief_keys / sizeof s_brief_keys[0]; k++) {
            json_t *value = json_object_get (job_json, s_brief_keys[k]);
            json_object_set (brief, s_brief_keys[k], value ? value : json_null ());
        }
        job_json = brief;
    }
    char *text = json_dumps (job_json, JSON_COMPACT);
    json_decref (brief);
    if (text) {
        s_watch_notify_text (self, watch, text, strlen (text));
        free (text);
    }
}

/* Appends text as a JSON string (escaped by jansson), or null. */
static void
s_chunk_quoted (zchunk_t *chunk, const char *text)
{
    if (!text || gq_chunk_string (chunk, text)) {
        s_chunk_str (chunk, "null");
    }
}

/* Appends key (the text before the value) and the time as a string, or null. */
static void
s_chunk_time (zchunk_t *chunk, const char *key, int64_t ms)
{
    char buf[GQ_TIME_BUF];
    s_chunk_name (chunk, key, ms > 0 ? gq_format_time (ms, buf) : NULL);
}

/* The JSON text of a job that just ended, as FINISHED carries it, spliced from the texts the
   broker holds (payload, result) instead of building and dumping a JSON tree: at tens of
   thousands of jobs a second this is most of the broker's work otherwise. The fields and their
   order are those of gq_job_row_json (names are validated on entry, so they need no escaping). */
static zchunk_t *
s_finished_text (gq_broker_t *self, const gq_job_t *job, const char *node, const char *result,
                 const char *error, int64_t now_ms)
{
    zchunk_t *out = zchunk_new (NULL, 256 + job->payload_len + (result ? strlen (result) : 0));
    const char *model = s_model_name (self, job);
    s_chunk_str (out, "{\"id\":");
    gq_chunk_int (out, job->id);
    s_chunk_name (out, ",\"state\":", gq_job_state_name (job->state));
    s_chunk_name (out, ",\"kind\":", gq_matcher_kind_name (self->matcher, job->kind_id));
    s_chunk_name (out, ",\"model\":", model);
    s_chunk_str (out, ",\"min_vram_mb\":");
    gq_chunk_int (out, job->min_vram_mb);
    s_chunk_str (out, ",\"priority\":");
    gq_chunk_int (out, job->priority);
    s_chunk_str (out, ",\"timeout_ms\":");
    gq_chunk_int (out, job->timeout_ms);
    s_chunk_str (out, ",\"max_attempts\":");
    gq_chunk_int (out, job->max_attempts);
    s_chunk_str (out, ",\"payload\":");
    zchunk_extend (out, job->payload, job->payload_len);
    s_chunk_name (out, ",\"node\":", node);
    s_chunk_str (out, ",\"attempts\":");
    gq_chunk_int (out, job->attempts);
    s_chunk_str (out, ",\"result\":");
    s_chunk_str (out, result ? result : "null");
    s_chunk_str (out, ",\"error\":");
    s_chunk_quoted (out, error);
    s_chunk_time (out, ",\"submitted_at\":", job->submitted_ms);
    s_chunk_time (out, ",\"started_at\":", job->started_ms);
    s_chunk_time (out, ",\"finished_at\":", now_ms);
    s_chunk_str (out, "}");
    return out;
}

/* Lets go of the clients watching a job. */
static void
s_job_unwatch (gq_broker_t *self, gq_job_t *job)
{
    s_watchers_t *list = (s_watchers_t *) job->watchers;
    if (list) {
        for (size_t i = 0; i < list->count; i++) {
            s_watch_release (self, list->items[i]);
        }
        free (list);
        job->watchers = NULL;
    }
}

/* The brief form of a job that just ended: {id, state, result, error}. */
static zchunk_t *
s_brief_text (const gq_job_t *job, const char *result, const char *error)
{
    zchunk_t *out = zchunk_new (NULL, 64 + (result ? strlen (result) : 0));
    s_chunk_str (out, "{\"id\":");
    gq_chunk_int (out, job->id);
    s_chunk_name (out, ",\"state\":", gq_job_state_name (job->state));
    s_chunk_str (out, ",\"result\":");
    s_chunk_str (out, result ? result : "null");
    s_chunk_str (out, ",\"error\":");
    s_chunk_quoted (out, error);
    s_chunk_str (out, "}");
    return out;
}

static void
s_job_free (gq_broker_t *self, gq_job_t **job_p)
{
    gq_job_t *job = *job_p;
    if (!job) {
        return;
    }
    s_job_unwatch (self, job);
    if (job->blobs) {
        zlist_t *blobs = (zlist_t *) job->blobs;
        zframe_t *frame;
        while ((frame = (zframe_t *) zlist_pop (blobs))) {
            zframe_destroy (&frame);
        }
        zlist_destroy (&blobs);
    }
    free (job->payload);
    free (job->constraints);
    free (job);
    *job_p = NULL;
}

/* A job that ended leaves the broker's tables now, and memory when the batch that holds its
   last writes is back (the batch borrows its payload and blobs). Its watchers are released. */
static void
s_job_bury (gq_broker_t *self, gq_job_t *job)
{
    s_job_unwatch (self, job);
    zlist_append (self->pending->dead, job);
}

/* Ends the current attempt of a running job: its slot released, unlinked, and its row recorded
   (not for a first attempt that succeeded: the job's own row tells that one). */
static void
s_attempt_end (gq_broker_t *self, gq_job_t *job, const char *outcome, const char *reason,
               int64_t now_ms)
{
    if (job->node < 0) {
        return;
    }
    s_worker_t *worker = self->workers[job->node];
    s_running_unlink (worker, job);
    gq_matcher_release (self->matcher, job->node, job, now_ms);
    self->counts[GQ_JOB_RUNNING]--;
    if (job->attempts == 1 && streq (outcome, "ok")) {
        return;
    }
    s_recorded (self, gq_batch_attempt (self->pending->batch, job->id, job->attempts,
                                        s_node_name (self, job->node), job->started_ms, now_ms,
                                        outcome, reason));
}

/* A job reached a final state: recorded, watchers told, buried. result is JSON (borrowed) or
   NULL; the node of the last attempt stays in the record. */
static void
s_job_end (gq_broker_t *self, gq_job_t *job, int state, json_t *result, const char *error,
           int32_t last_node, int64_t now_ms)
{
    char *text = result ? json_dumps (result, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
    if (job->state == GQ_JOB_QUEUED) {
        gq_queue_remove (self->queue, job);
        self->counts[GQ_JOB_QUEUED]--;
    }
    job->state = (uint8_t) state;
    self->counts[state]++;
    self->finished[state]++;
    if (job->owner) {
        char why[100];
        gq_guard_queued (self->guard, job->owner, -1, false, why, sizeof why);
    }
    if (job->started_ms && state == GQ_JOB_DONE) {
        gq_metrics_observe (self->metrics, GQ_HIST_LATENCY_MS, (double) (now_ms - job->started_ms));
    }
    const char *node = s_node_name (self, last_node);
    s_watchers_t *list = (s_watchers_t *) job->watchers;
    zchunk_t *full = NULL, *brief = NULL;
    for (size_t i = 0; list && i < list->count; i++) {
        s_watch_t *watch = list->items[i];
        zchunk_t **json = watch->brief ? &brief : &full;
        if (!*json) {
            *json = watch->brief ? s_brief_text (job, text, error)
                                 : s_finished_text (self, job, node, text, error, now_ms);
        }
        s_watch_notify_text (self, watch, (const char *) zchunk_data (*json), zchunk_size (*json));
    }
    zchunk_destroy (&full);
    zchunk_destroy (&brief);
    /* The batch takes the result text. */
    s_recorded (self, gq_batch_job_finish (self->pending->batch, job->id, state, job->attempts,
                                           node, job->started_ms, now_ms, text, error));
    zhashx_delete (self->jobs, S_KEY (job->id));
    s_job_bury (self, job);
}

static void
s_exclude (gq_job_t *job, int32_t node)
{
    for (int i = 0; i < job->n_excluded; i++) {
        if (job->excluded[i] == node) {
            return;
        }
    }
    if (job->n_excluded < GQ_JOB_MAX_EXCLUDED) {
        job->excluded[job->n_excluded++] = node;
    } else {
        /* Keep the most recent failures: the oldest one leaves. */
        memmove (job->excluded, job->excluded + 1, (GQ_JOB_MAX_EXCLUDED - 1) * sizeof (int32_t));
        job->excluded[GQ_JOB_MAX_EXCLUDED - 1] = node;
    }
}

/* An attempt failed (outcome failed, lost, timeout): the job goes back to the queue without
   that node, or fails for good after max_attempts. */
static void
s_attempt_failed (gq_broker_t *self, gq_job_t *job, const char *outcome, const char *reason,
                  bool exclude, int64_t now_ms)
{
    int32_t node = job->node;
    s_attempt_end (self, job, outcome, reason, now_ms);
    job->node = -1;
    if (job->attempts >= job->max_attempts) {
        char error[600];
        snprintf (error, sizeof error, "failed after %d attempt%s; last on %s: %s", job->attempts,
                  job->attempts == 1 ? "" : "s", s_node_name (self, node), reason);
        s_job_end (self, job, GQ_JOB_FAILED, NULL, error, node, now_ms);
        return;
    }
    if (exclude) {
        s_exclude (job, node);
        /* Every connected node that could run it has failed it: waiting would be forever (the
           exclusions stand), so it fails now, saying so. Nodes that come later do not count:
           an empty fleet is not a verdict. */
        gq_job_t unexcluded = *job;
        unexcluded.n_excluded = 0;
        bool capable = false, untried = false;
        size_t nodes = gq_matcher_nodes (self->matcher);
        for (size_t n = 0; n < nodes && !untried; n++) {
            capable = capable || gq_matcher_could_run (self->matcher, (int32_t) n, &unexcluded);
            untried = gq_matcher_could_run (self->matcher, (int32_t) n, job);
        }
        if (capable && !untried) {
            char error[600];
            snprintf (error, sizeof error,
                      "failed on every node that can run it (%d attempt%s); last on %s: %s",
                      job->attempts, job->attempts == 1 ? "" : "s", s_node_name (self, node),
                      reason);
            s_job_end (self, job, GQ_JOB_FAILED, NULL, error, node, now_ms);
            return;
        }
    }
    job->state = GQ_JOB_QUEUED;
    gq_queue_push (self->queue, job);
    self->counts[GQ_JOB_QUEUED]++;
}

/* Updates a node's reliability and backoff after a job outcome on it. */
static void
s_node_outcome (gq_broker_t *self, s_worker_t *worker, bool ok, int64_t now_ms)
{
    gq_node_t *node = gq_matcher_node (self->matcher, worker->node);
    node->reliability = (float) ((1 - S_RELIABILITY_EWMA) * node->reliability +
                                 (ok ? S_RELIABILITY_EWMA : 0));
    if (ok) {
        node->jobs_ok++;
        worker->failures_in_row = 0;
        node->backoff_until_ms = 0;
    } else {
        node->jobs_failed++;
        worker->failures_in_row++;
        if (worker->failures_in_row >= S_BACKOFF_AFTER) {
            int doublings = worker->failures_in_row - S_BACKOFF_AFTER;
            double backoff = self->opts.backoff_base_ms * pow (2, doublings < 20 ? doublings : 20);
            if (backoff > S_BACKOFF_MAX_MS) {
                backoff = S_BACKOFF_MAX_MS;
            }
            node->backoff_until_ms = now_ms + (int64_t) backoff;
            zsys_warning ("broker: node %s failed %d jobs in a row; backed off for %.0f ms",
                          node->name, worker->failures_in_row, backoff);
        }
    }
    gq_matcher_node_changed (self->matcher, worker->node);
}

/* A worker is gone (silent, said goodbye, or replaced): its jobs go back to the queue. */
static void
s_worker_lost (gq_broker_t *self, s_worker_t *worker, const char *reason, bool exclude,
               int64_t now_ms)
{
    gq_node_t *node = gq_matcher_node (self->matcher, worker->node);
    zsys_info ("broker: node %s offline: %s", node->name, reason);
    /* Offline first: a node that is gone is no verdict on the jobs it ran (s_attempt_failed
       fails a job early only when every connected node that could run it failed it). */
    node->status = GQ_NODE_OFFLINE;
    gq_matcher_node_changed (self->matcher, worker->node);
    while (worker->running) {
        gq_job_t *job = worker->running;
        s_attempt_failed (self, job, "lost", reason, exclude, now_ms);
    }
    if (worker->routing_id) {
        zhashx_delete (self->by_connection, worker->key);
        zframe_destroy (&worker->routing_id);
    }
    node->status = GQ_NODE_OFFLINE;
    gq_matcher_node_changed (self->matcher, worker->node);
}

/* ---- Batches: recorded by the loop, committed by the writer -------------------------------- */

static void s_pending_destroy (gq_broker_t *self, s_pending_t **pending_p);

static s_pending_t *
s_pending_new (gq_broker_t *self)
{
    s_pending_t *pending = (s_pending_t *) calloc (1, sizeof *pending);
    if (!pending) {
        return NULL;
    }
    pending->batch = gq_batch_new ();
    pending->submits = zlist_new ();
    pending->replies = zlist_new ();
    pending->dead = zlist_new ();
    pending->idems = zlist_new ();
    if (!pending->batch || !pending->submits || !pending->replies || !pending->dead ||
        !pending->idems) {
        s_pending_destroy (self, &pending);
        return NULL;
    }
    zlist_autofree (pending->idems);
    return pending;
}

static void
s_submit_free (gq_broker_t *self, s_submit_t **submit_p)
{
    s_submit_t *submit = *submit_p;
    if (!submit) {
        return;
    }
    for (size_t i = 0; i < submit->count && !submit->covered; i++) {
        s_job_free (self, &submit->jobs[i]);
    }
    if (submit->watch) {
        submit->watch->dead = true;
        zchunk_destroy (&submit->watch->pending);
        s_watch_release (self, submit->watch);
    }
    free (submit->jobs);
    free (submit->ids);
    gq_msg_destroy (&submit->request);
    free (submit);
    *submit_p = NULL;
}

/* Frees a pending batch and everything waiting on it (at shutdown, or once it is settled). */
static void
s_pending_destroy (gq_broker_t *self, s_pending_t **pending_p)
{
    s_pending_t *pending = *pending_p;
    if (!pending) {
        return;
    }
    s_submit_t *submit;
    while (pending->submits && (submit = (s_submit_t *) zlist_pop (pending->submits))) {
        s_submit_free (self, &submit);
    }
    gq_msg_t *msg;
    while (pending->replies && (msg = (gq_msg_t *) zlist_pop (pending->replies))) {
        gq_msg_destroy (&msg);
    }
    gq_job_t *job;
    while (pending->dead && (job = (gq_job_t *) zlist_pop (pending->dead))) {
        s_job_free (self, &job);
    }
    zlist_destroy (&pending->submits);
    zlist_destroy (&pending->replies);
    zlist_destroy (&pending->dead);
    zlist_destroy (&pending->idems);
    gq_batch_destroy (&pending->batch);
    free (pending);
    *pending_p = NULL;
}

static bool
s_pending_empty (const s_pending_t *pending)
{
    return gq_batch_size (pending->batch) == 0 && zlist_size (pending->submits) == 0 &&
           zlist_size (pending->replies) == 0 && zlist_size (pending->dead) == 0 &&
           zlist_size (pending->idems) == 0 && gq_batch_status (pending->batch) == GQ_OK;
}

/* Sends a watch's pending FINISHED notices; frees it when no job points at it any more. */
static void
s_watch_flush (gq_broker_t *self, s_watch_t *watch)
{
    if (watch->pending) {
        zchunk_t *text = zchunk_new (NULL, zchunk_size (watch->pending) + 48);
        s_chunk_printf (text, "{\"req\":%lld,\"jobs\":[", (long long) watch->req);
        zchunk_extend (text, zchunk_data (watch->pending), zchunk_size (watch->pending));
        s_chunk_str (text, "]}");
        zchunk_destroy (&watch->pending);
        gq_msg_t *msg = gq_msg_new_raw (GQ_ROLE_CLIENT, "FINISHED",
                                        (const char *) zchunk_data (text), zchunk_size (text));
        zchunk_destroy (&text);
        gq_msg_set_routing_id (msg, watch->routing_id);
        gq_msg_send (&msg, self->router);
    }
    if (watch->refs == 0) {
        zframe_destroy (&watch->routing_id);
        free (watch);
    }
}

/* Records a next_job_id ahead of the ids handed out, once they come within half a block of
   the last one recorded. */
static void
s_id_reserve (gq_broker_t *self)
{
    if (self->next_id + S_ID_BLOCK / 2 <= self->id_recorded) {
        return;
    }
    self->id_recorded = self->next_id + S_ID_BLOCK;
    self->pending->id_mark = self->id_recorded;
    s_recorded (self, gq_batch_meta (self->pending->batch, "next_job_id", self->id_recorded));
}

/* A job of a submission whose batch failed: it leaves the queue, or its node (which is told to
   stop it), and memory (s_batch_back drops its writes from the pending batch). One that ended
   already stops counting; its burial frees it. */
static void
s_withdraw (gq_broker_t *self, gq_job_t *job, int64_t now_ms)
{
    if (gq_job_state_final (job->state)) {
        self->counts[job->state]--; /* it never was: it does not count */
        self->finished[job->state]--;
        return;
    }
    if (job->state == GQ_JOB_QUEUED) {
        gq_queue_remove (self->queue, job);
        self->counts[GQ_JOB_QUEUED]--;
    } else {
        s_worker_t *worker = self->workers[job->node];
        s_worker_send (self, worker, "CANCEL", json_pack ("{s:[I]}", "ids", (json_int_t) job->id));
        s_running_unlink (worker, job);
        gq_matcher_release (self->matcher, job->node, job, now_ms);
        self->counts[GQ_JOB_RUNNING]--;
    }
    if (job->owner) {
        char why[100];
        gq_guard_queued (self->guard, job->owner, -1, false, why, sizeof why);
    }
    zhashx_delete (self->jobs, S_KEY (job->id));
    s_job_free (self, &job);
}

/* A SUBMIT's batch is back: acknowledged (its jobs join memory if they had to wait, its watch
   starts talking), or refused with the store's reason and its jobs withdrawn. */
static void
s_submit_settle (gq_broker_t *self, s_submit_t *submit, bool committed, const char *errmsg)
{
    int64_t now_ms = gq_now_ms ();
    if (!committed) {
        self->rejected++;
        zsys_warning ("broker: refusing a submission of %zu jobs: the store failed",
                      submit->count);
        gq_msg_t *reply = gq_msg_error (submit->request, GQ_ESTORE,
                                        "the broker could not store the jobs (%s); nothing "
                                        "was accepted, retry later",
                                        errmsg);
        gq_msg_send (&reply, self->router);
        for (size_t i = 0; i < submit->count; i++) {
            gq_job_t *job = submit->jobs[i];
            if (job && submit->covered) {
                submit->jobs[i] = NULL;
                s_withdraw (self, job, now_ms);
            } else if (job && job->owner) {
                char why[100];
                gq_guard_queued (self->guard, job->owner, -1, false, why, sizeof why);
            }
        }
        s_submit_free (self, &submit);
        return;
    }
    zchunk_t *text = zchunk_new (NULL, 32 + 12 * submit->count);
    s_chunk_printf (text, "{\"req\":%lld,\"ids\":[", (long long) gq_msg_req (submit->request));
    for (size_t i = 0; i < submit->count; i++) {
        gq_job_t *job = submit->jobs[i];
        if (i) {
            zchunk_extend (text, ",", 1);
        }
        gq_chunk_int (text, submit->ids[i]);
        if (job && !submit->covered) {
            zhashx_insert (self->jobs, S_KEY (job->id), job);
            gq_queue_push (self->queue, job);
            self->counts[GQ_JOB_QUEUED]++;
            self->submitted++;
            if (submit->watch) {
                s_watch_add (job, submit->watch);
            }
            submit->jobs[i] = NULL;
        }
    }
    s_chunk_str (text, "]}");
    gq_msg_t *reply = gq_msg_new_raw (GQ_ROLE_CLIENT, "SUBMIT", (const char *) zchunk_data (text),
                                      zchunk_size (text));
    zchunk_destroy (&text);
    gq_msg_set_routing_id (reply, gq_msg_routing_id (submit->request));
    gq_msg_send (&reply, self->router);
    s_watch_t *watch = submit->watch;
    if (watch) {
        submit->watch = NULL;
        watch->held = false;
        watch->refs--; /* the submission's own reference */
        s_watch_flush (self, watch);
    }
    submit->covered = true; /* nothing left to free but the submission */
    s_submit_free (self, &submit);
}

/* A batch is back from the writer: what waited on it is settled, then it is freed. */
static void
s_batch_back (gq_broker_t *self, gq_batch_t *batch)
{
    s_pending_t *done = (s_pending_t *) zlist_pop (self->inflight);
    if (!done || done->batch != batch) {
        zsys_error ("broker: the writer returned a batch out of order; stopping");
        zsys_interrupted = 1;
        return;
    }
    bool committed = gq_batch_status (batch) == GQ_OK;
    if (!committed) {
        zsys_error ("broker: a batch of %zu writes was not committed: %s",
                    gq_batch_size (batch), gq_batch_errmsg (batch));
    }
    gq_metrics_observe (self->metrics, GQ_HIST_COMMIT_BATCH, (double) gq_batch_size (batch));
    if (done->id_mark) {
        if (committed && done->id_mark > self->id_committed) {
            self->id_committed = done->id_mark;
        } else if (!committed) {
            self->id_recorded = self->id_committed; /* recorded again by the next submission */
        }
    }
    int64_t purged[GQ_JOB_STATES];
    if (gq_batch_purged (batch, purged) > 0) {
        for (int state = GQ_JOB_DONE; state < GQ_JOB_STATES; state++) {
            self->counts[state] -= purged[state];
        }
        zsys_info ("broker: retention: purged %d finished jobs", gq_batch_purged (batch, NULL));
    }
    if (!committed && done->id_first) {
        gq_batch_forget (self->pending->batch, done->id_first, done->id_last);
    }
    char *idem;
    while ((idem = (char *) zlist_pop (done->idems))) {
        zhashx_delete (self->idem_pending, idem);
        free (idem);
    }
    s_submit_t *submit;
    while ((submit = (s_submit_t *) zlist_pop (done->submits))) {
        s_submit_settle (self, submit, committed, gq_batch_errmsg (batch));
    }
    gq_msg_t *reply;
    while ((reply = (gq_msg_t *) zlist_pop (done->replies))) {
        gq_msg_send (&reply, self->router);
    }
    s_pending_destroy (self, &done);
}

/* Hands the pending batch to the writer and starts a new one. */
static bool
s_hand_over (gq_broker_t *self)
{
    s_pending_t *next = s_pending_new (self);
    if (!next) {
        return false; /* out of memory: keep recording into this one */
    }
    if (gq_writer_send (self->writer, self->pending->batch)) {
        zsys_error ("broker: cannot reach the store's writer thread");
        s_pending_destroy (self, &next);
        return false;
    }
    zlist_append (self->inflight, self->pending);
    self->pending = next;
    return true;
}

static int s_on_lazy (zloop_t *loop, int timer_id, void *arg);

/* Commits the pending batch in the loop itself, on the loop's own connection, and settles it.
   For a small batch when nothing else waits: handing it to the writer thread and hearing back
   costs two thread wake-ups, more than the loop saves by not waiting for the fsync. */
static void
s_commit_here (gq_broker_t *self)
{
    s_pending_t *next = s_pending_new (self);
    if (!next) {
        return; /* out of memory: keep recording into this one */
    }
    s_pending_t *pending = self->pending;
    self->pending = next;
    zlist_append (self->inflight, pending); /* the writer is idle: it is the only one */
    gq_batch_apply (pending->batch, self->store);
    s_batch_back (self, pending->batch);
}

/* Commits the pending batch when the writer is idle and the batch is due: something waits on
   it, or it is big, or it has waited S_LAZY_MS (then a timer brings us back). A small batch with
   no message waiting is committed here; others go to the writer thread, one at a time: while it
   commits, the next one grows (group commit). Returns true when it committed here (its jobs
   may have joined the queue). */
static bool
s_writer_kick (gq_broker_t *self)
{
    s_pending_t *pending = self->pending;
    if (gq_writer_busy (self->writer) || s_pending_empty (pending)) {
        return false;
    }
    bool due = zlist_size (pending->submits) || zlist_size (pending->replies) ||
               gq_batch_size (pending->batch) >= S_EAGER_WRITES || !pending->opened_us ||
               gq_mono_us () - pending->opened_us >= S_LAZY_MS * 1000;
    if (!due) {
        if (self->lazy_timer < 0) {
            self->lazy_timer = zloop_timer (self->loop, S_LAZY_MS, 1, s_on_lazy, self);
        }
        return false;
    }
    if (gq_batch_size (pending->batch) <= S_INLINE_WRITES &&
        !(zsock_events (self->router) & ZMQ_POLLIN)) {
        s_commit_here (self);
        return true;
    }
    s_hand_over (self);
    return false;
}

/* Makes every write recorded so far visible to reads of self->store: waits for the writer to
   commit it all. Blocks the loop; only for questions about jobs no longer in memory. */
static void
s_store_sync (gq_broker_t *self)
{
    while (gq_writer_busy (self->writer)) {
        gq_batch_t *batch = gq_writer_recv (self->writer);
        if (!batch) {
            return;
        }
        s_batch_back (self, batch);
    }
    if (!s_pending_empty (self->pending) && s_hand_over (self)) {
        gq_batch_t *batch = gq_writer_recv (self->writer);
        if (batch) {
            s_batch_back (self, batch);
        }
    }
}

/* The job of that id in memory; when it is not there, looked for again once the writer has
   committed all that was recorded (it may have ended, or joined memory, in a batch not yet
   back), so that a NULL means the store has the last word on it. */
static gq_job_t *
s_job_find (gq_broker_t *self, int64_t id)
{
    gq_job_t *job = s_job_lookup (self, id);
    if (!job) {
        s_store_sync (self);
        job = s_job_lookup (self, id);
    }
    return job;
}

/* ---- Client commands ----------------------------------------------------------------------- */

/* A watch for request's client; brief from the request's "brief" (validated by the caller). */
static s_watch_t *
s_watch_new (gq_msg_t *request)
{
    s_watch_t *watch = (s_watch_t *) calloc (1, sizeof *watch);
    if (watch) {
        watch->routing_id = zframe_dup (gq_msg_routing_id (request));
        watch->req = gq_msg_req (request);
        watch->brief = json_is_true (json_object_get (gq_msg_body (request), "brief"));
    }
    return watch;
}

/* Makes request's client wait for ids: those ended come at once (from the store), the others
   when they end, unknown ones in "missing". */
static void
s_watch_ids (gq_broker_t *self, gq_msg_t *request, const int64_t *ids, size_t count)
{
    s_watch_t *watch = s_watch_new (request);
    if (!watch) {
        s_reject (self, request, GQ_ENOMEM, "out of memory");
        return;
    }
    watch->refs = 1; /* held by this function while it works */
    json_t *missing = json_array ();
    for (size_t i = 0; i < count; i++) {
        gq_job_t *job = s_job_find (self, ids[i]);
        if (job) {
            s_watch_add (job, watch);
            continue;
        }
        json_t *stored = gq_store_job_json (self->store, ids[i], true);
        if (stored) {
            json_object_del (stored, "attempts_detail");
            s_watch_notify (self, watch, stored);
            json_decref (stored);
        } else {
            json_array_append_new (missing, json_integer (ids[i]));
        }
    }
    if (json_array_size (missing)) {
        s_reply (self, gq_msg_reply (request, "FINISHED", json_pack ("{s:[], s:o}", "jobs",
                                                                     "missing", missing)));
    } else {
        json_decref (missing);
    }
    s_watch_release (self, watch);
}

static gq_job_t *
s_job_from_spec (gq_broker_t *self, const gq_jobspec_t *spec, gq_msg_t *request, char *why,
                 size_t whylen)
{
    int kind = gq_matcher_kind_id (self->matcher, spec->kind, true);
    if (kind < 0) {
        snprintf (why, whylen, "too many distinct kinds (at most %d)", GQ_MAX_KINDS);
        return NULL;
    }
    int64_t model = spec->model ? gq_matcher_model_id (self->matcher, spec->model, true) : 0;
    if (model < 0) {
        snprintf (why, whylen, "cannot register model \"%s\"", spec->model);
        return NULL;
    }
    gq_job_t *job = (gq_job_t *) calloc (1, sizeof *job);
    if (!job) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    job->payload = spec->payload ? json_dumps (spec->payload, JSON_COMPACT | JSON_ENCODE_ANY)
                                 : strdup ("{}");
    if (!job->payload) {
        free (job);
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    job->payload_len = (uint32_t) strlen (job->payload);
    job->kind_id = (uint16_t) kind;
    job->model_id = (uint32_t) model;
    job->min_vram_mb = (int32_t) spec->min_vram_mb;
    job->priority = (uint8_t) spec->priority;
    job->timeout_ms = (uint32_t) (spec->timeout_ms > UINT32_MAX ? UINT32_MAX : spec->timeout_ms);
    job->max_attempts = (uint8_t) spec->max_attempts;
    job->node = -1;
    job->state = GQ_JOB_QUEUED;
    if (spec->gpu_pattern || spec->max_price >= 0 || spec->min_tflops > 0) {
        job->constraints = (gq_constraints_t *) calloc (1, sizeof *job->constraints);
        if (!job->constraints) {
            s_job_free (self, &job);
            snprintf (why, whylen, "out of memory");
            return NULL;
        }
        snprintf (job->constraints->gpu_pattern, GQ_PATTERN_MAX, "%s",
                  spec->gpu_pattern ? spec->gpu_pattern : "");
        job->constraints->max_price = spec->max_price;
        job->constraints->min_tflops = spec->min_tflops;
    }
    if (spec->blob_first >= 0) {
        zlist_t *blobs = zlist_new ();
        for (int i = 0; i < spec->blob_count; i++) {
            zlist_append (blobs, zframe_dup (gq_msg_blob (request, spec->blob_first + i)));
        }
        job->blobs = blobs;
    }
    return job;
}

static void
s_cmd_submit (gq_broker_t *self, gq_msg_t **request_p)
{
    gq_msg_t *request = *request_p;
    json_t *body = gq_msg_body (request);
    json_t *jobs = json_object_get (body, "jobs");
    char why[300];
    bool submit_watch;
    if (!json_is_array (jobs) || json_array_size (jobs) == 0 ||
        json_array_size (jobs) > GQ_MAX_BATCH_JOBS) {
        s_reject (self, request, GQ_EINVAL, "\"jobs\" must be an array of 1..10000 jobs");
        return;
    }
    bool brief;
    if (gq_json_bool (body, "watch", false, &submit_watch, why, sizeof why) ||
        gq_json_bool (body, "brief", false, &brief, why, sizeof why)) {
        s_reject (self, request, GQ_EINVAL, why);
        return;
    }
    size_t count = json_array_size (jobs);
    /* Validate the whole batch first: a batch is all or nothing. The specs borrow from the
       request's JSON, which lives until the batch is settled. */
    gq_jobspec_t *specs = (gq_jobspec_t *) malloc (count * sizeof *specs);
    if (!specs) {
        s_reject (self, request, GQ_ENOMEM, "out of memory");
        return;
    }
    /* Kinds are interned for good: count the batch's new ones before interning any, so that a
       refused batch uses up nothing and one client cannot fill the table. */
    const char *new_kinds[GQ_MAX_KINDS];
    size_t n_new_kinds = 0;
    size_t new_models = 0; /* unknown model names in the batch (repeats counted: a bound) */
    for (size_t i = 0; i < count; i++) {
        int rc = gq_jobspec_parse (json_array_get (jobs, i), &specs[i], why, sizeof why);
        if (rc == GQ_OK && specs[i].blob_first >= 0 &&
            (size_t) (specs[i].blob_first + specs[i].blob_count) > gq_msg_blobs (request)) {
            snprintf (why, sizeof why, "\"blobs\" names frames the message does not have");
            rc = GQ_EINVAL;
        }
        if (rc == GQ_OK && gq_matcher_kind_id (self->matcher, specs[i].kind, false) < 0) {
            bool seen = false;
            for (size_t k = 0; k < n_new_kinds && !seen; k++) {
                seen = streq (new_kinds[k], specs[i].kind);
            }
            if (!seen && gq_matcher_kinds (self->matcher) + n_new_kinds >= GQ_MAX_KINDS) {
                snprintf (why, sizeof why, "kind \"%s\": this broker knows %d kinds already",
                          specs[i].kind, GQ_MAX_KINDS);
                rc = GQ_EINVAL;
            } else if (!seen) {
                new_kinds[n_new_kinds++] = specs[i].kind;
            }
        }
        if (rc == GQ_OK && specs[i].model &&
            gq_matcher_model_id (self->matcher, specs[i].model, false) < 0 &&
            gq_matcher_model_names (self->matcher) + ++new_models > GQ_MAX_MODEL_NAMES) {
            snprintf (why, sizeof why, "model \"%s\": this broker knows %d model names already",
                      specs[i].model, GQ_MAX_MODEL_NAMES);
            rc = GQ_EINVAL;
        }
        if (rc) {
            self->rejected++;
            gq_msg_t *reply = gq_msg_error (request, GQ_EINVAL, "jobs[%zu]: %s", i, why);
            json_object_set_new (gq_msg_body (reply), "index", json_integer ((json_int_t) i));
            s_reply (self, reply);
            free (specs);
            return;
        }
    }
    int64_t retry_after_ms = 0;
    if (gq_guard_take (self->guard, request, count, gq_mono_us (), &retry_after_ms)) {
        free (specs);
        self->rejected++;
        gq_msg_t *reply = gq_msg_error (request, GQ_ERATE,
                                        "too many submissions; retry in %lld ms",
                                        (long long) retry_after_ms);
        json_object_set_new (gq_msg_body (reply), "retry_after_ms",
                             json_integer ((json_int_t) retry_after_ms));
        s_reply (self, reply);
        return;
    }
    uint32_t owner = gq_guard_owner (self->guard, gq_msg_user_id (request));
    int capped = gq_guard_queued (self->guard, owner, (int64_t) count, true, why, sizeof why);
    if (capped) {
        free (specs);
        self->rejected++;
        gq_msg_t *reply = gq_msg_error (request, capped, "%s", why);
        if (capped == GQ_ERATE) {
            json_object_set_new (gq_msg_body (reply), "retry_after_ms", json_integer (1000));
        }
        s_reply (self, reply);
        return;
    }
    s_submit_t *submit = (s_submit_t *) calloc (1, sizeof *submit);
    if (submit) {
        submit->owner = owner;
        submit->jobs = (gq_job_t **) calloc (count, sizeof *submit->jobs);
        submit->ids = (int64_t *) calloc (count, sizeof *submit->ids);
    }
    if (!submit || !submit->jobs || !submit->ids) {
        if (submit) {
            free (submit->jobs);
            free (submit->ids);
            free (submit);
        }
        free (specs);
        gq_guard_queued (self->guard, owner, -(int64_t) count, false, why, sizeof why);
        s_reject (self, request, GQ_ENOMEM, "out of memory");
        return;
    }
    submit->count = count;
    submit->request = request;
    *request_p = NULL;
    int64_t now_ms = gq_now_ms ();
    /* Every job first (only allocation or an idem lookup can fail now: the batch was
       validated), so that a failure leaves nothing behind. An idem key names a job not yet
       committed (idem_pending) or a stored one. */
    int rc = GQ_OK;
    size_t repeats = 0;
    for (size_t i = 0; i < count && rc == GQ_OK; i++) {
        gq_jobspec_t *spec = &specs[i];
        if (spec->idem) {
            void *hit = zhashx_lookup (self->idem_pending, spec->idem);
            int64_t existing = (int64_t) (intptr_t) hit;
            int found = hit ? 1 : gq_store_job_by_idem (self->store, spec->idem, &existing);
            if (found < 0) {
                rc = GQ_ESTORE;
                break;
            }
            if (found) { /* idempotent repeat: the first job's id, nothing new */
                submit->ids[i] = existing;
                repeats++;
                continue;
            }
        }
        gq_job_t *job = s_job_from_spec (self, spec, request, why, sizeof why);
        if (!job) {
            rc = GQ_ENOMEM;
            break;
        }
        job->id = self->next_id++;
        job->submitted_ms = now_ms;
        job->owner = owner;
        submit->jobs[i] = job;
        submit->ids[i] = job->id;
        if (spec->idem &&
            zhashx_insert (self->idem_pending, spec->idem, (void *) (intptr_t) job->id)) {
            rc = GQ_ENOMEM;
        }
    }
    if (rc == GQ_OK && submit_watch) {
        submit->watch = s_watch_new (submit->request);
        if (submit->watch) {
            submit->watch->held = true;
            submit->watch->refs = 1; /* the submission's, until it is acknowledged */
        } else {
            rc = GQ_ENOMEM;
        }
    }
    if (rc) {
        for (size_t i = 0; i < count; i++) {
            if (submit->jobs[i] && specs[i].idem) {
                zhashx_delete (self->idem_pending, specs[i].idem);
            }
        }
        gq_guard_queued (self->guard, owner, -(int64_t) count, false, why, sizeof why);
        self->rejected++;
        gq_msg_t *reply =
            rc == GQ_ESTORE
                ? gq_msg_error (submit->request, GQ_ESTORE,
                                "the broker could not read its store (%s); nothing was "
                                "accepted, retry later",
                                gq_store_errmsg (self->store))
                : gq_msg_error (submit->request, GQ_ENOMEM, "out of memory");
        s_reply (self, reply);
        s_submit_free (self, &submit);
        free (specs);
        return;
    }
    if (repeats) {
        gq_guard_queued (self->guard, owner, -(int64_t) repeats, false, why, sizeof why);
    }
    /* A client watching an idem repeat hears of that job too: now if it ended already. */
    for (size_t i = 0; i < count && submit->watch && repeats; i++) {
        if (submit->jobs[i]) {
            continue;
        }
        gq_job_t *job = s_job_find (self, submit->ids[i]);
        if (job) {
            s_watch_add (job, submit->watch);
            continue;
        }
        json_t *stored = gq_store_job_json (self->store, submit->ids[i], true);
        if (stored) {
            json_object_del (stored, "attempts_detail");
            s_watch_notify (self, submit->watch, stored);
            json_decref (stored);
        }
    }
    /* The writes; jobs whose ids are covered join memory and the queue now (they may be
       placed at the end of this turn, before their batch commits). */
    s_pending_t *pending = self->pending;
    submit->covered = self->next_id <= self->id_committed;
    s_id_reserve (self);
    for (size_t i = 0; i < count; i++) {
        gq_job_t *job = submit->jobs[i];
        if (!job) {
            continue;
        }
        if (!pending->id_first) {
            pending->id_first = job->id;
        }
        pending->id_last = job->id;
        s_recorded (self, gq_batch_job_insert (
                              pending->batch, job, gq_matcher_kind_name (self->matcher, job->kind_id),
                              s_model_name (self, job), specs[i].idem, gq_msg_user_id (request)));
        zlist_t *blobs = (zlist_t *) job->blobs;
        int idx = 0;
        for (zframe_t *frame = blobs ? (zframe_t *) zlist_first (blobs) : NULL; frame;
             frame = (zframe_t *) zlist_next (blobs), idx++) {
            s_recorded (self, gq_batch_blob_insert (pending->batch, job->id, idx,
                                                    zframe_data (frame), zframe_size (frame)));
        }
        if (specs[i].idem && zlist_append (pending->idems, (void *) specs[i].idem)) {
            /* Out of memory: not kept as pending (the unique index still guards the key). */
            zhashx_delete (self->idem_pending, specs[i].idem);
        }
        if (submit->covered) {
            zhashx_insert (self->jobs, S_KEY (job->id), job);
            gq_queue_push (self->queue, job);
            self->counts[GQ_JOB_QUEUED]++;
            self->submitted++;
            if (submit->watch) {
                s_watch_add (job, submit->watch);
            }
        }
    }
    free (specs);
    zlist_append (pending->submits, submit);
    s_recorded (self, GQ_OK);
}

/* The request's "ids" (malloc'd), or false after refusing the request. */
static bool
s_request_ids (gq_broker_t *self, gq_msg_t *request, int64_t **ids, size_t *count)
{
    char why[200];
    if (gq_json_ids (gq_msg_body (request), "ids", ids, count, why, sizeof why)) {
        s_reject (self, request, GQ_EINVAL, why);
        return false;
    }
    return true;
}

static void
s_cmd_status (gq_broker_t *self, gq_msg_t *request)
{
    int64_t *ids;
    size_t count;
    if (!s_request_ids (self, request, &ids, &count)) {
        return;
    }
    json_t *jobs = json_array ();
    json_t *missing = json_array ();
    for (size_t i = 0; i < count; i++) {
        gq_job_t *job = s_job_find (self, ids[i]);
        json_t *json = job ? s_job_json (self, job, false)
                           : gq_store_job_json (self->store, ids[i], false);
        if (json) {
            json_array_append_new (jobs, json);
        } else {
            json_array_append_new (missing, json_integer (ids[i]));
        }
    }
    free (ids);
    s_reply (self, gq_msg_reply (request, "STATUS",
                                 json_pack ("{s:o, s:o}", "jobs", jobs, "missing", missing)));
}

static void
s_cmd_wait (gq_broker_t *self, gq_msg_t *request)
{
    int64_t *ids;
    size_t count;
    char why[200];
    bool brief;
    if (gq_json_bool (gq_msg_body (request), "brief", false, &brief, why, sizeof why)) {
        s_reject (self, request, GQ_EINVAL, why);
        return;
    }
    if (!s_request_ids (self, request, &ids, &count)) {
        return;
    }
    s_watch_ids (self, request, ids, count);
    free (ids);
}

static void
s_cmd_result (gq_broker_t *self, gq_msg_t *request)
{
    int64_t id;
    char why[200];
    if (gq_json_int (gq_msg_body (request), "id", 1, INT64_MAX, 0, &id, why, sizeof why) ||
        id == 0) {
        s_reject (self, request, GQ_EINVAL, id == 0 ? "\"id\" is required" : why);
        return;
    }
    gq_job_t *job = s_job_find (self, id);
    json_t *json = job ? s_job_json (self, job, true) : gq_store_job_json (self->store, id, true);
    if (!json) {
        s_reply (self, gq_msg_error (request, GQ_ENOTFOUND, "no job %lld", (long long) id));
        return;
    }
    gq_msg_t *reply = gq_msg_reply (request, "RESULT", json_pack ("{s:o}", "job", json));
    if (!job) {
        void **data;
        size_t *sizes;
        int n = gq_store_job_blobs (self->store, id, "out", &data, &sizes);
        for (int i = 0; i < n; i++) {
            zframe_t *frame = zframe_new (data[i], sizes[i]);
            gq_msg_add_blob (reply, &frame);
        }
        if (n > 0) {
            gq_store_blobs_free (data, sizes, n);
        }
    }
    s_reply (self, reply);
}

static void
s_cmd_cancel (gq_broker_t *self, gq_msg_t *request)
{
    int64_t *ids;
    size_t count;
    if (!s_request_ids (self, request, &ids, &count)) {
        return;
    }
    json_t *jobs = json_array ();
    json_t *missing = json_array ();
    int64_t now_ms = gq_now_ms ();
    for (size_t i = 0; i < count; i++) {
        gq_job_t *job = s_job_find (self, ids[i]);
        if (job) {
            int32_t node = job->node;
            if (job->state == GQ_JOB_RUNNING) {
                /* The slot is free on the broker at once; the worker kills the job. */
                s_worker_send (self, self->workers[node], "CANCEL",
                               json_pack ("{s:[I]}", "ids", (json_int_t) job->id));
                s_attempt_end (self, job, "cancelled", "cancelled by a client", now_ms);
            }
            s_job_end (self, job, GQ_JOB_CANCELLED, NULL, "cancelled by a client", node, now_ms);
            json_array_append_new (jobs, json_pack ("{s:I, s:s}", "id", (json_int_t) ids[i],
                                                    "state", "cancelled"));
            continue;
        }
        json_t *stored = gq_store_job_json (self->store, ids[i], false);
        if (stored) {
            json_array_append_new (jobs, json_pack ("{s:I, s:O}", "id", (json_int_t) ids[i],
                                                    "state", json_object_get (stored, "state")));
            json_decref (stored);
        } else {
            json_array_append_new (missing, json_integer (ids[i]));
        }
    }
    free (ids);
    s_reply (self, gq_msg_reply (request, "CANCEL",
                                 json_pack ("{s:o, s:o}", "jobs", jobs, "missing", missing)));
}

static void
s_cmd_jobs (gq_broker_t *self, gq_msg_t *request)
{
    json_t *body = gq_msg_body (request);
    const char *state_name;
    int64_t limit;
    char why[200];
    if (gq_json_str (body, "state", 16, NULL, &state_name, why, sizeof why) ||
        gq_json_int (body, "limit", 1, GQ_MAX_IDS, 100, &limit, why, sizeof why)) {
        s_reject (self, request, GQ_EINVAL, why);
        return;
    }
    int state = state_name ? gq_job_state_parse (state_name) : -1;
    if (state_name && state < 0) {
        s_reject (self, request, GQ_EINVAL,
                  "\"state\" must be queued, running, done, failed or cancelled");
        return;
    }
    json_t *jobs = json_array ();
    if (state == GQ_JOB_QUEUED) {
        for (gq_job_t *job = gq_queue_first (self->queue);
             job && json_array_size (jobs) < (size_t) limit; job = gq_queue_next (self->queue, job)) {
            json_array_append_new (jobs, s_job_json (self, job, false));
        }
    } else if (state == GQ_JOB_RUNNING) {
        for (size_t w = 0; w < self->workers_size && json_array_size (jobs) < (size_t) limit; w++) {
            for (gq_job_t *job = self->workers[w] ? self->workers[w]->running : NULL;
                 job && json_array_size (jobs) < (size_t) limit; job = job->qnext) {
                json_array_append_new (jobs, s_job_json (self, job, false));
            }
        }
    } else {
        /* Stored rows, newest first; jobs still in memory show their live state. */
        s_store_sync (self);
        json_t *stored = gq_store_jobs_json (self->store, state, (size_t) limit);
        size_t i;
        json_t *item;
        json_array_foreach (stored, i, item) {
            gq_job_t *job = s_job_lookup (
                self, (int64_t) json_integer_value (json_object_get (item, "id")));
            json_array_append_new (jobs, job ? s_job_json (self, job, false) : json_incref (item));
        }
        json_decref (stored);
    }
    s_reply (self, gq_msg_reply (request, "JOBS", json_pack ("{s:o}", "jobs", jobs)));
}

static json_t *
s_node_json (gq_broker_t *self, s_worker_t *worker)
{
    gq_node_t *node = gq_matcher_node (self->matcher, worker->node);
    char seen[GQ_TIME_BUF], backoff[GQ_TIME_BUF];
    json_t *spec = worker->spec;
    json_t *json = json_pack (
        "{s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:i, s:i, s:O, s:O, s:O, s:f, s:s, s:s, s:I, s:I, "
        "s:f, s:s?}",
        "name", node->name, "gpu_model", node->gpu_model, "backend",
        spec ? json_string_value (json_object_get (spec, "backend")) ?: "cpu" : "cpu",
        "vram_total_mb", (json_int_t) node->vram_total_mb, "vram_free_mb",
        (json_int_t) node->vram_free_mb, "tflops", (double) node->tflops, "price_per_hour",
        (double) node->price_per_hour, "slots", node->slots, "running", node->running, "kinds",
        spec && json_object_get (spec, "kinds") ? json_object_get (spec, "kinds") : json_null (),
        "models_available",
        spec && json_object_get (spec, "models_available")
            ? json_object_get (spec, "models_available")
            : json_null (),
        "models_loaded", worker->models_loaded ? worker->models_loaded : json_null (), "rtt_ms",
        (double) node->rtt_ms, "status", gq_node_status_name (node->status), "last_seen",
        gq_format_time (worker->last_seen_ms, seen), "jobs_ok", (json_int_t) node->jobs_ok,
        "jobs_failed", (json_int_t) node->jobs_failed, "reliability", (double) node->reliability,
        "backoff_until",
        node->backoff_until_ms > gq_now_ms () ? gq_format_time (node->backoff_until_ms, backoff)
                                              : NULL);
    return json;
}

static void
s_cmd_nodes (gq_broker_t *self, gq_msg_t *request)
{
    json_t *nodes = json_array ();
    for (size_t w = 0; w < self->workers_size; w++) {
        if (self->workers[w] && self->workers[w]->spec) {
            json_array_append_new (nodes, s_node_json (self, self->workers[w]));
        }
    }
    s_reply (self, gq_msg_reply (request, "NODES", json_pack ("{s:o}", "nodes", nodes)));
}

static void
s_cmd_stats (gq_broker_t *self, gq_msg_t *request)
{
    int64_t by_status[4] = {0, 0, 0, 0};
    for (size_t w = 0; w < self->workers_size; w++) {
        if (self->workers[w] && self->workers[w]->spec) {
            by_status[gq_matcher_node (self->matcher, (int32_t) w)->status & 3]++;
        }
    }
    json_t *by_priority = json_array ();
    for (int p = 0; p < 10; p++) {
        json_array_append_new (by_priority,
                               json_integer ((json_int_t) gq_queue_size_priority (self->queue, p)));
    }
    int64_t oldest = gq_queue_oldest_ms (self->queue);
    int64_t now_ms = gq_now_ms ();
    json_t *body = json_pack (
        "{s:{s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I}, s:{s:o, s:I}, s:I, s:I}", "jobs",
        "queued", (json_int_t) self->counts[GQ_JOB_QUEUED], "running",
        (json_int_t) self->counts[GQ_JOB_RUNNING], "done", (json_int_t) self->counts[GQ_JOB_DONE],
        "failed", (json_int_t) self->counts[GQ_JOB_FAILED], "cancelled",
        (json_int_t) self->counts[GQ_JOB_CANCELLED], "nodes", "online",
        (json_int_t) by_status[GQ_NODE_ONLINE], "busy", (json_int_t) by_status[GQ_NODE_BUSY],
        "draining", (json_int_t) by_status[GQ_NODE_DRAINING], "offline",
        (json_int_t) by_status[GQ_NODE_OFFLINE], "queue", "by_priority", by_priority,
        "oldest_wait_ms", (json_int_t) (oldest ? now_ms - oldest : 0), "rejected",
        (json_int_t) self->rejected, "uptime_ms", (json_int_t) (now_ms - self->started_ms));
    s_reply (self, gq_msg_reply (request, "STATS", body));
}

/* Rebuilds a matcher-shaped job from a stored row, for explaining finished jobs. */
static int
s_job_from_json (gq_broker_t *self, json_t *json, gq_job_t *job, gq_constraints_t *constraints)
{
    memset (job, 0, sizeof *job);
    job->id = (int64_t) json_integer_value (json_object_get (json, "id"));
    const char *kind = json_string_value (json_object_get (json, "kind"));
    const char *model = json_string_value (json_object_get (json, "model"));
    int kind_id = kind ? gq_matcher_kind_id (self->matcher, kind, true) : -1;
    int64_t model_id = model ? gq_matcher_model_id (self->matcher, model, true) : 0;
    if (kind_id < 0 || model_id < 0) {
        return GQ_EINVAL;
    }
    job->kind_id = (uint16_t) kind_id;
    job->model_id = (uint32_t) model_id;
    job->min_vram_mb = (int32_t) json_integer_value (json_object_get (json, "min_vram_mb"));
    job->priority = (uint8_t) json_integer_value (json_object_get (json, "priority"));
    job->node = -1;
    json_t *c = json_object_get (json, "constraints");
    if (c) {
        memset (constraints, 0, sizeof *constraints);
        snprintf (constraints->gpu_pattern, GQ_PATTERN_MAX, "%s",
                  json_string_value (json_object_get (c, "gpu")) ?: "");
        json_t *price = json_object_get (c, "max_price");
        constraints->max_price = price ? json_number_value (price) : -1;
        constraints->min_tflops = json_number_value (json_object_get (c, "min_tflops"));
        job->constraints = constraints;
    }
    return GQ_OK;
}

static void
s_cmd_explain (gq_broker_t *self, gq_msg_t *request)
{
    int64_t id;
    char why[200];
    if (gq_json_int (gq_msg_body (request), "id", 1, INT64_MAX, 0, &id, why, sizeof why) ||
        id == 0) {
        s_reject (self, request, GQ_EINVAL, id == 0 ? "\"id\" is required" : why);
        return;
    }
    gq_job_t *job = s_job_find (self, id);
    gq_job_t copy;
    gq_constraints_t constraints;
    json_t *stored = NULL;
    if (!job) {
        stored = gq_store_job_json (self->store, id, false);
        if (!stored || s_job_from_json (self, stored, &copy, &constraints)) {
            json_decref (stored);
            s_reply (self, gq_msg_error (request, GQ_ENOTFOUND, "no job %lld", (long long) id));
            return;
        }
        job = &copy;
    }
    int64_t now_ms = gq_now_ms ();
    size_t total = gq_matcher_nodes (self->matcher);
    gq_explain_row_t *rows = (gq_explain_row_t *) calloc (total ? total : 1, sizeof *rows);
    if (!rows) {
        json_decref (stored);
        s_reject (self, request, GQ_ENOMEM, "out of memory");
        return;
    }
    size_t n = gq_matcher_explain (self->matcher, job, now_ms, rows, total);
    json_t *nodes = json_array ();
    for (size_t i = 0; i < n && i < total; i++) {
        json_t *row = json_pack ("{s:s, s:s, s:s}", "node",
                                 gq_matcher_node (self->matcher, rows[i].node)->name, "verdict",
                                 gq_filter_name (rows[i].verdict), "reason", rows[i].reason);
        if (rows[i].verdict == GQ_FILTER_OK) {
            gq_score_t *s = &rows[i].score;
            json_object_set_new (row, "score",
                                 json_pack ("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "fit",
                                            s->fit, "compute", s->compute, "cost", s->cost,
                                            "warm", s->warm, "load", s->load, "latency",
                                            s->latency, "reliability", s->reliability, "total",
                                            s->total));
        }
        json_array_append_new (nodes, row);
    }
    free (rows);
    int32_t best = gq_matcher_pick (self->matcher, job, now_ms);
    char hint[300] = "";
    if (best < 0) {
        gq_matcher_hint (self->matcher, job, now_ms, hint, sizeof hint);
    }
    const char *state = stored ? json_string_value (json_object_get (stored, "state"))
                               : gq_job_state_name (job->state);
    const char *ran_on = stored ? json_string_value (json_object_get (stored, "node"))
                                : s_node_name (self, job->node);
    json_t *body = json_pack ("{s:I, s:s, s:s?, s:s?, s:o, s:s}", "id", (json_int_t) id, "state",
                              state, "ran_on", ran_on, "node",
                              best >= 0 ? s_node_name (self, best) : NULL, "nodes", nodes, "hint",
                              hint);
    json_decref (stored);
    s_reply (self, gq_msg_reply (request, "EXPLAIN", body));
}

/* ---- Worker commands ----------------------------------------------------------------------- */

/* Interns a JSON array of model names (or {"name"} objects) into ids. */
static size_t
s_model_ids (gq_broker_t *self, json_t *models, uint32_t *ids, size_t max)
{
    size_t n = 0;
    size_t i;
    json_t *item;
    json_array_foreach (models, i, item) {
        const char *name =
            json_is_object (item) ? json_string_value (json_object_get (item, "name"))
                                  : json_string_value (item);
        int64_t id = name ? gq_matcher_model_id (self->matcher, name, true) : -1;
        if (id > 0 && n < max) {
            ids[n++] = (uint32_t) id;
        }
    }
    return n;
}

static void
s_worker_models (gq_broker_t *self, s_worker_t *worker, json_t *available, json_t *loaded)
{
    uint32_t avail_ids[GQ_MAX_MODELS], loaded_ids[GQ_MAX_MODELS];
    size_t n_avail = available ? s_model_ids (self, available, avail_ids, GQ_MAX_MODELS) : 0;
    size_t n_loaded = loaded ? s_model_ids (self, loaded, loaded_ids, GQ_MAX_MODELS) : 0;
    if (!available) {
        /* A heartbeat reports only what is loaded: keep what is available. */
        gq_node_t *node = gq_matcher_node (self->matcher, worker->node);
        n_avail = node->n_available;
        if (n_avail) {
            memcpy (avail_ids, node->models_available, n_avail * sizeof avail_ids[0]);
        }
    }
    gq_matcher_node_set_models (self->matcher, worker->node, avail_ids, n_avail, loaded_ids,
                                n_loaded);
    if (loaded) {
        json_decref (worker->models_loaded);
        worker->models_loaded = json_incref (loaded);
    }
}

static void
s_cmd_ready (gq_broker_t *self, gq_msg_t *request, int64_t now_ms, int64_t now_us)
{
    json_t *body = gq_msg_body (request);
    gq_nodespec_t spec;
    char why[300];
    if (gq_nodespec_parse (json_object_get (body, "spec"), &spec, why, sizeof why)) {
        s_reject (self, request, GQ_EINVAL, why);
        return;
    }
    json_t *running = json_object_get (body, "running");
    if (running && !json_is_array (running)) {
        s_reject (self, request, GQ_EINVAL, "\"running\" must be an array");
        return;
    }
    /* Intern kinds first: a full kinds table refuses the node rather than misroute jobs. */
    uint64_t kinds = 0;
    size_t i;
    json_t *item;
    json_array_foreach (spec.kinds, i, item) {
        int id = gq_matcher_kind_id (self->matcher, json_string_value (item), true);
        if (id < 0) {
            s_reject (self, request, GQ_EINVAL, "too many distinct kinds on this broker");
            return;
        }
        kinds |= 1ULL << id;
    }
    if (gq_matcher_node_find (self->matcher, spec.name) < 0 &&
        gq_matcher_nodes (self->matcher) >= GQ_MAX_NODES) {
        /* Names are remembered for good (jobs' exclusions refer to them): bound them. */
        s_reject (self, request, GQ_ETOOBIG, "this broker knows too many nodes already");
        return;
    }
    int32_t index = gq_matcher_node_find_or_add (self->matcher, spec.name);
    s_worker_t *worker = index >= 0 ? s_worker_for_node (self, index) : NULL;
    if (!worker) {
        s_reject (self, request, GQ_ENOMEM, "out of memory");
        return;
    }
    if (worker->spec && !streq (worker->owner_key, gq_msg_user_id (request))) {
        s_reject (self, request, GQ_EDENIED, "node name registered by another key");
        return;
    }
    snprintf (worker->owner_key, sizeof worker->owner_key, "%s", gq_msg_user_id (request));
    char key[520];
    s_hex (gq_msg_routing_id (request), key, sizeof key);
    s_worker_t *previous = (s_worker_t *) zhashx_lookup (self->by_connection, key);
    if (previous && previous != worker) {
        /* One connection that changed its name: the old node is gone. */
        s_worker_lost (self, previous, "re-registered under another name", false, now_ms);
    }
    if (worker->routing_id && strcmp (worker->key, key) != 0) {
        /* The same name from a new connection: the worker restarted; its old jobs are lost. */
        s_worker_lost (self, worker, "registered again from a new connection", false, now_ms);
    }
    if (!worker->routing_id) {
        worker->routing_id = zframe_dup (gq_msg_routing_id (request));
        snprintf (worker->key, sizeof worker->key, "%s", key);
        zhashx_insert (self->by_connection, worker->key, worker);
    }
    json_decref (worker->spec);
    worker->spec = json_deep_copy (json_object_get (body, "spec"));
    worker->last_seen_us = now_us;
    worker->last_seen_ms = now_ms;
    gq_node_t *node = gq_matcher_node (self->matcher, index);
    snprintf (node->gpu_model, sizeof node->gpu_model, "%s", spec.gpu_model);
    node->vram_total_mb = (int32_t) spec.vram_total_mb;
    node->vram_free_mb = (int32_t) spec.vram_free_mb;
    node->tflops = (float) spec.tflops;
    node->price_per_hour = (float) spec.price_per_hour;
    node->slots = spec.slots;
    node->kinds = kinds;
    if (node->jobs_ok + node->jobs_failed == 0) {
        node->reliability = 1.0f;
    }
    node->idle_since_ms = node->running ? node->idle_since_ms : now_ms;
    node->status = node->running >= node->slots ? GQ_NODE_BUSY : GQ_NODE_ONLINE;
    s_worker_models (self, worker, spec.models_available, spec.models_loaded);
    gq_matcher_node_changed (self->matcher, index);

    /* Jobs the worker still runs (we restarted): keep them there if we still want them. */
    json_t *unwanted = json_array ();
    json_array_foreach (running, i, item) {
        int64_t id = (int64_t) json_integer_value (json_object_get (item, "id"));
        gq_job_t *job = s_job_lookup (self, id);
        if (job && job->state == GQ_JOB_QUEUED && node->running < node->slots) {
            gq_queue_remove (self->queue, job);
            self->counts[GQ_JOB_QUEUED]--;
            int64_t attempt = json_integer_value (json_object_get (item, "attempt"));
            job->attempts = (uint8_t) (attempt > job->attempts ? attempt : job->attempts);
            job->state = GQ_JOB_RUNNING;
            job->node = index;
            job->started_ms = now_ms;
            gq_matcher_assign (self->matcher, index, job);
            s_running_link (worker, job);
            self->counts[GQ_JOB_RUNNING]++;
        } else if (!job || job->node != index) {
            json_array_append_new (unwanted, json_integer (id));
        }
    }
    if (json_array_size (unwanted)) {
        s_worker_send (self, worker, "CANCEL", json_pack ("{s:O}", "ids", unwanted));
    }
    json_decref (unwanted);
    s_recorded (self, gq_batch_node (self->pending->batch, node->name, node->gpu_model,
                                     node->vram_total_mb, node->tflops, node->price_per_hour,
                                     now_ms, node->jobs_ok, node->jobs_failed));
    zsys_info ("broker: node %s ready: %s, %d MiB, %.1f TFLOPS, %d slot%s", node->name,
               node->gpu_model, node->vram_total_mb, node->tflops, node->slots,
               node->slots == 1 ? "" : "s");
    s_reply (self, gq_msg_reply (request, "WELCOME",
                                 json_pack ("{s:i, s:i, s:s}", "heartbeat_ms",
                                            self->opts.heartbeat_ms, "liveness",
                                            self->opts.liveness, "node", node->name)));
}

static void
s_cmd_heartbeat (gq_broker_t *self, s_worker_t *worker, gq_msg_t *request, int64_t now_us)
{
    json_t *body = gq_msg_body (request);
    json_t *echo = json_object_get (body, "echo");
    gq_node_t *node = gq_matcher_node (self->matcher, worker->node);
    bool changed = false;
    json_int_t sent = json_is_integer (echo) ? json_integer_value (echo) : -1;
    if (sent >= 0 && sent <= now_us / 1000) {
        double rtt = (double) (now_us / 1000 - sent);
        if (rtt >= 0 && rtt < 600000) {
            node->rtt_ms = node->rtt_ms > 0 ? (float) (0.8 * node->rtt_ms + 0.2 * rtt)
                                            : (float) rtt;
            changed = true;
        }
    }
    int64_t free_mb;
    char why[200];
    if (json_object_get (body, "vram_free_mb") &&
        gq_json_int (body, "vram_free_mb", 0, node->vram_total_mb, 0, &free_mb, why, sizeof why) ==
            GQ_OK) {
        /* Reported free VRAM, less what the jobs we placed there reserve but may not use yet. */
        int64_t reserved = 0;
        for (gq_job_t *job = worker->running; job; job = job->qnext) {
            reserved += job->min_vram_mb;
        }
        int64_t used = node->vram_total_mb - free_mb;
        int64_t effective = node->vram_total_mb - (used > reserved ? used : reserved);
        node->vram_free_mb = (int32_t) (effective > 0 ? effective : 0);
        changed = true;
    }
    json_t *loaded = json_object_get (body, "models_loaded");
    if (loaded && gq_models_validate (loaded, true, why, sizeof why) == GQ_OK) {
        s_worker_models (self, worker, NULL, loaded);
    }
    if (changed) {
        gq_matcher_node_changed (self->matcher, worker->node);
    }
}

static void
s_cmd_job_result (gq_broker_t *self, s_worker_t *worker, gq_msg_t *request, int64_t now_ms)
{
    json_t *body = gq_msg_body (request);
    json_t *results = json_object_get (body, "results");
    if (!json_is_array (results)) {
        s_reject (self, request, GQ_EINVAL, "\"results\" must be an array");
        return;
    }
    /* A connection we do not know (we restarted and it has not registered yet) names its node
       in "node": the attempt it reports is recorded there. */
    int32_t from = worker ? worker->node : -1;
    if (!worker) {
        const char *name = json_string_value (json_object_get (body, "node"));
        int32_t named = name && gq_valid_name (name, GQ_NAME_MAX)
                            ? gq_matcher_node_find (self->matcher, name)
                            : -1;
        s_worker_t *known = named >= 0 && (size_t) named < self->workers_size
                                ? self->workers[named]
                                : NULL;
        if (known && known->spec) {
            /* Only the key that registered that name may report for it. */
            from = streq (known->owner_key, gq_msg_user_id (request)) ? named : -1;
        } else if (name && gq_valid_name (name, GQ_NAME_MAX) && json_array_size (results) &&
                   (named >= 0 || gq_matcher_nodes (self->matcher) < GQ_MAX_NODES)) {
            /* A name we have not seen since we restarted: remember it, offline until it
               registers, so the attempt it reports is recorded there. */
            from = gq_matcher_node_find_or_add (self->matcher, name);
        }
    }
    size_t i;
    json_t *item;
    json_array_foreach (results, i, item) {
        json_t *id_json = json_object_get (item, "id");
        if (!json_is_integer (id_json)) {
            self->rejected++;
            continue;
        }
        gq_job_t *job = s_job_lookup (self, (int64_t) json_integer_value (id_json));
        if (!job) {
            continue; /* ended already (cancelled, or a result recorded first): ignore */
        }
        bool ok = json_is_true (json_object_get (item, "ok"));
        /* Ours: the attempt we placed there. Otherwise a run we lost track of (we restarted,
           or requeued it when the node fell silent) that finished all the same. */
        bool mine = worker && job->state == GQ_JOB_RUNNING && job->node == from;
        if (mine) {
            if (!ok) {
                const char *error = json_string_value (json_object_get (item, "error"));
                /* The worker enforces the time limit too, and often first: that is the
                   attempt's timeout, not a failure of the node. */
                bool timed_out =
                    job->timeout_ms && now_ms - job->started_ms >= (int64_t) job->timeout_ms;
                if (!timed_out) {
                    s_node_outcome (self, worker, false, now_ms);
                }
                s_attempt_failed (self, job, timed_out ? "timeout" : "failed",
                                  error ? error : "the job failed", true, now_ms);
                continue;
            }
            s_attempt_end (self, job, "ok", NULL, now_ms);
            s_node_outcome (self, worker, true, now_ms);
        } else if (!ok) {
            continue; /* a failure of an attempt that was requeued anyway */
        } else if (job->state == GQ_JOB_RUNNING) {
            /* Requeued (node lost, broker restart) and running elsewhere now, but its first run
               finished: the first result wins, the other run is stopped. */
            s_worker_send (self, self->workers[job->node], "CANCEL",
                           json_pack ("{s:[I]}", "ids", (json_int_t) job->id));
            s_attempt_end (self, job, "cancelled", "another node finished it first", now_ms);
        }
        if (!mine && from >= 0) {
            /* Its run is an attempt of its own, numbered after those we know of. */
            int64_t attempt = json_integer_value (json_object_get (item, "attempt"));
            int number = attempt > job->attempts ? (int) attempt : job->attempts + 1;
            job->attempts = (uint8_t) (number < 255 ? number : 255);
            job->started_ms = now_ms - (int64_t) json_number_value (json_object_get (item, "ms"));
            s_recorded (self, gq_batch_attempt (self->pending->batch, job->id, job->attempts,
                                                s_node_name (self, from), job->started_ms, now_ms,
                                                "ok", NULL));
            s_worker_t *named = s_worker_for_node (self, from);
            if (named) {
                s_node_outcome (self, named, true, now_ms);
            }
        }
        s_job_end (self, job, GQ_JOB_DONE, json_object_get (item, "result"), NULL, from, now_ms);
    }
}

/* ---- The turn: read everything waiting, commit once, then answer and dispatch -------------- */

static void
s_handle_client (gq_broker_t *self, gq_msg_t **msg_p)
{
    gq_msg_t *msg = *msg_p;
    const char *command = gq_msg_command (msg);
    if (streq (command, "SUBMIT")) {
        s_cmd_submit (self, msg_p);
    } else if (streq (command, "STATUS")) {
        s_cmd_status (self, msg);
    } else if (streq (command, "WAIT")) {
        s_cmd_wait (self, msg);
    } else if (streq (command, "RESULT")) {
        s_cmd_result (self, msg);
    } else if (streq (command, "CANCEL")) {
        s_cmd_cancel (self, msg);
    } else if (streq (command, "JOBS")) {
        s_cmd_jobs (self, msg);
    } else if (streq (command, "NODES")) {
        s_cmd_nodes (self, msg);
    } else if (streq (command, "STATS")) {
        s_cmd_stats (self, msg);
    } else if (streq (command, "EXPLAIN")) {
        s_cmd_explain (self, msg);
    } else if (streq (command, "PING")) {
        s_reply (self, gq_msg_reply (msg, "PING",
                                     json_pack ("{s:s, s:I}", "version", "0.1.0", "time",
                                                (json_int_t) gq_now_ms ())));
    } else {
        self->rejected++;
        s_reply (self, gq_msg_error (msg, GQ_EUNSUPPORTED, "unknown client command %s", command));
    }
}

static void
s_handle_worker (gq_broker_t *self, gq_msg_t *msg)
{
    const char *command = gq_msg_command (msg);
    int64_t now_us = gq_mono_us ();
    int64_t now_ms = gq_now_ms ();
    if (streq (command, "READY")) {
        s_cmd_ready (self, msg, now_ms, now_us);
        return;
    }
    s_worker_t *worker = s_worker_by_connection (self, gq_msg_routing_id (msg));
    if (!worker) {
        /* We do not know this connection (we restarted): it must register again. Its results
           still count: the first result of a job is the one recorded. */
        if (streq (command, "RESULT")) {
            s_cmd_job_result (self, NULL, msg, now_ms);
        }
        if (!streq (command, "BYE")) {
            s_reply (self, gq_msg_reply (msg, "REGISTER", NULL));
        }
        return;
    }
    worker->last_seen_us = now_us;
    worker->last_seen_ms = now_ms;
    if (streq (command, "HEARTBEAT")) {
        s_cmd_heartbeat (self, worker, msg, now_us);
    } else if (streq (command, "RESULT")) {
        s_cmd_job_result (self, worker, msg, now_ms);
    } else if (streq (command, "BYE")) {
        s_worker_lost (self, worker, "the worker said goodbye", false, now_ms);
    } else {
        self->rejected++;
        s_reply (self, gq_msg_error (msg, GQ_EUNSUPPORTED, "unknown worker command %s", command));
    }
}

/* Sends a worker the JOB message built so far. */
static void
s_worker_flush_jobs (gq_broker_t *self, s_worker_t *worker)
{
    zchunk_extend (worker->jobs_out, "]}", 2);
    gq_msg_t *msg = gq_msg_new_raw (GQ_ROLE_WORKER, "JOB",
                                    (const char *) zchunk_data (worker->jobs_out),
                                    zchunk_size (worker->jobs_out));
    gq_msg_set_routing_id (msg, worker->routing_id);
    gq_msg_send (&msg, self->router);
    worker->dirty = false;
    worker->jobs_out_count = 0;
    if (zchunk_max_size (worker->jobs_out) > 1024 * 1024) {
        zchunk_destroy (&worker->jobs_out); /* do not keep a huge buffer after a burst */
    }
}

/* Places queued jobs on nodes and appends them to each worker's JOB message of this turn. */
static void
s_dispatch (gq_broker_t *self)
{
    int64_t now_ms = gq_now_ms ();
    size_t placed;
    do {
        int64_t t0 = gq_mono_us ();
        placed = gq_sched_run (self->sched, now_ms, self->placed, S_DISPATCH_BATCH);
        if (placed) {
            gq_metrics_observe (self->metrics, GQ_HIST_MATCH_US,
                                (double) (gq_mono_us () - t0) / (double) placed);
        }
        for (size_t i = 0; i < placed; i++) {
            gq_job_t *job = self->placed[i].job;
            s_worker_t *worker = self->workers[self->placed[i].node];
            self->counts[GQ_JOB_QUEUED]--;
            self->counts[GQ_JOB_RUNNING]++;
            job->attempts++;
            job->started_ms = now_ms;
            s_running_link (worker, job);
            if (job->blobs) {
                /* Jobs with blobs travel alone: frames are counted per message. */
                char head[200];
                int n = snprintf (head, sizeof head,
                                  "{\"jobs\":[{\"id\":%lld,\"attempt\":%d,\"kind\":\"%s\","
                                  "\"timeout_ms\":%u,\"blobs\":[0,%zu],\"model\":",
                                  (long long) job->id, job->attempts,
                                  gq_matcher_kind_name (self->matcher, job->kind_id),
                                  job->timeout_ms, zlist_size ((zlist_t *) job->blobs));
                zchunk_t *text = zchunk_new (head, (size_t) n);
                const char *model = s_model_name (self, job);
                s_chunk_printf (text, model ? "\"%s\"" : "null", model ? model : "");
                s_chunk_str (text, ",\"payload\":");
                zchunk_extend (text, job->payload, job->payload_len);
                s_chunk_str (text, "}]}");
                gq_msg_t *msg = gq_msg_new_raw (GQ_ROLE_WORKER, "JOB",
                                                (const char *) zchunk_data (text),
                                                zchunk_size (text));
                zchunk_destroy (&text);
                gq_msg_set_routing_id (msg, worker->routing_id);
                for (zframe_t *frame = (zframe_t *) zlist_first ((zlist_t *) job->blobs); frame;
                     frame = (zframe_t *) zlist_next ((zlist_t *) job->blobs)) {
                    zframe_t *copy = zframe_dup (frame);
                    gq_msg_add_blob (msg, &copy);
                }
                gq_msg_send (&msg, self->router);
                continue;
            }
            if (!worker->jobs_out) {
                worker->jobs_out = zchunk_new (NULL, 4096);
            }
            zchunk_t *out = worker->jobs_out;
            if (!worker->dirty) {
                worker->dirty = true;
                zlist_append (self->dirty_workers, worker);
                zchunk_set (out, "{\"jobs\":[", 9);
            } else {
                zchunk_extend (out, ",", 1);
            }
            const char *model = s_model_name (self, job);
            s_chunk_str (out, "{\"id\":");
            gq_chunk_int (out, job->id);
            s_chunk_str (out, ",\"attempt\":");
            gq_chunk_int (out, job->attempts);
            s_chunk_name (out, ",\"kind\":", gq_matcher_kind_name (self->matcher, job->kind_id));
            s_chunk_str (out, ",\"timeout_ms\":");
            gq_chunk_int (out, job->timeout_ms);
            s_chunk_name (out, ",\"model\":", model);
            s_chunk_str (out, ",\"payload\":");
            zchunk_extend (out, job->payload, job->payload_len);
            zchunk_extend (out, "}", 1);
            worker->jobs_out_count++;
            if (worker->jobs_out_count >= S_JOBS_PER_MESSAGE) {
                /* Send a part now: the worker starts on it while we place the rest. */
                s_worker_flush_jobs (self, worker);
                zlist_remove (self->dirty_workers, worker);
            }
        }
    } while (placed == S_DISPATCH_BATCH);
    s_worker_t *worker;
    while ((worker = (s_worker_t *) zlist_pop (self->dirty_workers))) {
        s_worker_flush_jobs (self, worker);
    }
}

/* Ends a turn: its replies go now, or with its batch when it wrote; then the FINISHED notices,
   the scheduler's placements, and the batch to the writer if it is due (placed again if the
   loop committed it itself: jobs may have joined the queue). */
static void
s_turn_end (gq_broker_t *self)
{
    zlist_t *later = self->turn_wrote ? self->pending->replies : NULL;
    gq_msg_t *reply;
    while ((reply = (gq_msg_t *) zlist_pop (self->replies))) {
        if (later) {
            zlist_append (later, reply);
        } else {
            gq_msg_send (&reply, self->router);
        }
    }
    self->turn_wrote = false;
    s_watch_t *watch;
    while ((watch = (s_watch_t *) zlist_pop (self->dirty_watches))) {
        s_watch_flush (self, watch);
    }
    s_dispatch (self);
    if (s_writer_kick (self)) {
        s_dispatch (self);
    }
}

/* The writer handed batches back. */
static int
s_on_writer (zloop_t *loop, zsock_t *sock, void *arg)
{
    (void) loop;
    gq_broker_t *self = (gq_broker_t *) arg;
    while (gq_writer_busy (self->writer) && (zsock_events (sock) & ZMQ_POLLIN)) {
        gq_batch_t *batch = gq_writer_recv (self->writer);
        if (!batch) {
            break;
        }
        s_batch_back (self, batch);
    }
    s_turn_end (self);
    return 0;
}

static int
s_on_lazy (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    gq_broker_t *self = (gq_broker_t *) arg;
    self->lazy_timer = -1;
    s_turn_end (self);
    return 0;
}

static int
s_on_router (zloop_t *loop, zsock_t *router, void *arg)
{
    gq_broker_t *self = (gq_broker_t *) arg;
    int64_t started_us = gq_mono_us ();
    int n;
    for (n = 0; n < S_TURN_MESSAGES; n++) {
        zmsg_t *zmsg = zmsg_recv (router); /* rcvtimeo 0: NULL when nothing is waiting */
        if (!zmsg) {
            break;
        }
        gq_msg_t *msg = NULL;
        char why[300];
        int rc = gq_msg_decode (&zmsg, true, &msg, why, sizeof why);
        if (rc) {
            self->rejected++;
            if (msg) {
                s_reply (self, gq_msg_error (msg, rc, "%s", why));
            }
            gq_msg_destroy (&msg);
            continue;
        }
        if (gq_guard_role (self->guard, msg, why, sizeof why)) {
            /* A key acting outside its role: refused, and nothing about it is created. */
            self->rejected++;
            s_reply (self, gq_msg_error (msg, GQ_EDENIED, "%s", why));
        } else if (gq_msg_role (msg) == GQ_ROLE_CLIENT) {
            s_handle_client (self, &msg);
        } else {
            s_handle_worker (self, msg);
        }
        gq_msg_destroy (&msg);
    }
    s_turn_end (self);
    int64_t took_us = gq_mono_us () - started_us;
    if (took_us > S_SLOW_TURN_US) {
        zsys_warning ("broker: a loop turn of %d messages took %lld ms", n,
                      (long long) (took_us / 1000));
    }
    return 0;
}

/* ---- Cron: periodic work, each with its period --------------------------------------------- */

static void
s_cron_heartbeats (gq_broker_t *self, int64_t now_us, int64_t now_ms)
{
    int64_t silence_us = (int64_t) self->opts.heartbeat_ms * self->opts.liveness * 1000;
    char body[64];
    int n = snprintf (body, sizeof body, "{\"t\":%lld}", (long long) (now_us / 1000));
    for (size_t w = 0; w < self->workers_size; w++) {
        s_worker_t *worker = self->workers[w];
        if (!worker || !worker->routing_id) {
            continue;
        }
        if (now_us - worker->last_seen_us > silence_us) {
            char reason[100];
            snprintf (reason, sizeof reason, "no message for %d heartbeats of %d ms",
                      self->opts.liveness, self->opts.heartbeat_ms);
            s_worker_lost (self, worker, reason, true, now_ms);
            continue;
        }
        gq_msg_t *msg = gq_msg_new_raw (GQ_ROLE_WORKER, "HEARTBEAT", body, (size_t) n);
        gq_msg_set_routing_id (msg, worker->routing_id);
        gq_msg_send (&msg, self->router);
    }
}

static void
s_cron_timeouts (gq_broker_t *self, int64_t now_ms)
{
    for (size_t w = 0; w < self->workers_size; w++) {
        s_worker_t *worker = self->workers[w];
        gq_job_t *job = worker ? worker->running : NULL;
        while (job) {
            gq_job_t *next = job->qnext;
            if (job->timeout_ms && now_ms - job->started_ms > (int64_t) job->timeout_ms) {
                char reason[100];
                snprintf (reason, sizeof reason, "time limit of %u ms exceeded", job->timeout_ms);
                s_worker_send (self, worker, "CANCEL",
                               json_pack ("{s:[I]}", "ids", (json_int_t) job->id));
                s_attempt_failed (self, job, "timeout", reason, true, now_ms);
            }
            job = next;
        }
    }
}

static void
s_cron_retention (gq_broker_t *self, int64_t now_ms)
{
    /* In the writer, like every write; its batch tells what it purged (s_batch_back). */
    s_recorded (self, gq_batch_purge (self->pending->batch, now_ms - self->opts.retention_ms,
                                      S_PURGE_CHUNK));
}

static int
s_on_cron (zloop_t *loop, int timer_id, void *arg)
{
    gq_broker_t *self = (gq_broker_t *) arg;
    int64_t now_us = gq_mono_us ();
    int64_t now_ms = gq_now_ms ();
    if (now_us >= self->next_heartbeat_us) {
        self->next_heartbeat_us = now_us + (int64_t) self->opts.heartbeat_ms * 1000;
        s_cron_heartbeats (self, now_us, now_ms);
    }
    if (now_us >= self->next_timeouts_us) {
        self->next_timeouts_us = now_us + S_TIMEOUTS_MS * 1000;
        s_cron_timeouts (self, now_ms);
    }
    if (now_us >= self->next_retention_us) {
        self->next_retention_us = now_us + (int64_t) S_RETENTION_MS * 1000;
        s_cron_retention (self, now_ms);
    }
    s_turn_end (self);
    return 0;
}

/* ---- Recovery ------------------------------------------------------------------------------ */

static int
s_recover_job (void *arg, const gq_job_row_t *row, const char *const *excluded,
               size_t n_excluded)
{
    gq_broker_t *self = (gq_broker_t *) arg;
    gq_jobspec_t spec = {0};
    spec.kind = row->kind;
    spec.model = row->model && *row->model ? row->model : NULL;
    spec.min_vram_mb = row->min_vram_mb;
    spec.priority = row->priority;
    spec.gpu_pattern = row->gpu_pattern && *row->gpu_pattern ? row->gpu_pattern : NULL;
    spec.max_price = row->max_price;
    spec.min_tflops = row->min_tflops;
    spec.timeout_ms = row->timeout_ms;
    spec.max_attempts = row->max_attempts;
    spec.blob_first = -1;
    char why[200];
    gq_job_t *job = s_job_from_spec (self, &spec, NULL, why, sizeof why);
    if (!job) {
        zsys_error ("broker: recovery of job %lld: %s", (long long) row->id, why);
        return GQ_ENOMEM;
    }
    free (job->payload);
    job->payload = strdup (row->payload ? row->payload : "{}");
    if (!job->payload) {
        s_job_free (self, &job);
        return GQ_ENOMEM;
    }
    job->payload_len = (uint32_t) strlen (job->payload);
    job->id = row->id;
    job->submitted_ms = row->submitted_ms;
    job->owner = gq_guard_owner (self->guard, row->client);
    if (job->owner) {
        gq_guard_queued (self->guard, job->owner, 1, false, why, sizeof why);
    }
    job->attempts = (uint8_t) row->attempts;
    for (size_t i = 0; i < n_excluded; i++) {
        int32_t node = gq_matcher_node_find_or_add (self->matcher, excluded[i]);
        if (node >= 0) {
            s_exclude (job, node);
        }
    }
    void **data;
    size_t *sizes;
    int n = gq_store_job_blobs (self->store, job->id, "in", &data, &sizes);
    if (n > 0) {
        zlist_t *blobs = zlist_new ();
        for (int i = 0; i < n; i++) {
            zlist_append (blobs, zframe_new (data[i], sizes[i]));
        }
        job->blobs = blobs;
        gq_store_blobs_free (data, sizes, n);
    }
    zhashx_insert (self->jobs, S_KEY (job->id), job);
    gq_queue_push (self->queue, job);
    self->counts[GQ_JOB_QUEUED]++;
    return 0;
}

/* ---- Metrics: the text of one scrape, made on the loop thread ---------------------------- */

static void
s_render_metrics (void *arg, zchunk_t *out)
{
    gq_broker_t *self = (gq_broker_t *) arg;
    s_chunk_str (out, "# HELP gridq_jobs_submitted_total Jobs accepted (committed) since start.\n"
                      "# TYPE gridq_jobs_submitted_total counter\n");
    s_chunk_printf (out, "gridq_jobs_submitted_total %lld\n", (long long) self->submitted);
    s_chunk_str (out, "# HELP gridq_jobs_finished_total Jobs ended since start, by final state.\n"
                      "# TYPE gridq_jobs_finished_total counter\n");
    for (int s = GQ_JOB_DONE; s < GQ_JOB_STATES; s++) {
        s_chunk_printf (out, "gridq_jobs_finished_total{state=\"%s\"} %lld\n",
                        gq_job_state_name (s), (long long) self->finished[s]);
    }
    s_chunk_str (out, "# HELP gridq_jobs Jobs in the store, by state.\n# TYPE gridq_jobs gauge\n");
    for (int s = 0; s < GQ_JOB_STATES; s++) {
        s_chunk_printf (out, "gridq_jobs{state=\"%s\"} %lld\n", gq_job_state_name (s),
                        (long long) self->counts[s]);
    }
    s_chunk_str (out, "# HELP gridq_queue_depth Queued jobs by priority.\n"
                      "# TYPE gridq_queue_depth gauge\n");
    for (int p = 0; p < 10; p++) {
        s_chunk_printf (out, "gridq_queue_depth{priority=\"%d\"} %zu\n", p,
                        gq_queue_size_priority (self->queue, p));
    }
    int64_t by_status[4] = {0, 0, 0, 0};
    for (size_t w = 0; w < self->workers_size; w++) {
        if (self->workers[w] && self->workers[w]->spec) {
            by_status[gq_matcher_node (self->matcher, (int32_t) w)->status & 3]++;
        }
    }
    s_chunk_str (out, "# HELP gridq_nodes Nodes by status.\n# TYPE gridq_nodes gauge\n");
    for (int st = 0; st < 4; st++) {
        s_chunk_printf (out, "gridq_nodes{status=\"%s\"} %lld\n", gq_node_status_name (st),
                        (long long) by_status[st]);
    }
    s_chunk_str (out, "# HELP gridq_node_running_jobs Jobs running on each node.\n"
                      "# TYPE gridq_node_running_jobs gauge\n");
    for (size_t w = 0; w < self->workers_size; w++) {
        if (self->workers[w] && self->workers[w]->spec) {
            gq_node_t *node = gq_matcher_node (self->matcher, (int32_t) w);
            s_chunk_printf (out, "gridq_node_running_jobs{node=\"%s\"} %d\n", node->name,
                            node->running);
        }
    }
    s_chunk_str (out, "# HELP gridq_node_vram_free_bytes Free VRAM of each node.\n"
                      "# TYPE gridq_node_vram_free_bytes gauge\n");
    for (size_t w = 0; w < self->workers_size; w++) {
        if (self->workers[w] && self->workers[w]->spec) {
            gq_node_t *node = gq_matcher_node (self->matcher, (int32_t) w);
            s_chunk_printf (out, "gridq_node_vram_free_bytes{node=\"%s\"} %lld\n", node->name,
                            (long long) node->vram_free_mb * 1048576LL);
        }
    }
    s_chunk_str (out, "# HELP gridq_messages_rejected_total Bad messages dropped or refused.\n"
                      "# TYPE gridq_messages_rejected_total counter\n");
    s_chunk_printf (out, "gridq_messages_rejected_total %lld\n", (long long) self->rejected);
    gq_metrics_render_histograms (self->metrics, out);
}

/* ---- Construction -------------------------------------------------------------------------- */

void
gq_broker_opts_default (gq_broker_opts_t *opts)
{
    memset (opts, 0, sizeof *opts);
    opts->endpoint = GQ_DEFAULT_ENDPOINT;
    opts->db_path = "gridq.db";
    opts->heartbeat_ms = GQ_HEARTBEAT_MS;
    opts->liveness = GQ_LIVENESS;
    opts->durability = GQ_DURABILITY_FULL;
    opts->retention_ms = GQ_RETENTION_MS;
    gq_weights_default (&opts->weights);
    opts->aging_ms = GQ_AGING_MS;
    opts->backfill_window = GQ_BACKFILL_WINDOW;
    opts->reserve_after_ms = 30000;
    opts->backoff_base_ms = 1000;
}

int
gq_broker_opts_load (gq_broker_opts_t *opts, const char *path, char *why, size_t whylen)
{
    json_error_t error;
    json_t *config = json_load_file (path, JSON_REJECT_DUPLICATES, &error);
    if (!config) {
        snprintf (why, whylen, "config %s: %s (line %d)", path, error.text, error.line);
        return GQ_EINVAL;
    }
    int rc = GQ_EINVAL;
    char field[200];
    json_t *weights = json_object_get (config, "weights");
    if (!json_is_object (config) || (weights && !json_is_object (weights))) {
        snprintf (why, whylen, "config %s: must be an object with \"weights\" an object", path);
        goto done;
    }
    struct {
        const char *name;
        double *value;
    } terms[] = {{"fit", &opts->weights.fit},         {"compute", &opts->weights.compute},
                 {"cost", &opts->weights.cost},       {"warm", &opts->weights.warm},
                 {"load", &opts->weights.load},       {"latency", &opts->weights.latency},
                 {"reliability", &opts->weights.reliability}};
    for (size_t i = 0; weights && i < sizeof terms / sizeof terms[0]; i++) {
        if (gq_json_num (weights, terms[i].name, 0, 100, *terms[i].value, terms[i].value, field,
                         sizeof field)) {
            snprintf (why, whylen, "config %s: weights: %s", path, field);
            goto done;
        }
    }
    int64_t aging, window, reserve, heartbeat, liveness;
    if (gq_json_int (config, "aging_ms", 1, INT64_MAX / 16, opts->aging_ms, &aging, field,
                     sizeof field) ||
        gq_json_int (config, "backfill_window", 0, 1000000, (int64_t) opts->backfill_window,
                     &window, field, sizeof field) ||
        gq_json_int (config, "reserve_after_ms", 0, INT64_MAX / 16, opts->reserve_after_ms,
                     &reserve, field, sizeof field) ||
        gq_json_int (config, "heartbeat_ms", 10, 3600000, opts->heartbeat_ms, &heartbeat, field,
                     sizeof field) ||
        gq_json_int (config, "liveness", 1, 1000, opts->liveness, &liveness, field,
                     sizeof field) ||
        gq_json_num (config, "backoff_base_ms", 0, 3600000, opts->backoff_base_ms,
                     &opts->backoff_base_ms, field, sizeof field)) {
        snprintf (why, whylen, "config %s: %s", path, field);
        goto done;
    }
    opts->aging_ms = aging;
    opts->backfill_window = (size_t) window;
    opts->reserve_after_ms = reserve;
    opts->heartbeat_ms = (int) heartbeat;
    opts->liveness = (int) liveness;
    rc = GQ_OK;
done:
    json_decref (config);
    return rc;
}

gq_broker_t *
gq_broker_new (const gq_broker_opts_t *opts, char *why, size_t whylen)
{
    gq_broker_t *self = (gq_broker_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    self->opts = *opts;
    self->started_ms = gq_now_ms ();
    /* The loop and /metrics first: a bad --metrics must fail before a database is created. */
    self->loop = zloop_new ();
    self->metrics = self->loop ? gq_metrics_new (opts->metrics, self->loop, s_render_metrics,
                                                 self, why, whylen)
                               : NULL;
    if (!self->metrics) {
        gq_broker_destroy (&self);
        return NULL;
    }
    self->store = gq_store_open (opts->db_path, opts->durability, why, whylen);
    if (!self->store) {
        gq_broker_destroy (&self);
        return NULL;
    }
    self->matcher = gq_matcher_new (&opts->weights);
    self->queue = gq_queue_new (opts->aging_ms);
    self->jobs = zhashx_new ();
    self->by_connection = zhashx_new ();
    self->replies = zlist_new ();
    self->inflight = zlist_new ();
    self->idem_pending = zhashx_new ();
    self->pending = s_pending_new (self);
    self->lazy_timer = -1;
    self->dirty_watches = zlist_new ();
    self->dirty_workers = zlist_new ();
    self->placed = (gq_dispatch_t *) calloc (S_DISPATCH_BATCH, sizeof *self->placed);
    if (!self->matcher || !self->queue || !self->jobs || !self->placed || !self->inflight ||
        !self->idem_pending || !self->pending) {
        snprintf (why, whylen, "out of memory");
        gq_broker_destroy (&self);
        return NULL;
    }
    self->sched = gq_sched_new (self->queue, self->matcher, opts->backfill_window,
                                opts->reserve_after_ms);
    zhashx_set_key_hasher (self->jobs, s_id_hash);
    zhashx_set_key_comparator (self->jobs, s_id_compare);
    zhashx_set_key_duplicator (self->jobs, NULL);
    zhashx_set_key_destructor (self->jobs, NULL);
    zhashx_set_key_duplicator (self->by_connection, NULL);
    zhashx_set_key_destructor (self->by_connection, NULL);

    self->router = zsock_new (ZMQ_ROUTER);
    if (!self->router) {
        snprintf (why, whylen, "cannot create the ROUTER socket");
        gq_broker_destroy (&self);
        return NULL;
    }
    zsock_set_sndhwm (self->router, S_SOCKET_HWM);
    zsock_set_rcvhwm (self->router, S_SOCKET_HWM);
    zsock_set_maxmsgsize (self->router, (int) GQ_MAX_MSG_BYTES);
    zsock_set_rcvtimeo (self->router, 0);
    zsock_set_linger (self->router, 0);
    self->guard = gq_guard_new (opts, self->router, why, whylen);
    if (!self->guard) {
        gq_broker_destroy (&self);
        return NULL;
    }
    if (gq_store_counts (self->store, self->counts) ||
        gq_store_recover (self->store, s_recover_job, self)) {
        snprintf (why, whylen, "recovery failed: %s", gq_store_errmsg (self->store));
        gq_broker_destroy (&self);
        return NULL;
    }
    self->counts[GQ_JOB_QUEUED] = (int64_t) gq_queue_size (self->queue);
    self->counts[GQ_JOB_RUNNING] = 0;
    /* Job ids: never one handed out before, even before its commit (see s_id_reserve). */
    int64_t max_id = gq_store_max_id (self->store);
    int64_t mark = 0;
    if (max_id < 0 || gq_store_meta_get (self->store, "next_job_id", &mark)) {
        snprintf (why, whylen, "cannot read the job ids: %s", gq_store_errmsg (self->store));
        gq_broker_destroy (&self);
        return NULL;
    }
    self->next_id = max_id + 1 > mark ? max_id + 1 : mark;
    self->id_committed = self->id_recorded = mark;
    self->writer = gq_writer_new (opts->db_path, opts->durability, why, whylen);
    if (!self->writer) {
        gq_broker_destroy (&self);
        return NULL;
    }
    if (gq_queue_size (self->queue)) {
        zsys_info ("broker: recovered %zu unfinished jobs from %s", gq_queue_size (self->queue),
                   opts->db_path);
    }

    if (zsock_bind (self->router, "%s", opts->endpoint) < 0) {
        snprintf (why, whylen, "cannot bind %s: %s (is another broker running there?)",
                  opts->endpoint, zmq_strerror (zmq_errno ()));
        gq_broker_destroy (&self);
        return NULL;
    }
    zloop_reader (self->loop, self->router, s_on_router, self);
    zloop_reader (self->loop, gq_writer_sock (self->writer), s_on_writer, self);
    zloop_timer (self->loop, S_CRON_MS, 0, s_on_cron, self);
    return self;
}

int
gq_broker_run (gq_broker_t *self)
{
    zsys_info ("broker: serving %s with store %s (%s durability)", self->opts.endpoint,
               self->opts.db_path, self->opts.durability == GQ_DURABILITY_FULL ? "full" : "normal");
    int rc = zloop_start (self->loop);
    s_turn_end (self);
    s_store_sync (self); /* everything recorded is committed before we stop */
    zsys_info ("broker: stopped");
    return rc < 0 ? -1 : 0;
}

void
gq_broker_destroy (gq_broker_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_broker_t *self = *self_p;
    if (self->writer) {
        s_store_sync (self);
        gq_writer_destroy (&self->writer);
        /* A clean stop: the next start needs no gap in the ids. */
        if (self->next_id > 0 && gq_store_meta_set (self->store, "next_job_id", self->next_id)) {
            zsys_warning ("broker: %s", gq_store_errmsg (self->store));
        }
    }
    s_pending_t *pending;
    while (self->inflight && (pending = (s_pending_t *) zlist_pop (self->inflight))) {
        s_pending_destroy (self, &pending);
    }
    zlist_destroy (&self->inflight);
    gq_metrics_destroy (&self->metrics);
    zloop_destroy (&self->loop);
    zsock_destroy (&self->router);
    gq_guard_destroy (&self->guard);
    if (self->jobs) {
        for (gq_job_t *job = (gq_job_t *) zhashx_first (self->jobs); job;
             job = (gq_job_t *) zhashx_next (self->jobs)) {
            s_job_free (self, &job);
        }
        zhashx_destroy (&self->jobs);
    }
    for (size_t w = 0; w < self->workers_size; w++) {
        s_worker_t *worker = self->workers[w];
        if (worker) {
            zframe_destroy (&worker->routing_id);
            zchunk_destroy (&worker->jobs_out);
            json_decref (worker->spec);
            json_decref (worker->models_loaded);
            free (worker);
        }
    }
    free (self->workers);
    zhashx_destroy (&self->by_connection);
    gq_msg_t *msg;
    while (self->replies && (msg = (gq_msg_t *) zlist_pop (self->replies))) {
        gq_msg_destroy (&msg);
    }
    zlist_destroy (&self->replies);
    s_pending_destroy (self, &self->pending);
    zhashx_destroy (&self->idem_pending);
    zlist_destroy (&self->dirty_watches);
    zlist_destroy (&self->dirty_workers);
    free (self->placed);
    gq_sched_destroy (&self->sched);
    gq_queue_destroy (&self->queue);
    gq_matcher_destroy (&self->matcher);
    gq_store_close (&self->store);
    free (self);
    *self_p = NULL;
}
