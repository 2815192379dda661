// Every threaded kernel gives its result whatever team OpenMP hands it: the team asked for, a smaller one (dynamic
// adjustment with more threads asked for than there are processors; OMP_THREAD_LIMIT, see tests/CMakeLists.txt), a
// team of one inside the caller's own parallel region (nesting inactive), and nested teams inside it (nesting
// active). References are plain loops, or where noted the same computation on one thread: cpu_threads with one
// thread runs the cpu policy's code path, which the other test files check against plain loops; here only the
// split between threads is under test.
#include <catch2/catch.hpp>

#include <array>
#include <cmath>
#include <cstdint>
#include <functional>
#include <vector>

#include <tessera/autodiff/nn_ops.hpp>
#include <tessera/autodiff/rnn_ops.hpp>
#include <tessera/kernels/cpu/conv.hpp>
#include <tessera/kernels/cpu/gemm.hpp>
#include <tessera/kernels/cpu/gemm_s8.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/quant/qconv.hpp>
#include <tessera/quant/qlstm.hpp>
#include <tessera/tessera.hpp>

#if defined(_OPENMP)
#include <omp.h>
#endif

namespace ts = tessera;
namespace ad = tessera::ad;
namespace nn = tessera::nn;
namespace q = tessera::quant;
using ts::dyn;
using ts::index_t;
using ts::Shape;

namespace {
using result = std::vector<double>;

/// A small exact value for position k (multiples of 1/8 in [-1, 1]): float sums of their products stay exact.
float val(index_t k, int salt) { return float(((k * 37 + salt * 11 + (k / 5) * 3) % 17) - 8) / 8.0f; }

/// OpenMP's settings as they were, restored at the end of a test (and cpu_threads' count set back to 2).
struct omp_restore {
#if defined(_OPENMP)
  int dynamic = omp_get_dynamic(), levels = omp_get_max_active_levels();
  ~omp_restore() {
    omp_set_dynamic(dynamic);
    omp_set_max_active_levels(levels);
    ts::cpu_threads::set_num_threads(2);
  }
#endif
};

void require_close(const result& got, const result& want, double tol, const char* what) {
  INFO(what);
  REQUIRE(got.size() == want.size());
  for (std::size_t i = 0; i < got.size(); ++i)
    if (!(std::abs(got[i] - want[i]) <= tol * (1 + std::abs(want[i])))) {
      INFO("element " << i);
      REQUIRE(got[i] == Approx(want[i]));
    }
}

/// Runs f(nt) under every team setting and checks each result against want. f computes from scratch into its own
/// outputs (two calls may run at once, one on each thread of the caller's region); cpu_threads' count is set to nt
/// before each run.
void under_every_team(const result& want, double tol, const std::function<result(int)>& f) {
  omp_restore restore;
  ts::cpu_threads::set_num_threads(3);
  require_close(f(3), want, tol, "the team asked for (3 threads)");
#if defined(_OPENMP)
  {
    omp_set_dynamic(1);  // the runtime may give fewer threads, and does when asked for more than there are processors
    const int many = 4 * omp_get_num_procs() + 1;
    ts::cpu_threads::set_num_threads(many);
    require_close(f(many), want, tol, "dynamic teams, more threads asked for than there are processors");
    omp_set_dynamic(restore.dynamic);
  }
  for (const int levels : {1, 2}) {  // 1: teams of one inside the caller's region; 2: nested teams
    omp_set_max_active_levels(levels);
    ts::cpu_threads::set_num_threads(3);
    std::vector<result> got(2);
    int outer = 0;
#pragma omp parallel num_threads(2)
    {
#pragma omp single
      outer = omp_get_num_threads();
      got[std::size_t(omp_get_thread_num())] = f(3);
    }
    for (int t = 0; t < outer; ++t) {
      INFO("inside the caller's parallel region, thread " << t << ", max active levels " << levels);
      require_close(got[std::size_t(t)], want, tol, "nested");
    }
  }
#endif
}

// ---- GEMM -------------------------------------------------------------------------------------------------------

/// C = A * B by plain loops, A(i, k) = a[i * ars + k * acs].
result gemm_ref(index_t M, index_t N, index_t K, const std::vector<float>& a, index_t ars, index_t acs, const std::vector<float>& b,
                index_t brs, index_t bcs) {
  result c(std::size_t(M * N), 0.0);
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      double s = 0;
      for (index_t k = 0; k < K; ++k) s += double(a[std::size_t(i * ars + k * acs)]) * double(b[std::size_t(k * brs + j * bcs)]);
      c[std::size_t(i * N + j)] = s;
    }
  return c;
}

