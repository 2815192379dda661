// Optimizers over type-erased parameters (nn::parameter_ref<T>: host memory, or device memory on the cuda policy) with
// PyTorch's update rules (torch.optim, 1.13): SGD (momentum, dampening, Nesterov, L2 weight decay), Adam (L2 weight
// decay added to the gradient) and AdamW (decoupled weight decay).
//
//   std::vector<nn::parameter_ref<float>> params = {nn::make_parameter_ref("0.weight", w), ...};
//   optim::AdamW<float> opt(params, {.lr = 1e-3});   // or SGD<float>(params, {.lr = 0.1, .momentum = 0.9})
//   for (...) { opt.zero_grad(); loss.backward(); opt.step(); }
//
// step() skips parameters whose grad() is nullptr (no gradient has been produced yet), as PyTorch skips those whose
// .grad is None; their state does not advance. State tensors (host, rank 1, one element per parameter element)
// are visited by for_each_state(f), f(const std::string& name, Tensor<T, Shape<dyn>>& t), under these names:
//   "step"                     number of step() calls (one element)
//   "<param>.step"             number of updates this parameter received (one element): PyTorch's per-parameter
//                              state["step"], which drives Adam's bias correction and SGD's first momentum step
//   "<param>.momentum_buffer"  SGD with momentum != 0
//   "<param>.exp_avg", "<param>.exp_avg_sq"   Adam, AdamW
// State is allocated lazily (at a parameter's first update), and for_each_state allocates whatever is missing
// (zeros, step 0), so a fresh optimizer can be loaded from a checkpoint:
//   checkpoint_writer w; w.add_all([&](auto&& f) { opt.for_each_state(f); }, "optim.");
//   checkpoint_reader r(path); r.read_all([&](auto&& f) { fresh.for_each_state(f); }, "optim.");
// Step counts are stored as T (as PyTorch stores them in a float tensor): exact up to 2^24 steps for float.
//
// Element loops: each update is written once as an operation on one element or one SIMD packet (GCC vector
// extensions, the same IEEE arithmetic lane by lane; see detail::lanes), since GCC 12 at -O2 auto-vectorises no loop
// of unknown trip count, nor std::sqrt while it may set errno. A parameter with more than 2^16 elements is split
// over two OpenMP threads when OpenMP is enabled; the split (at a multiple of 64 elements) changes no result bit.
//
// Device parameters (parameter_ref::on_device: parameters of the cuda policy): step() runs one CUDA kernel per
// parameter on tessera's stream, with the same update written with IEEE round-to-nearest operations that nvcc may not
// fuse (__fmul_rn, __fadd_rn, ...): each element gets the arithmetic of the host loops. Their state buffers live in
// device memory; the step counts stay on the host. for_each_state still hands out host tensors: for a device
// parameter each buffer is copied into a host tensor before f sees it and copied back after (so checkpoints save
// and load it as for a host parameter; both copies synchronise). The kernels are in the __CUDACC__ part at the end of
// this file: when any file compiled by nvcc includes this header they are registered (detail::device_hooks), and
// step() is the same code in every translation unit; without them, a device parameter makes step() throw.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_set>
#include <utility>
#include <vector>

#include "tessera/config.hpp"
#include "tessera/core/shape.hpp"
#include "tessera/core/simd.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/nn/parameter.hpp"

#if defined(_OPENMP)
#include <omp.h>
#endif
#if TESSERA_SIMD && (defined(__AVX__) || defined(__SSE2__))
#include <immintrin.h>  // the packet square roots
#endif

