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

    This file holds the loop: the table of commands, the turn (read, dispatch, commit), cron and
    construction. What each message does lives in the file named for it (broker_internal.h lists
    them along a job's path: intake, dispatch, workers, results, watch, queries, commit).

    Reading order: small helpers; the commands; the turn; cron; construction. */
#include "broker_internal.h"

#include <string.h>

/* ---- Small helpers ------------------------------------------------------------------------- */

void
gq_broker_hex (zframe_t *frame, char *out, size_t size)
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

#define GQ_ID_KEY(id) ((void *) (uintptr_t) (id))

void
gq_broker_id_keys (zhashx_t *table)
{
    zhashx_set_key_hasher (table, s_id_hash);
    zhashx_set_key_comparator (table, s_id_compare);
    zhashx_set_key_duplicator (table, NULL);
    zhashx_set_key_destructor (table, NULL);
}

const char *
gq_broker_node_name (gq_broker_t *self, int32_t node)
{
    return node >= 0 ? gq_matcher_node (self->matcher, node)->name : NULL;
}

const char *
gq_broker_model_name (gq_broker_t *self, const gq_job_t *job)
{
    return job->model_id ? gq_matcher_model_name (self->matcher, job->model_id) : NULL;
}

void
gq_broker_reply (gq_broker_t *self, gq_msg_t *reply)
{
    if (reply) {
        zlist_append (self->replies, reply);
    }
}

void
gq_broker_reject (gq_broker_t *self, gq_msg_t *request, int code, const char *why)
{
    self->rejected++;
    gq_broker_reply (self, gq_msg_error (request, code, "%s", why));
}

/* The row of an in-memory job, its names filled in (the node of its last attempt once it
   ended); payload only with with_payload. */
static void
s_job_row (gq_broker_t *self, const gq_job_t *job, bool with_payload, gq_job_row_t *row)
{
    int32_t node = job->end ? job->end->node : job->node;
    gq_job_row_from (row, job, gq_matcher_kind_name (self->matcher, job->kind_id),
                     gq_broker_model_name (self, job), gq_broker_node_name (self, node));
    if (!with_payload) {
        row->payload = NULL;
    }
}

json_t *
gq_broker_job_json (gq_broker_t *self, const gq_job_t *job, bool with_payload)
{
    gq_job_row_t row;
    s_job_row (self, job, with_payload, &row);
    return gq_job_row_json (&row);
}

void
gq_broker_job_text (gq_broker_t *self, const gq_job_t *job, bool with_payload, zchunk_t *out)
{
    gq_job_row_t row;
    s_job_row (self, job, with_payload, &row);
    gq_job_row_text (out, &row);
}

void
gq_broker_job_free (gq_broker_t *self, gq_job_t **job_p)
{
    gq_job_t *job = *job_p;
    if (!job) {
        return;
    }
    if (self->affinity_of && zhashx_size (self->affinity_of)) {
        zhashx_delete (self->affinity_of, GQ_ID_KEY (job->id));
    }
    if (self->kept) {
        gq_watch_forget (self, job->id);
    }
    gq_watch_drop_job (self, job);
    if (job->blobs) {
        zlist_t *blobs = (zlist_t *) job->blobs;
        zframe_t *frame;
        while ((frame = (zframe_t *) zlist_pop (blobs))) {
            zframe_destroy (&frame);
        }
        zlist_destroy (&blobs);
    }
    if (job->end) {
        free (job->end->result);
        free (job->end->error);
        free (job->end);
    }
    free (job->payload);
    free (job->constraints);
    free (job->idem);
    free (job);
    *job_p = NULL;
}

void
gq_broker_count_running (gq_broker_t *self, const gq_job_t *job, int delta)
{
    self->counts[GQ_JOB_RUNNING] += delta;
    gq_array_t *array = gq_arrays_of (self, job);
    if (array) {
        array->running += delta;
    }
}

/* The request's "ids" (malloc'd), or false after refusing the request. */
bool
gq_broker_request_ids (gq_broker_t *self, gq_msg_t *request, int64_t **ids, size_t *count)
{
    char why[200];
    if (gq_json_ids (gq_msg_body (request), "ids", ids, count, why, sizeof why)) {
        gq_broker_reject (self, request, GQ_EINVAL, why);
        return false;
    }
    return true;
}

void
gq_broker_charge_unknown (gq_broker_t *self, gq_msg_t *request, size_t unknown)
{
    int64_t retry_after_ms;
    gq_guard_take (self->guard, request, unknown, gq_mono_us (), &retry_after_ms);
}

bool
gq_broker_request_id (gq_broker_t *self, gq_msg_t *request, int64_t *id)
{
    char why[200];
    if (gq_json_int (gq_msg_body (request), "id", 1, INT64_MAX, 0, id, why, sizeof why) ||
        *id == 0) {
        gq_broker_reject (self, request, GQ_EINVAL, *id == 0 ? "\"id\" is required" : why);
        return false;
    }
    return true;
}

void
gq_broker_reply_jobs (gq_broker_t *self, gq_msg_t *request, const char *command, json_t *jobs,
                      json_t *missing)
{
    gq_broker_reply (self, gq_msg_reply (request, command, json_pack ("{s:o, s:o}", "jobs", jobs,
                                                                      "missing", missing)));
}

/* ---- The commands --------------------------------------------------------------------------- */

/* What a command from a worker connection needs of the broker's link to it. */
enum {
    S_LINKED,    /* a registered worker; an unknown connection is told to REGISTER */
    S_REGISTERS, /* READY: handled before any lookup */
    S_ANY_LINK,  /* RESULT: handled for unknown connections too (the broker restarted: a
                    result still counts, the first recorded wins), then REGISTER */
    S_FAREWELL   /* BYE: an unknown connection is not asked to register */
};

static const struct {
    const char *name;      /* the command frame */
    gq_role_t role;        /* who may send it */
    int link;              /* for workers: S_LINKED, S_REGISTERS, ... */
    gq_handler_fn *handle; /* what it does */
} s_commands[] = {
    {"SUBMIT", GQ_ROLE_CLIENT, 0, gq_intake_submit},
    {"STATUS", GQ_ROLE_CLIENT, 0, gq_queries_status},
    {"WAIT", GQ_ROLE_CLIENT, 0, gq_watch_wait},
    {"RESULT", GQ_ROLE_CLIENT, 0, gq_queries_result},
    {"CANCEL", GQ_ROLE_CLIENT, 0, gq_results_cancel},
    {"RETRY", GQ_ROLE_CLIENT, 0, gq_retry_request},
    {"JOBS", GQ_ROLE_CLIENT, 0, gq_queries_jobs},
    {"NODES", GQ_ROLE_CLIENT, 0, gq_queries_nodes},
    {"STATS", GQ_ROLE_CLIENT, 0, gq_queries_stats},
    {"EXPLAIN", GQ_ROLE_CLIENT, 0, gq_queries_explain},
    {"PING", GQ_ROLE_CLIENT, 0, gq_queries_ping},
    {"READY", GQ_ROLE_WORKER, S_REGISTERS, gq_workers_ready},
    {"HEARTBEAT", GQ_ROLE_WORKER, S_LINKED, gq_workers_heartbeat},
    {"RESULT", GQ_ROLE_WORKER, S_ANY_LINK, gq_results_recv},
    {"PARTIAL", GQ_ROLE_WORKER, S_LINKED, gq_watch_partial},
    {"RECALLED", GQ_ROLE_WORKER, S_LINKED, gq_workers_recalled},
    {"BYE", GQ_ROLE_WORKER, S_FAREWELL, gq_workers_bye},
};

void
gq_broker_handle (gq_broker_t *self, gq_msg_t **msg_p)
{
    gq_msg_t *msg = *msg_p;
    const char *command = gq_msg_command (msg);
    gq_role_t role = gq_msg_role (msg);
    size_t c = 0;
    size_t commands = sizeof s_commands / sizeof s_commands[0];
    while (c < commands && !(s_commands[c].role == role && streq (s_commands[c].name, command))) {
        c++;
    }
    int link = c < commands ? s_commands[c].link : S_LINKED;
    gq_link_t *worker = NULL;
    if (role == GQ_ROLE_WORKER && link != S_REGISTERS) {
        worker = gq_workers_by_connection (self, gq_msg_routing_id (msg));
        if (!worker) {
            /* We do not know this connection (we restarted): it must register again. */
            if (link == S_ANY_LINK) {
                s_commands[c].handle (self, msg_p, NULL);
            }
            if (link != S_FAREWELL) {
                gq_broker_reply (self, gq_msg_reply (msg, "REGISTER", NULL));
            }
            return;
        }
        worker->last_seen_us = gq_mono_us ();
        worker->last_seen_ms = gq_now_ms ();
    }
    if (c == commands) {
        self->rejected++;
        gq_broker_reply (self,
                         gq_msg_error (msg, GQ_EUNSUPPORTED, "unknown %s command %s",
                                       role == GQ_ROLE_CLIENT ? "client" : "worker", command));
        return;
    }
    s_commands[c].handle (self, msg_p, worker);
}

/* ---- The turn: read everything waiting, commit once, then answer and dispatch -------------- */

/* Ends a turn: its replies go now, or with its batch when it wrote; then the FINISHED notices,
   the scheduler's placements, and the batch to the writer if it is due (all again when the loop
   committed it itself). */
void
gq_broker_turn_end (gq_broker_t *self)
{
    /* Again while the loop commits a batch itself: settling it may have made jobs join the
       queue, and requests held for it (gq_broker_handle) may have replies of their own. */
    do {
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
        gq_watch_t *watch;
        while ((watch = (gq_watch_t *) zlist_pop (self->dirty_watches))) {
            gq_watch_flush (self, watch);
        }
        gq_dispatch_turn (self);
    } while (gq_commit_kick (self));
}

/* The writer handed batches back. */
static int
s_on_writer (zloop_t *loop, zsock_t *sock, void *arg)
{
    (void) loop;
    gq_broker_t *self = (gq_broker_t *) arg;
    while (gq_lane_busy (self->writer) && (zsock_events (sock) & ZMQ_POLLIN)) {
        gq_batch_t *batch = gq_lane_recv (self->writer);
        if (!batch) {
            break;
        }
        gq_commit_back (self, batch);
    }
    gq_broker_turn_end (self);
    return 0;
}

/* The reader handed reads back: their replies go, their jobs join the queue. */
static int
s_on_reader (zloop_t *loop, zsock_t *sock, void *arg)
{
    gq_broker_t *self = (gq_broker_t *) arg;
    while (gq_lane_busy (self->reader) && (zsock_events (sock) & ZMQ_POLLIN)) {
        gq_read_t *read = gq_lane_recv (self->reader);
        if (!read) {
            break;
        }
        if (read->kind == GQ_READ_INPUTS) {
            gq_deps_inputs_back (self, read);
        } else {
            gq_queries_status_back (self, read);
        }
    }
    gq_broker_turn_end (self);
    return 0;
}

static int
s_on_router (zloop_t *loop, zsock_t *router, void *arg)
{
    gq_broker_t *self = (gq_broker_t *) arg;
    int64_t started_us = gq_mono_us ();
    int n;
    for (n = 0; n < GQ_TURN_MESSAGES; n++) {
        zmsg_t *zmsg = zmsg_recv (router); /* rcvtimeo 0: NULL when nothing is waiting */
        if (!zmsg) {
            break;
        }
        gq_msg_t *msg = NULL;
        char why[300];
        /* RESULT stays text: gq_results_recv takes its usual shape apart without a tree. */
        int rc = gq_msg_decode_lazy (&zmsg, true, "RESULT", &msg, why, sizeof why);
        if (rc) {
            self->rejected++;
            if (msg) {
                gq_broker_reply (self, gq_msg_error (msg, rc, "%s", why));
            }
            gq_msg_destroy (&msg);
            continue;
        }
        if (gq_guard_role (self->guard, msg, why, sizeof why)) {
            /* A key acting outside its role: refused, and nothing about it is created. */
            self->rejected++;
            gq_broker_reply (self, gq_msg_error (msg, GQ_EDENIED, "%s", why));
        } else {
            gq_broker_handle (self, &msg);
        }
        gq_msg_destroy (&msg);
    }
    gq_broker_turn_end (self);
    int64_t took_us = gq_mono_us () - started_us;
    if (took_us > GQ_SLOW_TURN_US) {
        zsys_warning ("broker: a loop turn of %d messages took %lld ms", n,
                      (long long) (took_us / 1000));
    }
    return 0;
}

/* ---- Cron: periodic work, each with its period --------------------------------------------- */

static int
s_on_cron (zloop_t *loop, int timer_id, void *arg)
{
    gq_broker_t *self = (gq_broker_t *) arg;
    int64_t now_us = gq_mono_us ();
    int64_t now_ms = gq_now_ms ();
    if (now_us >= self->next_heartbeat_us) {
        self->next_heartbeat_us = now_us + (int64_t) self->opts.heartbeat_ms * 1000;
        gq_workers_cron (self, now_us, now_ms);
    }
    gq_workers_recall (self, now_us);
    if (now_us >= self->next_timeouts_us) {
        self->next_timeouts_us = now_us + GQ_TIMEOUTS_PERIOD_MS * 1000;
        gq_results_timeouts (self, now_ms);
        gq_dispatch_record_runs (self, now_us / 1000);
    }
    if (now_us >= self->next_retention_us) {
        self->next_retention_us = now_us + (int64_t) GQ_RETENTION_PERIOD_MS * 1000;
        gq_commit_retention (self, now_ms);
    }
    gq_broker_turn_end (self);
    return 0;
}

/* ---- Construction -------------------------------------------------------------------------- */

/* zhashx destructor of malloc'd text. */
static void
s_free_text (void **item)
{
    free (*item);
    *item = NULL;
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
    self->metrics = self->loop ? gq_metrics_new (opts->metrics, self->loop, gq_queries_metrics,
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
    /* The loop's own commits never checkpoint the WAL: the writer thread does (commit.c). */
    gq_store_autocheckpoint (self->store, false);
    self->matcher = gq_matcher_new (&opts->weights);
    self->queue = gq_queue_new (opts->aging_ms);
    self->jobs = zhashx_new ();
    self->ended = zhashx_new ();
    self->waits = zhashx_new ();
    self->children = zhashx_new ();
    self->affinity_of = zhashx_new ();
    self->kept = zhashx_new ();
    self->affinity_node = zhashx_new ();
    self->arrays = zhashx_new ();
    self->by_connection = zhashx_new ();
    self->replies = zlist_new ();
    self->inflight = zlist_new ();
    self->idem_pending = zhashx_new ();
    self->pending = gq_pending_new (self);
    self->lazy_timer = -1;
    self->retry_timer = -1;
    self->awaiting = zlist_new ();
    self->grace_us = 1000 * (opts->node_grace_ms >= 0
                                 ? opts->node_grace_ms
                                 : (int64_t) opts->heartbeat_ms * opts->liveness);
    self->dirty_watches = zlist_new ();
    self->dirty_workers = zlist_new ();
    self->placed = (gq_dispatch_t *) calloc (GQ_DISPATCH_BATCH_JOBS, sizeof *self->placed);
    if (!self->matcher || !self->queue || !self->jobs || !self->ended || !self->waits ||
        !self->children || !self->affinity_of || !self->affinity_node || !self->kept ||
        !self->arrays || !self->placed ||
        !self->inflight || !self->idem_pending || !self->pending || !self->awaiting) {
        snprintf (why, whylen, "out of memory");
        gq_broker_destroy (&self);
        return NULL;
    }
    self->sched =
        gq_sched_new (self->queue, self->matcher, opts->backfill_window, opts->reserve_after_ms);
    gq_sched_set_prefer (self->sched, gq_dispatch_preferred, self, opts->weights.affinity);
    zhashx_set_destructor (self->affinity_of, s_free_text);
    zhashx_set_destructor (self->kept, gq_watch_kept_free);
    zhashx_t *by_id[] = {self->jobs,        self->ended, self->waits, self->children,
                         self->affinity_of, self->kept,  self->arrays};
    for (size_t t = 0; t < sizeof by_id / sizeof by_id[0]; t++) {
        gq_broker_id_keys (by_id[t]);
    }
    zhashx_set_key_duplicator (self->by_connection, NULL);
    zhashx_set_key_destructor (self->by_connection, NULL);

    self->router = zsock_new (ZMQ_ROUTER);
    if (!self->router) {
        snprintf (why, whylen, "cannot create the ROUTER socket");
        gq_broker_destroy (&self);
        return NULL;
    }
    zsock_set_sndhwm (self->router, GQ_SOCKET_HWM_MESSAGES);
    zsock_set_rcvhwm (self->router, GQ_SOCKET_HWM_MESSAGES);
    zsock_set_maxmsgsize (self->router, (int) GQ_MAX_MSG_BYTES);
    zsock_set_rcvtimeo (self->router, 0);
    zsock_set_linger (self->router, 0);
    self->guard = gq_guard_new (opts, self->router, why, whylen);
    if (!self->guard) {
        gq_broker_destroy (&self);
        return NULL;
    }
    if (gq_store_counts (self->store, self->counts) || gq_arrays_recover (self) ||
        gq_store_recover (self->store, gq_intake_recover, self)) {
        snprintf (why, whylen, "recovery failed: %s", gq_store_errmsg (self->store));
        gq_broker_destroy (&self);
        return NULL;
    }
    self->counts[GQ_JOB_QUEUED] = (int64_t) gq_queue_size (self->queue);
    self->counts[GQ_JOB_RUNNING] = 0;
    if (gq_deps_recover (self)) {
        snprintf (why, whylen, "recovery of dependencies failed: %s",
                  gq_store_errmsg (self->store));
        gq_broker_destroy (&self);
        return NULL;
    }
    gq_arrays_recover_limits (self);
    /* Job ids: never one handed out before, even before its commit (see gq_commit_reserve_ids). */
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
    self->reader = self->writer ? gq_reader_new (opts->db_path, why, whylen) : NULL;
    if (!self->reader) {
        gq_broker_destroy (&self);
        return NULL;
    }
    if (gq_queue_size (self->queue) || self->counts[GQ_JOB_WAITING]) {
        zsys_info ("broker: recovered %lld unfinished jobs from %s",
                   (long long) (gq_queue_size (self->queue) + self->counts[GQ_JOB_WAITING]),
                   opts->db_path);
    }

    if (zsock_bind (self->router, "%s", opts->endpoint) < 0) {
        snprintf (why, whylen, "cannot bind %s: %s (is another broker running there?)",
                  opts->endpoint, zmq_strerror (zmq_errno ()));
        gq_broker_destroy (&self);
        return NULL;
    }
    zloop_reader (self->loop, self->router, s_on_router, self);
    zloop_reader (self->loop, gq_lane_sock (self->writer), s_on_writer, self);
    zloop_reader (self->loop, gq_lane_sock (self->reader), s_on_reader, self);
    zloop_timer (self->loop, GQ_CRON_MS, 0, s_on_cron, self);
    return self;
}

int
gq_broker_run (gq_broker_t *self)
{
    zsys_info ("broker: serving %s with store %s (%s durability)", self->opts.endpoint,
               self->opts.db_path, self->opts.durability == GQ_DURABILITY_FULL ? "full" : "normal");
    int rc = zloop_start (self->loop);
    gq_broker_turn_end (self);
    gq_commit_drain (self); /* everything recorded is committed before we stop */
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
        gq_commit_drain (self);
        gq_lane_destroy (&self->writer);
        /* A clean stop: the next start needs no gap in the ids. */
        if (self->next_id > 0 && gq_store_meta_set (self->store, "next_job_id", self->next_id)) {
            zsys_warning ("broker: %s", gq_store_errmsg (self->store));
        }
    }
    /* Reads in flight are dropped: STATUS goes unanswered, and the jobs waiting for their inputs
       are stored queued, released again after a restart. */
    gq_read_t *read;
    while (self->reader && gq_lane_busy (self->reader) &&
           (read = gq_lane_recv (self->reader))) {
        gq_msg_t *request = (gq_msg_t *) read->request;
        gq_msg_destroy (&request);
        gq_read_destroy (&read);
    }
    gq_lane_destroy (&self->reader);
    gq_pending_t *pending;
    while (self->inflight && (pending = (gq_pending_t *) zlist_pop (self->inflight))) {
        gq_pending_destroy (self, &pending);
    }
    gq_pending_destroy (self, &self->retry);
    zlist_destroy (&self->inflight);
    gq_metrics_destroy (&self->metrics);
    zloop_destroy (&self->loop);
    zsock_destroy (&self->router);
    gq_guard_destroy (&self->guard);
    if (self->jobs) {
        for (gq_job_t *job = (gq_job_t *) zhashx_first (self->jobs); job;
             job = (gq_job_t *) zhashx_next (self->jobs)) {
            gq_broker_job_free (self, &job);
        }
        zhashx_destroy (&self->jobs);
    }
    gq_deps_destroy (self);
    gq_arrays_destroy (self);
    for (size_t w = 0; w < self->workers_size; w++) {
        gq_link_t *worker = self->workers[w];
        if (worker) {
            zframe_destroy (&worker->routing_id);
            zchunk_destroy (&worker->jobs_out);
            json_decref (worker->spec);
            json_decref (worker->models_loaded);
            free (worker->run_ms);
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
    gq_pending_destroy (self, &self->pending);
    zhashx_destroy (&self->ended); /* its jobs were freed with the batches that held them */
    zhashx_destroy (&self->affinity_of);
    zhashx_destroy (&self->kept);
    zhashx_destroy (&self->affinity_node);
    zhashx_destroy (&self->idem_pending);
    free (self->runs);
    gq_awaited_t *awaited;
    while (self->awaiting && (awaited = (gq_awaited_t *) zlist_pop (self->awaiting))) {
        free (awaited);
    }
    zlist_destroy (&self->awaiting);
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
