// A small, strict JSON reader and writer for file headers (safetensors.hpp's): RFC 8259 values, nothing more.
//
//   detail::interop::json v = detail::interop::parse_json(text);   // json_error "at byte 17: ..." when malformed
//   if (const auto* m = v.find("__metadata__")) ...                  // objects keep their members in file order
//   std::string s = detail::interop::json_quote("a\"b");             // "\"a\\\"b\"", for writers
//
// Strict: one value with only whitespace around it; no comments, trailing commas, single quotes, NaN or leading
// zeros; strings must be valid UTF-8 (\u escapes, surrogate pairs included, are turned into UTF-8) without raw
// control characters; an object may not name a key twice; nesting stops at 64 levels (so no input can exhaust the
// stack). Numbers keep their exact value when they are integers of magnitude below 2^64 (is_unsigned() for those >= 0); any other
// number is parsed by the grammar but carries no value, so a reader that needs an integer refuses it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace tessera::detail::interop {

/// Malformed JSON: the message says at which byte and what was expected.
class json_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct json {
  enum class kind { null, boolean, number, string, array, object };
  kind k = kind::null;
  bool flag = false;          ///< a boolean's value
  bool integer = false;       ///< a number written as an integer whose magnitude fits in 64 bits
  bool negative = false;      ///< ... and its sign
  std::uint64_t magnitude = 0;
  std::string text;           ///< a string's value (UTF-8)
  std::vector<json> items;    ///< an array's elements, or an object's values
  std::vector<std::string> keys;  ///< an object's keys, in order (keys[i] names items[i])

  bool is_object() const { return k == kind::object; }
  bool is_array() const { return k == kind::array; }
  bool is_string() const { return k == kind::string; }
  bool is_unsigned() const { return k == kind::number && integer && (!negative || magnitude == 0); }
  const json* find(std::string_view key) const {
    for (std::size_t i = 0; i < keys.size(); ++i)
      if (keys[i] == key) return &items[i];
    return nullptr;
  }
};

/// The length of the UTF-8 sequence at p (1 to 4 bytes), or 0 when it is not well-formed (overlong forms,
/// surrogates and code points above U+10FFFF included).
inline std::size_t utf8_sequence(const unsigned char* p, const unsigned char* end) {
  const unsigned c = p[0];
  if (c < 0x80) return 1;
  std::size_t n;
  std::uint32_t cp;
  if (c >= 0xC2 && c <= 0xDF) n = 2, cp = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF) n = 3, cp = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4) n = 4, cp = c & 0x07;
  else return 0;
  if (std::size_t(end - p) < n) return 0;
  for (std::size_t i = 1; i < n; ++i) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3F);
  }
  if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
  return n;
}
inline bool valid_utf8(std::string_view s) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const auto* end = p + s.size();
  while (p < end) {
    const std::size_t n = utf8_sequence(p, end);
    if (n == 0) return false;
    p += n;
  }
  return true;
}

class json_parser {
 public:
  explicit json_parser(std::string_view text) : b_(text.data()), p_(text.data()), end_(text.data() + text.size()) {}
  json parse_document() {
    skip_ws();
    json v = value(0);
    skip_ws();
    if (p_ != end_) fail("one value was expected, but more follows it");
    return v;
  }

