/*  gridq-bench-match.c — how long one placement decision takes, at fleet sizes 100..100k.

    Builds a synthetic fleet that looks like a real one (RTX 3090/4090 in basements, L40S, A100
    40/80 GB and H100 rented at varied prices, a few CPU boxes; models available and loaded;
    some nodes busy, offline, draining or backing off), queues M jobs in a gq_queue, then times
    gq_matcher_pick one call at a time for J jobs taken in queue order:

      quiet   nothing changes between decisions;
      churn   between two decisions one random node changes (rtt, a job starting or ending,
              reliability, status, loaded models, backoff) and gq_matcher_node_changed (or
              assign / release / set_models) runs, as in the broker; these updates are timed
              too;
      peer    the exhaustive reference scan (gq_matcher_pick_exhaustive) on a sample of the
              same jobs, which must give the same answers.

    Figures are medians and 99th percentiles in microseconds, clock_gettime(CLOCK_MONOTONIC)
    around each call (its own cost, ~20-40 ns, is included and reported). */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gq_common.h"
#include "matcher.h"
#include "queue.h"

#define S_NOW_MS 1767225600000LL /* a fixed "now": runs are reproducible */

/* One kind of hardware in the synthetic fleet. */
typedef struct {
    const char *gpu_model; /* as nvidia-smi names it */
    int vram_mb;           /* vram_total_mb */
    double tflops;         /* nominal dense fp16 */
    double price_lo;       /* $/h, cheapest offer */
    double price_hi;       /* $/h, dearest offer */
    int max_slots;         /* slots drawn from 1..max_slots */
    double share;          /* fraction of the fleet */
} s_hw_t;

static const s_hw_t s_hw[] = {
    {"NVIDIA GeForce RTX 3090", 24576, 71, 0.18, 0.35, 1, 0.15},
    {"NVIDIA GeForce RTX 4090", 24564, 165, 0.30, 0.70, 1, 0.25},
    {"NVIDIA L40S", 46068, 362, 0.80, 1.20, 2, 0.15},
    {"NVIDIA A100-SXM4-40GB", 40960, 312, 1.00, 1.60, 2, 0.12},
    {"NVIDIA A100-SXM4-80GB", 81920, 312, 1.40, 2.20, 4, 0.13},
    {"NVIDIA H100 80GB HBM3", 81559, 989, 2.00, 4.00, 4, 0.15},
    {"cpu", 0, 2, 0.02, 0.08, 8, 0.05},
};
#define S_HW (sizeof s_hw / sizeof s_hw[0])

/* Models of the synthetic catalogue and the VRAM a job with each needs (MiB). */
static const struct {
    const char *name; /* model name */
    int need_mb;      /* min_vram_mb of its jobs */
} s_models[] = {
    {"llama-3.1-8b", 16384},   {"mistral-7b", 14336},    {"qwen2.5-7b", 15360},
    {"phi-3-mini", 8192},      {"gemma-2-9b", 20480},    {"llama-3.2-3b", 7168},
    {"bge-large", 2048},       {"whisper-large", 10240}, {"sdxl", 12288},
    {"qwen2.5-14b", 30720},    {"mixtral-8x7b", 94208},  {"llama-3.1-70b-awq", 40960},
    {"llama-3.1-70b", 143360}, {"qwen2.5-32b", 66560},   {"e5-small", 1024},
    {"flux-dev", 24576},       {"yolo-v8", 2048},        {"t5-xl", 6144},
    {"codellama-13b", 27648},  {"deepseek-coder-6.7b", 14336},
};
#define S_MODELS (sizeof s_models / sizeof s_models[0])

static const char *s_kinds[] = {"echo", "sleep", "matmul", "mlp", "llm", "embed"};

/* xorshift64*: fast, seeded, good enough for a workload. */
static uint64_t s_rng;

