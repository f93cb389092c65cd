/*  watch.c — clients waiting for jobs to end: a watch per request (WAIT, or SUBMIT with
    watch), the jobs pointing at it, and the messages it gets: PARTIAL as an engine streams
    them (relayed at once, never stored), then FINISHED: the text of each job that ended, full
    or brief, spliced from what the broker holds. */
#include "broker_internal.h"

#include <string.h>

void
gq_watch_drop_pending (gq_watch_t *watch)
{
    zchunk_t *page;
    while (watch->pages && (page = (zchunk_t *) zlist_pop (watch->pages))) {
        zchunk_destroy (&page);
    }
    zlist_destroy (&watch->pages);
    zchunk_destroy (&watch->pending);
}

static void
s_watch_free (gq_watch_t *watch)
{
    gq_watch_drop_pending (watch);
    gq_msg_t *msg;
    while (watch->partials && (msg = (gq_msg_t *) zlist_pop (watch->partials))) {
        gq_msg_destroy (&msg);
    }
    zlist_destroy (&watch->partials);
    zframe_destroy (&watch->routing_id);
    free (watch);
}

void
gq_watch_release (gq_broker_t *self, gq_watch_t *watch)
{
    if (--watch->refs == 0 && !watch->pending) {
        s_watch_free (watch);
    }
}

