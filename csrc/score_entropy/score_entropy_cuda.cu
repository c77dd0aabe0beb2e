// Score entropy on CUDA: a block of 256 threads per row (a warp per row when V < 1024), 16-byte
// vector loads, warp-shuffle + shared-memory reductions, int64 offsets, the current stream and
// no host synchronisation. The math is in score_entropy.h, shared with the CPU kernel.
//
// Kernels cannot raise: a row with invalid inputs (token id out of range, σ ≤ 0 or NaN) gets a
// NaN loss / NaN gradient and nothing out of bounds is read. sedd_kernels.score_entropy checks
// the values on the host by default (validate=True) and raises a clear error instead.
#include <ATen/AccumulateType.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdint>
#include <limits>

#include "score_entropy.h"
#include "score_entropy_args.h"
#include "score_entropy_ops.h"

namespace sedd {
namespace {

constexpr int kBlock = 256;

template <typename T>
struct alignas(16) Pack {
  static constexpr int N = 16 / sizeof(T);
  T v[N];
};

template <typename T>
__device__ __forceinline__ int64_t head_elems(const T* p, int64_t V) {
  const int64_t h = ((16 - (reinterpret_cast<uintptr_t>(p) & 15)) & 15) / sizeof(T);
  return h < V ? h : V;
}

// Calls f(y, value) for every y in [0, V) of the row `p`, the threads of the row splitting it:
// scalar head up to 16-byte alignment, 16-byte vector body, scalar tail.
template <typename T, typename F>
__device__ __forceinline__ void row_for_each(const T* __restrict__ p, int64_t V, int t, int nt,
                                             F&& f) {
  constexpr int N = Pack<T>::N;
  const int64_t head = head_elems(p, V);
  for (int64_t j = t; j < head; j += nt) f(j, p[j]);
  const int64_t nvec = (V - head) / N;
  const Pack<T>* vp = reinterpret_cast<const Pack<T>*>(p + head);
#pragma unroll 4
  for (int64_t k = t; k < nvec; k += nt) {
    const Pack<T> pk = vp[k];
#pragma unroll
    for (int q = 0; q < N; ++q) f(head + k * N + q, pk.v[q]);
  }
  for (int64_t j = head + nvec * N + t; j < V; j += nt) f(j, p[j]);
}

// out[y] = g(y, p[y]) for the row; vector stores when input and output share their alignment.
template <typename T, typename G>
__device__ __forceinline__ void row_map(const T* __restrict__ p, T* __restrict__ o, int64_t V, int t,
                                        int nt, G&& g) {
  constexpr int N = Pack<T>::N;
  if (((reinterpret_cast<uintptr_t>(p) ^ reinterpret_cast<uintptr_t>(o)) & 15) != 0) {
    row_for_each(p, V, t, nt, [&](int64_t y, T v) { o[y] = static_cast<T>(g(y, v)); });
    return;
  }
  const int64_t head = head_elems(p, V);
  for (int64_t j = t; j < head; j += nt) o[j] = static_cast<T>(g(j, p[j]));
  const int64_t nvec = (V - head) / N;
  const Pack<T>* vp = reinterpret_cast<const Pack<T>*>(p + head);
  Pack<T>* vo = reinterpret_cast<Pack<T>*>(o + head);
#pragma unroll 4
  for (int64_t k = t; k < nvec; k += nt) {
    const Pack<T> pk = vp[k];
    Pack<T> out;
#pragma unroll
    for (int q = 0; q < N; ++q) out.v[q] = static_cast<T>(g(head + k * N + q, pk.v[q]));
    vo[k] = out;
  }
  for (int64_t j = head + nvec * N + t; j < V; j += nt) o[j] = static_cast<T>(g(j, p[j]));
}

// Sum over the TPR threads of a row (TPR = 32: one warp; TPR = kBlock: the whole block).
template <int TPR, typename A>
__device__ __forceinline__ double row_sum(A v, double* smem) {
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) v += __shfl_xor_sync(0xffffffffu, v, off);
  if constexpr (TPR == 32) {
    return static_cast<double>(v);
  } else {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads();  // smem may still be read by a previous row_sum
    if (lane == 0) smem[warp] = static_cast<double>(v);
    __syncthreads();
    double s = 0.0;
#pragma unroll
    for (int w = 0; w < TPR / 32; ++w) s += smem[w];
    return s;
  }
}

struct RowIds {
  int64_t row, b, x, x0;
  double sigma;
};

template <int TPR>
__device__ __forceinline__ bool row_ids(RowIds& r, int64_t rows, int64_t L, const int64_t* xt,
                                        const int64_t* x0, const double* sigma) {
  r.row = static_cast<int64_t>(blockIdx.x) * (kBlock / TPR) + threadIdx.x / TPR;
  if (r.row >= rows) return false;
  r.b = r.row / L;
  r.x = xt[r.row];
  r.x0 = x0[r.row];
  r.sigma = sigma[r.b];
  return true;
}

template <typename T, typename out_t, int TPR>
__global__ void __launch_bounds__(kBlock)
se_forward_kernel(const T* __restrict__ base, int64_t sB, int64_t sL, int64_t rows, int64_t L,
                  int64_t V, const int64_t* __restrict__ xt, const int64_t* __restrict__ x0,
                  const double* __restrict__ sigma, Graph g, out_t* __restrict__ out) {
  using A = at::acc_type<T, true>;
  __shared__ double smem[2 * kBlock / 32];
  RowIds r;
  if (!row_ids<TPR>(r, rows, L, xt, x0, sigma)) return;  // whole rows only: no sync mismatch
  const int t = threadIdx.x % TPR;
  if (!se::row_valid(g, r.x, r.x0, r.sigma, V)) {
    if (t == 0) out[r.row] = std::numeric_limits<out_t>::quiet_NaN();
    return;
  }
  if (!se::row_active(g, r.x, V)) {
    if (t == 0) out[r.row] = out_t(0);
    return;
  }
  const T* p = base + r.b * sB + (r.row - r.b * L) * sL;
  const int64_t skip = g == Graph::kAbsorb ? V - 1 : r.x;  // Σ over y ≠ M (absorb), y ≠ x (uniform)
  A se_part = A(0), sl_part = A(0);
  row_for_each(p, V, t, TPR, [&](int64_t y, T raw) {
    const A v = static_cast<A>(raw);
    if (y != skip) {
      se_part += exp_acc(v);
      sl_part += v;
    }
  });
  const double sum_exp = row_sum<TPR>(se_part, smem);
  const double sum_l = g == Graph::kUniform ? row_sum<TPR>(sl_part, smem + kBlock / 32) : 0.0;
  if (t == 0) {
    const se::RowConst c = se::row_const(g, r.sigma, V);
    const double l_x0 = static_cast<double>(static_cast<A>(p[r.x0]));
    const double loss = g == Graph::kAbsorb
                            ? se::absorb_loss(sum_exp, l_x0, c)
                            : se::uniform_loss(sum_exp, sum_l, l_x0, r.x == r.x0, c);
    out[r.row] = static_cast<out_t>(loss);
  }
}

template <typename T, int TPR>
__global__ void __launch_bounds__(kBlock)
se_backward_kernel(const double* __restrict__ gout, const T* __restrict__ base, int64_t sB,
                   int64_t sL, int64_t rows, int64_t L, int64_t V, const int64_t* __restrict__ xt,
                   const int64_t* __restrict__ x0, const double* __restrict__ sigma, Graph g,
                   T* __restrict__ out) {
  using A = at::acc_type<T, true>;
  RowIds r;
  if (!row_ids<TPR>(r, rows, L, xt, x0, sigma)) return;
  const int t = threadIdx.x % TPR;
  T* o = out + r.row * V;
  if (!se::row_valid(g, r.x, r.x0, r.sigma, V)) {
    for (int64_t j = t; j < V; j += TPR) o[j] = static_cast<T>(NAN);
    return;
  }
  if (!se::row_active(g, r.x, V)) {
    for (int64_t j = t; j < V; j += TPR) o[j] = T(0);
    return;
  }
  const T* p = base + r.b * sB + (r.row - r.b * L) * sL;
  const se::RowConst c = se::row_const(g, r.sigma, V);
  const se::GradConst<A> k = se::grad_const<A>(g, gout[r.row], r.x, r.x0, c, V);
  row_map(p, o, V, t, TPR, [&](int64_t y, T raw) {
    return se::grad_at<A>(y, exp_acc(static_cast<A>(raw)), k);
  });
}

struct Prepared {
  se::Args a;
  at::Tensor xt, x0, sigma;
};

Prepared prepare(const char* op, const at::Tensor& log_score, const at::Tensor& x_t,
                 const at::Tensor& x_0, const at::Tensor& sigma, c10::string_view graph) {
  Prepared p;
  p.a = se::check_args(op, log_score, x_t, x_0, sigma, graph);
  TORCH_CHECK(log_score.is_cuda(), op, ": log_score must be a CUDA tensor here");
  p.xt = x_t.contiguous();
  p.x0 = x_0.contiguous();
  p.sigma = sigma.to(at::kDouble).contiguous();
  return p;
}

template <typename Launch>
void launch_rows(int64_t rows, int64_t V, Launch&& launch) {
  if (V >= 1024) {
    launch(std::integral_constant<int, kBlock>{}, rows);
  } else {
    launch(std::integral_constant<int, 32>{}, (rows + kBlock / 32 - 1) / (kBlock / 32));
  }
}

}  // namespace

