// Checkpoint saves under faults: a writer process SIGKILLed at random points of a save (the previous checkpoint
// always loads with its exact contents; the temporaries it leaves are removed by the next save), concurrent saves of
// one path from threads and from processes (always one complete valid checkpoint, never a spurious error), symlinks
// planted at a temporary's name (never followed), and injected failures of create, write, fsync, close and rename
// (an io_error naming the step, the old file intact, no temporary left).
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <tessera/io/checkpoint.hpp>
#include <thread>
#include <vector>

#include "file_support.hpp"

namespace ts = tessera;
namespace fs = std::filesystem;
using Catch::Contains;
using ts::dyn;
using ts::index_t;
using ts::Shape;
using bytes = std::vector<unsigned char>;

namespace {
using tst::temp_dir;
using tst::read_file;
using tst::write_file;
using tst::other_files;

/// Version `v` of a checkpoint: a tensor whose every element depends on v, and v itself.
constexpr index_t n_elements = 1 << 18;  // 1 MiB of floats
float value(long v, index_t k) { return float((k * 37 + v * 101) % 4099) - 2048.0f; }
void save_version(const fs::path& file, long v, index_t n = n_elements) {
  ts::Tensor<float, Shape<dyn>> t(n);
  for (index_t k = 0; k < n; ++k) t.data()[k] = value(v, k);
  ts::checkpoint_writer w;
  w.add("w", t);
  w.add_scalar("version", v);
  w.write(file);
}
/// The version a file holds, after checking that its tensor is exactly that version's (throws if it does not load).
long check_version(const fs::path& file, index_t n = n_elements) {
  ts::checkpoint_reader r(file);
  const long v = r.scalar<long>("version");
  ts::Tensor<float, Shape<dyn>> t(n);
  r.read_into("w", t);
  for (index_t k = 0; k < n; ++k)
    if (t.data()[k] != value(v, k)) return -1;
  return v;
}

/// A pid that is no longer alive (a child that has exited and been reaped).
pid_t dead_pid() {
  const pid_t p = ::fork();
  if (p == 0) ::_exit(0);
  int st = 0;
  ::waitpid(p, &st, 0);
  return p;
}
std::string temp_name(const fs::path& file, long pid, const char* hex = "0123456789abcdef") {
  return file.filename().string() + ".tmp." + std::to_string(pid) + "." + hex;
}

}  // namespace

TEST_CASE("a save killed at random points never loses the previous checkpoint; the next save removes what it left",
          "[checkpoint][faults]") {
  temp_dir dir("ckpt_kill");
  const fs::path file = dir / "run.ckpt";
  save_version(file, 0);
  // Version `round` saved by a child that tells the parent on `go` when it starts; the parent kills it `us` later
  // (never, if us < 0). Returns the time from the start to the child's end, in microseconds.
  auto round_trip = [&](long round, double us) {
    int go[2];
    REQUIRE(::pipe(go) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::close(go[0]);
      const char c = 'x';
      (void)::write(go[1], &c, 1);  // about to save
      try {
        save_version(file, round);
      } catch (...) {
        ::_exit(1);
      }
      ::_exit(0);
    }
    ::close(go[1]);
    char c;
    REQUIRE(::read(go[0], &c, 1) == 1);
    ::close(go[0]);
    const auto start = std::chrono::steady_clock::now();
    if (us >= 0) {
      std::this_thread::sleep_for(std::chrono::duration<double, std::micro>(us));
      ::kill(child, SIGKILL);
    }
    int st = 0;
    REQUIRE(::waitpid(child, &st, 0) == child);
    if (WIFEXITED(st)) REQUIRE(WEXITSTATUS(st) == 0);  // finished before the kill: it must have succeeded
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count();
  };
  // how long a child's save takes here: the kills are spread over [0, 1.2 x that] after it starts
  double save_us = 0;
  for (int i = 0; i < 3; ++i) save_us += round_trip(0, -1) / 3;
  REQUIRE(check_version(file) == 0);
  std::mt19937 rng(12345);
  std::uniform_real_distribution<double> delay(0.0, 1.2 * save_us);

  long current = 0;
  int kept_old = 0, took_new = 0, temporaries_seen = 0;
  const int rounds = 60;
  for (int round = 1; round <= rounds; ++round) {
    round_trip(round, delay(rng));

    // the file is the previous checkpoint, or the new one if the rename happened: whole, never a mix
    INFO("round " << round << ", previous version " << current);
    const long v = check_version(file);
    REQUIRE((v == current || v == round));
    (v == current ? kept_old : took_new) += 1;
    current = v;
    temporaries_seen += int(other_files(dir.path, {"run.ckpt"}).size());
  }
  INFO(kept_old << " rounds kept the old file, " << took_new << " took the new one; " << temporaries_seen
                << " temporaries left by killed writers");
  CHECK(kept_old >= 5);           // the kills did land in the middle of saves
  CHECK(temporaries_seen >= 1);   // and some left their temporary behind
  save_version(file, 1000);
  CHECK(check_version(file) == 1000);
  CHECK(other_files(dir.path, {"run.ckpt"}).empty());
}

