// CUDA entry points of the sampling ops: argument checks (host-compiled), then the launchers of
// steps_cuda.cu. Compiled only into CUDA builds.
#ifdef SEDD_WITH_CUDA

#include <c10/cuda/CUDAGuard.h>

#include "steps_args.h"
#include "steps_ops.h"

namespace sedd {

void reverse_step_cuda_launch(const at::Tensor& log_score, const at::Tensor& x,
                              const at::Tensor& ds, const at::Tensor& frozen, Graph g,
                              int kind, int64_t seed, int64_t offset, at::Tensor& out);
void sample_categorical_cuda_launch(const at::Tensor& w, int64_t seed, int64_t offset,
                                    at::Tensor& out);
void perturb_cuda_launch(const at::Tensor& x0, const at::Tensor& sigma, Graph g, int64_t V,
                         int64_t seed, int64_t offset, at::Tensor& out);

at::Tensor reverse_step_cuda(const at::Tensor& log_score, const at::Tensor& x,
                             const at::Tensor& dsigma, c10::string_view graph,
                             c10::string_view kind, int64_t seed, int64_t offset,
                             const c10::optional<at::Tensor>& frozen) {
  const c10::cuda::CUDAGuard guard(log_score.device());
  const steps::StepArgs a =
      steps::check_step_args("reverse_step", log_score, x, dsigma, graph, kind, frozen);
  at::Tensor out = at::empty({a.B, a.L}, x.options());
  if (out.numel() == 0) return out;
  const at::Tensor fz = a.has_frozen ? frozen->contiguous() : at::Tensor();
  reverse_step_cuda_launch(log_score, x.contiguous(), dsigma.to(at::kDouble).contiguous(), fz,
                           a.graph, static_cast<int>(a.kind), seed, offset, out);
  return out;
}

at::Tensor sample_categorical_cuda(const at::Tensor& weights, int64_t seed, int64_t offset) {
  const c10::cuda::CUDAGuard guard(weights.device());
  const char* op = "sample_categorical";
  SEDD_CHECK_VALUE(weights.dim() >= 1, op, ": weights must have shape [..., V], got a 0-d tensor");
  check_floating(op, weights, "weights");
  const int64_t V = weights.size(-1);
  const int64_t R = V == 0 ? 0 : weights.numel() / V;
  std::vector<int64_t> oshape(weights.sizes().begin(), weights.sizes().end() - 1);
  at::Tensor out = at::empty(oshape, weights.options().dtype(at::kLong));
  if (R == 0) return out;
  SEDD_CHECK_VALUE(V < (int64_t(1) << 31), op, ": weights must have V < 2^31, got ", V);
  at::Tensor w = weights.reshape({R, V});
  if (V > 1 && w.stride(1) != 1) w = w.contiguous();
  sample_categorical_cuda_launch(w, seed, offset, out);
  return out;
}

at::Tensor perturb_cuda(const at::Tensor& x_0, const at::Tensor& sigma, c10::string_view graph,
                        int64_t num_tokens, int64_t seed, int64_t offset) {
  const c10::cuda::CUDAGuard guard(x_0.device());
  const char* op = "perturb";
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
  at::Tensor out = at::empty_like(x_0, at::MemoryFormat::Contiguous);
  perturb_cuda_launch(x_0.contiguous(), sigma.to(at::kDouble).contiguous(), g, num_tokens, seed,
                      offset, out);
  return out;
}

}  // namespace sedd

#endif  // SEDD_WITH_CUDA
