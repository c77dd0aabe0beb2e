// Argument checking for score_entropy / score_entropy_backward (host only; both back ends).
#pragma once

#include <ATen/ATen.h>

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
  check_log_score(op, log_score);
  a.B = log_score.size(0);
  a.L = log_score.size(1);
  a.V = log_score.size(2);
  check_token_tensor(op, x_t, "x_t", a.B, a.L);
  check_token_tensor(op, x_0, "x_0", a.B, a.L);
  check_floating(op, sigma, "sigma");
  SEDD_CHECK_VALUE(sigma.dim() == 1 && sigma.size(0) == a.B, op,
                    ": sigma must have shape [B] = [", a.B, "], got ", shape_str(sigma));
  check_same_device(op, log_score, "log_score", x_t, "x_t");
  check_same_device(op, log_score, "log_score", x_0, "x_0");
  check_same_device(op, log_score, "log_score", sigma, "sigma");
  SEDD_CHECK_VALUE(a.V <= 1 || log_score.stride(2) == 1, op,
                    ": log_score must have unit stride along V (the last dimension), got strides ",
                    strides_str(log_score));
  SEDD_CHECK_VALUE(a.V < (int64_t(1) << 31), op, ": log_score must have V < 2^31, got ", a.V);
  if (a.B * a.L > 0) {
    const int64_t vmin = a.graph == Graph::kAbsorb ? 2 : 1;
    SEDD_CHECK_VALUE(a.V >= vmin, op, ": log_score must have V >= ", vmin, " for graph '",
                      std::string(graph), "', got V = ", a.V);
  }
  return a;
}

inline void check_grad(const char* op, const at::Tensor& grad, const at::Tensor& log_score,
                       const Args& a) {
  check_floating(op, grad, "grad");
  SEDD_CHECK_VALUE(grad.dim() == 2 && grad.size(0) == a.B && grad.size(1) == a.L, op,
                    ": grad must have shape [B, L] = [", a.B, ", ", a.L, "], got ", shape_str(grad));
  check_same_device(op, log_score, "log_score", grad, "grad");
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

}  // namespace se
}  // namespace sedd
