// cuda_conv2d and its gradients (kernels/cuda/conv.hpp, cuDNN) against plain host loops in double: stride 1 and 2,
// padding 0, 1 and 2, dilation 2, groups 2 and 4, non-square kernels, bias and ReLU in every combination,
// float and double; backward data, filter and bias, overwriting and accumulating. Without a GPU the executable
// prints "SKIPPED: no CUDA device" and exits 77, which ctest reports as skipped.
//
// Tolerances: the float descriptors ask for CUDNN_FMA_MATH (no TF32), but cuDNN may pick FFT or Winograd
// algorithms whose error is not bounded element by element, so the float checks allow 1e-4 of sum |x w|
// (TF32 would pass that too, hence the separate exactness test below); double allows 1e-11.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <string>
#include <tessera/kernels/cuda/conv.hpp>
#include <tessera/tessera.hpp>
#include <vector>

namespace ts = tessera;
using ts::index_t;

namespace {

using cuda_test::cuda_ok;
using cuda_test::dbuf;

struct stream_t {
  cudaStream_t s = nullptr;
  stream_t() { cuda_ok(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking), "cudaStreamCreate"); }
  ~stream_t() { cudaStreamDestroy(s); }
};

template <class T>
std::vector<T> values(std::size_t n, std::uint64_t seed) {
  std::uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
  std::vector<T> v(n);
  for (auto& e : v) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    e = T(double(x >> 11) / double(1ull << 53) * 2.0 - 1.0);
  }
  return v;
}

struct config {
  index_t N, C, H, W, K, R, S;
  int stride, pad, dilation, groups;
  index_t OH() const { return ts::conv2d_out_extent(H, R, stride, pad, dilation); }
  index_t OW() const { return ts::conv2d_out_extent(W, S, stride, pad, dilation); }
  std::string str() const {
    return "N" + std::to_string(N) + " C" + std::to_string(C) + " " + std::to_string(H) + "x" + std::to_string(W) + " K" +
           std::to_string(K) + " " + std::to_string(R) + "x" + std::to_string(S) + " stride " + std::to_string(stride) +
           " pad " + std::to_string(pad) + " dilation " + std::to_string(dilation) + " groups " + std::to_string(groups);
  }
};

const config configs[] = {
    {2, 3, 7, 9, 5, 3, 3, 1, 0, 1, 1},    // plain 3x3
    {2, 3, 7, 9, 5, 3, 3, 1, 1, 1, 1},    // padding 1
    {1, 4, 8, 8, 6, 3, 3, 2, 1, 1, 1},    // stride 2
    {2, 3, 7, 8, 4, 3, 3, 2, 0, 1, 1},    // stride 2, no padding, odd extents
    {2, 4, 9, 7, 4, 3, 3, 1, 2, 2, 1},    // dilation 2
    {2, 4, 8, 8, 6, 3, 3, 1, 1, 1, 2},    // groups 2
    {1, 6, 11, 10, 4, 1, 1, 2, 0, 1, 2},  // 1x1, stride 2, groups 2
    {3, 2, 5, 5, 3, 5, 5, 1, 2, 1, 1},    // 5x5, padding 2
    {1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1},    // one element
    {2, 8, 16, 16, 8, 3, 3, 2, 1, 2, 4},  // stride 2, dilation 2, groups 4
    {1, 3, 33, 17, 7, 3, 5, 1, 1, 1, 1},  // 3x5 kernel
    {4, 16, 32, 32, 32, 3, 3, 1, 1, 1, 1},  // a small real layer
};

template <class T>
double rel_tol() {
  return std::is_same_v<T, float> ? 1e-4 : 1e-11;
}

