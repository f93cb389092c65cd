/*  matcher.c — the node registry and the placement decision.

    THE SCORE. A node that passes every filter scores, for one job,

        total = (base + w.fit * fit) + w.warm * warm
        base  = (w.compute * compute + w.cost * cost)
              + (w.load * load + w.latency * latency + w.reliability * reliability)

    Every term is 0..1. `base` depends on the node alone (and on the fleet-wide maxima that
    normalise compute and cost); `fit` depends on the job's min_vram and the node's free VRAM;
    `warm` on whether the job's model is loaded there. Highest total wins; ties go to the node
    idle longest (a node running something is not idle at all), then to the lowest index.

    THE INDEXES. Scanning every node costs 20-60 ns a node: milliseconds a decision at 100k
    nodes. Instead, the nodes that can take a job now (online with a free slot; not reserved)
    live in treaps, each node in several:
      - one tree per group (same gpu_model and kinds: the static filters that need no
        per-node data): every node;
      - one per (group, model) for each model the node has (available or loaded);
      - one per (group, model, warm) for each model the node has loaded.
    A job without a model searches the groups' trees; a job with model M searches the (group, M)
    trees, cold and warm. A warm node also sits in the cold tree, where it is scored as cold:
    that understates it, which never changes the answer since its warm entry is searched too.

    Each tree is ordered by (vram_free, index), and every entry carries summaries of its
    subtree: largest base, smallest and largest vram_free, lowest price, largest tflops,
    earliest backoff end and best tie-break key. The search is branch and bound: the upper
    bound of a subtree is (largest base + w.fit * fit at its smallest usable vram_free) +
    w.warm, and a subtree is skipped when its bound is below the best score found so far, or
    equal to it with no better tie-break key in it, or when its VRAM, price, tflops or backoff
    range rules every node out. Trees are visited best bound first, children too. When the
    nodes of a group are idle, the first candidate found is the answer and the rest is cut at
    the roots: O(groups + log n). When free VRAM varies (multi-slot nodes partly used), the
    VRAM order keeps the fit bound tight.

    EXACTNESS. The answer equals the exhaustive reference's (gq_matcher_pick_exhaustive), ties
    included, because each bound is computed by the same functions as the scores, with inputs
    that are no smaller, and IEEE rounding is monotone: a bound is never below a score it
    covers, bit for bit. s_base and s_total are never inlined, so no compiler can fuse their
    arithmetic differently in two places (FMA contraction).

    UPDATES. gq_matcher_node_changed costs O((1 + models) log n): when only the score or the
    tie-break of a node moved (a heartbeat's rtt, its reliability, a backoff), its entries are
    rewritten in place and the summaries on their paths recomputed; when its free VRAM, models
    or availability changed, it leaves its trees and enters them again; nothing at all when no
    field the indexes carry changed. Entries know their parent, so a summary is fixed upwards
    only as far as it changes. Normalisation uses the fleet's largest tflops and lowest price
    among the nodes ever connected; they only move when a node beats them. Then every base
    changes, so the trees are rebuilt once, lazily, at the next pick (O(n log n), rare: a new
    fastest or cheapest card). A node backing off stays in its trees (a subtree where every
    node backs off is skipped); a reserved node is kept aside in a small list that every pick
    scans one by one.

    THE FILES. This one is the node table, the groups and the trees they index, the filters,
    the score and the pick. The treap itself (insert, erase, in-place update, the subtree
    summaries) is treap.c; the verdicts in words (explain, hint) are explain.c, which reads
    the filters through matcher_internal.h.

    Pure: no I/O, no clock, no logging, no allocation in gq_matcher_pick. One thread only. */
#include "matcher.h"
#include "gq_check.h"

#include <assert.h>
#include <ctype.h>
#include <czmq.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "matcher_internal.h"
#include "tuning.h"
#include "treap.h"

#define S_TIE_BUSY     INT64_MAX /* tie-break key of a node running something (not idle) */
#define S_NO_NODE      (-1)

/* ---- Private types ------------------------------------------------------------------------ */

/* A treap of available nodes: one group, optionally only those with one model. */
typedef struct {
    int32_t root;  /* root entry, -1 when empty */
    int32_t group; /* the group of its nodes */
    uint32_t model;/* 0: every node of the group; else the nodes that have this model */
    bool warm;     /* only the nodes with the model loaded; their entries score warm */
} s_tree_t;

/* Nodes with the same GPU model and kinds: a pattern or a kind rules them in or out at once. */
typedef struct {
    char gpu_model[GQ_GPU_MODEL_MAX]; /* as the nodes report it */
    uint64_t kinds;                   /* kind bit mask */
    int32_t all_tree;                 /* the tree of all its available nodes */
} s_group_t;

/* An interned model and the trees of nodes that have it. */
typedef struct {
    char *name;       /* the model's name (owned); NULL for id 0 */
    int32_t *trees;   /* trees to search for a job with this model (owned); for id 0, the
                         groups' trees */
    size_t n_trees;   /* used entries of trees */
    size_t cap_trees; /* allocated entries of trees */
} s_model_t;

/* The matcher's private half of a node. */
typedef struct {
    int32_t *entries;     /* pool entries of its memberships (owned); [0] is the group tree's */
    uint32_t n_entries;   /* used entries */
    uint32_t cap_entries; /* allocated entries */
    int32_t group;        /* the group it was last linked under, -1 before */
    int32_t side_pos;     /* position in the side list, -1 when not there */
    int64_t reserved_for; /* job id the node is held for, 0 for none */
    bool available;       /* online with a free slot: counted in self->available */
    uint64_t kinds_ready; /* its kinds as counted in self->kind_nodes (0 unless connected) */
    bool models_changed;  /* model lists replaced since it was last linked */
} s_nodex_t;

/* A tree to search for one job, with its root's bound (pick scratch). */
typedef struct {
    double bound;  /* upper bound of any score in the tree */
    int32_t tree;  /* tree index */
} s_cand_t;

/* Open-addressing map from a 64-bit key to an index: (group, model, warm) -> tree. */
typedef struct {
    uint64_t *keys;  /* keys, valid where vals >= 0 */
    int32_t *vals;   /* values, -1 for an empty slot */
    size_t cap;      /* slots, a power of two */
    size_t used;     /* occupied slots */
} s_map_t;

struct _gq_matcher_t {
    gq_weights_t w;            /* score weights, sanitised (finite, >= 0) */
    gq_node_t *nodes;          /* the node table (public half) */
    s_nodex_t *nodex;          /* the node table (private half) */
    size_t n_nodes;            /* nodes in the table */
    size_t cap_nodes;          /* allocated nodes (and side list capacity) */
    zhashx_t *node_index;      /* name -> index + 1 */
    char *kinds[GQ_MAX_KINDS]; /* kind names by id (owned) */
    int n_kinds;               /* kinds interned */
    zhashx_t *kind_index;      /* kind name -> id + 1 */
    s_model_t *models;         /* models by id; [0] stands for "no model" */
    size_t n_models;           /* ids in use, including 0 */
    size_t cap_models;         /* allocated entries of models */
    zhashx_t *model_index;     /* model name -> id */
    s_group_t *groups;         /* node groups (GPU model and kinds) */
    size_t n_groups;           /* groups in use */
    size_t cap_groups;         /* allocated groups */
    zhashx_t *group_index;     /* "kinds|gpu_model" -> group + 1 */
    s_tree_t *trees;           /* all trees */
    size_t n_trees;            /* trees in use */
    size_t cap_trees;          /* allocated trees */
    s_map_t tree_map;          /* (group, model, warm) -> tree */
    gq_treap_t *treap;         /* the entries of every tree (owned) */
    int32_t *side;             /* available nodes kept out of the trees: backoff, reserved */
    size_t n_side;             /* entries of side */
    size_t available;          /* nodes online with a free slot */
    uint32_t kind_nodes[GQ_MAX_KINDS]; /* connected (online or busy) nodes offering each kind */
    uint64_t kinds_ready;      /* bit i: kind_nodes[i] > 0 */
    double tflops_max;         /* fleet: largest tflops among nodes ever connected */
    double price_min;          /* fleet: lowest price among nodes ever connected */
    int32_t vram_max;          /* fleet: largest vram_total among nodes ever connected */
    bool norms_set;            /* a node has been connected, the three above are valid */
    bool dirty;                /* the trees are stale: rebuild before the next pick */
    s_cand_t *cand;            /* pick scratch: trees to search, one per tree */
    size_t cap_cand;           /* allocated entries of cand */
    uint32_t *pattern_stamp;   /* pick scratch: per group, the pick that checked the pattern */
    bool *pattern_ok;          /* pick scratch: per group, whether the pattern matched */
    size_t cap_pattern;        /* allocated entries of pattern_stamp and pattern_ok */
    uint32_t stamp;            /* pick counter for pattern_stamp */
};

/* ---- Small helpers ------------------------------------------------------------------------ */

/* The capacity to allocate for need elements when cap are allocated: doubling. */
static size_t
s_capacity (size_t cap, size_t need)
{
    size_t cap2 = cap ? cap : 8;
    while (cap2 < need) {
        cap2 *= 2;
    }
    return cap2;
}

/* Reallocates an array to cap elements; 0 or -1 (the array unchanged). */
static int
s_resize (void **array, size_t cap, size_t elem)
{
    void *grown = realloc (*array, cap * elem);
    if (!grown) {
        return -1;
    }
    *array = grown;
    return 0;
}

/* Grows an array to hold at least need elements; 0 or -1. */
static int
s_grow (void **array, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) {
        return 0;
    }
    size_t cap2 = s_capacity (*cap, need);
    if (s_resize (array, cap2, elem)) {
        return -1;
    }
    *cap = cap2;
    return 0;
}

static int32_t
s_map_get (const s_map_t *map, uint64_t key)
{
    if (map->cap == 0) {
        return -1;
    }
    size_t mask = map->cap - 1;
    for (size_t i = gq_mix64 (key) & mask;; i = (i + 1) & mask) {
        if (map->vals[i] < 0) {
            return -1;
        }
        if (map->keys[i] == key) {
            return map->vals[i];
        }
    }
}

