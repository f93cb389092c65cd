# For operators and users: /metrics, gridq-top, batch progress and every program's --help (the
# metrics module's own selftest, selftest_metrics, runs from broker/).
# gridq-top against a live broker and two CPU workers (--once, --once --json, the full screen
# on a pseudo-terminal). Skipped (77) when gridq-top or gridq-worker is not built.
if(TARGET gridq-top)
  gq_integration_test(integration_top test_top.c 180)
  target_sources(integration_top PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/ops_pty.c)
  target_link_libraries(integration_top PRIVATE util)
  set_tests_properties(integration_top PROPERTIES SKIP_RETURN_CODE 77)
endif()

# /metrics of a real broker after jobs ran, scraped and parsed.
if(MHD_FOUND)
  gq_integration_test(integration_metrics_http test_metrics_http.c 120)
  target_link_libraries(integration_metrics_http PRIVATE gq_brokercore)
  set_tests_properties(integration_metrics_http PROPERTIES SKIP_RETURN_CODE 77)
endif()

# gridq submit --file --wait: progress on a terminal, none in a file, the summary, the status.
gq_integration_test(integration_batch test_batch.c 180)
target_sources(integration_batch PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/ops_pty.c)
target_link_libraries(integration_batch PRIVATE util)
set_tests_properties(integration_batch PROPERTIES SKIP_RETURN_CODE 77)

# Every program's --help, and an unknown option refused.
gq_shell_test(help_all test_help.sh 120)
