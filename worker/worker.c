/*  worker.c — the gridq worker daemon.

    The socket thread owns the DEALER and a zloop: it registers (READY), answers heartbeats,
    takes JOB messages and hands each job to an idle slot thread (a zactor with its own backend
    context), and sends results back in batches as slots finish. `echo` runs inline: it is a
    copy, and a thread hop would cost more than the job. When the broker falls silent for
    liveness x heartbeat, the worker opens a fresh socket and registers again, listing the jobs it
    still runs so the broker keeps them here. When the device is lost (a sticky CUDA error), it
    reports the job that met it, takes no other, says BYE and exits GQ_WORKER_EXIT_LOST: only a
    new process gets a working context. */
#include "worker.h"

#include <czmq.h>
#include <string.h>
#include <unistd.h>

#include "exec.h"
#include "gq_json.h"
#include "gq_msg.h"
#include "gq_result.h"
#include "tuning.h"

#define S_PRIORITIES 10 /* job priorities 0..9 */

/* One job on its way through a slot. Owned by the socket thread except while a slot runs it. */
typedef struct {
    gq_task_t task;            /* what gq_exec_run reads */
    gq_outcome_t out;          /* what it writes */
    char kind[GQ_KIND_MAX];    /* task.kind points here */
    char model[GQ_MODEL_MAX];  /* task.model points here ("" -> NULL) */
    zframe_t *blobs[GQ_MAX_BLOBS]; /* task.blobs points here */
    gq_flag_t cancel;          /* task.cancel points here; set by the socket thread */
    /* Bumped (release) by the thread that hands the job over, read (acquire) by the one that
       gets it: the pipe carries the pointer, this the ordering that ThreadSanitizer sees. */
    atomic_uint handoff;
    int slot;                  /* slot running it, -1 while waiting */
    int priority;              /* 0..9 (the JOB's "priority"): which waiting list it joins */
    int64_t started_us;        /* monotonic start */
    /* Its partials (an engine's), on the socket thread: seq numbers from 0, at most
       opts.stream_window sent and not acknowledged by the broker; the rest wait in unsent. */
    int64_t next_seq;          /* seq of the next partial sent */
    int64_t acked;             /* highest seq the broker acknowledged, -1 for none */
    zlist_t *unsent;           /* s_partial_t waiting for the window, oldest first, or NULL */
} s_job_t;

/* A partial on its way from a slot thread to the socket thread (through the slot's pipe). */
typedef struct {
    atomic_uint handoff;       /* bumped (release) by the slot, read (acquire) by the socket
                                  thread: the pipe carries the pointer, this the ordering */
    int64_t id;                /* the job */
    int64_t dropped;           /* partials of the job lost just before this one */
    char *text;                /* its compact JSON (malloc'd) */
} s_partial_t;

/* What a slot's pipe carries to the socket thread, with a pointer. */
enum { S_SLOT_DONE = 0, S_SLOT_PARTIAL = 1 };

typedef struct {
    zactor_t *actor;           /* the slot thread */
    s_job_t *job;              /* job it runs, or NULL when idle */
} s_slot_t;

struct _gq_worker_t {
    gq_worker_opts_t opts;     /* configuration (strings borrowed) */
    char name[GQ_NAME_MAX];    /* node name */
    gq_runtime_t *runtime;     /* backend, device, models, handlers */
    atomic_uint slots_ended;   /* slot threads that have ended (s_slot_args_t) */
    zsock_t *dealer;           /* to the broker */
    zloop_t *loop;
    s_slot_t *slots;           /* n_threads slot threads */
    int n_threads;             /* min (opts.slots, GQ_WORKER_MAX_THREADS): jobs past it wait here */
    zhashx_t *running;         /* job id (as key pointer) -> s_job_t, in a slot or waiting */
    zlist_t *waiting[S_PRIORITIES]; /* s_job_t with no free slot yet, by priority, each in
                                  the order they came: a free slot takes the first of the
                                  highest (prefetched jobs never keep a later, more urgent one
                                  waiting past the jobs that run now) */
    zchunk_t *results;         /* the RESULT text to send at the end of this turn: its head
                                  ({"node":...,"results":[) and n_results entries */
    size_t results_head;       /* bytes of the head */
    size_t n_results;          /* entries in results */
    zchunk_t *entry;           /* the RESULT entry being written, before it joins results */
    zchunk_t *keep;            /* the entries of results without blobs, for sent */
    size_t n_keep;             /* entries in keep */
    zlist_t *result_blobs;     /* frames referenced by results */
    gq_device_info_t device;   /* what the runtime detected */
    int heartbeat_ms;          /* from WELCOME */
    int liveness;              /* from WELCOME */
    int64_t last_heard_us;     /* monotonic time of the broker's last message */
    int64_t last_ready_us;     /* when READY was last sent */
    int64_t last_heartbeat_us; /* when HEARTBEAT was last sent */
    bool registered;           /* WELCOME received on this connection */
    bool resend;               /* send the kept results again behind READY, until WELCOME */
    zlist_t *sent;             /* s_sent_t: results sent lately, kept in case the broker lost
                                  them (it died, or we spoke to a dead socket) */
    size_t n_sent;             /* entries in sent, all messages together */
    zcert_t *cert;             /* CURVE client certificate, or NULL */
    char *server_key;          /* broker public key (Z85), or NULL */
    bool lost;                 /* the device is lost: the loop ends, the process exits */
    uint64_t engines_down;     /* the engines that were down when READY was last built: a
                                  change sends READY again with the kinds that run now */
};

/* A result sent, kept for a while: a broker that restarts loses what it had not committed, and
   a result sent while it was down never arrives. Sent again after re-registering, it saves a
   second run (the broker records the first result of a job and ignores repeats). */
typedef struct {
    int64_t at_us;             /* when they were sent (monotonic) */
    char *entries;             /* the RESULT entries of one message (less those with blobs), as
                                  comma-separated JSON text */
    size_t size;               /* bytes of entries */
    size_t count;              /* entries in entries */
} s_sent_t;

