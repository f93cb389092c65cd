/*  backend.h — the compute backend interface: one const table of operations per backend (cpu,
    cuda) and the registry that finds them.

    Who owns what, and which thread may call what:
    - A device (gq_bdev_t) is opened once per worker process and shared by every slot thread.
      dev_info, alloc and free are thread-safe.
    - A context (gq_bctx_t) belongs to one slot: its stream, BLAS handle, timer events and scratch
      buffers. One thread at a time uses it, not necessarily the thread that made it.
    - Buffers from alloc or scratch are device memory (host memory on the CPU backend): only the
      backend's own operations read or write them; upload and download cross to the host.
    - Operations on one context run in order (a CUDA stream); download, sum and timer_stop wait
      for everything queued before them, so their results are final when they return.
    - Every operation returns 0 or a negative gq_err_t: GQ_ENOMEM when memory ran out,
      GQ_EBACKEND when the backend failed, GQ_ESTATE or GQ_ETIMEOUT when the context's abort
      flag or deadline stopped a long CPU operation. The reason is in ctx_error (or `why`).
    - No CUDA type appears here: the CUDA backend keeps its own in worker/cuda/. */
#ifndef GQ_BACKEND_H_INCLUDED
#define GQ_BACKEND_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gq_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- What a device is, as the worker advertises it ---------------------------------------- */
typedef struct {
    char name[128];        /* "NVIDIA H100 80GB HBM3", or "cpu" */
    int cc_major;          /* CUDA compute capability (0 on the CPU) */
    int cc_minor;          /* its minor part */
    int64_t vram_total_mb; /* device memory in MiB (0 on the CPU: the daemon's flags decide) */
    int64_t vram_free_mb;  /* free device memory in MiB, measured when asked */
    double tflops;         /* peak FP32 TFLOP/s: SMs x clock x FP32 lanes per SM x 2 */
    int sm_count;          /* streaming multiprocessors (online processors on the CPU) */
    int clock_mhz;         /* peak SM clock in MHz (0 when unknown) */
    bool is_gpu;           /* false for the CPU backend */
    char uuid[48];         /* "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" as nvidia-smi -L prints
                              it: the device whatever the enumeration; "" on the CPU */
} gq_device_info_t;

/* ---- Element types and GEMM precisions ----------------------------------------------------- */
typedef enum {
    GQ_DTYPE_F32 = 0,  /* IEEE binary32 */
    GQ_DTYPE_F16 = 1,  /* IEEE binary16 */
    GQ_DTYPE_BF16 = 2  /* bfloat16: the top half of a binary32 */
} gq_dtype_t;

typedef enum {
    GQ_GEMM_F32 = 0,  /* f32 inputs, f32 arithmetic */
    GQ_GEMM_TF32 = 1, /* f32 inputs, tensor cores may round them to TF32 (the CPU computes f32) */
    GQ_GEMM_BF16 = 2  /* bf16 inputs, f32 accumulation and output */
} gq_gemm_mode_t;

/* Bytes per element. */
size_t gq_dtype_size (gq_dtype_t dtype);
/* "F32", "F16", "BF16" (the safetensors spelling). */
const char *gq_dtype_name (gq_dtype_t dtype);
/* "f32", "tf32", "bf16" (the payload spelling); gq_gemm_mode_parse returns -1 on others. */
const char *gq_gemm_mode_name (gq_gemm_mode_t mode);
int gq_gemm_mode_parse (const char *text);

/* A device UUID's 16 bytes as nvidia-smi and CUDA_VISIBLE_DEVICES write it:
   "GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx" (lower-case hex; out has 41 bytes or more). */
void gq_gpu_uuid_text (const unsigned char bytes[16], char *out, size_t size);

/* Scalar conversions, round to nearest even where narrowing; the CUDA kernels round alike. */
float gq_f16_to_f32 (uint16_t h);
float gq_bf16_to_f32 (uint16_t b);
uint16_t gq_f32_to_f16 (float f);
uint16_t gq_f32_to_bf16 (float f);

/* The counter-based generator behind fill_random and the model maker: element `index` of
   stream `seed` is a multiple of 2^-23 in [-1, 1), exact in f32; gq_mix64 is gq_common.h's.
   worker/cuda/ computes the same values on the device (the CUDA-vs-CPU test checks that). */
static inline float
gq_rand_uniform (uint64_t seed, uint64_t index)
{
    uint64_t h = gq_mix64 (gq_mix64 (seed) ^ (index * 0x9e3779b97f4a7c15ULL));
    return (float) ((int64_t) (h >> 40) - (1 << 23)) * (1.0f / (float) (1 << 23));
}

/* ---- The operations table ------------------------------------------------------------------ */
typedef struct _gq_bdev_t gq_bdev_t; /* one opened device; each backend defines it */
typedef struct _gq_bctx_t gq_bctx_t; /* one slot's execution context; each backend defines it */

/* Scratch buffers per context (indexes 0 .. GQ_SCRATCH_SLOTS-1). */
#define GQ_SCRATCH_SLOTS 6

