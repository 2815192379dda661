// fashion_mnist.cpp's program with the model on the GPU: the same SimpleCNN, data, optimizer and checkpoint, trained
// on the cuda policy (cuBLASLt, cuDNN and tessera's kernels; see tessera/kernels/cuda/backend.hpp).
//   fashion_mnist_cuda [epochs = 3] [threads = 2] [checkpoint = simplecnn.ckpt]
// Without a CUDA device it prints "no CUDA device: ..." and exits with status 77.
#include <tessera/tessera.hpp>

using Policy = tessera::cuda;  // the model's policy: the only line that differs from fashion_mnist.cpp

#include "fashion_mnist_main.hpp"
