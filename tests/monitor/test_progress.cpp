// monitor::progress_bar (tessera/monitor/progress.hpp) with an injected clock, written to a string stream: the exact
// lines of non-terminal output (counts, percentage, rate in steps or items per second, metrics last or averaged since
// the last line, elapsed, ETA), throttling by every_n and every_s, the last step always shown, close() showing what
// was not, an unknown total, the terminal mode's '\r' redraws (padding over a longer previous line, min_interval_s,
// the final '\n'), a FILE* target, and the duration and rate formats.
#include <catch2/catch.hpp>
#include <cstdio>
#include <limits>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "tessera/monitor/progress.hpp"

namespace monitor = tessera::monitor;

namespace {
/// The lines written (split at '\n').
std::vector<std::string> lines_of(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}
}  // namespace

TEST_CASE("format_duration and format_rate", "[progress]") {
  CHECK(monitor::format_duration(0) == "0:00");
  CHECK(monitor::format_duration(9.4) == "0:09");
  CHECK(monitor::format_duration(59.6) == "1:00");
  CHECK(monitor::format_duration(754) == "12:34");
  CHECK(monitor::format_duration(3600) == "1:00:00");
  CHECK(monitor::format_duration(3 * 3600 + 25 * 60 + 7) == "3:25:07");
  CHECK(monitor::format_duration(-1) == "?");
  CHECK(monitor::format_duration(std::numeric_limits<double>::infinity()) == "?");
  CHECK(monitor::format_rate(0.1234) == "0.123");
  CHECK(monitor::format_rate(4.567) == "4.57");
  CHECK(monitor::format_rate(4180.24) == "4180.2");
  CHECK(monitor::format_rate(-3) == "?");
}

TEST_CASE("progress_bar: one line per update when not a terminal, with rate, metrics, elapsed and ETA", "[progress]") {
  double t = 100.0;
  std::ostringstream os;
  {
    monitor::progress_bar bar(10, {.description = "epoch 1", .unit = "batches", .item_unit = "images", .stream = &os,
                                   .terminal = monitor::terminal_mode::never, .clock = [&] { return t; }});
    CHECK_FALSE(bar.is_terminal());
    t = 102.0;
    bar.update(1, {{"loss", 0.5}}, 32);
    t = 106.0;
    bar.update(2, {{"loss", 0.25}, {"acc", 0.875}}, 64);
    t = 100.0 + 3725.0;
    bar.update(7, {{"loss", 0.125}}, 224);
    CHECK(bar.step() == 10);
    CHECK(bar.items() == 320);
  }
  const auto l = lines_of(os.str());
  REQUIRE(l.size() == 3);
  CHECK(l[0] == "epoch 1  1/10 batches   10%  16.0 images/s  loss 0.5000  elapsed 0:02  ETA 0:18");
  // 3 steps in 6 s: 96 images / 6 s; ETA 6 / 3 * 7 = 14 s
  CHECK(l[1] == "epoch 1  3/10 batches   30%  16.0 images/s  loss 0.2500  acc 0.8750  elapsed 0:06  ETA 0:14");
  // 320 images in 3725 s = 0.0859; metrics keep their last values (acc was not given again)
  CHECK(l[2] == "epoch 1  10/10 batches  100%  0.086 images/s  loss 0.1250  acc 0.8750  elapsed 1:02:05  ETA 0:00");
}

