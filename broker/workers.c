/*  workers.c — the workers the broker knows: a link per node (its connection, the jobs running
    there, the JOB text of the turn), READY (registration, and jobs a worker still runs after a
    broker restart), HEARTBEAT (round trip, free VRAM, loaded models), BYE, and liveness. */
#include "broker_internal.h"

#include <math.h>

#include <string.h>

/* ---- Links ---------------------------------------------------------------------------------- */

gq_link_t *
gq_workers_link (gq_broker_t *self, int32_t node)
{
    if ((size_t) node >= self->workers_size) {
        size_t size = self->workers_size ? self->workers_size : 64;
        while (size <= (size_t) node) {
            size *= 2;
        }
        gq_link_t **grown = (gq_link_t **) realloc (self->workers, size * sizeof *grown);
        if (!grown) {
            return NULL;
        }
        memset (grown + self->workers_size, 0, (size - self->workers_size) * sizeof *grown);
        self->workers = grown;
        self->workers_size = size;
    }
    if (!self->workers[node]) {
        gq_link_t *worker = (gq_link_t *) calloc (1, sizeof *worker);
        if (!worker) {
            return NULL;
        }
        worker->node = node;
        self->workers[node] = worker;
    }
    return self->workers[node];
}

gq_link_t *
gq_workers_by_connection (gq_broker_t *self, zframe_t *routing_id)
{
    char key[520];
    gq_broker_hex (routing_id, key, sizeof key);
    return (gq_link_t *) zhashx_lookup (self->by_connection, key);
}

void
gq_workers_running_link (gq_link_t *worker, gq_job_t *job)
{
    job->qprev = NULL;
    job->qnext = worker->running;
    if (worker->running) {
        worker->running->qprev = job;
    }
    worker->running = job;
}

void
gq_workers_running_unlink (gq_link_t *worker, gq_job_t *job)
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

/* ---- Prefetch -------------------------------------------------------------------------------

   A node with slots S takes S + prefetch jobs at once; those past its free slots wait in the
   worker's queue, and start the moment a slot frees, without a round trip to the broker. It
   pays for kinds whose jobs run short there (their average run time below --prefetch-below):
   prefetch = min (--prefetch-max, ceil (round trip / that run time)), jobs enough to cover the
   gap. Kinds not measured there yet, or long, are slow: they take slots but no prefetch, and a
   node whose slots all hold slow jobs takes nothing beyond them (gq_node_capacity), so no job
   waits behind a long one. */

void
gq_workers_prefetch (gq_broker_t *self, gq_link_t *worker)
{
    gq_node_t *node = gq_matcher_node (self->matcher, worker->node);
    int32_t prefetch = 0;
    if (self->opts.prefetch_max > 0 && worker->short_ms > 0 && node->rtt_ms > 0) {
        double want = ceil ((double) node->rtt_ms / (double) worker->short_ms);
        prefetch = want < self->opts.prefetch_max ? (int32_t) want : self->opts.prefetch_max;
    }
    if (prefetch != node->prefetch) {
        node->prefetch = prefetch;
        gq_matcher_node_changed (self->matcher, worker->node);
    }
}

