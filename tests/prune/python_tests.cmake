# tessera's pruning masks against torch.nn.utils.prune (skipped where torch is missing).
tessera_python_test(prune_vs_torch
  SCRIPT "${CMAKE_CURRENT_LIST_DIR}/prune_vs_torch.py"
  PROGRAMS "${CMAKE_CURRENT_LIST_DIR}/prune_ops.cpp")
