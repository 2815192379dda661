// cuda_conv2d and its gradients on the device through cuDNN (the v7-style convolution API of cuDNN 9), at the
// level of raw pointers. Compiled only by nvcc (like every kernels/cuda header); link cuDNN (libcudnn).
//
//   x: N x C x H x W, w: K x (C / groups) x R x S, y: N x K x OH x OW, all NCHW and fully contiguous.
//   OH = (H + 2 pad - dilation (R - 1) - 1) / stride + 1 (conv2d_out_extent), likewise OW; cross-correlation
//   (PyTorch's and tessera's convolution, the kernel not flipped); stride, padding and dilation per axis (hw: one
//   int for both axes, or {h, w}; cuDNN takes them per axis).
//
// Forward: y = act(conv(x, w) + bias[k]), act = ReLU or identity, bias optional. bias + ReLU first tries the
// fused cudnnConvolutionBiasActivationForward with CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM (the algorithm
// cuDNN documents for the fused call; z = y with alpha2 = 0, so z is not blended in). If cuDNN reports the
// configuration unsupported (a NOT_SUPPORTED or BAD_PARAM status, e.g. for some double or grouped cases), the
// plan remembers it and that configuration runs cudnnConvolutionForward with the heuristic's algorithm followed
// by one elementwise kernel adding the bias and applying the ReLU (one pass, where cudnnAddTensor followed by
// cudnnActivationForward would take two). Bias alone or ReLU alone take the same kernel.
//
// Gradients (for autodiff): cuda_conv2d_backward_data (dx from dy and w), cuda_conv2d_backward_filter (dw from x
// and dy) and cuda_conv2d_backward_bias (db[k] = sum of dy over n, h, w). Each writes its output, or adds to it
// when `accumulate` is true (cuDNN's beta = 1).
//
// Precision: for float the convolution descriptors ask for CUDNN_FMA_MATH, so no algorithm rounds to TF32, and
// the heuristic's candidates are filtered to FMA ones; double uses CUDNN_DEFAULT_MATH (FP64 arithmetic throughout).
//
// Caching: per process, a cuDNN handle per device; per (device, type, operation, all extents and conv parameters)
// a plan with the tensor, filter, convolution, bias and activation descriptors, the algorithm chosen by
// cudnnGet*Algorithm_v7 (heuristics; no benchmarking runs) and its workspace size; per (device, stream) one
// workspace buffer grown to the largest size a plan needed (stream-ordered, so work already queued keeps its
// buffer). A mutex guards it all and is held while a call enqueues its work.
#pragma once
#if defined(__CUDACC__)
#include <cuda_runtime.h>
#include <cudnn.h>

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <type_traits>
#include <utility>

#include "tessera/kernels/backend.hpp"
#include "tessera/kernels/cuda/common.hpp"

