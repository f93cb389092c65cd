# gq_tools: what the tools share, libc only: tool.c (how a tool reports a failure).
add_library(gq_tools STATIC ${CMAKE_CURRENT_LIST_DIR}/../tool.c)
target_include_directories(gq_tools PUBLIC ${CMAKE_CURRENT_LIST_DIR}/..)
