/*  writer.c — batches of store writes, and the thread that applies them.

    A batch is an array of operations: one per write, each a small struct with what it writes
    copied in (strings inline or malloc'd; a job's payload, constraints and blobs borrowed, which
    never change once a job is made). The writer is a czmq actor: it receives a batch pointer on
    its pipe, applies it (BEGIN IMMEDIATE, the writes, COMMIT) and sends the pointer back: a
    lane (lane.h).

    Failures: a write that fails for its own sake (a constraint, a bad value) fails alone and the
    transaction goes on; a group (one submission) stands or falls whole through a savepoint. A
    failure of the database or the disk fails the batch, which the broker keeps and applies again
    later: applying is repeatable. */
#include "writer.h"

#include <string.h>

#include "gq_check.h"

typedef enum {
    S_OP_GROUP_BEGIN,
    S_OP_GROUP_END,
    S_OP_JOB_INSERT,
    S_OP_BLOB,
    S_OP_ATTEMPT,
    S_OP_FINISH,
    S_OP_NODE,
    S_OP_META,
    S_OP_PURGE,
    S_OP_DEP,
    S_OP_ARRAY,
    S_OP_RETRY
} s_op_type_t;

typedef struct {
    uint8_t type;       /* s_op_type_t */
    bool dead;          /* forgotten */
    int64_t job_id;     /* the job it writes, 0 for none */
    union {
        struct {
            const char *payload;                /* borrowed, like the next three */
            const gq_constraints_t *constraints;
            const char *kind, *model, *idem, *client;
            int64_t submitted_ms;
            uint32_t payload_len, timeout_ms;
            int32_t min_vram_mb;
            uint8_t priority, max_attempts;
        } insert;
        struct {
            int group; /* its number in the batch */
        } group;
        struct {
            int idx;
            const void *data;
            size_t size;
        } blob;
        struct {
            int attempt;
            int64_t started_ms, finished_ms;
            const char *outcome;
            char *reason;
            bool update; /* a run recorded already is updated, not kept */
        } attempt;
        struct {
            int state, attempts;
            int64_t started_ms, finished_ms;
            const char *result; /* borrowed, like error */
            const char *error;
        } finish;
        struct {
            char *gpu_model;
            int64_t vram_total_mb, now_ms, jobs_ok, jobs_failed;
            double tflops, price;
        } node;
        struct {
            const char *key;
            int64_t value;
        } meta;
        struct {
            int64_t before_ms;
            int limit;
        } purge;
        struct {
            int64_t parent; /* job_id is the child */
            int kind;       /* gq_dep_kind_t */
            bool inputs;    /* the child takes its parents' results; name: the parent's */
        } dep;
        struct {
            int max_attempts; /* the job's new budget */
        } retry;
        struct {
            int64_t first, count, submitted_ms; /* job_id is the array's id */
            const char *spec;                   /* borrowed from the broker's array */
        } array;
    } u;
    char name[GQ_NAME_MAX]; /* node name of an attempt, finish or node; "" for none */
} s_op_t;

struct _gq_batch_t {
    s_op_t *ops;
    size_t count;       /* used entries of ops */
    size_t capacity;
    size_t live;        /* entries not forgotten */
    int status;         /* 0, GQ_ESTORE after a failed apply, GQ_ENOMEM when spoiled */
    int groups;         /* groups begun */
    uint8_t *failed;    /* per group: true when its writes were undone (last apply) */
    size_t faults;      /* writes outside groups that failed alone (last apply) */
    bool heavy;         /* purges or a checkpoint: for the writer thread, not the loop */
    bool checkpoint;    /* checkpoint the WAL after the commit */
    int purged;         /* jobs deleted by its purges */
    int64_t purged_by_state[GQ_JOB_STATES];
    char errmsg[512];   /* why the last apply failed */
    char fault[512];    /* why the first write that failed alone did, "" for none */
};

/* ---- Batches ------------------------------------------------------------------------------- */

gq_batch_t *
gq_batch_new (void)
{
    return (gq_batch_t *) calloc (1, sizeof (gq_batch_t));
}

static void
s_op_free (s_op_t *op)
{
    switch (op->type) {
    case S_OP_ATTEMPT:
        free (op->u.attempt.reason);
        break;
    case S_OP_NODE:
        free (op->u.node.gpu_model);
        break;
    default:
        break;
    }
}

