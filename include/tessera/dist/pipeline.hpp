// Pipeline (model) parallelism: a Sequential model cut at compile time into consecutive stages, one stage per rank
// of a process group; each mini-batch is split into micro-batches that flow through the stages.
//
//   using Net = nn::Sequential<Shape<dyn, 1, 28, 28>, nn::Conv2d<1, 8, 3, {.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
//                              nn::Flatten, nn::Linear<8 * 14 * 14, 32>, nn::ReLU, nn::Linear<32, 10>>;
//   dist::pipeline<Net, dist::cuts<3>> pipe(ctx.group(), /*seed=*/0,            // stage 0: layers [0, 3), stage 1: [3, 8)
//                                           {.micro_batches = 4, .schedule = dist::schedule::one_f_one_b});
//   dist::pipeline<Net, dist::cuts<3>> pipe2(ctx.group(), full_net, opts);      // this stage's parameters copied from a model
//   optim::SGD<float> opt(pipe.parameters(), {.lr = 0.1, .momentum = 0.9});      // this stage's parameters only
//   pipe.zero_grad();
//   double loss = pipe.train_step(x, y, [](auto& out, auto& y) { return ad::cross_entropy(out, y); });
//   opt.step();
//
// Stages. cuts<C...> (increasing, each 0 < C < the number of layers; otherwise a static_assert in plain words whose
// instantiation names the cut) make sizeof...(C) + 1 stages; stage k is the type stage_type<k> =
// nn::basic_sequential<T, P, In_k, the layers [c_k, c_{k+1})>, where In_k is the shape the layers before the cut
// produce, so the compiler checks the shapes crossing each cut as it checks every layer. Rank k of the group holds
// stage k only; the group's size must equal the number of stages (else dist::error naming both numbers, on every
// rank). Parameters and buffers keep the whole model's names (stage 1's first layer is "3.weight" for cuts<3>), so
// they can be compared with, or loaded from, the model (pipeline(g, model, opts) copies this stage's by name;
// pipeline(g, seed, opts) builds the model from the seed first, so every stage starts as the unsplit model would).
//
// train_step(x, y, loss_fn). Every rank passes the whole mini-batch (x [B, ...], y [B, ...]); the first stage reads
// x, the last reads y, the others only B. The batch is split along dimension 0 into micro_batches parts of
// B / micro_batches rows (the first B % micro_batches parts one row more). Stage k > 0 receives each micro-batch's
// activation from stage k - 1 as a leaf ad::Var that requires its gradient (a header of its extents first, then the
// values), runs its layers and sends the result on; the last stage computes loss_fn(out, y_i), a scalar Var, and
// runs backward from it with seed n_i / B, so that the parameter gradients are those of the loss's mean over the
// whole batch (exact for a loss that is a mean over rows, as cross_entropy's default; equal parts make it the mean
// divided by micro_batches). Each stage's backward sends the gradient of its received activation back to the
// previous stage. Messages use send_async / recv_async with tag 3 i + 0 (header), 1 (activation), 2 (gradient) for
// micro-batch i; a receive is waited on before its buffer is read, and every send before its buffer is released
// (all of them before train_step returns, also when it throws). Parameter gradients are ADDED to what grad() holds,
// as backward() does: call zero_grad() (or the optimizer's) before each step. Returns the mean loss over the
// mini-batch on every rank (the last stage's sum of n_i / B * loss_i, summed over the group with zeros elsewhere).
//
// Schedules (S stages, M micro-batches; F = a forward of one micro-batch on one stage, B its backward):
//   schedule::gpipe         every F, then every B (micro-batch order). Each stage holds M activation graphs.
//   schedule::one_f_one_b   warm-up of min(S - 1 - k, M) F on stage k, then one F and one B alternately, then the
//                           remaining B (cool-down). At most S - k graphs are held on stage k: less memory.
// Both idle each stage for the same fraction of a step, the bubble (S - 1) / (M + S - 1) (F and B taking equal
// time on every stage): more micro-batches, a smaller bubble. Both compute the same gradients.
//
// Limits: layers that draw random numbers (Dropout) draw from the stage's own Rng, so a pipeline does not
// reproduce the unsplit model's draws; BatchNorm normalises each micro-batch on its own (as PyTorch's Pipe); a loss
// whose mean is not over rows (ignore_index, class weights) is weighted by rows, not by its own denominator. An
// exception on one rank (a bad label in loss_fn) leaves its peers waiting until the group's timeout.
#pragma once
#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "tessera/dist/process_group.hpp"
#include "tessera/nn/parameter.hpp"
#include "tessera/nn/sequential.hpp"

