/*  cuda_test.c — the CUDA backend against the CPU backend (the oracle) on random inputs, and a
    device lost to a sticky error (last: it ruins the process's context).

    Exits 77, which ctest reports as skipped, when this build has no CUDA backend or the machine
    has no usable device. It goes through the ops table only, so it is plain C and is built
    either way. gq_cuda_errors_test (which errors are sticky) needs neither CUDA nor a device. */
#include <czmq.h>
#include <math.h>
#include <unistd.h>

#include "backend.h"
#include "cuda/cuda_errors.h"
#include "exec.h"
#include "model.h"

/* The two backends side by side. */
typedef struct {
    const gq_backend_ops_t *gpu; /* the CUDA table */
    gq_bdev_t *gdev;             /* its device */
    gq_bctx_t *gctx;             /* its context */
    const gq_backend_ops_t *cpu; /* the oracle */
    gq_bdev_t *cdev;             /* its device */
    gq_bctx_t *cctx;             /* its context */
} s_pair_t;

/* Copies host floats to a new GPU scratch slot. */
static void *
s_to_gpu (s_pair_t *p, int slot, const void *host, size_t bytes)
{
    void *dev = p->gpu->scratch (p->gctx, slot, bytes);
    assert (dev);
    int rc = p->gpu->upload (p->gctx, dev, host, bytes);
    if (rc) {
        fprintf (stderr, "upload: %s\n", p->gpu->ctx_error (p->gctx));
        assert (false);
    }
    return dev;
}

static void
s_from_gpu (s_pair_t *p, void *host, const void *dev, size_t bytes)
{
    int rc = p->gpu->download (p->gctx, host, dev, bytes);
    if (rc) {
        fprintf (stderr, "download: %s\n", p->gpu->ctx_error (p->gctx));
        assert (false);
    }
}

/* Largest difference relative to the largest CPU magnitude. */
static double
s_compare (const float *gpu, const float *cpu, size_t n)
{
    double top = 0, worst = 0;
    for (size_t i = 0; i < n; i++) {
        top = fabs (cpu[i]) > top ? fabs (cpu[i]) : top;
    }
    for (size_t i = 0; i < n; i++) {
        double d = fabs ((double) gpu[i] - cpu[i]) / (top > 0 ? top : 1);
        worst = d > worst ? d : worst;
    }
    return worst;
}

static void
s_check_gemm (s_pair_t *p, gq_gemm_mode_t mode, int m, int n, int k, bool trans_b, double tol,
              bool verbose)
{
    size_t na = (size_t) m * k, nb = (size_t) k * n, nc = (size_t) m * n;
    size_t elem = mode == GQ_GEMM_BF16 ? 2 : 4;
    gq_dtype_t dtype = mode == GQ_GEMM_BF16 ? GQ_DTYPE_BF16 : GQ_DTYPE_F32;
    void *a = malloc (na * elem), *b = malloc (nb * elem);
    float *c_cpu = malloc (nc * sizeof (float)), *c_gpu = malloc (nc * sizeof (float));
    assert (a && b && c_cpu && c_gpu);
    assert (p->cpu->fill_random (p->cctx, a, dtype, na, 1000 + (uint64_t) m) == 0);
    assert (p->cpu->fill_random (p->cctx, b, dtype, nb, 2000 + (uint64_t) n) == 0);
    assert (p->cpu->gemm (p->cctx, mode, m, n, k, a, b, trans_b, c_cpu) == 0);
    void *da = s_to_gpu (p, 0, a, na * elem), *db = s_to_gpu (p, 1, b, nb * elem);
    float *dc = p->gpu->scratch (p->gctx, 2, nc * sizeof (float));
    assert (dc);
    int rc = p->gpu->gemm (p->gctx, mode, m, n, k, da, db, trans_b, dc);
    if (rc) {
        fprintf (stderr, "gemm: %s\n", p->gpu->ctx_error (p->gctx));
        assert (false);
    }
    s_from_gpu (p, c_gpu, dc, nc * sizeof (float));
    double worst = s_compare (c_gpu, c_cpu, nc);
    if (verbose) {
        printf ("\n  gemm %-4s %5d x %5d x %5d%s: %.3g (tolerance %.0e)", gq_gemm_mode_name (mode),
                m, n, k, trans_b ? " Bt" : "   ", worst, tol);
    }
    if (!(worst <= tol)) {
        fprintf (stderr, "\ngemm %s %dx%dx%d: GPU differs from CPU by %g (tolerance %g)\n",
                 gq_gemm_mode_name (mode), m, n, k, worst, tol);
        assert (false);
    }
    free (a);
    free (b);
    free (c_cpu);
    free (c_gpu);
}

