// Mixed-precision training of the SimpleCNN on Fashion-MNIST (amp/autocast.hpp) beside fp32 training of the same model:
// both start from the same weights, see the same batches in the same order (batch 64, SGD momentum 0.9, lr 0.05 halved
// each epoch, standardised pixels, as examples/fashion_mnist.cpp), and their epochs alternate (fp32 epoch e, then bf16
// epoch e) so both epoch times come from the same run on the same machine state. The bf16 model's forward and loss
// run inside an amp::autocast scope (its convolutions and Linear layers in bf16 with fp32 accumulation, the rest and
// the optimizer in fp32); it is evaluated both in bf16 (under autocast) and in fp32.
//   amp_simplecnn [epochs = 3] [threads = 2]
// Prints one machine-readable line at the end (epoch times: the mean over the epochs):
//   result BM_amp_simplecnn/threads:<n> fp32_accuracy=<%> bf16_accuracy=<%> bf16_fp32_eval_accuracy=<%>
//          fp32_epoch_s=<s> bf16_epoch_s=<s> speedup=<fp32 time / bf16 time> bf16_native=<0|1> bf16_path=<path>
// bf16_path: the bf16 GEMM path this CPU took (bf16_isa_active: amx_bf16, avx512_bf16, or avx2 = fp32 arithmetic on
// widened operands); bf16_native: 1 where the CPU multiplies bf16 itself (avx512_bf16 or amx_bf16). The data comes from Debian's dataset-fashion-mnist (or $TESSERA_FASHION_MNIST_DIR).
// The program is in amp_simplecnn_main.hpp; amp_simplecnn.cu is the same program with the model on the GPU.
#include <tessera/core/policy.hpp>

using Policy = tessera::cpu_threads;  // the model's policy: the only line amp_simplecnn.cu changes

#include "amp_simplecnn_main.hpp"
