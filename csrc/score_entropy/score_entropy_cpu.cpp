// Score entropy on the CPU: rows in parallel (at::parallel_for), each row streamed once through
// fixed-width lane blocks that the compiler turns into SIMD (AVX-512/AVX2/SSE2, whatever the
// build targets). The math is in score_entropy.h.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <type_traits>

#include "../common/cpu_rows.h"
#include "../common/cpu_utils.h"
#include "score_entropy.h"
#include "score_entropy_args.h"
#include "score_entropy_ops.h"

namespace sedd {
namespace {

using cpu::acc_t;
using cpu::load;
using cpu::store;
using cpu::kVecLen;
using cpu::row_sums;

// Validate the data-dependent inputs once, before any kernel work (B·L reads).
void check_values(const char* op, Graph g, const int64_t* xt, const int64_t* x0,
                  const double* sigma, int64_t B, int64_t L, int64_t V) {
  for (int64_t b = 0; b < B; ++b) {
    SEDD_CHECK_VALUE(sigma[b] > 0.0, op, ": sigma must be > 0 (+inf is allowed), got ", sigma[b],
                      " at sigma[", b, "]");
  }
  const int64_t hi0 = g == Graph::kAbsorb ? V - 1 : V;
  for (int64_t r = 0; r < B * L; ++r) {
    SEDD_CHECK_VALUE(xt[r] >= 0 && xt[r] < V, op, ": x_t must hold token ids in [0, V) = [0, ", V,
                      "), got ", xt[r], " at x_t[", r / L, ", ", r % L, "]");
    SEDD_CHECK_VALUE(x0[r] >= 0 && x0[r] < hi0, op, ": x_0 must hold token ids in [0, ", hi0,
                      ")", g == Graph::kAbsorb ? " (the mask id V-1 is not a clean token)" : "",
                      ", got ", x0[r], " at x_0[", r / L, ", ", r % L, "]");
  }
}

using se::Prepared;

// se::prepare, then the value checks (host reads; the CUDA kernels mark bad rows instead).
Prepared prepare(const char* op, const at::Tensor& log_score, const at::Tensor& x_t,
                 const at::Tensor& x_0, const at::Tensor& sigma, c10::string_view graph) {
  Prepared p = se::prepare(op, log_score, x_t, x_0, sigma, graph);
  check_values(op, p.a.graph, p.xt.data_ptr<int64_t>(), p.x0.data_ptr<int64_t>(),
               p.sigma.data_ptr<double>(), p.a.B, p.a.L, p.a.V);
  return p;
}

// What every kernel loops over: rows r = b·L + i of log_score (int64 offsets throughout) and the
// prepared per-row inputs.
template <typename T>
struct Rows {
  T* base;
  int64_t sB, sL, B, L, V;
  Graph g;
  const int64_t* xt;
  const int64_t* x0;
  const double* sig;

  Rows(const at::Tensor& log_score, const Prepared& p)
      : base(log_score.data_ptr<T>()), sB(log_score.stride(0)), sL(log_score.stride(1)),
        B(p.a.B), L(p.a.L), V(p.a.V), g(p.a.graph), xt(p.xt.data_ptr<int64_t>()),
        x0(p.x0.data_ptr<int64_t>()), sig(p.sigma.data_ptr<double>()) {}

  T* row(int64_t r) const { return base + (r / L) * sB + (r % L) * sL; }
  double sigma(int64_t r) const { return sig[r / L]; }

  template <typename F>
  void for_each(F&& f) const {
    at::parallel_for(0, B * L, cpu::row_grain(V), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) f(r);
    });
  }
};

// The loss of one active row of ℓ = row + off, from one pass over it.
template <typename T>
double row_loss(const Rows<T>& v, const T* row, int64_t r, const se::RowConst& c, double off) {
  const int64_t x = v.xt[r];
  const double l_x0 = static_cast<double>(load(row + v.x0[r])) + off;
  const acc_t<T> oa = static_cast<acc_t<T>>(off);
  double sum_exp = 0.0, sum_l = 0.0;
  if (v.g == Graph::kAbsorb) {
    row_sums<false>(row, 0, v.V - 1, sum_exp, sum_l, oa);
    return se::absorb_loss(sum_exp, l_x0, c);
  }
  row_sums<true>(row, 0, x, sum_exp, sum_l, oa);
  row_sums<true>(row, x + 1, v.V, sum_exp, sum_l, oa);
  sum_l += static_cast<double>(v.V - 1) * off;
  return se::uniform_loss(sum_exp, sum_l, l_x0, x == v.x0[r], c);
}

// orow[y] = g·∂SE/∂ℓ_y for ℓ = row + off. orow may be row itself (every entry is read before it
// is written); the two special entries' inputs come in raw_x0 / raw_zero, read beforehand.
template <typename T, typename A>
void write_grad_row(const T* row, T* orow, int64_t V, A off, const se::GradConst<A>& k, A raw_x0,
                    A raw_zero) {
  int64_t j = 0;
  if constexpr (!std::is_same_v<T, double>) {
    for (; j + kVecLen <= V; j += kVecLen) {
      cpu::vstore(orow + j, cpu::vexp(cpu::vload(row + j) + off) * k.a + k.b);  // grad_body
    }
  }
  for (; j < V; ++j) store(orow + j, se::grad_body<A>(exp_acc(static_cast<A>(load(row + j)) + off), k));
  // The (at most two) special entries: y = x0 and the zero entry (M or x).
  store(orow + k.x0, se::grad_at<A>(k.x0, exp_acc(raw_x0 + off), k));
  store(orow + k.zero, se::grad_at<A>(k.zero, exp_acc(raw_zero + off), k));
}

