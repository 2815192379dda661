// safetensors files (Hugging Face's format, read and written by PyTorch, JAX, Candle ...): named tensors with their
// shapes and element types, and string metadata; weights that travel between tessera and other frameworks.
//
//   tessera::save_safetensors("cnn.safetensors", net, {{"epochs", "3"}});   // parameters and buffers, atomically
//   tessera::load_safetensors("cnn.safetensors", net);                       // every name, shape and dtype checked
//
//   safetensors_writer w;  w.add("x", tensor);  w.add_metadata("k", "v");  w.write("t.safetensors");
//   safetensors_reader r("t.safetensors");  auto x = r.get<float, Shape<dyn, 3>>("x");  r.read_into("x", t);
//
// Names: a model's tensors are its for_each_parameter names and, with .buffers (the default), its for_each_buffer
// names (BatchNorm's running_mean and running_var; BatchNorm1d's num_batches_tracked: tessera's BatchNorm2d keeps
// none, so loading lets PyTorch's "<x>.num_batches_tracked" through beside "<x>.running_mean", and PyTorch loads a
// file without it). tessera's Sequential names them as
// torch.nn.Sequential's state_dict does ("0.weight", "3.bias", "0.weight_ih_l1", "1.running_mean"), so the default
// mapping is the identity: a torch.nn.Sequential of the same layers (the row LSTM's: nn.LSTM, a module taking
// out[:, -1], nn.Linear) reads and writes the same file. Another PyTorch module's names come from
// safetensors_options::rename, a function from tessera's name to the file's; rename_prefixes({{"0.", "lstm."},
// {"2.", "fc."}}) is the one for a module with attributes lstm and fc. Layers that name their tensors as libtorch's
// layers (Conv2d, Linear, LSTM's weight_ih_l{k} / weight_hh_l{k} / bias_ih_l{k} / bias_hh_l{k} with the gates in
// PyTorch's order i, f, g, o, BatchNorm) need no other conversion.
//
// File format: u64 little-endian N | N bytes of JSON {"name": {"dtype": "F32", "shape": [2, 3], "data_offsets":
// [begin, end]}, ..., "__metadata__": {"key": "value"}} (padded with spaces) | the data, each tensor's row-major
// little-endian bytes at [begin, end) of it. dtypes: F32, F64, BF16, I8, U8, I32, I64, BOOL (others, F16 among
// them, are refused by name). The writer aligns the data to 8 bytes and writes through io/atomic_file.hpp (a
// temporary, fsync'd, renamed: the target holds the old file or the whole new one).
// The reader trusts nothing: N at most 100,000,000 (the reference implementation's bound) and inside the file; the
// header strict JSON (interop/json.hpp: UTF-8, no duplicate keys) holding an object of tensor entries with exactly
// dtype, shape and data_offsets; every shape's byte count below 2^63 (checked by division) and equal to end - begin;
// the tensors' byte ranges inside the data, without overlaps, gaps or trailing bytes (as the reference reader
// demands); BOOL bytes 0 or 1. Anything else is an io_error "tessera: safetensors <path>: tensor <name>: ...".
// A shape or dtype that differs from the model's names the tensor and both shapes or both element types.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/core/types.hpp"
#include "tessera/interop/file_support.hpp"
#include "tessera/interop/json.hpp"
#include "tessera/io/error.hpp"

