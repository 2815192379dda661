// Central finite differences in double precision against the gradients backward() computes.
#pragma once
#include <catch2/catch.hpp>

#include <cmath>
#include <exception>
#include <string>
#include <tessera/autodiff/ops.hpp>
#include <tuple>

namespace gc {
namespace ts = tessera;
namespace ad = tessera::ad;

/// Deterministic values in [-1, 1) away from 0 (kinks of relu/abs), varied by salt.
template <int R, class P = ts::cpu>
ts::Tensor<double, ts::dyn_shape_t<R>, P> values(const ts::dims_t<R>& d, int salt, double lo = -1.0, double hi = 1.0) {
  ts::Tensor<double, ts::dyn_shape_t<R>, P> t(d);
  for (ts::index_t i = 0; i < t.size(); ++i) {
    double u = double((i * 7919 + salt * 104729 + 17) % 1000) / 1000.0;  // [0, 1)
    double v = lo + (hi - lo) * u;
    if (std::abs(v) < 0.05) v += 0.1;
    t.data()[i] = v;
  }
  return t;
}

/// For every element of every parameter: d loss / d p by central differences (step h) against p.grad().
/// `loss` builds the scalar from the parameters (captured by reference) each time it is called.
template <class F, class... Vs>
void check(F&& loss, Vs&... params) {
  (params.zero_grad(), ...);
  loss().backward();
  auto one = [&](auto& p) {
    const auto analytic = p.grad();  // a copy
    for (ts::index_t i = 0; i < p.size(); ++i) {
      double& x = p.mutable_value().data()[i];
      const double x0 = x, h = 1e-6 * std::max(1.0, std::abs(x0));
      double fp, fm;
      {
        ad::no_grad ng;
        x = x0 + h;
        fp = loss().value()();
        x = x0 - h;
        fm = loss().value()();
        x = x0;
      }
      const double numeric = (fp - fm) / (2 * h);
      INFO("parameter element " << i << " of " << p.size());
      CHECK(analytic.data()[i] == Approx(numeric).epsilon(1e-6).margin(1e-7));
    }
  };
  (one(params), ...);
}
/// sum(v * w) for fixed weights w of v's shape (gc::values): every element of v gets its own gradient.
template <class V>
auto weighted(const V& v, int salt) {
  using T = typename V::value_type;
  using P = typename V::policy;
  ts::Tensor<T, ts::dyn_shape_t<V::rank>, P> w(ts::cast<T>(values<V::rank, P>(v.dims(), salt)));
  return ad::sum(v * ad::constant(w));
}

/// What f() throws (its what()), or "no exception".
template <class F>
std::string message_of(F&& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "no exception";
}
}  // namespace gc
