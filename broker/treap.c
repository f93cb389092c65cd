/*  treap.c — treaps of node entries in one pool, with subtree summaries for branch and bound.

    Insert and erase are the textbook ones (rotations up to restore the heap order; a merge of
    the children in place of the erased entry); every link change recomputes the summaries of
    the entries it touches, and erase and update fix the path above them, stopping at the first
    entry whose summaries did not change: those above it cannot change either. Free entries are
    chained through their left link; the pool grows by doubling. */
#include "treap.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gq_check.h"

struct _gq_treap_t {
    gq_treap_entry_t *entries; /* the pool */
    size_t used;               /* entries handed out at least once (bump allocator) */
    size_t cap;                /* allocated entries */
    int32_t free;              /* free list through entry.left, -1 when empty */
    size_t nfree;              /* entries on the free list */
    uint32_t rng;              /* xorshift state for heap priorities */
};

/* ---- Entries and summaries ---------------------------------------------------------------- */

static uint32_t
s_random (gq_treap_t *self)
{
    uint32_t x = self->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    self->rng = x;
    return x;
}

/* Tree order: vram_free, then node index. Everything else an entry carries changes in place
   (the summaries of its ancestors are recomputed), so a heartbeat moves nothing. */
static inline bool
s_before (const gq_treap_entry_t *a, const gq_treap_entry_t *b)
{
    return a->vram < b->vram || (a->vram == b->vram && a->node < b->node);
}

/* Recomputes the subtree summaries of entry t from its own fields and its children's. */
static inline void
s_pull (gq_treap_entry_t *P, int32_t t)
{
    gq_treap_entry_t *e = &P[t];
    e->qmax = e->q;
    e->kmin_tie = e->tie;
    e->kmin_node = e->node;
    e->vmin = e->vmax = e->vram;
    e->pmin = e->price;
    e->tmax = e->tflops;
    e->bmin = e->backoff;
    int32_t kids[2] = {e->left, e->right};
    for (int k = 0; k < 2; k++) {
        if (kids[k] < 0) {
            continue;
        }
        const gq_treap_entry_t *c = &P[kids[k]];
        if (c->qmax > e->qmax) {
            e->qmax = c->qmax;
        }
        if (gq_treap_key_less (c->kmin_tie, c->kmin_node, e->kmin_tie, e->kmin_node)) {
            e->kmin_tie = c->kmin_tie;
            e->kmin_node = c->kmin_node;
        }
        if (c->vmin < e->vmin) {
            e->vmin = c->vmin;
        }
        if (c->vmax > e->vmax) {
            e->vmax = c->vmax;
        }
        if (c->pmin < e->pmin) {
            e->pmin = c->pmin;
        }
        if (c->tmax > e->tmax) {
            e->tmax = c->tmax;
        }
        if (c->bmin < e->bmin) {
            e->bmin = c->bmin;
        }
    }
}

/* Sets a child link and the child's parent link. */
static inline void
s_set_left (gq_treap_entry_t *P, int32_t t, int32_t c)
{
    P[t].left = c;
    if (c >= 0) {
        P[c].parent = t;
    }
}

static inline void
s_set_right (gq_treap_entry_t *P, int32_t t, int32_t c)
{
    P[t].right = c;
    if (c >= 0) {
        P[c].parent = t;
    }
}

static void
s_set_root (gq_treap_entry_t *P, int32_t *root, int32_t r)
{
    *root = r;
    if (r >= 0) {
        P[r].parent = -1;
    }
}

/* Recomputes the summaries of t and of its ancestors, stopping at the first whose summaries
   did not change: those above it cannot change either. */
static void
s_pull_up (gq_treap_entry_t *P, int32_t t)
{
    while (t >= 0) {
        gq_treap_entry_t *e = &P[t];
        double qmax = e->qmax;
        int64_t kmin_tie = e->kmin_tie, bmin = e->bmin;
        int32_t kmin_node = e->kmin_node, vmin = e->vmin, vmax = e->vmax;
        float pmin = e->pmin, tmax = e->tmax;
        s_pull (P, t);
        if (e->qmax == qmax && e->kmin_tie == kmin_tie && e->kmin_node == kmin_node &&
            e->vmin == vmin && e->vmax == vmax && e->pmin == pmin && e->tmax == tmax &&
            e->bmin == bmin) {
            return;
        }
        t = e->parent;
    }
}

