// cat, stack, split, chunk, index_select and gather on Vars: forward values against plain loops, gradients against
// central finite differences (double), repeated indices accumulating, float, policies cpu and cpu_threads, errors.
#include "gradcheck.hpp"

#include <cstdint>
#include <string>
#include <tessera/autodiff/index_ops.hpp>
#include <vector>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;

namespace {
using gc::message_of;
using gc::weighted;

template <class I, class P = ts::cpu>
ts::Tensor<I, ts::dyn_shape_t<1>, P> indices(const std::vector<I>& v) {
  return ts::Tensor<I, ts::dyn_shape_t<1>, P>(v, dims_t<1>{index_t(v.size())});
}
}  // namespace

TEST_CASE("cat and stack: values and gradients", "[autodiff][index]") {
  auto run = [&](auto policy) {
    using P = decltype(policy);
    for (index_t n : {1, 7}) {
      auto a = ad::parameter(gc::values<3, P>({n, 3, 2}, 1));
      auto b = ad::parameter(gc::values<3, P>({n, 5, 2}, 2));
      auto c = ad::parameter(gc::values<3, P>({n, 1, 2}, 3));
      auto j = ad::cat<1>({a, b, c});
      REQUIRE(j.dims() == dims_t<3>{n, 9, 2});
      for (index_t i = 0; i < n; ++i)
        for (index_t k = 0; k < 2; ++k) {
          for (index_t r = 0; r < 3; ++r) CHECK(j.value()(i, r, k) == a.value()(i, r, k));
          for (index_t r = 0; r < 5; ++r) CHECK(j.value()(i, 3 + r, k) == b.value()(i, r, k));
          CHECK(j.value()(i, 8, k) == c.value()(i, 0, k));
        }
      gc::check([&] { return weighted(ad::cat<1>({a, b, c}), 4); }, a, b, c);
      gc::check([&] { return weighted(ad::cat<-2>(a, a, b), 5); }, a, b);  // a twice: its gradient adds up
      auto s = ad::stack<1>(a, a * 2.0, ad::tanh(a));  // operands of any Var-valued expression
      REQUIRE(s.dims() == dims_t<4>{n, 3, 3, 2});
      for (index_t i = 0; i < n; ++i)
        for (index_t r = 0; r < 3; ++r)
          for (index_t k = 0; k < 2; ++k) {
            CHECK(s.value()(i, 0, r, k) == a.value()(i, r, k));
            CHECK(s.value()(i, 1, r, k) == 2.0 * a.value()(i, r, k));
          }
      gc::check([&] { return weighted(ad::stack<0>(a, ad::exp(a)), 6); }, a);
      gc::check([&] { return weighted(ad::stack<-1>({a, ad::slice<1>(b, 1, 4)}), 7); }, a, b);
      gc::check([&] { return weighted(ad::stack<3>({a, a}), 8); }, a);
    }
  };
  run(ts::cpu{});
  run(ts::cpu_threads{});
}