namespace tessera {

/// Output extent of a convolution along one axis (PyTorch's formula); < 1 means the window does not fit.
constexpr index_t conv2d_out_extent(index_t in, index_t kernel, int stride, int pad, int dilation) {
  return (in + 2 * index_t(pad) - index_t(dilation) * (kernel - 1) - 1) / stride + 1;
}

namespace cuda_kernels {
namespace conv_detail {

inline void check_cudnn(cudnnStatus_t st, const char* what) {
  if (st != CUDNN_STATUS_SUCCESS)
    throw device_error(std::string("tessera: cudnn: ") + what + ": " + cudnnGetErrorString(st) + " (status " +
                       std::to_string(int(st)) + ")");
}
/// Statuses that mean "this combination is not available" rather than a failure of the device or the library.
inline bool is_unsupported(cudnnStatus_t st) {
  const int cat = CUDNN_STATUS_CATEGORY(int(st));
  return cat == CUDNN_STATUS_NOT_SUPPORTED || cat == CUDNN_STATUS_BAD_PARAM;
}

template <class T>
struct dnn_type;
template <>
struct dnn_type<float> {
  static constexpr cudnnDataType_t data = CUDNN_DATA_FLOAT;
  static constexpr cudnnMathType_t math = CUDNN_FMA_MATH;  // no TF32
};
template <>
struct dnn_type<double> {
  static constexpr cudnnDataType_t data = CUDNN_DATA_DOUBLE;
  static constexpr cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

enum class op_kind : int { forward = 0, forward_fused = 1, backward_data = 2, backward_filter = 3, backward_bias = 4 };
enum class fused_state : int { unknown, works, unsupported };

struct geometry {
  index_t N, C, H, W, K, R, S, OH, OW;
  hw stride, pad, dilation;
  int groups;
};

struct plan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr, bias = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnActivationDescriptor_t act = nullptr;
  int algo = 0;  // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t, by kind
  std::size_t workspace = 0;
  // forward_fused: the fused call's algorithm and workspace, and whether cuDNN accepted it
  std::size_t fused_workspace = 0;
  fused_state fused = fused_state::unknown;
};

using plan_key = std::array<std::int64_t, 19>;

struct state {
  std::mutex mutex;
  std::map<int, cudnnHandle_t> handles;
  std::map<std::pair<int, cudaStream_t>, std::pair<void*, std::size_t>> workspaces;
  std::map<plan_key, plan> plans;
};
/// Process-wide and deliberately never destroyed: CUDA may already be torn down when static destructors run.
inline state& global() {
  static state* s = new state;
  return *s;
}

inline cudnnHandle_t handle_for(state& st, int device) {
  auto it = st.handles.find(device);
  if (it != st.handles.end()) return it->second;
  cudnnHandle_t h = nullptr;
  check_cudnn(cudnnCreate(&h), "cudnnCreate");
  st.handles.emplace(device, h);
  return h;
}

/// The (device, stream) workspace, grown to at least `bytes`. The old buffer is freed in stream order: work
/// already queued on this stream still reads it before it goes.
inline void* workspace_for(state& st, int device, cudaStream_t s, std::size_t bytes) {
  if (bytes == 0) return nullptr;
  auto& ws = st.workspaces[std::make_pair(device, s)];
  if (ws.second >= bytes) return ws.first;
  if (ws.first) check_cuda(cudaFreeAsync(ws.first, s), "cudaFreeAsync (cuDNN workspace)");
  ws = {nullptr, 0};
  void* p = nullptr;
  check_cuda(cudaMallocAsync(&p, bytes, s), "cudaMallocAsync (cuDNN workspace)");
  ws = {p, bytes};
  return p;
}

inline cudnnTensorDescriptor_t make_tensor(cudnnDataType_t type, index_t n, index_t c, index_t h, index_t w) {
  cudnnTensorDescriptor_t d = nullptr;
  check_cudnn(cudnnCreateTensorDescriptor(&d), "cudnnCreateTensorDescriptor");
  check_cudnn(cudnnSetTensor4dDescriptor(d, CUDNN_TENSOR_NCHW, type, int(n), int(c), int(h), int(w)),
              "cudnnSetTensor4dDescriptor");
  return d;
}

inline void destroy(plan& p) {
  if (p.x) cudnnDestroyTensorDescriptor(p.x);
  if (p.y) cudnnDestroyTensorDescriptor(p.y);
  if (p.bias) cudnnDestroyTensorDescriptor(p.bias);
  if (p.w) cudnnDestroyFilterDescriptor(p.w);
  if (p.conv) cudnnDestroyConvolutionDescriptor(p.conv);
  if (p.act) cudnnDestroyActivationDescriptor(p.act);
  p = plan{};
}

/// The first heuristic candidate that ran (status SUCCESS), prefers FMA math for float (no TF32), and fits the
/// workspace limit; failing the limit, the first usable candidate. Returns false when none is usable.
template <class Perf>
bool pick(const Perf* perf, int count, bool need_fma, int& algo) {
  constexpr std::size_t limit = std::size_t(1) << 30;
  for (int pass = 0; pass < 2; ++pass)
    for (int i = 0; i < count; ++i) {
      if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
      if (need_fma && perf[i].mathType != CUDNN_FMA_MATH && perf[i].mathType != CUDNN_DEFAULT_MATH) continue;
      if (pass == 0 && (perf[i].memory > limit || (need_fma && perf[i].mathType != CUDNN_FMA_MATH))) continue;
      algo = int(perf[i].algo);
      return true;
    }
  return false;
}

template <class T>
plan make_plan(cudnnHandle_t h, const geometry& g, op_kind kind) {
  using D = dnn_type<T>;
  plan p;
  struct guard_t {
    plan* p;
    bool keep = false;
    ~guard_t() {
      if (!keep) destroy(*p);
    }
  } guard{&p};
  p.x = make_tensor(D::data, g.N, g.C, g.H, g.W);
  p.y = make_tensor(D::data, g.N, g.K, g.OH, g.OW);
  if (kind == op_kind::backward_bias || kind == op_kind::forward_fused) p.bias = make_tensor(D::data, 1, g.K, 1, 1);
  if (kind == op_kind::backward_bias) {
    guard.keep = true;
    return p;
  }
  check_cudnn(cudnnCreateFilterDescriptor(&p.w), "cudnnCreateFilterDescriptor");
  check_cudnn(cudnnSetFilter4dDescriptor(p.w, D::data, CUDNN_TENSOR_NCHW, int(g.K), int(g.C / g.groups), int(g.R),
                                         int(g.S)),
              "cudnnSetFilter4dDescriptor");
  check_cudnn(cudnnCreateConvolutionDescriptor(&p.conv), "cudnnCreateConvolutionDescriptor");
  check_cudnn(cudnnSetConvolution2dDescriptor(p.conv, g.pad.h, g.pad.w, g.stride.h, g.stride.w, g.dilation.h, g.dilation.w,
                                              CUDNN_CROSS_CORRELATION, D::data),
              "cudnnSetConvolution2dDescriptor");
  check_cudnn(cudnnSetConvolutionGroupCount(p.conv, g.groups), "cudnnSetConvolutionGroupCount");
  check_cudnn(cudnnSetConvolutionMathType(p.conv, D::math), "cudnnSetConvolutionMathType");
  int n = 0, c = 0, oh = 0, ow = 0;
  check_cudnn(cudnnGetConvolution2dForwardOutputDim(p.conv, p.x, p.w, &n, &c, &oh, &ow),
              "cudnnGetConvolution2dForwardOutputDim");
  if (n != g.N || c != g.K || oh != g.OH || ow != g.OW)
    throw device_error("tessera: cudnn: cudnnGetConvolution2dForwardOutputDim gives " + std::to_string(n) + "x" +
                       std::to_string(c) + "x" + std::to_string(oh) + "x" + std::to_string(ow) + ", expected " +
                       std::to_string(g.N) + "x" + std::to_string(g.K) + "x" + std::to_string(g.OH) + "x" +
                       std::to_string(g.OW));
  const bool need_fma = std::is_same_v<T, float>;
  int found = 0;
  if (kind == op_kind::forward || kind == op_kind::forward_fused) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    check_cudnn(cudnnGetConvolutionForwardAlgorithm_v7(h, p.x, p.w, p.conv, p.y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &found,
                                                       perf),
                "cudnnGetConvolutionForwardAlgorithm_v7");
    if (!pick(perf, found, need_fma, p.algo))
      throw device_error("tessera: cudnn: cudnnGetConvolutionForwardAlgorithm_v7 offers no usable algorithm");
    check_cudnn(cudnnGetConvolutionForwardWorkspaceSize(h, p.x, p.w, p.conv, p.y, cudnnConvolutionFwdAlgo_t(p.algo),
                                                        &p.workspace),
                "cudnnGetConvolutionForwardWorkspaceSize");
    if (kind == op_kind::forward_fused) {
      check_cudnn(cudnnCreateActivationDescriptor(&p.act), "cudnnCreateActivationDescriptor");
      check_cudnn(cudnnSetActivationDescriptor(p.act, CUDNN_ACTIVATION_RELU, CUDNN_PROPAGATE_NAN, 0.0),
                  "cudnnSetActivationDescriptor");
      const cudnnStatus_t st = cudnnGetConvolutionForwardWorkspaceSize(
          h, p.x, p.w, p.conv, p.y, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, &p.fused_workspace);
      if (is_unsupported(st)) p.fused = fused_state::unsupported;
      else check_cudnn(st, "cudnnGetConvolutionForwardWorkspaceSize(IMPLICIT_PRECOMP_GEMM)");
    }
  } else if (kind == op_kind::backward_data) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    check_cudnn(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, p.w, p.y, p.conv, p.x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT,
                                                            &found, perf),
                "cudnnGetConvolutionBackwardDataAlgorithm_v7");
    if (!pick(perf, found, need_fma, p.algo))
      throw device_error("tessera: cudnn: cudnnGetConvolutionBackwardDataAlgorithm_v7 offers no usable algorithm");
    check_cudnn(cudnnGetConvolutionBackwardDataWorkspaceSize(h, p.w, p.y, p.conv, p.x,
                                                             cudnnConvolutionBwdDataAlgo_t(p.algo), &p.workspace),
                "cudnnGetConvolutionBackwardDataWorkspaceSize");
  } else {
    cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
    check_cudnn(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, p.x, p.y, p.conv, p.w,
                                                              CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &found, perf),
                "cudnnGetConvolutionBackwardFilterAlgorithm_v7");
    if (!pick(perf, found, need_fma, p.algo))
      throw device_error("tessera: cudnn: cudnnGetConvolutionBackwardFilterAlgorithm_v7 offers no usable algorithm");
    check_cudnn(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, p.x, p.y, p.conv, p.w,
                                                               cudnnConvolutionBwdFilterAlgo_t(p.algo), &p.workspace),
                "cudnnGetConvolutionBackwardFilterWorkspaceSize");
  }
  guard.keep = true;
  return p;
}

