/*  reader.c — the store's reader thread (reader.h): a lane (lane.h) that makes each STATUS's
    reply parts, reading the stored jobs with a connection of its own, and the payloads of jobs
    released with their parents' results. */
#include "reader.h"

#include <assert.h>
#include <string.h>

#include "gq_check.h"
#include "gq_json.h"
#include "gq_spec.h"
#include "tuning.h"

/* ---- Reads --------------------------------------------------------------------------------- */

gq_read_t *
gq_read_new (void *request, size_t capacity, size_t budget_bytes)
{
    gq_read_t *self = (gq_read_t *) calloc (1, sizeof *self);
    if (!self) {
        return NULL;
    }
    self->request = request;
    self->capacity = capacity ? capacity : 1;
    self->entries = (gq_read_entry_t *) malloc (self->capacity * sizeof *self->entries);
    self->pre = zchunk_new (NULL, 4096);
    self->jobs = zchunk_new (NULL, 4096);
    self->missing = zchunk_new (NULL, 256);
    self->more = zchunk_new (NULL, 64);
    if (!self->entries || !self->pre || !self->jobs || !self->missing || !self->more) {
        gq_read_destroy (&self);
        return NULL;
    }
    self->budget_bytes = budget_bytes;
    return self;
}

gq_read_t *
gq_read_inputs_new (size_t capacity)
{
    gq_read_t *self = gq_read_new (NULL, capacity, 0);
    if (self) {
        self->kind = GQ_READ_INPUTS;
    }
    return self;
}

void
gq_read_destroy (gq_read_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_read_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++) {
        free (self->entries[i].payload);
        free (self->entries[i].error);
    }
    free (self->entries);
    zchunk_destroy (&self->pre);
    zchunk_destroy (&self->jobs);
    zchunk_destroy (&self->missing);
    zchunk_destroy (&self->more);
    free (self);
    *self_p = NULL;
}

/* The next entry (the caller added at most capacity). */
static gq_read_entry_t *
s_entry (gq_read_t *self, int64_t id)
{
    assert (self->count < self->capacity);
    gq_read_entry_t *entry = &self->entries[self->count++];
    *entry = (gq_read_entry_t) {.id = id};
    return entry;
}

void
gq_read_text_begin (gq_read_t *self, int64_t id)
{
    s_entry (self, id)->offset = (uint32_t) zchunk_size (self->pre);
}

void
gq_read_text_end (gq_read_t *self)
{
    gq_read_entry_t *entry = &self->entries[self->count - 1];
    entry->length = (uint32_t) (zchunk_size (self->pre) - entry->offset);
}

void
gq_read_stored (gq_read_t *self, int64_t id)
{
    s_entry (self, id)->stored = true;
    self->stored++;
}

void
gq_read_unknown (gq_read_t *self, int64_t id)
{
    s_entry (self, id);
}

/* Appends id to a comma-separated list. */
static void
s_list_add (zchunk_t *list, int64_t id)
{
    if (zchunk_size (list)) {
        zchunk_extend (list, ",", 1);
    }
    gq_chunk_int (list, id);
}

/* An inputs read's entry: its payload (an object: gq_jobspec_parse allows no other with
   inputs) with "inputs" set to its parents' results, or why not. */
static void
s_inputs (gq_read_t *self, gq_read_entry_t *entry, gq_store_t *store)
{
    char why[300] = "";
    json_t *inputs = gq_store_dep_inputs (store, entry->id);
    json_t *payload = json_loadb ((const char *) zchunk_data (self->pre) + entry->offset,
                                  entry->length, 0, NULL);
    if (!inputs) {
        snprintf (why, sizeof why, "its parents' results could not be read (%s); gridq retry "
                  "runs it again", gq_store_errmsg (store));
    } else if (!json_is_object (payload) ||
               json_object_set (payload, "inputs", inputs) ||
               !(entry->payload = json_dumps (payload, JSON_COMPACT))) {
        snprintf (why, sizeof why, "its parents' results could not be put in its payload (out "
                  "of memory, or a payload that is no object)");
    } else if (strlen (entry->payload) > GQ_INPUTS_MAX_BYTES) {
        snprintf (why, sizeof why, "its payload with its parents' results (\"inputs\") is %zu "
                  "bytes, past the %d a job may carry to a worker",
                  strlen (entry->payload), GQ_INPUTS_MAX_BYTES);
        free (entry->payload);
        entry->payload = NULL;
    }
    if (why[0]) {
        entry->error = strdup (why); /* NULL, with no payload either: out of memory */
    }
    json_decref (inputs);
    json_decref (payload);
}

