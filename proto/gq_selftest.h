/*  gq_selftest.h — the one driver of gridq's selftests: a program lists its modules' selftests
    in a table and hands it to gq_selftest_main, which runs one by name or all of them:
    gridq-broker-selftest [MODULE] [-v]. */
#ifndef GQ_SELFTEST_H_INCLUDED
#define GQ_SELFTEST_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef struct {
    const char *name;            /* the module, as ctest names it (selftest_NAME) */
    void (*test) (bool verbose); /* aborts on a failure (gq_check.h) */
    bool alone;                  /* run only when named, not in a run of all (a device test) */
} gq_selftest_t;

/* Runs the selftest named by argv[1] (every one not alone without it), printing "selftest
   NAME: OK". Returns 0, or 2 when argv[1] names no selftest of the table. */
int gq_selftest_main (int argc, char **argv, const gq_selftest_t *tests, size_t count);

#endif
