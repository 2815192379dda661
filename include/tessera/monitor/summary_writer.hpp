// TensorBoard event files: scalars, histograms, images and text of a training run, written as TensorBoard (and
// PyTorch's torch.utils.tensorboard) write them, with no protobuf or TensorFlow library.
//
//   monitor::summary_writer w("runs/cnn");              // creates runs/cnn/, opens events.out.tfevents.<secs>.<host>
//   w.add_scalar("train/loss", loss, step);
//   w.add_histogram("logits", logits, step);            // a Tensor, host View, ad::Var or range of numbers
//   w.add_histograms(net, epoch);                       // "weights/<name>" and "grads/<name>" of every parameter
//   w.add_image("input", image, step);                  // [C,H,W] (or image_format::hwc, or [H,W]); uint8 or 0..1
//   w.add_images_grid("filters/conv1", conv1_weight, epoch, {.scale = 8});  // [N,C,H,W] tiled, min-max normalised
//   w.add_text("notes", "**markdown**", step);
//   w.flush();                                          // also every flush_seconds, and on close / destruction
// Then `tensorboard --logdir runs` shows them.
//
// The file: TensorBoard's name, events.out.tfevents.<unix seconds, 10 digits>.<hostname><suffix> (".1", ".2", ...
// appended when that name exists already: the file is created with O_EXCL and never overwrites one). It is a sequence
// of TFRecords (event_file.hpp) of Event messages (TensorFlow's event.proto: wall_time 1, step 2, file_version 3,
// summary 5), the first with file_version "brain.Event:2". Each add_* writes one Event with one Summary.Value (tag 1;
// simple_value 2 a float; image 4: height 1, width 2, colorspace 3, encoded_image_string 4 (PNG, png.hpp);
// histo 6: HistogramProto min 1, max 2, num 3, sum 4, sum_squares 5, bucket_limit 6, bucket 7; tensor 8 with metadata
// 9 for text: a DT_STRING TensorProto of shape [1] whose string_val is the text, plugin_name "text").
// Histograms use TensorFlow's default buckets (histogram.cc): limits ±1e-12 x 1.1^k below 1e20, then ±DBL_MAX, and 0;
// a value v counts in the first bucket whose limit is greater than v; runs of empty buckets are written as one bucket
// (the last limit of the run, count 0), as TensorFlow writes them. NaN and infinite values are a std::invalid_argument.
// Models are templates: add_histograms needs model.for_each_parameter(f) calling f(name, parameter), a parameter being
// a tensor or an ad::Var (its value(), and grad() when has_grad()); so monitor/ includes nothing of nn/.
// Errors: a directory or file that cannot be created, or a write or flush that fails, is a tessera::io_error naming
// the path (and the step and tag); bad arguments (empty tags, shapes that are not images) a std::invalid_argument;
// any call after close() a std::logic_error. One thread at a time per writer. Device tensors are copied to the host.
#pragma once

#include <algorithm>
#include <array>
#include <cerrno>
#include <cfloat>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iterator>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <type_traits>
#include <utility>
#include <vector>

#include <fcntl.h>
#include <unistd.h>

#include "tessera/io/error.hpp"
#include "tessera/monitor/event_file.hpp"
#include "tessera/monitor/png.hpp"

