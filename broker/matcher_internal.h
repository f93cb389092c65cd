/*  matcher_internal.h — what matcher.c shares with explain.c and no one else: the predicates
    the filters are made of, so that a hint counts nodes by exactly the rules a pick applies.
    Include it from broker/matcher.c and broker/explain.c only; everything else goes through
    matcher.h.

    The small predicates are static inline: matcher.c calls them for every node it scores or
    every entry it searches, and they must inline there as they did before the split. Node
    fields come from the wire, so each one reads them defensively. */
#ifndef GQ_MATCHER_INTERNAL_H_INCLUDED
#define GQ_MATCHER_INTERNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "matcher.h"

/* x when positive, else 0 (NaN included): node fields come from the wire. */
static inline double
s_pos (double x)
{
    return x > 0 ? x : 0;
}

/* True when the sorted array has id. */
static inline bool
s_has_id (const uint32_t *ids, size_t n, uint32_t id)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (ids[mid] < id) {
            lo = mid + 1;
        }
        else if (ids[mid] > id) {
            hi = mid;
        }
        else {
            return true;
        }
    }
    return false;
}

static inline bool
s_excluded (const gq_job_t *job, int32_t node)
{
    for (int k = 0; k < job->n_excluded && k < GQ_JOB_MAX_EXCLUDED; k++) {
        if (job->excluded[k] == node) {
            return true;
        }
    }
    return false;
}

static inline int32_t
s_need_mb (const gq_job_t *job)
{
    return job->min_vram_mb > 0 ? job->min_vram_mb : 0;
}

static inline bool
s_has_model (const gq_node_t *n, uint32_t model)
{
    return s_has_id (n->models_available, n->n_available, model) ||
           s_has_id (n->models_loaded, n->n_loaded, model);
}

static inline bool
s_has_kind (uint64_t kinds, int kind_id)
{
    return kind_id >= 0 && kind_id < GQ_MAX_KINDS && ((kinds >> kind_id) & 1);
}

/* Online, busy or draining: not offline (nor an unknown status, taken as offline). */
static inline bool
s_connected (const gq_node_t *n)
{
    return n->status != GQ_NODE_OFFLINE && n->status <= GQ_NODE_OFFLINE;
}

/* name, or "#id" in buf when the id has no name. */
static inline const char *
s_name_or_id (const char *name, long long id, char *buf, size_t size)
{
    if (name) {
        return name;
    }
    snprintf (buf, size, "#%lld", id);
    return buf;
}

/* A kind's name, or "#id" in buf when the id is unknown. */
static inline const char *
s_kind_text (gq_matcher_t *self, int id, char *buf, size_t size)
{
    return s_name_or_id (gq_matcher_kind_name (self, id), id, buf, size);
}

/* A model's name, or "#id" in buf when the id is unknown. */
static inline const char *
s_model_text (gq_matcher_t *self, uint32_t id, char *buf, size_t size)
{
    return s_name_or_id (gq_matcher_model_name (self, id), id, buf, size);
}

/* gpu_pattern: '|'-separated alternatives, each a case-insensitive substring of gpu_model;
   blanks around an alternative are ignored, and so are empty ones. A pattern with no
   alternative at all matches every model. */
bool gq_matcher_pattern_match (const char *pattern, const char *gpu_model);
/* Static requirements of job met by node (all but status, slot, backoff, free VRAM and
   reservation): the node could run it once it is free. node must be valid. */
bool gq_matcher_static_ok (gq_matcher_t *self, int32_t node, const gq_job_t *job);

/* Selftest support (matcher.c's selftest section), for the selftests of the matcher's files. */

/* Adds an online node with the given hardware, idle, one kind (bit 0), no models; aborts when
   it cannot. Returns its index. */
int32_t gq_matcher_test_node (gq_matcher_t *self, const char *name, const char *gpu, int vram_mb,
                              float tflops, float price, int slots);
/* Fills job: id, min_vram_mb, priority 5, three attempts, no node, kind 0, no model. */
void gq_matcher_test_job (gq_job_t *job, int64_t id, int vram_mb);

#endif
