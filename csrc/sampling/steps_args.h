// Argument checking of the sampling ops (host only; both back ends).
#pragma once

#include <ATen/ATen.h>

#include "../common/checks.h"
#include "steps.h"

namespace sedd {
namespace steps {

inline Kind parse_kind(const char* op, c10::string_view name) {
  if (name == "euler") return Kind::kEuler;
  if (name == "analytic") return Kind::kAnalytic;
  if (name == "denoise") return Kind::kDenoise;
  SEDD_CHECK_VALUE(false, op, ": kind must be 'euler', 'analytic' or 'denoise', got '", name, "'");
  return Kind::kEuler;
}

struct StepArgs {
  Graph graph;
  Kind kind;
  int64_t B, L, V;
  bool has_frozen;
};

inline StepArgs check_step_args(const char* op, const at::Tensor& log_score, const at::Tensor& x,
                                const at::Tensor& dsigma, c10::string_view graph,
                                c10::string_view kind, const c10::optional<at::Tensor>& frozen) {
  StepArgs a;
  a.graph = parse_graph(op, graph);
  a.kind = parse_kind(op, kind);
  SEDD_CHECK_VALUE(log_score.dim() == 3, op, ": log_score must have shape [B, L, V], got ",
                   shape_str(log_score));
  const auto dt = log_score.scalar_type();
  SEDD_CHECK_TYPE(dt == at::kFloat || dt == at::kBFloat16 || dt == at::kHalf || dt == at::kDouble,
                  op, ": log_score must be float32, bfloat16, float16 or float64, got ",
                  dtype_str(log_score));
  a.B = log_score.size(0);
  a.L = log_score.size(1);
  a.V = log_score.size(2);
  check_token_tensor(op, x, "x", a.B, a.L);
  check_floating(op, dsigma, "dsigma");
  SEDD_CHECK_VALUE(dsigma.dim() == 1 && dsigma.size(0) == a.B, op,
                   ": dsigma must have shape [B] = [", a.B, "], got ", shape_str(dsigma));
  check_same_device(op, log_score, "log_score", x, "x");
  check_same_device(op, log_score, "log_score", dsigma, "dsigma");
  SEDD_CHECK_VALUE(a.V <= 1 || log_score.stride(2) == 1, op,
                   ": log_score must have unit stride along V, got strides ", strides_str(log_score));
  SEDD_CHECK_VALUE(a.V < (int64_t(1) << 31), op, ": log_score must have V < 2^31, got ", a.V);
  if (a.B * a.L > 0) {
    SEDD_CHECK_VALUE(a.V >= 2, op, ": log_score must have V >= 2, got V = ", a.V);
  }
  a.has_frozen = frozen.has_value() && frozen->defined();
  if (a.has_frozen) {
    SEDD_CHECK_TYPE(frozen->scalar_type() == at::kBool, op, ": frozen must be a bool tensor, got ",
                    dtype_str(*frozen));
    SEDD_CHECK_VALUE(frozen->dim() == 2 && frozen->size(0) == a.B && frozen->size(1) == a.L, op,
                     ": frozen must have shape [B, L] = [", a.B, ", ", a.L, "], got ",
                     shape_str(*frozen));
    check_same_device(op, log_score, "log_score", *frozen, "frozen");
  }
  return a;
}

}  // namespace steps
}  // namespace sedd
