// Entry points of the sampling ops (registered in csrc/registration.cpp).
#pragma once

#include <ATen/ATen.h>

#include "steps.h"

namespace sedd {

at::Tensor perturb_cpu(const at::Tensor& x_0, const at::Tensor& sigma, c10::string_view graph,
                       int64_t num_tokens, const at::Tensor& rng);
at::Tensor sample_categorical_cpu(const at::Tensor& weights, const at::Tensor& rng);
at::Tensor reverse_step_cpu(const at::Tensor& log_score, const at::Tensor& x,
                            const at::Tensor& dsigma, c10::string_view graph,
                            c10::string_view kind, const at::Tensor& rng,
                            const c10::optional<at::Tensor>& frozen,
                            const c10::optional<at::Tensor>& shift,
                            const c10::optional<at::Tensor>& bias);

#ifdef SEDD_WITH_CUDA
at::Tensor perturb_cuda(const at::Tensor& x_0, const at::Tensor& sigma, c10::string_view graph,
                        int64_t num_tokens, const at::Tensor& rng);
at::Tensor sample_categorical_cuda(const at::Tensor& weights, const at::Tensor& rng);
at::Tensor reverse_step_cuda(const at::Tensor& log_score, const at::Tensor& x,
                             const at::Tensor& dsigma, c10::string_view graph,
                             c10::string_view kind, const at::Tensor& rng,
                             const c10::optional<at::Tensor>& frozen,
                             const c10::optional<at::Tensor>& shift,
                             const c10::optional<at::Tensor>& bias);
// Kernel launchers (steps_cuda.cu), called by the CUDA entry points (steps_cuda_entry.cpp) on
// prepared inputs (steps_args.h): contiguous x / frozen, fp64 dsigma, sigma and shift, bias.
void reverse_step_cuda_launch(const at::Tensor& log_score, const at::Tensor& x,
                              const at::Tensor& ds, const at::Tensor& frozen,
                              const at::Tensor& shift, const at::Tensor& bias, Graph g,
                              steps::Kind kind, const at::Tensor& rng, at::Tensor& out);
void sample_categorical_cuda_launch(const at::Tensor& w, const at::Tensor& rng,
                                    at::Tensor& out);
void perturb_cuda_launch(const at::Tensor& x0, const at::Tensor& sigma, Graph g, int64_t V,
                         const at::Tensor& rng, at::Tensor& out);
#endif

}  // namespace sedd
