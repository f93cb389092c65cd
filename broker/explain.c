/*  explain.c — the matcher's verdicts in words: one row per node for a job, and for a job that
    fits nowhere the one sentence that says what would make it run.

    Both read the matcher through matcher.h and the predicates of matcher_internal.h, so a hint
    counts nodes by exactly the rules a pick applies; neither changes anything. O(nodes): for
    the broker's explain request, never on the dispatch path. */
#include "explain.h"
#include "gq_check.h"

#include <assert.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "matcher_internal.h"

/* "24 GiB", "79.6 GiB", "512 MiB". */
static const char *
s_fmt_mb (int64_t mb, char *buf, size_t size)
{
    if (mb >= 1024 && mb % 1024 == 0) {
        snprintf (buf, size, "%lld GiB", (long long) (mb / 1024));
    }
    else if (mb >= 1024) {
        snprintf (buf, size, "%.1f GiB", mb / 1024.0);
    }
    else {
        snprintf (buf, size, "%lld MiB", (long long) mb);
    }
    return buf;
}

/* ---- Explain, hint ------------------------------------------------------------------------ */

size_t
gq_matcher_explain (gq_matcher_t *self, const gq_job_t *job, int64_t now_ms,
                    gq_explain_row_t *rows, size_t max)
{
    assert (self);
    assert (job);
    size_t n_nodes = gq_matcher_nodes (self);
    for (size_t k = 0; k < n_nodes && k < max; k++) {
        gq_explain_row_t *row = &rows[k];
        row->node = (int32_t) k;
        row->verdict = gq_matcher_score (self, (int32_t) k, job, now_ms, &row->score,
                                         row->reason, sizeof row->reason);
    }
    return n_nodes;
}

