/*  selftest.c — runs one protocol module's selftest by name: gridq-proto-selftest msg [-v] */
#include "gq_arrayview.h"
#include "gq_client.h"
#include "gq_json.h"
#include "gq_msg.h"
#include "gq_result.h"
#include "gq_selftest.h"
#include "gq_spec.h"

void gq_common_test (bool verbose);

static const gq_selftest_t s_tests[] = {
    {"common", gq_common_test, false},
    {"json", gq_json_test, false},
    {"msg", gq_msg_test, false},
    {"result", gq_result_test, false},
    {"spec", gq_spec_test, false},
    {"client", gq_client_test, false},
    {"arrayview", gq_arrayview_test, false},
};

int
main (int argc, char **argv)
{
    return gq_selftest_main (argc, argv, s_tests, sizeof s_tests / sizeof s_tests[0]);
}
