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

void philox_block(uint64_t seed, uint64_t offset, uint64_t row, uint64_t blk,
                  uint32_t out[4][16]) {
  using cpu::vuint;
  for (int g = 0; g < 16; g += kVecLen) {
    vuint c0, c1 = vuint{} + static_cast<uint32_t>(row);
    vuint c2 = vuint{} + static_cast<uint32_t>(row >> 32), c3 = vuint{} + static_cast<uint32_t>(offset);
    for (int k = 0; k < kVecLen; ++k) c0[k] = static_cast<uint32_t>(blk * 16 + g + k);
    philox_lanes(c0, c1, c2, c3, philox::make_key(seed, offset));
    std::memcpy(out[0] + g, &c0, sizeof c0);
    std::memcpy(out[1] + g, &c1, sizeof c1);
    std::memcpy(out[2] + g, &c2, sizeof c2);
    std::memcpy(out[3] + g, &c3, sizeof c3);
  }
}

struct RaceOut {
  Best best{0.0, -1};
  double sum = 0.0;   // Σ of the transformed values over y ≠ skip (s for steps, w for weights)
  bool bad = false;   // a NaN (or, for weights, a negative value) was seen
};

// The race over a row. kExp: values are log-scores (s = e^v, steps); else they are weights.
// `skip` is left out (the special entry of a step; −1 for none). f = transform of s:
// s itself, or max(0, s − γ) when `two_pass`.
template <bool kExp, typename T>
RaceOut race_row(const T* row, int64_t V, int64_t skip, bool two_pass, double gamma,
                 uint64_t seed, uint64_t offset, uint64_t r) {
  RaceOut o;
  float bound = 0.0f;
  auto scalar = [&](int64_t y, uint32_t bits) {
    if (y == skip) return;
    const double v = static_cast<double>(load(row + y));
    const double s = kExp ? static_cast<double>(exp_acc(static_cast<cpu::acc_t<T>>(v))) : v;
    if (!(s >= 0.0)) {  // NaN, or a negative weight
      o.bad = true;
      return;
    }
    o.sum += s;
    const double f = two_pass ? (s - gamma > 0.0 ? s - gamma : 0.0) : s;
    if (steps::may_win(steps::f_upper(f), steps::u_lower(bits), bound)) {
      steps::offer(o.best, f, bits, y);
      bound = steps::bound_of(o.best);
    }
  };
  int64_t blk = 0;
  if constexpr (!std::is_same_v<T, double>) {
    const float gam = static_cast<float>(gamma);
    cpu::vfloat vsum{};   // fp32 lanes, flushed to fp64 every 16 blocks (1024 entries)
    cpu::vint vbad{};
    for (; (blk + 1) * 64 <= V; ++blk) {
      uint32_t rb[4][16];
      philox_block(seed, offset, r, static_cast<uint64_t>(blk), rb);
      const int64_t base = blk * 64;
      const bool has_skip = static_cast<uint64_t>(skip - base) < 64;
      float f[64], uf[64];
      cpu::vint vany{};
      for (int q = 0; q < 64; q += kVecLen) {
        const cpu::vfloat v = cpu::vload(row + base + q);
        cpu::vfloat sv = kExp ? cpu::vexp(v) : v;
        if (has_skip) {
          for (int k = 0; k < kVecLen; ++k) {
            if (base + q + k == skip) sv[k] = 0.0f;
          }
        }
        cpu::vuint b;
        std::memcpy(&b, &rb[q >> 4][q & 15], sizeof b);
        // steps::u_lower on every lane
        const cpu::vfloat uv =
            __builtin_convertvector(bitcast<cpu::vint>(b >> 8), cpu::vfloat) * 0x1p-24f;
        const cpu::vfloat d = sv - gam;
        const cpu::vfloat fv = two_pass ? (d > 0.0f ? d : cpu::vfloat{}) : sv;
        vsum += sv;
        vbad |= !(sv >= 0.0f);
        vany |= (fv > 0.0f) & (fv >= bound * uv);
        std::memcpy(f + q, &fv, sizeof fv);
        std::memcpy(uf + q, &uv, sizeof uv);
      }
      if ((blk & 15) == 15) {
        o.sum += cpu::hsum(vsum);
        vsum = cpu::vfloat{};
      }
      bool any = false;
      for (int k = 0; k < kVecLen; ++k) any |= vany[k] != 0;
      if (any) {
        for (int k = 0; k < 64; ++k) {
          if (base + k != skip && steps::may_win(f[k], uf[k], bound)) {
            steps::offer(o.best, f[k], rb[k >> 4][k & 15], base + k);
            bound = steps::bound_of(o.best);
          }
        }
      }
    }
    o.sum += cpu::hsum(vsum);
    for (int k = 0; k < kVecLen; ++k) o.bad |= vbad[k] != 0;
  }
  for (int64_t y = blk * 64; y < V; ++y) scalar(y, philox::bits(seed, offset, r, y));
  return o;
}

}  // namespace

