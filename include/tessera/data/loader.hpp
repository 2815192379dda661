// DataLoader: mini-batches of (samples, labels) from two host tensors whose first extent counts samples;
// seeded shuffling, a different permutation every epoch (reproducible from the seed), optional drop_last.
//
//   tessera::DataLoader loader(std::move(data.images), std::move(data.labels), {.batch_size = 64, .seed = 1});
//   for (int e = 0; e < epochs; ++e)
//     for (auto& [x, y] : loader.epoch(e)) ...   // x: Tensor<float, Shape<dyn, 1, dyn, dyn>>, y: Tensor<int32_t, Shape<dyn>>
//
// Sharded for data-parallel training ({.shard = ctx.shard()} with dist::context): every rank draws the same
// permutation of the whole data set (seed and epoch), pads it by repeating its first samples to a multiple of the
// world size and takes every world_size-th sample from its rank on, as PyTorch's DistributedSampler: disjoint
// samples per rank (but for the padding), the same number of batches on every rank.
//
// Each batch is copied out of the data set with one memcpy per run of consecutive samples (one per batch without
// shuffling); the batch tensors are reused from one batch to the next when they keep their size.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <numeric>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/core/random.hpp"
#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/policy/planner.hpp"

namespace tessera {

namespace detail {
template <class S>
struct first_extent_dyn;
template <extent_t E0, extent_t... E>
struct first_extent_dyn<Shape<E0, E...>> {
  using type = Shape<dyn, E...>;
};
}  // namespace detail
/// S with its first extent dynamic: the shape of a batch of samples drawn from a data set of shape S.
template <class S>
using batch_shape_t = typename detail::first_extent_dyn<S>::type;

/// A rank's share of a data set: rank `rank` of `world_size` (dist::context::shard() gives this rank's).
struct data_shard {
  int rank = 0;
  int world_size = 1;
};

struct loader_options {
  index_t batch_size = 64;
  bool shuffle = true;
  std::uint64_t seed = Rng::default_seed;
  /// Leave out the last batch when it is smaller than batch_size.
  bool drop_last = false;
  /// This process's share of the samples (data-parallel training); the whole data set by default.
  data_shard shard{};
};

/// Batches of samples X (first extent: samples) and labels Y (first extent: the same number of samples).
/// The loader owns its data set: pass the tensors with std::move to avoid a copy.
template <Element TX, ShapeType SX, Element TY, ShapeType SY, Policy P = cpu>
class DataLoader {
  static_assert(!P::on_device, "tessera: DataLoader reads host tensors; move the batches to the device with to<cuda>");
  static_assert(SX::rank >= 1 && SY::rank >= 1, "tessera: DataLoader: samples and labels need a first extent (samples)");

 public:
  using samples_type = Tensor<TX, SX, P>;
  using labels_type = Tensor<TY, SY, P>;
  using batch_samples_type = Tensor<TX, batch_shape_t<SX>, P>;
  using batch_labels_type = Tensor<TY, batch_shape_t<SY>, P>;

  /// One mini-batch. `auto& [x, y] = batch` binds images and labels.
  struct batch {
    batch_samples_type images;
    batch_labels_type labels;
  };

  DataLoader(samples_type samples, labels_type labels, loader_options opt = {})
      : x_(std::move(samples)), y_(std::move(labels)), opt_(opt) {
    if (opt_.batch_size <= 0)
      throw std::invalid_argument("tessera: DataLoader: batch_size must be positive, got " +
                                  std::to_string(opt_.batch_size));
    if (x_.dim(0) != y_.dim(0))
      throw shape_error("tessera: DataLoader: " + std::to_string(x_.dim(0)) + " samples " + detail::format_dims(x_.dims()) +
                        " but " + std::to_string(y_.dim(0)) + " labels " + detail::format_dims(y_.dims()));
    if (opt_.shard.world_size < 1 || opt_.shard.rank < 0 || opt_.shard.rank >= opt_.shard.world_size)
      throw std::invalid_argument("tessera: DataLoader: the shard is rank " + std::to_string(opt_.shard.rank) + " of " +
                                  std::to_string(opt_.shard.world_size) + "; it needs 0 <= rank < world_size");
  }