namespace tessera::optim {

/// The type of every optimizer state tensor: rank 1, host.
template <class T>
using state_tensor = Tensor<T, Shape<dyn>>;

/// torch.optim.SGD's options. lr has no default (as in PyTorch): sgd_options{.lr = 0.1, .momentum = 0.9}.
struct sgd_options {
  double lr = std::numeric_limits<double>::quiet_NaN();
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;
};

/// torch.optim.Adam's options (weight decay is L2: added to the gradient).
struct adam_options {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
};

/// torch.optim.AdamW's options (decoupled weight decay: p *= 1 - lr * weight_decay before the Adam step).
struct adamw_options {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;
};

namespace detail {

/// Parameters with more elements than this are updated by two OpenMP threads.
inline constexpr index_t parallel_min_elements = index_t(1) << 16;
inline constexpr int parallel_threads = 2;

/// f(begin, end) over [0, n): in one call, or in two halves (cut at a multiple of 64 elements) on two threads.
template <class F>
void for_range(index_t n, F&& f) {
#if defined(_OPENMP)
  if (n > parallel_min_elements && omp_get_max_threads() > 1 && !omp_in_parallel()) {
    const index_t half = (n / 2 + 63) / 64 * 64;
#pragma omp parallel for num_threads(parallel_threads) schedule(static)
    for (int c = 0; c < parallel_threads; ++c) {
      if (c == 0) f(index_t(0), half);
      else f(half, n);
    }
    return;
  }
#endif
  f(index_t(0), n);
}

inline std::string format_double(double x) {
  std::ostringstream os;
  os.precision(17);
  os << x;
  return os.str();
}

/// std::invalid_argument "tessera: <who>: option <option> = <value> is invalid: <requirement>" unless ok.
inline void require_option(bool ok, const char* who, const char* option, double value, const char* requirement) {
  if (!ok)
    throw std::invalid_argument(std::string("tessera: ") + who + ": option " + option + " = " + format_double(value) +
                                " is invalid: " + requirement);
}

inline void check_lr(const char* who, double lr) {
  if (std::isnan(lr))
    throw std::invalid_argument(std::string("tessera: ") + who +
                                ": option lr is not set (or NaN): give a learning rate, e.g. {.lr = 0.01}");
  require_option(lr >= 0.0 && std::isfinite(lr), who, "lr", lr, "the learning rate must be finite and >= 0");
}

inline void check_finite(const char* who, const char* option, double value) {
  require_option(std::isfinite(value), who, option, value, "it must be a finite number");
}

template <class T>
void check_parameters(const char* who, const std::vector<nn::parameter_ref<T>>& params) {
  if (params.empty())
    throw std::invalid_argument(std::string("tessera: ") + who + ": the parameter list is empty");
  std::unordered_set<std::string> names;
  std::unordered_set<const T*> storage;
  for (std::size_t i = 0; i < params.size(); ++i) {
    const auto& p = params[i];
    const std::string where = std::string("tessera: ") + who + ": parameter #" + std::to_string(i) + " ('" + p.name + "')";
    if (p.name.empty())
      throw std::invalid_argument(where + " has an empty name (state tensors are named after their parameter)");
    if (!p.value || !p.grad || !p.zero_grad)
      throw std::invalid_argument(where + " is not bound to a tensor (make it with nn::make_parameter_ref)");
    index_t n = 1;
    for (index_t d : p.dims) n *= d;
    if (p.size < 0 || n != p.size)
      throw std::invalid_argument(where + " has size " + std::to_string(p.size) + " but its dims hold " +
                                  std::to_string(n) + " elements");
    if (!names.insert(p.name).second)
      throw std::invalid_argument(where + ": the name appears more than once in the list (state names would clash)");
    if (p.size > 0) {
      const T* v = p.value();
      if (v == nullptr) throw std::invalid_argument(where + " has no storage (value() returned nullptr)");
      if (!storage.insert(v).second)
        throw std::invalid_argument(where + " is the same tensor as an earlier parameter of the list");
    }
  }
}

// ---- element kernels -----------------------------------------------------------------------------------------------
// Each update is an operation object op(V& p, V g, V&... state) written once for V = T (one element) and V = a SIMD
// packet of T (GCC vector extensions: the same IEEE operations lane by lane). lanes() runs it over [0, n): full
// packets, then single elements. Explicit packets because GCC 12 at -O2 does not auto-vectorise loops whose trip
// count is unknown, and never vectorises std::sqrt while it may set errno.

/// Square root of one element or, lane by lane, of a packet (the IEEE square root either way).
template <class V>
TS_INLINE V vsqrt(V x) {
  if constexpr (std::is_floating_point_v<V>) {
    return std::sqrt(x);
  } else {
#if TESSERA_SIMD && defined(__AVX512F__)
    // the maskz forms: _mm512_sqrt_ps passes _mm512_undefined_ps() through, which GCC 12 flags as uninitialised
    if constexpr (sizeof(V) == 64 && std::is_same_v<simd::elem_t<V>, float>)
      return (V)_mm512_maskz_sqrt_ps(__mmask16(0xffff), (__m512)x);
    if constexpr (sizeof(V) == 64 && std::is_same_v<simd::elem_t<V>, double>)
      return (V)_mm512_maskz_sqrt_pd(__mmask8(0xff), (__m512d)x);
#endif
#if TESSERA_SIMD && defined(__AVX__)
    if constexpr (sizeof(V) == 32 && std::is_same_v<simd::elem_t<V>, float>) return (V)_mm256_sqrt_ps((__m256)x);
    if constexpr (sizeof(V) == 32 && std::is_same_v<simd::elem_t<V>, double>) return (V)_mm256_sqrt_pd((__m256d)x);
#endif
#if TESSERA_SIMD && defined(__SSE2__)
    if constexpr (sizeof(V) == 16 && std::is_same_v<simd::elem_t<V>, float>) return (V)_mm_sqrt_ps((__m128)x);
    if constexpr (sizeof(V) == 16 && std::is_same_v<simd::elem_t<V>, double>) return (V)_mm_sqrt_pd((__m128d)x);
#endif
    constexpr int n = int(sizeof(V) / sizeof(x[0]));
    for (int i = 0; i < n; ++i) x[i] = std::sqrt(x[i]);
    return x;
  }
}

template <class Ptr>
inline constexpr bool writable_v = !std::is_const_v<std::remove_pointer_t<Ptr>>;

/// One element (N == 1) or a packet of N.
template <class T, int N>
struct lane_value {
  using type = T;
};
#if TESSERA_SIMD
template <class T, int N>
  requires(N > 1)
struct lane_value<T, N> {
  using type = simd::vec<T, N>;
};
#endif

/// Element (N == 1) or packet (N lanes) access to an array of T.
template <class T, int N>
struct lane_access {
  using value = typename lane_value<T, N>::type;
  static TS_INLINE value load(const T* p) {
    if constexpr (N == 1) return *p;
#if TESSERA_SIMD
    else return simd::load<T, N>(p);
#endif
  }
  template <class Ptr>
  static TS_INLINE void store_if_writable(Ptr p, const value& v) {
    if constexpr (writable_v<Ptr>) {
      if constexpr (N == 1) *p = v;
#if TESSERA_SIMD
      else simd::store<T, N>(p, v);
#endif
    }
  }
};

template <class T, int N, class Op, class... Ptr, std::size_t... K>
TS_INLINE void lanes_at(const Op& op, index_t i, std::index_sequence<K...>, Ptr... ptr) {
  using A = lane_access<T, N>;
  typename A::value v[sizeof...(Ptr)] = {A::load(ptr + i)...};
  op(v[K]...);
  (A::store_if_writable(ptr + i, v[K]), ...);
}

/// op(v...) over elements [0, n) of the arrays ptr... (each T* or const T*), the T* ones written back: full SIMD
/// packets first, then single elements. Every element gets the same arithmetic either way.
template <class T, class Op, class... Ptr>
void lanes(index_t n, const Op& op, Ptr... ptr) {
  static_assert((std::is_same_v<std::remove_const_t<std::remove_pointer_t<Ptr>>, T> && ...));
  using seq = std::index_sequence_for<Ptr...>;
  index_t i = 0;
#if TESSERA_SIMD
  constexpr int N = simd::lanes_for<sizeof(T)>;
  if constexpr (N > 1)
    for (; i + N <= n; i += N) lanes_at<T, N>(op, i, seq{}, ptr...);
#endif
  for (; i < n; ++i) lanes_at<T, 1>(op, i, seq{}, ptr...);
}

/// SGD without momentum: p -= lr * (g + wd * p).   op(p, g)
template <class T, bool Decay>
struct sgd_plain_op {
  T neg_lr, wd;
  template <class V>
  TS_INLINE void operator()(V& p, const V& g) const {
    V d = g;
    if constexpr (Decay) d = d + wd * p;
    p = p + neg_lr * d;
  }
};

/// SGD with momentum. d = g + wd * p; buf = d at the first update, else buf = momentum * buf + (1 - dampening) * d;
/// d = nesterov ? d + momentum * buf : buf; p -= lr * d.   op(p, g, buf)
template <class T, bool Decay, bool First, bool Nesterov>
struct sgd_momentum_op {
  T neg_lr, wd, momentum, one_minus_dampening;
  template <class V>
  TS_INLINE void operator()(V& p, const V& g, V& buf) const {
    V d = g;
    if constexpr (Decay) d = d + wd * p;
    if constexpr (First) buf = d;
    else buf = buf * momentum + one_minus_dampening * d;
    if constexpr (Nesterov) d = d + momentum * buf;
    else d = buf;
    p = p + neg_lr * d;
  }
};

/// Weight decay in Adam's step: none, L2 (g += wd * p: torch.optim.Adam) or decoupled (p *= 1 - lr * wd first:
/// torch.optim.AdamW).
enum class adam_decay { none, l2, decoupled };

/// One Adam step (PyTorch's arithmetic): m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g g;
/// p += -step_size * m / (sqrt(v) / sqrt(bias_correction2) + eps), step_size = lr / bias_correction1.
/// op(p, g, m, v)
template <class T, adam_decay Decay>
struct adam_op {
  T beta1, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps, wd, keep;
  template <class V>
  TS_INLINE void operator()(V& p, const V& g, V& m, V& v) const {
    V gi = g;
    if constexpr (Decay == adam_decay::decoupled) p = p * keep;
    if constexpr (Decay == adam_decay::l2) gi = gi + wd * p;
    m = m * beta1 + one_minus_beta1 * gi;
    v = v * beta2 + one_minus_beta2 * gi * gi;
    const V denom = vsqrt(v) / bias_correction2_sqrt + eps;
    p = p + neg_step_size * m / denom;
  }
};

// ---- device parameters -----------------------------------------------------------------------------------------

/// The constants of one SGD update on the device (the host loops' constants) and which variant runs.
template <class T>
struct device_sgd_args {
  T neg_lr, wd, momentum, one_minus_dampening;
  bool decay, first, nesterov;
};
/// The constants of one Adam / AdamW update on the device.
template <class T>
struct device_adam_args {
  T beta1, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, bias_correction2_sqrt, eps, wd, keep;
  adam_decay decay;
};

/// What step() and the state need for device parameters, implemented by the __CUDACC__ part of this file.
template <class T>
struct device_hooks {
  T* (*allocate_zeroed)(index_t n);
  void (*release)(T* p);
  void (*to_host)(T* dst, const T* src, index_t n);    // synchronises
  void (*to_device)(T* dst, const T* src, index_t n);  // synchronises
  /// p -= lr * d as SGD computes d (buf: the momentum buffer, or null without momentum).
  void (*sgd)(T* p, const T* g, T* buf, index_t n, const device_sgd_args<T>& a);
  void (*adam)(T* p, const T* g, T* m, T* v, index_t n, const device_adam_args<T>& a);
};

/// The registered device hooks for T (null until a file compiled by nvcc includes this header).
template <class T>
const device_hooks<T>*& device_hooks_slot() {
  static const device_hooks<T>* h = nullptr;
  return h;
}

template <class T>
const device_hooks<T>& device_hooks_for(const char* who, const std::string& param) {
  const device_hooks<T>* h = device_hooks_slot<T>();
  if (!h)
    throw std::logic_error(std::string("tessera: ") + who + ": parameter '" + param +
                           "' lives on the cuda device, but no file compiled by nvcc includes tessera/optim/optim.hpp "
                           "(its device kernels are there)");
  return *h;
}

}  // namespace detail

/// What the optimizers share: the parameter list, the learning rate, zero_grad, and the step counters and
/// per-parameter state tensors that for_each_state visits.
template <class T>
class optimizer {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tessera::optim: optimizers work on float or double parameters");

