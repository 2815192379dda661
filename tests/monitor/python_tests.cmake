# tessera/monitor's event files read back by google.protobuf (tests/CMakeLists.txt: tessera_python_test).
# write_events_program writes a run with known scalars, histograms, images and text; read_events.py checks every
# record of it (CRCs, file_version, tags, steps, values, histogram buckets, PNG pixels); 77 (skipped) without
# google.protobuf.
tessera_python_test(monitor_read_events
  SCRIPT "${CMAKE_CURRENT_LIST_DIR}/read_events.py"
  PROGRAMS "${CMAKE_CURRENT_LIST_DIR}/write_events_program.cpp"
  ARGS run)
