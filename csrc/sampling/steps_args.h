// Argument checking of the sampling ops (host only; both back ends).
#pragma once

#include <ATen/ATen.h>

#include "../common/checks.h"
#include "steps.h"

#include <utility>
#include <vector>

namespace sedd {
namespace steps {

// rng: the (seed, offset) pair of a sampling op, an int64 [2] tensor on the op's device (read by
// the kernels themselves: graph-capture safe). Returns it contiguous.
inline at::Tensor check_rng(const char* op, const at::Tensor& rng, const at::Tensor& ref,
                            const char* ref_name) {
  SEDD_CHECK_TYPE(rng.scalar_type() == at::kLong, op, ": rng must be an int64 tensor, got ",
                  dtype_str(rng));
  SEDD_CHECK_VALUE(rng.dim() == 1 && rng.size(0) == 2, op,
                   ": rng must have shape [2] (seed, offset), got ", shape_str(rng));
  check_same_device(op, ref, ref_name, rng, "rng");
  return rng.contiguous();
}

// (seed, offset) of a CPU rng tensor.
inline std::pair<uint64_t, uint64_t> rng_values(const at::Tensor& rng) {
  const int64_t* p = rng.data_ptr<int64_t>();
  return {static_cast<uint64_t>(p[0]), static_cast<uint64_t>(p[1])};
}

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
  const RowsShape r = check_rows(op, log_score, x, "x", dsigma, "dsigma");
  a.B = r.B;
  a.L = r.L;
  a.V = r.V;
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

// The checked arguments of reverse_step and the inputs its kernels read, shared by the CPU file
// and the CUDA entry: contiguous x and frozen (undefined when absent), fp64 dsigma (on the
// tensors' device and stream; no host sync).
// shift (undefined when absent): fp64 [B]; bias (undefined when absent): [V] in the rows'
// accumulation type (fp32 for fp32/bf16/fp16 rows, fp64 for fp64). The kernels read
// ℓ = (log_score + bias) + shift in the accumulation type, as the network's own
// `addmm(bias, h, Wᵀ) + offset` rounds.
struct StepInputs {
  StepArgs a;
  at::Tensor x, dsigma, frozen, shift, bias;
};

inline StepInputs prepare_step(const char* op, const at::Tensor& log_score, const at::Tensor& x,
                               const at::Tensor& dsigma, c10::string_view graph,
                               c10::string_view kind, const c10::optional<at::Tensor>& frozen,
                               const c10::optional<at::Tensor>& shift,
                               const c10::optional<at::Tensor>& bias) {
  StepInputs in;
  in.a = check_step_args(op, log_score, x, dsigma, graph, kind, frozen);
  in.x = x.contiguous();
  in.dsigma = dsigma.to(at::kDouble).contiguous();
  if (in.a.has_frozen) in.frozen = frozen->contiguous();
  if (shift.has_value() && shift->defined()) {
    check_floating(op, *shift, "shift");
    SEDD_CHECK_VALUE(shift->dim() == 1 && shift->size(0) == in.a.B, op,
                     ": shift must have shape [B] = [", in.a.B, "], got ", shape_str(*shift));
    check_same_device(op, log_score, "log_score", *shift, "shift");
    in.shift = shift->to(at::kDouble).contiguous();
  }
  if (bias.has_value() && bias->defined()) {
    check_floating(op, *bias, "bias");
    SEDD_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == in.a.V, op,
                     ": bias must have shape [V] = [", in.a.V, "], got ", shape_str(*bias));
    check_same_device(op, log_score, "log_score", *bias, "bias");
    const auto acc = log_score.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    in.bias = bias->to(acc).contiguous();
  }
  return in;
}

// perturb: x_0 int64 [B, L], sigma floating [B] on its device, num_tokens large enough.
inline Graph check_perturb_args(const char* op, const at::Tensor& x_0, const at::Tensor& sigma,
                                c10::string_view graph, int64_t num_tokens) {
  const Graph g = parse_graph(op, graph);
  SEDD_CHECK_TYPE(x_0.scalar_type() == at::kLong, op, ": x_0 must be an int64 tensor, got ",
                  dtype_str(x_0));
  SEDD_CHECK_VALUE(x_0.dim() == 2, op, ": x_0 must have shape [B, L], got ", shape_str(x_0));
  check_floating(op, sigma, "sigma");
  SEDD_CHECK_VALUE(sigma.dim() == 1 && sigma.size(0) == x_0.size(0), op,
                   ": sigma must have shape [B] = [", x_0.size(0), "], got ", shape_str(sigma));
  check_same_device(op, x_0, "x_0", sigma, "sigma");
  SEDD_CHECK_VALUE(num_tokens >= (g == Graph::kAbsorb ? 2 : 1), op,
                   ": num_tokens must be >= 2 (absorb) or >= 1 (uniform), got ", num_tokens);
  return g;
}

// perturb's checked graph and the inputs its kernels read: contiguous x_0, fp64 sigma.
struct PerturbInputs {
  Graph graph;
  at::Tensor x0, sigma;
};

inline PerturbInputs prepare_perturb(const char* op, const at::Tensor& x_0, const at::Tensor& sigma,
                                     c10::string_view graph, int64_t num_tokens) {
  PerturbInputs in;
  in.graph = check_perturb_args(op, x_0, sigma, graph, num_tokens);
  in.x0 = x_0.contiguous();
  in.sigma = sigma.to(at::kDouble).contiguous();
  return in;
}

// sample_categorical: weights [..., V] floating, viewed as [R, V] rows with unit stride on V
// (a view where possible, e.g. broadcast rows), and the output [...] int64.
struct CategoricalRows {
  at::Tensor rows, out;
};

inline CategoricalRows categorical_rows(const char* op, const at::Tensor& weights) {
  SEDD_CHECK_VALUE(weights.dim() >= 1, op, ": weights must have shape [..., V], got a 0-d tensor");
  check_floating(op, weights, "weights");
  const int64_t V = weights.size(-1);
  SEDD_CHECK_VALUE(V < (int64_t(1) << 31), op, ": weights must have V < 2^31, got ", V);
  const int64_t R = V == 0 ? 0 : weights.numel() / V;
  std::vector<int64_t> oshape(weights.sizes().begin(), weights.sizes().end() - 1);
  CategoricalRows c;
  c.out = at::empty(oshape, weights.options().dtype(at::kLong));
  if (R == 0) return c;
  SEDD_CHECK_VALUE(V >= 1, op, ": weights must have V >= 1 categories");
  c.rows = weights.reshape({R, V});
  if (V > 1 && c.rows.stride(1) != 1) c.rows = c.rows.contiguous();
  return c;
}

}  // namespace steps
}  // namespace sedd
