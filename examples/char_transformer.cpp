// A character-level Transformer trained on the text of Debian's `fortunes` package, the same text and held-out
// split as char_lm.cpp's LSTM (examples/char_corpus.hpp): token embedding (96 characters -> 128) plus a learned
// position embedding, two pre-norm TransformerEncoderLayers (4 heads, feed-forward 512, GELU) with a causal mask,
// a final LayerNorm and a Linear back to the 96 characters; Adam, windows of `context` characters drawn at random
// from the training text, each position predicting the next character. The held-out bits per character are taken
// over consecutive windows of the held-out text (every position of a window; a window sees no earlier text, where
// the LSTM's evaluation carries its state from chunk to chunk), after each quarter of the budget.
//   char_transformer [steps = 3000, or seconds of training: 300s] [threads = 2] [batch = 32] [context = 64]
//                    [lr = 0.002] [seed = 0] [fortune dir]
// (the learning rate warms up over the first 2 % of the budget, then follows a cosine to lr/10; the gradient's
// norm is clipped at 1). scripts/char_lm.sh transformer 300s runs it and the LSTM for the same training time.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <numbers>
#include <string>
#include <vector>

#include <tessera/autodiff/view_ops.hpp>
#include <tessera/nn/embedding.hpp>
#include <tessera/nn/layer_norm.hpp>
#include <tessera/nn/transformer.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/tessera.hpp>

#include "char_corpus.hpp"
#include "example_support.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
using ts::index_t;
using P = ts::cpu_threads;

namespace {
constexpr int V = example::char_vocab;
constexpr int E = 128, Heads = 4, FF = 512, MaxContext = 256;
index_t B = 32, T = 64;

using Embed = nn::Embedding<V, E>;
using Block = nn::TransformerEncoderLayer<E, Heads, FF,
                                          ts::transformer_options{.dropout = 0.0, .activation = ts::transformer_activation::gelu, .norm_first = true}>;
using Norm = nn::LayerNorm<E>;
using Head = nn::Linear<E, V>;

struct char_transformer {
  Embed::state<float, P> embed;
  ad::Var<float, 2, P> position;  ///< [MaxContext, E], N(0, 0.02)
  Block::state<float, P> block0, block1;
  Norm::state<float, P> norm;
  Head::state<float, P> head;
  explicit char_transformer(ts::Rng& rng) : embed(rng), block0(rng), block1(rng), norm(rng), head(rng) {
    ts::Tensor<float, ts::dyn_shape_t<2>, P> p(MaxContext, E);
    for (index_t i = 0; i < p.size(); ++i) {  // Box-Muller
      const double u1 = 1.0 - rng.uniform_double(), u2 = rng.uniform_double();
      p.data()[i] = float(0.02 * std::sqrt(-2 * std::log(u1)) * std::cos(2 * std::numbers::pi * u2));
    }
    position = ad::Var<float, 2, P>(p, true);
  }
  template <class F>
  void for_each_parameter(F&& f) {
    embed.for_each_parameter("embed.", f);
    f(std::string("position"), position);
    block0.for_each_parameter("layers.0.", f);
    block1.for_each_parameter("layers.1.", f);
    norm.for_each_parameter("norm.", f);
    head.for_each_parameter("head.", f);
  }
  /// tokens [n, T] -> logits [n * T, V]
  ad::Var<float, 2, P> forward(const ts::Tensor<std::int32_t, ts::dyn_shape_t<2>, P>& tokens, nn::context& ctx) {
    const index_t n = tokens.dims()[0], t = tokens.dims()[1];
    auto x = embed.forward(tokens, ctx);                                                            // [n, t, E]
    auto pos = ad::reshape<3>(ad::slice<0>(position, 0, t), ts::dims_t<3>{1, t, E});                // [1, t, E]
    ad::Var<float, 3, P> h = x + pos;
    const ts::mha_masks causal{.is_causal = true};
    h = block0.forward(h, ctx, causal);
    h = block1.forward(h, ctx, causal);
    h = norm.forward(h, ctx);
    return head.forward(ad::reshape<2>(h, ts::dims_t<2>{n * t, E}), ctx);
  }
};

/// `n` windows of T + 1 characters starting at `starts`: the first T as tokens, the next-character targets [n * T].
struct batch {
  ts::Tensor<std::int32_t, ts::dyn_shape_t<2>, P> x;
  ts::Tensor<int, ts::Shape<ts::dyn>, P> y;
};
void make_batch(const std::vector<int>& text, const std::vector<index_t>& starts, batch& b) {
  const index_t n = index_t(starts.size());
  b.x = ts::Tensor<std::int32_t, ts::dyn_shape_t<2>, P>(n, T);
  b.y = ts::Tensor<int, ts::Shape<ts::dyn>, P>(n * T);
  for (index_t s = 0; s < n; ++s)
    for (index_t t = 0; t < T; ++t) {
      const std::size_t pos = std::size_t(starts[std::size_t(s)] + t);
      b.x(s, t) = text[pos];
      b.y(s * T + t) = text[pos + 1];
    }
}

/// Held-out bits per character over consecutive windows of T characters (32 windows a batch).
double bits_per_char(char_transformer& m, const std::vector<int>& text) {
  ad::no_grad ng;
  nn::context ctx{false, nullptr};
  const index_t windows = index_t(text.size() - 1) / T;
  double nats = 0;
  index_t counted = 0;
  batch b;
  for (index_t w0 = 0; w0 < windows; w0 += 32) {
    std::vector<index_t> starts;
    for (index_t w = w0; w < windows && w < w0 + 32; ++w) starts.push_back(w * T);
    make_batch(text, starts, b);
    nats += double(ad::cross_entropy(m.forward(b.x, ctx), b.y).value()()) * double(starts.size());
    counted += index_t(starts.size());
  }
  return nats / double(counted) / std::log(2.0);
}
}  // namespace