static uint64_t
s_rand (void)
{
    s_rng ^= s_rng >> 12;
    s_rng ^= s_rng << 25;
    s_rng ^= s_rng >> 27;
    return s_rng * 2685821657736338717ULL;
}

static double
s_uniform (double lo, double hi)
{
    return lo + (hi - lo) * (double) (s_rand () >> 11) / 9007199254740992.0;
}

static int
s_below (int n)
{
    return (int) (s_rand () % (uint64_t) n);
}

/* A model index drawn by popularity (Zipf, s = 1). */
static int
s_popular_model (void)
{
    static double cdf[S_MODELS];
    if (cdf[S_MODELS - 1] == 0) {
        double sum = 0;
        for (size_t k = 0; k < S_MODELS; k++) {
            sum += 1.0 / (double) (k + 1);
            cdf[k] = sum;
        }
        for (size_t k = 0; k < S_MODELS; k++) {
            cdf[k] /= sum;
        }
    }
    double u = s_uniform (0, 1);
    for (size_t k = 0; k < S_MODELS; k++) {
        if (u <= cdf[k]) {
            return (int) k;
        }
    }
    return (int) S_MODELS - 1;
}

static int64_t
s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int
s_cmp_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y ? -1 : x > y;
}

/* Sorts v and returns its q-quantile (0..1). */
static double
s_quantile (double *v, size_t n, double q)
{
    if (n == 0) {
        return 0;
    }
    qsort (v, n, sizeof (double), s_cmp_double);
    size_t k = (size_t) (q * (double) (n - 1) + 0.5);
    return v[k < n ? k : n - 1];
}

/* The model ids, kind ids of the run. */
static uint32_t s_model_id[S_MODELS];
static int s_kind_id[sizeof s_kinds / sizeof s_kinds[0]];

/* Fills node i with hardware of type t and a plausible state. */
static void
s_make_node (gq_matcher_t *matcher, int32_t i)
{
    double u = s_uniform (0, 1), acc = 0;
    size_t t = 0;
    for (t = 0; t < S_HW - 1; t++) {
        acc += s_hw[t].share;
        if (u < acc) {
            break;
        }
    }
    const s_hw_t *hw = &s_hw[t];
    gq_node_t *n = gq_matcher_node (matcher, i);
    snprintf (n->gpu_model, sizeof n->gpu_model, "%s", hw->gpu_model);
    n->vram_total_mb = hw->vram_mb;
    n->tflops = (float) (round (hw->tflops * s_uniform (0.97, 1.03) * 10) / 10); /* measured */
    n->price_per_hour = (float) (round (s_uniform (hw->price_lo, hw->price_hi) * 100) / 100);
    n->slots = 1 + s_below (hw->max_slots);
    n->kinds = 0;
    for (int k = 0; k < 4; k++) {
        n->kinds |= 1ULL << s_kind_id[k];
    }
    if (hw->vram_mb > 0 && s_below (10) < 8) {
        n->kinds |= 1ULL << s_kind_id[4];
    }
    if (hw->vram_mb > 0 && s_below (2) == 0) {
        n->kinds |= 1ULL << s_kind_id[5];
    }
    n->rtt_ms = s_below (10) < 6 ? (float) s_uniform (0.2, 2) : (float) s_uniform (15, 120);
    n->reliability = s_below (10) < 9 ? (float) s_uniform (0.95, 1) : (float) s_uniform (0.5, 0.95);
    n->idle_since_ms = S_NOW_MS - (int64_t) s_below (3600000);
    n->backoff_until_ms = s_below (100) == 0 ? S_NOW_MS + 30000 : 0;
    int r = s_below (100);
    n->status = r < 5 ? GQ_NODE_OFFLINE : r < 7 ? GQ_NODE_DRAINING : GQ_NODE_ONLINE;
    n->running = s_below (2) ? 0 : s_below (n->slots + 1);
    n->vram_free_mb = n->vram_total_mb;
    for (int k = 0; k < n->running && n->vram_free_mb > 0; k++) {
        n->vram_free_mb -= s_below (n->vram_free_mb / (n->slots - k) + 1);
    }

    /* Models that fit the card: a few, by popularity; one or two of them loaded. */
    uint32_t avail[8], loaded[2];
    size_t na = 0, nl = 0;
    int want = hw->vram_mb > 0 ? 2 + s_below (7) : 0;
    for (int k = 0; k < want * 3 && (int) na < want; k++) {
        int m = s_popular_model ();
        if (s_models[m].need_mb <= hw->vram_mb) {
            avail[na++] = s_model_id[m];
        }
    }
    for (size_t k = 0; k < na && nl < 2; k++) {
        if (s_below (3) == 0) {
            loaded[nl++] = avail[k];
        }
    }
    gq_matcher_node_set_models (matcher, i, avail, na, loaded, nl);
    gq_matcher_node_changed (matcher, i);
}

