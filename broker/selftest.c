/*  selftest.c — runs one broker module's selftest by name: gridq-broker-selftest matcher */
#include <stdio.h>
#include <string.h>

#include "explain.h"
#include "matcher.h"
#include "queue.h"
#include "sched.h"
#include "store.h"
#include "treap.h"
#include "writer.h"

void gq_job_test (bool verbose);

static const struct {
    const char *name;
    void (*test) (bool verbose);
} s_tests[] = {
    {"job", gq_job_test},         {"queue", gq_queue_test},     {"treap", gq_treap_test},
    {"matcher", gq_matcher_test}, {"explain", gq_explain_test}, {"sched", gq_sched_test},
    {"store", gq_store_test},     {"writer", gq_writer_test},
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
