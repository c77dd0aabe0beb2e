// Sampling ops on CUDA: a block of 256 threads per row (a warp per row when V < 1024). Thread t
// takes Philox calls t, t + 256, ... of the row; each call gives the 32 random bits of four
// columns (csrc/common/philox.h), whose log-scores a warp reads as two contiguous runs of 16.
// Race keys are exact (fp64) only for entries that can still beat the thread's best; the
// block then reduces (key, index) with the tie rule of steps.h. Current stream, no host sync.
//
// Kernels cannot raise: rows with invalid inputs produce the token −1 (the public functions
// check values on the host by default and raise instead).
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>

#include "../common/cuda_rows.cuh"

#include "../common/fastmath.h"
#include "steps.h"
#include "steps_ops.h"

namespace sedd {
namespace {

using steps::Best;
constexpr int kBlock = kRowBlock;

// Shared memory of the race's row reductions: per-warp best (key, index) and per-warp sums.
struct RaceSmem {
  double key[kBlock / 32];
  long long idx[kBlock / 32];
  double sum[kBlock / 32];
};

__device__ __forceinline__ void take(Best& a, double key, long long idx) {
  if (idx >= 0 && (a.idx < 0 || steps::better(key, idx, a))) a = {key, idx};
}

template <int TPR>
__device__ __forceinline__ Best row_best(Best b, double* skey, long long* sidx) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    const double k = __shfl_xor_sync(0xffffffffu, b.key, off);
    const long long i = __shfl_xor_sync(0xffffffffu, static_cast<long long>(b.idx), off);
    take(b, k, i);
  }
  if constexpr (TPR == 32) {
    return b;
  } else {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();
    if (lane == 0) {
      skey[warp] = b.key;
      sidx[warp] = b.idx;
    }
    __syncthreads();
    Best r{0.0, -1};
#pragma unroll
    for (int w = 0; w < TPR / 32; ++w) take(r, skey[w], sidx[w]);
    return r;
  }
}

// The race over the entries of one row handled by thread t of TPR (see steps.h).
template <bool kExp, int TPR, typename T>
__device__ void race_part(const T* __restrict__ row, int V, int skip, bool two_pass, double gamma,
                          uint64_t seed, uint64_t offset, uint64_t r, int t, Best& best,
                          double& sum, bool& bad) {
  using A = at::acc_type<T, true>;
  const philox::Key key = philox::make_key(seed, offset);
  float bound = 0.0f;
  A psum = A(0);
  auto visit = [&](int y, uint32_t bits) {
    const A v = static_cast<A>(row[y]);
    A s = kExp ? exp_acc(v) : v;
    if (y == skip) s = A(0);
    bad |= !(s >= A(0));
    psum += s;
    const A f = two_pass ? (s - static_cast<A>(gamma) > A(0) ? s - static_cast<A>(gamma) : A(0)) : s;
    if (steps::may_win(steps::f_upper(f), steps::u_lower(bits), bound)) {
      steps::offer(best, static_cast<double>(f), bits, y);
      bound = steps::bound_of(best);
    }
  };
  const int calls = (V / 64) * 16;
  for (int j = t; j < calls; j += TPR) {
    const philox::Ctr c = philox::philox4x32_10(philox::make_ctr(j, r, offset), key);
    const int y0 = (j >> 4) * 64 + (j & 15);
    visit(y0, c.c0);
    visit(y0 + 16, c.c1);
    visit(y0 + 32, c.c2);
    visit(y0 + 48, c.c3);
  }
  for (int y = (V / 64) * 64 + t; y < V; y += TPR) visit(y, philox::bits(seed, offset, r, y));
  sum = static_cast<double>(psum);
}

template <typename T, int TPR>
__global__ void __launch_bounds__(kBlock)
step_kernel(const T* __restrict__ base, int64_t sB, int64_t sL, int64_t rows, int64_t L, int V,
            const int64_t* __restrict__ xs, const double* __restrict__ ds,
            const bool* __restrict__ frozen, Graph g, steps::Kind kind, uint64_t seed,
            uint64_t offset, int64_t* __restrict__ out) {
  using A = at::acc_type<T, true>;
  __shared__ RaceSmem sm;
  const int64_t r = row_index<TPR>();
  if (r >= rows) return;
  const int t = row_thread<TPR>();
  const int64_t b = r / L, x = xs[r];
  const double delta = ds[b];
  if (x < 0 || x >= V || !(delta >= 0.0)) {
    if (t == 0) out[r] = -1;
    return;
  }
  steps::Plan p = steps::plan(g, kind, x, delta, V, frozen != nullptr && frozen[r]);
  if (!p.moves) {
    if (t == 0) out[r] = x;
    return;
  }
  const T* row = base + b * sB + (r - b * L) * sL;
  if (p.two_pass) {
    A part = A(0);
    for (int y = t; y < V; y += TPR) {
      if (y != x) part += exp_acc(static_cast<A>(row[y]));
    }
    steps::set_total(p, 1.0 + row_sum<TPR>(static_cast<double>(part), sm.sum));
  }
  Best best{0.0, -1};
  double sum = 0.0;
  bool bad = false;
  race_part<true, TPR>(row, V, static_cast<int>(p.sp), p.two_pass, p.gamma, seed, offset,
                       static_cast<uint64_t>(r), t, best, sum, bad);
  best = row_best<TPR>(best, sm.key, sm.idx);
  sum = row_sum<TPR>(sum, sm.sum);
  const bool any_bad = row_sum<TPR>(bad ? 1.0 : 0.0, sm.sum) > 0.0;
  if (t != 0) return;
  if (any_bad || isnan(p.gamma)) {
    out[r] = -1;
    return;
  }
  int64_t y = steps::finish(p, best, sum, seed, offset, static_cast<uint64_t>(r));
  if (y < 0 && p.drop_sp) {  // denoiser, absorbing, every score 0: uniform over y < M
    Best u{0.0, -1};
    for (int64_t z = 0; z < V - 1; ++z) steps::offer(u, 1.0, philox::bits(seed, offset, r, z), z);
    y = u.idx;
  }
  out[r] = y < 0 ? x : y;
}

