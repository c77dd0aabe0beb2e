// Entry points of the score-entropy op for each back end (registered in csrc/registration.cpp).
#pragma once

#include <ATen/ATen.h>

#include "../common/macros.h"

namespace sedd {

at::Tensor score_entropy_cpu(const at::Tensor& log_score, const at::Tensor& x_t,
                             const at::Tensor& x_0, const at::Tensor& sigma,
                             c10::string_view graph);
at::Tensor score_entropy_backward_cpu(const at::Tensor& grad, const at::Tensor& log_score,
                                      const at::Tensor& x_t, const at::Tensor& x_0,
                                      const at::Tensor& sigma, c10::string_view graph);

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
#endif

// ISA the CPU kernels were compiled for ("avx512", "avx2+fma", "sse2", ...).
const char* cpu_isa();

}  // namespace sedd
