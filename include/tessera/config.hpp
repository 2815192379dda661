// Build-wide switches: host/device annotations, SIMD width, instrumentation.
#pragma once

#if defined(__CUDACC__)
#define TS_HD __host__ __device__
#define TS_DEVICE_COMPILE 1
#else
#define TS_HD
#endif

#if defined(__CUDA_ARCH__)
#define TS_ON_DEVICE 1
#else
#define TS_ON_DEVICE 0
#endif

// SIMD packets use GCC vector extensions; other compilers take the scalar loops (which they may auto-vectorize).
// Translation units compiled by nvcc take the scalar host loops too.
#if defined(__GNUC__) && !defined(__clang__) && !defined(__CUDACC__) && !defined(TESSERA_NO_SIMD)
#define TESSERA_SIMD 1
#if defined(__AVX512F__)
#define TESSERA_VECTOR_BYTES 64
#elif defined(__AVX__)
#define TESSERA_VECTOR_BYTES 32
#else
#define TESSERA_VECTOR_BYTES 16
#endif
#else
#define TESSERA_SIMD 0
#define TESSERA_VECTOR_BYTES 0
#endif

#define TS_INLINE inline __attribute__((always_inline))

// Full unrolling of the short fixed-trip loops in the kernels (register tiles, 16 x 16 transposes): g++ -O2 does
// not unroll them by itself, and a register tile left as a loop lives in memory (twice as slow a training step).
#define TS_PRAGMA(x) _Pragma(#x)
#if defined(__clang__)
#define TS_UNROLL TS_PRAGMA(unroll)
#elif defined(__GNUC__) && !defined(__CUDACC__)
#define TS_UNROLL TS_PRAGMA(GCC unroll 32)
#else
#define TS_UNROLL
#endif

// Debug checks (element indices against extents, and the like): on in builds without NDEBUG, or with
// TESSERA_DEBUG defined in any build; TESSERA_NO_DEBUG_CHECKS turns them off. Off, they cost nothing.
#if (!defined(NDEBUG) || defined(TESSERA_DEBUG)) && !defined(TESSERA_NO_DEBUG_CHECKS)
#define TESSERA_DEBUG_CHECKS 1
#else
#define TESSERA_DEBUG_CHECKS 0
#endif