namespace tessera::monitor {

/// How a rank-3 image tensor is laid out: channels first ([C,H,W], PyTorch's) or last ([H,W,C]).
enum class image_format { chw, hwc };

/// An 8-bit image: height rows of width x channels bytes (HWC, row-major).
struct image8 {
  long long height = 0, width = 0;
  int channels = 0;
  std::vector<std::uint8_t> pixels;
};

/// How add_images_grid / make_image_grid tile [N,C,H,W] tensors (C 1 or 3: N tiles, grey or RGB; else N x C grey).
struct grid_options {
  int columns = 0;              ///< tiles per row; 0: ceil(sqrt(tiles))
  int padding = 1;              ///< pixels between tiles and around the grid
  int scale = 1;                ///< each value drawn as scale x scale pixels (3x3 filters are small)
  bool normalize_each = false;  ///< min-max per tile instead of over the whole tensor
  std::uint8_t pad_value = 0;   ///< the padding's grey level
};

struct summary_writer_options {
  double flush_seconds = 10;    ///< flush when an event is written this long after the last flush (0: every event)
  std::string filename_suffix;  ///< appended to the file name (TensorBoard reads any name containing "tfevents")
};

/// A histogram as TensorBoard's HistogramProto holds it (buckets as written: runs of empty ones merged).
struct histogram {
  double min = 0, max = 0, num = 0, sum = 0, sum_squares = 0;
  std::vector<double> bucket_limit, bucket;
};

/// TensorFlow's default bucket limits: -DBL_MAX, then -1e20 < ... <= -1e-12, 0, 1e-12 <= ... < 1e20, then DBL_MAX (1551 limits).
inline const std::vector<double>& default_bucket_limits() {
  static const std::vector<double> limits = [] {
    std::vector<double> pos;
    for (double v = 1.0e-12; v < 1.0e20; v *= 1.1) pos.push_back(v);
    pos.push_back(DBL_MAX);
    std::vector<double> all;
    all.reserve(2 * pos.size() + 1);
    for (auto it = pos.rbegin(); it != pos.rend(); ++it) all.push_back(-*it);
    all.push_back(0.0);
    all.insert(all.end(), pos.begin(), pos.end());
    return all;
  }();
  return limits;
}

/// The histogram of `values` over default_bucket_limits(); a NaN or infinite value, or none, is std::invalid_argument.
inline histogram make_histogram(std::span<const double> values) {
  if (values.empty()) throw std::invalid_argument("tessera: histogram: no values");
  const auto& limits = default_bucket_limits();
  std::vector<double> counts(limits.size(), 0.0);
  histogram h;
  h.min = values[0];
  h.max = values[0];
  for (std::size_t i = 0; i < values.size(); ++i) {
    const double v = values[i];
    if (!std::isfinite(v))
      throw std::invalid_argument("tessera: histogram: value " + std::to_string(i) + " of " +
                                  std::to_string(values.size()) + " is " + (std::isnan(v) ? "NaN" : "infinite"));
    h.min = std::min(h.min, v);
    h.max = std::max(h.max, v);
    h.sum += v;
    h.sum_squares += v * v;
    counts[std::size_t(std::upper_bound(limits.begin(), limits.end(), v) - limits.begin())] += 1;
  }
  h.num = double(values.size());
  for (std::size_t i = 0; i < limits.size();) {  // TensorFlow's EncodeToProto without preserve_zero_buckets
    double end = limits[i], count = counts[i];
    ++i;
    if (count <= 0)
      while (i < limits.size() && counts[i] <= 0) end = limits[i++];
    h.bucket_limit.push_back(end);
    h.bucket.push_back(count);
  }
  return h;
}

namespace detail {
template <class>
inline constexpr bool always_false = false;

/// Elements (in row-major order) and extents of a tensor, host view, ad::Var or range, copied to the host.
template <class V>
struct host_array {
  std::vector<V> values;
  std::vector<long long> dims;
};

template <class X>
auto host_copy(const X& x) {
  if constexpr (requires { x.value(); x.requires_grad(); }) {  // an ad::Var: its value
    return host_copy(x.value());
  } else if constexpr (requires { x.to_vector(); x.dims(); }) {  // a Tensor (on any policy)
    host_array<typename decltype(x.to_vector())::value_type> a;
    a.values = x.to_vector();
    for (auto d : x.dims()) a.dims.push_back((long long)d);
    return a;
  } else if constexpr (requires { x.data(); x.dims(); x.strides(); X::rank; }) {  // a View with any strides
    static_assert(!X::policy::on_device, "tessera: monitor: copy a cuda view to the host (tessera::to<cpu>) first");
    host_array<std::remove_cv_t<typename X::value_type>> a;
    constexpr int R = X::rank;
    std::size_t n = 1;
    for (int i = 0; i < R; ++i) {
      a.dims.push_back((long long)x.dims()[i]);
      n *= std::size_t(x.dims()[i]);
    }
    a.values.reserve(n);
    std::array<long long, (R > 0 ? R : 1)> at{};
    for (std::size_t k = 0; k < n; ++k) {
      long long off = 0;
      for (int i = 0; i < R; ++i) off += at[i] * (long long)x.strides()[i];
      a.values.push_back(x.data()[off]);
      for (int i = R - 1; i >= 0; --i) {
        if (++at[i] < x.dims()[i]) break;
        at[i] = 0;
      }
    }
    return a;
  } else if constexpr (requires { std::begin(x); std::end(x); }) {  // std::vector, std::span, an array of numbers
    host_array<std::remove_cvref_t<decltype(*std::begin(x))>> a;
    for (const auto& v : x) a.values.push_back(v);
    a.dims.push_back((long long)a.values.size());
    return a;
  } else {
    static_assert(always_false<X>, "tessera: monitor: expected a Tensor, a host View, an ad::Var or a range of numbers");
  }
}

/// A number as a double (bfloat16 through float).
template <class V>
double to_double(const V& v) {
  if constexpr (std::is_arithmetic_v<V>) return double(v);
  else return double(static_cast<float>(v));
}

template <class V>
std::string dims_text(const host_array<V>& a) {
  std::string s = "[";
  for (std::size_t i = 0; i < a.dims.size(); ++i) s += (i ? ", " : "") + std::to_string(a.dims[i]);
  return s + "]";
}

/// A pixel: uint8 as it is, a floating-point value in [0, 1] scaled to 0..255 (clamped; NaN is 0).
template <class V>
std::uint8_t to_pixel(const V& v) {
  if constexpr (std::is_same_v<V, std::uint8_t>) {
    return v;
  } else if constexpr (std::is_floating_point_v<V> || (!std::is_arithmetic_v<V> && std::is_convertible_v<V, float>)) {
    const double d = detail::to_double(v);
    if (!(d > 0)) return 0;
    return d >= 1 ? 255 : std::uint8_t(std::lround(d * 255.0));
  } else {
    static_assert(always_false<V>, "tessera: monitor: image pixels must be uint8 (0..255) or floating-point (0..1)");
  }
}
}  // namespace detail

/// An image tensor as 8-bit pixels: [H,W] grey, or [C,H,W] / [H,W,C] (by `format`) with 1 to 4 channels.
template <class X>
image8 make_image(const X& x, image_format format = image_format::chw) {
  const auto a = detail::host_copy(x);
  image8 im;
  const auto& d = a.dims;
  if (d.size() == 2) {
    im.height = d[0], im.width = d[1], im.channels = 1;
  } else if (d.size() == 3) {
    im.channels = int(format == image_format::chw ? d[0] : d[2]);
    im.height = format == image_format::chw ? d[1] : d[0];
    im.width = format == image_format::chw ? d[2] : d[1];
    if (d[format == image_format::chw ? 0 : 2] < 1 || d[format == image_format::chw ? 0 : 2] > 4)
      throw std::invalid_argument("tessera: monitor: an image of shape " + detail::dims_text(a) + " read as " +
                                  (format == image_format::chw ? "[C,H,W]" : "[H,W,C]") + " has " +
                                  std::to_string(d[format == image_format::chw ? 0 : 2]) +
                                  " channels; images have 1 to 4 (pass image_format::" +
                                  (format == image_format::chw ? "hwc" : "chw") + " for the other layout)");
  } else {
    throw std::invalid_argument("tessera: monitor: an image must be [H,W], [C,H,W] or [H,W,C], not " +
                                detail::dims_text(a));
  }
  if (im.height < 1 || im.width < 1) throw std::invalid_argument("tessera: monitor: an empty image " + detail::dims_text(a));
  const std::size_t hw = std::size_t(im.height) * std::size_t(im.width), c = std::size_t(im.channels);
  im.pixels.resize(hw * c);
  for (std::size_t p = 0; p < hw; ++p)
    for (std::size_t k = 0; k < c; ++k)
      im.pixels[p * c + k] = detail::to_pixel(a.values[format == image_format::chw && d.size() == 3 ? k * hw + p : p * c + k]);
  return im;
}

/// [N,C,H,W] values (filters, a batch of images) tiled into one image, min-max normalised to 0..255 (a constant
/// tensor or tile is mid-grey): N tiles of C channels when C is 1 or 3, else N x C grey tiles (row by row).
template <class X>
image8 make_image_grid(const X& x, const grid_options& opt = {}) {
  const auto a = detail::host_copy(x);
  if (a.dims.size() != 4 || a.dims[0] < 1 || a.dims[1] < 1 || a.dims[2] < 1 || a.dims[3] < 1)
    throw std::invalid_argument("tessera: monitor: an image grid takes a non-empty [N,C,H,W] tensor, not " +
                                detail::dims_text(a));
  if (opt.columns < 0 || opt.padding < 0 || opt.scale < 1)
    throw std::invalid_argument("tessera: monitor: grid_options: columns " + std::to_string(opt.columns) + ", padding " +
                                std::to_string(opt.padding) + ", scale " + std::to_string(opt.scale) +
                                " (columns >= 0, padding >= 0, scale >= 1)");
  const long long n = a.dims[0], c = a.dims[1], h = a.dims[2], w = a.dims[3];
  const int ch = (c == 3) ? 3 : 1;
  const long long tiles = (c == 1 || c == 3) ? n : n * c, tile_size = h * w * ch;
  const long long cols = opt.columns > 0 ? std::min<long long>(opt.columns, tiles)
                                         : (long long)std::ceil(std::sqrt(double(tiles)) - 1e-9);
  const long long rows = (tiles + cols - 1) / cols, s = opt.scale, pad = opt.padding;
  image8 im;
  im.channels = ch;
  im.height = rows * (h * s + pad) + pad;
  im.width = cols * (w * s + pad) + pad;
  im.pixels.assign(std::size_t(im.height * im.width * ch), opt.pad_value);
  auto value = [&](long long t, long long k, long long y, long long xx) -> double {  // tile t, channel k of it
    const long long flat = ch == 3 ? (t * 3 + k) : t;                             // the (n, c) plane
    return detail::to_double(a.values[std::size_t((flat * h + y) * w + xx)]);
  };
  double lo = 0, hi = 0;
  auto range = [&](long long t0, long long t1) {
    lo = HUGE_VAL, hi = -HUGE_VAL;
    for (long long i = t0 * tile_size; i < t1 * tile_size; ++i) {
      const double v = detail::to_double(a.values[std::size_t(i)]);
      if (std::isfinite(v)) lo = std::min(lo, v), hi = std::max(hi, v);
    }
  };
  if (!opt.normalize_each) range(0, tiles);
  for (long long t = 0; t < tiles; ++t) {
    if (opt.normalize_each) range(t, t + 1);
    const long long y0 = pad + (t / cols) * (h * s + pad), x0 = pad + (t % cols) * (w * s + pad);
    for (long long y = 0; y < h * s; ++y)
      for (long long xx = 0; xx < w * s; ++xx)
        for (long long k = 0; k < ch; ++k) {
          const double v = value(t, k, y / s, xx / s);
          double u = hi > lo ? (v - lo) / (hi - lo) : 0.5;
          if (!std::isfinite(v)) u = 0;
          im.pixels[std::size_t(((y0 + y) * im.width + x0 + xx) * ch + k)] =
              std::uint8_t(std::lround(std::clamp(u, 0.0, 1.0) * 255.0));
        }
  }
  return im;
}

/// Writes one TensorBoard event file in `logdir` (see the top of this file).
class summary_writer {
 public:
  explicit summary_writer(const std::filesystem::path& logdir, summary_writer_options options = {})
      : logdir_(logdir), opt_(std::move(options)) {
    std::error_code ec;
    std::filesystem::create_directories(logdir_, ec);
    if (ec || !std::filesystem::is_directory(logdir_))
      throw io_error("tessera: summary_writer: cannot create the log directory " + logdir_.string() + ": " +
                     (ec ? ec.message() : std::string("a file of that name exists")));
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0 || !host[0]) std::strcpy(host, "localhost");
    const long long secs =
        std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
    char stamp[32];
    std::snprintf(stamp, sizeof stamp, "%010lld", secs);
    const std::string base = std::string("events.out.tfevents.") + stamp + "." + host + opt_.filename_suffix;
    for (int k = 0;; ++k) {
      path_ = logdir_ / (k == 0 ? base : base + "." + std::to_string(k));
      const int fd = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
      if (fd >= 0) {
        file_ = ::fdopen(fd, "wb");
        if (!file_) {
          const int err = errno;
          ::close(fd);
          throw io_error("tessera: summary_writer: cannot open " + path_.string() + ": " + std::strerror(err));
        }
        break;
      }
      if (errno != EEXIST || k >= 1000)
        throw io_error("tessera: summary_writer: cannot create " + path_.string() + ": " + std::strerror(errno));
    }
    last_flush_ = std::chrono::steady_clock::now();
    proto_encoder event;
    event.add_double(1, now()).add_bytes(3, "brain.Event:2");
    write_record(event.bytes(), 0, "file_version");
    flush();
  }
  summary_writer(summary_writer&& o) noexcept
      : logdir_(std::move(o.logdir_)), path_(std::move(o.path_)), opt_(std::move(o.opt_)),
        file_(std::exchange(o.file_, nullptr)), last_flush_(o.last_flush_) {}
  summary_writer& operator=(summary_writer&& o) noexcept {
    if (this != &o) {
      if (file_) std::fclose(file_);
      logdir_ = std::move(o.logdir_), path_ = std::move(o.path_), opt_ = std::move(o.opt_);
      file_ = std::exchange(o.file_, nullptr), last_flush_ = o.last_flush_;
    }
    return *this;
  }
  summary_writer(const summary_writer&) = delete;
  summary_writer& operator=(const summary_writer&) = delete;
  /// Flushes and closes; errors are dropped here (call close() to see them).
  ~summary_writer() {
    if (file_) std::fclose(file_);
  }

