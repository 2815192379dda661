// A progress bar for training loops: steps done out of a total, the rate (steps or items per second), the metrics
// given with each update, the elapsed time and the estimated time left.
//
//   monitor::progress_bar bar(loader.size(), {.description = "epoch 1", .unit = "batches", .item_unit = "images"});
//   for (auto& [x, y] : loader.epoch(0)) {
//     double loss = step(x, y);
//     bar.update(1, {{"loss", loss}}, x.dims()[0]);   // one step, its metrics, and the items it held
//   }
//   bar.close();                                       // (the destructor closes it too)
//
// On a terminal (isatty on the stream's file descriptor, or .terminal = terminal_mode::always) the line is redrawn
// in place with '\r' at most every min_interval_s seconds, and the last step's line ends with '\n'. Elsewhere (a log
// file, a pipe) each shown update is a line of its own, throttled by every_n (a line every N steps) and every_s (at
// most one every S seconds); with both 0 every update is shown. The last step (step == total) is always shown.
// A line reads
//   epoch 1  300/938 batches   31%  4180.2 images/s  loss 0.4521  acc 0.8750  elapsed 0:04  ETA 0:09
// The rate is the mean since the bar started: steps (or items, with item_unit) over the elapsed seconds; the ETA is
// elapsed / steps * steps left. With .mean_metrics each metric shown is the mean of the values given since the last
// shown line (a smoother loss); otherwise the last value. Times read M:SS, or H:MM:SS from an hour on; a rate or ETA
// that cannot be known yet (no step, no time) reads "?". total = 0: an unknown total (no percentage, no ETA).
// Output goes to a FILE* (.file, stderr by default) or a std::ostream (.stream, which takes precedence; std::cout,
// std::cerr and std::clog count as the terminal of fd 1 and 2). .clock is the time source in seconds (tests inject
// one); by default std::chrono::steady_clock.
#pragma once
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <iostream>
#include <ostream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace tessera::monitor {

/// Whether progress_bar redraws one line in place.
enum class terminal_mode {
  detect,  ///< isatty() of the stream's file descriptor
  always,  ///< redraw with '\r'
  never    ///< one line per shown update
};

struct progress_options {
  std::string description;            ///< printed first on each line (e.g. "epoch 3"); empty: nothing
  std::string unit = "it";            ///< what a step is, after the counts ("300/938 batches")
  std::string item_unit;              ///< non-empty: the rate counts the items given to update() ("images/s");
                                      ///< empty: steps per second ("<unit>/s")
  std::FILE* file = stderr;           ///< where the lines go, unless stream is set
  std::ostream* stream = nullptr;     ///< where the lines go instead of file
  terminal_mode terminal = terminal_mode::detect;
  double min_interval_s = 0.1;        ///< terminal: at most one redraw per this many seconds (>= 0)
  std::int64_t every_n = 0;           ///< not a terminal: a line every N steps (0: no step throttle) (>= 0)
  double every_s = 0.0;               ///< not a terminal: at most one line per S seconds (0: no time throttle) (>= 0)
  bool mean_metrics = false;          ///< show each metric's mean since the last shown line, not its last value
  int metric_precision = 4;           ///< digits after the point of metric values
  std::function<double()> clock;      ///< seconds, monotonic; empty: std::chrono::steady_clock
};

