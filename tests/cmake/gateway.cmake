# gridq-gateway end to end (curl, python3): a broker, a worker with tests/engine_stream.py as an
# engine and tests/openai_server.py behind --openai, the gateway. integration_gateway: REST, SSE,
# OpenAI, a client that leaves; integration_gateway_node: the official `openai` npm package
# from node (installed by `npm install --prefix build/node openai`, or tools/setup with
# GRIDQ_SETUP_ENGINES=1), skipped without it.
if(TARGET gridq-gateway)
  add_executable(integration_gateway ${CMAKE_CURRENT_SOURCE_DIR}/test_gateway.c)
  target_link_libraries(integration_gateway PRIVATE gq_harness)
  foreach(test gateway gateway_node)
    if(test STREQUAL "gateway_node")
      add_test(NAME integration_${test} COMMAND integration_gateway node)
    else()
      add_test(NAME integration_${test} COMMAND integration_gateway)
    endif()
    set(dir ${CMAKE_CURRENT_SOURCE_DIR})
    set_tests_properties(integration_${test} PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
                         ENVIRONMENT
                         "GQ_BIN=${CMAKE_BINARY_DIR}/bin;GQ_ENGINE_STREAM=${dir}/engine_stream.py;\
GQ_OPENAI_SERVER=${dir}/openai_server.py;GQ_OPENAI_JS=${dir}/openai_client.mjs;\
GQ_NODE_DIR=${CMAKE_BINARY_DIR}/node")
  endforeach()
endif()
# integration_gateway_auth: bearer tokens, roles, ownership, --rate, --max-queued, timeouts
# (tests/test_gateway_auth.c: curl and three gateways before one broker).
if(TARGET gridq-gateway)
  add_executable(integration_gateway_auth ${CMAKE_CURRENT_SOURCE_DIR}/test_gateway_auth.c)
  target_link_libraries(integration_gateway_auth PRIVATE gq_harness)
  add_test(NAME integration_gateway_auth COMMAND integration_gateway_auth)
  set_tests_properties(integration_gateway_auth PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
                       ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
endif()
