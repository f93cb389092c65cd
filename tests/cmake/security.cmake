# Security tests (the guard's own selftest, selftest_guard, runs from broker/). integration_security:
# CURVE keys made by gridq-keygen, roles, plaintext and unknown peers, rate limits and malformed
# input against a real broker, worker and client on loopback.

gq_integration_test(integration_security test_security.c 240)
set_tests_properties(integration_security PROPERTIES SKIP_RETURN_CODE 77)
# What broker.c must do with input that passes validation (all-or-nothing batches, kinds, worker
# numbers); kept apart so that a failure here points at the broker loop, not at the guard.
add_test(NAME integration_security_broker COMMAND integration_security broker)
set_tests_properties(integration_security_broker PROPERTIES TIMEOUT 90
                     ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
