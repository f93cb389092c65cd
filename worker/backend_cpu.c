/*  backend_cpu.c — the CPU backend: always built, the reference the GPU backend is tested against.

    Its SGEMM is a packed, blocked loop around a 6x16 register tile: B is packed into panels of
    16 columns and A into panels of 6 rows so the inner loop streams contiguous memory, and the
    tile's accumulators stay in vector registers. On x86-64 with GCC or Clang the blocked loop is
    also compiled for AVX+FMA and chosen at load time, so one binary runs on any x86-64 and is
    fast where FMA exists. One slot computes on one core: slots are the parallelism. */
#include "backend.h"

#include <czmq.h>
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "tuning.h"

#define S_MR    6    /* rows of the register tile */
#define S_NR    16   /* columns of the register tile (two AVX vectors, four SSE ones) */
#define S_ALIGN 64   /* buffer alignment: a cache line, and what AVX-512 would like */
/* The cache blocking, tuned in tuning.h, by the names the loop nest gives them. */
#define S_KC    GQ_CPU_GEMM_KC_ELEMENTS /* depth of a packed panel */
#define S_MC    GQ_CPU_GEMM_MC_ROWS     /* rows of A packed at a time */
#define S_NC    GQ_CPU_GEMM_NC_COLUMNS  /* columns of B packed at a time */
_Static_assert (S_MC % S_MR == 0 && S_NC % S_NR == 0,
                "packed blocks hold whole register-tile panels");

struct _gq_bdev_t {
    int ordinal; /* as asked; the CPU has one "device" whatever the number */
};

struct _gq_bctx_t {
    gq_bdev_t *dev;                        /* the device this context computes on */
    char error[256];                       /* reason for the last failed operation */
    gq_flag_t *abort_flag;              /* non-zero: stop long operations (may be NULL) */
    int64_t deadline_us;                   /* gq_mono_us deadline for long operations, 0: none */
    int64_t timer_us;                      /* when timer_start was called */
    void *scratch[GQ_SCRATCH_SLOTS];       /* per-slot buffers kept between jobs */
    size_t scratch_bytes[GQ_SCRATCH_SLOTS]; /* their sizes */
    float *pack_a;                         /* packed A block, S_MC x S_KC */
    float *pack_b;                         /* packed B block, S_KC x S_NC */
};

static void *
s_aligned_alloc (size_t bytes)
{
    void *ptr = NULL;
    if (posix_memalign (&ptr, S_ALIGN, bytes ? bytes : S_ALIGN) != 0) {
        return NULL;
    }
    return ptr;
}

/* ---- Device --------------------------------------------------------------------------------- */

static gq_bdev_t *
s_dev_open (int ordinal, char *why, size_t whylen)
{
    gq_bdev_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    self->ordinal = ordinal;
    return self;
}

static void
s_dev_close (gq_bdev_t **dev_p)
{
    if (dev_p && *dev_p) {
        free (*dev_p);
        *dev_p = NULL;
    }
}

static int
s_dev_info (gq_bdev_t *dev, gq_device_info_t *info)
{
    memset (info, 0, sizeof *info);
    snprintf (info->name, sizeof info->name, "cpu");
    long cpus = sysconf (_SC_NPROCESSORS_ONLN);
    info->sm_count = cpus > 0 ? (int) cpus : 1;
    info->is_gpu = false;
    return GQ_OK;
}

static bool
s_dev_lost (gq_bdev_t *dev, char *why, size_t whylen)
{
    return false; /* host memory has no context to lose */
}

static int
s_alloc (gq_bdev_t *dev, size_t bytes, void **ptr, char *why, size_t whylen)
{
    *ptr = s_aligned_alloc (bytes);
    if (!*ptr) {
        snprintf (why, whylen, "cpu: out of memory allocating %zu bytes", bytes);
        return GQ_ENOMEM;
    }
    return GQ_OK;
}

static void
s_free (gq_bdev_t *dev, void *ptr)
{
    free (ptr);
}

