// CPU-only helpers: dtype conversions written so that GCC/Clang vectorise them, and the ISA the
// library was compiled for.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "fastmath.h"

namespace sedd {
namespace cpu {

// Accumulation type of a storage type: fp32 for fp32/bf16/fp16, fp64 for fp64.
template <typename T> struct Acc { using type = float; };
template <> struct Acc<double> { using type = double; };
template <typename T> using acc_t = typename Acc<T>::type;

inline float load(const float* p) { return *p; }
inline double load(const double* p) { return *p; }
inline float load(const c10::BFloat16* p) {
  uint16_t u;
  std::memcpy(&u, p, sizeof u);
  return bits_to_float(static_cast<uint32_t>(u) << 16);
}
inline float load(const c10::Half* p) {
#if defined(__FLT16_MAX__)
  _Float16 h;  // native conversion: vcvtph2ps (F16C / AVX-512 FP16) when available
  std::memcpy(&h, p, sizeof h);
  return static_cast<float>(h);
#else
  return static_cast<float>(*p);
#endif
}

inline void store(float* p, float v) { *p = v; }
inline void store(double* p, double v) { *p = v; }
inline void store(c10::BFloat16* p, float v) {
  // Round to nearest even, NaN stays NaN (same rule as c10::BFloat16's constructor).
  const uint32_t u = float_to_bits(v);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  const uint16_t h = v != v ? uint16_t(0x7fc0) : static_cast<uint16_t>(rounded);
  std::memcpy(p, &h, sizeof h);
}
inline void store(c10::Half* p, float v) {
#if defined(__FLT16_MAX__)
  const _Float16 h = static_cast<_Float16>(v);
  std::memcpy(p, &h, sizeof h);
#else
  *p = c10::Half(v);
#endif
}

// ---- SIMD through GCC/Clang vector extensions --------------------------------------------
// One vector is 16 floats with AVX-512, 8 with AVX2 and 4 otherwise (SSE2/NEON): the widths
// the compiler maps to single registers (wider ones measured 5x slower on AVX2). The same
// exp_generic() as the scalar/CUDA code runs on whole vectors.
#if defined(__AVX512F__)
constexpr int kVecBytes = 64;
#elif defined(__AVX2__)
constexpr int kVecBytes = 32;
#else
constexpr int kVecBytes = 16;
#endif
constexpr int kVecLen = kVecBytes / 4;
typedef float vfloat __attribute__((vector_size(kVecBytes)));
typedef int32_t vint __attribute__((vector_size(kVecBytes)));
typedef uint32_t vuint __attribute__((vector_size(kVecBytes)));
typedef uint16_t vu16 __attribute__((vector_size(kVecBytes / 2)));
#if defined(__FLT16_MAX__)
typedef _Float16 vf16 __attribute__((vector_size(kVecBytes / 2)));
#endif

typedef uint64_t vu64 __attribute__((vector_size(kVecBytes)));

inline vfloat vexp(vfloat x) { return exp_generic<vfloat, vint>(x); }

// High 32 bits of a·m for every uint32 lane (even and odd lanes through 64-bit products).
inline vuint vmulhi(vuint a, uint32_t m) {
  const vu64 q = bitcast<vu64>(a);
  const vu64 even = ((q & 0xffffffffull) * static_cast<uint64_t>(m)) >> 32;
  const vu64 odd = ((q >> 32) * static_cast<uint64_t>(m)) & 0xffffffff00000000ull;
  return bitcast<vuint>(even | odd);
}

inline vfloat vload(const float* p) {
  vfloat v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline vfloat vload(const c10::BFloat16* p) {
  vu16 h;
  std::memcpy(&h, p, sizeof h);
  return bitcast<vfloat>(__builtin_convertvector(h, vuint) << 16);
}
inline vfloat vload(const c10::Half* p) {
#if defined(__FLT16_MAX__)
  vf16 h;
  std::memcpy(&h, p, sizeof h);
  return __builtin_convertvector(h, vfloat);
#else
  vfloat v;
  for (int k = 0; k < kVecLen; ++k) v[k] = load(p + k);
  return v;
#endif
}

inline void vstore(float* p, vfloat v) { std::memcpy(p, &v, sizeof v); }
inline void vstore(c10::BFloat16* p, vfloat v) {
  const vuint u = bitcast<vuint>(v);
  vuint r = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  r = v != v ? vuint{} + 0x7fc0u : r;
  const vu16 h = __builtin_convertvector(r, vu16);
  std::memcpy(p, &h, sizeof h);
}
inline void vstore(c10::Half* p, vfloat v) {
#if defined(__FLT16_MAX__)
  const vf16 h = __builtin_convertvector(v, vf16);
  std::memcpy(p, &h, sizeof h);
#else
  for (int k = 0; k < kVecLen; ++k) store(p + k, v[k]);
#endif
}

// Software prefetch of the row scans, kPrefetchBytes ahead of the entry being read: the hardware
// streamer alone left the single-row scans ~40 % stalled on loads (measured: the reverse step at
// [2, 1024, 50258] went from 59 to 38 ms on a 2-core Xeon with it).
constexpr int kPrefetchBytes = 4096;
inline void prefetch_ahead(const void* p) {
  __builtin_prefetch(static_cast<const char*>(p) + kPrefetchBytes);
}

inline float hsum(vfloat v) {
  float s = 0.0f;
  for (int k = 0; k < kVecLen; ++k) s += v[k];
  return s;
}

// Ask Linux for transparent huge pages on a freshly allocated output that the kernel is about to
// write entirely: first-touch page faults of a 400 MB gradient cost more than computing it, and
// 2 MB pages cut them ~500-fold. Only the 2 MB-aligned interior is advised; a no-op elsewhere or
// when THP is disabled (madvise then fails harmlessly).
inline void advise_huge_pages(void* p, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (bytes < 4 * kHuge) return;
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(p) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(p) + bytes) & ~(kHuge - 1);
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);
#else
  (void)p;
  (void)bytes;
#endif
}

// The widest x86/Arm vector ISA this translation unit was compiled for.
inline const char* compiled_isa() {
#if defined(__AVX512F__)
  return "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
  return "avx2+fma";
#elif defined(__AVX__)
  return "avx";
#elif defined(__SSE2__)
  return "sse2";
#elif defined(__ARM_NEON)
  return "neon";
#else
  return "scalar";
#endif
}

}  // namespace cpu
}  // namespace sedd
