// The sparse Linear (kernels/cpu/sparse.hpp, prune/sparse_linear.hpp) against a plain-loop reference (double sums of
// the dense weight): odd sizes (B 1, 7, 33, 65, 127; In and Out 1, 7, 33, 127), sparsity patterns (empty rows, all
// zero, dense, random 90 %, one nonzero column), strided and transposed x, bias or none, every activation, 1 and 2
// threads (bit-identical), batches that end in narrower blocks; the layer built from tensors, views and an
// nn::Linear's Vars; clear errors for mismatched shapes; dense_density and worth_sparse.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include <tessera/nn/layers.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/prune/sparse_linear.hpp>

#include "../test_support.hpp"

namespace {
using ts::index_t;
using Mat = ts::Tensor<float, ts::Shape<ts::dyn, ts::dyn>, ts::cpu_threads>;
using Vec = ts::Tensor<float, ts::Shape<ts::dyn>, ts::cpu_threads>;

enum class pattern { random90, empty_rows, all_zero, dense, one_column };
const pattern all_patterns[] = {pattern::random90, pattern::empty_rows, pattern::all_zero, pattern::dense, pattern::one_column};
const char* name(pattern p) {
  switch (p) {
    case pattern::random90: return "random 90%";
    case pattern::empty_rows: return "empty rows";
    case pattern::all_zero: return "all zero";
    case pattern::dense: return "dense";
    case pattern::one_column: return "one nonzero column";
  }
  return "?";
}
const ts::activation all_acts[] = {ts::activation::none, ts::activation::relu, ts::activation::tanh, ts::activation::sigmoid};

/// W [Out, In] row-major with the pattern's zeros; nonzeros uniform in [-1, 1) away from 0.
std::vector<float> make_weight(index_t out, index_t in, pattern p, std::uint64_t seed) {
  ts::Rng rng(seed);
  std::vector<float> w(std::size_t(out * in));
  const index_t col = in / 2;
  for (index_t o = 0; o < out; ++o)
    for (index_t k = 0; k < in; ++k) {
      const double keep = rng.uniform();
      float v = float(rng.uniform() * 2.0 - 1.0);
      if (v == 0.0f) v = 0.25f;
      bool nz = true;
      switch (p) {
        case pattern::random90: nz = keep >= 0.9; break;
        case pattern::empty_rows: nz = o % 3 != 1 && keep >= 0.5; break;
        case pattern::all_zero: nz = false; break;
        case pattern::dense: nz = true; break;
        case pattern::one_column: nz = k == col; break;
      }
      w[std::size_t(o * in + k)] = nz ? v : 0.0f;
    }
  return w;
}

/// The activation in double (the reference).
double act_ref(ts::activation a, double v) {
  switch (a) {
    case ts::activation::none: return v;
    case ts::activation::relu: return v > 0 ? v : 0.0;
    case ts::activation::tanh: return std::tanh(v);
    case ts::activation::sigmoid: return 1.0 / (1.0 + std::exp(-v));
  }
  return v;
}

/// y[b, o] = act(sum_k W[o, k] x[b, k] + bias[o]) by plain loops in double; x element (b, k) at x[b * xrs + k * xcs].
/// scale[b, o] = sum_k |W[o, k] x[b, k]| + |bias[o]| (for the tolerance).
void reference(const std::vector<float>& w, index_t out, index_t in, const float* x, index_t B, index_t xrs, index_t xcs,
               const float* bias, ts::activation a, std::vector<double>& y, std::vector<double>& scale) {
  y.assign(std::size_t(B * out), 0.0);
  scale.assign(std::size_t(B * out), 0.0);
  for (index_t b = 0; b < B; ++b)
    for (index_t o = 0; o < out; ++o) {
      double s = bias ? double(bias[o]) : 0.0, m = bias ? std::fabs(double(bias[o])) : 0.0;
      for (index_t k = 0; k < in; ++k) {
        const double t = double(w[std::size_t(o * in + k)]) * double(x[b * xrs + k * xcs]);
        s += t;
        m += std::fabs(t);
      }
      y[std::size_t(b * out + o)] = act_ref(a, s);
      scale[std::size_t(b * out + o)] = m;
    }
}

/// Every y[b, o] (row stride ldy) within float rounding of the reference: |y - ref| <= 1e-5 (scale + 1).
void check_close(const float* y, index_t ldy, index_t B, index_t out, const std::vector<double>& ref, const std::vector<double>& scale,
                 const std::string& what) {
  index_t bad = 0;
  std::string first;
  for (index_t b = 0; b < B; ++b)
    for (index_t o = 0; o < out; ++o) {
      const double r = ref[std::size_t(b * out + o)], got = double(y[b * ldy + o]);
      if (!(std::fabs(got - r) <= 1e-5 * (scale[std::size_t(b * out + o)] + 1.0))) {
        if (bad++ == 0) first = "(" + std::to_string(b) + ", " + std::to_string(o) + "): " + std::to_string(got) + " vs " + std::to_string(r);
      }
    }
  INFO(what << ": " << bad << " wrong, first at " << first);
  CHECK(bad == 0);
}

std::vector<float> values(index_t n, std::uint64_t seed) {
  ts::Rng rng(seed);
  std::vector<float> v(static_cast<std::size_t>(n));
  for (auto& e : v) e = float(rng.uniform() * 4.0 - 2.0);
  return v;
}
}  // namespace

