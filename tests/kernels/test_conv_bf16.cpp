// The bf16 convolution kernels (kernels/cpu/conv_bf16.hpp): conv2d, its input gradient and its weight gradient with
// bf16 operands and fp32 results, on every bf16 GEMM path this CPU has and with 1 and 2 threads, against references
// summed in double (plain loops) from the same bf16 values: the only error allowed is fp32 accumulation, 1e-5 times
// the sum of |products| of each element. Odd sizes, stride, padding, dilation, groups (2 and depthwise), asymmetric
// options; the epilogue's visits (each element once, after it is final); accumulate; the fp32 -> bf16 conversion
// against bfloat16(float); the errors.
#include <catch2/catch.hpp>

#include <atomic>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <tessera/expr/conv.hpp>
#include <tessera/kernels/cpu/backend.hpp>
#include <tessera/kernels/cpu/conv_bf16.hpp>

#include "bf16_paths.hpp"
namespace ts = tessera;
using ts::bfloat16;
using ts::index_t;

namespace {

std::vector<ts::bf16_isa> paths() { return bf16_test::paths("test_conv_bf16"); }
using bf16_test::isa_scope;

/// Sets the route of the avx2 path (automatic: conv.hpp's fp32 kernels on widened operands; gemm: im2col + the bf16
/// GEMM), and puts back automatic afterwards.
struct route_scope {
  explicit route_scope(ts::detail::conv_bf16_route r) { ts::detail::conv_bf16_route_setting().store(int(r)); }
  ~route_scope() { ts::detail::conv_bf16_route_setting().store(int(ts::detail::conv_bf16_route::automatic)); }
};
/// The routes to run on a path: both on avx2, only the GEMM elsewhere.
std::vector<ts::detail::conv_bf16_route> routes(ts::bf16_isa isa) {
  if (isa == ts::bf16_isa::avx2) return {ts::detail::conv_bf16_route::automatic, ts::detail::conv_bf16_route::gemm};
  return {ts::detail::conv_bf16_route::gemm};
}

/// One convolution: x [N, C, H, W], w [K, C/groups, R, S], options as PyTorch's Conv2d.
struct conv_case {
  index_t N, C, H, W, K, R, S;
  ts::conv2d_options o;
};

index_t out_extent(index_t in, index_t k, int stride, int pad, int dil) {  // PyTorch's formula, 0 when nothing fits
  const index_t span = in + 2 * pad - dil * (k - 1) - 1;
  return span < 0 ? 0 : span / stride + 1;
}

ts::detail::conv_geometry geometry(const conv_case& c) {
  return {c.N, c.C, c.H, c.W, c.K, c.R, c.S,
          out_extent(c.H, c.R, c.o.stride.h, c.o.padding.h, c.o.dilation.h),
          out_extent(c.W, c.S, c.o.stride.w, c.o.padding.w, c.o.dilation.w),
          c.o.stride, c.o.padding, c.o.dilation, c.o.groups};
}

std::string describe(const conv_case& c) {
  auto p = [](ts::hw v) { return std::to_string(v.h) + "x" + std::to_string(v.w); };
  return "x [" + std::to_string(c.N) + ", " + std::to_string(c.C) + ", " + std::to_string(c.H) + ", " + std::to_string(c.W) +
         "] w [" + std::to_string(c.K) + ", " + std::to_string(c.C / c.o.groups) + ", " + std::to_string(c.R) + ", " +
         std::to_string(c.S) + "] stride " + p(c.o.stride) + " pad " + p(c.o.padding) + " dil " + p(c.o.dilation) +
         " groups " + std::to_string(c.o.groups);
}

std::vector<bfloat16> random_bf16(index_t n, std::mt19937& rng) {
  std::uniform_real_distribution<float> u(-1.0f, 1.0f);
  std::vector<bfloat16> v(static_cast<std::size_t>(n));
  for (auto& e : v) e = bfloat16(u(rng));
  return v;
}

/// The three results in double, with the sum of |products| of each element (the scale of the allowed error).
struct reference {
  std::vector<double> y, ymag, dx, dxmag, dw, dwmag;
  reference(const ts::detail::conv_geometry& g, const std::vector<bfloat16>& x, const std::vector<bfloat16>& w,
            const std::vector<bfloat16>& dy) {
    const index_t Cg = g.C / g.groups, Kg = g.K / g.groups;
    y.assign(std::size_t(g.N * g.K * g.OH * g.OW), 0.0);
    ymag = y;
    dx.assign(std::size_t(g.N * g.C * g.H * g.W), 0.0);
    dxmag = dx;
    dw.assign(std::size_t(g.K * Cg * g.R * g.S), 0.0);
    dwmag = dw;
    for (index_t n = 0; n < g.N; ++n)
      for (index_t k = 0; k < g.K; ++k)
        for (index_t oh = 0; oh < g.OH; ++oh)
          for (index_t ow = 0; ow < g.OW; ++ow) {
            const std::size_t yi = std::size_t(((n * g.K + k) * g.OH + oh) * g.OW + ow);
            for (index_t c = 0; c < Cg; ++c)
              for (index_t r = 0; r < g.R; ++r)
                for (index_t s = 0; s < g.S; ++s) {
                  const index_t ih = oh * g.stride.h - g.pad.h + r * g.dilation.h, iw = ow * g.stride.w - g.pad.w + s * g.dilation.w;
                  if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                  const std::size_t xi = std::size_t(((n * g.C + (k / Kg) * Cg + c) * g.H + ih) * g.W + iw);
                  const std::size_t wi = std::size_t(((k * Cg + c) * g.R + r) * g.S + s);
                  const double xv = float(x[xi]), wv = float(w[wi]), dv = float(dy[yi]);
                  y[yi] += xv * wv;
                  ymag[yi] += std::abs(xv * wv);
                  dx[xi] += dv * wv;
                  dxmag[xi] += std::abs(dv * wv);
                  dw[wi] += dv * xv;
                  dwmag[wi] += std::abs(dv * xv);
                }
          }
  }
};

/// Elements where |got - (base + want)| > 1e-5 * (mag + |base|) + 1e-30 (NaN included).
int mismatches(const std::vector<float>& got, const std::vector<double>& want, const std::vector<double>& mag, double base) {
  int bad = 0;
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::abs(double(got[i]) - (base + want[i])) <= 1e-5 * (mag[i] + std::abs(base)) + 1e-30)) ++bad;
  return bad;
}

