// conv2d with one input channel and 3 x 3 taps at stride 1 (kernels/cpu/conv.hpp's direct stencil, taken on AVX2
// and AVX-512 hosts; elsewhere the implicit GEMM) against a plain-loop reference: widths 1 to 33 (one 8-wide step,
// partial steps, several), padding 0, 1, 2, batches 1 and 3, 1, 5 and 33 output channels, 1 and 2 threads (bands of
// rows when there are fewer images than threads), strided input views, a strided destination, and the bias + ReLU
// epilogue and the model's conv + ReLU + max-pool operation (ad::conv2d_relu_maxpool2).
#include <catch2/catch.hpp>

#include <algorithm>
#include <vector>

#include <tessera/nn/sequential.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace ad = tessera::ad;
using ts::dyn;
using ts::index_t;

namespace {
using P = ts::cpu_threads;
using T4 = ts::Tensor<float, ts::dyn_shape_t<4>, P>;

T4 filled(index_t a, index_t b, index_t c, index_t d, int salt) {
  T4 x(a, b, c, d);
  index_t k = 0;
  for (index_t i = 0; i < a; ++i)
    for (index_t j = 0; j < b; ++j)
      for (index_t p = 0; p < c; ++p)
        for (index_t q = 0; q < d; ++q, ++k) x(i, j, p, q) = float(((k * 37 + salt * 11 + (k / 5) * 3) % 19) - 9) / 8.0f;
  return x;
}

// y[n,k,oh,ow] = b[k] + sum_{r,s} x[n, 0, oh - pad + r, ow - pad + s] * w[k, 0, r, s]  (zero outside the input)
template <class X, class W>
std::vector<double> reference(const X& x, const W& w, const std::vector<double>& b, index_t pad, index_t& OH, index_t& OW) {
  const index_t N = x.dims()[0], H = x.dims()[2], Wd = x.dims()[3], K = w.dims()[0];
  OH = H + 2 * pad - 2;
  OW = Wd + 2 * pad - 2;
  std::vector<double> y(std::size_t(N * K * OH * OW));
  for (index_t n = 0; n < N; ++n)
    for (index_t k = 0; k < K; ++k)
      for (index_t oh = 0; oh < OH; ++oh)
        for (index_t ow = 0; ow < OW; ++ow) {
          double acc = b.empty() ? 0.0 : b[std::size_t(k)];
          for (index_t r = 0; r < 3; ++r)
            for (index_t s = 0; s < 3; ++s) {
              const index_t ih = oh - pad + r, iw = ow - pad + s;
              if (ih >= 0 && ih < H && iw >= 0 && iw < Wd) acc += double(x(n, 0, ih, iw)) * double(w(k, 0, r, s));
            }
          y[std::size_t(((n * K + k) * OH + oh) * OW + ow)] = acc;
        }
  return y;
}

template <class Y>
void require_matches(const Y& y, const std::vector<double>& ref, bool relu = false) {
  const auto d = y.dims();
  REQUIRE(std::size_t(d[0] * d[1] * d[2] * d[3]) == ref.size());
  std::size_t i = 0;
  for (index_t a = 0; a < d[0]; ++a)
    for (index_t b = 0; b < d[1]; ++b)
      for (index_t c = 0; c < d[2]; ++c)
        for (index_t e = 0; e < d[3]; ++e, ++i) {
          const double want = relu ? std::max(0.0, ref[i]) : ref[i];
          INFO("at (" << a << ", " << b << ", " << c << ", " << e << ")");
          REQUIRE(double(y(a, b, c, e)) == Approx(want).margin(1e-4));
        }
}
}  // namespace