void
gq_batch_destroy (gq_batch_t **self_p)
{
    if (!self_p || !*self_p) {
        return;
    }
    gq_batch_t *self = *self_p;
    for (size_t i = 0; i < self->count; i++) {
        s_op_free (&self->ops[i]);
    }
    free (self->ops);
    free (self->failed);
    free (self);
    *self_p = NULL;
}

size_t
gq_batch_size (const gq_batch_t *self)
{
    return self->live;
}

static int
s_spoil (gq_batch_t *self)
{
    if (!self->status) {
        self->status = GQ_ENOMEM;
        snprintf (self->errmsg, sizeof self->errmsg, "out of memory recording a write");
    }
    return GQ_ENOMEM;
}

/* A new zeroed operation at the end, or NULL (the batch is spoiled). */
static s_op_t *
s_op_add (gq_batch_t *self, s_op_type_t type, int64_t job_id, const char *name)
{
    if (self->status) {
        return NULL;
    }
    if (self->count == self->capacity) {
        size_t capacity = self->capacity ? self->capacity * 2 : 64;
        s_op_t *grown = (s_op_t *) realloc (self->ops, capacity * sizeof *grown);
        if (!grown) {
            s_spoil (self);
            return NULL;
        }
        self->ops = grown;
        self->capacity = capacity;
    }
    s_op_t *op = &self->ops[self->count++];
    memset (op, 0, offsetof (s_op_t, name));
    op->type = (uint8_t) type;
    op->job_id = job_id;
    snprintf (op->name, sizeof op->name, "%s", name ? name : "");
    self->live++;
    return op;
}

/* A malloc'd copy of text (NULL for NULL); false when out of memory. */
static bool
s_copy (const char *text, char **copy)
{
    *copy = text ? strdup (text) : NULL;
    return !text || *copy;
}

int
gq_batch_job_insert (gq_batch_t *self, const gq_job_t *job, const char *kind, const char *model,
                     const char *idem, const char *client)
{
    s_op_t *op = s_op_add (self, S_OP_JOB_INSERT, job->id, NULL);
    if (!op) {
        return GQ_ENOMEM;
    }
    op->u.insert.payload = job->payload;
    op->u.insert.payload_len = job->payload_len;
    op->u.insert.constraints = job->constraints;
    op->u.insert.kind = kind;
    op->u.insert.model = model;
    op->u.insert.idem = idem;
    op->u.insert.client = client;
    op->u.insert.submitted_ms = job->submitted_ms;
    op->u.insert.timeout_ms = job->timeout_ms;
    op->u.insert.min_vram_mb = job->min_vram_mb;
    op->u.insert.priority = job->priority;
    op->u.insert.max_attempts = job->max_attempts;
    return GQ_OK;
}

int
gq_batch_dep_insert (gq_batch_t *self, int64_t child, int64_t parent, int kind, const char *name,
                     bool inputs)
{
    s_op_t *op = s_op_add (self, S_OP_DEP, child, name); /* the name is copied */
    if (!op) {
        return GQ_ENOMEM;
    }
    op->u.dep.parent = parent;
    op->u.dep.kind = kind;
    op->u.dep.inputs = inputs;
    return GQ_OK;
}

int
gq_batch_array_insert (gq_batch_t *self, int64_t id, int64_t first, int64_t count,
                       const char *spec, int64_t submitted_ms)
{
    s_op_t *op = s_op_add (self, S_OP_ARRAY, id, NULL);
    if (!op) {
        return GQ_ENOMEM;
    }
    op->u.array.first = first;
    op->u.array.count = count;
    op->u.array.spec = spec;
    op->u.array.submitted_ms = submitted_ms;
    return GQ_OK;
}

int
gq_batch_job_retry (gq_batch_t *self, int64_t id, int max_attempts)
{
    s_op_t *op = s_op_add (self, S_OP_RETRY, id, NULL);
    if (!op) {
        return GQ_ENOMEM;
    }
    op->u.retry.max_attempts = max_attempts;
    return GQ_OK;
}

