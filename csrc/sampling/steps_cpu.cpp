// Sampling ops on the CPU: rows in parallel, each row read once (twice, from cache, for the
// uniform analytic step), Philox bits 16 calls at a time, exp in SIMD, exact race keys only for
// the few entries that can still win. The math is in steps.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <atomic>
#include <cstring>
#include <limits>
#include <vector>
#include <type_traits>

#include "../common/cpu_rows.h"
#include "../common/cpu_utils.h"
#include "steps.h"
#include "steps_args.h"
#include "steps_ops.h"

namespace sedd {
namespace {

using cpu::kVecLen;
using cpu::load;
using steps::Best;
using steps::Plan;

// Philox for the 16 lanes of 64-column block `blk` of a row: out[w][k] is column 64·blk + 16w + k
// (the mapping of philox.h), computed kVecLen lanes at a time.
// Ten Philox rounds on kVecLen counters at once (philox.h's philox4x32_10, lane by lane).
void philox_lanes(cpu::vuint& c0, cpu::vuint& c1, cpu::vuint& c2, cpu::vuint& c3,
                  philox::Key key) {
  using cpu::vuint;
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int i = 0; i < 10; ++i) {
    const vuint hi0 = cpu::vmulhi(c0, philox::kM0), lo0 = c0 * philox::kM0;
    const vuint hi1 = cpu::vmulhi(c2, philox::kM1), lo1 = c2 * philox::kM1;
    const vuint n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += philox::kW0;
    k1 += philox::kW1;
  }
}

struct RaceOut {
  Best best{0.0, -1};
  double sum = 0.0;    // Σ over y ≠ skip of s (steps; f under kTwoPass, unread) or of w (weights)
  double scale = 1.0;  // the power of two the fp64 rows' race ran at (steps.h, row_scale)
  bool bad = false;    // a NaN (or, for weights, a negative value) was seen
};

typedef float vhalf __attribute__((vector_size(cpu::kVecBytes / 2)));
typedef double vdouble __attribute__((vector_size(cpu::kVecBytes)));  // kVecLen / 2 doubles

// Σ of n (a multiple of 16) values in fp64 (kVecLen/2-wide fp64 lanes, then across them).
inline double block_sum_f64(const float* f, int n) {
  constexpr int kHalf = kVecLen / 2;
  vdouble acc{};
  for (int q = 0; q < n; q += kHalf) {
    vhalf h;
    std::memcpy(&h, f + q, sizeof h);
    acc += __builtin_convertvector(h, vdouble);
  }
  double s = 0.0;
  for (int k = 0; k < kHalf; ++k) s += acc[k];
  return s;
}

// The jump race over a row (steps.h). kExp: values are log-scores (s = e^{(v + bias_y) + shift},
// steps; `bias` [V] in the accumulation type, or nullptr for none);
// else they are weights. `skip` is left out (the special entry of a step; −1 for none).
// f = s, or max(0, s − γ) when kTwoPass. Segment by segment; within a segment, a 64-entry block
// whose weight does not end the skip is passed whole (its fp64 sum), the others are walked: the
// 16-entry parts that do not end it passed whole, the rest entry by entry.
template <bool kExp, bool kTwoPass, typename T>
RaceOut race_row(const T* row, int64_t V, int64_t skip, double gamma, cpu::acc_t<T> shift,
                 const cpu::acc_t<T>* bias, uint64_t seed, uint64_t offset, uint64_t r) {
  using A = cpu::acc_t<T>;
  RaceOut o;
  auto value = [&](int64_t y) -> double {  // s_y, 0 at `skip`
    if (y == skip) return 0.0;
    A v = static_cast<A>(load(row + y));
    if (kExp && bias != nullptr) v = static_cast<A>(v + bias[y]);
    return static_cast<double>(kExp ? exp_acc(static_cast<A>(v + shift)) : v);
  };
  auto f_of = [&](double s) {
    if (!kTwoPass) return s;
    const A d = static_cast<A>(s) - static_cast<A>(gamma);
    return static_cast<double>(d > A(0) ? d : A(0));
  };
  if constexpr (std::is_same_v<T, double>) {
    // fp64: one pass for the sum, the checks and the largest weight, then the race at a scale
    double m = 0.0;
    for (int64_t y = 0; y < V; ++y) {
      const double s = value(y);
      if (!(s >= 0.0)) o.bad = true;
      o.sum += s;
      const double f = f_of(s);
      if (f > m) m = f;
    }
    if (o.bad) return o;
    o.scale = steps::row_scale(m);
    for (int64_t seg = 0; seg * steps::kSegment < V; ++seg) {
      steps::Jump j;
      const int64_t end = std::min(V, (seg + 1) * steps::kSegment);
      for (int64_t y = seg * steps::kSegment; y < end; ++y) {
        j.visit(f_of(value(y)) * o.scale, y, seg, seed, offset, r);
      }
      steps::take(o.best, j.rate, j.idx);
    }
    return o;
  } else {
    const float gam = static_cast<float>(gamma);
    cpu::vint vbad{};
    for (int64_t seg = 0; seg * steps::kSegment < V; ++seg) {
      steps::Jump j;
      const int64_t end = std::min(V, (seg + 1) * steps::kSegment);
      int64_t y = seg * steps::kSegment;
      for (; y + 64 <= end; y += 64) {
        const bool has_skip = static_cast<uint64_t>(skip - y) < 64;
        for (int q = 0; q < 64 * static_cast<int>(sizeof(T)); q += 64) {
          cpu::prefetch_ahead(reinterpret_cast<const char*>(row + y) + q);
        }
        alignas(64) float f[64];
        for (int q = 0; q < 64; q += kVecLen) {
          cpu::vfloat v = cpu::vload(row + y + q);
          if (kExp && bias != nullptr) v += cpu::vload(bias + y + q);
          cpu::vfloat sv = kExp ? cpu::vexp(v + shift) : v;
          if (has_skip) {
            for (int k = 0; k < kVecLen; ++k) {
              if (y + q + k == skip) sv[k] = 0.0f;
            }
          }
          vbad |= !(sv >= 0.0f);
          const cpu::vfloat d = sv - gam;
          const cpu::vfloat fv = kTwoPass ? (d > 0.0f ? d : cpu::vfloat{}) : sv;
          std::memcpy(f + q, &fv, sizeof fv);
        }
        const double bsum = block_sum_f64(f, 64);
        o.sum += bsum;  // = Σ s when !kTwoPass (the only case that reads it)
        if (!(j.skip < bsum)) {
          j.pass(bsum);
          continue;
        }
        // the skip ends in this block: walk only the 16-entry parts it ends in
        for (int q = 0; q < 64; q += 16) {
          const double part = block_sum_f64(f + q, 16);
          if (!(j.skip < part)) {
            j.pass(part);
            continue;
          }
          for (int k = q; k < q + 16; ++k) j.visit(f[k], y + k, seg, seed, offset, r);
        }
      }
      for (; y < end; ++y) {
        const double s = value(y);
        if (!(s >= 0.0)) o.bad = true;
        const double f = f_of(s);
        o.sum += f;
        j.visit(f, y, seg, seed, offset, r);
      }
      steps::take(o.best, j.rate, j.idx);
    }
    for (int k = 0; k < kVecLen; ++k) o.bad |= vbad[k] != 0;
    return o;
  }
}

}  // namespace

