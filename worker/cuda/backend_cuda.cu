/*  backend_cuda.cu — the CUDA backend: cuBLAS for the GEMMs, kernels of our own for random
    fill, conversions, bias + ReLU, row softmax and the checksum.

    Row-major matrices meet column-major cuBLAS by transposition: a row-major C[m,n] is a
    column-major C^T[n,m], and C^T = op(B)^T . A^T, so every GEMM is issued with the operands
    swapped and m and n exchanged; no data moves.

    Threads: the device (gq_bdev_t) is shared by slots; each slot has a context with its own
    stream and cuBLAS handle. The current device is per host thread in the CUDA runtime, so every
    entry point first selects the device: a context may be used from any thread.

    Every CUDA and cuBLAS call goes through GQ_CUDA_CHECK (cuda_check.h). After a sticky error
    (an illegal address, say) the process's context on the device is lost: every later call would
    fail the same way. The check marks the device lost (dev_lost), the job fails with the reason,
    and the worker exits (status 3) so that its service manager starts a process with a working
    context. */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <czmq.h>

#include "backend.h"
#include "cuda_check.h"

#define S_THREADS     256 /* threads per block for element-wise kernels */
#define S_BLOCKS_PER_SM 8 /* grid-stride kernels launch this many blocks per SM at most */

/* Sticky errors are checked by number in plain C (cuda_errors.c): the numbers must be these. */
static_assert (cudaErrorECCUncorrectable == 214 && cudaErrorNvlinkUncorrectable == 220 &&
                   cudaErrorIllegalAddress == 700 && cudaErrorLaunchTimeout == 702 &&
                   cudaErrorAssert == 710 && cudaErrorHardwareStackError == 714 &&
                   cudaErrorIllegalInstruction == 715 && cudaErrorMisalignedAddress == 716 &&
                   cudaErrorInvalidAddressSpace == 717 && cudaErrorInvalidPc == 718 &&
                   cudaErrorLaunchFailure == 719,
               "cudaError_t numbers differ from cuda_errors.c");

enum { S_FINE = 0, S_MARKING = 1, S_LOST = 2 }; /* gq_bdev_t.lost */

struct _gq_bdev_t {
    int ordinal;           /* the CUDA device number */
    gq_device_info_t info; /* facts read at open (free memory is re-read on each dev_info) */
    int max_blocks;        /* grid size cap for grid-stride kernels */
    int lost;              /* S_FINE, or S_LOST after a sticky error (atomic: any slot may set it,
                              S_MARKING while the first one writes lost_why) */
    char lost_why[256];    /* that error, written once before lost becomes S_LOST */
};

struct _gq_bctx_t {
    gq_bdev_t *dev;                         /* the device this context runs on */
    cudaStream_t stream;                    /* all of this slot's work, in order */
    cublasHandle_t blas;                    /* cuBLAS bound to stream */
    cudaEvent_t start;                      /* timer_start's event */
    cudaEvent_t stop;                       /* timer_stop's event */
    double *sum;                            /* device accumulator for sum */
    void *scratch[GQ_SCRATCH_SLOTS];        /* device buffers kept between jobs */
    size_t scratch_bytes[GQ_SCRATCH_SLOTS]; /* their sizes */
    char error[256];                        /* reason for the last failure */
};

/* The first sticky error is the device's reason; it stays lost until the process exits. */
static void
s_mark_lost (gq_bdev_t *dev, const char *reason)
{
    int fine = S_FINE;
    if (__atomic_compare_exchange_n (&dev->lost, &fine, S_MARKING, false, __ATOMIC_ACQ_REL,
                                     __ATOMIC_ACQUIRE)) {
        snprintf (dev->lost_why, sizeof dev->lost_why, "%s", reason);
        __atomic_store_n (&dev->lost, S_LOST, __ATOMIC_RELEASE);
        zsys_error ("cuda: device %d is lost until this process exits: %s", dev->ordinal, reason);
    }
}

void
gq_cuda_report (gq_cuda_sink_t sink, const char *call, const char *file, int line,
                const char *text, bool sticky)
{
    /* The function name is enough for a job's error; the log gets the whole call. */
    size_t name_len = strcspn (call, " (");
    char reason[256];
    snprintf (reason, sizeof reason, "cuda: %.*s failed: %s", (int) name_len, call, text);
    if (sink.text && sink.size) {
        snprintf (sink.text, sink.size, "%s", reason);
    }
    if (!sink.quiet) {
        zsys_error ("cuda: %s failed at %s:%d: %s", call, file, line, text);
    }
    if (sticky && sink.dev) {
        s_mark_lost (sink.dev, reason);
    }
}