static int
s_map_put (s_map_t *map, uint64_t key, int32_t val)
{
    if ((map->used + 1) * 2 > map->cap) {
        size_t cap = map->cap ? map->cap * 2 : 64;
        uint64_t *keys = (uint64_t *) malloc (cap * sizeof (uint64_t));
        int32_t *vals = (int32_t *) malloc (cap * sizeof (int32_t));
        if (!keys || !vals) {
            free (keys);
            free (vals);
            return -1;
        }
        for (size_t i = 0; i < cap; i++) {
            vals[i] = -1;
        }
        for (size_t j = 0; j < map->cap; j++) {
            if (map->vals[j] >= 0) {
                size_t i = gq_mix64 (map->keys[j]) & (cap - 1);
                while (vals[i] >= 0) {
                    i = (i + 1) & (cap - 1);
                }
                keys[i] = map->keys[j];
                vals[i] = map->vals[j];
            }
        }
        free (map->keys);
        free (map->vals);
        map->keys = keys;
        map->vals = vals;
        map->cap = cap;
    }
    size_t mask = map->cap - 1;
    size_t i = gq_mix64 (key) & mask;
    while (map->vals[i] >= 0) {
        i = (i + 1) & mask;
    }
    map->keys[i] = key;
    map->vals[i] = val;
    map->used++;
    return 0;
}

/* Case-insensitive: does hay contain needle[0..len)? */
static bool
s_contains_ci (const char *hay, const char *needle, size_t len)
{
    size_t n = strlen (hay);
    for (size_t i = 0; i + len <= n; i++) {
        size_t k = 0;
        while (k < len && tolower ((unsigned char) hay[i + k]) ==
                              tolower ((unsigned char) needle[k])) {
            k++;
        }
        if (k == len) {
            return true;
        }
    }
    return false;
}

/* gpu_pattern's rule (matcher_internal.h): '|'-separated, case-insensitive substrings. */
bool
gq_matcher_pattern_match (const char *pattern, const char *gpu_model)
{
    bool any = false;
    const char *p = pattern;
    while (true) {
        const char *end = strchr (p, '|');
        size_t len = end ? (size_t) (end - p) : strlen (p);
        const char *a = p;
        while (len > 0 && isspace ((unsigned char) *a)) {
            a++;
            len--;
        }
        while (len > 0 && isspace ((unsigned char) a[len - 1])) {
            len--;
        }
        if (len > 0) {
            any = true;
            if (s_contains_ci (gpu_model, a, len)) {
                return true;
            }
        }
        if (!end) {
            break;
        }
        p = end + 1;
    }
    return !any;
}

/* True when the job carries a pattern with at least one alternative. */
static bool
s_has_pattern (const gq_job_t *job)
{
    if (!job->constraints) {
        return false;
    }
    for (const char *p = job->constraints->gpu_pattern; *p; p++) {
        if (*p != '|' && !isspace ((unsigned char) *p)) {
            return true;
        }
    }
    return false;
}

/* ---- Score -------------------------------------------------------------------------------- */

const char *
gq_node_status_name (int status)
{
    static const char *names[] = {"online", "busy", "draining", "offline"};
    return status >= 0 && status < 4 ? names[status] : "unknown";
}

const char *
gq_filter_name (int verdict)
{
    static const char *names[] = {"ok",    "offline",     "draining", "no_slot", "backoff",
                                  "kind",  "model",       "vram",     "gpu_pattern",
                                  "price", "tflops",      "excluded", "reserved"};
    return verdict >= 0 && verdict <= GQ_FILTER_RESERVED ? names[verdict] : "unknown";
}

/*  The default weights, and why. The seed's 0.3 fit / 0.5 compute / 0.2 cost rewards raw speed
    so much that a 14 GiB job goes to an idle H100 rather than an idle RTX 4090, because
    compute differs by 0.83 (165 vs 989 TFLOPS) while fit differs by 0.41 (14/24 vs 14/80). The
    design asks for the card that is just big enough, so that big cards stay free for the jobs
    that need them; hence fit is the heaviest term:

      fit 1.0   14 GiB job: 4090 0.58 vs H100 0.18 (+0.41); 40 GiB job: A100-40GB 1.0 vs
                H100 0.5 (+0.5). Right-sizing must beat the compute and cost gaps below.
      compute 0.3, cost 0.3  4090 ($0.45) vs H100 ($3.00): compute -0.83 * 0.3 = -0.25, cost
                (0.26/0.46 - 0.26/3.01 = +0.48) * 0.3 = +0.14; with fit the 4090 leads by 0.30.
                At equal fit (a 60 GiB job, A100-80GB $1.80 vs H100 $3.00) speed wins: 0.69 *
                0.3 = 0.21 against 0.06 * 0.3 = 0.02 for the price: 3.2x faster for 1.7x the
                price.
      warm 0.6  a cold start costs 10-30 s: more than any right-sizing gain above (0.30), so a
                node with the model loaded wins unless it is grossly oversized.
      reliability 0.2  a node failing half its jobs loses 0.1: as much as 0.4 of compute.
      load 0.1  prefers emptier nodes among equals (fit already packs partly used ones).
      latency 0.05  1/(1 + rtt/10 ms): LAN vs WAN is worth ~0.04, a tie-breaker.
      affinity 0.5  not a term: a bonus sched.c adds to the node that ran the last job of the
                same affinity key (an LLM conversation: its KV cache is likely still there),
                when that node has a free slot. Less than warm: a cold model elsewhere costs more
                than a recomputed prefix; more than load and latency together.

    A job that asks for no VRAM needs no GPU at all: its fit is 1 - vram_free / (the fleet's
    largest vram_total), so it goes to the smallest card, a CPU-only box first, and leaves GPUs
    to GPU jobs. */
void
gq_weights_default (gq_weights_t *w)
{
    assert (w);
    w->fit = 1.0;
    w->compute = 0.3;
    w->cost = 0.3;
    w->warm = 0.6;
    w->load = 0.1;
    w->latency = 0.05;
    w->reliability = 0.2;
    w->affinity = 0.5;
}

/* The job-independent terms of a node. */
static void
s_terms (const gq_matcher_t *self, const gq_node_t *n, gq_score_t *s)
{
    double t = s_pos (n->tflops);
    s->compute = self->tflops_max > 0 ? fmin (1.0, t / self->tflops_max) : 0;
    double p = s_pos (n->price_per_hour);
    s->cost = self->norms_set ? fmin (1.0, (self->price_min + GQ_MATCH_COST_EPS_PER_HOUR) / (p + GQ_MATCH_COST_EPS_PER_HOUR)) : 1;
    s->load = n->slots > 0 && n->running < n->slots
                  ? (double) (n->slots - (n->running > 0 ? n->running : 0)) / n->slots
                  : 0;
    s->latency = 1.0 / (1.0 + s_pos (n->rtt_ms) / GQ_MATCH_LATENCY_HALF_MS);
    s->reliability = fmin (1.0, s_pos (n->reliability));
}

/* The weighted job-independent part. Never inlined: one instance computes every base, so a
   cached base and a recomputed one are the same bits. */
static __attribute__ ((noinline)) double
s_base (const gq_matcher_t *self, const gq_node_t *n)
{
    gq_score_t s;
    s_terms (self, n, &s);
    const gq_weights_t *w = &self->w;
    return (w->compute * s.compute + w->cost * s.cost) +
           (w->load * s.load + w->latency * s.latency + w->reliability * s.reliability);
}

/* The total from its three parts. Never inlined, so that the addition is never fused with the
   multiplications that made f and warm: scores and bounds then round alike. */
static __attribute__ ((noinline)) double
s_total (double base, double f, double warm)
{
    return (base + f) + warm;
}

/* fit of a node with v MiB free for a job needing m (v >= m): m / v; for m == 0, 1 - v / the
   fleet's largest card. Non-increasing in v, which the bounds rely on. */
static inline double
s_fit (int32_t m, int32_t v, int32_t vram_max)
{
    if (m > 0) {
        return (double) m / (double) v;
    }
    if (vram_max <= 0) {
        return 1.0;
    }
    double f = 1.0 - (double) (v > 0 ? v : 0) / (double) vram_max;
    return f > 0 ? f : 0;
}

static int64_t
s_tie (const gq_node_t *n)
{
    return n->running > 0 ? S_TIE_BUSY : n->idle_since_ms;
}

/* Every term and the total of a node that passed the filters. */
static void
s_score (const gq_matcher_t *self, const gq_node_t *n, const gq_job_t *job, gq_score_t *s)
{
    s_terms (self, n, s);
    s->fit = s_fit (s_need_mb (job), n->vram_free_mb, self->vram_max);
    s->warm = job->model_id && s_has_id (n->models_loaded, n->n_loaded, job->model_id) ? 1 : 0;
    s->total = s_total (s_base (self, n), self->w.fit * s->fit, self->w.warm * s->warm);
}

/* ---- Filters ------------------------------------------------------------------------------ */

/* The verdict of node i for job, in the order of gq_filter_t; reason may be NULL. */
static gq_filter_t
s_filter (gq_matcher_t *self, int32_t i, const gq_job_t *job, int64_t now_ms, char *reason,
          size_t size)
{
    gq_node_t *n = &self->nodes[i];
    char t1[64];
    gq_filter_t verdict = GQ_FILTER_OK;
    const gq_constraints_t *c = job->constraints;
    int32_t m = s_need_mb (job);

    if (n->status == GQ_NODE_OFFLINE || n->status > GQ_NODE_OFFLINE) {
        verdict = GQ_FILTER_OFFLINE;
        if (reason) {
            snprintf (reason, size, "offline");
        }
    }
    else if (n->status == GQ_NODE_DRAINING) {
        verdict = GQ_FILTER_DRAINING;
        if (reason) {
            snprintf (reason, size, "draining: takes no new jobs");
        }
    }
    else if (n->status == GQ_NODE_BUSY || n->slots <= 0 || n->running >= gq_node_capacity (n)) {
        verdict = GQ_FILTER_NO_SLOT;
        if (reason && gq_node_capacity (n) > n->slots) {
            snprintf (reason, size, "no free slot (%d of %d running, %d of them prefetched)",
                      n->running, n->slots, n->running - n->slots);
        } else if (reason) {
            snprintf (reason, size, "no free slot (%d of %d running)", n->running, n->slots);
        }
    }
    else if (n->backoff_until_ms > now_ms) {
        verdict = GQ_FILTER_BACKOFF;
        if (reason) {
            snprintf (reason, size, "backing off for another %lld ms after failures",
                      (long long) (n->backoff_until_ms - now_ms));
        }
    }
    else if (!s_has_kind (n->kinds, job->kind_id)) {
        verdict = GQ_FILTER_KIND;
        if (reason) {
            snprintf (reason, size, "does not run kind '%s'",
                      s_kind_text (self, job->kind_id, t1, sizeof t1));
        }
    }
    else if (job->model_id && !s_has_model (n, job->model_id)) {
        verdict = GQ_FILTER_MODEL;
        if (reason) {
            snprintf (reason, size, "does not have model '%s'",
                      s_model_text (self, job->model_id, t1, sizeof t1));
        }
    }
    else if (n->vram_free_mb < m) {
        verdict = GQ_FILTER_VRAM;
        if (reason) {
            snprintf (reason, size, "vram_free %d MiB < %d MiB needed", n->vram_free_mb, m);
        }
    }
    else if (c && !gq_matcher_pattern_match (c->gpu_pattern, n->gpu_model)) {
        verdict = GQ_FILTER_GPU_PATTERN;
        if (reason) {
            snprintf (reason, size, "gpu_model '%s' does not match '%s'", n->gpu_model,
                      c->gpu_pattern);
        }
    }
    else if (c && c->max_price >= 0 && s_pos (n->price_per_hour) > c->max_price) {
        verdict = GQ_FILTER_PRICE;
        if (reason) {
            snprintf (reason, size, "price %.2f/h > max %.2f/h", s_pos (n->price_per_hour),
                      c->max_price);
        }
    }
    else if (c && c->min_tflops > 0 && s_pos (n->tflops) < c->min_tflops) {
        verdict = GQ_FILTER_TFLOPS;
        if (reason) {
            snprintf (reason, size, "tflops %.1f < %.1f required", s_pos (n->tflops),
                      c->min_tflops);
        }
    }
    else if (s_excluded (job, i)) {
        verdict = GQ_FILTER_EXCLUDED;
        if (reason) {
            snprintf (reason, size, "already failed this job");
        }
    }
    else if (self->nodex[i].reserved_for != 0 && self->nodex[i].reserved_for != job->id) {
        verdict = GQ_FILTER_RESERVED;
        if (reason) {
            snprintf (reason, size, "reserved for job %lld, which has waited longest",
                      (long long) self->nodex[i].reserved_for);
        }
    }
    else if (reason) {
        reason[0] = 0;
    }
    return verdict;
}

