/*  retry.c — RETRY: jobs that failed or were cancelled run again, as new attempts of the same
    jobs (the same ids), keeping what succeeded: HTCondor DAGMan's rescue DAG. An array's id
    retries its failed and cancelled elements; and a retried job takes along, down the chain,
    the dependents that its failure cancelled ("dependency N failed"), which wait for it again.

    Each job is read back from the store (as at recovery), gets a new budget of attempts (its
    attempts so far plus its max_attempts; the attempt numbers go on), takes up its stored
    dependencies (as at recovery: parents retried before it in this same request are in memory,
    queued, so it waits for them), and its row is made queued again in the batch being
    recorded; the reply goes once that batch committed. */
#include "broker_internal.h"

#include <string.h>

/* What one RETRY gathers before it changes anything. */
typedef struct {
    gq_broker_t *broker;
    int64_t *ids;        /* jobs to run again, in the order found (sorted before use) */
    size_t count, size;  /* entries, allocated entries */
    zhashx_t *seen;      /* decimal id -> 1: each job once */
    bool busy;           /* a job has an end not yet committed: ask again after the commit */
    int error;           /* GQ_ENOMEM or GQ_ESTORE */
} s_retry_t;

static void
s_add (s_retry_t *r, int64_t id)
{
    char key[24];
    snprintf (key, sizeof key, "%lld", (long long) id);
    if (zhashx_lookup (r->seen, key)) {
        return;
    }
    if (r->count == r->size) {
        size_t size = r->size ? r->size * 2 : 64;
        int64_t *grown = (int64_t *) realloc (r->ids, size * sizeof *grown);
        if (!grown) {
            r->error = GQ_ENOMEM;
            return;
        }
        r->ids = grown;
        r->size = size;
    }
    zhashx_insert (r->seen, key, (void *) 1);
    r->ids[r->count++] = id;
}

/* The state of job id as far as the broker knows; an end not yet committed sets busy. */
static int
s_state (s_retry_t *r, int64_t id)
{
    gq_job_t *job = gq_broker_job_find (r->broker, id);
    if (job) {
        r->busy |= job->end != NULL;
        return job->state;
    }
    return gq_store_job_state (r->broker->store, id);
}

/* gq_store_dep_children's callback: a dependent that the failure cancelled runs again too. */
static int
s_child (void *arg, int64_t child, int state, const char *error)
{
    s_retry_t *r = (s_retry_t *) arg;
    gq_job_t *job = gq_broker_job_find (r->broker, child);
    if (job) {
        r->busy |= job->end != NULL; /* cancelled a moment ago: its end is not stored yet */
        return GQ_OK;                /* else it is still waiting or running: nothing to do */
    }
    if (state == GQ_JOB_CANCELLED && error && strncmp (error, "dependency ", 11) == 0) {
        s_add (r, child);
    }
    return GQ_OK;
}

/* gq_store_job_reload's callback: the job joins memory and the queue, with a new budget and no
   node excluded (the nodes that failed it may be fixed: that is why one retries). */
static int
s_reload (void *arg, const gq_job_row_t *row, const char *const *excluded, size_t n_excluded)
{
    (void) excluded;
    (void) n_excluded;
    gq_job_row_t again = *row;
    int budget = again.attempts + again.max_attempts;
    again.max_attempts = budget > UINT8_MAX ? UINT8_MAX : budget;
    *(int *) ((void **) arg)[1] = row->state;
    return gq_intake_recover (((void **) arg)[0], &again, NULL, 0);
}

/* Job id (failed or cancelled, in the store only) runs again. */
static int
s_again (gq_broker_t *self, int64_t id)
{
    int old_state = -1;
    void *args[2] = {self, &old_state};
    int rc = gq_store_job_reload (self->store, id, s_reload, args);
    gq_job_t *job = rc == GQ_OK ? gq_broker_job_lookup (self, id) : NULL;
    if (!job || !gq_job_state_final (old_state)) {
        return rc ? rc : GQ_ESTORE;
    }
    self->counts[old_state]--; /* it counts as queued now (gq_intake_recover) */
    gq_commit_recorded (self, gq_batch_job_retry (self->pending->batch, id, job->max_attempts));
    gq_array_t *array = gq_arrays_of (self, job);
    if (array && array->ended[old_state] > 0) {
        array->ended[old_state]--;
    }
    rc = gq_deps_restart (self, job);
    if (rc == 0 && array && job->state == GQ_JOB_QUEUED) {
        /* No dependencies: it is admitted under its array's limit, as when it came. */
        gq_queue_remove (self->queue, job);
        self->counts[GQ_JOB_QUEUED]--;
        gq_arrays_queue (self, job);
    }
    return rc < 0 ? rc : GQ_OK;
}

