/*  selftest_guard.c — runs the guard's selftest (CURVE roles, token buckets, the queued cap,
    the refusal of non-loopback binds without CURVE): gridq-guard-selftest [-v] */
#include <czmq.h>
#include <stdio.h>
#include <string.h>

#include "guard.h"

int
main (int argc, char **argv)
{
    bool verbose = argc > 1 && strcmp (argv[1], "-v") == 0;
    zsys_init ();
    printf ("selftest guard: ");
    fflush (stdout);
    gq_guard_test (verbose);
    printf ("%sOK\n", verbose ? "\n" : "");
    return 0;
}
