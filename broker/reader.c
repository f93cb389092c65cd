/*  reader.c — the store's reader thread (reader.h): a czmq actor with a store connection of its
    own; it receives a read's pointer, appends the stored jobs' text, and sends it back. */
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

struct _gq_reader_t {
    zactor_t *actor;
    gq_store_t *store; /* used by the thread only, closed after it stopped */
    size_t busy;       /* reads handed over and not received back */
};

static void
s_reader_actor (zsock_t *pipe, void *arg)
{
    gq_store_t *store = (gq_store_t *) arg;
    zsock_signal (pipe, 0);
    while (true) {
        char *command = NULL;
        void *ptr = NULL;
        if (zsock_recv (pipe, "sp", &command, &ptr) < 0) {
            break; /* interrupted */
        }
        bool stop = !command || streq (command, "$TERM");
        free (command);
        if (stop) {
            break;
        }
        if (ptr) {
            gq_read_t *read = (gq_read_t *) ptr;
            atomic_load_explicit (&read->handoff, memory_order_acquire);
            gq_read_run (read, store);
            atomic_fetch_add_explicit (&read->handoff, 1, memory_order_release);
            zsock_send (pipe, "p", ptr);
        }
    }
}

gq_reader_t *
gq_reader_new (const char *db_path, char *why, size_t whylen)
{
    gq_reader_t *self = (gq_reader_t *) calloc (1, sizeof *self);
    if (!self) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    /* Reads only: its durability setting never applies. */
    self->store = gq_store_open (db_path, GQ_DURABILITY_NORMAL, why, whylen);
    if (self->store) {
        self->actor = zactor_new (s_reader_actor, self->store);
        if (!self->actor) {
            snprintf (why, whylen, "cannot start the store's reader thread");
        }
    }
    if (!self->actor) {
        gq_reader_destroy (&self);
    }
    return self;
}

void
gq_reader_destroy (gq_reader_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_reader_t *self = *self_p;
    zactor_destroy (&self->actor); /* waits for the thread */
    gq_store_close (&self->store);
    free (self);
    *self_p = NULL;
}

int
gq_reader_send (gq_reader_t *self, gq_read_t *read)
{
    atomic_fetch_add_explicit (&read->handoff, 1, memory_order_release);
    if (zsock_send (self->actor, "sp", "READ", read) < 0) {
        return GQ_EIO;
    }
    self->busy++;
    return GQ_OK;
}

gq_read_t *
gq_reader_recv (gq_reader_t *self)
{
    void *ptr = NULL;
    if (self->busy == 0 || zsock_recv (self->actor, "p", &ptr) < 0) {
        return NULL;
    }
    self->busy--;
    gq_read_t *read = (gq_read_t *) ptr;
    atomic_load_explicit (&read->handoff, memory_order_acquire);
    return read;
}

size_t
gq_reader_busy (const gq_reader_t *self)
{
    return self->busy;
}

zsock_t *
gq_reader_sock (gq_reader_t *self)
{
    return zactor_sock (self->actor);
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
    gq_reader_t *reader = gq_reader_new (path, why, sizeof why);
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
    GQ_CHECK_EQ (gq_reader_send (reader, read), 0);
    GQ_CHECK_EQ (gq_reader_busy (reader), 1);
    GQ_CHECK_EQ (gq_reader_recv (reader) == read, 1);
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

    gq_reader_destroy (&reader);
    gq_store_close (&store);
    char command[200];
    snprintf (command, sizeof command, "rm -rf %s", dir);
    GQ_CHECK_EQ (system (command), 0);
}