/// Records every visit of the epilogue: how many times each element of y was visited, and its value then.
struct recorder {
  static constexpr bool active = true;
  const ts::detail::conv_geometry* g;
  const float* y;
  std::atomic<int>* visits;
  float* seen;
  std::atomic<int>* out_of_range;
  void operator()(index_t n, index_t k0, index_t krows, index_t p0, index_t pcols) const {
    const index_t P = g->OH * g->OW;
    if (n < 0 || n >= g->N || k0 < 0 || krows < 0 || k0 + krows > g->K || p0 < 0 || pcols < 0 || p0 + pcols > P) {
      out_of_range->fetch_add(1);
      return;
    }
    for (index_t k = k0; k < k0 + krows; ++k)
      for (index_t p = p0; p < p0 + pcols; ++p) {
        const std::size_t i = std::size_t((n * g->K + k) * P + p);
        visits[i].fetch_add(1);
        seen[i] = y[i];
      }
  }
};

/// Runs the three kernels of one convolution on every path, with 1 and 2 threads, and checks them.
void check_case(const conv_case& cc, std::uint32_t seed) {
  const auto g = geometry(cc);
  std::mt19937 rng(seed);
  const auto x = random_bf16(g.N * g.C * g.H * g.W, rng), w = random_bf16(g.K * (g.C / g.groups) * g.R * g.S, rng),
             dy = random_bf16(g.N * g.K * g.OH * g.OW, rng);
  const reference ref(g, x, w, dy);
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (const auto isa : paths())
    for (const auto route : routes(isa))
      for (int threads : {1, 2}) {
        isa_scope scope(isa);
        route_scope rs(route);
        INFO(describe(cc) << " -> y " << g.OH << "x" << g.OW << ", path " << ts::bf16_isa_name(isa)
                          << (route == ts::detail::conv_bf16_route::gemm ? " (im2col + GEMM)" : "") << ", threads " << threads);
        // forward, without and with the epilogue (y starts as NaN: every element must be written)
        std::vector<float> y(ref.y.size(), nan);
        ts::detail::cpu_conv2d_bf16(g, x.data(), w.data(), y.data(), threads);
        CHECK(mismatches(y, ref.y, ref.ymag, 0.0) == 0);
        std::fill(y.begin(), y.end(), nan);
        std::vector<std::atomic<int>> visits(y.size());
        std::vector<float> seen(y.size(), nan);
        std::atomic<int> out_of_range{0};
        ts::detail::cpu_conv2d_bf16(g, x.data(), w.data(), y.data(), threads, recorder{&g, y.data(), visits.data(), seen.data(), &out_of_range});
        CHECK(mismatches(y, ref.y, ref.ymag, 0.0) == 0);
        CHECK(out_of_range.load() == 0);
        int not_once = 0, not_final = 0;
        for (std::size_t i = 0; i < y.size(); ++i) {
          not_once += visits[i].load() != 1;
          not_final += std::bit_cast<std::uint32_t>(seen[i]) != std::bit_cast<std::uint32_t>(y[i]);
        }
        CHECK(not_once == 0);
        CHECK(not_final == 0);
        // backward data and weight: overwrite (a sentinel that must vanish) and accumulate (onto 0.5)
        for (bool acc : {false, true}) {
          INFO("accumulate " << acc);
          const float start = acc ? 0.5f : 7.0f;
          std::vector<float> dx(ref.dx.size(), start), dw(ref.dw.size(), start);
          ts::detail::cpu_conv2d_bf16_backward_data(g, dy.data(), w.data(), dx.data(), acc, threads);
          ts::detail::cpu_conv2d_bf16_backward_weight(g, x.data(), dy.data(), dw.data(), acc, threads);
          CHECK(mismatches(dx, ref.dx, ref.dxmag, acc ? 0.5 : 0.0) == 0);
          CHECK(mismatches(dw, ref.dw, ref.dwmag, acc ? 0.5 : 0.0) == 0);
        }
      }
}

}  // namespace