static gq_cuda_sink_t
s_sink (gq_bctx_t *ctx)
{
    return gq_cuda_sink_t{ctx->error, sizeof ctx->error, false, ctx->dev};
}

static unsigned
s_blocks (gq_bctx_t *ctx, size_t n)
{
    size_t blocks = (n + S_THREADS - 1) / S_THREADS;
    blocks = blocks < 1 ? 1 : blocks;
    return (unsigned) (blocks < (size_t) ctx->dev->max_blocks ? blocks : ctx->dev->max_blocks);
}

/* ---- Kernels -------------------------------------------------------------------------------- */

/* Device copies of the host's gq_mix64 (proto/gq_common.h) and gq_rand_uniform
   (worker/backend.h), which device code cannot call; the CUDA test checks that both sides produce
   the same bits. */
__device__ static inline uint64_t
s_mix64 (uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

__device__ static inline float
s_rand_uniform (uint64_t seed, uint64_t index)
{
    uint64_t h = s_mix64 (s_mix64 (seed) ^ (index * 0x9e3779b97f4a7c15ULL));
    return (float) ((int64_t) (h >> 40) - (1 << 23)) * (1.0f / (float) (1 << 23));
}

__global__ static void
k_fill_f32 (float *dst, size_t n, uint64_t seed)
{
    for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
         i += (size_t) gridDim.x * blockDim.x) {
        dst[i] = s_rand_uniform (seed, i);
    }
}

__global__ static void
k_fill_bf16 (__nv_bfloat16 *dst, size_t n, uint64_t seed)
{
    for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
         i += (size_t) gridDim.x * blockDim.x) {
        dst[i] = __float2bfloat16_rn (s_rand_uniform (seed, i));
    }
}

/* Element conversions: the CPU's gq_f32_to_* round to nearest even, as these do. */
__device__ static inline float
s_to_f32 (float v)
{
    return v;
}

__device__ static inline float
s_to_f32 (__nv_bfloat16 v)
{
    return __bfloat162float (v);
}

__device__ static inline float
s_to_f32 (__half v)
{
    return __half2float (v);
}

template <typename T> __device__ static inline T s_from_f32 (float v);

template <>
__device__ inline float
s_from_f32<float> (float v)
{
    return v;
}

template <>
__device__ inline __nv_bfloat16
s_from_f32<__nv_bfloat16> (float v)
{
    return __float2bfloat16_rn (v);
}

template <>
__device__ inline __half
s_from_f32<__half> (float v)
{
    return __float2half_rn (v);
}

template <typename D, typename S>
__global__ static void
k_convert (D *dst, const S *src, size_t n)
{
    for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
         i += (size_t) gridDim.x * blockDim.x) {
        dst[i] = s_from_f32<D> (s_to_f32 (src[i]));
    }
}

__global__ static void
k_bias_act (float *x, const float *bias, size_t total, int cols, bool relu)
{
    for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < total;
         i += (size_t) gridDim.x * blockDim.x) {
        float v = x[i] + (bias ? bias[i % (size_t) cols] : 0.0f);
        x[i] = relu && v < 0.0f ? 0.0f : v;
    }
}

__device__ static inline float
s_warp_max (float v)
{
    for (int offset = 16; offset > 0; offset >>= 1) {
        v = fmaxf (v, __shfl_xor_sync (0xffffffffu, v, offset));
    }
    return v;
}

template <typename T>
__device__ static inline T
s_warp_sum (T v)
{
    for (int offset = 16; offset > 0; offset >>= 1) {
        v += __shfl_xor_sync (0xffffffffu, v, offset);
    }
    return v;
}

/* Block-wide reductions: every thread gets the result. shared holds 32 values. */
__device__ static float
s_block_max (float v, float *shared)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = s_warp_max (v);
    __syncthreads (); /* shared may still be read from a previous reduction */
    if (lane == 0) {
        shared[warp] = v;
    }
    __syncthreads ();
    return s_warp_max (lane < warps ? shared[lane] : -INFINITY);
}

