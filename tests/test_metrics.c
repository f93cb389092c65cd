/*  test_metrics.c — runs the metrics selftest (broker/metrics.c): histograms rendered as
    Prometheus text, and /metrics served by libmicrohttpd and scraped while a zloop runs. */
#include <czmq.h>
#include <string.h>

#include "metrics.h"

int
main (int argc, char **argv)
{
    bool verbose = argc > 1 && (strcmp (argv[1], "-v") == 0 || strcmp (argv[1], "--verbose") == 0);
    zsys_init ();
    zsys_set_logstream (stderr);
    gq_metrics_test (verbose);
    return 0;
}
