// One-line saving and loading of a model, and of its optimizer: everything training needs to go on where it stopped.
//
//   tessera::save("net.ckpt", net);                 // parameters and buffers (BatchNorm's running statistics...)
//   tessera::save("run.ckpt", net, opt);            // and the optimizer: learning rate, step counts, moments
//   tessera::load("net.ckpt", net);                 // the same model type (or one with the same names and shapes)
//   tessera::load("run.ckpt", net, opt);            // an optimizer over the same parameters
//
// `net` is anything with for_each_parameter(f) (every nn model; f(name, ad::Var&) or f(name, Tensor&)) and, when
// it has buffers, for_each_buffer(f); `opt` anything with for_each_state(f), lr() and set_lr() (optim::SGD, Adam,
// AdamW). Element types and policies are free: a cuda model's tensors are copied through the host.
//
// What the file holds (a checkpoint, io/checkpoint.hpp: written atomically, CRC-checked, every entry named):
//   "format"              the string "tessera.save 1"
//   "model.<name>"        every parameter, then every buffer, under the model's names ("0.weight", "1.running_mean",
//                         "1.num_batches_tracked"): PyTorch's state_dict names
//   "rng"                 the model's random number generator (dropout's masks: net.rng().state(), 4 x uint64
//                         stored as int64), so that training resumed from the file draws the same masks
//   "optim.lr"            the learning rate (double), when an optimizer was saved
//   "optim.state.<name>"  every state tensor of for_each_state ("step", "<param>.step", "<param>.exp_avg", ...)
// so checkpoint_reader reads such a file as any other (r.get<float, Shape<dyn, 10>>("model.3.weight")).
//
// Guarantees of load: the file must come from save (else io_error saying so); every parameter and buffer of the
// model (and every optimizer state tensor) must have an entry of its element type and shape, and no "model." (or
// "optim.state.") entry may be left over; all of it is checked before anything is read, and one io_error lists
// every difference with its name and both shapes (at most 8, then a count): a model of another shape is refused
// and left exactly as it was. load(path, net) of a file that also holds an optimizer reads the model only;
// load(path, net, opt) of a file without one is an io_error. Values come back bit for bit.
#pragma once

#include <array>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <string>

#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/io/checkpoint.hpp"
#include "tessera/io/error.hpp"

namespace tessera {

namespace detail {
inline constexpr const char* saved_model_format = "tessera.save 1";

template <class Optimizer>
concept saveable_optimizer = requires(Optimizer& o, double lr) {
  o.lr();
  o.set_lr(lr);
};

template <class Model>
concept has_model_rng = requires(Model& m) { m.rng().state(); };

template <class Model>
void add_model_rng(checkpoint_writer& w, Model& net) {
  if constexpr (has_model_rng<Model>) {
    const auto st = net.rng().state();
    Tensor<std::int64_t, Shape<4>, cpu> t;
    for (int i = 0; i < 4; ++i) t.data()[i] = std::int64_t(st[std::size_t(i)]);  // two's complement: bits kept
    w.add("rng", t);
  }
}
/// The generator's state, when the file has one and the model a generator (checked by check_model_rng first).
template <class Model>
void read_model_rng(const checkpoint_reader& r, Model& net) {
  if constexpr (has_model_rng<Model>) {
    if (!r.contains("rng")) return;
    const auto t = r.get<std::int64_t, Shape<4>>("rng");
    std::array<std::uint64_t, 4> st{};
    for (int i = 0; i < 4; ++i) st[std::size_t(i)] = std::uint64_t(t.data()[i]);
    if (st == std::array<std::uint64_t, 4>{})
      throw io_error("tessera: load " + r.path().string() + ": the entry rng holds the all-zero state");
    net.rng().set_state(st);
  }
}
template <class Model>
void check_model_rng(const checkpoint_reader& r, Model&) {
  if constexpr (has_model_rng<Model>)
    if (r.contains("rng")) (void)r.get<std::int64_t, Shape<4>>("rng");  // throws on another type or shape
}

inline void check_saved_format(const checkpoint_reader& r) {
  if (!r.contains("format") || r.dtype("format") != checkpoint_dtype::string || r.string("format") != saved_model_format)
    throw io_error("tessera: load " + r.path().string() + ": not a file written by tessera::save (no \"format\" entry \"" +
                   saved_model_format + "\"); read other checkpoints with checkpoint_reader");
}
}  // namespace detail

/// Writes the model's parameters and buffers to `path` (atomically: io/checkpoint.hpp).
template <class Model>
void save(const std::filesystem::path& path, Model& net) {
  checkpoint_writer w;
  w.add_string("format", detail::saved_model_format);
  w.add_model(net, "model.");
  detail::add_model_rng(w, net);
  w.write(path);
}

/// Writes the model and the optimizer (learning rate and every state tensor) to `path`.
template <class Model, detail::saveable_optimizer Optimizer>
void save(const std::filesystem::path& path, Model& net, Optimizer& opt) {
  checkpoint_writer w;
  w.add_string("format", detail::saved_model_format);
  w.add_model(net, "model.");
  detail::add_model_rng(w, net);
  w.add_scalar("optim.lr", opt.lr());
  w.add_all([&](auto&& f) { opt.for_each_state(f); }, "optim.state.");
  w.write(path);
}

/// Reads what save wrote into `net`; every name and shape is checked first (see the top of this file).
template <class Model>
void load(const std::filesystem::path& path, Model& net) {
  checkpoint_reader r(path);
  detail::check_saved_format(r);
  detail::check_model_rng(r, net);
  r.read_model(net, "model.", unmatched_entries::error);
  detail::read_model_rng(r, net);
}

/// Reads the model and the optimizer; both are checked before either is changed.
template <class Model, detail::saveable_optimizer Optimizer>
void load(const std::filesystem::path& path, Model& net, Optimizer& opt) {
  checkpoint_reader r(path);
  detail::check_saved_format(r);
  if (!r.contains("optim.lr"))
    throw io_error("tessera: load " + path.string() + ": the file holds no optimizer (it was saved by save(path, net)); "
                   "load it with load(path, net)");
  auto opt_visit = [&](auto&& f) { opt.for_each_state(f); };
  r.check_all([&](auto&& f) { detail::visit_model(net, f); }, "model.", unmatched_entries::error);
  r.check_all(opt_visit, "optim.state.", unmatched_entries::error);
  const double lr = r.scalar<double>("optim.lr");
  if (!std::isfinite(lr) || lr < 0)
    throw io_error("tessera: load " + path.string() + ": optim.lr is " + std::to_string(lr) + ", not a learning rate");
  detail::check_model_rng(r, net);
  r.read_model(net, "model.", unmatched_entries::error);
  detail::read_model_rng(r, net);
  r.read_all(opt_visit, "optim.state.", unmatched_entries::error);
  opt.set_lr(lr);
}

}  // namespace tessera
