/*  dispatch.c — placements out: the scheduler picks a node for each queued job it can place,
    and each worker gets its jobs of the turn as JOB messages (JSON text spliced from what the
    broker holds; a job with blobs travels alone, since frames are counted per message). */
#include "broker_internal.h"

/* Sends a worker the JOB message built so far. */
static void
s_worker_flush_jobs (gq_broker_t *self, gq_link_t *worker)
{
    zchunk_extend (worker->jobs_out, "]}", 2);
    gq_msg_t *msg =
        gq_msg_new_raw (GQ_ROLE_WORKER, "JOB", (const char *) zchunk_data (worker->jobs_out),
                        zchunk_size (worker->jobs_out));
    gq_msg_set_routing_id (msg, worker->routing_id);
    gq_msg_send (&msg, self->router);
    worker->dirty = false;
    worker->jobs_out_count = 0;
    if (zchunk_max_size (worker->jobs_out) > GQ_JOB_MESSAGE_KEEP_BYTES) {
        zchunk_destroy (&worker->jobs_out); /* do not keep a huge buffer after a burst */
    }
}

void
gq_dispatch_started (gq_broker_t *self, gq_job_t *job, int64_t now_ms)
{
    job->started_ms = now_ms;
    job->started_mono_ms = gq_mono_us () / 1000;
    job->run_recorded = false;
    job->recalling = false;
    if (self->runs_count == self->runs_size) {
        size_t size = self->runs_size ? self->runs_size * 2 : 1024;
        gq_run_t *grown = (gq_run_t *) malloc (size * sizeof *grown);
        if (!grown) {
            return; /* out of memory: this run is recorded when it ends */
        }
        for (size_t i = 0; i < self->runs_count; i++) {
            grown[i] = self->runs[(self->runs_head + i) % self->runs_size];
        }
        free (self->runs);
        self->runs = grown;
        self->runs_size = size;
        self->runs_head = 0;
    }
    self->runs[(self->runs_head + self->runs_count++) % self->runs_size] =
        (gq_run_t) {job->id, job->started_mono_ms, job->attempts};
}

void
gq_dispatch_record_runs (gq_broker_t *self, int64_t now_mono_ms)
{
    while (self->runs_count) {
        gq_run_t *run = &self->runs[self->runs_head];
        if (now_mono_ms - run->started_mono_ms < GQ_RUN_RECORD_AFTER_MS) {
            break;
        }
        gq_job_t *job = gq_broker_job_lookup (self, run->id);
        if (job && job->state == GQ_JOB_RUNNING && job->attempts == run->attempt &&
            !job->run_recorded) {
            job->run_recorded = true;
            gq_commit_recorded (self, gq_batch_attempt (self->pending->batch, job->id,
                                                        job->attempts,
                                                        gq_broker_node_name (self, job->node),
                                                        job->started_ms, 0, "running", NULL,
                                                        true));
        }
        self->runs_head = (self->runs_head + 1) % self->runs_size;
        self->runs_count--;
    }
}

int32_t
gq_dispatch_preferred (void *arg, const gq_job_t *job)
{
    gq_broker_t *self = (gq_broker_t *) arg;
    if (!zhashx_size (self->affinity_of)) {
        return -1; /* no job in memory has a key: nothing to look up */
    }
    const char *key = (const char *) zhashx_lookup (self->affinity_of, GQ_ID_KEY (job->id));
    void *node = key ? zhashx_lookup (self->affinity_node, key) : NULL;
    return node ? (int32_t) ((intptr_t) node - 1) : -1;
}

/* Job (of an affinity key) was placed on node: the next of its key prefers it. */
static void
s_affinity_placed (gq_broker_t *self, const gq_job_t *job, int32_t node)
{
    const char *key = (const char *) zhashx_lookup (self->affinity_of, GQ_ID_KEY (job->id));
    if (!key) {
        return;
    }
    if (zhashx_size (self->affinity_node) >= GQ_AFFINITY_KEYS &&
        !zhashx_lookup (self->affinity_node, key)) {
        zhashx_purge (self->affinity_node); /* hints only: start afresh rather than grow */
    }
    zhashx_update (self->affinity_node, key, (void *) (intptr_t) (node + 1));
}

/* An array's element carries its array: ,"array":{"id":A,"index":i} (the worker hands both to
   handlers as GRIDQ_ARRAY_ID and GRIDQ_ARRAY_INDEX). Nothing for other jobs. */