typedef struct {
    const char *name; /* "cpu" or "cuda" */

    /* Opens device `ordinal`. NULL with a reason when there is no such device; it logs nothing,
       so that "auto" can fall back quietly. Close with dev_close (safe on NULL). */
    gq_bdev_t *(*dev_open) (int ordinal, char *why, size_t whylen);
    void (*dev_close) (gq_bdev_t **dev_p);
    /* Fills info; free memory is measured at each call. */
    int (*dev_info) (gq_bdev_t *dev, gq_device_info_t *info);
    /* Whether the device is lost: a sticky error (an illegal address, a kernel that faulted, an
       uncorrectable ECC error, ...; worker/cuda/cuda_errors.h) made this process's context on it
       unusable, and every later call would fail the same way until the process exits. true with
       that error in why. A flag: cheap, thread-safe. The CPU is never lost. */
    bool (*dev_lost) (gq_bdev_t *dev, char *why, size_t whylen);
    /* Device memory for long-lived data (model weights). free is safe on NULL. */
    int (*alloc) (gq_bdev_t *dev, size_t bytes, void **ptr, char *why, size_t whylen);
    void (*free) (gq_bdev_t *dev, void *ptr);

    /* A slot's context; NULL with a reason. ctx_destroy frees its scratch; safe on NULL. */
    gq_bctx_t *(*ctx_new) (gq_bdev_t *dev, char *why, size_t whylen);
    void (*ctx_destroy) (gq_bctx_t **ctx_p);
    /* The reason for the last failed operation on ctx (a static buffer of ctx). */
    const char *(*ctx_error) (gq_bctx_t *ctx);
    /* Long CPU operations poll *flag (non-zero: stop with GQ_ESTATE) and the monotonic deadline
       (gq_mono_us units, 0 for none: stop with GQ_ETIMEOUT). flag may be NULL. Device kernels
       are not interrupted: callers check between launches. */
    void (*ctx_set_abort) (gq_bctx_t *ctx, gq_flag_t *flag, int64_t deadline_us);

    /* Scratch buffer `index` of at least `bytes`, grown as needed and kept for the next job;
       contents are undefined. NULL on failure (ctx_error). */
    void *(*scratch) (gq_bctx_t *ctx, int index, size_t bytes);
    /* Frees scratch buffers larger than keep_bytes (so one huge job does not pin memory). */
    void (*scratch_trim) (gq_bctx_t *ctx, size_t keep_bytes);

    /* Host <-> device copies; both return when the copy is complete. */
    int (*upload) (gq_bctx_t *ctx, void *dst, const void *src, size_t bytes);
    int (*download) (gq_bctx_t *ctx, void *dst, const void *src, size_t bytes);
    /* dst[i] = gq_rand_uniform (seed, i), stored as dtype (F32 or BF16). */
    int (*fill_random) (gq_bctx_t *ctx, void *dst, gq_dtype_t dtype, size_t count, uint64_t seed);
    /* Converts count elements (F32 <-> BF16, F16 <-> F32). */
    int (*convert) (gq_bctx_t *ctx, void *dst, gq_dtype_t dst_dtype, const void *src,
                    gq_dtype_t src_dtype, size_t count);
    /* Row-major C[m,n] = A[m,k] . op(B): op(B) is B[k,n], or with trans_b the transpose of
       B[n,k] (an MLP weight [out,in]). A and B are F32, or BF16 in GQ_GEMM_BF16 mode; C is F32. */
    int (*gemm) (gq_bctx_t *ctx, gq_gemm_mode_t mode, int m, int n, int k, const void *a,
                 const void *b, bool trans_b, float *c);
    /* x[r,c] += bias[c], then max(x, 0) with relu; x is [rows, cols]. bias may be NULL. */
    int (*bias_act) (gq_bctx_t *ctx, float *x, const float *bias, int rows, int cols, bool relu);
    /* Each row of x [rows, cols] replaced by its softmax. */
    int (*softmax) (gq_bctx_t *ctx, float *x, int rows, int cols);
    /* *out = the sum of count floats, accumulated in double. */
    int (*sum) (gq_bctx_t *ctx, const float *x, size_t count, double *out);
    /* Brackets device work: *ms is the device time between start and stop. */
    int (*timer_start) (gq_bctx_t *ctx);
    int (*timer_stop) (gq_bctx_t *ctx, double *ms);
} gq_backend_ops_t;

/* ---- Registry ------------------------------------------------------------------------------ */
/* The backend called `name` ("cpu", "cuda"), or NULL when this build has none of that name. */
const gq_backend_ops_t *gq_backend_find (const char *name);
/* The backends this build has, best first, NULL-terminated. */
const gq_backend_ops_t *const *gq_backend_all (void);

/* Selftest of the registry, the conversions and the CPU backend (the oracle). */
void gq_backend_test (bool verbose);

#ifdef __cplusplus
}
#endif

#endif