TEST_CASE("sparse kernel: odd sizes, every pattern, strided and transposed x, 1 and 2 threads", "[prune][sparse]") {
  int combo = 0;
  for (index_t B : {1, 7, 33, 65, 127})
    for (index_t in : {1, 7, 33, 127})
      for (index_t out : {1, 7, 33, 127})
        for (pattern p : all_patterns) {
          ++combo;
          const ts::activation a = all_acts[combo % 4];
          const bool with_bias = combo % 3 != 0;
          const int layout = combo % 3;  // 0 contiguous x, 1 rows 3 apart beyond In (a slice), 2 transposed (column stride B)
          const auto w = make_weight(out, in, p, std::uint64_t(combo));
          const auto csr = ts::detail::csr_from_dense<float>({w.data(), in, 1}, out, in);
          const auto bias = values(out, 99);
          index_t xrs = in, xcs = 1;
          if (layout == 1) xrs = in + 3;
          if (layout == 2) xrs = 1, xcs = B;
          const auto x = values(layout == 1 ? B * (in + 3) : B * in, std::uint64_t(combo) + 1000);
          std::vector<double> ref, scale;
          reference(w, out, in, x.data(), B, xrs, xcs, with_bias ? bias.data() : nullptr, a, ref, scale);
          const index_t ldy = out + 5;  // y rows apart by more than Out
          std::vector<float> y1(std::size_t(B * ldy), -7.0f), y2(std::size_t(B * ldy), -7.0f);
          ts::detail::cpu_sparse_linear<float>(csr, B, {x.data(), xrs, xcs}, with_bias ? bias.data() : nullptr, a, y1.data(), ldy, 1);
          ts::detail::cpu_sparse_linear<float>(csr, B, {x.data(), xrs, xcs}, with_bias ? bias.data() : nullptr, a, y2.data(), ldy, 2,
                                               /*min_parallel_flops=*/0.0);
          const std::string what = "B " + std::to_string(B) + ", In " + std::to_string(in) + ", Out " + std::to_string(out) + ", " +
                                   name(p) + ", act " + std::to_string(int(a)) + (with_bias ? ", bias" : ", no bias") + ", layout " +
                                   std::to_string(layout);
          check_close(y1.data(), ldy, B, out, ref, scale, what + ", 1 thread");
          INFO(what);
          CHECK(std::memcmp(y1.data(), y2.data(), y1.size() * sizeof(float)) == 0);  // same bits; padding left alone
          bool padding_kept = true;
          for (index_t b = 0; b < B; ++b)
            for (index_t o = out; o < ldy; ++o) padding_kept = padding_kept && y1[std::size_t(b * ldy + o)] == -7.0f;
          CHECK(padding_kept);
        }
}

