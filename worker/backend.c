/*  backend.c — the backend registry, element types and conversions, and the backend selftest.

    This file holds the one #ifdef for CUDA outside CMake: CMake defines GQ_HAVE_CUDA for this
    file alone when it builds worker/cuda/backend_cuda.cu. */
#include "backend.h"

#include <czmq.h>
#include <math.h>
#include <string.h>

extern const gq_backend_ops_t gq_backend_cpu_ops;
#ifdef GQ_HAVE_CUDA
extern const gq_backend_ops_t gq_backend_cuda_ops;
#endif

/* Best first: "auto" tries them in this order. */
static const gq_backend_ops_t *const s_backends[] = {
#ifdef GQ_HAVE_CUDA
    &gq_backend_cuda_ops,
#endif
    &gq_backend_cpu_ops,
    NULL,
};

const gq_backend_ops_t *
gq_backend_find (const char *name)
{
    for (size_t i = 0; name && s_backends[i]; i++) {
        if (strcmp (s_backends[i]->name, name) == 0) {
            return s_backends[i];
        }
    }
    return NULL;
}

const gq_backend_ops_t *const *
gq_backend_all (void)
{
    return s_backends;
}

/* ---- Device identity ------------------------------------------------------------------------ */

void
gq_gpu_uuid_text (const unsigned char bytes[16], char *out, size_t size)
{
    /* Groups of 4, 2, 2, 2 and 6 bytes, as in RFC 4122. */
    static const int dash_after[] = {3, 5, 7, 9};
    size_t used = (size_t) snprintf (out, size, "GPU-");
    for (int i = 0, d = 0; i < 16 && used < size; i++) {
        used += (size_t) snprintf (out + used, size - used, "%02x", bytes[i]);
        if (d < 4 && i == dash_after[d] && used < size) {
            used += (size_t) snprintf (out + used, size - used, "-");
            d++;
        }
    }
}

/* ---- Element types -------------------------------------------------------------------------- */

size_t
gq_dtype_size (gq_dtype_t dtype)
{
    return dtype == GQ_DTYPE_F32 ? 4 : 2;
}

const char *
gq_dtype_name (gq_dtype_t dtype)
{
    switch (dtype) {
    case GQ_DTYPE_F32:
        return "F32";
    case GQ_DTYPE_F16:
        return "F16";
    case GQ_DTYPE_BF16:
        return "BF16";
    }
    return "?";
}

const char *
gq_gemm_mode_name (gq_gemm_mode_t mode)
{
    switch (mode) {
    case GQ_GEMM_F32:
        return "f32";
    case GQ_GEMM_TF32:
        return "tf32";
    case GQ_GEMM_BF16:
        return "bf16";
    }
    return "?";
}

int
gq_gemm_mode_parse (const char *text)
{
    if (!text) {
        return -1;
    }
    if (strcmp (text, "f32") == 0) {
        return GQ_GEMM_F32;
    }
    if (strcmp (text, "tf32") == 0) {
        return GQ_GEMM_TF32;
    }
    if (strcmp (text, "bf16") == 0) {
        return GQ_GEMM_BF16;
    }
    return -1;
}

/* ---- Conversions ------------------------------------------------------------------------------ */

static float
s_bits_to_f32 (uint32_t bits)
{
    float f;
    memcpy (&f, &bits, sizeof f);
    return f;
}

static uint32_t
s_f32_to_bits (float f)
{
    uint32_t bits;
    memcpy (&bits, &f, sizeof bits);
    return bits;
}

