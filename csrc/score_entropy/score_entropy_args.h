// Argument checking for score_entropy / score_entropy_backward (host only; both back ends).
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>

#include <optional>

#include "../common/checks.h"

namespace sedd {
namespace se {

struct Args {
  Graph graph;
  int64_t B, L, V;
};

inline Args check_args(const char* op, const at::Tensor& log_score, const at::Tensor& x_t,
                       const at::Tensor& x_0, const at::Tensor& sigma, c10::string_view graph) {
  Args a;
  a.graph = parse_graph(op, graph);
  const RowsShape r = check_rows(op, log_score, x_t, "x_t", sigma, "sigma");
  a.B = r.B;
  a.L = r.L;
  a.V = r.V;
  check_token_tensor(op, x_0, "x_0", a.B, a.L);
  check_same_device(op, log_score, "log_score", x_0, "x_0");
  if (a.B * a.L > 0) {
    const int64_t vmin = a.graph == Graph::kAbsorb ? 2 : 1;
    SEDD_CHECK_VALUE(a.V >= vmin, op, ": log_score must have V >= ", vmin, " for graph '",
                      std::string(graph), "', got V = ", a.V);
  }
  return a;
}

// The checked arguments and the per-row inputs the kernels read, shared by the CPU file and the
// CUDA entry: contiguous int64 x_t / x_0 and fp64 sigma (on the tensors' device and stream).
struct Prepared {
  Args a;
  at::Tensor xt, x0, sigma;
};

inline Prepared prepare(const char* op, const at::Tensor& log_score, const at::Tensor& x_t,
                        const at::Tensor& x_0, const at::Tensor& sigma, c10::string_view graph) {
  Prepared p;
  p.a = check_args(op, log_score, x_t, x_0, sigma, graph);
  p.xt = x_t.contiguous();
  p.x0 = x_0.contiguous();
  p.sigma = sigma.to(at::kDouble).contiguous();
  return p;
}

inline void check_grad(const char* op, const at::Tensor& grad, const at::Tensor& log_score,
                       const Args& a) {
  check_floating(op, grad, "grad");
  SEDD_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == a.B && grad.size(1) == a.L, op,
                    ": grad must have shape [B, L] = [", a.B, ", ", a.L, "], got ", shape_str(grad));
  check_same_device(op, log_score, "log_score", grad, "grad");
}

// The per-token loss of score_entropy / score_entropy_with_grad_: [B, L] float32 (float64 for a
// float64 log_score).
inline at::Tensor empty_loss(const at::Tensor& log_score, const Args& a) {
  const bool f64 = log_score.scalar_type() == at::kDouble;
  return at::empty({a.B, a.L}, log_score.options().dtype(f64 ? at::kDouble : at::kFloat));
}

// Optional per-row tensors of score_entropy_with_grad_ (offset, grad): floating, [B, L], same
// device as log_score.
inline void check_row_tensor(const char* op, const std::optional<at::Tensor>& t, const char* name,
                             const at::Tensor& log_score, const Args& a) {
  if (!t) return;
  check_floating(op, *t, name);
  SEDD_CHECK_VALUE(t->dim() == 2 && t->size(0) == a.B && t->size(1) == a.L, op, ": ", name,
                   " must have shape [B, L] = [", a.B, ", ", a.L, "], got ", shape_str(*t));
  check_same_device(op, log_score, "log_score", *t, name);
}

// score_entropy_with_grad_'s optional offset and grad, checked, as contiguous float64 tensors
// (undefined when absent; on the caller's stream).
struct RowTensors {
  at::Tensor offset, grad;
  const double* offset_ptr() const { return offset.defined() ? offset.data_ptr<double>() : nullptr; }
  const double* grad_ptr() const { return grad.defined() ? grad.data_ptr<double>() : nullptr; }
};

// score_entropy_with_grad_ writes its gradient into log_score: every element must have memory of
// its own (an expanded or otherwise self-overlapping tensor would be written by several rows at
// once, a race on CUDA and a wrong gradient anywhere).
inline void check_in_place(const char* op, const at::Tensor& log_score) {
  SEDD_CHECK_VALUE(at::has_internal_overlap(log_score) != at::MemOverlap::Yes, op,
                   ": log_score is overwritten in place and must not have overlapping memory "
                   "(an expanded or broadcast tensor), got strides ", ints_str(log_score.strides()),
                   " for shape ", shape_str(log_score), "; pass log_score.contiguous()");
}

inline RowTensors row_tensors(const char* op, const at::Tensor& log_score, const Args& a,
                              const std::optional<at::Tensor>& offset,
                              const std::optional<at::Tensor>& grad) {
  check_in_place(op, log_score);
  check_row_tensor(op, offset, "offset", log_score, a);
  check_row_tensor(op, grad, "grad", log_score, a);
  RowTensors t;
  if (offset) t.offset = offset->to(at::kDouble).contiguous();
  if (grad) t.grad = grad->to(at::kDouble).contiguous();
  return t;
}

}  // namespace se
}  // namespace sedd
