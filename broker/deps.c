/*  deps.c — dependencies between jobs: a job submitted with after_ok, after_any or after_fail
    waits (state waiting, out of the queue) until its condition on every parent holds, then joins
    the queue; when its condition can no longer hold it ends cancelled, and that ends its own
    dependents in turn.

    Everything here is out of line, so that a job without dependencies pays nothing: the edges of
    a waiting job live in the waits table (job id -> gq_wait_t), and the parent -> children index
    (parent id -> gq_children_t) finds what a parent's end releases in O(its children), never by
    a scan of the queue. An entry of the index is dropped when its parent ends; a child that left
    the waiting state before (cancelled by a client) is skipped then. The edges are in the
    store (table deps), written in the child's group with its insert; at start they are read
    back for the jobs that had not ended, after gq_store_recover has made those queued. */
#include "broker_internal.h"

#include <limits.h>
#include <string.h>

/* The conditions a parent's outcome meets: after_ok wants done; after_fail wants failed or
   cancelled (at least one of its after_fail parents); after_any takes anything. */
static bool
s_failed (int state)
{
    return state == GQ_JOB_FAILED || state == GQ_JOB_CANCELLED;
}

/* ---- The index: parent -> the jobs waiting on it ------------------------------------------ */

/* Adds child (with its condition) to the jobs waiting on parent. 0 or GQ_ENOMEM. */
static int
s_index_add (gq_broker_t *self, int64_t parent, int64_t child, int kind)
{
    gq_children_t *children = (gq_children_t *) zhashx_lookup (self->children, GQ_ID_KEY (parent));
    if (!children || children->count == children->size) {
        uint32_t size = children ? children->size * 2 : 4;
        gq_children_t *grown = (gq_children_t *) realloc (
            children, sizeof *grown + (size_t) size * sizeof grown->items[0]);
        if (!grown) {
            return GQ_ENOMEM;
        }
        if (!children) {
            grown->count = 0;
        }
        grown->size = size;
        if (grown != children) {
            zhashx_update (self->children, GQ_ID_KEY (parent), grown);
        }
        children = grown;
    }
    children->items[children->count++] = (gq_child_t) {child, kind};
    return GQ_OK;
}

/* ---- A waiting job ------------------------------------------------------------------------- */

gq_wait_t *
gq_deps_wait_new (const gq_jobspec_t *spec, zhashx_t *names)
{
    gq_wait_t *wait =
        (gq_wait_t *) calloc (1, sizeof *wait + spec->n_after * sizeof wait->edges[0]);
    if (!wait) {
        return NULL;
    }
    for (int k = 0; k < GQ_DEP_KINDS; k++) {
        size_t i;
        json_t *id;
        json_array_foreach (spec->after[k], i, id) {
            int64_t parent = json_is_string (id) && names
                                 ? (int64_t) (intptr_t) zhashx_lookup (names,
                                                                       json_string_value (id))
                                 : (int64_t) json_integer_value (id);
            wait->edges[wait->count++] = (gq_dep_t) {parent, k};
        }
    }
    wait->inputs = spec->inputs;
    return wait;
}

int
gq_deps_check (gq_broker_t *self, const gq_jobspec_t *spec, char *why, size_t whylen)
{
    for (int k = 0; k < GQ_DEP_KINDS; k++) {
        size_t i;
        json_t *item;
        json_array_foreach (spec->after[k], i, item) {
            int64_t id = (int64_t) json_integer_value (item);
            if (json_is_string (item) || gq_broker_job_find (self, id) ||
                gq_arrays_find (self, id)) {
                continue;
            }
            int state = gq_broker_id_issued (self, id) ? gq_store_job_state (self->store, id)
                                                       : GQ_ENOTFOUND;
            if (state == GQ_ESTORE) {
                snprintf (why, whylen, "\"%s\": job %lld: the store could not be read (%s)",
                          gq_dep_fields[k], (long long) id, gq_store_errmsg (self->store));
                return GQ_ESTORE;
            }
            if (state < 0) {
                /* Ids of this same submission are not handed out yet: a job can depend only on
                   jobs that exist, so no cycle can form. */
                snprintf (why, whylen, "\"%s\": no job %lld (a job may depend only on jobs "
                          "submitted before it)",
                          gq_dep_fields[k], (long long) id);
                return GQ_EINVAL;
            }
        }
    }
    return GQ_OK;
}

