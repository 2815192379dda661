// cuda_gemm: C = epilogue(A B [+ bias]) on the device through cuBLASLt, at the level of raw pointers and strides.
// Compiled only by nvcc (like every kernels/cuda header); link CUDA::cublasLt.
//
//   C is row-major: element (i, j) at C[i * ldc + j] (M x N). A (M x K) and B (K x N) are given by row and column
//   strides in elements; one of each pair should be 1 (a transposed view has rs = 1). An operand whose strides
//   fit neither (a strided slice, a broadcast, a negative stride) is first copied into a contiguous temporary.
//   Batches: `batch` products, the i-th reading A + i * a_bs, B + i * b_bs and writing C + i * c_bs (a_bs or
//   b_bs may be 0 to share one operand across the batch); the bias is shared by all of them.
//
// cuBLASLt is column-major. A row-major C with leading dimension ldc is, in the same memory, the column-major
// N x M matrix C^T with the same ld, and C^T = B^T A^T: cuBLASLt's "A" slot receives B, its "B" slot receives A,
// and each operand goes in as N or T depending on which of its strides is 1. The bias of CUBLASLT_EPILOGUE_BIAS
// has one element per row of cuBLASLt's D = per row of C^T = per column j of our C: exactly `bias[j]` added
// to every row, as a Linear layer needs.
//
// Precision: the compute type is CUBLAS_COMPUTE_32F for float (full FP32 FMA; CUBLAS_COMPUTE_32F_FAST_TF32
// would round the inputs to TF32's 10-bit mantissa) and CUBLAS_COMPUTE_64F for double, so results match
// a host loop to a few ulps times sqrt(K).
//
// Epilogues: bias, relu and bias_relu use cuBLASLt's epilogue (one pass over C) whenever the heuristic offers
// an algorithm for it; otherwise (double on some GPUs, some shapes) the plain GEMM runs and a small elementwise
// kernel applies the epilogue afterwards. gelu is the exact GELU, x * Phi(x) with erf, like tessera::gelu;
// cuBLASLt's GELU epilogue is the tanh approximation, so gelu and bias_gelu always use the GEMM plus one
// elementwise pass (bias, if any, added in that same pass).
//
// Accumulation: with `accumulate`, C += A B (cuBLASLt's beta = 1, C read and written in place with one layout,
// which cublasLtMatmul supports when C and D share pointer and descriptor); only without an epilogue (the gradient
// products of autodiff). The plan does not depend on beta: the same cached algorithm serves both.
//
// Caching: per process, a cuBLASLt handle per device, a 32 MiB workspace per (device, stream), and for each
// (device, type, M, N, K, operand layouts, ldc, batch and its strides, epilogue, pointer alignments) a plan:
// the matmul descriptor, the three layouts and the algorithm the heuristic chose. Nothing is rebuilt per call.
// A mutex guards the caches and is held while a call enqueues its work (nothing here waits for the GPU).
#pragma once
#if defined(__CUDACC__)
#include <cublasLt.h>
#include <cuda_runtime.h>

#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "tessera/kernels/cuda/common.hpp"