/* ---- Groups, trees, linking --------------------------------------------------------------- */

static bool
s_group_fits (const s_group_t *g, const gq_node_t *n)
{
    return g->kinds == n->kinds && strcmp (g->gpu_model, n->gpu_model) == 0;
}

/* Finds or makes the tree of (group, model, warm); -1 on allocation failure. */
static int32_t
s_tree_of (gq_matcher_t *self, int32_t group, uint32_t model, bool warm)
{
    uint64_t key = ((uint64_t) group << 33) | ((uint64_t) model << 1) | (warm ? 1 : 0);
    int32_t t = s_map_get (&self->tree_map, key);
    if (t >= 0) {
        return t;
    }
    s_model_t *mo = &self->models[model];
    if (s_grow ((void **) &self->trees, &self->cap_trees, self->n_trees + 1, sizeof (s_tree_t)) ||
        s_grow ((void **) &self->cand, &self->cap_cand, self->n_trees + 1, sizeof (s_cand_t)) ||
        s_grow ((void **) &mo->trees, &mo->cap_trees, mo->n_trees + 1, sizeof (int32_t))) {
        return -1;
    }
    t = (int32_t) self->n_trees;
    if (s_map_put (&self->tree_map, key, t)) {
        return -1;
    }
    self->n_trees++;
    self->trees[t] = (s_tree_t){.root = -1, .group = group, .model = model, .warm = warm};
    mo->trees[mo->n_trees++] = t;
    return t;
}

/* Finds or makes the group of a node; -1 on allocation failure. */
static int32_t
s_group_of (gq_matcher_t *self, int32_t i)
{
    gq_node_t *n = &self->nodes[i];
    s_nodex_t *x = &self->nodex[i];
    if (x->group >= 0 && s_group_fits (&self->groups[x->group], n)) {
        return x->group;
    }
    char key[GQ_GPU_MODEL_MAX + 24];
    snprintf (key, sizeof key, "%llx|%.*s", (unsigned long long) n->kinds, GQ_GPU_MODEL_MAX - 1,
              n->gpu_model);
    uintptr_t found = (uintptr_t) zhashx_lookup (self->group_index, key);
    if (found) {
        return (int32_t) (found - 1);
    }
    size_t g = self->n_groups;
    if (s_grow ((void **) &self->groups, &self->cap_groups, g + 1, sizeof (s_group_t))) {
        return -1;
    }
    if (g + 1 > self->cap_pattern) {
        size_t cap = s_capacity (self->cap_pattern, g + 1);
        if (s_resize ((void **) &self->pattern_stamp, cap, sizeof (uint32_t)) ||
            s_resize ((void **) &self->pattern_ok, cap, sizeof (bool))) {
            return -1;
        }
        self->cap_pattern = cap;
    }
    s_group_t *grp = &self->groups[g];
    memset (grp, 0, sizeof *grp);
    snprintf (grp->gpu_model, sizeof grp->gpu_model, "%s", n->gpu_model);
    grp->kinds = n->kinds;
    grp->all_tree = -1;
    self->pattern_stamp[g] = 0;
    self->n_groups++;
    int32_t t = s_tree_of (self, (int32_t) g, 0, false);
    if (t < 0) {
        self->n_groups--;
        return -1;
    }
    grp = &self->groups[g];
    grp->all_tree = t;
    if (zhashx_insert (self->group_index, key, (void *) (uintptr_t) (g + 1))) {
        return -1;
    }
    return (int32_t) g;
}

static void
s_side_add (gq_matcher_t *self, int32_t i)
{
    assert (self->nodex[i].side_pos < 0);
    assert (self->n_side < self->cap_nodes);
    self->nodex[i].side_pos = (int32_t) self->n_side;
    self->side[self->n_side++] = i;
}

static void
s_side_remove (gq_matcher_t *self, int32_t i)
{
    int32_t pos = self->nodex[i].side_pos;
    assert (pos >= 0);
    int32_t last = self->side[--self->n_side];
    self->side[pos] = last;
    self->nodex[last].side_pos = pos;
    self->nodex[i].side_pos = -1;
}

/* The entry of node i as it should be now (tree and links not set). */
static void
s_proto (gq_matcher_t *self, int32_t i, gq_treap_entry_t *e)
{
    const gq_node_t *n = &self->nodes[i];
    memset (e, 0, sizeof *e);
    e->node = i;
    e->vram = n->vram_free_mb;
    e->q = s_base (self, n);
    e->tie = s_tie (n);
    e->price = (float) s_pos (n->price_per_hour);
    e->tflops = (float) s_pos (n->tflops);
    e->backoff = n->backoff_until_ms;
}

/* Adds node i (its entry proto) to one tree. The pool has room (gq_treap_reserve). */
static void
s_tree_add (gq_matcher_t *self, int32_t tree, gq_treap_entry_t *proto, s_nodex_t *x)
{
    proto->tree = tree;
    x->entries[x->n_entries++] = gq_treap_insert (self->treap, &self->trees[tree].root, proto);
}

static void
s_unlink (gq_matcher_t *self, int32_t i)
{
    s_nodex_t *x = &self->nodex[i];
    const gq_treap_entry_t *P = gq_treap_entries (self->treap);
    for (uint32_t k = 0; k < x->n_entries; k++) {
        int32_t e = x->entries[k];
        gq_treap_erase (self->treap, &self->trees[P[e].tree].root, e);
    }
    x->n_entries = 0;
    if (x->side_pos >= 0) {
        s_side_remove (self, i);
    }
}

/* Links an available node into its trees; -1 (and linked nowhere) on allocation failure. */
static int
s_link_trees (gq_matcher_t *self, int32_t i)
{
    gq_node_t *n = &self->nodes[i];
    s_nodex_t *x = &self->nodex[i];
    int32_t g = s_group_of (self, i);
    if (g < 0) {
        return -1;
    }
    x->group = g;
    size_t count = 1 + (size_t) n->n_available + 2 * (size_t) n->n_loaded;
    size_t cap = x->cap_entries;
    if (s_grow ((void **) &x->entries, &cap, count, sizeof (int32_t)) ||
        gq_treap_reserve (self->treap, count)) {
        return -1;
    }
    x->cap_entries = (uint32_t) cap;

    gq_treap_entry_t proto;
    s_proto (self, i, &proto);
    s_tree_add (self, self->groups[g].all_tree, &proto, x);

    /* Cold trees: every model available or loaded (a merge of the two sorted lists). */
    size_t a = 0, l = 0;
    while (a < n->n_available || l < n->n_loaded) {
        uint32_t model;
        if (l >= n->n_loaded ||
            (a < n->n_available && n->models_available[a] < n->models_loaded[l])) {
            model = n->models_available[a++];
        }
        else if (a >= n->n_available || n->models_loaded[l] < n->models_available[a]) {
            model = n->models_loaded[l++];
        }
        else {
            model = n->models_available[a++];
            l++;
        }
        int32_t t = s_tree_of (self, g, model, false);
        if (t < 0) {
            s_unlink (self, i);
            return -1;
        }
        s_tree_add (self, t, &proto, x);
    }
    for (l = 0; l < n->n_loaded; l++) {
        int32_t t = s_tree_of (self, g, n->models_loaded[l], true);
        if (t < 0) {
            s_unlink (self, i);
            return -1;
        }
        s_tree_add (self, t, &proto, x);
    }
    return 0;
}

/* Puts an available node where a pick finds it: its trees, or the side list (reserved, or
   no memory for its tree entries: exact either way). */
static void
s_link (gq_matcher_t *self, int32_t i)
{
    s_nodex_t *x = &self->nodex[i];
    x->models_changed = false;
    if (!x->available) {
        return;
    }
    if (x->reserved_for != 0 || s_link_trees (self, i)) {
        s_side_add (self, i);
    }
}

/* Brings node i's place in the indexes up to date after a change: nothing when no field that
   the trees carry moved; in place when its trees and tree keys stay (an rtt, a reliability,
   a backoff, the tie-break); else out and in again. */
static void
s_relink (gq_matcher_t *self, int32_t i)
{
    gq_node_t *n = &self->nodes[i];
    s_nodex_t *x = &self->nodex[i];
    const gq_treap_entry_t *P = gq_treap_entries (self->treap);
    if (x->available && x->n_entries > 0 && !x->models_changed && x->reserved_for == 0 &&
        s_group_fits (&self->groups[x->group], n) && P[x->entries[0]].vram == n->vram_free_mb) {
        gq_treap_entry_t proto;
        s_proto (self, i, &proto);
        const gq_treap_entry_t *e = &P[x->entries[0]];
        if (e->q == proto.q && e->tie == proto.tie && e->price == proto.price &&
            e->tflops == proto.tflops && e->backoff == proto.backoff) {
            return;
        }
        for (uint32_t k = 0; k < x->n_entries; k++) {
            gq_treap_update (self->treap, x->entries[k], &proto);
        }
        return;
    }
    s_unlink (self, i);
    s_link (self, i);
}

