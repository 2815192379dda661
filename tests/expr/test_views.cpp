// Views: slice, select, transpose, permute, reshape, flatten, broadcast_to, squeeze, unsqueeze, as_static,
// as_dynamic and map; their extents, strides and elements, their composition, writes through them, their errors,
// and expressions over them for every element type: strided and transposed operands, strided and transposed
// destinations, and broadcast (stride 0) operands: row + matrix, column + row, rank-0 tensors, rank 3,
// min/max/minimum/maximum/clamp with broadcast bounds, where with a broadcast condition.
// References are computed from index arithmetic on the underlying tensors, never through the view under test.
//
// Compile time: the sweeps over element types use tensors with all extents dynamic, so that every view and every
// destination has the same type (View<T, Shape<dyn, dyn>>) and each expression is instantiated once per element type;
// they run under cpu_threads with 1 thread (the code path of cpu) and 2 (see tst::thread_pairs).
#include <cstdint>
#include <numeric>
#include <vector>

#include "test_support.hpp"

using ts::dyn;
using ts::index_t;
using ts::Shape;
using ts::Tensor;

namespace {
template <class T>
using Dyn2 = Tensor<T, Shape<dyn, dyn>>;

/// x(i, j, k) = 100 i + 10 j + k, so an element's value names its position.
Tensor<float, Shape<dyn, dyn, dyn>> iota3(index_t a, index_t b, index_t c) {
  Tensor<float, Shape<dyn, dyn, dyn>> x(a, b, c);
  for (index_t i = 0; i < a; ++i)
    for (index_t j = 0; j < b; ++j)
      for (index_t k = 0; k < c; ++k) x(i, j, k) = float(100 * i + 10 * j + k);
  return x;
}
Dyn2<float> iota2(index_t a, index_t b) {
  Dyn2<float> x(a, b);
  for (index_t i = 0; i < a; ++i)
    for (index_t j = 0; j < b; ++j) x(i, j) = float(100 * i + j);
  return x;
}
}  // namespace

// ---- single views: extents, strides, elements -----------------------------------------------------------------

TEST_CASE("slice: extents, strides, elements, steps, negative axes, empty slices", "[views][slice]") {
  auto x = iota2(9, 7);
  auto s = ts::slice<0>(x, 1, 8, 3);  // rows 1, 4, 7
  static_assert(std::is_same_v<decltype(s), ts::View<float, Shape<dyn, dyn>>>);
  REQUIRE(s.dims() == ts::dims_t<2>{3, 7});
  REQUIRE(s.strides() == ts::dims_t<2>{21, 1});
  REQUIRE(s.data() == x.data() + 7);
  for (index_t i = 0; i < 3; ++i)
    for (index_t j = 0; j < 7; ++j) REQUIRE(s(i, j) == float(100 * (1 + 3 * i) + j));

  auto c = ts::slice<-1>(x, 2, 7, 2);  // columns 2, 4, 6
  REQUIRE(c.dims() == ts::dims_t<2>{9, 3});
  REQUIRE(c.strides() == ts::dims_t<2>{7, 2});
  REQUIRE(c(8, 2) == 806.0f);
  CHECK_FALSE(c.is_contiguous());
  CHECK(ts::slice<0>(x, 2, 5).is_contiguous());

  REQUIRE(ts::slice<1>(x, 0, 7, 10).dims() == ts::dims_t<2>{9, 1});  // a step past the end: one element
  REQUIRE(ts::slice<1>(x, 0, 6, 4).dims() == ts::dims_t<2>{9, 2});   // ceil(6 / 4)
  REQUIRE(ts::slice<1>(x, 3, 3).dims() == ts::dims_t<2>{9, 0});      // empty
  REQUIRE(ts::slice<0>(x, 9, 9).size() == 0);                        // empty at the end

  auto ss = ts::slice<1>(ts::slice<1>(x, 1, 7, 2), 1, 3);  // columns 3, 5
  REQUIRE(ss.dims() == ts::dims_t<2>{9, 2});
  REQUIRE(ss.strides() == ts::dims_t<2>{7, 2});
  REQUIRE(ss(4, 1) == 405.0f);

  // a static extent along another axis is kept; the sliced one becomes dynamic
  Tensor<float, Shape<4, 6>> st;
  static_assert(std::is_same_v<decltype(ts::slice<1>(st, 0, 6, 2)), ts::View<float, Shape<4, dyn>>>);
  const auto& cst = st;
  static_assert(std::is_same_v<decltype(ts::slice<0>(cst, 0, 2)), ts::View<const float, Shape<dyn, 6>>>);
}

