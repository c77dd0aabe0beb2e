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

#include "../common/cuda_rows.cuh"
#include <limits>

#include "score_entropy.h"
#include "score_entropy_ops.h"

namespace sedd {
namespace {

constexpr int kBlock = kRowBlock;

struct RowIds {
  int64_t row, b, x, x0;
  double sigma;
};

template <int TPR>
__device__ __forceinline__ bool row_ids(RowIds& r, int64_t rows, int64_t L, const int64_t* xt,
                                        const int64_t* x0, const double* sigma) {
  r.row = row_index<TPR>();
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
  const int t = row_thread<TPR>();
  if (!se::row_valid(g, r.x, r.x0, r.sigma, V)) {
    if (t == 0) out[r.row] = std::numeric_limits<out_t>::quiet_NaN();
    return;
  }
  if (!se::row_active(g, r.x, V)) {
    if (t == 0) out[r.row] = out_t(0);
    return;
  }
  const T* p = base + r.b * sB + (r.row - r.b * L) * sL;
  const int skip = static_cast<int>(g == Graph::kAbsorb ? V - 1 : r.x);  // Σ_{y≠M} / Σ_{y≠x}
  A se_part = A(0), sl_part = A(0);
  auto add = [&](T raw) {
    const A v = static_cast<A>(raw);
    se_part += exp_acc(v);
    sl_part += v;
  };
  row_for_each(p, static_cast<int>(V), t, TPR, skip, skip, add, [&](int y, T raw) {
    if (y != skip) add(raw);
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
  const int t = row_thread<TPR>();
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
  row_map(
      p, o, static_cast<int>(V), t, TPR, static_cast<int>(k.x0), static_cast<int>(k.zero),
      [&](T raw) { return se::grad_body<A>(exp_acc(static_cast<A>(raw)), k); },
      [&](int y, T raw) { return se::grad_at<A>(y, exp_acc(static_cast<A>(raw)), k); });
}

// In place (score_entropy_with_grad_): the loss of ℓ = p + off, then p overwritten with
// gout·∂SE/∂ℓ. Every thread reads the two special entries (x0 and the zero entry) before the
// row reduction, whose barrier (__syncthreads, or the warp shuffle for TPR = 32) orders those
// reads before any write; each other entry is read and then written by the same thread. The
// second pass re-reads the row from L2 (200 KB for fp32 at V = 50258).
template <typename T, typename out_t, int TPR>
__global__ void __launch_bounds__(kBlock)
se_with_grad_kernel(T* base, int64_t sB, int64_t sL, int64_t rows, int64_t L, int64_t V,
                    const int64_t* __restrict__ xt, const int64_t* __restrict__ x0,
                    const double* __restrict__ sigma, const double* __restrict__ off,
                    const double* __restrict__ gout, Graph g, out_t* __restrict__ out) {
  using A = at::acc_type<T, true>;
  __shared__ double smem[2 * kBlock / 32];
  RowIds r;
  if (!row_ids<TPR>(r, rows, L, xt, x0, sigma)) return;
  const int t = row_thread<TPR>();
  T* p = base + r.b * sB + (r.row - r.b * L) * sL;
  if (!se::row_valid(g, r.x, r.x0, r.sigma, V)) {
    if (t == 0) out[r.row] = std::numeric_limits<out_t>::quiet_NaN();
    for (int64_t j = t; j < V; j += TPR) p[j] = static_cast<T>(NAN);
    return;
  }
  if (!se::row_active(g, r.x, V)) {
    if (t == 0) out[r.row] = out_t(0);
    for (int64_t j = t; j < V; j += TPR) p[j] = T(0);
    return;
  }
  const double o = off ? off[r.row] : 0.0;
  const A oa = static_cast<A>(o);
  const se::RowConst c = se::row_const(g, r.sigma, V);
  const se::GradConst<A> k = se::grad_const<A>(g, gout ? gout[r.row] : 1.0, r.x, r.x0, c, V);
  const A raw_x0 = static_cast<A>(p[k.x0]);
  const A raw_zero = static_cast<A>(p[k.zero]);
  const int skip = static_cast<int>(g == Graph::kAbsorb ? V - 1 : r.x);  // Σ_{y≠M} / Σ_{y≠x}
  A se_part = A(0), sl_part = A(0);
  auto add = [&](T raw) {
    const A v = static_cast<A>(raw);
    se_part += exp_acc(v + oa);
    sl_part += v;
  };
  row_for_each(static_cast<const T*>(p), static_cast<int>(V), t, TPR, skip, skip, add,
               [&](int y, T raw) {
                 if (y != skip) add(raw);
               });
  const double sum_exp = row_sum<TPR>(se_part, smem);
  const double sum_l = g == Graph::kUniform ? row_sum<TPR>(sl_part, smem + kBlock / 32) : 0.0;
  row_barrier<TPR>();  // every thread has read raw_x0 / raw_zero before any write
  if (t == 0) {
    const double l_x0 = static_cast<double>(raw_x0) + o;
    const double loss = g == Graph::kAbsorb
                            ? se::absorb_loss(sum_exp, l_x0, c)
                            : se::uniform_loss(sum_exp, sum_l + static_cast<double>(V - 1) * o,
                                               l_x0, r.x == r.x0, c);
    out[r.row] = static_cast<out_t>(loss);
  }
  // Gradient pass, in place, same element split as row_for_each.
  const A x0_raw = raw_x0, zero_raw = raw_zero;
  row_map(
      static_cast<const T*>(p), p, static_cast<int>(V), t, TPR, static_cast<int>(k.x0),
      static_cast<int>(k.zero),
      [&](T raw) { return se::grad_body<A>(exp_acc(static_cast<A>(raw) + oa), k); },
      [&](int y, T raw) {
        A v = static_cast<A>(raw);
        if (y == k.x0) v = x0_raw;
        if (y == k.zero) v = zero_raw;
        return se::grad_at<A>(y, exp_acc(v + oa), k);
      });
}

}  // namespace

// Launchers called by the host entry points (score_entropy_cuda_entry.cpp), which check the
// arguments: argument checking stays in host-compiled code, kernels and launches here.
void score_entropy_cuda_launch(const at::Tensor& log_score, const at::Tensor& xt,
                               const at::Tensor& x0, const at::Tensor& sigma, Graph graph,
                               at::Tensor& out) {
  const int64_t L = log_score.size(1), V = log_score.size(2);
  const int64_t rows = log_score.size(0) * L;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, log_score.scalar_type(),
                                  "score_entropy_cuda", [&] {
    using out_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    launch_rows(rows, V, [&](auto tpr, int64_t blocks) {
      se_forward_kernel<scalar_t, out_t, decltype(tpr)::value><<<blocks, kBlock, 0, stream>>>(
          log_score.data_ptr<scalar_t>(), log_score.stride(0), log_score.stride(1), rows, L, V,
          xt.data_ptr<int64_t>(), x0.data_ptr<int64_t>(), sigma.data_ptr<double>(), graph,
          out.data_ptr<out_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void score_entropy_backward_cuda_launch(const at::Tensor& grad, const at::Tensor& log_score,
                                        const at::Tensor& xt, const at::Tensor& x0,
                                        const at::Tensor& sigma, Graph graph, at::Tensor& out) {
  const int64_t L = log_score.size(1), V = log_score.size(2);
  const int64_t rows = log_score.size(0) * L;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, log_score.scalar_type(),
                                  "score_entropy_backward_cuda", [&] {
    launch_rows(rows, V, [&](auto tpr, int64_t blocks) {
      se_backward_kernel<scalar_t, decltype(tpr)::value><<<blocks, kBlock, 0, stream>>>(
          grad.data_ptr<double>(), log_score.data_ptr<scalar_t>(), log_score.stride(0),
          log_score.stride(1), rows, L, V, xt.data_ptr<int64_t>(), x0.data_ptr<int64_t>(),
          sigma.data_ptr<double>(), graph, out.data_ptr<scalar_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

void score_entropy_with_grad_cuda_launch(at::Tensor& log_score, const at::Tensor& xt,
                                         const at::Tensor& x0, const at::Tensor& sigma,
                                         const at::Tensor& offset, const at::Tensor& grad,
                                         Graph graph, at::Tensor& out) {
  const int64_t L = log_score.size(1), V = log_score.size(2);
  const int64_t rows = log_score.size(0) * L;
  const auto stream = c10::cuda::getCurrentCUDAStream();
  const double* offp = offset.defined() ? offset.data_ptr<double>() : nullptr;
  const double* gp = grad.defined() ? grad.data_ptr<double>() : nullptr;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, log_score.scalar_type(),
                                  "score_entropy_with_grad_cuda", [&] {
    using out_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    launch_rows(rows, V, [&](auto tpr, int64_t blocks) {
      se_with_grad_kernel<scalar_t, out_t, decltype(tpr)::value><<<blocks, kBlock, 0, stream>>>(
          log_score.data_ptr<scalar_t>(), log_score.stride(0), log_score.stride(1), rows, L, V,
          xt.data_ptr<int64_t>(), x0.data_ptr<int64_t>(), sigma.data_ptr<double>(), offp, gp,
          graph, out.data_ptr<out_t>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
}

}  // namespace sedd
