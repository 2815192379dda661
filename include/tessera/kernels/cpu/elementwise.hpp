// The CPU loop for a fused elementwise tree: one pass over the destination, SIMD along the innermost
// (coalesced) dimension, split into chunks of rows and columns over OpenMP threads, with streaming
// stores for destinations larger than the caches.
#pragma once
#include <cstdint>
#include <tuple>
#include <type_traits>

#include "tessera/core/simd.hpp"
#include "tessera/core/stats.hpp"
#include "tessera/kernels/loop.hpp"

namespace tessera::detail {

/// Destinations at least this large are written with non-temporal stores.
inline constexpr std::size_t stream_store_bytes = std::size_t(64) << 20;
inline constexpr index_t chunk_elements = 16384;
/// Elements ahead that contiguous leaves are prefetched (software prefetch overlaps the math with the loads).
#ifndef TESSERA_PREFETCH_DISTANCE
#define TESSERA_PREFETCH_DISTANCE 1024
#endif
inline constexpr index_t prefetch_distance = TESSERA_PREFETCH_DISTANCE;
inline constexpr index_t min_parallel_elements = 32768;

/// items work items of an elementwise loop over `total` elements: on up to nthreads OpenMP threads when there is
/// enough work (min_parallel_elements), else on this thread.
template <class F>
void run_items(index_t items, index_t total, int nthreads, F&& run_item) {
  const int nt = total >= min_parallel_elements && items > 1 ? (nthreads < items ? nthreads : int(items)) : 1;
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

/// Run `ev` over the plan into `dst` (already coalesced), `nthreads` at most.
template <class T, bool Packable, std::size_t MaxLane, int R, class Ev>
void cpu_elementwise(T* dst, const loop_plan<R>& p, const Ev& ev, int nthreads) {
  const index_t n = p.inner(), rows = p.rows(), total = n * rows;
  if (total == 0) return;
  stats::count_pass();
  const int nd = p.nd;
  const index_t ds = p.dst_s[nd - 1];
  const bool stream = ds == 1 && total * index_t(sizeof(T)) >= index_t(stream_store_bytes);
  (void)stream;  // (only the SIMD path streams)
  const index_t cpr = n > chunk_elements ? (n + chunk_elements - 1) / chunk_elements : 1;  // chunks per row
  const index_t rpi = n >= chunk_elements ? 1 : (chunk_elements + n - 1) / n;              // rows per item
  const index_t items = cpr > 1 ? rows * cpr : (rows + rpi - 1) / rpi;
  const bool contig = all_leaves_contiguous(ev);

  auto run_item = [&](index_t item) {
    Ev e = ev;
    index_t idx[loop_plan<R>::cap] = {};
    index_t r0, r1, j0, j1;
    if (cpr > 1) {
      r0 = item / cpr;
      r1 = r0 + 1;
      j0 = (item % cpr) * chunk_elements;
      j1 = j0 + chunk_elements < n ? j0 + chunk_elements : n;
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

  run_items(items, total, nthreads, run_item);
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
                           int nthreads) {
  static_assert(K >= 1 && K == int(std::tuple_size_v<Evs>));
  if (n == 0 || ndest == 0) return;
  stats::count_pass();
  bool stream = index_t(sizeof(T)) * n >= index_t(stream_store_bytes);
  for (int d = 0; d < ndest; ++d) stream = stream && (reinterpret_cast<std::uintptr_t>(dests[d]) & 63) == 0;
  const index_t items = (n + chunk_elements - 1) / chunk_elements;

  auto run_item = [&](index_t item) {
    Evs e = evs;
    std::apply([](auto&... ev) { index_t idx[1] = {0}; (ev.set_row(idx, 0), ...); }, e);
    const index_t j0 = item * chunk_elements, j1 = j0 + chunk_elements < n ? j0 + chunk_elements : n;
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
  run_items(items, n, nthreads, run_item);
#if TESSERA_SIMD
  if (stream) simd::stream_fence();
#endif
}

}  // namespace tessera::detail
