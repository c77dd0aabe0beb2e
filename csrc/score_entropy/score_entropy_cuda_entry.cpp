// CUDA entry points of score_entropy: argument checks (host-compiled, like the CPU path), then
// the launchers of score_entropy_cuda.cu. Compiled only into CUDA builds.
#ifdef SEDD_WITH_CUDA

#include <c10/cuda/CUDAGuard.h>

#include "score_entropy_args.h"
#include "score_entropy_ops.h"

namespace sedd {
using se::prepare;
using se::Prepared;

at::Tensor score_entropy_cuda(const at::Tensor& log_score, const at::Tensor& x_t,
                              const at::Tensor& x_0, const at::Tensor& sigma,
                              c10::string_view graph) {
  const c10::cuda::CUDAGuard guard(log_score.device());
  const Prepared p = prepare("score_entropy", log_score, x_t, x_0, sigma, graph);
  at::Tensor out = se::empty_loss(log_score, p.a);
  if (out.numel() > 0) score_entropy_cuda_launch(log_score, p.xt, p.x0, p.sigma, p.a.graph, out);
  return out;
}

at::Tensor score_entropy_backward_cuda(const at::Tensor& grad, const at::Tensor& log_score,
                                       const at::Tensor& x_t, const at::Tensor& x_0,
                                       const at::Tensor& sigma, c10::string_view graph) {
  const c10::cuda::CUDAGuard guard(log_score.device());
  const Prepared p = prepare("score_entropy_backward", log_score, x_t, x_0, sigma, graph);
  se::check_grad("score_entropy_backward", grad, log_score, p.a);
  at::Tensor out = at::empty({p.a.B, p.a.L, p.a.V}, log_score.options());
  if (out.numel() == 0) return out;
  const at::Tensor g = grad.to(at::kDouble).contiguous();
  score_entropy_backward_cuda_launch(g, log_score, p.xt, p.x0, p.sigma, p.a.graph, out);
  return out;
}

at::Tensor score_entropy_with_grad_cuda(at::Tensor& log_score, const at::Tensor& x_t,
                                        const at::Tensor& x_0, const at::Tensor& sigma,
                                        c10::string_view graph,
                                        const std::optional<at::Tensor>& offset,
                                        const std::optional<at::Tensor>& grad) {
  const char* op = "score_entropy_with_grad_";
  const c10::cuda::CUDAGuard guard(log_score.device());
  const Prepared p = prepare(op, log_score, x_t, x_0, sigma, graph);
  const se::RowTensors rt = se::row_tensors(op, log_score, p.a, offset, grad);
  at::Tensor out = se::empty_loss(log_score, p.a);
  if (out.numel() == 0) return out;
  score_entropy_with_grad_cuda_launch(log_score, p.xt, p.x0, p.sigma, rt.offset, rt.grad,
                                      p.a.graph, out);
  return out;
}

}  // namespace sedd

#endif  // SEDD_WITH_CUDA
