// Tensors made from a rule, as torch's factories: zeros, ones, full, arange, linspace, eye, rand, randn, randint.
//
//   auto a = tessera::zeros<float, Shape<2, 3>>();                  // a static shape: the template argument
//   auto b = tessera::ones<float, Shape<dyn, 3>>(5);                 // dynamic extents as the Tensor constructor takes
//   auto c = tessera::zeros<float>(4, 7);                            // all dynamic: Tensor<float, Shape<dyn, dyn>>
//   auto d = tessera::full<double, Shape<dyn, 2>>({3, 2}, 0.5);      // dims_t for the shape when a value follows
//   auto e = tessera::arange<float>(0.0, 1.0, 0.1);                  // [0, 0.1, ..., 0.9]: ceil((end-start)/step)
//   auto f = tessera::linspace<float>(-1.0, 1.0, 5);                 // torch.linspace
//   auto g = tessera::eye<float>(3);                                 // and eye<float>(n, m)
//   tessera::Rng rng(42);
//   auto r = tessera::rand<float, Shape<2, 3>>(rng);                 // uniform [0, 1)
//   auto n = tessera::randn<float>(dims_t<2>{64, 10}, rng);          // standard normal
//   auto k = tessera::randint<std::int32_t>(0, 10, dims_t<1>{8}, 7); // uniform integers in [0, 10); a seed instead of an Rng
//
// The policy is the last template argument (`zeros<float, Shape<2, 3>, cpu_threads>()`,
// `zeros<float, cpu_threads>(4, 7)`); it defaults to cpu, the Tensor's default. Random factories draw element by element
// in row-major order from the Rng on the host (so one seed gives the same tensor under every policy) and advance it;
// the overloads taking a seed use a fresh Rng(seed). rand: Rng::uniform (24 random bits; double: uniform_double, 53);
// randn: Rng::normal; randint: Rng::uniform_int. Values are computed as torch computes them: arange's i-th element is
// start + i * step in double (int64 for integer types), linspace's first half start + i * step and second half
// end - (steps - 1 - i) * step with step in the element's type (double for integers). Bad arguments (a step of 0 or of
// the wrong sign, high <= low, a range outside the element type, a negative size) throw naming the values. Device
// tensors are filled on the host and copied (this needs nvcc, as every device copy does).
#pragma once
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "tessera/core/policy.hpp"
#include "tessera/core/random.hpp"
#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/core/types.hpp"

namespace tessera {

namespace detail {
/// A tensor of the given extents whose i-th element (row-major) is gen(i), computed on the host in order.
template <class T, class S, class P, class Gen>
Tensor<T, S, P> generate(const dims_t<S::rank>& dims, Gen&& gen) {
  Tensor<T, S, P> t(dims);  // checks negative and static extents, naming the shape
  const index_t n = t.size();
  if constexpr (P::on_device) {
    const std::unique_ptr<T[]> h(new T[std::size_t(n)]);
    for (index_t i = 0; i < n; ++i) h[std::size_t(i)] = gen(i);
    if (n) memory<P>::copy_to_device(t.data(), h.get(), std::size_t(n));
  } else {
    T* p = t.data();
    for (index_t i = 0; i < n; ++i) p[i] = gen(i);
  }
  return t;
}
/// The extents of S with the dynamic ones (or all of them) given as integers, as the Tensor constructor takes them.
template <class S, class... I>
dims_t<S::rank> factory_dims(I... e) {
  const index_t given[] = {index_t(e)..., 0};
  dims_t<S::rank> d{};
  int k = 0;
  for (int i = 0; i < S::rank; ++i)
    d[i] = sizeof...(I) == std::size_t(S::rank) ? given[i] : (S::extents[i] == dyn ? given[k++] : S::extents[i]);
  return d;
}
template <class T>
std::string factory_value(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    std::ostringstream os;
    os.precision(17);
    os << v;
    return os.str();
  } else {
    return std::to_string(v);
  }
}
}  // namespace detail

// ---- constants: zeros, ones, full ----

