/*  arrays.c — job arrays: one SUBMIT entry with "array": "0-999%16" stands for its elements,
    which are ordinary jobs with consecutive ids right after the array's own id, each with its
    index in its payload. The array's limit (%K) is kept here, by admission: an element joins
    the queue only while fewer than K of its array are queued or running; the others are held
    (state waiting, out of the queue, in the array's FIFO) and admitted one by one as admitted
    elements end. The scheduler never sees a held element, so at most K run at once and a long
    array costs the dispatch walk nothing.

    Everything is out of line: a job knows only that it is an element (one bit); its array is
    found by binary search over the arrays in id order. The arrays are in the store (table
    arrays), written in their submission's group before their elements. */
#include "broker_internal.h"

#include <string.h>

/* ---- The table ------------------------------------------------------------------------------ */

gq_array_t *
gq_arrays_new (gq_broker_t *self, int64_t id, const char *text, const gq_arrayspec_t *spec,
               int64_t submitted_ms)
{
    if (self->array_count == self->array_size) {
        size_t size = self->array_size ? self->array_size * 2 : 16;
        gq_array_t **grown =
            (gq_array_t **) realloc (self->array_list, size * sizeof *grown);
        if (!grown) {
            return NULL;
        }
        self->array_list = grown;
        self->array_size = size;
    }
    gq_array_t *array = (gq_array_t *) calloc (1, sizeof *array);
    if (!array || !(array->text = strdup (text))) {
        free (array);
        return NULL;
    }
    array->id = id;
    array->first = id + 1;
    array->count = spec->count;
    array->submitted_ms = submitted_ms;
    array->spec = *spec;
    if (zhashx_insert (self->arrays, GQ_ID_KEY (id), array)) {
        free (array->text);
        free (array);
        return NULL;
    }
    /* Ids only grow: appending keeps the list in order (recovery reads them in order too). */
    size_t at = self->array_count;
    while (at > 0 && self->array_list[at - 1]->id > id) {
        at--;
    }
    memmove (&self->array_list[at + 1], &self->array_list[at],
             (self->array_count - at) * sizeof *self->array_list);
    self->array_list[at] = array;
    self->array_count++;
    return array;
}

static void
s_array_free (gq_array_t *array)
{
    free (array->held);
    free (array->text);
    free (array->kind);
    free (array->model);
    free (array);
}

int
gq_arrays_describe (gq_array_t *array, const char *kind, const char *model, int priority)
{
    free (array->kind);
    free (array->model);
    array->kind = kind ? strdup (kind) : NULL;
    array->model = model ? strdup (model) : NULL;
    array->priority = priority;
    return (kind && !array->kind) || (model && !array->model) ? GQ_ENOMEM : GQ_OK;
}

void
gq_arrays_forget (gq_broker_t *self, int64_t id)
{
    gq_array_t *array = gq_arrays_find (self, id);
    if (!array) {
        return;
    }
    zhashx_delete (self->arrays, GQ_ID_KEY (id));
    for (size_t i = 0; i < self->array_count; i++) {
        if (self->array_list[i] == array) {
            memmove (&self->array_list[i], &self->array_list[i + 1],
                     (self->array_count - i - 1) * sizeof *self->array_list);
            self->array_count--;
            break;
        }
    }
    s_array_free (array);
}

gq_array_t *
gq_arrays_find (gq_broker_t *self, int64_t id)
{
    return self->arrays ? (gq_array_t *) zhashx_lookup (self->arrays, GQ_ID_KEY (id)) : NULL;
}

gq_array_t *
gq_arrays_of (gq_broker_t *self, const gq_job_t *job)
{
    if (!job->in_array) {
        return NULL;
    }
    size_t lo = 0, hi = self->array_count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        gq_array_t *array = self->array_list[mid];
        if (job->id < array->first) {
            hi = mid;
        } else if (job->id >= array->first + array->count) {
            lo = mid + 1;
        } else {
            return array;
        }
    }
    return NULL;
}

gq_array_t *
gq_arrays_holding (gq_broker_t *self, int64_t id)
{
    gq_job_t probe = {.id = id, .in_array = 1};
    return gq_arrays_of (self, &probe);
}

int64_t
gq_arrays_index (const gq_array_t *array, int64_t job_id)
{
    return gq_arrayspec_index (&array->spec, job_id - array->first);
}

/* ---- The limit ----------------------------------------------------------------------------- */

static void
s_admit (gq_broker_t *self, gq_array_t *array, gq_job_t *job)
{
    if (array) {
        array->active++;
    }
    job->state = GQ_JOB_QUEUED;
    gq_queue_push (self->queue, job);
    self->counts[GQ_JOB_QUEUED]++;
    gq_watch_state (self, job);
}

