/*  sched.c — the dispatch policy: queue order, backfill within a window, one reservation.

    ORDER AND BACKFILL. Jobs are taken in queue order (priority with aging). A job no node can
    take now is skipped and later ones may fill the free slots (backfill); after
    backfill_window + 1 such jobs in a row the walk stops, so a run costs O(placed + window)
    picks however long the queue.

    RESERVATION. Backfill alone lets a stream of small jobs starve a big one forever: whenever
    a big card frees a slot, a small job takes it before the big job's memory is free. So the
    first job in order that fits nowhere and has waited longer than reserve_after_ms gets one
    node reserved, and the matcher offers that node to that job only; it drains, and the big
    job runs there (or anywhere else that frees first). Which node: among those that could
    ever run the job (connected, not draining, vram_total >= min_vram, its kind, model and
    constraints, not excluded), the one with the most free VRAM, then the fewest running jobs.
    We do not know how long running jobs take, so the node with the least booked on it is our
    best guess at "frees first", and it holds up the least work meanwhile. This is the
    "reserve for the head job" half of EASY backfilling without runtime estimates: one node is
    held at a time, so the capacity idled is bounded by one node.

    The reservation follows the first qualifying blocked job: a job ahead of the holder that
    starts to qualify takes it over, and it is dropped when the holder is placed or is no
    longer in the queue.

    PARKED JOBS. A job of a kind that no connected node offers waits for such a node to come,
    and holds up nothing meanwhile: it does not count against the backfill window (a pile of
    them at the head would otherwise stop the walk before any runnable job, for good) and gets
    no reservation (no node could ever be held for it). The walk passes at most GQ_SCHED_PARKED_WALK_JOBS
    of them a run, so a very long pile costs a bounded walk. */
#include "sched.h"
#include "tuning.h"
#include "gq_check.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


struct _gq_sched_t {
    gq_queue_t *queue;        /* borrowed */
    gq_matcher_t *matcher;    /* borrowed */
    size_t backfill_window;   /* unplaceable jobs looked at past a blocked one */
    int64_t reserve_after_ms; /* wait before a blocked job gets a reservation; < 0: never */
    int64_t resv_job;         /* id of the job holding the reservation, 0 for none */
    int32_t resv_node;        /* the node reserved, -1 for none */
    int64_t miss_job;         /* a job for which no node could be reserved, 0 for none */
    int64_t miss_ms;          /* when that was found */
    size_t miss_nodes;        /* how many nodes the matcher had then */
    gq_sched_prefer_fn *prefer; /* the node a job prefers (affinity), or NULL */
    void *prefer_arg;         /* prefer's first argument */
    double prefer_bonus;      /* what the preferred node's score gains */
};

gq_sched_t *
gq_sched_new (gq_queue_t *queue, gq_matcher_t *matcher, size_t backfill_window,
              int64_t reserve_after_ms)
{
    assert (queue);
    assert (matcher);
    gq_sched_t *self = (gq_sched_t *) calloc (1, sizeof (gq_sched_t));
    if (self) {
        self->queue = queue;
        self->matcher = matcher;
        self->backfill_window = backfill_window;
        self->reserve_after_ms = reserve_after_ms;
        self->resv_node = -1;
    }
    return self;
}

static void
s_release (gq_sched_t *self)
{
    if (self->resv_node >= 0) {
        gq_matcher_reserve (self->matcher, self->resv_node, 0);
    }
    self->resv_job = 0;
    self->resv_node = -1;
}

void
gq_sched_destroy (gq_sched_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        s_release (*self_p);
        free (*self_p);
        *self_p = NULL;
    }
}

int32_t
gq_sched_reserved (gq_sched_t *self, int64_t *job_id)
{
    assert (self);
    if (job_id) {
        *job_id = self->resv_job;
    }
    return self->resv_node;
}

/* job is the first blocked job that has waited long enough: make sure it holds a node that
   could run it. Choosing is O(nodes), so a job for which nothing qualifies is asked again only
   after another reserve_after_ms or when nodes were added. */