void check_gemm(index_t M, index_t N, index_t K, bool a_transposed, bool b_transposed, bool prepacked) {
  INFO("M=" << M << " N=" << N << " K=" << K << " A^T " << a_transposed << " B^T " << b_transposed << " prepacked " << prepacked);
  std::vector<float> a(std::size_t(M * K)), b(std::size_t(K * N));
  for (std::size_t i = 0; i < a.size(); ++i) a[i] = val(index_t(i), 1);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = val(index_t(i), 2);
  const ts::detail::mat_ref<float> am{a.data(), a_transposed ? 1 : K, a_transposed ? M : 1};
  const ts::detail::mat_ref<float> bm{b.data(), b_transposed ? 1 : N, b_transposed ? K : 1};
  const auto want = gemm_ref(M, N, K, a, am.rs, am.cs, b, bm.rs, bm.cs);
  const ts::detail::packed_b<float> pb(bm, K, N);
  under_every_team(want, 1e-6, [&](int nt) {
    std::vector<float> c(std::size_t(M * N), -1.0f);
    ts::detail::cpu_gemm<float>(M, N, K, am, bm, c.data(), N, false, nt, ts::detail::no_epilogue{}, prepacked ? &pb : nullptr);
    return result(c.begin(), c.end());
  });
}
}  // namespace

TEST_CASE("GEMM: skinny, small, packed-B (A in place and packed, several N blocks) and prepacked paths with any team",
          "[omp][gemm]") {
  check_gemm(5, 3000, 200, false, false, false);   // skinny, rows of B contiguous
  check_gemm(6, 3000, 200, false, true, false);    // skinny, dot products
  check_gemm(150, 160, 120, false, false, false);  // small: tiles read in place
  check_gemm(300, 270, 700, false, false, false);  // packed B, A read in place
  check_gemm(300, 270, 700, true, false, false);   // packed B and packed A (barriers)
  check_gemm(40, 5000, 64, true, false, false);    // several N blocks
  check_gemm(90, 200, 300, false, false, true);    // B packed beforehand
}

// ---- convolution ------------------------------------------------------------------------------------------------

