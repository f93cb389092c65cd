# The PyTorch engines of tools/engines/ end to end (tests/test_engines.c, one program, the test's
# name as its argument): integration_engines_mlp (torch_mlp.py: one process for many jobs,
# routing by model, outputs as gridq-model computes them), integration_engines_generate
# (torch_generate.py: partials in order through the C API and gridq submit --stream, cancel
# mid-stream, a crash mid-job). Skipped (77) where /usr/bin/python3 cannot import torch.
set(GQ_ENGINES_DIR ${CMAKE_SOURCE_DIR}/tools/engines)
add_executable(integration_engines ${CMAKE_CURRENT_SOURCE_DIR}/test_engines.c)
target_link_libraries(integration_engines PRIVATE gq_harness m)
foreach(test mlp generate)
  add_test(NAME integration_engines_${test} COMMAND integration_engines ${test})
  set_tests_properties(integration_engines_${test} PROPERTIES TIMEOUT 120 SKIP_RETURN_CODE 77
                       ENVIRONMENT "GQ_BIN=${CMAKE_BINARY_DIR}/bin;GQ_ENGINES=${GQ_ENGINES_DIR}")
endforeach()