namespace tessera {

/// What cuda_gemm applies to each element of the product before storing it. bias_* add bias[j] to column j.
enum class gemm_epilogue { none, bias, relu, bias_relu, gelu, bias_gelu };

namespace cuda_kernels {
namespace gemm_detail {

inline void check_cublas(cublasStatus_t st, const char* what) {
  if (st != CUBLAS_STATUS_SUCCESS)
    throw device_error(std::string("tessera: cublasLt: ") + what + ": " + cublasLtGetStatusName(st) + ": " +
                       cublasLtGetStatusString(st));
}

inline constexpr std::size_t workspace_bytes = std::size_t(32) << 20;  // cuBLAS's recommendation for Hopper

template <class T>
struct lt_type;
template <>
struct lt_type<float> {
  static constexpr cudaDataType_t data = CUDA_R_32F;
  static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_32F;  // full FP32, not TF32
};
template <>
struct lt_type<double> {
  static constexpr cudaDataType_t data = CUDA_R_64F;
  static constexpr cublasComputeType_t compute = CUBLAS_COMPUTE_64F;
};

constexpr bool has_bias(gemm_epilogue e) {
  return e == gemm_epilogue::bias || e == gemm_epilogue::bias_relu || e == gemm_epilogue::bias_gelu;
}
/// The cuBLASLt epilogue that computes `e` exactly (DEFAULT where none does: the GELUs, see the top of the file).
constexpr cublasLtEpilogue_t lt_epilogue_for(gemm_epilogue e) {
  switch (e) {
    case gemm_epilogue::bias: return CUBLASLT_EPILOGUE_BIAS;
    case gemm_epilogue::relu: return CUBLASLT_EPILOGUE_RELU;
    case gemm_epilogue::bias_relu: return CUBLASLT_EPILOGUE_RELU_BIAS;
    default: return CUBLASLT_EPILOGUE_DEFAULT;
  }
}

/// One operand as cuBLASLt reads it: a column-major rows x cols matrix with leading dimension ld, and op.
struct lt_operand {
  cublasOperation_t op = CUBLAS_OP_N;
  std::uint64_t rows = 0, cols = 0;
  std::int64_t ld = 0;
};

/// The row-major-math operand P (R x Cn, element (r, c) at r * rs + c * cs) must enter as P^T (Cn x R).
///   cs == 1: P^T(c, r) = P[c + r * rs]: P^T itself is column-major with ld = rs  -> op N, layout Cn x R.
///   rs == 1: P^T(c, r) = P[r + c * cs]: P is column-major with ld = cs           -> op T, layout R x Cn.
/// A dimension of extent 1 makes its stride irrelevant. False when neither fits (the operand is copied first).
inline bool describe_transposed(index_t R, index_t Cn, index_t rs, index_t cs, lt_operand& out) {
  if ((cs == 1 || Cn == 1) && (R == 1 || rs >= Cn)) {
    out = {CUBLAS_OP_N, std::uint64_t(Cn), std::uint64_t(R), std::int64_t(R == 1 ? Cn : rs)};
    return true;
  }
  if ((rs == 1 || R == 1) && (Cn == 1 || cs >= R)) {
    out = {CUBLAS_OP_T, std::uint64_t(R), std::uint64_t(Cn), std::int64_t(Cn == 1 ? R : cs)};
    return true;
  }
  return false;
}

template <class T>
__device__ __forceinline__ T gelu_exact(T v) {
  if constexpr (std::is_same_v<T, float>) return 0.5f * v * (1.0f + erff(v * 0.70710678118654752440f));
  else return 0.5 * v * (1.0 + erf(v * 0.70710678118654752440));
}

/// C[b][i][j] = act((zero ? 0 : C[b][i][j]) + (bias ? bias[j] : 0)); act: 0 none, 1 relu, 2 exact gelu.
template <class T>
__global__ void epilogue_kernel(T* C, index_t batch, index_t M, index_t N, index_t ldc, index_t c_bs, const T* bias,
                                int act, bool zero) {
  const index_t total = batch * M * N, step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const index_t j = i % N, r = (i / N) % M, b = i / (M * N);
    T* p = C + b * c_bs + r * ldc + j;
    T v = zero ? T(0) : *p;
    if (bias) v += bias[j];
    if (act == 1) v = v <= T(0) ? T(0) : v;  // NaN stays NaN, as PyTorch's relu
    else if (act == 2) v = gelu_exact(v);
    *p = v;
  }
}

/// dst[b][r][c] = src[b * bs + r * rs + c * cs]: any strides (zero or negative too) into a dense row-major block.
template <class T>
__global__ void pack_kernel(T* dst, const T* src, index_t batch, index_t R, index_t Cn, index_t rs, index_t cs,
                            index_t bs) {
  const index_t total = batch * R * Cn, step = index_t(gridDim.x) * blockDim.x;
  for (index_t i = index_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += step) {
    const index_t c = i % Cn, r = (i / Cn) % R, b = i / (R * Cn);
    dst[i] = src[b * bs + r * rs + c * cs];
  }
}

struct plan {
  cublasLtMatmulDesc_t desc = nullptr;
  cublasLtMatrixLayout_t x = nullptr, y = nullptr, d = nullptr;  // cuBLASLt's A (our B), B (our A), C = D
  cublasLtMatmulAlgo_t algo{};
  bool lt_epilogue = false;  // the descriptor carries the epilogue; else it runs as a kernel after the GEMM
  bool lt_bias = false;      // the descriptor's BIAS_POINTER must be set on each call
};

using plan_key = std::array<std::int64_t, 22>;

struct state {
  std::mutex mutex;
  std::map<int, cublasLtHandle_t> handles;
  std::map<std::pair<int, cudaStream_t>, void*> workspaces;
  std::map<plan_key, plan> plans;
};
/// Process-wide and deliberately never destroyed: CUDA may already be torn down when static destructors run.
inline state& global() {
  static state* s = new state;
  return *s;
}

inline cublasLtHandle_t handle_for(state& st, int device) {
  auto it = st.handles.find(device);
  if (it != st.handles.end()) return it->second;
  cublasLtHandle_t h = nullptr;
  check_cublas(cublasLtCreate(&h), "cublasLtCreate");
  st.handles.emplace(device, h);
  return h;
}

inline void* workspace_for(state& st, int device, cudaStream_t s) {
  auto key = std::make_pair(device, s);
  auto it = st.workspaces.find(key);
  if (it != st.workspaces.end()) return it->second;
  void* p = nullptr;
  check_cuda(cudaMalloc(&p, workspace_bytes), "cudaMalloc (cuBLASLt workspace)");
  st.workspaces.emplace(key, p);
  return p;
}

inline cublasLtMatrixLayout_t make_layout(cudaDataType_t type, std::uint64_t rows, std::uint64_t cols, std::int64_t ld,
                                          index_t batch, index_t batch_stride) {
  cublasLtMatrixLayout_t l = nullptr;
  check_cublas(cublasLtMatrixLayoutCreate(&l, type, rows, cols, ld), "cublasLtMatrixLayoutCreate");
  if (batch > 1) {
    const std::int32_t count = std::int32_t(batch);
    const std::int64_t offset = batch_stride;
    check_cublas(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count, sizeof(count)),
                 "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)");
    check_cublas(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, &offset, sizeof(offset)),
                 "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)");
  }
  return l;
}

