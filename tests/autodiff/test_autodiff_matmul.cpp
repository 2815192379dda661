// ad::matmul beyond matrices: batched products with broadcast batch dims ([B, M, K] x [K, N], [B, 1, M, K] x
// [H, K, N]), matrix-vector, vector-matrix and the dot product. Forward against plain loops, gradients against
// central finite differences (double), float, policies cpu and cpu_threads, strided inputs, shape errors.
#include "gradcheck.hpp"

#include <string>
#include <tessera/autodiff/view_ops.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dims_t;
using ts::index_t;

namespace {
using gc::message_of;
using gc::weighted;

/// The plain product of a [BA..., M, K] and b [BB..., K, N] flattened to batches: a and b are given as functions of
/// (batch index of the result, row, column) so each case states its own broadcasting.
template <class FA, class FB>
std::vector<double> product(index_t batches, index_t m, index_t k, index_t n, FA a, FB b) {
  std::vector<double> c(std::size_t(batches * m * n), 0.0);
  for (index_t q = 0; q < batches; ++q)
    for (index_t i = 0; i < m; ++i)
      for (index_t j = 0; j < n; ++j) {
        double s = 0;
        for (index_t l = 0; l < k; ++l) s += a(q, i, l) * b(q, l, j);
        c[std::size_t((q * m + i) * n + j)] = s;
      }
  return c;
}

template <class X>
void near(const X& got, const std::vector<double>& want, double tol) {
  const auto g = got.to_vector();
  REQUIRE(g.size() == want.size());
  for (std::size_t i = 0; i < g.size(); ++i) CHECK(double(g[i]) == Approx(want[i]).margin(tol));
}
}  // namespace

TEST_CASE("batched matmul broadcasts batch dims as torch.matmul", "[autodiff][matmul]") {
  auto run = [&](auto policy) {
    using P = decltype(policy);
    for (index_t m : {1, 7}) {
      const index_t B = 3, H = 2, K = 5, N = 4;
      // [B, M, K] x [K, N] -> [B, M, N]
      auto a = ad::parameter(gc::values<3, P>({B, m, K}, 1));
      auto w = ad::parameter(gc::values<2, P>({K, N}, 2));
      auto c = ad::matmul(a, w);
      REQUIRE(c.dims() == dims_t<3>{B, m, N});
      const auto& av = a.value();
      const auto& wv = w.value();
      near(c.value(), product(B, m, K, N, [&](index_t q, index_t i, index_t l) { return av(q, i, l); },
                              [&](index_t, index_t l, index_t j) { return wv(l, j); }), 1e-12);
      gc::check([&] { return weighted(ad::matmul(a, w), 3); }, a, w);
      // [B, 1, M, K] x [H, K, N] -> [B, H, M, N]
      auto x = ad::parameter(gc::values<4, P>({B, 1, m, K}, 4));
      auto y = ad::parameter(gc::values<3, P>({H, K, N}, 5));
      auto z = ad::matmul(x, y);
      REQUIRE(z.dims() == dims_t<4>{B, H, m, N});
      const auto& xv = x.value();
      const auto& yv = y.value();
      near(z.value(), product(B * H, m, K, N, [&](index_t q, index_t i, index_t l) { return xv(q / H, 0, i, l); },
                              [&](index_t q, index_t l, index_t j) { return yv(q % H, l, j); }), 1e-12);
      gc::check([&] { return weighted(ad::matmul(x, y), 6); }, x, y);
      // equal batch dims, and a broadcast left operand
      auto p = ad::parameter(gc::values<3, P>({B, K, N}, 7));
      gc::check([&] { return weighted(ad::matmul(a, p), 8); }, a, p);
      auto mat = ad::parameter(gc::values<2, P>({m, K}, 9));
      gc::check([&] { return weighted(ad::matmul(mat, p), 10); }, mat, p);
    }
  };
  run(ts::cpu{});
  run(ts::cpu_threads{});
}

