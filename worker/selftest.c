/*  selftest.c — runs one worker module's selftest by name: gridq-worker-selftest model [-v]

    With no name it runs every CPU selftest. "cuda" (CUDA against the CPU oracle) exits 77,
    which ctest reports as skipped, when the build has no CUDA or the machine no device. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "exec.h"
#include "handler.h"
#include "model.h"
#include "safetensors.h"

void gq_mlp_reference_test (bool verbose);
void gq_cuda_test (bool verbose);
void gq_cuda_errors_test (bool verbose);

static const struct {
    const char *name;            /* the module, as named on the command line */
    void (*test) (bool verbose); /* its selftest; asserts on failure */
    bool in_all;                 /* part of a run with no name */
} s_tests[] = {
    {"backend", gq_backend_test, true},
    {"safetensors", gq_safetensors_test, true},
    {"model", gq_model_test, true},
    {"handler", gq_handler_test, true},
    {"exec", gq_exec_test, true},
    {"mlp_reference", gq_mlp_reference_test, true},
    {"cuda_errors", gq_cuda_errors_test, true},
    {"cuda", gq_cuda_test, false},
};

int
main (int argc, char **argv)
{
    bool verbose = argc > 2 && strcmp (argv[2], "-v") == 0;
    bool found = false;
    for (size_t i = 0; i < sizeof s_tests / sizeof s_tests[0]; i++) {
        if ((argc < 2 && s_tests[i].in_all) || (argc >= 2 && strcmp (argv[1], s_tests[i].name) == 0)) {
            printf ("selftest %s: ", s_tests[i].name);
            fflush (stdout);
            s_tests[i].test (verbose);
            printf ("OK\n");
            found = true;
        }
    }
    if (!found) {
        fprintf (stderr, "gridq-worker-selftest: no selftest '%s'\n", argv[1]);
        return 2;
    }
    return 0;
}
