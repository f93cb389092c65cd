/*  selftest.c — runs one protocol module's selftest by name: gridq-proto-selftest msg */
#include <stdio.h>
#include <string.h>

#include "gq_client.h"
#include "gq_json.h"
#include "gq_msg.h"
#include "gq_spec.h"

void gq_common_test (bool verbose);

static const struct {
    const char *name;
    void (*test) (bool verbose);
} s_tests[] = {
    {"common", gq_common_test},
    {"json", gq_json_test},
    {"msg", gq_msg_test},
    {"spec", gq_spec_test},
    {"client", gq_client_test},
};

int
main (int argc, char **argv)
{
    bool verbose = argc > 2 && strcmp (argv[2], "-v") == 0;
    for (size_t i = 0; i < sizeof s_tests / sizeof s_tests[0]; i++) {
        if (argc < 2 || strcmp (argv[1], s_tests[i].name) == 0) {
            printf ("selftest %s: ", s_tests[i].name);
            fflush (stdout);
            s_tests[i].test (verbose);
            printf ("OK\n");
        }
    }
    return 0;
}