 public:
  using value_type = T;
  using param_type = nn::parameter_ref<T>;

  const std::vector<param_type>& params() const { return params_; }

  /// Zero every parameter's gradient (parameter_ref::zero_grad).
  void zero_grad() {
    for (auto& p : params_) p.zero_grad();
  }

  double lr() const { return lr_; }
  /// A new learning rate (schedules); must be finite and >= 0.
  void set_lr(double lr) {
    detail::check_lr(who_, lr);
    lr_ = lr;
  }

  /// How many times step() has run (restored by loading the "step" state tensor).
  std::int64_t steps() const { return std::int64_t(step_.data()[0]); }

  /// f(const std::string& name, state_tensor<T>& t) for every state tensor (allocating missing ones, zeroed):
  /// "step", then per parameter "<param>.step" and "<param>.<buffer>" (see the top of this file).
  template <class F>
  void for_each_state(F&& f) {
    const std::string step_name = "step";
    f(step_name, step_);
    if (buffer_names_.empty()) return;
    for (std::size_t i = 0; i < params_.size(); ++i) {
      slot& s = ensure_slot(i);
      const std::string step_i = params_[i].name + ".step";
      f(step_i, s.step);
      for (std::size_t k = 0; k < buffer_names_.size(); ++k) {
        const std::string name = params_[i].name + "." + buffer_names_[k];
        if (!params_[i].on_device) {
          f(name, s.buffers[k]);
          continue;
        }
        // a device buffer: f sees a host copy, which is copied back afterwards (f may have loaded it)
        const auto& dev = detail::device_hooks_for<T>(who_, params_[i].name);
        const index_t n = params_[i].size;
        state_tensor<T> h(n);
        dev.to_host(h.data(), s.device_buffers[k].get(), n);
        f(name, h);
        if (h.size() != n)
          throw std::invalid_argument(std::string("tessera: ") + who_ + ": for_each_state: state " + name + " was resized");
        dev.to_device(s.device_buffers[k].get(), h.data(), n);
      }
    }
  }