template <class T>
plan& plan_for(state& st, cudnnHandle_t h, int device, const geometry& g, op_kind kind) {
  const plan_key key = {device, std::int64_t(sizeof(T)), int(kind), g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.OH, g.OW,
                        g.stride.h, g.stride.w, g.pad.h, g.pad.w, g.dilation.h, g.dilation.w, g.groups};
  auto it = st.plans.find(key);
  if (it != st.plans.end()) return it->second;
  return st.plans.emplace(key, make_plan<T>(h, g, kind)).first->second;
}

/// y[n][k][i] = act((zero ? 0 : y[n][k][i]) + (bias ? bias[k] : 0)) over planes of `plane` elements; act 1 = ReLU.
template <class T>
__global__ void bias_act_kernel(T* y, index_t N, index_t K, index_t plane, const T* bias, bool relu, bool zero) {
  const index_t total = N * K * plane, step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    T v = zero ? T(0) : y[i];
    if (bias) v += bias[(i / plane) % K];
    if (relu) v = v <= T(0) ? T(0) : v;  // NaN stays NaN, as PyTorch's relu
    y[i] = v;
  }
}

/// Validates the arguments shared by the convolution entry points and computes OH, OW.
inline geometry make_geometry(const char* fn, index_t N, index_t C, index_t H, index_t W, index_t K, index_t R, index_t S,
                              hw stride, hw pad, hw dilation, int groups) {
  auto fail = [fn](const std::string& why) { throw shape_error(std::string("tessera: ") + fn + ": " + why); };
  if (N < 0 || C < 0 || H < 0 || W < 0 || K < 0 || R < 1 || S < 1) fail("negative extent or an empty kernel");
  if (stride.h < 1 || stride.w < 1 || dilation.h < 1 || dilation.w < 1 || pad.h < 0 || pad.w < 0 || groups < 1)
    fail("needs stride >= 1, dilation >= 1, pad >= 0 (on both axes), groups >= 1");
  if (C % groups != 0 || K % groups != 0)
    fail("channels in (" + std::to_string(C) + ") and out (" + std::to_string(K) + ") must be multiples of groups (" +
         std::to_string(groups) + ")");
  geometry g{N, C, H, W, K, R, S, conv2d_out_extent(H, R, stride.h, pad.h, dilation.h),
             conv2d_out_extent(W, S, stride.w, pad.w, dilation.w), stride, pad, dilation, groups};
  if (H + 2 * index_t(pad.h) < index_t(dilation.h) * (R - 1) + 1 || W + 2 * index_t(pad.w) < index_t(dilation.w) * (S - 1) + 1)
    fail("the (dilated) " + std::to_string(R) + "x" + std::to_string(S) + " kernel does not fit the padded " +
         std::to_string(H) + "x" + std::to_string(W) + " input");
  for (index_t v : {N, C, H, W, K, R, S, g.OH, g.OW, N * C * H * W, N * K * g.OH * g.OW})
    if (!fits_int(v)) fail("extents beyond 2^31 - 1 elements are not supported by cuDNN's 4-D descriptors");
  return g;
}

}  // namespace conv_detail
}  // namespace cuda_kernels

