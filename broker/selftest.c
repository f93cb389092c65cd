/*  selftest.c — runs one broker module's selftest by name: gridq-broker-selftest matcher [-v] */
#include "explain.h"
#include "gq_selftest.h"
#include "guard.h"
#include "matcher.h"
#include "metrics.h"
#include "queue.h"
#include "reader.h"
#include "sched.h"
#include "store.h"
#include "treap.h"
#include "writer.h"

static const gq_selftest_t s_tests[] = {
    {"job", gq_job_test, false},         {"queue", gq_queue_test, false},
    {"treap", gq_treap_test, false},     {"matcher", gq_matcher_test, false},
    {"explain", gq_explain_test, false}, {"sched", gq_sched_test, false},
    {"store", gq_store_test, false},     {"writer", gq_writer_test, false},
    {"reader", gq_reader_test, false},   {"guard", gq_guard_test, false},
    {"metrics", gq_metrics_test, false},
};

int
main (int argc, char **argv)
{
    return gq_selftest_main (argc, argv, s_tests, sizeof s_tests / sizeof s_tests[0]);
}
