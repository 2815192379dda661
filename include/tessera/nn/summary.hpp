// A model's summary, as torchinfo's table: one row per layer of an nn::Sequential with its type, its output shape
// for a given batch size, its parameter count and how many of those are trainable; then the totals and the memory
// the parameters, buffers, the input and the layers' outputs take.
//
//   SimpleCNN net(0);
//   std::cout << nn::summary(net, 64);      // or net.summary(64); the batch size fills the leading dynamic extent
//   auto s = net.summary();                 // the numbers too: s.layers[3].params, s.total_params, ...
//
// The shapes come from the model's type (each layer's output<S> applied to the previous shape: no forward pass
// runs, nothing is allocated); a dynamic extent other than the batch is shown as "?" and the layers whose output
// has one are left out of the outputs' size. Types are named plainly: the layer's class name without namespace or
// template arguments ("Conv2d", "ReLU", "Residual"); compositions are one row each. A parameter is trainable when its
// Var requires gradients. Buffers (BatchNorm's running statistics) are counted apart from the parameters, as
// torchinfo does. Sizes in the text are in MB of 10^6 bytes (torchinfo's unit); the struct has them in bytes.
#pragma once
#include <cstddef>
#include <cstdio>
#include <ostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "tessera/autodiff/anomaly.hpp"
#include "tessera/core/shape.hpp"

namespace tessera::nn {

template <class T, class P, class In, class... Layers>
class basic_sequential;

/// One row of a model_summary.
struct layer_summary {
  std::size_t index = 0;                 ///< the layer's position (its parameters are named "<index>.<name>")
  std::string type;                      ///< the layer's class name, e.g. "Conv2d"
  std::vector<index_t> output_shape;     ///< with the batch size filled in; -1 where the extent is dynamic
  index_t params = 0;                    ///< elements of its parameters
  index_t trainable = 0;                 ///< of those, the elements of parameters that require gradients
  index_t buffers = 0;                   ///< elements of its buffers (running statistics)
};

/// What nn::summary returns: the rows and the totals; operator<< and to_string() print the table.
struct model_summary {
  std::vector<index_t> input_shape;      ///< with the batch size filled in; -1 where dynamic
  std::vector<layer_summary> layers;
  index_t total_params = 0;
  index_t trainable_params = 0;
  index_t buffer_elements = 0;
  std::size_t element_size = 0;          ///< sizeof the model's element type
  double param_bytes() const { return double(total_params) * double(element_size); }
  double buffer_bytes() const { return double(buffer_elements) * double(element_size); }
  double input_bytes() const { return shape_bytes(input_shape); }
  /// The layers' outputs together (what a forward pass keeps for the backward pass, roughly).
  double output_bytes() const {
    double b = 0;
    for (const auto& l : layers) b += shape_bytes(l.output_shape);
    return b;
  }