template <typename T, int TPR>
__global__ void __launch_bounds__(kBlock)
categorical_kernel(const T* __restrict__ w, int64_t sR, int64_t rows, int V, uint64_t seed,
                   uint64_t offset, int64_t* __restrict__ out) {
  __shared__ RaceSmem sm;
  const int64_t r = row_index<TPR>();
  if (r >= rows) return;
  const int t = row_thread<TPR>();
  Best best{0.0, -1};
  double sum = 0.0;
  bool bad = false;
  race_part<false, TPR>(w + r * sR, V, -1, false, 0.0, seed, offset, static_cast<uint64_t>(r), t,
                        best, sum, bad);
  best = row_best<TPR>(best, sm.key, sm.idx);
  const bool any_bad = row_sum<TPR>(bad ? 1.0 : 0.0, sm.sum) > 0.0;
  if (t == 0) out[r] = any_bad ? -1 : best.idx;
}

__global__ void perturb_kernel(const int64_t* __restrict__ x0, const double* __restrict__ sigma,
                               int64_t n, int64_t L, Graph g, int64_t V, uint64_t seed,
                               uint64_t offset, int64_t* __restrict__ out) {
  const int64_t r = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (r >= n) return;
  const int64_t x = x0[r];
  const double s = sigma[r / L];
  out[r] = (x < 0 || x >= V || !(s >= 0.0)) ? -1
                                             : steps::perturb_one(g, x, s, V, seed, offset, r);
}


}  // namespace

void reverse_step_cuda_launch(const at::Tensor& log_score, const at::Tensor& x,
                              const at::Tensor& ds, const at::Tensor& frozen, Graph g,
                              steps::Kind kind, int64_t seed, int64_t offset, at::Tensor& out) {
  const int64_t L = log_score.size(1), V = log_score.size(2);
  const int64_t rows = log_score.size(0) * L;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, log_score.scalar_type(),
                                  "reverse_step_cuda", [&] {
    launch_rows(rows, V, [&](auto tpr, int64_t blocks) {
      step_kernel<scalar_t, decltype(tpr)::value><<<blocks, kBlock, 0, stream>>>(
          log_score.data_ptr<scalar_t>(), log_score.stride(0), log_score.stride(1), rows, L,
          static_cast<int>(V), x.data_ptr<int64_t>(), ds.data_ptr<double>(),
          frozen.defined() ? frozen.data_ptr<bool>() : nullptr, g, kind,
          static_cast<uint64_t>(seed), static_cast<uint64_t>(offset), out.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void sample_categorical_cuda_launch(const at::Tensor& w, int64_t seed, int64_t offset,
                                    at::Tensor& out) {
  const int64_t rows = w.size(0), V = w.size(1);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, w.scalar_type(),
                                  "sample_categorical_cuda", [&] {
    launch_rows(rows, V, [&](auto tpr, int64_t blocks) {
      categorical_kernel<scalar_t, decltype(tpr)::value><<<blocks, kBlock, 0, stream>>>(
          w.data_ptr<scalar_t>(), w.stride(0), rows, static_cast<int>(V),
          static_cast<uint64_t>(seed), static_cast<uint64_t>(offset), out.data_ptr<int64_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void perturb_cuda_launch(const at::Tensor& x0, const at::Tensor& sigma, Graph g, int64_t V,
                         int64_t seed, int64_t offset, at::Tensor& out) {
  const int64_t n = x0.numel();
  if (n == 0) return;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  perturb_kernel<<<(n + 255) / 256, 256, 0, stream>>>(
      x0.data_ptr<int64_t>(), sigma.data_ptr<double>(), n, x0.size(1), g, V,
      static_cast<uint64_t>(seed), static_cast<uint64_t>(offset), out.data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace sedd
