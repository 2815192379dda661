// Printing Vars as PyTorch prints tensors that take part in autograd: `std::cout << v` writes the value as
// core/print.hpp does, then what the graph knows about it:
//
//   tensor([[0.5000, 1.0000]], shape=[1, 2], dtype=float32, policy=cpu, requires_grad=True, has_grad=True)
//   tensor(2.2500, shape=[], dtype=float32, policy=cpu, requires_grad=True, grad_fn=<mean>)
//
// requires_grad=True when the Var requires gradients; grad_fn=<operation> on a result of a recorded operation (the
// name anomaly mode uses); has_grad=True when a gradient has been stored (backward() reached it). An unevaluated
// expression (autodiff/fused.hpp) is evaluated first, as any other use of its value. An empty Var prints
// `Var(undefined)`. Print options: tessera::set_printoptions (core/print.hpp).
#pragma once
#include <ostream>
#include <string>
#include <vector>

#include "tessera/autodiff/var.hpp"
#include "tessera/core/print.hpp"

namespace tessera::ad {

/// The text operator<< writes for a Var.
template <class T, int R, class P>
std::string to_string(const Var<T, R, P>& v) {
  if (!v.defined()) return "Var(undefined)";
  const auto& nd = v.node();
  std::vector<std::string> extra;
  if (nd.requires_grad) extra.emplace_back("requires_grad=True");
  if (!nd.is_leaf && nd.op_name) extra.push_back("grad_fn=<" + nd.op_name() + ">");
  if (nd.has_grad) extra.emplace_back("has_grad=True");
  return tessera::detail::format_tensor(nd.value.cview(), extra);
}

template <class T, int R, class P>
std::ostream& operator<<(std::ostream& os, const Var<T, R, P>& v) { return os << ad::to_string(v); }

}  // namespace tessera::ad
