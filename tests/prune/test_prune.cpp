// prune/mask.hpp: magnitude pruning (unstructured, global, structured L1/L2) against references computed here with
// plain loops and hand sorting; masks combined as PyTorch's PruningContainer; masks kept through SGD with momentum and
// weight decay and through Adam; remove; the report; the errors.
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/prune/mask.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
namespace prune = tessera::prune;
using ts::dyn;
using ts::index_t;

namespace {
using MLP = nn::Sequential<ts::Shape<dyn, 7>, nn::Linear<7, 5>, nn::ReLU, nn::Linear<5, 9>, nn::Tanh, nn::Linear<9, 3>>;
using CNN = nn::Sequential<ts::Shape<dyn, 3, 9, 9>, nn::Conv2d<3, 6, 3>, nn::ReLU, nn::Flatten, nn::Linear<6 * 7 * 7, 4>>;

template <class Model>
std::vector<float> values(Model& net, const std::string& name) {
  std::vector<float> out;
  net.for_each_parameter([&](const std::string& n, auto& v) {
    if (n == name) out.assign(v.value().data(), v.value().data() + v.size());
  });
  REQUIRE(!out.empty());
  return out;
}

/// The indices a magnitude prune of k entries among `alive` zeroes: sorted by hand by (|w|, index).
std::vector<index_t> smallest(const std::vector<float>& w, const std::vector<index_t>& alive, index_t k) {
  std::vector<index_t> idx = alive;
  std::sort(idx.begin(), idx.end(), [&](index_t a, index_t b) {
    return std::fabs(w[a]) < std::fabs(w[b]) || (std::fabs(w[a]) == std::fabs(w[b]) && a < b);
  });
  idx.resize(std::size_t(k));
  std::sort(idx.begin(), idx.end());
  return idx;
}
std::vector<index_t> zeros_of(const std::vector<float>& m) {
  std::vector<index_t> z;
  for (std::size_t i = 0; i < m.size(); ++i)
    if (m[i] == 0.0f) z.push_back(index_t(i));
  return z;
}
std::vector<index_t> iota(index_t n) {
  std::vector<index_t> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), index_t(0));
  return v;
}
/// One training step of the MLP on fixed data, with the masks kept.
template <class Opt>
void step(MLP& net, Opt& opt, prune::pruning<float>* p) {
  ts::Tensor<float, ts::Shape<dyn, 7>> x(11, 7);
  for (index_t i = 0; i < x.size(); ++i) x.data()[i] = std::sin(0.7f * float(i)) * 1.5f;
  ts::Tensor<std::int32_t, ts::Shape<dyn>> y(11);
  for (index_t i = 0; i < 11; ++i) y(i) = std::int32_t(i % 3);
  opt.zero_grad();
  auto loss = ad::cross_entropy(net.forward(x), y);
  loss.backward();
  if (p) p->mask_gradients(net);
  opt.step();
  if (p) p->apply(net);
}
}  // namespace

TEST_CASE("prune: the count pruned is round(amount * n), ties to even, or a count", "[prune]") {
  CHECK(prune::count_to_prune(0.5, 5, "t") == 2);   // 2.5 -> 2
  CHECK(prune::count_to_prune(0.5, 7, "t") == 4);   // 3.5 -> 4
  CHECK(prune::count_to_prune(0.3, 35, "t") == 10); // 10.5 -> 10
  CHECK(prune::count_to_prune(1.0, 35, "t") == 35);
  CHECK(prune::count_to_prune(0.0, 35, "t") == 0);
  CHECK(prune::count_to_prune(3, 35, "t") == 3);
  CHECK(prune::count_to_prune(35, 35, "t") == 35);
  CHECK_THROWS_AS(prune::count_to_prune(36, 35, "t"), std::invalid_argument);
  CHECK_THROWS_AS(prune::count_to_prune(-1, 35, "t"), std::invalid_argument);
  CHECK_THROWS_AS(prune::count_to_prune(1.5, 35, "t"), std::invalid_argument);
  CHECK_THROWS_AS(prune::count_to_prune(-0.1, 35, "t"), std::invalid_argument);
}

