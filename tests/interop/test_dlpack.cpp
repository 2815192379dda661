// DLPack (interop/dlpack.hpp): exports keep the tensor's own pointer and describe it exactly (dtype, device, shape,
// strides) for every element type DLPack 0.6 carries at ranks 0-4; imports are zero-copy views that honour strides
// and byte_offset, call the producer's deleter exactly once (moved, reset, released, refused), and refuse other
// element types, devices, ranks, static extents, negative strides and misaligned data with messages that say so.
#include <catch2/catch.hpp>

#include <cstdint>
#include <cstring>
#include <memory>
#include <vector>

#include "tessera/interop/dlpack.hpp"
#include "tessera/tessera.hpp"

namespace ts = tessera;
using ts::dyn;
using ts::index_t;

namespace {

/// A producer of our own: a buffer, its shape and strides, and a deleter that counts its calls.
struct producer {
  DLManagedTensor managed{};
  std::vector<std::int64_t> shape, strides;
  std::vector<unsigned char> buffer;
  int* deleted;
  static void destroy(DLManagedTensor* self) {
    auto* p = static_cast<producer*>(self->manager_ctx);
    ++*p->deleted;
    delete p;
  }
};
/// A DLManagedTensor over `bytes` bytes; strides empty: NULL (row-major).
DLManagedTensor* make(int* deleted, DLDataType dtype, std::vector<std::int64_t> shape, std::vector<std::int64_t> strides,
                      std::size_t bytes, DLDevice device = {kDLCPU, 0}, std::uint64_t byte_offset = 0) {
  auto* p = new producer;
  p->deleted = deleted;
  p->shape = std::move(shape);
  p->strides = std::move(strides);
  p->buffer.resize(bytes + 64);
  DLTensor& t = p->managed.dl_tensor;
  t.data = p->buffer.data();
  t.device = device;
  t.ndim = int(p->shape.size());
  t.dtype = dtype;
  t.shape = p->shape.data();
  t.strides = p->strides.empty() ? nullptr : p->strides.data();
  t.byte_offset = byte_offset;
  p->managed.manager_ctx = p;
  p->managed.deleter = &producer::destroy;
  return &p->managed;
}

template <class T>
DLDataType expected_dtype() {
  if constexpr (std::is_same_v<T, float>) return {2, 32, 1};
  else if constexpr (std::is_same_v<T, double>) return {2, 64, 1};
  else if constexpr (std::is_same_v<T, ts::bfloat16>) return {4, 16, 1};
  else if constexpr (std::is_same_v<T, std::uint8_t>) return {1, 8, 1};
  else return {0, std::uint8_t(8 * sizeof(T)), 1};
}

template <class T, int R>
void export_import(const ts::dims_t<R>& d) {
  ts::Tensor<T, ts::dyn_shape_t<R>> t(d);
  for (index_t i = 0; i < t.size(); ++i) t.data()[i] = T(i % 100);
  T* p = t.data();
  DLManagedTensor* m = ts::to_dlpack(std::move(t));
  REQUIRE(m != nullptr);
  const DLTensor& dl = m->dl_tensor;
  CHECK(dl.data == static_cast<void*>(p));  // zero-copy: the tensor's own buffer
  CHECK(dl.device.device_type == kDLCPU);
  CHECK(dl.ndim == R);
  CHECK(dl.dtype.code == expected_dtype<T>().code);
  CHECK(dl.dtype.bits == expected_dtype<T>().bits);
  CHECK(dl.dtype.lanes == 1);
  CHECK(dl.byte_offset == 0);
  std::int64_t stride = 1;
  for (int i = R - 1; i >= 0; --i) {
    CHECK(dl.shape[i] == d[i]);
    CHECK(dl.strides[i] == stride);
    stride *= d[i];
  }
  auto x = ts::from_dlpack<T, ts::dyn_shape_t<R>>(m);
  CHECK(x.data() == p);
  CHECK(x.dims() == d);
  for (index_t i = 0; i < x.size(); ++i) REQUIRE(x.data()[i] == T(i % 100));
}

}  // namespace