TEST_CASE("sparse kernel: each activation with and without bias, batches ending in narrower blocks", "[prune][sparse]") {
  const index_t in = 127, out = 33;
  const auto w = make_weight(out, in, pattern::random90, 5);
  const auto csr = ts::detail::csr_from_dense<float>({w.data(), in, 1}, out, in);
  const auto bias = values(out, 6);
  std::vector<float> y1;
  for (index_t B : {1, 8, 9, 63, 64, 104, 129, 200, 300, 517})  // from 256 rows 2 threads split the batch
    for (ts::activation a : all_acts)
      for (bool with_bias : {false, true})
        for (int nt : {1, 2}) {  // 1 first
          const auto x = values(B * in, 7);
          std::vector<double> ref, scale;
          reference(w, out, in, x.data(), B, in, 1, with_bias ? bias.data() : nullptr, a, ref, scale);
          std::vector<float> y(std::size_t(B * out));
          ts::detail::cpu_sparse_linear<float>(csr, B, {x.data(), in, 1}, with_bias ? bias.data() : nullptr, a, y.data(), out, nt, 0.0);
          const std::string what = "B " + std::to_string(B) + ", act " + std::to_string(int(a)) + (with_bias ? ", bias" : "") +
                                   ", threads " + std::to_string(nt);
          check_close(y.data(), out, B, out, ref, scale, what);
          if (nt == 1) y1 = y;
          INFO(what);
          CHECK(std::memcmp(y1.data(), y.data(), y.size() * sizeof(float)) == 0);  // 2 threads: the same bits as 1
        }
}

TEST_CASE("csr_from_dense: exact zeros dropped, columns in order, strided source", "[prune][sparse]") {
  // [[0, 2, -0.0], [0, 0, 0], [NaN, 0, 5]] read transposed from its column-major copy
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float colmajor[9] = {0, 0, nan, 2, 0, 0, -0.0f, 0, 5};
  const auto m = ts::detail::csr_from_dense<float>({colmajor, 1, 3}, 3, 3);
  CHECK(m.rows == 3);
  CHECK(m.cols == 3);
  CHECK(m.nnz() == 3);
  CHECK(m.row_ptr == std::vector<index_t>{0, 1, 1, 3});
  CHECK(m.col == std::vector<std::int32_t>{1, 0, 2});
  CHECK(m.val[0] == 2.0f);
  CHECK(std::isnan(m.val[1]));
  CHECK(m.val[2] == 5.0f);
  CHECK(m.density() == Approx(3.0 / 9.0));
  CHECK_THROWS_AS(ts::detail::csr_from_dense<float>({colmajor, 1, 3}, -1, 3), std::invalid_argument);
}

