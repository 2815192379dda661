// dist::nccl_group (dist/nccl.hpp) on one GPU: a one-rank communicator (ncclCommInitRank, size 1, a fresh id), on
// which every collective is a copy of its input, checked against the input's values computed again by plain
// loops: all_reduce sum / avg / max / min, broadcast from 0, all_gather, reduce_scatter, a send to itself and its
// receive in one NCCL group, blocking and asynchronous, for float, double, bfloat16, int32, int64, int8, uint8
// (and bool: or / and) at 1, 7, 33, 65, 127 and 300001 elements (the outputs start as other values, so a
// collective that moved nothing fails). Also: an operation waits for tessera's queued kernels (a spinning kernel
// ahead of the one that writes the operand), all_reduce_value of host scalars, barrier, and the refusals (host
// tensors and pointers, avg on integers and bool, blocking calls inside a group, a wait past the timeout, which
// aborts the communicator: in a child process). Without a GPU: prints why and exits 77 (skipped).
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "cuda_test_support.hpp"

#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <tessera/dist/nccl.hpp>
#include <tessera/tessera.hpp>
#include <type_traits>
#include <vector>

namespace ts = tessera;
namespace dist = tessera::dist;
using ts::dyn;
using ts::Shape;

namespace {
const std::size_t sizes[] = {1, 7, 33, 65, 127, 300001};

/// A one-rank communicator on the current device.
std::unique_ptr<dist::nccl_group> one_rank(std::chrono::milliseconds timeout = std::chrono::seconds(60)) {
  ncclUniqueId id{};
  REQUIRE(ncclGetUniqueId(&id) == ncclSuccess);
  int dev = -1;
  cuda_test::cuda_ok(cudaGetDevice(&dev), "cudaGetDevice");
  return std::make_unique<dist::nccl_group>(0, 1, id, dev, timeout);
}

/// Element i of pattern `salt` of type T (values that a wrong element type or width would not keep).
template <class T>
T value(std::size_t i, int salt) {
  const std::size_t k = i * 7 + std::size_t(salt) * 131;
  if constexpr (std::is_same_v<T, float>) return float(k % 2001) * 0.37f - 370.0f;
  else if constexpr (std::is_same_v<T, double>) return double(i) + double(k % 2001) * 1e-12 + 0.5;  // not a float
  else if constexpr (std::is_same_v<T, ts::bfloat16>) return ts::bfloat16(float(int(k % 255) - 127));
  else if constexpr (std::is_same_v<T, std::int8_t>) return std::int8_t(int(k % 256) - 128);
  else if constexpr (std::is_same_v<T, std::uint8_t>) return std::uint8_t(k % 256);
  else if constexpr (std::is_same_v<T, std::int32_t>)
    return std::int32_t(std::int64_t((k * 2654435761ull) % 4000000000ull) - 2000000000);
  else if constexpr (std::is_same_v<T, std::int64_t>) return std::int64_t(i) * 3000000021LL - 5000000000000LL + salt;
  else return k % 3 == 0;  // bool
}

template <class T>
using dvec = ts::Tensor<T, Shape<dyn>, ts::cuda>;

/// A device vector of n elements of pattern `salt`.
template <class T>
dvec<T> device_values(std::size_t n, int salt) {
  ts::Tensor<T, Shape<dyn>> h{ts::index_t(n)};
  for (std::size_t i = 0; i < n; ++i) h.data()[i] = value<T>(i, salt);
  return ts::to<ts::cuda>(h);
}

template <class T>
bool same(T a, T b) {
  if constexpr (std::is_same_v<T, ts::bfloat16>) return float(a) == float(b);
  else return a == b;
}

/// got (a device vector) holds pattern `salt`; the first wrong element is reported.
template <class T>
void require_pattern(const dvec<T>& got, int salt, const std::string& what) {
  const auto h = ts::to<ts::cpu>(got);
  std::size_t wrong = 0, first = 0;
  for (std::size_t i = 0; i < std::size_t(h.size()); ++i)
    if (!same(h.data()[i], value<T>(i, salt)) && wrong++ == 0) first = i;
  INFO(what << " of " << h.size() << " elements of " << dist::name_of(dist::dtype_of<T>()) << ": " << wrong
            << " wrong, the first at " << first);
  REQUIRE(wrong == 0);
}

template <class T>
void every_collective(dist::nccl_group& g) {
  const bool floating = dist::is_floating(dist::dtype_of<T>());
  for (std::size_t n : sizes) {
    INFO("n = " << n);
    for (auto op : {dist::reduce_op::sum, dist::reduce_op::avg, dist::reduce_op::max, dist::reduce_op::min}) {
      auto x = device_values<T>(n, 1);
      if (op == dist::reduce_op::avg && !floating) {
        CHECK_THROWS_AS(g.all_reduce(x, op), dist::error);
        continue;
      }
      g.all_reduce(x, op);
      require_pattern(x, 1, std::string("all_reduce ") + dist::name_of(op));
      auto y = device_values<T>(n, 2);
      dist::work w = g.all_reduce_async(y, op);
      w.wait();
      CHECK(w.done());
      require_pattern(y, 2, std::string("all_reduce_async ") + dist::name_of(op));
    }
    auto b = device_values<T>(n, 3);
    g.broadcast(b, 0);
    require_pattern(b, 3, "broadcast");
    g.broadcast_async(b, 0).wait();
    require_pattern(b, 3, "broadcast_async");

    auto in = device_values<T>(n, 4);
    auto out = device_values<T>(n, 5);
    g.all_gather(out, in);
    require_pattern(out, 4, "all_gather");
    require_pattern(in, 4, "all_gather's input");
    auto out2 = device_values<T>(n, 5);
    g.all_gather_async(out2, in).wait();
    require_pattern(out2, 4, "all_gather_async");

    auto rs_in = device_values<T>(n, 6);
    auto rs_out = device_values<T>(n, 7);
    g.reduce_scatter(rs_out, rs_in, floating ? dist::reduce_op::avg : dist::reduce_op::sum);
    require_pattern(rs_out, 6, "reduce_scatter");
    auto rs_out2 = device_values<T>(n, 7);
    g.reduce_scatter_async(rs_out2, rs_in, dist::reduce_op::max).wait();
    require_pattern(rs_out2, 6, "reduce_scatter_async max");

    auto src = device_values<T>(n, 8);
    auto dst = device_values<T>(n, 9);
    g.group_start();
    dist::work ws = g.send_async(src, 0, 3);
    dist::work wr = g.recv_async(dst, 0, 3);
    CHECK_FALSE(wr.done());  // queued at group_end()
    dist::work early = wr;   // (a copy: its wait gives up its handle, wr keeps its own)
    CHECK_THROWS_WITH(early.wait(), Catch::Contains("group_end"));
    g.group_end();
    ws.wait();
    wr.wait();
    require_pattern(dst, 8, "send to self / recv");
    require_pattern(src, 8, "send's input");
  }
}

__global__ void spin(long long cycles) {
  const long long t0 = clock64();
  while (clock64() - t0 < cycles) {
  }
}
}  // namespace

