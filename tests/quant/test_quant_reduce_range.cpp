// Reduced-range (7-bit) quantization, PyTorch's reduce_range (quant/quantize.hpp, observer.hpp, model.hpp): the
// qparams against PyTorch's formula written out, quantize clamping into [0, 127] / [-64, 63], quant::matmul and
// conv2d_nhwc on 7-bit activations (exact; they state A <= 127 to the int8 GEMM, which then takes avx2_u7 without
// checking A), and an int8 model calibrated with reduce_range: its layers' ranges, its logits the same on every int8
// path, and its predictions against the float model's. (tests/quant/reduce_range_vs_torch.py compares the qparams and
// quantized values with PyTorch itself.)
#include <catch2/catch.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <random>
#include <vector>

#include <tessera/quant/model.hpp>
#include <tessera/tessera.hpp>

#include "quant_model_support.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace q = tessera::quant;
using ts::dyn;
using ts::index_t;

namespace {

/// PyTorch 1.13's _calculate_qparams (per tensor, affine) over [quant_min, quant_max], written out.
q::qparams torch_qparams(float lo, float hi, float qmin, float qmax) {
  lo = std::min(lo, 0.0f), hi = std::max(hi, 0.0f);
  float scale = (hi - lo) / (qmax - qmin);
  if (!(scale > 0)) scale = 1.0f;  // (PyTorch: max(scale, eps); tessera takes 1 for an empty range)
  const float zp = std::clamp(qmin - std::nearbyint(lo / scale), qmin, qmax);
  return {scale, std::int32_t(zp), true};
}

const bool u7_is_best = ts::int8_isa_supported() == ts::int8_isa::avx2_u7;

struct isa_scope {
  explicit isa_scope(ts::int8_isa i) { ts::set_int8_isa_limit(i); }
  ~isa_scope() { ts::set_int8_isa_limit(ts::int8_isa::amx); }
};

using TinyCNN = nn::Sequential<ts::Shape<dyn, 2, 8, 6>, nn::Conv2d<2, 5, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU,
                               nn::MaxPool2d<2>, nn::Flatten, nn::Linear<5 * 4 * 3, 7>, nn::ReLU, nn::Linear<7, 3>>;
using WideCNN = nn::Sequential<ts::Shape<dyn, 2, 8, 6>, nn::Conv2d<2, 24, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU,
                               nn::Conv2d<24, 32, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
                               nn::Flatten, nn::Linear<32 * 4 * 3, 40>, nn::ReLU, nn::Linear<40, 3>>;

}  // namespace

TEST_CASE("reduce_range qparams: PyTorch's formula over [0, 127] and [-64, 63]", "[quant][reduce_range]") {
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  for (int t = 0; t < 2000; ++t) {
    float lo = u(rng), hi = u(rng);
    if (t % 7 == 0) lo = 0;
    if (t % 11 == 0) hi = 0;
    if (lo > hi) std::swap(lo, hi);
    INFO("[" << lo << ", " << hi << "]");
    const auto a = q::affine_qparams<std::uint8_t>(lo, hi, true), want = torch_qparams(lo, hi, 0, 127);
    CHECK(a.scale == want.scale);
    CHECK(a.zero_point == want.zero_point);
    CHECK(a.reduced);
    CHECK(a.zero_point >= 0);
    CHECK(a.zero_point <= 127);
    const auto s = q::affine_qparams<std::int8_t>(lo, hi, true), ws = torch_qparams(lo, hi, -64, 63);
    CHECK(s.scale == ws.scale);
    CHECK(s.zero_point == ws.zero_point);
    // the full range is unchanged: twice the levels
    const auto f = q::affine_qparams<std::uint8_t>(lo, hi);
    CHECK(!f.reduced);
    if (hi > lo) CHECK(f.scale == Approx(a.scale * 127.0f / 255.0f).epsilon(1e-6));
  }
  // the observers pass it on
  q::minmax_observer mm;
  const float v[] = {-0.7f, 2.9f, 0.1f};
  mm.observe(v, 3);
  CHECK(mm.params(true) == q::affine_qparams<std::uint8_t>(-0.7f, 2.9f, true));
  q::histogram_observer h;
  h.observe(v, 3);
  CHECK(h.params(true).reduced);
  CHECK(h.params(true).scale == Approx(h.params().scale * 255.0f / 127.0f).epsilon(1e-6));
}

