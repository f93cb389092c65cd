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
    {"job", gq_job_test},         {"queue", gq_queue_test},     {"treap", gq_treap_test},
    {"matcher", gq_matcher_test}, {"explain", gq_explain_test}, {"sched", gq_sched_test},
    {"store", gq_store_test},     {"writer", gq_writer_test},   {"reader", gq_reader_test},
    {"guard", gq_guard_test},     {"metrics", gq_metrics_test},
};

int
main (int argc, char **argv)
{
    return gq_selftest_main (argc, argv, s_tests, sizeof s_tests / sizeof s_tests[0]);
}
