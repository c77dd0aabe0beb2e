// Reverse steps of SEDD.md §6 (Euler τ-leaping, analytic/Tweedie τ-leaping, the denoiser) and
// the exponential race of categorical sampling: the per-row math shared by the CPU and CUDA
// kernels.
//
// For a position with current token x, log-scores ℓ and s_y = e^{ℓ_y} (s_x = 1 whatever ℓ_x is),
// every step's weights have one of two shapes, both with one "special" entry sp whose weight is
// settled once the row has been read:
//
//  A. w_y = factor·s_y for y ≠ sp, w_sp = max(0, 1 − factor·S'), S' = Σ_{y≠sp} s_y:
//       absorbing (x = M, sp = M)  Euler    factor = δ (Q[M, y] = 1)
//                                  analytic factor = e^δ − 1
//                                  denoise  factor = e^δ − 1 and w_M = 0 (the mask is dropped)
//       uniform (sp = x)           Euler    factor = δ/n (Q[x, y] = 1/n)
//  B. uniform analytic / denoise: the staggered score stag = e^δ s − (e^δ − 1)S/n (S = Σ_z s_z,
//     s_x included) times exp(δQ)[x, ·] gives, with γ = (1 − e^{−δ})S/n and factor = (e^δ − 1)/n,
//       w_y = factor·max(0, s_y − γ) for y ≠ x,  w_x = max(0, 1 − γ)·(1 + factor).
//     γ needs S before any weight: the row is read twice (the second read hits cache on the
//     CPU; on the GPU it is one more read of the row).
//
// Sampling is the exponential race: y* = argmax_y w_y / E_y with E_y = −log1p(−u_y) in fp64 from
// 32 Philox bits of (seed, offset, row, y). The common factor is left out of the non-special keys
// (f_y / E_y with f = s or max(0, s − γ)) and put back when the special entry's key is compared.
// Ties go to the smaller index. Keys that cannot win are skipped before the logarithm: E ≥ u, so
// f_y / E_y ≤ f_y / u_y, and only entries with f_y ≥ best·u_y get their exact key.
//
// Rows that cannot move read nothing: frozen positions, and absorbing positions with x ≠ M.
#pragma once

#include <cfloat>
#include <cmath>
#include <cstdint>

#include "../common/macros.h"
#include "../common/philox.h"

