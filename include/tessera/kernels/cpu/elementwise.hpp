// The CPU loop for a fused elementwise tree: one pass over the destination, SIMD along the innermost
// (coalesced) dimension, split into chunks of rows and columns over OpenMP threads, with streaming
// stores for destinations larger than the caches.
//
// Threads: an assignment forks an OpenMP team only when its work (elements times the tree's cost per element,
// ew_cost) reaches min_parallel_work, so that a small assignment never pays for starting a team (and never asks
// the policy how many threads it has), and tanh(x * y + 0.5 z) * sigmoid(x - z) (109 units an element) gets threads
// at an eighth of the length that x + y (13) needs. docs/performance-notes.md has the measurements.
#pragma once
#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>

#include "tessera/core/eval.hpp"
#include "tessera/core/ops.hpp"
#include "tessera/core/simd.hpp"
#include "tessera/core/stats.hpp"
#include "tessera/kernels/loop.hpp"

namespace tessera::detail {

/// Destinations at least this large are written with non-temporal stores.
#ifndef TESSERA_STREAM_STORE_BYTES
#define TESSERA_STREAM_STORE_BYTES (std::size_t(64) << 20)
#endif
inline constexpr std::size_t stream_store_bytes = TESSERA_STREAM_STORE_BYTES;
#ifndef TESSERA_CHUNK_ELEMENTS
#define TESSERA_CHUNK_ELEMENTS 16384
#endif
inline constexpr index_t chunk_elements = TESSERA_CHUNK_ELEMENTS;
/// Elements ahead that contiguous leaves are prefetched (software prefetch overlaps the math with the loads).
#ifndef TESSERA_PREFETCH_DISTANCE
#define TESSERA_PREFETCH_DISTANCE 1024
#endif
inline constexpr index_t prefetch_distance = TESSERA_PREFETCH_DISTANCE;
/// The least work (elements times their ew_cost, about 10 ps a unit) worth a team of threads: some 6 us of one
/// thread's time, twice the measured break-even of a team of 2 on a Zen 3 guest (docs/performance-notes.md).
#ifndef TESSERA_MIN_PARALLEL_WORK
#define TESSERA_MIN_PARALLEL_WORK 655360
#endif
inline constexpr index_t min_parallel_work = TESSERA_MIN_PARALLEL_WORK;

/// The cost per element of one node of an evaluator tree, in units of about 10 ps of one Zen 3 core on data in L2:
/// a leaf (a load) 4, a constant 0, an arithmetic node 1, a function on floating types only (exp, log, tanh, sigmoid,
/// gelu, sqrt, pow: polynomial evaluations) 40. The store adds 4 per element (cpu_elementwise).
template <class Op>
inline constexpr int op_cost = std::is_base_of_v<op::floating_base, Op> ? 40 : 1;
/// The cost per element of an evaluator tree. (Matched on the shape Node<Op, Children...> of expr/'s evaluators; a
/// leaf_eval 4, a scalar_eval 0, any other evaluator 4.)
template <class Ev>
struct ew_cost : std::integral_constant<int, 4> {};
template <class T>
struct ew_cost<scalar_eval<T>> : std::integral_constant<int, 0> {};
template <template <class, class...> class Node, class Op, class... C>
struct ew_cost<Node<Op, C...>> : std::integral_constant<int, op_cost<Op> + (0 + ... + ew_cost<C>::value)> {};
/// The summed cost of a tuple of evaluators (cpu_elementwise_multi).
template <class Tuple>
struct ew_cost_sum;
template <class... E>
struct ew_cost_sum<std::tuple<E...>> : std::integral_constant<int, (0 + ... + ew_cost<E>::value)> {};

/// The team for an elementwise loop of `work` units (elements times their cost): threads() when the work reaches
/// min_parallel_work, else 1 without calling threads().
inline int elementwise_team(index_t work, int (*threads)()) { return work >= min_parallel_work ? threads() : 1; }
/// Elements per work item: chunk_elements, or fewer so that a team of nt gets one item each (whole 64-element runs).
inline index_t elementwise_chunk(index_t total, int nt) {
  if (nt <= 1) return chunk_elements;
  const index_t share = ((total + nt - 1) / nt + 63) / 64 * 64;
  return share < chunk_elements ? share : chunk_elements;
}

/// items work items on nt OpenMP threads (nt > 1 and more than one item) or on this thread.
template <class F>
void run_items(index_t items, int nt, F&& run_item) {
  if (nt > items) nt = int(items);
  if (nt > 1) {
#if defined(_OPENMP)
#pragma omp parallel for num_threads(nt) schedule(static)
#endif
    for (index_t it = 0; it < items; ++it) run_item(it);
  } else {
    for (index_t it = 0; it < items; ++it) run_item(it);
  }
}

template <class T, class Ev>
TS_INLINE void scalar_row(Ev& ev, T* out, index_t ds, index_t j0, index_t j1) {
  for (index_t j = j0; j < j1; ++j) out[j * ds] = static_cast<T>(ev.scalar(j));
}

#if TESSERA_SIMD
template <class T, int N, bool Contig, class Ev>
TS_INLINE void packet_row(Ev& ev, T* out, index_t j0, index_t j1, bool stream) {
  index_t j = j0;
  if (stream) {
    for (; j < j1 && (reinterpret_cast<std::uintptr_t>(out + j) & 63); ++j) out[j] = static_cast<T>(ev.scalar(j));
    for (; j + N <= j1; j += N) {
      if constexpr (Contig && prefetch_distance > 0) ev.prefetch(j + prefetch_distance);
      simd::store_stream<T, N>(out + j, ev.template packet<N, Contig>(j));
    }
  } else {
    for (; j + 2 * N <= j1; j += 2 * N) {
      if constexpr (Contig && prefetch_distance > 0) ev.prefetch(j + prefetch_distance);
      auto a = ev.template packet<N, Contig>(j);
      auto b = ev.template packet<N, Contig>(j + N);
      simd::store<T, N>(out + j, a);
      simd::store<T, N>(out + j + N, b);
    }
    for (; j + N <= j1; j += N) simd::store<T, N>(out + j, ev.template packet<N, Contig>(j));
  }
  for (; j < j1; ++j) out[j] = static_cast<T>(ev.scalar(j));
}
#endif

/// Run `ev` over the plan into `dst` (already coalesced), on threads() threads at most (see run_items).
template <class T, bool Packable, std::size_t MaxLane, int R, class Ev>
void cpu_elementwise(T* dst, const loop_plan<R>& p, const Ev& ev, int (*threads)()) {
  const index_t n = p.inner(), rows = p.rows(), total = n * rows;
  if (total == 0) return;
  stats::count_pass();
  const int nd = p.nd;
  const index_t ds = p.dst_s[nd - 1];
  const bool stream = ds == 1 && total * index_t(sizeof(T)) >= index_t(stream_store_bytes);
  (void)stream;  // (only the SIMD path streams)
  const int nt = elementwise_team(total * (4 + ew_cost<Ev>::value), threads);
  const index_t chunk = elementwise_chunk(total, nt);
  const index_t cpr = n > chunk ? (n + chunk - 1) / chunk : 1;  // chunks per row
  const index_t rpi = n >= chunk ? 1 : (chunk + n - 1) / n;     // rows per item
  const index_t items = cpr > 1 ? rows * cpr : (rows + rpi - 1) / rpi;
  const bool contig = all_leaves_contiguous(ev);
#if TESSERA_SIMD
  if constexpr (Packable) {
    if (nt == 1 && nd == 1 && ds == 1 && !stream) {  // one contiguous run on this thread: no work items, no row walk
      constexpr int N = simd::lanes_for<MaxLane>;
      Ev e = ev;
      index_t idx[1] = {0};
      e.set_row(idx, 0);
      if (contig) packet_row<T, N, true>(e, dst, 0, n, false);
      else packet_row<T, N, false>(e, dst, 0, n, false);
      return;
    }
  }
#endif

  auto run_item = [&](index_t item) {
    Ev e = ev;
    index_t idx[loop_plan<R>::cap] = {};
    index_t r0, r1, j0, j1;
    if (cpr > 1) {
      r0 = item / cpr;
      r1 = r0 + 1;
      j0 = (item % cpr) * chunk;
      j1 = j0 + chunk < n ? j0 + chunk : n;
    } else {
      r0 = item * rpi;
      r1 = r0 + rpi < rows ? r0 + rpi : rows;
      j0 = 0;
      j1 = n;
    }
    unflatten(r0, idx, p.dims, nd - 1);
    for (index_t r = r0; r < r1; ++r) {
      e.set_row(idx, nd - 1);
      T* out = dst;
      for (int d = 0; d + 1 < nd; ++d) out += idx[d] * p.dst_s[d];
#if TESSERA_SIMD
      if constexpr (Packable) {
        constexpr int N = simd::lanes_for<MaxLane>;
        if (ds == 1) {
          if (contig) packet_row<T, N, true>(e, out, j0, j1, stream);
          else packet_row<T, N, false>(e, out, j0, j1, stream);
        } else {
          scalar_row<T>(e, out, ds, j0, j1);
        }
      } else
#endif
      {
        scalar_row<T>(e, out, ds, j0, j1);
      }
      next_index(idx, p.dims, nd - 1);
    }
  };

  run_items(items, nt, run_item);
#if TESSERA_SIMD
  if (stream) simd::stream_fence();
#endif
}

/// K evaluators over one flat range [0, n) (rank-1, every leaf contiguous), run in one pass: at each index the
/// value of evaluator k is added into destination dest_of[k] (-1: skipped), which starts from its own contents where
/// accumulate[d] and from zero otherwise; each destination is written once. The gradients of a fused expression
/// (autodiff/fused.hpp): every occurrence of a leaf in the tree is one evaluator, every distinct leaf one destination.
template <class T, std::size_t MaxLane, int K, class Evs>
void cpu_elementwise_multi(index_t n, const Evs& evs, const int* dest_of, T* const* dests, const bool* accumulate, int ndest,
                           int (*threads)()) {
  static_assert(K >= 1 && K == int(std::tuple_size_v<Evs>));
  if (n == 0 || ndest == 0) return;
  stats::count_pass();
  bool stream = index_t(sizeof(T)) * n >= index_t(stream_store_bytes);
  for (int d = 0; d < ndest; ++d) stream = stream && (reinterpret_cast<std::uintptr_t>(dests[d]) & 63) == 0;
  const int nt = elementwise_team(n * (4 * ndest + ew_cost_sum<Evs>::value), threads);
  const index_t chunk = elementwise_chunk(n, nt);
  const index_t items = (n + chunk - 1) / chunk;

  auto run_item = [&](index_t item) {
    Evs e = evs;
    std::apply([](auto&... ev) { index_t idx[1] = {0}; (ev.set_row(idx, 0), ...); }, e);
    const index_t j0 = item * chunk, j1 = j0 + chunk < n ? j0 + chunk : n;
    index_t j = j0;
#if TESSERA_SIMD
    if constexpr (simd::packable_v<T>) {
      constexpr int N = simd::lanes_for<MaxLane>;
      using pk = simd::packet<T, N>;
      for (; j + N <= j1; j += N) {
        pk acc[K];
        for (int d = 0; d < ndest; ++d) acc[d] = accumulate[d] ? simd::load<T, N>(dests[d] + j) : simd::splat<T, N>(T(0));
        int k = 0;
        std::apply([&](auto&... ev) {
          ((dest_of[k] >= 0 ? (void)(acc[dest_of[k]] += ev.template packet<N, true>(j)) : (void)0, ++k), ...);
        }, e);
        for (int d = 0; d < ndest; ++d) {
          if (stream) simd::store_stream<T, N>(dests[d] + j, acc[d]);
          else simd::store<T, N>(dests[d] + j, acc[d]);
        }
      }
    }
#endif
    for (; j < j1; ++j) {
      T acc[K];
      for (int d = 0; d < ndest; ++d) acc[d] = accumulate[d] ? dests[d][j] : T(0);
      int k = 0;
      std::apply([&](auto&... ev) { ((dest_of[k] >= 0 ? (void)(acc[dest_of[k]] += static_cast<T>(ev.scalar(j))) : (void)0, ++k), ...); }, e);
      for (int d = 0; d < ndest; ++d) dests[d][j] = acc[d];
    }
  };
  run_items(items, nt, run_item);
#if TESSERA_SIMD
  if (stream) simd::stream_fence();
#endif
}

}  // namespace tessera::detail