/* ---- Slot threads -------------------------------------------------------------------------- */

/* gq_partial_fn of a slot's jobs (arg: the slot's pipe): the partial goes to the socket thread,
   behind the slot's earlier messages and before its job's end. */
static void
s_slot_partial (void *arg, int64_t id, char *text, int64_t dropped)
{
    s_partial_t *partial = (s_partial_t *) calloc (1, sizeof *partial);
    if (!partial) {
        free (text);
        return;
    }
    partial->id = id;
    partial->dropped = dropped;
    partial->text = text;
    atomic_fetch_add_explicit (&partial->handoff, 1, memory_order_release);
    zsock_send ((zsock_t *) arg, "ip", S_SLOT_PARTIAL, partial);
}

typedef struct {
    gq_runtime_t *runtime;  /* shared by every slot; the worker frees it after the slots */
    int slot;               /* this slot's index */
    atomic_uint *ended;     /* bumped (release) as the slot's last act: the worker reads it
                               (acquire) before it frees what the slots used */
} s_slot_args_t;

static void
s_slot_actor (zsock_t *pipe, void *arg)
{
    s_slot_args_t *args = (s_slot_args_t *) arg;
    gq_exec_t *exec = gq_exec_new (args->runtime, args->slot);
    zsock_signal (pipe, 0);
    for (;;) {
        char *command = NULL;
        void *ptr = NULL;
        if (zsock_recv (pipe, "sp", &command, &ptr) < 0) {
            break;
        }
        bool term = !command || streq (command, "$TERM");
        zstr_free (&command);
        if (term) {
            break;
        }
        s_job_t *job = (s_job_t *) ptr;
        atomic_load_explicit (&job->handoff, memory_order_acquire);
        job->task.on_partial = s_slot_partial;
        job->task.partial_arg = pipe;
        if (exec) {
            gq_exec_run (exec, &job->task, &job->out);
        } else {
            job->out.code = GQ_EBACKEND;
            snprintf (job->out.error, sizeof job->out.error,
                      "slot %d has no backend context (see the worker log)", args->slot);
        }
        atomic_fetch_add_explicit (&job->handoff, 1, memory_order_release);
        zsock_send (pipe, "ip", S_SLOT_DONE, job);
    }
    gq_exec_destroy (&exec);
    atomic_uint *ended = args->ended;
    free (args);
    atomic_fetch_add_explicit (ended, 1, memory_order_release);
}

/* ---- Helpers ------------------------------------------------------------------------------- */

#define S_KEY(id) ((void *) (uintptr_t) (id))

static size_t
s_id_hash (const void *key)
{
    uint64_t x = (uint64_t) (uintptr_t) key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    return (size_t) (x ^ (x >> 33));
}

static int
s_id_compare (const void *a, const void *b)
{
    return a == b ? 0 : ((uintptr_t) a < (uintptr_t) b ? -1 : 1);
}

static void
s_partial_free (s_partial_t **partial_p)
{
    if (*partial_p) {
        free ((*partial_p)->text);
        free (*partial_p);
        *partial_p = NULL;
    }
}

static void
s_job_free (s_job_t **job_p)
{
    s_job_t *job = *job_p;
    if (!job) {
        return;
    }
    s_partial_t *partial;
    while (job->unsent && (partial = (s_partial_t *) zlist_pop (job->unsent))) {
        s_partial_free (&partial);
    }
    zlist_destroy (&job->unsent);
    json_decref (job->task.payload);
    json_decref (job->out.result);
    for (size_t i = 0; i < job->task.n_blobs; i++) {
        zframe_destroy (&job->blobs[i]);
    }
    for (size_t i = 0; i < job->out.n_blobs; i++) {
        zframe_destroy (&job->out.blobs[i]);
    }
    free (job);
    *job_p = NULL;
}

static int
s_send (gq_worker_t *self, const char *command, json_t *body)
{
    gq_msg_t *msg = gq_msg_new (GQ_ROLE_WORKER, command, body);
    return msg ? gq_msg_send (&msg, self->dealer) : GQ_ENOMEM;
}

static void s_flush_results (gq_worker_t *self);

/* Starts the next RESULT text: its head, then entries as they come. */
static void
s_results_reset (gq_worker_t *self)
{
    zchunk_set (self->results, NULL, 0);
    /* The node name is checked (gq_valid_name): nothing in it needs escaping. */
    gq_chunk_name (self->results, "{\"node\":", self->name);
    gq_chunk_raw (self->results, ",\"results\":[");
    self->results_head = zchunk_size (self->results);
    self->n_results = 0;
}

/* Adds one RESULT entry for this turn, written as JSON text (no tree per job); takes result
   (may be NULL) and the output blobs. The entry is written on its own first: by its size, it
   joins this turn's message or starts the next (a broker takes GQ_MAX_JSON_BYTES at most). */
