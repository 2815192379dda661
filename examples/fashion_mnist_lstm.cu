// fashion_mnist_lstm.cpp's program with the model on the GPU: the same row-LSTM, data and optimizer, trained on the
// cuda policy (cuBLASLt products and one fused kernel per step; see tessera/kernels/cuda/rnn.hpp).
//   fashion_mnist_lstm_cuda [epochs = 3]
// Without a CUDA device it prints "no CUDA device: ..." and exits with status 77.
#include <tessera/tessera.hpp>

using Policy = tessera::cuda;  // the model's policy: the only line that differs from fashion_mnist_lstm.cpp

#include "fashion_mnist_lstm_main.hpp"