template <typename T>
__device__ static T
s_block_sum (T v, T *shared)
{
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = s_warp_sum (v);
    __syncthreads ();
    if (lane == 0) {
        shared[warp] = v;
    }
    __syncthreads ();
    return s_warp_sum (lane < warps ? shared[lane] : T (0));
}

/* One block per row: maximum, sum of exponentials, scale. */
__global__ static void
k_softmax (float *x, int cols)
{
    __shared__ float shared[32];
    float *row = x + (size_t) blockIdx.x * cols;
    float top = -INFINITY;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        top = fmaxf (top, row[c]);
    }
    top = s_block_max (top, shared);
    float total = 0.0f;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        float e = expf (row[c] - top);
        row[c] = e;
        total += e;
    }
    total = s_block_sum (total, shared);
    float scale = 1.0f / total;
    for (int c = threadIdx.x; c < cols; c += blockDim.x) {
        row[c] *= scale;
    }
}

__global__ static void
k_sum (const float *x, size_t n, double *out)
{
    __shared__ double shared[32];
    double acc = 0;
    for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
         i += (size_t) gridDim.x * blockDim.x) {
        acc += x[i];
    }
    acc = s_block_sum (acc, shared);
    if (threadIdx.x == 0) {
        atomicAdd (out, acc);
    }
}

/* ---- Device --------------------------------------------------------------------------------- */

/* FP32 lanes per SM by compute capability, for the TFLOPS estimate. */
static int
s_fp32_lanes (int major, int minor)
{
    if (major == 6) {
        return minor == 0 ? 64 : 128;
    }
    if (major == 7 || (major == 8 && minor == 0)) {
        return 64; /* Volta, Turing, A100 */
    }
    return 128; /* Ampere consumer, Ada, Hopper, Blackwell */
}

static int
s_dev_open (gq_bdev_t *dev, int ordinal, gq_cuda_sink_t sink)
{
    int count = 0;
    GQ_CUDA_CHECK (sink, cudaGetDeviceCount (&count));
    if (ordinal >= count) {
        snprintf (sink.text, sink.size, "cuda: device %d not present (%d devices)", ordinal,
                  count);
        return GQ_ENOTFOUND;
    }
    dev->ordinal = ordinal;
    GQ_CUDA_CHECK (sink, cudaSetDevice (ordinal));
    GQ_CUDA_CHECK (sink, cudaFree (0)); /* creates the primary context now, not in a job */
    cudaDeviceProp props;
    GQ_CUDA_CHECK (sink, cudaGetDeviceProperties (&props, ordinal));
    int clock_khz = 0;
    GQ_CUDA_CHECK (sink, cudaDeviceGetAttribute (&clock_khz, cudaDevAttrClockRate, ordinal));
    size_t free_bytes = 0, total_bytes = 0;
    GQ_CUDA_CHECK (sink, cudaMemGetInfo (&free_bytes, &total_bytes));
    gq_device_info_t *info = &dev->info;
    snprintf (info->name, sizeof info->name, "%.127s", props.name);
    info->cc_major = props.major;
    info->cc_minor = props.minor;
    info->sm_count = props.multiProcessorCount;
    info->clock_mhz = clock_khz / 1000;
    info->vram_total_mb = (int64_t) (total_bytes >> 20);
    info->vram_free_mb = (int64_t) (free_bytes >> 20);
    info->tflops = (double) props.multiProcessorCount * s_fp32_lanes (props.major, props.minor) *
                   2.0 * clock_khz * 1e3 / 1e12;
    info->is_gpu = true;
    gq_gpu_uuid_text ((const unsigned char *) props.uuid.bytes, info->uuid, sizeof info->uuid);
    dev->max_blocks = props.multiProcessorCount * S_BLOCKS_PER_SM;
    return GQ_OK;
}

static gq_bdev_t *
s_dev_open_ops (int ordinal, char *why, size_t whylen)
{
    gq_bdev_t *dev = (gq_bdev_t *) calloc (1, sizeof *dev);
    if (!dev) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    /* Quiet: on a machine without a GPU this failing is expected, and "auto" says so once. */
    if (s_dev_open (dev, ordinal, gq_cuda_sink_t{why, whylen, true, dev}) != GQ_OK) {
        free (dev);
        return NULL;
    }
    return dev;
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
    char why[256];
    gq_cuda_sink_t sink = {why, sizeof why, false, dev};
    *info = dev->info;
    GQ_CUDA_CHECK (sink, cudaSetDevice (dev->ordinal));
    size_t free_bytes = 0, total_bytes = 0;
    GQ_CUDA_CHECK (sink, cudaMemGetInfo (&free_bytes, &total_bytes));
    info->vram_free_mb = (int64_t) (free_bytes >> 20);
    return GQ_OK;
}