/// Every element `value`: full<T, S>(value) for a static S, full<T, S>(dims, value), full<T>(dims_t<R>, value).
template <Element T, ShapeType S, Policy P = cpu>
  requires S::is_static
Tensor<T, S, P> full(T value) {
  return detail::generate<T, S, P>(detail::factory_dims<S>(), [&](index_t) { return value; });
}
template <Element T, ShapeType S, Policy P = cpu>
Tensor<T, S, P> full(const dims_t<S::rank>& dims, T value) {
  return detail::generate<T, S, P>(dims, [&](index_t) { return value; });
}
template <Element T, Policy P = cpu, std::size_t R>
auto full(const dims_t<R>& dims, T value) {
  return detail::generate<T, dyn_shape_t<int(R)>, P>(dims, [&](index_t) { return value; });
}

#define TS_CONSTANT_FACTORY(NAME, VALUE)                                                                               \
  template <Element T, ShapeType S, Policy P = cpu, std::integral... I>                                                \
    requires(sizeof...(I) == std::size_t(S::num_dyn) || sizeof...(I) == std::size_t(S::rank))                          \
  Tensor<T, S, P> NAME(I... extents) {                                                                                 \
    return full<T, S, P>(detail::factory_dims<S>(extents...), T(VALUE));                                               \
  }                                                                                                                    \
  template <Element T, ShapeType S, Policy P = cpu>                                                                    \
  Tensor<T, S, P> NAME(const dims_t<S::rank>& dims) {                                                                  \
    return full<T, S, P>(dims, T(VALUE));                                                                              \
  }                                                                                                                    \
  template <Element T, Policy P = cpu, std::integral... I>                                                             \
    requires(sizeof...(I) > 0)                                                                                         \
  auto NAME(I... extents) {                                                                                            \
    return full<T, dyn_shape_t<int(sizeof...(I))>, P>(dims_t<sizeof...(I)>{index_t(extents)...}, T(VALUE));            \
  }                                                                                                                    \
  template <Element T, Policy P = cpu, std::size_t R>                                                                  \
  auto NAME(const dims_t<R>& dims) {                                                                                   \
    return full<T, dyn_shape_t<int(R)>, P>(dims, T(VALUE));                                                            \
  }
/// zeros<T, S>(), zeros<T, S>(dynamic extents...), zeros<T, S>(dims), zeros<T>(extents...), zeros<T>(dims_t<R>).
TS_CONSTANT_FACTORY(zeros, 0)
/// As zeros, every element 1.
TS_CONSTANT_FACTORY(ones, 1)
#undef TS_CONSTANT_FACTORY

// ---- ranges: arange, linspace, eye ----

/// torch.arange: start, start + step, ... while below end (above, for a negative step): ceil((end - start) / step)
/// elements, the i-th start + i * step computed in double (int64 for integer T). step 0, a step pointing away from
/// end, or a bound that is not finite throws std::invalid_argument naming the three values.
template <Element T, Policy P = cpu>
  requires(!std::is_same_v<T, bool>)
Tensor<T, Shape<dyn>, P> arange(double start, double end, double step = 1.0) {
  const auto says = [&](const char* why) {
    return std::invalid_argument("tessera: arange(start " + detail::factory_value(start) + ", end " +
                                 detail::factory_value(end) + ", step " + detail::factory_value(step) + "): " + why);
  };
  if (!std::isfinite(start) || !std::isfinite(end) || !std::isfinite(step)) throw says("the bounds and step must be finite");
  if (step == 0) throw says("the step must be nonzero");
  if ((step > 0 && end < start) || (step < 0 && end > start)) throw says("the step's sign leads away from end");
  const double len = std::ceil((end - start) / step);
  if (len >= double(std::numeric_limits<index_t>::max())) throw says("too many elements");
  const index_t n = index_t(len);
  if constexpr (is_integral_element_v<T>) {
    const std::int64_t s = std::int64_t(start), st = std::int64_t(step);
    if (double(s) != start || double(st) != step)
      return detail::generate<T, Shape<dyn>, P>(dims_t<1>{n}, [&](index_t i) { return T(start + double(i) * step); });
    return detail::generate<T, Shape<dyn>, P>(dims_t<1>{n}, [&](index_t i) { return T(s + std::int64_t(i) * st); });
  } else {
    return detail::generate<T, Shape<dyn>, P>(dims_t<1>{n}, [&](index_t i) { return T(start + double(i) * step); });
  }
}
/// arange(0, end, 1).
template <Element T, Policy P = cpu>
  requires(!std::is_same_v<T, bool>)
