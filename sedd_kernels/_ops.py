"""Bindings of the compiled ops: argument normalisation, autograd formulas and fake kernels.

No math lives here: the kernels in csrc/ implement docs/math.md, the reference twins in reference.py.
"""

from __future__ import annotations

import torch

from ._args import check_loss_values, graph_name, same_device, sigma_vector, want_validate


def _well_formed(log_score, x_t, x_0, sigma, graph) -> bool:
    """Shapes and dtypes the op accepts (else the op itself raises its precise error)."""
    ok = (isinstance(log_score, torch.Tensor) and log_score.dim() == 3
          and all(isinstance(t, torch.Tensor) and t.dtype == torch.long
                  and t.shape == log_score.shape[:2] for t in (x_t, x_0))
          and sigma.dim() == 1 and sigma.shape[0] == log_score.shape[0])
    return ok and log_score.shape[-1] >= (2 if graph == "absorb" else 1)


def _validate_values(log_score, x_t, x_0, sigma, graph):
    """Data-dependent checks for CUDA tensors (one host sync). The CPU kernels check in C++; the
    CUDA kernels cannot raise, so without this they write NaN for invalid rows."""
    if not _well_formed(log_score, x_t, x_0, sigma, graph):
        return
    check_loss_values("score_entropy", log_score.shape[-1], x_t, x_0, sigma, graph)


def score_entropy(log_score: torch.Tensor, x_t: torch.Tensor, x_0: torch.Tensor, sigma,
                  graph, *, validate: bool | None = None) -> torch.Tensor:
    """Per-token score entropy of docs/math.md §3, fused: one read of each row of ``log_score``.

    Args:
        log_score: [B, L, V] network log-scores (fp32, bf16, fp16 or fp64), unit stride along V.
        x_t: [B, L] int64 perturbed tokens.
        x_0: [B, L] int64 clean tokens.
        sigma: total noise σ̄(t) per sequence: [B], [B, 1], 0-d or a number; > 0 (+inf allowed).
        graph: "absorb" (mask id V − 1) or "uniform".
        validate: check token ids and sigma on CUDA tensors (one host sync; default True outside
            torch.compile). CPU inputs are always checked, at no cost.

    Returns:
        [B, L] loss per token (float32; float64 for float64 ``log_score``), not weighted by σ̇.
        Differentiable in ``log_score``; the gradient has ``log_score``'s dtype.
    """
    graph = graph_name("score_entropy", graph)
    sigma = sigma_vector(sigma, log_score)
    same_device("score_entropy", log_score, "log_score", x_t=x_t, x_0=x_0, sigma=sigma)
    if want_validate(validate, log_score) and isinstance(x_t, torch.Tensor):
        _validate_values(log_score, x_t, x_0, sigma, graph)
    return torch.ops.sedd.score_entropy(log_score, x_t, x_0, sigma, graph)


# ---- fake kernels (shape/dtype propagation for torch.compile, meta tensors) ----

@torch.library.register_fake("sedd::score_entropy")
def _score_entropy_fake(log_score, x_t, x_0, sigma, graph):
    torch._check(log_score.dim() == 3, lambda: "score_entropy: log_score must be [B, L, V]")
    dtype = torch.float64 if log_score.dtype == torch.float64 else torch.float32
    return log_score.new_empty(log_score.shape[:2], dtype=dtype)


@torch.library.register_fake("sedd::score_entropy_backward")
def _score_entropy_backward_fake(grad, log_score, x_t, x_0, sigma, graph):
    torch._check(log_score.dim() == 3, lambda: "score_entropy_backward: log_score must be [B, L, V]")
    return torch.empty(log_score.shape, dtype=log_score.dtype, device=log_score.device)


@torch.library.register_fake("sedd::score_entropy_with_grad_")
def _score_entropy_with_grad_fake(log_score, x_t, x_0, sigma, graph, offset=None, grad=None):
    torch._check(log_score.dim() == 3, lambda: "score_entropy_with_grad_: log_score must be [B, L, V]")
    dtype = torch.float64 if log_score.dtype == torch.float64 else torch.float32
    return log_score.new_empty(log_score.shape[:2], dtype=dtype)


# ---- autograd ----

def _setup_context(ctx, inputs, output):
    log_score, x_t, x_0, sigma, graph = inputs
    ctx.save_for_backward(log_score, x_t, x_0, sigma)
    ctx.graph = graph


def _backward(ctx, grad):
    log_score, x_t, x_0, sigma = ctx.saved_tensors
    grad_log_score = None
    if ctx.needs_input_grad[0]:
        grad_log_score = torch.ops.sedd.score_entropy_backward(grad, log_score, x_t, x_0, sigma,
                                                               ctx.graph)
    return grad_log_score, None, None, None, None


torch.library.register_autograd("sedd::score_entropy", _backward, setup_context=_setup_context)