/// y = act(conv2d(x, w) + bias), act = ReLU when `relu`, on stream s (asynchronous). Shapes: see the top of the
/// file. bias may be null. Throws shape_error for inconsistent arguments, device_error when CUDA or cuDNN fails.
template <class T>
void cuda_conv2d(cudaStream_t s, const T* x, index_t N, index_t C, index_t H, index_t W, const T* w, index_t K, index_t R,
                 index_t S, hw stride, hw pad, hw dilation, int groups, const T* bias, bool relu, T* y) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "tessera: cuda_conv2d supports float and double");
  namespace cd = cuda_kernels::conv_detail;
  using cuda_kernels::check_launch;
  using cuda_kernels::grid_for;
  const cd::geometry g = cd::make_geometry("cuda_conv2d", N, C, H, W, K, R, S, stride, pad, dilation, groups);
  const index_t out = N * K * g.OH * g.OW;
  if (out == 0) return;
  if (C == 0) {  // an empty sum
    cd::bias_act_kernel<T><<<grid_for(out), 256, 0, s>>>(y, N, K, g.OH * g.OW, bias, relu, true);
    check_launch("cuda_conv2d: bias/activation kernel launch");
    return;
  }
  auto& st = cd::global();
  std::lock_guard<std::mutex> lock(st.mutex);
  const int device = cuda_kernels::current_device();
  cudnnHandle_t h = cd::handle_for(st, device);
  cd::check_cudnn(cudnnSetStream(h, s), "cudnnSetStream");
  const T one = T(1), zero = T(0);
  const bool fuse = bias && relu;
  cd::plan& p = cd::plan_for<T>(st, h, device, g, fuse ? cd::op_kind::forward_fused : cd::op_kind::forward);
  if (fuse && p.fused != cd::fused_state::unsupported) {
    void* ws = cd::workspace_for(st, device, s, p.fused_workspace);
    // y = ReLU(1 * conv(x) + 0 * z + bias) with z = y: alpha2 = 0 leaves z out (y's old contents are not used).
    const cudnnStatus_t r = cudnnConvolutionBiasActivationForward(
        h, &one, p.x, x, p.w, w, p.conv, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM, ws, p.fused_workspace, &zero,
        p.y, y, p.bias, bias, p.act, p.y, y);
    if (r == CUDNN_STATUS_SUCCESS) {
      p.fused = cd::fused_state::works;
      return;
    }
    if (p.fused == cd::fused_state::unknown && cd::is_unsupported(r)) p.fused = cd::fused_state::unsupported;
    else cd::check_cudnn(r, "cudnnConvolutionBiasActivationForward");
  }
  void* ws = cd::workspace_for(st, device, s, p.workspace);
  cd::check_cudnn(cudnnConvolutionForward(h, &one, p.x, x, p.w, w, p.conv, cudnnConvolutionFwdAlgo_t(p.algo), ws,
                                          p.workspace, &zero, p.y, y),
                  "cudnnConvolutionForward");
  if (bias || relu) {
    cd::bias_act_kernel<T><<<grid_for(out), 256, 0, s>>>(y, N, K, g.OH * g.OW, bias, relu, false);
    check_launch("cuda_conv2d: bias/activation kernel launch");
  }
}