void
gq_read_run (gq_read_t *self, gq_store_t *store)
{
    if (self->kind == GQ_READ_INPUTS) {
        for (size_t i = 0; i < self->count; i++) {
            s_inputs (self, &self->entries[i], store);
        }
        return;
    }
    for (size_t i = 0; i < self->count; i++) {
        gq_read_entry_t *entry = &self->entries[i];
        if (zchunk_size (self->jobs) > self->budget_bytes) {
            s_list_add (self->more, entry->id);
            continue;
        }
        size_t before = zchunk_size (self->jobs);
        if (before) {
            zchunk_extend (self->jobs, ",", 1);
        }
        int found = 0;
        if (entry->length) {
            zchunk_extend (self->jobs, zchunk_data (self->pre) + entry->offset, entry->length);
            found = 1;
        } else if (entry->stored) {
            found = gq_store_job_text (store, entry->id, self->jobs);
        }
        if (found != 1) {
            zchunk_set (self->jobs, zchunk_data (self->jobs), before); /* the comma goes */
        }
        if (found == 0) {
            s_list_add (self->missing, entry->id);
            self->n_missing++;
        } else if (found < 0) {
            self->error = GQ_ESTORE;
            snprintf (self->errmsg, sizeof self->errmsg, "%s", gq_store_errmsg (store));
            return;
        }
    }
}

/* ---- The reader thread --------------------------------------------------------------------- */

static void
s_read (void *item, gq_store_t *store)
{
    gq_read_run ((gq_read_t *) item, store);
}

gq_lane_t *
gq_reader_new (const char *db_path, char *why, size_t whylen)
{
    /* Reads only: its durability setting never applies. */
    return gq_lane_new ("reader", db_path, GQ_DURABILITY_NORMAL, s_read, why, whylen);
}

/* ---- Selftest ------------------------------------------------------------------------------ */

