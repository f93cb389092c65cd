# gridq-bench-match: decision latency of the matcher at 100..100k nodes (not a timed test).
add_executable(gridq-bench-match ${CMAKE_CURRENT_SOURCE_DIR}/gridq-bench-match.c)
target_link_libraries(gridq-bench-match PRIVATE gq_brokercore)
target_compile_options(gridq-bench-match PRIVATE -O2)
install(TARGETS gridq-bench-match RUNTIME DESTINATION bin)
# Only checks that it runs and that the index agrees with the exhaustive scan (exit 1 if not).
add_test(NAME bench_match_smoke
         COMMAND gridq-bench-match --nodes 1000 --jobs 2000 --queued 10000 --json)
set_tests_properties(bench_match_smoke PROPERTIES TIMEOUT 120)