  const std::filesystem::path& logdir() const { return logdir_; }
  /// The event file.
  const std::filesystem::path& path() const { return path_; }
  bool is_open() const { return file_ != nullptr; }

  void add_scalar(std::string_view tag, double value, std::int64_t step) {
    proto_encoder v;
    v.add_bytes(1, checked_tag(tag, step)).add_float(2, float(value));
    write_value(v, step, tag);
  }

  /// The histogram of every element of a Tensor (any policy), host View, ad::Var (its value) or range of numbers.
  template <class X>
  void add_histogram(std::string_view tag, const X& values, std::int64_t step) {
    checked_tag(tag, step);
    const auto a = detail::host_copy(values);
    std::vector<double> d;
    d.reserve(a.values.size());
    for (const auto& v : a.values) d.push_back(detail::to_double(v));
    histogram h;
    try {
      h = make_histogram(d);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string(e.what()) + " (tag '" + std::string(tag) + "', step " +
                                  std::to_string(step) + ", shape " + detail::dims_text(a) + ")");
    }
    proto_encoder hp;
    hp.add_double(1, h.min).add_double(2, h.max).add_double(3, h.num).add_double(4, h.sum).add_double(5, h.sum_squares);
    hp.add_packed_doubles(6, h.bucket_limit).add_packed_doubles(7, h.bucket);
    proto_encoder v;
    v.add_bytes(1, tag).add_message(6, hp);
    write_value(v, step, tag);
  }

  /// Histograms of every parameter of a model (model.for_each_parameter(f): f(name, tensor or ad::Var)):
  /// "<prefix>weights/<name>", and "<prefix>grads/<name>" for each ad::Var that has a gradient.
  template <class Model>
  void add_histograms(Model& model, std::int64_t step, std::string_view prefix = "") {
    model.for_each_parameter([&](const auto& name, auto& p) {
      add_histogram(std::string(prefix) + "weights/" + std::string(name), p, step);
      if constexpr (requires { p.has_grad(); p.grad(); })
        if (p.has_grad()) add_histogram(std::string(prefix) + "grads/" + std::string(name), p.grad(), step);
    });
  }

  /// An image: [H,W] (grey), [C,H,W] or, with image_format::hwc, [H,W,C], 1 to 4 channels (grey, grey + alpha, RGB,
  /// RGBA); uint8 pixels as they are, floating-point ones in [0, 1] scaled to 0..255 (clamped). Stored as PNG.
  template <class X>
  void add_image(std::string_view tag, const X& image, std::int64_t step, image_format format = image_format::chw) {
    checked_tag(tag, step);
    write_image(tag, make_image(image, format), step);
  }
  /// An image given as 8-bit pixels (HWC).
  void add_image(std::string_view tag, const image8& image, std::int64_t step) {
    checked_tag(tag, step);
    write_image(tag, image, step);
  }
  /// [N,C,H,W] values (e.g. a convolution's filters) tiled into one min-max normalised image (make_image_grid).
  template <class X>
  void add_images_grid(std::string_view tag, const X& nchw, std::int64_t step, const grid_options& options = {}) {
    checked_tag(tag, step);
    write_image(tag, make_image_grid(nchw, options), step);
  }

  /// Text (markdown) for TensorBoard's text plugin.
  void add_text(std::string_view tag, std::string_view text, std::int64_t step) {
    checked_tag(tag, step);
    proto_encoder plugin, meta, dim, shape, tensor, v;
    plugin.add_bytes(1, "text");  // PluginData.plugin_name; content: an empty TextPluginData (version 0)
    meta.add_message(1, plugin);
    dim.add_int64(1, 1);          // TensorShapeProto.Dim.size
    shape.add_message(2, dim);
    tensor.add_int64(1, 7).add_message(2, shape).add_bytes(8, text);  // dtype DT_STRING, tensor_shape [1], string_val
    v.add_bytes(1, tag).add_message(8, tensor).add_message(9, meta);
    write_value(v, step, tag);
  }

  /// Hands what is buffered to the operating system (TensorBoard then sees it).
  void flush() {
    require_open("flush");
    if (std::fflush(file_) != 0)
      throw io_error("tessera: summary_writer: flushing " + path_.string() + " failed: " + std::strerror(errno));
    last_flush_ = std::chrono::steady_clock::now();
  }
  /// Flushes and closes the file; later calls other than close() are a std::logic_error.
  void close() {
    if (!file_) return;
    std::FILE* f = std::exchange(file_, nullptr);
    const bool flushed = std::fflush(f) == 0;
    const int err = errno;
    if (std::fclose(f) != 0 || !flushed)
      throw io_error("tessera: summary_writer: closing " + path_.string() + " failed: " + std::strerror(flushed ? errno : err));
  }

 private:
  static double now() {
    return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  }
  void require_open(const char* what) const {
    if (!file_)
      throw std::logic_error(std::string("tessera: summary_writer: ") + what + " after close() (" + path_.string() + ")");
  }
  std::string_view checked_tag(std::string_view tag, std::int64_t step) const {
    require_open("a summary");
    if (tag.empty())
      throw std::invalid_argument("tessera: summary_writer: an empty tag (step " + std::to_string(step) + ", " +
                                  path_.string() + ")");
    return tag;
  }
  void write_image(std::string_view tag, const image8& im, std::int64_t step) {
    if (im.pixels.size() != std::size_t(im.height * im.width * im.channels))
      throw std::invalid_argument("tessera: summary_writer: image '" + std::string(tag) + "' (step " + std::to_string(step) +
                                  ") has " + std::to_string(im.pixels.size()) + " bytes for " + std::to_string(im.height) +
                                  " x " + std::to_string(im.width) + " x " + std::to_string(im.channels));
    proto_encoder img, v;
    img.add_int64(1, im.height).add_int64(2, im.width).add_int64(3, im.channels);
    img.add_bytes(4, encode_png(im.pixels.data(), im.height, im.width, im.channels));
    v.add_bytes(1, tag).add_message(4, img);
    write_value(v, step, tag);
  }
  void write_value(const proto_encoder& value, std::int64_t step, std::string_view tag) {
    proto_encoder summary, event;
    summary.add_message(1, value);
    event.add_double(1, now()).add_int64(2, step).add_message(5, summary);
    write_record(event.bytes(), step, tag);
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - last_flush_).count() >= opt_.flush_seconds)
      flush();
  }
  void write_record(std::string_view event, std::int64_t step, std::string_view tag) {
    require_open("a summary");
    const std::string rec = tfrecord_frame(event);
    if (std::fwrite(rec.data(), 1, rec.size(), file_) != rec.size())
      throw io_error("tessera: summary_writer: writing " + path_.string() + " (step " + std::to_string(step) + ", tag '" +
                     std::string(tag) + "') failed: " + std::strerror(errno));
  }

  std::filesystem::path logdir_, path_;
  summary_writer_options opt_;
  std::FILE* file_ = nullptr;
  std::chrono::steady_clock::time_point last_flush_{};
};

}  // namespace tessera::monitor
