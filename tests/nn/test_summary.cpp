// nn::summary and basic_sequential::summary (tessera/nn/summary.hpp): per-layer parameter, trainable and buffer
// counts against plain sums over for_each_parameter / for_each_buffer grouped by the names' layer index; output
// shapes against the shapes written out by hand (odd sizes: a 1x11x13 input); a frozen parameter
// (set_requires_grad(false)) counted as non-trainable; totals and sizes in bytes; and the text's rows and totals.
#include <catch2/catch.hpp>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "tessera/nn/composition.hpp"
#include "tessera/nn/sequential.hpp"
#include "tessera/nn/summary.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
using ts::dyn;
using ts::index_t;

namespace {

using Net = nn::Sequential<ts::Shape<dyn, 1, 11, 13>,
                           nn::Conv2d<1, 5, 3, {.padding = 1}>,  // [N, 5, 11, 13]
                           nn::BatchNorm2d<5>, nn::ReLU,
                           nn::MaxPool2d<2>,                     // [N, 5, 5, 6]
                           nn::Flatten,                          // [N, 150]
                           nn::Linear<150, 7>, nn::Tanh,
                           nn::Linear<7, 3, false>>;             // [N, 3], no bias

/// Plain sums of element counts by the layer index that begins each name ("5.weight" -> 5).
template <class Visit>
std::map<std::size_t, index_t> counts_by_layer(Visit&& visit) {
  std::map<std::size_t, index_t> out;
  visit([&](const std::string& name, auto& t) {
    const std::size_t layer = std::stoul(name.substr(0, name.find('.')));
    out[layer] += index_t(t.size());
  });
  return out;
}

}  // namespace

TEST_CASE("summary: per-layer counts, output shapes and totals", "[summary]") {
  Net net(3);
  // freeze the first Linear's bias: its elements are not trainable
  net.layer<5>().bias.set_requires_grad(false);
  const auto s = nn::summary(net, 17);

  const auto params = counts_by_layer([&](auto&& f) { net.for_each_parameter(f); });
  const auto buffers = counts_by_layer([&](auto&& f) { net.for_each_buffer(f); });
  REQUIRE(s.layers.size() == Net::num_layers);
  index_t total = 0, buf_total = 0;
  for (std::size_t i = 0; i < s.layers.size(); ++i) {
    INFO("layer " << i);
    CHECK(s.layers[i].index == i);
    const index_t want = params.count(i) ? params.at(i) : 0;
    CHECK(s.layers[i].params == want);
    CHECK(s.layers[i].trainable == (i == 5 ? want - 7 : want));
    CHECK(s.layers[i].buffers == (buffers.count(i) ? buffers.at(i) : 0));
    total += want;
    buf_total += buffers.count(i) ? buffers.at(i) : 0;
  }
  CHECK(s.total_params == total);
  CHECK(s.total_params == net.num_parameters());
  CHECK(s.total_params == (5 * 9 + 5) + (5 + 5) + (150 * 7 + 7) + 7 * 3);
  CHECK(s.trainable_params == total - 7);
  CHECK(s.buffer_elements == buf_total);
  CHECK(s.buffer_elements == 10);

  const std::vector<std::vector<index_t>> shapes = {{17, 5, 11, 13}, {17, 5, 11, 13}, {17, 5, 11, 13}, {17, 5, 5, 6},
                                                    {17, 150}, {17, 7}, {17, 7}, {17, 3}};
  const std::vector<std::string> types = {"Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Flatten", "Linear", "Tanh", "Linear"};
  for (std::size_t i = 0; i < shapes.size(); ++i) {
    INFO("layer " << i);
    CHECK(s.layers[i].output_shape == shapes[i]);
    CHECK(s.layers[i].type == types[i]);
  }
  CHECK(s.input_shape == std::vector<index_t>{17, 1, 11, 13});
  CHECK(s.element_size == sizeof(float));
  CHECK(s.param_bytes() == double(total) * 4);
  CHECK(s.input_bytes() == 17.0 * 11 * 13 * 4);
  double outputs = 0;
  for (const auto& sh : shapes) {
    double n = 4;
    for (index_t e : sh) n *= double(e);
    outputs += n;
  }
  CHECK(s.output_bytes() == outputs);
}

