# gq_tools: what the tools share, libc and libm only: tool.c (how a tool reports a failure),
# bench_common.c (latency percentiles, the load generators' options, report and child processes)
# and, for the programs that do not link libgridq, proto/'s gq_common (clock, value parsing).
add_library(gq_tools STATIC ${CMAKE_CURRENT_LIST_DIR}/../tool.c
                            ${CMAKE_CURRENT_LIST_DIR}/../bench_common.c)
target_include_directories(gq_tools PUBLIC ${CMAKE_CURRENT_LIST_DIR}/..)
target_link_libraries(gq_tools PUBLIC gq_common m)
