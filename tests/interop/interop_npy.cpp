// The tessera side of tests/interop/numpy_npy.py (.npy both ways between tessera and numpy):
//   interop_npy echo IN.npy OUT.npy   reads IN (any dtype npy.hpp reads, rank 0-4) as a tensor, writes it to OUT and
//                                     prints "<dtype> <shape> <sum of the elements as double>"
//   interop_npy make DIR              writes DIR/<dtype>.npy for each dtype (shape [3, 5, 7], element i = a formula
//                                     numpy_npy.py repeats), DIR/scalar.npy, DIR/vector.npy, DIR/transposed.npy
// Exit code 0, or 1 after printing what failed.
#include <cstdio>
#include <exception>
#include <string>

#include "tessera/interop/npy.hpp"
#include "tessera/tessera.hpp"

namespace ts = tessera;
using ts::index_t;

namespace {
template <class T, int R>
int echo_as(const std::string& in, const std::string& out, const ts::npy_header& h) {
  const auto t = ts::load_npy<T, ts::dyn_shape_t<R>>(in);
  ts::save_npy(out, t);
  double sum = 0;
  for (index_t i = 0; i < t.size(); ++i) sum += double(t.data()[i]);
  std::string shape = "[";
  for (int i = 0; i < R; ++i) shape += (i ? "," : "") + std::to_string(t.dims()[i]);
  std::printf("%s %s] %.17g\n", h.descr.c_str(), shape.c_str(), sum);
  return 0;
}
template <class T>
int echo_rank(const std::string& in, const std::string& out, const ts::npy_header& h) {
  switch (h.shape.size()) {
    case 0: return echo_as<T, 0>(in, out, h);
    case 1: return echo_as<T, 1>(in, out, h);
    case 2: return echo_as<T, 2>(in, out, h);
    case 3: return echo_as<T, 3>(in, out, h);
    case 4: return echo_as<T, 4>(in, out, h);
    default: std::fprintf(stderr, "interop_npy: rank %zu is not handled here\n", h.shape.size()); return 1;
  }
}
int echo(const std::string& in, const std::string& out) {
  const auto h = ts::read_npy_header(in);
  switch (h.dtype) {
    case ts::tensor_dtype::f32: return echo_rank<float>(in, out, h);
    case ts::tensor_dtype::f64: return echo_rank<double>(in, out, h);
    case ts::tensor_dtype::i8: return echo_rank<std::int8_t>(in, out, h);
    case ts::tensor_dtype::u8: return echo_rank<std::uint8_t>(in, out, h);
    case ts::tensor_dtype::i32: return echo_rank<std::int32_t>(in, out, h);
    case ts::tensor_dtype::i64: return echo_rank<std::int64_t>(in, out, h);
    case ts::tensor_dtype::boolean: return echo_rank<bool>(in, out, h);
    default: return 1;
  }
}

template <class T, class F>
void make_one(const std::string& path, F f) {
  ts::Tensor<T, ts::Shape<3, 5, 7>> t;
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = f(i);
  ts::save_npy(path, t);
}
int make(const std::string& dir) {
  make_one<float>(dir + "/float32.npy", [](index_t i) { return float(i) * 0.5f - 3.0f; });
  make_one<double>(dir + "/float64.npy", [](index_t i) { return double(i) / 3.0; });
  make_one<std::int8_t>(dir + "/int8.npy", [](index_t i) { return std::int8_t((i * 37) % 256 - 128); });
  make_one<std::uint8_t>(dir + "/uint8.npy", [](index_t i) { return std::uint8_t((i * 7) % 256); });
  make_one<std::int32_t>(dir + "/int32.npy", [](index_t i) { return std::int32_t(i * 100003 - 5000000); });
  make_one<std::int64_t>(dir + "/int64.npy", [](index_t i) { return std::int64_t(i) * 3000000007LL - 1; });
  make_one<bool>(dir + "/bool.npy", [](index_t i) { return i % 3 == 0; });
  ts::Tensor<double, ts::Shape<>> s;
  s() = -2.5;
  ts::save_npy(dir + "/scalar.npy", s);
  ts::Tensor<std::int64_t, ts::Shape<ts::dyn>> v(7);
  for (index_t i = 0; i < 7; ++i) v(i) = i * i;
  ts::save_npy(dir + "/vector.npy", v);
  ts::Tensor<float, ts::Shape<4, 6>> m;
  for (index_t i = 0; i < 24; ++i) m.data()[i] = float(i);
  ts::save_npy(dir + "/transposed.npy", ts::transpose(m.view()));  // [6, 4]: element (j, i) = 6 i + j
  return 0;
}
}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "echo" && argc == 4) return echo(argv[2], argv[3]);
    if (mode == "make" && argc == 3) return make(argv[2]);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "interop_npy %s: %s\n", mode.c_str(), e.what());
    return 1;
  }
  std::fprintf(stderr, "usage: interop_npy echo IN.npy OUT.npy | interop_npy make DIR\n");
  return 2;
}
