# Matching through the real programs (ctest -R matching). matching_cli: right-sizing by VRAM,
# --gpu / --max-price / --min-tflops, explain's reasons and hints, and priority, all through the
# gridq CLI against a broker and CPU workers on a loopback port of its own (bash and jq; skipped,
# 77, without them). matching_warm_routing: at equal specs the node with the model loaded wins,
# and mlp outputs match gridq-model run. Both bound themselves below the ctest timeout.
gq_shell_test(matching_cli test_matching_cli.sh 120)
gq_integration_test(matching_warm_routing test_warm_routing.c 120)
target_link_libraries(matching_warm_routing PRIVATE m)

# Cache affinity: conversations stay on their node with a key, spread without; EXPLAIN names
# the preferred node.
gq_integration_test(matching_affinity test_affinity.c 90)