namespace {
struct conv_case {
  index_t N, C, H, K, R, stride, pad;
};

ts::detail::conv_geometry geometry(const conv_case& c) {
  const index_t O = (c.H + 2 * c.pad - (c.R - 1) - 1) / c.stride + 1;
  return {c.N, c.C, c.H, c.H, c.K, c.R, c.R, O, O, c.stride, c.pad, 1, 1};
}

/// Plain loops: y = conv(x, w), dx and dw for output gradient dy.
void conv_ref(const ts::detail::conv_geometry& g, const std::vector<float>& x, const std::vector<float>& w, const std::vector<float>& dy,
              result& y, result& dx, result& dw) {
  y.assign(std::size_t(g.N * g.K * g.OH * g.OW), 0.0);
  dx.assign(x.size(), 0.0);
  dw.assign(w.size(), 0.0);
  for (index_t n = 0; n < g.N; ++n)
    for (index_t k = 0; k < g.K; ++k)
      for (index_t oh = 0; oh < g.OH; ++oh)
        for (index_t ow = 0; ow < g.OW; ++ow) {
          const std::size_t o = std::size_t(((n * g.K + k) * g.OH + oh) * g.OW + ow);
          for (index_t c = 0; c < g.C; ++c)
            for (index_t r = 0; r < g.R; ++r)
              for (index_t s = 0; s < g.S; ++s) {
                const index_t ih = oh * g.stride.h - g.pad.h + r, iw = ow * g.stride.w - g.pad.w + s;
                if (ih < 0 || ih >= g.H || iw < 0 || iw >= g.W) continue;
                const std::size_t xi = std::size_t(((n * g.C + c) * g.H + ih) * g.W + iw);
                const std::size_t wi = std::size_t(((k * g.C + c) * g.R + r) * g.S + s);
                y[o] += double(x[xi]) * double(w[wi]);
                dx[xi] += double(dy[o]) * double(w[wi]);
                dw[wi] += double(dy[o]) * double(x[xi]);
              }
        }
}

void check_conv(const conv_case& cc) {
  const auto g = geometry(cc);
  INFO("N=" << cc.N << " C=" << cc.C << " H=" << cc.H << " K=" << cc.K << " R=" << cc.R << " stride=" << cc.stride);
  std::vector<float> x(std::size_t(g.N * g.C * g.H * g.W)), w(std::size_t(g.K * g.C * g.R * g.S)),
      dy(std::size_t(g.N * g.K * g.OH * g.OW));
  for (std::size_t i = 0; i < x.size(); ++i) x[i] = val(index_t(i), 3);
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = val(index_t(i), 4);
  for (std::size_t i = 0; i < dy.size(); ++i) dy[i] = val(index_t(i), 5);
  result y, dx, dw;
  conv_ref(g, x, w, dy, y, dx, dw);
  const index_t xs[4] = {g.C * g.H * g.W, g.H * g.W, g.W, 1}, ws[4] = {g.C * g.R * g.S, g.R * g.S, g.S, 1};
  under_every_team(y, 1e-6, [&](int nt) {
    std::vector<float> out(dy.size(), -1.0f);
    ts::detail::cpu_conv2d<float>(g, x.data(), xs, w.data(), ws, out.data(), g.K * g.OH * g.OW, g.OH * g.OW, nt);
    return result(out.begin(), out.end());
  });
  under_every_team(dx, 1e-6, [&](int nt) {
    std::vector<float> out(x.size(), -1.0f);
    ts::detail::cpu_conv2d_backward_data<float>(g, dy.data(), w.data(), out.data(), nt);
    return result(out.begin(), out.end());
  });
  under_every_team(dw, 1e-6, [&](int nt) {
    std::vector<float> out(w.size(), -1.0f);
    ts::detail::cpu_conv2d_backward_weight<float>(g, x.data(), dy.data(), out.data(), nullptr, false, nt);
    return result(out.begin(), out.end());
  });
}
}  // namespace

TEST_CASE("conv2d forward, backward data (stride 1 and 2) and backward weight with any team", "[omp][conv]") {
  check_conv({5, 6, 15, 20, 3, 1, 1});
  check_conv({4, 5, 17, 12, 3, 2, 1});
  check_conv({4, 64, 8, 64, 3, 1, 1});  // per-thread partial weight gradients of 150 KB
}

// ---- int8 -------------------------------------------------------------------------------------------------------