TEMPLATE_TEST_CASE("dlpack: a tensor goes out and comes back without a copy, every element type, ranks 0-4", "[dlpack]",
                   float, double, ts::bfloat16, std::int8_t, std::uint8_t, std::int32_t, std::int64_t) {
  export_import<TestType, 0>({});
  for (index_t n : {1, 7, 33, 65, 127}) {
    INFO("n = " << n);
    export_import<TestType, 1>({n});
    export_import<TestType, 2>({n, 3});
    export_import<TestType, 3>({3, n, 1});
    export_import<TestType, 4>({2, 1, n, 3});
  }
  export_import<TestType, 2>({0, 5});
}

TEST_CASE("dlpack: a shared tensor and a view with a keep-alive live until the deleter runs", "[dlpack]") {
  auto shared = std::make_shared<ts::Tensor<float, ts::Shape<dyn, dyn>>>(5, 7);
  *shared = 2.0f;
  DLManagedTensor* m = ts::to_dlpack(shared);
  CHECK(shared.use_count() == 2);
  CHECK(m->dl_tensor.data == shared->data());
  m->deleter(m);
  CHECK(shared.use_count() == 1);

  // a transposed view: shape [7, 5], strides [1, 7]; written through the import, seen in the tensor
  m = ts::to_dlpack(ts::transpose(shared->view()), shared);
  CHECK(shared.use_count() == 2);
  CHECK(m->dl_tensor.shape[0] == 7);
  CHECK(m->dl_tensor.strides[0] == 1);
  CHECK(m->dl_tensor.strides[1] == 7);
  {
    auto x = ts::from_dlpack<float, ts::Shape<7, 5>>(m);
    CHECK(x.strides() == ts::dims_t<2>{1, 7});
    x.view()(3, 1) = 9.0f;
    x.view() = x.view() * 3.0f;  // tessera's expressions run on the imported strided view
  }
  CHECK(shared.use_count() == 1);  // the deleter ran when x went away
  for (index_t i = 0; i < 5; ++i)
    for (index_t j = 0; j < 7; ++j) REQUIRE((*shared)(i, j) == (i == 1 && j == 3 ? 27.0f : 6.0f));
}

TEST_CASE("dlpack: imports honour strides and byte_offset and call the deleter exactly once", "[dlpack]") {
  int deleted = 0;
  SECTION("a column-major buffer with an offset, read as a strided view") {
    // 33 x 7 floats stored column by column after 16 bytes of something else
    DLManagedTensor* m = make(&deleted, {kDLFloat, 32, 1}, {33, 7}, {1, 33}, 16 + 33 * 7 * 4, {kDLCPU, 0}, 16);
    auto* base = reinterpret_cast<float*>(static_cast<unsigned char*>(m->dl_tensor.data) + 16);
    for (int j = 0; j < 7; ++j)
      for (int i = 0; i < 33; ++i) base[j * 33 + i] = float(100 * i + j);
    {
      auto x = ts::from_dlpack<float, ts::Shape<dyn, 7>>(m);
      CHECK(x.data() == base);
      CHECK_FALSE(x.view().is_contiguous());
      ts::Tensor<float, ts::Shape<dyn, 7>> copy = x.view() + 0.0f;
      for (index_t i = 0; i < 33; ++i)
        for (index_t j = 0; j < 7; ++j) REQUIRE(copy(i, j) == float(100 * i + j));
      auto y = std::move(x);  // the moved-from one calls nothing
      CHECK(deleted == 0);
    }
    CHECK(deleted == 1);
  }
  SECTION("reset calls it once, the destructor then nothing; release hands it back") {
    {
      auto x = ts::from_dlpack<std::int32_t, ts::Shape<dyn>>(make(&deleted, {kDLInt, 32, 1}, {7}, {}, 28));
      x.reset();
      CHECK(deleted == 1);
      x.reset();
    }
    CHECK(deleted == 1);
    DLManagedTensor* back = nullptr;
    {
      auto x = ts::from_dlpack<std::int32_t, ts::Shape<dyn>>(make(&deleted, {kDLInt, 32, 1}, {7}, {}, 28));
      back = x.release();
    }
    CHECK(deleted == 1);
    back->deleter(back);
    CHECK(deleted == 2);
  }
  SECTION("pinned host memory (kDLCUDAHost) is host memory") {
    auto x = ts::from_dlpack<double, ts::Shape<3>>(make(&deleted, {kDLFloat, 64, 1}, {3}, {}, 24, {kDLCUDAHost, 0}));
    CHECK(x.size() == 3);
  }
}