TEST_CASE("prune: l1_unstructured zeroes the smallest magnitudes; pruning again prunes among the rest", "[prune]") {
  MLP net(3);
  const std::vector<float> w0 = values(net, "2.weight");  // [9, 5]: 45 entries
  prune::pruning<float> p;
  p.l1_unstructured(net, "2.weight", 0.3);  // round(13.5) = 14
  const auto first = smallest(w0, iota(45), 14);
  CHECK(zeros_of(p.mask("2.weight")) == first);
  const auto w1 = values(net, "2.weight");
  for (index_t i = 0; i < 45; ++i) CHECK(w1[i] == (std::binary_search(first.begin(), first.end(), i) ? 0.0f : w0[i]));
  // again, 0.5 of the 31 left: round(15.5) = 16 more, chosen among the 31
  p.l1_unstructured(net, "2.weight", 0.5);
  std::vector<index_t> alive;
  for (index_t i = 0; i < 45; ++i)
    if (!std::binary_search(first.begin(), first.end(), i)) alive.push_back(i);
  auto second = smallest(w0, alive, 16);
  std::vector<index_t> both = first;
  both.insert(both.end(), second.begin(), second.end());
  std::sort(both.begin(), both.end());
  CHECK(zeros_of(p.mask("2.weight")) == both);
  CHECK(p.sparsity("2.weight") == Approx(30.0 / 45.0));
  // a count
  const auto v0 = values(net, "0.weight");
  p.l1_unstructured(net, "0.weight", 4);
  CHECK(zeros_of(p.mask("0.weight")) == smallest(v0, iota(35), 4));
}

TEST_CASE("prune: ties among equal magnitudes go to the lower index, exactly k entries", "[prune]") {
  ts::Tensor<float, ts::Shape<2, 3>> t;
  const float v[] = {1, -1, 2, 1, -1, 0.5f};
  for (int i = 0; i < 6; ++i) t.data()[i] = v[i];
  ad::Var<float, 2, ts::cpu> w(t, true);
  const auto m = prune::l1_unstructured(w, 3);
  CHECK(m == std::vector<float>{0, 0, 1, 1, 1, 0});  // 0.5 (index 5), then the 1s at indices 0 and 1
  CHECK(w.value()(0, 0) == 0.0f);
  CHECK(w.value()(1, 0) == 1.0f);
}

TEST_CASE("prune: global_unstructured ranks all named weights together", "[prune]") {
  MLP net(5), other(5);
  const auto a = values(net, "0.weight"), b = values(net, "2.weight"), c = values(net, "4.weight");
  std::vector<float> all = a;
  all.insert(all.end(), b.begin(), b.end());
  all.insert(all.end(), c.begin(), c.end());
  const index_t n = index_t(all.size());  // 35 + 45 + 27 = 107
  prune::pruning<float> p;
  p.global_unstructured(net, 0.6);  // every weight of rank 2: round(64.2) = 64
  const auto z = smallest(all, iota(n), 64);
  std::vector<float> got = p.mask("0.weight");
  got.insert(got.end(), p.mask("2.weight").begin(), p.mask("2.weight").end());
  got.insert(got.end(), p.mask("4.weight").begin(), p.mask("4.weight").end());
  CHECK(zeros_of(got) == z);
  CHECK(!p.has_mask("0.bias"));
  const auto r = p.report(net);
  REQUIRE(r.parameters.size() == 3);
  CHECK(r.zeros == 64);
  CHECK(r.size == 107);
  CHECK(r.global_sparsity() == Approx(64.0 / 107.0));
  CHECK(r.str().find("global sparsity: 59.81 %") != std::string::npos);
  // per tensor: each layer pruned by the same fraction, which the global prune does not do here
  prune::pruning<float> q;
  for (const char* name : {"0.weight", "2.weight", "4.weight"}) q.l1_unstructured(other, name, 0.6);
  CHECK(q.report(other).parameters[0].zeros == 21);
  CHECK(q.report(other).parameters[1].zeros == 27);
  CHECK(q.report(other).parameters[2].zeros == 16);
  CHECK(r.parameters[0].zeros + r.parameters[1].zeros + r.parameters[2].zeros == 64);
  // names and a count
  prune::pruning<float> s;
  s.global_unstructured(net, std::vector<std::string>{"4.weight", "0.bias"}, 10);
  std::vector<float> cat = values(net, "4.weight");
  const auto bias = values(net, "0.bias");
  cat.insert(cat.end(), bias.begin(), bias.end());
  std::vector<float> m = s.mask("4.weight");
  m.insert(m.end(), s.mask("0.bias").begin(), s.mask("0.bias").end());
  CHECK(zeros_of(m) == smallest(cat, iota(index_t(cat.size())), 10));
}

