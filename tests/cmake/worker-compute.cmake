# gridq-model from the command line: make a model in each dtype, check it with info, run it, and
# refuse a file that lies. The worker's own selftests are in worker/CMakeLists.txt.
add_test(NAME tool_gridq_model
         COMMAND bash ${CMAKE_SOURCE_DIR}/worker/gridq_model_test.sh)
set_tests_properties(tool_gridq_model PROPERTIES TIMEOUT 60
                     ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
