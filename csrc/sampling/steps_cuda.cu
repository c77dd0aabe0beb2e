// Sampling ops on CUDA: a block of 256 threads per row (a warp per row when V < 1024). The jump
// race of steps.h runs one segment per warp: the warp reads a segment 256 entries at a time
// (8 consecutive entries per lane), scans the lanes' weight sums, passes the chunk whole when it
// does not end the skip, else walks the lane that ends it (records are rare: ~2·ln 2048 per
// segment). Warps then reduce their leaders (rate, index) over the row. Current stream, no host
// sync, no per-entry random numbers.
//
// Invalid values (NaN log-scores, negative or NaN weights, a weight row without a positive entry,
// tokens outside [0, V), negative dsigma) stop the kernel with a device-side assert naming the
// argument: no token is ever written as −1. The public functions also check on the host when
// asked (validate=True), which raises a Python error instead.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/macros/Macros.h>

#include <cstdint>
#include <type_traits>

#include "../common/cuda_rows.cuh"

#include "../common/fastmath.h"
#include "steps.h"
#include "steps_ops.h"

#if defined(CUDA_KERNEL_ASSERT_MSG)
#define SEDD_DEVICE_CHECK(cond, msg) CUDA_KERNEL_ASSERT_MSG(cond, msg)
#else
#define SEDD_DEVICE_CHECK(cond, msg) CUDA_KERNEL_ASSERT(cond)
#endif

