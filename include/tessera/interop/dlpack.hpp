// DLPack: tensors shared with other frameworks (PyTorch, JAX, CuPy, TVM ...) in memory, without a copy.
//
//   DLManagedTensor* m = tessera::to_dlpack(std::move(t));    // t's buffer, taken over (the pointer stays t's)
//   DLManagedTensor* m = tessera::to_dlpack(shared_tensor);   // a std::shared_ptr<Tensor>: kept alive by m
//   DLManagedTensor* m = tessera::to_dlpack(view, keep);      // any strides; `keep` (a shared_ptr, may be empty)
//                                                             // lives until m's deleter runs
//   m->deleter(m);                                            // the consumer's duty, once
//
//   auto x = tessera::from_dlpack<float, Shape<dyn, 3>>(m);   // takes m over; x.view() is a View over m's data
//   x.view() = x.view() * 2.0f;                               // zero-copy, strides honoured
//   // x destroyed (or x.reset()): m->deleter(m) runs, exactly once; x.release() hands m back instead
//
// Built on Debian's <dlpack/dlpack.h> (libdlpack-dev; version 0.6's DLManagedTensor, DLTensor, DLDevice, kDLCPU,
// kDLCUDA). Element types: float (kDLFloat 32), double (kDLFloat 64), bfloat16 (kDLBfloat 16), int8/int32/int64
// (kDLInt), uint8 (kDLUInt 8), lanes 1; bool only where the header has kDLBool (DLPack 0.8 and later: 0.6 has no
// bool code, and PyTorch 1.13 exports its bools as uint8), else a compile error saying so.
// Devices: host policies export kDLCPU and import kDLCPU and kDLCUDAHost (pinned host memory); the cuda policy
// (nvcc) exports kDLCUDA on the current device, after waiting for tessera's stream, and imports kDLCUDA of that
// device. from_dlpack refuses, with a dlpack_error naming the dtype or device and the destination (a
// shape_error for the extents): another element type, lanes above 1, another rank, extents that differ from S's
// static ones, a device the policy cannot read (a kDLCUDA tensor into a host policy), negative strides (tessera's
// views take strides >= 0) and data not aligned for T. A refused tensor is released too: from_dlpack always takes
// m over, so its deleter runs exactly once whatever happens.
#pragma once

#if !__has_include(<dlpack/dlpack.h>)
#error "tessera/interop/dlpack.hpp needs <dlpack/dlpack.h>: install DLPack's header (Debian: apt-get install libdlpack-dev)"
#endif
#include <dlpack/dlpack.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>

#include "tessera/core/error.hpp"
#include "tessera/core/shape.hpp"
#include "tessera/core/tensor.hpp"
#include "tessera/core/types.hpp"
#include "tessera/kernels/cuda/memory.hpp"

namespace tessera {

/// A DLPack tensor that tessera cannot take as asked (element type, device, strides, alignment).
class dlpack_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

template <class T>
inline constexpr bool dlpack_carries_v =
    is_element_v<T> && (!std::is_same_v<T, bool> || DLPACK_VERSION >= 80);

/// The DLDataType of an element type.
template <Element T>
constexpr DLDataType dlpack_dtype_of() {
  static_assert(dlpack_carries_v<T>, "tessera: DLPack before 0.8 (this <dlpack/dlpack.h>) has no bool type: convert "
                                     "the tensor to uint8 first (tessera::cast<std::uint8_t>(x))");
  if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) return DLDataType{kDLFloat, std::uint8_t(8 * sizeof(T)), 1};
  else if constexpr (std::is_same_v<T, bfloat16>) return DLDataType{kDLBfloat, 16, 1};
  else if constexpr (std::is_same_v<T, std::uint8_t>) return DLDataType{kDLUInt, 8, 1};
#if DLPACK_VERSION >= 80
  else if constexpr (std::is_same_v<T, bool>) return DLDataType{kDLBool, 8, 1};
#endif
  else return DLDataType{kDLInt, std::uint8_t(8 * sizeof(T)), 1};
}

/// A DLDataType in words: "float32", "bfloat16", "int64", "uint8", "float32x4" (lanes), "code 7, 16 bits".
inline std::string dlpack_dtype_name(DLDataType d) {
  std::string s;
  switch (d.code) {
    case kDLInt: s = "int"; break;
    case kDLUInt: s = "uint"; break;
    case kDLFloat: s = "float"; break;
    case kDLBfloat: s = "bfloat"; break;
    case kDLComplex: s = "complex"; break;
#if DLPACK_VERSION >= 80
    case kDLBool: s = "bool"; break;
#endif
    default: return "code " + std::to_string(int(d.code)) + ", " + std::to_string(int(d.bits)) + " bits";
  }
  s += std::to_string(int(d.bits));
  if (d.lanes != 1) s += "x" + std::to_string(int(d.lanes));
  return s;
}

