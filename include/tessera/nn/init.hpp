// Parameter initialisers as torch.nn.init defines them, drawing from tessera::Rng (deterministic for a seed: the
// elements are drawn in row-major order). Every function fills a parameter through parameter_ref::value().
//
//   Rng rng(42);
//   init::kaiming_uniform_(w, rng, 0.0, init::fan_mode::fan_in, init::nonlinearity::relu);
//   init::zeros_(b);
//   init::torch_default_linear_(w, b, rng);   // what torch.nn.Linear's reset_parameters does
//
// Fans (torch.nn.init._calculate_fan_in_and_fan_out): for dims [out, in, k...], receptive field = product of k...,
// fan_in = in * receptive field, fan_out = out * receptive field; fewer than two dims is an error.
// Gains (calculate_gain): linear, conv*, sigmoid 1; tanh 5/3; relu sqrt(2); leaky_relu sqrt(2 / (1 + a^2)) (a = 0.01
// when not given); selu 3/4.
// kaiming: std = gain / sqrt(fan), bound = sqrt(3) * std. xavier: std = gain * sqrt(2 / (fan_in + fan_out)),
// bound = sqrt(3) * std. A parameter with no elements is left alone (PyTorch warns and does nothing).
// float parameters draw Rng::uniform(lo, hi) / Rng::normal(mean, std); double parameters the 53-bit
// uniform_double / normal_double.
#pragma once
#include <cmath>
#include <cstdint>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "tessera/core/random.hpp"
#include "tessera/nn/parameter.hpp"

namespace tessera::nn::init {

/// Which fan kaiming_* scales by: fan_in keeps the variance of the forward pass, fan_out of the backward pass.
enum class fan_mode { fan_in, fan_out };

/// The nonlinearity that follows the layer (torch.nn.init.calculate_gain's names).
enum class nonlinearity {
  linear, conv1d, conv2d, conv3d, conv_transpose1d, conv_transpose2d, conv_transpose3d, sigmoid, tanh, relu,
  leaky_relu, selu
};

/// PyTorch's spelling of a nonlinearity ("leaky_relu", "conv_transpose2d", ...).
constexpr const char* nonlinearity_name(nonlinearity n) {
  switch (n) {
    case nonlinearity::linear: return "linear";
    case nonlinearity::conv1d: return "conv1d";
    case nonlinearity::conv2d: return "conv2d";
    case nonlinearity::conv3d: return "conv3d";
    case nonlinearity::conv_transpose1d: return "conv_transpose1d";
    case nonlinearity::conv_transpose2d: return "conv_transpose2d";
    case nonlinearity::conv_transpose3d: return "conv_transpose3d";
    case nonlinearity::sigmoid: return "sigmoid";
    case nonlinearity::tanh: return "tanh";
    case nonlinearity::relu: return "relu";
    case nonlinearity::leaky_relu: return "leaky_relu";
    case nonlinearity::selu: return "selu";
  }
  return "unknown";
}

/// torch.nn.init.calculate_gain: the recommended gain for a nonlinearity. `param` is leaky_relu's negative slope
/// (0.01 when not given); the other nonlinearities ignore it.
inline double calculate_gain(nonlinearity n, std::optional<double> param = std::nullopt) {
  switch (n) {
    case nonlinearity::linear:
    case nonlinearity::conv1d:
    case nonlinearity::conv2d:
    case nonlinearity::conv3d:
    case nonlinearity::conv_transpose1d:
    case nonlinearity::conv_transpose2d:
    case nonlinearity::conv_transpose3d:
    case nonlinearity::sigmoid: return 1.0;
    case nonlinearity::tanh: return 5.0 / 3.0;
    case nonlinearity::relu: return std::sqrt(2.0);
    case nonlinearity::leaky_relu: {
      const double slope = param.value_or(0.01);
      if (!std::isfinite(slope))
        throw std::invalid_argument("tessera: init::calculate_gain: the negative slope of leaky_relu must be finite");
      return std::sqrt(2.0 / (1.0 + slope * slope));
    }
    case nonlinearity::selu: return 3.0 / 4.0;
  }
  throw std::invalid_argument("tessera: init::calculate_gain: unknown nonlinearity");
}

/// fan_in and fan_out of a weight with these dims.
struct fans {
  index_t fan_in = 0;
  index_t fan_out = 0;
  friend bool operator==(const fans&, const fans&) = default;
};

namespace detail {
inline std::string format_dims(std::span<const index_t> dims) {
  std::string s = "[";
  for (std::size_t i = 0; i < dims.size(); ++i) s += (i ? ", " : "") + std::to_string(dims[i]);
  return s + "]";
}
}  // namespace detail

/// torch.nn.init._calculate_fan_in_and_fan_out: dims [out, in, k...] give fan_in = in * prod(k...) and
/// fan_out = out * prod(k...). Fewer than two dims: std::invalid_argument.
inline fans fan_in_fan_out(std::span<const index_t> dims) {
  if (dims.size() < 2)
    throw std::invalid_argument("tessera: init: fan in and fan out can not be computed for a tensor with fewer than 2 "
                                "dimensions (dims " + detail::format_dims(dims) + ")");
  index_t receptive = 1;
  for (std::size_t i = 2; i < dims.size(); ++i) receptive *= dims[i];
  return fans{dims[1] * receptive, dims[0] * receptive};
}
template <class T>
fans fan_in_fan_out(const parameter_ref<T>& p) {
  return fan_in_fan_out(std::span<const index_t>(p.dims));
}

namespace detail {

template <class T>
T* values_of(const parameter_ref<T>& p, const char* who) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "tessera: nn::init: initialisers fill float or double parameters");
  if (!p.value) throw std::invalid_argument(std::string("tessera: init::") + who + ": parameter '" + p.name + "' is not bound to a tensor");
  if (p.on_device)
    throw std::invalid_argument(std::string("tessera: init::") + who + ": parameter '" + p.name +
                                "' lives on the device; initialise the model's parameters on a host policy and copy them "
                                "(models draw their initial values on the host already)");
  T* v = p.value();
  if (v == nullptr && p.size > 0)
    throw std::invalid_argument(std::string("tessera: init::") + who + ": parameter '" + p.name + "' has no storage");
  return v;
}

