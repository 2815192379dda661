// Rng (reference vectors, ranges, moments, reproducibility) and DataLoader (batch counts and sizes, every sample once
// per epoch, the same order for the same seed and epoch, a new order each epoch, drop_last, rows copied intact).
#include <algorithm>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <set>
#include <tessera/core/random.hpp>
#include <tessera/data/loader.hpp>
#include <vector>

namespace ts = tessera;
using ts::dyn;
using ts::index_t;
using ts::Shape;

// ---- Rng ----------------------------------------------------------------------------------------------------------

TEST_CASE("splitmix64 and xoshiro256** match their reference outputs", "[random]") {
  std::uint64_t s = 0;
  CHECK(ts::splitmix64(s) == 0xe220a8397b1dcdafull);  // the first output of splitmix64 seeded with 0
  CHECK(ts::splitmix64(s) == 0x6e789e6aa1b965f4ull);
  // xoshiro256** from the state {1, 2, 3, 4}: the first output is rotl(2 * 5, 7) * 9 = 1280 * 9 = 11520, the second
  // rotl(0 * 5, 7) * 9 = 0 (s[1] becomes 2 ^ (3 ^ 1) = 0); the next two are the reference implementation's.
  ts::Rng r;
  r.set_state({1, 2, 3, 4});
  CHECK(r() == 11520u);
  CHECK(r() == 0u);
  CHECK(r() == 1509978240u);
  CHECK(r() == 1215971899390074240ull);
  CHECK_THROWS_AS(r.set_state({0, 0, 0, 0}), std::invalid_argument);
}

TEST_CASE("Rng: same seed, same sequence; seed() restarts; streams differ", "[random]") {
  ts::Rng a(42), b(42), c(43);
  std::vector<std::uint64_t> va, vb, vc;
  for (int i = 0; i < 16; ++i) {
    va.push_back(a());
    vb.push_back(b());
    vc.push_back(c());
  }
  CHECK(va == vb);
  CHECK(va != vc);
  a.seed(42);
  CHECK(a() == va[0]);
  CHECK(ts::Rng(42, 0)() != ts::Rng(42, 1)());
  CHECK(ts::Rng(42, 7)() == ts::Rng(42, 7)());
  // the state resumes the sequence
  ts::Rng d(5);
  for (int i = 0; i < 3; ++i) d();
  ts::Rng e(0);
  e.set_state(d.state());
  CHECK(e() == d());
  static_assert(std::uniform_random_bit_generator<ts::Rng>);
}

TEST_CASE("Rng draws: ranges and moments", "[random]") {
  ts::Rng r(2024);
  const int n = 200000;
  double sum = 0, sq = 0;
  float lo = 1, hi = 0;
  for (int i = 0; i < n; ++i) {
    const float u = r.uniform();
    lo = std::min(lo, u);
    hi = std::max(hi, u);
    sum += u;
    sq += double(u) * u;
  }
  CHECK(lo >= 0.0f);
  CHECK(hi < 1.0f);
  CHECK(sum / n == Approx(0.5).margin(0.005));
  CHECK(sq / n - (sum / n) * (sum / n) == Approx(1.0 / 12).margin(0.002));
  for (int i = 0; i < 1000; ++i) {
    const float u = r.uniform(-3.0f, -2.5f);
    CHECK((u >= -3.0f && u < -2.5f));
  }

  sum = sq = 0;
  double cube = 0;
  for (int i = 0; i < n; ++i) {
    const double z = r.normal();
    sum += z;
    sq += z * z;
    cube += z * z * z;
  }
  CHECK(sum / n == Approx(0.0).margin(0.01));
  CHECK(sq / n == Approx(1.0).margin(0.015));
  CHECK(cube / n == Approx(0.0).margin(0.03));
  sum = 0;
  for (int i = 0; i < 10000; ++i) sum += r.normal(3.0f, 0.5f);
  CHECK(sum / 10000 == Approx(3.0).margin(0.02));

  // below(n): each value of [0, 10) about n / 10 times (a 5 sigma band), nothing outside
  std::vector<long> count(10, 0);
  bool inside = true;
  for (int i = 0; i < 100000; ++i) {
    const auto k = r.below(10);
    if (k >= 10) inside = false;
    else ++count[k];
  }
  CHECK(inside);
  for (long c : count) CHECK(std::abs(c - 10000) < 5 * 95);  // sd = sqrt(100000 * 0.1 * 0.9) ~ 95
  CHECK(r.below(1) == 0u);
  CHECK_THROWS_AS(r.below(0), std::invalid_argument);
  // a bound above 2^63 still gives values below it
  const std::uint64_t huge = 0xC000000000000000ull;
  for (int i = 0; i < 100; ++i) CHECK(r.below(huge) < huge);
  // ... and uniformly: with n = 3 * 2^62, taking the high word of x * n without the rejection step maps 4 inputs to
  // outputs 3k, 3k, 3k + 1, 3k + 2, so multiples of 3 would come half of the time instead of a third
  std::vector<long> mod3(3, 0);
  for (int i = 0; i < 30000; ++i) ++mod3[r.below(huge) % 3];
  for (long c : mod3) CHECK(std::abs(c - 10000) < 5 * 82);  // sd = sqrt(30000 * 2 / 9) ~ 82

  bool saw_lo = false, saw_hi = false, ok = true;
  for (int i = 0; i < 1000; ++i) {
    const auto v = r.uniform_int(-2, 2);
    ok = ok && v >= -2 && v <= 2;
    saw_lo = saw_lo || v == -2;
    saw_hi = saw_hi || v == 2;
  }
  CHECK(ok);
  CHECK(saw_lo);
  CHECK(saw_hi);
  CHECK_THROWS_AS(r.uniform_int(3, 2), std::invalid_argument);
}