char *
gq_matcher_hint (gq_matcher_t *self, const gq_job_t *job, int64_t now_ms, char *buf, size_t size)
{
    assert (self);
    assert (job);
    assert (buf && size);
    char t1[64], t2[64];
    const gq_constraints_t *c = job->constraints;
    int32_t need = s_need_mb (job);

    /* The requirements one after another, each among the connected nodes meeting the ones
       before it: the first that nobody meets is the answer. */
    size_t connected = 0, kind_ok = 0, model_ok = 0, vram_ok = 0, pattern_ok = 0, price_ok = 0,
           tflops_ok = 0, all_ok = 0;
    int64_t largest = -1;
    double cheapest = INFINITY, fastest = -1;
    size_t n_nodes = gq_matcher_nodes (self);
    for (size_t k = 0; k < n_nodes; k++) {
        const gq_node_t *n = gq_matcher_node (self, (int32_t) k);
        if (!s_connected (n)) {
            continue;
        }
        connected++;
        if (!s_has_kind (n->kinds, job->kind_id)) {
            continue;
        }
        kind_ok++;
        if (job->model_id && !s_has_model (n, job->model_id)) {
            continue;
        }
        model_ok++;
        if (n->vram_total_mb > largest) {
            largest = n->vram_total_mb;
        }
        if (n->vram_total_mb < need) {
            continue;
        }
        vram_ok++;
        if (c && !gq_matcher_pattern_match (c->gpu_pattern, n->gpu_model)) {
            continue;
        }
        pattern_ok++;
        if (s_pos (n->price_per_hour) < cheapest) {
            cheapest = s_pos (n->price_per_hour);
        }
        if (c && c->max_price >= 0 && s_pos (n->price_per_hour) > c->max_price) {
            continue;
        }
        price_ok++;
        if (s_pos (n->tflops) > fastest) {
            fastest = s_pos (n->tflops);
        }
        if (c && c->min_tflops > 0 && s_pos (n->tflops) < c->min_tflops) {
            continue;
        }
        tflops_ok++;
        if (s_excluded (job, (int32_t) k)) {
            continue;
        }
        all_ok++;
    }
    if (connected == 0) {
        snprintf (buf, size, "no node is online");
    }
    else if (kind_ok == 0) {
        snprintf (buf, size, "no online node supports kind '%s'",
                  s_kind_text (self, job->kind_id, t1, sizeof t1));
    }
    else if (model_ok == 0) {
        snprintf (buf, size, "no online node that runs kind '%s' has model '%s'",
                  s_kind_text (self, job->kind_id, t1, sizeof t1),
                  s_model_text (self, job->model_id, t2, sizeof t2));
    }
    else if (vram_ok == 0) {
        char need_text[32], largest_text[32];
        snprintf (buf, size, "needs a node with >= %s of VRAM; the largest online %shas %s",
                  s_fmt_mb (need, need_text, sizeof need_text),
                  job->model_id ? "with the model " : "",
                  s_fmt_mb (largest, largest_text, sizeof largest_text));
    }
    else if (pattern_ok == 0) {
        snprintf (buf, size, "no online node with enough VRAM has a GPU matching '%s'",
                  c->gpu_pattern);
    }
    else if (price_ok == 0) {
        snprintf (buf, size, "needs a price <= %.2f/h; the cheapest node that fits costs %.2f/h",
                  c->max_price, cheapest);
    }
    else if (tflops_ok == 0) {
        snprintf (buf, size, "needs >= %.1f TFLOPS; the fastest node that fits has %.1f",
                  c->min_tflops, fastest);
    }
    else if (all_ok == 0) {
        snprintf (buf, size, "every online node that fits (%zu) has already failed this job",
                  tflops_ok);
    }
    else {
        /* It fits somewhere, but not now: say why, counting the nodes that fit. */
        size_t draining = 0, busy = 0, backoff = 0, reserved = 0, short_vram = 0, free_now = 0;
        int64_t most_free = -1;
        for (size_t k = 0; k < n_nodes; k++) {
            const gq_node_t *n = gq_matcher_node (self, (int32_t) k);
            if (!s_connected (n) || !gq_matcher_static_ok (self, (int32_t) k, job)) {
                continue;
            }
            gq_filter_t v = gq_matcher_score (self, (int32_t) k, job, now_ms, NULL, NULL, 0);
            if (v == GQ_FILTER_DRAINING) {
                draining++;
            }
            else if (v == GQ_FILTER_NO_SLOT) {
                busy++;
            }
            else if (v == GQ_FILTER_BACKOFF) {
                backoff++;
            }
            else if (v == GQ_FILTER_RESERVED) {
                reserved++;
            }
            else if (v == GQ_FILTER_VRAM) {
                short_vram++;
                if (n->vram_free_mb > most_free) {
                    most_free = n->vram_free_mb;
                }
            }
            else if (v == GQ_FILTER_OK) {
                free_now++;
            }
        }
        if (free_now) {
            snprintf (buf, size, "%zu node(s) can run it now", free_now);
        }
        else {
            char need_text[32], free_text[32];
            int len = snprintf (buf, size,
                                "waits: %zu node(s) fit but none is free now (%zu busy, %zu "
                                "draining, %zu backing off, %zu reserved, %zu short of VRAM",
                                all_ok, busy, draining, backoff, reserved, short_vram);
            if (short_vram && len > 0 && (size_t) len < size) {
                snprintf (buf + len, size - (size_t) len, ": most free %s of %s needed)",
                          s_fmt_mb (most_free, free_text, sizeof free_text),
                          s_fmt_mb (need, need_text, sizeof need_text));
            }
            else if (len > 0 && (size_t) len < size) {
                snprintf (buf + len, size - (size_t) len, ")");
            }
        }
    }
    return buf;
}

/* ---- Selftest ---------------------------------------------------------------------------- */

