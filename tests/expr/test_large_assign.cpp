// The elementwise loop's paths and the thresholds between them (kernels/cpu/elementwise.hpp): the one-run path of
// a small contiguous assignment, the work items of a team (whose chunk shrinks so that a short transcendental
// chain still splits), the streaming stores of destinations of 64 MiB and more, and the host block cache's huge,
// 2 MiB-aligned blocks (core/policy.hpp). Every result is compared with a plain loop over the inputs' values, at
// odd sizes on both sides of each threshold, through contiguous tensors, strided and offset views and broadcasts.
#include <cmath>
#include <cstdint>
#include <vector>

#include "test_support.hpp"

using ts::index_t;
using Vec = ts::Tensor<float, ts::Shape<ts::dyn>, ts::cpu_threads>;
using Mat = ts::Tensor<float, ts::Shape<ts::dyn, ts::dyn>, ts::cpu_threads>;

namespace {

void fill(float* p, index_t n, float seed) {
  for (index_t i = 0; i < n; ++i) p[i] = seed * float((i * 2654435761u) % 1009) * 1e-3f - 0.5f;
}

float chain_ref(float x, float y, float z) {
  return std::tanh(x * y + 0.5f * z) * (1.0f / (1.0f + std::exp(-(x - z))));
}

// Element i of out against want(i), with a relative tolerance (the vector tanh and sigmoid are not libm's).
template <class F>
void check_all(const float* out, index_t n, index_t stride, F&& want, float tol) {
  index_t bad = 0, first = -1;
  for (index_t i = 0; i < n; ++i) {
    const float w = want(i), g = out[i * stride];
    if (!(std::fabs(g - w) <= tol * (1.0f + std::fabs(w)))) {
      if (first < 0) first = i;
      ++bad;
    }
  }
  INFO("n " << n << ", first wrong element " << first);
  CHECK(bad == 0);
}

struct team_of {
  static int& calls() {
    static int c = 0;
    return c;
  }
  static int two() {
    ++calls();
    return 2;
  }
};

}  // namespace

TEST_CASE("the cost per element of an expression, and the team it gets", "[elementwise][threads]") {
  Vec x(4), y(4), z(4);
  const auto d = x.dims();
  using arith = decltype((1.5f * x + 2.5f * y + 3.5f * z).evaluator<1>(d));
  using chain = decltype((ts::tanh(x * y + 0.5f * z) * ts::sigmoid(x - z)).evaluator<1>(d));
  using add = decltype((x + y).evaluator<1>(d));
  STATIC_REQUIRE(ts::detail::ew_cost<add>::value == 9);     // two loads and an add
  STATIC_REQUIRE(ts::detail::ew_cost<arith>::value == 17);  // three loads, five arithmetic nodes, constants free
  STATIC_REQUIRE(ts::detail::ew_cost<chain>::value == 105);  // five loads, five arithmetic nodes, two functions

  // below the threshold the policy is not even asked for its thread count
  team_of::calls() = 0;
  CHECK(ts::detail::elementwise_team(ts::detail::min_parallel_work - 1, &team_of::two) == 1);
  CHECK(team_of::calls() == 0);
  CHECK(ts::detail::elementwise_team(ts::detail::min_parallel_work, &team_of::two) == 2);
  CHECK(team_of::calls() == 1);

  // a team's chunk: whole 64-element runs, at most chunk_elements, and enough items for every thread
  for (index_t total : {index_t(1), index_t(63), index_t(65), index_t(6007), index_t(20011), index_t(1) << 20}) {
    for (int nt : {2, 3, 16}) {
      const index_t c = ts::detail::elementwise_chunk(total, nt);
      INFO("total " << total << ", threads " << nt << ", chunk " << c);
      CHECK(c % 64 == 0);
      CHECK(c <= ts::detail::chunk_elements);
      if (total <= ts::detail::chunk_elements * index_t(nt)) CHECK(c * nt >= total);  // one item a thread at most
      if (total >= 64 * index_t(nt) && total <= ts::detail::chunk_elements * index_t(nt))
        CHECK((total + c - 1) / c == nt);                                            // and exactly one each
    }
  }
  CHECK(ts::detail::elementwise_chunk(100, 1) == ts::detail::chunk_elements);
}

