gq_integration_test(integration_e2e test_e2e.c 180)
