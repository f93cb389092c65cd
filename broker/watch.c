/*  watch.c — clients waiting for jobs to end: a watch per request (WAIT, or SUBMIT with
    watch), the jobs pointing at it, and the FINISHED messages it gets: the text of each job
    that ended, full or brief, spliced from what the broker holds. */
#include "broker_internal.h"

#include <string.h>

void
gq_watch_release (gq_broker_t *self, gq_watch_t *watch)
{
    if (--watch->refs == 0 && !watch->pending) {
        zframe_destroy (&watch->routing_id);
        free (watch);
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
    gq_job_row_t row;
    gq_job_row_from (&row, job, gq_matcher_kind_name (self->matcher, job->kind_id),
                     gq_broker_model_name (self, job),
                     gq_broker_node_name (self, end ? end->node : job->node));
    gq_job_row_text (out, &row);
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
    if (watch->pending) {
        zchunk_t *text = zchunk_new (NULL, zchunk_size (watch->pending) + 48);
        gq_chunk_printf (text, "{\"req\":%lld,\"jobs\":[", (long long) watch->req);
        zchunk_extend (text, zchunk_data (watch->pending), zchunk_size (watch->pending));
        gq_chunk_raw (text, "]}");
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

/* ---- Client commands ----------------------------------------------------------------------- */

/* A watch for request's client; brief from the request's "brief" (validated by the caller). */
gq_watch_t *
gq_watch_new (gq_msg_t *request)
{
    gq_watch_t *watch = (gq_watch_t *) calloc (1, sizeof *watch);
    if (watch) {
        watch->routing_id = zframe_dup (gq_msg_routing_id (request));
        watch->req = gq_msg_req (request);
        watch->brief = json_is_true (json_object_get (gq_msg_body (request), "brief"));
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

/* Makes request's client wait for ids: those ended come at once, the others when they end,
   unknown ones in "missing". */
static void
s_watch_ids (gq_broker_t *self, gq_msg_t *request, const int64_t *ids, size_t count)
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
    bool brief;
    if (gq_json_bool (gq_msg_body (request), "brief", false, &brief, why, sizeof why)) {
        gq_broker_reject (self, request, GQ_EINVAL, why);
        return;
    }
    if (!gq_broker_request_ids (self, request, &ids, &count)) {
        return;
    }
    s_watch_ids (self, request, ids, count);
    free (ids);
}
