/*  cuda_errors.h — which CUDA runtime errors are sticky: after one, the process's CUDA context
    is unusable, every later call returns the same error, and only a new process recovers the
    device. Plain C over the numeric cudaError_t values, so that it is built and tested in every
    build, with or without CUDA; the CUDA backend checks the numbers against cuda_runtime.h at
    compile time. */
#ifndef GQ_CUDA_ERRORS_H_INCLUDED
#define GQ_CUDA_ERRORS_H_INCLUDED

#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Whether cudaError_t `code` is sticky: those the CUDA documentation says leave "the process in
   an inconsistent state" and need it "terminated and relaunched" (an illegal address, a kernel
   that faulted, a device assert, a hardware stack error, an illegal instruction, a misaligned
   address, a launch timeout, ...), and the uncorrectable ECC and NVLink errors. */
bool gq_cuda_error_is_sticky (int code);

#ifdef __cplusplus
}
#endif

#endif
