# Run as: cmake -DCOMPILER=... -DSOURCE=... -DREGEX_FILE=... -DINCLUDE_DIR=... [-DEXTRA_FLAGS="..."] -P expect_fail.cmake
# Passes only if COMPILER rejects SOURCE and its output matches the CMake regex stored in REGEX_FILE.
cmake_minimum_required(VERSION 3.25)

foreach(var COMPILER SOURCE REGEX_FILE INCLUDE_DIR)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "expect_fail.cmake: -D${var}=... is required")
  endif()
endforeach()

file(READ "${REGEX_FILE}" regex)
string(REGEX REPLACE "[\r\n]+$" "" regex "${regex}")
if(regex STREQUAL "<missing // expect: line>")
  message(FATAL_ERROR "${SOURCE}: the first line must be `// expect: <regex>` naming the expected error")
endif()

separate_arguments(extra_flags UNIX_COMMAND "${EXTRA_FLAGS}")
# Plain ASCII quotes and no colour codes, so that the regex sees the same text everywhere.
set(ENV{LC_ALL} C)
set(ENV{LANG} C)
set(cmd "${COMPILER}" -std=c++20 -fsyntax-only -fdiagnostics-color=never ${extra_flags} "-I${INCLUDE_DIR}" "${SOURCE}")
execute_process(COMMAND ${cmd} RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE out)

string(REPLACE ";" " " cmd_text "${cmd}")
# Messages go out with message(NOTICE) (verbatim) and end with a one-line FATAL_ERROR (CMake re-wraps those).
if(rc EQUAL 0)
  message(NOTICE "command: ${cmd_text}\nexpected an error matching: ${regex}\n${out}")
  message(FATAL_ERROR "${SOURCE} compiled, but it must not")
endif()
if(NOT rc MATCHES "^[0-9]+$")
  message(NOTICE "command: ${cmd_text}")
  message(FATAL_ERROR "could not run the compiler: ${rc}")
endif()

string(REGEX MATCH "${regex}" matched "${out}")
if(matched STREQUAL "")
  # The first error lines name the failed check; the start of the output shows where it came from.
  string(REGEX MATCHALL "[^\n]*(error|Error): [^\n]*" errors "${out}")
  list(LENGTH errors n)
  if(n GREATER 10)
    list(SUBLIST errors 0 10 errors)
  endif()
  list(JOIN errors "\n" error_text)
  string(SUBSTRING "${out}" 0 2500 head)
  message(NOTICE "expected (CMake regex): ${regex}\ncommand: ${cmd_text}\n"
                 "---- first error lines ----\n${error_text}\n"
                 "---- start of the compiler output ----\n${head}\n----")
  message(FATAL_ERROR "${SOURCE} was rejected, but the compiler output does not match the expected regex")
endif()
message(STATUS "${SOURCE}: rejected as expected (matched: ${matched})")