static void
s_array_field (gq_broker_t *self, const gq_job_t *job, zchunk_t *out)
{
    gq_array_t *array = gq_arrays_of (self, job);
    if (array) {
        gq_chunk_raw (out, ",\"array\":{\"id\":");
        gq_chunk_int (out, array->id);
        gq_chunk_raw (out, ",\"index\":");
        gq_chunk_int (out, gq_arrays_index (array, job->id));
        gq_chunk_raw (out, "}");
    }
}

/* Places queued jobs on nodes and appends them to each worker's JOB message of this turn. */
void
gq_dispatch_turn (gq_broker_t *self)
{
    if (self->store_down_ms) {
        return; /* a run would start that no commit can record: no new work until it can */
    }
    int64_t now_ms = gq_now_ms ();
    size_t placed;
    do {
        int64_t t0 = gq_mono_us ();
        placed = gq_sched_run (self->sched, now_ms, self->placed, GQ_DISPATCH_BATCH_JOBS);
        if (placed) {
            gq_metrics_observe (self->metrics, GQ_HIST_MATCH_US,
                                (double) (gq_mono_us () - t0) / (double) placed);
        }
        for (size_t i = 0; i < placed; i++) {
            gq_job_t *job = self->placed[i].job;
            gq_link_t *worker = self->workers[self->placed[i].node];
            self->counts[GQ_JOB_QUEUED]--;
            gq_broker_count_running (self, job, 1);
            job->attempts++;
            gq_dispatch_started (self, job, now_ms);
            gq_workers_running_link (worker, job);
            if (job->watchers) {
                gq_watch_state (self, job);
            }
            if (zhashx_size (self->affinity_of)) {
                s_affinity_placed (self, job, self->placed[i].node);
            }
            if (job->blobs) {
                /* Jobs with blobs travel alone: frames are counted per message. */
                char head[200];
                int n = snprintf (head, sizeof head,
                                  "{\"jobs\":[{\"id\":%lld,\"attempt\":%d,\"kind\":\"%s\","
                                  "\"timeout_ms\":%u,\"priority\":%d,\"blobs\":[0,%zu],"
                                  "\"model\":",
                                  (long long) job->id, job->attempts,
                                  gq_matcher_kind_name (self->matcher, job->kind_id),
                                  job->timeout_ms, job->priority,
                                  zlist_size ((zlist_t *) job->blobs));
                zchunk_t *text = zchunk_new (head, (size_t) n);
                const char *model = gq_broker_model_name (self, job);
                gq_chunk_printf (text, model ? "\"%s\"" : "null", model ? model : "");
                s_array_field (self, job, text);
                gq_chunk_raw (text, ",\"payload\":");
                zchunk_extend (text, job->payload, job->payload_len);
                gq_chunk_raw (text, "}]}");
                gq_msg_t *msg = gq_msg_new_raw (
                    GQ_ROLE_WORKER, "JOB", (const char *) zchunk_data (text), zchunk_size (text));
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
            const char *model = gq_broker_model_name (self, job);
            gq_chunk_raw (out, "{\"id\":");
            gq_chunk_int (out, job->id);
            gq_chunk_raw (out, ",\"attempt\":");
            gq_chunk_int (out, job->attempts);
            gq_chunk_name (out, ",\"kind\":", gq_matcher_kind_name (self->matcher, job->kind_id));
            gq_chunk_raw (out, ",\"timeout_ms\":");
            gq_chunk_int (out, job->timeout_ms);
            gq_chunk_raw (out, ",\"priority\":");
            gq_chunk_int (out, job->priority);
            gq_chunk_name (out, ",\"model\":", model);
            s_array_field (self, job, out);
            gq_chunk_raw (out, ",\"payload\":");
            zchunk_extend (out, job->payload, job->payload_len);
            zchunk_extend (out, "}", 1);
            worker->jobs_out_count++;
            if (worker->jobs_out_count >= GQ_JOB_MESSAGE_JOBS ||
                zchunk_size (out) >= GQ_MESSAGE_BUDGET_BYTES) {
                /* Send a part now: the worker starts on it while we place the rest (and a
                   message stays within what a worker takes from its broker). */
                s_worker_flush_jobs (self, worker);
                zlist_remove (self->dirty_workers, worker);
            }
        }
    } while (placed == GQ_DISPATCH_BATCH_JOBS);
    gq_link_t *worker;
    while ((worker = (gq_link_t *) zlist_pop (self->dirty_workers))) {
        s_worker_flush_jobs (self, worker);
    }
}