namespace tessera {

/// safetensors' spelling of a dtype ("F32", "BF16", "BOOL", ...).
constexpr const char* safetensors_dtype_name(tensor_dtype d) {
  switch (d) {
    case tensor_dtype::f32: return "F32";
    case tensor_dtype::f64: return "F64";
    case tensor_dtype::bf16: return "BF16";
    case tensor_dtype::i8: return "I8";
    case tensor_dtype::u8: return "U8";
    case tensor_dtype::i32: return "I32";
    case tensor_dtype::i64: return "I64";
    case tensor_dtype::boolean: return "BOOL";
  }
  return "?";
}

/// The largest header the reader accepts (the reference implementation's bound).
inline constexpr std::uint64_t safetensors_max_header = 100'000'000;

/// Collects named tensors and string metadata, then writes one safetensors file. add() copies the data.
class safetensors_writer {
 public:
  /// A tensor of any element type the format carries (a cuda tensor is copied to the host).
  template <Element T, ShapeType S, Policy P>
  void add(std::string name, const Tensor<T, S, P>& t) {
    push(std::move(name), tensor_dtype_of<T>(), detail::to_index_vector(t.dims()), detail::interop::host_bytes(t));
  }
  /// A host view with any strides (stored row-major).
  template <class T, ShapeType S, Policy P>
  void add(std::string name, const View<T, S, P>& v) {
    push(std::move(name), tensor_dtype_of<std::remove_const_t<T>>(), detail::to_index_vector(v.dims()),
         detail::interop::host_bytes(v));
  }
  /// visit(f) calls f(name, tensor) for each tensor (an ad::Var's value is stored); each is stored as prefix + name.
  template <class Visit>
  void add_all(Visit&& visit, std::string_view prefix = "") {
    visit([&](const auto& name, const auto& tensor) {
      if constexpr (requires { tensor.value(); }) add(std::string(prefix) + std::string(name), tensor.value());
      else add(std::string(prefix) + std::string(name), tensor);
    });
  }
  /// A metadata entry ("__metadata__" in the header); keys and values are UTF-8 strings.
  void add_metadata(std::string key, std::string value) {
    if (!detail::interop::valid_utf8(key) || !detail::interop::valid_utf8(value))
      throw std::invalid_argument("tessera: safetensors_writer: metadata " + key + " is not valid UTF-8");
    if (!metadata_.emplace(key, std::move(value)).second)
      throw std::invalid_argument("tessera: safetensors_writer: two metadata entries are named " + key);
  }

  bool contains(std::string_view name) const { return index_.count(std::string(name)) != 0; }
  std::size_t size() const { return entries_.size(); }
  std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (const auto& e : entries_) v.push_back(e.name);
    return v;
  }

  /// The whole file, in memory.
  std::vector<unsigned char> bytes() const {
    std::string h = "{";
    std::uint64_t offset = 0;
    for (const auto& e : entries_) {
      if (h.size() > 1) h += ',';
      h += detail::interop::json_quote(e.name) + ":{\"dtype\":\"" + safetensors_dtype_name(e.dtype) + "\",\"shape\":[";
      for (std::size_t i = 0; i < e.dims.size(); ++i) h += (i ? "," : "") + std::to_string(e.dims[i]);
      h += "],\"data_offsets\":[" + std::to_string(offset) + "," + std::to_string(offset + e.bytes.size()) + "]}";
      offset += e.bytes.size();
    }
    if (!metadata_.empty()) {
      if (h.size() > 1) h += ',';
      h += "\"__metadata__\":{";
      bool first = true;
      for (const auto& [k, v] : metadata_) {
        h += (first ? "" : ",") + detail::interop::json_quote(k) + ":" + detail::interop::json_quote(v);
        first = false;
      }
      h += "}";
    }
    h += "}";
    while ((8 + h.size()) % 8 != 0) h += ' ';  // the data starts 8-byte aligned
    if (h.size() > safetensors_max_header)
      throw std::length_error("tessera: safetensors_writer: the header would take " + std::to_string(h.size()) +
                              " bytes, above the " + std::to_string(safetensors_max_header) + " readers accept");
    std::vector<unsigned char> out(8 + h.size() + offset);
    detail::store_le<std::uint64_t>(out.data(), h.size());
    std::memcpy(out.data() + 8, h.data(), h.size());
    unsigned char* p = out.data() + 8 + h.size();
    for (const auto& e : entries_) {
      if (!e.bytes.empty()) std::memcpy(p, e.bytes.data(), e.bytes.size());
      p += e.bytes.size();
    }
    return out;
  }
  /// Write the file atomically (io_error naming the step on failure; `path` is then left as it was).
  void write(const std::filesystem::path& path) const { detail::interop::write_atomically(path, bytes(), "safetensors"); }

