# Partial results streamed end to end, with tests/engine_stream.py (python3) as the engine:
# integration_stream: a broker, a worker, `gridq submit --stream`, `gridq watch`, the C API's
# partial callback, bad PARTIAL messages from a raw worker socket, nothing of it in the store;
# integration_stream_window: the worker's window, exactly, against a fake broker that holds
# acknowledgements.
foreach(test stream stream_window)
  add_executable(integration_${test} ${CMAKE_CURRENT_SOURCE_DIR}/test_${test}.c)
  target_link_libraries(integration_${test} PRIVATE gq_harness)
  add_test(NAME integration_${test} COMMAND integration_${test})
  set_tests_properties(integration_${test} PROPERTIES TIMEOUT 90 SKIP_RETURN_CODE 77
                       ENVIRONMENT
                       "GQ_BIN=${CMAKE_BINARY_DIR}/bin;GQ_ENGINE_STREAM=${CMAKE_CURRENT_SOURCE_DIR}/engine_stream.py")
endforeach()
