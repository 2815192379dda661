// Mixed precision in the spirit of torch.autocast(dtype=torch.bfloat16): while an amp::autocast scope is open on a
// thread, the float layer products on that thread — ad::linear, ad::conv2d, ad::conv2d_relu_maxpool2, and so every
// nn::Linear, nn::Conv2d (with its fused ReLU / max-pool) and the attention and transformer projections built on
// them — run with bfloat16 operands and fp32 accumulation; everything else stays fp32.
//
//   nn::Sequential<...>::on<cpu_threads> net;  optim::Adam opt(net.parameters());
//   for (auto [x, y] : batches) {
//     ad::Var<float, 0, cpu_threads> loss;
//     {
//       amp::autocast bf16;                            // this thread, until the end of the block
//       loss = ad::cross_entropy(net.forward(x), y);  // products in bf16, the loss in fp32
//     }
//     opt.zero_grad(); loss.backward(); opt.step();    // the backward runs each product in bf16 as its forward did
//   }
//
// What it guarantees:
//   * Master weights, gradients and the optimizer stay fp32: a weight is rounded to bf16 when a product reads it, and
//     its gradient is the fp32 sum of the bf16 products (dW = dz^T x with dz and x rounded to bf16, accumulated in
//     fp32), added into the fp32 gradient like any other.
//   * Inputs of a product are rounded to bf16 (round to nearest even; NaN stays NaN; the conversion of
//     core/types.hpp's bfloat16), the product accumulates in fp32, and the bias and activation are applied in fp32 to
//     the fp32 result (the GEMM's block epilogue on the host, as in fp32). Outputs are fp32 tensors: pooling,
//     BatchNorm, softmax, the losses and every elementwise expression run in fp32 on them, as autocast keeps
//     reductions, softmax and losses in float32.
//   * The backward of a bf16 product is the exact gradient of the function its forward computed, up to fp32
//     accumulation: dx = bf16(dz) bf16(W) and dW = bf16(dz)^T bf16(x); the activation's and the bias's gradients are
//     fp32 (from the fp32 output and gradient).
//   * A weight (a Var that is a leaf and requires gradients) is rounded once per scope and the copy reused by every
//     later product of the scope and by their backwards (torch's autocast cache): open one scope per training step
//     around the forward and the loss, as with torch, and change weights (an optimizer step) only outside it — a
//     weight changed in place inside the scope is not seen by the products after the change. Activations are
//     rounded at every use.
//   * Scopes nest; autocast(false) turns the mode off inside an enclosing scope; the mode is per thread (like
//     torch's), so a thread pool's workers are not affected by the caller's scope. Gradient mode (ad::no_grad) is
//     independent: without it, nothing is kept for a backward.
//   * Policies: the host policies (cpu, cpu_threads) for all three operations, through backend<P>::gemm_bf16,
//     conv2d_bf16 and its gradients (kernels/cpu/gemm_bf16.hpp, kernels/cpu/conv_bf16.hpp, which choose the CPU's
//     bf16 path at run time: AMX-BF16, AVX512-BF16, or fp32 after widening on CPUs without them); the CUDA policy
//     (compiled by nvcc) for ad::linear through cuBLASLt's bf16 GEMM, its convolutions staying fp32 (no bf16
//     convolution on CUDA yet). A policy whose backend lacks an operation keeps that operation in fp32.
//   * Errors: the same shape errors as the fp32 operations (the bf16 forms check the same shapes with the same
//     messages).
// Speed: bf16 halves the bytes of every operand read by a product. Whether the products get faster depends on the CPU:
// with AVX512-BF16 (Zen 4, Sapphire Rapids) `vdpbf16ps` does twice the multiply-adds of fp32 FMA per instruction;
// without it (AVX2 CPUs) bf16 is widened to fp32 while packing and the products run at fp32 speed, plus the
// conversions (docs/bf16.md has the measured figures).
#pragma once
#include <memory>
#include <string>
#include <unordered_map>
#include <utility>

#include "tessera/amp/autocast_ops.hpp"

namespace tessera::amp {

namespace detail {
/// The autocast tables of policy P: an operation is registered when backend<P> offers what its bf16 form needs.
template <class P>
struct tables {
  static const ad::detail::autocast_ops<float, P>* get() {
    static const ad::detail::autocast_ops<float, P> t = [] {
      ad::detail::autocast_ops<float, P> o;
      if constexpr (has_bf16_gemm<P>) o.linear = &linear_bf16<P>;
      if constexpr (has_bf16_conv<P>) {
        o.conv2d = &conv2d_bf16<P>;
        o.conv2d_relu_maxpool2 = &conv2d_relu_maxpool2_bf16<P>;
      }
      return o;
    }();
    return &t;
  }
};

/// Sets the thread's tables of every policy this translation unit compiles for (on: the bf16 ones; off: none) and
/// restores them on destruction.
struct saved_tables {
  const ad::detail::autocast_ops<float, cpu>* c;
  const ad::detail::autocast_ops<float, cpu_threads>* ct;
#if defined(__CUDACC__)
  const ad::detail::autocast_ops<float, cuda>* g;
#endif
  static saved_tables now() {
    return {ad::detail::autocast_active<float, cpu>, ad::detail::autocast_active<float, cpu_threads>
#if defined(__CUDACC__)
            , ad::detail::autocast_active<float, cuda>
#endif
    };
  }
  static saved_tables bf16() {
    return {tables<cpu>::get(), tables<cpu_threads>::get()
#if defined(__CUDACC__)
            , tables<cuda>::get()
#endif
    };
  }
  void install() const {
    ad::detail::autocast_active<float, cpu> = c;
    ad::detail::autocast_active<float, cpu_threads> = ct;
#if defined(__CUDACC__)
    ad::detail::autocast_active<float, cuda> = g;
#endif
  }
};
}  // namespace detail

/// An autocast region (see the top of this file): bf16 products on this thread from construction to destruction.
/// Not copyable or movable; destroy scopes in the reverse order of construction (as blocks do).
class autocast {
 public:
  explicit autocast(bool enabled = true) : enabled_(enabled), saved_(detail::saved_tables::now()), outer_cache_(detail::current_cache()) {
    (enabled ? detail::saved_tables::bf16() : detail::saved_tables{}).install();
    detail::current_cache() = enabled ? &cache_ : nullptr;
  }
  ~autocast() {
    saved_.install();
    detail::current_cache() = outer_cache_;
  }
  autocast(const autocast&) = delete;
  autocast& operator=(const autocast&) = delete;

  bool enabled() const { return enabled_; }
  /// Weights rounded to bf16 and kept by this scope so far.
  std::size_t cached_weights() const { return cache_.size(); }

 private:
  bool enabled_;
  detail::saved_tables saved_;
  detail::weight_cache* outer_cache_;
  detail::weight_cache cache_;
};

/// Whether float products on policy P run in bf16 on this thread now (an enabled autocast scope is open).
template <class P = cpu_threads>
bool is_autocast_enabled() {
  return ad::detail::autocast_active<float, P> != nullptr;
}

}  // namespace tessera::amp