TEST_CASE("Rng::shuffle is a permutation and depends on the seed", "[random]") {
  std::vector<int> a(100), b(100);
  std::iota(a.begin(), a.end(), 0);
  std::iota(b.begin(), b.end(), 0);
  ts::Rng(1).shuffle(a);
  ts::Rng(2).shuffle(b);
  CHECK(a != b);
  std::vector<int> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int i = 0; i < 100; ++i) CHECK(sorted[std::size_t(i)] == i);
  int fixed = 0;
  for (int i = 0; i < 100; ++i) fixed += a[std::size_t(i)] == i;
  CHECK(fixed < 10);  // about one expected
}

// ---- DataLoader ----------------------------------------------------------------------------------------------------

namespace {
constexpr int C = 1, H = 2, W = 3, P = C * H * W;

/// Sample i: pixels 1000 * i + j (j = 0..5), label i.
template <class S = Shape<dyn, C, H, W>>
std::pair<ts::Tensor<float, S>, ts::Tensor<std::int32_t, Shape<dyn>>> make_data(index_t n) {
  ts::Tensor<float, S> x(ts::dims_t<4>{n, C, H, W});
  ts::Tensor<std::int32_t, Shape<dyn>> y(n);
  for (index_t i = 0; i < n; ++i) {
    for (int j = 0; j < P; ++j) x.data()[i * P + j] = float(1000 * i + j);
    y(i) = std::int32_t(i);
  }
  return {std::move(x), std::move(y)};
}

/// The labels of one epoch in batch order; checks each batch's size and that its image rows belong to its labels.
template <class Range>
std::vector<int> run_epoch(Range&& epoch, index_t batch, index_t n, bool drop_last) {
  std::vector<int> seen;
  index_t k = 0;
  const index_t batches = drop_last ? n / batch : (n + batch - 1) / batch;
  for (auto& [x, y] : epoch) {
    const index_t expect = (k + 1) * batch <= n ? batch : n - k * batch;
    INFO("batch " << k << " of " << batches);
    REQUIRE(y.dim(0) == expect);
    REQUIRE(x.dims() == ts::dims_t<4>{expect, C, H, W});
    for (index_t r = 0; r < expect; ++r) {
      const int label = y(r);
      seen.push_back(label);
      for (int j = 0; j < P; ++j) REQUIRE(x.data()[r * P + j] == float(1000 * label + j));
    }
    ++k;
  }
  CHECK(k == batches);
  return seen;
}

bool is_permutation_of_all(std::vector<int> v, index_t n) {
  if (index_t(v.size()) != n) return false;
  std::sort(v.begin(), v.end());
  for (index_t i = 0; i < n; ++i)
    if (v[std::size_t(i)] != i) return false;
  return true;
}
}  // namespace