static void
s_reserve_for (gq_sched_t *self, gq_job_t *job, int64_t now_ms)
{
    if (self->resv_job == job->id && gq_matcher_could_run (self->matcher, self->resv_node, job)) {
        return;
    }
    if (self->miss_job == job->id && now_ms - self->miss_ms < self->reserve_after_ms &&
        self->miss_nodes == gq_matcher_nodes (self->matcher)) {
        return;
    }
    s_release (self);
    int32_t node = gq_matcher_reserve_candidate (self->matcher, job, now_ms);
    if (node >= 0) {
        gq_matcher_reserve (self->matcher, node, job->id);
        self->resv_job = job->id;
        self->resv_node = node;
        self->miss_job = 0;
    }
    else {
        self->miss_job = job->id;
        self->miss_ms = now_ms;
        self->miss_nodes = gq_matcher_nodes (self->matcher);
    }
}

void
gq_sched_set_prefer (gq_sched_t *self, gq_sched_prefer_fn *fn, void *arg, double bonus)
{
    self->prefer = fn;
    self->prefer_arg = arg;
    self->prefer_bonus = bonus > 0 ? bonus : 0;
}

int32_t
gq_sched_pick (gq_sched_t *self, const gq_job_t *job, int64_t now_ms, int32_t *preferred)
{
    int32_t best = gq_matcher_pick (self->matcher, job, now_ms);
    int32_t want = self->prefer ? self->prefer (self->prefer_arg, job) : -1;
    if (preferred) {
        *preferred = want;
    }
    if (want < 0 || want == best || best < 0) {
        return best; /* no node can take it now, so the preferred one cannot either */
    }
    /* The bonus is bounded, and never goes to a node that cannot run the job (every filter,
       reservations included) or whose slots are all taken (prefetched jobs would wait there):
       then the matcher's choice stands. The answer is the best of (every node's score, the
       preferred one's plus the bonus), as if the bonus were a term of that node alone. */
    gq_score_t pref, top;
    const gq_node_t *node = gq_matcher_node (self->matcher, want);
    if (!node || node->running >= node->slots ||
        gq_matcher_score (self->matcher, want, job, now_ms, &pref, NULL, 0) != GQ_FILTER_OK ||
        gq_matcher_score (self->matcher, best, job, now_ms, &top, NULL, 0) != GQ_FILTER_OK) {
        return best;
    }
    return pref.total + self->prefer_bonus > top.total ? want : best;
}

size_t
gq_sched_run (gq_sched_t *self, int64_t now_ms, gq_dispatch_t *out, size_t max)
{
    assert (self);
    assert (out || max == 0);
    if (max == 0 || gq_matcher_available_count (self->matcher) == 0) {
        return 0; /* nothing has a free slot: the queue is not even looked at */
    }

    size_t placed = 0;
    size_t blocked_run = 0;     /* consecutive jobs that fit nowhere */
    size_t parked = 0;          /* jobs passed whose kind no connected node offers */
    bool holder_seen = false;   /* the reservation's job is still queued */
    bool qualified = false;     /* the first blocked job old enough has been handled */
    gq_job_t *job = gq_queue_first (self->queue);
    while (job && placed < max) {
        gq_job_t *next = gq_queue_next (self->queue, job);
        if (job->id == self->resv_job) {
            holder_seen = true;
        }
        int32_t node = gq_sched_pick (self, job, now_ms, NULL);
        if (node >= 0) {
            gq_queue_remove (self->queue, job);
            gq_matcher_assign (self->matcher, node, job);
            job->node = node;
            job->started_ms = now_ms;
            job->state = GQ_JOB_RUNNING;
            out[placed++] = (gq_dispatch_t){.job = job, .node = node};
            blocked_run = 0;
            if (job->id == self->resv_job) {
                s_release (self);
            }
            if (gq_matcher_available_count (self->matcher) == 0) {
                job = next;
                break;
            }
        }
        else if (!gq_matcher_kind_ready (self->matcher, job->kind_id)) {
            if (++parked > GQ_SCHED_PARKED_WALK_JOBS) {
                job = next;
                break;
            }
        }
        else {
            if (!qualified && self->reserve_after_ms >= 0 &&
                now_ms - job->submitted_ms > self->reserve_after_ms) {
                qualified = true;
                s_reserve_for (self, job, now_ms);
                holder_seen = holder_seen || job->id == self->resv_job;
            }
            if (++blocked_run > self->backfill_window) {
                job = next;
                break;
            }
        }
        job = next;
    }
    if (!job && !holder_seen && self->resv_job != 0 && placed < max) {
        s_release (self); /* walked the whole queue: its job left (cancelled, placed by hand) */
    }
    return placed;
}