TEST_CASE("conv2d_bf16: odd sizes, stride, padding, dilation, asymmetric options", "[conv_bf16]") {
  const std::vector<conv_case> cases = {
      {1, 1, 1, 1, 1, 1, 1, {}},
      {3, 3, 7, 13, 7, 3, 3, {.padding = 1}},
      {1, 7, 13, 13, 33, 5, 5, {.stride = 2, .padding = 2}},
      {3, 7, 13, 7, 33, 3, 5, {.stride = {2, 1}, .padding = {1, 2}, .dilation = {2, 1}}},
      {1, 3, 13, 13, 7, 3, 3, {.padding = 2, .dilation = 2}},
      {3, 1, 7, 13, 1, 5, 3, {.stride = {1, 2}, .padding = {0, 1}}},
      {1, 3, 1, 7, 7, 3, 5, {.padding = {1, 2}}},     // one input row: only the middle tap row reads it
      {3, 7, 7, 1, 33, 1, 1, {.stride = 2}},          // 1 x 1 taps, stride 2
      {1, 3, 13, 7, 7, 5, 3, {.stride = 2, .dilation = 2}},
      {3, 1, 28, 28, 32, 3, 3, {.padding = 1}},       // SimpleCNN's first layer (3 images)
      {3, 32, 14, 14, 64, 3, 3, {.padding = 1}},      // its second (2 threads: images split)
      {1, 16, 30, 30, 40, 3, 3, {.padding = 1}},      // one image, 2 threads: threads inside the GEMMs
      {1, 7, 80, 80, 7, 5, 5, {.padding = 2}},        // col beyond 2^20 elements: two blocks of output rows
      {2, 7, 80, 80, 7, 5, 5, {.padding = 2}},        // the same, images split between 2 threads
      {2, 3, 7, 7, 7, 3, 3, {.padding = {3, 0}}},     // rows of taps entirely in the padding
  };
  std::uint32_t seed = 1;
  for (const auto& c : cases) check_case(c, seed++);
}