TEST_CASE("sparse_linear layer: tensors, views, Vars, errors", "[prune][sparse]") {
  namespace pr = ts::prune;
  const index_t B = 65, in = 127, out = 33;
  const auto wv = make_weight(out, in, pattern::random90, 11);
  Mat w(wv, {out, in});
  Vec bias(values(out, 12), {out});
  Mat x(values(B * in, 13), {B, in});
  std::vector<double> ref, scale;
  reference(wv, out, in, x.data(), B, in, 1, bias.data(), ts::activation::relu, ref, scale);

  SECTION("from tensors, forward / operator() / forward_into, 1 and 2 threads") {
    for (int nt : {1, 2}) {
      ts::cpu_threads::set_num_threads(nt);
      const pr::sparse_linear<float> fc(w, bias, ts::activation::relu);
      CHECK(fc.in_features() == in);
      CHECK(fc.out_features() == out);
      CHECK(fc.has_bias());
      CHECK(fc.nnz() == index_t(std::count_if(wv.begin(), wv.end(), [](float v) { return v != 0; })));
      CHECK(fc.density() == Approx(pr::dense_density(w)));
      const Mat y = fc.forward(x);
      check_close(y.data(), out, B, out, ref, scale, "forward");
      const Mat y2 = fc(x.view());
      CHECK(std::memcmp(y.data(), y2.data(), std::size_t(y.size()) * sizeof(float)) == 0);
      Mat wide(B, out + 4);
      wide = -1.0f;
      fc.forward_into(x, ts::slice<1>(wide.view(), 2, out + 2));  // a destination of row stride Out + 4
      check_close(wide.data() + 2, out + 4, B, out, ref, scale, "forward_into a slice");
      CHECK(wide(0, 0) == -1.0f);
      CHECK(wide(B - 1, out + 3) == -1.0f);
    }
    ts::cpu_threads::set_num_threads(0);
  }
  SECTION("a strided input: rows of a wider matrix, and a transposed view") {
    const pr::sparse_linear<float> fc(w, bias, ts::activation::relu);
    Mat xw(B, in + 6);
    for (index_t b = 0; b < B; ++b)
      for (index_t k = 0; k < in + 6; ++k) xw(b, k) = k >= 3 && k < in + 3 ? x(b, k - 3) : 1e30f;
    const Mat y = fc(ts::slice<1>(xw.view(), 3, in + 3));
    check_close(y.data(), out, B, out, ref, scale, "slice");
    Mat xt(in, B);
    for (index_t b = 0; b < B; ++b)
      for (index_t k = 0; k < in; ++k) xt(k, b) = x(b, k);
    const Mat yt = fc(ts::transpose(xt.view()));
    check_close(yt.data(), out, B, out, ref, scale, "transposed");
  }
  SECTION("from an nn::Linear's Vars, against ad::linear") {
    ts::Rng rng(3);
    ts::nn::Linear<127, 33>::state<float, ts::cpu_threads> lin(rng);
    auto& wt = lin.weight.mutable_value();
    for (index_t i = 0; i < wt.size(); ++i)
      if (wv[std::size_t(i)] == 0.0f) wt.data()[i] = 0.0f;  // pruned as the pattern says
    CHECK(pr::worth_sparse(lin.weight));
    const pr::sparse_linear<float> fc(lin.weight, lin.bias, ts::activation::tanh);
    const ts::ad::Var<float, 2, ts::cpu_threads> xv(x);
    const auto ys = fc(xv);
    CHECK_FALSE(ys.requires_grad());
    const auto yd = ts::ad::linear(xv, lin.weight, lin.bias, ts::activation::tanh);
    for (index_t i = 0; i < ys.size(); ++i) REQUIRE(ys.value().data()[i] == Approx(yd.value().data()[i]).margin(1e-5));
    const pr::sparse_linear<float> nobias(lin.weight);
    CHECK_FALSE(nobias.has_bias());
    CHECK(nobias.act() == ts::activation::none);
  }
  SECTION("mismatched shapes throw std::invalid_argument naming both shapes") {
    const pr::sparse_linear<float> fc(w, bias);
    Mat bad_x(B, in + 1);
    try {
      (void)fc(bad_x);
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      const std::string m = e.what();
      CHECK(m.find("[65, 128]") != std::string::npos);
      CHECK(m.find("[33, 127]") != std::string::npos);
    }
    Vec bad_bias(out + 1);
    try {
      pr::sparse_linear<float> f2(w, bad_bias);
      FAIL("no exception");
    } catch (const std::invalid_argument& e) {
      const std::string m = e.what();
      CHECK(m.find("[34]") != std::string::npos);
      CHECK(m.find("[33, 127]") != std::string::npos);
    }
    Mat bad_y(B + 1, out);
    CHECK_THROWS_AS(fc.forward_into(x, bad_y), std::invalid_argument);
    Mat yt(out, B);
    CHECK_THROWS_AS(fc.forward_into(x, ts::transpose(yt.view())), std::invalid_argument);  // column stride B
  }
}

TEST_CASE("dense_density and worth_sparse", "[prune][sparse]") {
  namespace pr = ts::prune;
  Mat w(4, 5);
  w = 0.0f;
  CHECK(pr::dense_density(w) == 0.0);
  CHECK(pr::worth_sparse(w));
  w(0, 0) = 1.0f, w(3, 4) = -2.0f, w(2, 1) = std::numeric_limits<float>::quiet_NaN();
  CHECK(pr::dense_density(w) == Approx(3.0 / 20.0));
  CHECK(pr::dense_density(ts::transpose(w.view())) == Approx(3.0 / 20.0));
  CHECK(pr::dense_density(ts::slice<1>(w.view(), 0, 1)) == Approx(1.0 / 4.0));
  for (index_t i = 0; i < 3; ++i) w(1, i) = 1.0f;  // 6 of 20 nonzero: 70 % zero, still worth it
  CHECK(pr::worth_sparse(w));
  w(1, 3) = 1.0f;  // 65 % zero
  CHECK_FALSE(pr::worth_sparse(w));
  Mat empty(0, 3);
  CHECK(pr::dense_density(empty) == 0.0);
}

