// The adaptive team (core/cpu_load.hpp): /proc/stat parsing and the team rule on made-up readings, and the real
// thing: a child process that keeps one core busy makes cpu_threads use fewer threads.
#include <catch2/catch.hpp>

#include <chrono>
#include <thread>

#include <csignal>
#include <sys/wait.h>
#include <unistd.h>

#include <tessera/tessera.hpp>

namespace ts = tessera;
using ts::detail::adaptive_team_size;
using ts::detail::proc_stat_busy_ticks;

TEST_CASE("proc_stat_busy_ticks sums user nice system irq softirq steal over the allowed CPUs", "[threads]") {
  const char* text =
      "cpu  1000 20 300 9000 50 7 8 9 0 0\n"
      "cpu0 100 2 30 900 5 1 2 3 0 0\n"
      "cpu1 200 4 60 800 6 2 3 4 0 0\n"
      "cpu12 1000 0 0 0 0 0 0 1 0 0\n"
      "intr 12345 0 0\n"
      "cpufreq 1 2 3\n";
  // cpu0: 100+2+30+1+2+3 = 138 (idle 900 and iowait 5 left out); cpu1: 200+4+60+2+3+4 = 273; cpu12: 1001
  CHECK(proc_stat_busy_ticks(text, {0}) == 138);
  CHECK(proc_stat_busy_ticks(text, {1}) == 273);
  CHECK(proc_stat_busy_ticks(text, {0, 1}) == 411);
  CHECK(proc_stat_busy_ticks(text, {12}) == 1001);  // "cpu12" is not "cpu1"
  CHECK(proc_stat_busy_ticks(text, {0, 1, 12}) == 1412);
  CHECK(proc_stat_busy_ticks(text, {5}) == -1);  // no such CPU: no reading
  CHECK(proc_stat_busy_ticks("", {0}) == -1);
  // a line cut short reads its missing fields as 0
  CHECK(proc_stat_busy_ticks("cpu3 10 1\n", {3}) == 11);
}

TEST_CASE("adaptive_team_size: whole cores left, half-core boundaries, 0.1-core hysteresis, within [1, requested]",
          "[threads]") {
  // 2 CPUs
  CHECK(adaptive_team_size(2, 0.0, 2, 2) == 2);
  CHECK(adaptive_team_size(2, 0.3, 1, 2) == 2);   // 1.7 left: back to 2 even from 1
  CHECK(adaptive_team_size(2, 0.45, 2, 2) == 2);  // inside the hysteresis band: keep
  CHECK(adaptive_team_size(2, 0.45, 1, 2) == 1);
  CHECK(adaptive_team_size(2, 0.55, 2, 2) == 2);
  CHECK(adaptive_team_size(2, 0.55, 1, 2) == 1);
  CHECK(adaptive_team_size(2, 0.65, 2, 2) == 1);  // more than half a core gone: one thread
  CHECK(adaptive_team_size(2, 1.0, 2, 2) == 1);   // a busy loop beside us
  CHECK(adaptive_team_size(2, 2.0, 2, 2) == 1);   // never below 1
  CHECK(adaptive_team_size(2, 5.0, 1, 2) == 1);
  CHECK(adaptive_team_size(2, -0.3, 1, 2) == 2);  // clock noise below zero counts as zero
  // 8 CPUs, 2.2 cores taken: 5.8 left -> 6; a request of 4 stays 4
  CHECK(adaptive_team_size(8, 2.2, 8, 8) == 6);
  CHECK(adaptive_team_size(8, 2.2, 8, 4) == 4);
  CHECK(adaptive_team_size(8, 7.9, 8, 8) == 1);
  CHECK(adaptive_team_size(1, 0.9, 1, 1) == 1);
}

TEST_CASE("cpu_threads uses fewer threads while another process keeps a core busy, and the switch turns it off",
          "[threads]") {
  const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  if (cpus < 2 || ts::cpu_threads::adaptive_cap() < 2) {
    WARN("SKIPPED: the adaptive team needs 2 or more allowed CPUs and a readable /proc/stat");
    return;
  }
  ts::cpu_threads::set_num_threads(int(cpus));
  ts::cpu_threads::set_adaptive(true);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {  // a busy loop for at most 10 s, killed sooner by the parent
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    volatile unsigned long spin = 0;
    while (std::chrono::steady_clock::now() < end) spin = spin + 1;
    _exit(0);
  }
  int team = int(cpus);
  for (int i = 0; i < 300 && team >= cpus; ++i) {  // up to 3 s: a reading every 100 ms
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    team = ts::cpu_threads::num_threads();
  }
  const int cap = ts::cpu_threads::adaptive_cap();
  ts::cpu_threads::set_adaptive(false);
  const int fixed = ts::cpu_threads::num_threads();
  kill(child, SIGKILL);
  waitpid(child, nullptr, 0);
  INFO("CPUs " << cpus << ", team while busy " << team << ", cores counted free " << cap);
  CHECK(team <= cpus - 1);
  CHECK(team >= 1);
  CHECK(cap <= cpus - 1);
  CHECK(fixed == cpus);  // switched off: the request as asked
  ts::cpu_threads::set_num_threads(0);
}