static int
s_by_id (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return x < y ? -1 : x > y;
}

void
gq_retry_request (gq_broker_t *self, gq_msg_t **request_p, gq_link_t *unused)
{
    gq_msg_t *request = *request_p;
    int64_t *ids;
    size_t count;
    if (!gq_broker_request_ids (self, request, &ids, &count)) {
        return;
    }
    s_retry_t r = {.broker = self, .seen = zhashx_new ()};
    json_t *jobs = json_array ();
    json_t *missing = json_array ();
    if (!r.seen) {
        r.error = GQ_ENOMEM;
    }
    /* What runs again: the ids named (an array's failed and cancelled elements), then, in
       breadth, the dependents their failures cancelled. Nothing changes before all is known. */
    for (size_t i = 0; i < count && r.seen && !r.error; i++) {
        gq_array_t *array = gq_arrays_find (self, ids[i]);
        int state = array ? gq_arrays_state (array) : s_state (&r, ids[i]);
        if (!array && state < 0) {
            json_array_append_new (missing, json_integer (ids[i]));
            continue;
        }
        size_t before = r.count;
        if (array) {
            for (int64_t id = array->first; id < array->first + array->count; id++) {
                int element = s_state (&r, id);
                if (element == GQ_JOB_FAILED || element == GQ_JOB_CANCELLED) {
                    s_add (&r, id);
                }
            }
        } else if (state == GQ_JOB_FAILED || state == GQ_JOB_CANCELLED) {
            s_add (&r, ids[i]);
        }
        json_array_append_new (jobs, json_pack ("{s:I, s:s, s:I}", "id", (json_int_t) ids[i],
                                                "state", gq_job_state_name (state) ?: "unknown",
                                                "retried", (json_int_t) (r.count - before)));
    }
    for (size_t i = 0; i < r.count && !r.error; i++) {
        if (gq_store_dep_children (self->store, r.ids[i], s_child, &r)) {
            r.error = GQ_ESTORE;
        }
        gq_array_t *array = gq_arrays_holding (self, r.ids[i]);
        if (array && gq_job_state_final (gq_arrays_state (array)) &&
            gq_store_dep_children (self->store, array->id, s_child, &r)) {
            r.error = GQ_ESTORE; /* the array ends no more: its cancelled dependents too */
        }
    }
    free (ids);
    if (r.error) {
        gq_broker_reject (self, request, r.error,
                          r.error == GQ_ESTORE ? "the broker could not read its store"
                                               : "out of memory");
    } else if (r.busy && zlist_append (self->pending->held, request) == 0) {
        /* Asked again once the ends being recorded are stored. */
        *request_p = NULL;
    } else {
        if (r.count > 1) {
            qsort (r.ids, r.count, sizeof *r.ids, s_by_id); /* (ids is NULL when none) */
        }
        json_t *retried = json_array ();
        int rc = GQ_OK;
        for (size_t i = 0; i < r.count && rc == GQ_OK; i++) {
            /* In id order: a parent before its children, so that they find it queued. */
            rc = s_again (self, r.ids[i]);
            if (rc == GQ_OK) {
                json_array_append_new (retried, json_integer (r.ids[i]));
            } else {
                zsys_error ("broker: retry of job %lld: %s", (long long) r.ids[i],
                            gq_store_errmsg (self->store));
            }
        }
        gq_broker_charge_unknown (self, request, json_array_size (missing));
        self->turn_wrote = true; /* the reply promises writes: it waits for their commit */
        gq_msg_t *reply = gq_msg_reply (request, "RETRY",
                                        json_pack ("{s:O, s:o, s:O}", "jobs", jobs, "retried",
                                                   retried, "missing", missing));
        if (rc) {
            json_object_set_new (gq_msg_body (reply), "error",
                                 json_string (gq_store_errmsg (self->store)));
        }
        gq_broker_reply (self, reply);
    }
    json_decref (jobs);
    json_decref (missing);
    free (r.ids);
    zhashx_destroy (&r.seen);
}