/// Host reference: y = act(conv(x, w) + bias); also returns sum |x w| + |bias| per output in mag.
void host_conv(const config& c, const std::vector<double>& x, const std::vector<double>& w, const double* bias, bool relu,
               std::vector<double>& y, std::vector<double>& mag) {
  const index_t OH = c.OH(), OW = c.OW(), Cg = c.C / c.groups, Kg = c.K / c.groups;
  y.assign(std::size_t(c.N * c.K * OH * OW), 0.0);
  mag.assign(y.size(), 0.0);
  for (index_t n = 0; n < c.N; ++n)
    for (index_t k = 0; k < c.K; ++k)
      for (index_t oh = 0; oh < OH; ++oh)
        for (index_t ow = 0; ow < OW; ++ow) {
          double acc = bias ? bias[k] : 0.0, m = bias ? std::fabs(bias[k]) : 0.0;
          const index_t g = k / Kg;
          for (index_t ci = 0; ci < Cg; ++ci)
            for (index_t r = 0; r < c.R; ++r)
              for (index_t s = 0; s < c.S; ++s) {
                const index_t h = oh * c.stride - c.pad + r * c.dilation, ww = ow * c.stride - c.pad + s * c.dilation;
                if (h < 0 || h >= c.H || ww < 0 || ww >= c.W) continue;
                const double p = x[std::size_t(((n * c.C + g * Cg + ci) * c.H + h) * c.W + ww)] *
                                 w[std::size_t(((k * Cg + ci) * c.R + r) * c.S + s)];
                acc += p;
                m += std::fabs(p);
              }
          const std::size_t i = std::size_t(((n * c.K + k) * OH + oh) * OW + ow);
          y[i] = relu && acc < 0 ? 0.0 : acc;
          mag[i] = m;
        }
}

template <class T>
std::vector<double> widen(const std::vector<T>& v) {
  return std::vector<double>(v.begin(), v.end());
}

}  // namespace

TEMPLATE_TEST_CASE("cuda_conv2d: forward with and without bias and ReLU", "[cuda][conv]", float, double) {
  using T = TestType;
  stream_t st;
  for (const auto& c : configs) {
    const auto x = values<T>(std::size_t(c.N * c.C * c.H * c.W), 1), w = values<T>(std::size_t(c.K * (c.C / c.groups) * c.R * c.S), 2),
               bias = values<T>(std::size_t(c.K), 3);
    dbuf<T> dx(x), dw(w), db(bias);
    const auto xd = widen(x), wd = widen(w), bd = widen(bias);
    for (int mode = 0; mode < 4; ++mode) {
      const bool use_bias = mode & 1, relu = mode & 2;
      dbuf<T> dy{std::size_t(c.N * c.K * c.OH() * c.OW())};  // NaN: the result must not depend on y's old contents
      ts::cuda_conv2d<T>(st.s, dx.p, c.N, c.C, c.H, c.W, dw.p, c.K, c.R, c.S, c.stride, c.pad, c.dilation, c.groups,
                         use_bias ? db.p : nullptr, relu, dy.p);
      const auto y = dy.get(st.s);
      std::vector<double> ref, mag;
      host_conv(c, xd, wd, use_bias ? bd.data() : nullptr, relu, ref, mag);
      INFO(c.str() << (use_bias ? " +bias" : "") << (relu ? " relu" : ""));
      for (std::size_t i = 0; i < y.size(); ++i) {
        const double tol = rel_tol<T>() * (mag[i] + 1e-3);
        if (!(std::fabs(double(y[i]) - ref[i]) <= tol)) {
          INFO("y[" << i << "] = " << double(y[i]) << ", expected " << ref[i]);
          REQUIRE(std::fabs(double(y[i]) - ref[i]) <= tol);
        }
      }
    }
  }
}

