// Reverse steps of docs/math.md §6 (Euler τ-leaping, analytic/Tweedie τ-leaping, the denoiser) and
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
// Sampling is an exponential race, y* = argmin_y E_y / w_y with E_y ~ Exp(1) i.i.d. (docs/math.md §6),
// run with exponential jumps (Efraimidis & Spirakis's A-ExpJ for a reservoir of one, in the
// clock form), so that a row needs O(log V) random numbers instead of one per entry; see "The
// jump race" below. The common factor is left out of the non-special weights (the race runs on
// f_y = s or max(0, s − γ)) and put back when the special entry is settled after the row sum.
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

// ---- The jump race -------------------------------------------------------------------------
//
// Every entry y with weight f_y > 0 gets a clock E_y / f_y, E_y ~ Exp(1); the smallest wins. With
// the leader's clock T (rate λ = 1/T, λ = 0 before the first positive entry), a later entry beats
// it with probability 1 − e^{−f_y·T}, independently of the others; so the first entry to beat it
// is found without touching a random number per entry: draw X ~ Exp(1) and walk on until the
// weight passed since the leader exceeds X/T = X·λ (the "skip"). P(the walk stops at y) =
// e^{−T·C_{y−1}}(1 − e^{−T·f_y}) with C the weight passed before y — exactly the race. The new
// leader's clock is the race's conditioned on beating T: T' = −log1p(−U·(1 − e^{−f_y T})) / f_y,
// U ~ U(0, 1). Expected records over n positive entries of similar weight: H_n ≈ ln n + 0.58
// (≈ 9.6 for a full segment), two uniforms each.
//
// Segments: the row is cut into fixed segments of kSegment entries, each with its own race and
// its own random stream (Philox call (segment, record)); the row's winner is the fastest of the
// segments' leaders (disjoint races of independent clocks: exact). The draws are thus the same
// whatever the thread count or block size, and a GPU warp runs one segment while the others run
// theirs. Ties go to the smaller index (the earlier segment).
//
// Precision: every quantity is fp64 — clocks as rates λ ≤ f·2^54, skips X·λ, weights passed —
// and the uniforms carry 53 random bits (U ≥ 2^-54, so E ≥ 2^-54: the tail is not clipped). A
// weight of any float (fp32, bf16, fp16: below 3.4e38, above 1e-45) is drawn at its rate to fp64
// rounding: no key can overflow or underflow. fp64 weights span a wider range, so fp64 rows are
// scaled once by a power of two that puts their largest weight in [1, 2) (exact; subnormal rows
// as far as 2^1023 goes); only weights below 2^-1074 of the largest — probability < 1e-300 —
// then flush to zero.
constexpr int64_t kSegment = 8192;
constexpr int kRecordBits = 14;  // Philox call = segment << 14 | record: < 2^18 segments, ≤ 8192 records
constexpr uint32_t kSpecialCall = 0xFFFFFFFFu;  // the special entry's call: no segment reaches it

SEDD_HOST_DEVICE double uniform53(uint32_t hi, uint32_t lo) {
  const uint64_t b = ((static_cast<uint64_t>(hi) << 32) | lo) >> 11;
  return (static_cast<double>(b) + 0.5) * 0x1p-53;  // in (0, 1), exact
}

// The two uniforms of record `rec` of segment `seg` (or of the special entry).
struct Draw {
  double u, e;  // u ~ U(0, 1) for the conditioned clock; e ~ Exp(1) for the next skip
};
SEDD_HOST_DEVICE Draw draw(uint64_t seed, uint64_t offset, uint64_t row, uint32_t call) {
  const philox::Ctr c = philox::philox4x32_10(philox::make_ctr(call, row, offset),
                                              philox::make_key(seed, offset));
  return {uniform53(c.c0, c.c1), -::log1p(-uniform53(c.c2, c.c3))};
}
SEDD_HOST_DEVICE uint32_t record_call(int64_t seg, uint32_t rec) {
  return (static_cast<uint32_t>(seg) << kRecordBits) | rec;
}

// One segment's race. Feed entries in order: pass(f) tells whether f ends the skip (then call
// record), else consumes it.
struct Jump {
  double rate = 0.0;  // λ of the leader (0: none yet)
  double skip = 0.0;  // weight still to pass before the next record
  int64_t idx = -1;   // the leader
  uint32_t rec = 0;   // records so far (the Philox call within the segment)