/// A DLDeviceType in words ("kDLCPU", "kDLCUDA", ...).
inline std::string dlpack_device_name(DLDevice d) {
  std::string s;
  switch (int(d.device_type)) {
    case kDLCPU: s = "kDLCPU"; break;
    case kDLCUDA: s = "kDLCUDA"; break;
    case kDLCUDAHost: s = "kDLCUDAHost"; break;
    case kDLCUDAManaged: s = "kDLCUDAManaged"; break;
    case kDLROCM: s = "kDLROCM"; break;
    default: s = "device type " + std::to_string(int(d.device_type));
  }
  return s + " (device " + std::to_string(d.device_id) + ")";
}

namespace detail::interop {
/// What a DLManagedTensor from tessera carries: the struct itself, what keeps the data alive, shape and strides.
template <class Owner, int R>
struct dlpack_context {
  DLManagedTensor managed{};
  Owner owner;
  std::int64_t shape[R > 0 ? R : 1]{};
  std::int64_t strides[R > 0 ? R : 1]{};
  explicit dlpack_context(Owner o) : owner(std::move(o)) {}
  static void destroy(DLManagedTensor* self) { delete static_cast<dlpack_context*>(self->manager_ctx); }
};

template <class P>
DLDevice dlpack_device_of() {
  if constexpr (P::on_device) {
#if defined(__CUDACC__)
    cuda_runtime::synchronize();  // a consumer on another stream must see tessera's finished work
    int dev = 0;
    cudaGetDevice(&dev);
    return DLDevice{kDLCUDA, dev};
#else
    static_assert(!P::on_device, "tessera: a cuda tensor goes to DLPack in a file compiled by nvcc");
#endif
  }
  return DLDevice{kDLCPU, 0};
}

template <class V, class P, int R, class Owner>
DLManagedTensor* make_dlpack(Owner owner, V* data, const dims_t<R>& dims, const dims_t<R>& strides) {
  auto* ctx = new dlpack_context<Owner, R>(std::move(owner));
  for (int i = 0; i < R; ++i) {
    ctx->shape[i] = std::int64_t(dims[i]);
    ctx->strides[i] = std::int64_t(strides[i]);
  }
  DLTensor& t = ctx->managed.dl_tensor;
  t.data = const_cast<std::remove_const_t<V>*>(data);
  t.device = dlpack_device_of<P>();
  t.ndim = R;
  t.dtype = dlpack_dtype_of<std::remove_const_t<V>>();
  t.shape = ctx->shape;
  t.strides = ctx->strides;
  t.byte_offset = 0;
  ctx->managed.manager_ctx = ctx;
  ctx->managed.deleter = &dlpack_context<Owner, R>::destroy;
  return &ctx->managed;
}
template <class T>
inline constexpr bool always_false = false;
}  // namespace detail::interop

/// A tensor taken over by DLPack: the data pointer is t's own (no copy); the buffer lives until the consumer calls
/// the returned tensor's deleter.
template <Element T, ShapeType S, Policy P>
DLManagedTensor* to_dlpack(Tensor<T, S, P>&& t) {
  T* data = t.data();
  const auto dims = t.dims();
  const auto strides = t.strides();
  return detail::interop::make_dlpack<T, P, S::rank>(std::move(t), data, dims, strides);
}
/// A shared tensor: the returned DLManagedTensor holds one more reference until its deleter runs.
template <Element T, ShapeType S, Policy P>
DLManagedTensor* to_dlpack(std::shared_ptr<Tensor<T, S, P>> t) {
  if (!t) throw dlpack_error("tessera::to_dlpack: the shared_ptr is empty");
  T* data = t->data();
  const auto dims = t->dims();
  const auto strides = t->strides();
  return detail::interop::make_dlpack<T, P, S::rank>(std::move(t), data, dims, strides);
}
/// A view (any strides >= 0): the caller keeps its memory alive until the deleter runs, or hands `keep_alive`
/// (held until then).
template <class T, ShapeType S, Policy P>
DLManagedTensor* to_dlpack(const View<T, S, P>& v, std::shared_ptr<const void> keep_alive = nullptr) {
  return detail::interop::make_dlpack<T, P, S::rank>(std::move(keep_alive), v.data(), v.dims(), v.strides());
}
/// An lvalue tensor is not taken implicitly (that would leave a tensor without its buffer, or a dangling export).
template <Element T, ShapeType S, Policy P>
DLManagedTensor* to_dlpack(Tensor<T, S, P>&) {
  static_assert(detail::interop::always_false<T>,
                "tessera::to_dlpack: pass std::move(t) (DLPack takes the tensor over, zero-copy), a "
                "std::shared_ptr<Tensor> (shared), or t.view() (you keep t alive until the deleter runs)");
  return nullptr;
}