int
gq_batch_group_begin (gq_batch_t *self)
{
    uint8_t *failed = (uint8_t *) realloc (self->failed, (size_t) self->groups + 1);
    s_op_t *op = failed ? s_op_add (self, S_OP_GROUP_BEGIN, 0, NULL) : NULL;
    if (failed) {
        self->failed = failed;
    }
    if (!op) {
        s_spoil (self);
        return GQ_ENOMEM;
    }
    self->failed[self->groups] = false;
    op->u.group.group = self->groups;
    return self->groups++;
}

int
gq_batch_group_end (gq_batch_t *self)
{
    return s_op_add (self, S_OP_GROUP_END, 0, NULL) ? GQ_OK : GQ_ENOMEM;
}

int
gq_batch_blob_insert (gq_batch_t *self, int64_t job_id, int idx, const void *data, size_t size)
{
    s_op_t *op = s_op_add (self, S_OP_BLOB, job_id, NULL);
    if (!op) {
        return GQ_ENOMEM;
    }
    op->u.blob.idx = idx;
    op->u.blob.data = data;
    op->u.blob.size = size;
    return GQ_OK;
}

int
gq_batch_attempt (gq_batch_t *self, int64_t job_id, int attempt, const char *node,
                  int64_t started_ms, int64_t finished_ms, const char *outcome, const char *reason,
                  bool update)
{
    s_op_t *op = s_op_add (self, S_OP_ATTEMPT, job_id, node);
    if (!op) {
        return GQ_ENOMEM;
    }
    op->u.attempt.attempt = attempt;
    op->u.attempt.started_ms = started_ms;
    op->u.attempt.finished_ms = finished_ms;
    op->u.attempt.outcome = outcome;
    op->u.attempt.update = update;
    return s_copy (reason, &op->u.attempt.reason) ? GQ_OK : s_spoil (self);
}

int
gq_batch_job_finish (gq_batch_t *self, int64_t job_id, int state, int attempts, const char *node,
                     int64_t started_ms, int64_t finished_ms, const char *result,
                     const char *error)
{
    s_op_t *op = s_op_add (self, S_OP_FINISH, job_id, node);
    if (!op) {
        return GQ_ENOMEM;
    }
    op->u.finish.state = state;
    op->u.finish.attempts = attempts;
    op->u.finish.started_ms = started_ms;
    op->u.finish.finished_ms = finished_ms;
    op->u.finish.result = result;
    op->u.finish.error = error;
    return GQ_OK;
}

int
gq_batch_node (gq_batch_t *self, const char *name, const char *gpu_model, int64_t vram_total_mb,
               double tflops, double price, int64_t now_ms, int64_t jobs_ok, int64_t jobs_failed)
{
    s_op_t *op = s_op_add (self, S_OP_NODE, 0, name);
    if (!op) {
        return GQ_ENOMEM;
    }
    op->u.node.vram_total_mb = vram_total_mb;
    op->u.node.tflops = tflops;
    op->u.node.price = price;
    op->u.node.now_ms = now_ms;
    op->u.node.jobs_ok = jobs_ok;
    op->u.node.jobs_failed = jobs_failed;
    return s_copy (gpu_model, &op->u.node.gpu_model) ? GQ_OK : s_spoil (self);
}

int
gq_batch_meta (gq_batch_t *self, const char *key, int64_t value)
{
    s_op_t *op = s_op_add (self, S_OP_META, 0, NULL);
    if (!op) {
        return GQ_ENOMEM;
    }
    op->u.meta.key = key;
    op->u.meta.value = value;
    return GQ_OK;
}

int
gq_batch_checkpoint (gq_batch_t *self)
{
    self->heavy = self->checkpoint = true;
    return GQ_OK;
}

bool
gq_batch_heavy (const gq_batch_t *self)
{
    return self->heavy;
}

int
gq_batch_purge (gq_batch_t *self, int64_t before_ms, int limit)
{
    self->heavy = true;
    s_op_t *op = s_op_add (self, S_OP_PURGE, 0, NULL);
    if (!op) {
        return GQ_ENOMEM;
    }
    op->u.purge.before_ms = before_ms;
    op->u.purge.limit = limit;
    return GQ_OK;
}

void
gq_batch_forget (gq_batch_t *self, int64_t first_id, int64_t last_id)
{
    for (size_t i = 0; i < self->count; i++) {
        s_op_t *op = &self->ops[i];
        if (!op->dead && op->job_id >= first_id && op->job_id <= last_id && op->job_id > 0) {
            op->dead = true;
            self->live--;
        }
    }
}