/* ---- Context -------------------------------------------------------------------------------- */

static gq_bctx_t *
s_ctx_new (gq_bdev_t *dev, char *why, size_t whylen)
{
    gq_bctx_t *self = calloc (1, sizeof *self);
    if (self) {
        self->dev = dev;
        self->pack_a = s_aligned_alloc ((size_t) S_MC * S_KC * sizeof (float));
        self->pack_b = s_aligned_alloc ((size_t) S_KC * S_NC * sizeof (float));
    }
    if (!self || !self->pack_a || !self->pack_b) {
        snprintf (why, whylen, "cpu: out of memory for a context");
        if (self) {
            free (self->pack_a);
            free (self->pack_b);
            free (self);
        }
        return NULL;
    }
    return self;
}

static void
s_ctx_destroy (gq_bctx_t **ctx_p)
{
    if (ctx_p && *ctx_p) {
        gq_bctx_t *self = *ctx_p;
        for (int i = 0; i < GQ_SCRATCH_SLOTS; i++) {
            free (self->scratch[i]);
        }
        free (self->pack_a);
        free (self->pack_b);
        free (self);
        *ctx_p = NULL;
    }
}

static const char *
s_ctx_error (gq_bctx_t *ctx)
{
    return ctx->error;
}

static void
s_ctx_set_abort (gq_bctx_t *ctx, gq_flag_t *flag, int64_t deadline_us)
{
    ctx->abort_flag = flag;
    ctx->deadline_us = deadline_us;
}

/* 0 to go on, else the code that stops the operation (with ctx->error set). */
static int
s_aborted (gq_bctx_t *ctx)
{
    if (ctx->abort_flag && *ctx->abort_flag) {
        snprintf (ctx->error, sizeof ctx->error, "cancelled");
        return GQ_ESTATE;
    }
    if (ctx->deadline_us && gq_mono_us () >= ctx->deadline_us) {
        snprintf (ctx->error, sizeof ctx->error, "deadline passed");
        return GQ_ETIMEOUT;
    }
    return GQ_OK;
}

static void *
s_scratch (gq_bctx_t *ctx, int index, size_t bytes)
{
    assert (index >= 0 && index < GQ_SCRATCH_SLOTS);
    if (ctx->scratch_bytes[index] < bytes || !ctx->scratch[index]) {
        free (ctx->scratch[index]);
        ctx->scratch[index] = s_aligned_alloc (bytes);
        ctx->scratch_bytes[index] = ctx->scratch[index] ? bytes : 0;
        if (!ctx->scratch[index]) {
            snprintf (ctx->error, sizeof ctx->error, "cpu: out of memory allocating %zu bytes",
                      bytes);
            return NULL;
        }
    }
    return ctx->scratch[index];
}

static void
s_scratch_trim (gq_bctx_t *ctx, size_t keep_bytes)
{
    for (int i = 0; i < GQ_SCRATCH_SLOTS; i++) {
        if (ctx->scratch_bytes[i] > keep_bytes) {
            free (ctx->scratch[i]);
            ctx->scratch[i] = NULL;
            ctx->scratch_bytes[i] = 0;
        }
    }
}

static int
s_copy (gq_bctx_t *ctx, void *dst, const void *src, size_t bytes)
{
    if (bytes) {
        memcpy (dst, src, bytes);
    }
    return GQ_OK;
}

/* ---- Element-wise operations ---------------------------------------------------------------- */

static int
s_fill_random (gq_bctx_t *ctx, void *dst, gq_dtype_t dtype, size_t count, uint64_t seed)
{
    if (dtype == GQ_DTYPE_F32) {
        float *out = dst;
        for (size_t i = 0; i < count; i++) {
            out[i] = gq_rand_uniform (seed, i);
        }
    } else if (dtype == GQ_DTYPE_BF16) {
        uint16_t *out = dst;
        for (size_t i = 0; i < count; i++) {
            out[i] = gq_f32_to_bf16 (gq_rand_uniform (seed, i));
        }
    } else {
        snprintf (ctx->error, sizeof ctx->error, "cpu: fill_random does not make %s",
                  gq_dtype_name (dtype));
        return GQ_EUNSUPPORTED;
    }
    return GQ_OK;
}