 protected:
  /// Per-parameter state: its update count and its buffers (each with the parameter's number of elements).
  struct slot {
    state_tensor<T> step;
    std::vector<state_tensor<T>> buffers;
    std::vector<std::shared_ptr<T>> device_buffers;  ///< instead of buffers, for a device parameter
    bool allocated = false;
  };

  optimizer(std::vector<param_type> params, const char* who, double lr, std::vector<std::string> buffer_names)
      : who_(who), params_(std::move(params)), buffer_names_(std::move(buffer_names)) {
    detail::check_lr(who_, lr);
    detail::check_parameters(who_, params_);
    lr_ = lr;
    step_ = state_tensor<T>(index_t(1));
    step_.data()[0] = T(0);
    slots_.resize(params_.size());
  }

  slot& ensure_slot(std::size_t i) {
    slot& s = slots_[i];
    if (!s.allocated) {
      s.step = state_tensor<T>(index_t(1));
      s.step.data()[0] = T(0);
      s.buffers.clear();
      s.device_buffers.clear();
      for (std::size_t k = 0; k < buffer_names_.size(); ++k) {
        if (params_[i].on_device) {
          const auto& dev = detail::device_hooks_for<T>(who_, params_[i].name);
          s.device_buffers.emplace_back(dev.allocate_zeroed(params_[i].size), dev.release);
          continue;
        }
        state_tensor<T> b(params_[i].size);
        std::fill_n(b.data(), std::size_t(params_[i].size), T(0));
        s.buffers.push_back(std::move(b));
      }
      s.allocated = true;
    }
    return s;
  }