at::Tensor reverse_step_cpu(const at::Tensor& log_score, const at::Tensor& x,
                            const at::Tensor& dsigma, c10::string_view graph,
                            c10::string_view kind, const at::Tensor& rng,
                            const c10::optional<at::Tensor>& frozen,
                            const c10::optional<at::Tensor>& shift,
                            const c10::optional<at::Tensor>& bias) {
  const char* op = "reverse_step";
  const steps::StepInputs in =
      steps::prepare_step(op, log_score, x, dsigma, graph, kind, frozen, shift, bias);
  const steps::StepArgs& a = in.a;
  const int64_t* xp = in.x.data_ptr<int64_t>();
  const double* dp = in.dsigma.data_ptr<double>();
  const bool* fp = a.has_frozen ? in.frozen.data_ptr<bool>() : nullptr;
  const double* shp = in.shift.defined() ? in.shift.data_ptr<double>() : nullptr;
  for (int64_t b = 0; b < a.B; ++b) {
    SEDD_CHECK_VALUE(dp[b] >= 0.0, op, ": dsigma must be >= 0, got ", dp[b], " at dsigma[", b, "]");
  }
  for (int64_t r = 0; r < a.B * a.L; ++r) {
    SEDD_CHECK_VALUE(xp[r] >= 0 && xp[r] < a.V, op, ": x must hold token ids in [0, V) = [0, ",
                     a.V, "), got ", xp[r], " at x[", r / a.L, ", ", r % a.L, "]");
  }
  at::Tensor out = at::empty({a.B, a.L}, x.options());
  int64_t* op_out = out.data_ptr<int64_t>();
  std::atomic<int64_t> bad_row{-1};
  const auto [useed, uoff] = steps::rng_values(steps::check_rng(op, rng, log_score, "log_score"));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, log_score.scalar_type(), "reverse_step_cpu", [&] {
    using acc_t = cpu::acc_t<scalar_t>;
    const acc_t* bp = in.bias.defined() ? in.bias.data_ptr<acc_t>() : nullptr;
    const scalar_t* base = log_score.data_ptr<scalar_t>();
    const int64_t sB = log_score.stride(0), sL = log_score.stride(1), V = a.V, L = a.L;
    at::parallel_for(0, a.B * L, cpu::row_grain(V), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / L, i = r % L, x0 = xp[r];
        Plan p = steps::plan(a.graph, a.kind, x0, dp[b], V, fp != nullptr && fp[r]);
        op_out[r] = x0;
        if (!p.moves) continue;
        const scalar_t* row = base + b * sB + i * sL;
        const acc_t sh = shp != nullptr ? static_cast<acc_t>(shp[b]) : acc_t(0);
        if (p.two_pass) {
          double S = 1.0, unused = 0.0;
          cpu::row_sums<false>(row, 0, x0, S, unused, sh, bp);
          cpu::row_sums<false>(row, x0 + 1, V, S, unused, sh, bp);
          steps::set_total(p, S);
        }
        const uint64_t ur = static_cast<uint64_t>(r);
        const RaceOut o =
            p.two_pass ? race_row<true, true>(row, V, p.sp, p.gamma, sh, bp, useed, uoff, ur)
                       : race_row<true, false>(row, V, p.sp, 0.0, sh, bp, useed, uoff, ur);
        if (o.bad || std::isnan(p.gamma)) {
          bad_row.store(r);
          continue;
        }
        int64_t y = steps::finish(p, o.best, o.sum, o.scale, useed, uoff, ur);
        if (y < 0 && p.drop_sp) {  // denoiser, absorbing, every score 0: uniform over y < M
          y = steps::uniform_index(useed, uoff, ur, V - 1);
        }
        op_out[r] = y < 0 ? x0 : y;
      }
    });
  });
  const int64_t br = bad_row.load();
  SEDD_CHECK_VALUE(br < 0, op, ": log_score has NaN entries in row [", br / a.L, ", ", br % a.L,
                   "]");
  return out;
}