/* ---- Selftest ---------------------------------------------------------------------------- */

/* A test node: name, VRAM in GiB, slots; online, running nothing. */
static int32_t
s_node (gq_matcher_t *matcher, const char *name, int vram_gb, int slots, int kind)
{
    int32_t i = gq_matcher_node_find_or_add (matcher, name);
    gq_node_t *n = gq_matcher_node (matcher, i);
    if (!n) {
        fprintf (stderr, "\nsched test: cannot add node %s\n", name);
        abort ();
    }
    snprintf (n->gpu_model, sizeof n->gpu_model, "GPU %dG", vram_gb);
    n->vram_total_mb = n->vram_free_mb = vram_gb * 1024;
    n->tflops = 100;
    n->price_per_hour = 1;
    n->slots = slots;
    n->running = 0;
    n->kinds = 1ULL << kind;
    n->status = GQ_NODE_ONLINE;
    n->rtt_ms = 1;
    n->reliability = 1;
    gq_matcher_node_changed (matcher, i);
    return i;
}

static void
s_job (gq_job_t *job, int64_t id, int priority, int vram_gb, int64_t submitted_ms, int kind)
{
    memset (job, 0, sizeof *job);
    job->id = id;
    job->priority = (uint8_t) priority;
    job->min_vram_mb = vram_gb * 1024;
    job->submitted_ms = submitted_ms;
    job->node = -1;
    job->kind_id = (uint16_t) kind;
    job->max_attempts = 3;
}

/* A preference for the node arg points at, whatever the job. */
static int32_t
s_test_prefer (void *arg, const gq_job_t *job)
{
    (void) job;
    return *(const int32_t *) arg;
}

