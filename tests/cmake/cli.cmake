# CLI tests. cli_offline: the gridq binary alone (usage errors, local job checks, help texts,
# an unreachable broker). cli: the whole command-line contract against a real broker and two
# CPU workers on a loopback port of its own; skipped (77) when those binaries are not built.
set(GQ_CLI_TEST_DIR ${CMAKE_CURRENT_LIST_DIR}/..)
add_test(NAME cli_offline COMMAND bash ${GQ_CLI_TEST_DIR}/test_cli_offline.sh)
set_tests_properties(cli_offline PROPERTIES TIMEOUT 60
                     ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
add_test(NAME cli COMMAND bash ${GQ_CLI_TEST_DIR}/test_cli.sh)
set_tests_properties(cli PROPERTIES TIMEOUT 180 SKIP_RETURN_CODE 77
                     ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
# cli_refused: submit --file through a rate limit, and past a per-client cap that refuses part of it.
add_test(NAME cli_refused COMMAND bash ${GQ_CLI_TEST_DIR}/test_cli_refused.sh)
set_tests_properties(cli_refused PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
                     ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
# disk_full: the store on a 600 KiB tmpfs (needs root to mount; skipped otherwise).
add_test(NAME disk_full COMMAND bash ${GQ_CLI_TEST_DIR}/test_disk_full.sh)
set_tests_properties(disk_full PROPERTIES TIMEOUT 90 SKIP_RETURN_CODE 77
                     ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
# deps: dependencies through the CLI (--after-ok, --after-any, --after-fail): order, waiting,
# cancel reasons and their cascade, refusals.
add_test(NAME cli_deps COMMAND bash ${GQ_CLI_TEST_DIR}/test_deps.sh)
set_tests_properties(cli_deps PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
                     ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
# arrays: job arrays through the CLI (--array with %K, status, wait, cancel, --after-ok ARRAY).
add_test(NAME cli_arrays COMMAND bash ${GQ_CLI_TEST_DIR}/test_arrays.sh)
set_tests_properties(cli_arrays PROPERTIES TIMEOUT 150 SKIP_RETURN_CODE 77
                     ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
# pipeline: a pipeline in one JOBS.jsonl (names, after_ok by name, inputs), its failure and retry.
add_test(NAME cli_pipeline COMMAND bash ${GQ_CLI_TEST_DIR}/test_pipeline.sh)
set_tests_properties(cli_pipeline PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
                     ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin")