TEMPLATE_TEST_CASE("cuda_conv2d: backward data, filter and bias", "[cuda][conv]", float, double) {
  using T = TestType;
  stream_t st;
  for (const auto& c : configs) {
    const index_t OH = c.OH(), OW = c.OW(), Cg = c.C / c.groups, Kg = c.K / c.groups;
    const auto x = values<T>(std::size_t(c.N * c.C * c.H * c.W), 4), w = values<T>(std::size_t(c.K * Cg * c.R * c.S), 5),
               dyv = values<T>(std::size_t(c.N * c.K * OH * OW), 6);
    const auto prev_dx = values<T>(x.size(), 7), prev_dw = values<T>(w.size(), 8), prev_db = values<T>(std::size_t(c.K), 9);
    // Host gradients (double) and their magnitudes.
    std::vector<double> gx(x.size(), 0.0), gw(w.size(), 0.0), gb(std::size_t(c.K), 0.0), mx(x.size(), 0.0),
        mw(w.size(), 0.0), mb(std::size_t(c.K), 0.0);
    for (index_t n = 0; n < c.N; ++n)
      for (index_t k = 0; k < c.K; ++k)
        for (index_t oh = 0; oh < OH; ++oh)
          for (index_t ow = 0; ow < OW; ++ow) {
            const double d = dyv[std::size_t(((n * c.K + k) * OH + oh) * OW + ow)];
            gb[std::size_t(k)] += d;
            mb[std::size_t(k)] += std::fabs(d);
            const index_t g = k / Kg;
            for (index_t ci = 0; ci < Cg; ++ci)
              for (index_t r = 0; r < c.R; ++r)
                for (index_t s = 0; s < c.S; ++s) {
                  const index_t h = oh * c.stride - c.pad + r * c.dilation, ww = ow * c.stride - c.pad + s * c.dilation;
                  if (h < 0 || h >= c.H || ww < 0 || ww >= c.W) continue;
                  const std::size_t xi = std::size_t(((n * c.C + g * Cg + ci) * c.H + h) * c.W + ww);
                  const std::size_t wi = std::size_t(((k * Cg + ci) * c.R + r) * c.S + s);
                  gx[xi] += d * double(w[wi]);
                  mx[xi] += std::fabs(d * double(w[wi]));
                  gw[wi] += d * double(x[xi]);
                  mw[wi] += std::fabs(d * double(x[xi]));
                }
          }
    dbuf<T> dx(x), dw(w), ddy(dyv);
    for (bool acc : {false, true}) {
      INFO(c.str() << (acc ? " accumulate" : " overwrite"));
      auto check = [&](const std::vector<T>& got, const std::vector<double>& want, const std::vector<double>& mag,
                       const std::vector<T>& prev, const char* what) {
        for (std::size_t i = 0; i < got.size(); ++i) {
          const double ref = want[i] + (acc ? double(prev[i]) : 0.0);
          const double tol = rel_tol<T>() * (mag[i] + (acc ? std::fabs(double(prev[i])) : 0.0) + 1e-3);
          if (!(std::fabs(double(got[i]) - ref) <= tol)) {
            INFO(what << "[" << i << "] = " << double(got[i]) << ", expected " << ref);
            REQUIRE(std::fabs(double(got[i]) - ref) <= tol);
          }
        }
      };
      dbuf<T> gdx(x.size()), gdw(w.size()), gdb{std::size_t(c.K)};
      if (acc) {
        gdx.put(prev_dx);
        gdw.put(prev_dw);
        gdb.put(prev_db);
      }
      ts::cuda_conv2d_backward_data<T>(st.s, ddy.p, c.N, c.C, c.H, c.W, dw.p, c.K, c.R, c.S, c.stride, c.pad, c.dilation,
                                       c.groups, gdx.p, acc);
      ts::cuda_conv2d_backward_filter<T>(st.s, dx.p, c.N, c.C, c.H, c.W, ddy.p, c.K, c.R, c.S, c.stride, c.pad, c.dilation,
                                         c.groups, gdw.p, acc);
      ts::cuda_conv2d_backward_bias<T>(st.s, ddy.p, c.N, c.K, OH, OW, gdb.p, acc);
      check(gdx.get(st.s), gx, mx, prev_dx, "dx");
      check(gdw.get(st.s), gw, mw, prev_dw, "dw");
      check(gdb.get(st.s), gb, mb, prev_db, "db");
    }
  }
}