namespace tessera::dist {

/// The positions where a model is cut: cuts<3, 5> makes stages [0, 3), [3, 5), [5, end).
template <std::size_t... C>
struct cuts {};

enum class schedule { gpipe, one_f_one_b };

struct pipeline_options {
  int micro_batches = 1;  ///< parts each mini-batch is split into (at most the batch size)
  dist::schedule schedule = dist::schedule::one_f_one_b;
};

namespace pipeline_check {
/// Instantiated for every cut; fails when `Cut` is not strictly between 0 and the model's number of layers.
template <std::size_t Cut, std::size_t NumLayers>
struct cut_out_of_range {
  static constexpr bool ok = Cut > 0 && Cut < NumLayers;
  static_assert(ok, "tessera::dist::pipeline: a cut must lie between two layers, 0 < cut < the model's number of layers "
                    "(the instantiation above names the cut and the number of layers)");
};
/// Instantiated for every pair of neighbouring cuts; fails when they do not increase.
template <std::size_t Previous, std::size_t Cut>
struct cuts_not_increasing {
  static constexpr bool ok = Previous < Cut;
  static_assert(ok, "tessera::dist::pipeline: the cuts must be strictly increasing (the instantiation above names a cut "
                    "and the one before it)");
};
}  // namespace pipeline_check

namespace detail {
/// What a model type is made of, and the types of its parts.
template <class T, class P, class In, class... L>
struct model_parts {
  using value_type = T;
  using policy = P;
  using layers = std::tuple<L...>;
  static constexpr std::size_t num_layers = sizeof...(L);
  template <std::size_t... I>
  static auto shape_before(std::index_sequence<I...>) -> typename nn::detail::propagate<0, In, std::tuple_element_t<I, layers>...>::type;
  /// Layers [A, A + sizeof...(I)) as a model taking the shape the layers before A produce.
  template <std::size_t A, std::size_t... I>
  static auto part(std::index_sequence<I...>)
      -> nn::basic_sequential<T, P, decltype(shape_before(std::make_index_sequence<A>{})), std::tuple_element_t<A + I, layers>...>;
};
template <class T, class P, class In, class... L>
model_parts<T, P, In, L...> model_parts_of(const nn::basic_sequential<T, P, In, L...>*);  // also matches nn::Sequential

/// "0.weight" of a stage starting at layer `offset` -> the whole model's "<offset>.weight".
inline std::string shifted_name(const std::string& local, std::size_t offset) {
  std::size_t i = 0;
  while (i < local.size() && local[i] >= '0' && local[i] <= '9') ++i;
  if (i == 0) return local;
  return std::to_string(std::stoull(local.substr(0, i)) + offset) + local.substr(i);
}

/// Where each stage's layers start (first[stages] = N). With bad cuts every stage is the whole model, so that
/// only the cut's error is reported.
template <std::size_t N, std::size_t... C>
struct stage_bounds {
  static constexpr std::size_t stages = sizeof...(C) + 1;
  static constexpr std::array<std::size_t, sizeof...(C)> cut_list{C...};
  static constexpr bool ok = [] {
    for (std::size_t i = 0; i < cut_list.size(); ++i)
      if (cut_list[i] == 0 || cut_list[i] >= N || (i > 0 && cut_list[i - 1] >= cut_list[i])) return false;
    return true;
  }();
  static constexpr std::array<std::size_t, stages + 1> first = [] {
    std::array<std::size_t, stages + 1> f{};
    for (std::size_t k = 1; k < stages; ++k) f[k] = ok ? cut_list[k - 1] : 0;
    f[stages] = N;
    return f;
  }();
};

/// Rows [off, off + n) of a contiguous tensor, copied into a tensor of dynamic extents.
template <class E, class S, class P>
Tensor<E, dyn_shape_t<S::rank>, P> rows(const Tensor<E, S, P>& x, index_t off, index_t n) {
  static_assert(S::rank >= 1, "tessera::dist::pipeline: a mini-batch needs a batch dimension (rank >= 1)");
  dims_t<S::rank> d = x.dims();
  d[0] = n;
  index_t row = 1;
  for (int i = 1; i < S::rank; ++i) row *= d[i];
  return Tensor<E, dyn_shape_t<S::rank>, P>(View<const E, dyn_shape_t<S::rank>, P>(x.data() + off * row, d, contiguous_strides(d)));
}
}  // namespace detail

template <class Net, class Cuts>
class pipeline;

template <class Net, std::size_t... C>
class pipeline<Net, cuts<C...>> {
  using parts = decltype(detail::model_parts_of(static_cast<Net*>(nullptr)));
  using T = typename parts::value_type;
  using P = typename parts::policy;
  static constexpr std::size_t N = parts::num_layers;
  static_assert(Net::shapes_fit, "tessera::dist::pipeline: the model's layers do not fit each other (see the error above)");