float
gq_f16_to_f32 (uint16_t h)
{
    uint32_t sign = (uint32_t) (h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t mant = h & 0x3ff;
    if (exp == 0) {
        /* Zero or subnormal: mant x 2^-24, exact in f32. */
        float v = ldexpf ((float) mant, -24);
        return sign ? -v : v;
    }
    if (exp == 31) {
        return s_bits_to_f32 (sign | 0x7f800000 | (mant << 13));
    }
    return s_bits_to_f32 (sign | ((exp - 15 + 127) << 23) | (mant << 13));
}

uint16_t
gq_f32_to_f16 (float f)
{
    uint32_t x = s_f32_to_bits (f);
    uint16_t sign = (uint16_t) ((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7fffffff;
    if (ax >= 0x7f800000) {
        return (uint16_t) (sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0));
    }
    if (ax >= 0x477ff000) {
        /* 65520 and above round (to even) past the largest half, 65504. */
        return (uint16_t) (sign | 0x7c00);
    }
    if (ax < 0x38800000) {
        /* Below 2^-14: a subnormal half; scaling by 2^24 is exact, lrintf rounds to even. */
        float v = s_bits_to_f32 (ax) * 16777216.0f;
        return (uint16_t) (sign | (uint16_t) lrintf (v));
    }
    uint32_t exp = (ax >> 23) - 127 + 15;
    uint32_t mant = ax & 0x7fffff;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) {
        h++; /* a carry into the exponent is still the right encoding */
    }
    return (uint16_t) (sign | h);
}

float
gq_bf16_to_f32 (uint16_t b)
{
    return s_bits_to_f32 ((uint32_t) b << 16);
}

uint16_t
gq_f32_to_bf16 (float f)
{
    uint32_t x = s_f32_to_bits (f);
    if ((x & 0x7fffffff) > 0x7f800000) {
        return (uint16_t) ((x >> 16) | 0x40); /* keep NaN a NaN */
    }
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t) (x >> 16);
}

/* ---- Selftest: conversions, and the CPU backend against naive loops ------------------------- */

/* Naive row-major reference in double. */
static void
s_naive_gemm (int m, int n, int k, const float *a, const float *b, bool trans_b, double *c)
{
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int p = 0; p < k; p++) {
                double bv = trans_b ? b[(size_t) j * k + p] : b[(size_t) p * n + j];
                acc += (double) a[(size_t) i * k + p] * bv;
            }
            c[(size_t) i * n + j] = acc;
        }
    }
}

static void
s_check_gemm (const gq_backend_ops_t *ops, gq_bctx_t *ctx, int m, int n, int k, bool trans_b,
              gq_gemm_mode_t mode, bool verbose)
{
    size_t na = (size_t) m * k, nb = (size_t) k * n, nc = (size_t) m * n;
    float *a = malloc (na * sizeof (float));
    float *b = malloc (nb * sizeof (float));
    float *c = malloc (nc * sizeof (float));
    double *ref = malloc (nc * sizeof (double));
    assert (a && b && c && ref);
    for (size_t i = 0; i < na; i++) {
        a[i] = gq_rand_uniform (11, i);
    }
    for (size_t i = 0; i < nb; i++) {
        b[i] = gq_rand_uniform (12, i);
    }
    const void *pa = a, *pb = b;
    uint16_t *a16 = NULL, *b16 = NULL;
    if (mode == GQ_GEMM_BF16) {
        /* The reference sees the same rounded inputs. */
        a16 = malloc (na * 2);
        b16 = malloc (nb * 2);
        assert (a16 && b16);
        for (size_t i = 0; i < na; i++) {
            a16[i] = gq_f32_to_bf16 (a[i]);
            a[i] = gq_bf16_to_f32 (a16[i]);
        }
        for (size_t i = 0; i < nb; i++) {
            b16[i] = gq_f32_to_bf16 (b[i]);
            b[i] = gq_bf16_to_f32 (b16[i]);
        }
        pa = a16;
        pb = b16;
    }
    s_naive_gemm (m, n, k, a, b, trans_b, ref);
    int rc = ops->gemm (ctx, mode, m, n, k, pa, pb, trans_b, c);
    if (rc != 0) {
        fprintf (stderr, "gemm %dx%dx%d failed: %d %s\n", m, n, k, rc, ops->ctx_error (ctx));
        assert (false);
    }
    double worst = 0;
    for (size_t i = 0; i < nc; i++) {
        double err = fabs (c[i] - ref[i]) / (1.0 + fabs (ref[i]));
        if (err > worst) {
            worst = err;
        }
    }
    if (verbose) {
        printf ("\n  gemm %s %dx%dx%d%s: worst relative error %.3g", gq_gemm_mode_name (mode), m,
                n, k, trans_b ? " (B transposed)" : "", worst);
    }
    if (worst > 1e-5 * sqrt ((double) k) + 1e-6) {
        fprintf (stderr, "gemm %dx%dx%d: error %g over tolerance\n", m, n, k, worst);
        assert (false);
    }
    free (a);
    free (b);
    free (c);
    free (ref);
    free (a16);
    free (b16);
}