/* Fills a job from the synthetic stream. */
static void
s_make_job (gq_job_t *job, int64_t id, int64_t submitted_ms, const gq_constraints_t *constraints,
            size_t n_constraints, int n_nodes)
{
    static char payload[] = "{}";
    memset (job, 0, sizeof *job);
    job->id = id;
    job->payload = payload;
    job->payload_len = 2;
    job->submitted_ms = submitted_ms;
    job->priority = (uint8_t) (s_below (4) ? 5 : s_below (10));
    job->node = -1;
    job->max_attempts = 3;
    if (s_below (10) < 6) {
        int m = s_popular_model ();
        job->model_id = s_model_id[m];
        job->min_vram_mb = s_models[m].need_mb;
        job->kind_id = (uint16_t) s_kind_id[s_models[m].need_mb <= 2048 ? 5 : 4];
    }
    else {
        static const int needs[] = {0, 0, 0, 1024, 4096, 8192, 20480, 40960, 61440, 81920};
        job->min_vram_mb = needs[s_below (10)];
        job->kind_id = (uint16_t) s_kind_id[job->min_vram_mb ? 2 + s_below (2) : s_below (3)];
    }
    if (s_below (100) < 15) {
        job->constraints = (gq_constraints_t *) &constraints[s_below ((int) n_constraints)];
    }
    if (s_below (100) < 2) {
        job->n_excluded = (uint8_t) (1 + s_below (2));
        for (int k = 0; k < job->n_excluded; k++) {
            job->excluded[k] = s_below (n_nodes);
        }
    }
}

/* One random change to one node, as the broker makes them; true when something changed. */
static void
s_churn (gq_matcher_t *matcher, int n_nodes)
{
    int32_t i = s_below (n_nodes);
    gq_node_t *n = gq_matcher_node (matcher, i);
    int r = s_below (100);
    gq_job_t job;
    memset (&job, 0, sizeof job);
    if (r < 35) {
        n->rtt_ms = (float) (n->rtt_ms * s_uniform (0.9, 1.1)); /* a heartbeat */
        gq_matcher_node_changed (matcher, i);
    }
    else if (r < 65) {
        if (n->running > 0 && (s_below (2) || n->status != GQ_NODE_ONLINE)) {
            int used = n->vram_total_mb - n->vram_free_mb;
            job.min_vram_mb = used > 0 ? s_below (used / n->running + 1) : 0;
            gq_matcher_release (matcher, i, &job, S_NOW_MS);
        }
        else if (n->status == GQ_NODE_ONLINE) {
            job.min_vram_mb = n->vram_free_mb > 0 ? s_below (n->vram_free_mb + 1) : 0;
            gq_matcher_assign (matcher, i, &job);
        }
    }
    else if (r < 75) {
        n->reliability = (float) fmin (1.0, n->reliability * s_uniform (0.95, 1.05));
        gq_matcher_node_changed (matcher, i);
    }
    else if (r < 85) {
        /* Nodes come back; about 1 in 19 of the connected ones leaves, which keeps ~5% of
           the fleet away, as at the start. */
        if (n->status == GQ_NODE_OFFLINE || n->status == GQ_NODE_DRAINING) {
            n->status = GQ_NODE_ONLINE;
        }
        else if (s_below (19) == 0) {
            n->status = s_below (10) < 3 ? GQ_NODE_DRAINING : GQ_NODE_OFFLINE;
        }
        else {
            n->rtt_ms = (float) (n->rtt_ms * s_uniform (0.9, 1.1));
        }
        gq_matcher_node_changed (matcher, i);
    }
    else if (r < 95) {
        uint32_t loaded[1];
        size_t nl = 0;
        if (n->n_available && s_below (3)) {
            loaded[nl++] = n->models_available[s_below (n->n_available)];
        }
        gq_matcher_node_set_models (matcher, i, n->models_available, n->n_available, loaded, nl);
    }
    else {
        /* A failure starts a backoff; its end (or a success) clears it: ~2% back off. */
        if (n->backoff_until_ms) {
            n->backoff_until_ms = 0;
        }
        else if (s_below (50) == 0) {
            n->backoff_until_ms = S_NOW_MS + 30000;
        }
        else {
            n->rtt_ms = (float) (n->rtt_ms * s_uniform (0.9, 1.1));
        }
        gq_matcher_node_changed (matcher, i);
    }
}

