// The text of Debian's `fortunes` package for the character-level language models (char_lm.cpp: an LSTM,
// char_transformer.cpp: a Transformer): the files under the fortune directory without .dat/.u8 suffix, sorted by
// name, each fortune followed by its "%" line, encoded over 96 symbols ('\n' and ' ' .. '~'); every 20th fortune is
// held out.
#pragma once
#include <algorithm>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include <tessera/core/shape.hpp>

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

}  // namespace example
