// The adaptive team: how many of the requested threads a cpu_threads kernel should use while other processes keep
// some of this process's CPUs busy.
//
// Why. OpenMP splits a kernel's work evenly and waits at a barrier for the slowest thread. When another process
// keeps one of two cores busy, the thread on that core gets half of it, and every parallel region waits for it (for
// up to a scheduler time slice when it is not running at all): a 2-thread SimpleCNN epoch ran at 0.38x its quiet
// speed beside one busy loop, slower than one thread alone (0.5x). GCC's libgomp reads its wait policy from the
// environment before any code of ours runs, so a library cannot make it passive for its users; it can choose the
// team. (Measured in docs/performance-notes.md, "Under contention".)
//
// What. Every 100 ms at most, cpu_threads::num_threads() reads the busy time of the CPUs this process may run on
// (/proc/stat, the CPUs of sched_getaffinity: user, nice, system, irq, softirq and steal) and this process's own CPU
// time (CLOCK_PROCESS_CPUTIME_ID). Their difference over the wall time is what other processes (and the hypervisor)
// took, in cores: `others`. The team is the number of whole cores left, rounded to the nearest with a 0.1-core
// hysteresis, at least 1 and at most what was requested:
//     2 CPUs, others 0.0-0.4 cores: 2 threads; 0.6-2.0: 1 thread (0.4-0.6 keeps the previous choice).
// With two threads and one shared core, two threads beat one only when the shared core gives us more than half of
// itself (time = W/2 / share against W), hence the boundary at half a core. Several tessera processes side by side
// settle on one thread each instead of oversubscribing the cores.
//
// How it is used. Nothing to do: it is on by default for cpu_threads. cpu_threads::set_adaptive(false) or the
// environment variable TESSERA_ADAPTIVE_THREADS=0 turns it off (the team is then always what was requested: for
// measurements on a quiet machine, or tests of a fixed team size). cpu_threads::adaptive_cap() says the current
// choice. Cost: one coarse clock read per call; one /proc/stat read per 100 ms (about 20 us).
//
// Guarantees. The team never exceeds what was requested and is never below 1. Without /proc/stat (not Linux, a
// sandbox) the team is what was requested. A reading after more than 2 s without calls only restarts the window
// (stale load decides nothing). The parsing and the rule are plain functions, tested with made-up readings.
#pragma once
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#if defined(__linux__)
#include <fcntl.h>
#include <sched.h>
#include <time.h>
#include <unistd.h>
#endif

namespace tessera::detail {

/// Busy jiffies (user + nice + system + irq + softirq + steal) summed over the "cpuN" lines of /proc/stat whose N is
/// in `cpus`; -1 when no such line was found.
inline long long proc_stat_busy_ticks(std::string_view text, const std::vector<int>& cpus) {
  long long total = 0;
  bool found = false;
  std::size_t pos = 0;
  while (pos < text.size()) {
    std::size_t end = text.find('\n', pos);
    if (end == std::string_view::npos) end = text.size();
    const std::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    if (line.size() < 4 || line.substr(0, 3) != "cpu" || line[3] < '0' || line[3] > '9') continue;
    std::string s(line.substr(3));
    char* p = s.data();
    const long id = std::strtol(p, &p, 10);
    if (std::find(cpus.begin(), cpus.end(), int(id)) == cpus.end()) continue;
    long long f[8] = {};  // user nice system idle iowait irq softirq steal
    for (long long& v : f) v = std::strtoll(p, &p, 10);
    total += f[0] + f[1] + f[2] + f[5] + f[6] + f[7];
    found = true;
  }
  return found ? total : -1;
}

/// The team for `cpus` CPUs of which `others` cores are taken by other processes, given the previous choice
/// (hysteresis of 0.1 core around each half-core boundary), within [1, requested].
inline int adaptive_team_size(int cpus, double others, int previous, int requested) {
  const double left = double(cpus) - std::max(0.0, others);
  const int lo = int(std::floor(left + 0.4)), hi = int(std::floor(left + 0.6));
  int team = previous >= lo && previous <= hi ? previous : int(std::floor(left + 0.5));
  team = std::clamp(team, 1, std::max(1, cpus));
  return std::clamp(team, 1, std::max(1, requested));
}

class adaptive_team {
 public:
  static adaptive_team& instance() {
    static adaptive_team t;
    return t;
  }
  bool enabled() const { return enabled_.load(std::memory_order_relaxed); }
  void set_enabled(bool on) { enabled_.store(on, std::memory_order_relaxed); }
  /// The cores this process may use now (its allowed CPUs when not adapting or not yet measured).
  int cores() const { return team_.load(std::memory_order_relaxed); }
  /// The team for `requested` threads: `requested` while no core is taken by others (a quiet machine, and any
  /// request of more threads than CPUs, stays as asked), else min(requested, the cores left). Refreshes the
  /// reading when 100 ms have passed.
  int cap(int requested) {
    if (requested <= 1 || !enabled_.load(std::memory_order_relaxed)) return requested;
#if defined(__linux__)
    const std::int64_t now = clock_ns(CLOCK_MONOTONIC_COARSE);
    if (now >= next_.load(std::memory_order_relaxed) && !busy_.test_and_set(std::memory_order_acquire)) {
      refresh(now);
      busy_.clear(std::memory_order_release);
    }
#endif
    const int team = team_.load(std::memory_order_relaxed);
    return team < int(cpus_.size()) ? std::min(requested, team) : requested;
  }

