# gridq-keygen: CURVE key pairs (NAME.pub, NAME.secret) for the broker, clients and workers.
add_executable(gridq-keygen ${CMAKE_CURRENT_LIST_DIR}/../gridq-keygen.c)
target_link_libraries(gridq-keygen PRIVATE gridq gq_tools)
install(TARGETS gridq-keygen RUNTIME DESTINATION bin)
