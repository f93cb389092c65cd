# OpenAI-compatible servers behind `gridq-worker --openai`, end to end: a broker, two workers,
# tests/openai_server.py (python3) streaming as vLLM and as llama.cpp's llama-server do.
add_executable(integration_openai ${CMAKE_CURRENT_SOURCE_DIR}/test_openai.c)
target_link_libraries(integration_openai PRIVATE gq_harness)
add_test(NAME integration_openai COMMAND integration_openai)
set_tests_properties(integration_openai PROPERTIES TIMEOUT 90 SKIP_RETURN_CODE 77
                     ENVIRONMENT
                     "GQ_BIN=${CMAKE_BINARY_DIR}/bin;GQ_OPENAI_SERVER=${CMAKE_CURRENT_SOURCE_DIR}/openai_server.py")