static void
s_result (gq_worker_t *self, int64_t id, int attempt, json_t *result, const char *error,
          double ms, zframe_t **blobs, size_t n_blobs)
{
    zchunk_t *entry = self->entry;
    zchunk_set (entry, NULL, 0);
    /* The shape the broker reads without a tree (gq_result.h). "at", when it ended (wall
       clock): a result sent again to a broker that restarted records its run at its own time,
       not at the time it arrived. */
    gq_result_head (entry, id, attempt, !error, ms, gq_now_ms ());
    char failed[200] = "";
    if (!error) {
        gq_chunk_raw (entry, ",\"result\":");
        if (!result) {
            gq_chunk_raw (entry, "null");
        } else if (gq_chunk_json (entry, result)) {
            /* Not writable as JSON (a string that is not UTF-8): the job fails instead. */
            snprintf (failed, sizeof failed, "worker: the result is not valid JSON (UTF-8)");
        } else if (zchunk_size (entry) > GQ_WORKER_RESULT_MAX_BYTES) {
            snprintf (failed, sizeof failed,
                      "worker: the result is %zu bytes of JSON, past the %d a RESULT carries "
                      "(write large outputs as blobs)",
                      zchunk_size (entry), GQ_WORKER_RESULT_MAX_BYTES);
        }
    } else {
        gq_chunk_raw (entry, ",\"error\":");
        if (gq_chunk_string (entry, error)) {
            gq_chunk_raw (entry, "\"(the error text is not UTF-8)\"");
        }
    }
    json_decref (result);
    if (failed[0]) {
        for (size_t i = 0; i < n_blobs; i++) {
            zframe_destroy (&blobs[i]);
        }
        s_result (self, id, attempt, NULL, failed, ms, NULL, 0);
        return;
    }
    if (self->n_results &&
        (zchunk_size (self->results) + zchunk_size (entry) + 64 > GQ_MESSAGE_BUDGET_BYTES ||
         (n_blobs && zlist_size (self->result_blobs) + n_blobs > GQ_MAX_BLOBS))) {
        s_flush_results (self); /* bytes and frames are counted per message */
    }
    zchunk_t *out = self->results;
    if (self->n_results) {
        gq_chunk_raw (out, ",");
    }
    size_t at = zchunk_size (out);
    zchunk_extend (out, zchunk_data (entry), zchunk_size (entry));
    if (n_blobs) {
        gq_chunk_printf (out, ",\"blobs\":[%zu,%zu]", zlist_size (self->result_blobs), n_blobs);
        for (size_t i = 0; i < n_blobs; i++) {
            zlist_append (self->result_blobs, blobs[i]);
            blobs[i] = NULL;
        }
    }
    gq_chunk_raw (out, "}");
    self->n_results++;
    if (!n_blobs) {
        /* Kept for a resend; one with blobs is not: its frames are gone with the message. */
        if (self->n_keep) {
            gq_chunk_raw (self->keep, ",");
        }
        zchunk_extend (self->keep, zchunk_data (out) + at, zchunk_size (out) - at);
        self->n_keep++;
    }
    if (self->n_results >= GQ_WORKER_RESULTS_PER_MESSAGE ||
        zchunk_size (out) >= GQ_MESSAGE_BUDGET_BYTES) {
        s_flush_results (self);
    }
}

/* Sends a RESULT made of a head, entries (comma-separated JSON text) and the closing "]}". */
static void
s_send_results (gq_worker_t *self, zchunk_t *text, zlist_t *blobs)
{
    gq_chunk_raw (text, "]}");
    gq_msg_t *msg = gq_msg_new_raw (GQ_ROLE_WORKER, "RESULT", (const char *) zchunk_data (text),
                                    zchunk_size (text));
    zframe_t *frame;
    while (blobs && (frame = (zframe_t *) zlist_pop (blobs))) {
        if (msg) {
            gq_msg_add_blob (msg, &frame);
        } else {
            zframe_destroy (&frame);
        }
    }
    if (msg) {
        gq_msg_send (&msg, self->dealer);
    }
}

static void
s_flush_results (gq_worker_t *self)
{
    if (self->n_results == 0) {
        return;
    }
    if (self->n_keep) {
        s_sent_t *sent = (s_sent_t *) malloc (sizeof *sent);
        char *entries = (char *) malloc (zchunk_size (self->keep));
        if (sent && entries) {
            memcpy (entries, zchunk_data (self->keep), zchunk_size (self->keep));
            *sent = (s_sent_t) {gq_mono_us (), entries, zchunk_size (self->keep), self->n_keep};
            zlist_append (self->sent, sent);
            self->n_sent += self->n_keep;
        } else {
            free (sent);
            free (entries);
        }
        zchunk_set (self->keep, NULL, 0);
        self->n_keep = 0;
    }
    s_send_results (self, self->results, self->result_blobs);
    s_results_reset (self);
}

static void
s_sent_drop_first (gq_worker_t *self)
{
    s_sent_t *sent = (s_sent_t *) zlist_pop (self->sent);
    if (sent) {
        self->n_sent -= sent->count;
        free (sent->entries);
        free (sent);
    }
}

/* Forgets results the broker has surely committed: those older than two liveness periods while
   it answers heartbeats. While it does not, everything is kept (up to
   GQ_WORKER_SENT_MAX_RESULTS). */
static void
s_sent_trim (gq_worker_t *self, int64_t now_us)
{
    int64_t keep_us = 2LL * self->heartbeat_ms * self->liveness * 1000;
    s_sent_t *first;
    while ((first = (s_sent_t *) zlist_first (self->sent)) &&
           ((self->registered && now_us - first->at_us > keep_us) ||
            self->n_sent > GQ_WORKER_SENT_MAX_RESULTS)) {
        s_sent_drop_first (self);
    }
}

/* When registering again: every kept result, in the messages they were first sent in (the usual
   size, GQ_WORKER_RESULTS_PER_MESSAGE at most). */
static void
s_sent_resend (gq_worker_t *self)
{
    if (zlist_size (self->sent) == 0) {
        return;
    }
    zchunk_t *text = zchunk_new (NULL, 4096);
    for (s_sent_t *sent = (s_sent_t *) zlist_first (self->sent); sent && text;
         sent = (s_sent_t *) zlist_next (self->sent)) {
        zchunk_set (text, zchunk_data (self->results), self->results_head);
        zchunk_extend (text, sent->entries, sent->size);
        s_send_results (self, text, NULL);
    }
    zchunk_destroy (&text);
    zsys_info ("worker: sent %zu recent results again after registering", self->n_sent);
}

/* ---- Registration -------------------------------------------------------------------------- */