/* Leaves the waiting state's books (not the queue's: the caller puts it somewhere). */
static void
s_unwait (gq_broker_t *self, gq_job_t *job)
{
    gq_wait_t *wait = (gq_wait_t *) zhashx_lookup (self->waits, GQ_ID_KEY (job->id));
    zhashx_delete (self->waits, GQ_ID_KEY (job->id));
    free (wait);
    self->counts[GQ_JOB_WAITING]--;
}

void
gq_deps_forget (gq_broker_t *self, gq_job_t *job)
{
    if (job->state == GQ_JOB_WAITING) {
        s_unwait (self, job);
    }
}

/* The job joins the queue, at the place its submission time gives it (an element of an array
   at its limit is held by its array instead). */
static void
s_release (gq_broker_t *self, gq_job_t *job)
{
    s_unwait (self, job);
    gq_arrays_queue (self, job);
}

/* Its condition holds: it joins the queue once the batch being recorded is back. That batch
   holds the end of the parent that released it, or commits after the one that does (batches
   commit in order): a broker killed before then restarts with the parent not ended, and the
   child must not have run. It stays waiting meanwhile (open 0). */
static void
s_release_later (gq_broker_t *self, gq_job_t *job)
{
    gq_pending_t *pending = self->pending;
    if (pending->released_count == pending->released_size) {
        size_t size = pending->released_size ? pending->released_size * 2 : 64;
        int64_t *grown = (int64_t *) realloc (pending->released, size * sizeof *grown);
        if (!grown) {
            /* Out of memory: at once rather than never. */
            gq_pending_t one = {.released = &job->id, .released_count = 1};
            gq_deps_released (self, &one);
            return;
        }
        pending->released = grown;
        pending->released_size = size;
    }
    pending->released[pending->released_count++] = job->id; /* due now: gq_commit_kick */
}

/* "inputs": "after": the parents' results go into the payloads of jobs released (waiting, their
   condition held), {"inputs": {NAME: result}} (NAME the one its SUBMIT gave the parent, else
   the parent's id). The reader thread reads them from the store (gq_store_dep_inputs), where
   the parents' ends are committed by now, as they are after a restart; each job stays waiting,
   marked reading, until its payload is back (gq_deps_inputs_back). The loop reads the store
   itself only when the reader cannot be reached. */
static const char *s_inputs_no_memory =
    "its parents' results could not be read (out of memory); gridq retry runs it again";

static void
s_inputs_read (gq_broker_t *self, gq_read_t *read)
{
    if (!self->reader || gq_lane_send (self->reader, read)) {
        gq_read_run (read, self->store);
        gq_deps_inputs_back (self, read);
    }
}

void
gq_deps_inputs_back (gq_broker_t *self, gq_read_t *read)
{
    int64_t now_ms = gq_now_ms ();
    for (size_t i = 0; i < read->count; i++) {
        gq_read_entry_t *entry = &read->entries[i];
        gq_job_t *job = gq_broker_job_lookup (self, entry->id);
        gq_wait_t *wait = job && job->state == GQ_JOB_WAITING
                              ? (gq_wait_t *) zhashx_lookup (self->waits, GQ_ID_KEY (job->id))
                              : NULL;
        if (!wait || !wait->reading) {
            continue; /* cancelled meanwhile */
        }
        if (!entry->payload) {
            gq_results_job_end (self, job, GQ_JOB_FAILED, NULL,
                                entry->error ? entry->error : s_inputs_no_memory, -1, now_ms);
            continue;
        }
        free (job->payload);
        job->payload = entry->payload;
        job->payload_len = (uint32_t) strlen (entry->payload);
        entry->payload = NULL;
        s_release (self, job);
    }
    gq_read_destroy (&read);
}

void
gq_deps_released (gq_broker_t *self, gq_pending_t *done)
{
    gq_read_t *read = NULL;
    for (size_t i = 0; i < done->released_count; i++) {
        gq_job_t *job = gq_broker_job_lookup (self, done->released[i]);
        gq_wait_t *wait = job && job->state == GQ_JOB_WAITING /* not cancelled meanwhile */
                              ? (gq_wait_t *) zhashx_lookup (self->waits, GQ_ID_KEY (job->id))
                              : NULL;
        if (!wait || wait->reading) {
            continue; /* cancelled meanwhile, or its inputs being read already */
        }
        if (!wait->inputs) {
            s_release (self, job);
            continue;
        }
        if (!read && !(read = gq_read_inputs_new (done->released_count - i))) {
            gq_results_job_end (self, job, GQ_JOB_FAILED, NULL, s_inputs_no_memory, -1,
                                gq_now_ms ());
            continue;
        }
        wait->reading = 1;
        gq_read_text_begin (read, job->id);
        zchunk_extend (read->pre, job->payload, job->payload_len);
        gq_read_text_end (read);
    }
    done->released_count = 0;
    if (read) {
        s_inputs_read (self, read);
    }
}