TEST_CASE("slice errors name the range, the axis and the shape", "[views][slice][errors]") {
  auto x = iota2(5, 4);
  REQUIRE_THROWS_AS(ts::slice<0>(x, 0, 6), ts::shape_error);
  REQUIRE_THROWS_WITH(ts::slice<0>(x, 0, 6), Catch::Contains("[5, 4]") && Catch::Contains("axis 0"));
  REQUIRE_THROWS_WITH(ts::slice<1>(x, 3, 2), Catch::Contains("[5, 4]") && Catch::Contains("axis 1"));
  REQUIRE_THROWS_AS(ts::slice<1>(x, -1, 2), ts::shape_error);
  REQUIRE_THROWS_AS(ts::slice<1>(x, 0, 2, 0), ts::shape_error);
  REQUIRE_THROWS_WITH(ts::slice<-1>(x, 0, 5), Catch::Contains("axis 1"));
}

TEST_CASE("select drops an axis; errors name the index and the shape", "[views][select]") {
  auto x = iota3(3, 4, 5);
  auto s1 = ts::select<1>(x, 2);
  REQUIRE(s1.dims() == ts::dims_t<2>{3, 5});
  REQUIRE(s1.strides() == ts::dims_t<2>{20, 1});
  for (index_t i = 0; i < 3; ++i)
    for (index_t k = 0; k < 5; ++k) REQUIRE(s1(i, k) == float(100 * i + 20 + k));
  auto s2 = ts::select<-1>(x, 4);
  REQUIRE(s2.dims() == ts::dims_t<2>{3, 4});
  REQUIRE(s2(2, 3) == 234.0f);
  auto s0 = ts::select<0>(ts::select<0>(ts::select<0>(x, 2), 1), 3);  // rank 0
  static_assert(decltype(s0)::rank == 0);
  REQUIRE(s0() == 213.0f);
  REQUIRE_THROWS_AS(ts::select<1>(x, 4), ts::shape_error);
  REQUIRE_THROWS_WITH(ts::select<1>(x, 4), Catch::Contains("index 4") && Catch::Contains("[3, 4, 5]"));
  REQUIRE_THROWS_AS(ts::select<0>(x, -1), ts::shape_error);

  // writing through a selection: one row of a matrix
  auto m = iota2(4, 6);
  ts::select<0>(m, 2) = 0.5f;
  for (index_t i = 0; i < 4; ++i)
    for (index_t j = 0; j < 6; ++j) REQUIRE(m(i, j) == (i == 2 ? 0.5f : float(100 * i + j)));
  ts::select<1>(m, 5) = ts::select<1>(m, 0) + 1.0f;  // column 5 = column 0 + 1
  for (index_t i = 0; i < 4; ++i) REQUIRE(m(i, 5) == m(i, 0) + 1.0f);
}

TEST_CASE("transpose and permute reorder axes without copying", "[views][transpose]") {
  auto m = iota2(3, 5);
  auto t = ts::transpose(m);
  REQUIRE(t.dims() == ts::dims_t<2>{5, 3});
  REQUIRE(t.strides() == ts::dims_t<2>{1, 5});
  REQUIRE(t.data() == m.data());
  for (index_t i = 0; i < 5; ++i)
    for (index_t j = 0; j < 3; ++j) REQUIRE(t(i, j) == m(j, i));
  CHECK_FALSE(t.is_contiguous());
  CHECK(ts::transpose(t).is_contiguous());

  auto x = iota3(2, 3, 4);
  auto tx = ts::transpose(x);  // the last two axes
  REQUIRE(tx.dims() == ts::dims_t<3>{2, 4, 3});
  REQUIRE(tx(1, 3, 2) == 123.0f);
  auto p = ts::permute<2, 0, 1>(x);  // result axis k is source axis P[k]
  REQUIRE(p.dims() == ts::dims_t<3>{4, 2, 3});
  REQUIRE(p.strides() == ts::dims_t<3>{1, 12, 4});
  for (index_t a = 0; a < 4; ++a)
    for (index_t b = 0; b < 2; ++b)
      for (index_t c = 0; c < 3; ++c) REQUIRE(p(a, b, c) == x(b, c, a));
  auto id = ts::permute<0, 1, 2>(x);
  REQUIRE(id.strides() == x.strides());

  Tensor<float, Shape<2, 3, 4>> st;
  static_assert(std::is_same_v<decltype(ts::permute<2, 0, 1>(st)), ts::View<float, Shape<4, 2, 3>>>);
  static_assert(std::is_same_v<decltype(ts::transpose(st)), ts::View<float, Shape<2, 4, 3>>>);

  // writing through a transpose
  Dyn2<float> d(5, 3);
  ts::transpose(d) = m * 2.0f;
  for (index_t i = 0; i < 5; ++i)
    for (index_t j = 0; j < 3; ++j) REQUIRE(d(i, j) == 2.0f * m(j, i));
}

