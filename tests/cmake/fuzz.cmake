# libFuzzer target for frame decoding and validation (tests/fuzz_msg.c): only with
# -DGRIDQ_FUZZ=ON and clang. tools/fuzz builds it in build-fuzz/ and fuzzes for a while; here
# ctest replays the seed corpus once as a regression test.
if(GRIDQ_FUZZ)
  if(NOT CMAKE_C_COMPILER_ID MATCHES "Clang")
    message(FATAL_ERROR "GRIDQ_FUZZ=ON needs clang: -DCMAKE_C_COMPILER=clang")
  endif()
  # The protocol sources are compiled in, instrumented for coverage, rather than linking the
  # uninstrumented libgridq.
  add_executable(gridq-fuzz-msg ${CMAKE_CURRENT_SOURCE_DIR}/fuzz_msg.c
                                ${CMAKE_SOURCE_DIR}/proto/gq_msg.c
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
endif()