/* Parent (kind) of a waiting job ended in state: the edge counts. Returns true when the job's
   condition can no longer hold (why says which parent broke it). */
static bool
s_edge_ended (gq_wait_t *wait, int64_t parent, int kind, int state, char *why, size_t whylen)
{
    wait->open--;
    if (kind == GQ_DEP_OK && state != GQ_JOB_DONE) {
        snprintf (why, whylen, "dependency %lld failed%s", (long long) parent,
                  state == GQ_JOB_CANCELLED ? " (it was cancelled)" : "");
        return true;
    }
    if (kind == GQ_DEP_FAIL) {
        wait->fail_open--;
        wait->fail_hit += s_failed (state);
        if (wait->fail_open == 0 && wait->fail_hit == 0) {
            snprintf (why, whylen, "dependency %lld succeeded%s", (long long) parent,
                      wait->fail_edges > 1 ? " (as did every other after_fail dependency)" : "");
            return true;
        }
    }
    return false;
}

/* The state of parent as far as this broker knows: from memory (GQ_JOB_QUEUED for any that has
   not ended; an array's as gq_arrays_state says), else stored (stored_state, or read now when it
   is INT_MIN); -1 when there is no such job. */
static int
s_parent_state (gq_broker_t *self, int64_t parent, int stored_state)
{
    gq_job_t *job = gq_broker_job_find (self, parent);
    if (job) {
        return job->end ? job->state : GQ_JOB_QUEUED;
    }
    gq_array_t *array = gq_arrays_find (self, parent);
    if (array) {
        return gq_arrays_state (array);
    }
    return stored_state != INT_MIN ? stored_state : gq_store_job_state (self->store, parent);
}

/* A job with dependencies comes in (joins memory, or is recovered): each edge counts now when
   its parent ended, or goes into the index. It joins the queue when nothing is left open, ends
   cancelled when its condition cannot hold, or waits. Takes wait; states (may be NULL: asked of
   memory, then the store) are the parents' stored states, by edge. The job is in memory (the
   jobs table), in no queue, its state not yet counted. */
static void
s_start (gq_broker_t *self, gq_job_t *job, gq_wait_t *wait, const int *states)
{
    char why[200] = "";
    bool doomed = false;
    wait->open = wait->count;
    for (uint32_t e = 0; e < wait->count; e++) {
        wait->fail_edges += wait->edges[e].kind == GQ_DEP_FAIL;
    }
    wait->fail_open = wait->fail_edges;
    job->state = GQ_JOB_WAITING;
    self->counts[GQ_JOB_WAITING]++;
    if (zhashx_insert (self->waits, GQ_ID_KEY (job->id), wait)) {
        free (wait);
        self->counts[GQ_JOB_WAITING]--;
        job->state = GQ_JOB_QUEUED;
        zsys_error ("broker: out of memory: job %lld waits for nothing", (long long) job->id);
        gq_queue_push (self->queue, job);
        self->counts[GQ_JOB_QUEUED]++;
        return;
    }
    for (uint32_t e = 0; e < wait->count && !doomed; e++) {
        gq_dep_t *edge = &wait->edges[e];
        int state = s_parent_state (self, edge->parent, states ? states[e] : INT_MIN);
        if (state == GQ_JOB_QUEUED || state == GQ_JOB_RUNNING || state == GQ_JOB_WAITING) {
            if (s_index_add (self, edge->parent, job->id, edge->kind)) {
                snprintf (why, sizeof why, "out of memory recording dependency %lld",
                          (long long) edge->parent);
                doomed = true;
            }
        } else if (state < 0) {
            snprintf (why, sizeof why, "dependency %lld no longer exists",
                      (long long) edge->parent);
            doomed = true;
        } else {
            doomed = s_edge_ended (wait, edge->parent, edge->kind, state, why, sizeof why);
        }
    }
    if (doomed) {
        gq_results_job_end (self, job, GQ_JOB_CANCELLED, NULL, why, -1, gq_now_ms ());
    } else if (wait->open == 0) {
        s_release_later (self, job);
    }
}

