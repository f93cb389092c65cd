# Partial results streamed end to end: a broker, a worker with a streaming `--engine`
# (tests/engine_stream.py, python3), `gridq submit --stream`, the C API's partial callback, bad
# PARTIAL messages from a raw worker socket, nothing of it in the store.
add_executable(integration_stream ${CMAKE_CURRENT_SOURCE_DIR}/test_stream.c)
target_link_libraries(integration_stream PRIVATE gq_harness)
add_test(NAME integration_stream COMMAND integration_stream)
set_tests_properties(integration_stream PROPERTIES TIMEOUT 90 SKIP_RETURN_CODE 77
                     ENVIRONMENT
                     "GQ_BIN=${CMAKE_BINARY_DIR}/bin;GQ_ENGINE_STREAM=${CMAKE_CURRENT_SOURCE_DIR}/engine_stream.py")

# The worker's window for partials, exactly, against a fake broker that holds acknowledgements.
add_executable(integration_stream_window ${CMAKE_CURRENT_SOURCE_DIR}/test_stream_window.c)
target_link_libraries(integration_stream_window PRIVATE gq_harness)
add_test(NAME integration_stream_window COMMAND integration_stream_window)
set_tests_properties(integration_stream_window PROPERTIES TIMEOUT 60 SKIP_RETURN_CODE 77
                     ENVIRONMENT
                     "GQ_BIN=${CMAKE_BINARY_DIR}/bin;GQ_ENGINE_STREAM=${CMAKE_CURRENT_SOURCE_DIR}/engine_stream.py")
