// The MPI process group's collectives and point-to-point calls against plain-loop references: every rank knows
// what every other rank holds (value(r, i) below), so each result is computed here by looping over the ranks.
// Sizes 1, 7, 33, 65, 127 and one of 300k elements; every element type; tensors and contiguous views; the
// asynchronous forms; the errors of bad calls (on every rank alike, so that no rank is left in a collective).
#include <catch2/catch.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "dist_support.hpp"
#include <tessera/tessera.hpp>


namespace {
const index_t sizes[] = {1, 7, 33, 65, 127, 300001};

/// What rank r holds at element i (small integers: exact in every element type, sums in range for int8).
template <class T>
T value(int r, index_t i) {
  if constexpr (std::is_same_v<T, bool>) return (r + i) % 3 == 0;
  else return T(int((3 * r + i) % 7) - 3 + (std::is_unsigned_v<T> ? 3 : 0));
}
template <class T>
double as_double(T v) {
  return double(float(v));
}
template <class T>
T reference(dist::reduce_op op, index_t i) {
  if constexpr (std::is_same_v<T, bool>) {
    bool acc = value<T>(0, i);
    for (int r = 1; r < world(); ++r) acc = op == dist::reduce_op::min ? (acc && value<T>(r, i)) : (acc || value<T>(r, i));
    return acc;
  } else {
    double acc = as_double(value<T>(0, i));
    for (int r = 1; r < world(); ++r) {
      const double v = as_double(value<T>(r, i));
      if (op == dist::reduce_op::sum || op == dist::reduce_op::avg) acc += v;
      else if (op == dist::reduce_op::max) acc = v > acc ? v : acc;
      else acc = v < acc ? v : acc;
    }
    if (op == dist::reduce_op::avg) acc /= world();
    return T(acc);
  }
}
template <class T>
ts::Tensor<T, ts::Shape<ts::dyn>> filled(index_t n, int r) {
  ts::Tensor<T, ts::Shape<ts::dyn>> t(n);
  for (index_t i = 0; i < n; ++i) t(i) = value<T>(r, i);
  return t;
}
template <class T>
std::vector<dist::reduce_op> ops_for() {
  if constexpr (ts::is_floating_v<T>) return {dist::reduce_op::sum, dist::reduce_op::avg, dist::reduce_op::max, dist::reduce_op::min};
  else return {dist::reduce_op::sum, dist::reduce_op::max, dist::reduce_op::min};
}
template <class T>
bool same(T a, T b) {
  if constexpr (ts::is_floating_v<T>) return std::abs(double(float(a)) - double(float(b))) <= 1e-6 * (1 + std::abs(double(float(b))));
  else return a == b;
}
}  // namespace

TEMPLATE_TEST_CASE("all_reduce: every op, sizes, element types; the blocking and the asynchronous form", "[dist]", float,
                   double, ts::bfloat16, std::int8_t, std::uint8_t, std::int32_t, std::int64_t, bool) {
  auto& g = dist_test::ctx().group();
  for (const auto op : ops_for<TestType>())
    for (const index_t n : sizes)
      for (const bool async : {false, true}) {
        auto t = filled<TestType>(n, rank());
        if (async) {
          dist::work w = g.all_reduce_async(t, op);
          w.wait();
          CHECK(w.done());
        } else {
          g.all_reduce(t, op);
        }
        index_t bad = 0, first = -1;
        for (index_t i = 0; i < n; ++i)
          if (!same(t(i), reference<TestType>(op, i)) && bad++ == 0) first = i;
        INFO(ts::type_name<TestType>() << " " << dist::name_of(op) << " n=" << n << (async ? " async" : "") << ": "
                                       << bad << " wrong, first at " << first);
        CHECK(bad == 0);
      }
}

TEMPLATE_TEST_CASE("broadcast from every root, all_gather, reduce_scatter", "[dist]", float, double, ts::bfloat16,
                   std::int8_t, std::int32_t, std::int64_t, bool) {
  auto& g = dist_test::ctx().group();
  for (const index_t n : sizes) {
    if (n > 1000 && !std::is_same_v<TestType, float>) continue;
    for (int root = 0; root < world(); ++root) {
      auto t = filled<TestType>(n, rank());
      g.broadcast(t, root);
      index_t bad = 0;
      for (index_t i = 0; i < n; ++i) bad += !same(t(i), value<TestType>(root, i));
      INFO("broadcast n=" << n << " root " << root);
      CHECK(bad == 0);
    }
    // all_gather: rank r's n elements at [r n, (r + 1) n)
    auto mine = filled<TestType>(n, rank());
    ts::Tensor<TestType, ts::Shape<ts::dyn>> all(n * world());
    g.all_gather(all, mine);
    index_t bad = 0;
    for (int r = 0; r < world(); ++r)
      for (index_t i = 0; i < n; ++i) bad += !same(all(r * n + i), value<TestType>(r, i));
    INFO("all_gather n=" << n);
    CHECK(bad == 0);
    // reduce_scatter: block b of the sum over the ranks of value(r, b n + i)
    if constexpr (!std::is_same_v<TestType, bool>) {
      auto in = filled<TestType>(n * world(), rank());
      ts::Tensor<TestType, ts::Shape<ts::dyn>> out(n);
      g.reduce_scatter(out, in, dist::reduce_op::sum);
      bad = 0;
      for (index_t i = 0; i < n; ++i) bad += !same(out(i), reference<TestType>(dist::reduce_op::sum, rank() * n + i));
      INFO("reduce_scatter n=" << n);
      CHECK(bad == 0);
    }
  }
}