/* One operation inside the transaction: 0 or GQ_ESTORE (also for an idem key taken, which the
   broker checks before it records an insert, so only a broken invariant gets there). */
static int
s_op_apply (gq_batch_t *self, s_op_t *op, gq_store_t *store)
{
    const char *name = op->name[0] ? op->name : NULL;
    int rc = GQ_OK;
    switch (op->type) {
    case S_OP_JOB_INSERT:
        /* No idem lookup: the broker looked the key up before it recorded the insert. */
    {
        /* The insert's own copy: the store sets the id of what it is given. */
        gq_job_t job = {.id = op->job_id,
                        .submitted_ms = op->u.insert.submitted_ms,
                        .payload = (char *) op->u.insert.payload,
                        .constraints = (gq_constraints_t *) op->u.insert.constraints,
                        .payload_len = op->u.insert.payload_len,
                        .timeout_ms = op->u.insert.timeout_ms,
                        .min_vram_mb = op->u.insert.min_vram_mb,
                        .priority = op->u.insert.priority,
                        .max_attempts = op->u.insert.max_attempts};
        rc = gq_store_job_insert (store, &job, op->u.insert.kind, op->u.insert.model,
                                  op->u.insert.idem, op->u.insert.client, NULL);
        break;
    }
    case S_OP_BLOB:
        rc = gq_store_job_blob_insert (store, op->job_id, "in", op->u.blob.idx, op->u.blob.data,
                                       op->u.blob.size);
        break;
    case S_OP_ATTEMPT:
        rc = gq_store_attempt_record (store, op->job_id, op->u.attempt.attempt,
                                      name ? name : "?", op->u.attempt.started_ms,
                                      op->u.attempt.finished_ms, op->u.attempt.outcome,
                                      op->u.attempt.reason, op->u.attempt.update);
        break;
    case S_OP_FINISH: {
        const char *result = op->u.finish.result;
        rc = gq_store_job_finish (store, op->job_id, op->u.finish.state, op->u.finish.attempts,
                                  name, op->u.finish.started_ms, op->u.finish.finished_ms, result,
                                  result ? strlen (result) : 0, op->u.finish.error);
        if (rc == GQ_ESTATE || rc == GQ_ENOTFOUND) {
            rc = GQ_OK; /* the first end wins */
        }
        break;
    }
    case S_OP_NODE:
        rc = gq_store_node_upsert (store, op->name, op->u.node.gpu_model ? op->u.node.gpu_model : "",
                                   op->u.node.vram_total_mb, op->u.node.tflops, op->u.node.price,
                                   op->u.node.now_ms, op->u.node.jobs_ok,
                                   op->u.node.jobs_failed);
        break;
    case S_OP_META:
        rc = gq_store_meta_set (store, op->u.meta.key, op->u.meta.value);
        break;
    case S_OP_DEP:
        rc = gq_store_dep_insert (store, op->job_id, op->u.dep.parent, op->u.dep.kind,
                                  op->name[0] ? op->name : NULL, op->u.dep.inputs);
        break;
    case S_OP_RETRY:
        rc = gq_store_job_retry (store, op->job_id, op->u.retry.max_attempts);
        break;
    case S_OP_ARRAY:
        rc = gq_store_array_insert (store, op->job_id, op->u.array.first, op->u.array.count,
                                    op->u.array.spec, op->u.array.submitted_ms);
        break;
    case S_OP_PURGE: {
        int64_t by_state[GQ_JOB_STATES];
        int purged = gq_store_purge (store, op->u.purge.before_ms, op->u.purge.limit, by_state);
        if (purged > 0) {
            self->purged += purged;
            for (int state = 0; state < GQ_JOB_STATES; state++) {
                self->purged_by_state[state] += by_state[state];
            }
        }
        rc = purged < 0 ? purged : GQ_OK;
        break;
    }
    }
    return rc;
}

/* The writes of a batch in the open transaction: 0, or GQ_ESTORE when the database or the disk
   failed (errmsg says why). A write that fails for its own sake fails alone, or undoes its
   group. */