static int
s_convert (gq_bctx_t *ctx, void *dst, gq_dtype_t dst_dtype, const void *src, gq_dtype_t src_dtype,
           size_t count)
{
    if (dst_dtype == src_dtype) {
        memmove (dst, src, count * gq_dtype_size (src_dtype));
        return GQ_OK;
    }
    if (dst_dtype == GQ_DTYPE_F32) {
        float *out = dst;
        const uint16_t *in = src;
        for (size_t i = 0; i < count; i++) {
            out[i] = src_dtype == GQ_DTYPE_BF16 ? gq_bf16_to_f32 (in[i]) : gq_f16_to_f32 (in[i]);
        }
        return GQ_OK;
    }
    if (src_dtype == GQ_DTYPE_F32) {
        uint16_t *out = dst;
        const float *in = src;
        for (size_t i = 0; i < count; i++) {
            out[i] = dst_dtype == GQ_DTYPE_BF16 ? gq_f32_to_bf16 (in[i]) : gq_f32_to_f16 (in[i]);
        }
        return GQ_OK;
    }
    snprintf (ctx->error, sizeof ctx->error, "cpu: no conversion from %s to %s",
              gq_dtype_name (src_dtype), gq_dtype_name (dst_dtype));
    return GQ_EUNSUPPORTED;
}

static int
s_bias_act (gq_bctx_t *ctx, float *x, const float *bias, int rows, int cols, bool relu)
{
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t) r * cols;
        for (int c = 0; c < cols; c++) {
            float v = row[c] + (bias ? bias[c] : 0.0f);
            row[c] = relu && v < 0 ? 0.0f : v;
        }
    }
    return GQ_OK;
}

static int
s_softmax (gq_bctx_t *ctx, float *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t) r * cols;
        float top = -INFINITY;
        for (int c = 0; c < cols; c++) {
            top = row[c] > top ? row[c] : top;
        }
        /* Subtracting the maximum keeps expf from overflowing on large logits. */
        float total = 0;
        for (int c = 0; c < cols; c++) {
            row[c] = expf (row[c] - top);
            total += row[c];
        }
        for (int c = 0; c < cols; c++) {
            row[c] /= total;
        }
    }
    return GQ_OK;
}

static int
s_sum (gq_bctx_t *ctx, const float *x, size_t count, double *out)
{
    double total = 0;
    for (size_t i = 0; i < count; i++) {
        total += x[i];
    }
    *out = total;
    return GQ_OK;
}

static int
s_timer_start (gq_bctx_t *ctx)
{
    ctx->timer_us = gq_mono_us ();
    return GQ_OK;
}

static int
s_timer_stop (gq_bctx_t *ctx, double *ms)
{
    *ms = (double) (gq_mono_us () - ctx->timer_us) / 1000.0;
    return GQ_OK;
}

/* ---- SGEMM ------------------------------------------------------------------------------------ */

/* Packs rows [0, mc) x depth [0, kc) of A (row-major, leading dimension lda) into panels of S_MR
   rows: within a panel, element (i, p) sits at p * S_MR + i. Short panels are zero-padded. */
static void
s_pack_a (int mc, int kc, const float *a, size_t lda, float *out)
{
    for (int ir = 0; ir < mc; ir += S_MR) {
        int mr = mc - ir < S_MR ? mc - ir : S_MR;
        for (int p = 0; p < kc; p++) {
            for (int i = 0; i < S_MR; i++) {
                out[p * S_MR + i] = i < mr ? a[(size_t) (ir + i) * lda + p] : 0.0f;
            }
        }
        out += (size_t) kc * S_MR;
    }
}