TEST_CASE("DataLoader: batch counts and sizes, every sample once per epoch", "[loader]") {
  for (index_t n : {1, 7, 64, 65, 127, 128}) {
    for (bool drop_last : {false, true}) {
      for (bool shuffle : {true, false}) {
        INFO("n = " << n << ", drop_last = " << drop_last << ", shuffle = " << shuffle);
        auto [x, y] = make_data(n);
        ts::DataLoader loader(std::move(x), std::move(y), {.batch_size = 64, .shuffle = shuffle, .seed = 7, .drop_last = drop_last});
        const index_t batches = drop_last ? n / 64 : (n + 63) / 64;
        CHECK(loader.size() == batches);
        CHECK(loader.samples() == n);
        for (std::uint64_t e = 0; e < 3; ++e) {
          const auto seen = run_epoch(loader.epoch(e), 64, n, drop_last);
          if (!drop_last) {
            CHECK(is_permutation_of_all(seen, n));
          } else {
            CHECK(index_t(seen.size()) == n / 64 * 64);
            CHECK(std::set<int>(seen.begin(), seen.end()).size() == seen.size());  // no sample twice
          }
          if (!shuffle) {
            for (std::size_t i = 0; i < seen.size(); ++i) CHECK(seen[i] == int(i));
          }
        }
      }
    }
  }
  // the expected counts spelled out: 1 -> 1 batch of 1; 7 -> 1 of 7; 65 -> 64 + 1; 127 -> 64 + 63
  auto [x, y] = make_data(127);
  ts::DataLoader loader(std::move(x), std::move(y), {.batch_size = 64});
  std::vector<index_t> sizes;
  for (auto& b : loader) sizes.push_back(b.labels.dim(0));
  CHECK(sizes == std::vector<index_t>{64, 63});
}

TEST_CASE("DataLoader: the same seed and epoch give the same order, another epoch or seed another", "[loader]") {
  for (index_t n : {65, 127}) {
    INFO("n = " << n);
    auto d1 = make_data(n);
    auto d2 = make_data(n);
    auto d3 = make_data(n);
    ts::DataLoader a(std::move(d1.first), std::move(d1.second), {.batch_size = 64, .seed = 11});
    ts::DataLoader b(std::move(d2.first), std::move(d2.second), {.batch_size = 64, .seed = 11});
    ts::DataLoader c(std::move(d3.first), std::move(d3.second), {.batch_size = 64, .seed = 12});
    const auto a0 = run_epoch(a.epoch(0), 64, n, false), a1 = run_epoch(a.epoch(1), 64, n, false);
    const auto b0 = run_epoch(b.epoch(0), 64, n, false), b1 = run_epoch(b.epoch(1), 64, n, false);
    const auto c0 = run_epoch(c.epoch(0), 64, n, false);
    CHECK(a0 == b0);
    CHECK(a1 == b1);
    CHECK(a0 != a1);
    CHECK(a0 != c0);
    // shuffled: far from the identity
    int fixed = 0;
    for (index_t i = 0; i < n; ++i) fixed += a0[std::size_t(i)] == i;
    CHECK(fixed < 10);
    // order(e) is what the batches follow
    const auto o = a.order(1);
    for (index_t i = 0; i < n; ++i) CHECK(o[std::size_t(i)] == a1[std::size_t(i)]);
    // iterating the same epoch again gives the same batches
    CHECK(run_epoch(a.epoch(1), 64, n, false) == a1);
    // `for (... : loader)` runs epochs 0, 1, 2, ...; set_epoch resumes at a given one
    CHECK(run_epoch(b, 64, n, false) == b0);
    CHECK(run_epoch(b, 64, n, false) == b1);
    CHECK(b.next_epoch() == 2);
    b.set_epoch(1);
    CHECK(run_epoch(b, 64, n, false) == b1);
  }
}