inline void check_finite(const char* who, const char* what, double x) {
  if (!std::isfinite(x))
    throw std::invalid_argument(std::string("tessera: init::") + who + ": " + what + " = " + std::to_string(x) +
                                " is not a finite number");
}

/// fan_in or fan_out of p, which must be positive (kaiming divides by it).
template <class T>
double chosen_fan(const parameter_ref<T>& p, fan_mode mode, const char* who) {
  const fans f = fan_in_fan_out(p);
  const index_t fan = mode == fan_mode::fan_in ? f.fan_in : f.fan_out;
  if (fan <= 0)
    throw std::invalid_argument(std::string("tessera: init::") + who + ": parameter '" + p.name + "' with dims " +
                                format_dims(p.dims) + " has " + (mode == fan_mode::fan_in ? "fan_in" : "fan_out") +
                                " 0");
  return double(fan);
}

/// Uniform in [lo, hi) in T's precision.
template <class T>
void fill_uniform(T* v, index_t n, double lo, double hi, Rng& rng) {
  if constexpr (std::is_same_v<T, float>) {
    const float l = float(lo), h = float(hi);
    for (index_t i = 0; i < n; ++i) v[i] = rng.uniform(l, h);
  } else {
    for (index_t i = 0; i < n; ++i) {
      const double r = lo + (hi - lo) * rng.uniform_double();
      v[i] = r < hi ? r : lo;  // keep the interval half-open under rounding
    }
  }
}

