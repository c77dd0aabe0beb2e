// Score entropy (docs/math.md §3): the per-row math shared by the CPU and the CUDA kernels.
//
// A row is one position (b, i): log-scores ℓ ∈ R^V, perturbed token x = x_t[b, i], clean token
// x0 = x_0[b, i], noise level σ = sigma[b]. The kernels stream the row once to form the sums
// below (accumulated in fp32 per lane/thread and combined in fp64), then finish the loss here in
// fp64. The backward writes ∂SE/∂ℓ_y · g for every y with grad_at().
//
// Absorbing (mask M = V − 1), rows with x = M only:
//   SE = Σ_{y<M} e^{ℓ_y} − r·ℓ_{x0} + r(log r − 1),          r = 1 / expm1(σ)
//   ∂SE/∂ℓ_y = e^{ℓ_y}[y ≠ M] − r[y = x0]
// Uniform (n = V), with e = expm1(σ), ρ = e/(e + n), A = Σ_{y≠x} e^{ℓ_y}/n, N = Σ_{y≠x} ℓ_y/n:
//   x = x0: SE = A − ρN + ((n−1)/n)·ρ(log ρ − 1)
//   x ≠ x0: SE = A − (N + ℓ_{x0}/e) + ((−log ρ − 1)/ρ − (n − 2))/n
//   ∂SE/∂ℓ_y = (e^{ℓ_y} − c)/n·[y ≠ x] − [x ≠ x0][y = x0]/e,   c = ρ if x = x0 else 1
//
// σ = +inf is accepted as the limit (r = 0, ρ = 1) with the convention K(0) = 0 and 0·ℓ = 0;
// σ ≤ 0 or NaN is rejected by the callers.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>

#include "../common/fastmath.h"
#include "../common/macros.h"

namespace sedd {
namespace se {

// Per-row constants, computed once per row in fp64 from σ and the graph.
struct RowConst {
  double r;     // absorbing: 1/expm1(σ); uniform: ρ = e/(e + n)
  double inv_e; // uniform: 1/expm1(σ)
  double n;     // uniform: V
};

SEDD_HOST_DEVICE RowConst row_const(Graph g, double sigma, int64_t V) {
  RowConst c;
  const double e = ::expm1(sigma);
  c.inv_e = 1.0 / e;
  c.n = static_cast<double>(V);
  c.r = g == Graph::kAbsorb ? 1.0 / e : 1.0 / (1.0 + c.n / e);
  return c;
}

// 0·ℓ = 0 even for infinite ℓ, as the limit σ → ∞ requires.
SEDD_HOST_DEVICE double scaled(double coeff, double v) { return coeff == 0.0 ? 0.0 : coeff * v; }
// a·(log a − 1) with K(0) = 0.
SEDD_HOST_DEVICE double kfun(double a) { return a == 0.0 ? 0.0 : a * (::log(a) - 1.0); }

// Does the row need the log-scores at all? Absorbing rows with x ≠ M read nothing.
SEDD_HOST_DEVICE bool row_active(Graph g, int64_t x, int64_t V) {
  return g == Graph::kUniform || x == V - 1;
}

// Are the row's inputs valid? (Host code raises errors before the kernel; the CUDA kernel
// cannot raise, so it writes NaN for a row that fails this and never reads out of bounds.)
SEDD_HOST_DEVICE bool row_valid(Graph g, int64_t x, int64_t x0, double sigma, int64_t V) {
  const int64_t hi0 = g == Graph::kAbsorb ? V - 1 : V;  // the mask is not a clean token
  return x >= 0 && x < V && x0 >= 0 && x0 < hi0 && sigma > 0.0;  // NaN σ fails `sigma > 0`
}

// Loss of an absorbing row with x = M from sum_exp = Σ_{y<M} e^{ℓ_y}.
SEDD_HOST_DEVICE double absorb_loss(double sum_exp, double l_x0, const RowConst& c) {
  return sum_exp - scaled(c.r, l_x0) + kfun(c.r);
}

// Loss of a uniform row from sum_exp = Σ_{y≠x} e^{ℓ_y} and sum_l = Σ_{y≠x} ℓ_y.
SEDD_HOST_DEVICE double uniform_loss(double sum_exp, double sum_l, double l_x0, bool same,
                                     const RowConst& c) {
  const double A = sum_exp / c.n;
  const double N = sum_l / c.n;
  const double rho = c.r;
  if (same) return A - rho * N + (c.n - 1.0) / c.n * kfun(rho);
  return A - (N + scaled(c.inv_e, l_x0)) + ((-::log(rho) - 1.0) / rho - (c.n - 2.0)) / c.n;
}

// Gradient of one entry: g·∂SE/∂ℓ_y, for y anywhere in the row. `ex` is e^{ℓ_y} (exp_acc).
// The bulk of a row is grad_body(ex, k) = a·ex + b; grad_at adds the special entries.
// acc_t is float for fp32/bf16/fp16 inputs and double for fp64 inputs.
template <typename acc_t>
struct GradConst {
  acc_t a;        // coefficient of e^{ℓ_y}: g (absorbing) or g/n (uniform)
  acc_t b;        // constant part: 0 (absorbing) or −g·c/n (uniform)
  acc_t extra;    // subtracted at y = x0: g·r (absorbing) or g/e when x ≠ x0 (uniform), else 0
  int64_t zero;   // the entry whose gradient is 0: M (absorbing) or x (uniform)
  int64_t x0;
};

template <typename acc_t>
SEDD_HOST_DEVICE GradConst<acc_t> grad_const(Graph g, double gout, int64_t x, int64_t x0,
                                             const RowConst& c, int64_t V) {
  GradConst<acc_t> k;
  k.x0 = x0;
  if (g == Graph::kAbsorb) {
    k.a = static_cast<acc_t>(gout);
    k.b = acc_t(0);
    k.extra = static_cast<acc_t>(scaled(gout, c.r));
    k.zero = V - 1;
  } else {
    const double cc = x == x0 ? c.r : 1.0;
    k.a = static_cast<acc_t>(gout / c.n);
    k.b = static_cast<acc_t>(-gout * cc / c.n);
    k.extra = x == x0 ? acc_t(0) : static_cast<acc_t>(scaled(gout, c.inv_e));
    k.zero = x;
  }
  return k;
}

template <typename acc_t>
SEDD_HOST_DEVICE acc_t grad_body(acc_t ex, const GradConst<acc_t>& k) {
  return k.a * ex + k.b;
}

template <typename acc_t, typename idx_t>
SEDD_HOST_DEVICE acc_t grad_at(idx_t y, acc_t ex, const GradConst<acc_t>& k) {
  acc_t v = grad_body(ex, k);
  if (y == static_cast<idx_t>(k.x0)) v -= k.extra;
  if (y == static_cast<idx_t>(k.zero)) v = acc_t(0);
  return v;
}

}  // namespace se
}  // namespace sedd