/* ---- Rotations, insert, merge, erase ------------------------------------------------------ */

static int32_t
s_rotate_right (gq_treap_entry_t *P, int32_t t)
{
    int32_t l = P[t].left;
    s_set_left (P, t, P[l].right);
    s_pull (P, t);
    s_set_right (P, l, t);
    s_pull (P, l);
    return l;
}

static int32_t
s_rotate_left (gq_treap_entry_t *P, int32_t t)
{
    int32_t r = P[t].right;
    s_set_right (P, t, P[r].left);
    s_pull (P, t);
    s_set_left (P, r, t);
    s_pull (P, r);
    return r;
}

/* Inserts e into the subtree of t; returns the subtree's new root (its parent is the
   caller's to set). */
static int32_t
s_insert (gq_treap_entry_t *P, int32_t t, int32_t e)
{
    if (t < 0) {
        return e;
    }
    if (s_before (&P[e], &P[t])) {
        s_set_left (P, t, s_insert (P, P[t].left, e));
        if (P[P[t].left].prio > P[t].prio) {
            return s_rotate_right (P, t);
        }
    }
    else {
        s_set_right (P, t, s_insert (P, P[t].right, e));
        if (P[P[t].right].prio > P[t].prio) {
            return s_rotate_left (P, t);
        }
    }
    s_pull (P, t);
    return t;
}

/* Joins two treaps, every entry of a before every entry of b. */
static int32_t
s_merge (gq_treap_entry_t *P, int32_t a, int32_t b)
{
    if (a < 0) {
        return b;
    }
    if (b < 0) {
        return a;
    }
    if (P[a].prio > P[b].prio) {
        s_set_right (P, a, s_merge (P, P[a].right, b));
        s_pull (P, a);
        return a;
    }
    s_set_left (P, b, s_merge (P, a, P[b].left));
    s_pull (P, b);
    return b;
}

/* Takes e out of its tree: its children merged in its place, the summaries above fixed. */
static void
s_erase (gq_treap_entry_t *P, int32_t *root, int32_t e)
{
    int32_t m = s_merge (P, P[e].left, P[e].right);
    int32_t p = P[e].parent;
    if (p < 0) {
        s_set_root (P, root, m);
        return;
    }
    if (P[p].left == e) {
        s_set_left (P, p, m);
    }
    else {
        s_set_right (P, p, m);
    }
    s_pull_up (P, p);
}

/* ---- The pool ----------------------------------------------------------------------------- */

gq_treap_t *
gq_treap_new (void)
{
    gq_treap_t *self = (gq_treap_t *) calloc (1, sizeof (gq_treap_t));
    if (!self) {
        return NULL;
    }
    self->free = -1;
    self->rng = 0x9e3779b9u;
    return self;
}

void
gq_treap_destroy (gq_treap_t **self_p)
{
    assert (self_p);
    gq_treap_t *self = *self_p;
    if (!self) {
        return;
    }
    free (self->entries);
    free (self);
    *self_p = NULL;
}

int
gq_treap_reserve (gq_treap_t *self, size_t n)
{
    assert (self);
    if (self->cap - self->used + self->nfree >= n) {
        return 0;
    }
    /* Doubling from 8 to the first size that holds them all, counting no free entry. */
    size_t cap = self->cap ? self->cap : 8;
    while (cap < self->used + n) {
        cap *= 2;
    }
    gq_treap_entry_t *grown =
        (gq_treap_entry_t *) realloc (self->entries, cap * sizeof (gq_treap_entry_t));
    if (!grown) {
        return -1;
    }
    self->entries = grown;
    self->cap = cap;
    return 0;
}