  /// Count one step() call.
  void count_step() { step_.data()[0] += T(1); }

  const char* who_;
  std::vector<param_type> params_;
  std::vector<std::string> buffer_names_;
  std::vector<slot> slots_;
  state_tensor<T> step_;
  double lr_ = 0.0;
};

/// torch.optim.SGD: g = grad + weight_decay * p; with momentum, buf = g at a parameter's first update, then
/// buf = momentum * buf + (1 - dampening) * g, and g = nesterov ? g + momentum * buf : buf; p -= lr * g.
template <class T>
class SGD : public optimizer<T> {
  using base = optimizer<T>;

 public:
  using param_type = typename base::param_type;

  SGD(std::vector<param_type> params, const sgd_options& options)
      : base(std::move(params), "SGD", options.lr,
             options.momentum != 0.0 ? std::vector<std::string>{"momentum_buffer"} : std::vector<std::string>{}),
        opt_(options) {
    detail::check_finite("SGD", "momentum", options.momentum);
    detail::require_option(options.momentum >= 0.0, "SGD", "momentum", options.momentum, "it must be >= 0");
    detail::check_finite("SGD", "dampening", options.dampening);
    detail::check_finite("SGD", "weight_decay", options.weight_decay);
    detail::require_option(options.weight_decay >= 0.0, "SGD", "weight_decay", options.weight_decay, "it must be >= 0");
    if (options.nesterov && (options.momentum <= 0.0 || options.dampening != 0.0))
      throw std::invalid_argument("tessera: SGD: option nesterov = true requires momentum > 0 and dampening = 0 (got momentum = " +
                                  detail::format_double(options.momentum) + ", dampening = " +
                                  detail::format_double(options.dampening) + ")");
  }

