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
  steps::CategoricalRows c = steps::categorical_rows("sample_categorical", weights);
  at::Tensor out = c.out;
  if (!c.rows.defined()) return out;
  const at::Tensor& w = c.rows;
  sample_categorical_cuda_launch(w, seed, offset, out);
  return out;
}

at::Tensor perturb_cuda(const at::Tensor& x_0, const at::Tensor& sigma, c10::string_view graph,
                        int64_t num_tokens, int64_t seed, int64_t offset) {
  const c10::cuda::CUDAGuard guard(x_0.device());
  const Graph g = steps::check_perturb_args("perturb", x_0, sigma, graph, num_tokens);
  at::Tensor out = at::empty_like(x_0, at::MemoryFormat::Contiguous);
  perturb_cuda_launch(x_0.contiguous(), sigma.to(at::kDouble).contiguous(), g, num_tokens, seed,
                      offset, out);
  return out;
}

}  // namespace sedd

#endif  // SEDD_WITH_CUDA
