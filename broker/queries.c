/*  queries.c — what clients ask about: STATUS, RESULT, JOBS, NODES, STATS, EXPLAIN and PING,
    answered from memory or, for jobs that left it, from the store; and the text of /metrics. */
#include "broker_internal.h"
#include "explain.h"
#include "reader.h"

#include <string.h>

/* The JSON of job id: from memory (*in_memory true), else from the store when the id was ever
   handed out; NULL when there is no such job. full: with payload (and, from the store, the
   attempts' detail), for RESULT. */
static json_t *
s_job_json (gq_broker_t *self, int64_t id, bool full, bool *in_memory)
{
    gq_job_t *job = gq_broker_job_find (self, id);
    if (in_memory) {
        *in_memory = job != NULL;
    }
    if (job) {
        return gq_broker_job_json (self, job, full);
    }
    if (!gq_broker_id_issued (self, id)) {
        return NULL;
    }
    return full ? gq_store_job_json (self->store, id, true)
                : gq_store_job_brief_json (self->store, id, false);
}

void
gq_queries_status (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *unused)
{
    gq_msg_t *request = *request_p;
    int64_t *ids;
    size_t count;
    if (!gq_broker_request_ids (self, request, &ids, &count)) {
        return;
    }
    /* Jobs in memory are answered here, as text; the stored ones by the reader thread (the
       reply goes when it is back: gq_queries_status_back), so that a client polling many
       finished ids does not hold the loop. */
    gq_read_t *read = gq_read_new (request, count, GQ_MESSAGE_BUDGET_BYTES);
    if (!read) {
        free (ids);
        gq_broker_reject (self, request, GQ_ENOMEM, "out of memory");
        return;
    }
    for (size_t i = 0; i < count; i++) {
        gq_job_t *job = gq_broker_job_find (self, ids[i]);
        gq_array_t *array = job ? NULL : gq_arrays_find (self, ids[i]);
        if (job) {
            gq_read_text_begin (read, ids[i]);
            gq_broker_job_text (self, job, false, read->pre);
            gq_read_text_end (read);
        } else if (array) {
            json_t *entry = gq_arrays_entry (array);
            char *text = entry ? json_dumps (entry, JSON_COMPACT) : NULL;
            json_decref (entry);
            gq_read_text_begin (read, ids[i]);
            gq_chunk_raw (read->pre, text ? text : "null");
            gq_read_text_end (read);
            free (text);
        } else if (gq_broker_id_issued (self, ids[i])) {
            gq_read_stored (read, ids[i]);
        } else {
            gq_read_unknown (read, ids[i]);
        }
    }
    free (ids);
    *request_p = NULL; /* the read holds it until the reply */
    if (read->stored && gq_lane_send (self->reader, read) == 0) {
        return;
    }
    gq_read_run (read, self->store);
    gq_queries_status_back (self, read);
}

void
gq_queries_status_back (gq_broker_t *self, gq_read_t *read)
{
    gq_msg_t *request = (gq_msg_t *) read->request;
    if (read->error) {
        gq_broker_reject (self, request, GQ_ESTORE, read->errmsg);
    } else {
        gq_broker_charge_unknown (self, request, read->n_missing);
        zchunk_t *text = zchunk_new (NULL, zchunk_size (read->jobs) + zchunk_size (read->missing) +
                                               zchunk_size (read->more) + 64);
        gq_chunk_printf (text, "{\"req\":%lld,\"jobs\":[", (long long) gq_msg_req (request));
        zchunk_extend (text, zchunk_data (read->jobs), zchunk_size (read->jobs));
        gq_chunk_raw (text, "],\"missing\":[");
        zchunk_extend (text, zchunk_data (read->missing), zchunk_size (read->missing));
        if (zchunk_size (read->more)) {
            gq_chunk_raw (text, "],\"more\":[");
            zchunk_extend (text, zchunk_data (read->more), zchunk_size (read->more));
        }
        gq_chunk_raw (text, "]}");
        gq_msg_t *reply = gq_msg_new_raw (GQ_ROLE_CLIENT, "STATUS",
                                          (const char *) zchunk_data (text), zchunk_size (text));
        zchunk_destroy (&text);
        if (reply) {
            gq_msg_set_routing_id (reply, gq_msg_routing_id (request));
        }
        gq_broker_reply (self, reply);
    }
    gq_msg_destroy (&request);
    gq_read_destroy (&read);
}