  using bounds = detail::stage_bounds<N, C...>;
  static constexpr bool cuts_ok = (pipeline_check::cut_out_of_range<C, N>::ok && ...);
  template <std::size_t... I>
  static constexpr bool check_increasing(std::index_sequence<I...>) {
    return (pipeline_check::cuts_not_increasing<bounds::cut_list[I], bounds::cut_list[I + 1]>::ok && ...);
  }
  static_assert(cuts_ok && check_increasing(std::make_index_sequence<(sizeof...(C) < 2 ? 0 : sizeof...(C) - 1)>{}),
                "tessera::dist::pipeline: bad cuts (see the error above)");

 public:
  static constexpr std::size_t stages = sizeof...(C) + 1;
  /// The first layer of stage k (k = stages: the number of layers).
  static constexpr std::size_t first_layer(std::size_t k) { return bounds::first[k]; }
  template <std::size_t K>
  using stage_type = decltype(parts::template part<bounds::ok ? bounds::first[K] : 0>(
      std::make_index_sequence<bounds::ok ? bounds::first[K + 1] - bounds::first[K] : N>{}));

  /// This rank's stage with the parameters of Net(seed) (the model is built, its stage copied, the rest dropped).
  explicit pipeline(process_group& g, std::uint64_t seed = 0, pipeline_options o = {}) : pipeline(g, o, seed) {
    Net full(seed);
    load(full);
  }
  /// This rank's stage with the parameters and buffers of `full` (copied by name).
  pipeline(process_group& g, Net& full, pipeline_options o = {}) : pipeline(g, o, 0) { load(full); }

  int stage() const { return stage_; }
  const pipeline_options& options() const { return opt_; }
  process_group& group() { return g_; }

  /// f(stage model&) on this rank's stage (a stage_type<k>).
  template <class F>
  void visit(F&& f) {
    dispatch([&]<std::size_t K>(std::integral_constant<std::size_t, K>) { f(*std::get<K>(stages_)); });
  }
  /// f(name, Var&) for this stage's parameters, under the whole model's names.
  template <class F>
  void for_each_parameter(F&& f) {
    dispatch([&]<std::size_t K>(std::integral_constant<std::size_t, K>) {
      std::get<K>(stages_)->for_each_parameter([&](const std::string& n, auto& v) { f(detail::shifted_name(n, first_layer(K)), v); });
    });
  }
  /// f(name, Tensor&) for this stage's buffers (running statistics), under the whole model's names.
  template <class F>
  void for_each_buffer(F&& f) {
    dispatch([&]<std::size_t K>(std::integral_constant<std::size_t, K>) {
      std::get<K>(stages_)->for_each_buffer([&](const std::string& n, auto& t) { f(detail::shifted_name(n, first_layer(K)), t); });
    });
  }
  /// Handles on this stage's parameters (whole-model names), for an optimizer (empty for a stage of parameterless
  /// layers, which optimizers refuse: give such a stage none).
  std::vector<nn::parameter_ref<T>> parameters() {
    std::vector<nn::parameter_ref<T>> out;
    for_each_parameter([&](const std::string& name, auto& v) { out.push_back(nn::make_parameter_ref(name, v)); });
    return out;
  }
  void zero_grad() {
    for_each_parameter([](const std::string&, auto& v) { v.zero_grad(); });
  }
  void train(bool on = true) {
    visit([&](auto& s) { s.train(on); });
  }
  void eval() { train(false); }

  /// Copies this stage's parameters and buffers from the unsplit model, by name (each must exist there with the
  /// same extents, else dist::error).
  void load(Net& full) {
    for_each_parameter([&](const std::string& name, auto& dst) {
      copy_named(name, dst, [&](auto&& f) { full.for_each_parameter(f); }, [](auto& v) -> auto& { return v.mutable_value(); });
    });
    for_each_buffer([&](const std::string& name, auto& dst) {
      copy_named(name, dst, [&](auto&& f) { full.for_each_buffer(f); }, [](auto& t) -> auto& { return t; });
    });
  }