void
gq_arrays_queue (gq_broker_t *self, gq_job_t *job)
{
    gq_array_t *array = gq_arrays_of (self, job);
    if (!array || !array->spec.limit || array->active < array->spec.limit) {
        s_admit (self, array, job);
        return;
    }
    if (array->held_count == array->held_size) {
        size_t size = array->held_size ? array->held_size * 2 : 64;
        int64_t *grown = (int64_t *) malloc (size * sizeof *grown);
        if (!grown) {
            zsys_error ("broker: out of memory: element %lld of array %lld is queued past its "
                        "limit", (long long) job->id, (long long) array->id);
            s_admit (self, array, job);
            return;
        }
        for (size_t i = 0; i < array->held_count; i++) {
            grown[i] = array->held[(array->held_head + i) % array->held_size];
        }
        free (array->held);
        array->held = grown;
        array->held_head = 0;
        array->held_size = size;
    }
    array->held[(array->held_head + array->held_count++) % array->held_size] = job->id;
    job->state = GQ_JOB_WAITING; /* not in the waits table: deps.c has nothing of it */
    self->counts[GQ_JOB_WAITING]++;
}

/* Admits held elements while the array is under its limit; those cancelled meanwhile are
   skipped. */
static void
s_admit_held (gq_broker_t *self, gq_array_t *array)
{
    while (array->held_count && array->active < array->spec.limit) {
        int64_t id = array->held[array->held_head];
        array->held_head = (array->held_head + 1) % array->held_size;
        array->held_count--;
        gq_job_t *job = gq_broker_job_lookup (self, id);
        if (job && job->state == GQ_JOB_WAITING) {
            self->counts[GQ_JOB_WAITING]--;
            s_admit (self, array, job);
        }
    }
}

void
gq_arrays_adopt (gq_broker_t *self, gq_job_t *job)
{
    gq_array_t *array = gq_arrays_of (self, job);
    if (!array || job->state != GQ_JOB_WAITING ||
        zhashx_lookup (self->waits, GQ_ID_KEY (job->id))) {
        return; /* not held by its array (waiting for its dependencies) */
    }
    /* The admitted element queued last gives way (a scan, at a worker's registration only). */
    for (int64_t id = array->first + array->count - 1; id >= array->first; id--) {
        gq_job_t *other = gq_broker_job_lookup (self, id);
        if (other && other->state == GQ_JOB_QUEUED) {
            gq_queue_remove (self->queue, other);
            self->counts[GQ_JOB_QUEUED]--;
            gq_arrays_queue (self, other); /* held: the array is at its limit */
            array->active--;               /* other's place ... */
            self->counts[GQ_JOB_WAITING]--;
            s_admit (self, array, job);    /* ... is job's; its id in the ring is skipped */
            return;
        }
    }
}

int
gq_arrays_state (const gq_array_t *array)
{
    int64_t ended = array->ended[GQ_JOB_DONE] + array->ended[GQ_JOB_FAILED] +
                    array->ended[GQ_JOB_CANCELLED];
    if (ended < array->count) {
        return GQ_JOB_QUEUED;
    }
    return array->ended[GQ_JOB_DONE] == array->count ? GQ_JOB_DONE
           : array->ended[GQ_JOB_FAILED]             ? GQ_JOB_FAILED
                                                     : GQ_JOB_CANCELLED;
}

void
gq_arrays_ended (gq_broker_t *self, int64_t id, bool admitted, int state, int64_t now_ms)
{
    gq_array_t *array = gq_arrays_holding (self, id);
    if (!array) {
        return;
    }
    array->ended[state]++;
    if (admitted && array->active > 0) {
        array->active--;
    }
    s_admit_held (self, array);
    int array_state = gq_arrays_state (array);
    if (gq_job_state_final (array_state)) {
        /* The array as a parent (after_ok on an array id) ends with its last element. */
        gq_deps_ended (self, array->id, array_state, now_ms);
    }
}

/* ---- Questions ----------------------------------------------------------------------------- */

void
gq_arrays_counts (const gq_array_t *array, int64_t counts[GQ_JOB_STATES])
{
    int64_t ended = 0;
    for (int s = 0; s < GQ_JOB_STATES; s++) {
        counts[s] = gq_job_state_final (s) ? array->ended[s] : 0;
        ended += counts[s];
    }
    counts[GQ_JOB_RUNNING] = array->running;
    counts[GQ_JOB_QUEUED] = array->active > array->running ? array->active - array->running : 0;
    int64_t waiting = array->count - ended - array->active;
    counts[GQ_JOB_WAITING] = waiting > 0 ? waiting : 0;
}

