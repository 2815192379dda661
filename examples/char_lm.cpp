// A character-level language model trained on the text of Debian's `fortunes` package (the files under
// /usr/share/games/fortunes without .dat/.u8 suffix): one-hot characters -> LSTM (1 layer, hidden 256) ->
// Linear to the 96 characters, Adam, truncated backpropagation through time over chunks of 64 characters with the
// state carried from chunk to chunk (32 streams). Every 20th fortune is held out; the held-out bits per character
// (mean cross-entropy in nats / ln 2) are printed after each phase. At the end a few fortunes are sampled
// (temperature 0.7, seeded), stepping ad::lstm_cell with the trained layer's parameters.
//   char_lm [steps = 3000, or seconds of training: 300s] [threads = 2] [batch = 32] [chunk = 64] [lr = 0.01] [seed = 0] [fortune dir]
// (the learning rate follows a cosine from lr to lr/10; the gradient's norm is clipped at 5).
// scripts/char_lm.sh installs the package, builds in Release and runs this.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <sstream>
#include <string>
#include <vector>

#include <tessera/nn/recurrent.hpp>
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
constexpr int H = 256;  // hidden size
index_t B = 32, T = 64;  // streams per batch, characters per chunk (backpropagation window): set from the command line
constexpr index_t eval_streams = 32;

using LSTM = nn::LSTM<V, H, ts::lstm_options{.num_layers = 1, .batch_first = true}>;
using Head = nn::Linear<H, V>;

using example::char_vocab;
using example::corpus;
int encode(unsigned char c) { return example::encode_char(c); }
char decode(int id) { return example::decode_char(id); }
using example::seconds_since;

struct char_lm {
  LSTM::state<float, P> lstm;
  Head::state<float, P> head;
  explicit char_lm(ts::Rng& rng) : lstm(rng), head(rng) {}
  template <class F>
  void for_each_parameter(F&& f) {
    lstm.for_each_parameter("lstm.", f);
    head.for_each_parameter("head.", f);
  }
};

/// Chunk `k` of `n` streams laid over `text` (stream s starts at s * len): one-hot inputs [n, T, V] and the next
/// characters [n * T] as targets.
struct chunk {
  ts::Tensor<float, ts::dyn_shape_t<3>, P> x;
  ts::Tensor<int, ts::Shape<ts::dyn>, P> y;
};
void make_chunk(const std::vector<int>& text, index_t n, index_t len, index_t k, chunk& c) {
  c.x = ts::Tensor<float, ts::dyn_shape_t<3>, P>(n, T, V);
  c.x = 0.0f;
  c.y = ts::Tensor<int, ts::Shape<ts::dyn>, P>(n * T);
  for (index_t s = 0; s < n; ++s)
    for (index_t t = 0; t < T; ++t) {
      const std::size_t pos = std::size_t(s * len + k * T + t);
      c.x(s, t, text[pos]) = 1.0f;
      c.y(s * T + t) = text[pos + 1];
    }
}

/// One chunk through the model from (h, c): the logits [n * T, V]; (h, c) become the final state, cut from the graph.
ad::Var<float, 2, P> run_chunk(char_lm& m, const chunk& ch, ad::Var<float, 3, P>& h, ad::Var<float, 3, P>& c, nn::context& ctx) {
  const index_t n = ch.x.dims()[0];
  auto r = ad::lstm(ad::Var<float, 3, P>(ch.x, false), m.lstm.layers, ts::lstm_options{.num_layers = 1, .batch_first = true}, h, c);
  h = r.h_n.detach();
  c = r.c_n.detach();
  return m.head.forward(ad::reshape<2>(r.output, ts::dims_t<2>{n * T, H}), ctx);
}

/// Held-out bits per character: every chunk of `eval_streams` streams over the held-out text, state carried.
double bits_per_char(char_lm& m, const std::vector<int>& text) {
  ad::no_grad ng;
  nn::context ctx{false, nullptr};
  const index_t len = index_t(text.size() - 1) / eval_streams;
  const index_t chunks = len / T;
  ad::Var<float, 3, P> h, c;
  double nats = 0;
  chunk ch;
  for (index_t k = 0; k < chunks; ++k) {
    make_chunk(text, eval_streams, len, k, ch);
    nats += double(ad::cross_entropy(run_chunk(m, ch, h, c, ctx), ch.y).value()());
  }
  return nats / double(chunks) / std::log(2.0);
}

/// Characters drawn one at a time from softmax(logits / temperature), starting after `prime`.
std::string sample(char_lm& m, const std::string& prime, int max_chars, float temperature, ts::Rng& rng) {
  ad::no_grad ng;
  nn::context ctx{false, nullptr};
  const auto& p = m.lstm.layers[0];
  ad::lstm_cell_state<float, P> s;
  ts::Tensor<float, ts::dyn_shape_t<2>, P> x(1, V);
  std::string out;
  int next = 0;
  auto feed = [&](int id) {
    x = 0.0f;
    x(0, id) = 1.0f;
    s = ad::lstm_cell(ad::Var<float, 2, P>(x, false), s.h, s.c, p.weight_ih, p.weight_hh, p.bias_ih, p.bias_hh);
    const auto logits = m.head.forward(s.h, ctx).value();
    float mx = -1e30f;
    for (int v = 0; v < V; ++v) mx = std::max(mx, logits(0, v));
    std::vector<double> w(V);
    double sum = 0;
    for (int v = 0; v < V; ++v) sum += w[std::size_t(v)] = std::exp(double(logits(0, v) - mx) / temperature);
    double u = rng.uniform_double() * sum;
    next = V - 1;
    for (int v = 0; v < V; ++v)
      if ((u -= w[std::size_t(v)]) < 0) {
        next = v;
        break;
      }
  };
  for (char ch : prime) feed(encode(static_cast<unsigned char>(ch)));
  for (int i = 0; i < max_chars; ++i) {
    const char ch = decode(next);
    out += ch;
    if (out == "%\n") out.clear();  // an empty fortune: go on to the next
    if (out.ends_with("\n%\n")) break;
    feed(next);
  }
  return out;
}
}  // namespace