  static std::string format_shape(const std::vector<index_t>& s) {
    std::string out = "[";
    for (std::size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + (s[i] < 0 ? std::string("?") : std::to_string(s[i]));
    return out + "]";
  }
  /// 1234567 -> "1,234,567".
  static std::string format_count(index_t n) {
    std::string d = std::to_string(n < 0 ? -n : n), out;
    for (std::size_t i = 0; i < d.size(); ++i) {
      if (i && (d.size() - i) % 3 == 0) out += ',';
      out += d[i];
    }
    return (n < 0 ? "-" : "") + out;
  }

  std::string to_string() const {
    const int w0 = 28, w1 = 26, w2 = 14, w3 = 14;
    const std::string rule(std::size_t(w0 + w1 + w2 + w3), '='), thin(std::size_t(w0 + w1 + w2 + w3), '-');
    std::ostringstream os;
    auto cell = [&](const std::string& s, int w) {
      os << s;
      for (int i = int(s.size()); i < w; ++i) os << ' ';
    };
    auto rcell = [&](const std::string& s, int w) {
      for (int i = int(s.size()); i < w; ++i) os << ' ';
      os << s;
    };
    os << rule << '\n';
    cell("Layer (type: index)", w0), cell("Output Shape", w1), rcell("Param #", w2), rcell("Trainable", w3);
    os << '\n' << rule << '\n';
    cell("Input", w0), cell(format_shape(input_shape), w1), rcell("--", w2), rcell("--", w3);
    os << '\n';
    for (const auto& l : layers) {
      cell(l.type + ": " + std::to_string(l.index), w0);
      cell(format_shape(l.output_shape), w1);
      rcell(l.params ? format_count(l.params) : "--", w2);
      rcell(l.params ? format_count(l.trainable) : "--", w3);
      os << '\n';
    }
    os << rule << '\n';
    os << "Total params: " << format_count(total_params) << '\n';
    os << "Trainable params: " << format_count(trainable_params) << '\n';
    os << "Non-trainable params: " << format_count(total_params - trainable_params) << '\n';
    os << "Buffers: " << format_count(buffer_elements) << '\n';
    os << thin << '\n';
    os << "Input size (MB): " << mb(input_bytes()) << '\n';
    os << "Layer outputs size (MB): " << mb(output_bytes()) << '\n';
    os << "Params size (MB): " << mb(param_bytes()) << '\n';
    os << "Buffers size (MB): " << mb(buffer_bytes()) << '\n';
    os << "Estimated total size (MB): " << mb(input_bytes() + output_bytes() + param_bytes() + buffer_bytes()) << '\n';
    os << rule << '\n';
    return os.str();
  }

 private:
  double shape_bytes(const std::vector<index_t>& s) const {
    double n = 1;
    for (index_t e : s) {
      if (e < 0) return 0;
      n *= double(e);
    }
    return s.empty() ? 0 : n * double(element_size);
  }
  static std::string mb(double bytes) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.2f", bytes / 1e6);
    return buf;
  }
};

inline std::ostream& operator<<(std::ostream& os, const model_summary& s) { return os << s.to_string(); }

namespace detail {
/// The extents of static shape S with a leading dynamic extent replaced by batch (other dynamic ones stay -1).
template <class S>
std::vector<index_t> summary_dims(index_t batch) {
  std::vector<index_t> d;
  for (int i = 0; i < S::rank; ++i) {
    const extent_t e = S::extents[std::size_t(i)];
    d.push_back(e != dyn ? index_t(e) : i == 0 ? batch : index_t(-1));
  }
  return d;
}

/// Rows I, I + 1, ... for layers Ls... taking shape S.
template <std::size_t I, class S, class Net, class L, class... Rest>
void summary_rows(Net& net, index_t batch, model_summary& out) {
  using Out = typename L::template output<S>;
  layer_summary row;
  row.index = I;
  row.type = ad::detail::op_name_from_type(typeid(L));
  row.output_shape = summary_dims<Out>(batch);
  auto& state = net.template layer<I>();
  state.for_each_parameter("", [&](const std::string&, auto& v) {
    row.params += index_t(v.size());
    if (v.requires_grad()) row.trainable += index_t(v.size());
  });
  state.for_each_buffer("", [&](const std::string&, auto& t) { row.buffers += index_t(t.size()); });
  out.total_params += row.params;
  out.trainable_params += row.trainable;
  out.buffer_elements += row.buffers;
  out.layers.push_back(std::move(row));
  if constexpr (sizeof...(Rest) > 0) summary_rows<I + 1, Out, Net, Rest...>(net, batch, out);
}
}  // namespace detail

/// The summary of `net` for inputs of `batch` items (see the top of this file).
template <class T, class P, class In, class... Layers>
model_summary summary(basic_sequential<T, P, In, Layers...>& net, index_t batch = 1) {
  if (batch < 0) throw std::invalid_argument("tessera::nn::summary: the batch size " + std::to_string(batch) + " is negative");
  model_summary s;
  s.element_size = sizeof(T);
  s.input_shape = detail::summary_dims<In>(batch);
  detail::summary_rows<0, In, basic_sequential<T, P, In, Layers...>, Layers...>(net, batch, s);
  return s;
}

}  // namespace tessera::nn