TEST_CASE("prune: ln_structured keeps the slices of largest L1 / L2 norm", "[prune]") {
  for (double norm : {1.0, 2.0}) {
    for (int dim : {0, 1}) {
      CNN net(7);
      const auto w = values(net, "0.weight");  // [6, 3, 3, 3]
      const index_t C = dim == 0 ? 6 : 3, amount_k = dim == 0 ? 4 : 1;  // 0.6 of 6 = 3.6 -> 4; of 3 = 1.8 -> 2: use counts
      std::vector<double> s(std::size_t(C), 0.0);
      for (index_t o = 0; o < 6; ++o)
        for (index_t i = 0; i < 3; ++i)
          for (index_t k = 0; k < 9; ++k) {
            const double v = w[(o * 3 + i) * 9 + k];
            s[std::size_t(dim == 0 ? o : i)] += norm == 1.0 ? std::fabs(v) : v * v;
          }
      std::vector<index_t> order = iota(C);
      std::sort(order.begin(), order.end(), [&](index_t a, index_t b) { return s[a] < s[b]; });
      prune::pruning<float> p;
      p.ln_structured(net, "0.weight", amount_k, norm, dim);
      const auto m = p.mask("0.weight");
      for (index_t o = 0; o < 6; ++o)
        for (index_t i = 0; i < 3; ++i)
          for (index_t k = 0; k < 9; ++k) {
            const index_t c = dim == 0 ? o : i;
            const bool pruned = std::find(order.begin(), order.begin() + amount_k, c) != order.begin() + amount_k;
            CHECK(m[(o * 3 + i) * 9 + k] == (pruned ? 0.0f : 1.0f));
          }
      // again: a fraction of the slices left (PruningContainer): 0.5 of the 2 (dim 0) or 2 (dim 1) left -> 1
      p.ln_structured(net, "0.weight", 0.5, norm, dim);
      const index_t left = C - amount_k;
      CHECK(p.sparsity("0.weight") == Approx(double(amount_k + left / 2) / double(C)));
    }
  }
}