Tensor<T, Shape<dyn>, P> arange(double end) {
  return arange<T, P>(0.0, end, 1.0);
}

/// torch.linspace: `steps` values from start to end inclusive (steps 1: start; 0: empty; negative throws).
template <Element T, Policy P = cpu>
  requires(!std::is_same_v<T, bool>)
Tensor<T, Shape<dyn>, P> linspace(double start, double end, index_t steps) {
  if (steps < 0)
    throw std::invalid_argument("tessera: linspace(start " + detail::factory_value(start) + ", end " + detail::factory_value(end) +
                                ", steps " + std::to_string(steps) + "): the number of steps must be non-negative");
  using step_t = std::conditional_t<is_integral_element_v<T>, double, compute_t<T>>;
  const step_t a = step_t(T(start)), b = step_t(T(end));
  const step_t step = steps > 1 ? (b - a) / step_t(steps - 1) : step_t(0);
  const index_t half = steps / 2;
  return detail::generate<T, Shape<dyn>, P>(dims_t<1>{steps}, [&](index_t i) {
    if (steps == 1) return T(a);  // torch fills start
    return i < half ? T(a + step * step_t(i)) : T(b - step * step_t(steps - i - 1));
  });
}

/// The n x m matrix with ones on the diagonal (m = n when left out).
template <Element T, Policy P = cpu>
Tensor<T, Shape<dyn, dyn>, P> eye(index_t n, index_t m = -1) {
  if (m == -1) m = n;
  return detail::generate<T, Shape<dyn, dyn>, P>(dims_t<2>{n, m}, [&](index_t i) { return T(i / m == i % m ? 1 : 0); });
}

// ---- random: rand, randn, randint ----

namespace detail {
template <class T>
T uniform_draw(Rng& rng) {
  if constexpr (std::is_same_v<T, double>) return rng.uniform_double();
  else return T(rng.uniform());
}
template <class T>
T normal_draw(Rng& rng) {
  if constexpr (std::is_same_v<T, double>) return rng.normal_double();
  else return T(rng.normal());
}
}  // namespace detail

#define TS_RANDOM_FACTORY(NAME, DRAW, REQ)                                                                             \
  template <Element T, ShapeType S, Policy P = cpu>                                                                    \
    requires(S::is_static && REQ)                                                                                      \
  Tensor<T, S, P> NAME(Rng& rng) {                                                                                     \
    return detail::generate<T, S, P>(detail::factory_dims<S>(), [&](index_t) { return DRAW; });                        \
  }                                                                                                                    \
  template <Element T, ShapeType S, Policy P = cpu>                                                                    \
    requires(REQ)                                                                                                      \
  Tensor<T, S, P> NAME(const dims_t<S::rank>& dims, Rng& rng) {                                                        \
    return detail::generate<T, S, P>(dims, [&](index_t) { return DRAW; });                                             \
  }                                                                                                                    \
  template <Element T, Policy P = cpu, std::size_t R>                                                                  \
    requires(REQ)                                                                                                      \
  auto NAME(const dims_t<R>& dims, Rng& rng) {                                                                         \
    return NAME<T, dyn_shape_t<int(R)>, P>(dims, rng);                                                                 \
  }                                                                                                                    \
  template <Element T, ShapeType S, Policy P = cpu>                                                                    \
    requires(S::is_static && REQ)                                                                                      \
  Tensor<T, S, P> NAME(std::uint64_t seed) {                                                                           \
    Rng rng(seed);                                                                                                     \
    return NAME<T, S, P>(rng);                                                                                         \
  }                                                                                                                    \
  template <Element T, ShapeType S, Policy P = cpu>                                                                    \
    requires(REQ)                                                                                                      \
  Tensor<T, S, P> NAME(const dims_t<S::rank>& dims, std::uint64_t seed) {                                              \
    Rng rng(seed);                                                                                                     \
    return NAME<T, S, P>(dims, rng);                                                                                   \
  }                                                                                                                    \
  template <Element T, Policy P = cpu, std::size_t R>                                                                  \
    requires(REQ)                                                                                                      \
  auto NAME(const dims_t<R>& dims, std::uint64_t seed) {                                                               \
    Rng rng(seed);                                                                                                     \
    return NAME<T, dyn_shape_t<int(R)>, P>(dims, rng);                                                                 \
  }