TEST_CASE("cuda_conv2d: float runs in FP32, not TF32", "[cuda][conv]") {
  // x = 1 + 2^-20 is exact in FP32 and rounds to 1 in TF32. A 1x1 convolution over 4 channels with unit weights
  // gives 4 + 2^-18: TF32 would miss it by 8 ulp.
  stream_t st;
  const index_t N = 2, C = 4, H = 5, W = 6, K = 3;
  const float v = 1.0f + std::ldexp(1.0f, -20);
  dbuf<float> dx(std::vector<float>(std::size_t(N * C * H * W), v)), dw(std::vector<float>(std::size_t(K * C), 1.0f)),
      db(std::vector<float>(std::size_t(K), std::ldexp(1.0f, -19))), dy{std::size_t(N * K * H * W)};
  for (bool fused : {false, true}) {
    ts::cuda_conv2d<float>(st.s, dx.p, N, C, H, W, dw.p, K, 1, 1, 1, 0, 1, 1, fused ? db.p : nullptr, fused, dy.p);
    const float want = 4.0f * v + (fused ? std::ldexp(1.0f, -19) : 0.0f);
    for (float y : dy.get(st.s)) REQUIRE(std::fabs(y - want) <= std::ldexp(1.0f, -20));
  }
}

TEST_CASE("cuda_conv2d: plans are cached; which bias + ReLU path ran", "[cuda][conv]") {
  stream_t st;
  namespace cd = ts::cuda_kernels::conv_detail;
  auto& state = cd::global();
  const config c{2, 8, 12, 12, 16, 3, 3, 1, 1, 1, 1};
  const auto x = values<float>(std::size_t(c.N * c.C * c.H * c.W), 11), w = values<float>(std::size_t(c.K * c.C * 9), 12),
             b = values<float>(std::size_t(c.K), 13);
  dbuf<float> dx(x), dw(w), db(b), dy{std::size_t(c.N * c.K * c.OH() * c.OW())};
  ts::cuda_conv2d<float>(st.s, dx.p, c.N, c.C, c.H, c.W, dw.p, c.K, c.R, c.S, 1, 1, 1, 1, db.p, true, dy.p);
  const std::size_t plans = state.plans.size();
  for (int i = 0; i < 3; ++i)
    ts::cuda_conv2d<float>(st.s, dx.p, c.N, c.C, c.H, c.W, dw.p, c.K, c.R, c.S, 1, 1, 1, 1, db.p, true, dy.p);
  CHECK(state.plans.size() == plans);
  cuda_ok(cudaStreamSynchronize(st.s), "cudaStreamSynchronize");
  int fused = 0, unsupported = 0;
  for (auto& [key, p] : state.plans)
    if (key[2] == int(cd::op_kind::forward_fused)) {
      fused += p.fused == cd::fused_state::works;
      unsupported += p.fused == cd::fused_state::unsupported;
    }
  std::printf("cuda_conv2d bias+ReLU: %d configurations ran cudnnConvolutionBiasActivationForward, %d fell back to "
              "cudnnConvolutionForward + tessera's bias/ReLU kernel\n",
              fused, unsupported);
  CHECK(fused + unsupported > 0);
}

TEST_CASE("cuda_conv2d: bad arguments throw", "[cuda][conv]") {
  stream_t st;
  dbuf<float> d(1024);
  CHECK_THROWS_AS(ts::cuda_conv2d<float>(st.s, d.p, 1, 3, 8, 8, d.p, 4, 3, 3, 1, 1, 1, 2, nullptr, false, d.p),
                  ts::shape_error);  // 3 channels in 2 groups
  CHECK_THROWS_AS(ts::cuda_conv2d<float>(st.s, d.p, 1, 2, 2, 2, d.p, 2, 5, 5, 1, 0, 1, 1, nullptr, false, d.p),
                  ts::shape_error);  // kernel larger than the input
  CHECK_THROWS_AS(ts::cuda_conv2d<float>(st.s, d.p, 1, 2, 8, 8, d.p, 2, 3, 3, 0, 0, 1, 1, nullptr, false, d.p),
                  ts::shape_error);  // stride 0
}
