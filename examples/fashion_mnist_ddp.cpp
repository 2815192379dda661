// Data-parallel training of the SimpleCNN on Fashion-MNIST over MPI: every rank trains a copy of the model on its
// share of the training set (DataLoader's shard), and dist::data_parallel averages the gradients over the ranks
// during backward. SGD with momentum 0.9 and lr 0.05 (halved after each epoch), as examples/fashion_mnist.cpp, on
// standardised pixels. Rank 0 prints the progress, the mean training loss and the test accuracy (both reduced over
// the ranks: each rank scores its share of the test set) and writes the checkpoint after every epoch; --resume
// starts from such a checkpoint on any number of ranks.
//   mpirun -np 2 build/examples/fashion_mnist_ddp [epochs = 3] [batch per rank = 32] [threads per rank = 1]
//                                                 [checkpoint = simplecnn_ddp.ckpt] [--resume]
//                                                 [--no-overlap] [--bucket-mb MB]   (data_parallel's options)
//   (scripts/demo_dist.sh does it from a fresh machine.)
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include <tessera/data/idx.hpp>
#include <tessera/data/loader.hpp>
#include <tessera/dist/data_parallel.hpp>
#include <tessera/dist/mpi.hpp>
#include <tessera/io/checkpoint.hpp>
#include <tessera/nn/sequential.hpp>
#include <tessera/optim/optim.hpp>
#include <tessera/tessera.hpp>

#include "example_support.hpp"

namespace ts = tessera;
namespace nn = tessera::nn;
namespace ad = tessera::ad;
namespace dist = tessera::dist;
using ts::dyn;

using SimpleCNN = nn::Sequential<ts::Shape<dyn, 1, 28, 28>,
    nn::Conv2d<1, 32, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Conv2d<32, 64, 3, ts::conv2d_options{.padding = 1}>, nn::ReLU, nn::MaxPool2d<2>,
    nn::Flatten, nn::Linear<64 * 7 * 7, 128>, nn::ReLU, nn::Linear<128, 10>>;

