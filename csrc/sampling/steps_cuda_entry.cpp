// CUDA entry points of the sampling ops: argument checks (host-compiled), then the launchers of
// steps_cuda.cu. Compiled only into CUDA builds.
#ifdef SEDD_WITH_CUDA

#include <c10/cuda/CUDAGuard.h>

#include "steps_args.h"
#include "steps_ops.h"

namespace sedd {

at::Tensor reverse_step_cuda(const at::Tensor& log_score, const at::Tensor& x,
                             const at::Tensor& dsigma, c10::string_view graph,
                             c10::string_view kind, const at::Tensor& rng,
                             const c10::optional<at::Tensor>& frozen,
                             const c10::optional<at::Tensor>& shift,
                             const c10::optional<at::Tensor>& bias) {
  const c10::cuda::CUDAGuard guard(log_score.device());
  const steps::StepInputs in =
      steps::prepare_step("reverse_step", log_score, x, dsigma, graph, kind, frozen, shift,
                          bias);
  at::Tensor out = at::empty({in.a.B, in.a.L}, x.options());
  if (out.numel() == 0) return out;
  reverse_step_cuda_launch(log_score, in.x, in.dsigma, in.frozen, in.shift, in.bias, in.a.graph,
                           in.a.kind, steps::check_rng("reverse_step", rng, log_score, "log_score"),
                           out);
  return out;
}

at::Tensor sample_categorical_cuda(const at::Tensor& weights, const at::Tensor& rng) {
  const c10::cuda::CUDAGuard guard(weights.device());
  const at::Tensor r = steps::check_rng("sample_categorical", rng, weights, "weights");
  steps::CategoricalRows c = steps::categorical_rows("sample_categorical", weights);
  if (c.rows.defined()) sample_categorical_cuda_launch(c.rows, r, c.out);
  return c.out;
}

at::Tensor perturb_cuda(const at::Tensor& x_0, const at::Tensor& sigma, c10::string_view graph,
                        int64_t num_tokens, const at::Tensor& rng) {
  const c10::cuda::CUDAGuard guard(x_0.device());
  const steps::PerturbInputs in = steps::prepare_perturb("perturb", x_0, sigma, graph, num_tokens);
  at::Tensor out = at::empty_like(x_0, at::MemoryFormat::Contiguous);
  perturb_cuda_launch(in.x0, in.sigma, in.graph, num_tokens,
                      steps::check_rng("perturb", rng, x_0, "x_0"), out);
  return out;
}

}  // namespace sedd

#endif  // SEDD_WITH_CUDA