template <class T>
void fill_normal(T* v, index_t n, double mean, double stddev, Rng& rng) {
  if constexpr (std::is_same_v<T, float>) {
    const float m = float(mean), s = float(stddev);
    for (index_t i = 0; i < n; ++i) v[i] = rng.normal(m, s);
  } else {
    for (index_t i = 0; i < n; ++i) v[i] = rng.normal_double(mean, stddev);
  }
}

}  // namespace detail

/// Uniform in [lo, hi) (torch.nn.init.uniform_). lo > hi: std::invalid_argument.
template <class T>
void uniform_(const parameter_ref<T>& p, double lo, double hi, Rng& rng) {
  T* v = detail::values_of(p, "uniform_");
  detail::check_finite("uniform_", "lo", lo);
  detail::check_finite("uniform_", "hi", hi);
  if (lo > hi)
    throw std::invalid_argument("tessera: init::uniform_: the range [lo, hi) = [" + std::to_string(lo) + ", " +
                                std::to_string(hi) + ") has lo > hi");
  detail::fill_uniform(v, p.size, lo, hi, rng);
}

/// Normal with the given mean and standard deviation (torch.nn.init.normal_). std < 0: std::invalid_argument.
template <class T>
void normal_(const parameter_ref<T>& p, double mean, double stddev, Rng& rng) {
  T* v = detail::values_of(p, "normal_");
  detail::check_finite("normal_", "mean", mean);
  detail::check_finite("normal_", "std", stddev);
  if (stddev < 0.0)
    throw std::invalid_argument("tessera: init::normal_: std = " + std::to_string(stddev) + " must be >= 0");
  detail::fill_normal(v, p.size, mean, stddev, rng);
}

/// Every element = value (torch.nn.init.constant_).
template <class T>
void constant_(const parameter_ref<T>& p, double value) {
  T* v = detail::values_of(p, "constant_");
  const T x = T(value);
  for (index_t i = 0; i < p.size; ++i) v[i] = x;
}
template <class T>
void zeros_(const parameter_ref<T>& p) {
  constant_(p, 0.0);
}
template <class T>
void ones_(const parameter_ref<T>& p) {
  constant_(p, 1.0);
}

/// torch.nn.init.kaiming_uniform_: uniform in [-bound, bound), bound = gain * sqrt(3 / fan), gain =
/// calculate_gain(nl, a). PyTorch's defaults: a = 0, fan_in, leaky_relu (gain sqrt(2) with a = 0).
template <class T>
void kaiming_uniform_(const parameter_ref<T>& p, Rng& rng, double a = 0.0, fan_mode mode = fan_mode::fan_in,
                      nonlinearity nl = nonlinearity::leaky_relu) {
  T* v = detail::values_of(p, "kaiming_uniform_");
  if (p.size == 0) return;
  const double fan = detail::chosen_fan(p, mode, "kaiming_uniform_");
  const double stddev = calculate_gain(nl, a) / std::sqrt(fan);
  const double bound = std::sqrt(3.0) * stddev;
  detail::fill_uniform(v, p.size, -bound, bound, rng);
}

/// torch.nn.init.kaiming_normal_: normal with mean 0 and std = gain / sqrt(fan).
template <class T>
void kaiming_normal_(const parameter_ref<T>& p, Rng& rng, double a = 0.0, fan_mode mode = fan_mode::fan_in,
                     nonlinearity nl = nonlinearity::leaky_relu) {
  T* v = detail::values_of(p, "kaiming_normal_");
  if (p.size == 0) return;
  const double fan = detail::chosen_fan(p, mode, "kaiming_normal_");
  const double stddev = calculate_gain(nl, a) / std::sqrt(fan);
  detail::fill_normal(v, p.size, 0.0, stddev, rng);
}