int main(int argc, char** argv) {
  example::budget budget;
  const bool budget_ok = argc <= 1 || example::budget::parse(argv[1], budget);
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  B = argc > 3 ? std::atoi(argv[3]) : 32;
  T = argc > 4 ? std::atoi(argv[4]) : 64;
  const double lr0 = argc > 5 ? std::atof(argv[5]) : 2e-3;
  const unsigned seed = argc > 6 ? unsigned(std::atoi(argv[6])) : 0u;
  const std::filesystem::path dir = argc > 7 ? argv[7] : "/usr/share/games/fortunes";
  if (!budget_ok || threads < 1 || B < 1 || T < 2 || T > MaxContext || !(lr0 > 0)) {
    std::fprintf(stderr, "usage: char_transformer [steps = 3000, or seconds of training: 300s] [threads = 2] [batch = 32] "
                         "[context = 64, at most %d] [lr = 0.002] [seed = 0] [fortune dir]\n", MaxContext);
    return 2;
  }
  P::set_num_threads(threads);
  if (!std::filesystem::is_directory(dir)) {
    std::fprintf(stderr, "char_transformer: %s not found: install Debian's fortunes package (apt-get install fortunes)\n", dir.c_str());
    return 1;
  }
  const example::corpus text = example::load_fortunes(dir);
  std::printf("fortunes: %d files, %lld fortunes; %zu training characters, %zu held out (every 20th fortune)\n", text.files,
              (long long)text.fortunes, text.train.size(), text.valid.size());
  if (text.train.size() < std::size_t(T + 2) || text.valid.size() < std::size_t(T + 1)) {
    std::fprintf(stderr, "char_transformer: too little text in %s\n", dir.c_str());
    return 1;
  }

  ts::Rng rng(seed);
  char_transformer model(rng);
  std::vector<nn::parameter_ref<float>> params;
  model.for_each_parameter([&](const std::string& n, auto& v) { params.push_back(nn::make_parameter_ref(n, v)); });
  index_t count = 0;
  for (const auto& p : params) count += p.size;
  ts::optim::Adam<float> opt(params, {.lr = lr0});
  std::printf("model: embedding %d -> %d + positions, 2 pre-norm Transformer encoder layers (%d heads, feed-forward %d, "
              "GELU, causal), LayerNorm, Linear(%d, %d): %lld parameters; Adam (lr %g), batch %lld x %lld characters, %s, "
              "%d thread(s)\n",
              V, E, Heads, FF, E, V, (long long)count, lr0, (long long)B, (long long)T,
              budget.seconds > 0 ? (std::to_string(std::lround(budget.seconds)) + " s of training").c_str()
                                 : (std::to_string(budget.steps) + " steps").c_str(),
              threads);
  std::printf("held-out bits/char before training: %.3f (uniform: %.3f)\n", bits_per_char(model, text.valid), std::log2(double(V)));

  example::lm_progress progress{budget, double(B * T)};
  nn::context ctx{true, &rng};
  batch b;
  std::vector<index_t> starts(static_cast<std::size_t>(B));
  int step = 0;
  for (; !progress.done(step); ++step) {
    const double frac = progress.fraction(step);
    const double warm = std::min(1.0, frac / 0.02);
    opt.set_lr(lr0 * warm * (0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi * frac))));
    for (auto& s : starts) s = index_t(rng.uniform_double() * double(text.train.size() - std::size_t(T) - 1));
    make_batch(text.train, starts, b);
    opt.zero_grad();
    auto loss = ad::cross_entropy(model.forward(b.x, ctx), b.y);
    loss.backward();
    example::clip_grad_norm(params, 1.0);
    opt.step();
    progress.after_step(step, loss.value()(), [&] { return bits_per_char(model, text.valid); });
  }
  progress.summary(step);
}
