// Fashion-MNIST read row by row (28 steps of 28 pixels) by a two-layer LSTM (hidden 128, dropout 0.2 between the
// layers) and a Linear(128, 10) on its last step: Adam (lr 2e-3), batch 64, 2 threads, as the PyTorch peer
// (bench/torch_row_lstm.py). Prints a live progress line, test accuracy after each epoch and the inference time;
// then converts the model to int8 weights (dynamic quantization) and prints both accuracies and inference times.
//   fashion_mnist_lstm [epochs = 3] [threads = 2]
#include <tessera/tessera.hpp>

using Policy = tessera::cpu_threads;  // the model's policy: the only line that differs from fashion_mnist_lstm.cu

#include "fashion_mnist_lstm_main.hpp"