static void
s_check_elementwise (s_pair_t *p, int rows, int cols, bool verbose)
{
    size_t n = (size_t) rows * cols;
    float *x = malloc (n * sizeof (float)), *bias = malloc ((size_t) cols * sizeof (float));
    float *cpu = malloc (n * sizeof (float)), *gpu = malloc (n * sizeof (float));
    assert (x && bias && cpu && gpu);
    for (size_t i = 0; i < n; i++) {
        x[i] = gq_rand_uniform (5, i) * 8;
    }
    for (int i = 0; i < cols; i++) {
        bias[i] = gq_rand_uniform (6, (uint64_t) i);
    }
    /* bias + ReLU is exact arithmetic: the results must match bit for bit. */
    memcpy (cpu, x, n * sizeof (float));
    assert (p->cpu->bias_act (p->cctx, cpu, bias, rows, cols, true) == 0);
    float *dx = s_to_gpu (p, 0, x, n * sizeof (float));
    float *db = s_to_gpu (p, 1, bias, (size_t) cols * sizeof (float));
    assert (p->gpu->bias_act (p->gctx, dx, db, rows, cols, true) == 0);
    s_from_gpu (p, gpu, dx, n * sizeof (float));
    assert (memcmp (cpu, gpu, n * sizeof (float)) == 0);
    /* Softmax: expf differs by an ulp or two between libm and the device. */
    memcpy (cpu, x, n * sizeof (float));
    assert (p->cpu->softmax (p->cctx, cpu, rows, cols) == 0);
    dx = s_to_gpu (p, 0, x, n * sizeof (float));
    assert (p->gpu->softmax (p->gctx, dx, rows, cols) == 0);
    s_from_gpu (p, gpu, dx, n * sizeof (float));
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs ((double) gpu[i] - cpu[i]);
        worst = d > worst ? d : worst;
    }
    if (verbose) {
        printf ("\n  bias+relu %d x %d exact; softmax worst %.3g", rows, cols, worst);
    }
    assert (worst < 1e-6);
    /* Sum: double accumulation, any order. */
    double s_cpu = 0, s_gpu = 0, magnitude = 0;
    assert (p->cpu->sum (p->cctx, x, n, &s_cpu) == 0);
    dx = s_to_gpu (p, 0, x, n * sizeof (float));
    assert (p->gpu->sum (p->gctx, dx, n, &s_gpu) == 0);
    for (size_t i = 0; i < n; i++) {
        magnitude += fabs (x[i]);
    }
    if (fabs (s_cpu - s_gpu) > 1e-12 * magnitude + 1e-9) {
        fprintf (stderr, "sum: CPU %.17g, GPU %.17g\n", s_cpu, s_gpu);
        assert (false);
    }
    free (x);
    free (bias);
    free (cpu);
    free (gpu);
}

static void
s_check_generators (s_pair_t *p)
{
    const size_t n = 100003;
    float *cpu = malloc (n * sizeof (float)), *gpu = malloc (n * sizeof (float));
    uint16_t *c16 = malloc (n * 2), *g16 = malloc (n * 2);
    assert (cpu && gpu && c16 && g16);
    /* The device generator must give the CPU's bits: checksums and models depend on it. */
    void *d = p->gpu->scratch (p->gctx, 0, n * sizeof (float));
    assert (d && p->gpu->fill_random (p->gctx, d, GQ_DTYPE_F32, n, 31) == 0);
    s_from_gpu (p, gpu, d, n * sizeof (float));
    assert (p->cpu->fill_random (p->cctx, cpu, GQ_DTYPE_F32, n, 31) == 0);
    assert (memcmp (cpu, gpu, n * sizeof (float)) == 0);
    assert (p->gpu->fill_random (p->gctx, d, GQ_DTYPE_BF16, n, 31) == 0);
    s_from_gpu (p, g16, d, n * 2);
    assert (p->cpu->fill_random (p->cctx, c16, GQ_DTYPE_BF16, n, 31) == 0);
    assert (memcmp (c16, g16, n * 2) == 0);
    /* Conversions round alike: f32 -> bf16 and f32 -> f16 on values of every magnitude. */
    for (size_t i = 0; i < n; i++) {
        cpu[i] = ldexpf (gq_rand_uniform (3, i), (int) (i % 60) - 30);
    }
    float *df = s_to_gpu (p, 1, cpu, n * sizeof (float));
    void *dh = p->gpu->scratch (p->gctx, 2, n * 2);
    assert (dh);
    gq_dtype_t narrow[] = {GQ_DTYPE_BF16, GQ_DTYPE_F16};
    for (int t = 0; t < 2; t++) {
        assert (p->gpu->convert (p->gctx, dh, narrow[t], df, GQ_DTYPE_F32, n) == 0);
        s_from_gpu (p, g16, dh, n * 2);
        assert (p->cpu->convert (p->cctx, c16, narrow[t], cpu, GQ_DTYPE_F32, n) == 0);
        assert (memcmp (c16, g16, n * 2) == 0);
        assert (p->gpu->convert (p->gctx, df, GQ_DTYPE_F32, dh, narrow[t], n) == 0);
        s_from_gpu (p, gpu, df, n * sizeof (float));
        assert (p->cpu->convert (p->cctx, cpu, GQ_DTYPE_F32, c16, narrow[t], n) == 0);
        assert (memcmp (cpu, gpu, n * sizeof (float)) == 0);
    }
    free (cpu);
    free (gpu);
    free (c16);
    free (g16);
}

