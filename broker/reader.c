/*  reader.c — the store's reader thread (reader.h): a lane (lane.h) that makes each STATUS's
    reply parts, reading the stored jobs with a connection of its own. */
#include "reader.h"

#include <assert.h>
#include <string.h>

#include "gq_check.h"
#include "gq_json.h"

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

void
gq_read_destroy (gq_read_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_read_t *self = *self_p;
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

void
gq_read_run (gq_read_t *self, gq_store_t *store)
{
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

    gq_lane_destroy (&reader);
    gq_store_close (&store);
    char command[200];
    snprintf (command, sizeof command, "rm -rf %s", dir);
    GQ_CHECK_EQ (system (command), 0);
}
