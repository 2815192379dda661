# tessera's learning-rate schedulers against torch.optim.lr_scheduler (skipped where torch is missing).
tessera_python_test(scheduler_vs_torch
  SCRIPT "${CMAKE_CURRENT_LIST_DIR}/scheduler_vs_torch.py"
  PROGRAMS "${CMAKE_CURRENT_LIST_DIR}/scheduler_sequences.cpp")
