// PNG encoding of 8-bit images, for the image summaries of summary_writer (summary_writer.hpp): zlib's deflate for
// the pixel data and zlib's crc32 for the chunks, no libpng.
//
//   std::vector<std::uint8_t> rgb(h * w * 3);                      // row-major, channels last (HWC)
//   std::string file = monitor::encode_png(rgb.data(), h, w, 3);  // the bytes of a .png file
//
// What it writes: the signature, IHDR (width, height, bit depth 8, colour type 0 grey / 4 grey+alpha / 2 RGB /
// 6 RGBA for 1 / 2 / 3 / 4 channels, compression 0, filter 0, no interlace), one IDAT holding the zlib stream of the
// rows, each row preceded by its filter byte 0 (None), and IEND; each chunk ends with the CRC32 of its type and data.
// Guarantees: any PNG decoder reads the pixels back exactly; extents that are not positive, over 2^31 - 1, or whose
// image would not fit in memory's size_t, and channel counts outside 1..4, are a std::invalid_argument naming them.
//
// Needs zlib (linked into tessera::tessera when CMake finds it).
#pragma once

#if !__has_include(<zlib.h>)
#error "tessera/monitor/png.hpp needs zlib, and <zlib.h> was not found: install zlib's development files (Debian: apt-get install zlib1g-dev) and link ZLIB::ZLIB (tessera::tessera links it when CMake's find_package(ZLIB) succeeds)"
#endif
#include <zlib.h>

#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <string_view>

namespace tessera::monitor {

namespace detail {
inline void put_be32(std::string& out, std::uint32_t v) {
  for (int i = 3; i >= 0; --i) out.push_back(char((v >> (8 * i)) & 0xffu));
}
/// Appends a chunk: u32 length, type, data, CRC32 of type and data (all big-endian).
inline void png_chunk(std::string& out, const char (&type)[5], std::string_view data) {
  put_be32(out, std::uint32_t(data.size()));
  const std::size_t from = out.size();
  out.append(type, 4);
  out.append(data);
  uLong crc = ::crc32(0L, Z_NULL, 0);
  const auto* p = reinterpret_cast<const Bytef*>(out.data() + from);
  std::size_t left = out.size() - from;
  while (left > 0) {  // zlib's length is a uInt: feed large chunks in pieces
    const uInt n = left > 0x40000000u ? 0x40000000u : uInt(left);
    crc = ::crc32(crc, p, n);
    p += n;
    left -= n;
  }
  put_be32(out, std::uint32_t(crc));
}
}  // namespace detail

/// The bytes of a PNG file of an 8-bit image: `pixels` holds height rows of width x channels bytes (HWC, row-major);
/// channels 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA. `level` is zlib's compression level (0..9, or -1 its default).
inline std::string encode_png(const std::uint8_t* pixels, long long height, long long width, int channels, int level = 6) {
  if (height <= 0 || width <= 0 || height > 0x7fffffffLL || width > 0x7fffffffLL)
    throw std::invalid_argument("tessera: encode_png: the image is " + std::to_string(height) + " x " +
                                std::to_string(width) + " pixels; PNG needs extents from 1 to 2^31 - 1");
  if (channels < 1 || channels > 4)
    throw std::invalid_argument("tessera: encode_png: " + std::to_string(channels) +
                                " channels; PNG takes 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA)");
  if (level < -1 || level > 9)
    throw std::invalid_argument("tessera: encode_png: zlib's compression level is -1 or 0..9, not " + std::to_string(level));
  const std::size_t row = std::size_t(width) * std::size_t(channels);
  constexpr std::size_t max = std::numeric_limits<std::size_t>::max() / 2;
  if (row + 1 > max / std::size_t(height) || (row + 1) * std::size_t(height) > std::numeric_limits<uLong>::max() / 2)
    throw std::invalid_argument("tessera: encode_png: an image of " + std::to_string(height) + " x " +
                                std::to_string(width) + " x " + std::to_string(channels) + " bytes is too large");
  // the rows, each after its filter byte 0 (None)
  std::string raw;
  raw.resize((row + 1) * std::size_t(height));
  for (long long y = 0; y < height; ++y) {
    char* dst = raw.data() + std::size_t(y) * (row + 1);
    dst[0] = 0;
    std::memcpy(dst + 1, pixels + std::size_t(y) * row, row);
  }
  uLongf zlen = ::compressBound(uLong(raw.size()));
  std::string z(zlen, '\0');
  const int rc = ::compress2(reinterpret_cast<Bytef*>(z.data()), &zlen, reinterpret_cast<const Bytef*>(raw.data()),
                             uLong(raw.size()), level);
  if (rc != Z_OK) throw std::runtime_error("tessera: encode_png: zlib's compress2 failed (" + std::to_string(rc) + ")");
  z.resize(zlen);

  static constexpr int colour_type[5] = {0, 0, 4, 2, 6};
  std::string ihdr;
  detail::put_be32(ihdr, std::uint32_t(width));
  detail::put_be32(ihdr, std::uint32_t(height));
  ihdr.push_back(char(8));                     // bit depth
  ihdr.push_back(char(colour_type[channels]));
  ihdr.append(3, '\0');                        // compression, filter method, interlace
  std::string out("\x89PNG\r\n\x1a\n", 8);
  detail::png_chunk(out, "IHDR", ihdr);
  detail::png_chunk(out, "IDAT", z);
  detail::png_chunk(out, "IEND", {});
  return out;
}

}  // namespace tessera::monitor
