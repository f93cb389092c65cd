# Persistent engines end to end: a broker, two workers with `--engine` (tests/engine_test.py,
# python3), jobs that share one process, model routing, a crash and restart, cancel, blobs.
add_executable(integration_engine ${CMAKE_CURRENT_SOURCE_DIR}/test_engine.c)
target_link_libraries(integration_engine PRIVATE gq_harness)
add_test(NAME integration_engine COMMAND integration_engine)
set_tests_properties(integration_engine PROPERTIES TIMEOUT 90 SKIP_RETURN_CODE 77
                     ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin;GQ_ENGINE=${CMAKE_CURRENT_SOURCE_DIR}/engine_test.py")