static int32_t
s_entry_new (gq_treap_t *self)
{
    if (self->free >= 0) {
        int32_t e = self->free;
        self->free = self->entries[e].left;
        self->nfree--;
        return e;
    }
    assert (self->used < self->cap);
    return (int32_t) self->used++;
}

int32_t
gq_treap_insert (gq_treap_t *self, int32_t *root, const gq_treap_entry_t *proto)
{
    assert (self);
    assert (root && proto);
    int32_t e = s_entry_new (self);
    gq_treap_entry_t *P = self->entries;
    P[e] = *proto;
    P[e].left = P[e].right = P[e].parent = -1;
    P[e].prio = s_random (self);
    s_pull (P, e);
    s_set_root (P, root, s_insert (P, *root, e));
    return e;
}

void
gq_treap_erase (gq_treap_t *self, int32_t *root, int32_t e)
{
    assert (self);
    assert (root);
    s_erase (self->entries, root, e);
    self->entries[e].left = self->free;
    self->free = e;
    self->nfree++;
}

void
gq_treap_update (gq_treap_t *self, int32_t e, const gq_treap_entry_t *proto)
{
    assert (self);
    gq_treap_entry_t *P = self->entries;
    P[e].q = proto->q;
    P[e].tie = proto->tie;
    P[e].price = proto->price;
    P[e].tflops = proto->tflops;
    P[e].backoff = proto->backoff;
    s_pull_up (P, e);
}

void
gq_treap_clear (gq_treap_t *self)
{
    assert (self);
    self->used = 0;
    self->free = -1;
    self->nfree = 0;
}

const gq_treap_entry_t *
gq_treap_entries (gq_treap_t *self)
{
    assert (self);
    return self->entries;
}

/* ---- Selftest ---------------------------------------------------------------------------- */

static uint32_t
s_test_rand (uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return *state >> 8;
}

/* Checks the subtree of t: links, key order within (lo, hi) exclusive (NULL: unbounded), heap
   order, and every summary against its entries; *summary gets the subtree's (as s_pull makes
   them). Returns the number of entries. */
static size_t
s_test_check (const gq_treap_entry_t *P, int32_t t, int32_t parent, const gq_treap_entry_t *lo,
              const gq_treap_entry_t *hi, gq_treap_entry_t *summary)
{
    if (t < 0) {
        return 0;
    }
    const gq_treap_entry_t *e = &P[t];
    GQ_CHECK_EQ (e->parent, parent);
    GQ_CHECK_EQ (!lo || s_before (lo, e), 1);
    GQ_CHECK_EQ (!hi || s_before (e, hi), 1);
    GQ_CHECK_EQ (parent < 0 || P[parent].prio >= e->prio, 1);
    gq_treap_entry_t want = *e, kid;
    want.qmax = e->q;
    want.kmin_tie = e->tie;
    want.kmin_node = e->node;
    want.vmin = want.vmax = e->vram;
    want.pmin = e->price;
    want.tmax = e->tflops;
    want.bmin = e->backoff;
    size_t n = 1;
    int32_t kids[2] = {e->left, e->right};
    for (int k = 0; k < 2; k++) {
        if (kids[k] < 0) {
            continue;
        }
        n += s_test_check (P, kids[k], t, k ? e : lo, k ? hi : e, &kid);
        want.qmax = kid.qmax > want.qmax ? kid.qmax : want.qmax;
        if (gq_treap_key_less (kid.kmin_tie, kid.kmin_node, want.kmin_tie, want.kmin_node)) {
            want.kmin_tie = kid.kmin_tie;
            want.kmin_node = kid.kmin_node;
        }
        want.vmin = kid.vmin < want.vmin ? kid.vmin : want.vmin;
        want.vmax = kid.vmax > want.vmax ? kid.vmax : want.vmax;
        want.pmin = kid.pmin < want.pmin ? kid.pmin : want.pmin;
        want.tmax = kid.tmax > want.tmax ? kid.tmax : want.tmax;
        want.bmin = kid.bmin < want.bmin ? kid.bmin : want.bmin;
    }
    /* Test payloads are small integers: the casts to long long are exact. */
    GQ_CHECK_EQ (e->qmax, want.qmax);
    GQ_CHECK_EQ (e->kmin_tie, want.kmin_tie);
    GQ_CHECK_EQ (e->kmin_node, want.kmin_node);
    GQ_CHECK_EQ (e->vmin, want.vmin);
    GQ_CHECK_EQ (e->vmax, want.vmax);
    GQ_CHECK_EQ (e->pmin, want.pmin);
    GQ_CHECK_EQ (e->tmax, want.tmax);
    GQ_CHECK_EQ (e->bmin, want.bmin);
    *summary = want;
    return n;
}

