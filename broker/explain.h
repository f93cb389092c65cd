/*  explain.h — the matcher's verdicts in words, for people: why each node can or cannot run a
    job, and what would make a job that fits nowhere run. Reads the matcher, changes nothing;
    O(nodes) a call. The names keep the gq_matcher_ prefix: they are questions to the matcher. */
#ifndef GQ_EXPLAIN_H_INCLUDED
#define GQ_EXPLAIN_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "job.h"
#include "matcher.h"

/* One node's verdict in an explanation. */
typedef struct {
    int32_t node;        /* node index */
    gq_filter_t verdict; /* GQ_FILTER_OK when it passed every filter */
    char reason[160];    /* "vram_free 12288 MiB < 20480 MiB needed"; "" when it passed */
    gq_score_t score;    /* valid when verdict is GQ_FILTER_OK */
} gq_explain_row_t;

/* Fills up to max rows, one per node (all nodes, in index order), with verdicts and scores.
   Returns the number of nodes (which may exceed max). */
size_t gq_matcher_explain (gq_matcher_t *self, const gq_job_t *job, int64_t now_ms,
                           gq_explain_row_t *rows, size_t max);
/* When no node can run job: one sentence on what would make it run ("needs a node with >= 100
   GiB of VRAM; the largest online has 80 GiB", "no online node supports kind 'foo'", "waits: 3
   node(s) fit but none is free now (...)"). O(nodes). Returns buf. */
char *gq_matcher_hint (gq_matcher_t *self, const gq_job_t *job, int64_t now_ms, char *buf,
                       size_t size);

void gq_explain_test (bool verbose);

#endif