void
gq_workers_ran (gq_broker_t *self, gq_link_t *worker, int kind, double ms)
{
    if (kind < 0 || kind >= GQ_MAX_KINDS || !(ms >= 0) || ms > 1e9) {
        return;
    }
    if (!worker->run_ms) {
        worker->run_ms = (float *) malloc (GQ_MAX_KINDS * sizeof (float));
        if (!worker->run_ms) {
            return;
        }
        for (int k = 0; k < GQ_MAX_KINDS; k++) {
            worker->run_ms[k] = -1;
        }
    }
    float *avg = &worker->run_ms[kind];
    *avg = *avg < 0 ? (float) ms
                    : (float) ((1 - GQ_PREFETCH_EWMA_WEIGHT) * *avg + GQ_PREFETCH_EWMA_WEIGHT * ms);
    gq_node_t *node = gq_matcher_node (self->matcher, worker->node);
    bool is_short = *avg < self->opts.prefetch_below_ms;
    uint64_t bit = 1ULL << kind;
    uint64_t kinds = is_short ? node->short_kinds | bit : node->short_kinds & ~bit;
    if (is_short) {
        worker->short_ms = worker->short_ms > 0 ? (float) ((1 - GQ_PREFETCH_EWMA_WEIGHT) *
                                                               worker->short_ms +
                                                           GQ_PREFETCH_EWMA_WEIGHT * ms)
                                                : (float) ms;
        if (!(worker->short_ms > 0)) {
            worker->short_ms = 1e-3f; /* a run too short to time: a microsecond */
        }
    }
    if (kinds != node->short_kinds) {
        node->short_kinds = kinds;
        if (!kinds) {
            worker->short_ms = 0; /* no short kind left: nothing to prefetch */
        }
        gq_matcher_node_changed (self->matcher, worker->node);
    }
    gq_workers_prefetch (self, worker);
}

int32_t
gq_workers_queued_behind (gq_broker_t *self, const gq_job_t *job)
{
    if (job->state != GQ_JOB_RUNNING || job->node < 0) {
        return 0;
    }
    gq_link_t *worker = self->workers[job->node];
    int32_t slots = gq_matcher_node (self->matcher, job->node)->slots;
    int32_t position = -1, held = 0; /* the list is newest first */
    for (gq_job_t *other = worker->running; other; other = other->qnext) {
        position = other == job ? held : position;
        held++;
    }
    int32_t ahead = position >= 0 ? held - 1 - position : 0; /* the older ones */
    return ahead >= slots ? ahead : 0;
}

void
gq_workers_recall (gq_broker_t *self, int64_t now_us)
{
    if (!gq_matcher_available_count (self->matcher) || !self->workers_size) {
        return; /* no node could take a job now: nowhere better to send one */
    }
    size_t last = self->recall_cursor;
    int64_t now_mono_ms = now_us / 1000;
    int64_t now_ms = gq_now_ms ();
    /* Each candidate costs a pick: a budget per tick keeps a fleet full of prefetched jobs
       from turning the cron into a scan; the rest are looked at in the next ticks. */
    int budget = GQ_PREFETCH_RECALL_PICKS;
    for (size_t n = 0; n < self->workers_size && budget > 0; n++) {
        size_t w = (self->recall_cursor + n) % self->workers_size;
        last = w;
        gq_link_t *worker = self->workers[w];
        gq_node_t *node =
            worker && worker->routing_id ? gq_matcher_node (self->matcher, worker->node) : NULL;
        if (!node || node->running <= node->slots) {
            continue;
        }
        /* The newest (running - slots) jobs had not started (gq_workers_queued_behind). */
        json_t *ids = NULL;
        int32_t unstarted = node->running - node->slots;
        for (gq_job_t *job = worker->running; job && unstarted > 0;
             job = job->qnext, unstarted--) {
            if (job->recalling ||
                now_mono_ms - job->started_mono_ms < self->opts.prefetch_recall_ms ||
                budget <= 0) {
                continue;
            }
            budget--;
            int32_t better = gq_matcher_pick (self->matcher, job, now_ms);
            if (better < 0 || better == job->node) {
                continue;
            }
            job->recalling = true;
            ids = ids ? ids : json_array ();
            json_array_append_new (ids, json_integer ((json_int_t) job->id));
        }
        if (ids) {
            gq_workers_send (self, worker, "RECALL", json_pack ("{s:o}", "ids", ids));
        }
    }
    /* A budget spent: the next tick goes on after the last worker looked at. */
    self->recall_cursor = budget > 0 ? 0 : (last + 1) % self->workers_size;
}

