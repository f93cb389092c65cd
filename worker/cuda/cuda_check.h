/*  cuda_check.h — the one check that every CUDA runtime and cuBLAS call in worker/cuda/ goes
    through. A failed call is logged (unless the sink is quiet), its reason written where the
    caller asked, and the enclosing function returns an error code: GQ_ENOMEM when memory ran
    out, GQ_EBACKEND otherwise. Nothing aborts: the job fails. A sticky error (cuda_errors.h)
    also marks the sink's device lost, which the worker sees after the job (dev_lost) and exits
    on, so that a new process gets a working context.

    Use it only in functions that return int; functions that return pointers wrap one that does.
    This header is CUDA-only (C++ overloads pick the status type) and stays in this folder. */
#ifndef GQ_CUDA_CHECK_H_INCLUDED
#define GQ_CUDA_CHECK_H_INCLUDED

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stddef.h>

#include "backend.h"
#include "cuda_errors.h"
#include "gq_common.h"

/* Where a failure's reason goes. */
typedef struct {
    char *text;     /* the buffer for the reason */
    size_t size;    /* its size */
    bool quiet;     /* true: do not log (probing for a device that may well be absent) */
    gq_bdev_t *dev; /* marked lost by a sticky error (NULL: no device yet) */
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

static inline bool
gq_cuda_sticky (cudaError_t rc)
{
    return gq_cuda_error_is_sticky ((int) rc);
}

/* cuBLAS reports a kernel it could not launch as a status of its own: the runtime, asked once
   more (the context is current: every entry point selects the device first), says whether the
   context behind it is lost. */
static inline bool
gq_cuda_sticky (cublasStatus_t rc)
{
    size_t free_bytes = 0, total_bytes = 0;
    return (rc == CUBLAS_STATUS_EXECUTION_FAILED || rc == CUBLAS_STATUS_INTERNAL_ERROR) &&
           gq_cuda_error_is_sticky ((int) cudaMemGetInfo (&free_bytes, &total_bytes));
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

/* Writes "cuda: <call> failed: <text>" into the sink and logs it; a sticky error marks the
   sink's device lost (backend_cuda.cu). */
void gq_cuda_report (gq_cuda_sink_t sink, const char *call, const char *file, int line,
                     const char *text, bool sticky);

#define GQ_CUDA_CHECK(sink, call)                                                              \
    do {                                                                                       \
        auto gq_cuda_rc_ = (call);                                                             \
        if (!gq_cuda_ok (gq_cuda_rc_)) {                                                       \
            gq_cuda_report ((sink), #call, __FILE__, __LINE__, gq_cuda_text (gq_cuda_rc_),     \
                            gq_cuda_sticky (gq_cuda_rc_));                                     \
            return gq_cuda_code (gq_cuda_rc_);                                                 \
        }                                                                                      \
    } while (0)

#endif
