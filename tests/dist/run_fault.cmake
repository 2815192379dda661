# A fault test (ctest: dist_fault_die, dist_fault_hang): runs MPIEXEC ... PROGRAM MODE on 2 ranks and checks that
# the job ends, with a failure, within BOUND seconds (never a hang), and that its output matches EXPECT.
#   cmake -DMPIEXEC=... -DFLAGS=a|b -DPROGRAM=... -DMODE=die|hang -DBOUND=60 -DEXPECT=<regex> -P run_fault.cmake
string(REPLACE "|" ";" FLAGS "${FLAGS}")  # (passed joined by |)
string(TIMESTAMP t0 "%s")
execute_process(
  COMMAND ${MPIEXEC} -np 2 ${FLAGS} -x OMP_NUM_THREADS=1 ${PROGRAM} ${MODE}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT ${BOUND})
string(TIMESTAMP t1 "%s")
math(EXPR secs "${t1} - ${t0}")
message(STATUS "mode ${MODE}: exit '${rc}' after ${secs} s\n--- output ---\n${out}\n--- errors ---\n${err}")
if(rc MATCHES "timeout|Process terminated due to timeout" OR secs GREATER_EQUAL BOUND)
  message(FATAL_ERROR "the job did not end within ${BOUND} s (a hang)")
endif()
if(rc EQUAL 0)
  message(FATAL_ERROR "the job ended with exit code 0: a failure must be reported")
endif()
if(NOT "${out}${err}" MATCHES "${EXPECT}")
  message(FATAL_ERROR "the output does not match '${EXPECT}'")
endif()
message(STATUS "ok: the job ended with '${rc}' in ${secs} s and said what happened")