void
gq_workers_recalled (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *worker)
{
    json_t *ids = json_object_get (gq_msg_body (*request_p), "ids");
    if (!json_is_array (ids)) {
        gq_broker_reject (self, *request_p, GQ_EINVAL, "\"ids\" must be an array");
        return;
    }
    int64_t now_ms = gq_now_ms ();
    size_t i;
    json_t *item;
    json_array_foreach (ids, i, item) {
        gq_job_t *job = json_is_integer (item)
                            ? gq_broker_job_lookup (self, (int64_t) json_integer_value (item))
                            : NULL;
        /* Only a job we placed there and asked back: anything else is stale or made up. */
        if (job && job->state == GQ_JOB_RUNNING && job->node == worker->node && job->recalling) {
            gq_results_attempt_recalled (self, job, now_ms);
        } else if (!json_is_integer (item)) {
            self->rejected++;
        }
    }
}

void
gq_workers_send (gq_broker_t *self, gq_link_t *worker, const char *command, json_t *body)
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

/* A worker is gone (silent, said goodbye, or replaced): its jobs go back to the queue. */
void
gq_workers_lost (gq_broker_t *self, gq_link_t *worker, const char *reason, bool exclude,
                 int64_t now_ms)
{
    gq_node_t *node = gq_matcher_node (self->matcher, worker->node);
    zsys_info ("broker: node %s offline: %s", node->name, reason);
    /* Offline first: a node that is gone is no verdict on the jobs it ran
       (gq_results_attempt_failed fails a job early only when every connected node that could run it
       failed it). */
    node->status = GQ_NODE_OFFLINE;
    gq_matcher_node_changed (self->matcher, worker->node);
    worker->offline_us = gq_mono_us ();
    /* The worker starts its jobs in the order they came, at most slots at a time: of the jobs
       it held, all but the slots oldest had not started: those it had prefetched go back to the
       queue (gq_results_attempt_recalled), no node excluded. The list is newest first. */
    int32_t held = 0;
    for (gq_job_t *job = worker->running; job; job = job->qnext) {
        held++;
    }
    int32_t unstarted = held > node->slots ? held - node->slots : 0;
    gq_job_t *next;
    for (gq_job_t *job = worker->running; job && unstarted > 0; job = next, unstarted--) {
        next = job->qnext;
        gq_results_attempt_recalled (self, job, now_ms);
    }
    while (worker->running) {
        gq_job_t *job = worker->running;
        gq_results_attempt_failed (self, job, "lost", reason, exclude, now_ms);
    }
    if (worker->routing_id) {
        zhashx_delete (self->by_connection, worker->key);
        zframe_destroy (&worker->routing_id);
    }
    node->status = GQ_NODE_OFFLINE;
    gq_matcher_node_changed (self->matcher, worker->node);
}

/* ---- Worker commands ----------------------------------------------------------------------- */

/* Interns a JSON array of model names (or {"name"} objects) into ids. */
static size_t
s_model_ids (gq_broker_t *self, json_t *models, uint32_t *ids, size_t max)
{
    size_t n = 0;
    size_t i;
    json_t *item;
    json_array_foreach (models, i, item)
    {
        const char *name = json_is_object (item)
                               ? json_string_value (json_object_get (item, "name"))
                               : json_string_value (item);
        int64_t id = name ? gq_matcher_model_id (self->matcher, name, true) : -1;
        if (id > 0 && n < max) {
            ids[n++] = (uint32_t) id;
        }
    }
    return n;
}

static void
s_worker_models (gq_broker_t *self, gq_link_t *worker, json_t *available,
                 json_t *loaded)
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

