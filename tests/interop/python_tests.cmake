# Weights and arrays that travel between tessera and PyTorch / numpy (interop/safetensors.hpp, interop/npy.hpp),
# driven by Debian's python3 (tessera_python_test in tests/CMakeLists.txt; exit 77 = skipped when torch or numpy is
# missing).
#   interop_torch_models  PyTorch's SimpleCNN and row LSTM -> safetensors -> tessera: logits within 1e-5; a
#                         tessera-trained SimpleCNN -> safetensors -> PyTorch: the same predictions and accuracy
#   interop_numpy_npy     numpy.save -> tessera -> save_npy: the same bytes, every dtype and rank 0-4; tessera's
#                         files read by numpy.load; refused files (Fortran order, big-endian, float16) say why
tessera_python_test(interop_torch_models
  SCRIPT "${CMAKE_CURRENT_LIST_DIR}/torch_models.py"
  PROGRAMS "${CMAKE_CURRENT_LIST_DIR}/interop_models.cpp")
tessera_python_test(interop_numpy_npy
  SCRIPT "${CMAKE_CURRENT_LIST_DIR}/numpy_npy.py"
  PROGRAMS "${CMAKE_CURRENT_LIST_DIR}/interop_npy.cpp")
