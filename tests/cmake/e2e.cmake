gq_integration_test(integration_e2e test_e2e.c 180)
# A job's binary blobs reach a --handler command as files (GRIDQ_BLOB_DIR), through the broker.
gq_integration_test(integration_handler_blobs test_handler_blobs.c 60)