TEST_CASE("split and chunk: pieces and gradients", "[autodiff][index]") {
  auto run = [&](auto policy) {
    using P = decltype(policy);
    for (index_t n : {1, 7, 33}) {
      auto x = ad::parameter(gc::values<2, P>({3, n}, 10));
      auto parts = ad::split<1>(x, 3);  // torch.split(x, 3, dim=1)
      REQUIRE(parts.size() == std::size_t((n + 2) / 3));
      index_t off = 0;
      for (const auto& p : parts) {
        REQUIRE(p.dims()[0] == 3);
        for (index_t i = 0; i < 3; ++i)
          for (index_t k = 0; k < p.dims()[1]; ++k) CHECK(p.value()(i, k) == x.value()(i, off + k));
        off += p.dims()[1];
      }
      CHECK(off == n);
      CHECK(parts.back().dims()[1] == (n % 3 == 0 ? 3 : n % 3));
      gc::check([&] {
        auto ps = ad::split<1>(x, 3);
        ad::Var<double, 0, P> l = weighted(ps[0], 11);
        for (std::size_t k = 1; k < ps.size(); ++k) l = l + weighted(ad::tanh(ps[k]), 12 + int(k));
        return l;
      }, x);
      auto rows = ad::split<0>(x, std::vector<index_t>{1, 2});
      REQUIRE(rows.size() == 2);
      CHECK(rows[1].dims() == dims_t<2>{2, n});
      gc::check([&]() -> ad::Var<double, 0, P> {
        auto r = ad::split<0>(x, std::vector<index_t>{2, 0, 1});  // an empty piece too
        return weighted(r[0], 20) + weighted(r[2], 21) * 3.0;
      }, x);
      auto ch = ad::chunk<-1>(x, 4);  // torch.chunk(x, 4, -1): pieces of ceil(n / 4)
      const index_t size = (n + 3) / 4;
      REQUIRE(ch.size() == std::size_t((n + size - 1) / size));
      CHECK(ch[0].dims()[1] == size);
      gc::check([&]() -> ad::Var<double, 0, P> {
        auto c = ad::chunk<-1>(x, 4);
        return weighted(c.back(), 22) + weighted(c.front(), 23);
      }, x);
    }
  };
  run(ts::cpu{});
  run(ts::cpu_threads{});
}

TEMPLATE_TEST_CASE("index_select: values, gradients, repeated indices", "[autodiff][index]", std::int32_t, std::int64_t) {
  using I = TestType;
  auto run = [&](auto policy) {
    using P = decltype(policy);
    auto x = ad::parameter(gc::values<3, P>({5, 4, 3}, 30));
    const std::vector<I> idx{4, 0, 4, 2, 4};
    auto ix = indices<I, P>(idx);
    auto y = ad::index_select<0>(x, ix);
    REQUIRE(y.dims() == dims_t<3>{5, 4, 3});
    for (std::size_t k = 0; k < idx.size(); ++k)
      for (index_t j = 0; j < 4; ++j)
        for (index_t l = 0; l < 3; ++l) CHECK(y.value()(index_t(k), j, l) == x.value()(index_t(idx[k]), j, l));
    auto z = ad::index_select<-1>(x, indices<I, P>({2, 2}));
    REQUIRE(z.dims() == dims_t<3>{5, 4, 2});
    CHECK(z.value()(3, 1, 1) == x.value()(3, 1, 2));
    gc::check([&] { return weighted(ad::index_select<0>(x, ix), 31); }, x);
    gc::check([&] { return weighted(ad::index_select<1>(x, indices<I, P>({3, 1, 3})), 32); }, x);
    gc::check([&]() -> ad::Var<double, 0, P> { return weighted(ad::index_select<2>(x, indices<I, P>({})), 33) + ad::sum(x); }, x);
    // repeated index 4 three times: its row's gradient is the sum of three slices of ones
    x.zero_grad();
    ad::sum(ad::index_select<0>(x, ix)).backward();
    CHECK(x.grad()(4, 1, 2) == 3.0);
    CHECK(x.grad()(0, 0, 0) == 1.0);
    CHECK(x.grad()(1, 0, 0) == 0.0);
    CHECK(message_of([&] { (void)ad::index_select<1>(x, indices<I, P>({0, 4})); }) ==
          "tessera: index_select: index 4 (element 1 of the indices) is out of range for axis 1 of extent 4 (shape [5, 4, 3])");
    CHECK(message_of([&] { (void)ad::index_select<0>(x, indices<I, P>({-1})); }) ==
          "tessera: index_select: index -1 (element 0 of the indices) is out of range for axis 0 of extent 5 (shape [5, 4, 3])");
  };
  run(ts::cpu{});
  run(ts::cpu_threads{});
}