static bool
s_dev_lost (gq_bdev_t *dev, char *why, size_t whylen)
{
    int state = __atomic_load_n (&dev->lost, __ATOMIC_ACQUIRE);
    if (state != S_FINE) {
        snprintf (why, whylen, "%s", state == S_LOST ? dev->lost_why : "a sticky CUDA error");
    }
    return state != S_FINE;
}

static int
s_alloc (gq_bdev_t *dev, size_t bytes, void **ptr, char *why, size_t whylen)
{
    gq_cuda_sink_t sink = {why, whylen, false, dev};
    *ptr = NULL;
    GQ_CUDA_CHECK (sink, cudaSetDevice (dev->ordinal));
    GQ_CUDA_CHECK (sink, cudaMalloc (ptr, bytes ? bytes : 1));
    return GQ_OK;
}

static int
s_free_checked (gq_bdev_t *dev, void *ptr)
{
    char why[256];
    gq_cuda_sink_t sink = {why, sizeof why, false, dev};
    GQ_CUDA_CHECK (sink, cudaSetDevice (dev->ordinal));
    GQ_CUDA_CHECK (sink, cudaFree (ptr));
    return GQ_OK;
}

static void
s_free (gq_bdev_t *dev, void *ptr)
{
    if (ptr) {
        s_free_checked (dev, ptr); /* a failure is logged; there is nobody to tell */
    }
}

/* ---- Context -------------------------------------------------------------------------------- */

static void s_ctx_destroy (gq_bctx_t **ctx_p);

static int
s_ctx_init (gq_bctx_t *ctx)
{
    gq_cuda_sink_t sink = s_sink (ctx);
    GQ_CUDA_CHECK (sink, cudaSetDevice (ctx->dev->ordinal));
    GQ_CUDA_CHECK (sink, cudaStreamCreateWithFlags (&ctx->stream, cudaStreamNonBlocking));
    GQ_CUDA_CHECK (sink, cublasCreate (&ctx->blas));
    GQ_CUDA_CHECK (sink, cublasSetStream (ctx->blas, ctx->stream));
    GQ_CUDA_CHECK (sink, cudaEventCreate (&ctx->start));
    GQ_CUDA_CHECK (sink, cudaEventCreate (&ctx->stop));
    GQ_CUDA_CHECK (sink, cudaMalloc ((void **) &ctx->sum, sizeof (double)));
    return GQ_OK;
}

static gq_bctx_t *
s_ctx_new (gq_bdev_t *dev, char *why, size_t whylen)
{
    gq_bctx_t *ctx = (gq_bctx_t *) calloc (1, sizeof *ctx);
    if (!ctx) {
        snprintf (why, whylen, "out of memory");
        return NULL;
    }
    ctx->dev = dev;
    if (s_ctx_init (ctx) != GQ_OK) {
        snprintf (why, whylen, "%s", ctx->error);
        s_ctx_destroy (&ctx);
        return NULL;
    }
    return ctx;
}

static int
s_ctx_release (gq_bctx_t *ctx)
{
    gq_cuda_sink_t sink = s_sink (ctx);
    GQ_CUDA_CHECK (sink, cudaSetDevice (ctx->dev->ordinal));
    if (ctx->stream) {
        GQ_CUDA_CHECK (sink, cudaStreamSynchronize (ctx->stream));
    }
    for (int i = 0; i < GQ_SCRATCH_SLOTS; i++) {
        if (ctx->scratch[i]) {
            GQ_CUDA_CHECK (sink, cudaFree (ctx->scratch[i]));
            ctx->scratch[i] = NULL;
        }
    }
    if (ctx->sum) {
        GQ_CUDA_CHECK (sink, cudaFree (ctx->sum));
        ctx->sum = NULL;
    }
    if (ctx->start) {
        GQ_CUDA_CHECK (sink, cudaEventDestroy (ctx->start));
        ctx->start = NULL;
    }
    if (ctx->stop) {
        GQ_CUDA_CHECK (sink, cudaEventDestroy (ctx->stop));
        ctx->stop = NULL;
    }
    if (ctx->blas) {
        GQ_CUDA_CHECK (sink, cublasDestroy (ctx->blas));
        ctx->blas = NULL;
    }
    if (ctx->stream) {
        GQ_CUDA_CHECK (sink, cudaStreamDestroy (ctx->stream));
        ctx->stream = NULL;
    }
    return GQ_OK;
}