static int
s_ops_apply (gq_batch_t *self, gq_store_t *store)
{
    int group = -1;    /* the group being applied, -1 outside one */
    bool open = false; /* its savepoint is open */
    for (size_t i = 0; i < self->count; i++) {
        s_op_t *op = &self->ops[i];
        int rc = GQ_OK;
        if (op->dead || (group >= 0 && !open && op->type != S_OP_GROUP_END)) {
            continue; /* forgotten, or in a group undone already */
        }
        if (op->type == S_OP_GROUP_BEGIN) {
            group = op->u.group.group;
            open = (rc = gq_store_group_begin (store)) == GQ_OK;
        } else if (op->type == S_OP_GROUP_END) {
            rc = open ? gq_store_group_end (store, true) : GQ_OK;
            group = -1;
            open = false;
        } else if ((rc = s_op_apply (self, op, store)) != GQ_OK && gq_store_row_fault (store)) {
            if (!self->fault[0]) {
                snprintf (self->fault, sizeof self->fault, "%s", gq_store_errmsg (store));
            }
            if (group >= 0) {
                self->failed[group] = true;
                open = false;
                rc = gq_store_group_end (store, false);
            } else {
                self->faults++;
                rc = GQ_OK;
            }
        }
        if (rc) {
            snprintf (self->errmsg, sizeof self->errmsg, "%s", gq_store_errmsg (store));
            return GQ_ESTORE;
        }
    }
    return GQ_OK;
}

int
gq_batch_apply (gq_batch_t *self, gq_store_t *store)
{
    if (self->status == GQ_ENOMEM) {
        return self->status; /* spoiled while recorded */
    }
    /* Applying again after a failure starts afresh. */
    self->status = GQ_OK;
    self->errmsg[0] = self->fault[0] = '\0';
    self->faults = 0;
    self->purged = 0;
    memset (self->purged_by_state, 0, sizeof self->purged_by_state);
    if (self->groups) {
        memset (self->failed, 0, (size_t) self->groups);
    }
    if (self->live == 0) {
        return GQ_OK;
    }
    if (gq_store_begin (store)) {
        snprintf (self->errmsg, sizeof self->errmsg, "%s", gq_store_errmsg (store));
        self->status = GQ_ESTORE;
        return self->status;
    }
    self->status = s_ops_apply (self, store);
    if (!self->status && gq_store_commit (store)) {
        snprintf (self->errmsg, sizeof self->errmsg, "%s", gq_store_errmsg (store));
        self->status = GQ_ESTORE;
    }
    if (self->status) {
        gq_store_rollback (store);
        self->purged = 0;
        memset (self->purged_by_state, 0, sizeof self->purged_by_state);
    } else if (self->checkpoint) {
        gq_store_checkpoint (store); /* a checkpoint that cannot run now runs next time */
    }
    return self->status;
}

int
gq_batch_status (const gq_batch_t *self)
{
    return self->status;
}

const char *
gq_batch_errmsg (const gq_batch_t *self)
{
    return self->errmsg;
}

bool
gq_batch_group_failed (const gq_batch_t *self, int group)
{
    return group >= 0 && group < self->groups && self->failed[group];
}

size_t
gq_batch_faults (const gq_batch_t *self, const char **first)
{
    if (first) {
        *first = self->fault;
    }
    return self->faults;
}

int
gq_batch_purged (const gq_batch_t *self, int64_t by_state[GQ_JOB_STATES])
{
    if (by_state) {
        memcpy (by_state, self->purged_by_state, sizeof self->purged_by_state);
    }
    return self->purged;
}

/* ---- The writer thread --------------------------------------------------------------------- */

static void
s_apply (void *item, gq_store_t *store)
{
    gq_batch_apply ((gq_batch_t *) item, store);
}

gq_lane_t *
gq_writer_new (const char *db_path, gq_durability_t durability, char *why, size_t whylen)
{
    return gq_lane_new ("writer", db_path, durability, s_apply, why, whylen);
}

/* ---- Selftest ------------------------------------------------------------------------------ */

static gq_job_t
s_test_job (int64_t id, char *payload, int64_t submitted_ms)
{
    gq_job_t job;
    memset (&job, 0, sizeof job);
    job.id = id;
    job.payload = payload;
    job.payload_len = (uint32_t) strlen (payload);
    job.max_attempts = 3;
    job.submitted_ms = submitted_ms;
    job.node = -1;
    return job;
}