int
gq_watch_add (gq_job_t *job, gq_watch_t *watch)
{
    gq_watchers_t *list = (gq_watchers_t *) job->watchers;
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
        list = (gq_watchers_t *) realloc (list, sizeof *list + cap * sizeof list->items[0]);
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
s_notify_text (gq_broker_t *self, gq_watch_t *watch, const char *text, size_t size)
{
    if (watch->dead) {
        return;
    }
    if (watch->pending && zchunk_size (watch->pending) + size > GQ_MESSAGE_BUDGET_BYTES) {
        /* A message would pass the wire's limit (a client drops such a message): this job
           starts the next one. */
        if (!watch->pages) {
            watch->pages = zlist_new ();
        }
        zlist_append (watch->pages, watch->pending);
        watch->pending = zchunk_new (NULL, size + 64);
    } else if (!watch->pending) {
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

void
gq_watch_notify (gq_broker_t *self, gq_watch_t *watch, json_t *job_json)
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
        s_notify_text (self, watch, text, strlen (text));
        free (text);
    }
}

/* The JSON text of a job that ended, as FINISHED carries it: the job's one serializer
   (gq_job_row_text), spliced from the texts the broker holds (payload, result) instead of
   building and dumping a JSON tree, which at tens of thousands of jobs a second would be most of
   the broker's work. */
static zchunk_t *
s_finished_text (gq_broker_t *self, const gq_job_t *job)
{
    const gq_job_end_t *end = job->end;
    zchunk_t *out = zchunk_new (
        NULL, 256 + job->payload_len + (end && end->result ? strlen (end->result) : 0));
    gq_broker_job_text (self, job, true, out);
    return out;
}

/* Lets go of the clients watching a job. */
void
gq_watch_drop_job (gq_broker_t *self, gq_job_t *job)
{
    gq_watchers_t *list = (gq_watchers_t *) job->watchers;
    if (list) {
        for (size_t i = 0; i < list->count; i++) {
            gq_watch_release (self, list->items[i]);
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
    gq_chunk_raw (out, "{\"id\":");
    gq_chunk_int (out, job->id);
    gq_chunk_name (out, ",\"state\":", gq_job_state_name (job->state));
    gq_chunk_raw (out, ",\"result\":");
    gq_chunk_raw (out, result ? result : "null");
    gq_chunk_raw (out, ",\"error\":");
    gq_chunk_quoted (out, error);
    gq_chunk_raw (out, "}");
    return out;
}

void
gq_watch_job_ended (gq_broker_t *self, const gq_job_t *job)
{
    const char *text = job->end ? job->end->result : NULL;
    const char *error = job->end ? job->end->error : NULL;
    gq_watchers_t *list = (gq_watchers_t *) job->watchers;
    zchunk_t *full = NULL, *brief = NULL;
    for (size_t i = 0; list && i < list->count; i++) {
        gq_watch_t *watch = list->items[i];
        zchunk_t **json = watch->brief ? &brief : &full;
        if (!*json) {
            *json = watch->brief ? s_brief_text (job, text, error) : s_finished_text (self, job);
        }
        s_notify_text (self, watch, (const char *) zchunk_data (*json), zchunk_size (*json));
    }
    zchunk_destroy (&full);
    zchunk_destroy (&brief);
}

/* Sends a watch's pending FINISHED notices; frees it when no job points at it any more. */
void
gq_watch_flush (gq_broker_t *self, gq_watch_t *watch)
{
    /* Partials held while the SUBMIT was not acknowledged go first: they came before the end. */
    gq_msg_t *partial;
    while (watch->partials && (partial = (gq_msg_t *) zlist_pop (watch->partials))) {
        gq_msg_send (&partial, self->router);
    }
    zchunk_t *page;
    while (watch->pending) {
        page = watch->pages ? (zchunk_t *) zlist_pop (watch->pages) : NULL;
        if (!page) {
            page = watch->pending;
            watch->pending = NULL;
        }
        zchunk_t *text = zchunk_new (NULL, zchunk_size (page) + 48);
        gq_chunk_printf (text, "{\"req\":%lld,\"jobs\":[", (long long) watch->req);
        zchunk_extend (text, zchunk_data (page), zchunk_size (page));
        gq_chunk_raw (text, "]}");
        zchunk_destroy (&page);
        gq_msg_t *msg = gq_msg_new_raw (GQ_ROLE_CLIENT, "FINISHED",
                                        (const char *) zchunk_data (text), zchunk_size (text));
        zchunk_destroy (&text);
        gq_msg_set_routing_id (msg, watch->routing_id);
        gq_msg_send (&msg, self->router);
    }
    zlist_destroy (&watch->pages);
    if (watch->refs == 0) {
        s_watch_free (watch);
    }
}

/* ---- Client commands ----------------------------------------------------------------------- */

/* A watch for request's client; brief and partials from the request's "brief" and "partials"
   (validated by the caller). */
gq_watch_t *
gq_watch_new (gq_msg_t *request)
{
    gq_watch_t *watch = (gq_watch_t *) calloc (1, sizeof *watch);
    if (watch) {
        watch->routing_id = zframe_dup (gq_msg_routing_id (request));
        watch->req = gq_msg_req (request);
        watch->brief = json_is_true (json_object_get (gq_msg_body (request), "brief"));
        watch->no_partials = json_is_false (json_object_get (gq_msg_body (request), "partials"));
        watch->states = json_is_true (json_object_get (gq_msg_body (request), "states"));
    }
    return watch;
}

bool
gq_watch_job (gq_broker_t *self, gq_watch_t *watch, int64_t id)
{
    gq_job_t *job = gq_broker_job_find (self, id);
    if (job && !job->end) {
        gq_watch_add (job, watch);
        return true;
    }
    if (job) {
        /* Ended, its end not committed yet: told from memory. */
        gq_job_end_t *end = job->end;
        zchunk_t *text = watch->brief ? s_brief_text (job, end->result, end->error)
                                      : s_finished_text (self, job);
        s_notify_text (self, watch, (const char *) zchunk_data (text), zchunk_size (text));
        zchunk_destroy (&text);
        return true;
    }
    json_t *stored =
        gq_broker_id_issued (self, id) ? gq_store_job_brief_json (self->store, id, true) : NULL;
    if (stored) {
        gq_watch_notify (self, watch, stored);
        json_decref (stored);
    }
    return stored != NULL;
}

static void s_replay (gq_broker_t *self, gq_watch_t *watch, int64_t id, int64_t after);

/* Makes request's client wait for ids: those ended come at once, the others when they end,
   unknown ones in "missing". */
static void
s_watch_ids (gq_broker_t *self, gq_msg_t *request, const int64_t *ids, size_t count,
             int64_t after_seq)
{
    gq_watch_t *watch = gq_watch_new (request);
    if (!watch) {
        gq_broker_reject (self, request, GQ_ENOMEM, "out of memory");
        return;
    }
    watch->refs = 1; /* held by this function while it works */
    json_t *missing = json_array ();
    for (size_t i = 0; i < count; i++) {
        if (!gq_watch_job (self, watch, ids[i])) {
            json_array_append_new (missing, json_integer (ids[i]));
        } else if (after_seq >= -1) {
            s_replay (self, watch, ids[i], after_seq); /* what it missed, still kept */
        }
    }
    if (json_array_size (missing)) {
        gq_broker_charge_unknown (self, request, json_array_size (missing));
        gq_broker_reply (self,
                         gq_msg_reply (request, "FINISHED",
                                       json_pack ("{s:[], s:o}", "jobs", "missing", missing)));
    } else {
        json_decref (missing);
    }
    gq_watch_release (self, watch);
}

void
gq_watch_wait (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *unused)
{
    gq_msg_t *request = *request_p;
    int64_t *ids;
    size_t count;
    char why[200];
    bool brief, partials, states;
    int64_t after_seq;
    json_t *body = gq_msg_body (request);
    if (gq_json_bool (body, "brief", false, &brief, why, sizeof why) ||
        gq_json_bool (body, "partials", true, &partials, why, sizeof why) ||
        gq_json_bool (body, "states", false, &states, why, sizeof why) ||
        gq_json_int (body, "after_seq", -1, INT64_MAX / 2, -2, &after_seq, why, sizeof why)) {
        gq_broker_reject (self, request, GQ_EINVAL, why);
        return;
    }
    if (!gq_broker_request_ids (self, request, &ids, &count)) {
        return;
    }
    s_watch_ids (self, request, ids, count, after_seq);
    free (ids);
}

/* ---- Partials ------------------------------------------------------------------------------ */

/* Sends one watch a PARTIAL (text: the body after its "req"), or keeps it while the watch's
   SUBMIT is not acknowledged. The ROUTER drops it when the client's queue is full (a slow
   client misses partials; its FINISHED still comes, from the watch's own pending text). */
static void
s_partial_to (gq_broker_t *self, gq_watch_t *watch, const char *text, size_t size)
{
    if (watch->dead || watch->no_partials) {
        return;
    }
    zchunk_t *body = zchunk_new (NULL, size + 32);
    gq_chunk_printf (body, "{\"req\":%lld,", (long long) watch->req);
    zchunk_extend (body, text, size);
    gq_msg_t *msg = gq_msg_new_raw (GQ_ROLE_CLIENT, "PARTIAL", (const char *) zchunk_data (body),
                                    zchunk_size (body));
    zchunk_destroy (&body);
    if (!msg) {
        return;
    }
    gq_msg_set_routing_id (msg, watch->routing_id);
    if (!watch->held) {
        gq_msg_send (&msg, self->router);
        return;
    }
    if (!watch->partials) {
        watch->partials = zlist_new ();
    }
    if (!watch->partials || zlist_size (watch->partials) >= GQ_WATCH_HELD_PARTIALS_COUNT ||
        zlist_append (watch->partials, msg)) {
        gq_msg_destroy (&msg);
    }
}

/* ---- The last partials of a running job, for a watch that resumes --------------------------- */

/* One partial as relayed: the PARTIAL body after its "req" ("id", "seq", ..., "partial"}). */
typedef struct {
    int64_t seq;
    char *text;
    size_t len;
} s_kept_partial_t;

/* A ring of the last partials of a job (at most GQ_PARTIALS_KEPT_COUNT, and _BYTES). */
typedef struct {
    size_t head, count, bytes;
    s_kept_partial_t items[GQ_PARTIALS_KEPT_COUNT];
} gq_kept_t;

void
gq_watch_kept_free (void **item)
{
    gq_kept_t *kept = (gq_kept_t *) *item;
    for (size_t i = 0; kept && i < kept->count; i++) {
        free (kept->items[(kept->head + i) % GQ_PARTIALS_KEPT_COUNT].text);
    }
    free (kept);
    *item = NULL;
}

/* Keeps a relayed partial of job id, dropping the oldest past either bound. */
static void
s_keep (gq_broker_t *self, int64_t id, int64_t seq, const char *text, size_t len)
{
    gq_kept_t *kept = (gq_kept_t *) zhashx_lookup (self->kept, GQ_ID_KEY (id));
    if (!kept) {
        kept = (gq_kept_t *) calloc (1, sizeof *kept);
        if (!kept || zhashx_insert (self->kept, GQ_ID_KEY (id), kept)) {
            free (kept);
            return;
        }
    }
    char *copy = (char *) malloc (len);
    if (!copy) {
        return;
    }
    memcpy (copy, text, len);
    while (kept->count && (kept->count == GQ_PARTIALS_KEPT_COUNT ||
                           kept->bytes + len > GQ_PARTIALS_KEPT_BYTES)) {
        s_kept_partial_t *old = &kept->items[kept->head];
        kept->bytes -= old->len;
        free (old->text);
        kept->head = (kept->head + 1) % GQ_PARTIALS_KEPT_COUNT;
        kept->count--;
    }
    kept->items[(kept->head + kept->count) % GQ_PARTIALS_KEPT_COUNT] =
        (s_kept_partial_t) {seq, copy, len};
    kept->count++;
    kept->bytes += len;
}

/* Sends watch the kept partials of job id with a seq above after, oldest first. */
static void
s_replay (gq_broker_t *self, gq_watch_t *watch, int64_t id, int64_t after)
{
    gq_kept_t *kept = (gq_kept_t *) zhashx_lookup (self->kept, GQ_ID_KEY (id));
    for (size_t i = 0; kept && i < kept->count; i++) {
        s_kept_partial_t *item = &kept->items[(kept->head + i) % GQ_PARTIALS_KEPT_COUNT];
        if (item->seq > after) {
            s_partial_to (self, watch, item->text, item->len);
        }
    }
}

void
gq_watch_forget (gq_broker_t *self, int64_t id)
{
    if (zhashx_size (self->kept)) {
        zhashx_delete (self->kept, GQ_ID_KEY (id));
    }
}

void
gq_watch_state (gq_broker_t *self, const gq_job_t *job)
{
    if (job->state == GQ_JOB_QUEUED) {
        gq_watch_forget (self, job->id); /* a new attempt numbers its partials from 0 again */
    }
    gq_watchers_t *list = (gq_watchers_t *) job->watchers;
    for (size_t i = 0; list && i < list->count; i++) {
        gq_watch_t *watch = list->items[i];
        if (!watch->states || watch->dead || watch->held) {
            continue;
        }
        char body[256];
        const char *node = job->node >= 0 ? gq_broker_node_name (self, job->node) : NULL;
        /* Node names are valid names (gq_valid_name): they go into JSON as they are. */
        int n = snprintf (body, sizeof body, "{\"req\":%lld,\"id\":%lld,\"state\":\"%s\"%s%s%s}",
                          (long long) watch->req, (long long) job->id,
                          gq_job_state_name (job->state), node ? ",\"node\":\"" : "",
                          node ? node : "", node ? "\"" : "");
        gq_msg_t *msg = n > 0 && (size_t) n < sizeof body
                            ? gq_msg_new_raw (GQ_ROLE_CLIENT, "STATE", body, (size_t) n)
                            : NULL;
        if (msg) {
            gq_msg_set_routing_id (msg, watch->routing_id);
            gq_msg_send (&msg, self->router);
        }
    }
}

void
gq_watch_partial (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *worker)
{
    gq_msg_t *request = *request_p;
    json_t *body = gq_msg_body (request);
    json_t *id_json = json_object_get (body, "id");
    json_t *seq_json = json_object_get (body, "seq");
    json_t *partial = json_object_get (body, "partial");
    json_t *dropped_json = json_object_get (body, "dropped");
    gq_job_t *job = json_is_integer (id_json)
                        ? gq_broker_job_lookup (self, json_integer_value (id_json))
                        : NULL;
    /* Only the worker that runs the job speaks for it; anything else is dropped and counted. */
    if (!job || job->state != GQ_JOB_RUNNING || job->node != worker->node ||
        !json_is_integer (seq_json) || json_integer_value (seq_json) < 0 || !partial ||
        (dropped_json &&
         (!json_is_integer (dropped_json) || json_integer_value (dropped_json) < 0))) {
        self->rejected++;
        return;
    }
    char *text = json_dumps (partial, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text || strlen (text) > GQ_MAX_PARTIAL_BYTES) {
        free (text);
        self->rejected++;
        return;
    }
    int64_t seq = (int64_t) json_integer_value (seq_json);
    zchunk_t *rest = zchunk_new (NULL, strlen (text) + 96);
    gq_chunk_raw (rest, "\"id\":");
    gq_chunk_int (rest, job->id);
    gq_chunk_raw (rest, ",\"seq\":");
    gq_chunk_int (rest, seq);
    if (dropped_json && json_integer_value (dropped_json) > 0) {
        gq_chunk_raw (rest, ",\"dropped\":");
        gq_chunk_int (rest, (int64_t) json_integer_value (dropped_json));
    }
    gq_chunk_raw (rest, ",\"partial\":");
    gq_chunk_raw (rest, text);
    gq_chunk_raw (rest, "}");
    free (text);
    s_keep (self, job->id, seq, (const char *) zchunk_data (rest), zchunk_size (rest));
    gq_watchers_t *list = (gq_watchers_t *) job->watchers;
    for (size_t i = 0; list && i < list->count; i++) {
        s_partial_to (self, list->items[i], (const char *) zchunk_data (rest), zchunk_size (rest));
    }
    zchunk_destroy (&rest);
    /* Relayed (or dropped for a client that cannot keep up): the worker may send more. */
    gq_workers_send (self, worker, "PARTIAL_ACK",
                     json_pack ("{s:I, s:I}", "id", (json_int_t) job->id, "seq", (json_int_t) seq));
}