/* Packs depth [0, kc) x columns [0, nc) of op(B) into panels of S_NR columns: within a panel,
   element (p, j) sits at p * S_NR + j. op(B)(p, j) is b[p * ldb + j], or b[j * ldb + p] when B
   is stored transposed. Short panels are zero-padded. */
static void
s_pack_b (int kc, int nc, const float *b, size_t ldb, bool trans_b, float *out)
{
    for (int jr = 0; jr < nc; jr += S_NR) {
        int nr = nc - jr < S_NR ? nc - jr : S_NR;
        for (int p = 0; p < kc; p++) {
            for (int j = 0; j < S_NR; j++) {
                float v = 0.0f;
                if (j < nr) {
                    v = trans_b ? b[(size_t) (jr + j) * ldb + p] : b[(size_t) p * ldb + jr + j];
                }
                out[p * S_NR + j] = v;
            }
        }
        out += (size_t) kc * S_NR;
    }
}

/* Eight floats: GCC and Clang map it to one AVX register, or two SSE/NEON ones. */
typedef float s_v8 __attribute__ ((vector_size (32)));
_Static_assert (S_MR == 6 && S_NR == 16, "s_tile is written out for a 6x16 tile");

/* The register tile: C[mr, nr] (+)= Apanel . Bpanel over depth kc. The twelve accumulators are
   vectors named by the code, so the compiler keeps them in registers instead of memory. Always
   inlined, so each target clone of s_macro gets its own (FMA or plain) copy. */
static inline __attribute__ ((always_inline)) void
s_tile (int kc, const float *restrict a, const float *restrict b, float *restrict c, size_t ldc,
        int mr, int nr, bool accumulate)
{
    s_v8 c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
    s_v8 c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
    const s_v8 *bv = (const s_v8 *) b; /* packed panels are S_ALIGN-aligned, rows 64 bytes */
    for (int p = 0; p < kc; p++) {
        s_v8 b0 = bv[2 * p];
        s_v8 b1 = bv[2 * p + 1];
        const float *ap = a + (size_t) p * S_MR;
        c00 += ap[0] * b0;
        c01 += ap[0] * b1;
        c10 += ap[1] * b0;
        c11 += ap[1] * b1;
        c20 += ap[2] * b0;
        c21 += ap[2] * b1;
        c30 += ap[3] * b0;
        c31 += ap[3] * b1;
        c40 += ap[4] * b0;
        c41 += ap[4] * b1;
        c50 += ap[5] * b0;
        c51 += ap[5] * b1;
    }
    float acc[S_MR][S_NR];
    const s_v8 rows[S_MR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                                {c30, c31}, {c40, c41}, {c50, c51}};
    memcpy (acc, rows, sizeof acc);
    for (int i = 0; i < mr; i++) {
        float *row = c + (size_t) i * ldc;
        if (accumulate) {
            for (int j = 0; j < nr; j++) {
                row[j] += acc[i][j];
            }
        } else {
            for (int j = 0; j < nr; j++) {
                row[j] = acc[i][j];
            }
        }
    }
}

/* Multiplies the packed blocks: C[mc, nc] (+)= Apacked[mc, kc] . Bpacked[kc, nc]. The FMA clone
   is picked by an ifunc resolver, which runs before ThreadSanitizer is set up: none under TSan. */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__SANITIZE_THREAD__)
__attribute__ ((target_clones ("fma", "default")))
#endif
static void
s_macro (int mc, int nc, int kc, const float *pa, const float *pb, float *c, size_t ldc,
         bool accumulate)
{
    for (int jr = 0; jr < nc; jr += S_NR) {
        int nr = nc - jr < S_NR ? nc - jr : S_NR;
        const float *bp = pb + (size_t) (jr / S_NR) * kc * S_NR;
        for (int ir = 0; ir < mc; ir += S_MR) {
            int mr = mc - ir < S_MR ? mc - ir : S_MR;
            const float *ap = pa + (size_t) (ir / S_MR) * kc * S_MR;
            s_tile (kc, ap, bp, c + (size_t) ir * ldc + jr, ldc, mr, nr, accumulate);
        }
    }
}

