// The tessera side of tests/quant/reduce_range_vs_torch.py. Reads ranges.txt (a line "lo hi" per range, then a line
// "x" and the values to quantize) and writes qparams.txt: per range a line "u8_scale u8_zp s8_scale s8_zp" of
// affine_qparams<uint8 / int8>(lo, hi, reduce_range = true) (floats with 9 significant digits: exact for float32),
// then per range a line of quantize(values, the uint8 qparams) and a line of quantize<int8>(values, the int8 ones).
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include <tessera/quant/quantize.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace q = tessera::quant;

int main() {
  std::ifstream in("ranges.txt");
  std::vector<std::pair<float, float>> ranges;
  std::vector<float> xs;
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("x ", 0) == 0) {
      std::istringstream s(line.substr(2));
      for (float v; s >> v;) xs.push_back(v);
      continue;
    }
    std::istringstream s(line);
    float lo = 0, hi = 0;
    if (s >> lo >> hi) ranges.emplace_back(lo, hi);
  }
  FILE* out = std::fopen("qparams.txt", "w");
  if (!out || ranges.empty() || xs.empty()) {
    std::fprintf(stderr, "reduce_range_ops: nothing read from ranges.txt or qparams.txt not writable\n");
    return 1;
  }
  ts::Tensor<float, ts::Shape<ts::dyn>> x(ts::index_t(xs.size()));
  for (std::size_t i = 0; i < xs.size(); ++i) x.data()[i] = xs[i];
  ts::Tensor<std::uint8_t, ts::Shape<ts::dyn>> qu(x.size());
  ts::Tensor<std::int8_t, ts::Shape<ts::dyn>> qs(x.size());
  for (auto [lo, hi] : ranges) {
    const auto u = q::affine_qparams<std::uint8_t>(lo, hi, true);
    const auto s = q::affine_qparams<std::int8_t>(lo, hi, true);
    std::fprintf(out, "%.9g %d %.9g %d\n", double(u.scale), u.zero_point, double(s.scale), s.zero_point);
    qu = q::quantize(x, u);
    qs = q::quantize<std::int8_t>(x, s);
    for (ts::index_t i = 0; i < x.size(); ++i) std::fprintf(out, "%d ", int(qu.data()[i]));
    std::fprintf(out, "\n");
    for (ts::index_t i = 0; i < x.size(); ++i) std::fprintf(out, "%d ", int(qs.data()[i]));
    std::fprintf(out, "\n");
  }
  std::fclose(out);
  return 0;
}
