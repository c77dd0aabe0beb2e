// Counter-based random numbers (Philox4x32-10, Salmon et al. 2011), shared by the CPU and CUDA
// kernels. Every random draw is a pure function of (seed, offset, row, column), so results do not
// depend on thread counts, block sizes or how rows are split, and CPU/GPU use the same mapping.
//
// Column mapping: column y of a row uses word w = (y >> 4) & 3 of Philox call
// j = (y >> 6)·16 + (y & 15), i.e. 16 consecutive calls ("lanes") cover 64 consecutive columns,
// word w giving columns 16w .. 16w+15 of the block. The counter is (j, row_lo, row_hi, offset_lo),
// the key (seed_lo, seed_hi ^ offset_hi).
#pragma once

#include <cmath>
#include <cstdint>

#include "macros.h"

namespace sedd {
namespace philox {

constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;

struct Key {
  uint32_t k0, k1;
};
struct Ctr {
  uint32_t c0, c1, c2, c3;
};

SEDD_HOST_DEVICE Key make_key(uint64_t seed, uint64_t offset) {
  return {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32) ^
                                           static_cast<uint32_t>(offset >> 32)};
}

SEDD_HOST_DEVICE Ctr make_ctr(uint64_t call, uint64_t row, uint64_t offset) {
  return {static_cast<uint32_t>(call), static_cast<uint32_t>(row),
          static_cast<uint32_t>(row >> 32), static_cast<uint32_t>(offset)};
}

SEDD_HOST_DEVICE void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
#if defined(__CUDA_ARCH__)
  lo = a * b;
  hi = __umulhi(a, b);
#else
  const uint64_t p = static_cast<uint64_t>(a) * b;
  lo = static_cast<uint32_t>(p);
  hi = static_cast<uint32_t>(p >> 32);
#endif
}

// Ten rounds; returns the four 32-bit words in c.
SEDD_HOST_DEVICE Ctr philox4x32_10(Ctr c, Key k) {
#if defined(__CUDA_ARCH__)
#pragma unroll
#endif
  for (int i = 0; i < 10; ++i) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(kM0, c.c0, hi0, lo0);
    mulhilo(kM1, c.c2, hi1, lo1);
    c = {hi1 ^ c.c1 ^ k.k0, lo1, hi0 ^ c.c3 ^ k.k1, lo0};
    k.k0 += kW0;
    k.k1 += kW1;
  }
  return c;
}

SEDD_HOST_DEVICE uint64_t call_of(int64_t y) { return static_cast<uint64_t>((y >> 6) * 16 + (y & 15)); }
SEDD_HOST_DEVICE int word_of(int64_t y) { return static_cast<int>((y >> 4) & 3); }

SEDD_HOST_DEVICE uint32_t word(const Ctr& c, int w) {
  return w == 0 ? c.c0 : w == 1 ? c.c1 : w == 2 ? c.c2 : c.c3;
}

// The 32 random bits of (row, column y).
SEDD_HOST_DEVICE uint32_t bits(uint64_t seed, uint64_t offset, uint64_t row, int64_t y) {
  return word(philox4x32_10(make_ctr(call_of(y), row, offset), make_key(seed, offset)), word_of(y));
}

// u = (b + 1/2)·2^-32 ∈ (0, 1), exact in double: never 0 or 1.
SEDD_HOST_DEVICE double uniform(uint32_t b) { return (static_cast<double>(b) + 0.5) * 0x1p-32; }
// A float lower-ish approximation of the same u (for cheap bounds; relative error ≤ 2^-24).
SEDD_HOST_DEVICE float uniform_f(uint32_t b) { return static_cast<float>(b) * 0x1p-32f + 0x1p-33f; }

// Exp(1) variate E = −log(1 − u) = −log1p(−u), in double: full precision for small E (the draws
// that let low-probability tokens win the race), 32 random bits per draw.
SEDD_HOST_DEVICE double exponential(uint32_t b) { return -::log1p(-uniform(b)); }

}  // namespace philox
}  // namespace sedd
