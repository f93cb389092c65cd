# bench-partials-check.cmake — the bench_partials test (tools/cmake/bench.cmake): runs
# `gridq-bench --mode partials --json` small and checks its one JSON line: every partial the
# engine wrote was received or reported dropped (so with none dropped, all were received), none
# lost, every latency measured. Nothing about time. cmake -DBENCH=... -DBIN=... -P this file.
execute_process(
  COMMAND ${BENCH} --spawn --mode partials --durability normal --bin ${BIN} --partials 3000
          --jobs 3 --samples 50 --warmup 5 --interval-us 200 --json
  OUTPUT_VARIABLE out RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "gridq-bench --mode partials exited ${rc}: ${out}")
endif()
string(STRIP "${out}" out)
string(JSON mode ERROR_VARIABLE bad GET "${out}" mode)
if(bad OR NOT mode STREQUAL "partials")
  message(FATAL_ERROR "not the JSON line of --mode partials: ${out}")
endif()
foreach(key partials partials_received partials_dropped partials_lost failed p50_us
            finished_p50_us ping_p50_us loaded_p50_us)
  string(JSON ${key} GET "${out}" ${key})
endforeach()
math(EXPR accounted "${partials_received} + ${partials_dropped}")
if(NOT partials EQUAL 3000 OR NOT accounted EQUAL partials OR NOT partials_lost EQUAL 0
   OR NOT failed EQUAL 0)
  message(FATAL_ERROR "partials: ${partials} written (3000 expected), ${partials_received} "
                      "received + ${partials_dropped} dropped, ${partials_lost} lost, "
                      "${failed} failed: ${out}")
endif()
foreach(key p50_us finished_p50_us ping_p50_us loaded_p50_us)
  if(NOT ${key} MATCHES "^[0-9]+(\\.[0-9]+)?$")
    message(FATAL_ERROR "${key} is '${${key}}', not a number: ${out}")
  endif()
endforeach()
message(STATUS "partials: ${partials_received} of ${partials} received, ${partials_dropped} dropped")
