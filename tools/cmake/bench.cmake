# Benchmarks (docs/BENCHMARKS.md): gridq-bench drives a live broker and real workers through the
# client API; gridq-bench-zmq is the bare-ZeroMQ ceiling of the same three hops;
# gridq-bench-gearman drives gearmand, the peer, where libgearman is installed. tools/bench-peers
# runs them side by side. The tests only prove that the programs run: no timing is asserted.
add_executable(gridq-bench ${CMAKE_CURRENT_LIST_DIR}/../gridq-bench.c)
target_link_libraries(gridq-bench PRIVATE gridq gq_tools)

# gridq-bench-engine: the engine --mode partials runs on its worker (stamps each partial with
# the wall clock; in C so that an interpreter's cost per line is not what is measured).
add_executable(gridq-bench-engine ${CMAKE_CURRENT_LIST_DIR}/../bench-engine.c)
target_link_libraries(gridq-bench-engine PRIVATE gq_tools PkgConfig::JANSSON)

add_executable(gridq-bench-zmq ${CMAKE_CURRENT_LIST_DIR}/../bench-zmq.c)
target_link_libraries(gridq-bench-zmq PRIVATE gridq gq_tools PkgConfig::ZMQ)

# Upstream installs libgearman.pc; Debian's libgearman-dev ships the same library as gearmand.pc.
pkg_search_module(GEARMAN IMPORTED_TARGET libgearman gearmand)
if(GEARMAN_FOUND)
  add_executable(gridq-bench-gearman ${CMAKE_CURRENT_LIST_DIR}/../bench-gearman.c)
  target_link_libraries(gridq-bench-gearman PRIVATE gq_tools PkgConfig::GEARMAN)
  message(STATUS "gridq: gridq-bench-gearman ON (libgearman ${GEARMAN_VERSION})")
else()
  message(STATUS "gridq: gridq-bench-gearman OFF (no libgearman: apt-get install libgearman-dev)")
endif()

# Tiny runs, one per mode, each with a spawned broker and workers of its own on a free port.
set(GQ_BENCH_SMOKE
    "throughput|--jobs 2000 --batch 200 --window 4"
    "latency|--mode latency --jobs 200 --warmup 20"
    "batch|--mode batch --jobs 2000 --batch 500"
    "memory|--mode memory --jobs 20000"
    "poll|--jobs 2000 --batch 200 --window 4 --poll 500"
    # Exits 1 when an echo job finishes after the 1 s job: 20 echo jobs on the other worker
    # take milliseconds, so only a placement that queues them behind it fails.
    "mixed|--mode mixed --jobs 20 --warmup 5 --long-ms 1000")
foreach(entry ${GQ_BENCH_SMOKE})
  string(REPLACE "|" ";" parts "${entry}")
  list(GET parts 0 name)
  list(GET parts 1 args)
  separate_arguments(args UNIX_COMMAND "${args}")
  add_test(NAME bench_${name}
           COMMAND gridq-bench --spawn --durability normal --bin ${CMAKE_BINARY_DIR}/bin ${args})
  set_tests_properties(bench_${name} PROPERTIES TIMEOUT 120)
endforeach()
# --mode partials, small, its JSON line checked: every partial received or reported dropped.
add_test(NAME bench_partials
         COMMAND ${CMAKE_COMMAND} -DBENCH=$<TARGET_FILE:gridq-bench> -DBIN=${CMAKE_BINARY_DIR}/bin
                 -P ${CMAKE_CURRENT_LIST_DIR}/../bench-partials-check.cmake)
set_tests_properties(bench_partials PROPERTIES TIMEOUT 120)
add_test(NAME bench_zmq COMMAND gridq-bench-zmq --jobs 2000 --window 200)
add_test(NAME bench_zmq_latency COMMAND gridq-bench-zmq --mode latency --jobs 200)
set_tests_properties(bench_zmq bench_zmq_latency PROPERTIES TIMEOUT 60)
install(TARGETS gridq-bench gridq-bench-engine gridq-bench-zmq RUNTIME DESTINATION bin)

# gridq-bench-affinity: conversations' turns with and without affinity keys, against a running
# broker (tools/bench-affinity starts one and four workers); issue 16's cache-affinity figure.
add_executable(gridq-bench-affinity ${CMAKE_CURRENT_LIST_DIR}/../bench-affinity.c)
target_link_libraries(gridq-bench-affinity PRIVATE gridq gq_tools)
add_test(NAME bench_affinity
         COMMAND ${CMAKE_CURRENT_LIST_DIR}/../bench-affinity --rounds 1 --conversations 20)
set_tests_properties(bench_affinity PROPERTIES TIMEOUT 60
                     ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