  /// The options, with the current learning rate.
  sgd_options options() const {
    sgd_options o = opt_;
    o.lr = this->lr_;
    return o;
  }

  /// One update of every parameter that has a gradient.
  void step() {
    const T neg_lr = T(-this->lr_), wd = T(opt_.weight_decay), mom = T(opt_.momentum);
    const T omd = T(1.0 - opt_.dampening);
    const bool decay = opt_.weight_decay != 0.0;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      auto& prm = this->params_[i];
      const T* g = prm.grad();
      if (g == nullptr) continue;
      T* p = prm.value();
      const index_t n = prm.size;
      if (prm.on_device) {
        const auto& dev = detail::device_hooks_for<T>(this->who_, prm.name);
        detail::device_sgd_args<T> a{neg_lr, wd, mom, omd, decay, false, opt_.nesterov};
        if (opt_.momentum == 0.0) {
          dev.sgd(p, g, nullptr, n, a);
          continue;
        }
        auto& s = this->ensure_slot(i);
        a.first = s.step.data()[0] == T(0);
        dev.sgd(p, g, s.device_buffers[0].get(), n, a);
        s.step.data()[0] += T(1);
        continue;
      }
      if (opt_.momentum == 0.0) {
        detail::for_range(n, [&](index_t b, index_t e) {
          if (decay) detail::lanes<T>(e - b, detail::sgd_plain_op<T, true>{neg_lr, wd}, p + b, g + b);
          else detail::lanes<T>(e - b, detail::sgd_plain_op<T, false>{neg_lr, wd}, p + b, g + b);
        });
        continue;
      }
      auto& s = this->ensure_slot(i);
      T* buf = s.buffers[0].data();
      const bool first = s.step.data()[0] == T(0);
      detail::for_range(n, [&](index_t b, index_t e) {
        dispatch(decay, first, opt_.nesterov, [&](auto D, auto F, auto N) {
          using op = detail::sgd_momentum_op<T, decltype(D)::value, decltype(F)::value, decltype(N)::value>;
          detail::lanes<T>(e - b, op{neg_lr, wd, mom, omd}, p + b, g + b, buf + b);
        });
      });
      s.step.data()[0] += T(1);
    }
    this->count_step();
  }

 private:
  template <class F>
  static void dispatch(bool a, bool b, bool c, F&& f) {
    using t = std::true_type;
    using u = std::false_type;
    if (a) {
      if (b) c ? f(t{}, t{}, t{}) : f(t{}, t{}, u{});
      else c ? f(t{}, u{}, t{}) : f(t{}, u{}, u{});
    } else {
      if (b) c ? f(u{}, t{}, t{}) : f(u{}, t{}, u{});
      else c ? f(u{}, u{}, t{}) : f(u{}, u{}, u{});
    }
  }

  sgd_options opt_;
};

namespace detail {

/// Adam and AdamW: the same step, with L2 (Decoupled = false) or decoupled (true) weight decay.
template <class T, bool Decoupled>
class adam_base : public optimizer<T> {
  using base = optimizer<T>;

 public:
  using param_type = typename base::param_type;