/* The mlp kind end to end on both runtimes, on one model file. */
static void
s_check_mlp (const char *dir, gq_dtype_t dtype, const char *mode, bool verbose)
{
    char path[300], why[256], name[64];
    snprintf (name, sizeof name, "net-%s-%s", gq_dtype_name (dtype), mode);
    snprintf (path, sizeof path, "%s/%s.safetensors", dir, name);
    int64_t widths[] = {784, 512, 257, 10};
    assert (gq_model_make (path, widths, 4, 3, dtype, why, sizeof why) == 0);
    const int rows = 300;
    float *in = malloc ((size_t) rows * 784 * sizeof (float));
    for (size_t i = 0; i < (size_t) rows * 784; i++) {
        in[i] = gq_rand_uniform (44, i);
    }
    zframe_t *blob = zframe_new (in, (size_t) rows * 784 * sizeof (float));
    char payload[256];
    snprintf (payload, sizeof payload,
              "{\"input\":{\"blob\":0,\"rows\":%d,\"cols\":784},\"output_blob\":true,"
              "\"dtype\":\"%s\"}",
              rows, mode);
    float *outs[2];
    const char *backends[2] = {"cuda", "cpu"};
    for (int b = 0; b < 2; b++) {
        gq_runtime_opts_t opts = {.backend = backends[b], .models_dir = dir};
        gq_runtime_t *rt = gq_runtime_new (&opts, why, sizeof why);
        assert (rt);
        gq_exec_t *exec = gq_exec_new (rt, 0);
        assert (exec);
        gq_task_t task = {.id = 1, .kind = "mlp", .model = name,
                          .payload = json_loads (payload, 0, NULL), .blobs = &blob, .n_blobs = 1};
        gq_outcome_t out;
        if (gq_exec_run (exec, &task, &out) != 0) {
            fprintf (stderr, "mlp on %s: %s\n", backends[b], out.error);
            assert (false);
        }
        assert (out.n_blobs == 1 && zframe_size (out.blobs[0]) == (size_t) rows * 10 * 4);
        outs[b] = malloc ((size_t) rows * 10 * sizeof (float));
        memcpy (outs[b], zframe_data (out.blobs[0]), (size_t) rows * 10 * sizeof (float));
        gq_outcome_clear (&out);
        json_decref (task.payload);
        gq_exec_destroy (&exec);
        gq_runtime_destroy (&rt);
    }
    double worst = s_compare (outs[0], outs[1], (size_t) rows * 10);
    double tol = streq (mode, "tf32") ? 1e-2 : 1e-5;
    if (verbose) {
        printf ("\n  mlp %s weights, %s: %.3g (tolerance %.0e)", gq_dtype_name (dtype), mode,
                worst, tol);
    }
    assert (worst <= tol);
    free (outs[0]);
    free (outs[1]);
    free (in);
    zframe_destroy (&blob);
    unlink (path);
}

/* The sticky errors, by number and name as in driver_types.h: the device is lost after these
   and only after these (memory running out, a bad argument, a missing kernel image are the
   job's trouble, not the device's). */
