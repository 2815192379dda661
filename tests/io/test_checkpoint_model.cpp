// Checkpoints of an nn model: add_parameters / read_parameters take a model whose parameters are ad::Vars (every
// nn::Sequential), not only visitors of plain tensors (they did not compile with a Sequential before).
#include <catch2/catch.hpp>

#include <filesystem>
#include <tessera/io/checkpoint.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>

#include "file_support.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;

TEST_CASE("an nn::Sequential's parameters and its optimizer's state saved and restored", "[checkpoint]") {
  tst::temp_dir dir("ckpt_sequential");
  const std::filesystem::path file = dir / "net.ckpt";
  using Net = nn::Sequential<ts::Shape<ts::dyn, 4>, nn::Linear<4, 3>, nn::ReLU, nn::Linear<3, 2>>;
  Net net(/*seed=*/1), other(/*seed=*/2);
  ts::checkpoint_writer w;
  w.add_parameters(net, "model.");
  w.write(file);
  ts::checkpoint_reader r(file);
  CHECK(r.names() == std::vector<std::string>{"model.0.weight", "model.0.bias", "model.2.weight", "model.2.bias"});
  CHECK(r.read_parameters(other, "model.", ts::unmatched_entries::error) == 4);
  std::vector<float> a, b;
  net.for_each_parameter([&](const std::string&, auto& v) { a.insert(a.end(), v.value().data(), v.value().data() + v.size()); });
  other.for_each_parameter([&](const std::string&, auto& v) { b.insert(b.end(), v.value().data(), v.value().data() + v.size()); });
  REQUIRE(a.size() == 4 * 3 + 3 + 3 * 2 + 2);
  CHECK(a == b);
}