static json_t *
s_spec (gq_worker_t *self)
{
    gq_runtime_device (self->runtime, &self->device);
    const gq_worker_opts_t *o = &self->opts;
    int64_t total = o->vram_mb >= 0 ? o->vram_mb : self->device.vram_total_mb;
    int64_t free_mb = o->vram_mb >= 0 ? o->vram_mb : self->device.vram_free_mb;
    if (free_mb > total) {
        free_mb = total;
    }
    json_t *models = gq_runtime_models (self->runtime);
    json_t *spec = json_pack (
        "{s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:i, s:o, s:O, s:O, s:o}", "name", self->name,
        "gpu_model", o->gpu_model ? o->gpu_model : self->device.name, "backend",
        gq_runtime_backend_name (self->runtime), "vram_total_mb", (json_int_t) total,
        "vram_free_mb", (json_int_t) free_mb, "tflops",
        o->tflops >= 0 ? o->tflops : self->device.tflops, "price_per_hour", o->price, "slots",
        o->slots, "kinds", gq_runtime_kinds (self->runtime), "models_available",
        json_object_get (models, "available"), "models_loaded", json_object_get (models, "loaded"),
        "engines", gq_runtime_engines (self->runtime));
    json_decref (models);
    return spec;
}

static void
s_ready (gq_worker_t *self)
{
    self->engines_down = gq_runtime_engines_down (self->runtime);
    json_t *running = json_array ();
    for (s_job_t *job = (s_job_t *) zhashx_first (self->running); job;
         job = (s_job_t *) zhashx_next (self->running)) {
        json_array_append_new (running, json_pack ("{s:I, s:i}", "id", (json_int_t) job->task.id,
                                                   "attempt", job->task.attempt));
    }
    s_send (self, "READY", json_pack ("{s:o, s:o}", "spec", s_spec (self), "running", running));
    self->last_ready_us = gq_mono_us ();
    if (self->resend) {
        /* Right behind READY on the same socket: the broker reads them in the same turn, and
           records them before it places the jobs again. */
        s_sent_resend (self);
    }
}

static int
s_connect (gq_worker_t *self, char *why, size_t whylen)
{
    zsock_destroy (&self->dealer);
    self->dealer = zsock_new (ZMQ_DEALER);
    if (!self->dealer) {
        snprintf (why, whylen, "cannot create a DEALER socket");
        return GQ_EIO;
    }
    zsock_set_linger (self->dealer, 0);
    zsock_set_rcvtimeo (self->dealer, 0);
    zsock_set_sndhwm (self->dealer, GQ_WORKER_SOCKET_HWM_MESSAGES);
    zsock_set_rcvhwm (self->dealer, GQ_WORKER_SOCKET_HWM_MESSAGES);
    zsock_set_maxmsgsize (self->dealer, (int) GQ_MAX_MSG_BYTES);
    if (self->cert) {
        zcert_apply (self->cert, self->dealer);
        zsock_set_curve_serverkey (self->dealer, self->server_key);
    }
    if (zsock_connect (self->dealer, "%s", self->opts.broker) < 0) {
        snprintf (why, whylen, "cannot connect to %s: %s", self->opts.broker,
                  zmq_strerror (zmq_errno ()));
        return GQ_EIO;
    }
    self->registered = false;
    self->last_heard_us = gq_mono_us ();
    return GQ_OK;
}

/* ---- Jobs ---------------------------------------------------------------------------------- */

static void
s_start (gq_worker_t *self, s_job_t *job)
{
    for (int i = 0; i < self->n_threads; i++) {
        if (!self->slots[i].job) {
            self->slots[i].job = job;
            job->slot = i;
            job->started_us = gq_mono_us ();
            atomic_fetch_add_explicit (&job->handoff, 1, memory_order_release);
            zsock_send (self->slots[i].actor, "sp", "RUN", job);
            return;
        }
    }
    job->slot = -1;
    zlist_append (self->waiting[job->priority], job);
}

/* The next waiting job to start (the first of the highest priority), taken off its list, or
   NULL. */
static s_job_t *
s_waiting_pop (gq_worker_t *self)
{
    for (int p = S_PRIORITIES - 1; p >= 0; p--) {
        if (zlist_size (self->waiting[p])) {
            return (s_job_t *) zlist_pop (self->waiting[p]);
        }
    }
    return NULL;
}

static void
s_on_job (gq_worker_t *self, gq_msg_t *msg)
{
    json_t *jobs = json_object_get (gq_msg_body (msg), "jobs");
    size_t i;
    json_t *item;
    json_array_foreach (jobs, i, item) {
        json_int_t id = json_integer_value (json_object_get (item, "id"));
        int attempt = (int) json_integer_value (json_object_get (item, "attempt"));
        const char *kind = json_string_value (json_object_get (item, "kind"));
        json_t *payload = json_object_get (item, "payload");
        if (id <= 0 || !kind) {
            continue;
        }
        if (zhashx_lookup (self->running, S_KEY (id))) {
            continue; /* we run it already (a repeat after re-registration) */
        }
        if (streq (kind, "echo")) {
            s_result (self, id, attempt, json_incref (payload ? payload : json_null ()), NULL, 0,
                      NULL, 0);
            continue;
        }
        s_job_t *job = (s_job_t *) calloc (1, sizeof *job);
        if (!job) {
            s_result (self, id, attempt, NULL, "worker out of memory", 0, NULL, 0);
            continue;
        }
        snprintf (job->kind, sizeof job->kind, "%s", kind);
        const char *model = json_string_value (json_object_get (item, "model"));
        snprintf (job->model, sizeof job->model, "%s", model ? model : "");
        job->task.id = id;
        job->task.attempt = attempt;
        json_t *array = json_object_get (item, "array");
        job->task.array_id = json_integer_value (json_object_get (array, "id"));
        job->task.array_index = json_integer_value (json_object_get (array, "index"));
        job->task.kind = job->kind;
        job->task.model = model ? job->model : NULL;
        job->task.payload = json_incref (payload ? payload : json_object ());
        job->task.timeout_ms = json_integer_value (json_object_get (item, "timeout_ms"));
        json_int_t priority = json_integer_value (json_object_get (item, "priority"));
        job->priority = priority > 0 && priority < S_PRIORITIES ? (int) priority : 0;
        job->task.cancel = &job->cancel;
        job->acked = -1;
        json_t *blobs = json_object_get (item, "blobs");
        if (json_is_array (blobs)) {
            size_t first = (size_t) json_integer_value (json_array_get (blobs, 0));
            size_t count = (size_t) json_integer_value (json_array_get (blobs, 1));
            for (size_t b = 0; b < count && b < GQ_MAX_BLOBS; b++) {
                zframe_t *frame = gq_msg_blob (msg, first + b);
                if (frame) {
                    job->blobs[job->task.n_blobs++] = zframe_dup (frame);
                }
            }
        }
        job->task.blobs = job->blobs;
        zhashx_insert (self->running, S_KEY (id), job);
        s_start (self, job);
    }
}