/* Rebuilds every tree when the weights or the fleet's normalisation changed. */
static void
s_refresh (gq_matcher_t *self)
{
    if (!self->dirty) {
        return;
    }
    self->dirty = false;
    for (size_t t = 0; t < self->n_trees; t++) {
        self->trees[t].root = -1;
    }
    gq_treap_clear (self->treap);
    self->n_side = 0;
    for (size_t i = 0; i < self->n_nodes; i++) {
        self->nodex[i].n_entries = 0;
        self->nodex[i].side_pos = -1;
    }
    for (size_t i = 0; i < self->n_nodes; i++) {
        s_link (self, (int32_t) i);
    }
}

/* ---- Construction, interning, the node table --------------------------------------------- */

static void
s_weights_sanitise (gq_weights_t *w)
{
    double *v[] = {&w->fit,     &w->compute,     &w->cost,    &w->warm,
                   &w->load,    &w->latency,     &w->reliability, &w->affinity};
    for (size_t k = 0; k < sizeof v / sizeof v[0]; k++) {
        /* The bounds assume weights >= 0; NaN or infinity would break every order. */
        if (!(*v[k] >= 0)) {
            *v[k] = 0;
        }
        else if (*v[k] > 1e6) {
            *v[k] = 1e6;
        }
    }
}

gq_matcher_t *
gq_matcher_new (const gq_weights_t *weights)
{
    gq_matcher_t *self = (gq_matcher_t *) calloc (1, sizeof (gq_matcher_t));
    if (!self) {
        return NULL;
    }
    if (weights) {
        self->w = *weights;
    }
    else {
        gq_weights_default (&self->w);
    }
    s_weights_sanitise (&self->w);
    self->node_index = zhashx_new ();
    self->kind_index = zhashx_new ();
    self->model_index = zhashx_new ();
    self->group_index = zhashx_new ();
    self->treap = gq_treap_new ();
    self->stamp = 1;
    if (!self->node_index || !self->kind_index || !self->model_index || !self->group_index ||
        !self->treap ||
        s_grow ((void **) &self->models, &self->cap_models, 16, sizeof (s_model_t))) {
        gq_matcher_destroy (&self);
        return NULL;
    }
    memset (&self->models[0], 0, sizeof (s_model_t)); /* id 0: "no model", the group trees */
    self->n_models = 1;
    return self;
}

void
gq_matcher_destroy (gq_matcher_t **self_p)
{
    assert (self_p);
    gq_matcher_t *self = *self_p;
    if (!self) {
        return;
    }
    for (size_t i = 0; i < self->n_nodes; i++) {
        free (self->nodes[i].models_available);
        free (self->nodes[i].models_loaded);
        free (self->nodex[i].entries);
    }
    free (self->nodes);
    free (self->nodex);
    for (int k = 0; k < self->n_kinds; k++) {
        free (self->kinds[k]);
    }
    for (size_t k = 0; k < self->n_models; k++) {
        free (self->models[k].name);
        free (self->models[k].trees);
    }
    free (self->models);
    free (self->groups);
    free (self->trees);
    free (self->tree_map.keys);
    free (self->tree_map.vals);
    gq_treap_destroy (&self->treap);
    free (self->side);
    free (self->cand);
    free (self->pattern_stamp);
    free (self->pattern_ok);
    zhashx_destroy (&self->node_index);
    zhashx_destroy (&self->kind_index);
    zhashx_destroy (&self->model_index);
    zhashx_destroy (&self->group_index);
    free (self);
    *self_p = NULL;
}

void
gq_matcher_set_weights (gq_matcher_t *self, const gq_weights_t *weights)
{
    assert (self);
    if (weights) {
        self->w = *weights;
    }
    else {
        gq_weights_default (&self->w);
    }
    s_weights_sanitise (&self->w);
    self->dirty = true;
}

size_t
gq_matcher_kinds (gq_matcher_t *self)
{
    return (size_t) self->n_kinds;
}

int
gq_matcher_kind_id (gq_matcher_t *self, const char *kind, bool create)
{
    assert (self);
    if (!kind || !*kind) {
        return -1;
    }
    uintptr_t found = (uintptr_t) zhashx_lookup (self->kind_index, kind);
    if (found) {
        return (int) found - 1;
    }
    if (!create || self->n_kinds >= GQ_MAX_KINDS) {
        return -1;
    }
    char *copy = strdup (kind);
    if (!copy) {
        return -1;
    }
    int id = self->n_kinds;
    if (zhashx_insert (self->kind_index, kind, (void *) (uintptr_t) (id + 1))) {
        free (copy);
        return -1;
    }
    self->kinds[id] = copy;
    self->n_kinds++;
    return id;
}

size_t
gq_matcher_model_names (gq_matcher_t *self)
{
    return self->n_models - 1;
}

int64_t
gq_matcher_model_id (gq_matcher_t *self, const char *model, bool create)
{
    assert (self);
    if (!model || !*model) {
        return -1;
    }
    uintptr_t found = (uintptr_t) zhashx_lookup (self->model_index, model);
    if (found) {
        return (int64_t) found;
    }
    if (!create || self->n_models > GQ_MAX_MODEL_NAMES) {
        return -1;
    }
    if (s_grow ((void **) &self->models, &self->cap_models, self->n_models + 1,
                sizeof (s_model_t))) {
        return -1;
    }
    size_t id = self->n_models;
    s_model_t *mo = &self->models[id];
    memset (mo, 0, sizeof *mo);
    mo->name = strdup (model);
    if (!mo->name || zhashx_insert (self->model_index, model, (void *) (uintptr_t) id)) {
        free (mo->name);
        mo->name = NULL;
        return -1;
    }
    self->n_models++;
    return (int64_t) id;
}

const char *
gq_matcher_kind_name (gq_matcher_t *self, int id)
{
    assert (self);
    return id >= 0 && id < self->n_kinds ? self->kinds[id] : NULL;
}

const char *
gq_matcher_model_name (gq_matcher_t *self, uint32_t id)
{
    assert (self);
    return id > 0 && id < self->n_models ? self->models[id].name : NULL;
}

int32_t
gq_matcher_node_find (gq_matcher_t *self, const char *name)
{
    assert (self);
    if (!name) {
        return -1;
    }
    uintptr_t found = (uintptr_t) zhashx_lookup (self->node_index, name);
    return found ? (int32_t) (found - 1) : -1;
}

int32_t
gq_matcher_node_find_or_add (gq_matcher_t *self, const char *name)
{
    assert (self);
    int32_t i = gq_matcher_node_find (self, name);
    if (i >= 0 || !name || !*name || strlen (name) >= GQ_NAME_MAX) {
        return i; /* a name that does not fit would be truncated into someone else's */
    }
    if (self->n_nodes >= INT32_MAX - 1) {
        return -1;
    }
    size_t n = self->n_nodes;
    if (n + 1 > self->cap_nodes) {
        /* The side list may hold every node, so that adding to it never fails. */
        size_t cap = s_capacity (self->cap_nodes, n + 1);
        if (s_resize ((void **) &self->nodes, cap, sizeof (gq_node_t)) ||
            s_resize ((void **) &self->nodex, cap, sizeof (s_nodex_t)) ||
            s_resize ((void **) &self->side, cap, sizeof (int32_t))) {
            return -1;
        }
        self->cap_nodes = cap;
    }
    gq_node_t *node = &self->nodes[n];
    memset (node, 0, sizeof *node);
    snprintf (node->name, sizeof node->name, "%s", name);
    node->status = GQ_NODE_OFFLINE;
    node->reliability = 1;
    s_nodex_t *x = &self->nodex[n];
    memset (x, 0, sizeof *x);
    x->group = -1;
    x->side_pos = -1;
    if (zhashx_insert (self->node_index, name, (void *) (uintptr_t) (n + 1))) {
        return -1;
    }
    self->n_nodes++;
    return (int32_t) n;
}

size_t
gq_matcher_nodes (gq_matcher_t *self)
{
    assert (self);
    return self->n_nodes;
}

gq_node_t *
gq_matcher_node (gq_matcher_t *self, int32_t index)
{
    assert (self);
    if (index < 0 || (size_t) index >= self->n_nodes) {
        return NULL;
    }
    return &self->nodes[index];
}

static int
s_cmp_u32 (const void *a, const void *b)
{
    uint32_t x = *(const uint32_t *) a, y = *(const uint32_t *) b;
    return x < y ? -1 : x > y;
}

/* A sorted, deduplicated copy of ids that were issued by this matcher; *n_out its length. */
static uint32_t *
s_model_list (gq_matcher_t *self, const uint32_t *ids, size_t n, uint16_t *n_out)
{
    if (n > GQ_MAX_MODELS) {
        n = GQ_MAX_MODELS;
    }
    uint32_t *copy = (uint32_t *) malloc ((n ? n : 1) * sizeof (uint32_t));
    if (!copy) {
        return NULL;
    }
    size_t k = 0;
    for (size_t j = 0; j < n; j++) {
        if (ids[j] > 0 && ids[j] < self->n_models) {
            copy[k++] = ids[j];
        }
    }
    qsort (copy, k, sizeof (uint32_t), s_cmp_u32);
    size_t u = 0;
    for (size_t j = 0; j < k; j++) {
        if (u == 0 || copy[u - 1] != copy[j]) {
            copy[u++] = copy[j];
        }
    }
    *n_out = (uint16_t) u;
    return copy;
}

int
gq_matcher_node_set_models (gq_matcher_t *self, int32_t index, const uint32_t *available,
                            size_t n_available, const uint32_t *loaded, size_t n_loaded)
{
    assert (self);
    gq_node_t *n = gq_matcher_node (self, index);
    if (!n || (n_available && !available) || (n_loaded && !loaded)) {
        return -1;
    }
    uint16_t na = 0, nl = 0;
    uint32_t *a = s_model_list (self, available, n_available, &na);
    uint32_t *l = s_model_list (self, loaded, n_loaded, &nl);
    if (!a || !l) {
        free (a);
        free (l);
        return -1;
    }
    free (n->models_available);
    free (n->models_loaded);
    n->models_available = a;
    n->n_available = na;
    n->models_loaded = l;
    n->n_loaded = nl;
    self->nodex[index].models_changed = true;
    gq_matcher_node_changed (self, index);
    return 0;
}

/* Widens the fleet's normalisation with a connected node; marks the trees stale when a base
   score of any node changes as a result. */