TEST_CASE("reshape and flatten of contiguous views; non-contiguous ones throw", "[views][reshape]") {
  auto x = iota3(2, 3, 4);
  auto r = ts::reshape<Shape<dyn, dyn>>(x, {6, 4});
  REQUIRE(r.dims() == ts::dims_t<2>{6, 4});
  REQUIRE(r.strides() == ts::dims_t<2>{4, 1});
  REQUIRE(r.data() == x.data());
  for (index_t k = 0; k < 24; ++k) REQUIRE(r(k / 4, k % 4) == x.data()[k]);

  auto inferred = ts::reshape<Shape<dyn, 8>>(x);  // the one dynamic extent is inferred
  REQUIRE(inferred.dims() == ts::dims_t<2>{3, 8});
  REQUIRE(inferred(2, 7) == x(1, 2, 3));
  auto st = ts::reshape<Shape<4, 3, 2>>(x);
  static_assert(std::is_same_v<decltype(st), ts::View<float, Shape<4, 3, 2>>>);
  REQUIRE(st(3, 2, 1) == x(1, 2, 3));

  auto f = ts::flatten(x);
  REQUIRE(f.dims() == ts::dims_t<1>{24});
  for (index_t k = 0; k < 24; ++k) REQUIRE(f(k) == x.data()[k]);

  // a contiguous slice (whole rows) reshapes; its data starts inside the tensor
  auto rows = ts::slice<0>(x, 1, 2);
  auto rr = ts::reshape<Shape<dyn>>(rows, {12});
  REQUIRE(rr.data() == x.data() + 12);
  REQUIRE(rr(11) == x(1, 2, 3));
  // writing through a reshape
  ts::reshape<Shape<dyn, dyn>>(x, {4, 6}) = 1.0f;
  for (index_t k = 0; k < 24; ++k) REQUIRE(x.data()[k] == 1.0f);

  // non-contiguous views cannot be reshaped: the message names the shape
  auto y = iota2(4, 6);
  REQUIRE_THROWS_AS((ts::reshape<Shape<dyn>>(ts::transpose(y), {24})), ts::shape_error);
  REQUIRE_THROWS_WITH(ts::reshape<Shape<dyn>>(ts::transpose(y), {24}),
                      Catch::Contains("[6, 4]") && Catch::Contains("contiguous"));
  REQUIRE_THROWS_WITH(ts::flatten(ts::slice<1>(y, 0, 6, 2)),
                      Catch::Contains("[4, 3]") && Catch::Contains("contiguous"));
  REQUIRE_THROWS_AS(ts::flatten(ts::slice<1>(y, 0, 3)), ts::shape_error);
  // a different number of elements: the message names both shapes
  REQUIRE_THROWS_AS((ts::reshape<Shape<dyn, dyn>>(y, {5, 5})), ts::shape_error);
  REQUIRE_THROWS_WITH((ts::reshape<Shape<dyn, dyn>>(y, {5, 5})),
                      Catch::Contains("[4, 6]") && Catch::Contains("[5, 5]"));
  REQUIRE_THROWS_WITH((ts::reshape<Shape<dyn, 5>>(y)), Catch::Contains("[4, 6]") && Catch::Contains("5]"));
}