static void
s_on_cancel (gq_worker_t *self, gq_msg_t *msg)
{
    json_t *ids = json_object_get (gq_msg_body (msg), "ids");
    size_t i;
    json_t *item;
    json_array_foreach (ids, i, item) {
        s_job_t *job = (s_job_t *) zhashx_lookup (self->running,
                                                  S_KEY (json_integer_value (item)));
        if (!job) {
            continue;
        }
        if (job->slot < 0) {
            /* Not started: it simply goes. The broker has freed its slot already. */
            zlist_remove (self->waiting[job->priority], job);
            zhashx_delete (self->running, S_KEY (job->task.id));
            s_job_free (&job);
        } else {
            job->cancel = 1; /* the slot stops it and reports; the report is then ignored */
        }
    }
}

/* RECALL: the broker takes back jobs it prefetched here; those not started yet go (as a cancel
   does), and RECALLED names them, so that the broker places them elsewhere. A job that started
   meanwhile stays and ends here as usual. */
static void
s_on_recall (gq_worker_t *self, gq_msg_t *msg)
{
    json_t *ids = json_object_get (gq_msg_body (msg), "ids");
    json_t *given = json_array ();
    size_t i;
    json_t *item;
    json_array_foreach (ids, i, item) {
        s_job_t *job = (s_job_t *) zhashx_lookup (self->running,
                                                  S_KEY (json_integer_value (item)));
        if (job && job->slot < 0) {
            json_array_append_new (given, json_integer ((json_int_t) job->task.id));
            zlist_remove (self->waiting[job->priority], job);
            zhashx_delete (self->running, S_KEY (job->task.id));
            s_job_free (&job);
        }
    }
    s_send (self, "RECALLED", json_pack ("{s:o}", "ids", given));
}

/* Whether the device is lost; says so once, when it is first seen. */
static bool
s_lost (gq_worker_t *self)
{
    char why[256];
    if (!self->lost && gq_runtime_lost (self->runtime, why, sizeof why)) {
        zsys_error ("worker: %s: the GPU is lost (%s); no more jobs here: exiting with status %d "
                    "so that a new worker process gets a working device",
                    self->name, why, GQ_WORKER_EXIT_LOST);
        self->lost = true;
    }
    return self->lost;
}

/* ---- Partials: slot -> socket thread -> broker, within the window ------------------------- */

/* Sends one partial of job to the broker as PARTIAL {"id", "seq", "partial", "dropped"?}. */
static void
s_partial_send (gq_worker_t *self, s_job_t *job, s_partial_t *partial)
{
    zchunk_t *text = zchunk_new (NULL, strlen (partial->text) + 96);
    gq_chunk_raw (text, "{\"id\":");
    gq_chunk_int (text, job->task.id);
    gq_chunk_raw (text, ",\"seq\":");
    gq_chunk_int (text, job->next_seq++);
    if (partial->dropped) {
        gq_chunk_raw (text, ",\"dropped\":");
        gq_chunk_int (text, partial->dropped);
    }
    gq_chunk_raw (text, ",\"partial\":");
    gq_chunk_raw (text, partial->text);
    gq_chunk_raw (text, "}");
    gq_msg_t *msg = gq_msg_new_raw (GQ_ROLE_WORKER, "PARTIAL", (const char *) zchunk_data (text),
                                    zchunk_size (text));
    zchunk_destroy (&text);
    if (msg) {
        gq_msg_send (&msg, self->dealer);
    }
}

/* Sends job's waiting partials while the window has room (all of them when all). */
static void
s_partials_pump (gq_worker_t *self, s_job_t *job, bool all)
{
    s_partial_t *partial;
    while (job->unsent && zlist_size (job->unsent) &&
           (all || job->next_seq - job->acked - 1 < self->opts.stream_window)) {
        partial = (s_partial_t *) zlist_pop (job->unsent);
        s_partial_send (self, job, partial);
        s_partial_free (&partial);
    }
}

/* A partial from a slot: sent now when the job's window has room, else it waits; past a
   window's worth waiting, the oldest waiting one drops, counted in the next. Never blocks. */
static void
s_on_partial (gq_worker_t *self, s_partial_t *partial)
{
    atomic_load_explicit (&partial->handoff, memory_order_acquire);
    s_job_t *job = (s_job_t *) zhashx_lookup (self->running, S_KEY (partial->id));
    if (!job || job->cancel) {
        s_partial_free (&partial); /* cancelled or timed out: the broker has moved on */
        return;
    }
    if (!job->unsent) {
        job->unsent = zlist_new ();
    }
    if (!job->unsent || zlist_append (job->unsent, partial)) {
        s_partial_free (&partial);
        return;
    }
    if (zlist_size (job->unsent) > (size_t) self->opts.stream_window) {
        s_partial_t *oldest = (s_partial_t *) zlist_pop (job->unsent);
        s_partial_t *next = (s_partial_t *) zlist_first (job->unsent);
        next->dropped += oldest->dropped + 1;
        s_partial_free (&oldest);
    }
    s_partials_pump (self, job, false);
}

/* PARTIAL_ACK {"id", "seq"}: the broker relayed the job's partials up to seq. */
static void
s_on_partial_ack (gq_worker_t *self, gq_msg_t *msg)
{
    json_t *body = gq_msg_body (msg);
    json_t *seq = json_object_get (body, "seq");
    s_job_t *job = (s_job_t *) zhashx_lookup (
        self->running, S_KEY (json_integer_value (json_object_get (body, "id"))));
    if (!job || !json_is_integer (seq) || json_integer_value (seq) >= job->next_seq) {
        return;
    }
    if (json_integer_value (seq) > job->acked) {
        job->acked = json_integer_value (seq);
    }
    s_partials_pump (self, job, false);
}