at::Tensor sample_categorical_cpu(const at::Tensor& weights, const at::Tensor& rng) {
  const char* op = "sample_categorical";
  const auto [useed, uoff] = steps::rng_values(steps::check_rng(op, rng, weights, "weights"));
  steps::CategoricalRows c = steps::categorical_rows(op, weights);
  at::Tensor out = c.out;
  if (!c.rows.defined()) return out;
  const at::Tensor& w = c.rows;
  const int64_t R = w.size(0), V = w.size(1), sR = w.stride(0);
  int64_t* po = out.data_ptr<int64_t>();
  std::atomic<int64_t> bad_row{-1}, zero_row{-1};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, w.scalar_type(), "sample_categorical_cpu", [&] {
    const scalar_t* base = w.data_ptr<scalar_t>();
    at::parallel_for(0, R, cpu::row_grain(V), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const RaceOut o = race_row<false, false>(base + r * sR, V, -1, 0.0, 0.0f, nullptr, useed, uoff,
                                          static_cast<uint64_t>(r));
        if (o.bad) bad_row.store(r);
        if (o.best.idx < 0) zero_row.store(r);
        po[r] = o.best.idx;
      }
    });
  });
  const int64_t br = bad_row.load(), zr = zero_row.load();
  SEDD_CHECK_VALUE(br < 0, op, ": weights must be non-negative and not NaN; row ", br,
                   " (of the flattened [..., V] rows) is not");
  SEDD_CHECK_VALUE(zr < 0, op, ": every row of weights needs a positive entry; row ", zr,
                   " (of the flattened [..., V] rows) has none");
  return out;
}