inline void destroy(plan& p) {
  if (p.desc) cublasLtMatmulDescDestroy(p.desc);
  if (p.x) cublasLtMatrixLayoutDestroy(p.x);
  if (p.y) cublasLtMatrixLayoutDestroy(p.y);
  if (p.d) cublasLtMatrixLayoutDestroy(p.d);
  p = plan{};
}

struct problem {
  index_t M, N, K, batch;
  lt_operand x, y;          // cuBLASLt's A = our B^T, B = our A^T
  index_t x_bs, y_bs, c_bs;
  std::int64_t ldc;
  std::uint32_t align_x, align_y, align_c, align_bias;
};

/// Builds descriptor, layouts and asks the heuristic for one algorithm. False (nothing leaked) when the
/// heuristic has none for this epilogue; throws on any other failure.
template <class T>
bool try_plan(cublasLtHandle_t h, const problem& pr, cublasLtEpilogue_t epi, const void* bias, plan& out) {
  using L = lt_type<T>;
  plan p;
  struct guard_t {
    plan* p;
    bool keep = false;
    ~guard_t() {
      if (!keep) destroy(*p);
    }
  } guard{&p};
  check_cublas(cublasLtMatmulDescCreate(&p.desc, L::compute, L::data), "cublasLtMatmulDescCreate");
  const std::int32_t opx = pr.x.op, opy = pr.y.op;
  check_cublas(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSA, &opx, sizeof(opx)),
               "cublasLtMatmulDescSetAttribute(TRANSA)");
  check_cublas(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_TRANSB, &opy, sizeof(opy)),
               "cublasLtMatmulDescSetAttribute(TRANSB)");
  if (epi != CUBLASLT_EPILOGUE_DEFAULT) {
    const std::uint32_t e = epi;
    check_cublas(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &e, sizeof(e)),
                 "cublasLtMatmulDescSetAttribute(EPILOGUE)");
    p.lt_epilogue = true;
    if (epi == CUBLASLT_EPILOGUE_BIAS || epi == CUBLASLT_EPILOGUE_RELU_BIAS) {
      // The heuristic reads the pointer's value to learn its alignment; the key holds that alignment, and each
      // call sets its own pointer. The bias type defaults to D's type (float or double): nothing to set.
      check_cublas(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof(bias)),
                   "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
      p.lt_bias = true;
    }
  }
  p.x = make_layout(L::data, pr.x.rows, pr.x.cols, pr.x.ld, pr.batch, pr.x_bs);
  p.y = make_layout(L::data, pr.y.rows, pr.y.cols, pr.y.ld, pr.batch, pr.y_bs);
  p.d = make_layout(L::data, std::uint64_t(pr.N), std::uint64_t(pr.M), pr.ldc, pr.batch, pr.c_bs);

  cublasLtMatmulPreference_t pref = nullptr;
  check_cublas(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
  struct pref_guard_t {
    cublasLtMatmulPreference_t p;
    ~pref_guard_t() { cublasLtMatmulPreferenceDestroy(p); }
  } pref_guard{pref};
  const std::uint64_t ws = workspace_bytes;
  check_cublas(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof(ws)),
               "cublasLtMatmulPreferenceSetAttribute(MAX_WORKSPACE_BYTES)");
  // The default minimum alignments are 256 bytes: a view at an offset would get an algorithm that may not run.
  const std::uint32_t al[4] = {pr.align_x, pr.align_y, pr.align_c, pr.align_c};
  const cublasLtMatmulPreferenceAttributes_t al_attr[4] = {
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
      CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
  for (int i = 0; i < 4; ++i)
    check_cublas(cublasLtMatmulPreferenceSetAttribute(pref, al_attr[i], &al[i], sizeof(al[i])),
                 "cublasLtMatmulPreferenceSetAttribute(MIN_ALIGNMENT)");

  cublasLtMatmulHeuristicResult_t result{};
  int found = 0;
  const cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(h, p.desc, p.x, p.y, p.d, p.d, pref, 1, &result, &found);
  if (st == CUBLAS_STATUS_NOT_SUPPORTED || (st == CUBLAS_STATUS_SUCCESS && (found == 0 || result.state != CUBLAS_STATUS_SUCCESS)))
    return false;
  check_cublas(st, "cublasLtMatmulAlgoGetHeuristic");
  p.algo = result.algo;
  guard.keep = true;
  out = p;
  return true;
}