/// "M:SS", or "H:MM:SS" from an hour on; "?" for a negative or non-finite number of seconds.
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = std::int64_t(seconds + 0.5);
  char buf[48];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60), (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

/// A rate with 3 significant digits at least: "0.123", "4.56", "78.9", "4180.2" (one decimal from 10 on).
inline std::string format_rate(double per_second) {
  if (!std::isfinite(per_second) || per_second < 0) return "?";
  char buf[48];
  std::snprintf(buf, sizeof buf, per_second < 1 ? "%.3f" : per_second < 10 ? "%.2f" : "%.1f", per_second);
  return buf;
}

class progress_bar {
 public:
  using metric = std::pair<std::string, double>;

  /// A bar for `total` steps (0: unknown).
  explicit progress_bar(std::int64_t total, progress_options options = {}) : total_(total), o_(std::move(options)) {
    if (total < 0) throw std::invalid_argument("tessera::monitor::progress_bar: total = " + std::to_string(total) + " is negative");
    if (!(o_.min_interval_s >= 0) || !(o_.every_s >= 0) || o_.every_n < 0)
      throw std::invalid_argument("tessera::monitor::progress_bar: min_interval_s, every_s and every_n must be >= 0");
    if (o_.metric_precision < 0 || o_.metric_precision > 17)
      throw std::invalid_argument("tessera::monitor::progress_bar: metric_precision must be in [0, 17]");
    if (!o_.stream && !o_.file) throw std::invalid_argument("tessera::monitor::progress_bar: no stream and no file to write to");
    if (!o_.clock)
      o_.clock = [] { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); };
    tty_ = o_.terminal == terminal_mode::always || (o_.terminal == terminal_mode::detect && detect_terminal());
    start_ = o_.clock();
    last_shown_time_ = start_;
  }
  progress_bar(const progress_bar&) = delete;
  progress_bar& operator=(const progress_bar&) = delete;
  ~progress_bar() {
    try {
      close();
    } catch (...) {
    }
  }

  /// n more steps done (>= 0), with their metrics and, for the items rate, the items they held (0: none counted).
  void update(std::int64_t n = 1, const std::vector<metric>& metrics = {}, std::int64_t items = 0) {
    if (n < 0 || items < 0) throw std::invalid_argument("tessera::monitor::progress_bar::update: negative step or item count");
    if (closed_) throw std::logic_error("tessera::monitor::progress_bar::update: the bar is closed");
    step_ += n;
    items_ += items;
    for (const auto& [name, value] : metrics) {
      std::size_t k = 0;
      while (k < metrics_.size() && metrics_[k].name != name) ++k;
      if (k == metrics_.size()) metrics_.push_back({name, 0, 0, 0});
      auto& m = metrics_[k];
      m.last = value;
      m.sum += value;
      m.count += 1;
    }
    const double now = o_.clock();
    const bool last = total_ > 0 && step_ >= total_;
    bool show = last;
    if (!show) {
      if (tty_) {
        show = shown_ == 0 || now - last_shown_time_ >= o_.min_interval_s;
      } else {
        const bool by_n = o_.every_n > 0, by_s = o_.every_s > 0;
        if (!by_n && !by_s) show = true;
        if (by_n && step_ / o_.every_n != last_shown_step_ / o_.every_n) show = true;
        if (by_s && now - last_shown_time_ >= o_.every_s) show = true;
      }
    }
    if (show) draw(now, last);
  }

  /// Ends the bar: shows the steps no line has shown yet, and on a terminal ends the line with '\n'. Later updates
  /// are a std::logic_error.
  void close() {
    if (closed_) return;
    closed_ = true;
    if (step_ != last_shown_step_) draw(o_.clock(), true);
    else if (tty_ && shown_ > 0 && !ended_) write("\n");
  }

  /// The text of the line as it would be shown now (without '\r' or '\n').
  std::string line() const { return format(o_.clock()); }

  std::int64_t step() const { return step_; }
  std::int64_t total() const { return total_; }
  std::int64_t items() const { return items_; }
  bool is_terminal() const { return tty_; }
  double elapsed() const { return o_.clock() - start_; }

 private:
  struct metric_state {
    std::string name;
    double last, sum;
    std::int64_t count;
  };

  bool detect_terminal() const {
    int fd = -1;
    if (o_.stream) {
      if (o_.stream == &std::cout) fd = 1;
      else if (o_.stream == &std::cerr || o_.stream == &std::clog) fd = 2;
    } else {
      fd = fileno(o_.file);
    }
    return fd >= 0 && isatty(fd) == 1;
  }

  std::string format(double now) const {
    const double elapsed = now - start_;
    std::string s = o_.description.empty() ? "" : o_.description + "  ";
    char buf[160];
    if (total_ > 0) {
      std::snprintf(buf, sizeof buf, "%lld/%lld %s  %3d%%", (long long)step_, (long long)total_, o_.unit.c_str(),
                    int(100.0 * double(step_) / double(total_)));
    } else {
      std::snprintf(buf, sizeof buf, "%lld %s", (long long)step_, o_.unit.c_str());
    }
    s += buf;
    const bool by_items = !o_.item_unit.empty();
    const double count = by_items ? double(items_) : double(step_);
    s += "  " + (elapsed > 0 ? format_rate(count / elapsed) : std::string("?")) + " " +
         (by_items ? o_.item_unit : o_.unit) + "/s";
    for (const auto& m : metrics_) {
      const double v = o_.mean_metrics ? (m.count ? m.sum / double(m.count) : m.last) : m.last;
      std::snprintf(buf, sizeof buf, "%.*f", o_.metric_precision, v);
      s += "  " + m.name + " " + buf;
    }
    s += "  elapsed " + format_duration(elapsed);
    if (total_ > 0) {
      const double eta = step_ > 0 && elapsed > 0 ? elapsed / double(step_) * double(std::max<std::int64_t>(total_ - step_, 0)) : -1;
      s += "  ETA " + format_duration(eta);
    }
    return s;
  }

  void draw(double now, bool last) {
    std::string s = format(now);
    if (tty_) {
      std::string out = "\r" + s;
      if (s.size() < drawn_width_) out += std::string(drawn_width_ - s.size(), ' ');  // clear what a longer line left
      drawn_width_ = s.size();
      ended_ = last;
      if (last) {
        out += "\n";
        drawn_width_ = 0;
      }
      write(out);
    } else {
      write(s + "\n");
    }
    ++shown_;
    last_shown_step_ = step_;
    last_shown_time_ = now;
    if (o_.mean_metrics)
      for (auto& m : metrics_) m.sum = 0, m.count = 0;
  }

  void write(const std::string& s) {
    if (o_.stream) {
      *o_.stream << s;
      o_.stream->flush();
    } else {
      std::fwrite(s.data(), 1, s.size(), o_.file);
      std::fflush(o_.file);
    }
  }

  std::int64_t total_;
  progress_options o_;
  bool tty_ = false, closed_ = false, ended_ = false;
  double start_ = 0, last_shown_time_ = 0;
  std::int64_t step_ = 0, items_ = 0, last_shown_step_ = 0, shown_ = 0;
  std::size_t drawn_width_ = 0;
  std::vector<metric_state> metrics_;
};

}  // namespace tessera::monitor