namespace sedd {
namespace {

using steps::Best;
constexpr int kBlock = kRowBlock;
constexpr int kPer = 8;                 // consecutive entries per lane in a chunk
constexpr int kChunk = 32 * kPer;       // one warp scan
static_assert(steps::kSegment % kChunk == 0, "a segment is whole chunks");
constexpr unsigned kFull = 0xffffffffu;

struct RaceSmem {
  double rate[kBlock / 32];
  long long idx[kBlock / 32];
  double sum[kBlock / 32];
};

// f of entry y (0 at `skip`): s = e^{(v + bias_y) + shift} (kExp; bias may be nullptr) or the
// weight v itself, then max(0, s − γ) when two_pass — in the accumulation type A.
template <bool kExp, typename T, typename A>
__device__ __forceinline__ A entry_f(const T* __restrict__ row, int y, int skip, bool two_pass,
                                     A gamma, A shift, const A* __restrict__ bias) {
  if (y == skip) return A(0);
  A v = static_cast<A>(row[y]);
  if (kExp && bias != nullptr) v = static_cast<A>(v + bias[y]);
  const A s = kExp ? exp_acc(static_cast<A>(v + shift)) : v;
  if (!two_pass || !(s >= A(0))) return s;       // NaN / negative kept for the caller's check
  const A d = s - gamma;
  return d > A(0) ? d : A(0);
}

// Broadcast of a Jump from lane `src` to the warp.
__device__ __forceinline__ void share(steps::Jump& j, int src) {
  j.rate = __shfl_sync(kFull, j.rate, src);
  j.skip = __shfl_sync(kFull, j.skip, src);
  j.idx = __shfl_sync(kFull, static_cast<long long>(j.idx), src);
  j.rec = __shfl_sync(kFull, j.rec, src);
}

// The race of the segments warp `warp` of `nwarps` owns (every lane returns the same leader).
// f = s (or max(0, s − γ) when two_pass) times `scale`, with s = e^{(v + bias_y) + shift} (kExp;
// bias may be nullptr) or v;
// `skip` is left out. fsum: this lane's Σ f; bad: a NaN / negative value was seen.
template <bool kExp, typename T, typename A>
__device__ void warp_race(const T* __restrict__ row, int V, int skip, bool two_pass, A gamma,
                          A shift, const A* __restrict__ bias, double scale, uint64_t seed,
                          uint64_t offset, uint64_t r,
                          int warp, int nwarps, Best& best, double& fsum, bool& bad) {
  const int lane = threadIdx.x % 32;
  for (int seg = warp; static_cast<int64_t>(seg) * steps::kSegment < V; seg += nwarps) {
    steps::Jump j;
    const int seg_lo = seg * static_cast<int>(steps::kSegment);
    const int seg_end = min(V, seg_lo + static_cast<int>(steps::kSegment));
    for (int c0 = seg_lo; c0 < seg_end; c0 += kChunk) {
      const int y0 = c0 + lane * kPer;
      double f[kPer];
      double local = 0.0;
#pragma unroll
      for (int k = 0; k < kPer; ++k) {
        const int y = y0 + k;
        const A fa = y < seg_end ? entry_f<kExp>(row, y, skip, two_pass, gamma, shift, bias) : A(0);
        bad |= !(fa >= A(0));
        f[k] = static_cast<double>(fa) * scale;
        local += f[k];
      }
      fsum += local;
      double incl = local;
#pragma unroll
      for (int o = 1; o < 32; o <<= 1) {
        const double t = __shfl_up_sync(kFull, incl, o);
        if (lane >= o) incl += t;
      }
      const double total = __shfl_sync(kFull, incl, 31);
      if (!(j.skip < total)) {  // the chunk does not end the skip: pass it whole
        j.pass(total);
        continue;
      }
      double excl = __shfl_up_sync(kFull, incl, 1);
      if (lane == 0) excl = 0.0;
      double base = 0.0;
      int start = 0;
      while (start < 32) {
        const bool ends = lane >= start && local > 0.0 && j.skip < incl - base;
        const unsigned m = __ballot_sync(kFull, ends);
        if (m == 0) {
          j.pass(total - base);
          break;
        }
        const int src = __ffs(m) - 1;
        if (lane == src) {
          const double rr = j.skip - (excl - base);
          j.skip = rr > 0.0 ? rr : 0.0;
#pragma unroll
          for (int k = 0; k < kPer; ++k) j.visit(f[k], y0 + k, seg, seed, offset, r);
        }
        share(j, src);
        base = __shfl_sync(kFull, incl, src);
        start = src + 1;
      }
    }
    steps::take(best, j.rate, j.idx);
  }
}

// The fastest of the warps' leaders (every warp's lanes agree), and the row's Σ.
template <int TPR>
__device__ __forceinline__ Best row_best(Best b, RaceSmem& sm) {
  if constexpr (TPR == 32) {
    return b;
  } else {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) {
      sm.rate[warp] = b.rate;
      sm.idx[warp] = b.idx;
    }
    __syncthreads();
    Best out{0.0, -1};
#pragma unroll
    for (int w = 0; w < TPR / 32; ++w) steps::take(out, sm.rate[w], sm.idx[w]);
    return out;
  }
}

// Largest f over an fp64 row (for steps::row_scale); other types do not need it.
template <int TPR, bool kExp, typename A>
__device__ double row_max_f(const double* row, int V, int skip, bool two_pass, A gamma, A shift,
                            const A* bias, double* smem) {
  double m = 0.0;
  for (int y = row_thread<TPR>(); y < V; y += TPR) {
    const double f = entry_f<kExp>(row, y, skip, two_pass, gamma, shift, bias);
    if (f > m) m = f;
  }
  return row_max<TPR>(m, smem);
}

template <int TPR, bool kExp, typename T, typename A>
__device__ double scale_of(const T* row, int V, int skip, bool two_pass, A gamma, A shift,
                           const A* bias, double* smem) {
  if constexpr (std::is_same_v<T, double>) {
    return steps::row_scale(
        row_max_f<TPR, kExp>(row, V, skip, two_pass, gamma, shift, bias, smem));
  } else {
    return 1.0;
  }
}

template <typename T, int TPR>
__global__ void __launch_bounds__(kBlock)
step_kernel(const T* __restrict__ base, int64_t sB, int64_t sL, int64_t rows, int64_t L, int V,
            const int64_t* __restrict__ xs, const double* __restrict__ ds,
            const bool* __restrict__ frozen, const double* __restrict__ shifts,
            const at::acc_type<T, true>* __restrict__ bias, Graph g,
            steps::Kind kind, const int64_t* __restrict__ rng, int64_t* __restrict__ out) {
  using A = at::acc_type<T, true>;
  __shared__ RaceSmem sm;
  const int64_t r = row_index<TPR>();
  if (r >= rows) return;
  const uint64_t seed = static_cast<uint64_t>(rng[0]), offset = static_cast<uint64_t>(rng[1]);
  const int t = row_thread<TPR>();
  const int64_t b = r / L, x = xs[r];
  const double delta = ds[b];
  SEDD_DEVICE_CHECK(x >= 0 && x < V, "reverse_step: x must hold token ids in [0, V)");
  SEDD_DEVICE_CHECK(delta >= 0.0, "reverse_step: dsigma must be >= 0 and not NaN");
  steps::Plan p = steps::plan(g, kind, x, delta, V, frozen != nullptr && frozen[r]);
  if (!p.moves) {
    if (t == 0) out[r] = x;
    return;
  }
  const T* row = base + b * sB + (r - b * L) * sL;
  const A shift = shifts != nullptr ? static_cast<A>(shifts[b]) : A(0);
  if (p.two_pass) {
    A part = A(0);
    for (int y = t; y < V; y += TPR) {
      part += entry_f<true>(row, static_cast<int>(y), static_cast<int>(x), false, A(0), shift, bias);
    }
    steps::set_total(p, 1.0 + row_sum<TPR>(static_cast<double>(part), sm.sum));
  }
  const A gamma = static_cast<A>(p.gamma);
  const double scale = scale_of<TPR, true>(row, V, static_cast<int>(p.sp), p.two_pass, gamma,
                                           shift, bias, sm.sum);
  Best best{0.0, -1};
  double fsum = 0.0;
  bool bad = false;
  warp_race<true>(row, V, static_cast<int>(p.sp), p.two_pass, gamma, shift, bias, scale, seed,
                  offset,
                  static_cast<uint64_t>(r), t / 32, TPR / 32, best, fsum, bad);
  best = row_best<TPR>(best, sm);
  const double sum = row_sum<TPR>(fsum, sm.sum) / scale;
  const bool any_bad = row_any<TPR>(bad) || isnan(p.gamma);
  if (t != 0) return;
  SEDD_DEVICE_CHECK(!any_bad, "reverse_step: log_score has NaN entries");
  int64_t y = steps::finish(p, best, sum, scale, seed, offset, static_cast<uint64_t>(r));
  if (y < 0 && p.drop_sp) {  // denoiser, absorbing, every score 0: uniform over y < M
    y = steps::uniform_index(seed, offset, static_cast<uint64_t>(r), V - 1);
  }
  out[r] = y < 0 ? x : y;
}

template <typename T, int TPR>
__global__ void __launch_bounds__(kBlock)
categorical_kernel(const T* __restrict__ w, int64_t sR, int64_t rows, int V,
                   const int64_t* __restrict__ rng, int64_t* __restrict__ out) {
  using A = at::acc_type<T, true>;
  __shared__ RaceSmem sm;
  const int64_t r = row_index<TPR>();
  if (r >= rows) return;
  const uint64_t seed = static_cast<uint64_t>(rng[0]), offset = static_cast<uint64_t>(rng[1]);
  const int t = row_thread<TPR>();
  const T* row = w + r * sR;
  const double scale = scale_of<TPR, false>(row, V, -1, false, A(0), A(0),
                                            static_cast<const A*>(nullptr), sm.sum);
  Best best{0.0, -1};
  double fsum = 0.0;
  bool bad = false;
  warp_race<false>(row, V, -1, false, A(0), A(0), static_cast<const A*>(nullptr), scale, seed,
                   offset, static_cast<uint64_t>(r),
                   t / 32, TPR / 32, best, fsum, bad);
  best = row_best<TPR>(best, sm);
  const bool any_bad = row_any<TPR>(bad);
  if (t != 0) return;
  SEDD_DEVICE_CHECK(!any_bad, "sample_categorical: weights must be non-negative and not NaN");
  SEDD_DEVICE_CHECK(best.idx >= 0, "sample_categorical: every row of weights needs a positive entry");
  out[r] = best.idx;
}

__global__ void perturb_kernel(const int64_t* __restrict__ x0, const double* __restrict__ sigma,
                               int64_t n, int64_t L, Graph g, int64_t V,
                               const int64_t* __restrict__ rng, int64_t* __restrict__ out) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n) return;
  const uint64_t seed = static_cast<uint64_t>(rng[0]), offset = static_cast<uint64_t>(rng[1]);
  const int64_t x = x0[r];
  const double s = sigma[r / L];
  SEDD_DEVICE_CHECK(x >= 0 && x < V, "perturb: x_0 must hold token ids in [0, num_tokens)");
  SEDD_DEVICE_CHECK(s >= 0.0, "perturb: sigma must be >= 0 and not NaN");
  out[r] = steps::perturb_one(g, x, s, V, seed, offset, r);
}


}  // namespace