 private:
  static constexpr std::int64_t interval_ns = 100'000'000, stale_ns = 2'000'000'000;
  adaptive_team() {
    const char* e = std::getenv("TESSERA_ADAPTIVE_THREADS");
    if (e && std::string_view(e) == "0") enabled_ = false;
#if defined(__linux__)
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0)
      for (int c = 0; c < CPU_SETSIZE; ++c)
        if (CPU_ISSET(c, &set)) cpus_.push_back(c);
    ticks_per_s_ = double(sysconf(_SC_CLK_TCK));
#endif
    team_ = std::max<int>(1, int(cpus_.size()));
  }
#if defined(__linux__)
  static std::int64_t clock_ns(clockid_t id) {
    timespec ts{};
    clock_gettime(id, &ts);
    return std::int64_t(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  }
  long long read_busy_ticks() const {
    const int fd = ::open("/proc/stat", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    std::string text;
    char buf[16384];
    for (ssize_t n; (n = ::read(fd, buf, sizeof buf)) > 0;) text.append(buf, std::size_t(n));
    ::close(fd);
    return proc_stat_busy_ticks(text, cpus_);
  }
  void refresh(std::int64_t now) {
    next_.store(now + interval_ns, std::memory_order_relaxed);
    if (cpus_.size() < 2 || ticks_per_s_ <= 0) return;
    const long long busy = read_busy_ticks();
    if (busy < 0) {
      next_.store(INT64_MAX, std::memory_order_relaxed);  // no /proc/stat: never adapt
      return;
    }
    const std::int64_t wall = clock_ns(CLOCK_MONOTONIC), self = clock_ns(CLOCK_PROCESS_CPUTIME_ID);
    const std::int64_t dwall = wall - last_wall_;
    if (last_wall_ != 0 && dwall > 0 && dwall <= stale_ns) {
      const double busy_s = double(busy - last_busy_) / ticks_per_s_, self_s = double(self - last_self_) * 1e-9;
      const double others = (busy_s - self_s) / (double(dwall) * 1e-9);
      team_.store(adaptive_team_size(int(cpus_.size()), others, team_.load(std::memory_order_relaxed), int(cpus_.size())),
                  std::memory_order_relaxed);
    }
    last_busy_ = busy, last_self_ = self, last_wall_ = wall;
  }
#endif
  std::vector<int> cpus_;
  double ticks_per_s_ = 0;
  std::atomic<bool> enabled_{true};
  std::atomic<int> team_{1};
  std::atomic<std::int64_t> next_{0};
  std::atomic_flag busy_ = ATOMIC_FLAG_INIT;
  long long last_busy_ = 0;
  std::int64_t last_self_ = 0, last_wall_ = 0;
};

}  // namespace tessera::detail
