// Atomic replacement of a file: the new content goes to a temporary file of its own beside the target, is fsync'd,
// and is renamed over the target, so that the target holds either its old content or the whole new one, whatever
// happens (a crash, a kill, a full disk, another writer of the same path at the same time).
//
//   atomic_file f("run.ckpt", "checkpoint");   // creates run.ckpt.tmp.<pid>.<16 hex digits>, exclusively
//   f.write(p, n); ...                          // io_error "cannot write <temporary>: ..." on failure
//   f.commit();                                 // fsync, close, rename over run.ckpt, fsync the directory
//   // destroyed without commit(): the temporary is removed and run.ckpt is as it was
//
// Temporaries: "<target>.tmp.<pid>.<16 hex digits>", in the target's directory (rename needs the same file system),
// created with O_CREAT | O_EXCL | O_NOFOLLOW: every writer, thread or process, has its own, a random suffix makes
// the name unpredictable, and nothing already at the name (a planted symlink, another writer's temporary) is ever
// opened, truncated or followed (another name is drawn instead).
// Stale temporaries: a writer killed mid-write leaves its temporary behind. remove_stale_temporaries(target) removes
// the temporaries of `target` whose writer process is no longer alive (kill(pid, 0) fails with ESRCH); atomic_file
// calls it before creating its own (one scan of the directory per save), so the next save of the same path clears
// what a killed one left. (A pid only means something in this host's pid namespace: on a directory shared with
// other hosts or containers a live writer's temporary may be removed, and that save then fails with io_error, its
// target intact.)
//
// Fault injection for tests: set_io_fault_hook(f) makes every step call f(step, path) first; a nonzero return is
// taken as the errno of that step failing. One relaxed atomic load per system call when unset.
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

#include "tessera/io/error.hpp"

