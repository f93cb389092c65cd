/*  cuda_errors.c — the sticky CUDA errors, by number (cuda_errors.h). */
#include "cuda_errors.h"

#include <stddef.h>

/* cudaError_t values, named as in driver_types.h. The numbers never change between CUDA
   releases; backend_cuda.cu checks the long-standing ones against the header. */
static const int s_sticky[] = {
    214, /* cudaErrorECCUncorrectable */
    220, /* cudaErrorNvlinkUncorrectable */
    226, /* cudaErrorContained: a hardware error or bad NVLink access, contained */
    700, /* cudaErrorIllegalAddress */
    702, /* cudaErrorLaunchTimeout */
    710, /* cudaErrorAssert */
    714, /* cudaErrorHardwareStackError */
    715, /* cudaErrorIllegalInstruction */
    716, /* cudaErrorMisalignedAddress */
    717, /* cudaErrorInvalidAddressSpace */
    718, /* cudaErrorInvalidPc */
    719, /* cudaErrorLaunchFailure */
    721, /* cudaErrorTensorMemoryLeak */
    810, /* cudaErrorMpsClientTerminated */
    911, /* cudaErrorExternalDevice */
};

bool
gq_cuda_error_is_sticky (int code)
{
    for (size_t i = 0; i < sizeof s_sticky / sizeof s_sticky[0]; i++) {
        if (s_sticky[i] == code) {
            return true;
        }
    }
    return false;
}