  /// Samples in the data set (all ranks').
  index_t samples() const { return x_.dim(0); }
  /// Samples this rank visits per epoch: samples() without a shard; with one, samples() rounded up to a multiple
  /// of the world size, divided by it.
  index_t shard_samples() const {
    const index_t w = opt_.shard.world_size;
    return w == 1 ? samples() : (samples() + w - 1) / w;
  }
  index_t batch_size() const { return opt_.batch_size; }
  const loader_options& options() const { return opt_; }
  /// Batches per epoch (on this rank; the same on every rank). (n + b - 1) / b would wrap for a batch size near
  /// the index limit.
  index_t size() const {
    const index_t n = shard_samples(), b = opt_.batch_size;
    return n / b + (!opt_.drop_last && n % b != 0);
  }
  const samples_type& data() const { return x_; }
  const labels_type& labels() const { return y_; }

  /// The order in which epoch `e` visits the samples: the identity without shuffling, otherwise a permutation
  /// drawn from Rng(seed, e) (the same for the same seed and epoch, different from one epoch to the next). With a
  /// shard: this rank's part of that order (every world_size-th entry from its rank on, the order padded first by
  /// repeating its start), shard_samples() entries.
  std::vector<index_t> order(std::uint64_t e) const {
    std::vector<index_t> p(static_cast<std::size_t>(samples()));
    std::iota(p.begin(), p.end(), index_t(0));
    if (opt_.shuffle) {
      Rng rng(opt_.seed, e);
      rng.shuffle(p);
    }
    const index_t w = opt_.shard.world_size;
    if (w == 1 || p.empty()) return p;
    std::vector<index_t> mine(static_cast<std::size_t>(shard_samples()));
    const std::size_t n = p.size();
    for (std::size_t k = 0; k < mine.size(); ++k) mine[k] = p[(std::size_t(opt_.shard.rank) + k * std::size_t(w)) % n];
    return mine;
  }

  /// Copy the samples order[0, count) into `b` (resized only when its batch size changes). Throws
  /// std::out_of_range, leaving `b` as it was, if count is not in [0, samples()] or an index is not a sample's.
  void gather(const index_t* order, index_t count, batch& b) const {
    const index_t n = samples();
    if (count < 0 || count > n)
      throw std::out_of_range("tessera: DataLoader::gather: count " + std::to_string(count) + " is not in [0, " +
                              std::to_string(n) + "] (the data set holds " + std::to_string(n) + " samples)");
    for (index_t i = 0; i < count; ++i)
      if (order[i] < 0 || order[i] >= n)
        throw std::out_of_range("tessera: DataLoader::gather: index " + std::to_string(order[i]) + " (entry " +
                                std::to_string(i) + " of " + std::to_string(count) + ") is not in [0, " +
                                std::to_string(n) + "): the data set holds " + std::to_string(n) + " samples");
    gather_unchecked(order, count, b);
  }

  class iterator;
  /// The batches of one epoch, in the order of order(e). Iterating it twice gives the same batches.
  class epoch_range {
   public:
    epoch_range(const DataLoader* l, std::uint64_t e) : l_(l), epoch_(e), order_(l->order(e)) {}
    iterator begin() const { return iterator(this, 0); }
    std::default_sentinel_t end() const { return {}; }
    index_t size() const { return l_->size(); }
    std::uint64_t epoch() const { return epoch_; }
    const std::vector<index_t>& order() const { return order_; }

   private:
    friend class iterator;
    const DataLoader* l_;
    std::uint64_t epoch_;
    std::vector<index_t> order_;
  };