TEST_CASE("conv2d with one input channel, 3x3, stride 1 matches the definition", "[conv]") {
  for (int threads : {1, 2}) {
    ts::cpu_threads::set_num_threads(threads);
    for (index_t n : {1, 3})
      for (index_t k : {1, 5, 33})
        for (index_t hw : {1, 7, 8, 9, 28, 33})
          for (index_t pad : {0, 1, 2}) {
            if (hw + 2 * pad < 3) continue;
            INFO("threads=" << threads << " N=" << n << " K=" << k << " H=W=" << hw << " pad=" << pad);
            auto x = filled(n, 1, hw, hw + 2, 1);  // W = H + 2: a width unlike the height
            auto w = filled(k, 1, 3, 3, 2);
            T4 y = ts::conv2d(x, w, {.padding = int(pad)});
            index_t OH, OW;
            const auto ref = reference(x, w, {}, pad, OH, OW);
            REQUIRE(y.dims() == ts::dims_t<4>{n, k, OH, OW});
            require_matches(y, ref);
          }
  }
}

TEST_CASE("conv2d with one input channel reads strided views and writes strided planes", "[conv]") {
  ts::cpu_threads::set_num_threads(2);
  auto big = filled(3, 4, 31, 40, 3);
  auto x = ts::slice<3>(ts::slice<1>(big, 2, 3, 1), 1, 39, 2);  // channel 2 only, every other column: 3 x 1 x 31 x 19
  auto wbig = filled(5, 1, 3, 3, 4);
  auto w = ts::permute<0, 1, 3, 2>(wbig);  // transposed kernels
  T4 y = ts::conv2d(x, w, {.padding = 1});
  index_t OH, OW;
  const auto ref = reference(x, w, {}, 1, OH, OW);
  require_matches(y, ref);

  T4 wide(3, 5, OH, 2 * OW);
  wide = 0.0f;
  auto dst = ts::slice<3>(wide, 0, 2 * OW, 2);
  dst = ts::conv2d(x, w, {.padding = 1});
  require_matches(dst, ref);
  for (index_t n = 0; n < 3; ++n)
    for (index_t k = 0; k < 5; ++k)
      for (index_t h = 0; h < OH; ++h)
        for (index_t q = 0; q < OW; ++q) REQUIRE(wide(n, k, h, 2 * q + 1) == 0.0f);
}

TEST_CASE("conv2d with one input channel: bias and ReLU epilogue, and the model's conv + ReLU + 2x2 max-pool", "[conv][fusion]") {
  for (int threads : {1, 2}) {
    ts::cpu_threads::set_num_threads(threads);
    for (index_t n : {1, 3, 8})
      for (index_t hw : {7, 28}) {
        INFO("threads=" << threads << " N=" << n << " H=W=" << hw);
        const index_t K = 32;
        ad::Var<float, 4, P> x(filled(n, 1, hw, hw, 5), false), w(filled(K, 1, 3, 3, 6), false);
        ts::Tensor<float, ts::dyn_shape_t<1>, P> bt(K);
        std::vector<double> bv;
        for (index_t k = 0; k < K; ++k) {
          bt(k) = float(k % 7 - 3) / 4.0f;
          bv.push_back(double(bt(k)));
        }
        ad::Var<float, 1, P> b(bt, false);
        index_t OH, OW;
        const auto ref = reference(x.value(), w.value(), bv, 1, OH, OW);
        ad::no_grad ng;
        auto y = ad::conv2d(x, w, b, {.padding = 1}, ad::activation_c<ad::activation::relu>{});
        require_matches(y.value(), ref, true);
        auto pooled = ad::conv2d_relu_maxpool2(x, w, b, {.padding = 1});
        const auto& pv = pooled.value();
        REQUIRE(pv.dims() == ts::dims_t<4>{n, K, OH / 2, OW / 2});
        for (index_t i = 0; i < n; ++i)
          for (index_t k = 0; k < K; ++k)
            for (index_t h = 0; h < OH / 2; ++h)
              for (index_t q = 0; q < OW / 2; ++q) {
                double m = 0.0;  // ReLU's floor
                for (index_t r = 0; r < 2; ++r)
                  for (index_t s = 0; s < 2; ++s)
                    m = std::max(m, ref[std::size_t(((i * K + k) * OH + 2 * h + r) * OW + 2 * q + s)]);
                REQUIRE(double(pv(i, k, h, q)) == Approx(m).margin(1e-4));
              }
      }
  }
}
