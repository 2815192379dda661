// The backend vocabulary: what every policy's backend does, in one set of names and descriptor structs shared by
// the host and the device.
//
//   backend<P>        one struct per policy, specialised in one file each:
//                       kernels/cpu/backend.hpp    backend<cpu>, backend<cpu_threads>  (P::num_threads() threads)
//                       kernels/cuda/backend.hpp   backend<cuda>                       (nvcc only)
//                     Everything above kernels/ (the planner, autodiff, nn, optim, quant) reaches a kernel through
//                     backend<P>::name(...) and is written once for every policy; nothing above kernels/ tests
//                     P::on_device to choose a kernel.
//
// The vocabulary (static member functions; raw pointers, extents and the descriptors below; no nodes, no tensors):
//   memory            allocate<T>(n), deallocate(p), copy(dst, src, n) (same memory), to_host(dst, src, n),
//                     from_host(dst, src, n) (both wait for the copy), zero(p, n)
//   elementwise       elementwise<T, Packable, MaxLane>(dst, dims, strides, ev): dst = ev (an evaluator of core/eval.hpp)
//   reduce            reduce<Op, A, Packable, MaxLane, RS>(...): see each backend
//   gemm              gemm(gemm_desc<T>) (C (+)= A B); the host's gemm(desc, epi) also runs a block epilogue
//   nn                activation backward, conv2d forward / backward data / backward weight (conv_geometry), pooling
//                     forward and backward, softmax rows, cross entropy, dropout, batch norm (kernels/*/nn.hpp)
//   rnn               the LSTM step forward and backward (kernels/*/rnn.hpp)
//   optim             the SGD and Adam updates (kernels/*/optim.hpp)
// A backend that lacks a function fails to compile at the call, naming backend<P> and the function.
#pragma once
#include "tessera/core/policy.hpp"
#include "tessera/core/shape.hpp"

namespace tessera {

/// The activation a layer applies after its product (Linear, Conv2d), chosen at run time.
enum class activation { none, relu, tanh, sigmoid };

namespace detail {

/// Strided matrix operand: element (i, j) at p[i * rs + j * cs].
template <class T>
struct mat_ref {
  const T* p;
  index_t rs, cs;
  const T& operator()(index_t i, index_t j) const { return p[i * rs + j * cs]; }
};

/// C (+)= A B with A (M x K) and B (K x N) read through strides (transposed views need no copy) and C row-major
/// with row stride ldc (unit column stride). accumulate: C += A B (the gradient products).
template <class T>
struct gemm_desc {
  index_t M, N, K;
  mat_ref<T> a, b;
  T* c;
  index_t ldc;
  bool accumulate = false;
};

/// Sizes of one convolution. Input N x C x H x W, weights K x C/groups x R x S, output N x K x OH x OW.
struct conv_geometry {
  index_t N, C, H, W;
  index_t K, R, S;
  index_t OH, OW;
  index_t stride, pad, dilation, groups;
};

inline index_t conv_out_extent(index_t in, index_t k, index_t stride, index_t pad, index_t dilation) {
  return (in + 2 * pad - dilation * (k - 1) - 1) / stride + 1;
}

}  // namespace detail

/// The kernels of policy P (see the top of this file). Specialised by kernels/cpu/backend.hpp and
/// kernels/cuda/backend.hpp; using one that is not there is a compile error naming backend<P>.
template <class P>
struct backend;

}  // namespace tessera