TEST_CASE("concurrent saves of one path from threads: always one complete checkpoint, no spurious error",
          "[checkpoint][faults]") {
  temp_dir dir("ckpt_threads");
  const fs::path file = dir / "run.ckpt";
  constexpr index_t n = 1 << 14;
  save_version(file, 0, n);
  std::atomic<bool> done{false};
  std::atomic<int> errors{0}, bad_reads{0}, reads{0};
  std::vector<std::string> messages(4);
  std::vector<std::thread> writers;
  for (int t = 0; t < 4; ++t)
    writers.emplace_back([&, t] {
      for (int i = 1; i <= 15; ++i) try {
          save_version(file, t * 100 + i, n);
        } catch (const std::exception& e) {
          ++errors;
          messages[std::size_t(t)] = e.what();
        }
    });
  std::thread reader([&] {
    while (!done.load()) try {
        ++reads;
        if (check_version(file, n) < 0) ++bad_reads;
      } catch (...) {
        ++bad_reads;
      }
  });
  for (auto& w : writers) w.join();
  done = true;
  reader.join();
  INFO(messages[0] << messages[1] << messages[2] << messages[3]);
  CHECK(errors == 0);
  CHECK(bad_reads == 0);
  const long v = check_version(file, n);
  CHECK((v % 100 == 15 && v / 100 < 4));  // the last save of one of the threads
  CHECK(other_files(dir.path, {"run.ckpt"}).empty());
}