TEST_CASE("quantize with reduced qparams clamps to [0, 127] and [-64, 63]", "[quant][reduce_range]") {
  const q::qparams qp = q::affine_qparams<std::uint8_t>(-1.0f, 2.0f, true);
  const q::qparams qs = q::affine_qparams<std::int8_t>(-1.0f, 2.0f, true);
  ts::Tensor<float, ts::Shape<dyn>> x(1001);
  for (index_t i = 0; i < x.size(); ++i) x(i) = -4.0f + 10.0f * float(i) / 1000.0f;  // past both ends
  ts::Tensor<std::uint8_t, ts::Shape<dyn>> qx(x.size());
  ts::Tensor<std::int8_t, ts::Shape<dyn>> sx(x.size());
  qx = q::quantize(x, qp);
  sx = q::quantize<std::int8_t>(x, qs);
  int at_top = 0;
  for (index_t i = 0; i < x.size(); ++i) {
    const float yu = std::nearbyint(x(i) * (1.0f / qp.scale)) + float(qp.zero_point);
    const float ys = std::nearbyint(x(i) * (1.0f / qs.scale)) + float(qs.zero_point);
    INFO("x " << x(i));
    CHECK(int(qx(i)) == int(std::clamp(yu, 0.0f, 127.0f)));
    CHECK(int(sx(i)) == int(std::clamp(ys, -64.0f, 63.0f)));
    at_top += qx(i) == 127;
  }
  CHECK(at_top > 100);
  // full-range qparams keep the full range
  qx = q::quantize(x, q::affine_qparams<std::uint8_t>(-1.0f, 2.0f));
  CHECK(*std::max_element(qx.data(), qx.data() + qx.size()) == 255);
}

TEST_CASE("quant::matmul on 7-bit activations is exact and states A <= 127 to the GEMM", "[quant][reduce_range]") {
  std::mt19937 rng(3);
  for (auto [M, K, N] : {std::tuple<index_t, index_t, index_t>{33, 65, 7}, {127, 301, 40}, {7, 1, 33}}) {
    std::vector<float> wv(std::size_t(K * N));
    for (auto& v : wv) v = float(int(rng() % 2001) - 1000) / 1000.0f;
    const auto w = std::make_shared<const q::qweight>(wv.data(), K, N, N, 1, true);
    const q::qparams qx = q::affine_qparams<std::uint8_t>(-0.5f, 1.5f, true);
    ts::Tensor<std::uint8_t, ts::Shape<dyn, dyn>, ts::cpu_threads> a(M, K);
    for (index_t i = 0; i < a.size(); ++i) a.data()[i] = std::uint8_t(i % 5 == 0 ? 127 : rng() % 128);
    std::vector<std::int32_t> want(std::size_t(M * N));
    for (index_t i = 0; i < M; ++i)
      for (index_t j = 0; j < N; ++j) {
        std::int64_t s = 0;
        for (index_t k = 0; k < K; ++k) s += std::int64_t(a(i, k)) * w->values[std::size_t(k * N + j)];
        want[std::size_t(i * N + j)] = std::int32_t(s);
      }
    isa_scope scope(ts::int8_isa::avx2_u7);
    const long b0 = ts::detail::s8::u7_blocks().load(), c0 = ts::detail::s8::u7_checks().load();
    ts::Tensor<std::int32_t, ts::Shape<dyn, dyn>, ts::cpu_threads> c(M, N);
    c = q::matmul(a, w, qx);
    CHECK(std::equal(want.begin(), want.end(), c.data()));
    if (u7_is_best) {
      CHECK(ts::detail::s8::u7_blocks().load() > b0);
      CHECK(ts::detail::s8::u7_checks().load() == c0);  // stated, not checked
    }
  }
}