template <class T>
const plan& plan_for(state& st, cublasLtHandle_t h, int device, const problem& pr, gemm_epilogue epi, const T* bias) {
  const cublasLtEpilogue_t want = lt_epilogue_for(epi);
  const plan_key key = {device,        std::int64_t(sizeof(T)), pr.M,        pr.N,        pr.K,
                        pr.batch,      pr.x.op,                 pr.x.ld,     pr.y.op,     pr.y.ld,
                        pr.ldc,        pr.x_bs,                 pr.y_bs,     pr.c_bs,     std::int64_t(want),
                        pr.align_x,    pr.align_y,              pr.align_c,  has_bias(epi) ? pr.align_bias : 0,
                        std::int64_t(pr.x.rows), std::int64_t(pr.y.rows), 0};
  auto it = st.plans.find(key);
  if (it != st.plans.end()) return it->second;
  plan p;
  if (!try_plan<T>(h, pr, want, bias, p) &&
      (want == CUBLASLT_EPILOGUE_DEFAULT || !try_plan<T>(h, pr, CUBLASLT_EPILOGUE_DEFAULT, nullptr, p)))
    throw device_error("tessera: cublasLt: cublasLtMatmulAlgoGetHeuristic found no algorithm for a " +
                       std::to_string(pr.M) + "x" + std::to_string(pr.K) + " by " + std::to_string(pr.K) + "x" +
                       std::to_string(pr.N) + " product (batch " + std::to_string(pr.batch) + ")");
  return st.plans.emplace(key, p).first->second;
}

