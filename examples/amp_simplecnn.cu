// amp_simplecnn.cpp's program with the model on the GPU: the SimpleCNN trained in fp32 and under amp::autocast (bf16)
// from the same weights on the same batches, epochs alternating, on the cuda policy. Under autocast the Linear layers
// run through cuBLASLt's bf16 GEMM with fp32 accumulation; the convolutions stay fp32 (no bf16 convolution on CUDA
// yet), so the speedup measures the bf16 Linear layers only.
//   amp_simplecnn_cuda [epochs = 3] [threads = 2]  (threads: the host's, for the data and the accuracy's argmax)
// Prints the epoch lines and the test accuracies as amp_simplecnn does, then one machine-readable line:
//   result BM_amp_simplecnn_cuda/batch:64 fp32_accuracy=<%> bf16_accuracy=<%> bf16_fp32_eval_accuracy=<%>
//          fp32_epoch_s=<s> bf16_epoch_s=<s> speedup=<fp32 time / bf16 time> bf16_path=cublaslt_linear
// Without a CUDA device it prints "no CUDA device: ..." and exits with status 77. Compiled by nvcc; not yet run on a
// GPU. The data comes from Debian's dataset-fashion-mnist (or $TESSERA_FASHION_MNIST_DIR).
#include <tessera/tessera.hpp>

using Policy = tessera::cuda;  // the model's policy: the only line that differs from amp_simplecnn.cpp

#include "amp_simplecnn_main.hpp"