void
gq_deps_join (gq_broker_t *self, gq_job_t *job, gq_wait_t **wait_p)
{
    gq_wait_t *wait = *wait_p;
    *wait_p = NULL;
    s_start (self, job, wait, NULL);
}

/* ---- A parent ends ------------------------------------------------------------------------ */

/* One parent's end reaches the jobs waiting on it: each is released, cancelled, or waits on. */
static void
s_parent_ended (gq_broker_t *self, int64_t parent, int state, int64_t now_ms)
{
    gq_children_t *children = (gq_children_t *) zhashx_lookup (self->children, GQ_ID_KEY (parent));
    if (!children) {
        return;
    }
    zhashx_delete (self->children, GQ_ID_KEY (parent));
    for (uint32_t c = 0; c < children->count; c++) {
        gq_child_t *child = &children->items[c];
        gq_wait_t *wait = (gq_wait_t *) zhashx_lookup (self->waits, GQ_ID_KEY (child->id));
        gq_job_t *job = wait ? gq_broker_job_lookup (self, child->id) : NULL;
        if (!job) {
            continue; /* it left the waiting state already (cancelled) */
        }
        char why[200];
        if (s_edge_ended (wait, parent, child->kind, state, why, sizeof why)) {
            gq_results_job_end (self, job, GQ_JOB_CANCELLED, NULL, why, -1, now_ms);
        } else if (wait->open == 0) {
            s_release_later (self, job);
        }
    }
    free (children);
}

void
gq_deps_ended (gq_broker_t *self, int64_t id, int state, int64_t now_ms)
{
    if (zhashx_size (self->children) == 0) {
        return; /* nothing waits on anything: the common case costs one test */
    }
    /* A job cancelled here ends its own dependents: through this list, not recursion, so a
       chain of any length is one loop. */
    if (self->deps_ended_count == self->deps_ended_size) {
        size_t size = self->deps_ended_size ? self->deps_ended_size * 2 : 64;
        gq_ended_t *grown = (gq_ended_t *) realloc (self->deps_ended, size * sizeof *grown);
        if (!grown) {
            zsys_error ("broker: out of memory: the jobs waiting on job %lld stay waiting",
                        (long long) id);
            return;
        }
        self->deps_ended = grown;
        self->deps_ended_size = size;
    }
    self->deps_ended[self->deps_ended_count++] = (gq_ended_t) {id, state};
    if (self->deps_releasing) {
        return;
    }
    self->deps_releasing = true;
    while (self->deps_ended_count) {
        gq_ended_t ended = self->deps_ended[--self->deps_ended_count];
        s_parent_ended (self, ended.id, ended.state, now_ms);
    }
    self->deps_releasing = false;
}

/* ---- Recovery ------------------------------------------------------------------------------ */

/* The edges of one child, gathered from the store's rows. */
typedef struct {
    gq_broker_t *broker;
    int64_t child;  /* the child being gathered, 0 before the first */
    gq_wait_t *wait; /* its edges so far */
    int *states;     /* their parents' stored states */
    uint32_t size;   /* allocated entries of both */
} s_recovery_t;

/* The child gathered so far starts waiting (or is released, or cancelled). */
static int
s_recovered (s_recovery_t *r)
{
    gq_wait_t *wait = r->wait;
    r->wait = NULL;
    gq_job_t *job = wait ? gq_broker_job_lookup (r->broker, r->child) : NULL;
    if (!job || job->state != GQ_JOB_QUEUED) {
        free (wait); /* ended at recovery already (its attempts were spent) */
        return GQ_OK;
    }
    gq_queue_remove (r->broker->queue, job);
    r->broker->counts[GQ_JOB_QUEUED]--;
    s_start (r->broker, job, wait, r->states);
    return GQ_OK;
}

static int
s_recover_edge (void *arg, int64_t child, int64_t parent, int kind, int parent_state, bool inputs)
{
    s_recovery_t *r = (s_recovery_t *) arg;
    if (child != r->child) {
        s_recovered (r);
        r->child = child;
    }
    if (!r->states) {
        r->size = 8;
        if (!(r->states = (int *) malloc (r->size * sizeof *r->states))) {
            return GQ_ENOMEM;
        }
    }
    if (!r->wait) {
        r->wait = (gq_wait_t *) calloc (1, sizeof *r->wait + r->size * sizeof r->wait->edges[0]);
    } else if (r->wait->count == r->size) {
        uint32_t size = r->size * 2;
        gq_wait_t *grown =
            (gq_wait_t *) realloc (r->wait, sizeof *grown + size * sizeof grown->edges[0]);
        int *states = grown ? (int *) realloc (r->states, size * sizeof *states) : NULL;
        r->wait = grown ? grown : r->wait;
        r->states = states ? states : r->states;
        if (!states) {
            return GQ_ENOMEM;
        }
        r->size = size;
    }
    if (!r->wait) {
        return GQ_ENOMEM;
    }
    uint32_t count = r->wait->count;
    r->wait->inputs = inputs;
    r->states[count] = parent_state;
    r->wait->edges[r->wait->count++] = (gq_dep_t) {parent, kind};
    return GQ_OK;
}