/// Stream-ordered scratch memory for packed operands: freed on the stream after the GEMM that reads it.
struct scratch {
  cudaStream_t s;
  void* p = nullptr;
  explicit scratch(cudaStream_t st) : s(st) {}
  scratch(const scratch&) = delete;
  scratch& operator=(const scratch&) = delete;
  void* get(std::size_t bytes) {
    check_cuda(cudaMallocAsync(&p, bytes, s), "cudaMallocAsync (packed GEMM operand)");
    return p;
  }
  ~scratch() {
    if (p) cudaFreeAsync(p, s);
  }
};

/// Copies a strided operand (batch x R x Cn) into dense row-major scratch; returns it and its batch stride.
template <class T>
const T* pack(scratch& mem, cudaStream_t s, const T* src, index_t batch, index_t R, index_t Cn, index_t rs, index_t cs,
              index_t bs, index_t& out_bs) {
  const index_t copies = (batch > 1 && bs != 0) ? batch : 1;  // a shared operand (bs == 0) is copied once
  T* dst = static_cast<T*>(mem.get(std::size_t(copies * R * Cn) * sizeof(T)));
  pack_kernel<T><<<grid_for(copies * R * Cn), 256, 0, s>>>(dst, src, copies, R, Cn, rs, cs, bs);
  check_launch("cuda_gemm: pack kernel launch");
  out_bs = copies > 1 ? R * Cn : 0;
  return dst;
}

inline int act_code(gemm_epilogue e) {
  if (e == gemm_epilogue::relu || e == gemm_epilogue::bias_relu) return 1;
  if (e == gemm_epilogue::gelu || e == gemm_epilogue::bias_gelu) return 2;
  return 0;
}

}  // namespace gemm_detail
}  // namespace cuda_kernels