void
gq_reader_test (bool verbose)
{
    (void) verbose;
    char dir[] = "/tmp/gq-reader-XXXXXX";
    GQ_CHECK_EQ (mkdtemp (dir) != NULL, 1);
    char path[128], why[300];
    snprintf (path, sizeof path, "%s/gridq.db", dir);
    gq_store_t *store = gq_store_open (path, GQ_DURABILITY_NORMAL, why, sizeof why);
    GQ_CHECK_EQ (store != NULL, 1);
    char payload[] = "{\"n\":1}";
    int64_t t = 1764411673000;
    for (int64_t id = 1; id <= 3; id++) {
        gq_job_t job = {.id = id, .payload = payload, .payload_len = sizeof payload - 1,
                        .max_attempts = 3, .submitted_ms = t, .node = -1};
        GQ_CHECK_EQ (gq_store_job_insert (store, &job, "echo", NULL, NULL, NULL, NULL), 0);
    }
    GQ_CHECK_EQ (gq_store_job_finish (store, 2, GQ_JOB_DONE, 1, "w1", t, t + 5, "{\"r\":2}", 7,
                                      NULL),
                 0);
    gq_lane_t *reader = gq_reader_new (path, why, sizeof why);
    GQ_CHECK_EQ (reader != NULL, 1);

    /* Stored jobs read by the thread and the loop's own text, in the order asked; unknown ones
       missing. */
    gq_read_t *read = gq_read_new (NULL, 4, 1 << 20);
    gq_read_stored (read, 2);
    gq_read_unknown (read, 99);
    gq_read_text_begin (read, 7);
    gq_chunk_raw (read->pre, "{\"id\":7,\"state\":\"running\"}");
    gq_read_text_end (read);
    gq_read_stored (read, 1);
    GQ_CHECK_EQ (read->stored, 2);
    GQ_CHECK_EQ (gq_lane_send (reader, read), 0);
    GQ_CHECK_EQ (gq_lane_busy (reader), 1);
    GQ_CHECK_EQ (gq_lane_recv (reader) == read, 1);
    GQ_CHECK_EQ (read->error, 0);
    char text[4096];
    snprintf (text, sizeof text, "[%.*s]", (int) zchunk_size (read->jobs),
              (const char *) zchunk_data (read->jobs));
    json_t *jobs = json_loads (text, 0, NULL);
    GQ_CHECK_EQ (json_array_size (jobs), 3);
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_array_get (jobs, 0), "id")), 2);
    GQ_CHECK_STR (json_string_value (json_object_get (json_array_get (jobs, 0), "state")),
                  "done");
    GQ_CHECK_EQ (json_integer_value (json_object_get (
                     json_object_get (json_array_get (jobs, 0), "result"), "r")),
                 2);
    GQ_CHECK_EQ (json_object_get (json_array_get (jobs, 0), "payload") == NULL, 1);
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_array_get (jobs, 1), "id")), 7);
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_array_get (jobs, 2), "id")), 1);
    json_decref (jobs);
    GQ_CHECK_EQ (read->n_missing, 1);
    GQ_CHECK_EQ (zchunk_size (read->missing), 2);
    GQ_CHECK_EQ (memcmp (zchunk_data (read->missing), "99", 2), 0);
    gq_read_destroy (&read);

    /* Past the budget, the rest is left for another question; without stored ids the loop runs
       it with no store. */
    read = gq_read_new (NULL, 3, 10);
    gq_read_text_begin (read, 5);
    gq_chunk_raw (read->pre, "{\"id\":5,\"state\":\"queued\"}");
    gq_read_text_end (read);
    gq_read_unknown (read, 99);
    gq_read_text_begin (read, 6);
    gq_chunk_raw (read->pre, "{\"id\":6}");
    gq_read_text_end (read);
    gq_read_run (read, NULL);
    GQ_CHECK_EQ (zchunk_size (read->more), 4); /* "99,6" */
    GQ_CHECK_EQ (memcmp (zchunk_data (read->more), "99,6", 4), 0);
    GQ_CHECK_EQ (read->n_missing, 0);
    gq_read_destroy (&read);

    /* Inputs: job 1 takes job 2's result under the name "two", job 3 job 1's (none yet) by id;
       each payload comes back with "inputs" set, in the order given. A result too large to
       carry, or a payload that is no object, is an error instead. */
    GQ_CHECK_EQ (gq_store_dep_insert (store, 1, 2, GQ_DEP_OK, "two", true), 0);
    GQ_CHECK_EQ (gq_store_dep_insert (store, 3, 1, GQ_DEP_ANY, NULL, true), 0);
    read = gq_read_inputs_new (3);
    const char *payloads[] = {"{\"n\":1}", "{\"n\":3}", "[1]"};
    for (int i = 0; i < 3; i++) {
        gq_read_text_begin (read, i < 2 ? 1 + 2 * i : 1);
        gq_chunk_raw (read->pre, payloads[i]);
        gq_read_text_end (read);
    }
    GQ_CHECK_EQ (gq_lane_send (reader, read), 0);
    GQ_CHECK_EQ (gq_lane_recv (reader) == read, 1);
    GQ_CHECK_STR (read->entries[0].payload, "{\"n\":1,\"inputs\":{\"two\":{\"r\":2}}}");
    GQ_CHECK_STR (read->entries[1].payload, "{\"n\":3,\"inputs\":{\"1\":null}}");
    GQ_CHECK_EQ (read->entries[2].payload == NULL, 1);
    GQ_CHECK_EQ (strstr (read->entries[2].error, "no object") != NULL, 1);
    gq_read_destroy (&read);
    size_t big = GQ_INPUTS_MAX_BYTES;
    char *result = (char *) malloc (big + 3);
    GQ_CHECK_EQ (result != NULL, 1);
    memset (result, 'x', big + 2);
    result[0] = result[big + 1] = '"';
    result[big + 2] = '\0';
    GQ_CHECK_EQ (gq_store_job_finish (store, 1, GQ_JOB_DONE, 1, "w1", t, t + 9, result, big + 2,
                                      NULL),
                 0);
    free (result);
    read = gq_read_inputs_new (1);
    gq_read_text_begin (read, 3);
    gq_chunk_raw (read->pre, "{}");
    gq_read_text_end (read);
    gq_read_run (read, store);
    GQ_CHECK_EQ (read->entries[0].payload == NULL, 1);
    GQ_CHECK_EQ (strstr (read->entries[0].error, "past the") != NULL, 1);
    gq_read_destroy (&read);

    gq_lane_destroy (&reader);
    gq_store_close (&store);
    char command[200];
    snprintf (command, sizeof command, "rm -rf %s", dir);
    GQ_CHECK_EQ (system (command), 0);
}