void reverse_step_cuda_launch(const at::Tensor& log_score, const at::Tensor& x,
                              const at::Tensor& ds, const at::Tensor& frozen,
                              const at::Tensor& shift, const at::Tensor& bias, Graph g,
                              steps::Kind kind, const at::Tensor& rng, at::Tensor& out) {
  const int64_t L = log_score.size(1), V = log_score.size(2);
  const int64_t rows = log_score.size(0) * L;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, log_score.scalar_type(),
                                  "reverse_step_cuda", [&] {
    launch_rows(rows, V, [&](auto tpr, int64_t blocks) {
      step_kernel<scalar_t, decltype(tpr)::value><<<blocks, kBlock, 0, stream>>>(
          log_score.data_ptr<scalar_t>(), log_score.stride(0), log_score.stride(1), rows, L,
          static_cast<int>(V), x.data_ptr<int64_t>(), ds.data_ptr<double>(),
          frozen.defined() ? frozen.data_ptr<bool>() : nullptr,
          shift.defined() ? shift.data_ptr<double>() : nullptr,
          bias.defined() ? bias.data_ptr<at::acc_type<scalar_t, true>>() : nullptr, g, kind,
          rng.data_ptr<int64_t>(), out.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void sample_categorical_cuda_launch(const at::Tensor& w, const at::Tensor& rng, at::Tensor& out) {
  const int64_t rows = w.size(0), V = w.size(1);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, w.scalar_type(),
                                  "sample_categorical_cuda", [&] {
    launch_rows(rows, V, [&](auto tpr, int64_t blocks) {
      categorical_kernel<scalar_t, decltype(tpr)::value><<<blocks, kBlock, 0, stream>>>(
          w.data_ptr<scalar_t>(), w.stride(0), rows, static_cast<int>(V), rng.data_ptr<int64_t>(),
          out.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void perturb_cuda_launch(const at::Tensor& x0, const at::Tensor& sigma, Graph g, int64_t V,
                         const at::Tensor& rng, at::Tensor& out) {
  const int64_t n = x0.numel();
  if (n == 0) return;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  perturb_kernel<<<(n + 255) / 256, 256, 0, stream>>>(
      x0.data_ptr<int64_t>(), sigma.data_ptr<double>(), n, x0.size(1), g, V,
      rng.data_ptr<int64_t>(), out.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sedd