/// torch.nn.init.xavier_uniform_: uniform in [-bound, bound), bound = gain * sqrt(6 / (fan_in + fan_out)).
template <class T>
void xavier_uniform_(const parameter_ref<T>& p, Rng& rng, double gain = 1.0) {
  T* v = detail::values_of(p, "xavier_uniform_");
  detail::check_finite("xavier_uniform_", "gain", gain);
  if (p.size == 0) return;
  const fans f = fan_in_fan_out(p);
  const double stddev = gain * std::sqrt(2.0 / double(f.fan_in + f.fan_out));
  const double bound = std::sqrt(3.0) * stddev;
  detail::fill_uniform(v, p.size, -bound, bound, rng);
}

/// torch.nn.init.xavier_normal_: normal with mean 0 and std = gain * sqrt(2 / (fan_in + fan_out)).
template <class T>
void xavier_normal_(const parameter_ref<T>& p, Rng& rng, double gain = 1.0) {
  T* v = detail::values_of(p, "xavier_normal_");
  detail::check_finite("xavier_normal_", "gain", gain);
  if (p.size == 0) return;
  const fans f = fan_in_fan_out(p);
  const double stddev = gain * std::sqrt(2.0 / double(f.fan_in + f.fan_out));
  detail::fill_normal(v, p.size, 0.0, stddev, rng);
}

namespace detail {
template <class T>
void torch_default_layer(const parameter_ref<T>& weight, const parameter_ref<T>* bias, Rng& rng, const char* who,
                         std::size_t min_rank) {
  if (weight.dims.size() < min_rank)
    throw std::invalid_argument(std::string("tessera: init::") + who + ": the weight '" + weight.name + "' has dims " +
                                format_dims(weight.dims) + "; expected at least " + std::to_string(min_rank) +
                                " dims ([out, in" + (min_rank > 2 ? ", k...]" : "]") + ")");
  if (bias && (bias->dims.size() != 1 || bias->dims[0] != weight.dims[0]))
    throw std::invalid_argument(std::string("tessera: init::") + who + ": the bias '" + bias->name + "' has dims " +
                                format_dims(bias->dims) + " but the weight '" + weight.name + "' " +
                                format_dims(weight.dims) + " needs [" + std::to_string(weight.dims[0]) + "]");
  // kaiming_uniform_(weight, a = sqrt(5)): gain sqrt(2 / 6), bound = sqrt(3) * gain / sqrt(fan_in) = 1 / sqrt(fan_in)
  kaiming_uniform_(weight, rng, std::sqrt(5.0));
  if (bias) {
    const index_t fan_in = fan_in_fan_out(weight).fan_in;
    const double bound = fan_in > 0 ? 1.0 / std::sqrt(double(fan_in)) : 0.0;
    uniform_(*bias, -bound, bound, rng);
  }
}
}  // namespace detail

/// torch.nn.Linear's default initialisation (reset_parameters): weight [out, in] from kaiming_uniform_ with
/// a = sqrt(5), i.e. uniform in [-1/sqrt(in), 1/sqrt(in)); then bias [out] uniform in the same range.
template <class T>
void torch_default_linear_(const parameter_ref<T>& weight, const parameter_ref<T>& bias, Rng& rng) {
  detail::torch_default_layer(weight, &bias, rng, "torch_default_linear_", 2);
}
/// The same for a Linear layer without bias.
template <class T>
void torch_default_linear_(const parameter_ref<T>& weight, Rng& rng) {
  detail::torch_default_layer<T>(weight, nullptr, rng, "torch_default_linear_", 2);
}

/// torch.nn.Conv*d's default initialisation: weight [out, in / groups, k...] uniform in
/// [-1/sqrt(fan_in), 1/sqrt(fan_in)), fan_in = in / groups * prod(k...); bias [out] in the same range.
template <class T>
void torch_default_conv_(const parameter_ref<T>& weight, const parameter_ref<T>& bias, Rng& rng) {
  detail::torch_default_layer(weight, &bias, rng, "torch_default_conv_", 3);
}
template <class T>
void torch_default_conv_(const parameter_ref<T>& weight, Rng& rng) {
  detail::torch_default_layer<T>(weight, nullptr, rng, "torch_default_conv_", 3);
}

}  // namespace tessera::nn::init