namespace tessera {

/// The steps of an atomic save that can fail (fault injection names them).
enum class io_step { create, write, fsync, close, rename };

constexpr const char* io_step_name(io_step s) {
  switch (s) {
    case io_step::create: return "create";
    case io_step::write: return "write";
    case io_step::fsync: return "fsync";
    case io_step::close: return "close";
    case io_step::rename: return "rename";
  }
  return "unknown";
}

/// Called before each step with the step and the temporary's path; a nonzero return is the errno the step fails
/// with (0: go on). For tests; unset (nullptr) by default.
using io_fault_hook = int (*)(io_step, const char* path);

namespace detail {
inline std::atomic<io_fault_hook>& io_fault_hook_slot() {
  static std::atomic<io_fault_hook> h{nullptr};
  return h;
}
inline int injected_fault(io_step s, const std::string& path) {
  const io_fault_hook h = io_fault_hook_slot().load(std::memory_order_relaxed);
  return h ? h(s, path.c_str()) : 0;
}

/// 64 bits that differ between calls, threads and processes: a seeded counter through splitmix64's finalizer.
inline std::uint64_t temp_suffix() {
  static std::atomic<std::uint64_t> state = [] {
    std::uint64_t s = std::uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
    try {
      std::random_device rd;
      s ^= (std::uint64_t(rd()) << 32) ^ rd();
    } catch (...) {  // no entropy source: the clock alone (O_EXCL still keeps names unique)
    }
    return s;
  }();
  std::uint64_t z = state.fetch_add(0x9E3779B97F4A7C15ull, std::memory_order_relaxed) ^ std::uint64_t(::getpid());
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/// The pid in a temporary's file name "<target name>.tmp.<pid>.<16 hex digits>", or -1 if it is not one.
inline long temporary_pid(std::string_view name, std::string_view target_name) {
  const std::string prefix = std::string(target_name) + ".tmp.";
  if (name.size() <= prefix.size() + 17 || name.compare(0, prefix.size(), prefix) != 0) return -1;
  std::string_view rest = name.substr(prefix.size());
  const std::size_t dot = rest.find('.');
  if (dot == 0 || dot > 9 || rest.size() - dot - 1 != 16) return -1;
  long pid = 0;
  for (std::size_t i = 0; i < dot; ++i) {
    if (rest[i] < '0' || rest[i] > '9') return -1;
    pid = pid * 10 + (rest[i] - '0');
  }
  for (char c : rest.substr(dot + 1))
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return -1;
  return pid > 0 ? pid : -1;
}
}  // namespace detail

/// Install a fault hook (nullptr removes it); returns the previous one.
inline io_fault_hook set_io_fault_hook(io_fault_hook h) { return detail::io_fault_hook_slot().exchange(h); }

/// Remove the temporaries an atomic save of `target` left behind when its process died (regular files named
/// "<target>.tmp.<pid>.<16 hex digits>" whose pid is no longer alive). Best effort: an unreadable directory or a
/// file that cannot be removed is skipped. Returns how many were removed.
inline std::size_t remove_stale_temporaries(const std::filesystem::path& target) {
  namespace fs = std::filesystem;
  const fs::path dir = target.has_parent_path() ? target.parent_path() : fs::path(".");
  const std::string target_name = target.filename().string();
  std::size_t removed = 0;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    const long pid = detail::temporary_pid(name, target_name);
    std::error_code ec2;
    if (pid < 0 || it->is_symlink(ec2) || !it->is_regular_file(ec2)) continue;
    if (::kill(::pid_t(pid), 0) == 0 || errno != ESRCH) continue;  // alive (EPERM: alive, another user's)
    if (::unlink(it->path().c_str()) == 0) ++removed;
  }
  return removed;
}

/// A new version of a file, written to a temporary of its own and renamed over the target by commit(). Every
/// failure is an io_error "tessera: <kind> <target>: cannot <step> <temporary>: <strerror> (the existing file, if
/// any, is left as it was)"; the temporary is then removed (by the destructor).
class atomic_file {
 public:
  explicit atomic_file(std::filesystem::path target, std::string kind = "file")
      : target_(target.string()), kind_(std::move(kind)) {
    remove_stale_temporaries(target);
    const std::string stem = target_ + ".tmp." + std::to_string(::getpid()) + ".";
    for (int attempt = 0;; ++attempt) {
      char hex[17];
      std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(detail::temp_suffix()));
      tmp_ = stem + hex;
      int err = detail::injected_fault(io_step::create, tmp_);
      if (!err) {
        fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (fd_ >= 0) return;
        err = errno;
      }
      // Something is at this name (a symlink, a file): never touch it, draw another name.
      if ((err == EEXIST || err == ELOOP) && attempt < 100) continue;
      fail("cannot create the temporary file " + tmp_, err);
    }
  }
  atomic_file(const atomic_file&) = delete;
  atomic_file& operator=(const atomic_file&) = delete;
  ~atomic_file() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }

  const std::string& temporary() const { return tmp_; }
  const std::string& target() const { return target_; }

  void write(const unsigned char* p, std::size_t n) {
    while (n) {
      const int injected = detail::injected_fault(io_step::write, tmp_);
      const ::ssize_t w = injected ? -1 : ::write(fd_, p, std::min<std::size_t>(n, std::size_t(1) << 30));
      if (w < 0) {
        const int err = injected ? injected : errno;
        if (err == EINTR) continue;
        fail("cannot write " + tmp_, err);
      }
      p += w;
      n -= std::size_t(w);
    }
  }

  /// fsync, close, rename over the target, and fsync the directory (best effort: the rename has happened by then)
  /// so that the rename is durable.
  void commit() {
    int err = detail::injected_fault(io_step::fsync, tmp_);
    if (err || ::fsync(fd_) != 0) fail("cannot fsync " + tmp_, err ? err : errno);
    const int fd = std::exchange(fd_, -1);
    err = detail::injected_fault(io_step::close, tmp_);
    if (::close(fd) != 0 && !err) err = errno;
    if (err) fail("cannot close " + tmp_, err);
    err = detail::injected_fault(io_step::rename, tmp_);
    if (err || std::rename(tmp_.c_str(), target_.c_str()) != 0)
      fail("cannot rename " + tmp_ + " to " + target_, err ? err : errno);
    committed_ = true;
    std::string dir = std::filesystem::path(target_).parent_path().string();
    if (dir.empty()) dir = ".";
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what, int err) const {
    throw io_error("tessera: " + kind_ + " " + target_ + ": " + what + ": " + std::strerror(err) +
                   " (the existing file, if any, is left as it was)");
  }
  std::string target_, kind_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace tessera