TEST_CASE("dlpack: refused imports say why, and still call the deleter once", "[dlpack]") {
  int deleted = 0;
  auto refused = [&](DLManagedTensor* m, auto take) -> std::string {
    const int before = deleted;
    std::string what;
    try {
      take(m);
    } catch (const std::exception& e) {
      what = e.what();
    }
    CHECK(deleted == before + 1);
    return what;
  };
  auto as_float2 = [](DLManagedTensor* m) { (void)ts::from_dlpack<float, ts::Shape<dyn, dyn>>(m); };
  CHECK_THAT(refused(make(&deleted, {kDLFloat, 64, 1}, {2, 3}, {}, 48), as_float2),
             Catch::Contains("a DLPack tensor of float64 into a tessera tensor of float, rank 2") &&
                 Catch::Contains("float32 expected"));
  CHECK_THAT(refused(make(&deleted, {kDLFloat, 32, 4}, {2, 3}, {}, 96), as_float2), Catch::Contains("float32x4"));
  CHECK_THAT(refused(make(&deleted, {kDLFloat, 32, 1}, {2, 3}, {}, 24, {kDLCUDA, 0}), as_float2),
             Catch::Contains("a DLPack tensor on kDLCUDA (device 0)") && Catch::Contains("copy it to the host first"));
  CHECK_THAT(refused(make(&deleted, {kDLFloat, 32, 1}, {6}, {}, 24), as_float2), Catch::Contains("of rank 1 into"));
  CHECK_THAT(refused(make(&deleted, {kDLFloat, 32, 1}, {2, 3}, {-3, 1}, 24), as_float2),
             Catch::Contains("stride -3 of axis 0 is negative"));
  CHECK_THAT(refused(make(&deleted, {kDLFloat, 32, 1}, {2, 3}, {}, 26, {kDLCPU, 0}, 2), as_float2),
             Catch::Contains("not aligned to the 4 bytes float needs"));
  CHECK_THAT(refused(make(&deleted, {kDLFloat, 32, 1}, {2, -3}, {}, 24), as_float2), Catch::Contains("negative extent -3"));
  CHECK_THAT(refused(make(&deleted, {kDLFloat, 32, 1}, {2, 3}, {}, 24),
                     [](DLManagedTensor* m) { (void)ts::from_dlpack<float, ts::Shape<2, 4>>(m); }),
             Catch::Contains("shape [2, 3] does not fit the static shape [2, 4]"));
  CHECK_THAT(refused(make(&deleted, {kDLUInt, 8, 1}, {4}, {}, 4),
                     [](DLManagedTensor* m) { (void)ts::from_dlpack<std::int8_t, ts::Shape<4>>(m); }),
             Catch::Contains("uint8 into a tessera tensor of int8"));
  CHECK_THROWS_AS((ts::from_dlpack<float, ts::Shape<dyn>>(nullptr)), ts::dlpack_error);
  CHECK(ts::dlpack_dtype_name({kDLBfloat, 16, 1}) == "bfloat16");
  CHECK(ts::dlpack_dtype_name({9, 16, 1}) == "code 9, 16 bits");
}
