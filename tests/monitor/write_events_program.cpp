// Writes a TensorBoard run with known content for tests/monitor/read_events.py, which reads it back with
// google.protobuf and checks every record (ctest: monitor_read_events).
//   write_events_program <logdir>
// Content (the reader derives the same values on its own; keep both in step):
//   "train/loss"     steps 0..9: 1 / (step + 1)            "train/accuracy"  steps 0..9: step / 16
//   "weights"        step 1: [13, 7] tensor, element i = 3 sin(i)     "ints"  step 2: the ints -3..5
//   "model/weights/w", "model/grads/w"  step 3: an ad::Var of 11 values i / 4 - 1, its gradient 0.5 everywhere
//   "image/rgb"      step 4: [5, 7, 3] HWC uint8, (y * 40 + x * 20 + c * 70) % 256
//   "image/gray"     step 5: [1, 4, 6] CHW float, (y * 6 + x) / 23
//   "filters"        step 6: grid of [4, 1, 3, 3] floats i - 10, 2 columns, padding 1, scale 2, pad_value 0
//   "notes"          step 7: the text "hello *tessera*\nline 2"
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include <tessera/autodiff/var.hpp>
#include <tessera/monitor/summary_writer.hpp>
#include <tessera/tessera.hpp>

namespace ts = tessera;
namespace mon = tessera::monitor;

namespace {
struct one_var_model {
  ts::ad::Var<float, 1> w;
  template <class F>
  void for_each_parameter(F&& f) {
    f(std::string("w"), w);
  }
};
}  // namespace

int main(int argc, char** argv) try {
  if (argc < 2) {
    std::fprintf(stderr, "usage: write_events_program <logdir>\n");
    return 2;
  }
  mon::summary_writer w(argv[1]);
  for (int s = 0; s < 10; ++s) {
    w.add_scalar("train/loss", 1.0 / (s + 1), s);
    w.add_scalar("train/accuracy", s / 16.0, s);
  }
  ts::Tensor<float, ts::Shape<13, 7>> weights;
  for (int i = 0; i < 13 * 7; ++i) weights.data()[i] = float(3 * std::sin(double(i)));
  w.add_histogram("weights", weights, 1);
  std::vector<int> ints;
  for (int i = -3; i <= 5; ++i) ints.push_back(i);
  w.add_histogram("ints", ints, 2);

  one_var_model m{ts::ad::Var<float, 1>(ts::Tensor<float, ts::Shape<ts::dyn>>(11), true)};
  for (int i = 0; i < 11; ++i) m.w.mutable_value()(i) = float(i) / 4 - 1;
  m.w.mutable_grad() = 0.5f;
  w.add_histograms(m, 3, "model/");

  ts::Tensor<std::uint8_t, ts::Shape<5, 7, 3>> rgb;
  for (int y = 0; y < 5; ++y)
    for (int x = 0; x < 7; ++x)
      for (int c = 0; c < 3; ++c) rgb(y, x, c) = std::uint8_t((y * 40 + x * 20 + c * 70) % 256);
  w.add_image("image/rgb", rgb, 4, mon::image_format::hwc);
  ts::Tensor<float, ts::Shape<1, 4, 6>> gray;
  for (int y = 0; y < 4; ++y)
    for (int x = 0; x < 6; ++x) gray(0, y, x) = float(y * 6 + x) / 23.0f;
  w.add_image("image/gray", gray, 5);

  ts::Tensor<float, ts::Shape<4, 1, 3, 3>> filters;
  for (int i = 0; i < 36; ++i) filters.data()[i] = float(i - 10);
  w.add_images_grid("filters", filters, 6, {.columns = 2, .padding = 1, .scale = 2});

  w.add_text("notes", "hello *tessera*\nline 2", 7);
  w.close();
  std::printf("%s\n", w.path().c_str());
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "write_events_program: %s\n", e.what());
  return 1;
}