static void
s_usage (FILE *out)
{
    fprintf (out,
             "usage: gridq-bench-match [--nodes N] [--queued M] [--jobs J] [--seed S] [--json]\n"
             "Times gq_matcher_pick on a synthetic fleet of N nodes (100..100000, default 10000)\n"
             "with M jobs queued (default 1000000, capped to a quarter of the memory), over J\n"
             "decisions per phase (default 100000): quiet, then with one node update between\n"
             "decisions (churn). median_us and p99_us are the decisions under churn;\n"
             "update_median_us the node updates; naive_median_us the exhaustive scan.\n");
}

int
main (int argc, char **argv)
{
    int64_t nodes = 10000, queued = 1000000, decisions = 100000, seed = 1;
    bool json = false;
    static const struct option options[] = {
        {"nodes", required_argument, NULL, 'n'}, {"queued", required_argument, NULL, 'q'},
        {"jobs", required_argument, NULL, 'j'},  {"seed", required_argument, NULL, 's'},
        {"json", no_argument, NULL, 'J'},        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    int opt;
    while ((opt = getopt_long (argc, argv, "", options, NULL)) != -1) {
        bool ok = true;
        switch (opt) {
        case 'n':
            ok = gq_parse_int (optarg, 100, 100000, &nodes) == GQ_OK;
            break;
        case 'q':
            ok = gq_parse_int (optarg, 1, 100000000, &queued) == GQ_OK;
            break;
        case 'j':
            ok = gq_parse_int (optarg, 1, 100000000, &decisions) == GQ_OK;
            break;
        case 's':
            ok = gq_parse_int (optarg, 0, INT64_MAX, &seed) == GQ_OK;
            break;
        case 'J':
            json = true;
            break;
        case 'h':
            s_usage (stdout);
            return 0;
        default:
            s_usage (stderr);
            return 2;
        }
        if (!ok) {
            fprintf (stderr, "gridq-bench-match: bad value '%s' for --%s\n", optarg,
                     options[opt == 'n' ? 0 : opt == 'q' ? 1 : opt == 'j' ? 2 : 3].name);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "gridq-bench-match: unexpected argument '%s'\n", argv[optind]);
        return 2;
    }
    /* Memory sanity: the queued jobs may take a quarter of the machine at most. */
    long pages = sysconf (_SC_PHYS_PAGES), page = sysconf (_SC_PAGESIZE);
    if (pages > 0 && page > 0) {
        long long cap = (long long) pages * page / 4 / (long long) sizeof (gq_job_t);
        if (queued > cap) {
            fprintf (stderr, "gridq-bench-match: --queued capped to %lld by memory\n", cap);
            queued = cap;
        }
    }
    s_rng = 0x9e3779b97f4a7c15ULL ^ (uint64_t) seed;
    if (s_rng == 0) {
        s_rng = 1;
    }

    gq_matcher_t *matcher = gq_matcher_new (NULL);
    gq_queue_t *queue = gq_queue_new (GQ_AGING_MS);
    gq_job_t *jobs = (gq_job_t *) calloc ((size_t) queued, sizeof (gq_job_t));
    double *t_quiet = (double *) calloc ((size_t) decisions, sizeof (double));
    double *t_churn = (double *) calloc ((size_t) decisions, sizeof (double));
    double *t_update = (double *) calloc ((size_t) decisions, sizeof (double));
    if (!matcher || !queue || !jobs || !t_quiet || !t_churn || !t_update) {
        fprintf (stderr, "gridq-bench-match: out of memory\n");
        return 1;
    }
    for (size_t k = 0; k < sizeof s_kinds / sizeof s_kinds[0]; k++) {
        s_kind_id[k] = gq_matcher_kind_id (matcher, s_kinds[k], true);
    }
    for (size_t k = 0; k < S_MODELS; k++) {
        s_model_id[k] = (uint32_t) gq_matcher_model_id (matcher, s_models[k].name, true);
    }
    char name[GQ_NAME_MAX];
    int64_t t_build = s_now_ns ();
    for (long long k = 0; k < nodes; k++) {
        snprintf (name, sizeof name, "node-%06lld", k);
        int32_t i = gq_matcher_node_find_or_add (matcher, name);
        if (i < 0) {
            fprintf (stderr, "gridq-bench-match: cannot add node %s\n", name);
            return 1;
        }
        s_make_node (matcher, i);
    }
    gq_constraints_t constraints[6] = {
        {"A100|H100", -1, 0}, {"4090", -1, 0}, {"H100", -1, 0},
        {"", 1.0, 0},         {"", 0.5, 0},    {"", -1, 300},
    };
    for (long long k = 0; k < queued; k++) {
        /* Submitted over the last hour, in order, as they arrive. */
        int64_t submitted =
            S_NOW_MS - 3600000 + (int64_t) (3600000.0 * (double) k / (double) queued);
        s_make_job (&jobs[k], k + 1, submitted, constraints, 6, (int) nodes);
        gq_queue_push (queue, &jobs[k]);
    }
    /* A first pick builds the indexes (the fleet's normalisation moved as nodes joined). */
    gq_job_t *job = gq_queue_first (queue);
    gq_matcher_pick (matcher, job, S_NOW_MS);
    double build_s = (double) (s_now_ns () - t_build) / 1e9;

    /* Timer cost, for the record. */
    double overhead[1001];
    for (int k = 0; k < 1001; k++) {
        int64_t a = s_now_ns ();
        overhead[k] = (double) (s_now_ns () - a) / 1000.0;
    }
    double timer_us = s_quantile (overhead, 1001, 0.5);

    /* Quiet: decisions only. */
    size_t found = 0;
    for (long long k = 0; k < decisions; k++) {
        int64_t a = s_now_ns ();
        int32_t node = gq_matcher_pick (matcher, job, S_NOW_MS);
        t_quiet[k] = (double) (s_now_ns () - a) / 1000.0;
        found += node >= 0;
        job = gq_queue_next (queue, job);
        if (!job) {
            job = gq_queue_first (queue);
        }
    }
    /* Peer: the exhaustive scan on a sample, which must agree. */
    long long samples = 20000000 / nodes;
    samples = samples < 100 ? 100 : samples > decisions ? decisions : samples;
    double *t_naive = (double *) calloc ((size_t) samples, sizeof (double));
    size_t mismatches = 0;
    for (long long k = 0; k < samples && t_naive; k++) {
        int64_t a = s_now_ns ();
        int32_t want = gq_matcher_pick_exhaustive (matcher, job, S_NOW_MS);
        t_naive[k] = (double) (s_now_ns () - a) / 1000.0;
        mismatches += gq_matcher_pick (matcher, job, S_NOW_MS) != want;
        job = gq_queue_next (queue, job);
        if (!job) {
            job = gq_queue_first (queue);
        }
    }
    /* Churn: one node update between decisions. */
    for (long long k = 0; k < decisions; k++) {
        int64_t a = s_now_ns ();
        s_churn (matcher, (int) nodes);
        t_update[k] = (double) (s_now_ns () - a) / 1000.0;
        a = s_now_ns ();
        gq_matcher_pick (matcher, job, S_NOW_MS);
        t_churn[k] = (double) (s_now_ns () - a) / 1000.0;
        job = gq_queue_next (queue, job);
        if (!job) {
            job = gq_queue_first (queue);
        }
    }
    /* After all that churn the index must still agree with the scan. */
    for (long long k = 0; k < samples / 4 + 1; k++) {
        mismatches += gq_matcher_pick (matcher, job, S_NOW_MS) !=
                      gq_matcher_pick_exhaustive (matcher, job, S_NOW_MS);
        job = gq_queue_next (queue, job);
        if (!job) {
            job = gq_queue_first (queue);
        }
    }

    size_t n = (size_t) decisions;
    double quiet_med = s_quantile (t_quiet, n, 0.5), quiet_p99 = s_quantile (t_quiet, n, 0.99);
    double churn_med = s_quantile (t_churn, n, 0.5), churn_p99 = s_quantile (t_churn, n, 0.99);
    double upd_med = s_quantile (t_update, n, 0.5), upd_p99 = s_quantile (t_update, n, 0.99);
    double naive_med = t_naive ? s_quantile (t_naive, (size_t) samples, 0.5) : 0;
    if (json) {
        printf ("{\"nodes\": %" PRId64 ", \"queued\": %" PRId64 ", \"decisions\": %" PRId64
                ", \"median_us\": %.3f, "
                "\"p99_us\": %.3f, \"update_median_us\": %.3f, \"update_p99_us\": %.3f, "
                "\"quiet_median_us\": %.3f, \"quiet_p99_us\": %.3f, \"naive_median_us\": %.1f, "
                "\"naive_samples\": %lld, \"mismatches\": %zu, \"placeable\": %.3f, "
                "\"timer_us\": %.3f, \"build_s\": %.2f, \"seed\": %" PRId64 "}\n",
                nodes, queued, decisions, churn_med, churn_p99, upd_med, upd_p99, quiet_med,
                quiet_p99, naive_med, samples, mismatches, (double) found / (double) n, timer_us,
                build_s, seed);
    }
    else {
        printf ("gridq-bench-match: %" PRId64 " nodes, %" PRId64 " jobs queued, %" PRId64
                " decisions a phase, seed %" PRId64 " (built in %.2f s)\n",
                nodes, queued, decisions, seed, build_s);
        printf ("  pick, quiet          median %8.3f us   p99 %8.3f us   (%.0f%% found a node)\n",
                quiet_med, quiet_p99, 100.0 * (double) found / (double) n);
        printf ("  pick, with churn     median %8.3f us   p99 %8.3f us\n", churn_med, churn_p99);
        printf ("  node update          median %8.3f us   p99 %8.3f us\n", upd_med, upd_p99);
        printf ("  exhaustive scan      median %8.1f us   (peer, %lld decisions)\n", naive_med,
                samples);
        printf ("  mismatches with the scan: %zu; timer cost %.3f us (included)\n", mismatches,
                timer_us);
    }
    free (t_quiet);
    free (t_churn);
    free (t_update);
    free (t_naive);
    gq_queue_destroy (&queue);
    free (jobs);
    gq_matcher_destroy (&matcher);
    return mismatches ? 1 : 0;
}