TEST_CASE("send and recv around the ring, asynchronous, both directions at once", "[dist]") {
  auto& g = dist_test::ctx().group();
  const int next = (rank() + 1) % world(), prev = (rank() + world() - 1) % world();
  for (const index_t n : sizes) {
    auto out = filled<double>(n, rank());
    ts::Tensor<double, ts::Shape<ts::dyn>> in(n);
    // receive posted after the send on every rank: a blocking engine would deadlock on large messages
    dist::work s = g.send_async(out, next, 7);
    dist::work r = g.recv_async(in, prev, 7);
    r.wait();
    s.wait();
    index_t bad = 0;
    for (index_t i = 0; i < n; ++i) bad += in(i) != value<double>(prev, i);
    INFO("ring n=" << n);
    CHECK(bad == 0);
  }
  g.barrier();
}

TEST_CASE("collectives on views: a contiguous view is reduced in place, a strided one is refused", "[dist]") {
  auto& g = dist_test::ctx().group();
  ts::Tensor<float, ts::Shape<ts::dyn, ts::dyn>> m(7, 33);
  for (index_t i = 0; i < 7; ++i)
    for (index_t j = 0; j < 33; ++j) m(i, j) = float(rank() + i);
  auto rows = ts::slice<0>(m, 2, 5);  // rows 2..4: contiguous
  g.all_reduce(rows);
  int s = 0;
  for (int r = 0; r < world(); ++r) s += r;
  CHECK(m(1, 0) == float(rank() + 1));  // outside the view: untouched
  CHECK(m(2, 7) == float(s + world() * 2));
  CHECK(m(4, 32) == float(s + world() * 4));
  CHECK(m(5, 0) == float(rank() + 5));
  auto col = ts::slice<1>(m, 3, 4);  // one column: strided
  CHECK_THROWS_WITH(g.all_reduce(col), Catch::Contains("strided") && Catch::Contains("[7, 1]"));
}

TEST_CASE("bad calls throw on the calling rank before any communication", "[dist]") {
  auto& g = dist_test::ctx().group();
  ts::Tensor<std::int32_t, ts::Shape<ts::dyn>> t(5);
  CHECK_THROWS_WITH(g.all_reduce(t, dist::reduce_op::avg), Catch::Contains("avg needs a floating"));
  CHECK_THROWS_WITH(g.broadcast(t, world()), Catch::Contains("root rank " + std::to_string(world())));
  CHECK_THROWS_WITH(g.send(t, -1), Catch::Contains("destination rank -1"));
  ts::Tensor<std::int32_t, ts::Shape<ts::dyn>> wrong(5 * world() + 1);
  CHECK_THROWS_WITH(g.all_gather(wrong, t), Catch::Contains("all_gather") && Catch::Contains(std::to_string(5 * world() + 1)));
  CHECK(g.all_reduce_value(1) == world());
  CHECK(g.all_reduce_value(double(rank()), dist::reduce_op::max) == double(world() - 1));
}

TEST_CASE("context: rank, world, shard and a data loader's share", "[dist]") {
  auto& c = dist_test::ctx();
  CHECK(c.shard().rank == rank());
  CHECK(c.shard().world_size == world());
  CHECK(c.is_root() == (rank() == 0));
  // 103 samples over the ranks: every rank visits ceil(103 / world) of them; together (but for the padding, which
  // repeats the first ones) every sample once
  ts::Tensor<float, ts::Shape<ts::dyn, 2>> x(103);
  ts::Tensor<std::int32_t, ts::Shape<ts::dyn>> y(103);
  for (index_t i = 0; i < 103; ++i) {
    x(i, 0) = float(i);
    x(i, 1) = 0;
    y(i) = std::int32_t(i);
  }
  ts::DataLoader loader(x, y, {.batch_size = 8, .shuffle = true, .seed = 5, .shard = c.shard()});
  const index_t per = (103 + world() - 1) / world();
  CHECK(loader.shard_samples() == per);
  CHECK(loader.size() == (per + 7) / 8);
  std::vector<std::int32_t> mine;
  for (auto& [bx, by] : loader.epoch(2))
    for (index_t i = 0; i < by.size(); ++i) mine.push_back(by(i));
  REQUIRE(index_t(mine.size()) == per);
  ts::Tensor<std::int32_t, ts::Shape<ts::dyn>> local(per), all(per * world());
  for (index_t i = 0; i < per; ++i) local(i) = mine[std::size_t(i)];
  c.group().all_gather(all, local);
  std::vector<int> seen(103, 0);
  for (index_t i = 0; i < all.size(); ++i) ++seen[std::size_t(all(i))];
  int missing = 0, extra = 0;
  for (int s : seen) {
    missing += s == 0;
    extra += s > 1 ? s - 1 : 0;
  }
  CHECK(missing == 0);
  CHECK(extra == per * world() - 103);  // only the padding repeats
}
