// Entry points of the score-entropy op for each back end (registered in csrc/registration.cpp).
#pragma once

#include <ATen/ATen.h>

namespace sedd {

at::Tensor score_entropy_cpu(const at::Tensor& log_score, const at::Tensor& x_t,
                             const at::Tensor& x_0, const at::Tensor& sigma,
                             c10::string_view graph);
at::Tensor score_entropy_backward_cpu(const at::Tensor& grad, const at::Tensor& log_score,
                                      const at::Tensor& x_t, const at::Tensor& x_0,
                                      const at::Tensor& sigma, c10::string_view graph);

#ifdef SEDD_WITH_CUDA
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