TEST_CASE("concurrent saves of one path from processes: always one complete checkpoint", "[checkpoint][faults]") {
  temp_dir dir("ckpt_procs");
  const fs::path file = dir / "run.ckpt";
  constexpr index_t n = 1 << 14;
  save_version(file, 0, n);
  std::vector<pid_t> children;
  for (int c = 0; c < 4; ++c) {
    const pid_t p = ::fork();
    REQUIRE(p >= 0);
    if (p == 0) {
      int failed = 0;
      for (int i = 1; i <= 15; ++i) try {
          save_version(file, c * 100 + i, n);
        } catch (...) {
          ++failed;
        }
      ::_exit(failed);
    }
    children.push_back(p);
  }
  int reads = 0, bad_reads = 0, running = int(children.size());
  std::vector<int> failures;
  while (running > 0) {
    try {
      ++reads;
      if (check_version(file, n) < 0) ++bad_reads;
    } catch (...) {
      ++bad_reads;
    }
    for (auto& p : children) {
      int st = 0;
      if (p > 0 && ::waitpid(p, &st, WNOHANG) == p) {
        failures.push_back(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
        p = -1;
        --running;
      }
    }
  }
  CHECK(failures == std::vector<int>{0, 0, 0, 0});
  CHECK(bad_reads == 0);
  const long v = check_version(file, n);
  CHECK((v % 100 == 15 && v / 100 < 4));
  CHECK(other_files(dir.path, {"run.ckpt"}).empty());
}

TEST_CASE("a symlink planted at a temporary's name is never followed", "[checkpoint][faults]") {
  temp_dir dir("ckpt_symlink");
  const fs::path file = dir / "run.ckpt";
  const fs::path victim = dir / "victim";
  const bytes secret = {'k', 'e', 'e', 'p', ' ', 'm', 'e'};
  write_file(victim, secret);
  save_version(file, 1, 64);

  SECTION("at the old predictable name <path>.tmp.<pid>") {
    fs::create_symlink(victim, file.string() + ".tmp." + std::to_string(::getpid()));
    save_version(file, 2, 64);
    CHECK(read_file(victim) == secret);
    CHECK(check_version(file, 64) == 2);
    CHECK(fs::is_symlink(file.string() + ".tmp." + std::to_string(::getpid())));  // not ours: left alone
  }
  SECTION("at the very name the writer is about to create (planted by the fault hook, as a racing attacker would)") {
    static std::string planted;
    planted.clear();
    static fs::path victim_path;
    victim_path = victim;
    const auto old = ts::set_io_fault_hook([](ts::io_step s, const char* tmp) {
      if (s == ts::io_step::create && planted.empty()) {
        planted = tmp;
        fs::create_symlink(victim_path, tmp);
      }
      return 0;
    });
    save_version(file, 2, 64);
    ts::set_io_fault_hook(old);
    REQUIRE_FALSE(planted.empty());
    CHECK(read_file(victim) == secret);
    CHECK(check_version(file, 64) == 2);
    CHECK(fs::is_symlink(planted));
  }
}

TEST_CASE("injected failures of each step: an io_error naming the step, the old file intact, no temporary left",
          "[checkpoint][faults]") {
  temp_dir dir("ckpt_inject");
  const fs::path file = dir / "run.ckpt";
  save_version(file, 7, 1024);
  const bytes before = read_file(file);

  static ts::io_step failing;
  static int calls;
  static int fail_at;  // the how-many-th call of that step fails
  static int err;
  const auto hook = [](ts::io_step s, const char*) { return s == failing && ++calls == fail_at ? err : 0; };
  struct {
    ts::io_step step;
    int at, errnum;
    const char* says;
  } const cases[] = {
      {ts::io_step::create, 1, ENOSPC, "cannot create the temporary file"},
      {ts::io_step::write, 1, ENOSPC, "cannot write"},
      {ts::io_step::write, 3, EIO, "cannot write"},  // a later write, after some data went out
      {ts::io_step::fsync, 1, EIO, "cannot fsync"},
      {ts::io_step::close, 1, EIO, "cannot close"},
      {ts::io_step::rename, 1, EXDEV, "cannot rename"},
  };
  for (const auto& c : cases) {
    failing = c.step, calls = 0, fail_at = c.at, err = c.errnum;
    const auto old = ts::set_io_fault_hook(hook);
    std::string message;
    try {
      save_version(file, 8, 1024);
    } catch (const ts::io_error& e) {
      message = e.what();
    }
    ts::set_io_fault_hook(old);
    INFO("step " << ts::io_step_name(c.step) << ", call " << c.at);
    CHECK_THAT(message, Contains("tessera: checkpoint " + file.string()) && Contains(c.says) &&
                            Contains(std::strerror(c.errnum)) && Contains("left as it was"));
    CHECK(read_file(file) == before);
    CHECK(check_version(file, 1024) == 7);
    CHECK(other_files(dir.path, {"run.ckpt"}).empty());
  }
  // an interrupted write (EINTR) is retried, not an error
  failing = ts::io_step::write, calls = 0, fail_at = 2, err = EINTR;
  const auto old = ts::set_io_fault_hook(hook);
  save_version(file, 9, 1024);
  ts::set_io_fault_hook(old);
  CHECK(check_version(file, 1024) == 9);
}

TEST_CASE("stale temporaries of dead writers are removed before a save; those of live writers are kept",
          "[checkpoint][faults]") {
  temp_dir dir("ckpt_stale");
  const fs::path file = dir / "run.ckpt";
  const pid_t dead = dead_pid();
  const std::vector<std::string> kept = {
      temp_name(file, ::getpid()),                        // a live writer (this process)
      temp_name(file, ::getppid()),                       // another live one
      temp_name(file, dead, "0123456789abcdeX"),          // not a temporary's name
      file.filename().string() + ".tmp." + std::to_string(dead),  // the old naming: no random part
      temp_name(dir / "other.ckpt", dead),                // another checkpoint's
  };
  for (const auto& k : kept) write_file(dir / k, {1, 2, 3});
  write_file(dir / temp_name(file, dead), bytes(4096, 9));
  write_file(dir / temp_name(file, dead, "fedcba9876543210"), bytes(4096, 9));

  CHECK(ts::remove_stale_temporaries(file) == 2);
  CHECK(other_files(dir.path, kept).empty());
  for (const auto& k : kept) CHECK(fs::exists(dir / k));

  // a save does the same first
  write_file(dir / temp_name(file, dead), bytes(4096, 9));
  save_version(file, 3, 64);
  CHECK(other_files(dir.path, [&] { auto v = kept; v.push_back("run.ckpt"); return v; }()).empty());
  CHECK(check_version(file, 64) == 3);
}
