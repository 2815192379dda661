// Checkpoints: named tensors (any element type, any rank) and named scalars and strings in one binary file,
// written atomically and read back with every name, shape and element type checked.
//
//   checkpoint_writer w;
//   w.add("0.weight", conv_w);                      // a Tensor or a host View, copied when added
//   w.add_parameters(model, "model.");              // model.for_each_parameter(f): f(name, tensor&) per parameter
//   w.add_all([&](auto&& f) { opt.for_each_state(f); }, "optim.");   // any visitor of named tensors
//   w.add_scalar("epoch", 12);
//   w.write("run.ckpt");                            // run.ckpt.tmp.<pid>.<random>, fsync, rename over run.ckpt
//
//   checkpoint_reader r("run.ckpt");                // checks magic, version, length, CRC32 and every entry's layout
//   r.read_into("0.weight", conv_w);                // the shape and element type must match exactly
//   r.read_parameters(model, "model.");
//   auto epoch = r.scalar<int>("epoch");
//
// File format (version 1, every number little-endian):
//   "TSRACKPT" (8 bytes) | u32 version | u32 flags (0) | u64 file length in bytes | u64 entry count
//   per entry: u32 name length | name (UTF-8) | u8 dtype | u8 rank | rank x i64 extents | u64 data length | data
//   u32 CRC32 (zlib's) of every byte before it
// dtype: 1 float, 2 double, 3 int32, 4 int64, 5 uint8, 6 int8, 7 bfloat16, 8 bool, 9 string (rank 1, UTF-8).
// Scalars are rank-0 entries (add_scalar stores integers as int64, floating-point numbers as double).
// The reader trusts nothing in the file, CRC or not: each entry's extents must fit in the bytes that are left
// (checked by division, so no count wraps around 2^64), the product of its nonzero extents must keep every byte
// offset below 2^63, bool bytes must be 0 or 1 and strings of rank 1; anything else is an io_error naming the
// entry and its extents.
//
// Saving (tessera/io/atomic_file.hpp): the file is written to its own temporary "<path>.tmp.<pid>.<16 hex digits>"
// beside it (created with O_EXCL | O_NOFOLLOW, so concurrent writers of one path, threads or processes, never share
// one and a planted symlink is never followed), fsync'd and renamed over <path>. Killed at any point, <path> holds
// the previous checkpoint or the whole new one. A failed step (create, write, fsync, close, rename; a full disk) is
// an io_error naming the step, the temporary is removed and <path> is left as it was. A killed writer's temporary
// stays behind; each save first removes the temporaries of <path> whose pid is no longer alive
// (tessera::remove_stale_temporaries(path) does it on demand).
//
// Needs zlib (for crc32; linked into tessera::tessera when CMake finds it) and POSIX (open, fsync, rename).
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/policy/planner.hpp"
#include "tessera/core/types.hpp"
#include "tessera/io/atomic_file.hpp"
#include "tessera/io/checkpoint_format.hpp"
#include "tessera/io/error.hpp"