void
gq_cuda_errors_test (bool verbose)
{
    static const struct {
        int code;         /* cudaError_t */
        const char *name; /* for the message */
        bool sticky;      /* the device is lost */
    } cases[] = {
        {0, "cudaSuccess", false},
        {1, "cudaErrorInvalidValue", false},
        {2, "cudaErrorMemoryAllocation", false},
        {98, "cudaErrorInvalidDeviceFunction", false},
        {100, "cudaErrorNoDevice", false},
        {101, "cudaErrorInvalidDevice", false},
        {209, "cudaErrorNoKernelImageForDevice", false},
        {214, "cudaErrorECCUncorrectable", true},
        {220, "cudaErrorNvlinkUncorrectable", true},
        {226, "cudaErrorContained", true},
        {400, "cudaErrorInvalidResourceHandle", false},
        {600, "cudaErrorNotReady", false},
        {700, "cudaErrorIllegalAddress", true},
        {701, "cudaErrorLaunchOutOfResources", false},
        {702, "cudaErrorLaunchTimeout", true},
        {710, "cudaErrorAssert", true},
        {714, "cudaErrorHardwareStackError", true},
        {715, "cudaErrorIllegalInstruction", true},
        {716, "cudaErrorMisalignedAddress", true},
        {717, "cudaErrorInvalidAddressSpace", true},
        {718, "cudaErrorInvalidPc", true},
        {719, "cudaErrorLaunchFailure", true},
        {720, "cudaErrorCooperativeLaunchTooLarge", false},
        {721, "cudaErrorTensorMemoryLeak", true},
        {810, "cudaErrorMpsClientTerminated", true},
        {911, "cudaErrorExternalDevice", true},
        {999, "cudaErrorUnknown", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        if (gq_cuda_error_is_sticky (cases[i].code) != cases[i].sticky) {
            fprintf (stderr, "\n%s (%d): sticky should be %s\n", cases[i].name, cases[i].code,
                     cases[i].sticky ? "true" : "false");
            assert (false);
        }
    }
    if (verbose) {
        printf ("\n  %zu cudaError_t values classified\n  ", sizeof cases / sizeof cases[0]);
    }
}

/* A kernel that reads an illegal address loses the device: the call that meets the error fails
   with it, dev_lost says so with the reason, and every later call fails too. */
static void
s_check_lost (const gq_backend_ops_t *gpu, bool verbose)
{
    char why[256];
    gq_bdev_t *dev = gpu->dev_open (0, why, sizeof why);
    gq_bctx_t *ctx = dev ? gpu->ctx_new (dev, why, sizeof why) : NULL;
    assert (ctx && !gpu->dev_lost (dev, why, sizeof why));
    float *c = gpu->scratch (ctx, 0, 64 * 64 * sizeof (float));
    assert (c);
    const void *wild = (const void *) (uintptr_t) 64; /* no allocation lives there */
    int rc = gpu->gemm (ctx, GQ_GEMM_F32, 64, 64, 64, wild, wild, false, c);
    float host[4];
    if (rc == 0) {
        rc = gpu->download (ctx, host, c, sizeof host); /* waits for the GEMM: the error shows */
    }
    assert (rc == GQ_EBACKEND);
    if (!gpu->dev_lost (dev, why, sizeof why)) {
        fprintf (stderr, "\nafter a wild read (%s), the device is not lost\n",
                 gpu->ctx_error (ctx));
        assert (false);
    }
    if (verbose) {
        printf ("\n  lost: %s", why);
    }
    assert (strstr (why, "cuda: "));
    assert (gpu->upload (ctx, c, host, sizeof host) == GQ_EBACKEND);
    assert (gpu->dev_lost (dev, why, sizeof why));
    gpu->ctx_destroy (&ctx);
    gpu->dev_close (&dev);
}

void
gq_cuda_test (bool verbose)
{
    s_pair_t p = {.gpu = gq_backend_find ("cuda"), .cpu = gq_backend_find ("cpu")};
    if (!p.gpu) {
        printf ("skipped: this build has no CUDA backend\n");
        exit (77);
    }
    char why[256];
    p.gdev = p.gpu->dev_open (0, why, sizeof why);
    if (!p.gdev) {
        printf ("skipped: %s\n", why);
        exit (77);
    }
    gq_device_info_t info;
    assert (p.gpu->dev_info (p.gdev, &info) == 0 && info.is_gpu);
    assert (info.sm_count > 0 && info.vram_total_mb > 0 && info.tflops > 0);
    if (verbose) {
        printf ("\n  %s: cc %d.%d, %d SMs, %d MHz, %" PRId64 " MiB, %.1f TFLOP/s fp32", info.name,
                info.cc_major, info.cc_minor, info.sm_count, info.clock_mhz, info.vram_total_mb,
                info.tflops);
    }
    p.gctx = p.gpu->ctx_new (p.gdev, why, sizeof why);
    p.cdev = p.cpu->dev_open (0, why, sizeof why);
    p.cctx = p.cpu->ctx_new (p.cdev, why, sizeof why);
    assert (p.gctx && p.cdev && p.cctx);

    s_check_generators (&p);
    static const int shapes[][3] = {{1, 1, 1},      {7, 5, 3},      {128, 256, 64},
                                    {257, 129, 511}, {1000, 300, 784}, {64, 1, 4096}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        for (int t = 0; t < 2; t++) {
            s_check_gemm (&p, GQ_GEMM_F32, m, n, k, t, 1e-5, verbose);
            /* TF32 keeps 10 mantissa bits of each input. */
            s_check_gemm (&p, GQ_GEMM_TF32, m, n, k, t, 1e-2, verbose);
            /* Same bf16 inputs on both sides, products exact in f32: only the order differs. */
            s_check_gemm (&p, GQ_GEMM_BF16, m, n, k, t, 1e-5, verbose);
        }
    }
    s_check_elementwise (&p, 1, 1, verbose);
    s_check_elementwise (&p, 1000, 10, verbose);
    s_check_elementwise (&p, 37, 4097, verbose);

    /* A failing call is an error code with a reason, not an abort. */
    void *huge = NULL;
    int rc = p.gpu->alloc (p.gdev, (size_t) 1 << 52, &huge, why, sizeof why);
    assert (rc == GQ_ENOMEM && !huge && strstr (why, "cudaMalloc"));
    if (verbose) {
        printf ("\n  4 PiB alloc: %s", why);
    }
    /* Timing brackets device work. */
    double ms = -1;
    size_t bytes = (size_t) 1024 * 1024 * sizeof (float);
    float *ta = p.gpu->scratch (p.gctx, 0, bytes), *tb = p.gpu->scratch (p.gctx, 1, bytes);
    float *tc = p.gpu->scratch (p.gctx, 2, bytes);
    assert (ta && tb && tc);
    assert (p.gpu->fill_random (p.gctx, ta, GQ_DTYPE_F32, 1024 * 1024, 1) == 0);
    assert (p.gpu->fill_random (p.gctx, tb, GQ_DTYPE_F32, 1024 * 1024, 2) == 0);
    assert (p.gpu->timer_start (p.gctx) == 0);
    assert (p.gpu->gemm (p.gctx, GQ_GEMM_F32, 1024, 1024, 1024, ta, tb, false, tc) == 0);
    assert (p.gpu->timer_stop (p.gctx, &ms) == 0 && ms > 0);

    p.gpu->ctx_destroy (&p.gctx);
    p.cpu->ctx_destroy (&p.cctx);
    p.cpu->dev_close (&p.cdev);
    p.gpu->dev_close (&p.gdev);

    /* Through the job path: generated matmul checksums and the mlp kind agree across backends. */
    char dir[] = "/tmp/gq-cuda-XXXXXX";
    assert (mkdtemp (dir));
    const char *modes[] = {"f32", "bf16"};
    for (int i = 0; i < 2; i++) {
        char payload[128];
        snprintf (payload, sizeof payload,
                  "{\"m\":300,\"n\":200,\"k\":500,\"seed\":5,\"dtype\":\"%s\"}", modes[i]);
        double sums[2];
        const char *backends[2] = {"cuda", "cpu"};
        for (int b = 0; b < 2; b++) {
            gq_runtime_opts_t opts = {.backend = backends[b]};
            gq_runtime_t *rt = gq_runtime_new (&opts, why, sizeof why);
            assert (rt);
            gq_exec_t *exec = gq_exec_new (rt, 0);
            gq_task_t task = {.kind = "matmul", .payload = json_loads (payload, 0, NULL)};
            gq_outcome_t out;
            assert (exec && gq_exec_run (exec, &task, &out) == 0);
            sums[b] = json_real_value (json_object_get (out.result, "checksum"));
            gq_outcome_clear (&out);
            json_decref (task.payload);
            gq_exec_destroy (&exec);
            gq_runtime_destroy (&rt);
        }
        if (fabs (sums[0] - sums[1]) > 1e-3 * (1 + fabs (sums[1]))) {
            fprintf (stderr, "matmul %s checksum: cuda %.9g, cpu %.9g\n", modes[i], sums[0],
                     sums[1]);
            assert (false);
        }
    }
    gq_dtype_t dtypes[] = {GQ_DTYPE_F32, GQ_DTYPE_F16, GQ_DTYPE_BF16};
    for (int i = 0; i < 3; i++) {
        s_check_mlp (dir, dtypes[i], "f32", verbose);
    }
    s_check_mlp (dir, GQ_DTYPE_BF16, "tf32", verbose);
    rmdir (dir);
    s_check_lost (p.gpu, verbose); /* last: this process's context is gone afterwards */
    if (verbose) {
        printf ("\n  ");
    }
}