namespace sedd {
namespace steps {

enum class Kind : int { kEuler = 0, kAnalytic = 1, kDenoise = 2 };

struct Plan {
  bool moves;      // false: the token stays and the row is not read
  bool two_pass;   // shape B
  bool drop_sp;    // denoise on the absorbing graph: w_M = 0
  int64_t sp;      // the special entry (x, or M = x for absorbing rows)
  double factor;   // common factor of the non-special weights
  double gamma;    // shape B: γ (set once S is known)
  double delta;
  double n;
};

SEDD_HOST_DEVICE Plan plan(Graph g, Kind kind, int64_t x, double delta, int64_t V, bool frozen) {
  Plan p;
  p.moves = !frozen && (g == Graph::kUniform || x == V - 1);
  p.sp = x;
  p.delta = delta;
  p.n = static_cast<double>(V);
  p.gamma = 0.0;
  p.drop_sp = false;
  p.two_pass = false;
  if (g == Graph::kAbsorb) {
    p.factor = kind == Kind::kEuler ? delta : ::expm1(delta);
    p.drop_sp = kind == Kind::kDenoise;
  } else if (kind == Kind::kEuler) {
    p.factor = delta / p.n;
  } else {
    p.two_pass = true;
    p.factor = ::expm1(delta) / p.n;
  }
  return p;
}

// Shape B: γ from S = Σ_z s_z (s_x = 1 included).
SEDD_HOST_DEVICE void set_total(Plan& p, double S) { p.gamma = -::expm1(-p.delta) * S / p.n; }

// f_y of a non-special entry (its weight is factor·f_y).
SEDD_HOST_DEVICE float f_of(float s, const Plan& p, float gamma_f) {
  if (!p.two_pass) return s;
  const float d = s - gamma_f;
  return d > 0.0f ? d : 0.0f;
}

// Weight of the special entry; S_other = Σ_{y≠sp} s_y (shape A).
SEDD_HOST_DEVICE double special_weight(const Plan& p, double S_other) {
  if (p.drop_sp) return 0.0;
  if (p.two_pass) {
    const double d = 1.0 - p.gamma;
    return (d > 0.0 ? d : 0.0) * (1.0 + p.factor);
  }
  const double w = 1.0 - p.factor * S_other;
  return w > 0.0 ? w : 0.0;
}

// A race candidate: key = f / E (fp64) and index; larger key wins, ties to the smaller index.
struct Best {
  double key;
  int64_t idx;
};

SEDD_HOST_DEVICE bool better(double key, int64_t idx, const Best& b) {
  return key > b.key || (key == b.key && idx < b.idx);
}

SEDD_HOST_DEVICE void offer(Best& b, double f, uint32_t bits, int64_t idx) {
  if (!(f > 0.0)) return;
  const double key = f / philox::exponential(bits);
  if (better(key, idx, b)) b = {key, idx};
}

// Can an entry with weight f and uniform u_f (≤ its exact u) still beat `bound` (≤ the best key)?
SEDD_HOST_DEVICE bool may_win(float f, float u_f, float bound) { return f > 0.0f && f >= bound * u_f; }

// A float bound not above the best key (for may_win). Keys above FLT_MAX (weights ≳ 4e28 with a
// small exponential) clamp to FLT_MAX, still a lower bound of the best key: a float cast would
// give +inf and prune every later finite entry.
SEDD_HOST_DEVICE float bound_of(const Best& b) {
  if (b.idx < 0) return 0.0f;
  const double k = b.key * (1.0 - 1.0 / 65536.0);
  return k < static_cast<double>(FLT_MAX) ? static_cast<float>(k) : FLT_MAX;
}

// A float not below a weight f ≥ 0 given in fp64, for may_win: positive weights below the float
// range (float64 weights below ~1.2e-38, subnormal as floats, or below 1.4e-45, zero) become the
// smallest normal float instead — still not below f, and not flushed to zero by FTZ/DAZ builds —
// so they are offered to the fp64 race rather than pruned as zero.
SEDD_HOST_DEVICE float f_upper(double f) {
  if (!(f > 0.0)) return 0.0f;
  const float u = static_cast<float>(f) * (1.0f + 1e-6f);
  return u >= FLT_MIN ? u : FLT_MIN;
}

// Final choice of a moving row: the special entry against the best of the others.
// Returns the new token, or -1 when every weight is zero.
SEDD_HOST_DEVICE int64_t finish(const Plan& p, const Best& b, double S_other, uint64_t seed,
                                uint64_t offset, uint64_t row) {
  const double w_sp = special_weight(p, S_other);
  const double best_full = b.idx < 0 ? 0.0 : p.factor * b.key;
  if (w_sp > 0.0) {
    const double k_sp = w_sp / philox::exponential(philox::bits(seed, offset, row, p.sp));
    if (b.idx < 0 || k_sp > best_full || (k_sp == best_full && p.sp < b.idx)) return p.sp;
  }
  if (b.idx >= 0 && best_full > 0.0) return b.idx;
  return -1;
}

// Uniform fraction of an Exp race bound: u_f from the top 24 of the 32 bits, never above u.
SEDD_HOST_DEVICE float u_lower(uint32_t bits) { return static_cast<float>(bits >> 8) * 0x1p-24f; }

}  // namespace steps
}  // namespace sedd

namespace sedd {
namespace steps {

// Forward perturbation of one position (SEDD.md §1): with probability 1 − e^{−σ} the token is
// replaced, by the mask (absorbing; the mask stays the mask) or by a uniform token of [0, V)
// (uniform; it may equal x0). Bits: column 0 decides, columns 16 and 32 give 64 bits for the token.
// The decision from the words of call 0 of the row (w0 decides, w1:w2 give the token) and the
// move probability p_move = 1 − e^{−σ}.
SEDD_HOST_DEVICE int64_t perturb_from_bits(Graph g, int64_t x0, double p_move, int64_t V,
                                           uint32_t w0, uint32_t w1, uint32_t w2) {
  if (!(philox::uniform(w0) < p_move)) return x0;
  if (g == Graph::kAbsorb) return V - 1;
  const uint64_t r64 = (static_cast<uint64_t>(w1) << 32) | w2;
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(__umul64hi(r64, static_cast<uint64_t>(V)));
#else
  return static_cast<int64_t>((static_cast<unsigned __int128>(r64) * static_cast<uint64_t>(V)) >> 64);
#endif
}

SEDD_HOST_DEVICE int64_t perturb_one(Graph g, int64_t x0, double sigma, int64_t V, uint64_t seed,
                                     uint64_t offset, uint64_t row) {
  const philox::Ctr c = philox::philox4x32_10(philox::make_ctr(0, row, offset),
                                              philox::make_key(seed, offset));
  return perturb_from_bits(g, x0, -::expm1(-sigma), V, c.c0, c.c1, c.c2);
}

}  // namespace steps
}  // namespace sedd
