/*  bench_cuda.h — cuBLAS timed alone, with no gridq code around it: the peer that
    gridq-bench-gemm sets the job path against. Built only with the CUDA backend. */
#ifndef GQ_BENCH_CUDA_H_INCLUDED
#define GQ_BENCH_CUDA_H_INCLUDED

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Times `repeat` GEMMs of m x n x k ("f32": cublasSgemm; "tf32" and "bf16": cublasGemmEx with
   TF32 tensor cores or bf16 inputs and f32 accumulation) on random operands of its own, after
   one untimed warm-up, with CUDA events. 0 and the mean milliseconds per GEMM in *ms, or an
   error (gq_err_t) with a reason. */
int gq_cuda_bench_gemm (int device, const char *dtype, int m, int n, int k, int repeat,
                        double *ms, char *why, size_t whylen);

#ifdef __cplusplus
}
#endif

#endif