/// dx (N x C x H x W) = the gradient of conv2d with respect to its input, from dy (N x K x OH x OW) and w;
/// added to dx when `accumulate`. H and W are given since several inputs map to one output size when stride > 1.
template <class T>
void cuda_conv2d_backward_data(cudaStream_t s, const T* dy, index_t N, index_t C, index_t H, index_t W, const T* w,
                               index_t K, index_t R, index_t S, hw stride, hw pad, hw dilation, int groups, T* dx,
                               bool accumulate = false) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "tessera: cuda_conv2d supports float and double");
  namespace cd = cuda_kernels::conv_detail;
  const cd::geometry g = cd::make_geometry("cuda_conv2d_backward_data", N, C, H, W, K, R, S, stride, pad, dilation, groups);
  if (N * C * H * W == 0) return;
  if (K == 0) {  // no outputs: the gradient is zero
    if (!accumulate)
      cuda_kernels::check_cuda(cudaMemsetAsync(dx, 0, std::size_t(N * C * H * W) * sizeof(T), s), "cudaMemsetAsync");
    return;
  }
  auto& st = cd::global();
  std::lock_guard<std::mutex> lock(st.mutex);
  const int device = cuda_kernels::current_device();
  cudnnHandle_t h = cd::handle_for(st, device);
  cd::check_cudnn(cudnnSetStream(h, s), "cudnnSetStream");
  cd::plan& p = cd::plan_for<T>(st, h, device, g, cd::op_kind::backward_data);
  void* ws = cd::workspace_for(st, device, s, p.workspace);
  const T one = T(1), beta = accumulate ? T(1) : T(0);
  cd::check_cudnn(cudnnConvolutionBackwardData(h, &one, p.w, w, p.y, dy, p.conv, cudnnConvolutionBwdDataAlgo_t(p.algo), ws,
                                               p.workspace, &beta, p.x, dx),
                  "cudnnConvolutionBackwardData");
}