 private:
  static constexpr int max_depth = 64;
  [[noreturn]] void fail(const std::string& what) const {
    throw json_error("at byte " + std::to_string(p_ - b_) + ": " + what);
  }
  void skip_ws() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool literal(std::string_view word) {
    if (std::size_t(end_ - p_) < word.size() || std::string_view(p_, word.size()) != word) return false;
    p_ += word.size();
    return true;
  }
  json value(int depth) {
    if (p_ == end_) fail("a value was expected, the text ends");
    json v;
    switch (*p_) {
      case '{': return object(depth + 1);
      case '[': return array(depth + 1);
      case '"':
        v.k = json::kind::string;
        v.text = string();
        return v;
      case 't':
      case 'f':
        v.k = json::kind::boolean;
        v.flag = *p_ == 't';
        if (!literal(v.flag ? "true" : "false")) fail("not a JSON value");
        return v;
      case 'n':
        if (!literal("null")) fail("not a JSON value");
        return v;
      default:
        if (*p_ == '-' || (*p_ >= '0' && *p_ <= '9')) return number();
        fail(std::string("not a JSON value (it starts with the byte ") + std::to_string(int(static_cast<unsigned char>(*p_))) + ")");
    }
  }
  json object(int depth) {
    if (depth > max_depth) fail("nested more than 64 levels deep");
    json v;
    v.k = json::kind::object;
    ++p_;
    skip_ws();
    if (p_ != end_ && *p_ == '}') {
      ++p_;
      return v;
    }
    while (true) {
      skip_ws();
      if (p_ == end_ || *p_ != '"') fail("a key (a string) was expected");
      std::string key = string();
      if (v.find(key)) fail("the key \"" + key + "\" appears twice in one object");
      skip_ws();
      if (p_ == end_ || *p_ != ':') fail("':' was expected after the key \"" + key + "\"");
      ++p_;
      skip_ws();
      json member = value(depth);
      v.keys.push_back(std::move(key));
      v.items.push_back(std::move(member));
      skip_ws();
      if (p_ != end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      if (p_ != end_ && *p_ == '}') {
        ++p_;
        return v;
      }
      fail("',' or '}' was expected in an object");
    }
  }
  json array(int depth) {
    if (depth > max_depth) fail("nested more than 64 levels deep");
    json v;
    v.k = json::kind::array;
    ++p_;
    skip_ws();
    if (p_ != end_ && *p_ == ']') {
      ++p_;
      return v;
    }
    while (true) {
      skip_ws();
      v.items.push_back(value(depth));
      skip_ws();
      if (p_ != end_ && *p_ == ',') {
        ++p_;
        continue;
      }
      if (p_ != end_ && *p_ == ']') {
        ++p_;
        return v;
      }
      fail("',' or ']' was expected in an array");
    }
  }
  json number() {
    json v;
    v.k = json::kind::number;
    if (*p_ == '-') {
      v.negative = true;
      ++p_;
    }
    auto digit = [&] { return p_ != end_ && *p_ >= '0' && *p_ <= '9'; };
    if (!digit()) fail("a digit was expected");
    bool fits = true;
    if (*p_ == '0') {
      ++p_;
      if (digit()) fail("a number may not have a leading zero");
    } else {
      while (digit()) {
        const unsigned d = unsigned(*p_ - '0');
        if (v.magnitude > (UINT64_MAX - d) / 10) fits = false;
        else v.magnitude = v.magnitude * 10 + d;
        ++p_;
      }
    }
    bool plain = true;
    if (p_ != end_ && *p_ == '.') {
      plain = false;
      ++p_;
      if (!digit()) fail("a digit was expected after '.'");
      while (digit()) ++p_;
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      plain = false;
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (!digit()) fail("a digit was expected in the exponent");
      while (digit()) ++p_;
    }
    v.integer = plain && fits;
    if (!v.integer) v.magnitude = 0;
    return v;
  }
  unsigned hex4() {
    if (end_ - p_ < 4) fail("\\u needs four hex digits");
    unsigned u = 0;
    for (int i = 0; i < 4; ++i, ++p_) {
      const char c = *p_;
      u <<= 4;
      if (c >= '0' && c <= '9') u |= unsigned(c - '0');
      else if (c >= 'a' && c <= 'f') u |= unsigned(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') u |= unsigned(c - 'A' + 10);
      else fail("\\u needs four hex digits");
    }
    return u;
  }
  static void append_utf8(std::string& s, std::uint32_t cp) {
    if (cp < 0x80) s += char(cp);
    else if (cp < 0x800) s += char(0xC0 | (cp >> 6)), s += char(0x80 | (cp & 0x3F));
    else if (cp < 0x10000) s += char(0xE0 | (cp >> 12)), s += char(0x80 | ((cp >> 6) & 0x3F)), s += char(0x80 | (cp & 0x3F));
    else
      s += char(0xF0 | (cp >> 18)), s += char(0x80 | ((cp >> 12) & 0x3F)), s += char(0x80 | ((cp >> 6) & 0x3F)),
          s += char(0x80 | (cp & 0x3F));
  }
  std::string string() {
    ++p_;  // the opening quote
    std::string s;
    while (true) {
      if (p_ == end_) fail("the string is not closed");
      const auto c = static_cast<unsigned char>(*p_);
      if (c == '"') {
        ++p_;
        return s;
      }
      if (c < 0x20) fail("a control character (byte " + std::to_string(c) + ") inside a string must be escaped");
      if (c == '\\') {
        ++p_;
        if (p_ == end_) fail("the string ends inside an escape");
        const char e = *p_++;
        switch (e) {
          case '"': s += '"'; break;
          case '\\': s += '\\'; break;
          case '/': s += '/'; break;
          case 'b': s += '\b'; break;
          case 'f': s += '\f'; break;
          case 'n': s += '\n'; break;
          case 'r': s += '\r'; break;
          case 't': s += '\t'; break;
          case 'u': {
            std::uint32_t cp = hex4();
            if (cp >= 0xDC00 && cp <= 0xDFFF) fail("a low surrogate \\u escape without a high one before it");
            if (cp >= 0xD800 && cp <= 0xDBFF) {
              if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') fail("a high surrogate \\u escape without a low one after it");
              p_ += 2;
              const unsigned lo = hex4();
              if (lo < 0xDC00 || lo > 0xDFFF) fail("a high surrogate \\u escape without a low one after it");
              cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            append_utf8(s, cp);
            break;
          }
          default: fail(std::string("unknown escape \\") + e);
        }
        continue;
      }
      const std::size_t n = utf8_sequence(reinterpret_cast<const unsigned char*>(p_), reinterpret_cast<const unsigned char*>(end_));
      if (n == 0) fail("the string is not valid UTF-8");
      s.append(p_, n);
      p_ += n;
    }
  }

  const char* b_;
  const char* p_;
  const char* end_;
};

inline json parse_json(std::string_view text) { return json_parser(text).parse_document(); }

/// `s` as a JSON string literal (quotes, escapes for '"', '\\' and control characters; UTF-8 passes through).
inline std::string json_quote(std::string_view s) {
  static const char hex[] = "0123456789abcdef";
  std::string out = "\"";
  for (const char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c == '"') out += "\\\"";
    else if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else if (c == '\t') out += "\\t";
    else if (c == '\r') out += "\\r";
    else if (c < 0x20) out += std::string("\\u00") + hex[c >> 4] + hex[c & 15];
    else out += ch;
  }
  return out + "\"";
}

}  // namespace tessera::detail::interop