TEST_CASE("assignments on both sides of the team threshold, 1 and 2 threads", "[elementwise][threads]") {
  // the chain gets a team from min_parallel_work / 109 elements (about 6000), x + y from / 13 (about 50000)
  const index_t chain_at = ts::detail::min_parallel_work / 109, add_at = ts::detail::min_parallel_work / 13;
  for (int threads : {1, 2}) {
    ts::cpu_threads::set_num_threads(threads);
    for (index_t n : {index_t(1), index_t(7), index_t(17), index_t(1023), chain_at - 1, chain_at + 1, chain_at + 67,
                      index_t(16385), add_at - 3, add_at + 5, index_t(100003)}) {
      Vec x(n), y(n), z(n), out(n);
      fill(x.data(), n, 1.f), fill(y.data(), n, 2.f), fill(z.data(), n, 3.f);
      std::vector<float> xs(x.data(), x.data() + n), ys(y.data(), y.data() + n), zs(z.data(), z.data() + n);
      INFO(threads << " threads, n " << n);
      out = ts::tanh(x * y + 0.5f * z) * ts::sigmoid(x - z);
      check_all(out.data(), n, 1, [&](index_t i) { return chain_ref(xs[i], ys[i], zs[i]); }, 2e-5f);
      out = x + y;
      check_all(out.data(), n, 1, [&](index_t i) { return xs[i] + ys[i]; }, 0.f);
      out = 1.5f * x + 2.5f * y + 3.5f * z;
      check_all(out.data(), n, 1, [&](index_t i) { return 1.5f * xs[i] + 2.5f * ys[i] + 3.5f * zs[i]; }, 1e-6f);
    }
  }
  ts::cpu_threads::set_num_threads(0);
}

TEST_CASE("strided, offset and broadcast operands around the thresholds", "[elementwise][threads][views]") {
  for (int threads : {1, 2}) {
    ts::cpu_threads::set_num_threads(threads);
    for (index_t n : {index_t(5), index_t(333), index_t(6151), index_t(50423)}) {
      INFO(threads << " threads, n " << n);
      Vec big(2 * n + 3), z(n), out(n);
      fill(big.data(), 2 * n + 3, 1.f), fill(z.data(), n, 3.f);
      auto xs = ts::slice<0>(big, 1, 2 * n + 1, 2);  // every other element, from 1: a gather
      auto off = ts::slice<0>(big, 3, n + 3);        // contiguous, 12 bytes off the block's alignment
      out = ts::tanh(xs * off + 0.5f * z) * ts::sigmoid(xs - z);
      const float* b = big.data();
      check_all(out.data(), n, 1, [&](index_t i) { return chain_ref(b[1 + 2 * i], b[3 + i], z.data()[i]); }, 2e-5f);
      // into a strided destination: every third element of a longer tensor
      Vec wide(3 * n);
      fill(wide.data(), 3 * n, 5.f);
      std::vector<float> before(wide.data(), wide.data() + 3 * n);
      ts::slice<0>(wide, 0, 3 * n, 3) = off + z;
      check_all(wide.data(), n, 3, [&](index_t i) { return b[3 + i] + z.data()[i]; }, 0.f);
      index_t touched = 0;
      for (index_t i = 0; i < 3 * n; ++i)
        if (i % 3 != 0 && wide.data()[i] != before[i]) ++touched;
      CHECK(touched == 0);
    }
    // rows of a matrix with padded rows (a column slice) plus a broadcast row: the row walk with team chunks
    for (index_t rows : {index_t(3), index_t(97), index_t(1201)}) {
      const index_t cols = 37;
      Mat m(rows, cols + 4), out(rows, cols);
      Vec r(cols);
      fill(m.data(), rows * (cols + 4), 2.f), fill(r.data(), cols, 7.f);
      auto mv = ts::slice<1>(m, 2, cols + 2);
      out = ts::sigmoid(mv) * r + mv;
      check_all(out.data(), rows * cols, 1, [&](index_t k) {
        const float v = m.data()[(k / cols) * (cols + 4) + 2 + k % cols];
        return (1.0f / (1.0f + std::exp(-v))) * r.data()[k % cols] + v;
      }, 2e-5f);
    }
  }
  ts::cpu_threads::set_num_threads(0);
}