void
gq_workers_ready (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *unused)
{
    gq_msg_t *request = *request_p;
    int64_t now_us = gq_mono_us ();
    int64_t now_ms = gq_now_ms ();
    json_t *body = gq_msg_body (request);
    gq_nodespec_t spec;
    char why[300];
    if (gq_nodespec_parse (json_object_get (body, "spec"), &spec, why, sizeof why)) {
        gq_broker_reject (self, request, GQ_EINVAL, why);
        return;
    }
    json_t *running = json_object_get (body, "running");
    if (running && !json_is_array (running)) {
        gq_broker_reject (self, request, GQ_EINVAL, "\"running\" must be an array");
        return;
    }
    /* Intern kinds first: a full kinds table refuses the node rather than misroute jobs. */
    uint64_t kinds = 0;
    size_t i;
    json_t *item;
    json_array_foreach (spec.kinds, i, item)
    {
        int id = gq_matcher_kind_id (self->matcher, json_string_value (item), true);
        if (id < 0) {
            gq_broker_reject (self, request, GQ_EINVAL, "too many distinct kinds on this broker");
            return;
        }
        kinds |= 1ULL << id;
    }
    if (gq_matcher_node_find (self->matcher, spec.name) < 0 &&
        gq_matcher_nodes (self->matcher) >= GQ_MAX_NODES) {
        /* Names are remembered for good (jobs' exclusions refer to them): bound them. */
        gq_broker_reject (self, request, GQ_ETOOBIG, "this broker knows too many nodes already");
        return;
    }
    int32_t index = gq_matcher_node_find_or_add (self->matcher, spec.name);
    gq_link_t *worker = index >= 0 ? gq_workers_link (self, index) : NULL;
    if (!worker) {
        gq_broker_reject (self, request, GQ_ENOMEM, "out of memory");
        return;
    }
    if (worker->spec && !streq (worker->owner_key, gq_msg_user_id (request))) {
        gq_broker_reject (self, request, GQ_EDENIED, "node name registered by another key");
        return;
    }
    snprintf (worker->owner_key, sizeof worker->owner_key, "%s", gq_msg_user_id (request));
    char key[520];
    gq_broker_hex (gq_msg_routing_id (request), key, sizeof key);
    gq_link_t *previous = (gq_link_t *) zhashx_lookup (self->by_connection, key);
    if (previous && previous != worker) {
        /* One connection that changed its name: the old node is gone. */
        gq_workers_lost (self, previous, "re-registered under another name", false, now_ms);
    }
    if (worker->routing_id && strcmp (worker->key, key) != 0) {
        /* The same name from a new connection: the worker restarted; its old jobs are lost. */
        gq_workers_lost (self, worker, "registered again from a new connection", false, now_ms);
    }
    if (!worker->routing_id) {
        worker->routing_id = zframe_dup (gq_msg_routing_id (request));
        snprintf (worker->key, sizeof worker->key, "%s", key);
        zhashx_insert (self->by_connection, worker->key, worker);
    }
    json_decref (worker->spec);
    worker->spec = json_deep_copy (json_object_get (body, "spec"));
    worker->offline_us = 0;
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

    /* Jobs the worker still runs (we restarted, or it was silent a while): kept there if it
       runs the job's latest attempt and the job waits; otherwise stopped, and its run recorded
       (never a second row for a run recorded already). */
    json_t *unwanted = json_array ();
    json_array_foreach (running, i, item)
    {
        int64_t id = (int64_t) json_integer_value (json_object_get (item, "id"));
        int64_t attempt = json_integer_value (json_object_get (item, "attempt"));
        gq_job_t *job = gq_broker_job_find (self, id);
        if (job && job->state == GQ_JOB_WAITING && attempt >= job->attempts && attempt < 256 &&
            node->running < node->slots) {
            gq_arrays_adopt (self, job); /* a held element takes an admitted one's place */
        }
        if (job && job->state == GQ_JOB_QUEUED && attempt >= job->attempts && attempt < 256 &&
            node->running < node->slots) {
            gq_queue_remove (self->queue, job);
            self->counts[GQ_JOB_QUEUED]--;
            job->attempts = (uint8_t) attempt;
            job->state = GQ_JOB_RUNNING;
            job->node = index;
            gq_dispatch_started (self, job, now_ms);
            gq_matcher_assign (self->matcher, index, job);
            gq_workers_running_link (worker, job);
            gq_broker_count_running (self, job, 1);
            gq_watch_state (self, job);
            continue;
        }
        if (job && job->node == index && job->state == GQ_JOB_RUNNING) {
            continue; /* ours already */
        }
        json_array_append_new (unwanted, json_integer (id));
        if (job && attempt >= 1 && attempt < 256) {
            gq_commit_recorded (self, gq_batch_attempt (self->pending->batch, id, (int) attempt,
                                                        node->name, now_ms, now_ms, "cancelled",
                                                        "the job had moved on without this run",
                                                        false));
        }
    }
    if (json_array_size (unwanted)) {
        gq_workers_send (self, worker, "CANCEL", json_pack ("{s:O}", "ids", unwanted));
    }
    json_decref (unwanted);
    gq_commit_recorded (self,
                        gq_batch_node (self->pending->batch, node->name, node->gpu_model,
                                       node->vram_total_mb, node->tflops, node->price_per_hour,
                                       now_ms, node->jobs_ok, node->jobs_failed));
    zsys_info ("broker: node %s ready: %s, %d MiB, %.1f TFLOPS, %d slot%s", node->name,
               node->gpu_model, node->vram_total_mb, node->tflops, node->slots,
               node->slots == 1 ? "" : "s");
    gq_broker_reply (
        self, gq_msg_reply (request, "WELCOME",
                            json_pack ("{s:i, s:i, s:s}", "heartbeat_ms", self->opts.heartbeat_ms,
                                       "liveness", self->opts.liveness, "node", node->name)));
    /* A heartbeat right behind: its echo gives the round trip now, not a heartbeat later, so
       prefetch can start with the first short jobs. */
    gq_msg_t *probe = gq_msg_new (GQ_ROLE_WORKER, "HEARTBEAT",
                                  json_pack ("{s:I}", "t", (json_int_t) gq_mono_us ()));
    if (probe) {
        gq_msg_set_routing_id (probe, worker->routing_id);
        gq_broker_reply (self, probe); /* after WELCOME, in order */
    }
}