namespace tessera {

/// What checkpoint_reader::read_all does with entries under the prefix that no visited tensor asked for.
enum class unmatched_entries { allow, error };

namespace detail {
/// f(name, tensor) for each buffer of a model; nothing for a model without for_each_buffer.
template <class Model, class F>
void visit_buffers(Model& model, F& f) {
  if constexpr (requires { model.for_each_buffer(f); }) model.for_each_buffer(f);
}
/// Parameters, then buffers.
template <class Model, class F>
void visit_model(Model& model, F& f) {
  model.for_each_parameter(f);
  visit_buffers(model, f);
}
}  // namespace detail


/// Collects named tensors, scalars and strings, then writes them to a checkpoint file in one atomic step.
/// add() copies the data, so the tensors may change or die before write().
class checkpoint_writer {
 public:
  /// A tensor (any element type and rank; a cuda tensor is copied to the host).
  template <Element T, ShapeType S, Policy P>
  void add(std::string name, const Tensor<T, S, P>& t) {
    entry& e = new_entry(std::move(name), checkpoint_dtype_of<T>(), detail::to_index_vector(t.dims()), sizeof(T));
    const std::size_t n = std::size_t(t.size());
    if constexpr (P::on_device) {
      static_assert(!std::is_same_v<T, bool>, "tessera: checkpoint_writer: copy a cuda bool tensor to the host first");
      const auto host = t.to_vector();
      detail::elements_to_le(host.data(), n, e.bytes.data());
    } else {
      detail::elements_to_le(t.data(), n, e.bytes.data());
    }
  }
  /// A host view with any strides (stored in row-major order).
  template <class T, ShapeType S, Policy P>
  void add(std::string name, const View<T, S, P>& v) {
    static_assert(!P::on_device, "tessera: checkpoint_writer: copy a cuda view to the host (tessera::to<cpu>) first");
    using V = std::remove_const_t<T>;
    entry& e = new_entry(std::move(name), checkpoint_dtype_of<V>(), detail::to_index_vector(v.dims()), sizeof(V));
    unsigned char* out = e.bytes.data();
    detail::for_each_row(v.dims(), v.strides(), [&](index_t off, index_t count, index_t stride) {
      const V* p = v.data() + off;
      if (stride == 1) {
        detail::elements_to_le(p, std::size_t(count), out);
      } else {
        for (index_t k = 0; k < count; ++k) detail::elements_to_le(p + k * stride, 1, out + k * sizeof(V));
      }
      out += std::size_t(count) * sizeof(V);
    });
  }

  /// A named number: integers are stored as int64, floating-point numbers as double, bool as bool.
  template <class U>
    requires std::is_arithmetic_v<U>
  void add_scalar(std::string name, U value) {
    if constexpr (std::is_same_v<U, bool>) add_rank0(std::move(name), value);
    else if constexpr (std::is_integral_v<U>) {
      if constexpr (std::is_unsigned_v<U> && sizeof(U) >= 8)
        if (value > U(INT64_MAX))
          throw std::invalid_argument("tessera: checkpoint_writer: scalar " + name + " = " + std::to_string(value) +
                                      " does not fit in int64");
      add_rank0(std::move(name), std::int64_t(value));
    } else {
      add_rank0(std::move(name), double(value));
    }
  }
  void add_string(std::string name, std::string_view value) {
    entry& e = new_entry(std::move(name), checkpoint_dtype::string, {index_t(value.size())}, 1);
    if (!value.empty()) std::memcpy(e.bytes.data(), value.data(), value.size());
  }

  /// Every tensor a visitor names: visit(f) must call f(name, tensor) for each (name: anything a std::string can be
  /// built from); each is stored as prefix + name. For example the state of an optimizer:
  /// add_all([&](auto&& f) { opt.for_each_state(f); }, "optim.").
  template <class Visit>
  void add_all(Visit&& visit, std::string_view prefix = "") {
    visit([&](const auto& name, const auto& tensor) {
      if constexpr (requires { tensor.value(); }) add(std::string(prefix) + std::string(name), tensor.value());  // an ad::Var
      else add(std::string(prefix) + std::string(name), tensor);
    });
  }
  /// Every parameter of a model: m.for_each_parameter(f) calls f(name, tensor) for each (or f(name, var): an nn
  /// model's parameters are ad::Vars, whose values are stored).
  template <class Model>
  void add_parameters(Model& model, std::string_view prefix = "") {
    add_all([&](auto&& f) { model.for_each_parameter(f); }, prefix);
  }
  /// Every buffer of a model (m.for_each_buffer(f): BatchNorm's running statistics and num_batches_tracked); a
  /// model without for_each_buffer has none.
  template <class Model>
  void add_buffers(Model& model, std::string_view prefix = "") {
    add_all([&](auto&& f) { detail::visit_buffers(model, f); }, prefix);
  }
  /// Parameters and buffers under one prefix, as PyTorch's state_dict holds them: what a model needs to compute
  /// the same outputs after read_model.
  template <class Model>
  void add_model(Model& model, std::string_view prefix = "") {
    add_all([&](auto&& f) { detail::visit_model(model, f); }, prefix);
  }