TEST_CASE("broadcast_to repeats with stride 0 and is read-only; errors name both shapes", "[views][broadcast_to]") {
  Tensor<float, Shape<dyn>> row(4);
  for (index_t j = 0; j < 4; ++j) row(j) = float(j) + 0.5f;
  auto b = ts::broadcast_to<Shape<dyn, dyn>>(row, {3, 4});
  static_assert(std::is_same_v<decltype(b), ts::View<const float, Shape<dyn, dyn>>>);
  REQUIRE(b.dims() == ts::dims_t<2>{3, 4});
  REQUIRE(b.strides() == ts::dims_t<2>{0, 1});
  for (index_t i = 0; i < 3; ++i)
    for (index_t j = 0; j < 4; ++j) REQUIRE(b(i, j) == row(j));

  Tensor<float, Shape<dyn, 1>> col(3);
  for (index_t i = 0; i < 3; ++i) col(i, 0) = float(10 * i);
  auto bc = ts::broadcast_to<Shape<2, dyn, 5>>(col, {2, 3, 5});
  REQUIRE(bc.strides() == ts::dims_t<3>{0, 1, 0});
  REQUIRE(bc(1, 2, 4) == 20.0f);
  Dyn2<float> sum = ts::select<0>(bc, 1) + b(0, 0);  // a broadcast view as an operand
  REQUIRE(sum.dims() == ts::dims_t<2>{3, 5});
  REQUIRE(sum(2, 3) == 20.5f);

  REQUIRE_THROWS_AS((ts::broadcast_to<Shape<dyn, dyn>>(row, {3, 5})), ts::shape_error);
  REQUIRE_THROWS_WITH((ts::broadcast_to<Shape<dyn, dyn>>(row, {3, 5})),
                      Catch::Contains("[4]") && Catch::Contains("[3, 5]"));
  REQUIRE_THROWS_WITH((ts::broadcast_to<Shape<dyn, dyn>>(col, {2, 1})),
                      Catch::Contains("[3, 1]") && Catch::Contains("[2, 1]"));
  REQUIRE_THROWS_WITH((ts::broadcast_to<Shape<dyn, dyn>>(row, {4, 1})),
                      Catch::Contains("[4]") && Catch::Contains("[4, 1]"));

  // a writable view with stride 0 over more than one element cannot be a destination
  std::vector<float> mem(4, 0.0f);
  auto zero_stride = ts::map<Shape<dyn, dyn>>(mem.data(), {3, 4}, {0, 1});
  REQUIRE_THROWS_AS(zero_stride = 1.0f, ts::shape_error);
  REQUIRE_THROWS_WITH(zero_stride = b * 2.0f, Catch::Contains("[3, 4]") && Catch::Contains("broadcast"));
}

TEST_CASE("squeeze and unsqueeze; as_static and as_dynamic", "[views][squeeze]") {
  auto x = iota3(3, 1, 4);
  auto s = ts::squeeze<1>(x);
  REQUIRE(s.dims() == ts::dims_t<2>{3, 4});
  REQUIRE(s(2, 3) == 203.0f);
  REQUIRE_THROWS_AS(ts::squeeze<0>(x), ts::shape_error);
  REQUIRE_THROWS_WITH(ts::squeeze<-1>(x), Catch::Contains("[3, 1, 4]") && Catch::Contains("axis 2"));

  auto m = iota2(3, 4);
  auto u0 = ts::unsqueeze<0>(m);
  REQUIRE(u0.dims() == ts::dims_t<3>{1, 3, 4});
  REQUIRE(u0(0, 2, 1) == 201.0f);
  auto u2 = ts::unsqueeze<2>(m);
  REQUIRE(u2.dims() == ts::dims_t<3>{3, 4, 1});
  REQUIRE(u2(1, 3, 0) == 103.0f);
  CHECK(u2.is_contiguous());
  auto back = ts::squeeze<2>(u2);
  REQUIRE(back.dims() == m.dims());
  REQUIRE(back.strides() == m.strides());
  // unsqueeze for broadcasting: [3, 1, 4] - [1, 3, 4]... here [3, 1, 4] * [4] and a column [3, 1] from a vector
  Tensor<float, Shape<dyn>> v(3);
  for (index_t i = 0; i < 3; ++i) v(i) = float(i + 1);
  Dyn2<float> scaled = m * ts::unsqueeze<1>(v);
  for (index_t i = 0; i < 3; ++i)
    for (index_t j = 0; j < 4; ++j) REQUIRE(scaled(i, j) == m(i, j) * float(i + 1));
  ts::unsqueeze<0>(v) = 7.0f;  // writing through an unsqueezed view
  for (index_t i = 0; i < 3; ++i) REQUIRE(v(i) == 7.0f);

  auto st = ts::as_static<Shape<3, 4>>(m);
  static_assert(std::is_same_v<decltype(st), ts::View<float, Shape<3, 4>>>);
  REQUIRE(st(2, 3) == 203.0f);
  REQUIRE_THROWS_AS((ts::as_static<Shape<4, 3>>(m)), ts::shape_error);
  REQUIRE_THROWS_WITH((ts::as_static<Shape<3, 5>>(m)), Catch::Contains("[3, 4]") && Catch::Contains("[3, 5]"));
  REQUIRE_THROWS_AS((ts::as_static<Shape<dyn, 2>>(ts::transpose(m))), ts::shape_error);
  auto dy = ts::as_dynamic(st);
  static_assert(std::is_same_v<decltype(dy), ts::View<float, Shape<dyn, dyn>>>);
  REQUIRE(dy.dims() == ts::dims_t<2>{3, 4});
  REQUIRE(dy.data() == m.data());
}