void
gq_sched_test (bool verbose)
{
    gq_dispatch_t out[16];
    gq_job_t jobs[16];
    const int64_t t0 = 1700000000000LL;

    /* Backfill: a small job runs while a big one waits; the big one runs when capacity frees;
       priority order is respected among jobs that fit. */
    {
        gq_matcher_t *matcher = gq_matcher_new (NULL);
        gq_queue_t *queue = gq_queue_new (GQ_AGING_MS);
        gq_sched_t *sched = gq_sched_new (queue, matcher, GQ_BACKFILL_WINDOW, -1);
        GQ_CHECK_EQ (matcher && queue && sched, 1);
        int kind = gq_matcher_kind_id (matcher, "echo", true);
        int32_t small = s_node (matcher, "small", 24, 1, kind);
        int32_t big = s_node (matcher, "big", 80, 1, kind);
        gq_node_t *b = gq_matcher_node (matcher, big);
        b->running = 1; /* the big card is busy */
        b->vram_free_mb = 10 * 1024;
        gq_matcher_node_changed (matcher, big);

        s_job (&jobs[0], 1, 9, 70, t0, kind);     /* big, first in order */
        s_job (&jobs[1], 2, 0, 14, t0 + 1, kind); /* small, low priority */
        s_job (&jobs[2], 3, 5, 14, t0 + 2, kind); /* small, higher priority */
        for (int k = 0; k < 3; k++) {
            gq_queue_push (queue, &jobs[k]);
        }
        size_t n = gq_sched_run (sched, t0 + 10, out, 16);
        GQ_CHECK_EQ (n, 1);
        GQ_CHECK_EQ (out[0].job->id, 3);
        GQ_CHECK_EQ (out[0].node, small);
        GQ_CHECK_EQ (jobs[2].state, GQ_JOB_RUNNING);
        GQ_CHECK_EQ (jobs[2].node, small);
        GQ_CHECK_EQ (jobs[2].started_ms, t0 + 10);
        GQ_CHECK_EQ (gq_queue_size (queue), 2);
        GQ_CHECK_EQ (gq_matcher_available_count (matcher), 0);
        GQ_CHECK_EQ (gq_sched_run (sched, t0 + 11, out, 16), 0);

        /* The big card's job ends: the big job goes there, not the small one. */
        gq_job_t done;
        s_job (&done, 99, 0, 70, t0, kind);
        gq_matcher_release (matcher, big, &done, t0 + 20);
        n = gq_sched_run (sched, t0 + 21, out, 16);
        GQ_CHECK_EQ (n, 1);
        GQ_CHECK_EQ (out[0].job->id, 1);
        GQ_CHECK_EQ (out[0].node, big);
        /* The small card frees: the remaining small job. */
        gq_matcher_release (matcher, small, &jobs[2], t0 + 30);
        n = gq_sched_run (sched, t0 + 31, out, 16);
        GQ_CHECK_EQ (n, 1);
        GQ_CHECK_EQ (out[0].job->id, 2);
        GQ_CHECK_EQ (gq_queue_size (queue), 0);
        gq_sched_destroy (&sched);
        gq_queue_destroy (&queue);
        gq_matcher_destroy (&matcher);
    }

    /* Reservation: without it, small jobs keep taking the slot a big job needs. */
    for (int with_reservation = 0; with_reservation < 2; with_reservation++) {
        gq_matcher_t *matcher = gq_matcher_new (NULL);
        gq_queue_t *queue = gq_queue_new (GQ_AGING_MS);
        gq_sched_t *sched =
            gq_sched_new (queue, matcher, GQ_BACKFILL_WINDOW, with_reservation ? 1000 : -1);
        GQ_CHECK_EQ (matcher && queue && sched, 1);
        int kind = gq_matcher_kind_id (matcher, "echo", true);
        int32_t big = s_node (matcher, "big", 80, 2, kind);
        gq_job_t x;
        s_job (&x, 50, 0, 40, t0, kind); /* already running there */
        gq_matcher_assign (matcher, big, &x);

        s_job (&jobs[0], 1, 5, 80, t0, kind);     /* the big job */
        s_job (&jobs[1], 2, 5, 20, t0 + 1, kind); /* small ones behind it */
        gq_queue_push (queue, &jobs[0]);
        gq_queue_push (queue, &jobs[1]);
        size_t n = gq_sched_run (sched, t0 + 10, out, 16);
        GQ_CHECK_EQ (n, 1);
        GQ_CHECK_EQ (out[0].job->id, 2);
        GQ_CHECK_EQ (gq_sched_reserved (sched, NULL), -1);

        /* x ends; another small job arrives; the big job has now waited 2 s. */
        gq_matcher_release (matcher, big, &x, t0 + 2000);
        s_job (&jobs[2], 3, 5, 20, t0 + 1500, kind);
        gq_queue_push (queue, &jobs[2]);
        n = gq_sched_run (sched, t0 + 2000, out, 16);
        if (with_reservation) {
            int64_t holder = 0;
            GQ_CHECK_EQ (gq_sched_reserved (sched, &holder), big);
            GQ_CHECK_EQ (holder, 1);
            GQ_CHECK_EQ (n, 0);
            char reason[160];
            GQ_CHECK_EQ (
                gq_matcher_score (matcher, big, &jobs[2], t0 + 2000, NULL, reason, sizeof reason),
                GQ_FILTER_RESERVED);
        }
        else {
            GQ_CHECK_EQ (n, 1);
            GQ_CHECK_EQ (out[0].job->id, 3);
        }
        /* The first small job ends. */
        gq_matcher_release (matcher, big, &jobs[1], t0 + 3000);
        n = gq_sched_run (sched, t0 + 3000, out, 16);
        if (with_reservation) {
            GQ_CHECK_EQ (n, 1);
            GQ_CHECK_EQ (out[0].job->id, 1);
            /* The small job behind it has waited 1.5 s and fits nowhere now: it holds the
               node next. */
            int64_t holder = 0;
            GQ_CHECK_EQ (gq_sched_reserved (sched, &holder), big);
            GQ_CHECK_EQ (holder, 3);
            GQ_CHECK_EQ (gq_matcher_reserved_for (matcher, big), 3);
        }
        else {
            /* 20 GiB still booked by job 3: the big job is starved again. */
            GQ_CHECK_EQ (n, 0);
            GQ_CHECK_EQ (jobs[0].state, GQ_JOB_QUEUED);
        }
        gq_sched_destroy (&sched);
        gq_queue_destroy (&queue);
        gq_matcher_destroy (&matcher);
    }

    /* The backfill window bounds the walk; max bounds the dispatches; a reservation whose job
       left the queue is dropped. */
    {
        gq_matcher_t *matcher = gq_matcher_new (NULL);
        gq_queue_t *queue = gq_queue_new (GQ_AGING_MS);
        gq_sched_t *sched = gq_sched_new (queue, matcher, 2, 0);
        GQ_CHECK_EQ (matcher && queue && sched, 1);
        int kind = gq_matcher_kind_id (matcher, "echo", true);
        int32_t a = s_node (matcher, "a", 24, 4, kind);
        int32_t c = s_node (matcher, "c", 48, 1, kind);
        gq_job_t x;
        s_job (&x, 50, 0, 1, t0, kind);
        gq_matcher_assign (matcher, c, &x); /* c busy */
        for (int k = 0; k < 3; k++) {
            s_job (&jobs[k], 1 + k, 9, 40, t0 + k, kind); /* fit nowhere now */
            gq_queue_push (queue, &jobs[k]);
        }
        for (int k = 3; k < 8; k++) {
            s_job (&jobs[k], 1 + k, 0, 4, t0 + k, kind); /* fit the free node */
            gq_queue_push (queue, &jobs[k]);
        }
        size_t n = gq_sched_run (sched, t0 + 10, out, 16);
        GQ_CHECK_EQ (n, 0);
        int64_t holder = 0;
        GQ_CHECK_EQ (gq_sched_reserved (sched, &holder), c);
        GQ_CHECK_EQ (holder, 1);
        gq_sched_destroy (&sched);
        GQ_CHECK_EQ (gq_matcher_reserved_for (matcher, c), 0);

        sched = gq_sched_new (queue, matcher, 3, -1);
        n = gq_sched_run (sched, t0 + 10, out, 2);
        GQ_CHECK_EQ (n, 2);
        GQ_CHECK_EQ (out[0].job->id, 4);
        GQ_CHECK_EQ (out[1].job->id, 5);
        gq_sched_destroy (&sched);

        sched = gq_sched_new (queue, matcher, 3, 0);
        n = gq_sched_run (sched, t0 + 10, out, 16);
        GQ_CHECK_EQ (n, 2);
        GQ_CHECK_EQ (gq_sched_reserved (sched, &holder), c);
        GQ_CHECK_EQ (gq_matcher_available_count (matcher), 0);
        for (int k = 0; k < 3; k++) {
            gq_queue_remove (queue, &jobs[k]); /* the big ones are cancelled */
        }
        gq_matcher_release (matcher, a, &jobs[3], t0 + 15);
        n = gq_sched_run (sched, t0 + 20, out, 16);
        GQ_CHECK_EQ (n, 1);
        GQ_CHECK_EQ (out[0].job->id, 8);
        GQ_CHECK_EQ (gq_queue_size (queue), 0);
        GQ_CHECK_EQ (gq_sched_reserved (sched, NULL), -1);
        GQ_CHECK_EQ (gq_matcher_reserved_for (matcher, c), 0);
        gq_sched_destroy (&sched);
        gq_sched_destroy (&sched);
        gq_queue_destroy (&queue);
        gq_matcher_destroy (&matcher);
    }
    /* Parked jobs: a pile of jobs of a kind no connected node offers holds up nothing, however
       small the window, and gets no reservation; when a node of that kind comes, they run;
       when it goes, they park again. */
    {
        gq_matcher_t *matcher = gq_matcher_new (NULL);
        gq_queue_t *queue = gq_queue_new (GQ_AGING_MS);
        gq_sched_t *sched = gq_sched_new (queue, matcher, 2, 0);
        GQ_CHECK_EQ (matcher && queue && sched, 1);
        int echo = gq_matcher_kind_id (matcher, "echo", true);
        int rare = gq_matcher_kind_id (matcher, "rare", true);
        int32_t a = s_node (matcher, "a", 24, 16, echo);
        GQ_CHECK_EQ (gq_matcher_kind_ready (matcher, echo), 1);
        GQ_CHECK_EQ (gq_matcher_kind_ready (matcher, rare), 0);
        gq_job_t pile[12];
        for (int k = 0; k < 12; k++) {
            s_job (&pile[k], 1 + k, 9, 1, t0 + k, rare);
            gq_queue_push (queue, &pile[k]);
        }
        s_job (&jobs[0], 100, 0, 1, t0 + 100, echo);
        gq_queue_push (queue, &jobs[0]);
        size_t n = gq_sched_run (sched, t0 + 60000, out, 16);
        GQ_CHECK_EQ (n, 1);
        GQ_CHECK_EQ (out[0].job->id, 100);
        GQ_CHECK_EQ (gq_sched_reserved (sched, NULL), -1);
        /* A node offering the rare kind comes: the pile runs there. */
        int32_t b = s_node (matcher, "b", 24, 16, rare);
        GQ_CHECK_EQ (gq_matcher_kind_ready (matcher, rare), 1);
        n = gq_sched_run (sched, t0 + 60001, out, 4);
        GQ_CHECK_EQ (n, 4);
        GQ_CHECK_EQ (out[0].node, b);
        /* It goes offline: the rest park again; the echo node going busy does not matter. */
        gq_matcher_node (matcher, b)->status = GQ_NODE_OFFLINE;
        gq_matcher_node_changed (matcher, b);
        GQ_CHECK_EQ (gq_matcher_kind_ready (matcher, rare), 0);
        gq_matcher_node (matcher, a)->running = 16;
        gq_matcher_node_changed (matcher, a);
        GQ_CHECK_EQ (gq_matcher_kind_ready (matcher, echo), 1);
        n = gq_sched_run (sched, t0 + 60002, out, 16);
        GQ_CHECK_EQ (n, 0);
        gq_sched_destroy (&sched);
        gq_queue_destroy (&queue);
        gq_matcher_destroy (&matcher);
    }
    /* Preference (affinity): two like nodes, the job prefers "b" though "a" leads (idle
       longer): b wins by the bonus; b full, or a bonus of 0: a. */
    {
        gq_matcher_t *matcher = gq_matcher_new (NULL);
        gq_queue_t *queue = gq_queue_new (GQ_AGING_MS);
        gq_sched_t *sched = gq_sched_new (queue, matcher, GQ_BACKFILL_WINDOW, -1);
        GQ_CHECK_EQ (matcher && queue && sched, 1);
        int kind = gq_matcher_kind_id (matcher, "echo", true);
        int32_t a = s_node (matcher, "a", 24, 2, kind);
        int32_t b = s_node (matcher, "b", 24, 2, kind);
        gq_matcher_node (matcher, a)->idle_since_ms = t0 - 1000;
        gq_matcher_node (matcher, b)->idle_since_ms = t0;
        gq_matcher_node_changed (matcher, a);
        gq_matcher_node_changed (matcher, b);
        s_job (&jobs[0], 1, 5, 0, t0, kind);
        int32_t preferred = -2;
        GQ_CHECK_EQ (gq_sched_pick (sched, &jobs[0], t0, &preferred), a);
        GQ_CHECK_EQ (preferred, -1);
        gq_sched_set_prefer (sched, s_test_prefer, &b, 0.5);
        GQ_CHECK_EQ (gq_sched_pick (sched, &jobs[0], t0, &preferred), b);
        GQ_CHECK_EQ (preferred, b);
        gq_matcher_node (matcher, b)->running = 2; /* full: never over it */
        gq_matcher_node_changed (matcher, b);
        GQ_CHECK_EQ (gq_sched_pick (sched, &jobs[0], t0, NULL), a);
        gq_matcher_node (matcher, b)->running = 0;
        gq_matcher_node_changed (matcher, b);
        gq_sched_set_prefer (sched, s_test_prefer, &b, 0);
        GQ_CHECK_EQ (gq_sched_pick (sched, &jobs[0], t0, NULL), a);
        gq_sched_destroy (&sched);
        gq_queue_destroy (&queue);
        gq_matcher_destroy (&matcher);
    }
    if (verbose) {
        printf ("(sched: backfill, reservation, window, priority, parked, affinity) ");
    }
}