TEST_CASE("conv2d_bf16: groups (2, depthwise, channel multiplier)", "[conv_bf16]") {
  const std::vector<conv_case> cases = {
      {3, 6, 7, 13, 14, 3, 3, {.padding = 1, .groups = 2}},
      {1, 2, 13, 7, 2, 5, 3, {.stride = {2, 1}, .padding = {2, 0}, .groups = 2}},
      {3, 7, 13, 13, 7, 3, 3, {.padding = 1, .groups = 7}},                  // depthwise
      {1, 7, 13, 13, 14, 5, 5, {.stride = 2, .padding = 2, .dilation = {1, 2}, .groups = 7}},  // depthwise, multiplier 2
      {3, 32, 14, 14, 32, 3, 3, {.padding = 1, .groups = 32}},               // depthwise, 2 threads
      {2, 8, 20, 20, 64, 3, 3, {.padding = 1, .groups = 2}},                 // groups, 2 threads
  };
  std::uint32_t seed = 100;
  for (const auto& c : cases) check_case(c, seed++);
}

TEST_CASE("conv2d_bf16: random sweep over the odd sizes and options", "[conv_bf16]") {
  std::mt19937 rng(2026);
  auto pick = [&](std::initializer_list<index_t> v) { return *(v.begin() + std::uniform_int_distribution<std::size_t>(0, v.size() - 1)(rng)); };
  const ts::hw strides[] = {1, 2, {2, 1}, {1, 2}}, pads[] = {0, 1, 2, {1, 0}, {0, 2}}, dils[] = {1, 2, {2, 1}};
  int done = 0;
  for (int tries = 0; done < 40 && tries < 1000; ++tries) {
    conv_case c{pick({1, 3}), pick({1, 3, 7}), pick({1, 7, 13}), pick({1, 7, 13}), pick({1, 7, 33}), pick({1, 3, 5}), pick({1, 3, 5}), {}};
    c.o.stride = strides[rng() % 4];
    c.o.padding = pads[rng() % 5];
    c.o.dilation = dils[rng() % 3];
    if (rng() % 4 == 0) {  // depthwise (multiplier 1 or 2)
      c.o.groups = int(c.C);
      c.K = c.C * pick({1, 2});
    }
    const auto g = geometry(c);
    if (g.OH < 1 || g.OW < 1) continue;
    check_case(c, 1000 + std::uint32_t(tries));
    ++done;
  }
  CHECK(done == 40);
}