TEST_CASE("map views caller memory, row-major or with given strides", "[views][map]") {
  std::vector<std::int32_t> mem(12);
  std::iota(mem.begin(), mem.end(), 0);
  auto m = ts::map<Shape<dyn, dyn>>(mem.data(), {3, 4});
  REQUIRE(m(2, 1) == 9);
  auto col_major = ts::map<Shape<dyn, dyn>>(mem.data(), {4, 3}, {1, 4});  // a column-major 4 x 3 matrix
  REQUIRE(col_major(1, 2) == 9);
  Dyn2<std::int32_t> t = col_major * 10;
  REQUIRE(t(3, 0) == 30);
  REQUIRE(t(0, 2) == 80);
  ts::slice<1>(m, 0, 4, 3) = std::int32_t(-1);  // columns 0 and 3 of the row-major view, written in place
  REQUIRE(mem == std::vector<std::int32_t>{-1, 1, 2, -1, -1, 5, 6, -1, -1, 9, 10, -1});
  const std::vector<std::int32_t>& cmem = mem;
  auto ro = ts::map<Shape<dyn>>(cmem.data(), {12});
  static_assert(std::is_same_v<decltype(ro), ts::View<const std::int32_t, Shape<dyn>>>);
  REQUIRE(ro(5) == 5);
  REQUIRE_THROWS_AS((ts::map<Shape<dyn, 4>>(mem.data(), {3, 5})), ts::shape_error);  // a static extent is checked
}

// ---- composed views ------------------------------------------------------------------------------------------

TEST_CASE("composed views: transpose of a slice, slice of a transpose, select of a permute", "[views][compose]") {
  auto x = iota2(8, 6);
  auto ts1 = ts::transpose(ts::slice<0>(x, 1, 8, 2));  // rows 1, 3, 5, 7, transposed: [6, 4]
  REQUIRE(ts1.dims() == ts::dims_t<2>{6, 4});
  REQUIRE(ts1.strides() == ts::dims_t<2>{1, 12});
  for (index_t i = 0; i < 6; ++i)
    for (index_t j = 0; j < 4; ++j) REQUIRE(ts1(i, j) == x(1 + 2 * j, i));
  auto st = ts::slice<0>(ts::transpose(x), 1, 6, 2);  // columns 1, 3, 5 as rows: [3, 8]
  REQUIRE(st.dims() == ts::dims_t<2>{3, 8});
  REQUIRE(st.strides() == ts::dims_t<2>{2, 6});
  for (index_t i = 0; i < 3; ++i)
    for (index_t j = 0; j < 8; ++j) REQUIRE(st(i, j) == x(j, 1 + 2 * i));

  auto y = iota3(4, 5, 6);
  auto sp = ts::select<1>(ts::permute<2, 0, 1>(y), 3);  // [6, 5]: sp(c, b) = y(3, b, c)
  REQUIRE(sp.dims() == ts::dims_t<2>{6, 5});
  for (index_t c = 0; c < 6; ++c)
    for (index_t b = 0; b < 5; ++b) REQUIRE(sp(c, b) == y(3, b, c));
  // reshape of a transposed-back transpose is contiguous again; of a transposed slice it is not
  REQUIRE(ts::flatten(ts::transpose(ts::transpose(x))).dims() == ts::dims_t<1>{48});
  REQUIRE_THROWS_AS(ts::flatten(ts1), ts::shape_error);
  // an expression over composed views, written through another composed view
  Dyn2<float> out(6, 8);
  out = 0.0f;
  ts::slice<0>(ts::transpose(out), 0, 8, 2) = ts::transpose(ts1) + st(0, 0);  // [4, 6] into every other column
  for (index_t i = 0; i < 6; ++i)
    for (index_t j = 0; j < 8; ++j) REQUIRE(out(i, j) == (j % 2 == 0 ? x(1 + j, i) + x(0, 1) : 0.0f));
}

