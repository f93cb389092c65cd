# gq_tools: what the tools share, libc and libm only: tool.c (how a tool reports a failure) and
# bench_common.c (latency percentiles, option values, the load generators' options, report and
# child processes).
add_library(gq_tools STATIC ${CMAKE_CURRENT_LIST_DIR}/../tool.c
                            ${CMAKE_CURRENT_LIST_DIR}/../bench_common.c)
target_include_directories(gq_tools PUBLIC ${CMAKE_CURRENT_LIST_DIR}/..)
target_link_libraries(gq_tools PUBLIC m)
