# gridq-model: makes random MLP models (.safetensors), lists and checks them, runs them on the
# CPU backend through the worker's job path.
add_executable(gridq-model ${CMAKE_CURRENT_LIST_DIR}/../gridq-model.c)
target_link_libraries(gridq-model PRIVATE gq_workercore gq_tools)
install(TARGETS gridq-model RUNTIME DESTINATION bin)

# gridq-bench-gemm: GEMM and mlp figures through a job against cuBLAS alone (tools/gpu-check).
# It needs a GPU to say anything, so it is built with the CUDA backend only and never a test.
if(GRIDQ_HAVE_CUDA)
  add_executable(gridq-bench-gemm ${CMAKE_CURRENT_LIST_DIR}/../gridq-bench-gemm.c)
  target_link_libraries(gridq-bench-gemm PRIVATE gq_workercore)
endif()