// ---- expressions over views, every element type -------------------------------------------------------------

TEMPLATE_LIST_TEST_CASE("strided and transposed operands; strided and transposed destinations", "[views][elementwise]",
                        tst::thread_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  using D2 = Tensor<T, Shape<dyn, dyn>, P>;
  for (int nt : tst::thread_counts<P>())
    for (index_t n : tst::all_sizes) {
      tst::set_threads(nt);
      CAPTURE(nt, n);
      D2 x(n, 5);      // columns 0, 2, 4 of x: [n, 3] with strides [5, 2]
      D2 y(3, n);      // transpose(y): [n, 3] with strides [1, n]
      D2 w(2 * n, 3);  // rows 0, 2, 4, ... of w: [n, 3] with strides [6, 1]
      tst::fill(x, [](index_t k) { return tst::small<T>(k, 1); });
      tst::fill(y, [](index_t k) { return tst::small<T>(k, 2); });
      tst::fill(w, [](index_t k) { return tst::small<T>(k, 3); });
      auto sx = ts::slice<1>(x, 0, 5, 2);
      auto ty = ts::transpose(y);
      auto sw = ts::slice<0>(w, 0, 2 * n, 2);
      REQUIRE(sx.dims() == ts::dims_t<2>{n, 3});
      REQUIRE(ty.dims() == ts::dims_t<2>{n, 3});
      REQUIRE(sw.dims() == ts::dims_t<2>{n, 3});
      // reference in double: |values| <= 22 * 22 + 22, exact in every element type but the 8-bit ones, which wrap
      // like C++ (the result converted back to the element type, modulo 256)
      std::vector<double> r;
      for (index_t i = 0; i < n; ++i)
        for (index_t j = 0; j < 3; ++j) {
          const double v = tst::to_double(x(i, 2 * j)) * tst::to_double(y(j, i)) + tst::to_double(w(2 * i, j));
          if constexpr (sizeof(T) == 1)
            r.push_back(double(T(long(v))));
          else
            r.push_back(v);
        }
      auto expr = [&] { return sx * ty + sw; };

      D2 z = expr();
      CHECK(tst::compare_to(z, r) == "");

      // destination: every other row of a [2n, 3] tensor; the rows between keep their values
      D2 big(2 * n, 3);
      const T sentinel = T(7);
      big = sentinel;
      ts::slice<0>(big, 1, 2 * n, 2) = expr();
      CHECK(tst::compare_to(ts::slice<0>(big, 1, 2 * n, 2), r) == "");
      CHECK(tst::compare_to(ts::slice<0>(big, 0, 2 * n, 2), std::vector<double>(std::size_t(3 * n), 7.0)) == "");

      // destination: columns 0, 2, 4 (inner stride 2); and a transposed destination (inner stride n)
      D2 cols(n, 5);
      cols = sentinel;
      ts::slice<1>(cols, 0, 5, 2) = expr();
      CHECK(tst::compare_to(ts::slice<1>(cols, 0, 5, 2), r) == "");
      CHECK(tst::compare_to(ts::slice<1>(cols, 1, 5, 2), std::vector<double>(std::size_t(2 * n), 7.0)) == "");
      D2 tz(3, n);
      ts::transpose(tz) = expr();
      CHECK(tst::compare_to(ts::transpose(tz), r) == "");

      // a scalar written into a strided destination
      ts::slice<0>(big, 0, 2 * n, 2) = T(3);
      CHECK(tst::compare_to(ts::slice<0>(big, 0, 2 * n, 2), std::vector<double>(std::size_t(3 * n), 3.0)) == "");
      CHECK(tst::compare_to(ts::slice<0>(big, 1, 2 * n, 2), r) == "");
    }
}