TEST_CASE("int8 GEMM (column and row splits) and int8 convolution (with its 2x2 pool) with any team", "[omp][quant]") {
  for (const auto& mnk : {std::array<index_t, 3>{64, 640, 320}, std::array<index_t, 3>{1000, 48, 256}}) {
    const index_t M = mnk[0], N = mnk[1], K = mnk[2];  // (not a structured binding: clang 14 cannot capture one)
    INFO("M=" << M << " N=" << N << " K=" << K);
    std::vector<std::uint8_t> a(std::size_t(M * K));
    std::vector<std::int8_t> b(std::size_t(K * N));
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = std::uint8_t((i * 73 + i / 11) % 256);
    for (std::size_t i = 0; i < b.size(); ++i) b[i] = std::int8_t(int((i * 59 + i / 7) % 256) - 128);
    result want(std::size_t(M * N), 0.0);
    for (index_t i = 0; i < M; ++i)
      for (index_t j = 0; j < N; ++j) {
        std::int64_t s = 0;
        for (index_t k = 0; k < K; ++k) s += std::int64_t(a[std::size_t(i * K + k)]) * b[std::size_t(k * N + j)];
        want[std::size_t(i * N + j)] = double(s);
      }
    under_every_team(want, 0.0, [&](int nt) {
      std::vector<std::int32_t> c(std::size_t(M * N), -1);
      ts::detail::cpu_gemm_s8(M, N, K, a.data(), K, ts::detail::mat_ref<std::int8_t>{b.data(), N, 1}, c.data(), N, false, nt);
      return result(c.begin(), c.end());
    });
  }
  // the int32 accumulators of the NHWC convolution: exact, so the one-thread path's result is the reference
  const index_t N = 4, H = 14, C = 32, K = 64;
  std::vector<float> w(std::size_t(K * C * 9));
  for (std::size_t i = 0; i < w.size(); ++i) w[i] = val(index_t(i), 6);
  const q::qconv_weight qw(w.data(), K, C, 3, 3);
  const q::qparams qx{0.03f, 77};
  for (const bool pool : {false, true}) {
    INFO("pooled " << pool);
    auto run = [&] {
      ts::Tensor<std::uint8_t, Shape<dyn, dyn, dyn, dyn>, ts::cpu_threads> x(N, H, H, C);
      for (index_t i = 0; i < x.size(); ++i) x.data()[i] = std::uint8_t((i * 31 + i / 13) % 256);
      ts::Tensor<std::int32_t, Shape<dyn, dyn>, ts::cpu_threads> y;
      if (pool) y = q::conv2d_maxpool2_nhwc(x, qw, qx, {.padding = 1});
      else y = q::conv2d_nhwc(x, qw, qx, {.padding = 1});
      return result(y.data(), y.data() + y.size());
    };
    ts::cpu_threads::set_num_threads(1);
    const result want = run();
    under_every_team(want, 0.0, [&](int) { return run(); });
  }
}

// ---- recurrent layers ---------------------------------------------------------------------------------------------

namespace {
using P = ts::cpu_threads;
using V1 = ad::Var<float, 1, P>;
using V2 = ad::Var<float, 2, P>;
using V3 = ad::Var<float, 3, P>;

template <int R>
ts::Tensor<float, ts::dyn_shape_t<R>, P> filled(const ts::dims_t<R>& d, int salt, float scale) {
  ts::Tensor<float, ts::dyn_shape_t<R>, P> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = val(i, salt) * scale;
  return t;
}

std::vector<ad::lstm_layer_params<float, P>> lstm_layers(index_t I, index_t H) {
  ad::lstm_layer_params<float, P> p;
  p.weight_ih = V2(filled<2>({4 * H, I}, 7, 0.3f), true);
  p.weight_hh = V2(filled<2>({4 * H, H}, 8, 0.1f), true);
  p.bias_ih = V1(filled<1>({4 * H}, 9, 0.5f), true);
  p.bias_hh = V1(filled<1>({4 * H}, 10, 0.5f), true);
  return {p};
}

void append(result& r, const float* p, index_t n) { r.insert(r.end(), p, p + n); }
}  // namespace

