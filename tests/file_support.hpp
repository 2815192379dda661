// What the file-reading tests share (IDX, checkpoints): a temporary directory removed at the end, and whole files
// read and written as bytes (plain or gzip).
#pragma once
#include <catch2/catch.hpp>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <algorithm>
#include <fstream>
#include <iterator>
#include <string>
#include <system_error>
#include <vector>

namespace tst {
namespace fs = std::filesystem;
using bytes = std::vector<unsigned char>;

/// A fresh directory under the system's temporary directory, removed with its content at the end of the test
/// (permissions restored first, for tests that take them away).
struct temp_dir {
  fs::path path;
  explicit temp_dir(const std::string& tag) {
    path = fs::temp_directory_path() / ("tessera_" + tag + "_" + std::to_string(::getpid()));
    fs::remove_all(path);
    fs::create_directories(path);
  }
  ~temp_dir() {
    std::error_code ec;
    fs::permissions(path, fs::perms::owner_all, ec);
    fs::remove_all(path, ec);
  }
  temp_dir(const temp_dir&) = delete;
  temp_dir& operator=(const temp_dir&) = delete;
  fs::path operator/(const std::string& name) const { return path / name; }
};

inline bytes read_file(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  return bytes(std::istreambuf_iterator<char>(f), {});
}
inline void write_file(const fs::path& p, const bytes& b) {
  std::ofstream f(p, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  REQUIRE(f.good());
}
/// Every name in a directory but `keep`, symlinks included (temporary files left behind show up here).
inline std::vector<std::string> other_files(const fs::path& dir, const std::vector<std::string>& keep) {
  std::vector<std::string> v;
  for (const auto& e : fs::directory_iterator(dir)) {
    const auto name = e.path().filename().string();
    if (std::find(keep.begin(), keep.end(), name) == keep.end()) v.push_back(name);
  }
  return v;
}
/// b gzipped into p; mode as gzopen's ("wb": zlib's default level, "wb9": the smallest file).
inline void write_gzip(const fs::path& p, const bytes& b, const char* mode = "wb") {
  gzFile g = gzopen(p.c_str(), mode);
  REQUIRE(g != nullptr);
  REQUIRE(gzwrite(g, b.data(), unsigned(b.size())) == int(b.size()));
  REQUIRE(gzclose(g) == Z_OK);
}
}  // namespace tst