// ---- elementwise operations with broadcast operands, every element type ------------------------------------

TEMPLATE_LIST_TEST_CASE("min, max, minimum, maximum and clamp with tensor, broadcast and scalar bounds",
                        "[views][broadcast][minmax]", tst::thread_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  using R = tst::ref_arith<T>;
  for (int nt : tst::thread_counts<P>())
    for (index_t n : tst::all_sizes) {
      tst::set_threads(nt);
      CAPTURE(nt, n);
      Tensor<T, Shape<dyn, 3>, P> a(n), b(n);
      Tensor<T, Shape<dyn, dyn>, P> z(n, 3);
      Tensor<T, Shape<3>, P> lo, hi;
      tst::fill(a, [](index_t k) { return tst::wide<T>(k, 1); });
      tst::fill(b, [](index_t k) { return tst::wide<T>(k, 2); });
      lo(0) = T(0), lo(1) = T(2), lo(2) = T(5);
      hi(0) = T(3), hi(1) = T(9), hi(2) = T(5);
      const T s = tst::small<T>(3, 4);
      z = ts::clamp(ts::max(a, b), lo, hi) - ts::min(ts::maximum(s, a), ts::minimum(ts::clamp(b, T(1), T(6)), a));
      std::vector<double> r;
      for (index_t i = 0; i < n; ++i)
        for (int j = 0; j < 3; ++j) {
          const auto x = R::in(a(i, j)), y = R::in(b(i, j));
          const auto left = R::clamp(R::max(x, y), R::in(lo(j)), R::in(hi(j)));
          const auto right = R::min(R::max(R::in(s), x), R::min(R::clamp(y, R::in(T(1)), R::in(T(6))), x));
          r.push_back(double(R::sub(left, right)));
        }
      CHECK(tst::compare_to(z, r) == "");
    }
}

TEMPLATE_LIST_TEST_CASE("where with tensor and scalar branches and a broadcast condition", "[views][broadcast][where]",
                        tst::thread_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  using R = tst::ref_arith<T>;
  for (int nt : tst::thread_counts<P>())
    for (index_t n : tst::all_sizes) {
      tst::set_threads(nt);
      CAPTURE(nt, n);
      Tensor<T, Shape<dyn, 3>, P> a(n), b(n);
      Tensor<T, Shape<dyn, dyn>, P> z(n, 3);
      Tensor<bool, Shape<3>, P> row;
      row(0) = true, row(1) = false, row(2) = true;
      tst::fill(a, [](index_t k) { return tst::small<T>(k, 1); });
      tst::fill(b, [](index_t k) { return tst::small<T>(k / 3, 1); });
      const T s = tst::small<T>(5, 2), t = tst::small<T>(6, 3);
      z = ts::where(a > b, a, s) - ts::where(row, b, t) + ts::where(a == b, s, t);
      std::vector<double> r;
      for (index_t i = 0; i < n; ++i)
        for (int j = 0; j < 3; ++j) {
          const auto x = R::in(a(i, j)), y = R::in(b(i, j));
          const auto w1 = x > y ? x : R::in(s), w2 = row(j) ? y : R::in(t), w3 = x == y ? R::in(s) : R::in(t);
          r.push_back(double(R::add(R::sub(w1, w2), w3)));
        }
      CHECK(tst::compare_to(z, r) == "");
      if constexpr (std::is_same_v<T, float>) {  // bool branches
        Tensor<bool, Shape<dyn, dyn>, P> c(n, 3);
        c = ts::where(a > b, a < s, b < s);
        CHECK(tst::compare_to(c, tst::ref_flat(a.size(), [&](index_t i) {
                                const float x = a.data()[i], y = b.data()[i];
                                return x > y ? x < s : y < s;
                              })) == "");
      }
    }
}

