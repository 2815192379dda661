// The bytes of TensorBoard's event files: CRC32C, TFRecord framing and a minimal protocol-buffer encoder, enough for
// summary_writer (summary_writer.hpp) to write Event and Summary messages by hand (no protobuf library).
//
//   std::uint32_t c = monitor::crc32c("123456789");            // 0xE3069283 (Castagnoli, reflected 0x82F63B78)
//   monitor::proto_encoder m;                                  // fields appended in the order they are given
//   m.add_double(1, 1.5);  m.add_int64(2, 7);  m.add_bytes(3, "brain.Event:2");
//   std::string record = monitor::tfrecord_frame(m.bytes());   // ready to be appended to an event file
//
// TFRecord framing (TensorFlow's record_writer.cc), every number little-endian:
//   u64 length | u32 masked_crc32c(the 8 length bytes) | data | u32 masked_crc32c(data)
//   masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8, c = crc32c(x), in 32-bit arithmetic.
// Protocol buffers (proto3 wire format): a field is varint(number << 3 | wire type) then its value; wire type 0 is a
// varint (int64 as its 64-bit two's complement, so -1 takes ten bytes), 1 a little-endian 64-bit value (double),
// 5 a 32-bit one (float), 2 a varint length then bytes (strings, nested messages, packed repeated numbers).
// Guarantees: the encoding of each call is the one protobuf's own serializer gives for that field (the Python reader
// of tests/monitor/read_events.py parses them with google.protobuf); nothing here allocates beyond the output string.
#pragma once

#include <array>
#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <utility>

namespace tessera::monitor {

namespace detail {
/// CRC32C's table for one byte at a time (reflected polynomial 0x82F63B78), built at compile time.
constexpr std::array<std::uint32_t, 256> make_crc32c_table() {
  std::array<std::uint32_t, 256> t{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
    t[i] = c;
  }
  return t;
}
inline constexpr std::array<std::uint32_t, 256> crc32c_table = make_crc32c_table();

inline void put_le(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(char((v >> (8 * i)) & 0xffu));
}
}  // namespace detail

/// CRC-32C (Castagnoli) of `n` bytes, continuing from `crc` (0 to start): crc32c("123456789") == 0xE3069283.
inline std::uint32_t crc32c(const void* data, std::size_t n, std::uint32_t crc = 0) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::uint32_t c = ~crc;
  for (std::size_t i = 0; i < n; ++i) c = detail::crc32c_table[(c ^ p[i]) & 0xffu] ^ (c >> 8);
  return ~c;
}
inline std::uint32_t crc32c(std::string_view s) { return crc32c(s.data(), s.size()); }

/// TFRecord's masked CRC: ((c >> 15) | (c << 17)) + 0xa282ead8 of c = crc32c(data).
inline std::uint32_t masked_crc32c(const void* data, std::size_t n) {
  const std::uint32_t c = crc32c(data, n);
  return ((c >> 15) | (c << 17)) + 0xa282ead8u;
}

/// One TFRecord: u64 length, masked CRC of those 8 bytes, the data, masked CRC of the data (little-endian).
inline std::string tfrecord_frame(std::string_view data) {
  std::string out;
  out.reserve(data.size() + 16);
  detail::put_le(out, std::uint64_t(data.size()), 8);
  detail::put_le(out, masked_crc32c(out.data(), 8), 4);
  out.append(data);
  detail::put_le(out, masked_crc32c(data.data(), data.size()), 4);
  return out;
}

/// Appends protocol-buffer fields to a byte string, in the order they are added (a message is its fields' bytes).
class proto_encoder {
 public:
  enum wire : std::uint32_t { varint_type = 0, fixed64_type = 1, length_type = 2, fixed32_type = 5 };

  /// An int32/int64/enum field (negative numbers as their 64-bit two's complement, as protobuf writes them).
  proto_encoder& add_int64(std::uint32_t field, std::int64_t v) {
    key(field, varint_type);
    varint(std::uint64_t(v));
    return *this;
  }
  proto_encoder& add_uint64(std::uint32_t field, std::uint64_t v) {
    key(field, varint_type);
    varint(v);
    return *this;
  }
  proto_encoder& add_double(std::uint32_t field, double v) {
    key(field, fixed64_type);
    detail::put_le(buf_, std::bit_cast<std::uint64_t>(v), 8);
    return *this;
  }
  proto_encoder& add_float(std::uint32_t field, float v) {
    key(field, fixed32_type);
    detail::put_le(buf_, std::bit_cast<std::uint32_t>(v), 4);
    return *this;
  }
  /// A string, bytes or an already encoded message.
  proto_encoder& add_bytes(std::uint32_t field, std::string_view bytes) {
    key(field, length_type);
    varint(bytes.size());
    buf_.append(bytes);
    return *this;
  }
  proto_encoder& add_message(std::uint32_t field, const proto_encoder& m) { return add_bytes(field, m.bytes()); }
  /// A repeated double field, packed (proto3's default): one length-delimited run of 8-byte values.
  proto_encoder& add_packed_doubles(std::uint32_t field, std::span<const double> values) {
    key(field, length_type);
    varint(values.size() * 8);
    for (double v : values) detail::put_le(buf_, std::bit_cast<std::uint64_t>(v), 8);
    return *this;
  }

  const std::string& bytes() const { return buf_; }
  std::string release() { return std::move(buf_); }

 private:
  void key(std::uint32_t field, wire w) { varint((std::uint64_t(field) << 3) | w); }
  void varint(std::uint64_t v) {
    while (v >= 0x80u) {
      buf_.push_back(char((v & 0x7fu) | 0x80u));
      v >>= 7;
    }
    buf_.push_back(char(v));
  }
  std::string buf_;
};

}  // namespace tessera::monitor