void
gq_queries_result (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *unused)
{
    gq_msg_t *request = *request_p;
    int64_t id;
    if (!gq_broker_request_id (self, request, &id)) {
        return;
    }
    gq_job_t *ended = gq_broker_job_find (self, id);
    if (ended && ended->end && zlist_append (self->pending->held, request) == 0) {
        /* Its end is not committed yet: answered from the store, with its whole history, once
           it is (the next batch commits after the one that holds the end). */
        *request_p = NULL;
        return;
    }
    bool in_memory;
    json_t *json = s_job_json (self, id, true, &in_memory);
    if (!json) {
        gq_broker_charge_unknown (self, request, 1);
        gq_broker_reply (self, gq_msg_error (request, GQ_ENOTFOUND, "no job %lld", (long long) id));
        return;
    }
    gq_msg_t *reply = gq_msg_reply (request, "RESULT", json_pack ("{s:o}", "job", json));
    if (!in_memory) {
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
    gq_broker_reply (self, reply);
}

/* ---- JOBS ---------------------------------------------------------------------------------- */

/* A listing being made. With arrays, an array's elements are one entry, the array's (as STATUS
   gives it), where the first of them comes in the listing's order; with expand, up to expand of
   them follow in the entry's "elements", in that order. Entries and elements count against
   limit, so that a reply stays bounded. */
typedef struct {
    json_t *jobs;    /* the entries, in order */
    size_t limit;    /* entries and elements, at most */
    size_t rows;     /* entries and elements so far */
    bool arrays;     /* an array's elements are its entry */
    size_t expand;   /* elements shown per array */
    zhashx_t *given; /* array id -> its entry (borrowed from jobs), with arrays */
} s_list_t;

static bool
s_list_full (const s_list_t *list)
{
    return list->rows >= list->limit;
}

/* Where job id goes: the JSON array that takes it (the listing, or its array's elements; the
   caller appends it), or NULL when its array's entry stands for it (*array says which) or the
   listing is full. */
static json_t *
s_list_place (gq_broker_t *self, s_list_t *list, int64_t id, bool in_array, gq_array_t **array)
{
    *array = list->arrays && in_array ? gq_arrays_holding (self, id) : NULL;
    if (s_list_full (list)) {
        return NULL;
    }
    json_t *into = list->jobs;
    if (*array) {
        json_t *entry = (json_t *) zhashx_lookup (list->given, GQ_ID_KEY ((*array)->id));
        if (!entry) {
            entry = gq_arrays_entry (*array);
            if (list->expand) {
                json_object_set_new (entry, "elements", json_array ());
            }
            json_array_append_new (list->jobs, entry);
            zhashx_insert (list->given, GQ_ID_KEY ((*array)->id), entry);
            list->rows++;
        }
        into = json_object_get (entry, "elements");
        if (s_list_full (list) || json_array_size (into) >= list->expand) {
            return NULL;
        }
    }
    list->rows++;
    return into;
}

/* Adds a job in memory (or its array's entry). */
static void
s_list_job (gq_broker_t *self, s_list_t *list, const gq_job_t *job)
{
    gq_array_t *array;
    json_t *into = s_list_place (self, list, job->id, job->in_array, &array);
    if (into) {
        json_array_append_new (into, gq_broker_job_json (self, job, false));
    }
}

/* The id of row i of a page of stored jobs (0 past its end). */
static int64_t
s_row_id (json_t *page, size_t i)
{
    return (int64_t) json_integer_value (json_object_get (json_array_get (page, i), "id"));
}

static int
s_newest_first (const void *a, const void *b)
{
    int64_t x = (*(gq_job_t *const *) a)->id, y = (*(gq_job_t *const *) b)->id;
    return x < y ? 1 : x > y ? -1 : 0;
}

/* Jobs of a final state (or all, state -1), newest first: the stored rows, and the jobs that
   ended but whose end is not committed yet (the store has them queued, or not at all); a job in
   memory shows its live state. The store is read in pages, each below the last; an array whose
   entry has all it may show is passed over in one step (the next page starts below its first
   element), so that its elements cost one page at most. */
static void
s_jobs_listed (gq_broker_t *self, int state, s_list_t *list)
{
    size_t n_ended = 0;
    gq_job_t **ended = (gq_job_t **) malloc ((zhashx_size (self->ended) + 1) * sizeof *ended);
    for (gq_job_t *job = (gq_job_t *) zhashx_first (self->ended); job && ended;
         job = (gq_job_t *) zhashx_next (self->ended)) {
        if (state < 0 || job->state == state) {
            ended[n_ended++] = job;
        }
    }
    if (n_ended) {
        qsort (ended, n_ended, sizeof *ended, s_newest_first);
    }
    json_t *page = NULL;
    size_t i = 0, e = 0, rows = 0;
    int64_t below = INT64_MAX;
    bool more = true;
    while (!s_list_full (list)) {
        if (i == rows && more) {
            if (rows && s_row_id (page, rows - 1) < below) {
                below = s_row_id (page, rows - 1);
            }
            json_decref (page);
            size_t want = list->limit - list->rows;
            page = gq_store_jobs_json (self->store, state, below, want);
            rows = json_array_size (page);
            i = 0;
            more = rows == want;
        }
        json_t *item = json_array_get (page, i);
        int64_t id = s_row_id (page, i);
        if (i == rows && e == n_ended) {
            break;
        }
        if (e < n_ended && ended[e]->id >= id) {
            i += ended[e]->id == id; /* the store's row is older news */
            s_list_job (self, list, ended[e++]);
            continue;
        }
        i++;
        gq_array_t *array;
        json_t *into = s_list_place (self, list, id, true, &array);
        if (into) {
            gq_job_t *job = gq_broker_job_lookup (self, id);
            json_array_append_new (into, job ? gq_broker_job_json (self, job, false)
                                             : json_incref (item));
        } else if (array) {
            /* Its entry shows all it may: on below its first element. */
            below = array->first < below ? array->first : below;
            while (i < rows && s_row_id (page, i) >= array->first) {
                i++;
            }
            while (e < n_ended && ended[e]->id >= array->first) {
                e++;
            }
        }
    }
    free (ended);
    json_decref (page);
}

/* Jobs waiting, oldest first: for their dependencies, or held by their arrays' limits. */
static void
s_jobs_waiting (gq_broker_t *self, s_list_t *list)
{
    /* An array's entry needs one of its held elements, and its elements no more than it shows. */
    int64_t *ids;
    size_t n = gq_deps_waiting (self, list->arrays ? (list->expand ? list->expand : 1) : SIZE_MAX,
                                &ids);
    for (size_t i = 0; i < n && !s_list_full (list); i++) {
        gq_job_t *job = gq_broker_job_lookup (self, ids[i]);
        if (job) {
            s_list_job (self, list, job);
        }
    }
    free (ids);
}

void
gq_queries_jobs (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *unused)
{
    gq_msg_t *request = *request_p;
    json_t *body = gq_msg_body (request);
    const char *state_name;
    int64_t limit, expand;
    bool arrays;
    char why[200];
    if (gq_json_str (body, "state", 16, NULL, &state_name, why, sizeof why) ||
        gq_json_int (body, "limit", 1, GQ_MAX_IDS, 100, &limit, why, sizeof why) ||
        gq_json_bool (body, "arrays", false, &arrays, why, sizeof why) ||
        gq_json_int (body, "expand", 0, GQ_MAX_IDS, 0, &expand, why, sizeof why)) {
        gq_broker_reject (self, request, GQ_EINVAL, why);
        return;
    }
    int state = state_name ? gq_job_state_parse (state_name) : -1;
    if (state_name && state < 0) {
        gq_broker_reject (self, request, GQ_EINVAL,
                          "\"state\" must be waiting, queued, running, done, failed or "
                          "cancelled");
        return;
    }
    s_list_t list = {.jobs = json_array (), .limit = (size_t) limit, .arrays = arrays,
                     .expand = (size_t) expand, .given = arrays ? zhashx_new () : NULL};
    if (arrays && list.given) {
        gq_broker_id_keys (list.given);
    } else if (arrays) {
        json_decref (list.jobs);
        gq_broker_reject (self, request, GQ_ENOMEM, "out of memory");
        return;
    }
    if (state == GQ_JOB_WAITING) {
        s_jobs_waiting (self, &list);
    } else if (state == GQ_JOB_QUEUED) {
        for (gq_job_t *job = gq_queue_first (self->queue); job && !s_list_full (&list);
             job = gq_queue_next (self->queue, job)) {
            s_list_job (self, &list, job);
        }
    } else if (state == GQ_JOB_RUNNING) {
        for (size_t w = 0; w < self->workers_size && !s_list_full (&list); w++) {
            for (gq_job_t *job = self->workers[w] ? self->workers[w]->running : NULL;
                 job && !s_list_full (&list); job = job->qnext) {
                s_list_job (self, &list, job);
            }
        }
    } else {
        s_jobs_listed (self, state, &list);
    }
    zhashx_destroy (&list.given);
    gq_broker_reply (self, gq_msg_reply (request, "JOBS", json_pack ("{s:o}", "jobs", list.jobs)));
}

static json_t *
s_node_json (gq_broker_t *self, gq_link_t *worker)
{
    gq_node_t *node = gq_matcher_node (self->matcher, worker->node);
    char seen[GQ_TIME_BUF], backoff[GQ_TIME_BUF];
    json_t *spec = worker->spec;
    json_t *json = json_pack (
        "{s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:i, s:i, s:O, s:O, s:O, s:f, s:s, s:s, s:I, s:I, "
        "s:f, s:s?, s:O?}",
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
                                              : NULL,
        "engines", spec ? json_object_get (spec, "engines") : NULL);
    /* Jobs it may hold beyond its slots now (0 while its slots all hold slow jobs). */
    json_object_set_new (json, "prefetch",
                         json_integer (gq_node_capacity (node) - node->slots));
    return json;
}

void
gq_queries_nodes (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *unused)
{
    gq_msg_t *request = *request_p;
    json_t *nodes = json_array ();
    for (size_t w = 0; w < self->workers_size; w++) {
        if (self->workers[w] && self->workers[w]->spec) {
            json_array_append_new (nodes, s_node_json (self, self->workers[w]));
        }
    }
    gq_broker_reply (self, gq_msg_reply (request, "NODES", json_pack ("{s:o}", "nodes", nodes)));
}

/* Writes recorded and not committed yet: in the batch being recorded, and in those handed over
   or kept for another try. */
static size_t
s_writes_waiting (gq_broker_t *self)
{
    size_t writes = gq_batch_size (self->pending->batch);
    for (gq_pending_t *p = (gq_pending_t *) zlist_first (self->inflight); p;
         p = (gq_pending_t *) zlist_next (self->inflight)) {
        writes += gq_batch_size (p->batch);
    }
    return writes + (self->retry ? gq_batch_size (self->retry->batch) : 0);
}

/* The store's health: {ok, error, since, failures, writes_waiting}. */
static json_t *
s_store_json (gq_broker_t *self)
{
    char since[GQ_TIME_BUF];
    bool ok = self->store_down_ms == 0;
    return json_pack ("{s:b, s:s?, s:s?, s:I, s:I}", "ok", ok, "error",
                      ok ? NULL : self->store_error, "since",
                      ok ? NULL : gq_format_time (self->store_down_ms, since), "failures",
                      (json_int_t) self->store_failures, "writes_waiting",
                      (json_int_t) s_writes_waiting (self));
}

void
gq_queries_stats (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *unused)
{
    gq_msg_t *request = *request_p;
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
    json_object_set_new (json_object_get (body, "jobs"), "waiting",
                         json_integer ((json_int_t) self->counts[GQ_JOB_WAITING]));
    json_object_set_new (body, "recalled", json_integer ((json_int_t) self->recalled));
    json_object_set_new (body, "store", s_store_json (self));
    gq_broker_reply (self, gq_msg_reply (request, "STATS", body));
}

/* Rebuilds a matcher-shaped job from a stored row, for explaining finished jobs. */
static int
s_job_from_json (gq_broker_t *self, json_t *json, gq_job_t *job,
                 gq_constraints_t *constraints)
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

void
gq_queries_explain (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *unused)
{
    gq_msg_t *request = *request_p;
    int64_t id;
    if (!gq_broker_request_id (self, request, &id)) {
        return;
    }
    gq_job_t *job = gq_broker_job_find (self, id);
    gq_job_t copy;
    gq_constraints_t constraints;
    json_t *stored = NULL;
    if (!job) {
        stored = gq_broker_id_issued (self, id) ? gq_store_job_brief_json (self->store, id, false) : NULL;
        if (!stored || s_job_from_json (self, stored, &copy, &constraints)) {
            json_decref (stored);
            gq_broker_reply (self,
                             gq_msg_error (request, GQ_ENOTFOUND, "no job %lld", (long long) id));
            return;
        }
        job = &copy;
    }
    int64_t now_ms = gq_now_ms ();
    size_t total = gq_matcher_nodes (self->matcher);
    gq_explain_row_t *rows = (gq_explain_row_t *) calloc (total ? total : 1, sizeof *rows);
    if (!rows) {
        json_decref (stored);
        gq_broker_reject (self, request, GQ_ENOMEM, "out of memory");
        return;
    }
    size_t n = gq_matcher_explain (self->matcher, job, now_ms, rows, total);
    /* The placement as dispatch makes it: the matcher's pick, or the job's preferred node
       (affinity) with its bonus (sched.c). */
    int32_t preferred = -1;
    int32_t best = gq_sched_pick (self->sched, job, now_ms, &preferred);
    json_t *nodes = json_array ();
    for (size_t i = 0; i < n && i < total; i++) {
        json_t *row = json_pack ("{s:s, s:s, s:s}", "node",
                                 gq_matcher_node (self->matcher, rows[i].node)->name, "verdict",
                                 gq_filter_name (rows[i].verdict), "reason", rows[i].reason);
        if (rows[i].verdict == GQ_FILTER_OK) {
            gq_score_t *s = &rows[i].score;
            json_object_set_new (row, "score",
                                 json_pack ("{s:f, s:f, s:f, s:f, s:f, s:f, s:f, s:f}", "fit",
                                            s->fit, "compute", s->compute, "cost", s->cost, "warm",
                                            s->warm, "load", s->load, "latency", s->latency,
                                            "reliability", s->reliability, "total", s->total));
            if (rows[i].node == preferred) {
                json_object_set_new (json_object_get (row, "score"), "affinity",
                                     json_real (self->opts.weights.affinity));
            }
        }
        json_array_append_new (nodes, row);
    }
    free (rows);
    char hint[300] = "";
    if (best < 0) {
        gq_matcher_hint (self->matcher, job, now_ms, hint, sizeof hint);
    }
    const char *state = stored ? json_string_value (json_object_get (stored, "state"))
                               : gq_job_state_name (job->state);
    const char *ran_on = stored ? json_string_value (json_object_get (stored, "node"))
                                : gq_broker_node_name (self, job->end ? job->end->node : job->node);
    json_t *body = json_pack (
        "{s:I, s:s, s:s?, s:s?, s:o, s:s}", "id", (json_int_t) id, "state", state, "ran_on", ran_on,
        "node", best >= 0 ? gq_broker_node_name (self, best) : NULL, "nodes", nodes, "hint", hint);
    int32_t ahead = stored ? 0 : gq_workers_queued_behind (self, job);
    if (ahead > 0) {
        /* Prefetched: placed on its node, waiting there for a slot. */
        json_object_set_new (body, "prefetched",
                             json_pack ("{s:s, s:i}", "node", ran_on, "ahead", ahead));
    }
    const char *key = stored ? NULL
                             : (const char *) zhashx_lookup (self->affinity_of, GQ_ID_KEY (id));
    if (key) {
        /* Its affinity key, and the node that ran the last job of that key (null: none yet). */
        json_object_set_new (body, "affinity",
                             json_pack ("{s:s, s:s?, s:f}", "key", key, "node",
                                        preferred >= 0 ? gq_broker_node_name (self, preferred)
                                                       : NULL,
                                        "bonus", self->opts.weights.affinity));
    }
    json_t *waiting_for = stored ? NULL : gq_deps_explain (self, job);
    if (waiting_for) {
        json_object_set_new (body, "waiting_for", waiting_for);
    }
    gq_array_t *array = stored ? NULL : gq_arrays_of (self, job);
    if (array) {
        /* held: waiting for a place under its array's limit (not for dependencies) */
        json_object_set_new (
            body, "array",
            json_pack ("{s:I, s:I, s:I, s:I, s:b}", "id", (json_int_t) array->id, "index",
                       (json_int_t) gq_arrays_index (array, job->id), "limit",
                       (json_int_t) array->spec.limit, "active", (json_int_t) array->active,
                       "held", job->state == GQ_JOB_WAITING && !waiting_for));
    }
    json_decref (stored);
    gq_broker_reply (self, gq_msg_reply (request, "EXPLAIN", body));
}

void
gq_queries_ping (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *unused)
{
    gq_broker_reply (self, gq_msg_reply (*request_p, "PING",
                                         json_pack ("{s:s, s:I}", "version", "0.1.0", "time",
                                                    (json_int_t) gq_now_ms ())));
}

/* ---- Metrics: the text of one scrape, made on the loop thread ---------------------------- */

void
gq_queries_metrics (void *arg, zchunk_t *out)
{
    gq_broker_t *self = (gq_broker_t *) arg;
    gq_chunk_raw (out, "# HELP gridq_jobs_submitted_total Jobs accepted (committed) since start.\n"
                      "# TYPE gridq_jobs_submitted_total counter\n");
    gq_chunk_printf (out, "gridq_jobs_submitted_total %lld\n", (long long) self->submitted);
    gq_chunk_raw (out, "# HELP gridq_jobs_finished_total Jobs ended since start, by final state.\n"
                      "# TYPE gridq_jobs_finished_total counter\n");
    for (int s = GQ_JOB_DONE; s <= GQ_JOB_CANCELLED; s++) {
        gq_chunk_printf (out, "gridq_jobs_finished_total{state=\"%s\"} %lld\n",
                        gq_job_state_name (s), (long long) self->finished[s]);
    }
    gq_chunk_raw (out, "# HELP gridq_store_up 1 while the store commits; 0 while it refuses "
                       "(new work paused, submissions refused).\n# TYPE gridq_store_up gauge\n");
    gq_chunk_printf (out, "gridq_store_up %d\n", self->store_down_ms == 0);
    gq_chunk_raw (out, "# HELP gridq_store_failures_total Batches the store refused since start.\n"
                       "# TYPE gridq_store_failures_total counter\n");
    gq_chunk_printf (out, "gridq_store_failures_total %lld\n", (long long) self->store_failures);
    gq_chunk_raw (out, "# HELP gridq_store_writes_waiting Writes recorded and not yet committed.\n"
                       "# TYPE gridq_store_writes_waiting gauge\n");
    gq_chunk_printf (out, "gridq_store_writes_waiting %zu\n", s_writes_waiting (self));
    gq_chunk_raw (out, "# HELP gridq_jobs Jobs in the store, by state.\n# TYPE gridq_jobs gauge\n");
    for (int s = 0; s < GQ_JOB_STATES; s++) {
        gq_chunk_printf (out, "gridq_jobs{state=\"%s\"} %lld\n", gq_job_state_name (s),
                        (long long) self->counts[s]);
    }
    gq_chunk_raw (out, "# HELP gridq_queue_depth Queued jobs by priority.\n"
                      "# TYPE gridq_queue_depth gauge\n");
    for (int p = 0; p < 10; p++) {
        gq_chunk_printf (out, "gridq_queue_depth{priority=\"%d\"} %zu\n", p,
                        gq_queue_size_priority (self->queue, p));
    }
    int64_t by_status[4] = {0, 0, 0, 0};
    for (size_t w = 0; w < self->workers_size; w++) {
        if (self->workers[w] && self->workers[w]->spec) {
            by_status[gq_matcher_node (self->matcher, (int32_t) w)->status & 3]++;
        }
    }
    gq_chunk_raw (out, "# HELP gridq_nodes Nodes by status.\n# TYPE gridq_nodes gauge\n");
    for (int st = 0; st < 4; st++) {
        gq_chunk_printf (out, "gridq_nodes{status=\"%s\"} %lld\n", gq_node_status_name (st),
                        (long long) by_status[st]);
    }
    gq_chunk_raw (out, "# HELP gridq_node_running_jobs Jobs running on each node.\n"
                      "# TYPE gridq_node_running_jobs gauge\n");
    for (size_t w = 0; w < self->workers_size; w++) {
        if (self->workers[w] && self->workers[w]->spec) {
            gq_node_t *node = gq_matcher_node (self->matcher, (int32_t) w);
            gq_chunk_printf (out, "gridq_node_running_jobs{node=\"%s\"} %d\n", node->name,
                            node->running);
        }
    }
    gq_chunk_raw (out, "# HELP gridq_node_vram_free_bytes Free VRAM of each node.\n"
                      "# TYPE gridq_node_vram_free_bytes gauge\n");
    for (size_t w = 0; w < self->workers_size; w++) {
        if (self->workers[w] && self->workers[w]->spec) {
            gq_node_t *node = gq_matcher_node (self->matcher, (int32_t) w);
            gq_chunk_printf (out, "gridq_node_vram_free_bytes{node=\"%s\"} %lld\n", node->name,
                            (long long) node->vram_free_mb * 1048576LL);
        }
    }
    gq_chunk_raw (out, "# HELP gridq_messages_rejected_total Bad messages dropped or refused.\n"
                      "# TYPE gridq_messages_rejected_total counter\n");
    gq_chunk_printf (out, "gridq_messages_rejected_total %lld\n", (long long) self->rejected);
    gq_metrics_render_histograms (self->metrics, out);
}