void
gq_workers_heartbeat (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *worker)
{
    gq_msg_t *request = *request_p;
    int64_t now_us = gq_mono_us ();
    json_t *body = gq_msg_body (request);
    json_t *echo = json_object_get (body, "echo");
    gq_node_t *node = gq_matcher_node (self->matcher, worker->node);
    bool changed = false;
    /* "t" is our monotonic clock in microseconds, echoed. */
    json_int_t sent = json_is_integer (echo) ? json_integer_value (echo) : -1;
    if (sent >= 0 && sent <= now_us) {
        double rtt = (double) (now_us - sent) / 1000.0;
        if (rtt < 600000) {
            node->rtt_ms = node->rtt_ms > 0 ? (float) (0.8 * node->rtt_ms + 0.2 * rtt) : (float) rtt;
            changed = true;
            gq_workers_prefetch (self, worker);
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

void
gq_workers_bye (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *worker)
{
    gq_workers_lost (self, worker, "the worker said goodbye", false, gq_now_ms ());
}

/* ---- Liveness ------------------------------------------------------------------------------ */

void
gq_workers_cron (gq_broker_t *self, int64_t now_us, int64_t now_ms)
{
    int64_t silence_us = (int64_t) self->opts.heartbeat_ms * self->opts.liveness * 1000;
    char body[64];
    int n = snprintf (body, sizeof body, "{\"t\":%lld}", (long long) now_us);
    for (size_t w = 0; w < self->workers_size; w++) {
        gq_link_t *worker = self->workers[w];
        if (!worker || !worker->routing_id) {
            continue;
        }
        if (now_us - worker->last_seen_us > silence_us) {
            char reason[100];
            snprintf (reason, sizeof reason, "no message for %d heartbeats of %d ms",
                      self->opts.liveness, self->opts.heartbeat_ms);
            gq_workers_lost (self, worker, reason, true, now_ms);
            continue;
        }
        gq_msg_t *msg = gq_msg_new_raw (GQ_ROLE_WORKER, "HEARTBEAT", body, (size_t) n);
        gq_msg_set_routing_id (msg, worker->routing_id);
        gq_msg_send (&msg, self->router);
    }
}
