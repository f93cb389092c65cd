/*  gq_selftest.c — the one selftest driver (gq_selftest.h). */
#include "gq_selftest.h"

#include <czmq.h>
#include <stdio.h>
#include <string.h>

int
gq_selftest_main (int argc, char **argv, const gq_selftest_t *tests, size_t count)
{
    const char *only = argc > 1 && strcmp (argv[1], "-v") != 0 ? argv[1] : NULL;
    bool verbose = strcmp (argv[argc - 1], "-v") == 0;
    zsys_init ();
    zsys_set_logstream (stderr);
    int ran = 0;
    for (size_t i = 0; i < count; i++) {
        if (only ? strcmp (only, tests[i].name) == 0 : !tests[i].alone) {
            printf ("selftest %s: ", tests[i].name);
            fflush (stdout);
            tests[i].test (verbose);
            printf ("OK\n");
            ran++;
        }
    }
    if (!ran) {
        fprintf (stderr, "%s: no selftest named %s\n", argv[0], only);
        return 2;
    }
    return 0;
}