TEST_CASE("matrix-vector, vector-matrix and dot products", "[autodiff][matmul]") {
  auto run = [&](auto policy) {
    using P = decltype(policy);
    for (index_t k : {1, 7, 33}) {
      const index_t M = 5, N = 3, B = 2;
      auto a = ad::parameter(gc::values<2, P>({M, k}, 11));
      auto v = ad::parameter(gc::values<1, P>({k}, 12));
      auto u = ad::parameter(gc::values<1, P>({k}, 13));
      auto b = ad::parameter(gc::values<2, P>({k, N}, 14));
      auto bb = ad::parameter(gc::values<3, P>({B, k, N}, 15));
      auto ab = ad::parameter(gc::values<3, P>({B, M, k}, 16));
      const auto& av = a.value();
      const auto& vv = v.value();
      const auto& uv = u.value();
      const auto& bv = b.value();
      auto mv = ad::matmul(a, v);
      REQUIRE(mv.dims() == dims_t<1>{M});
      near(mv.value(), product(1, M, k, 1, [&](index_t, index_t i, index_t l) { return av(i, l); },
                               [&](index_t, index_t l, index_t) { return vv(l); }), 1e-12);
      auto vm = ad::matmul(v, b);
      REQUIRE(vm.dims() == dims_t<1>{N});
      near(vm.value(), product(1, 1, k, N, [&](index_t, index_t, index_t l) { return vv(l); },
                               [&](index_t, index_t l, index_t j) { return bv(l, j); }), 1e-12);
      auto dot = ad::matmul(v, u);
      static_assert(decltype(dot)::rank == 0);
      double want = 0;
      for (index_t l = 0; l < k; ++l) want += vv(l) * uv(l);
      CHECK(dot.value()() == Approx(want).margin(1e-12));
      REQUIRE(ad::matmul(v, bb).dims() == dims_t<2>{B, N});
      REQUIRE(ad::matmul(ab, v).dims() == dims_t<2>{B, M});
      gc::check([&] { return weighted(ad::matmul(a, v), 17); }, a, v);
      gc::check([&] { return weighted(ad::matmul(v, b), 18); }, v, b);
      gc::check([&] { return ad::sum(ad::matmul(v, u) * ad::matmul(u, u)); }, v, u);
      gc::check([&] { return weighted(ad::matmul(v, bb), 19); }, v, bb);
      gc::check([&] { return weighted(ad::matmul(ab, v), 20); }, ab, v);
    }
  };
  run(ts::cpu{});
  run(ts::cpu_threads{});
}

TEST_CASE("matmul of Vars made from strided views, in float", "[autodiff][matmul]") {
  ts::Tensor<float, ts::dyn_shape_t<3>> t(ts::cast<float>(gc::values<3>({4, 65, 3}, 21)));  // read transposed
  ts::Tensor<float, ts::dyn_shape_t<2>> s(ts::cast<float>(gc::values<2>({33, 14}, 22)));    // every other column
  auto a = ad::parameter(ts::transpose(t));              // [4, 3, 65]
  auto b = ad::parameter(ts::slice<1>(s, 0, 14, 2));      // [33, 7]
  auto c = ad::matmul(ad::slice<2>(a, 0, 33), b);          // [4, 3, 7]
  REQUIRE(c.dims() == dims_t<3>{4, 3, 7});
  near(c.value(), product(4, 3, 33, 7, [&](index_t q, index_t i, index_t l) { return double(t(q, l, i)); },
                          [&](index_t, index_t l, index_t j) { return double(s(l, 2 * j)); }), 1e-4);
  ad::sum(c).backward();
  // d sum(A B) / dB[l, j] = sum over batches and rows of A[q, i, l]
  for (index_t l = 0; l < 33; ++l) {
    double want = 0;
    for (index_t q = 0; q < 4; ++q)
      for (index_t i = 0; i < 3; ++i) want += double(t(q, l, i));
    for (index_t j = 0; j < 7; ++j) CHECK(double(b.grad()(l, j)) == Approx(want).margin(1e-4));
  }
  for (index_t q = 0; q < 4; ++q)
    for (index_t i = 0; i < 3; ++i) CHECK(a.grad()(q, i, 40) == 0.0f);  // outside the slice
}

TEST_CASE("matmul shape errors name both shapes", "[autodiff][matmul]") {
  auto a = ad::parameter(gc::values<3>({2, 3, 4}, 30));
  auto b = ad::parameter(gc::values<2>({5, 6}, 31));
  auto c = ad::parameter(gc::values<3>({3, 4, 2}, 32));
  auto v = ad::parameter(gc::values<1>({5}, 33));
  CHECK(message_of([&] { (void)ad::matmul(a, b); }) ==
        "tessera: matmul: shapes [2, 3, 4] and [5, 6] do not fit (the columns of the left must equal the rows of the right)");
  CHECK(message_of([&] { (void)ad::matmul(a, c); }) ==
        "tessera: matmul: the batch dimensions of [2, 3, 4] and [3, 4, 2] cannot be broadcast together");
  CHECK(message_of([&] { (void)ad::matmul(a, v); }) ==
        "tessera: matmul: shapes [2, 3, 4] and [5] do not fit (the columns of the left must equal the rows of the right)");
  CHECK(message_of([&] { (void)ad::matmul(v, a); }) ==
        "tessera: matmul: shapes [5] and [2, 3, 4] do not fit (the columns of the left must equal the rows of the right)");
}