  /// One step over the mini-batch (x, y) as described above; returns the mean loss on every rank.
  template <class E, class SX, class PX, class L, class SY, class PY, class F>
  double train_step(const Tensor<E, SX, PX>& x, const Tensor<L, SY, PY>& y, F&& loss_fn) {
    (void)nn::error::model_input_does_not_fit<typename Net::input_shape, SX>::ok;
    static_assert(SY::rank >= 1, "tessera::dist::pipeline::train_step: the targets need a batch dimension (rank >= 1)");
    const index_t batch = x.dims()[0];
    if (y.dims()[0] != batch)
      throw shape_error("tessera::dist::pipeline::train_step: the inputs " + tessera::detail::format_dims(x.dims()) +
                        " and the targets " + tessera::detail::format_dims(y.dims()) + " hold different batch sizes");
    if (batch < opt_.micro_batches)
      throw error("tessera::dist::pipeline::train_step: a batch of " + std::to_string(batch) + " rows cannot be split into " +
                  std::to_string(opt_.micro_batches) + " micro-batches");
    const double local = dispatch([&]<std::size_t K>(std::integral_constant<std::size_t, K>) {
      return run<K>(*std::get<K>(stages_), x, y, loss_fn, batch);
    });
    return g_.all_reduce_value(stage_ + 1 == int(stages) ? local : 0.0);
  }

 private:
  /// Stage k's Rng (Dropout's draws) starts from rng_seed + k.
  pipeline(process_group& g, pipeline_options o, std::uint64_t rng_seed) : g_(g), opt_(o), stage_(g.rank()) {
    if (g.size() != int(stages))
      throw error("tessera::dist::pipeline: the model is cut into " + std::to_string(stages) + " stages, one per rank, but the group has " +
                  std::to_string(g.size()) + " ranks");
    if (o.micro_batches < 1)
      throw error("tessera::dist::pipeline: micro_batches must be >= 1, got " + std::to_string(o.micro_batches));
    dispatch([&]<std::size_t K>(std::integral_constant<std::size_t, K>) { std::get<K>(stages_) = std::make_unique<stage_type<K>>(rng_seed + K); });
  }

  /// f(integral_constant<K>) for this rank's stage K (f returns void or the same default-constructible type for
  /// every K).
  template <class F>
  auto dispatch(F&& f) {
    using R = decltype(f(std::integral_constant<std::size_t, 0>{}));
    return [&]<std::size_t... K>(std::index_sequence<K...>) {
      if constexpr (std::is_void_v<R>) {
        ((stage_ == int(K) ? f(std::integral_constant<std::size_t, K>{}) : void()), ...);
      } else {
        R r{};
        ((stage_ == int(K) ? (void)(r = f(std::integral_constant<std::size_t, K>{})) : void()), ...);
        return r;
      }
    }(std::make_index_sequence<stages>{});
  }

  template <class Dst, class ForEach, class Get>
  void copy_named(const std::string& name, Dst& dst, ForEach&& for_each, Get&& get) {
    bool found = false;
    for_each([&](const std::string& n, auto& src) {
      if (n != name) return;
      if constexpr (std::is_same_v<std::remove_cvref_t<decltype(src)>, Dst>) {
        if (get(src).dims() != get(dst).dims())
          throw error("tessera::dist::pipeline: " + name + " is " + tessera::detail::format_dims(get(src).dims()) +
                      " in the model and " + tessera::detail::format_dims(get(dst).dims()) + " in stage " + std::to_string(stage_));
        get(dst) = get(src).cview();
        found = true;
      }
    });
    if (!found) throw error("tessera::dist::pipeline: the model holds no " + name + " of stage " + std::to_string(stage_) + "'s type");
  }

  /// One micro-batch's state on stage K.
  template <std::size_t K>
  struct micro {
    index_t off = 0, n = 0;
    typename stage_type<K>::input_var in;    // stage K > 0: the received activation (a leaf requiring its gradient)
    typename stage_type<K>::output_var out;  // the stage's output (its graph, until the backward)
    ad::Var<T, 0, P> loss;                   // the last stage: loss_fn's value
    Tensor<std::int64_t, Shape<dyn>, P> header;
    work sent_header, sent_act, sent_grad;
  };
  /// Waits for every send of a step before its buffers go, also when the step throws.
  template <class M>
  struct send_guard {
    std::vector<M>& ms;
    ~send_guard() {
      for (auto& m : ms)
        for (work* w : {&m.sent_header, &m.sent_act, &m.sent_grad}) try {
            w->wait();
          } catch (...) {
          }
    }
  };

