/*  cuda_check.h — the one check that every CUDA runtime and cuBLAS call in worker/cuda/ goes
    through. A failed call is logged (unless the sink is quiet), its reason written where the
    caller asked, and the enclosing function returns an error code: GQ_ENOMEM when memory ran
    out, GQ_EBACKEND otherwise. Nothing aborts: the job fails and the worker lives on.

    Use it only in functions that return int; functions that return pointers wrap one that does.
    This header is CUDA-only (C++ overloads pick the status type) and stays in this folder. */
#ifndef GQ_CUDA_CHECK_H_INCLUDED
#define GQ_CUDA_CHECK_H_INCLUDED

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>

#include "gq_common.h"

/* Where a failure's reason goes. */
typedef struct {
    char *text;  /* the buffer for the reason */
    size_t size; /* its size */
    bool quiet;  /* true: do not log (probing for a device that may well be absent) */
} gq_cuda_sink_t;

static inline bool
gq_cuda_ok (cudaError_t rc)
{
    return rc == cudaSuccess;
}

static inline bool
gq_cuda_ok (cublasStatus_t rc)
{
    return rc == CUBLAS_STATUS_SUCCESS;
}

static inline const char *
gq_cuda_text (cudaError_t rc)
{
    return cudaGetErrorString (rc);
}

static inline const char *
gq_cuda_text (cublasStatus_t rc)
{
    return cublasGetStatusString (rc);
}

static inline int
gq_cuda_code (cudaError_t rc)
{
    return rc == cudaErrorMemoryAllocation ? GQ_ENOMEM : GQ_EBACKEND;
}

static inline int
gq_cuda_code (cublasStatus_t rc)
{
    return rc == CUBLAS_STATUS_ALLOC_FAILED ? GQ_ENOMEM : GQ_EBACKEND;
}

/* Writes "cuda: <call> failed: <text>" into the sink and logs it (backend_cuda.cu). */
void gq_cuda_report (gq_cuda_sink_t sink, const char *call, const char *file, int line,
                     const char *text);

#define GQ_CUDA_CHECK(sink, call)                                                              \
    do {                                                                                       \
        auto gq_cuda_rc_ = (call);                                                             \
        if (!gq_cuda_ok (gq_cuda_rc_)) {                                                       \
            gq_cuda_report ((sink), #call, __FILE__, __LINE__, gq_cuda_text (gq_cuda_rc_));    \
            return gq_cuda_code (gq_cuda_rc_);                                                 \
        }                                                                                      \
    } while (0)

#endif