/// Uniform in [0, 1) (floating T): rand<T, S>(rng), rand<T, S>(dims, rng), rand<T>(dims_t<R>, rng); a seed for rng.
TS_RANDOM_FACTORY(rand, detail::uniform_draw<T>(rng), is_floating_v<T>)
/// Standard normal (floating T), the same forms as rand.
TS_RANDOM_FACTORY(randn, detail::normal_draw<T>(rng), is_floating_v<T>)
#undef TS_RANDOM_FACTORY

namespace detail {
template <class T>
void check_randint(std::int64_t low, std::int64_t high) {
  std::string why;
  if (high <= low) why = "high must be greater than low";
  else if constexpr (is_integral_element_v<T>) {
    if (low < std::int64_t(std::numeric_limits<T>::min()) || high - 1 > std::int64_t(std::numeric_limits<T>::max()))
      why = std::string("the range does not fit in ") + type_name<T>();
  }
  if (!why.empty())
    throw std::invalid_argument("tessera: randint(low " + std::to_string(low) + ", high " + std::to_string(high) + "): " + why);
}
}  // namespace detail

/// Uniform integers in [low, high) (any numeric T; torch's default is int64): randint<T, S>(low, high, rng),
/// randint<T, S>(low, high, dims, rng), randint<T>(low, high, dims_t<R>, rng), and each with a seed for rng.
template <Element T, ShapeType S, Policy P = cpu>
  requires(!std::is_same_v<T, bool>)
Tensor<T, S, P> randint(std::int64_t low, std::int64_t high, const dims_t<S::rank>& dims, Rng& rng) {
  detail::check_randint<T>(low, high);
  return detail::generate<T, S, P>(dims, [&](index_t) { return T(rng.uniform_int(low, high - 1)); });
}
template <Element T, ShapeType S, Policy P = cpu>
  requires(S::is_static && !std::is_same_v<T, bool>)
Tensor<T, S, P> randint(std::int64_t low, std::int64_t high, Rng& rng) {
  return randint<T, S, P>(low, high, detail::factory_dims<S>(), rng);
}
template <Element T, Policy P = cpu, std::size_t R>
  requires(!std::is_same_v<T, bool>)
auto randint(std::int64_t low, std::int64_t high, const dims_t<R>& dims, Rng& rng) {
  return randint<T, dyn_shape_t<int(R)>, P>(low, high, dims, rng);
}
template <Element T, ShapeType S, Policy P = cpu>
  requires(!std::is_same_v<T, bool>)
Tensor<T, S, P> randint(std::int64_t low, std::int64_t high, const dims_t<S::rank>& dims, std::uint64_t seed) {
  Rng rng(seed);
  return randint<T, S, P>(low, high, dims, rng);
}
template <Element T, ShapeType S, Policy P = cpu>
  requires(S::is_static && !std::is_same_v<T, bool>)
Tensor<T, S, P> randint(std::int64_t low, std::int64_t high, std::uint64_t seed) {
  Rng rng(seed);
  return randint<T, S, P>(low, high, detail::factory_dims<S>(), rng);
}
template <Element T, Policy P = cpu, std::size_t R>
  requires(!std::is_same_v<T, bool>)
auto randint(std::int64_t low, std::int64_t high, const dims_t<R>& dims, std::uint64_t seed) {
  Rng rng(seed);
  return randint<T, dyn_shape_t<int(R)>, P>(low, high, dims, rng);
}

}  // namespace tessera