/* Takes one message from a slot's pipe: a partial, or a finished job whose result it queues. */
static void
s_slot_done (gq_worker_t *self, zsock_t *pipe)
{
    /* zloop may call us for a pipe whose message an earlier callback of the same poll round
       took already (see s_on_slot): never block here. */
    if (!(zsock_events (pipe) & ZMQ_POLLIN)) {
        return;
    }
    void *ptr = NULL;
    int what = -1;
    if (zsock_recv (pipe, "ip", &what, &ptr) < 0 || !ptr) {
        return;
    }
    if (what == S_SLOT_PARTIAL) {
        s_on_partial (self, (s_partial_t *) ptr);
        return;
    }
    s_job_t *job = (s_job_t *) ptr;
    atomic_load_explicit (&job->handoff, memory_order_acquire);
    self->slots[job->slot].job = NULL;
    double ms = (double) (gq_mono_us () - job->started_us) / 1000.0;
    if (!job->cancel) {
        s_partials_pump (self, job, true); /* every partial before the result */
    }
    if (job->cancel) {
        /* Cancelled or timed out: the broker has moved on and ignores a report. */
    } else if (job->out.code == GQ_OK) {
        s_result (self, job->task.id, job->task.attempt, job->out.result, NULL, ms,
                  job->out.blobs, job->out.n_blobs);
        job->out.result = NULL;
        job->out.n_blobs = 0;
    } else {
        const char *error = job->out.error[0] ? job->out.error : gq_strerror (job->out.code);
        char text[sizeof job->out.error + 128];
        if (s_lost (self)) {
            snprintf (text, sizeof text, "%s (the GPU is lost until worker %s restarts)", error,
                      self->name);
            error = text;
        }
        s_result (self, job->task.id, job->task.attempt, NULL, error, ms, NULL, 0);
    }
    zhashx_delete (self->running, S_KEY (job->task.id));
    s_job_free (&job);
    s_job_t *next = s_lost (self) ? NULL : s_waiting_pop (self);
    if (next) {
        s_start (self, next);
    }
}

static int
s_on_slot (zloop_t *loop, zsock_t *pipe, void *arg)
{
    gq_worker_t *self = (gq_worker_t *) arg;
    s_slot_done (self, pipe);
    /* Several slots may finish together: take what else is ready before sending. */
    for (int i = 0; i < self->n_threads; i++) {
        zsock_t *other = zactor_sock (self->slots[i].actor);
        if (self->slots[i].job) {
            s_slot_done (self, other);
        }
    }
    s_flush_results (self);
    return self->lost ? -1 : 0; /* a lost device ends the loop, its results sent */
}

/* ---- The socket thread --------------------------------------------------------------------- */

/* Sends HEARTBEAT: the answer to the broker's (echo = its "t"), or our own when the broker has
   been silent for a heartbeat (echo NULL) — heartbeats go both ways, so a broker that restarted
   hears from us within one heartbeat and tells us to register. */
static void
s_heartbeat (gq_worker_t *self, json_t *t)
{
    self->last_heartbeat_us = gq_mono_us ();
    gq_runtime_device (self->runtime, &self->device);
    json_t *models = gq_runtime_models (self->runtime);
    int64_t free_mb = self->opts.vram_mb >= 0 ? self->opts.vram_mb : self->device.vram_free_mb;
    json_t *body = json_pack ("{s:O, s:I, s:O, s:i}", "echo", t ? t : json_null (),
                              "vram_free_mb", (json_int_t) free_mb, "models_loaded",
                              json_object_get (models, "loaded"), "running",
                              (int) zhashx_size (self->running));
    json_decref (models);
    s_send (self, "HEARTBEAT", body);
}

static void
s_on_heartbeat (gq_worker_t *self, gq_msg_t *msg)
{
    s_heartbeat (self, json_object_get (gq_msg_body (msg), "t"));
}

static int
s_on_broker (zloop_t *loop, zsock_t *dealer, void *arg)
{
    gq_worker_t *self = (gq_worker_t *) arg;
    for (int n = 0; n < GQ_WORKER_TURN_MESSAGES; n++) {
        zmsg_t *zmsg = zmsg_recv (dealer);
        if (!zmsg) {
            break;
        }
        gq_msg_t *msg = NULL;
        char why[256];
        if (gq_msg_decode (&zmsg, false, &msg, why, sizeof why)) {
            zsys_warning ("worker: bad message from the broker: %s", why);
            gq_msg_destroy (&msg);
            continue;
        }
        self->last_heard_us = gq_mono_us ();
        const char *command = gq_msg_command (msg);
        if (streq (command, "JOB")) {
            s_on_job (self, msg);
        } else if (streq (command, "HEARTBEAT")) {
            s_on_heartbeat (self, msg);
        } else if (streq (command, "CANCEL")) {
            s_on_cancel (self, msg);
        } else if (streq (command, "RECALL")) {
            s_on_recall (self, msg);
        } else if (streq (command, "PARTIAL_ACK")) {
            s_on_partial_ack (self, msg);
        } else if (streq (command, "WELCOME")) {
            json_t *body = gq_msg_body (msg);
            int64_t hb, liveness;
            char field[100];
            if (gq_json_int (body, "heartbeat_ms", 10, 3600000, GQ_HEARTBEAT_MS, &hb, field,
                             sizeof field) == 0 &&
                gq_json_int (body, "liveness", 1, 1000, GQ_LIVENESS, &liveness, field,
                             sizeof field) == 0) {
                self->heartbeat_ms = (int) hb;
                self->liveness = (int) liveness;
            }
            if (!self->registered) {
                zsys_info ("worker: %s registered with %s", self->name, self->opts.broker);
            }
            self->registered = true;
            self->resend = false;
        } else if (streq (command, "REGISTER")) {
            /* The broker does not know us (it restarted): register again, at most once per
               heartbeat so a burst of REGISTER replies does not become a burst of READY. */
            if (gq_mono_us () - self->last_ready_us > (int64_t) self->heartbeat_ms * 500) {
                self->registered = false;
                self->resend = true;
                s_ready (self);
            }
        } else if (streq (command, "ERROR")) {
            zsys_warning ("worker: broker says %s: %s",
                          json_string_value (json_object_get (gq_msg_body (msg), "code")),
                          json_string_value (json_object_get (gq_msg_body (msg), "message")));
        }
        gq_msg_destroy (&msg);
    }
    s_flush_results (self);
    return 0;
}