  bool contains(std::string_view name) const { return index_.count(std::string(name)) != 0; }
  std::size_t size() const { return entries_.size(); }
  /// The names in the order they were added (and will be written).
  std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (const auto& e : entries_) v.push_back(e.name);
    return v;
  }

  /// Write every entry to `path`: first to a temporary of its own, "<path>.tmp.<pid>.<16 hex digits>", fsync'd,
  /// then renamed over `path`, so that `path` holds either its old content or the whole new checkpoint. Stale
  /// temporaries of `path` (their writer dead) are removed first. On failure the temporary file is removed and
  /// io_error names the file and the failing step.
  void write(const std::filesystem::path& path) const {
    const std::string target = path.string();
    std::uint64_t length = detail::checkpoint_header_bytes + 4;
    for (const auto& e : entries_) length += entry_header_size(e) + e.bytes.size();

    unsigned char top[detail::checkpoint_header_bytes];
    std::memcpy(top, detail::checkpoint_magic, 8);
    detail::store_le<std::uint32_t>(top + 8, detail::checkpoint_version);
    detail::store_le<std::uint32_t>(top + 12, 0);  // flags
    detail::store_le<std::uint64_t>(top + 16, length);
    detail::store_le<std::uint64_t>(top + 24, entries_.size());

    atomic_file file(path, "checkpoint");
    std::uint32_t crc = detail::crc32_update(0, nullptr, 0);
    auto emit = [&](const unsigned char* p, std::size_t n) {
      crc = detail::crc32_update(crc, p, n);
      file.write(p, n);
    };
    emit(top, sizeof top);
    std::vector<unsigned char> head;
    for (const auto& e : entries_) {
      head.resize(entry_header_size(e));
      unsigned char* p = head.data();
      detail::store_le<std::uint32_t>(p, std::uint32_t(e.name.size()));
      std::memcpy(p + 4, e.name.data(), e.name.size());
      p += 4 + e.name.size();
      p[0] = std::uint8_t(e.dtype);
      p[1] = std::uint8_t(e.dims.size());
      p += 2;
      for (auto d : e.dims) {
        detail::store_le<std::uint64_t>(p, std::uint64_t(d));
        p += 8;
      }
      detail::store_le<std::uint64_t>(p, e.bytes.size());
      emit(head.data(), head.size());
      emit(e.bytes.data(), e.bytes.size());
    }
    unsigned char tail[4];
    detail::store_le<std::uint32_t>(tail, crc);
    file.write(tail, 4);
    file.commit();
  }

 private:
  struct entry {
    std::string name;
    checkpoint_dtype dtype;
    std::vector<index_t> dims;
    std::vector<unsigned char> bytes;
  };
  static std::size_t entry_header_size(const entry& e) { return 4 + e.name.size() + 1 + 1 + 8 * e.dims.size() + 8; }

  entry& new_entry(std::string name, checkpoint_dtype dtype, std::vector<index_t> dims, std::size_t elem_size) {
    if (name.empty()) throw std::invalid_argument("tessera: checkpoint_writer: an entry needs a non-empty name");
    if (name.size() > detail::checkpoint_max_name)
      throw std::invalid_argument("tessera: checkpoint_writer: the name " + name.substr(0, 40) + "... is longer than " +
                                  std::to_string(detail::checkpoint_max_name) + " bytes");
    if (index_.count(name))
      throw std::invalid_argument("tessera: checkpoint_writer: two entries are named " + name);
    // Checked by division before multiplying: a view's extents (strides 0) can claim more elements than exist.
    const std::uint64_t limit = std::uint64_t(INT64_MAX) / elem_size;
    std::uint64_t nonzero = 1;
    bool empty = false;
    for (auto d : dims) {
      if (d == 0) empty = true;
      else if (d < 0 || std::uint64_t(d) > limit / nonzero)
        throw std::length_error("tessera: checkpoint_writer: entry " + name + " of extents " +
                                detail::format_index_list(dims) + ": its byte count overflows");
      else nonzero *= std::uint64_t(d);
    }
    const std::size_t n = empty ? 0 : std::size_t(nonzero);
    index_.emplace(name, entries_.size());
    entries_.push_back(entry{std::move(name), dtype, std::move(dims), std::vector<unsigned char>(n * elem_size)});
    return entries_.back();
  }
  template <class T>
  void add_rank0(std::string name, T v) {
    entry& e = new_entry(std::move(name), checkpoint_dtype_of<T>(), {}, sizeof(T));
    detail::elements_to_le(&v, 1, e.bytes.data());
  }