TEST_CASE("conv2d_bf16: empty extents", "[conv_bf16]") {
  for (int run = 0; run < 4; ++run) {  // 1 and 2 threads, both routes of the avx2 path
    const int threads = 1 + run % 2;
    route_scope rs(ts::detail::conv_bf16_route(run / 2));
    // no input channels: y = 0, the epilogue still visits every element once; the gradients are 0
    {
      const conv_case c{2, 0, 5, 5, 3, 3, 3, {.padding = 1}};
      const auto g = geometry(c);
      std::vector<float> y(std::size_t(g.N * g.K * g.OH * g.OW), 9.0f), seen(y.size(), 0.0f), dw;
      std::vector<std::atomic<int>> visits(y.size());
      std::atomic<int> oor{0};
      const bfloat16 dummy[1] = {};
      ts::detail::cpu_conv2d_bf16(g, dummy, dummy, y.data(), threads, recorder{&g, y.data(), visits.data(), seen.data(), &oor});
      for (std::size_t i = 0; i < y.size(); ++i) {
        CHECK(y[i] == 0.0f);
        CHECK(visits[i].load() == 1);
      }
      CHECK(oor.load() == 0);
    }
    // no output channels, no images, a kernel larger than the padded input (empty output): nothing to do, dx = 0
    for (const conv_case c : {conv_case{2, 3, 5, 5, 0, 3, 3, {}}, conv_case{0, 3, 5, 5, 4, 3, 3, {}}, conv_case{2, 3, 2, 5, 4, 5, 3, {}}}) {
      const auto g = geometry(c);
      std::vector<bfloat16> x(std::size_t(g.N * g.C * g.H * g.W) + 1, bfloat16(1.0f)), w(std::size_t(g.K * g.C * g.R * g.S) + 1, bfloat16(1.0f)),
          dy(std::size_t(g.N * g.K * g.OH * g.OW) + 1, bfloat16(1.0f));
      std::vector<float> y(dy.size(), 3.0f), dx(x.size(), 3.0f), dw(w.size(), 3.0f);
      ts::detail::cpu_conv2d_bf16(g, x.data(), w.data(), y.data(), threads);
      ts::detail::cpu_conv2d_bf16_backward_data(g, dy.data(), w.data(), dx.data(), false, threads);
      ts::detail::cpu_conv2d_bf16_backward_weight(g, x.data(), dy.data(), dw.data(), false, threads);
      CHECK(y.back() == 3.0f);  // past the end: untouched
      for (std::size_t i = 0; i + 1 < dx.size(); ++i) CHECK(dx[i] == 0.0f);
      for (std::size_t i = 0; i + 1 < dw.size(); ++i) CHECK(dw[i] == 0.0f);
      CHECK(dx.back() == 3.0f);
      CHECK(dw.back() == 3.0f);
    }
  }
}

TEST_CASE("conv2d_bf16: the backend's entry points", "[conv_bf16]") {
  const conv_case c{3, 6, 13, 11, 14, 3, 3, {.stride = {1, 2}, .padding = 1, .groups = 2}};
  const auto g = geometry(c);
  std::mt19937 rng(7);
  const auto x = random_bf16(g.N * g.C * g.H * g.W, rng), w = random_bf16(g.K * (g.C / g.groups) * g.R * g.S, rng),
             dy = random_bf16(g.N * g.K * g.OH * g.OW, rng);
  const reference ref(g, x, w, dy);
  std::vector<float> y(ref.y.size()), y1(ref.y.size()), dx(ref.dx.size(), 0.5f), dx1(dx), dw(ref.dw.size(), 0.5f), dw1(dw);
  // backend<cpu> runs the kernels with one thread: the same bits as the kernels called with 1
  ts::detail::cpu_conv2d_bf16(g, x.data(), w.data(), y1.data(), 1);
  ts::detail::cpu_conv2d_bf16_backward_data(g, dy.data(), w.data(), dx1.data(), true, 1);
  ts::detail::cpu_conv2d_bf16_backward_weight(g, x.data(), dy.data(), dw1.data(), true, 1);
  std::vector<std::atomic<int>> visits(y.size());
  std::vector<float> seen(y.size());
  std::atomic<int> oor{0};
  ts::backend<ts::cpu>::conv2d_bf16(g, x.data(), w.data(), y.data(), recorder{&g, y.data(), visits.data(), seen.data(), &oor});
  ts::backend<ts::cpu>::conv2d_bf16_backward_data(g, dy.data(), w.data(), dx.data(), true);
  ts::backend<ts::cpu>::conv2d_bf16_backward_weight(g, x.data(), dy.data(), dw.data(), true);
  CHECK(y == y1);
  CHECK(dx == dx1);
  CHECK(dw == dw1);
  for (std::size_t i = 0; i < y.size(); ++i) CHECK(visits[i].load() == 1);
  // backend<cpu_threads>: against the reference
  ts::backend<ts::cpu_threads>::conv2d_bf16(g, x.data(), w.data(), y.data());
  ts::backend<ts::cpu_threads>::conv2d_bf16_backward_data(g, dy.data(), w.data(), dx.data(), false);
  ts::backend<ts::cpu_threads>::conv2d_bf16_backward_weight(g, x.data(), dy.data(), dw.data(), false);
  CHECK(mismatches(y, ref.y, ref.ymag, 0.0) == 0);
  CHECK(mismatches(dx, ref.dx, ref.dxmag, 0.0) == 0);
  CHECK(mismatches(dw, ref.dw, ref.dwmag, 0.0) == 0);
  // to_bf16
  const float f[3] = {1.0f, 1.00390625f, -3.5f};
  bfloat16 b[3];
  ts::backend<ts::cpu_threads>::to_bf16(f, b, 3);
  CHECK(b[0].bits == 0x3f80);
  CHECK(b[1].bits == 0x3f80);
  CHECK(b[2].bits == 0xc060);
}