static int
s_on_tick (zloop_t *loop, int timer_id, void *arg)
{
    gq_worker_t *self = (gq_worker_t *) arg;
    if (s_lost (self)) {
        return -1; /* found between jobs (a heartbeat's memory query met the error) */
    }
    int64_t now_us = gq_mono_us ();
    int64_t silence_us = (int64_t) self->heartbeat_ms * self->liveness * 1000;
    s_sent_trim (self, now_us);
    if (now_us - self->last_heard_us > silence_us) {
        zsys_info ("worker: no word from %s for %d ms; reconnecting", self->opts.broker,
                   (int) ((now_us - self->last_heard_us) / 1000));
        zloop_reader_end (loop, self->dealer);
        char why[256];
        if (s_connect (self, why, sizeof why)) {
            zsys_error ("worker: %s", why);
            return -1;
        }
        zloop_reader (loop, self->dealer, s_on_broker, self);
        self->resend = true;
        s_ready (self);
        /* Acknowledgements of what the old socket sent will not come: open the windows. */
        for (s_job_t *job = (s_job_t *) zhashx_first (self->running); job;
             job = (s_job_t *) zhashx_next (self->running)) {
            job->acked = job->next_seq - 1;
            s_partials_pump (self, job, false);
        }
    } else if (!self->registered && now_us - self->last_ready_us > 1000LL * self->heartbeat_ms) {
        s_ready (self);
    } else if (self->registered &&
               gq_runtime_engines_down (self->runtime) != self->engines_down) {
        /* An engine or a server went down or came back: READY again (the broker takes it as a
           new spec and keeps this worker's jobs), so that its kind is offered only while it
           runs. */
        zsys_info ("worker: an engine or a server went down or came back; registering the kinds "
                   "that run");
        s_ready (self);
    } else if (self->registered &&
               now_us - self->last_heartbeat_us > 1000LL * self->heartbeat_ms) {
        s_heartbeat (self, NULL);
    }
    return 0;
}

/* ---- Construction -------------------------------------------------------------------------- */

void
gq_worker_opts_default (gq_worker_opts_t *opts)
{
    memset (opts, 0, sizeof *opts);
    opts->broker = GQ_DEFAULT_ENDPOINT;
    opts->backend = "auto";
    opts->slots = 1;
    opts->vram_mb = -1;
    opts->tflops = -1;
    opts->engine_ready_timeout_ms = GQ_ENGINE_READY_TIMEOUT_MS;
    opts->stream_window = GQ_WORKER_STREAM_WINDOW_COUNT;
}