/// A DLManagedTensor owned by tessera: a View over its data (zero-copy), and its deleter called exactly once, when
/// this object is destroyed or reset() (never if release() handed it back). Move-only.
template <Element T, ShapeType S, Policy P = cpu>
class dlpack_tensor {
 public:
  using view_type = View<T, S, P>;
  dlpack_tensor() = default;
  dlpack_tensor(DLManagedTensor* m, view_type v) : m_(m), view_(v) {}
  dlpack_tensor(const dlpack_tensor&) = delete;
  dlpack_tensor& operator=(const dlpack_tensor&) = delete;
  dlpack_tensor(dlpack_tensor&& o) noexcept : m_(std::exchange(o.m_, nullptr)), view_(o.view_) {}
  dlpack_tensor& operator=(dlpack_tensor&& o) noexcept {
    if (this != &o) {
      reset();
      m_ = std::exchange(o.m_, nullptr);
      view_ = o.view_;
    }
    return *this;
  }
  ~dlpack_tensor() { reset(); }

  view_type view() const { return view_; }
  operator view_type() const { return view_; }  // NOLINT(google-explicit-constructor): used where a View is
  T* data() const { return view_.data(); }
  const dims_t<S::rank>& dims() const { return view_.dims(); }
  const dims_t<S::rank>& strides() const { return view_.strides(); }
  index_t size() const { return view_.size(); }
  DLManagedTensor* get() const { return m_; }
  /// Call the deleter now (once); the view must not be used after.
  void reset() {
    if (DLManagedTensor* m = std::exchange(m_, nullptr))
      if (m->deleter) m->deleter(m);
  }
  /// Hand the DLManagedTensor back without calling its deleter.
  DLManagedTensor* release() { return std::exchange(m_, nullptr); }

 private:
  DLManagedTensor* m_ = nullptr;
  view_type view_{};
};

/// Take a DLManagedTensor over as a tessera view of element type T, shape S and policy P (see above for what is
/// checked). The deleter runs exactly once: when the result goes away, or before the exception if m is refused.
template <Element T, ShapeType S, Policy P = cpu>
dlpack_tensor<T, S, P> from_dlpack(DLManagedTensor* m) {
  if (!m) throw dlpack_error("tessera::from_dlpack: the DLManagedTensor pointer is null");
  struct guard_t {
    DLManagedTensor* m;
    ~guard_t() {
      if (m && m->deleter) m->deleter(m);
    }
  } guard{m};
  constexpr int R = S::rank;
  const DLTensor& t = m->dl_tensor;
  const std::string into = std::string(" into a tessera tensor of ") + type_name<T>() + ", rank " + std::to_string(R) + ", " + P::name;
  const DLDataType want = dlpack_dtype_of<T>();
  if (t.dtype.code != want.code || t.dtype.bits != want.bits || t.dtype.lanes != want.lanes)
    throw dlpack_error("tessera::from_dlpack: a DLPack tensor of " + dlpack_dtype_name(t.dtype) + into + " (" +
                       dlpack_dtype_name(want) + " expected)");
  const int dt = int(t.device.device_type);
  if constexpr (P::on_device) {
#if defined(__CUDACC__)
    int dev = 0;
    cudaGetDevice(&dev);
    if (dt != kDLCUDA || t.device.device_id != dev)
      throw dlpack_error("tessera::from_dlpack: a DLPack tensor on " + dlpack_device_name(t.device) + into +
                         " (kDLCUDA on the current device " + std::to_string(dev) + " expected)");
#else
    static_assert(!P::on_device, "tessera: from_dlpack into a cuda tensor needs a file compiled by nvcc");
#endif
  } else {
    if (dt != kDLCPU && dt != kDLCUDAHost)
      throw dlpack_error("tessera::from_dlpack: a DLPack tensor on " + dlpack_device_name(t.device) + into +
                         " (host memory, kDLCPU or kDLCUDAHost, expected; copy it to the host first)");
  }
  if (t.ndim != R)
    throw shape_error("tessera::from_dlpack: a DLPack tensor of rank " + std::to_string(t.ndim) + into);
  dims_t<R> dims{}, strides{};
  for (int i = 0; i < R; ++i) {
    if (t.shape[i] < 0) throw shape_error("tessera::from_dlpack: a DLPack tensor with the negative extent " + std::to_string(t.shape[i]));
    dims[i] = index_t(t.shape[i]);
  }
  if (t.strides) {
    for (int i = 0; i < R; ++i) {
      if (t.strides[i] < 0)
        throw dlpack_error("tessera::from_dlpack: stride " + std::to_string(t.strides[i]) + " of axis " + std::to_string(i) +
                           " is negative (tessera's views take strides >= 0; copy the tensor first)");
      strides[i] = index_t(t.strides[i]);
    }
  } else {
    strides = contiguous_strides(dims);
  }
  auto* data = reinterpret_cast<T*>(static_cast<char*>(t.data) + t.byte_offset);
  if (reinterpret_cast<std::uintptr_t>(data) % alignof(T) != 0)
    throw dlpack_error("tessera::from_dlpack: the data (with byte_offset " + std::to_string(t.byte_offset) +
                       ") is not aligned to the " + std::to_string(alignof(T)) + " bytes " + type_name<T>() + " needs");
  View<T, S, P> v(data, dims, strides);  // checks the static extents (shape_error) and that the extents' product fits
  guard.m = nullptr;
  return dlpack_tensor<T, S, P>(m, v);
}

}  // namespace tessera