TEST_CASE("destinations of 64 MiB and more: streaming stores, odd sizes and offsets", "[elementwise][stream]") {
  const index_t n = index_t(ts::detail::stream_store_bytes / sizeof(float)) + 13;  // just over the threshold
  for (int threads : {1, 2}) {
    ts::cpu_threads::set_num_threads(threads);
    Vec x(n + 5), y(n), out(n + 5);
    fill(x.data(), n + 5, 1.f), fill(y.data(), n, 2.f);
    auto xo = ts::slice<0>(x, 5, n + 5);
    auto oo = ts::slice<0>(out, 3, n + 3);  // the destination starts 12 bytes past a 64-byte line
    out.data()[0] = out.data()[1] = out.data()[2] = 42.f, out.data()[n + 3] = out.data()[n + 4] = 43.f;
    oo = 2.0f * xo - y;
    INFO(threads << " threads");
    check_all(out.data() + 3, n, 1, [&](index_t i) { return 2.0f * x.data()[5 + i] - y.data()[i]; }, 1e-6f);
    CHECK(out.data()[0] == 42.f);
    CHECK(out.data()[2] == 42.f);
    CHECK(out.data()[n + 3] == 43.f);
    CHECK(out.data()[n + 4] == 43.f);
    Vec fresh = x * 0.5f;  // a new tensor: a huge block, streamed
    check_all(fresh.data(), n + 5, 1, [&](index_t i) { return x.data()[i] * 0.5f; }, 0.f);
  }
  ts::cpu_threads::set_num_threads(0);
}

TEST_CASE("the host block cache: huge blocks start on 2 MiB and a 1 GiB block is kept", "[memory]") {
  auto& cache = ts::detail::host_block_cache::instance();
  cache.release_all();
  constexpr std::size_t H = ts::detail::host_block_cache::header;
  for (std::size_t bytes : {ts::detail::host_block_cache::huge_bytes - 2 * H, ts::detail::host_block_cache::huge_bytes + 12,
                            (std::size_t(33) << 20) + 4096 * 3 + 4}) {
    void* p = cache.allocate(bytes);
    REQUIRE(p != nullptr);
    const auto start = reinterpret_cast<std::uintptr_t>(p) - H;
    const std::size_t total = *reinterpret_cast<std::size_t*>(start);
    INFO("bytes " << bytes << ", total " << total);
    CHECK(total >= bytes + H);
    if (total >= ts::detail::host_block_cache::huge_bytes) {
      CHECK(start % ts::detail::host_block_cache::huge_page == 0);
      CHECK(total % ts::detail::host_block_cache::huge_page == 0);
    } else {
      CHECK(total % 64 == 0);
    }
    static_cast<char*>(p)[0] = 1, static_cast<char*>(p)[bytes - 1] = 2;  // both ends are usable
    cache.deallocate(p);
  }
  cache.release_all();
  // a 1 GiB tensor's block (never touched here: no memory is faulted in) is kept, and handed back for the same size
  const std::size_t gib = std::size_t(1) << 30;
  void* p = cache.allocate(gib);
  cache.deallocate(p);
  CHECK(cache.cached_bytes() == gib);
  void* q = cache.allocate(gib);
  CHECK(q == p);
  CHECK(cache.cached_bytes() == 0);
  cache.deallocate(q);
  void* r = cache.allocate(4096 * 64);  // another block does not fit beside it: freed, not kept
  cache.deallocate(r);
  CHECK(cache.cached_bytes() == gib);
  cache.release_all();
  CHECK(cache.cached_bytes() == 0);
}
