/*  treap.h — the matcher's index structure: treaps of node entries, all in one pool. Pure: no
    I/O, no clock, no logging.

    A pool holds the entries of many trees; a tree is no more than the index of its root entry,
    which the caller keeps (-1 for an empty tree) and passes by pointer to the calls that may
    change it. Entries are ordered by (vram, node) and carry, besides their own payload, the
    summaries of their subtree that the matcher's branch and bound reads (largest base score,
    smallest and largest vram, lowest price, largest tflops, earliest backoff end and smallest
    tie-break key); every call keeps them exact. Entries know their parent, so a change is
    propagated upwards only as far as a summary moves.

    Entry indexes are stable until gq_treap_clear; the pool itself may move when it grows (in
    gq_treap_reserve only), so a pointer from gq_treap_entries is valid until the next
    reserve. Heap priorities come from a seeded generator: the same calls build the same
    trees. */
#ifndef GQ_TREAP_H_INCLUDED
#define GQ_TREAP_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One node's membership of one tree: copies of the node's fields that the search reads. Its
   keys (vram, node) fix its place; the payload is rewritten in place (gq_treap_update). The
   caller fills node, tree, vram and the payload; the treap owns the links and the summaries. */
typedef struct {
    int32_t left;      /* left child (smaller key), -1 for none; next free entry when free */
    int32_t right;     /* right child, -1 for none */
    int32_t parent;    /* parent, -1 for the root */
    uint32_t prio;     /* treap heap priority, random */
    int32_t node;      /* node index (key 2) */
    int32_t tree;      /* the tree it belongs to (the caller's tag; the treap does not read it) */
    int32_t vram;      /* vram_free_mb (key 1) */
    double q;          /* base score */
    int64_t tie;       /* idle_since_ms, or a key above every idle node's when running */
    float price;       /* price per hour, sanitised */
    float tflops;      /* tflops, sanitised */
    int64_t backoff;   /* backoff_until_ms: not a candidate before then */
    double qmax;       /* subtree: largest base */
    int64_t kmin_tie;  /* subtree: smallest (tie, node) key, first half */
    int32_t kmin_node; /* subtree: smallest (tie, node) key, second half */
    int32_t vmin;      /* subtree: smallest vram_free */
    int32_t vmax;      /* subtree: largest vram_free */
    float pmin;        /* subtree: lowest price */
    float tmax;        /* subtree: largest tflops */
    int64_t bmin;      /* subtree: earliest backoff_until_ms (all backing off when > now) */
} gq_treap_entry_t;

typedef struct _gq_treap_t gq_treap_t;

/* A new, empty pool, or NULL. */
gq_treap_t *gq_treap_new (void);
/* Frees the pool and every entry in it; safe twice. */
void gq_treap_destroy (gq_treap_t **self_p);

/* Makes room for n more entries, so that the n inserts that follow cannot fail and pointers
   from gq_treap_entries stay valid while they run. 0 or -1 (the pool unchanged). */
int gq_treap_reserve (gq_treap_t *self, size_t n);
/* Takes an entry from the pool (there must be room: gq_treap_reserve), copies proto's keys,
   tag and payload into it and inserts it into the tree whose root is *root. Returns the
   entry's index. */
int32_t gq_treap_insert (gq_treap_t *self, int32_t *root, const gq_treap_entry_t *proto);
/* Takes entry e out of the tree whose root is *root and gives it back to the pool. */
void gq_treap_erase (gq_treap_t *self, int32_t *root, int32_t e);
/* Rewrites entry e's payload (q, tie, price, tflops, backoff; not its keys) from proto and
   fixes the summaries above it. */
void gq_treap_update (gq_treap_t *self, int32_t e, const gq_treap_entry_t *proto);
/* Gives every entry back to the pool: every tree is empty (the caller sets its roots to -1). */
void gq_treap_clear (gq_treap_t *self);
/* The entries, by index: borrowed, read only, valid until the next gq_treap_reserve. */
const gq_treap_entry_t *gq_treap_entries (gq_treap_t *self);

/* (tie, node) strictly before (tie2, node2): the tie-break order, best first. Inline: the
   matcher's search compares keys at every entry it visits. */
static inline bool
gq_treap_key_less (int64_t tie, int32_t node, int64_t tie2, int32_t node2)
{
    return tie < tie2 || (tie == tie2 && node < node2);
}

void gq_treap_test (bool verbose);

#endif