static void
s_norms_add (gq_matcher_t *self, const gq_node_t *n)
{
    double t = s_pos (n->tflops);
    double p = s_pos (n->price_per_hour);
    if (!self->norms_set) {
        self->norms_set = true;
        self->tflops_max = t;
        self->price_min = p;
        self->vram_max = n->vram_total_mb > 0 ? n->vram_total_mb : 0;
        self->dirty = true;
        return;
    }
    if (t > self->tflops_max) {
        self->tflops_max = t;
        self->dirty = true;
    }
    if (p < self->price_min) {
        self->price_min = p;
        self->dirty = true;
    }
    if (n->vram_total_mb > self->vram_max) {
        self->vram_max = n->vram_total_mb; /* fit is computed per pick: no rebuild */
    }
}

void
gq_matcher_node_changed (gq_matcher_t *self, int32_t index)
{
    assert (self);
    gq_node_t *n = gq_matcher_node (self, index);
    if (!n) {
        return;
    }
    s_nodex_t *x = &self->nodex[index];
    if (n->status > GQ_NODE_OFFLINE) {
        n->status = GQ_NODE_OFFLINE;
    }
    if (n->status == GQ_NODE_ONLINE || n->status == GQ_NODE_BUSY) {
        n->status = n->slots <= 0 || n->running >= gq_node_capacity (n) ? GQ_NODE_BUSY
                                                                          : GQ_NODE_ONLINE;
    }
    if (n->status != GQ_NODE_OFFLINE) {
        s_norms_add (self, n);
    }
    /* Kinds some connected node offers, counted per kind: O(1) unless the node's kinds or
       connection changed. */
    uint64_t ready = n->status == GQ_NODE_ONLINE || n->status == GQ_NODE_BUSY ? n->kinds : 0;
    for (uint64_t diff = ready ^ x->kinds_ready; diff; diff &= diff - 1) {
        int bit = __builtin_ctzll (diff);
        if (ready & (1ULL << bit)) {
            if (self->kind_nodes[bit]++ == 0) {
                self->kinds_ready |= 1ULL << bit;
            }
        } else if (--self->kind_nodes[bit] == 0) {
            self->kinds_ready &= ~(1ULL << bit);
        }
    }
    x->kinds_ready = ready;
    bool available = n->status == GQ_NODE_ONLINE;
    if (available != x->available) {
        x->available = available;
        if (available) {
            self->available++;
        }
        else {
            self->available--;
        }
    }
    if (self->dirty) {
        return; /* every tree is rebuilt before the next pick */
    }
    s_relink (self, index);
}

/* ---- Pick --------------------------------------------------------------------------------- */

/* The state of one search. */
typedef struct {
    gq_matcher_t *self;        /* the matcher */
    const gq_job_t *job;       /* the job placed */
    const gq_treap_entry_t *P; /* the pool */
    int32_t need;              /* min_vram_mb, >= 0 */
    int32_t vram_max;          /* the fleet's largest card, for fit */
    double wfit;               /* weight of fit */
    double warm;               /* weighted warm term of the tree searched now */
    bool has_price;            /* the job caps the price */
    double max_price;          /* the cap */
    bool has_tflops;           /* the job wants a minimum of tflops */
    double min_tflops;         /* the minimum */
    int64_t now_ms;            /* nodes backing off until later are skipped */
    double best;               /* best score so far, -inf before any */
    int64_t best_tie;          /* its tie-break key */
    int32_t best_node;         /* its node, -1 before any */
} s_pick_t;

/* Upper bound of every score in the subtree of e. */
static inline double
s_bound (const s_pick_t *ctx, const gq_treap_entry_t *e)
{
    int32_t v = e->vmin > ctx->need ? e->vmin : ctx->need;
    return s_total (e->qmax, ctx->wfit * s_fit (ctx->need, v, ctx->vram_max), ctx->warm);
}

/* True when nothing in the subtree of e (of bound b) can beat the best so far. */
static inline bool
s_prune (const s_pick_t *ctx, const gq_treap_entry_t *e, double b)
{
    if (e->vmax < ctx->need || (ctx->has_price && e->pmin > ctx->max_price) ||
        (ctx->has_tflops && e->tmax < ctx->min_tflops) || e->bmin > ctx->now_ms) {
        return true;
    }
    return b < ctx->best ||
           (b == ctx->best &&
            !gq_treap_key_less (e->kmin_tie, e->kmin_node, ctx->best_tie, ctx->best_node));
}

static inline void
s_offer (s_pick_t *ctx, int32_t node, double score, int64_t tie)
{
    if (score > ctx->best ||
        (score == ctx->best && gq_treap_key_less (tie, node, ctx->best_tie, ctx->best_node))) {
        ctx->best = score;
        ctx->best_tie = tie;
        ctx->best_node = node;
    }
}

/* Branch and bound over the subtree of t (not pruned by the caller). */
static void
s_search (s_pick_t *ctx, int32_t t)
{
    const gq_treap_entry_t *P = ctx->P;
    while (t >= 0) {
        const gq_treap_entry_t *e = &P[t];
        if (e->vram >= ctx->need && !(ctx->has_price && e->price > ctx->max_price) &&
            !(ctx->has_tflops && e->tflops < ctx->min_tflops) && e->backoff <= ctx->now_ms &&
            !s_excluded (ctx->job, e->node)) {
            double score =
                s_total (e->q, ctx->wfit * s_fit (ctx->need, e->vram, ctx->vram_max), ctx->warm);
            s_offer (ctx, e->node, score, e->tie);
        }
        int32_t a = e->left, b = e->right;
        double ba = a >= 0 ? s_bound (ctx, &P[a]) : -INFINITY;
        double bb = b >= 0 ? s_bound (ctx, &P[b]) : -INFINITY;
        if (bb > ba ||
            (bb == ba && b >= 0 && a >= 0 &&
             gq_treap_key_less (P[b].kmin_tie, P[b].kmin_node, P[a].kmin_tie, P[a].kmin_node))) {
            int32_t ts = a;
            a = b;
            b = ts;
            double tb = ba;
            ba = bb;
            bb = tb;
        }
        /* Visit the more promising child first; loop on the other (no deep recursion chain on
           the second child). */
        if (a >= 0 && !s_prune (ctx, &P[a], ba)) {
            s_search (ctx, a);
        }
        if (b >= 0 && !s_prune (ctx, &P[b], bb)) {
            t = b;
        }
        else {
            t = -1;
        }
    }
}

/* Whether group g's gpu_model matches the job's pattern, computed once per pick. */
static bool
s_group_pattern (gq_matcher_t *self, int32_t g, const gq_job_t *job)
{
    if (self->pattern_stamp[g] != self->stamp) {
        self->pattern_stamp[g] = self->stamp;
        self->pattern_ok[g] =
            gq_matcher_pattern_match (job->constraints->gpu_pattern, self->groups[g].gpu_model);
    }
    return self->pattern_ok[g];
}

int32_t
gq_matcher_pick (gq_matcher_t *self, const gq_job_t *job, int64_t now_ms)
{
    assert (self);
    assert (job);
    if (self->available == 0) {
        return S_NO_NODE;
    }
    s_refresh (self);
    /* Read before the initialiser: a call inside it has GCC zero ctx first (rep stos). */
    const gq_treap_entry_t *P = gq_treap_entries (self->treap);
    s_pick_t ctx = {
        .self = self,
        .job = job,
        .P = P,
        .need = s_need_mb (job),
        .vram_max = self->vram_max,
        .wfit = self->w.fit,
        .best = -INFINITY,
        .best_tie = S_TIE_BUSY,
        .best_node = S_NO_NODE,
        .now_ms = now_ms,
    };
    const gq_constraints_t *c = job->constraints;
    if (c) {
        ctx.has_price = c->max_price >= 0;
        ctx.max_price = c->max_price;
        ctx.has_tflops = c->min_tflops > 0;
        ctx.min_tflops = c->min_tflops;
    }

    /* The nodes kept aside: scored one by one, exactly as the reference does. */
    for (size_t k = 0; k < self->n_side; k++) {
        int32_t i = self->side[k];
        if (s_filter (self, i, job, now_ms, NULL, 0) == GQ_FILTER_OK) {
            gq_score_t s;
            s_score (self, &self->nodes[i], job, &s);
            s_offer (&ctx, i, s.total, s_tie (&self->nodes[i]));
        }
    }

    /* The trees that may hold a candidate, best bound first. */
    if (job->model_id >= self->n_models || job->kind_id >= GQ_MAX_KINDS) {
        return ctx.best_node;
    }
    const s_model_t *mo = &self->models[job->model_id];
    bool pattern = s_has_pattern (job);
    if (++self->stamp == 0) {
        memset (self->pattern_stamp, 0, self->n_groups * sizeof (uint32_t));
        self->stamp = 1;
    }
    size_t n_cand = 0;
    for (uint32_t k = 0; k < mo->n_trees; k++) {
        int32_t t = mo->trees[k];
        const s_tree_t *tree = &self->trees[t];
        if (tree->root < 0 || !s_has_kind (self->groups[tree->group].kinds, job->kind_id)) {
            continue;
        }
        ctx.warm = tree->warm ? self->w.warm : 0;
        const gq_treap_entry_t *root = &ctx.P[tree->root];
        double b = s_bound (&ctx, root);
        if (s_prune (&ctx, root, b)) {
            continue;
        }
        /* Insertion sort, bound descending: there are few trees per job. */
        size_t j = n_cand++;
        while (j > 0 && self->cand[j - 1].bound < b) {
            self->cand[j] = self->cand[j - 1];
            j--;
        }
        self->cand[j] = (s_cand_t){.bound = b, .tree = t};
    }
    for (size_t k = 0; k < n_cand; k++) {
        const s_tree_t *tree = &self->trees[self->cand[k].tree];
        const gq_treap_entry_t *root = &ctx.P[tree->root];
        if (self->cand[k].bound < ctx.best) {
            break; /* sorted: no later tree can do better */
        }
        ctx.warm = tree->warm ? self->w.warm : 0;
        if (s_prune (&ctx, root, self->cand[k].bound) ||
            (pattern && !s_group_pattern (self, tree->group, job))) {
            continue;
        }
        s_search (&ctx, tree->root);
    }
    return ctx.best_node;
}

int32_t
gq_matcher_pick_exhaustive (gq_matcher_t *self, const gq_job_t *job, int64_t now_ms)
{
    assert (self);
    assert (job);
    double best = -INFINITY;
    int64_t best_tie = S_TIE_BUSY;
    int32_t best_node = S_NO_NODE;
    for (size_t k = 0; k < self->n_nodes; k++) {
        int32_t i = (int32_t) k;
        if (s_filter (self, i, job, now_ms, NULL, 0) != GQ_FILTER_OK) {
            continue;
        }
        gq_score_t s;
        s_score (self, &self->nodes[i], job, &s);
        int64_t tie = s_tie (&self->nodes[i]);
        if (s.total > best ||
            (s.total == best && gq_treap_key_less (tie, i, best_tie, best_node))) {
            best = s.total;
            best_tie = tie;
            best_node = i;
        }
    }
    return best_node;
}