void
gq_backend_test (bool verbose)
{
    /* Registry. */
    assert (gq_backend_find ("cpu") == &gq_backend_cpu_ops);
    assert (gq_backend_find ("nope") == NULL);
    assert (gq_backend_find (NULL) == NULL);
    const gq_backend_ops_t *const *all = gq_backend_all ();
    size_t count = 0;
    while (all[count]) {
        count++;
    }
    assert (count >= 1 && all[count - 1] == &gq_backend_cpu_ops);
    assert (gq_gemm_mode_parse ("tf32") == GQ_GEMM_TF32);
    assert (gq_gemm_mode_parse ("fp64") == -1);

    /* Device UUIDs, as nvidia-smi writes them. */
    const unsigned char uuid_bytes[16] = {0x3f, 0x2a, 0x9b, 0x01, 0xc4, 0x5d, 0x6e, 0x7f,
                                          0x80, 0x91, 0xa2, 0xb3, 0xc4, 0xd5, 0xe6, 0xf7};
    char uuid[48];
    gq_gpu_uuid_text (uuid_bytes, uuid, sizeof uuid);
    if (!streq (uuid, "GPU-3f2a9b01-c45d-6e7f-8091-a2b3c4d5e6f7")) {
        fprintf (stderr, "uuid text: got %s\n", uuid);
        assert (false);
    }
    gq_gpu_uuid_text (uuid_bytes, uuid, 10);
    assert (streq (uuid, "GPU-3f2a9"));

    /* Conversions: exact values, rounding to even, subnormals, overflow. */
    assert (gq_f32_to_f16 (1.0f) == 0x3c00);
    assert (gq_f32_to_f16 (-2.0f) == 0xc000);
    assert (gq_f32_to_f16 (65504.0f) == 0x7bff);
    assert (gq_f32_to_f16 (65520.0f) == 0x7c00);
    assert (gq_f32_to_f16 (65519.0f) == 0x7bff);
    assert (gq_f32_to_f16 (ldexpf (1.0f, -24)) == 0x0001);
    assert (gq_f32_to_f16 (ldexpf (1.0f, -25)) == 0x0000);  /* tie goes to even (zero) */
    assert (gq_f32_to_f16 (ldexpf (3.0f, -25)) == 0x0002);  /* 1.5 ulp rounds to 2 */
    assert (gq_f32_to_f16 (1.0f + ldexpf (1.0f, -11)) == 0x3c00); /* tie to even */
    assert (gq_f32_to_f16 (1.0f + ldexpf (3.0f, -11)) == 0x3c02);
    assert (gq_f16_to_f32 (0x3555) == 0.333251953125f);
    assert (gq_f16_to_f32 (0x0001) == ldexpf (1.0f, -24));
    assert (isinf (gq_f16_to_f32 (0xfc00)) && gq_f16_to_f32 (0xfc00) < 0);
    for (uint32_t h = 0; h < 0x7c00; h++) {
        /* Every finite half survives the round trip. */
        assert (gq_f32_to_f16 (gq_f16_to_f32 ((uint16_t) h)) == h);
        assert (gq_f32_to_f16 (gq_f16_to_f32 ((uint16_t) (h | 0x8000))) == (h | 0x8000));
    }
    assert (gq_f32_to_bf16 (1.0f) == 0x3f80);
    assert (gq_f32_to_bf16 (1.0f + ldexpf (1.0f, -8)) == 0x3f80); /* tie to even */
    assert (gq_f32_to_bf16 (1.0f + ldexpf (3.0f, -8)) == 0x3f82);
    assert (gq_bf16_to_f32 (0xc040) == -3.0f);
    for (uint64_t i = 0; i < 100000; i++) {
        float v = gq_rand_uniform (7, i);
        assert (v >= -1.0f && v < 1.0f);
    }
    assert (gq_rand_uniform (7, 3) == gq_rand_uniform (7, 3));
    assert (gq_rand_uniform (7, 3) != gq_rand_uniform (8, 3));

    /* The CPU backend, the oracle for the others. */
    const gq_backend_ops_t *ops = gq_backend_find ("cpu");
    char why[256];
    gq_bdev_t *dev = ops->dev_open (0, why, sizeof why);
    assert (dev);
    gq_device_info_t info;
    assert (ops->dev_info (dev, &info) == 0);
    assert (streq (info.name, "cpu") && !info.is_gpu && info.vram_total_mb == 0);
    gq_bctx_t *ctx = ops->ctx_new (dev, why, sizeof why);
    assert (ctx);

    static const int shapes[][3] = {{1, 1, 1},   {7, 5, 3},     {6, 16, 256}, {13, 33, 300},
                                    {97, 65, 31}, {130, 260, 70}, {1, 300, 513}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        for (int t = 0; t < 2; t++) {
            s_check_gemm (ops, ctx, shapes[s][0], shapes[s][1], shapes[s][2], t, GQ_GEMM_F32,
                          verbose);
        }
    }
    s_check_gemm (ops, ctx, 33, 47, 129, false, GQ_GEMM_TF32, verbose);
    s_check_gemm (ops, ctx, 33, 47, 129, true, GQ_GEMM_BF16, verbose);

    /* bias + relu, softmax, sum, fill_random, convert, scratch. */
    float x[6] = {-1, 2, -3, 4, 0.5f, -0.25f};
    float bias[3] = {0.5f, -1, 1};
    assert (ops->bias_act (ctx, x, bias, 2, 3, true) == 0);
    assert (x[0] == 0 && x[1] == 1 && x[2] == 0 && x[3] == 4.5f && x[4] == 0 && x[5] == 0.75f);
    float y[4] = {1, 2, 3, 1000};
    assert (ops->softmax (ctx, y, 2, 2) == 0);
    assert (fabsf (y[0] + y[1] - 1) < 1e-6f && y[1] > y[0]);
    assert (fabsf (y[2]) < 1e-6f && fabsf (y[3] - 1) < 1e-6f); /* no overflow on large logits */
    double total = 0;
    assert (ops->sum (ctx, x, 6, &total) == 0 && total == 6.25);
    float *r = ops->scratch (ctx, 0, 1000 * sizeof (float));
    uint16_t *r16 = ops->scratch (ctx, 1, 1000 * sizeof (uint16_t));
    float *back = ops->scratch (ctx, 2, 1000 * sizeof (float));
    assert (r && r16 && back);
    assert (ops->fill_random (ctx, r, GQ_DTYPE_F32, 1000, 99) == 0);
    assert (ops->fill_random (ctx, r16, GQ_DTYPE_BF16, 1000, 99) == 0);
    assert (ops->convert (ctx, back, GQ_DTYPE_F32, r16, GQ_DTYPE_BF16, 1000) == 0);
    for (size_t i = 0; i < 1000; i++) {
        assert (r[i] == gq_rand_uniform (99, i));
        assert (back[i] == gq_bf16_to_f32 (gq_f32_to_bf16 (r[i])));
    }
    ops->scratch_trim (ctx, 0);

    /* Abort flag: a long GEMM stops with GQ_ESTATE. */
    gq_flag_t cancel = 1;
    ops->ctx_set_abort (ctx, &cancel, 0);
    float *big = ops->scratch (ctx, 0, 512 * 512 * sizeof (float));
    float *out = ops->scratch (ctx, 1, 512 * 512 * sizeof (float));
    assert (big && out);
    assert (ops->fill_random (ctx, big, GQ_DTYPE_F32, 512 * 512, 1) == 0);
    assert (ops->gemm (ctx, GQ_GEMM_F32, 512, 512, 512, big, big, false, out) == GQ_ESTATE);
    ops->ctx_set_abort (ctx, NULL, gq_mono_us () - 1);
    assert (ops->gemm (ctx, GQ_GEMM_F32, 512, 512, 512, big, big, false, out) == GQ_ETIMEOUT);
    ops->ctx_set_abort (ctx, NULL, 0);
    assert (ops->timer_start (ctx) == 0);
    assert (ops->gemm (ctx, GQ_GEMM_F32, 512, 512, 512, big, big, false, out) == 0);
    double ms = -1;
    assert (ops->timer_stop (ctx, &ms) == 0 && ms >= 0);
    if (verbose) {
        printf ("\n  cpu sgemm 512^3: %.2f ms, %.1f GFLOP/s\n  ", ms,
                2.0 * 512 * 512 * 512 / (ms * 1e6));
    }

    void *mem = NULL;
    assert (ops->alloc (dev, 4096, &mem, why, sizeof why) == 0 && mem);
    ops->free (dev, mem);
    ops->ctx_destroy (&ctx);
    ops->ctx_destroy (&ctx);
    assert (ctx == NULL);
    ops->dev_close (&dev);
    ops->dev_close (&dev);
    assert (dev == NULL);
}
