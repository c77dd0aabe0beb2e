// The schema of every op of the `sedd` namespace, in one list, and its CPU/CUDA kernels.
// Autograd formulas and fake (meta) kernels are registered from Python (sedd_kernels/_ops.py).
#include <torch/library.h>

#include "sampling/steps_ops.h"
#include "score_entropy/score_entropy_ops.h"

TORCH_LIBRARY(sedd, m) {
  // docs/math.md §3. log_score [B, L, V] (fp32/bf16/fp16/fp64, unit stride on V), x_t and x_0 [B, L]
  // int64, sigma [B] > 0, graph "absorb" | "uniform". Returns the per-token loss [B, L]
  // (float32; float64 for float64 log_score).
  m.def("score_entropy(Tensor log_score, Tensor x_t, Tensor x_0, Tensor sigma, str graph) -> Tensor");
  // Gradient of score_entropy: grad [B, L] -> grad_log_score [B, L, V] in log_score's dtype.
  m.def(
      "score_entropy_backward(Tensor grad, Tensor log_score, Tensor x_t, Tensor x_0, "
      "Tensor sigma, str graph) -> Tensor");
  // In place, for the fused output projection (linear_score_entropy): returns the loss of
  // ℓ = log_score + offset (offset [B, L] or none) and overwrites log_score with grad·∂SE/∂ℓ
  // (grad [B, L] or none = 1); inactive absorbing rows get loss 0 and a zero gradient.
  m.def(
      "score_entropy_with_grad_(Tensor(a!) log_score, Tensor x_t, Tensor x_0, Tensor sigma, "
      "str graph, Tensor? offset=None, Tensor? grad=None) -> Tensor");
  // docs/math.md §1: x_t ~ P(σ)[:, x_0] per position; num_tokens = V (absorbing mask = V - 1).
  // Random bits: Philox keyed by (seed, offset, row, column) (csrc/common/philox.h); the sampling
  // ops read (seed, offset) from `rng`, an int64 [2] tensor on their device, inside the kernel:
  // drawn by torch's own random op from the caller's generator, so that CUDA-graph capture
  // replays with fresh numbers and no host value is baked in.
  m.def("perturb(Tensor x_0, Tensor sigma, str graph, int num_tokens, Tensor rng) -> Tensor");
  // Exponential race over the last dimension of non-negative weights [..., V] -> indices [...].
  m.def("sample_categorical(Tensor weights, Tensor rng) -> Tensor");
  // docs/math.md §6: one reverse step on log-scores [B, L, V] from tokens x [B, L];
  // kind "euler" (dsigma = Δt·σ̇), "analytic" (dsigma = σ̄(t) − σ̄(t − Δt)) or "denoise"
  // (dsigma = σ̄(t)); frozen [B, L] bool marks positions that keep their token; bias [V] and
  // shift [B] are added to the log-scores, (log_score + bias) + shift (the output projection's
  // bias and the network's scale_by_sigma offset, unmaterialised).
  m.def(
      "reverse_step(Tensor log_score, Tensor x, Tensor dsigma, str graph, str kind, Tensor rng, "
      "Tensor? frozen=None, Tensor? shift=None, Tensor? bias=None) -> Tensor");
}

TORCH_LIBRARY_IMPL(sedd, CPU, m) {
  m.impl("score_entropy", &sedd::score_entropy_cpu);
  m.impl("score_entropy_backward", &sedd::score_entropy_backward_cpu);
  m.impl("score_entropy_with_grad_", &sedd::score_entropy_with_grad_cpu);
  m.impl("perturb", &sedd::perturb_cpu);
  m.impl("sample_categorical", &sedd::sample_categorical_cpu);
  m.impl("reverse_step", &sedd::reverse_step_cpu);
}

#ifdef SEDD_WITH_CUDA
TORCH_LIBRARY_IMPL(sedd, CUDA, m) {
  m.impl("score_entropy", &sedd::score_entropy_cuda);
  m.impl("score_entropy_backward", &sedd::score_entropy_backward_cuda);
  m.impl("score_entropy_with_grad_", &sedd::score_entropy_with_grad_cuda);
  m.impl("perturb", &sedd::perturb_cuda);
  m.impl("sample_categorical", &sedd::sample_categorical_cuda);
  m.impl("reverse_step", &sedd::reverse_step_cuda);
}
#endif