TEST_CASE("DataLoader: dynamic image shapes, other label types, bad arguments", "[loader]") {
  // the type load_idx_images returns: Shape<dyn, 1, dyn, dyn>
  auto [x, y] = make_data<Shape<dyn, 1, dyn, dyn>>(70);
  ts::DataLoader loader(std::move(x), std::move(y), {.batch_size = 32, .seed = 3, .drop_last = true});
  static_assert(std::is_same_v<decltype(loader)::batch_samples_type, ts::Tensor<float, Shape<dyn, 1, dyn, dyn>>>);
  CHECK(loader.size() == 2);
  const auto seen = run_epoch(loader.epoch(5), 32, 70, true);
  CHECK(seen.size() == 64u);

  // labels with more than one dimension (one-hot rows) follow their samples
  ts::Tensor<double, Shape<dyn, 3>> feats(10);
  ts::Tensor<std::int64_t, Shape<dyn, 2>> pairs(10);
  for (index_t i = 0; i < 10; ++i) {
    for (int j = 0; j < 3; ++j) feats(i, j) = double(10 * i + j);
    pairs(i, 0) = i;
    pairs(i, 1) = -i;
  }
  ts::DataLoader l2(feats, pairs, {.batch_size = 4, .seed = 9});
  static_assert(std::is_same_v<decltype(l2)::batch_labels_type, ts::Tensor<std::int64_t, Shape<dyn, 2>>>);
  std::vector<int> all;
  for (auto& [f, p] : l2.epoch(0)) {
    for (index_t r = 0; r < p.dim(0); ++r) {
      const auto i = p(r, 0);
      CHECK(p(r, 1) == -i);
      for (int j = 0; j < 3; ++j) CHECK(f(r, j) == double(10 * i + j));
      all.push_back(int(i));
    }
  }
  CHECK(is_permutation_of_all(all, 10));
  CHECK(feats(9, 2) == 92.0);  // the loader copied the tensors it was given; they are untouched

  auto [x2, y2] = make_data(5);
  CHECK_THROWS_AS(ts::DataLoader(x2, y2, {.batch_size = 0}), std::invalid_argument);
  ts::Tensor<std::int32_t, Shape<dyn>> y6(6);
  CHECK_THROWS_WITH(ts::DataLoader(x2, y6), Catch::Contains("5 samples") && Catch::Contains("6 labels"));
  CHECK_THROWS_AS(ts::DataLoader(x2, y6), ts::shape_error);

  // an empty data set has no batches
  auto [x0, y0] = make_data(0);
  ts::DataLoader empty(std::move(x0), std::move(y0), {.batch_size = 8});
  CHECK(empty.size() == 0);
  int k = 0;
  for (auto& b : empty) k += int(b.labels.dim(0)) + 1;
  CHECK(k == 0);
}

TEST_CASE("DataLoader: batch sizes near the index limit, misuse of gather and iterators", "[loader][errors]") {
  // a batch size larger than any data set: one batch of all samples (n + b - 1 must not wrap)
  constexpr index_t big = std::numeric_limits<index_t>::max();
  for (bool drop_last : {false, true}) {
    INFO("drop_last = " << drop_last);
    auto [x, y] = make_data(5);
    ts::DataLoader loader(std::move(x), std::move(y), {.batch_size = big, .shuffle = false, .drop_last = drop_last});
    CHECK(loader.size() == (drop_last ? 0 : 1));
    std::vector<index_t> sizes;
    for (auto& b : loader.epoch(0)) sizes.push_back(b.labels.dim(0));
    CHECK(sizes == (drop_last ? std::vector<index_t>{} : std::vector<index_t>{5}));
  }
  auto [x, y] = make_data(5);
  ts::DataLoader loader(std::move(x), std::move(y), {.batch_size = 2, .seed = 4});
  CHECK_THROWS_WITH(ts::DataLoader(make_data(3).first, make_data(3).second, {.batch_size = -3}),
                    Catch::Contains("batch_size") && Catch::Contains("-3"));

  // gather: the indices and the count must lie in the data set; its message names both
  decltype(loader)::batch b;
  const std::vector<index_t> ok = {4, 0, 2};
  loader.gather(ok.data(), 3, b);
  CHECK(b.labels.dim(0) == 3);
  CHECK(b.labels(0) == 4);
  CHECK(b.images.data()[P] == 0.0f);  // sample 0, pixel 0
  const std::vector<index_t> bad = {1, 5, 0};
  CHECK_THROWS_AS(loader.gather(bad.data(), 3, b), std::out_of_range);
  CHECK_THROWS_WITH(loader.gather(bad.data(), 3, b), Catch::Contains("index 5") && Catch::Contains("5 samples"));
  const std::vector<index_t> negative = {-1};
  CHECK_THROWS_AS(loader.gather(negative.data(), 1, b), std::out_of_range);
  CHECK_THROWS_WITH(loader.gather(ok.data(), 6, b), Catch::Contains("count 6") && Catch::Contains("5 samples"));
  CHECK_THROWS_AS(loader.gather(ok.data(), -1, b), std::out_of_range);
  CHECK(b.labels.dim(0) == 3);  // a refused gather leaves the batch as it was

  // dereferencing the end of an epoch (or an iterator of no epoch) throws instead of reading past the order
  auto epoch = loader.epoch(0);
  auto it = epoch.begin();
  for (int k = 0; k < 3; ++k) {
    REQUIRE(!(it == epoch.end()));
    CHECK(it->labels.dim(0) == (k < 2 ? 2 : 1));
    ++it;
  }
  REQUIRE(it == epoch.end());
  CHECK_THROWS_AS(*it, std::out_of_range);
  CHECK_THROWS_WITH(*it, Catch::Contains("batch 3") && Catch::Contains("3 batches"));
  decltype(loader)::iterator none;
  CHECK_THROWS_AS(*none, std::out_of_range);
}