TEST_CASE("prune: masks hold through SGD with momentum and weight decay, and through Adam", "[prune]") {
  for (int which = 0; which < 2; ++which) {
    MLP net(11);
    std::unique_ptr<ts::optim::SGD<float>> sgd;
    std::unique_ptr<ts::optim::Adam<float>> adam;
    if (which == 0) sgd = std::make_unique<ts::optim::SGD<float>>(net.parameters(), ts::optim::sgd_options{.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-2});
    else adam = std::make_unique<ts::optim::Adam<float>>(net.parameters(), ts::optim::adam_options{.lr = 1e-2, .weight_decay = 1e-2});
    auto one = [&](prune::pruning<float>* p) {
      if (sgd) step(net, *sgd, p);
      else step(net, *adam, p);
    };
    one(nullptr);  // optimizer state from before the pruning: momentum would move the pruned weights
    one(nullptr);
    prune::pruning<float> p;
    p.l1_unstructured(net, "0.weight", 0.5);
    p.ln_structured(net, "2.weight", 0.4, 2);
    const auto before0 = values(net, "0.weight"), before2 = values(net, "2.weight");
    for (int k = 0; k < 4; ++k) one(&p);
    for (const char* name : {"0.weight", "2.weight"}) {
      const auto m = p.mask(name), w = values(net, name), b = std::string(name) == "0.weight" ? before0 : before2;
      index_t changed = 0, kept = 0;
      for (std::size_t i = 0; i < m.size(); ++i) {
        if (m[i] == 0.0f) CHECK(w[i] == 0.0f);
        else ++kept, changed += w[i] != b[i];
      }
      CHECK(changed == kept);
    }
    // without the masks the pruned weights move (the test above can fail)
    one(nullptr);
    const auto w = values(net, "0.weight"), m = p.mask("0.weight");
    index_t moved = 0;
    for (std::size_t i = 0; i < m.size(); ++i) moved += m[i] == 0.0f && w[i] != 0.0f;
    CHECK(moved > 0);
  }
}

TEST_CASE("prune: remove makes the pruning permanent", "[prune]") {
  MLP net(13);
  prune::pruning<float> p;
  p.l1_unstructured(net, "2.weight", 0.5);
  const auto zeros = zeros_of(p.mask("2.weight"));
  p.remove("2.weight");
  CHECK(!p.has_mask("2.weight"));
  CHECK(zeros_of(values(net, "2.weight")) == zeros);
  p.apply(net);  // nothing to apply
  CHECK_THROWS_AS(p.remove("2.weight"), std::invalid_argument);
  ts::optim::SGD<float> opt(net.parameters(), {.lr = 0.1});
  step(net, opt, &p);  // the weights are free again
  CHECK(zeros_of(values(net, "2.weight")).size() < zeros.size());
}

TEST_CASE("prune: errors name the parameter, its shape and the amount", "[prune]") {
  MLP net(1);
  prune::pruning<float> p;
  auto message = [&](auto&& f) {
    try {
      f();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("no exception");
  };
  const auto m1 = message([&] { p.l1_unstructured(net, "2.weight", 1.5); });
  CHECK(m1.find("\"2.weight\" [9, 5]") != std::string::npos);
  CHECK(m1.find("1.5") != std::string::npos);
  const auto m2 = message([&] { p.l1_unstructured(net, "2.weight", 46); });
  CHECK(m2.find("46 (a count)") != std::string::npos);
  CHECK(m2.find("[0, 45]") != std::string::npos);
  const auto m3 = message([&] { p.l1_unstructured(net, "9.weight", 0.5); });
  CHECK(m3.find("no parameter \"9.weight\"") != std::string::npos);
  CHECK(m3.find("0.weight, 0.bias") != std::string::npos);
  const auto m4 = message([&] { p.ln_structured(net, "0.bias", 0.5, 1); });
  CHECK(m4.find("\"0.bias\" [5]") != std::string::npos);
  CHECK(m4.find("rank 2 or more") != std::string::npos);
  const auto m5 = message([&] { p.ln_structured(net, "0.weight", 0.5, 1, 2); });
  CHECK(m5.find("dim 2 is out of range") != std::string::npos);
  const auto m6 = message([&] { p.ln_structured(net, "0.weight", 0.5, 0.5); });
  CHECK(m6.find("norm") != std::string::npos);
  CHECK(message([&] { p.mask("0.weight"); }).find("has no mask") != std::string::npos);
  CHECK(message([&] { p.global_unstructured(net, std::vector<std::string>{"0.weight", "0.weight"}, 0.5); }).find("named twice") !=
        std::string::npos);
  CHECK(p.names().empty());  // nothing was masked by the failed calls
}