namespace {
/// Zero every weight of v whose draw falls below `zero` (uniform draws from seed).
template <class V>
void prune_var(V& v, double zero, std::uint64_t seed) {
  ts::Rng rng(seed);
  auto& t = v.mutable_value();
  for (index_t i = 0; i < t.size(); ++i)
    if (rng.uniform() < zero) t.data()[i] = 0.0f;
}
/// max |a - b| <= tol (|b| + 1) over every element.
template <class A, class Bt>
void check_same(const A& a, const Bt& b, double tol) {
  REQUIRE(a.dims() == b.dims());
  index_t bad = 0;
  for (index_t i = 0; i < a.size(); ++i)
    bad += !(std::fabs(double(a.data()[i]) - double(b.data()[i])) <= tol * (std::fabs(double(b.data()[i])) + 1.0));
  CHECK(bad == 0);
}
}  // namespace

TEST_CASE("sparse_inference: a model's pruned Linear layers run sparse, the output is the model's", "[prune][sparse]") {
  namespace nn = ts::nn;
  namespace pr = ts::prune;
  using MLP = nn::Sequential<ts::Shape<ts::dyn, 33>, nn::Linear<33, 127>, nn::ReLU, nn::Linear<127, 65>, nn::Tanh,
                             nn::Linear<65, 7, false>, nn::Sigmoid, nn::Linear<7, 5>>;
  MLP net(4);
  prune_var(net.layer<0>().weight, 0.9, 1);   // sparse, ReLU fused
  prune_var(net.layer<2>().weight, 0.75, 2);  // sparse, Tanh fused
  prune_var(net.layer<4>().weight, 0.95, 3);  // sparse, no bias, Sigmoid fused
  prune_var(net.layer<6>().weight, 0.5, 4);   // stays dense
  net.eval();
  for (int nt : {1, 2}) {
    ts::cpu_threads::set_num_threads(nt);
    pr::sparse_inference fast(net);
    CHECK(fast.num_sparse() == 3);
    CHECK(fast.is_sparse(0));
    CHECK(fast.is_sparse(2));
    CHECK(fast.is_sparse(4));
    CHECK_FALSE(fast.is_sparse(6));
    CHECK_FALSE(fast.is_sparse(1));
    for (index_t B : {1, 7, 65}) {
      ts::Tensor<float, ts::Shape<ts::dyn, 33>, ts::cpu_threads> x(values(B * 33, std::uint64_t(B)), {B, 33});
      check_same(fast.predict(x), net.predict(x), 1e-5);
    }
    pr::sparse_inference strict(net, 0.92);  // only the 95 % layer reaches 92 % zeros
    CHECK(strict.num_sparse() == 1);
    CHECK(strict.is_sparse(4));
    // weights changed after building: rebuild() picks them up
    auto& w0 = net.layer<0>().weight.mutable_value();
    const float saved = w0.data()[5];
    w0.data()[5] = saved == 0.0f ? 0.5f : 2.0f * saved;
    ts::Tensor<float, ts::Shape<ts::dyn, 33>, ts::cpu_threads> x(values(7 * 33, 9), {7, 33});
    fast.rebuild();
    check_same(fast.predict(x), net.predict(x), 1e-5);
    w0.data()[5] = saved;
  }
  ts::cpu_threads::set_num_threads(0);
}

TEST_CASE("sparse_inference: convolution groups run as the model runs them", "[prune][sparse]") {
  namespace nn = ts::nn;
  namespace pr = ts::prune;
  using CNN = nn::Sequential<ts::Shape<ts::dyn, 1, 8, 8>, nn::Conv2d<1, 4, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
                             nn::Flatten, nn::Linear<64, 33>, nn::ReLU, nn::Linear<33, 5>>;
  CNN net(2);
  prune_var(net.layer<4>().weight, 0.85, 5);
  net.eval();
  pr::sparse_inference fast(net);
  CHECK(fast.num_sparse() == 1);
  CHECK(fast.is_sparse(4));
  ts::Tensor<float, ts::Shape<ts::dyn, 1, 8, 8>, ts::cpu_threads> x(values(9 * 64, 3), {9, 1, 8, 8});
  check_same(fast.predict(x), net.predict(x), 1e-5);
}