  /// One update of every parameter that has a gradient. Bias correction uses the parameter's own step count t:
  /// step_size = lr / (1 - beta1^t), denominator sqrt(v) / sqrt(1 - beta2^t) + eps (PyTorch's arithmetic).
  void step() {
    const double lr = this->lr_;
    for (std::size_t i = 0; i < this->params_.size(); ++i) {
      auto& prm = this->params_[i];
      const T* g = prm.grad();
      if (g == nullptr) continue;
      T* p = prm.value();
      const index_t n = prm.size;
      auto& s = this->ensure_slot(i);
      T* m = prm.on_device ? nullptr : s.buffers[0].data();
      T* v = prm.on_device ? nullptr : s.buffers[1].data();
      s.step.data()[0] += T(1);
      const double t = double(s.step.data()[0]);
      const double bias_correction1 = 1.0 - std::pow(beta1_, t);
      const double bias_correction2 = 1.0 - std::pow(beta2_, t);
      const T b1 = T(beta1_), omb1 = T(1.0 - beta1_), b2 = T(beta2_), omb2 = T(1.0 - beta2_);
      const T nss = T(-(lr / bias_correction1)), bc2 = T(std::sqrt(bias_correction2)), eps = T(eps_), wd = T(wd_);
      const T keep = T(1.0 - lr * wd_);
      const adam_decay decay = wd_ == 0.0 ? adam_decay::none : Decoupled ? adam_decay::decoupled : adam_decay::l2;
      if (prm.on_device) {
        const auto& dev = device_hooks_for<T>(this->who_, prm.name);
        dev.adam(p, g, s.device_buffers[0].get(), s.device_buffers[1].get(), n,
                 device_adam_args<T>{b1, omb1, b2, omb2, nss, bc2, eps, wd, keep, decay});
        continue;
      }
      for_range(n, [&](index_t b, index_t e) {
        auto run = [&](auto op) { lanes<T>(e - b, op, p + b, g + b, m + b, v + b); };
        switch (decay) {
          case adam_decay::none: run(adam_op<T, adam_decay::none>{b1, omb1, b2, omb2, nss, bc2, eps, wd, keep}); break;
          case adam_decay::l2: run(adam_op<T, adam_decay::l2>{b1, omb1, b2, omb2, nss, bc2, eps, wd, keep}); break;
          case adam_decay::decoupled:
            run(adam_op<T, adam_decay::decoupled>{b1, omb1, b2, omb2, nss, bc2, eps, wd, keep});
            break;
        }
      });
    }
    this->count_step();
  }

  double beta1() const { return beta1_; }
  double beta2() const { return beta2_; }
  double eps() const { return eps_; }
  double weight_decay() const { return wd_; }

 protected:
  template <class Options>
  adam_base(std::vector<param_type> params, const char* who, const Options& o)
      : base(std::move(params), who, o.lr, {"exp_avg", "exp_avg_sq"}),
        beta1_(o.beta1), beta2_(o.beta2), eps_(o.eps), wd_(o.weight_decay) {
    require_option(o.beta1 >= 0.0 && o.beta1 < 1.0, who, "beta1", o.beta1, "it must be in [0, 1)");
    require_option(o.beta2 >= 0.0 && o.beta2 < 1.0, who, "beta2", o.beta2, "it must be in [0, 1)");
    require_option(o.eps >= 0.0 && std::isfinite(o.eps), who, "eps", o.eps, "it must be finite and >= 0");
    require_option(o.weight_decay >= 0.0 && std::isfinite(o.weight_decay), who, "weight_decay", o.weight_decay,
                   "it must be finite and >= 0");
  }

  double beta1_, beta2_, eps_, wd_;
};

}  // namespace detail

namespace detail {
/// Adam or AdamW with its own options type (for options()).
template <class T, bool Decoupled, class Options>
class adam_front : public adam_base<T, Decoupled> {
 public:
  using param_type = nn::parameter_ref<T>;
  adam_front(std::vector<param_type> params, const Options& options = {})
      : adam_base<T, Decoupled>(std::move(params), Decoupled ? "AdamW" : "Adam", options), opt_(options) {}
  /// The options, with the current learning rate.
  Options options() const {
    Options o = opt_;
    o.lr = this->lr_;
    return o;
  }

 private:
  Options opt_;
};
}  // namespace detail

/// torch.optim.Adam (amsgrad = false): L2 weight decay added to the gradient before the moments.
template <class T>
using Adam = detail::adam_front<T, false, adam_options>;
/// torch.optim.AdamW (amsgrad = false): p *= 1 - lr * weight_decay, then the Adam step without L2.
template <class T>
using AdamW = detail::adam_front<T, true, adamw_options>;

}  // namespace tessera::optim

#if defined(__CUDACC__)
// ---- the device updates (nvcc only) --------------------------------------------------------------------------------
#include <cuda_runtime.h>

#include "tessera/kernels/cuda/common.hpp"
#include "tessera/policy/cuda.hpp"