at::Tensor score_entropy_cuda(const at::Tensor& log_score, const at::Tensor& x_t,
                              const at::Tensor& x_0, const at::Tensor& sigma,
                              c10::string_view graph) {
  const c10::cuda::CUDAGuard guard(log_score.device());
  const Prepared p = prepare("score_entropy", log_score, x_t, x_0, sigma, graph);
  const bool f64 = log_score.scalar_type() == at::kDouble;
  at::Tensor out = at::empty({p.a.B, p.a.L}, log_score.options().dtype(f64 ? at::kDouble : at::kFloat));
  const int64_t rows = p.a.B * p.a.L;
  if (rows == 0) return out;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, log_score.scalar_type(),
                                  "score_entropy_cuda", [&] {
    using out_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    launch_rows(rows, p.a.V, [&](auto tpr, int64_t blocks) {
      se_forward_kernel<scalar_t, out_t, decltype(tpr)::value><<<blocks, kBlock, 0, stream>>>(
          log_score.data_ptr<scalar_t>(), log_score.stride(0), log_score.stride(1), rows, p.a.L,
          p.a.V, p.xt.data_ptr<int64_t>(), p.x0.data_ptr<int64_t>(), p.sigma.data_ptr<double>(),
          p.a.graph, out.data_ptr<out_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

at::Tensor score_entropy_backward_cuda(const at::Tensor& grad, const at::Tensor& log_score,
                                       const at::Tensor& x_t, const at::Tensor& x_0,
                                       const at::Tensor& sigma, c10::string_view graph) {
  const c10::cuda::CUDAGuard guard(log_score.device());
  const Prepared p = prepare("score_entropy_backward", log_score, x_t, x_0, sigma, graph);
  se::check_grad("score_entropy_backward", grad, log_score, p.a);
  at::Tensor out = at::empty({p.a.B, p.a.L, p.a.V}, log_score.options());
  const int64_t rows = p.a.B * p.a.L;
  if (out.numel() == 0) return out;
  const at::Tensor g = grad.to(at::kDouble).contiguous();
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, log_score.scalar_type(),
                                  "score_entropy_backward_cuda", [&] {
    launch_rows(rows, p.a.V, [&](auto tpr, int64_t blocks) {
      se_backward_kernel<scalar_t, decltype(tpr)::value><<<blocks, kBlock, 0, stream>>>(
          g.data_ptr<double>(), log_score.data_ptr<scalar_t>(), log_score.stride(0),
          log_score.stride(1), rows, p.a.L, p.a.V, p.xt.data_ptr<int64_t>(),
          p.x0.data_ptr<int64_t>(), p.sigma.data_ptr<double>(), p.a.graph,
          out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

}  // namespace sedd
