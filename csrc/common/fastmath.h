// exp() shared by the CPU and the CUDA kernels.
//
// The kernels evaluate exp once per log-score entry, so it must vectorise on the CPU (a libm
// call does not) and cost a handful of FMAs on the GPU. Both back ends use this one function, so
// the numbers tested on the CPU are the numbers the GPU produces (up to FMA contraction).
//
// Method (Cephes expf): x = n·ln2 + r with |r| ≤ ln2/2, e^r by a degree-7 polynomial
// (max relative error ≈ 1 ulp), then 2^n applied as 2^a·2^b with a + b = n so that neither
// factor leaves the normal range. Full IEEE behaviour at the edges:
//   x > ln(FLT_MAX) → +inf (overflow is never clamped to a finite value),
//   x < −104        → +0, subnormal results in between are produced by gradual underflow,
//   NaN             → NaN.
// Checked against libm over the whole range by the CTest program (cpp_tests/).
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
  const F hi = bcast<F>(88.8f);    // above ln(FLT_MAX) = 88.7228: the result is +inf
  const F lo = bcast<F>(-104.0f);  // below ln(smallest subnormal / 2): the result is 0
  const F round = bcast<F>(12582912.0f);  // 1.5·2^23: adding it rounds to an integer
  F xc = x > hi ? hi : x;  // a NaN x passes through both clamps (and makes the result NaN)
  xc = xc < lo ? lo : xc;
  const F t = xc * 1.44269504088896341f + round;
  const F n = t - round;
  const I ni = bitcast<I>(t) - bitcast<I>(round);  // −150..129
  F r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  F p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const I a = ni >> 1;
  const I b = ni - a;
  const F sa = bitcast<F>((a + 127) << 23);
  const F sb = bitcast<F>((b + 127) << 23);
  // Edge cases need no selects: x > 88.8 computes e^{88.8}, which overflows to +inf; x < −104
  // computes e^{−104}, which rounds to +0; a NaN x makes t, p and y NaN.
  return (p * sa) * sb;
}

SEDD_HOST_DEVICE float exp_f32(float x) { return exp_generic<float, int32_t>(x); }

// Per-dtype exp used by the kernels: fp32 for fp32/bf16/fp16 inputs, libm for fp64.
SEDD_HOST_DEVICE float exp_acc(float x) { return exp_f32(x); }
SEDD_HOST_DEVICE double exp_acc(double x) { return ::exp(x); }

}  // namespace sedd