gq_worker_t *
gq_worker_new (const gq_worker_opts_t *opts, char *why, size_t whylen)
{
    gq_worker_t *self = (gq_worker_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    self->opts = *opts;
    if (self->opts.stream_window < 1) {
        self->opts.stream_window = GQ_WORKER_STREAM_WINDOW_COUNT;
    }
    self->heartbeat_ms = GQ_HEARTBEAT_MS;
    self->liveness = GQ_LIVENESS;
    gq_runtime_opts_t ropts = {opts->backend, opts->device, opts->models_dir, 0};
    self->runtime = gq_runtime_new (&ropts, why, whylen);
    if (!self->runtime) {
        gq_worker_destroy (&self);
        return NULL;
    }
    for (size_t i = 0; i < opts->n_handlers; i++) {
        if (gq_runtime_add_handler (self->runtime, opts->handlers[i], why, whylen)) {
            gq_worker_destroy (&self);
            return NULL;
        }
    }
    for (size_t i = 0; i < opts->n_engines; i++) {
        if (gq_runtime_add_engine (self->runtime, opts->engines[i],
                                   opts->engine_slots > 0 ? opts->engine_slots : opts->slots,
                                   opts->engine_ready_timeout_ms, why, whylen)) {
            gq_worker_destroy (&self);
            return NULL;
        }
    }
    for (size_t i = 0; i < opts->n_openai; i++) {
        if (gq_runtime_add_openai (self->runtime, opts->openai[i],
                                   opts->engine_slots > 0 ? opts->engine_slots : opts->slots,
                                   opts->engine_ready_timeout_ms, why, whylen)) {
            gq_worker_destroy (&self);
            return NULL;
        }
    }
    /* Registered only once the engines and servers said which models they hold. */
    gq_runtime_wait_engines (self->runtime);
    gq_runtime_device (self->runtime, &self->device);
    if (opts->name) {
        snprintf (self->name, sizeof self->name, "%s", opts->name);
    } else {
        char host[64] = "host";
        gethostname (host, sizeof host - 1);
        for (char *p = host; *p; p++) {
            if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
                  (*p >= '0' && *p <= '9') || *p == '-' || *p == '.')) {
                *p = '-';
            }
        }
        snprintf (self->name, sizeof self->name, "%.40s-%s%d", host,
                  gq_runtime_backend_name (self->runtime), opts->device);
    }
    if (!gq_valid_name (self->name, GQ_NAME_MAX)) {
        snprintf (why, whylen, "--name '%s' is not a valid node name ([A-Za-z0-9_.:@+-])",
                  self->name);
        gq_worker_destroy (&self);
        return NULL;
    }
    if (opts->server_cert_path && !opts->cert_path) {
        snprintf (why, whylen, "--server-cert needs --cert too (this worker's secret certificate)");
        gq_worker_destroy (&self);
        return NULL;
    }
    if (opts->cert_path) {
        self->cert = zcert_load (opts->cert_path);
        zcert_t *server = opts->server_cert_path ? zcert_load (opts->server_cert_path) : NULL;
        if (!self->cert || !server) {
            snprintf (why, whylen, "cannot load certificate %s: missing or not a czmq certificate",
                      !self->cert ? opts->cert_path
                                  : (opts->server_cert_path ? opts->server_cert_path
                                                            : "(no --server-cert given)"));
            zcert_destroy (&server);
            gq_worker_destroy (&self);
            return NULL;
        }
        self->server_key = strdup (zcert_public_txt (server));
        zcert_destroy (&server);
        /* A public certificate given as --cert loads with an all-zero secret key: CURVE would
           then fail at every handshake, silently. Refuse it now. */
        static const byte zero[32] = {0};
        if (memcmp (zcert_secret_key (self->cert), zero, sizeof zero) == 0) {
            snprintf (why, whylen, "certificate %s has no secret key: give NAME.secret, not "
                                   "NAME.pub, to --cert",
                      opts->cert_path);
            gq_worker_destroy (&self);
            return NULL;
        }
    }
    self->running = zhashx_new ();
    zhashx_set_key_hasher (self->running, s_id_hash);
    zhashx_set_key_comparator (self->running, s_id_compare);
    zhashx_set_key_duplicator (self->running, NULL);
    zhashx_set_key_destructor (self->running, NULL);
    for (int p = 0; p < S_PRIORITIES; p++) {
        self->waiting[p] = zlist_new ();
    }
    self->results = zchunk_new (NULL, 8192);
    self->entry = zchunk_new (NULL, 1024);
    self->keep = zchunk_new (NULL, 8192);
    self->result_blobs = zlist_new ();
    self->sent = zlist_new ();
    /* A thread per slot, up to a bound: more threads than that only contend for the same
       device, and each costs sockets and file descriptors. Jobs past it wait their turn here
       (the broker still counts every slot: an echo job, run inline, never waits). */
    self->n_threads = opts->slots < GQ_WORKER_MAX_THREADS ? opts->slots : GQ_WORKER_MAX_THREADS;
    self->slots = (s_slot_t *) calloc ((size_t) self->n_threads, sizeof *self->slots);
    self->loop = zloop_new ();
    if (!self->slots || !self->loop || !self->results || !self->keep) {
        snprintf (why, whylen, "out of memory");
        gq_worker_destroy (&self);
        return NULL;
    }
    s_results_reset (self);
    for (int i = 0; i < self->n_threads; i++) {
        s_slot_args_t *args = (s_slot_args_t *) calloc (1, sizeof *args);
        args->runtime = self->runtime;
        args->slot = i;
        args->ended = &self->slots_ended;
        self->slots[i].actor = zactor_new (s_slot_actor, args);
        zloop_reader (self->loop, zactor_sock (self->slots[i].actor), s_on_slot, self);
    }
    if (s_connect (self, why, whylen)) {
        gq_worker_destroy (&self);
        return NULL;
    }
    zloop_reader (self->loop, self->dealer, s_on_broker, self);
    zloop_timer (self->loop, GQ_WORKER_TICK_MS, 0, s_on_tick, self);
    return self;
}

int
gq_worker_run (gq_worker_t *self)
{
    zsys_info ("worker: %s (%s backend, %s, %lld MiB) connecting to %s with %d slot%s",
               self->name, gq_runtime_backend_name (self->runtime),
               self->opts.gpu_model ? self->opts.gpu_model : self->device.name,
               (long long) (self->opts.vram_mb >= 0 ? self->opts.vram_mb
                                                    : self->device.vram_total_mb),
               self->opts.broker, self->opts.slots, self->opts.slots == 1 ? "" : "s");
    s_ready (self);
    int rc = zloop_start (self->loop);
    /* Stop what runs, then say goodbye so the broker requeues at once. */
    for (s_job_t *job = (s_job_t *) zhashx_first (self->running); job;
         job = (s_job_t *) zhashx_next (self->running)) {
        job->cancel = 1;
    }
    s_send (self, "BYE", NULL);
    if (self->lost) {
        /* The failed job's result and BYE must leave before the socket closes. */
        zsock_set_linger (self->dealer, GQ_WORKER_LOST_LINGER_MS);
        return GQ_WORKER_EXIT_LOST;
    }
    return rc < 0 ? 1 : 0;
}

void
gq_worker_destroy (gq_worker_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_worker_t *self = *self_p;
    zloop_destroy (&self->loop);
    if (self->slots) {
        for (int i = 0; i < self->n_threads; i++) {
            if (self->slots[i].job) {
                self->slots[i].job->cancel = 1;
            }
            zactor_destroy (&self->slots[i].actor); /* waits for the slot to finish */
        }
        atomic_load_explicit (&self->slots_ended, memory_order_acquire);
        free (self->slots);
    }
    if (self->running) {
        for (s_job_t *job = (s_job_t *) zhashx_first (self->running); job;
             job = (s_job_t *) zhashx_next (self->running)) {
            s_job_free (&job);
        }
        zhashx_destroy (&self->running);
    }
    for (int p = 0; p < S_PRIORITIES; p++) {
        zlist_destroy (&self->waiting[p]);
    }
    zchunk_destroy (&self->results);
    zchunk_destroy (&self->entry);
    zchunk_destroy (&self->keep);
    zframe_t *frame;
    while (self->result_blobs && (frame = (zframe_t *) zlist_pop (self->result_blobs))) {
        zframe_destroy (&frame);
    }
    zlist_destroy (&self->result_blobs);
    while (self->sent && zlist_size (self->sent)) {
        s_sent_drop_first (self);
    }
    zlist_destroy (&self->sent);
    zsock_destroy (&self->dealer);
    zcert_destroy (&self->cert);
    free (self->server_key);
    gq_runtime_destroy (&self->runtime);
    free (self);
    *self_p = NULL;
}