at::Tensor perturb_cpu(const at::Tensor& x_0, const at::Tensor& sigma, c10::string_view graph,
                       int64_t num_tokens, const at::Tensor& rng) {
  const char* op = "perturb";
  const auto [useed, uoff] = steps::rng_values(steps::check_rng(op, rng, x_0, "x_0"));
  const steps::PerturbInputs in = steps::prepare_perturb(op, x_0, sigma, graph, num_tokens);
  const Graph g = in.graph;
  const int64_t B = x_0.size(0), L = x_0.size(1), V = num_tokens;
  const int64_t* xp = in.x0.data_ptr<int64_t>();
  const double* sp = in.sigma.data_ptr<double>();
  for (int64_t b = 0; b < B; ++b) {
    SEDD_CHECK_VALUE(sp[b] >= 0.0, op, ": sigma must be >= 0, got ", sp[b], " at sigma[", b, "]");
  }
  for (int64_t r = 0; r < B * L; ++r) {
    SEDD_CHECK_VALUE(xp[r] >= 0 && xp[r] < V, op, ": x_0 must hold token ids in [0, num_tokens) = [0, ",
                     V, "), got ", xp[r], " at x_0[", r / L, ", ", r % L, "]");
  }
  at::Tensor out = at::empty({B, L}, x_0.options());
  int64_t* po = out.data_ptr<int64_t>();
  std::vector<double> p_move(B);
  for (int64_t b = 0; b < B; ++b) p_move[b] = -std::expm1(-sp[b]);
  const philox::Key key = philox::make_key(useed, uoff);
  at::parallel_for(0, B * L, cpu::row_grain(8), [&](int64_t begin, int64_t end) {
    int64_t r = begin;
    for (; r + kVecLen <= end; r += kVecLen) {  // call 0 of kVecLen rows at once
      cpu::vuint c0{}, c1, c2, c3 = cpu::vuint{} + static_cast<uint32_t>(uoff);
      for (int k = 0; k < kVecLen; ++k) {
        c1[k] = static_cast<uint32_t>(r + k);
        c2[k] = static_cast<uint32_t>(static_cast<uint64_t>(r + k) >> 32);
      }
      philox_lanes(c0, c1, c2, c3, key);
      for (int k = 0; k < kVecLen; ++k) {
        po[r + k] = steps::perturb_from_bits(g, xp[r + k], p_move[(r + k) / L], V, c0[k], c1[k],
                                             c2[k]);
      }
    }
    for (; r < end; ++r) {
      po[r] = steps::perturb_one(g, xp[r], sp[r / L], V, useed, uoff, static_cast<uint64_t>(r));
    }
  });
  return out;
}

}  // namespace sedd
