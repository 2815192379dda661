# tessera's reduced-range (7-bit) qparams and quantized values against torch.ao.quantization (skipped where torch is
# missing).
tessera_python_test(reduce_range_vs_torch
  SCRIPT "${CMAKE_CURRENT_LIST_DIR}/reduce_range_vs_torch.py"
  PROGRAMS "${CMAKE_CURRENT_LIST_DIR}/reduce_range_ops.cpp")