TEST_CASE("conv2d_bf16: the avx2 path's route (widen to fp32 or im2col + GEMM)", "[conv_bf16]") {
  using ts::detail::conv_bf16_widens;
  const auto l1 = geometry({64, 1, 28, 28, 32, 3, 3, {.padding = 1}}), l2 = geometry({64, 32, 14, 14, 64, 3, 3, {.padding = 1}});
  const auto pw = geometry({8, 64, 28, 28, 64, 1, 1, {}}), dwise = geometry({64, 32, 14, 14, 32, 3, 3, {.padding = 1, .groups = 32}});
  {
    isa_scope scope(ts::bf16_isa::avx2);
    CHECK(conv_bf16_widens(l1, false));   // im2col gathers ~9x the elements widened
    CHECK(!conv_bf16_widens(l1, true));   // weight gradient: 0.27x (dy is large, the taps few)
    CHECK(conv_bf16_widens(l2, false));
    CHECK(conv_bf16_widens(l2, true));    // 3x
    CHECK(!conv_bf16_widens(pw, false));  // 1 x 1: im2col is a copy
    CHECK(!conv_bf16_widens(pw, true));
    CHECK(conv_bf16_widens(dwise, false));
    CHECK(!conv_bf16_widens(dwise, true));  // groups: the GEMM
    route_scope rs(ts::detail::conv_bf16_route::gemm);
    CHECK(!conv_bf16_widens(l2, false));
    CHECK(!conv_bf16_widens(l2, true));
  }
  isa_scope scope(ts::bf16_isa::portable);
  CHECK(!conv_bf16_widens(l2, false));
}

TEST_CASE("conv2d_bf16: errors name the shapes", "[conv_bf16]") {
  const std::vector<bfloat16> buf(4096, bfloat16(1.0f));
  std::vector<float> out(4096);
  auto all_throw = [&](ts::detail::conv_geometry g, const std::string& part) {
    INFO("expecting: " << part);
    auto has = [&](auto&& f) {
      try {
        f();
      } catch (const ts::shape_error& e) {
        const std::string m = e.what();
        return m.find(part) != std::string::npos && m.find("x [") != std::string::npos && m.find("-> y [") != std::string::npos;
      }
      return false;
    };
    CHECK(has([&] { ts::detail::cpu_conv2d_bf16(g, buf.data(), buf.data(), out.data(), 1); }));
    CHECK(has([&] { ts::detail::cpu_conv2d_bf16_backward_data(g, buf.data(), buf.data(), out.data(), false, 1); }));
    CHECK(has([&] { ts::detail::cpu_conv2d_bf16_backward_weight(g, buf.data(), buf.data(), out.data(), false, 1); }));
  };
  auto g = geometry({1, 4, 5, 5, 6, 3, 3, {.groups = 2}});
  auto bad = g;
  bad.N = -1;
  all_throw(bad, "x [-1, 4, 5, 5]");
  bad = g;
  bad.K = -2;
  all_throw(bad, "extents must be >= 0");
  bad = g;
  bad.C = 3;  // 3 channels in 2 groups
  all_throw(bad, "must be multiples of groups (2)");
  bad = g;
  bad.K = 5;
  all_throw(bad, "output channels (5)");
  bad = g;
  bad.OH = 4;
  all_throw(bad, "the output is 3x3");
  bad = g;
  bad.stride = ts::hw{0, 1};
  all_throw(bad, "stride >= 1");
}