gq_filter_t
gq_matcher_score (gq_matcher_t *self, int32_t node, const gq_job_t *job, int64_t now_ms,
                  gq_score_t *score, char *reason, size_t size)
{
    assert (self);
    assert (job);
    if (node < 0 || (size_t) node >= self->n_nodes) {
        if (reason && size) {
            snprintf (reason, size, "no such node");
        }
        return GQ_FILTER_OFFLINE;
    }
    gq_filter_t verdict = s_filter (self, node, job, now_ms, reason, size);
    if (score) {
        memset (score, 0, sizeof *score);
        if (verdict == GQ_FILTER_OK) {
            s_score (self, &self->nodes[node], job, score);
        }
    }
    return verdict;
}

void
gq_matcher_assign (gq_matcher_t *self, int32_t node, gq_job_t *job)
{
    assert (self);
    assert (job);
    gq_node_t *n = gq_matcher_node (self, node);
    if (!n) {
        return;
    }
    n->running++;
    job->slow = job->kind_id >= 64 || !(n->short_kinds >> job->kind_id & 1);
    n->slow += job->slow;
    n->vram_free_mb -= s_need_mb (job);
    gq_matcher_node_changed (self, node); /* busy when full */
}

void
gq_matcher_release (gq_matcher_t *self, int32_t node, gq_job_t *job, int64_t now_ms)
{
    assert (self);
    assert (job);
    gq_node_t *n = gq_matcher_node (self, node);
    if (!n || n->running <= 0) {
        return;
    }
    n->running--;
    n->slow -= job->slow && n->slow > 0;
    job->slow = 0;
    n->vram_free_mb += s_need_mb (job);
    if (n->vram_total_mb > 0 && n->vram_free_mb > n->vram_total_mb) {
        n->vram_free_mb = n->vram_total_mb; /* a report in between already gave it back */
    }
    if (n->running == 0) {
        n->idle_since_ms = now_ms;
    }
    gq_matcher_node_changed (self, node); /* online again when it was busy */
}

size_t
gq_matcher_available_count (gq_matcher_t *self)
{
    assert (self);
    return self->available;
}

bool
gq_matcher_kind_ready (gq_matcher_t *self, int kind)
{
    assert (self);
    return kind >= 0 && kind < GQ_MAX_KINDS && (self->kinds_ready >> kind) & 1;
}

/* ---- Reservation ------------------------------------------------------------------------- */

/* The filters a node passes whatever its load (matcher_internal.h): for could_run and
   reserve_candidate here, for the hint in explain.c. */
bool
gq_matcher_static_ok (gq_matcher_t *self, int32_t i, const gq_job_t *job)
{
    const gq_node_t *n = &self->nodes[i];
    const gq_constraints_t *c = job->constraints;
    return s_has_kind (n->kinds, job->kind_id) &&
           (!job->model_id || s_has_model (n, job->model_id)) &&
           n->vram_total_mb >= s_need_mb (job) &&
           (!c || gq_matcher_pattern_match (c->gpu_pattern, n->gpu_model)) &&
           (!c || c->max_price < 0 || s_pos (n->price_per_hour) <= c->max_price) &&
           (!c || c->min_tflops <= 0 || s_pos (n->tflops) >= c->min_tflops) &&
           !s_excluded (job, i);
}

bool
gq_matcher_could_run (gq_matcher_t *self, int32_t node, const gq_job_t *job)
{
    assert (self);
    assert (job);
    const gq_node_t *n = gq_matcher_node (self, node);
    return n && s_connected (n) && n->status != GQ_NODE_DRAINING && n->slots > 0 &&
           gq_matcher_static_ok (self, node, job);
}

bool
gq_matcher_fits (gq_matcher_t *self, int32_t node, const gq_job_t *job)
{
    assert (self);
    assert (job);
    const gq_node_t *n = gq_matcher_node (self, node);
    return n && n->slots > 0 && gq_matcher_static_ok (self, node, job);
}

int32_t
gq_matcher_reserve_candidate (gq_matcher_t *self, const gq_job_t *job, int64_t now_ms)
{
    assert (self);
    assert (job);
    int32_t best = S_NO_NODE;
    for (size_t k = 0; k < self->n_nodes; k++) {
        int32_t i = (int32_t) k;
        const gq_node_t *n = &self->nodes[i];
        const s_nodex_t *x = &self->nodex[i];
        if (!s_connected (n) || n->status == GQ_NODE_DRAINING || n->slots <= 0 ||
            (x->reserved_for != 0 && x->reserved_for != job->id) ||
            !gq_matcher_static_ok (self, i, job)) {
            continue;
        }
        if (best < 0) {
            best = i;
            continue;
        }
        const gq_node_t *b = &self->nodes[best];
        bool n_back = n->backoff_until_ms > now_ms, b_back = b->backoff_until_ms > now_ms;
        if (n->vram_free_mb != b->vram_free_mb) {
            if (n->vram_free_mb > b->vram_free_mb) {
                best = i;
            }
        }
        else if (n->running != b->running) {
            if (n->running < b->running) {
                best = i;
            }
        }
        else if (n_back != b_back && !n_back) {
            best = i;
        }
    }
    return best;
}

void
gq_matcher_reserve (gq_matcher_t *self, int32_t node, int64_t job_id)
{
    assert (self);
    if (!gq_matcher_node (self, node)) {
        return;
    }
    s_nodex_t *x = &self->nodex[node];
    if (x->reserved_for == job_id) {
        return;
    }
    x->reserved_for = job_id;
    if (!self->dirty) {
        s_unlink (self, node);
        s_link (self, node);
    }
}

int64_t
gq_matcher_reserved_for (gq_matcher_t *self, int32_t node)
{
    assert (self);
    return gq_matcher_node (self, node) ? self->nodex[node].reserved_for : 0;
}

/* ---- Selftest ---------------------------------------------------------------------------- */

/* Prints every node's verdict and score for job: what a failed pick check shows. */
static void
s_test_dump (gq_matcher_t *self, const gq_job_t *job, int64_t now_ms)
{
    for (size_t k = 0; k < self->n_nodes; k++) {
        gq_score_t s;
        char reason[160];
        const gq_node_t *n = &self->nodes[k];
        gq_filter_t v = gq_matcher_score (self, (int32_t) k, job, now_ms, &s, reason,
                                          sizeof reason);
        fprintf (stderr,
                 "  node %zu %-10s %-8s v=%d/%d run=%d/%d idle=%lld: %s %s total=%.17g fit=%.3f "
                 "compute=%.3f cost=%.3f warm=%.0f load=%.3f lat=%.3f rel=%.3f\n",
                 k, n->name, gq_node_status_name (n->status), n->vram_free_mb, n->vram_total_mb,
                 n->running, n->slots, (long long) n->idle_since_ms, gq_filter_name (v), reason,
                 s.total, s.fit, s.compute, s.cost, s.warm, s.load, s.latency, s.reliability);
    }
}

/* Checks that pick (and the reference) choose want for job. */
static void
s_test_pick (gq_matcher_t *self, const gq_job_t *job, int64_t now_ms, int32_t want,
             const char *what, int line)
{
    int32_t got = gq_matcher_pick (self, job, now_ms);
    int32_t ref = gq_matcher_pick_exhaustive (self, job, now_ms);
    if (got != want || ref != want) {
        fprintf (stderr, "\nmatcher.c:%d: %s: pick %d, reference %d, want %d (%s)\n", line, what,
                 got, ref, want, want >= 0 ? self->nodes[want].name : "none");
        s_test_dump (self, job, now_ms);
        abort ();
    }
}
#define S_CHECK_PICK(self, job, now, want, what) s_test_pick (self, job, now, want, what, __LINE__)

/* An online node with the given hardware, idle, one kind (bit 0), no models. */
int32_t
gq_matcher_test_node (gq_matcher_t *self, const char *name, const char *gpu, int vram_mb,
                      float tflops, float price, int slots)
{
    int32_t i = gq_matcher_node_find_or_add (self, name);
    gq_node_t *n = gq_matcher_node (self, i);
    if (!n) {
        fprintf (stderr, "\nmatcher test: cannot add node %s\n", name);
        abort ();
    }
    snprintf (n->gpu_model, sizeof n->gpu_model, "%s", gpu);
    n->vram_total_mb = n->vram_free_mb = vram_mb;
    n->tflops = tflops;
    n->price_per_hour = price;
    n->slots = slots;
    n->running = 0;
    n->kinds = 1;
    n->rtt_ms = 1;
    n->reliability = 1;
    n->idle_since_ms = 0;
    n->status = GQ_NODE_ONLINE;
    gq_matcher_node_changed (self, i);
    return i;
}

void
gq_matcher_test_job (gq_job_t *job, int64_t id, int vram_mb)
{
    memset (job, 0, sizeof *job);
    job->id = id;
    job->min_vram_mb = vram_mb;
    job->node = -1;
    job->priority = 5;
    job->max_attempts = 3;
}

/* ---- Randomized equivalence with the exhaustive reference ---- */

static uint32_t
s_test_rand (uint32_t *state)
{
    *state = *state * 1664525u + 1013904223u;
    return *state >> 8;
}

/* Draws node fields from small sets, so that ties and equal keys are common. */
static void
s_test_random_node (gq_matcher_t *self, int32_t i, uint32_t *rng, int n_models)
{
    static const char *gpus[] = {"NVIDIA GeForce RTX 4090", "NVIDIA A100-SXM4-80GB",
                                 "NVIDIA H100 80GB HBM3", "cpu"};
    static const int totals[] = {24576, 81920, 81920, 0};
    static const float tflops[] = {165, 312, 989, 1};
    static const float prices[] = {0.5f, 1.8f, 3.0f, 0};
    gq_node_t *n = gq_matcher_node (self, i);
    int type = (int) (s_test_rand (rng) % 4);
    snprintf (n->gpu_model, sizeof n->gpu_model, "%s", gpus[type]);
    n->vram_total_mb = totals[type];
    n->tflops = s_test_rand (rng) % 4 ? tflops[type] : tflops[type] * 0.9f;
    n->price_per_hour = s_test_rand (rng) % 3 ? prices[type] : prices[type] + 0.25f;
    n->slots = 1 + (int) (s_test_rand (rng) % 3);
    n->running = (int) (s_test_rand (rng) % (uint32_t) (n->slots + 1));
    n->vram_free_mb = n->vram_total_mb - (int) (s_test_rand (rng) % 3) * 8192 * n->running;
    if (n->vram_free_mb < 0) {
        n->vram_free_mb = 0;
    }
    n->kinds = 1 + (s_test_rand (rng) % 7); /* kinds 0..2, at least one */
    n->rtt_ms = s_test_rand (rng) % 2 ? 1.0f : 40.0f;
    n->reliability = s_test_rand (rng) % 4 ? 1.0f : 0.75f;
    n->idle_since_ms = (int64_t) (s_test_rand (rng) % 3) * 100;
    uint32_t r = s_test_rand (rng) % 20;
    n->status = r < 2 ? GQ_NODE_OFFLINE : r < 3 ? GQ_NODE_DRAINING : GQ_NODE_ONLINE;
    n->backoff_until_ms = s_test_rand (rng) % 10 == 0 ? 1000 + (s_test_rand (rng) % 2) * 2000 : 0;
    uint32_t avail[8], loaded[8];
    size_t na = s_test_rand (rng) % 4, nl = 0;
    for (size_t k = 0; k < na; k++) {
        avail[k] = 1 + s_test_rand (rng) % (uint32_t) n_models;
        if (s_test_rand (rng) % 2) {
            loaded[nl++] = avail[k];
        }
    }
    GQ_CHECK_EQ (gq_matcher_node_set_models (self, i, avail, na, loaded, nl), 0);
    gq_matcher_node_changed (self, i);
}

