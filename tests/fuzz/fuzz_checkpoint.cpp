// fuzz_checkpoint: the checkpoint reader (tessera/io/checkpoint.hpp) on arbitrary bytes. The first input byte picks
// the mode, the rest is the file:
//   even: the file as given (the header, length and CRC32 checks see the mutations);
//   odd:  the file with its length field and CRC32 set to match (when it is long enough for them), so that mutated
//         entries get past the checksum and reach the entry parser.
// The bytes go to checkpoint_reader::from_bytes (the same checks as a file). For every entry found, the harness reads
// it as a new tensor of its element type and rank (get), into a strided view, and as a scalar or string, and reads
// every element (so an over-read is caught by ASan, a bool byte other than 0 or 1 by UBSan); a read of the wrong
// element type or rank must be refused. io_error is the only exception allowed.
//
// With TESSERA_FUZZ_SEEDS: main(argc, argv) writes the seed corpus into the folder argv[1]: checkpoints written by
// checkpoint_writer (every element type, ranks 0 to 4, empty tensors, scalars, strings), each in both modes.
#include <zlib.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <tessera/io/checkpoint.hpp>
#include <utility>
#include <vector>

namespace ts = tessera;
using bytes = std::vector<unsigned char>;

#ifndef TESSERA_FUZZ_SEEDS