 private:
  struct entry {
    std::string name;
    tensor_dtype dtype;
    std::vector<index_t> dims;
    std::vector<unsigned char> bytes;
  };
  void push(std::string name, tensor_dtype dtype, std::vector<index_t> dims, std::vector<unsigned char> bytes) {
    if (name.empty()) throw std::invalid_argument("tessera: safetensors_writer: a tensor needs a non-empty name");
    if (name == "__metadata__")
      throw std::invalid_argument("tessera: safetensors_writer: __metadata__ is reserved for the metadata");
    if (!detail::interop::valid_utf8(name))
      throw std::invalid_argument("tessera: safetensors_writer: the tensor name " + name + " is not valid UTF-8");
    if (index_.count(name)) throw std::invalid_argument("tessera: safetensors_writer: two tensors are named " + name);
    index_.emplace(name, entries_.size());
    entries_.push_back(entry{std::move(name), dtype, std::move(dims), std::move(bytes)});
  }
  std::vector<entry> entries_;
  std::map<std::string, std::size_t> index_;
  std::map<std::string, std::string> metadata_;
};

/// Reads a safetensors file: the constructor loads it and checks the header and every tensor's layout; the
/// accessors check names, element types and shapes. Every error is an io_error "tessera: safetensors <path>: ...".
class safetensors_reader {
 public:
  explicit safetensors_reader(const std::filesystem::path& path) : path_(path) {
    bytes_ = detail::interop::read_whole_file(path, UINT64_MAX, [&](const std::string& m) { fail(m); });
    parse();
  }
  /// The bytes of a file already in memory; `name` stands for the path in error messages.
  static safetensors_reader from_bytes(std::vector<unsigned char> bytes, std::filesystem::path name = "<memory>") {
    safetensors_reader r;
    r.path_ = std::move(name);
    r.bytes_ = std::move(bytes);
    r.parse();
    return r;
  }