TEST_CASE("an int8 model calibrated with reduce_range: 7-bit activations, the same logits on every path", "[quant][reduce_range]") {
  TinyCNN net(7);
  net.eval();
  const auto calib = quant_test::images(128, 1);
  auto qnet = q::quantize(net, calib, {.observer = q::observer_kind::minmax, .reduce_range = true});
  CHECK(qnet.input_qparams().reduced);
  CHECK(qnet.layer<0>().out.reduced);
  CHECK(qnet.layer<2>().out.reduced);
  CHECK(qnet.layer<0>().out.zero_point <= 127);
  const auto x = quant_test::images(37, 2);
  ts::Tensor<float, ts::Shape<dyn, dyn>, ts::cpu_threads> want;
  {
    isa_scope scope(ts::int8_isa::portable);
    want = qnet.predict(x);
  }
  for (auto isa : {ts::int8_isa::avx2, ts::int8_isa::avx2_u7}) {
    INFO("path " << ts::int8_isa_name(isa));
    isa_scope scope(isa);
    const long b0 = ts::detail::s8::u7_blocks().load(), c0 = ts::detail::s8::u7_checks().load();
    const auto got = qnet.predict(x);
    CHECK(std::equal(want.data(), want.data() + want.size(), got.data()));
    if (u7_is_best && isa == ts::int8_isa::avx2_u7) {
      CHECK(ts::detail::s8::u7_blocks().load() > b0);
      CHECK(ts::detail::s8::u7_checks().load() == c0);
    }
  }
  // without reduce_range: full-range qparams
  auto full = q::quantize(net, calib, {.observer = q::observer_kind::minmax});
  CHECK(!full.input_qparams().reduced);
  CHECK(full.input_qparams().scale == Approx(qnet.input_qparams().scale * 127.0f / 255.0f).epsilon(1e-5));
}

TEST_CASE("an int8 model with reduce_range agrees with the float model", "[quant][reduce_range]") {
  WideCNN net(11);
  net.eval();
  const auto calib = quant_test::images(256, 3);
  for (auto kind : {q::observer_kind::minmax, q::observer_kind::histogram}) {
    const auto x = quant_test::images(200, 4);
    const auto lf = net.predict(x);
    auto qr = q::quantize(net, calib, {.observer = kind, .reduce_range = true});
    auto qf = q::quantize(net, calib, {.observer = kind});
    const auto r = quant_test::compare_logits(lf, qr.predict(x));
    const auto f = quant_test::compare_logits(lf, qf.predict(x));
    INFO("observer " << int(kind) << ": max |float - int8| " << r.err << " (full range: " << f.err << ") of logits up to " << r.mag
                     << "; argmax agrees on " << r.agree << " (full range: " << f.agree << ") of 200");
    CHECK(r.err < 0.08 * r.mag);
    CHECK(r.agree >= 185);
  }
}

TEST_CASE("a recurrent int8 model with reduce_range: 7-bit input to the Linears after LastStep", "[quant][reduce_range]") {
  using Seq = nn::Sequential<ts::Shape<dyn, 6, 5>, nn::LSTM<5, 24>, nn::LastStep, nn::Linear<24, 40>, nn::ReLU, nn::Linear<40, 3>>;
  Seq m(3);
  m.eval();
  ts::Tensor<float, ts::Shape<dyn, 6, 5>> x(64);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = std::sin(0.37f * float(i)) * 2.0f + 0.1f * std::cos(1.3f * float(i));
  auto qr = q::quantize(m, x, {.observer = q::observer_kind::minmax, .reduce_range = true});
  CHECK(qr.layer<2>().in_qp.reduced);
  CHECK(qr.layer<2>().out.reduced);
  CHECK(qr.layer<3>().in_qp.reduced);
  ts::Tensor<float, ts::Shape<dyn, dyn>, ts::cpu_threads> want;
  {
    isa_scope scope(ts::int8_isa::portable);
    want = qr.predict(x);
  }
  isa_scope scope(ts::int8_isa::avx2_u7);
  const auto got = qr.predict(x);
  CHECK(std::equal(want.data(), want.data() + want.size(), got.data()));
  const auto lf = m.predict(x);
  const auto r = quant_test::compare_logits(lf, got);
  INFO("max |float - int8| " << r.err << " of logits up to " << r.mag << "; argmax agrees on " << r.agree << " of 64");
  CHECK(r.err < 0.1 * r.mag);
  CHECK(r.agree >= 58);
}