at::Tensor reverse_step_cpu(const at::Tensor& log_score, const at::Tensor& x,
                            const at::Tensor& dsigma, c10::string_view graph,
                            c10::string_view kind, int64_t seed, int64_t offset,
                            const c10::optional<at::Tensor>& frozen) {
  const char* op = "reverse_step";
  const steps::StepInputs in = steps::prepare_step(op, log_score, x, dsigma, graph, kind, frozen);
  const steps::StepArgs& a = in.a;
  const int64_t* xp = in.x.data_ptr<int64_t>();
  const double* dp = in.dsigma.data_ptr<double>();
  const bool* fp = a.has_frozen ? in.frozen.data_ptr<bool>() : nullptr;
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
  const uint64_t useed = static_cast<uint64_t>(seed), uoff = static_cast<uint64_t>(offset);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, log_score.scalar_type(), "reverse_step_cpu", [&] {
    const scalar_t* base = log_score.data_ptr<scalar_t>();
    const int64_t sB = log_score.stride(0), sL = log_score.stride(1), V = a.V, L = a.L;
    at::parallel_for(0, a.B * L, cpu::row_grain(V), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t b = r / L, i = r % L, x0 = xp[r];
        Plan p = steps::plan(a.graph, a.kind, x0, dp[b], V, fp != nullptr && fp[r]);
        op_out[r] = x0;
        if (!p.moves) continue;
        const scalar_t* row = base + b * sB + i * sL;
        if (p.two_pass) {
          double S = 1.0, unused = 0.0;
          cpu::row_sums<false>(row, 0, x0, S, unused);
          cpu::row_sums<false>(row, x0 + 1, V, S, unused);
          steps::set_total(p, S);
        }
        const RaceOut o = race_row<true>(row, V, p.sp, p.two_pass, p.gamma, useed, uoff,
                                         static_cast<uint64_t>(r));
        if (o.bad || std::isnan(p.gamma)) {
          bad_row.store(r);
          continue;
        }
        int64_t y = steps::finish(p, o.best, o.sum, useed, uoff, static_cast<uint64_t>(r));
        if (y < 0 && p.drop_sp) {  // denoiser, absorbing, every score 0: uniform over y < M
          Best u{0.0, -1};
          for (int64_t z = 0; z < V - 1; ++z) steps::offer(u, 1.0, philox::bits(useed, uoff, r, z), z);
          y = u.idx;
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

at::Tensor sample_categorical_cpu(const at::Tensor& weights, int64_t seed, int64_t offset) {
  const char* op = "sample_categorical";
  steps::CategoricalRows c = steps::categorical_rows(op, weights);
  at::Tensor out = c.out;
  if (!c.rows.defined()) return out;
  const at::Tensor& w = c.rows;
  const int64_t R = w.size(0), V = w.size(1), sR = w.stride(0);
  int64_t* po = out.data_ptr<int64_t>();
  std::atomic<int64_t> bad_row{-1}, zero_row{-1};
  const uint64_t useed = static_cast<uint64_t>(seed), uoff = static_cast<uint64_t>(offset);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, w.scalar_type(), "sample_categorical_cpu", [&] {
    const scalar_t* base = w.data_ptr<scalar_t>();
    at::parallel_for(0, R, cpu::row_grain(V), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const RaceOut o = race_row<false>(base + r * sR, V, -1, false, 0.0, useed, uoff,
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
                       int64_t num_tokens, int64_t seed, int64_t offset) {
  const char* op = "perturb";
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
  const uint64_t useed = static_cast<uint64_t>(seed), uoff = static_cast<uint64_t>(offset);
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