TEST_CASE("to_bf16: round to nearest even, as bfloat16(float)", "[conv_bf16]") {
  const std::uint32_t special[] = {
      0x00000000u, 0x80000000u, 0x3f800000u,
      0x3f808000u, 0x3f818000u, 0xbf808000u, 0xbf818000u,  // ties: to the even one, both signs
      0x3f808001u, 0x3f807fffu,                             // just above and below a tie
      0x00000001u, 0x00008000u, 0x00018000u, 0x007fffffu, 0x80008000u, 0x80018000u,  // denormals and their ties
      0x7f7fffffu, 0xff7fffffu, 0x7f7f8000u,                 // the largest floats round to infinity
      0x7f800000u, 0xff800000u,                              // infinities
      0x7fc00000u, 0x7f800001u, 0xff800001u, 0x7fffffffu, 0x7f810000u};  // NaNs (one that rounding would make infinity)
  const std::uint16_t expected[] = {0x0000, 0x8000, 0x3f80, 0x3f80, 0x3f82, 0xbf80, 0xbf82, 0x3f81, 0x3f80, 0x0000, 0x0000,
                                    0x0002, 0x0080, 0x8000, 0x8002, 0x7f80, 0xff80, 0x7f80, 0x7f80, 0xff80, 0x7fc0, 0x7fc0,
                                    0xffc0, 0x7fff, 0x7fc1};
  constexpr std::size_t ns = sizeof(special) / sizeof(special[0]);
  static_assert(ns == sizeof(expected) / sizeof(expected[0]));
  std::vector<float> src(ns);
  for (std::size_t i = 0; i < ns; ++i) src[i] = std::bit_cast<float>(special[i]);
  std::vector<bfloat16> dst(ns + 1, bfloat16(42.0f));
  ts::detail::cpu_to_bf16(src.data(), dst.data(), index_t(ns), 1);
  for (std::size_t i = 0; i < ns; ++i) {
    INFO("input 0x" << std::hex << special[i]);
    CHECK(dst[i].bits == expected[i]);
    CHECK(dst[i].bits == bfloat16(src[i]).bits);
  }
  CHECK(dst[ns].bits == bfloat16(42.0f).bits);  // past the end: untouched
  // many random bit patterns (every class of float), with 1 and 2 threads, from an odd offset and of an odd length
  std::mt19937 rng(5);
  const index_t n = (index_t(1) << 17) + 37;
  std::vector<float> big(std::size_t(n + 3));
  for (auto& v : big) v = std::bit_cast<float>(std::uint32_t(rng()));
  for (int threads : {1, 2}) {
    INFO("threads " << threads);
    std::vector<bfloat16> out(std::size_t(n + 1), bfloat16(42.0f));
    ts::detail::cpu_to_bf16(big.data() + 3, out.data(), n, threads);
    index_t bad = 0;
    for (index_t i = 0; i < n; ++i) bad += out[std::size_t(i)].bits != bfloat16(big[std::size_t(i + 3)]).bits;
    CHECK(bad == 0);
    CHECK(out[std::size_t(n)].bits == bfloat16(42.0f).bits);
  }
  ts::detail::cpu_to_bf16(src.data(), dst.data(), 0, 2);  // n = 0: nothing written
  CHECK(dst[0].bits == expected[0]);
}