/* A payload drawn from small sets, so that equal keys and equal summaries are common. */
static void
s_test_payload (gq_treap_entry_t *e, uint32_t *rng)
{
    e->q = (double) (s_test_rand (rng) % 8);
    e->tie = (int64_t) (s_test_rand (rng) % 4) * 100;
    e->price = (float) (s_test_rand (rng) % 5);
    e->tflops = (float) (s_test_rand (rng) % 6);
    e->backoff = s_test_rand (rng) % 4 ? 0 : 1000;
}

void
gq_treap_test (bool verbose)
{
    enum { TREES = 4, NODES = 300, ROUNDS = 4000 };
    gq_treap_t *self = gq_treap_new ();
    GQ_CHECK_EQ (self != NULL, 1);
    int32_t roots[TREES];
    int32_t where[NODES][TREES]; /* entry of node i in tree t, -1 when not there */
    uint32_t rng = 12345u;
    size_t checked = 0;
    for (int pass = 0; pass < 2; pass++) {
        /* The second pass runs on a cleared pool, which must serve again. */
        for (int t = 0; t < TREES; t++) {
            roots[t] = -1;
            for (int i = 0; i < NODES; i++) {
                where[i][t] = -1;
            }
        }
        size_t count[TREES] = {0};
        for (int round = 0; round < ROUNDS; round++) {
            int t = (int) (s_test_rand (&rng) % TREES);
            int i = (int) (s_test_rand (&rng) % NODES);
            int32_t e = where[i][t];
            uint32_t op = s_test_rand (&rng) % 3;
            if (e < 0) {
                gq_treap_entry_t proto;
                memset (&proto, 0, sizeof proto);
                proto.node = i;
                proto.tree = t;
                proto.vram = (int32_t) (s_test_rand (&rng) % 5) * 8192;
                s_test_payload (&proto, &rng);
                GQ_CHECK_EQ (gq_treap_reserve (self, 1), 0);
                where[i][t] = gq_treap_insert (self, &roots[t], &proto);
                count[t]++;
                const gq_treap_entry_t *P = gq_treap_entries (self);
                GQ_CHECK_EQ (P[where[i][t]].node, i);
                GQ_CHECK_EQ (P[where[i][t]].tree, t);
            }
            else if (op == 0) {
                gq_treap_erase (self, &roots[t], e);
                where[i][t] = -1;
                count[t]--;
            }
            else {
                gq_treap_entry_t proto = gq_treap_entries (self)[e];
                s_test_payload (&proto, &rng);
                proto.vram = -1; /* keys are not rewritten */
                gq_treap_update (self, e, &proto);
                const gq_treap_entry_t *P = gq_treap_entries (self);
                GQ_CHECK_EQ (P[e].q, proto.q);
                GQ_CHECK_EQ (P[e].vram == -1, 0);
            }
            gq_treap_entry_t summary;
            GQ_CHECK_EQ (s_test_check (gq_treap_entries (self), roots[t], -1, NULL, NULL, &summary),
                         count[t]);
            checked++;
        }
        gq_treap_clear (self);
    }
    gq_treap_destroy (&self);
    gq_treap_destroy (&self);
    if (verbose) {
        printf ("(treap: %zu trees checked after insert, erase, update) ", checked);
    }
}