void
gq_explain_test (bool verbose)
{
    const int64_t now = 1000000;

    /* Nothing eligible: each node out for its own reason. Explain gives the reasons in words
       with numbers; the hint counts the nodes that fit, by why they are not free now. */
    gq_matcher_t *self = gq_matcher_new (NULL);
    const char *rtx = "NVIDIA GeForce RTX 4090";
    int32_t big = gq_matcher_test_node (self, "big", "NVIDIA A100-SXM4-80GB", 81920, 312, 2.0f, 1);
    int32_t offline = gq_matcher_test_node (self, "offline", rtx, 24576, 165, 0.3f, 2);
    int32_t full = gq_matcher_test_node (self, "full", rtx, 24576, 165, 0.3f, 2);
    int32_t small = gq_matcher_test_node (self, "small", rtx, 24576, 165, 0.3f, 2);
    int32_t draining = gq_matcher_test_node (self, "draining", rtx, 24576, 165, 0.3f, 2);
    int32_t gone = gq_matcher_test_node (self, "gone", rtx, 24576, 165, 0.3f, 2);
    gq_matcher_node (self, big)->status = GQ_NODE_DRAINING;
    gq_matcher_node (self, offline)->status = GQ_NODE_OFFLINE;
    gq_matcher_node (self, full)->running = 2;
    gq_matcher_node (self, small)->vram_free_mb = 8192;
    gq_matcher_node (self, draining)->status = GQ_NODE_DRAINING;
    gq_matcher_node (self, gone)->status = GQ_NODE_OFFLINE;
    for (int32_t k = big; k <= gone; k++) {
        gq_matcher_node_changed (self, k);
    }
    gq_job_t job;
    gq_matcher_test_job (&job, 1, 14336);
    GQ_CHECK_EQ (gq_matcher_pick (self, &job, now), -1);
    gq_explain_row_t rows[8];
    GQ_CHECK_EQ (gq_matcher_explain (self, &job, now, rows, 8), 6);
    GQ_CHECK_EQ (rows[big].verdict, GQ_FILTER_DRAINING);
    GQ_CHECK_EQ (rows[offline].verdict, GQ_FILTER_OFFLINE);
    GQ_CHECK_EQ (rows[full].verdict, GQ_FILTER_NO_SLOT);
    GQ_CHECK_STR (rows[full].reason, "no free slot (2 of 2 running)");
    GQ_CHECK_EQ (rows[small].verdict, GQ_FILTER_VRAM);
    GQ_CHECK_STR (rows[small].reason, "vram_free 8192 MiB < 14336 MiB needed");
    GQ_CHECK_EQ (gq_matcher_explain (self, &job, now, rows, 2), 6);
    char hint[256];
    gq_matcher_hint (self, &job, now, hint, sizeof hint);
    GQ_CHECK_STR (hint, "waits: 4 node(s) fit but none is free now (1 busy, 2 draining, 0 backing "
                        "off, 0 reserved, 1 short of VRAM: most free 8 GiB of 14 GiB needed)");
    gq_matcher_destroy (&self);

    /* A job that fits nowhere at all: the first requirement nobody meets. */
    self = gq_matcher_new (NULL);
    gq_matcher_test_node (self, "r4090", "RTX 4090", 24576, 165, 2.5f, 1);
    gq_matcher_test_node (self, "ra100", "NVIDIA A100-SXM4-80GB", 81920, 312, 1.0f, 1);
    gq_matcher_test_node (self, "rh100", "NVIDIA H100 80GB HBM3", 81920, 989, 4.0f, 1);
    gq_constraints_t c;
    memset (&c, 0, sizeof c);
    c.max_price = -1;
    c.min_tflops = 2000;
    gq_matcher_test_job (&job, 1, 16384);
    job.constraints = &c;
    gq_matcher_hint (self, &job, now, hint, sizeof hint);
    GQ_CHECK_STR (hint, "needs >= 2000.0 TFLOPS; the fastest node that fits has 989.0");
    job.constraints = NULL;
    job.min_vram_mb = 102400;
    gq_matcher_hint (self, &job, now, hint, sizeof hint);
    GQ_CHECK_STR (hint, "needs a node with >= 100 GiB of VRAM; the largest online has 80 GiB");
    job.min_vram_mb = 1024;
    job.kind_id = 5;
    gq_matcher_kind_id (self, "echo", true);
    char kname[16];
    for (int k = 1; k < 6; k++) {
        snprintf (kname, sizeof kname, "kind%d", k);
        gq_matcher_kind_id (self, kname, true);
    }
    gq_matcher_hint (self, &job, now, hint, sizeof hint);
    GQ_CHECK_STR (hint, "no online node supports kind 'kind5'");
    job.kind_id = 0;
    job.model_id = (uint32_t) gq_matcher_model_id (self, "llama-70b", true);
    gq_matcher_hint (self, &job, now, hint, sizeof hint);
    GQ_CHECK_STR (hint, "no online node that runs kind 'echo' has model 'llama-70b'");
    gq_matcher_destroy (&self);
    if (verbose) {
        printf ("(explain: rows, reasons, hints) ");
    }
}
