# The integration-test harness: real processes on loopback, bounded waits.
add_library(gq_harness STATIC ${CMAKE_CURRENT_SOURCE_DIR}/harness.c)
target_include_directories(gq_harness PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(gq_harness PUBLIC gridq)

# gq_integration_test(NAME SOURCE TIMEOUT): an executable run by ctest with GQ_BIN set.
function(gq_integration_test name source timeout)
  add_executable(${name} ${CMAKE_CURRENT_SOURCE_DIR}/${source})
  target_link_libraries(${name} PRIVATE gq_harness)
  add_test(NAME ${name} COMMAND ${name})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${timeout}
                       ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
endfunction()

# gq_shell_test(NAME SCRIPT TIMEOUT): tests/SCRIPT run by bash with GQ_BIN set; 77 is a skip.
function(gq_shell_test name script timeout)
  add_test(NAME ${name} COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/${script})
  set_tests_properties(${name} PROPERTIES TIMEOUT ${timeout} SKIP_RETURN_CODE 77
                       ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
endfunction()
