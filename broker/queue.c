/*  queue.c — the queued jobs in dispatch order: one FIFO per priority, merged by key.

    A job's key is submitted_ms - priority * aging_ms; jobs compare by (key, id), so the order is
    total and stable. Within one priority every list is sorted by key, which for that priority
    is submission order: a new job is appended in O(1). A requeued job (older submitted_ms) goes
    back to its place; we look for it from both ends at once, so the walk costs the distance to
    the nearer end (a requeued job is old, so that end is normally the head).

    Iteration merges the ten heads. A stateless "next after job" would have to search every
    other list, so the queue remembers where the current iteration stands: for each priority the
    first job after the iteration's position (a cursor). gq_queue_next on the job returned last
    is then O(10); push and remove keep the cursors right. Asking for the next of any other job
    rebuilds the cursors by walking the lists (correct, slower; no caller does that). */
#include "queue.h"
#include "gq_check.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_LEVELS 10 /* priorities 0..9 */

struct _gq_queue_t {
    int64_t aging_ms;           /* waiting worth one priority level */
    gq_job_t *head[S_LEVELS];   /* oldest key of each priority, or NULL */
    gq_job_t *tail[S_LEVELS];   /* newest key of each priority, or NULL */
    size_t count[S_LEVELS];     /* jobs of each priority */
    size_t size;                /* jobs in all */
    bool iter_valid;            /* an iteration position is known */
    int64_t iter_key;           /* queue_key of the job returned last by first/next */
    int64_t iter_id;            /* id of that job */
    gq_job_t *cursor[S_LEVELS]; /* per priority, the first job after the position, or NULL */
};

/* The list a job lives in: its priority, clamped (priority is validated upstream). */
static int
s_level (const gq_job_t *job)
{
    return job->priority < S_LEVELS ? job->priority : S_LEVELS - 1;
}

/* True when a comes before b in dispatch order. */
static bool
s_before (const gq_job_t *a, const gq_job_t *b)
{
    return a->queue_key < b->queue_key || (a->queue_key == b->queue_key && a->id < b->id);
}

/* True when job comes after the iteration position. */
static bool
s_after_position (const gq_queue_t *self, const gq_job_t *job)
{
    return job->queue_key > self->iter_key ||
           (job->queue_key == self->iter_key && job->id > self->iter_id);
}

gq_queue_t *
gq_queue_new (int64_t aging_ms)
{
    gq_queue_t *self = (gq_queue_t *) calloc (1, sizeof (gq_queue_t));
    if (self) {
        self->aging_ms = aging_ms > 0 ? aging_ms : 0;
    }
    return self;
}

void
gq_queue_destroy (gq_queue_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        free (*self_p);
        *self_p = NULL;
    }
}

/* Links job before x in list p (x == NULL: at the tail). */
static void
s_link_before (gq_queue_t *self, int p, gq_job_t *job, gq_job_t *x)
{
    job->qnext = x;
    job->qprev = x ? x->qprev : self->tail[p];
    if (job->qprev) {
        job->qprev->qnext = job;
    }
    else {
        self->head[p] = job;
    }
    if (x) {
        x->qprev = job;
    }
    else {
        self->tail[p] = job;
    }
}

void
gq_queue_push (gq_queue_t *self, gq_job_t *job)
{
    assert (self);
    assert (job);
    int p = s_level (job);
    job->queue_key = job->submitted_ms - (int64_t) p * self->aging_ms;

    gq_job_t *head = self->head[p];
    gq_job_t *tail = self->tail[p];
    if (!tail || s_before (tail, job)) {
        s_link_before (self, p, job, NULL); /* the common case: newest of its priority */
    }
    else if (s_before (job, head)) {
        s_link_before (self, p, job, head);
    }
    else {
        /* head < job < tail: walk from both ends; f ends on the first job after ours, b on the
           last job before it. Keys are unique (ids are), so one of them stops first. */
        gq_job_t *f = head->qnext;
        gq_job_t *b = tail->qprev;
        while (true) {
            if (s_before (job, f)) {
                s_link_before (self, p, job, f);
                break;
            }
            f = f->qnext;
            if (s_before (b, job)) {
                s_link_before (self, p, job, b->qnext);
                break;
            }
            b = b->qprev;
        }
    }
    self->count[p]++;
    self->size++;

    /* A job that lands after the iteration position and before the cursor of its priority is
       the new cursor, so an iteration in progress sees it. */
    if (self->iter_valid && s_after_position (self, job) &&
        (!self->cursor[p] || s_before (job, self->cursor[p]))) {
        self->cursor[p] = job;
    }
}