static void
s_test_random_job (gq_job_t *job, gq_constraints_t *c, uint32_t *rng, int n_models,
                   int n_nodes, int64_t id)
{
    static const int needs[] = {0, 0, 8192, 16384, 24576, 40960, 81920, 102400};
    static const char *patterns[] = {"", "a100|h100", "4090", " | CPU", "nothing"};
    gq_matcher_test_job (job, id, needs[s_test_rand (rng) % 8]);
    job->kind_id = (uint16_t) (s_test_rand (rng) % 3);
    job->model_id = s_test_rand (rng) % 2 ? 0 : 1 + s_test_rand (rng) % (uint32_t) n_models;
    job->constraints = NULL;
    if (s_test_rand (rng) % 3 == 0) {
        memset (c, 0, sizeof *c);
        snprintf (c->gpu_pattern, sizeof c->gpu_pattern, "%s", patterns[s_test_rand (rng) % 5]);
        c->max_price = s_test_rand (rng) % 2 ? -1 : (double) (s_test_rand (rng) % 4);
        c->min_tflops = s_test_rand (rng) % 2 ? 0 : 300;
        job->constraints = c;
    }
    job->n_excluded = (uint8_t) (s_test_rand (rng) % 3);
    for (int k = 0; k < job->n_excluded; k++) {
        job->excluded[k] = (int32_t) (s_test_rand (rng) % (uint32_t) n_nodes);
    }
}

/* Random fleets, random jobs, random updates: pick must always agree with the reference. */
static size_t
s_test_equivalence (uint32_t seed, int fleets, int max_nodes, int rounds)
{
    uint32_t rng = seed;
    size_t checked = 0;
    for (int f = 0; f < fleets; f++) {
        gq_weights_t w;
        gq_weights_default (&w);
        if (f % 5 == 1) {
            memset (&w, 0, sizeof w); /* every score 0: the tie-break alone decides */
        }
        else if (f % 5 == 2) {
            w.fit = (s_test_rand (&rng) % 4) * 0.5;
            w.compute = (s_test_rand (&rng) % 3) * 0.25;
            w.cost = (s_test_rand (&rng) % 3) * 0.25;
            w.warm = (s_test_rand (&rng) % 3) * 0.5;
            w.load = (s_test_rand (&rng) % 2) * 0.1;
            w.latency = (s_test_rand (&rng) % 2) * 0.05;
            w.reliability = (s_test_rand (&rng) % 2) * 0.2;
        }
        gq_matcher_t *self = gq_matcher_new (&w);
        GQ_CHECK_EQ (self != NULL, 1);
        char name[32];
        for (int k = 0; k < 3; k++) {
            snprintf (name, sizeof name, "kind%d", k);
            gq_matcher_kind_id (self, name, true);
        }
        int n_models = 6;
        for (int k = 0; k < n_models; k++) {
            snprintf (name, sizeof name, "model%d", k);
            gq_matcher_model_id (self, name, true);
        }
        int n_nodes = 1 + (int) (s_test_rand (&rng) % (uint32_t) max_nodes);
        for (int k = 0; k < n_nodes; k++) {
            snprintf (name, sizeof name, "n%d", k);
            int32_t i = gq_matcher_node_find_or_add (self, name);
            GQ_CHECK_EQ (i, k);
            s_test_random_node (self, i, &rng, n_models);
        }
        int32_t reserved_node = -1;
        for (int round = 0; round < rounds; round++) {
            int64_t now = (int64_t) (s_test_rand (&rng) % 4) * 1000;
            for (int j = 0; j < 8; j++) {
                gq_job_t job;
                gq_constraints_t c;
                s_test_random_job (&job, &c, &rng, n_models, n_nodes, 1 + j % 3);
                int32_t got = gq_matcher_pick (self, &job, now);
                int32_t want = gq_matcher_pick_exhaustive (self, &job, now);
                if (got != want) {
                    fprintf (stderr,
                             "\nequivalence: seed %u fleet %d round %d: pick %d, reference %d; "
                             "job need=%d kind=%d model=%u\n",
                             seed, f, round, got, want, job.min_vram_mb, job.kind_id,
                             job.model_id);
                    s_test_dump (self, &job, now);
                    abort ();
                }
                checked++;
                /* Place it now and then, as the scheduler would. */
                if (got >= 0 && s_test_rand (&rng) % 3 == 0) {
                    gq_matcher_assign (self, got, &job);
                }
            }
            /* Random changes, each told to the matcher. */
            int changes = 1 + (int) (s_test_rand (&rng) % 6);
            for (int k = 0; k < changes; k++) {
                int32_t i = (int32_t) (s_test_rand (&rng) % (uint32_t) n_nodes);
                gq_node_t *n = gq_matcher_node (self, i);
                gq_job_t done;
                gq_matcher_test_job (&done, 0, (int) (s_test_rand (&rng) % 3) * 8192);
                switch (s_test_rand (&rng) % 9) {
                case 0:
                    s_test_random_node (self, i, &rng, n_models);
                    break;
                case 1:
                    gq_matcher_release (self, i, &done, now + (int64_t) (s_test_rand (&rng) % 3));
                    break;
                case 2:
                    n->rtt_ms = s_test_rand (&rng) % 2 ? 1.0f : 40.0f;
                    n->reliability = s_test_rand (&rng) % 2 ? 1.0f : 0.5f;
                    gq_matcher_node_changed (self, i);
                    break;
                case 3:
                    n->status = (uint8_t) (s_test_rand (&rng) % 4);
                    gq_matcher_node_changed (self, i);
                    break;
                case 4:
                    n->backoff_until_ms = s_test_rand (&rng) % 2 ? 0 : 2500;
                    gq_matcher_node_changed (self, i);
                    break;
                case 5:
                    if (reserved_node >= 0) {
                        gq_matcher_reserve (self, reserved_node, 0);
                    }
                    reserved_node = i;
                    gq_matcher_reserve (self, i, 1 + (int64_t) (s_test_rand (&rng) % 3));
                    break;
                case 6:
                    /* The broker clears a backoff that ended (or a success clears it). */
                    if (n->backoff_until_ms <= now) {
                        n->backoff_until_ms = 0;
                    }
                    gq_matcher_node_changed (self, i);
                    break;
                case 7: {
                    uint32_t loaded = 1 + s_test_rand (&rng) % (uint32_t) n_models;
                    gq_matcher_node_set_models (self, i, n->models_available, n->n_available,
                                                &loaded, 1);
                    break;
                }
                default:
                    /* A node that beats the fleet's normalisation: everything is rebuilt. */
                    n->tflops = (float) (1000 + s_test_rand (&rng) % 100);
                    n->price_per_hour = s_test_rand (&rng) % 2 ? 0.0f : n->price_per_hour;
                    gq_matcher_node_changed (self, i);
                    break;
                }
            }
        }
        gq_matcher_destroy (&self);
    }
    return checked;
}

