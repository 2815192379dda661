// fuzz_idx: the IDX reader (tessera/data/idx.hpp) on arbitrary bytes, twice per input: as given (a plain file, or
// gzip when the bytes start with 1f 8b) and, when they are not gzip already, gzipped, so that the gzip path sees the
// same mutated headers and data. The reader only takes paths; the bytes go to a memfd named by /proc/self/fd/N, so
// nothing touches the disk. Each file goes through read_idx_header, read_idx<T> of its type, and load_idx_images or
// load_idx_labels when the magic number is theirs; io_error is the only exception allowed, and what a read returns
// must be as large as its dimensions say, every element read.
//
// With TESSERA_FUZZ_SEEDS: main(argc, argv) writes the seed corpus into the folder argv[1]: well-formed IDX files
// of every element type and ranks 1 to 4, plain and gzipped (the library has no IDX writer; the format is simple).
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <tessera/data/idx.hpp>
#include <vector>

namespace ts = tessera;

namespace {

using bytes = std::vector<unsigned char>;

/// The bytes, gzip-framed (deflate, level 1): zlib's own stream, so only the IDX content is malformed.
bytes gzip(const unsigned char* data, std::size_t size) {
  z_stream z{};
  if (deflateInit2(&z, 1, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK) std::abort();
  bytes out(deflateBound(&z, uLong(size)) + 32);
  z.next_in = const_cast<unsigned char*>(data);
  z.avail_in = uInt(size);
  z.next_out = out.data();
  z.avail_out = uInt(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace

#ifndef TESSERA_FUZZ_SEEDS

namespace {

volatile std::uint64_t sink;

/// Read every byte of v (as bytes: no float-to-integer conversion can be out of range).
template <class T>
void touch(const T* p, std::size_t n) {
  std::uint64_t h = 0;
  for (std::size_t i = 0; i < n; ++i) {
    unsigned char b[sizeof(T)];
    std::memcpy(b, p + i, sizeof(T));
    for (auto c : b) h = h * 31 + c;
  }
  sink = sink + h;
}

std::int64_t product(const std::vector<ts::index_t>& d) {
  std::int64_t n = 1;
  for (auto e : d) n *= e;  // read_idx_header refused any header whose product could overflow
  return n;
}

template <class T>
void read_as(const std::string& path, const ts::idx_header& h) {
  const auto a = ts::read_idx<T>(path);
  if (a.dims != h.dims || a.size() != product(a.dims)) __builtin_trap();
  touch(a.data.data(), a.data.size());
}

/// Every entry point that can accept the file (each open costs zlib's buffers: the others would stop at the magic
/// number, a path the header's own checks cover); io_error is the answer to any malformed input.
void read_everything(const std::string& path) {
  ts::idx_header h;
  try {
    h = ts::read_idx_header(path);
  } catch (const ts::io_error&) {
    return;
  }
  try {
    switch (h.type) {
      case ts::idx_type::u8: read_as<std::uint8_t>(path, h); break;
      case ts::idx_type::i8: read_as<std::int8_t>(path, h); break;
      case ts::idx_type::i16: read_as<std::int16_t>(path, h); break;
      case ts::idx_type::i32: read_as<std::int32_t>(path, h); break;
      case ts::idx_type::f32: read_as<float>(path, h); break;
      case ts::idx_type::f64: read_as<double>(path, h); break;
    }
  } catch (const ts::io_error&) {
  }
  try {
    if (h.magic() == 0x00000803u) {
      const auto x = ts::load_idx_images(path, ts::fashion_mnist_normalization);
      if (x.dim(1) != 1 || x.size() != x.dim(0) * x.dim(2) * x.dim(3)) __builtin_trap();
      touch(x.data(), std::size_t(x.size()));
    } else if (h.magic() == 0x00000801u) {
      const auto y = ts::load_idx_labels<std::int64_t>(path);
      touch(y.data(), std::size_t(y.size()));
    }
  } catch (const ts::io_error&) {
  }
}

/// A memfd holding the current input, and the path that opens it.
struct memfile {
  int fd = -1;
  std::string path;
  memfile() {
    fd = memfd_create("fuzz_idx", 0);
    if (fd < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    path = "/proc/self/fd/" + std::to_string(fd);
  }
  void set(const unsigned char* data, std::size_t size) {
    if (ftruncate(fd, 0) != 0 || (size && pwrite(fd, data, size, 0) != ssize_t(size))) std::abort();
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static memfile file;
  file.set(data, size);
  read_everything(file.path);
  if (!(size >= 2 && data[0] == 0x1f && data[1] == 0x8b)) {
    const bytes gz = gzip(data, size);
    file.set(gz.data(), gz.size());
    read_everything(file.path);
  }
  return 0;
}

#else  // TESSERA_FUZZ_SEEDS

namespace {

/// A well-formed IDX file: the header, then the elements' bytes (elem bytes each), a fixed pattern.
bytes idx_file(unsigned char type, std::size_t elem, const std::vector<std::uint32_t>& dims) {
  bytes b = {0, 0, type, static_cast<unsigned char>(dims.size())};
  std::size_t count = 1;
  for (auto d : dims) {
    for (int s = 24; s >= 0; s -= 8) b.push_back(static_cast<unsigned char>(d >> s));
    count *= d;
  }
  for (std::size_t k = 0; k < count * elem; ++k) b.push_back(static_cast<unsigned char>((k * 37 + 11) % 251));
  return b;
}

void put(const std::string& dir, const std::string& name, const bytes& b) {
  const std::string path = dir + "/" + name;
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (!f || std::fwrite(b.data(), 1, b.size(), f) != b.size() || std::fclose(f) != 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  struct seed {
    const char* name;
    unsigned char type;
    std::size_t elem;
    std::vector<std::uint32_t> dims;
  };
  const seed seeds[] = {
      {"labels-u8", 0x08, 1, {10}},        {"images-u8", 0x08, 1, {3, 4, 5}},  {"empty-images-u8", 0x08, 1, {0, 28, 28}},
      {"i8", 0x09, 1, {7}},                {"i16", 0x0B, 2, {2, 3}},           {"i32", 0x0C, 4, {4}},
      {"f32", 0x0D, 4, {2, 2}},            {"f64", 0x0E, 8, {3}},              {"rank4-u8", 0x08, 1, {2, 1, 2, 3}},
  };
  for (const auto& s : seeds) {
    const bytes b = idx_file(s.type, s.elem, s.dims);
    put(dir, std::string(s.name) + ".idx", b);
    put(dir, std::string(s.name) + ".idx.gz", gzip(b.data(), b.size()));
  }
  return 0;
}

#endif