  SEDD_HOST_DEVICE bool ends_skip(double f) const { return f > 0.0 && skip < f; }
  SEDD_HOST_DEVICE void pass(double f) {
    const double r = skip - f;
    skip = r > 0.0 ? r : 0.0;
  }
  // f ends the skip: the entry takes the lead with a clock conditioned to beat the leader's.
  SEDD_HOST_DEVICE void record(double f, int64_t y, int64_t seg, uint64_t seed, uint64_t offset,
                               uint64_t row) {
    const Draw d = draw(seed, offset, row, record_call(seg, rec++));
    const double beat = -::expm1(-(f / rate));  // 1 − e^{−f·T}; 1 when there is no leader
    const double clock_f = -::log1p(-d.u * beat);  // f·T' ∈ (0, f·T)
    rate = f / clock_f;
    skip = d.e * rate;
    idx = y;
  }
  // Entry (f, y): record or pass.
  SEDD_HOST_DEVICE void visit(double f, int64_t y, int64_t seg, uint64_t seed, uint64_t offset,
                              uint64_t row) {
    if (ends_skip(f)) {
      record(f, y, seg, seed, offset, row);
    } else {
      pass(f);
    }
  }
};

// The fastest leader so far: larger rate wins, ties to the smaller index.
struct Best {
  double rate;
  int64_t idx;
};
SEDD_HOST_DEVICE bool better(double rate, int64_t idx, const Best& b) {
  return idx >= 0 && (b.idx < 0 || rate > b.rate || (rate == b.rate && idx < b.idx));
}
SEDD_HOST_DEVICE void take(Best& b, double rate, int64_t idx) {
  if (better(rate, idx, b)) b = {rate, idx};
}

// A uniform index of [0, n) from the special call's words 2 and 3 (64 bits, multiply-high).
SEDD_HOST_DEVICE int64_t uniform_index(uint64_t seed, uint64_t offset, uint64_t row, int64_t n) {
  const philox::Ctr c = philox::philox4x32_10(philox::make_ctr(kSpecialCall, row, offset),
                                              philox::make_key(seed, offset));
  const uint64_t r64 = (static_cast<uint64_t>(c.c2) << 32) | c.c3;
#if defined(__CUDA_ARCH__)
  return static_cast<int64_t>(__umul64hi(r64, static_cast<uint64_t>(n)));
#else
  return static_cast<int64_t>((static_cast<unsigned __int128>(r64) * static_cast<uint64_t>(n)) >> 64);
#endif
}

// Final choice of a moving row: the special entry against the fastest non-special leader `b`
// (rates in f units times `scale`, the fp64 rows' power of two; 1 otherwise). S_other = Σ_{y≠sp}
// s_y unscaled (shape A). Returns the new token, or −1 when every weight is zero.
SEDD_HOST_DEVICE int64_t finish(const Plan& p, const Best& b, double S_other, double scale,
                                uint64_t seed, uint64_t offset, uint64_t row) {
  const double w_sp = special_weight(p, S_other);
  const bool others = b.idx >= 0 && p.factor > 0.0;
  if (w_sp > 0.0) {
    if (!others) return p.sp;
    // the special clock E/w_sp against the leader's 1/(factor·rate/scale), both as rates in f
    // units times scale
    const double e = draw(seed, offset, row, kSpecialCall).e;
    const double rate_sp = (w_sp / p.factor) * scale / e;
    if (rate_sp > b.rate || (rate_sp == b.rate && p.sp < b.idx)) return p.sp;
  }
  return others ? b.idx : -1;
}

// The power of two that brings an fp64 row's largest weight m (> 0, finite) into [1, 2) — or, for
// m below 2^-1022 (subnormal), as close as a finite scale of 2^1023 gets.
SEDD_HOST_DEVICE double row_scale(double m) {
  if (!(m > 0.0) || m == INFINITY) return 1.0;
  int e;
  ::frexp(m, &e);  // m = q·2^e, q ∈ [0.5, 1)
  return ::ldexp(1.0, 1 - e < 1023 ? 1 - e : 1023);
}

}  // namespace steps
}  // namespace sedd

namespace sedd {
namespace steps {

// Forward perturbation of one position (docs/math.md §1): with probability 1 − e^{−σ} the token is
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
