// The schema of every op of the `sedd` namespace, in one list, and its CPU/CUDA kernels.
// Autograd formulas and fake (meta) kernels are registered from Python (sedd_kernels/_ops.py).
#include <torch/library.h>

#include "score_entropy/score_entropy_ops.h"

TORCH_LIBRARY(sedd, m) {
  // SEDD.md §3. log_score [B, L, V] (fp32/bf16/fp16/fp64, unit stride on V), x_t and x_0 [B, L]
  // int64, sigma [B] > 0, graph "absorb" | "uniform". Returns the per-token loss [B, L]
  // (float32; float64 for float64 log_score).
  m.def("score_entropy(Tensor log_score, Tensor x_t, Tensor x_0, Tensor sigma, str graph) -> Tensor");
  // Gradient of score_entropy: grad [B, L] -> grad_log_score [B, L, V] in log_score's dtype.
  m.def(
      "score_entropy_backward(Tensor grad, Tensor log_score, Tensor x_t, Tensor x_0, "
      "Tensor sigma, str graph) -> Tensor");
}

TORCH_LIBRARY_IMPL(sedd, CPU, m) {
  m.impl("score_entropy", &sedd::score_entropy_cpu);
  m.impl("score_entropy_backward", &sedd::score_entropy_backward_cpu);
}

#ifdef SEDD_WITH_CUDA
TORCH_LIBRARY_IMPL(sedd, CUDA, m) {
  m.impl("score_entropy", &sedd::score_entropy_cuda);
  m.impl("score_entropy_backward", &sedd::score_entropy_backward_cuda);
}
#endif
