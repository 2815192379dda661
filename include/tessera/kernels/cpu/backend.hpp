// backend<cpu> and backend<cpu_threads>: the host's side of the vocabulary of kernels/backend.hpp. One struct for
// both host policies (P::num_threads() is the only difference); its parts live beside their kernels:
//   here                 memory, gemm
//   kernels/cpu/nn.hpp   host_nn_ops<P>: the layer operations' kernels (activation backward, conv2d gradients, ...)
//   kernels/cpu/rnn.hpp  host_rnn_ops<P>: the LSTM step
//   kernels/cpu/optim.hpp host_optim_ops<P>: the optimizer updates
#pragma once
#include <algorithm>
#include <cstring>

#include "tessera/core/policy.hpp"
#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cpu/gemm.hpp"
#include "tessera/kernels/cpu/nn.hpp"
#include "tessera/kernels/cpu/optim.hpp"
#include "tessera/kernels/cpu/rnn.hpp"

namespace tessera {

template <class P>
  requires is_host_policy_v<P>
struct backend<P> : detail::host_nn_ops<P>, detail::host_rnn_ops<P>, detail::host_optim_ops<P> {
  using policy = P;
  static constexpr bool on_device = false;
  /// Threads a kernel of this backend may use.
  static int threads() { return P::num_threads(); }

  // ---- memory ----
  template <class T>
  static T* allocate(index_t n) { return memory<P>::template allocate<T>(std::size_t(n)); }
  template <class T>
  static void deallocate(T* p) { memory<P>::deallocate(p); }
  template <class T>
  static void copy(T* dst, const T* src, index_t n) { if (n > 0) std::memcpy(dst, src, std::size_t(n) * sizeof(T)); }
  template <class T>
  static void to_host(T* dst, const T* src, index_t n) { copy(dst, src, n); }
  template <class T>
  static void from_host(T* dst, const T* src, index_t n) { copy(dst, src, n); }
  template <class T>
  static void zero(T* p, index_t n) { if (n > 0) std::fill(p, p + n, T(0)); }

  // ---- gemm ----
  /// C (+)= A B.
  template <class T>
  static void gemm(const detail::gemm_desc<T>& d) {
    detail::cpu_gemm<T>(d.M, d.N, d.K, d.a, d.b, d.c, d.ldc, d.accumulate, P::num_threads());
  }
  /// The same with a block epilogue: epi(i0, j0, rows, cols) on each finished tile of C (kernels/cpu/gemm.hpp).
  template <class T, class Epi>
  static void gemm(const detail::gemm_desc<T>& d, const Epi& epi) {
    detail::cpu_gemm<T>(d.M, d.N, d.K, d.a, d.b, d.c, d.ldc, d.accumulate, P::num_threads(), epi);
  }
};

}  // namespace tessera