  static int tag(int i, int kind) { return 3 * i + kind; }

  template <std::size_t K, class X, class Y, class F>
  double run(stage_type<K>& s, const X& x, const Y& y, F& loss_fn, index_t batch) {
    constexpr bool first = K == 0, last = K + 1 == stages;
    constexpr int R_in = stage_type<K>::input_shape::rank;
    const int M = opt_.micro_batches;
    std::vector<micro<K>> ms(static_cast<std::size_t>(M));
    send_guard<micro<K>> guard{ms};
    for (int i = 0, off = 0; i < M; ++i) {
      ms[std::size_t(i)].off = off;
      ms[std::size_t(i)].n = batch / M + (i < batch % M ? 1 : 0);
      off += int(ms[std::size_t(i)].n);
    }
    double total = 0;
    auto forward = [&](int i) {
      auto& m = ms[std::size_t(i)];
      if constexpr (first) {
        m.out = s.forward(detail::rows(x, m.off, m.n));
      } else {
        Tensor<std::int64_t, Shape<dyn>, P> h(index_t{R_in});
        g_.recv_async(h, int(K) - 1, tag(i, 0)).wait();
        const auto hv = h.to_vector();
        dims_t<R_in> d{};
        for (int j = 0; j < R_in; ++j) d[j] = hv[std::size_t(j)];
        if (d[0] != m.n)
          throw error("tessera::dist::pipeline: stage " + std::to_string(K) + " received an activation " + tessera::detail::format_dims(d) +
                      " for micro-batch " + std::to_string(i) + " of " + std::to_string(m.n) + " rows");
        typename stage_type<K>::input_var::tensor buf(d);
        g_.recv_async(buf, int(K) - 1, tag(i, 1)).wait();
        m.in = typename stage_type<K>::input_var(std::move(buf), true);
        m.out = s.forward(m.in);
      }
      if constexpr (!last) {
        const auto& od = m.out.dims();
        m.header = Tensor<std::int64_t, Shape<dyn>, P>(std::vector<std::int64_t>(od.begin(), od.end()), dims_t<1>{index_t(od.size())});
        m.sent_header = g_.send_async(m.header, int(K) + 1, tag(i, 0));
        m.sent_act = g_.send_async(m.out.value(), int(K) + 1, tag(i, 1));
      } else {
        auto yi = detail::rows(y, m.off, m.n);
        static_assert(std::is_convertible_v<decltype(loss_fn(m.out, yi)), ad::Var<T, 0, P>>,
                      "tessera::dist::pipeline::train_step: loss_fn(output, targets) must return a scalar ad::Var (rank 0) "
                      "of the model's element type and policy");
        m.loss = loss_fn(m.out, yi);
        total += double(m.loss.value().to_vector()[0]) * double(m.n) / double(batch);
      }
    };
    auto backward = [&](int i) {
      auto& m = ms[std::size_t(i)];
      if constexpr (last) {
        typename ad::Var<T, 0, P>::tensor seed{};
        seed = T(double(m.n) / double(batch));
        if (m.loss.requires_grad()) m.loss.backward(seed);
      } else {
        typename stage_type<K>::output_var::tensor g(m.out.dims());
        g_.recv_async(g, int(K) + 1, tag(i, 2)).wait();
        m.sent_header.wait();
        m.sent_act.wait();
        if (m.out.requires_grad()) m.out.backward(g);
      }
      if constexpr (!first) m.sent_grad = g_.send_async(m.in.grad(), int(K) - 1, tag(i, 2));
      m.out = {};  // the graph is spent: free it now
      m.loss = {};
    };
    if (opt_.schedule == schedule::gpipe) {
      for (int i = 0; i < M; ++i) forward(i);
      for (int i = 0; i < M; ++i) backward(i);
    } else {
      const int warm = std::min(int(stages) - 1 - int(K), M);
      for (int i = 0; i < warm; ++i) forward(i);
      for (int i = 0; i + warm < M; ++i) {
        forward(i + warm);
        backward(i);
      }
      for (int i = M - warm; i < M; ++i) backward(i);
    }
    return total;  // ~send_guard waits for the last sends
  }

  template <std::size_t... K>
  static auto stage_tuple(std::index_sequence<K...>) -> std::tuple<std::unique_ptr<stage_type<K>>...>;

  process_group& g_;
  pipeline_options opt_;
  int stage_;
  decltype(stage_tuple(std::make_index_sequence<stages>{})) stages_;
};

}  // namespace tessera::dist