void
gq_queue_remove (gq_queue_t *self, gq_job_t *job)
{
    assert (self);
    assert (job);
    int p = s_level (job);
    assert (self->count[p] > 0);
    if (self->cursor[p] == job) {
        self->cursor[p] = job->qnext;
    }
    if (job->qprev) {
        job->qprev->qnext = job->qnext;
    }
    else {
        self->head[p] = job->qnext;
    }
    if (job->qnext) {
        job->qnext->qprev = job->qprev;
    }
    else {
        self->tail[p] = job->qprev;
    }
    job->qprev = job->qnext = NULL;
    self->count[p]--;
    self->size--;
    /* The iteration position stays where it was (by key, not by pointer), so removing the job
       just returned, then asking for its next, still works. */
}

size_t
gq_queue_size (const gq_queue_t *self)
{
    assert (self);
    return self->size;
}

size_t
gq_queue_size_priority (const gq_queue_t *self, int priority)
{
    assert (self);
    if (priority < 0 || priority >= S_LEVELS) {
        return 0;
    }
    return self->count[priority];
}

/* The first of the cursors, which becomes the iteration position; NULL at the end. */
static gq_job_t *
s_advance (gq_queue_t *self)
{
    int best = -1;
    for (int p = 0; p < S_LEVELS; p++) {
        if (self->cursor[p] && (best < 0 || s_before (self->cursor[p], self->cursor[best]))) {
            best = p;
        }
    }
    if (best < 0) {
        self->iter_valid = false;
        return NULL;
    }
    gq_job_t *job = self->cursor[best];
    self->cursor[best] = job->qnext;
    self->iter_valid = true;
    self->iter_key = job->queue_key;
    self->iter_id = job->id;
    return job;
}

gq_job_t *
gq_queue_first (gq_queue_t *self)
{
    assert (self);
    for (int p = 0; p < S_LEVELS; p++) {
        self->cursor[p] = self->head[p];
    }
    return s_advance (self);
}

gq_job_t *
gq_queue_next (gq_queue_t *self, gq_job_t *job)
{
    assert (self);
    assert (job);
    if (!self->iter_valid || job->queue_key != self->iter_key || job->id != self->iter_id) {
        /* Not the position of the iteration in progress: find the cursors by walking. */
        self->iter_valid = true;
        self->iter_key = job->queue_key;
        self->iter_id = job->id;
        for (int p = 0; p < S_LEVELS; p++) {
            gq_job_t *x = self->head[p];
            while (x && !s_after_position (self, x)) {
                x = x->qnext;
            }
            self->cursor[p] = x;
        }
    }
    return s_advance (self);
}

int64_t
gq_queue_oldest_ms (const gq_queue_t *self)
{
    assert (self);
    /* Each list is in submission order, so its head is its oldest. */
    int64_t oldest = 0;
    bool any = false;
    for (int p = 0; p < S_LEVELS; p++) {
        if (self->head[p] && (!any || self->head[p]->submitted_ms < oldest)) {
            oldest = self->head[p]->submitted_ms;
            any = true;
        }
    }
    return oldest;
}

/* ---- Selftest ---------------------------------------------------------------------------- */

static void
s_job_init (gq_job_t *job, int64_t id, int priority, int64_t submitted_ms)
{
    memset (job, 0, sizeof *job);
    job->id = id;
    job->priority = (uint8_t) priority;
    job->submitted_ms = submitted_ms;
    job->node = -1;
}

