/*  selftest.c — runs one worker module's selftest by name: gridq-worker-selftest model [-v]

    With no name it runs every CPU selftest. "cuda" (CUDA against the CPU oracle) exits 77,
    which ctest reports as skipped, when the build has no CUDA or the machine no device. */
#include "backend.h"
#include "exec.h"
#include "gq_selftest.h"
#include "engine.h"
#include "handler.h"
#include "model.h"
#include "openai.h"
#include "safetensors.h"

void gq_mlp_reference_test (bool verbose);
void gq_cuda_test (bool verbose);
void gq_cuda_errors_test (bool verbose);

static const gq_selftest_t s_tests[] = {
    {"backend", gq_backend_test, false},
    {"safetensors", gq_safetensors_test, false},
    {"model", gq_model_test, false},
    {"handler", gq_handler_test, false},
    {"engine", gq_engine_test, false},
    {"openai", gq_openai_test, false},
    {"exec", gq_exec_test, false},
    {"mlp_reference", gq_mlp_reference_test, false},
    {"cuda_errors", gq_cuda_errors_test, false},
    {"cuda", gq_cuda_test, true},
};

int
main (int argc, char **argv)
{
    return gq_selftest_main (argc, argv, s_tests, sizeof s_tests / sizeof s_tests[0]);
}