int main(int argc, char** argv) {
  dist::context ctx(argc, argv);
  std::vector<std::string> args;
  bool resume = false;
  dist::data_parallel_options ddp_opt;
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--resume") == 0) resume = true;
    else if (std::strcmp(argv[i], "--no-overlap") == 0) ddp_opt.overlap = false;
    else if (std::strcmp(argv[i], "--bucket-mb") == 0 && i + 1 < argc) ddp_opt.bucket_cap_mb = ddp_opt.first_bucket_cap_mb = std::atof(argv[++i]);
    else args.emplace_back(argv[i]);
  }
  const int epochs = args.size() > 0 ? std::atoi(args[0].c_str()) : 3;
  const int per_rank = args.size() > 1 ? std::atoi(args[1].c_str()) : 32;
  const int threads = args.size() > 2 ? std::atoi(args[2].c_str()) : 1;
  const std::string ckpt = args.size() > 3 ? args[3] : "simplecnn_ddp.ckpt";
  ts::cpu_threads::set_num_threads(threads);
  auto& g = ctx.group();
  const bool root = ctx.is_root();

  auto train = ts::load_fashion_mnist(ts::fashion_mnist_split::train, ts::fashion_mnist_normalization);
  auto test = ts::load_fashion_mnist(ts::fashion_mnist_split::test, ts::fashion_mnist_normalization);

  SimpleCNN net(/*seed=*/0);
  ts::optim::SGD<float> opt(net.parameters(), {.lr = 0.05, .momentum = 0.9});
  int first_epoch = 0;
  if (resume) {  // every rank reads the checkpoint rank 0 wrote (the file system is shared; on one machine it is)
    ts::checkpoint_reader r(ckpt);
    r.read_parameters(net, "model.");
    r.read_all([&](auto&& f) { opt.for_each_state(f); }, "optim.");
    first_epoch = int(r.scalar<std::int64_t>("epoch"));
  }
  dist::data_parallel ddp(net, ctx, ddp_opt);  // checks that every rank holds the same model, broadcasts rank 0's
  ts::DataLoader loader(std::move(train.images), std::move(train.labels),
                        {.batch_size = per_rank, .shuffle = true, .seed = 0, .shard = ctx.shard()});
  if (root)
    std::printf("Fashion-MNIST on %d ranks x %d thread(s), batch %d per rank (%d in all), %lld batches per epoch per rank%s\n",
                ctx.world_size(), threads, per_rank, per_rank * ctx.world_size(), (long long)loader.size(),
                resume ? (", resumed after epoch " + std::to_string(first_epoch)).c_str() : "");

  for (int e = first_epoch; e < epochs; ++e) {
    opt.set_lr(0.05 / double(1 << e));
    net.train();
    g.barrier();
    const auto t0 = std::chrono::steady_clock::now();
    double loss_sum = 0;
    ts::index_t b = 0;
    for (auto& [x, y] : loader.epoch(std::uint64_t(e))) {
      opt.zero_grad();
      auto loss = ad::cross_entropy(net.forward(x), y);
      loss.backward();  // the gradients are averaged over the ranks here
      opt.step();
      loss_sum += double(loss.value()());
      if (root && (++b % 100 == 0 || b == loader.size())) {
        const double t = example::seconds_since(t0);
        std::printf("\repoch %d  %4lld/%lld batches  %6.0f images/s (all ranks)  ETA %5.1f s   ", e + 1, (long long)b,
                    (long long)loader.size(), double(b) * per_rank * ctx.world_size() / t, t / double(b) * double(loader.size() - b));
        std::fflush(stdout);
      }
    }
    g.barrier();
    const double train_s = example::seconds_since(t0);
    const double mean_loss = g.all_reduce_value(loss_sum) / double(loader.size() * ctx.world_size());
    // test accuracy: each rank scores its share of the test set; the counts are summed
    net.eval();
    const ts::index_t n = test.size(), share = (n + ctx.world_size() - 1) / ctx.world_size();
    const ts::index_t a = std::min(n, share * ctx.rank()), z = std::min(n, a + share);
    std::int64_t correct = 0;
    for (ts::index_t i = a; i < z; i += 500) {
      const ts::index_t m = std::min<ts::index_t>(500, z - i);
      const ts::Tensor<float, ts::Shape<dyn, 1, 28, 28>> xs(ts::slice<0>(test.images, i, i + m));
      auto pred = ts::eval(ts::argmax<1>(net.predict(xs)));
      for (ts::index_t j = 0; j < m; ++j) correct += pred(j) == test.labels(i + j);
    }
    correct = g.all_reduce_value(correct);
    if (root) {
      std::printf("\nepoch %d: train %.1f s  ranks %d x %d threads, batch %d per rank  loss %.4f  test accuracy %.2f%%\n", e + 1,
                  train_s, ctx.world_size(), threads, per_rank, mean_loss, 100.0 * double(correct) / double(n));
      // the last step's buckets (docs/distributed.md's model reads these lines): size, when its all-reduce started
      // and finished against the first gradient, and when backward's walk ended
      const auto& st = ddp.last_step();
      for (std::size_t k = 0; k < ddp.buckets().size(); ++k)
        std::printf("bucket %zu: %zu bytes, %zu parameters, started %.3f ms (%d parameters still to come), finished %.3f ms\n", k,
                    ddp.buckets()[k].bytes, ddp.buckets()[k].names.size(), 1e3 * st.started[k], st.leaves_left[k], 1e3 * st.finished[k]);
      std::printf("backward walk ended %.3f ms after the first gradient\n", 1e3 * st.walk_ended);
      ts::checkpoint_writer w;  // rank 0 only: every rank holds the same parameters and optimizer state
      w.add_parameters(net, "model.");
      w.add_all([&](auto&& f) { opt.for_each_state(f); }, "optim.");
      w.add_scalar("epoch", e + 1);
      w.write(ckpt);
      std::printf("checkpoint %s written (epoch %d)\n", ckpt.c_str(), e + 1);
      std::fflush(stdout);
    }
  }
}