static const char *
s_state_of (gq_store_t *store, int64_t id)
{
    static char state[32];
    json_t *json = gq_store_job_json (store, id, false);
    snprintf (state, sizeof state, "%s",
              json ? json_string_value (json_object_get (json, "state")) : "absent");
    json_decref (json);
    return state;
}

void
gq_writer_test (bool verbose)
{
    (void) verbose;
    char dir[] = "/tmp/gq-writer-XXXXXX";
    GQ_CHECK_EQ (mkdtemp (dir) != NULL, 1);
    char path[128];
    snprintf (path, sizeof path, "%s/gridq.db", dir);
    char why[300];
    gq_store_t *reader = gq_store_open (path, GQ_DURABILITY_NORMAL, why, sizeof why);
    GQ_CHECK_EQ (reader != NULL, 1);
    gq_lane_t *writer = gq_writer_new (path, GQ_DURABILITY_FULL, why, sizeof why);
    GQ_CHECK_EQ (writer != NULL, 1);
    int64_t t = 1764411673000;
    char p1[] = "{\"n\":1}", p2[] = "{\"n\":2}", p3[] = "[3]";
    gq_job_t j1 = s_test_job (100, p1, t), j2 = s_test_job (101, p2, t + 1);
    gq_job_t j3 = s_test_job (102, p3, t + 2);

    /* Three batches in flight at once come back in order, each committed; the reader sees
       each once it is back. */
    gq_batch_t *a = gq_batch_new (), *b = gq_batch_new (), *c = gq_batch_new ();
    GQ_CHECK_EQ (gq_batch_job_insert (a, &j1, "echo", NULL, "idem-1", NULL), 0);
    GQ_CHECK_EQ (gq_batch_job_insert (a, &j2, "echo", "m", NULL, "client"), 0);
    GQ_CHECK_EQ (gq_batch_blob_insert (a, j2.id, 0, "blob", 4), 0);
    GQ_CHECK_EQ (gq_batch_meta (a, "next_job_id", 200), 0);
    GQ_CHECK_EQ (gq_batch_size (a), 4);
    GQ_CHECK_EQ (gq_batch_attempt (b, j1.id, 1, "node-a", t + 5, t + 9, "ok", NULL, true), 0);
    GQ_CHECK_EQ (gq_batch_job_finish (b, j1.id, GQ_JOB_DONE, 1, "node-a", t + 5, t + 9,
                                      "{\"r\":1}", NULL),
                 0);
    GQ_CHECK_EQ (gq_batch_node (b, "node-a", "RTX 4090", 24564, 82.6, 0.7, t + 9, 1, 0), 0);
    GQ_CHECK_EQ (gq_batch_job_finish (c, j2.id, GQ_JOB_CANCELLED, 0, NULL, 0, t + 10, NULL,
                                      "cancelled by a client"),
                 0);
    GQ_CHECK_EQ (gq_batch_job_finish (c, j1.id, GQ_JOB_FAILED, 1, "node-b", t + 5, t + 11, NULL,
                                      "late"),
                 0); /* ended already: no failure, no change */
    GQ_CHECK_EQ (gq_lane_send (writer, a), 0);
    GQ_CHECK_EQ (gq_lane_send (writer, b), 0);
    GQ_CHECK_EQ (gq_lane_send (writer, c), 0);
    GQ_CHECK_EQ (gq_lane_busy (writer), 3);
    GQ_CHECK_EQ (gq_lane_recv (writer) == a, 1);
    GQ_CHECK_EQ (gq_batch_status (a), 0);
    GQ_CHECK_EQ (gq_lane_recv (writer) == b, 1);
    GQ_CHECK_EQ (gq_lane_recv (writer) == c, 1);
    GQ_CHECK_EQ (gq_lane_busy (writer), 0);
    GQ_CHECK_EQ (gq_batch_status (c), 0);
    GQ_CHECK_STR (s_state_of (reader, j1.id), "done");
    GQ_CHECK_STR (s_state_of (reader, j2.id), "cancelled");
    int64_t found = 0, meta = 0;
    GQ_CHECK_EQ (gq_store_job_by_idem (reader, "idem-1", &found), 1);
    GQ_CHECK_EQ (found, j1.id);
    GQ_CHECK_EQ (gq_store_meta_get (reader, "next_job_id", &meta), 0);
    GQ_CHECK_EQ (meta, 200);
    json_t *nodes = gq_store_nodes_json (reader);
    GQ_CHECK_EQ (json_array_size (nodes), 1);
    json_decref (nodes);
    gq_batch_destroy (&a);
    gq_batch_destroy (&b);
    gq_batch_destroy (&c);

    /* A write that fails for its own sake (an id taken) fails alone, or with its group: the
       batch commits the rest and says what failed. */
    gq_job_t again = s_test_job (100, p3, t + 3);
    a = gq_batch_new ();
    int group = gq_batch_group_begin (a);
    GQ_CHECK_EQ (group, 0);
    GQ_CHECK_EQ (gq_batch_job_insert (a, &j3, "echo", NULL, NULL, NULL), 0);
    GQ_CHECK_EQ (gq_batch_job_insert (a, &again, "echo", NULL, NULL, NULL), 0);
    GQ_CHECK_EQ (gq_batch_group_end (a), 0);
    GQ_CHECK_EQ (gq_batch_group_begin (a), 1);
    GQ_CHECK_EQ (gq_batch_blob_insert (a, j2.id, 1, "more", 4), 0);
    GQ_CHECK_EQ (gq_batch_group_end (a), 0);
    GQ_CHECK_EQ (gq_batch_attempt (a, 999999, 1, "x", t, t, "ok", NULL, true), 0); /* no job */
    GQ_CHECK_EQ (gq_batch_meta (a, "next_job_id", 300), 0);
    GQ_CHECK_EQ (gq_lane_send (writer, a), 0);
    GQ_CHECK_EQ (gq_lane_recv (writer) == a, 1);
    GQ_CHECK_EQ (gq_batch_status (a), 0);
    GQ_CHECK_EQ (gq_batch_group_failed (a, 0), true);
    GQ_CHECK_EQ (gq_batch_group_failed (a, 1), false);
    const char *fault = NULL;
    GQ_CHECK_EQ (gq_batch_faults (a, &fault), 1);
    GQ_CHECK_EQ (strstr (fault, "insert job") != NULL, 1); /* the first write that failed */
    GQ_CHECK_STR (s_state_of (reader, j3.id), "absent");   /* undone with its group */
    GQ_CHECK_EQ (gq_store_meta_get (reader, "next_job_id", &meta), 0);
    GQ_CHECK_EQ (meta, 300);
    gq_batch_destroy (&a);

    /* A full disk fails the whole batch, which is kept and applied again once there is room. */
    a = gq_batch_new ();
    GQ_CHECK_EQ (gq_batch_job_insert (a, &j3, "echo", NULL, NULL, NULL), 0);
    char *big = (char *) malloc (256 * 1024);
    memset (big, 'x', 256 * 1024);
    GQ_CHECK_EQ (gq_batch_blob_insert (a, j3.id, 0, big, 256 * 1024), 0);
    GQ_CHECK_EQ (gq_store_max_pages (reader, -1), 0); /* no room to grow */
    GQ_CHECK_EQ (gq_batch_apply (a, reader), GQ_ESTORE);
    GQ_CHECK_EQ (strstr (gq_batch_errmsg (a), "full") != NULL, 1);
    GQ_CHECK_EQ (gq_store_row_fault (reader), false);
    GQ_CHECK_EQ (gq_store_in_transaction (reader), false);
    GQ_CHECK_STR (s_state_of (reader, j3.id), "absent");
    GQ_CHECK_EQ (gq_store_max_pages (reader, 0), 0);
    GQ_CHECK_EQ (gq_batch_apply (a, reader), 0);
    GQ_CHECK_STR (s_state_of (reader, j3.id), "queued");
    gq_batch_destroy (&a);
    free (big);
    /* Inserted again: a write of its own that fails alone. */
    a = gq_batch_new ();
    GQ_CHECK_EQ (gq_batch_job_insert (a, &j3, "echo", NULL, NULL, NULL), 0);
    GQ_CHECK_EQ (gq_batch_apply (a, reader), 0);
    GQ_CHECK_EQ (gq_batch_faults (a, NULL), 1);
    gq_batch_destroy (&a);
    /* Forgotten writes are not applied. */
    a = gq_batch_new ();
    GQ_CHECK_EQ (gq_batch_job_insert (a, &again, "echo", NULL, NULL, NULL), 0);
    GQ_CHECK_EQ (gq_batch_attempt (a, again.id, 1, "x", t, t, "ok", NULL, true), 0);
    GQ_CHECK_EQ (gq_batch_meta (a, "next_job_id", 400), 0);
    gq_batch_forget (a, again.id, again.id);
    GQ_CHECK_EQ (gq_batch_size (a), 1);
    GQ_CHECK_EQ (gq_batch_apply (a, reader), 0); /* the caller's own connection works too */
    GQ_CHECK_EQ (gq_batch_faults (a, NULL), 0);
    gq_batch_destroy (&a);

    /* An empty batch is no transaction; a spoiled one is never applied. */
    a = gq_batch_new ();
    GQ_CHECK_EQ (gq_batch_apply (a, reader), 0);
    a->status = GQ_ENOMEM;
    GQ_CHECK_EQ (gq_batch_job_insert (a, &j3, "echo", NULL, NULL, NULL), GQ_ENOMEM);
    GQ_CHECK_EQ (gq_batch_job_finish (a, j3.id, GQ_JOB_DONE, 1, NULL, 0, t, "1", NULL),
                 GQ_ENOMEM);
    GQ_CHECK_EQ (gq_batch_size (a), 0);
    GQ_CHECK_EQ (gq_lane_send (writer, a), 0);
    GQ_CHECK_EQ (gq_lane_recv (writer) == a, 1);
    GQ_CHECK_EQ (gq_batch_status (a), GQ_ENOMEM);
    gq_batch_destroy (&a);

    /* Retention through a batch reports what it purged. */
    a = gq_batch_new ();
    GQ_CHECK_EQ (gq_batch_job_finish (a, j3.id, GQ_JOB_DONE, 1, NULL, t, t + 20, NULL, NULL), 0);
    GQ_CHECK_EQ (gq_batch_purge (a, t + 1000, 10), 0);
    GQ_CHECK_EQ (gq_lane_send (writer, a), 0);
    GQ_CHECK_EQ (gq_lane_recv (writer) == a, 1);
    GQ_CHECK_EQ (gq_batch_status (a), 0);
    int64_t by_state[GQ_JOB_STATES];
    GQ_CHECK_EQ (gq_batch_purged (a, by_state), 2); /* j1 and j2; j3, the newest, stays */
    GQ_CHECK_EQ (by_state[GQ_JOB_DONE], 1);
    GQ_CHECK_EQ (by_state[GQ_JOB_CANCELLED], 1);
    GQ_CHECK_STR (s_state_of (reader, j1.id), "absent");
    GQ_CHECK_STR (s_state_of (reader, j3.id), "done");
    gq_batch_destroy (&a);

    /* A first attempt that succeeded has no attempt row: the job's row tells it. */
    char p4[] = "[4]";
    gq_job_t j4 = s_test_job (103, p4, t + 30);
    a = gq_batch_new ();
    GQ_CHECK_EQ (gq_batch_job_insert (a, &j4, "echo", NULL, NULL, NULL), 0);
    GQ_CHECK_EQ (gq_batch_job_finish (a, j4.id, GQ_JOB_DONE, 1, "node-c", t + 31, t + 32,
                                      "4", NULL),
                 0);
    GQ_CHECK_EQ (gq_batch_apply (a, reader), 0);
    gq_batch_destroy (&a);
    json_t *job = gq_store_job_json (reader, j4.id, false);
    json_t *detail = json_object_get (job, "attempts_detail");
    GQ_CHECK_EQ (json_array_size (detail), 1);
    GQ_CHECK_STR (json_string_value (json_object_get (json_array_get (detail, 0), "outcome")), "ok");
    GQ_CHECK_STR (json_string_value (json_object_get (json_array_get (detail, 0), "node")),
                  "node-c");
    GQ_CHECK_EQ (json_integer_value (json_object_get (json_array_get (detail, 0), "attempt")), 1);
    json_decref (job);

    GQ_CHECK_EQ (gq_lane_recv (writer) == NULL, 1); /* nothing handed over: no wait */
    gq_lane_destroy (&writer);
    gq_lane_destroy (&writer);
    gq_store_close (&reader);
    char command[200];
    snprintf (command, sizeof command, "rm -rf %s", dir);
    GQ_CHECK_EQ (system (command), 0);
}
