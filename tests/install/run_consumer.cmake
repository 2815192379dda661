# Builds and runs tests/install/consumer/main.cpp as a downstream project would.
#   MODE=install       cmake --install the tessera build tree into <WORK_DIR>/test-install, then configure
#                      tests/install/consumer with find_package(tessera CONFIG) against that prefix.
#   MODE=subdirectory  configure tests/install/subdir_consumer, which add_subdirectory()s the source tree.
# Other variables: TESSERA_SOURCE_DIR, TESSERA_BINARY_DIR, WORK_DIR, GENERATOR, MAKE_PROGRAM, CXX_COMPILER, CONFIG.
cmake_minimum_required(VERSION 3.25)

foreach(var MODE TESSERA_SOURCE_DIR TESSERA_BINARY_DIR WORK_DIR GENERATOR CXX_COMPILER)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "run_consumer.cmake: -D${var}=... is required")
  endif()
endforeach()
if(NOT CONFIG)
  set(CONFIG Release)
endif()

# step(<description> <command>...): run it, echo its output on failure and stop with a clear message.
function(step what)
  message(STATUS "[${MODE} consumer] ${what}")
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)
  if(NOT rc EQUAL 0)
    string(REPLACE ";" " " cmd "${ARGN}")
    message(FATAL_ERROR "[${MODE} consumer] FAILED to ${what} (exit ${rc})\n  command: ${cmd}\n${out}")
  endif()
  set(step_output "${out}" PARENT_SCOPE)
endfunction()

set(common_args -G "${GENERATOR}" "-DCMAKE_CXX_COMPILER=${CXX_COMPILER}" "-DCMAKE_BUILD_TYPE=${CONFIG}"
                -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON)
if(MAKE_PROGRAM)
  list(APPEND common_args "-DCMAKE_MAKE_PROGRAM=${MAKE_PROGRAM}")
endif()

if(MODE STREQUAL "install")
  set(prefix "${WORK_DIR}/test-install")
  set(build "${WORK_DIR}/consumer-build")
  file(REMOVE_RECURSE "${prefix}" "${build}")
  step("install tessera into ${prefix}"
       "${CMAKE_COMMAND}" --install "${TESSERA_BINARY_DIR}" --prefix "${prefix}" --config "${CONFIG}")
  foreach(f include/tessera/tessera.hpp)
    if(NOT EXISTS "${prefix}/${f}")
      message(FATAL_ERROR "[install consumer] ${prefix}/${f} was not installed")
    endif()
  endforeach()
  file(GLOB_RECURSE config_files "${prefix}/*/tesseraConfig.cmake")
  if(NOT config_files)
    message(FATAL_ERROR "[install consumer] no tesseraConfig.cmake was installed under ${prefix}")
  endif()
  step("configure the consumer with CMAKE_PREFIX_PATH=${prefix}"
       "${CMAKE_COMMAND}" -S "${TESSERA_SOURCE_DIR}/tests/install/consumer" -B "${build}" ${common_args}
       "-DCMAKE_PREFIX_PATH=${prefix}" "-DTESSERA_EXPECTED_PREFIX=${prefix}")
elseif(MODE STREQUAL "subdirectory")
  set(build "${WORK_DIR}/subdir-consumer-build")
  file(REMOVE_RECURSE "${build}")
  step("configure a project that add_subdirectory()s tessera"
       "${CMAKE_COMMAND}" -S "${TESSERA_SOURCE_DIR}/tests/install/subdir_consumer" -B "${build}" ${common_args}
       "-DTESSERA_SOURCE_DIR=${TESSERA_SOURCE_DIR}")
else()
  message(FATAL_ERROR "run_consumer.cmake: MODE must be install or subdirectory, not '${MODE}'")
endif()

step("build the consumer" "${CMAKE_COMMAND}" --build "${build}" --config "${CONFIG}")

find_program(exe tessera_consumer PATHS "${build}" "${build}/${CONFIG}" NO_DEFAULT_PATH NO_CACHE)
if(NOT exe)
  message(FATAL_ERROR "[${MODE} consumer] the consumer executable was not built in ${build}")
endif()
step("run the consumer" "${exe}")
message(STATUS "[${MODE} consumer] ${step_output}")

# the MPI consumer (tessera::dist), where MPI was found: MPI started and ended by dist::context on one rank
find_program(dist_exe tessera_dist_consumer PATHS "${build}" "${build}/${CONFIG}" NO_DEFAULT_PATH NO_CACHE)
if(dist_exe)
  step("run the MPI consumer (one rank)" "${dist_exe}")
endif()