namespace {

volatile std::uint64_t sink;

/// Read every element (bools as bools, so that UBSan checks them; the rest as bytes).
template <class T>
void touch(const T* p, std::size_t n) {
  std::uint64_t h = 0;
  for (std::size_t i = 0; i < n; ++i) {
    if constexpr (std::is_same_v<T, bool>) {
      h = h * 31 + (p[i] ? 1 : 0);
    } else {
      unsigned char b[sizeof(T)];
      std::memcpy(b, p + i, sizeof(T));
      for (auto c : b) h = h * 31 + c;
    }
  }
  sink = sink + h;
}

template <int... I>
ts::Shape<((void)I, ts::dyn)...> dyn_shape_of(std::integer_sequence<int, I...>);
template <int R>
using dyn_shape = decltype(dyn_shape_of(std::make_integer_sequence<int, R>{}));

template <class F>
void expect_io_error(F&& f) {
  try {
    f();
  } catch (const ts::io_error&) {
    return;
  }
  std::fprintf(stderr, "fuzz_checkpoint: a read of the wrong element type or rank was not refused\n");
  std::abort();
}

/// Entry `name` of element type T and rank R: as a new tensor, into a view with every other element, and (wrong
/// rank) refused.
template <class T, int R>
void read_entry(const ts::checkpoint_reader& r, const std::string& name) {
  auto t = r.get<T, dyn_shape<R>>(name);
  touch(t.data(), std::size_t(t.size()));
  if constexpr (R >= 1) {
    // the same entry into a view whose last dimension has stride 2 (not for empty ones: their strides could overflow)
    if (t.size() > 0) {
      ts::dims_t<R> d = t.dims(), st{};
      ts::index_t s = 2;
      for (int i = R - 1; i >= 0; --i) st[std::size_t(i)] = s, s *= d[std::size_t(i)];
      const std::size_t n = std::size_t(2 * t.size() + 1);
      const std::unique_ptr<T[]> buf(new T[n]());
      ts::View<T, dyn_shape<R>, ts::cpu> v(buf.get(), d, st);
      r.read_into(name, v);
      touch(buf.get(), n);
    }
  }
  if constexpr (R < ts::max_rank) expect_io_error([&] { (void)r.get<T, dyn_shape<R + 1>>(name); });
  else expect_io_error([&] { (void)r.get<T, dyn_shape<R - 1>>(name); });
  if constexpr (std::is_same_v<T, float>) expect_io_error([&] { (void)r.get<double, dyn_shape<R>>(name); });
  else expect_io_error([&] { (void)r.get<float, dyn_shape<R>>(name); });
}

template <class T, int R = 0>
void read_rank(const ts::checkpoint_reader& r, const std::string& name, std::size_t rank) {
  if constexpr (R <= ts::max_rank) {
    if (rank == std::size_t(R)) read_entry<T, R>(r, name);
    else read_rank<T, R + 1>(r, name, rank);
  }
}

void read_everything(const ts::checkpoint_reader& r) {
  for (const auto& name : r.names()) {
    const auto rank = r.dims(name).size();
    switch (r.dtype(name)) {
      case ts::checkpoint_dtype::f32: read_rank<float>(r, name, rank); break;
      case ts::checkpoint_dtype::f64: read_rank<double>(r, name, rank); break;
      case ts::checkpoint_dtype::i32: read_rank<std::int32_t>(r, name, rank); break;
      case ts::checkpoint_dtype::i64: read_rank<std::int64_t>(r, name, rank); break;
      case ts::checkpoint_dtype::u8: read_rank<std::uint8_t>(r, name, rank); break;
      case ts::checkpoint_dtype::i8: read_rank<std::int8_t>(r, name, rank); break;
      case ts::checkpoint_dtype::bf16: read_rank<ts::bfloat16>(r, name, rank); break;
      case ts::checkpoint_dtype::boolean: read_rank<bool>(r, name, rank); break;
      case ts::checkpoint_dtype::string: {
        const std::string s = r.string(name);
        touch(s.data(), s.size());
        expect_io_error([&] { (void)r.scalar<double>(name); });
        continue;
      }
    }
    if (rank == 0) sink = sink + std::uint64_t(r.scalar<double>(name) != 0);
    else expect_io_error([&] { (void)r.scalar<double>(name); });
    expect_io_error([&] { (void)r.string(name); });
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  bytes file(data + 1, data + size);
  if ((data[0] & 1) && file.size() >= ts::detail::checkpoint_header_bytes + 4) {
    const std::uint64_t length = file.size();
    ts::detail::store_le<std::uint64_t>(file.data() + 16, length);
    const std::uint32_t crc = ts::detail::crc32_update(crc32(0, nullptr, 0), file.data(), file.size() - 4);
    ts::detail::store_le<std::uint32_t>(file.data() + file.size() - 4, crc);
  }
  try {
    const auto r = ts::checkpoint_reader::from_bytes(std::move(file), "fuzz.ckpt");
    read_everything(r);
  } catch (const ts::io_error&) {
  }
  return 0;
}

#else  // TESSERA_FUZZ_SEEDS

namespace {

template <class T, class S>
ts::Tensor<T, S> make(const ts::dims_t<S::rank>& d, int salt) {
  ts::Tensor<T, S> t(d);
  for (ts::index_t k = 0; k < t.size(); ++k) {
    const long v = long((k * 37 + salt * 11) % 201) - 100;
    if constexpr (std::is_same_v<T, bool>) t.data()[k] = (v & 1) != 0;
    else if constexpr (std::is_same_v<T, ts::bfloat16>) t.data()[k] = T(float(v) * 0.25f);
    else t.data()[k] = T(v);
  }
  return t;
}

/// Write `w` as a checkpoint, then as two corpus inputs: mode byte 0 (as is) and 1 (CRC repaired).
void emit(const std::filesystem::path& dir, const std::string& name, const ts::checkpoint_writer& w) {
  const auto tmp = dir / (name + ".ckpt");
  w.write(tmp);
  std::ifstream in(tmp, std::ios::binary);
  const bytes b((std::istreambuf_iterator<char>(in)), {});
  in.close();
  std::filesystem::remove(tmp);
  for (unsigned char mode : {0, 1}) {
    std::ofstream out(dir / (name + "_mode" + std::to_string(mode)), std::ios::binary | std::ios::trunc);
    out.put(char(mode));
    out.write(reinterpret_cast<const char*>(b.data()), std::streamsize(b.size()));
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);
  using ts::dyn;
  using ts::Shape;
  {  // every element type, one entry each, ranks 0 to 4
    ts::checkpoint_writer w;
    w.add("f32.r0", make<float, Shape<>>({}, 1));
    w.add("f64.r1", make<double, Shape<dyn>>({5}, 2));
    w.add("i32.r2", make<std::int32_t, Shape<dyn, dyn>>({3, 2}, 3));
    w.add("i64.r3", make<std::int64_t, Shape<dyn, dyn, dyn>>({2, 1, 3}, 4));
    w.add("u8.r4", make<std::uint8_t, Shape<dyn, dyn, dyn, dyn>>({2, 2, 1, 3}, 5));
    w.add("i8.r1", make<std::int8_t, Shape<dyn>>({7}, 6));
    w.add("bf16.r2", make<ts::bfloat16, Shape<dyn, dyn>>({2, 3}, 7));
    w.add("bool.r1", make<bool, Shape<dyn>>({6}, 8));
    emit(dir, "all_dtypes", w);
  }
  {  // empty tensors: a zero extent at each place
    ts::checkpoint_writer w;
    w.add("e1", make<float, Shape<dyn>>({0}, 1));
    w.add("e2", make<double, Shape<dyn, dyn>>({3, 0}, 2));
    w.add("e3", make<std::int32_t, Shape<dyn, dyn, dyn>>({0, 4, 2}, 3));
    w.add("e4", make<bool, Shape<dyn, dyn, dyn, dyn>>({1, 2, 0, 3}, 4));
    emit(dir, "empty", w);
  }
  {  // scalars and strings
    ts::checkpoint_writer w;
    w.add_scalar("epoch", 12);
    w.add_scalar("lr", 0.125);
    w.add_scalar("done", true);
    w.add_string("arch", "lenet-5");
    w.add_string("none", "");
    emit(dir, "scalars", w);
  }
  {  // one entry of each kind alone (short inputs mutate best), and no entry at all
    emit(dir, "one_f32", [] { ts::checkpoint_writer w; w.add("w", make<float, Shape<dyn, dyn>>({2, 2}, 9)); return w; }());
    emit(dir, "one_f64_r4", [] { ts::checkpoint_writer w; w.add("x", make<double, Shape<1, 2, 1, 2>>({1, 2, 1, 2}, 3)); return w; }());
    emit(dir, "one_string", [] { ts::checkpoint_writer w; w.add_string("s", "abc"); return w; }());
    emit(dir, "nothing", ts::checkpoint_writer{});
  }
  return 0;
}

#endif