TEST_CASE("LSTM forward and backward, and the int8 LSTM, with any team", "[omp][rnn]") {
  // B * H = 8192: the step passes are split between threads too
  const index_t T = 3, B = 64, I = 16, H = 128;
  auto run = [&] {  // output, then the gradients of the input and of every parameter (fresh parameters each run)
    auto layers = lstm_layers(I, H);
    V3 x(filled<3>({T, B, I}, 11, 1.0f), true);
    auto res = ad::lstm(x, layers, ts::lstm_options{});
    res.output.backward(filled<3>({T, B, H}, 12, 1.0f));
    result r;
    append(r, res.output.value().data(), res.output.size());
    append(r, x.grad().data(), x.size());
    const auto& p = layers[0];
    append(r, p.weight_ih.grad().data(), p.weight_ih.size());
    append(r, p.weight_hh.grad().data(), p.weight_hh.size());
    append(r, p.bias_ih.grad().data(), p.bias_ih.size());
    return r;
  };
  ts::cpu_threads::set_num_threads(1);
  const result want = run();  // one thread: the cpu path (tested against plain loops in test_rnn)
  under_every_team(want, 1e-4, [&](int) { return run(); });

  const q::qlstm m(lstm_layers(I, H));
  const ts::Tensor<float, Shape<dyn, dyn>, P> xq = filled<2>({T * B, I}, 13, 1.0f);
  auto runq = [&] {
    ts::Tensor<float, Shape<dyn, dyn>, P> y;
    m.run_time_major(xq, T, B, y);
    return result(y.data(), y.data() + y.size());
  };
  ts::cpu_threads::set_num_threads(1);
  const result wantq = runq();  // rows are independent of the split: the same result exactly
  under_every_team(wantq, 0.0, [&](int) { return runq(); });
}

// ---- optimizer, reductions, pooling, elementwise ------------------------------------------------------------------

TEST_CASE("an Adam step on a large parameter with any team", "[omp][optim]") {
  const index_t n = 70001;  // split between two threads
  std::vector<float> g(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) g[std::size_t(i)] = val(i, 14) + 0.0625f;
  // two steps of torch.optim.Adam from p = val(i, 15) with a constant gradient, by plain loops
  const double lr = 0.01, b1 = 0.9, b2 = 0.999, eps = 1e-8;
  result want(static_cast<std::size_t>(n));
  for (index_t i = 0; i < n; ++i) {
    double p = val(i, 15), m = 0, v = 0;
    const double gi = g[std::size_t(i)];
    for (int t = 1; t <= 2; ++t) {
      m = b1 * m + (1 - b1) * gi, v = b2 * v + (1 - b2) * gi * gi;
      p -= lr / (1 - std::pow(b1, t)) * m / (std::sqrt(v) / std::sqrt(1 - std::pow(b2, t)) + eps);
    }
    want[std::size_t(i)] = p;
  }
  under_every_team(want, 1e-5, [&](int) {
    std::vector<float> p(static_cast<std::size_t>(n)), grad = g;
    for (index_t i = 0; i < n; ++i) p[std::size_t(i)] = val(i, 15);
    nn::parameter_ref<float> ref{"p", {n}, n, [&] { return p.data(); }, [&] { return grad.data(); }, [] {}};
    ts::optim::Adam<float> opt({ref}, {.lr = lr, .beta1 = b1, .beta2 = b2, .eps = eps});
    opt.step();
    opt.step();
    return result(p.begin(), p.end());
  });
}