int main(int argc, char** argv) {
  example::budget budget;
  const bool budget_ok = argc <= 1 || example::budget::parse(argv[1], budget);
  const int threads = argc > 2 ? std::atoi(argv[2]) : 2;
  B = argc > 3 ? std::atoi(argv[3]) : 32;
  T = argc > 4 ? std::atoi(argv[4]) : 64;
  const double lr0 = argc > 5 ? std::atof(argv[5]) : 1e-2;
  const unsigned seed = argc > 6 ? unsigned(std::atoi(argv[6])) : 0u;
  const std::filesystem::path dir = argc > 7 ? argv[7] : "/usr/share/games/fortunes";
  if (!budget_ok || threads < 1 || B < 1 || T < 2 || !(lr0 > 0)) {
    std::fprintf(stderr, "usage: char_lm [steps = 3000, or seconds of training: 300s] [threads = 2] [batch = 32] [chunk = 64] [lr = 0.01] [seed = 0] [fortune dir]\n");
    return 2;
  }
  P::set_num_threads(threads);
  if (!std::filesystem::is_directory(dir)) {
    std::fprintf(stderr, "char_lm: %s not found: install Debian's fortunes package (apt-get install fortunes)\n", dir.c_str());
    return 1;
  }
  const corpus text = example::load_fortunes(dir);
  const index_t len = index_t(text.train.size() - 1) / B;  // characters per training stream
  const index_t chunks = len / T;                          // chunks per pass over the training text
  std::printf("fortunes: %d files, %lld fortunes; %zu training characters, %zu held out (every 20th fortune)\n", text.files,
              (long long)text.fortunes, text.train.size(), text.valid.size());
  if (chunks < 1 || text.valid.size() < std::size_t(eval_streams * T + 1)) {
    std::fprintf(stderr, "char_lm: too little text in %s\n", dir.c_str());
    return 1;
  }

  ts::Rng rng(seed);
  char_lm model(rng);
  std::vector<nn::parameter_ref<float>> params;
  model.for_each_parameter([&](const std::string& n, auto& v) { params.push_back(nn::make_parameter_ref(n, v)); });
  index_t count = 0;
  for (const auto& p : params) count += p.size;
  ts::optim::Adam<float> opt(params, {.lr = lr0});
  std::printf("model: one-hot %d -> LSTM(%d) -> Linear(%d, %d), %lld parameters; Adam (lr %g, cosine to %g), batch %lld x "
              "%lld characters, %s, %d thread(s)\n",
              V, H, H, V, (long long)count, lr0, lr0 / 10, (long long)B, (long long)T,
              budget.seconds > 0 ? (std::to_string(std::lround(budget.seconds)) + " s of training").c_str()
                                 : (std::to_string(budget.steps) + " steps (" + std::to_string(double(budget.steps) / double(chunks)) + " passes over the text)").c_str(),
              threads);
  std::printf("held-out bits/char before training: %.3f (uniform: %.3f)\n", bits_per_char(model, text.valid), std::log2(double(V)));

  example::lm_progress progress{budget, double(B * T)};
  ad::Var<float, 3, P> h, c;
  nn::context ctx{true, &rng};
  chunk ch;
  int step = 0;
  for (; !progress.done(step); ++step) {
    const index_t k = step % chunks;
    if (k == 0) h = c = ad::Var<float, 3, P>();  // a new pass over the text: the streams start from zeros
    // cosine decay of the learning rate from lr0 to lr0 / 10
    opt.set_lr(lr0 * (0.1 + 0.9 * 0.5 * (1 + std::cos(std::numbers::pi * progress.fraction(step)))));
    make_chunk(text.train, B, len, k, ch);
    opt.zero_grad();
    auto loss = ad::cross_entropy(run_chunk(model, ch, h, c, ctx), ch.y);
    loss.backward();
    example::clip_grad_norm(params, 5.0);
    opt.step();
    progress.after_step(step, loss.value()(), [&] { return bits_per_char(model, text.valid); });
  }
  progress.summary(step);

  ts::Rng srng(seed + 1);
  P::set_num_threads(1);  // one character at a time: [1, 256] products, nothing for a second thread to do
  std::printf("\nsamples (temperature 0.7):\n");
  for (int i = 0; i < 4; ++i) std::printf("----\n%s", sample(model, "%\n", 320, 0.7f, srng).c_str());
  std::printf("----\ntotal %.1f s\n", seconds_since(progress.t0));
}
