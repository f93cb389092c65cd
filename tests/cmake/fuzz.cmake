# libFuzzer targets, only with -DGRIDQ_FUZZ=ON and clang: frame decoding and validation
# (tests/fuzz_msg.c) and the gateway's request checks (tests/fuzz_gateway.c). tools/fuzz builds
# one in build-fuzz/ and fuzzes for a while; here ctest replays each seed corpus once as a
# regression test.
if(GRIDQ_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "GRIDQ_FUZZ=ON needs clang: -DCMAKE_C_COMPILER=clang")
  endif()
  # The protocol sources are compiled in, instrumented for coverage, rather than linking the
  # uninstrumented libgridq.
  add_executable(gridq-fuzz-msg ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_msg.c
                                ${CMAKE_SOURCE_DIR}/proto/gq_msg.c
                                ${CMAKE_SOURCE_DIR}/proto/gq_json.c
                                ${CMAKE_SOURCE_DIR}/proto/gq_result.c
                                ${CMAKE_SOURCE_DIR}/proto/gq_spec.c
                                ${CMAKE_SOURCE_DIR}/proto/gq_common.c)
  target_include_directories(gridq-fuzz-msg PRIVATE ${CMAKE_SOURCE_DIR}/proto)
  target_compile_options(gridq-fuzz-msg PRIVATE -fsanitize=fuzzer,address,undefined
                         -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  target_link_options(gridq-fuzz-msg PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(gridq-fuzz-msg PRIVATE PkgConfig::CZMQ PkgConfig::ZMQ
                        PkgConfig::JANSSON m)
  add_test(NAME fuzz_msg_corpus
           COMMAND gridq-fuzz-msg -runs=0 ${CMAKE_CURRENT_SOURCE_DIR}/fuzz-corpus)
  set_tests_properties(fuzz_msg_corpus PROPERTIES TIMEOUT 120)
  # The gateway's request checks (gateway/request.c, tokens.c; call.c for the answers), with
  # the few protocol helpers they use.
  if(MHD_FOUND AND NETTLE_FOUND)
    add_executable(gridq-fuzz-gateway ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_gateway.c
                                      ${CMAKE_SOURCE_DIR}/gateway/request.c
                                      ${CMAKE_SOURCE_DIR}/gateway/tokens.c
                                      ${CMAKE_SOURCE_DIR}/gateway/call.c
                                      ${CMAKE_SOURCE_DIR}/proto/gq_msg.c
                                      ${CMAKE_SOURCE_DIR}/proto/gq_spec.c
                                      ${CMAKE_SOURCE_DIR}/proto/gq_common.c)
    target_include_directories(gridq-fuzz-gateway PRIVATE ${CMAKE_SOURCE_DIR}/proto
                               ${CMAKE_SOURCE_DIR}/gateway)
    target_compile_options(gridq-fuzz-gateway PRIVATE -fsanitize=fuzzer,address,undefined
                           -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
    target_link_options(gridq-fuzz-gateway PRIVATE -fsanitize=fuzzer,address,undefined)
    target_link_libraries(gridq-fuzz-gateway PRIVATE PkgConfig::CZMQ PkgConfig::ZMQ
                          PkgConfig::JANSSON PkgConfig::MHD PkgConfig::NETTLE Threads::Threads m)
    add_test(NAME fuzz_gateway_corpus
             COMMAND gridq-fuzz-gateway -runs=0 ${CMAKE_CURRENT_SOURCE_DIR}/fuzz-corpus-gateway)
    set_tests_properties(fuzz_gateway_corpus PROPERTIES TIMEOUT 120)
  endif()
endif()