static int
s_sgemm (gq_bctx_t *ctx, int m, int n, int k, const float *a, const float *b, bool trans_b,
         float *c)
{
    if (k == 0) {
        memset (c, 0, (size_t) m * n * sizeof (float));
        return GQ_OK;
    }
    size_t ldb = trans_b ? (size_t) k : (size_t) n;
    for (int jc = 0; jc < n; jc += S_NC) {
        int nc = n - jc < S_NC ? n - jc : S_NC;
        for (int pc = 0; pc < k; pc += S_KC) {
            int kc = k - pc < S_KC ? k - pc : S_KC;
            const float *bsrc = trans_b ? b + (size_t) jc * ldb + pc : b + (size_t) pc * ldb + jc;
            s_pack_b (kc, nc, bsrc, ldb, trans_b, ctx->pack_b);
            for (int ic = 0; ic < m; ic += S_MC) {
                int rc = s_aborted (ctx);
                if (rc) {
                    return rc;
                }
                int mc = m - ic < S_MC ? m - ic : S_MC;
                s_pack_a (mc, kc, a + (size_t) ic * k + pc, (size_t) k, ctx->pack_a);
                s_macro (mc, nc, kc, ctx->pack_a, ctx->pack_b, c + (size_t) ic * n + jc,
                         (size_t) n, pc > 0);
            }
        }
    }
    return GQ_OK;
}

static int
s_gemm (gq_bctx_t *ctx, gq_gemm_mode_t mode, int m, int n, int k, const void *a, const void *b,
        bool trans_b, float *c)
{
    if (m < 0 || n < 0 || k < 0) {
        snprintf (ctx->error, sizeof ctx->error, "cpu: gemm with negative sizes");
        return GQ_EINVAL;
    }
    if (mode != GQ_GEMM_BF16) {
        /* TF32 is a permission to round, not a duty: the oracle computes in f32. */
        return s_sgemm (ctx, m, n, k, a, b, trans_b, c);
    }
    /* BF16 inputs: widen to f32 (exact), then the f32 loop accumulates in f32 like cuBLAS. */
    size_t na = (size_t) m * k, nb = (size_t) k * n;
    float *wa = s_aligned_alloc (na * sizeof (float));
    float *wb = s_aligned_alloc (nb * sizeof (float));
    int rc = GQ_OK;
    if (!wa || !wb) {
        snprintf (ctx->error, sizeof ctx->error, "cpu: out of memory widening bf16 inputs");
        rc = GQ_ENOMEM;
    } else {
        s_convert (ctx, wa, GQ_DTYPE_F32, a, GQ_DTYPE_BF16, na);
        s_convert (ctx, wb, GQ_DTYPE_F32, b, GQ_DTYPE_BF16, nb);
        rc = s_sgemm (ctx, m, n, k, wa, wb, trans_b, c);
    }
    free (wa);
    free (wb);
    return rc;
}

/* ---- The table ------------------------------------------------------------------------------ */

const gq_backend_ops_t gq_backend_cpu_ops = {
    .name = "cpu",
    .dev_open = s_dev_open,
    .dev_close = s_dev_close,
    .dev_info = s_dev_info,
    .dev_lost = s_dev_lost,
    .alloc = s_alloc,
    .free = s_free,
    .ctx_new = s_ctx_new,
    .ctx_destroy = s_ctx_destroy,
    .ctx_error = s_ctx_error,
    .ctx_set_abort = s_ctx_set_abort,
    .scratch = s_scratch,
    .scratch_trim = s_scratch_trim,
    .upload = s_copy,
    .download = s_copy,
    .fill_random = s_fill_random,
    .convert = s_convert,
    .gemm = s_gemm,
    .bias_act = s_bias_act,
    .softmax = s_softmax,
    .sum = s_sum,
    .timer_start = s_timer_start,
    .timer_stop = s_timer_stop,
};