TEMPLATE_TEST_CASE("nccl_group: every collective on one rank copies its input", "[cuda][dist]", float, double,
                   ts::bfloat16, std::int32_t, std::int64_t, std::int8_t, std::uint8_t, bool) {
  auto g = one_rank();
  CHECK(g->rank() == 0);
  CHECK(g->size() == 1);
  CHECK(g->on_device());
  CHECK(std::string(g->engine()) == "nccl");
  every_collective<TestType>(*g);
}

TEST_CASE("nccl_group: an operation waits for tessera's queued kernels", "[cuda][dist]") {
  auto g = one_rank();
  const std::size_t n = 300001;
  ts::Tensor<float, Shape<dyn>> h{ts::index_t(n)};
  for (std::size_t i = 0; i < n; ++i) h.data()[i] = float(i % 1000) * 0.5f;
  auto x = ts::to<ts::cuda>(h);
  dvec<float> y = device_values<float>(n, 11), out = device_values<float>(n, 12);
  // ~0.2 s of spinning on tessera's stream, then the kernel that writes y, then the gather that reads it
  spin<<<1, 1, 0, ts::cuda_detail::stream()>>>(400000000LL);
  cuda_test::cuda_ok(cudaGetLastError(), "spin launch");
  y = x * 2.0f + 1.0f;
  dist::work w = g->all_gather_async(out, y);
  w.wait();
  dvec<float> z = out + 1.0f;  // queued after wait(): sees the gathered values
  const auto hz = ts::to<ts::cpu>(z), hout = ts::to<ts::cpu>(out);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const float ref = float(i % 1000) * 0.5f * 2.0f + 1.0f;
    if (hout.data()[i] != ref || hz.data()[i] != ref + 1.0f) ++wrong;
  }
  CHECK(wrong == 0);
}