  /// Input iterator over an epoch's batches; *it is the current batch (valid until the iterator moves on).
  class iterator {
   public:
    using iterator_concept = std::input_iterator_tag;
    using value_type = batch;
    using difference_type = std::ptrdiff_t;

    iterator() = default;
    iterator(const epoch_range* r, index_t k) : r_(r), k_(k), n_(r->l_->size()) {}
    batch& operator*() const {
      if (!r_ || k_ < 0 || k_ >= n_)
        throw std::out_of_range("tessera: DataLoader: dereferenced an iterator at batch " + std::to_string(k_) +
                                " of an epoch of " + std::to_string(n_) + " batches" +
                                (r_ ? " (its end)" : " (it belongs to no epoch)"));
      if (loaded_ != k_) {
        const index_t b = r_->l_->opt_.batch_size;
        const index_t first = k_ * b, count = std::min(b, index_t(r_->order_.size()) - first);
        r_->l_->gather_unchecked(r_->order_.data() + first, count, current_);  // order(e) holds sample indices
        loaded_ = k_;
      }
      return current_;
    }
    batch* operator->() const { return &**this; }
    iterator& operator++() {
      ++k_;
      return *this;
    }
    void operator++(int) { ++*this; }
    /// Which batch of the epoch this is (0-based).
    index_t index() const { return k_; }
    friend bool operator==(const iterator& it, std::default_sentinel_t) { return it.k_ >= it.n_; }

   private:
    const epoch_range* r_ = nullptr;
    index_t k_ = 0;
    index_t n_ = 0;  // batches in the epoch
    mutable index_t loaded_ = -1;
    mutable batch current_;
  };

  /// The batches of epoch e (reproducible: the same e gives the same batches).
  epoch_range epoch(std::uint64_t e) const { return epoch_range(this, e); }

  /// `for (auto& b : loader)` iterates the next epoch: 0 the first time, then 1, 2, ... (like re-iterating a
  /// PyTorch DataLoader). set_epoch(e) makes the next one e, e.g. when resuming from a checkpoint.
  iterator begin() {
    current_.emplace(this, next_epoch_++);
    return current_->begin();
  }
  std::default_sentinel_t end() const { return {}; }
  /// The epoch the next `for (... : loader)` iterates.
  std::uint64_t next_epoch() const { return next_epoch_; }
  void set_epoch(std::uint64_t e) { next_epoch_ = e; }

 private:
  void gather_unchecked(const index_t* order, index_t count, batch& b) const {
    gather_rows(x_, b.images, order, count);
    gather_rows(y_, b.labels, order, count);
  }

  template <class Src, class Dst>
  static void gather_rows(const Src& src, Dst& dst, const index_t* order, index_t count) {
    using T = typename Src::value_type;
    auto d = src.dims();
    d[0] = count;
    if (dst.dims() != d) dst = Dst(d);
    const index_t row = src.size() / (src.dim(0) ? src.dim(0) : 1);  // elements per sample
    if (row == 0) return;
    const std::size_t row_bytes = std::size_t(row) * sizeof(T);
    const T* s = src.data();
    T* o = dst.data();
    for (index_t i = 0; i < count;) {
      index_t j = i + 1;  // a run of consecutive samples goes in one copy
      while (j < count && order[j] == order[j - 1] + 1) ++j;
      std::memcpy(o + i * row, s + order[i] * row, std::size_t(j - i) * row_bytes);
      i = j;
    }
  }

  samples_type x_;
  labels_type y_;
  loader_options opt_;
  std::uint64_t next_epoch_ = 0;
  std::optional<epoch_range> current_;
};

template <Element TX, ShapeType SX, Element TY, ShapeType SY, Policy P>
DataLoader(Tensor<TX, SX, P>, Tensor<TY, SY, P>, loader_options = {}) -> DataLoader<TX, SX, TY, SY, P>;

}  // namespace tessera