static void
s_ctx_destroy (gq_bctx_t **ctx_p)
{
    if (ctx_p && *ctx_p) {
        s_ctx_release (*ctx_p); /* failures are logged; the memory goes with the context */
        free (*ctx_p);
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
    /* Kernels are not interrupted: the callers check between launches. */
}

static int
s_scratch_grow (gq_bctx_t *ctx, int index, size_t bytes)
{
    gq_cuda_sink_t sink = s_sink (ctx);
    GQ_CUDA_CHECK (sink, cudaSetDevice (ctx->dev->ordinal));
    if (ctx->scratch[index]) {
        GQ_CUDA_CHECK (sink, cudaFree (ctx->scratch[index]));
        ctx->scratch[index] = NULL;
        ctx->scratch_bytes[index] = 0;
    }
    GQ_CUDA_CHECK (sink, cudaMalloc (&ctx->scratch[index], bytes ? bytes : 1));
    ctx->scratch_bytes[index] = bytes;
    return GQ_OK;
}

static void *
s_scratch (gq_bctx_t *ctx, int index, size_t bytes)
{
    assert (index >= 0 && index < GQ_SCRATCH_SLOTS);
    if (!ctx->scratch[index] || ctx->scratch_bytes[index] < bytes) {
        if (s_scratch_grow (ctx, index, bytes) != GQ_OK) {
            return NULL;
        }
    }
    return ctx->scratch[index];
}

static void
s_scratch_trim (gq_bctx_t *ctx, size_t keep_bytes)
{
    for (int i = 0; i < GQ_SCRATCH_SLOTS; i++) {
        if (ctx->scratch[i] && ctx->scratch_bytes[i] > keep_bytes) {
            s_free (ctx->dev, ctx->scratch[i]);
            ctx->scratch[i] = NULL;
            ctx->scratch_bytes[i] = 0;
        }
    }
}

/* ---- Transfers and element-wise work -------------------------------------------------------- */

static int
s_copy (gq_bctx_t *ctx, void *dst, const void *src, size_t bytes, cudaMemcpyKind kind)
{
    gq_cuda_sink_t sink = s_sink (ctx);
    if (!bytes) {
        return GQ_OK;
    }
    GQ_CUDA_CHECK (sink, cudaSetDevice (ctx->dev->ordinal));
    GQ_CUDA_CHECK (sink, cudaMemcpyAsync (dst, src, bytes, kind, ctx->stream));
    GQ_CUDA_CHECK (sink, cudaStreamSynchronize (ctx->stream));
    return GQ_OK;
}

static int
s_upload (gq_bctx_t *ctx, void *dst, const void *src, size_t bytes)
{
    return s_copy (ctx, dst, src, bytes, cudaMemcpyHostToDevice);
}

static int
s_download (gq_bctx_t *ctx, void *dst, const void *src, size_t bytes)
{
    return s_copy (ctx, dst, src, bytes, cudaMemcpyDeviceToHost);
}

static int
s_fill_random (gq_bctx_t *ctx, void *dst, gq_dtype_t dtype, size_t count, uint64_t seed)
{
    gq_cuda_sink_t sink = s_sink (ctx);
    if (!count) {
        return GQ_OK;
    }
    GQ_CUDA_CHECK (sink, cudaSetDevice (ctx->dev->ordinal));
    if (dtype == GQ_DTYPE_F32) {
        k_fill_f32<<<s_blocks (ctx, count), S_THREADS, 0, ctx->stream>>> ((float *) dst, count,
                                                                         seed);
    } else if (dtype == GQ_DTYPE_BF16) {
        k_fill_bf16<<<s_blocks (ctx, count), S_THREADS, 0, ctx->stream>>> (
            (__nv_bfloat16 *) dst, count, seed);
    } else {
        snprintf (ctx->error, sizeof ctx->error, "cuda: fill_random does not make %s",
                  gq_dtype_name (dtype));
        return GQ_EUNSUPPORTED;
    }
    GQ_CUDA_CHECK (sink, cudaGetLastError ());
    return GQ_OK;
}

static int
s_convert (gq_bctx_t *ctx, void *dst, gq_dtype_t dst_dtype, const void *src, gq_dtype_t src_dtype,
           size_t count)
{
    gq_cuda_sink_t sink = s_sink (ctx);
    if (!count) {
        return GQ_OK;
    }
    GQ_CUDA_CHECK (sink, cudaSetDevice (ctx->dev->ordinal));
    unsigned blocks = s_blocks (ctx, count);
    cudaStream_t stream = ctx->stream;
    if (dst_dtype == src_dtype) {
        GQ_CUDA_CHECK (sink, cudaMemcpyAsync (dst, src, count * gq_dtype_size (src_dtype),
                                              cudaMemcpyDeviceToDevice, stream));
        return GQ_OK;
    }
    if (src_dtype == GQ_DTYPE_F32 && dst_dtype == GQ_DTYPE_BF16) {
        k_convert<<<blocks, S_THREADS, 0, stream>>> ((__nv_bfloat16 *) dst, (const float *) src,
                                                     count);
    } else if (src_dtype == GQ_DTYPE_F32 && dst_dtype == GQ_DTYPE_F16) {
        k_convert<<<blocks, S_THREADS, 0, stream>>> ((__half *) dst, (const float *) src, count);
    } else if (src_dtype == GQ_DTYPE_BF16 && dst_dtype == GQ_DTYPE_F32) {
        k_convert<<<blocks, S_THREADS, 0, stream>>> ((float *) dst, (const __nv_bfloat16 *) src,
                                                     count);
    } else if (src_dtype == GQ_DTYPE_F16 && dst_dtype == GQ_DTYPE_F32) {
        k_convert<<<blocks, S_THREADS, 0, stream>>> ((float *) dst, (const __half *) src, count);
    } else {
        snprintf (ctx->error, sizeof ctx->error, "cuda: no conversion from %s to %s",
                  gq_dtype_name (src_dtype), gq_dtype_name (dst_dtype));
        return GQ_EUNSUPPORTED;
    }
    GQ_CUDA_CHECK (sink, cudaGetLastError ());
    return GQ_OK;
}

static int
s_bias_act (gq_bctx_t *ctx, float *x, const float *bias, int rows, int cols, bool relu)
{
    gq_cuda_sink_t sink = s_sink (ctx);
    size_t total = (size_t) rows * (size_t) cols;
    if (!total) {
        return GQ_OK;
    }
    GQ_CUDA_CHECK (sink, cudaSetDevice (ctx->dev->ordinal));
    k_bias_act<<<s_blocks (ctx, total), S_THREADS, 0, ctx->stream>>> (x, bias, total, cols, relu);
    GQ_CUDA_CHECK (sink, cudaGetLastError ());
    return GQ_OK;
}

static int
s_softmax (gq_bctx_t *ctx, float *x, int rows, int cols)
{
    gq_cuda_sink_t sink = s_sink (ctx);
    if (rows <= 0 || cols <= 0) {
        return GQ_OK;
    }
    GQ_CUDA_CHECK (sink, cudaSetDevice (ctx->dev->ordinal));
    k_softmax<<<(unsigned) rows, S_THREADS, 0, ctx->stream>>> (x, cols);
    GQ_CUDA_CHECK (sink, cudaGetLastError ());
    return GQ_OK;
}

static int
s_sum (gq_bctx_t *ctx, const float *x, size_t count, double *out)
{
    gq_cuda_sink_t sink = s_sink (ctx);
    GQ_CUDA_CHECK (sink, cudaSetDevice (ctx->dev->ordinal));
    GQ_CUDA_CHECK (sink, cudaMemsetAsync (ctx->sum, 0, sizeof (double), ctx->stream));
    if (count) {
        k_sum<<<s_blocks (ctx, count), S_THREADS, 0, ctx->stream>>> (x, count, ctx->sum);
        GQ_CUDA_CHECK (sink, cudaGetLastError ());
    }
    GQ_CUDA_CHECK (sink, cudaMemcpyAsync (out, ctx->sum, sizeof (double), cudaMemcpyDeviceToHost,
                                          ctx->stream));
    GQ_CUDA_CHECK (sink, cudaStreamSynchronize (ctx->stream));
    return GQ_OK;
}

static int
s_timer_start (gq_bctx_t *ctx)
{
    gq_cuda_sink_t sink = s_sink (ctx);
    GQ_CUDA_CHECK (sink, cudaSetDevice (ctx->dev->ordinal));
    GQ_CUDA_CHECK (sink, cudaEventRecord (ctx->start, ctx->stream));
    return GQ_OK;
}

static int
s_timer_stop (gq_bctx_t *ctx, double *ms)
{
    gq_cuda_sink_t sink = s_sink (ctx);
    float elapsed = 0;
    GQ_CUDA_CHECK (sink, cudaSetDevice (ctx->dev->ordinal));
    GQ_CUDA_CHECK (sink, cudaEventRecord (ctx->stop, ctx->stream));
    GQ_CUDA_CHECK (sink, cudaEventSynchronize (ctx->stop));
    GQ_CUDA_CHECK (sink, cudaEventElapsedTime (&elapsed, ctx->start, ctx->stop));
    *ms = elapsed;
    return GQ_OK;
}

/* ---- GEMM ----------------------------------------------------------------------------------- */

static int
s_gemm (gq_bctx_t *ctx, gq_gemm_mode_t mode, int m, int n, int k, const void *a, const void *b,
        bool trans_b, float *c)
{
    gq_cuda_sink_t sink = s_sink (ctx);
    if (m < 0 || n < 0 || k < 0) {
        snprintf (ctx->error, sizeof ctx->error, "cuda: gemm with negative sizes");
        return GQ_EINVAL;
    }
    if (m == 0 || n == 0) {
        return GQ_OK;
    }
    GQ_CUDA_CHECK (sink, cudaSetDevice (ctx->dev->ordinal));
    const float one = 1.0f, zero = 0.0f;
    /* Column-major view: C^T[n,m] = op(B)^T[n,k] . A^T[k,m]. Row-major B[k,n] is already
       B^T[n,k] column-major (ld n); a transposed B[n,k] is [k,n] column-major (ld k) and needs
       op T. Row-major A[m,k] is A^T[k,m] column-major with ld k. */
    cublasOperation_t op_b = trans_b ? CUBLAS_OP_T : CUBLAS_OP_N;
    int ldb = trans_b ? k : n;
    if (mode == GQ_GEMM_F32) {
        GQ_CUDA_CHECK (sink, cublasSgemm (ctx->blas, op_b, CUBLAS_OP_N, n, m, k, &one,
                                          (const float *) b, ldb, (const float *) a, k, &zero, c,
                                          n));
    } else {
        cudaDataType_t in_type = mode == GQ_GEMM_BF16 ? CUDA_R_16BF : CUDA_R_32F;
        cublasComputeType_t compute =
            mode == GQ_GEMM_TF32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
        GQ_CUDA_CHECK (sink, cublasGemmEx (ctx->blas, op_b, CUBLAS_OP_N, n, m, k, &one, b, in_type,
                                           ldb, a, in_type, k, &zero, c, CUDA_R_32F, n, compute,
                                           CUBLAS_GEMM_DEFAULT));
    }
    return GQ_OK;
}

/* ---- The table ------------------------------------------------------------------------------ */

/* C++17 has no designated initializers: the fields in the order of gq_backend_ops_t. */
extern "C" const gq_backend_ops_t gq_backend_cuda_ops = {
    "cuda",          /* name */
    s_dev_open_ops,  /* dev_open */
    s_dev_close,     /* dev_close */
    s_dev_info,      /* dev_info */
    s_dev_lost,      /* dev_lost */
    s_alloc,         /* alloc */
    s_free,          /* free */
    s_ctx_new,       /* ctx_new */
    s_ctx_destroy,   /* ctx_destroy */
    s_ctx_error,     /* ctx_error */
    s_ctx_set_abort, /* ctx_set_abort */
    s_scratch,       /* scratch */
    s_scratch_trim,  /* scratch_trim */
    s_upload,        /* upload */
    s_download,      /* download */
    s_fill_random,   /* fill_random */
    s_convert,       /* convert */
    s_gemm,          /* gemm */
    s_bias_act,      /* bias_act */
    s_softmax,       /* softmax */
    s_sum,           /* sum */
    s_timer_start,   /* timer_start */
    s_timer_stop,    /* timer_stop */
};
