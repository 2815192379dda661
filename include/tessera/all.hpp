// Everything a training or inference program commonly needs, in one include (compile time grows with what is
// included: a program that wants less includes the headers it uses; docs/api.md names the header of each feature):
// tensors and fused expressions (tessera.hpp), printing and factories, autodiff with every operation and loss, every
// layer and nn::Sequential, metrics and model summaries, optimizers, schedulers and gradient clipping, IDX data
// sets and the DataLoader, checkpoints and tessera::save / load, TensorBoard / CSV monitoring and progress bars,
// and int8 models. Not included (opt-in, they bring a dependency of their own): tessera/dist/ (MPI; target
// tessera::dist) and tessera/interop/ (Eigen, DLPack, safetensors, .npy).
#pragma once
#include "tessera/tessera.hpp"

#include "tessera/core/factory.hpp"
#include "tessera/core/print.hpp"
#include "tessera/core/random.hpp"

#include "tessera/autodiff/anomaly.hpp"
#include "tessera/autodiff/loss_ops.hpp"
#include "tessera/autodiff/ops.hpp"
#include "tessera/autodiff/print.hpp"
#include "tessera/autodiff/soft_cross_entropy_ops.hpp"

#include "tessera/nn/adaptive_pool.hpp"
#include "tessera/nn/attention.hpp"
#include "tessera/nn/batchnorm1d.hpp"
#include "tessera/nn/composition.hpp"
#include "tessera/nn/conv1d.hpp"
#include "tessera/nn/embedding.hpp"
#include "tessera/nn/init.hpp"
#include "tessera/nn/layer_norm.hpp"
#include "tessera/nn/metrics.hpp"
#include "tessera/nn/recurrent.hpp"
#include "tessera/nn/sequential.hpp"
#include "tessera/nn/summary.hpp"
#include "tessera/nn/transformer.hpp"

#include "tessera/optim/clip.hpp"
#include "tessera/optim/optim.hpp"
#include "tessera/optim/scheduler.hpp"

#include "tessera/data/idx.hpp"
#include "tessera/data/loader.hpp"

#include "tessera/io/checkpoint.hpp"
#include "tessera/io/save.hpp"

#include "tessera/monitor/csv_writer.hpp"
#include "tessera/monitor/progress.hpp"
#include "tessera/monitor/summary_writer.hpp"

#include "tessera/quant/model.hpp"
