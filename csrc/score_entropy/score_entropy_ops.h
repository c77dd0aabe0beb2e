// Entry points of the score-entropy op for each back end (registered in csrc/registration.cpp).
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "../common/macros.h"

namespace sedd {

at::Tensor score_entropy_cpu(const at::Tensor& log_score, const at::Tensor& x_t,
                             const at::Tensor& x_0, const at::Tensor& sigma,
                             c10::string_view graph);
at::Tensor score_entropy_backward_cpu(const at::Tensor& grad, const at::Tensor& log_score,
                                      const at::Tensor& x_t, const at::Tensor& x_0,
                                      const at::Tensor& sigma, c10::string_view graph);
// In place: returns the loss of ℓ = log_score + offset and overwrites log_score with
// grad·∂SE/∂ℓ (offset, grad: [B, L] or none = 0, 1). The chunk kernel of linear_score_entropy.
at::Tensor score_entropy_with_grad_cpu(at::Tensor& log_score, const at::Tensor& x_t,
                                       const at::Tensor& x_0, const at::Tensor& sigma,
                                       c10::string_view graph,
                                       const std::optional<at::Tensor>& offset,
                                       const std::optional<at::Tensor>& grad);

#ifdef SEDD_WITH_CUDA
// Host entry points (score_entropy_cuda_entry.cpp) and the kernel launchers they call
// (score_entropy_cuda.cu) on checked, contiguous xt/x0 and fp64 sigma.
void score_entropy_cuda_launch(const at::Tensor& log_score, const at::Tensor& xt,
                               const at::Tensor& x0, const at::Tensor& sigma, Graph graph,
                               at::Tensor& out);
void score_entropy_backward_cuda_launch(const at::Tensor& grad, const at::Tensor& log_score,
                                        const at::Tensor& xt, const at::Tensor& x0,
                                        const at::Tensor& sigma, Graph graph, at::Tensor& out);
at::Tensor score_entropy_cuda(const at::Tensor& log_score, const at::Tensor& x_t,
                              const at::Tensor& x_0, const at::Tensor& sigma,
                              c10::string_view graph);
at::Tensor score_entropy_backward_cuda(const at::Tensor& grad, const at::Tensor& log_score,
                                       const at::Tensor& x_t, const at::Tensor& x_0,
                                       const at::Tensor& sigma, c10::string_view graph);
void score_entropy_with_grad_cuda_launch(at::Tensor& log_score, const at::Tensor& xt,
                                         const at::Tensor& x0, const at::Tensor& sigma,
                                         const at::Tensor& offset, const at::Tensor& grad,
                                         Graph graph, at::Tensor& out);
at::Tensor score_entropy_with_grad_cuda(at::Tensor& log_score, const at::Tensor& x_t,
                                        const at::Tensor& x_0, const at::Tensor& sigma,
                                        c10::string_view graph,
                                        const std::optional<at::Tensor>& offset,
                                        const std::optional<at::Tensor>& grad);
#endif

// ISA the CPU kernels were compiled for ("avx512", "avx2+fma", "sse2", ...).
const char* cpu_isa();

}  // namespace sedd