json_t *
gq_arrays_summary (const gq_array_t *array)
{
    int64_t counts[GQ_JOB_STATES];
    gq_arrays_counts (array, counts);
    json_t *by_state = json_object ();
    for (int s = 0; s < GQ_JOB_STATES; s++) {
        json_object_set_new (by_state, gq_job_state_name (s), json_integer (counts[s]));
    }
    char at[40];
    gq_format_time (array->submitted_ms, at);
    return json_pack ("{s:I, s:s, s:I, s:I, s:I, s:s?, s:s?, s:i, s:o, s:s, s:s}", "id",
                      (json_int_t) array->id, "spec", array->text, "first",
                      (json_int_t) array->first, "count", (json_int_t) array->count, "limit",
                      (json_int_t) array->spec.limit, "kind", array->kind, "model",
                      array->model, "priority", array->priority, "counts", by_state, "state",
                      gq_job_state_name (gq_arrays_state (array)), "submitted_at", at);
}

json_t *
gq_arrays_entry (const gq_array_t *array)
{
    json_t *summary = gq_arrays_summary (array);
    return json_pack ("{s:I, s:O, s:o}", "id", (json_int_t) array->id, "state",
                      json_object_get (summary, "state"), "array", summary);
}

size_t
gq_arrays_held (gq_broker_t *self, int64_t *ids, size_t max, size_t per_array)
{
    size_t n = 0;
    for (size_t a = 0; a < self->array_count; a++) {
        gq_array_t *array = self->array_list[a];
        size_t until = max - n > per_array ? n + per_array : max;
        for (size_t i = 0; i < array->held_count && n < until; i++) {
            int64_t id = array->held[(array->held_head + i) % array->held_size];
            gq_job_t *job = gq_broker_job_lookup (self, id);
            if (job && job->state == GQ_JOB_WAITING &&
                !zhashx_lookup (self->waits, GQ_ID_KEY (id))) {
                ids[n++] = id;
            }
        }
    }
    return n;
}

/* ---- Recovery ------------------------------------------------------------------------------ */

static int
s_recover_array (void *arg, int64_t id, int64_t first, int64_t count, const char *text,
                 int64_t submitted_ms, const int64_t *ended_by_state)
{
    gq_broker_t *self = (gq_broker_t *) arg;
    gq_arrayspec_t spec;
    char why[200];
    if (!text || gq_arrayspec_parse (text, &spec, why, sizeof why) || spec.count != count ||
        first != id + 1) {
        zsys_error ("broker: array %lld is not valid in the store; its elements run as jobs",
                    (long long) id);
        return GQ_OK;
    }
    gq_array_t *array = gq_arrays_new (self, id, text, &spec, submitted_ms);
    if (!array) {
        return GQ_ENOMEM;
    }
    for (int s = GQ_JOB_DONE; s <= GQ_JOB_CANCELLED; s++) {
        array->ended[s] = ended_by_state[s];
    }
    /* What its elements share, from its newest element left (retention may have taken some). */
    json_t *newest = gq_store_jobs_json (self->store, -1, first + count, 1);
    json_t *element = json_array_get (newest, 0);
    int rc = GQ_OK;
    if (element && json_integer_value (json_object_get (element, "id")) >= first) {
        rc = gq_arrays_describe (
            array, json_string_value (json_object_get (element, "kind")),
            json_string_value (json_object_get (element, "model")),
            (int) json_integer_value (json_object_get (element, "priority")));
    }
    json_decref (newest);
    return rc;
}

int
gq_arrays_recover (gq_broker_t *self)
{
    int rc = gq_store_arrays_recover (self->store, s_recover_array, self);
    if (rc == GQ_OK && self->array_count) {
        zsys_info ("broker: %zu arrays recovered", self->array_count);
    }
    return rc;
}

void
gq_arrays_recover_limits (gq_broker_t *self)
{
    for (size_t i = 0; i < self->array_count; i++) {
        gq_array_t *array = self->array_list[i];
        array->active = 0;
        for (int64_t id = array->first; id < array->first + array->count; id++) {
            gq_job_t *job = gq_broker_job_lookup (self, id);
            if (!job || (job->state != GQ_JOB_QUEUED && job->state != GQ_JOB_RUNNING)) {
                continue;
            }
            if (array->spec.limit && array->active >= array->spec.limit &&
                job->state == GQ_JOB_QUEUED) {
                gq_queue_remove (self->queue, job);
                self->counts[GQ_JOB_QUEUED]--;
                gq_arrays_queue (self, job); /* held */
            } else {
                array->active++;
            }
        }
    }
}

void
gq_arrays_destroy (gq_broker_t *self)
{
    for (size_t i = 0; i < self->array_count; i++) {
        s_array_free (self->array_list[i]);
    }
    free (self->array_list);
    self->array_list = NULL;
    self->array_count = self->array_size = 0;
    zhashx_destroy (&self->arrays);
}