  const std::filesystem::path& path() const { return path_; }
  /// The tensors' names in the header's order.
  std::vector<std::string> names() const {
    std::vector<std::string> v;
    for (const auto& e : entries_) v.push_back(e.name);
    return v;
  }
  std::size_t size() const { return entries_.size(); }
  bool contains(std::string_view name) const { return index_.find(name) != index_.end(); }
  std::vector<index_t> dims(std::string_view name) const { return find(name).dims; }
  tensor_dtype dtype(std::string_view name) const { return find(name).dtype; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

  /// Tensor `name` into `t`, whose element type and extents must be exactly the file's.
  template <Element T, ShapeType S, Policy P>
  void read_into(std::string_view name, Tensor<T, S, P>& t) const {
    const entry& e = find(name);
    check<T>(e, detail::to_index_vector(t.dims()), "");
    detail::interop::bytes_into(data_of(e), t);
  }
  /// Tensor `name` into a host view of any strides (its extents must be the file's).
  template <class T, ShapeType S, Policy P>
  void read_into(std::string_view name, const View<T, S, P>& v) const {
    const entry& e = find(name);
    check<std::remove_const_t<T>>(e, detail::to_index_vector(v.dims()), "");
    detail::interop::bytes_into(data_of(e), v);
  }
  /// Tensor `name` as a new tensor: element type T, rank S's, S's static extents.
  template <Element T, ShapeType S, Policy P = cpu>
  Tensor<T, S, P> get(std::string_view name) const {
    const entry& e = find(name);
    std::vector<index_t> want(S::extents.begin(), S::extents.end());
    if (e.dims.size() == want.size())
      for (std::size_t i = 0; i < want.size(); ++i)
        if (want[i] == dyn) want[i] = e.dims[i];
    check<T>(e, want, " (-1 = dyn)");
    dims_t<S::rank> d{};
    for (int i = 0; i < S::rank; ++i) d[i] = e.dims[std::size_t(i)];
    Tensor<T, S, P> t(d);
    detail::interop::bytes_into(data_of(e), t);
    return t;
  }

  /// Throws the io_error of a name, element type or shape that differs (`what` names the destination, e.g. "the
  /// model's 0.weight"), or returns.
  template <Element T>
  void check_compatible(std::string_view name, const std::vector<index_t>& want, const std::string& what) const {
    const entry& e = find(name);
    if (e.dtype != tensor_dtype_of<T>())
      fail("tensor " + e.name + ": the file holds " + safetensors_dtype_name(e.dtype) + " (" + tensor_dtype_name(e.dtype) +
           ") of shape " + detail::format_index_list(e.dims) + " but " + what + " is " + type_name<T>() + " of shape " +
           detail::format_index_list(want));
    if (e.dims != want)
      fail("tensor " + e.name + " has shape " + detail::format_index_list(e.dims) + " in the file but " +
           detail::format_index_list(want) + " in " + what);
  }
  [[noreturn]] void fail(const std::string& what) const {
    throw io_error("tessera: safetensors " + path_.string() + ": " + what);
  }

 private:
  struct entry {
    std::string name;
    tensor_dtype dtype;
    std::vector<index_t> dims;
    std::uint64_t begin, end;  // in the data, which starts at data_start_
  };
  safetensors_reader() = default;
  const unsigned char* data_of(const entry& e) const { return bytes_.data() + data_start_ + e.begin; }

  const entry& find(std::string_view name) const {
    auto it = index_.find(name);
    if (it != index_.end()) return entries_[it->second];
    std::string list;
    const std::size_t show = std::min<std::size_t>(entries_.size(), 12);
    for (std::size_t i = 0; i < show; ++i) list += (i ? ", " : "") + entries_[i].name;
    if (show < entries_.size()) list += ", ...";
    fail("no tensor named " + std::string(name) + " in the file (it holds " + std::to_string(entries_.size()) +
         (entries_.size() == 1 ? " tensor" : " tensors") + (entries_.empty() ? "" : ": " + list) + ")");
  }
  template <class T>
  void check(const entry& e, const std::vector<index_t>& want, const char* note) const {
    check_compatible<T>(e.name, want, std::string("the destination") + note);
  }

  static bool dtype_from_name(const std::string& s, tensor_dtype& d) {
    for (auto c : {tensor_dtype::f32, tensor_dtype::f64, tensor_dtype::bf16, tensor_dtype::i8, tensor_dtype::u8,
                   tensor_dtype::i32, tensor_dtype::i64, tensor_dtype::boolean})
      if (s == safetensors_dtype_name(c)) {
        d = c;
        return true;
      }
    return false;
  }

  void parse() {
    using detail::interop::json;
    const std::uint64_t size = bytes_.size();
    if (size < 8) fail("truncated: " + std::to_string(size) + " bytes, fewer than the 8 of the header length");
    const auto n = detail::get_le<std::uint64_t>(bytes_.data());
    if (n > safetensors_max_header)
      fail("the header length " + std::to_string(n) + " is above the limit of " + std::to_string(safetensors_max_header) +
           " bytes (not a safetensors file, or a hostile one)");
    if (n > size - 8)
      fail("truncated: the header length says " + std::to_string(n) + " bytes, the file has " + std::to_string(size - 8) +
           " after it");
    if (n < 2 || bytes_[8] != '{') fail("the header does not start with '{' (not a safetensors file)");
    data_start_ = std::size_t(8 + n);
    const std::uint64_t data_size = size - data_start_;
    json head;
    try {
      head = detail::interop::parse_json(std::string_view(reinterpret_cast<const char*>(bytes_.data() + 8), std::size_t(n)));
    } catch (const detail::interop::json_error& err) {
      fail(std::string("the header is not valid JSON: ") + err.what());
    }
    if (!head.is_object()) fail("the header is not a JSON object");
    for (std::size_t k = 0; k < head.keys.size(); ++k) {
      const std::string& name = head.keys[k];
      const json& v = head.items[k];
      if (name == "__metadata__") {
        if (!v.is_object()) fail("__metadata__ is not an object of strings");
        for (std::size_t i = 0; i < v.keys.size(); ++i) {
          if (!v.items[i].is_string()) fail("__metadata__ entry " + v.keys[i] + " is not a string");
          metadata_.emplace(v.keys[i], v.items[i].text);
        }
        continue;
      }
      auto bad = [&](const std::string& why) { fail("tensor " + name + ": " + why); };
      if (!v.is_object()) bad("its entry is not an object");
      for (const auto& field : v.keys)
        if (field != "dtype" && field != "shape" && field != "data_offsets")
          bad("unknown field \"" + field + "\" (an entry holds dtype, shape and data_offsets)");
      const json* dt = v.find("dtype");
      const json* sh = v.find("shape");
      const json* off = v.find("data_offsets");
      if (!dt || !sh || !off) bad("its entry lacks dtype, shape or data_offsets");
      entry e;
      e.name = name;
      if (!dt->is_string()) bad("dtype is not a string");
      if (!dtype_from_name(dt->text, e.dtype))
        bad("dtype " + dt->text + " is not supported (tessera reads F32, F64, BF16, I8, U8, I32, I64 and BOOL)");
      if (!sh->is_array()) bad("shape is not an array");
      if (sh->items.size() > std::size_t(max_rank))
        bad("rank " + std::to_string(sh->items.size()) + " is above tessera's " + std::to_string(max_rank));
      for (const auto& x : sh->items) {
        if (!x.is_unsigned() || x.magnitude > std::uint64_t(INT64_MAX)) bad("shape holds something other than an extent >= 0");
        e.dims.push_back(index_t(x.magnitude));
      }
      const std::size_t elem = tensor_dtype_size(e.dtype);
      std::uint64_t count = 0;
      if (!detail::interop::element_count(e.dims, elem, count))
        bad("shape " + detail::format_index_list(e.dims) + " of " + dt->text + " is too large (more than 2^63 bytes)");
      if (!off->is_array() || off->items.size() != 2 || !off->items[0].is_unsigned() || !off->items[1].is_unsigned())
        bad("data_offsets is not a pair of offsets >= 0");
      e.begin = off->items[0].magnitude;
      e.end = off->items[1].magnitude;
      if (e.begin > e.end)
        bad("data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] end before they begin");
      if (e.end > data_size)
        bad("data_offsets [" + std::to_string(e.begin) + ", " + std::to_string(e.end) + "] run past the " +
            std::to_string(data_size) + " bytes of data (truncated?)");
      if (e.end - e.begin != count * elem)
        bad(std::to_string(e.end - e.begin) + " bytes of data for shape " + detail::format_index_list(e.dims) + " of " +
            dt->text + " (expected " + std::to_string(count * elem) + ")");
      if (e.dtype == tensor_dtype::boolean)  // any other byte read as a bool is undefined behaviour
        for (std::uint64_t i = 0; i < count; ++i)
          if (bytes_[data_start_ + e.begin + i] > 1)
            bad("BOOL element " + std::to_string(i) + " is the byte " + std::to_string(bytes_[data_start_ + e.begin + i]) +
                ", not 0 or 1");
      index_.emplace(e.name, entries_.size());
      entries_.push_back(std::move(e));
    }
    // The byte ranges must tile the data exactly: no overlap, no gap, nothing after the last.
    std::vector<const entry*> order;
    for (const auto& e : entries_) order.push_back(&e);
    std::sort(order.begin(), order.end(), [](const entry* a, const entry* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
    });
    std::uint64_t at = 0;
    const entry* prev = nullptr;
    for (const entry* e : order) {
      if (e->begin < at)
        fail("tensor " + e->name + ": its bytes [" + std::to_string(e->begin) + ", " + std::to_string(e->end) +
             ") overlap those of tensor " + prev->name + " [" + std::to_string(prev->begin) + ", " + std::to_string(prev->end) + ")");
      if (e->begin > at)
        fail("tensor " + e->name + ": bytes [" + std::to_string(at) + ", " + std::to_string(e->begin) +
             ") of the data before it belong to no tensor");
      if (e->end > at || !prev) prev = e;
      at = std::max(at, e->end);
    }
    if (at != data_size)
      fail(std::to_string(data_size - at) + " bytes after the last tensor's data (the file has " + std::to_string(size) +
           " bytes)");
  }

  std::filesystem::path path_;
  std::vector<unsigned char> bytes_;
  std::size_t data_start_ = 0;
  std::vector<entry> entries_;
  std::map<std::string, std::size_t, std::less<>> index_;
  std::map<std::string, std::string> metadata_;
};

/// How a model's tensors are named and matched in a safetensors file.
struct safetensors_options {
  /// tessera's name -> the file's name; empty: the same name (torch.nn.Sequential's names, see above).
  std::function<std::string(const std::string&)> rename;
  /// Load: every tensor in the file must be one of the model's (PyTorch's strict=True); a "<x>.num_batches_tracked"
  /// beside a "<x>.running_mean" of the model is let through (PyTorch's BatchNorm2d keeps that counter, tessera's
  /// BatchNorm2d does not; PyTorch in turn loads a file without it).
  bool strict = true;
  /// Save and load the buffers (BatchNorm's running statistics and num_batches_tracked) too.
  bool buffers = true;
};

/// A rename function that replaces the first matching prefix of a name: rename_prefixes({{"0.", "lstm."},
/// {"2.", "fc."}}) maps "0.weight_ih_l0" to "lstm.weight_ih_l0"; a name without any of the prefixes is kept.
inline std::function<std::string(const std::string&)> rename_prefixes(std::vector<std::pair<std::string, std::string>> map) {
  return [map = std::move(map)](const std::string& name) {
    for (const auto& [from, to] : map)
      if (name.compare(0, from.size(), from) == 0) return to + name.substr(from.size());
    return name;
  };
}

namespace detail::interop {
/// f(tessera name, file name, tensor&) for every parameter (its value) and, with o.buffers, every buffer.
template <class Model, class F>
void each_model_tensor(Model& model, const safetensors_options& o, F&& f) {
  auto file_name = [&](const std::string& n) { return o.rename ? o.rename(n) : n; };
  model.for_each_parameter([&](const std::string& n, auto& var) { f(n, file_name(n), var.mutable_value()); });
  if (o.buffers)
    if constexpr (requires { model.for_each_buffer([](const std::string&, auto&) {}); })
      model.for_each_buffer([&](const std::string& n, auto& t) { f(n, file_name(n), t); });
}
}  // namespace detail::interop

/// Write a model's parameters (and buffers) with `metadata` to a safetensors file, atomically.
template <class Model>
void save_safetensors(const std::filesystem::path& path, Model& model, const std::map<std::string, std::string>& metadata = {},
                      const safetensors_options& options = {}) {
  safetensors_writer w;
  detail::interop::each_model_tensor(model, options, [&](const std::string& name, const std::string& file_name, auto& t) {
    if (w.contains(file_name))
      throw std::invalid_argument("tessera: save_safetensors: two of the model's tensors are renamed " + file_name +
                                  " (the second is " + name + ")");
    w.add(file_name, t);
  });
  for (const auto& [k, v] : metadata) w.add_metadata(k, v);
  w.write(path);
}

/// Read a model's parameters (and buffers) from a safetensors file. Every tensor is checked (present, same element
/// type, same shape; with options.strict no tensor of the file left over) before any is written, so a failed load
/// leaves the model as it was. Returns the number of tensors read.
template <class Model>
std::size_t load_safetensors(const std::filesystem::path& path, Model& model, const safetensors_options& options = {}) {
  const safetensors_reader r(path);
  std::set<std::string, std::less<>> seen;
  detail::interop::each_model_tensor(model, options, [&](const std::string& name, const std::string& file_name, auto& t) {
    using T = typename std::remove_cvref_t<decltype(t)>::value_type;
    if (!r.contains(file_name)) {
      std::string list;
      const auto names = r.names();
      for (std::size_t i = 0; i < names.size() && i < 12; ++i) list += (i ? ", " : "") + names[i];
      r.fail("no tensor " + file_name + (file_name == name ? "" : " (the model's " + name + ")") + " in the file (it holds " +
             std::to_string(names.size()) + ": " + list + (names.size() > 12 ? ", ..." : "") + ")");
    }
    r.check_compatible<T>(file_name, detail::to_index_vector(t.dims()),
                          "the model's " + name + (file_name == name ? "" : " (saved as " + file_name + ")"));
    seen.insert(file_name);
  });
  const std::string counter = "num_batches_tracked";
  if (options.strict)
    for (const auto& n : r.names())
      if (!seen.count(n) &&
          !(options.buffers && n.size() >= counter.size() && n.compare(n.size() - counter.size(), counter.size(), counter) == 0 &&
            seen.count(n.substr(0, n.size() - counter.size()) + "running_mean")))
        r.fail("tensor " + n + " in the file matches no tensor of the model (safetensors_options::strict)");
  detail::interop::each_model_tensor(model, options,
                                     [&](const std::string&, const std::string& file_name, auto& t) { r.read_into(file_name, t); });
  return seen.size();
}

}  // namespace tessera