TEST_CASE("progress_bar: every_n and every_s throttle the lines; the last step always shows", "[progress]") {
  double t = 0.0;
  std::ostringstream os;
  monitor::progress_bar bar(23, {.stream = &os, .terminal = monitor::terminal_mode::never, .every_n = 5,
                                 .mean_metrics = true, .metric_precision = 2, .clock = [&] { return t; }});
  for (int i = 1; i <= 23; ++i) {
    t = 0.5 * i;
    bar.update(1, {{"loss", double(i)}});
  }
  const auto l = lines_of(os.str());
  REQUIRE(l.size() == 5);  // steps 5, 10, 15, 20 and the last, 23
  // steps per second: 5 / 2.5 s = 2; loss: the mean of the values since the last line (1..5 -> 3)
  CHECK(l[0] == "5/23 it   21%  2.00 it/s  loss 3.00  elapsed 0:03  ETA 0:09");
  CHECK(l[1] == "10/23 it   43%  2.00 it/s  loss 8.00  elapsed 0:05  ETA 0:07");
  CHECK(l[4] == "23/23 it  100%  2.00 it/s  loss 22.00  elapsed 0:12  ETA 0:00");

  std::ostringstream os2;
  t = 0;
  monitor::progress_bar by_time(0, {.stream = &os2, .terminal = monitor::terminal_mode::never, .every_s = 10,
                                    .clock = [&] { return t; }});
  for (int i = 1; i <= 40; ++i) {
    t = 3.0 * i;  // a line at most every 10 s: at 12, 24, 36, ... s
    by_time.update();
  }
  const auto m = lines_of(os2.str());
  REQUIRE(m.size() == 10);  // 12, 24, ..., 120 s
  // an unknown total: no percentage, no ETA
  CHECK(m[0] == "4 it  0.333 it/s  elapsed 0:12");
  by_time.update(2);
  by_time.close();  // shows the steps not shown yet
  const auto m2 = lines_of(os2.str());
  REQUIRE(m2.size() == 11);
  CHECK(m2.back() == "42 it  0.350 it/s  elapsed 2:00");
  CHECK_THROWS_AS(by_time.update(), std::logic_error);
}

TEST_CASE("progress_bar: a terminal redraws one line with \\r and ends it with \\n", "[progress]") {
  double t = 10.0;
  std::ostringstream os;
  {
    monitor::progress_bar bar(4, {.unit = "b", .stream = &os, .terminal = monitor::terminal_mode::always,
                                  .min_interval_s = 1.0, .clock = [&] { return t; }});
    CHECK(bar.is_terminal());
    t = 11.0;
    bar.update(1, {{"loss", 12.5}});  // the first update always draws
    t = 11.5;
    bar.update(1, {{"loss", 1.5}});  // within min_interval_s: not drawn
    t = 12.0;
    bar.update(1, {{"loss", 1.25}});  // drawn, shorter than the first line: padded with spaces
    CHECK(bar.line() == "3/4 b   75%  1.50 b/s  loss 1.2500  elapsed 0:02  ETA 0:01");
  }  // destroyed before the last step: close() ends the line that is there
  const std::string s = os.str();
  const std::string first = "1/4 b   25%  1.00 b/s  loss 12.5000  elapsed 0:01  ETA 0:03";
  const std::string second = "3/4 b   75%  1.50 b/s  loss 1.2500  elapsed 0:02  ETA 0:01";
  CHECK(s == "\r" + first + "\r" + second + " \n");
}

TEST_CASE("progress_bar: the last step on a terminal ends the line once; a FILE* target", "[progress]") {
  double t = 0.0;
  std::FILE* f = std::tmpfile();
  REQUIRE(f != nullptr);
  {
    monitor::progress_bar bar(2, {.file = f, .terminal = monitor::terminal_mode::always, .min_interval_s = 0,
                                  .clock = [&] { return t; }});
    t = 1;
    bar.update();
    t = 2;
    bar.update();
    bar.close();
  }
  std::rewind(f);
  std::string s;
  for (int c; (c = std::fgetc(f)) != EOF;) s += char(c);
  std::fclose(f);
  CHECK(s == "\r1/2 it   50%  1.00 it/s  elapsed 0:01  ETA 0:01\r2/2 it  100%  1.00 it/s  elapsed 0:02  ETA 0:00\n");

  // a temporary file is not a terminal
  std::FILE* g = std::tmpfile();
  monitor::progress_bar detect(3, {.file = g});
  CHECK_FALSE(detect.is_terminal());
  detect.close();
  std::fclose(g);
}

TEST_CASE("progress_bar: errors", "[progress]") {
  std::ostringstream os;
  CHECK_THROWS_AS(monitor::progress_bar(-1, {.stream = &os}), std::invalid_argument);
  CHECK_THROWS_AS(monitor::progress_bar(5, {.stream = &os, .every_n = -2}), std::invalid_argument);
  CHECK_THROWS_AS(monitor::progress_bar(5, {.file = nullptr}), std::invalid_argument);
  monitor::progress_bar bar(5, {.stream = &os, .terminal = monitor::terminal_mode::never});
  CHECK_THROWS_AS(bar.update(-1), std::invalid_argument);
}