int
gq_deps_recover (gq_broker_t *self)
{
    s_recovery_t r = {self, 0, NULL, NULL, 0};
    int rc = gq_store_deps_recover (self->store, s_recover_edge, &r);
    if (rc == GQ_OK) {
        s_recovered (&r);
    }
    free (r.wait);
    free (r.states);
    if (self->counts[GQ_JOB_WAITING]) {
        zsys_info ("broker: %lld recovered jobs wait for their dependencies",
                   (long long) self->counts[GQ_JOB_WAITING]);
    }
    return rc;
}

int
gq_deps_restart (gq_broker_t *self, gq_job_t *job)
{
    s_recovery_t r = {self, job->id, NULL, NULL, 0};
    int rc = gq_store_deps_of (self->store, job->id, s_recover_edge, &r);
    bool edges = r.wait != NULL;
    if (rc == GQ_OK) {
        s_recovered (&r);
    }
    free (r.wait);
    free (r.states);
    return rc ? rc : edges;
}

/* ---- Questions ----------------------------------------------------------------------------- */

json_t *
gq_deps_explain (gq_broker_t *self, const gq_job_t *job)
{
    gq_wait_t *wait = job->state == GQ_JOB_WAITING
                          ? (gq_wait_t *) zhashx_lookup (self->waits, GQ_ID_KEY (job->id))
                          : NULL;
    if (!wait) {
        return NULL;
    }
    json_t *list = json_array ();
    for (uint32_t e = 0; e < wait->count; e++) {
        gq_dep_t *edge = &wait->edges[e];
        gq_job_t *parent = gq_broker_job_find (self, edge->parent);
        gq_array_t *array = parent ? NULL : gq_arrays_find (self, edge->parent);
        int state = parent  ? parent->state
                    : array ? gq_arrays_state (array)
                            : gq_store_job_state (self->store, edge->parent);
        json_array_append_new (list, json_pack ("{s:I, s:s, s:s}", "id", (json_int_t) edge->parent,
                                                "condition", gq_dep_fields[edge->kind], "state",
                                                gq_job_state_name (state) ?: "unknown"));
    }
    return list;
}

static int
s_oldest_first (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y ? 1 : 0;
}

size_t
gq_deps_waiting (gq_broker_t *self, size_t per_array, int64_t **ids_p)
{
    /* Those waiting for their dependencies, and the elements their arrays' limits hold (no
       more than per_array of each: a listing of arrays does not copy a million ids). */
    size_t waits = zhashx_size (self->waits);
    size_t waiting = (size_t) (self->counts[GQ_JOB_WAITING] > 0 ? self->counts[GQ_JOB_WAITING] : 0);
    size_t held = waiting > waits ? waiting - waits : 0;
    if (self->array_count && per_array < held / self->array_count) {
        held = per_array * self->array_count;
    }
    size_t count = waits + held;
    int64_t *ids = (int64_t *) malloc ((count ? count : 1) * sizeof *ids);
    *ids_p = ids;
    if (!ids) {
        return 0;
    }
    size_t n = 0;
    for (void *wait = zhashx_first (self->waits); wait && n < count;
         wait = zhashx_next (self->waits)) {
        ids[n++] = (int64_t) (uintptr_t) zhashx_cursor (self->waits);
    }
    n += gq_arrays_held (self, ids + n, count - n, per_array);
    qsort (ids, n, sizeof *ids, s_oldest_first);
    return n;
}

void
gq_deps_destroy (gq_broker_t *self)
{
    if (self->waits) {
        for (void *wait = zhashx_first (self->waits); wait; wait = zhashx_next (self->waits)) {
            free (wait);
        }
        zhashx_destroy (&self->waits);
    }
    if (self->children) {
        for (void *children = zhashx_first (self->children); children;
             children = zhashx_next (self->children)) {
            free (children);
        }
        zhashx_destroy (&self->children);
    }
    free (self->deps_ended);
    self->deps_ended = NULL;
}