TEST_CASE("nccl_group: host scalars, barrier, empty operands", "[cuda][dist]") {
  auto g = one_rank();
  CHECK(g->all_reduce_value(3.25) == 3.25);
  CHECK(g->all_reduce_value(std::int64_t(5000000000123LL), dist::reduce_op::max) == 5000000000123LL);
  CHECK(g->all_reduce_value(7.5f, dist::reduce_op::avg) == 7.5f);
  CHECK(g->all_reduce_value(true, dist::reduce_op::sum) == true);
  CHECK(g->all_reduce_value(false, dist::reduce_op::min) == false);
  g->barrier();
  dist::work w = g->barrier_async();
  w.wait();
  CHECK(w.done());
  dvec<float> empty{ts::index_t(0)};
  dist::work e = g->all_reduce_async(empty);
  CHECK(e.done());
  e.wait();
}

TEST_CASE("nccl_group: refusals", "[cuda][dist]") {
  auto g = one_rank();
  ts::Tensor<float, Shape<dyn>> host{ts::index_t(100)};
  for (int i = 0; i < 100; ++i) host.data()[i] = float(i);
  CHECK_THROWS_AS(g->all_reduce(host), dist::error);
  CHECK_THROWS_WITH(g->broadcast(host, 0), Catch::Contains("host tensor") && Catch::Contains("nccl"));
  // the raw operations check the pointer (more than all_reduce_value's 64 bytes)
  CHECK_THROWS_WITH(g->all_reduce_raw(host.data(), 100, dist::dtype::f32, dist::reduce_op::sum, true),
                    Catch::Contains("not device memory"));
  CHECK_THROWS_WITH(g->send_raw(host.data(), 100, dist::dtype::f32, 0, 0, false), Catch::Contains("not device memory"));
  auto i32 = device_values<std::int32_t>(65, 1);
  CHECK_THROWS_WITH(g->all_reduce(i32, dist::reduce_op::avg), Catch::Contains("avg") && Catch::Contains("int32"));
  auto b = device_values<bool>(65, 1);
  CHECK_THROWS_WITH(g->all_reduce(b, dist::reduce_op::avg), Catch::Contains("avg") && Catch::Contains("bool"));
  CHECK_THROWS_AS(g->group_end(), dist::error);
  g->group_start();
  CHECK_THROWS_WITH(g->all_reduce(i32), Catch::Contains("inside group_start"));
  g->group_end();
  g->all_reduce(i32);  // the group still works
  require_pattern(i32, 1, "all_reduce after the refusals");
}

// The timeout aborts the communicator while its operation is still queued behind a spinning kernel; what becomes of
// that queued NCCL kernel afterwards is NCCL's business, so this runs in a child process (this executable again, on
// the hidden test below), which prints its verdict and leaves with _Exit.
TEST_CASE("nccl_group: a wait past the timeout throws and aborts the communicator", "[cuda][dist]") {
  char self[4096];
  const ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
  REQUIRE(len > 0);
  self[len] = 0;
  const std::string cmd = "timeout 120 '" + std::string(self) + "' '[nccl_timeout_child]' 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p)) out += buf;
  const int status = pclose(p);
  INFO("the child's output:\n" << out);
  CHECK(out.find("nccl timeout child: passed") != std::string::npos);
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
}

TEST_CASE("nccl_group: the timeout, in a child process (run by the test above)", "[.][nccl_timeout_child]") {
  std::string failed;
  auto g = one_rank(std::chrono::milliseconds(200));
  auto x = device_values<float>(1000, 1);
  // the operation waits for tessera's stream, which spins for ~2 s: longer than the timeout
  spin<<<1, 1, 0, ts::cuda_detail::stream()>>>(4000000000LL);
  if (cudaGetLastError() != cudaSuccess) failed += "the spin kernel did not launch; ";
  dist::work w = g->all_reduce_async(x);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    w.wait();
    failed += "wait() returned; ";
  } catch (const dist::timeout_error& e) {
    const std::string m = e.what();
    if (m.find("all_reduce") == std::string::npos || m.find("200 ms") == std::string::npos)
      failed += "the timeout's message does not name the operation and the timeout: " + m + "; ";
  } catch (const std::exception& e) {
    failed += std::string("wait() threw another error: ") + e.what() + "; ";
  }
  const auto waited = std::chrono::steady_clock::now() - t0;
  if (waited < std::chrono::milliseconds(200)) failed += "wait() gave up before the timeout; ";
  try {
    g->all_reduce(x);
    failed += "the aborted group ran an all_reduce; ";
  } catch (const dist::error& e) {
    if (std::string(e.what()).find("aborted") == std::string::npos)
      failed += std::string("the error does not say 'aborted': ") + e.what() + "; ";
  }
  std::printf("nccl timeout child: %s%s\n", failed.empty() ? "passed" : "FAILED: ", failed.c_str());
  std::fflush(stdout);
  std::_Exit(failed.empty() ? 0 : 1);
}