namespace tessera::optim::detail::cuda_updates {

/// IEEE operations rounded to nearest that nvcc never contracts into an FMA: the host loops' arithmetic exactly.
template <class T>
struct ieee;
template <>
struct ieee<float> {
  static __device__ __forceinline__ float add(float a, float b) { return __fadd_rn(a, b); }
  static __device__ __forceinline__ float mul(float a, float b) { return __fmul_rn(a, b); }
  static __device__ __forceinline__ float div(float a, float b) { return __fdiv_rn(a, b); }
  static __device__ __forceinline__ float sqrt(float a) { return __fsqrt_rn(a); }
};
template <>
struct ieee<double> {
  static __device__ __forceinline__ double add(double a, double b) { return __dadd_rn(a, b); }
  static __device__ __forceinline__ double mul(double a, double b) { return __dmul_rn(a, b); }
  static __device__ __forceinline__ double div(double a, double b) { return __ddiv_rn(a, b); }
  static __device__ __forceinline__ double sqrt(double a) { return __dsqrt_rn(a); }
};

/// sgd_plain_op / sgd_momentum_op, one element per thread.
template <class T>
__global__ void sgd_kernel(T* p, const T* g, T* buf, index_t n, device_sgd_args<T> a) {
  using F = ieee<T>;
  const index_t step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    const T pi = p[i];
    T d = g[i];
    if (a.decay) d = F::add(d, F::mul(a.wd, pi));
    if (buf) {
      const T b = a.first ? d : F::add(F::mul(buf[i], a.momentum), F::mul(a.one_minus_dampening, d));
      buf[i] = b;
      d = a.nesterov ? F::add(d, F::mul(a.momentum, b)) : b;
    }
    p[i] = F::add(pi, F::mul(a.neg_lr, d));
  }
}

/// adam_op, one element per thread.
template <class T>
__global__ void adam_kernel(T* p, const T* g, T* m, T* v, index_t n, device_adam_args<T> a) {
  using F = ieee<T>;
  const index_t step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += step) {
    T pi = p[i], gi = g[i];
    if (a.decay == adam_decay::decoupled) pi = F::mul(pi, a.keep);
    if (a.decay == adam_decay::l2) gi = F::add(gi, F::mul(a.wd, pi));
    const T mi = F::add(F::mul(m[i], a.beta1), F::mul(a.one_minus_beta1, gi));
    const T vi = F::add(F::mul(v[i], a.beta2), F::mul(F::mul(a.one_minus_beta2, gi), gi));
    m[i] = mi;
    v[i] = vi;
    const T denom = F::add(F::div(F::sqrt(vi), a.bias_correction2_sqrt), a.eps);
    p[i] = F::add(pi, F::div(F::mul(a.neg_step_size, mi), denom));
  }
}

template <class T>
T* allocate_zeroed(index_t n) {
  T* p = memory<cuda>::allocate<T>(std::size_t(n));
  if (p)
    cuda_kernels::check_cuda(cudaMemsetAsync(p, 0, std::size_t(n) * sizeof(T), cuda_detail::stream()),
                             "cudaMemsetAsync (optimizer state)");
  return p;
}
template <class T>
void release(T* p) {
  memory<cuda>::deallocate(p);
}
template <class T>
void to_host(T* dst, const T* src, index_t n) {
  if (n > 0) memory<cuda>::copy_to_host(dst, src, std::size_t(n));
}
template <class T>
void to_device(T* dst, const T* src, index_t n) {
  if (n > 0) memory<cuda>::copy_to_device(dst, src, std::size_t(n));
}
template <class T>
void sgd(T* p, const T* g, T* buf, index_t n, const device_sgd_args<T>& a) {
  if (n <= 0) return;
  sgd_kernel<T><<<cuda_kernels::grid_for(n), 256, 0, cuda_detail::stream()>>>(p, g, buf, n, a);
  cuda_kernels::check_launch("tessera: optimizer: SGD kernel launch");
}
template <class T>
void adam(T* p, const T* g, T* m, T* v, index_t n, const device_adam_args<T>& a) {
  if (n <= 0) return;
  adam_kernel<T><<<cuda_kernels::grid_for(n), 256, 0, cuda_detail::stream()>>>(p, g, m, v, n, a);
  cuda_kernels::check_launch("tessera: optimizer: Adam kernel launch");
}

template <class T>
inline constexpr device_hooks<T> hooks = {&allocate_zeroed<T>, &release<T>, &to_host<T>, &to_device<T>, &sgd<T>, &adam<T>};

/// Registers the hooks when the program starts (every translation unit compiled by nvcc that includes this header).
inline const bool registered = [] {
  device_hooks_slot<float>() = &hooks<float>;
  device_hooks_slot<double>() = &hooks<double>;
  return true;
}();

}  // namespace tessera::optim::detail::cuda_updates
#endif  // __CUDACC__