TEST_CASE("reductions, argmax, pooling and elementwise expressions with any team", "[omp][expr]") {
  const index_t R = 300, C = 400;  // 120000 elements
  ts::Tensor<float, Shape<dyn, dyn>, P> x(R, C);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = val(i, 16);
  result want;  // plain loops: row sums, column sums, the total, row argmax, 2x2 max pool, 2x + 1
  for (index_t i = 0; i < R; ++i) {
    double s = 0;
    for (index_t j = 0; j < C; ++j) s += x(i, j);
    want.push_back(s);
  }
  for (index_t j = 0; j < C; ++j) {
    double s = 0;
    for (index_t i = 0; i < R; ++i) s += x(i, j);
    want.push_back(s);
  }
  double total = 0;
  for (index_t i = 0; i < x.size(); ++i) total += x.data()[i];
  want.push_back(total);
  for (index_t i = 0; i < R; ++i) {
    index_t best = 0;
    for (index_t j = 1; j < C; ++j)
      if (x(i, j) > x(i, best)) best = j;
    want.push_back(double(best));
  }
  const index_t PH = 40, PW = 100;  // x's elements as [6, 5, 40, 100]: 30 planes
  auto at = [&](index_t pl, index_t h, index_t w) { return x.data()[(pl * PH + h) * PW + w]; };
  for (index_t pl = 0; pl < 30; ++pl)
    for (index_t i = 0; i < PH / 2; ++i)
      for (index_t j = 0; j < PW / 2; ++j)
        want.push_back(std::max(std::max(at(pl, 2 * i, 2 * j), at(pl, 2 * i, 2 * j + 1)),
                                std::max(at(pl, 2 * i + 1, 2 * j), at(pl, 2 * i + 1, 2 * j + 1))));
  for (index_t i = 0; i < x.size(); ++i) want.push_back(2.0 * x.data()[i] + 1.0);
  under_every_team(want, 1e-6, [&](int) {
    result r;
    ts::Tensor<float, Shape<dyn>, P> rows = ts::sum<1>(x), cols = ts::sum<0>(x);
    ts::Tensor<float, Shape<>, P> all = ts::sum(x);
    ts::Tensor<index_t, Shape<dyn>, P> am = ts::argmax<1>(x);
    const ts::Tensor<float, Shape<dyn, dyn, dyn, dyn>, P> x4 = ts::reshape<Shape<dyn, dyn, dyn, dyn>>(x, {6, 5, PH, PW});
    ts::Tensor<float, Shape<dyn, dyn, dyn, dyn>, P> pooled = ts::max_pool2d<2>(x4);
    ts::Tensor<float, Shape<dyn, dyn>, P> e = x * 2.0f + 1.0f;
    append(r, rows.data(), rows.size());
    append(r, cols.data(), cols.size());
    r.push_back(all());
    for (index_t i = 0; i < am.size(); ++i) r.push_back(double(am.data()[i]));
    append(r, pooled.data(), pooled.size());
    append(r, e.data(), e.size());
    return r;
  });
}

// ---- backward() of a small CNN inside the caller's own parallel region ------------------------------------------------

TEST_CASE("training a small CNN inside the caller's parallel region, a copy per thread, equals a serial run", "[omp][nn]") {
  using Net = nn::Sequential<Shape<dyn, 3, 12, 12>, nn::Conv2d<3, 16, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU,
                             nn::MaxPool2d<2>, nn::Conv2d<16, 32, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::Flatten,
                             nn::Linear<32 * 6 * 6, 4>>;
  ts::Tensor<float, Shape<dyn, 3, 12, 12>, P> x(8);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = val(i, 17);
  ts::Tensor<int, Shape<dyn>, P> labels(8);
  for (index_t i = 0; i < 8; ++i) labels(i) = int(i % 4);
  auto train = [&] {  // three SGD steps from the same initial parameters; the parameters after them
    Net net(5);
    auto params = net.parameters();
    for (int step = 0; step < 3; ++step) {
      net.zero_grad();
      ad::cross_entropy(net.forward(x), labels).backward();
      for (auto& p : params)
        for (index_t i = 0; i < p.size; ++i) p.value()[i] -= 0.05f * p.grad()[i];
    }
    result r;
    for (auto& p : params) append(r, p.value(), p.size);
    return r;
  };
  omp_restore restore;
  ts::cpu_threads::set_num_threads(2);
  const result want = train();
  std::vector<result> got(2);
  int outer = 1;
#if defined(_OPENMP)
  omp_set_max_active_levels(1);
#pragma omp parallel num_threads(2)
  {
#pragma omp single
    outer = omp_get_num_threads();
    got[std::size_t(omp_get_thread_num())] = train();
  }
#else
  got[0] = train();
#endif
  for (int t = 0; t < outer; ++t) {
    INFO("thread " << t);
    require_close(got[std::size_t(t)], want, 1e-4, "parameters after training");
  }
}