TEMPLATE_LIST_TEST_CASE("broadcast operands: row + matrix, column + row, rank-0 tensors, rank 3",
                        "[views][broadcast][elementwise]", tst::thread_pairs) {
  using T = typename TestType::type;
  using P = typename TestType::policy;
  using D2 = Tensor<T, Shape<dyn, dyn>, P>;
  auto v = [](T x) { return tst::to_double(x); };
  for (int nt : tst::thread_counts<P>())
    for (index_t n : tst::all_sizes) {
      tst::set_threads(nt);
      CAPTURE(nt, n);
      Tensor<T, Shape<dyn, 3>, P> a(n);
      Tensor<T, Shape<3>, P> row;
      Tensor<T, Shape<dyn, 1>, P> col(n);
      Tensor<T, Shape<>, P> s0;
      tst::fill(a, [](index_t k) { return tst::small<T>(k, 1); });
      tst::fill(row, [](index_t k) { return tst::small<T>(k, 2); });
      tst::fill(col, [](index_t k) { return tst::small<T>(k, 3); });
      s0() = T(4);
      // exact in double; the 8-bit types wrap like C++ (the result converted back to the element type, modulo 256)
      auto fix = [](double d) {
        if constexpr (sizeof(T) == 1)
          return double(T(long(d)));
        else
          return d;
      };
      D2 z = row * a - col + s0;  // [3] * [n, 3] - [n, 1] + []
      std::vector<double> r;
      for (index_t i = 0; i < n; ++i)
        for (int j = 0; j < 3; ++j) r.push_back(fix(v(row(j)) * v(a(i, j)) - v(col(i, 0)) + v(s0())));
      CHECK(tst::compare_to(z, r) == "");

      if constexpr (std::is_same_v<T, float> || std::is_same_v<T, std::int8_t>) {
        Tensor<T, Shape<dyn>, P> r5(5);
        tst::fill(r5, [](index_t k) { return tst::small<T>(k, 4); });
        D2 outer = col - r5;  // [n, 1] - [5] -> [n, 5]
        REQUIRE(outer.dims() == ts::dims_t<2>{n, 5});
        r.clear();
        for (index_t i = 0; i < n; ++i)
          for (int j = 0; j < 5; ++j) r.push_back(v(col(i, 0)) - v(r5(j)));
        CHECK(tst::compare_to(outer, r) == "");

        Tensor<T, Shape<>, P> s1 = s0 * s0 - s0;  // rank 0 throughout
        CHECK(tst::compare_to(s1, {12.0}) == "");

        // rank 3: [n, 1, 5] + [4, 1] -> [n, 4, 5]
        Tensor<T, Shape<dyn, 1, 5>, P> u(n);
        Tensor<T, Shape<4, 1>, P> w;
        tst::fill(u, [](index_t k) { return tst::small<T>(k, 5); });
        tst::fill(w, [](index_t k) { return tst::small<T>(k, 6); });
        Tensor<T, Shape<dyn, dyn, dyn>, P> y = u + w;
        REQUIRE(y.dims() == ts::dims_t<3>{n, 4, 5});
        r.clear();
        for (index_t i = 0; i < n; ++i)
          for (int j = 0; j < 4; ++j)
            for (int k = 0; k < 5; ++k) r.push_back(v(u(i, 0, k)) + v(w(j, 0)));
        CHECK(tst::compare_to(y, r) == "");

        // an expression of shape [1, 3] written into every row of a destination view of shape [n, 3]
        Tensor<T, Shape<1, 3>, P> one;
        tst::fill(one, [](index_t k) { return tst::small<T>(k, 8); });
        z.view() = one * T(2);
        r.clear();
        for (index_t i = 0; i < n; ++i)
          for (int j = 0; j < 3; ++j) r.push_back(2 * v(one(0, j)));
        CHECK(tst::compare_to(z, r) == "");

        // broadcast_to views as operands (stride 0 along the rows)
        z = ts::broadcast_to<Shape<dyn, dyn>>(row, {n, 3}) * a;
        r.clear();
        for (index_t i = 0; i < n; ++i)
          for (int j = 0; j < 3; ++j) r.push_back(v(row(j)) * v(a(i, j)));
        CHECK(tst::compare_to(z, r) == "");
      }
    }
}