/// C = epilogue(A B [+ bias]) for `batch` products on stream s (asynchronous; see the top of this file).
/// A: M x K with strides (a_rs, a_cs); B: K x N with (b_rs, b_cs); C: M x N row-major with leading dimension
/// ldc >= N. bias: N elements (one per column of C), required by the bias_* epilogues, ignored otherwise.
/// accumulate: C += A B instead of C = A B (epilogue none only; C must then hold valid numbers).
/// Throws shape_error for inconsistent extents or strides, device_error when CUDA or cuBLASLt fails.
template <class T>
void cuda_gemm(cudaStream_t s, index_t M, index_t N, index_t K, const T* A, index_t a_rs, index_t a_cs, const T* B,
               index_t b_rs, index_t b_cs, T* C, index_t ldc, gemm_epilogue epi = gemm_epilogue::none,
               const T* bias = nullptr, index_t batch = 1, index_t a_bs = 0, index_t b_bs = 0, index_t c_bs = 0,
               bool accumulate = false) {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>, "tessera: cuda_gemm supports float and double");
  namespace gd = cuda_kernels::gemm_detail;
  using cuda_kernels::check_launch;
  using cuda_kernels::grid_for;
  if (M < 0 || N < 0 || K < 0 || batch < 0)
    throw shape_error("tessera: cuda_gemm: negative extent (M " + std::to_string(M) + ", N " + std::to_string(N) + ", K " +
                      std::to_string(K) + ", batch " + std::to_string(batch) + ")");
  if (M == 0 || N == 0 || batch == 0) return;
  if (M > 1 && ldc < N)
    throw shape_error("tessera: cuda_gemm: ldc " + std::to_string(ldc) + " is smaller than N " + std::to_string(N));
  if (ldc < N) ldc = N;  // one row: its leading dimension is never used
  if (batch > 1 && c_bs < (M - 1) * ldc + N)
    throw shape_error("tessera: cuda_gemm: the outputs of the batch overlap (c_bs " + std::to_string(c_bs) + ")");
  if (gd::has_bias(epi) && !bias) throw std::invalid_argument("tessera: cuda_gemm: the bias epilogues need a bias pointer");
  if (accumulate && epi != gemm_epilogue::none)
    throw std::invalid_argument("tessera: cuda_gemm: accumulate (C += A B) takes no epilogue");
  if (!gd::has_bias(epi)) bias = nullptr;
  if (!cuda_kernels::fits_int(M) || !cuda_kernels::fits_int(N) || !cuda_kernels::fits_int(K) ||
      !cuda_kernels::fits_int(batch))
    throw shape_error("tessera: cuda_gemm: extents beyond 2^31 - 1 are not supported by cuBLASLt");

  if (K == 0) {  // an empty sum: C = epilogue(0 [+ bias]), or C += 0
    if (accumulate) return;
    gd::epilogue_kernel<T><<<grid_for(batch * M * N), 256, 0, s>>>(C, batch, M, N, ldc, c_bs, bias, gd::act_code(epi), true);
    check_launch("cuda_gemm: epilogue kernel launch");
    return;
  }

  gd::problem pr{};
  pr.M = M;
  pr.N = N;
  pr.K = K;
  pr.batch = batch;
  pr.ldc = ldc;
  pr.c_bs = batch > 1 ? c_bs : 0;
  gd::scratch mem_a(s), mem_b(s);
  const T* X = B;  // cuBLASLt's A slot: B^T (N x K)
  const T* Y = A;  // cuBLASLt's B slot: A^T (K x M)
  index_t xbs = batch > 1 ? b_bs : 0, ybs = batch > 1 ? a_bs : 0;
  if (xbs < 0 || !gd::describe_transposed(K, N, b_rs, b_cs, pr.x)) {
    X = gd::pack(mem_b, s, B, batch, K, N, b_rs, b_cs, xbs, xbs);
    gd::describe_transposed(K, N, N, 1, pr.x);
  }
  if (ybs < 0 || !gd::describe_transposed(M, K, a_rs, a_cs, pr.y)) {
    Y = gd::pack(mem_a, s, A, batch, M, K, a_rs, a_cs, ybs, ybs);
    gd::describe_transposed(M, K, K, 1, pr.y);
  }
  pr.x_bs = xbs;
  pr.y_bs = ybs;
  using cuda_kernels::pointer_alignment;
  using cuda_kernels::stride_alignment;
  auto min_al = [](std::uint32_t a, std::uint32_t b) { return a < b ? a : b; };
  pr.align_x = min_al(pointer_alignment(X), stride_alignment(pr.x_bs, sizeof(T)));
  pr.align_y = min_al(pointer_alignment(Y), stride_alignment(pr.y_bs, sizeof(T)));
  pr.align_c = min_al(pointer_alignment(C), stride_alignment(pr.c_bs, sizeof(T)));
  pr.align_bias = pointer_alignment(bias);

  auto& st = gd::global();
  std::lock_guard<std::mutex> lock(st.mutex);
  const int device = cuda_kernels::current_device();
  cublasLtHandle_t h = gd::handle_for(st, device);
  void* ws = gd::workspace_for(st, device, s);
  const gd::plan& p = gd::plan_for<T>(st, h, device, pr, epi, bias);
  if (p.lt_bias) {
    const void* bp = bias;
    gd::check_cublas(cublasLtMatmulDescSetAttribute(p.desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bp, sizeof(bp)),
                     "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
  }
  // beta = 0: C is not read, it may hold anything (NaN included); beta = 1 (accumulate): C += A B in place
  const T alpha = T(1), beta = accumulate ? T(1) : T(0);
  gd::check_cublas(cublasLtMatmul(h, p.desc, &alpha, X, p.x, Y, p.y, &beta, C, p.d, C, p.d, &p.algo, ws,
                                  gd::workspace_bytes, s),
                   "cublasLtMatmul");
  if (!p.lt_epilogue && epi != gemm_epilogue::none) {
    gd::epilogue_kernel<T><<<grid_for(batch * M * N), 256, 0, s>>>(C, batch, M, N, ldc, pr.c_bs, bias, gd::act_code(epi), false);
    check_launch("cuda_gemm: epilogue kernel launch");
  }
}

}  // namespace tessera
#endif  // __CUDACC__
