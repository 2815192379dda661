// CSV logs of a training run (RFC 4180): one row per call, the header taken from the first row's column names,
// every row flushed as it is written, so that a plot (gnuplot, pandas) of a running job sees every finished step.
//
//   monitor::csv_writer log("runs/cnn/steps.csv");           // creates (or truncates) the file
//   log.write_row({{"step", 1}, {"loss", 0.6931}, {"phase", "train"}});   // header: step,loss,phase
//   log.write_row({{"step", 2}, {"loss", 0.5}, {"phase", "train"}});
//
// Guarantees: a field holding a comma, a double quote, a line break or a leading or trailing space is written in
// double quotes, its quotes doubled; numbers are written in their shortest form that reads back as the same value
// (std::to_chars: 0.1 is "0.1", integers exactly; "nan", "inf", "-inf" for the others); bool as true / false.
// Every row must have the first row's columns, in the same order: any other row is a std::invalid_argument naming
// both lists of columns, and nothing of it is written. A file that cannot be created, written or flushed is a
// tessera::io_error naming it. The destructor closes the file (errors dropped; close() reports them).
#pragma once

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <initializer_list>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/io/error.hpp"

namespace tessera::monitor {

class csv_writer {
 public:
  /// One field: a number, a bool or text, kept as the text it is written as (unquoted).
  class cell {
   public:
    template <class T>
      requires std::is_arithmetic_v<T>
    cell(T v) {  // NOLINT: implicit, so that rows are written as {{"name", value}, ...}
      if constexpr (std::is_same_v<T, bool>) {
        text_ = v ? "true" : "false";
      } else {
        char buf[64];
        const auto r = std::to_chars(buf, buf + sizeof buf, v);
        text_.assign(buf, r.ptr);
      }
    }
    cell(std::string_view s) : text_(s) {}  // NOLINT
    cell(const std::string& s) : text_(s) {}  // NOLINT
    cell(const char* s) : text_(s) {}  // NOLINT
    const std::string& text() const { return text_; }

   private:
    std::string text_;
  };
  using field = std::pair<std::string, cell>;

  explicit csv_writer(std::filesystem::path path) : path_(std::move(path)) {
    file_ = std::fopen(path_.c_str(), "wb");
    if (!file_) throw io_error("tessera: csv_writer: cannot create " + path_.string() + ": " + std::strerror(errno));
  }
  csv_writer(csv_writer&& o) noexcept
      : path_(std::move(o.path_)), columns_(std::move(o.columns_)), rows_(o.rows_), file_(std::exchange(o.file_, nullptr)) {}
  csv_writer& operator=(csv_writer&& o) noexcept {
    if (this != &o) {
      if (file_) std::fclose(file_);
      path_ = std::move(o.path_), columns_ = std::move(o.columns_), rows_ = o.rows_;
      file_ = std::exchange(o.file_, nullptr);
    }
    return *this;
  }
  csv_writer(const csv_writer&) = delete;
  csv_writer& operator=(const csv_writer&) = delete;
  ~csv_writer() {
    if (file_) std::fclose(file_);
  }

  /// A row of named fields; the first row also writes the header. Flushed before returning.
  void write_row(std::initializer_list<field> row) { write_row(std::vector<field>(row)); }
  void write_row(const std::vector<field>& row) {
    if (!file_) throw std::logic_error("tessera: csv_writer: write_row after close() (" + path_.string() + ")");
    if (row.empty()) throw std::invalid_argument("tessera: csv_writer: " + path_.string() + ": a row with no columns");
    std::string out;
    if (columns_.empty()) {
      for (std::size_t i = 0; i < row.size(); ++i)
        for (std::size_t j = 0; j < i; ++j)
          if (row[i].first == row[j].first)
            throw std::invalid_argument("tessera: csv_writer: " + path_.string() + ": the column '" + row[i].first +
                                        "' appears twice in the first row");
      for (std::size_t i = 0; i < row.size(); ++i) out += (i ? "," : "") + quote(row[i].first);
      out += "\n";
    } else {
      bool same = row.size() == columns_.size();
      for (std::size_t i = 0; same && i < row.size(); ++i) same = row[i].first == columns_[i];
      if (!same) {
        std::vector<std::string> got;
        for (const auto& f : row) got.push_back(f.first);
        throw std::invalid_argument("tessera: csv_writer: " + path_.string() + ": row " + std::to_string(rows_ + 1) +
                                    " has the columns (" + join(got) + ") but the file's columns are (" +
                                    join(columns_) + "), set by its first row");
      }
    }
    for (std::size_t i = 0; i < row.size(); ++i) out += (i ? "," : "") + quote(row[i].second.text());
    out += "\n";
    if (std::fwrite(out.data(), 1, out.size(), file_) != out.size() || std::fflush(file_) != 0)
      throw io_error("tessera: csv_writer: writing row " + std::to_string(rows_ + 1) + " to " + path_.string() +
                     " failed: " + std::strerror(errno));
    if (columns_.empty())
      for (const auto& f : row) columns_.push_back(f.first);
    ++rows_;
  }

  /// The field as it is written: in double quotes (quotes doubled) when it holds , " \r \n or a leading or
  /// trailing space, else as it is.
  static std::string quote(std::string_view s) {
    const bool needs = s.find_first_of(",\"\r\n") != std::string_view::npos ||
                       (!s.empty() && (s.front() == ' ' || s.back() == ' '));
    if (!needs) return std::string(s);
    std::string q = "\"";
    for (char c : s) {
      if (c == '"') q += '"';
      q += c;
    }
    return q + "\"";
  }

  const std::filesystem::path& path() const { return path_; }
  /// The columns (empty before the first row).
  const std::vector<std::string>& columns() const { return columns_; }
  /// Rows written, the header not counted.
  std::size_t rows() const { return rows_; }

  void close() {
    if (!file_) return;
    if (std::fclose(std::exchange(file_, nullptr)) != 0)
      throw io_error("tessera: csv_writer: closing " + path_.string() + " failed: " + std::strerror(errno));
  }

 private:
  static std::string join(const std::vector<std::string>& v) {
    std::string s;
    for (std::size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
    return s;
  }

  std::filesystem::path path_;
  std::vector<std::string> columns_;
  std::size_t rows_ = 0;
  std::FILE* file_ = nullptr;
};

}  // namespace tessera::monitor
