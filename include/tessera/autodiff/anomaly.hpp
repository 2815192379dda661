// Anomaly detection, as torch.autograd.set_detect_anomaly: while it is on, every operation on Vars checks its
// result, and backward() checks every gradient it produces; the first NaN or Inf throws ad::anomaly_error naming
// the operation ("the forward of conv2d", "the backward of log_softmax") and, inside an nn::Sequential, the layer
// ("layer 3 (Linear<128, 10>)"). Off (the default) it costs one flag test per operation.
//   ad::set_detect_anomaly(true);        // for the whole program, or
//   { ad::detect_anomaly on; ... }       // for a scope
//   TESSERA_DETECT_ANOMALY=1 ./train     // from the environment, for any program
// The operation's name comes from the type of the backward function it records (the function that defines it),
// found only when an anomaly is reported.
#pragma once
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <stdexcept>
#include <string>
#include <typeinfo>

#if defined(__GNUG__)
#include <cxxabi.h>
#endif

#include "tessera/core/error.hpp"
#include "tessera/core/types.hpp"

namespace tessera::ad {

/// Thrown in anomaly mode when an operation's result or a gradient is not finite.
class anomaly_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

namespace detail {
/// Starts as the environment says: TESSERA_DETECT_ANOMALY=1 turns it on for a program that never asks.
inline std::atomic<bool>& anomaly_flag() {
  static std::atomic<bool> on{[] {
    const char* e = std::getenv("TESSERA_DETECT_ANOMALY");
    return e && e[0] == '1';
  }()};
  return on;
}
/// The layer being run by nn::Sequential on this thread ("" outside a model), for anomaly messages.
inline std::string& anomaly_layer() {
  thread_local std::string where;
  return where;
}

/// "relu" from the demangled type of a lambda defined in tessera::ad::relu<...>(...) (or of a function object).
inline std::string op_name_from_type(const std::type_info& t) {
  std::string s = t.name();
#if defined(__GNUG__)
  int status = 0;
  if (char* d = abi::__cxa_demangle(t.name(), nullptr, nullptr, &status)) {
    s = d;
    std::free(d);
  }
#endif
  // the enclosing function: the qualified name up to its template arguments or parameters
  std::size_t end = 0;
  while (end < s.size() && s[end] != '<' && s[end] != '(' && s[end] != ' ') ++end;
  s.resize(end);
  const std::size_t colon = s.rfind("::");
  return colon == std::string::npos ? s : s.substr(colon + 2);
}
/// The operation's name: F::op_name() where the backward function object has one (a fused expression names its
/// formula), else from F's type.
template <class F>
std::string op_name_of() {
  if constexpr (requires { F::op_name(); }) return F::op_name();
  else return op_name_from_type(typeid(F));
}

/// "NaN", "Inf", or "" when the host array holds only finite values (integer elements always do).
template <class T>
const char* non_finite_kind(const T* p, index_t n) {
  if constexpr (is_floating_v<T>) {
    bool inf = false;
    for (index_t i = 0; i < n; ++i) {
      const double v = double(compute_t<T>(p[i]));
      if (std::isnan(v)) return "NaN";
      inf |= std::isinf(v);
    }
    return inf ? "Inf" : "";
  } else {
    (void)p, (void)n;
    return "";
  }
}
inline std::string anomaly_where(const std::string& layer) { return layer.empty() ? "" : " in " + layer; }
}  // namespace detail

/// Is anomaly detection on?
inline bool detect_anomaly_enabled() { return detail::anomaly_flag().load(std::memory_order_relaxed); }
/// Turns anomaly detection on or off for the whole program.
inline void set_detect_anomaly(bool on) { detail::anomaly_flag().store(on, std::memory_order_relaxed); }

/// While alive, anomaly detection is on (the previous setting comes back after).
class detect_anomaly {
 public:
  detect_anomaly() : prev_(detect_anomaly_enabled()) { set_detect_anomaly(true); }
  ~detect_anomaly() { set_detect_anomaly(prev_); }
  detect_anomaly(const detect_anomaly&) = delete;
  detect_anomaly& operator=(const detect_anomaly&) = delete;

 private:
  bool prev_;
};

/// While alive, anomaly messages on this thread name `layer` (nn::Sequential sets it around each layer).
class anomaly_layer_scope {
 public:
  explicit anomaly_layer_scope(std::string layer) : prev_(std::move(detail::anomaly_layer())) {
    detail::anomaly_layer() = std::move(layer);
  }
  ~anomaly_layer_scope() { detail::anomaly_layer() = std::move(prev_); }
  anomaly_layer_scope(const anomaly_layer_scope&) = delete;
  anomaly_layer_scope& operator=(const anomaly_layer_scope&) = delete;

 private:
  std::string prev_;
};

}  // namespace tessera::ad