  std::vector<entry> entries_;
  std::map<std::string, std::size_t> index_;
};

/// Reads a checkpoint file: the whole file is loaded and checked (magic, version, length, CRC32, entry layout) by
/// the constructor; the accessors then check each entry's name, element type and shape. Every error is an
/// io_error whose message starts "tessera: checkpoint <path>: ".
class checkpoint_reader {
 public:
  explicit checkpoint_reader(const std::filesystem::path& path) : path_(path) {
    load();
    parse();
  }
  /// A checkpoint already in memory (the bytes of a file), checked the same way; `name` stands for the path in
  /// error messages.
  static checkpoint_reader from_bytes(std::vector<unsigned char> bytes, std::filesystem::path name = "<memory>") {
    checkpoint_reader r;
    r.path_ = std::move(name);
    r.bytes_ = std::move(bytes);
    r.parse();
    return r;
  }

  const std::filesystem::path& path() const { return path_; }
  /// The entries' names in file order.
  std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (const auto& e : entries_) v.push_back(e.name);
    return v;
  }
  std::size_t size() const { return entries_.size(); }
  bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }
  std::vector<index_t> dims(std::string_view name) const { return find(name).dims; }
  checkpoint_dtype dtype(std::string_view name) const { return find(name).dtype; }

  /// Read entry `name` into `t`, whose element type and shape must be exactly the entry's.
  template <Element T, ShapeType S, Policy P>
  void read_into(std::string_view name, Tensor<T, S, P>& t) const {
    const entry& e = find(name);
    check_entry<T>(e, detail::to_index_vector(t.dims()));
    const std::size_t n = std::size_t(t.size());
    if constexpr (P::on_device) {
      static_assert(!std::is_same_v<T, bool>, "tessera: checkpoint_reader: read a cuda bool tensor on the host first");
      std::vector<T> host(n);
      detail::elements_from_le(data_of(e), n, host.data());
      memory<P>::copy_to_device(t.data(), host.data(), n);
    } else {
      detail::elements_from_le(data_of(e), n, t.data());
    }
  }
  /// Read entry `name` into a host view (any strides; the view's extents must be the entry's).
  template <class T, ShapeType S, Policy P>
  void read_into(std::string_view name, const View<T, S, P>& v) const {
    static_assert(!std::is_const_v<T>, "tessera: checkpoint_reader::read_into: the view is read-only");
    static_assert(!P::on_device, "tessera: checkpoint_reader::read_into: read into a host tensor, then move it to the device");
    const entry& e = find(name);
    check_entry<T>(e, detail::to_index_vector(v.dims()));
    const unsigned char* in = data_of(e);
    detail::for_each_row(v.dims(), v.strides(), [&](index_t off, index_t count, index_t stride) {
      T* p = v.data() + off;
      if (stride == 1) {
        detail::elements_from_le(in, std::size_t(count), p);
      } else {
        for (index_t k = 0; k < count; ++k) detail::elements_from_le(in + k * sizeof(T), 1, p + k * stride);
      }
      in += std::size_t(count) * sizeof(T);
    });
  }

  /// Entry `name` as a new tensor: its element type must be T, its rank S's, and its extents S's static ones.
  template <Element T, ShapeType S, Policy P = cpu>
  Tensor<T, S, P> get(std::string_view name) const {
    const entry& e = find(name);
    if (e.dtype != checkpoint_dtype_of<T>() || e.dims.size() != std::size_t(S::rank)) {
      std::vector<index_t> st(S::extents.begin(), S::extents.end());
      check_entry<T>(e, st);  // throws: names the dtype or the rank that differs
    }
    dims_t<S::rank> d{};
    for (int i = 0; i < S::rank; ++i) {
      d[i] = e.dims[i];
      if (S::extents[i] != dyn && S::extents[i] != d[i]) {
        std::vector<index_t> st(S::extents.begin(), S::extents.end());
        fail("parameter " + std::string(name) + " has shape " + detail::format_index_list(e.dims) +
             " in the file but the static shape " + detail::format_index_list(st) + " (-1 = dyn) was asked for");
      }
    }
    Tensor<T, S, P> t(d);
    read_into(name, t);
    return t;
  }

  /// A rank-0 entry (add_scalar) converted to U.
  template <class U>
    requires std::is_arithmetic_v<U>
  U scalar(std::string_view name) const {
    const entry& e = find(name);
    if (e.dtype == checkpoint_dtype::string)
      fail("entry " + std::string(name) + " is a string, not a number");
    if (!e.dims.empty())
      fail("entry " + std::string(name) + " is a tensor of shape " + detail::format_index_list(e.dims) +
           ", not a scalar");
    switch (e.dtype) {
      case checkpoint_dtype::f32: return U(load1<float>(e));
      case checkpoint_dtype::f64: return U(load1<double>(e));
      case checkpoint_dtype::i32: return U(load1<std::int32_t>(e));
      case checkpoint_dtype::i64: return U(load1<std::int64_t>(e));
      case checkpoint_dtype::u8: return U(load1<std::uint8_t>(e));
      case checkpoint_dtype::i8: return U(load1<std::int8_t>(e));
      case checkpoint_dtype::bf16: return U(float(load1<bfloat16>(e)));
      case checkpoint_dtype::boolean: return U(load1<bool>(e));
      default: break;
    }
    fail("entry " + std::string(name) + " has an unknown dtype");
  }
  /// A string entry (add_string).
  std::string string(std::string_view name) const {
    const entry& e = find(name);
    if (e.dtype != checkpoint_dtype::string)
      fail("entry " + std::string(name) + " holds " + checkpoint_dtype_name(e.dtype) + " data, not a string");
    return std::string(reinterpret_cast<const char*>(data_of(e)), e.length);
  }

  /// Checks, without reading anything, that every tensor a visitor names has an entry prefix + name of its
  /// element type and shape (and, with unmatched_entries::error, that no entry under prefix is left over); throws
  /// one io_error listing every difference, each with its name and both shapes. read_all calls it first, so that a
  /// checkpoint that does not fit leaves every tensor as it was.
  template <class Visit>
  void check_all(Visit&& visit, std::string_view prefix = "", unmatched_entries unmatched = unmatched_entries::allow) const {
    std::set<std::string, std::less<>> seen;
    std::vector<std::string> problems;
    visit([&](const auto& name, auto&& tensor) {
      std::string full = std::string(prefix) + std::string(name);
      const auto& t = [&]() -> const auto& {
        if constexpr (requires { tensor.mutable_value(); }) return tensor.value();
        else return tensor;
      }();
      using T = std::remove_cvref_t<decltype(*t.data())>;
      const std::vector<index_t> want = detail::to_index_vector(t.dims());
      auto it = index_.find(full);
      if (it == index_.end()) {
        problems.push_back("no parameter named " + full + " in the file (shape " + detail::format_index_list(want) +
                           ", " + type_name<T>() + " in the model)");
      } else {
        const entry& e = entries_[it->second];
        if (e.dtype != checkpoint_dtype_of<T>() || e.dims != want)
          problems.push_back(full + " has shape " + detail::format_index_list(e.dims) + " (" + checkpoint_dtype_name(e.dtype) +
                             ") in the file but " + detail::format_index_list(want) + " (" + type_name<T>() + ") in the model");
      }
      seen.insert(std::move(full));
    });
    if (unmatched == unmatched_entries::error)
      for (const auto& e : entries_)
        if (e.name.compare(0, prefix.size(), prefix) == 0 && !seen.count(e.name))
          problems.push_back("entry " + e.name + " in the file matches no parameter of the model (shape " +
                             detail::format_index_list(e.dims) + ")");
    if (problems.empty()) return;
    std::string msg = std::to_string(problems.size()) + (problems.size() == 1 ? " difference" : " differences") +
                      " between the file and the model, nothing was read: ";
    const std::size_t show = std::min<std::size_t>(problems.size(), 8);
    for (std::size_t i = 0; i < show; ++i) msg += (i ? "; " : "") + problems[i];
    if (show < problems.size()) msg += "; ... (" + std::to_string(problems.size() - show) + " more)";
    fail(msg);
  }

  /// Read every tensor a visitor names (visit(f) calls f(name, tensor&) for each) from prefix + name, after
  /// check_all has found all of them in the file (so visit runs twice; a failed check reads nothing). With
  /// unmatched_entries::error, an entry whose name starts with prefix and that no tensor asked for is an error
  /// too (a checkpoint of a bigger model). Returns how many tensors were read.
  template <class Visit>
  std::size_t read_all(Visit&& visit, std::string_view prefix = "", unmatched_entries unmatched = unmatched_entries::allow) const {
    check_all(visit, prefix, unmatched);
    std::set<std::string, std::less<>> seen;
    visit([&](const auto& name, auto&& tensor) {
      std::string full = std::string(prefix) + std::string(name);
      if constexpr (requires { tensor.mutable_value(); }) read_into(full, tensor.mutable_value());  // an ad::Var (a model's parameter)
      else read_into(full, tensor);
      seen.insert(std::move(full));
    });
    return seen.size();
  }
  /// Every parameter of a model (m.for_each_parameter(f) calls f(name, tensor&) for each).
  template <class Model>
  std::size_t read_parameters(Model& model, std::string_view prefix = "",
                              unmatched_entries unmatched = unmatched_entries::allow) const {
    return read_all([&](auto&& f) { model.for_each_parameter(f); }, prefix, unmatched);
  }
  /// Every buffer of a model (for_each_buffer; none for a model without it).
  template <class Model>
  std::size_t read_buffers(Model& model, std::string_view prefix = "",
                           unmatched_entries unmatched = unmatched_entries::allow) const {
    return read_all([&](auto&& f) { detail::visit_buffers(model, f); }, prefix, unmatched);
  }
  /// Parameters and buffers (what add_model wrote), all checked before any is read.
  template <class Model>
  std::size_t read_model(Model& model, std::string_view prefix = "",
                         unmatched_entries unmatched = unmatched_entries::allow) const {
    return read_all([&](auto&& f) { detail::visit_model(model, f); }, prefix, unmatched);
  }

 private:
  struct entry {
    std::string name;
    checkpoint_dtype dtype;
    std::vector<index_t> dims;
    std::size_t offset;  // of the data in bytes_ (offsets, not pointers: a copied reader stays valid)
    std::size_t length;
  };
  checkpoint_reader() = default;
  const unsigned char* data_of(const entry& e) const { return bytes_.data() + e.offset; }

  [[noreturn]] void fail(const std::string& what) const {
    throw io_error("tessera: checkpoint " + path_.string() + ": " + what);
  }

  const entry& find(std::string_view name) const {
    auto it = index_.find(name);
    if (it != index_.end()) return entries_[it->second];
    std::string list;
    const std::size_t show = std::min<std::size_t>(entries_.size(), 12);
    for (std::size_t i = 0; i < show; ++i) list += (i ? ", " : "") + entries_[i].name;
    if (show < entries_.size()) list += ", ...";
    fail("no parameter named " + std::string(name) + " in the file (it holds " + std::to_string(entries_.size()) +
         (entries_.size() == 1 ? " entry" : " entries") + (entries_.empty() ? "" : ": " + list) + ")");
  }

  template <class T>
  void check_entry(const entry& e, const std::vector<index_t>& want) const {
    if (e.dtype != checkpoint_dtype_of<T>())
      fail("parameter " + e.name + " has element type " + checkpoint_dtype_name(e.dtype) + " in the file but " +
           type_name<T>() + " in the model");
    if (e.dims != want)
      fail("parameter " + e.name + " has shape " + detail::format_index_list(e.dims) + " in the file but " +
           detail::format_index_list(want) + " in the model");
  }

  template <class T>
  T load1(const entry& e) const {
    T v;
    detail::elements_from_le(data_of(e), 1, &v);
    return v;
  }

  void load() {
    const std::string p = path_.string();
    std::error_code ec;
    if (std::filesystem::is_directory(path_, ec)) fail("cannot open: it is a directory");
    std::FILE* f = std::fopen(p.c_str(), "rb");
    if (!f) fail(std::string("cannot open: ") + std::strerror(errno));
    struct closer {
      std::FILE* f;
      ~closer() { std::fclose(f); }
    } guard{f};
    unsigned char buf[1 << 16];
    while (true) {
      const std::size_t got = std::fread(buf, 1, sizeof buf, f);
      bytes_.insert(bytes_.end(), buf, buf + got);
      if (got < sizeof buf) {
        if (std::ferror(f)) fail(std::string("read error: ") + std::strerror(errno));
        break;
      }
    }
  }

  void parse() {
    const std::size_t size = bytes_.size();
    const unsigned char* b = bytes_.data();
    const std::size_t magic_have = std::min<std::size_t>(size, 8);
    if (size == 0) fail("the file is empty (truncated?)");
    if (std::memcmp(b, detail::checkpoint_magic, magic_have) != 0)
      fail("not a tessera checkpoint (the file does not start with the magic bytes \"TSRACKPT\")");
    if (size < detail::checkpoint_header_bytes + 4)
      fail("truncated: " + std::to_string(size) + " bytes, fewer than the " +
           std::to_string(detail::checkpoint_header_bytes + 4) + " of an empty checkpoint");
    const auto version = detail::get_le<std::uint32_t>(b + 8);
    if (version != detail::checkpoint_version)
      fail("format version " + std::to_string(version) + " is not supported (this build reads version " +
           std::to_string(detail::checkpoint_version) + ")");
    const auto length = detail::get_le<std::uint64_t>(b + 16);
    if (length > size)
      fail("truncated: the header says " + std::to_string(length) + " bytes, the file has " + std::to_string(size));
    if (length < size)
      fail("the file has " + std::to_string(size) + " bytes but its header says " + std::to_string(length) +
           " (data appended after the checkpoint?)");
    const std::uint32_t stored = detail::get_le<std::uint32_t>(b + size - 4);
    const std::uint32_t computed = detail::crc32_update(detail::crc32_update(0, nullptr, 0), b, size - 4);
    if (stored != computed) {
      char msg[160];
      std::snprintf(msg, sizeof msg, "checksum mismatch: the file says CRC32 0x%08X, its content has 0x%08X (the file is corrupt)",
                    unsigned(stored), unsigned(computed));
      fail(msg);
    }
    const auto count = detail::get_le<std::uint64_t>(b + 24);
    const std::size_t end = size - 4;
    std::size_t pos = detail::checkpoint_header_bytes;
    auto need = [&](std::size_t n, std::uint64_t k, const char* what) {
      if (n > end - pos)
        fail("malformed entry " + std::to_string(k) + ": its " + what + " runs past the end of the data");
    };
    for (std::uint64_t k = 0; k < count; ++k) {
      need(4, k, "name length");
      const auto name_len = detail::get_le<std::uint32_t>(b + pos);
      pos += 4;
      need(name_len, k, "name");
      entry e;
      e.name.assign(reinterpret_cast<const char*>(b + pos), name_len);
      pos += name_len;
      need(2, k, "dtype and rank");
      const std::uint8_t dt = b[pos], rank = b[pos + 1];
      pos += 2;
      if (!is_checkpoint_dtype(dt)) fail("malformed entry " + e.name + ": unknown dtype code " + std::to_string(dt));
      if (rank > max_rank) fail("malformed entry " + e.name + ": rank " + std::to_string(rank) + " is above 8");
      e.dtype = checkpoint_dtype(dt);
      if (e.dtype == checkpoint_dtype::string && rank != 1)
        fail("malformed entry " + e.name + ": a string entry has rank 1, this one rank " + std::to_string(rank));
      need(8 * std::size_t(rank), k, "extents");
      const std::size_t elem_size = checkpoint_dtype_size(e.dtype);
      std::uint64_t ext[max_rank];
      for (int i = 0; i < rank; ++i) ext[i] = detail::get_le<std::uint64_t>(b + pos + 8 * std::size_t(i));
      pos += 8 * std::size_t(rank);
      auto bad_extents = [&](const std::string& why) {
        std::string list = "[";
        for (int i = 0; i < rank; ++i) list += (i ? ", " : "") + std::to_string(ext[i]);
        fail("malformed entry " + e.name + ": extents " + list + "] of " + checkpoint_dtype_name(e.dtype) + ": " + why);
      };
      // The product of the nonzero extents bounds every stride and byte offset of the tensor: it must fit in
      // index_t bytes (checked by division, before any multiplication, so nothing wraps).
      const std::uint64_t limit = std::uint64_t(INT64_MAX) / elem_size;
      std::uint64_t nonzero = 1;
      bool empty = false;
      for (int i = 0; i < rank; ++i) {
        if (ext[i] == 0) {
          empty = true;
          continue;
        }
        if (ext[i] > limit / nonzero) bad_extents("too large (more than 2^63 bytes)");
        nonzero *= ext[i];
      }
      const std::uint64_t elements = empty ? 0 : nonzero;
      need(8, k, "data length");
      const auto len = detail::get_le<std::uint64_t>(b + pos);
      pos += 8;
      if (elements > (end - pos) / elem_size)
        bad_extents(std::to_string(elements) + " elements need more than the " + std::to_string(end - pos) +
                    " bytes left in the file");
      if (len != elements * elem_size)
        fail("malformed entry " + e.name + ": " + std::to_string(len) + " bytes of data for shape " +
             detail::format_index_list(std::vector<index_t>(ext, ext + rank)) + " of " + checkpoint_dtype_name(e.dtype) +
             " (expected " + std::to_string(elements * elem_size) + ")");
      e.dims.assign(ext, ext + rank);
      if (e.dtype == checkpoint_dtype::boolean)  // any other byte read as a bool is undefined behaviour
        for (std::size_t i = 0; i < len; ++i)
          if (b[pos + i] > 1)
            fail("malformed entry " + e.name + ": bool element " + std::to_string(i) + " is the byte " +
                 std::to_string(b[pos + i]) + ", not 0 or 1");
      e.offset = pos;
      e.length = std::size_t(len);
      pos += std::size_t(len);
      if (index_.count(e.name)) fail("malformed: two entries are named " + e.name);
      index_.emplace(e.name, entries_.size());
      entries_.push_back(std::move(e));
    }
    if (pos != end)
      fail("malformed: " + std::to_string(end - pos) + " bytes after the last of the " + std::to_string(count) +
           " entries");
  }

  std::filesystem::path path_;
  std::vector<unsigned char> bytes_;
  std::vector<entry> entries_;
  std::map<std::string, std::size_t, std::less<>> index_;
};

}  // namespace tessera