TEST_CASE("summary: the text has a row per layer and the totals", "[summary]") {
  Net net(0);
  const std::string text = net.summary(64).to_string();
  std::ostringstream os;
  os << nn::summary(net, 64);
  CHECK(os.str() == text);

  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  auto find = [&](const std::string& prefix) -> std::string {
    for (const auto& l : lines)
      if (l.rfind(prefix, 0) == 0) return l;
    return "(no line starts with '" + prefix + "')";
  };
  const std::string conv = find("Conv2d: 0");
  CHECK_THAT(conv, Catch::Contains("[64, 5, 11, 13]") && Catch::EndsWith("50            50"));
  CHECK_THAT(find("ReLU: 2"), Catch::Contains("[64, 5, 11, 13]") && Catch::EndsWith("--            --"));
  CHECK_THAT(find("Linear: 5"), Catch::Contains("[64, 7]") && Catch::EndsWith("1,057         1,057"));
  CHECK_THAT(find("Linear: 7"), Catch::Contains("[64, 3]") && Catch::EndsWith("21            21"));
  CHECK_THAT(find("Input"), Catch::Contains("[64, 1, 11, 13]"));
  const index_t total = 50 + 10 + 1057 + 21;
  CHECK(find("Total params: ") == "Total params: 1,138");
  CHECK(find("Trainable params: ") == "Trainable params: 1,138");
  CHECK(find("Non-trainable params: ") == "Non-trainable params: 0");
  CHECK(find("Buffers: ") == "Buffers: 10");
  char mb[64];
  std::snprintf(mb, sizeof mb, "Params size (MB): %.2f", double(total) * 4 / 1e6);
  CHECK(find("Params size (MB): ") == mb);
  std::snprintf(mb, sizeof mb, "Input size (MB): %.2f", 64.0 * 11 * 13 * 4 / 1e6);
  CHECK(find("Input size (MB): ") == mb);
  // one row per layer, in order
  std::size_t at = 0;
  for (const char* row : {"Conv2d: 0", "BatchNorm2d: 1", "ReLU: 2", "MaxPool2d: 3", "Flatten: 4", "Linear: 5", "Tanh: 6", "Linear: 7"}) {
    const auto p = text.find(row, at);
    INFO(row);
    REQUIRE(p != std::string::npos);
    at = p;
  }
}

TEST_CASE("summary: a composition is one row; counts of a double model", "[summary]") {
  using Block = nn::Residual<nn::Seq<nn::Linear<6, 6>, nn::ReLU, nn::Linear<6, 6>>>;
  using Net2 = nn::Sequential<ts::Shape<dyn, 6>, Block, nn::Linear<6, 2>>::on<ts::cpu, double>;
  Net2 net(1);
  const auto s = net.summary(5);
  REQUIRE(s.layers.size() == 2);
  CHECK(s.layers[0].type == "Residual");
  CHECK(s.layers[0].params == 2 * (36 + 6));
  CHECK(s.layers[0].output_shape == std::vector<index_t>{5, 6});
  CHECK(s.layers[1].params == 14);
  CHECK(s.element_size == sizeof(double));
  CHECK(s.param_bytes() == double(2 * 42 + 14) * 8);
  CHECK(s.total_params == net.num_parameters());
}

TEST_CASE("model_summary formatting helpers", "[summary]") {
  CHECK(nn::model_summary::format_count(0) == "0");
  CHECK(nn::model_summary::format_count(999) == "999");
  CHECK(nn::model_summary::format_count(1000) == "1,000");
  CHECK(nn::model_summary::format_count(1234567) == "1,234,567");
  CHECK(nn::model_summary::format_shape({64, -1, 3}) == "[64, ?, 3]");
}
