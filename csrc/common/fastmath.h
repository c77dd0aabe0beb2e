// exp() shared by the CPU and the CUDA kernels.
//
// The kernels evaluate exp once per log-score entry, so it must vectorise on the CPU (a libm
// call does not) and cost a handful of FMAs on the GPU. Both back ends use this one function, so
// the numbers tested on the CPU are the numbers the GPU produces (up to FMA contraction).
//
// Method (Cephes expf): x = n·ln2 + r with |r| ≤ ln2/2 (Cody–Waite split of ln2), e^r by the
// Cephes polynomial (max relative error ≈ 1e-7, i.e. about 1 ulp), then 2^n applied through the
// exponent bits. 18 operations, no branches, no table. Edge behaviour:
//   x > ln(FLT_MAX) = 88.7228 → +inf (overflow is never clamped to a finite value),
//   e^x < 2^-125 (x < −86.6)  → +0 (flushed; such terms cannot change a sum of e^{ℓ}),
//   NaN → NaN, +inf → +inf, −inf → +0.
// Checked against libm over its whole range by the CTest program (cpp_tests/). On the GPU the
// factor e^r comes from the hardware exp2 unit instead of the polynomial (see exp_f32 below);
// everything else is the same code.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "macros.h"

namespace sedd {

// Reinterpret the bits of a scalar or of a GCC vector of the same size.
template <typename To, typename From>
SEDD_HOST_DEVICE To bitcast(From f) {
  static_assert(sizeof(To) == sizeof(From), "bitcast needs equal sizes");
  To t;
  memcpy(&t, &f, sizeof t);
  return t;
}

SEDD_HOST_DEVICE float bits_to_float(uint32_t u) { return bitcast<float>(u); }
SEDD_HOST_DEVICE uint32_t float_to_bits(float f) { return bitcast<uint32_t>(f); }

// The algorithm, for F = float (with I = int32_t) or, on the CPU, for GCC vectors of floats
// (with I the int32 vector of the same width): the same operations, lane by lane.
template <typename F>
SEDD_HOST_DEVICE F bcast(float v) { return F{} + v; }  // a float constant as an F

template <typename F, typename I>
SEDD_HOST_DEVICE F exp_generic(F x) {
  // Clamp with compare-selects that keep a NaN x (it then propagates to the result).
  F xc = x > bcast<F>(89.0f) ? bcast<F>(89.0f) : x;     // e^89 overflows to +inf below
  xc = xc < bcast<F>(-87.3f) ? bcast<F>(-87.3f) : xc;   // n = −126: the scale below is +0
  const F round = bcast<F>(12582912.0f);                 // 1.5·2^23: adding it rounds to integer
  const F t = xc * 1.44269504088896341f + round;
  const F n = t - round;
  const I ni = bitcast<I>(t) - bitcast<I>(round);       // n as an integer, −126..129
  F r = xc - n * 0.693359375f;                           // r = x − n·ln2, ln2 = hi + lo
  r = r - n * -2.12194440e-4f;
  // 2·e^r (the factor 2 folded into the coefficients so that the scale is 2^(n−1)).
  F p = r * 3.9751383000e-4f + 2.7963999014e-3f;
  p = p * r + 1.6666903815e-2f;
  p = p * r + 8.3331591788e-2f;
  p = p * r + 3.3333330918e-1f;
  p = p * r + 1.0000000240e+0f;
  p = p * (r * r) + (r * 2.0f + 2.0f);
  // 2^(n−1) from its exponent bits: n + 126 ∈ [0, 255]; 0 gives +0, 255 gives +inf.
  return p * bitcast<F>((ni + 126) << 23);
}

#if defined(__CUDA_ARCH__)
// GPU: the same range reduction and exponent-bit scaling, with 2·2^f (f = x·log2e − n, |f| ≤ 1/2)
// from the special-function unit (ex2.approx, relative error ≤ 2^-22) instead of the polynomial:
// 11 instructions instead of 20, which keeps bf16 inputs memory-bound. Max relative error ≈ 3e-7.
__device__ __forceinline__ float exp_f32(float x) {
  float xc = x > 89.0f ? 89.0f : x;
  xc = xc < -87.3f ? -87.3f : xc;
  const float t = xc * 1.44269504088896341f + 12582912.0f;
  const float n = t - 12582912.0f;
  const int32_t ni = static_cast<int32_t>(__float_as_uint(t) - __float_as_uint(12582912.0f));
  float f = __fmaf_rn(xc, 1.44269502162933349609f, -n);  // log2e = hi + lo, x·hi − n exact-ish
  f = __fmaf_rn(xc, 1.92596299112661746887e-8f, f) + 1.0f;
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(f));
  return y * __uint_as_float(static_cast<uint32_t>(ni + 126) << 23);
}
#else
SEDD_HOST_DEVICE float exp_f32(float x) { return exp_generic<float, int32_t>(x); }
#endif

// Per-dtype exp used by the kernels: fp32 for fp32/bf16/fp16 inputs, libm for fp64.
SEDD_HOST_DEVICE float exp_acc(float x) { return exp_f32(x); }
SEDD_HOST_DEVICE double exp_acc(double x) { return ::exp(x); }

}  // namespace sedd
