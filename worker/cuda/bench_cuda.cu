/*  bench_cuda.cu — raw cuBLAS GEMM timing for gridq-bench-gemm (see bench_cuda.h). */
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <string.h>

#include "bench_cuda.h"
#include "cuda_check.h"

/* What one measurement holds, released whatever happens. */
typedef struct {
    cudaStream_t stream;  /* the stream everything runs on */
    cublasHandle_t blas;  /* the handle */
    cudaEvent_t start;    /* before the timed loop */
    cudaEvent_t stop;     /* after it */
    void *a;              /* m x k operand */
    void *b;              /* k x n operand */
    float *c;             /* m x n result */
} s_bench_t;

__global__ static void
k_fill (float *f32, __nv_bfloat16 *bf16, size_t n, unsigned seed)
{
    for (size_t i = blockIdx.x * (size_t) blockDim.x + threadIdx.x; i < n;
         i += (size_t) gridDim.x * blockDim.x) {
        /* Any values in [-1, 1) will do; a cheap integer hash spreads them. */
        unsigned h = (unsigned) i * 2654435761u ^ seed;
        h ^= h >> 15;
        h *= 2246822519u;
        h ^= h >> 13;
        float v = (float) (h >> 8) / 8388608.0f - 1.0f;
        if (bf16) {
            bf16[i] = __float2bfloat16_rn (v);
        } else {
            f32[i] = v;
        }
    }
}

static int
s_measure (s_bench_t *r, int device, const char *dtype, int m, int n, int k, int repeat,
           double *ms, gq_cuda_sink_t sink)
{
    bool bf16 = strcmp (dtype, "bf16") == 0;
    bool tf32 = strcmp (dtype, "tf32") == 0;
    size_t elem = bf16 ? 2 : 4;
    GQ_CUDA_CHECK (sink, cudaSetDevice (device));
    GQ_CUDA_CHECK (sink, cudaStreamCreateWithFlags (&r->stream, cudaStreamNonBlocking));
    GQ_CUDA_CHECK (sink, cublasCreate (&r->blas));
    GQ_CUDA_CHECK (sink, cublasSetStream (r->blas, r->stream));
    GQ_CUDA_CHECK (sink, cudaEventCreate (&r->start));
    GQ_CUDA_CHECK (sink, cudaEventCreate (&r->stop));
    GQ_CUDA_CHECK (sink, cudaMalloc (&r->a, (size_t) m * k * elem));
    GQ_CUDA_CHECK (sink, cudaMalloc (&r->b, (size_t) k * n * elem));
    GQ_CUDA_CHECK (sink, cudaMalloc ((void **) &r->c, (size_t) m * n * sizeof (float)));
    k_fill<<<1024, 256, 0, r->stream>>> (bf16 ? NULL : (float *) r->a,
                                         bf16 ? (__nv_bfloat16 *) r->a : NULL, (size_t) m * k, 1);
    k_fill<<<1024, 256, 0, r->stream>>> (bf16 ? NULL : (float *) r->b,
                                         bf16 ? (__nv_bfloat16 *) r->b : NULL, (size_t) k * n, 2);
    GQ_CUDA_CHECK (sink, cudaGetLastError ());
    const float one = 1.0f, zero = 0.0f;
    cudaDataType_t in_type = bf16 ? CUDA_R_16BF : CUDA_R_32F;
    cublasComputeType_t compute = tf32 ? CUBLAS_COMPUTE_32F_FAST_TF32 : CUBLAS_COMPUTE_32F;
    /* Row-major C = A . B as column-major C^T = B^T . A^T, as the backend issues it. */
    for (int i = -1; i < repeat; i++) {
        if (i == 0) {
            GQ_CUDA_CHECK (sink, cudaEventRecord (r->start, r->stream));
        }
        if (!bf16 && !tf32) {
            GQ_CUDA_CHECK (sink, cublasSgemm (r->blas, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one,
                                              (const float *) r->b, n, (const float *) r->a, k,
                                              &zero, r->c, n));
        } else {
            GQ_CUDA_CHECK (sink, cublasGemmEx (r->blas, CUBLAS_OP_N, CUBLAS_OP_N, n, m, k, &one,
                                               r->b, in_type, n, r->a, in_type, k, &zero, r->c,
                                               CUDA_R_32F, n, compute, CUBLAS_GEMM_DEFAULT));
        }
    }
    GQ_CUDA_CHECK (sink, cudaEventRecord (r->stop, r->stream));
    GQ_CUDA_CHECK (sink, cudaEventSynchronize (r->stop));
    float elapsed = 0;
    GQ_CUDA_CHECK (sink, cudaEventElapsedTime (&elapsed, r->start, r->stop));
    *ms = (double) elapsed / repeat;
    return GQ_OK;
}

/* Releases what s_measure made; a failure is logged and changes nothing for the figure. */
static int
s_release (s_bench_t *r, gq_cuda_sink_t sink)
{
    if (r->a) {
        GQ_CUDA_CHECK (sink, cudaFree (r->a));
    }
    if (r->b) {
        GQ_CUDA_CHECK (sink, cudaFree (r->b));
    }
    if (r->c) {
        GQ_CUDA_CHECK (sink, cudaFree (r->c));
    }
    if (r->start) {
        GQ_CUDA_CHECK (sink, cudaEventDestroy (r->start));
    }
    if (r->stop) {
        GQ_CUDA_CHECK (sink, cudaEventDestroy (r->stop));
    }
    if (r->blas) {
        GQ_CUDA_CHECK (sink, cublasDestroy (r->blas));
    }
    if (r->stream) {
        GQ_CUDA_CHECK (sink, cudaStreamDestroy (r->stream));
    }
    return GQ_OK;
}

extern "C" int
gq_cuda_bench_gemm (int device, const char *dtype, int m, int n, int k, int repeat, double *ms,
                    char *why, size_t whylen)
{
    if (repeat < 1 || m < 1 || n < 1 || k < 1) {
        snprintf (why, whylen, "bad sizes");
        return GQ_EINVAL;
    }
    s_bench_t r;
    memset (&r, 0, sizeof r);
    int rc = s_measure (&r, device, dtype, m, n, k, repeat, ms,
                        gq_cuda_sink_t{why, whylen, false, nullptr});
    char ignored[256];
    s_release (&r, gq_cuda_sink_t{ignored, sizeof ignored, false, nullptr});
    return rc;
}