/// dw (K x C/groups x R x S) = the gradient of conv2d with respect to its weights, from x and dy; added to dw when
/// `accumulate`.
template <class T>
void cuda_conv2d_backward_filter(cudaStream_t s, const T* x, index_t N, index_t C, index_t H, index_t W, const T* dy,
                                 index_t K, index_t R, index_t S, hw stride, hw pad, hw dilation, int groups, T* dw,
                                 bool accumulate = false) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "tessera: cuda_conv2d supports float and double");
  namespace cd = cuda_kernels::conv_detail;
  const cd::geometry g =
      cd::make_geometry("cuda_conv2d_backward_filter", N, C, H, W, K, R, S, stride, pad, dilation, groups);
  const index_t wn = K * (groups ? C / groups : 0) * R * S;
  if (wn == 0) return;
  if (N * g.OH * g.OW == 0) {  // nothing to sum: the gradient is zero
    if (!accumulate) cuda_kernels::check_cuda(cudaMemsetAsync(dw, 0, std::size_t(wn) * sizeof(T), s), "cudaMemsetAsync");
    return;
  }
  auto& st = cd::global();
  std::lock_guard<std::mutex> lock(st.mutex);
  const int device = cuda_kernels::current_device();
  cudnnHandle_t h = cd::handle_for(st, device);
  cd::check_cudnn(cudnnSetStream(h, s), "cudnnSetStream");
  cd::plan& p = cd::plan_for<T>(st, h, device, g, cd::op_kind::backward_filter);
  void* ws = cd::workspace_for(st, device, s, p.workspace);
  const T one = T(1), beta = accumulate ? T(1) : T(0);
  cd::check_cudnn(cudnnConvolutionBackwardFilter(h, &one, p.x, x, p.y, dy, p.conv,
                                                 cudnnConvolutionBwdFilterAlgo_t(p.algo), ws, p.workspace, &beta, p.w, dw),
                  "cudnnConvolutionBackwardFilter");
}

/// db[k] = sum over n, oh, ow of dy[n][k][oh][ow] (dy: N x K x OH x OW); added to db when `accumulate`.
template <class T>
void cuda_conv2d_backward_bias(cudaStream_t s, const T* dy, index_t N, index_t K, index_t OH, index_t OW, T* db,
                               bool accumulate = false) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "tessera: cuda_conv2d supports float and double");
  namespace cd = cuda_kernels::conv_detail;
  if (N < 0 || K < 0 || OH < 0 || OW < 0) throw shape_error("tessera: cuda_conv2d_backward_bias: negative extent");
  if (!cuda_kernels::fits_int(N * K * OH * OW))
    throw shape_error("tessera: cuda_conv2d_backward_bias: more than 2^31 - 1 elements");
  if (K == 0) return;
  if (N * OH * OW == 0) {
    if (!accumulate) cuda_kernels::check_cuda(cudaMemsetAsync(db, 0, std::size_t(K) * sizeof(T), s), "cudaMemsetAsync");
    return;
  }
  const cd::geometry g{N, 1, 1, 1, K, 1, 1, OH, OW, 1, 0, 1, 1};  // only N, K, OH, OW matter
  auto& st = cd::global();
  std::lock_guard<std::mutex> lock(st.mutex);
  const int device = cuda_kernels::current_device();
  cudnnHandle_t h = cd::handle_for(st, device);
  cd::check_cudnn(cudnnSetStream(h, s), "cudnnSetStream");
  cd::plan& p = cd::plan_for<T>(st, h, device, g, cd::op_kind::backward_bias);
  const T one = T(1), beta = accumulate ? T(1) : T(0);
  cd::check_cudnn(cudnnConvolutionBackwardBias(h, &one, p.y, dy, &beta, p.bias, db), "cudnnConvolutionBackwardBias");
}

}  // namespace tessera
#endif  // __CUDACC__