void
gq_matcher_test (bool verbose)
{
    const int64_t now = 1000000;

    /* Interning. */
    gq_matcher_t *self = gq_matcher_new (NULL);
    GQ_CHECK_EQ (self != NULL, 1);
    GQ_CHECK_EQ (gq_matcher_kind_id (self, "echo", false), -1);
    GQ_CHECK_EQ (gq_matcher_kind_id (self, "echo", true), 0);
    GQ_CHECK_EQ (gq_matcher_kind_id (self, "llm", true), 1);
    GQ_CHECK_EQ (gq_matcher_kind_id (self, "echo", true), 0);
    GQ_CHECK_STR (gq_matcher_kind_name (self, 1), "llm");
    GQ_CHECK_EQ (gq_matcher_model_id (self, "llama-8b", false), -1);
    int64_t llama = gq_matcher_model_id (self, "llama-8b", true);
    GQ_CHECK_EQ (llama, 1);
    GQ_CHECK_EQ (gq_matcher_model_id (self, "mistral-7b", true), 2);
    GQ_CHECK_EQ (gq_matcher_model_id (self, "llama-8b", true), 1);
    GQ_CHECK_STR (gq_matcher_model_name (self, 2), "mistral-7b");
    GQ_CHECK_EQ (gq_matcher_model_name (self, 0) == NULL, 1);
    char kname[16];
    for (int k = 2; k < GQ_MAX_KINDS; k++) {
        snprintf (kname, sizeof kname, "k%d", k);
        GQ_CHECK_EQ (gq_matcher_kind_id (self, kname, true), k);
    }
    GQ_CHECK_EQ (gq_matcher_kind_id (self, "one-too-many", true), -1);
    GQ_CHECK_STR (gq_node_status_name (GQ_NODE_DRAINING), "draining");
    gq_matcher_destroy (&self);
    gq_matcher_destroy (&self);

    /* Right-sizing: a 7B model needing 14 GiB goes to the 24 GiB card, not an 80 GiB one,
       although the H100 is six times faster. */
    self = gq_matcher_new (NULL);
    int32_t h100 =
        gq_matcher_test_node (self, "h100", "NVIDIA H100 80GB HBM3", 81920, 989, 3.0f, 1);
    int32_t a100 =
        gq_matcher_test_node (self, "a100", "NVIDIA A100-SXM4-80GB", 81920, 312, 1.8f, 1);
    int32_t rtx =
        gq_matcher_test_node (self, "rtx", "NVIDIA GeForce RTX 4090", 24576, 165, 0.45f, 1);
    gq_job_t job;
    gq_matcher_test_job (&job, 1, 14336);
    S_CHECK_PICK (self, &job, now, rtx, "right-sized 24G card over 80G cards");
    gq_matcher_test_job (&job, 1, 61440); /* 60 GiB: equal fit on both 80G cards, speed decides */
    S_CHECK_PICK (self, &job, now, h100, "H100 over A100 at equal fit");
    gq_node_t *n = gq_matcher_node (self, h100);
    n->status = GQ_NODE_OFFLINE;
    gq_matcher_node_changed (self, h100);
    S_CHECK_PICK (self, &job, now, a100, "next best when the H100 leaves");
    /* A job asking no VRAM goes to the smallest card: a CPU box before any GPU. */
    int32_t cpu = gq_matcher_test_node (self, "cpu", "cpu", 0, 1, 0.05f, 8);
    gq_matcher_test_job (&job, 1, 0);
    S_CHECK_PICK (self, &job, now, cpu, "no VRAM asked: the CPU box");
    n = gq_matcher_node (self, cpu);
    n->status = GQ_NODE_OFFLINE;
    gq_matcher_node_changed (self, cpu);
    S_CHECK_PICK (self, &job, now, rtx, "no VRAM asked, no CPU box: the smallest card");
    gq_matcher_destroy (&self);

    /* Warm beats cold, cheaper beats dearer, at equal specs (the winner is the higher index,
       so the tie-break cannot explain it). */
    self = gq_matcher_new (NULL);
    int32_t cold = gq_matcher_test_node (self, "cold", "NVIDIA L40S", 46068, 362, 1.0f, 1);
    int32_t warm = gq_matcher_test_node (self, "warm", "NVIDIA L40S", 46068, 362, 1.0f, 1);
    int32_t mistral = (int32_t) gq_matcher_model_id (self, "mistral-7b", true);
    uint32_t ids[1] = {(uint32_t) mistral};
    gq_matcher_node_set_models (self, cold, ids, 1, NULL, 0);
    gq_matcher_node_set_models (self, warm, ids, 1, ids, 1);
    gq_matcher_test_job (&job, 1, 16384);
    job.model_id = (uint32_t) mistral;
    S_CHECK_PICK (self, &job, now, warm, "warm beats cold");
    job.model_id = 0;
    S_CHECK_PICK (self, &job, now, cold, "no model: equal, tie to the lower index");
    int32_t cheap = gq_matcher_test_node (self, "cheap", "NVIDIA L40S", 46068, 362, 0.8f, 1);
    S_CHECK_PICK (self, &job, now, cheap, "cheaper wins");
    job.model_id = (uint32_t) mistral;
    S_CHECK_PICK (self, &job, now, warm, "the cheap one lacks the model");
    gq_matcher_destroy (&self);

    /* Never chosen: offline, full, too small, draining, backing off; each would win. */
    self = gq_matcher_new (NULL);
    int32_t ok = gq_matcher_test_node (self, "ok", "NVIDIA A100-SXM4-80GB", 81920, 312, 2.0f, 1);
    const char *bad_names[] = {"offline", "full", "small", "draining", "backoff"};
    int32_t bad[5];
    for (int k = 0; k < 5; k++) {
        bad[k] = gq_matcher_test_node (self, bad_names[k], "NVIDIA GeForce RTX 4090", 24576, 165,
                                       0.3f, 2);
    }
    gq_matcher_node (self, bad[0])->status = GQ_NODE_OFFLINE;
    gq_matcher_node (self, bad[1])->running = 2;
    gq_matcher_node (self, bad[2])->vram_free_mb = 8192;
    gq_matcher_node (self, bad[3])->status = GQ_NODE_DRAINING;
    gq_matcher_node (self, bad[4])->backoff_until_ms = now + 5000;
    for (int k = 0; k < 5; k++) {
        gq_matcher_node_changed (self, bad[k]);
    }
    GQ_CHECK_EQ (gq_matcher_node (self, bad[1])->status, GQ_NODE_BUSY);
    gq_matcher_test_job (&job, 1, 14336);
    S_CHECK_PICK (self, &job, now, ok, "only the eligible node");
    S_CHECK_PICK (self, &job, now + 4999, ok, "still backing off");
    S_CHECK_PICK (self, &job, now + 5000, bad[4], "backoff over: the 4090 again");
    GQ_CHECK_EQ (gq_matcher_available_count (self), 3);
    gq_matcher_node (self, bad[4])->backoff_until_ms = 0;
    gq_matcher_node_changed (self, bad[4]);
    S_CHECK_PICK (self, &job, now, bad[4], "backoff cleared");
    gq_matcher_assign (self, bad[4], &job);
    gq_matcher_assign (self, bad[4], &job);
    GQ_CHECK_EQ (gq_matcher_node (self, bad[4])->running, 2);
    GQ_CHECK_EQ (gq_matcher_node (self, bad[4])->vram_free_mb, 24576 - 2 * 14336);
    GQ_CHECK_EQ (gq_matcher_node (self, bad[4])->status, GQ_NODE_BUSY);
    S_CHECK_PICK (self, &job, now, ok, "booked node not chosen");
    gq_matcher_release (self, bad[4], &job, now + 10);
    GQ_CHECK_EQ (gq_matcher_node (self, bad[4])->status, GQ_NODE_ONLINE);
    GQ_CHECK_EQ (gq_matcher_node (self, bad[4])->idle_since_ms, 0);
    gq_matcher_release (self, bad[4], &job, now + 20);
    GQ_CHECK_EQ (gq_matcher_node (self, bad[4])->idle_since_ms, now + 20);
    GQ_CHECK_EQ (gq_matcher_node (self, bad[4])->vram_free_mb, 24576);
    gq_matcher_node (self, ok)->status = GQ_NODE_DRAINING;
    gq_matcher_node_changed (self, ok);
    gq_matcher_node (self, bad[4])->status = GQ_NODE_OFFLINE;
    gq_matcher_node_changed (self, bad[4]);
    S_CHECK_PICK (self, &job, now, -1, "nothing eligible");
    gq_matcher_destroy (&self);

    /* Constraints, exclusion, ties. */
    self = gq_matcher_new (NULL);
    int32_t r4090 = gq_matcher_test_node (self, "r4090", "RTX 4090", 24576, 165, 2.5f, 1);
    int32_t ra100 =
        gq_matcher_test_node (self, "ra100", "NVIDIA A100-SXM4-80GB", 81920, 312, 1.0f, 1);
    int32_t rh100 =
        gq_matcher_test_node (self, "rh100", "NVIDIA H100 80GB HBM3", 81920, 989, 4.0f, 1);
    gq_constraints_t c;
    memset (&c, 0, sizeof c);
    c.max_price = -1;
    gq_matcher_test_job (&job, 1, 16384);
    job.constraints = &c;
    S_CHECK_PICK (self, &job, now, r4090, "no constraint: the smallest card");
    snprintf (c.gpu_pattern, sizeof c.gpu_pattern, "A100|H100");
    S_CHECK_PICK (self, &job, now, ra100, "pattern A100|H100");
    snprintf (c.gpu_pattern, sizeof c.gpu_pattern, " h100 ");
    S_CHECK_PICK (self, &job, now, rh100, "pattern is case-insensitive, blanks ignored");
    snprintf (c.gpu_pattern, sizeof c.gpu_pattern, "A100|H100");
    gq_score_t score;
    char reason[160];
    GQ_CHECK_EQ (gq_matcher_score (self, r4090, &job, now, &score, reason, sizeof reason),
                 GQ_FILTER_GPU_PATTERN);
    GQ_CHECK_STR (reason, "gpu_model 'RTX 4090' does not match 'A100|H100'");
    c.gpu_pattern[0] = 0;
    c.max_price = 1.0;
    S_CHECK_PICK (self, &job, now, ra100, "max_price 1.00");
    GQ_CHECK_EQ (gq_matcher_score (self, r4090, &job, now, &score, reason, sizeof reason),
                 GQ_FILTER_PRICE);
    GQ_CHECK_STR (reason, "price 2.50/h > max 1.00/h");
    c.max_price = -1;
    c.min_tflops = 500;
    S_CHECK_PICK (self, &job, now, rh100, "min_tflops 500");
    c.min_tflops = 2000;
    S_CHECK_PICK (self, &job, now, -1, "min_tflops nobody has");
    c.min_tflops = 0;
    job.excluded[0] = r4090;
    job.n_excluded = 1;
    S_CHECK_PICK (self, &job, now, ra100, "excluded node skipped");
    GQ_CHECK_EQ (gq_matcher_score (self, r4090, &job, now, NULL, NULL, 0), GQ_FILTER_EXCLUDED);
    job.n_excluded = 0;
    job.constraints = NULL;
    job.min_vram_mb = 102400;
    S_CHECK_PICK (self, &job, now, -1, "too big for all");
    job.min_vram_mb = 1024;
    job.kind_id = 5;
    S_CHECK_PICK (self, &job, now, -1, "kind nobody runs");
    gq_matcher_destroy (&self);

    /* Ties go to the node idle longest, then the lowest index; a running node is not idle. */
    self = gq_matcher_new (NULL);
    int32_t t[4];
    for (int k = 0; k < 4; k++) {
        snprintf (kname, sizeof kname, "t%d", k);
        t[k] = gq_matcher_test_node (self, kname, "NVIDIA L4", 23034, 121, 0.7f, 1);
    }
    gq_matcher_node (self, t[0])->idle_since_ms = 500;
    gq_matcher_node (self, t[1])->idle_since_ms = 300;
    gq_matcher_node (self, t[2])->idle_since_ms = 100;
    gq_matcher_node (self, t[3])->idle_since_ms = 100;
    for (int k = 0; k < 4; k++) {
        gq_matcher_node_changed (self, t[k]);
    }
    gq_matcher_test_job (&job, 1, 4096);
    S_CHECK_PICK (self, &job, now, t[2], "idle longest, then lowest index");
    gq_matcher_node (self, t[2])->idle_since_ms = 400;
    gq_matcher_node_changed (self, t[2]);
    S_CHECK_PICK (self, &job, now, t[3], "idle longest after an update");
    gq_matcher_destroy (&self);

    /* Random fleets against the reference: weights default, all zero (ties everywhere) and
       random; updates of every kind between rounds; then one large fleet. */
    size_t checked = s_test_equivalence (20240601u, 2000, 60, 12);
    checked += s_test_equivalence (77u, 20, 600, 10);
    checked += s_test_equivalence (4242u, 2, 5000, 30);
    if (verbose) {
        printf ("(matcher: rules, %zu random picks equal to the reference) ", checked);
    }
}