/* Checks the whole iteration against a plain sort of the same jobs. */
static int
s_cmp_jobs (const void *a, const void *b)
{
    const gq_job_t *x = *(gq_job_t *const *) a;
    const gq_job_t *y = *(gq_job_t *const *) b;
    return s_before (x, y) ? -1 : s_before (y, x) ? 1 : 0;
}

static void
s_check_order (gq_queue_t *queue, gq_job_t **jobs, size_t n)
{
    qsort (jobs, n, sizeof jobs[0], s_cmp_jobs);
    size_t i = 0;
    for (gq_job_t *job = gq_queue_first (queue); job; job = gq_queue_next (queue, job)) {
        GQ_CHECK_EQ (i < n, 1);
        GQ_CHECK_EQ (job->id, jobs[i]->id);
        i++;
    }
    GQ_CHECK_EQ (i, n);
    GQ_CHECK_EQ (gq_queue_size (queue), n);
}

void
gq_queue_test (bool verbose)
{
    const int64_t aging = 60000;
    const int64_t t0 = 1700000000000LL;
    gq_queue_t *queue = gq_queue_new (aging);
    GQ_CHECK_EQ (queue != NULL, 1);
    gq_job_t jobs[64];

    /* Priority order, FIFO within a priority. */
    s_job_init (&jobs[0], 1, 0, t0);
    s_job_init (&jobs[1], 2, 5, t0 + 1);
    s_job_init (&jobs[2], 3, 9, t0 + 2);
    s_job_init (&jobs[3], 4, 5, t0 + 3);
    s_job_init (&jobs[4], 5, 9, t0 + 4);
    for (int i = 0; i < 5; i++) {
        gq_queue_push (queue, &jobs[i]);
    }
    int64_t want[] = {3, 5, 2, 4, 1};
    gq_job_t *job = gq_queue_first (queue);
    for (int i = 0; i < 5; i++) {
        GQ_CHECK_EQ (job ? job->id : -1, want[i]);
        job = gq_queue_next (queue, job);
    }
    GQ_CHECK_EQ (job == NULL, 1);
    GQ_CHECK_EQ (gq_queue_size (queue), 5);
    GQ_CHECK_EQ (gq_queue_size_priority (queue, 9), 2);
    GQ_CHECK_EQ (gq_queue_size_priority (queue, 5), 2);
    GQ_CHECK_EQ (gq_queue_size_priority (queue, 3), 0);
    GQ_CHECK_EQ (gq_queue_oldest_ms (queue), t0);

    /* Remove from the middle, from a head and from a tail. */
    gq_queue_remove (queue, &jobs[1]); /* id 2 */
    gq_queue_remove (queue, &jobs[2]); /* id 3, head of priority 9 */
    gq_queue_remove (queue, &jobs[0]); /* id 1, the only priority 0 */
    int64_t want2[] = {5, 4};
    job = gq_queue_first (queue);
    for (int i = 0; i < 2; i++) {
        GQ_CHECK_EQ (job ? job->id : -1, want2[i]);
        job = gq_queue_next (queue, job);
    }
    GQ_CHECK_EQ (job == NULL, 1);
    GQ_CHECK_EQ (gq_queue_oldest_ms (queue), t0 + 3);
    gq_queue_remove (queue, &jobs[3]);
    gq_queue_remove (queue, &jobs[4]);
    GQ_CHECK_EQ (gq_queue_size (queue), 0);
    GQ_CHECK_EQ (gq_queue_first (queue) == NULL, 1);
    GQ_CHECK_EQ (gq_queue_oldest_ms (queue), 0);

    /* Aging: a priority-0 job outranks fresh priority-9 work once it has waited 9 * aging_ms. */
    s_job_init (&jobs[0], 10, 0, t0);
    s_job_init (&jobs[1], 11, 9, t0 + 9 * aging - 1); /* submitted just before the bound */
    s_job_init (&jobs[2], 12, 9, t0 + 9 * aging + 1); /* just after */
    gq_queue_push (queue, &jobs[2]);
    gq_queue_push (queue, &jobs[0]);
    gq_queue_push (queue, &jobs[1]);
    int64_t want3[] = {11, 10, 12};
    job = gq_queue_first (queue);
    for (int i = 0; i < 3; i++) {
        GQ_CHECK_EQ (job ? job->id : -1, want3[i]);
        job = gq_queue_next (queue, job);
    }
    /* At exactly 9 * aging_ms the keys are equal and the older id wins. */
    s_job_init (&jobs[3], 9, 9, t0 + 9 * aging);
    gq_queue_push (queue, &jobs[3]);
    int64_t want4[] = {11, 9, 10, 12};
    job = gq_queue_first (queue);
    for (int i = 0; i < 4; i++) {
        GQ_CHECK_EQ (job ? job->id : -1, want4[i]);
        job = gq_queue_next (queue, job);
    }
    for (int i = 0; i < 4; i++) {
        gq_queue_remove (queue, &jobs[i]);
    }

    /* Requeue: a job pushed again keeps its submitted_ms and lands at its place. */
    for (int i = 0; i < 10; i++) {
        s_job_init (&jobs[i], 100 + i, 3, t0 + i * 10);
        gq_queue_push (queue, &jobs[i]);
    }
    gq_queue_remove (queue, &jobs[2]);
    gq_queue_remove (queue, &jobs[7]);
    gq_queue_remove (queue, &jobs[0]);
    gq_queue_push (queue, &jobs[7]); /* near the tail */
    gq_queue_push (queue, &jobs[2]); /* near the head */
    gq_queue_push (queue, &jobs[0]); /* the head */
    gq_job_t *order[64];
    for (int i = 0; i < 10; i++) {
        order[i] = &jobs[i];
    }
    s_check_order (queue, order, 10);
    for (int i = 0; i < 10; i++) {
        gq_queue_remove (queue, &jobs[i]);
    }

    /* Iteration survives removal of the current job and pushes during the walk. */
    for (int i = 0; i < 6; i++) {
        s_job_init (&jobs[i], 200 + i, i % 3, t0 + i);
        gq_queue_push (queue, &jobs[i]);
    }
    size_t seen = 0;
    bool pushed = false;
    job = gq_queue_first (queue);
    while (job) {
        gq_job_t *next = gq_queue_next (queue, job);
        gq_queue_remove (queue, job);
        seen++;
        if (!pushed) {
            /* A fresh priority-0 job sorts last: the walk must still reach it. */
            s_job_init (&jobs[6], 206, 0, t0 + 100);
            gq_queue_push (queue, &jobs[6]);
            pushed = true;
            next = gq_queue_next (queue, job);
        }
        job = next;
    }
    GQ_CHECK_EQ (seen, 7);
    GQ_CHECK_EQ (gq_queue_size (queue), 0);

    /* Random pushes, requeues and removals against a sort of the same set. */
    uint32_t rng = 12345;
    gq_job_t *pool = (gq_job_t *) calloc (2000, sizeof (gq_job_t));
    bool *in = (bool *) calloc (2000, sizeof (bool));
    gq_job_t **live = (gq_job_t **) calloc (2000, sizeof (gq_job_t *));
    GQ_CHECK_EQ (pool && in && live, 1);
    for (int round = 0; round < 20; round++) {
        for (int step = 0; step < 400; step++) {
            rng = rng * 1103515245u + 12345u;
            int k = (int) ((rng >> 8) % 2000);
            if (!in[k]) {
                if (pool[k].id == 0) {
                    s_job_init (&pool[k], k + 1, (int) ((rng >> 4) % 10),
                                t0 + (int64_t) ((rng >> 12) % 1000000));
                }
                gq_queue_push (queue, &pool[k]); /* a first push or a requeue */
                in[k] = true;
            }
            else {
                gq_queue_remove (queue, &pool[k]);
                in[k] = false;
            }
        }
        size_t n = 0;
        for (int k = 0; k < 2000; k++) {
            if (in[k]) {
                live[n++] = &pool[k];
            }
        }
        s_check_order (queue, live, n);
    }
    free (pool);
    free (in);
    free (live);
    gq_queue_destroy (&queue);
    gq_queue_destroy (&queue);
    if (verbose) {
        printf ("(queue: order, aging, requeue, iteration) ");
    }
}
