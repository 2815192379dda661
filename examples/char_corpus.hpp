// The text of Debian's `fortunes` package for the character-level language models (char_lm.cpp: an LSTM,
// char_transformer.cpp: a Transformer): the files under the fortune directory without .dat/.u8 suffix, sorted by
// name, each fortune followed by its "%" line, encoded over 96 symbols ('\n' and ' ' .. '~'); every 20th fortune is
// held out.
#pragma once
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <tessera/nn/parameter.hpp>

#include "example_support.hpp"

namespace example {

inline constexpr int char_vocab = 96;  // '\n' and the printable ASCII characters ' ' .. '~'

inline int encode_char(unsigned char c) {
  if (c == '\n') return 0;
  if (c == '\t') c = ' ';
  return c >= 32 && c < 127 ? c - 31 : -1;  // anything else (UTF-8 bytes, control characters) is dropped
}
inline char decode_char(int id) { return id == 0 ? '\n' : char(id + 31); }

struct corpus {
  std::vector<int> train, valid;
  int files = 0;
  tessera::index_t fortunes = 0;
};

inline corpus load_fortunes(const std::filesystem::path& dir) {
  std::vector<std::filesystem::path> files;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    const std::string n = e.path().filename().string();
    if (!e.is_regular_file() || e.is_symlink()) continue;
    if (n.ends_with(".dat") || n.ends_with(".u8")) continue;
    files.push_back(e.path());
  }
  std::sort(files.begin(), files.end());
  corpus c;
  c.files = int(files.size());
  for (const auto& f : files) {
    std::ifstream in(f, std::ios::binary);
    std::string line, fortune;
    auto flush = [&] {
      if (fortune.empty()) return;
      fortune += "%\n";
      auto& dst = c.fortunes++ % 20 == 19 ? c.valid : c.train;
      for (unsigned char ch : fortune)
        if (const int id = encode_char(ch); id >= 0) dst.push_back(id);
      fortune.clear();
    };
    while (std::getline(in, line)) {
      if (line == "%") flush();
      else fortune += line + "\n";
    }
    flush();
  }
  return c;
}

/// The training budget of the language models: a step count ("3000") or seconds of training ("300s"); the
/// learning-rate schedule follows whichever fraction is larger.
struct budget {
  int steps = 3000;
  double seconds = 0;  ///< 0: no time limit
  static bool parse(const char* s, budget& b) {
    std::string v = s;
    if (!v.empty() && v.back() == 's') {
      b.seconds = std::atof(v.c_str());
      b.steps = 1 << 30;
      return b.seconds > 0;
    }
    b.steps = std::atoi(s);
    return b.steps > 0;
  }
  double fraction(int step, double elapsed) const {
    const double f = seconds > 0 ? elapsed / seconds : double(step) / double(steps);
    return f < 1 ? f : 1;
  }
  bool done(int step, double elapsed) const { return step >= steps || (seconds > 0 && elapsed >= seconds); }
};

/// Scales the gradients of `params` so that their global L2 norm is at most max_norm (as
/// torch.nn.utils.clip_grad_norm_).
template <class Params>
void clip_grad_norm(Params& params, double max_norm) {
  double sq = 0;
  for (auto& p : params)
    if (const float* g = p.grad())
      for (tessera::index_t i = 0; i < p.size; ++i) sq += double(g[i]) * g[i];
  if (const double norm = std::sqrt(sq); norm > max_norm)
    for (auto& p : params)
      if (float* g = p.grad())
        for (tessera::index_t i = 0; i < p.size; ++i) g[i] *= float(max_norm / norm);
}

/// The bookkeeping of a language model's training loop: the clock (evaluation time not counted as training), the
/// running training loss printed every 20 steps, and the held-out evaluation after each quarter of the budget.
struct lm_progress {
  budget b;
  double chars_per_step;
  std::chrono::steady_clock::time_point t0 = std::chrono::steady_clock::now();
  double eval_s = 0, loss_sum = 0;
  int loss_n = 0, phase = 1;

  double training_s() const { return seconds_since(t0) - eval_s; }
  bool done(int step) const { return b.done(step, training_s()); }
  double fraction(int step) const { return b.fraction(step, training_s()); }
  /// After step `step` (0-based) with loss `loss` (nats a character); `held_out()` gives the held-out bits/char.
  template <class Eval>
  void after_step(int step, double loss, Eval&& held_out) {
    loss_sum += require_finite_loss(loss, 0, step);
    ++loss_n;
    if ((step + 1) % 20 == 0) {
      std::printf("\rstep %5d  %6.0f chars/s  train bits/char %.3f   ", step + 1, double(step + 1) * chars_per_step / training_s(),
                  loss_sum / loss_n / std::log(2.0));
      std::fflush(stdout);
      loss_sum = 0;
      loss_n = 0;
    }
    if (fraction(step + 1) >= double(phase) / 4 || done(step + 1)) {
      ++phase;
      const auto t1 = std::chrono::steady_clock::now();
      const double bpc = held_out();
      const double e = seconds_since(t1);
      eval_s += e;
      std::printf("\nafter %d steps (%.1f s of training): held-out bits/char %.3f  (evaluation %.1f s)\n", step + 1,
                  training_s(), bpc, e);
    }
  }
  void summary(int steps) const {
    std::printf("training: %.1f s, %d steps, %.1f ms a step (evaluation %.1f s)\n", training_s(), steps,
                1e3 * training_s() / double(steps), eval_s);
  }
};

}  // namespace example
