// Trains the SimpleCNN on Fashion-MNIST: batch 64, SGD with momentum 0.9 and lr 0.05 as the PyTorch peer
// ../shared/peers/fmnist_torch.py (halved after each epoch here, on standardised pixels), a live progress line, test accuracy after each epoch, a checkpoint of
// the model and optimizer, and the inference time over the 10k test images; then the trained model converted to int8
// (calibrated on 1000 training images): both accuracies and both inference times.
//   fashion_mnist [epochs = 3] [threads = 2] [checkpoint = simplecnn.ckpt] [--logdir DIR]  (TensorBoard event files and CSVs)
// The data comes from Debian's dataset-fashion-mnist (or $TESSERA_FASHION_MNIST_DIR).
// The program is in fashion_mnist_main.hpp; fashion_mnist.cu is the same program on the GPU.
#include <tessera/tessera.hpp>

using Policy = tessera::cpu_threads;  // the model's policy: the only line a CUDA build changes

#include "fashion_mnist_main.hpp"