template <typename T, typename out_t>
void forward_kernel(const at::Tensor& log_score, const Prepared& p, out_t* out) {
  const Rows<T> v(log_score, p);
  v.for_each([&](int64_t r) {
    if (!se::row_active(v.g, v.xt[r], v.V)) {
      out[r] = out_t(0);
      return;
    }
    const se::RowConst c = se::row_const(v.g, v.sigma(r), v.V);
    out[r] = static_cast<out_t>(row_loss(v, v.row(r), r, c, 0.0));
  });
}

template <typename T>
void backward_kernel(const double* gout, const at::Tensor& log_score, const Prepared& p, T* out) {
  using A = acc_t<T>;
  const Rows<T> v(log_score, p);
  const int64_t V = v.V;
  v.for_each([&](int64_t r) {
    T* orow = out + r * V;
    if (!se::row_active(v.g, v.xt[r], V)) {
      std::fill(orow, orow + V, T(0));
      return;
    }
    const T* row = v.row(r);
    const se::RowConst c = se::row_const(v.g, v.sigma(r), V);
    const se::GradConst<A> k = se::grad_const<A>(v.g, gout[r], v.xt[r], v.x0[r], c, V);
    write_grad_row(row, orow, V, A(0), k, static_cast<A>(load(row + k.x0)),
                   static_cast<A>(load(row + k.zero)));
  });
}

// In place: the loss of each row of ℓ = log_score + offset, then the row overwritten with
// gout·∂SE/∂ℓ (= ∂/∂log_score). The row is read twice — once for the sums, once for the gradient
// — the second time from cache (a row is V·sizeof(T) bytes, 200 KB for fp32 at V = 50258).
// The two special entries (x0 and the zero entry) are read before anything is written.
template <typename T, typename out_t>
void with_grad_kernel(const at::Tensor& log_score, const Prepared& p, const double* off,
                      const double* gout, out_t* out) {
  using A = acc_t<T>;
  const Rows<T> v(log_score, p);
  const int64_t V = v.V;
  v.for_each([&](int64_t r) {
    T* row = v.row(r);
    if (!se::row_active(v.g, v.xt[r], V)) {
      out[r] = out_t(0);
      std::fill(row, row + V, T(0));
      return;
    }
    const double o = off ? off[r] : 0.0;
    const se::RowConst c = se::row_const(v.g, v.sigma(r), V);
    const se::GradConst<A> k = se::grad_const<A>(v.g, gout ? gout[r] : 1.0, v.xt[r], v.x0[r], c, V);
    const A raw_x0 = static_cast<A>(load(row + k.x0));
    const A raw_zero = static_cast<A>(load(row + k.zero));
    out[r] = static_cast<out_t>(row_loss(v, row, r, c, o));
    write_grad_row(row, row, V, static_cast<A>(o), k, raw_x0, raw_zero);
  });
}

}  // namespace

at::Tensor score_entropy_cpu(const at::Tensor& log_score, const at::Tensor& x_t,
                             const at::Tensor& x_0, const at::Tensor& sigma,
                             c10::string_view graph) {
  const Prepared p = prepare("score_entropy", log_score, x_t, x_0, sigma, graph);
  at::Tensor out = se::empty_loss(log_score, p.a);
  if (out.numel() == 0) return out;
  const bool f64 = log_score.scalar_type() == at::kDouble;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, log_score.scalar_type(),
                                  "score_entropy_cpu", [&] {
    if (f64) {
      forward_kernel<scalar_t>(log_score, p, out.data_ptr<double>());
    } else {
      forward_kernel<scalar_t>(log_score, p, out.data_ptr<float>());
    }
  });
  return out;
}

at::Tensor score_entropy_backward_cpu(const at::Tensor& grad, const at::Tensor& log_score,
                                      const at::Tensor& x_t, const at::Tensor& x_0,
                                      const at::Tensor& sigma, c10::string_view graph) {
  const Prepared p = prepare("score_entropy_backward", log_score, x_t, x_0, sigma, graph);
  se::check_grad("score_entropy_backward", grad, log_score, p.a);
  at::Tensor out = at::empty({p.a.B, p.a.L, p.a.V}, log_score.options());
  if (out.numel() == 0) return out;
  cpu::advise_huge_pages(out.data_ptr(), out.nbytes());
  const at::Tensor g = grad.to(at::kDouble).contiguous();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, log_score.scalar_type(),
                                  "score_entropy_backward_cpu", [&] {
    backward_kernel<scalar_t>(g.data_ptr<double>(), log_score, p, out.data_ptr<scalar_t>());
  });
  return out;
}

at::Tensor score_entropy_with_grad_cpu(at::Tensor& log_score, const at::Tensor& x_t,
                                       const at::Tensor& x_0, const at::Tensor& sigma,
                                       c10::string_view graph,
                                       const std::optional<at::Tensor>& offset,
                                       const std::optional<at::Tensor>& grad) {
  const char* op = "score_entropy_with_grad_";
  const Prepared p = prepare(op, log_score, x_t, x_0, sigma, graph);
  const se::RowTensors rt = se::row_tensors(op, log_score, p.a, offset, grad);
  at::Tensor out = se::empty_loss(log_score, p.a);
  if (out.numel() == 0) return out;
  const bool f64 = log_score.scalar_type() == at::kDouble;
  const double* offp = rt.offset_ptr();
  const double* gp = rt.grad_ptr();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, log_score.scalar_type(),
                                  "score_entropy_with_grad_cpu", [&] {
    if (f64) {
      with_grad_kernel<scalar_t>(log_score, p, offp, gp, out.data_ptr<double>());
    } else {
      with_grad_kernel<scalar_t>(log_score, p, offp, gp, out.data_ptr<float>());
    }
  });
  return out;
}

const char* cpu_isa() { return cpu::compiled_isa(); }

}  // namespace sedd