TEST_CASE("gather: torch.gather values, gradients and errors", "[autodiff][index]") {
  auto run = [&](auto policy) {
    using P = decltype(policy);
    for (index_t n : {1, 7}) {
      auto x = ad::parameter(gc::values<3, P>({4, n, 3}, 40));
      // index [3, n, 2]: smaller than x except along the gathered axis, with repeats
      ts::Tensor<std::int64_t, ts::dyn_shape_t<3>, P> id(dims_t<3>{3, n, 2});
      for (index_t k = 0; k < id.size(); ++k) id.data()[k] = (k * 5 + 1) % 4;
      auto y = ad::gather<0>(x, id);
      REQUIRE(y.dims() == id.dims());
      for (index_t i = 0; i < 3; ++i)
        for (index_t j = 0; j < n; ++j)
          for (index_t k = 0; k < 2; ++k) CHECK(y.value()(i, j, k) == x.value()(index_t(id(i, j, k)), j, k));
      gc::check([&] { return weighted(ad::gather<0>(x, id), 41); }, x);
      ts::Tensor<std::int32_t, ts::dyn_shape_t<3>, P> id2(dims_t<3>{4, n, 5});
      for (index_t k = 0; k < id2.size(); ++k) id2.data()[k] = std::int32_t((k * 7 + 2) % 3);
      auto y2 = ad::gather<-1>(x, id2);
      for (index_t i = 0; i < 4; ++i)
        for (index_t j = 0; j < n; ++j)
          for (index_t k = 0; k < 5; ++k) CHECK(y2.value()(i, j, k) == x.value()(i, j, index_t(id2(i, j, k))));
      gc::check([&] { return weighted(ad::gather<2>(x, id2), 42); }, x);
    }
    auto x = ad::parameter(gc::values<2, P>({3, 4}, 43));
    ts::Tensor<std::int64_t, ts::dyn_shape_t<2>, P> bad(dims_t<2>{2, 2});
    bad = std::int64_t(1);
    bad(1, 1) = 4;
    CHECK(message_of([&] { (void)ad::gather<1>(x, bad); }) ==
          "tessera: gather: index 4 (element 3 of the indices) is out of range for axis 1 of extent 4 (shape [3, 4])");
    ts::Tensor<std::int64_t, ts::dyn_shape_t<2>, P> wide(dims_t<2>{2, 5});
    wide = std::int64_t(0);
    CHECK(message_of([&] { (void)ad::gather<0>(x, wide); }) ==
          "tessera: gather: the index shape [2, 5] is larger than the shape [3, 4] along axis 1");
  };
  run(ts::cpu{});
  run(ts::cpu_threads{});
}

TEST_CASE("cat, stack and split in float; shape errors", "[autodiff][index]") {
  ts::Tensor<float, ts::dyn_shape_t<2>> t(ts::cast<float>(gc::values<2>({7, 65}, 50)));
  auto a = ad::parameter(ts::transpose(t));  // [65, 7], from a strided view
  auto b = ad::parameter(ts::slice<1>(t, 0, 65, 2));  // [7, 33]
  auto j = ad::cat<0>(a, ad::transpose(b));  // [98, 7]
  REQUIRE(j.dims() == dims_t<2>{98, 7});
  CHECK(j.value()(70, 3) == t(3, 10));
  auto parts = ad::split<0>(j, std::vector<index_t>{65, 33});
  ad::sum(parts[1] * 2.0f).backward();
  CHECK(b.grad()(3, 5) == 2.0f);
  CHECK(a.grad()(5, 3) == 0.0f);
  auto c = ad::parameter(gc::values<2>({3, 4}, 51));
  auto d = ad::parameter(gc::values<2>({2, 5}, 52));
  CHECK(message_of([&] { (void)ad::cat<0>(c, d); }) == "tessera: cat: shapes [3, 4] and [2, 5] differ outside axis 0");
  CHECK(message_of([&] { (void)ad::stack<0>(c, d); }) == "tessera: stack: shapes [3, 4] and [2, 5] differ");
  CHECK(message_of([&] { (void)ad::split<1>(c, std::vector<index_t>{1, 2}); }) ==
        "tessera: split: sizes [1, 2] do not add up to extent 4 of axis 1 of shape [3, 4]");
  CHECK(message_of([&] { (void)ad::cat<0>(std::vector<ad::Var<double, 2>>{}); }) == "tessera: cat: no Vars to join");
  CHECK(message_of([&] { (void)ad::chunk<0>(c, 0); }) == "tessera: chunk: the number of chunks must be at least 1, not 0");
}
