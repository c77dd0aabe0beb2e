"""Reverse sampling (SEDD.md §6) on the fused step kernels: Euler or analytic predictor over the
time grid t_k = 1 − kΔt, then the denoiser; given positions stay fixed through every step."""

from __future__ import annotations

import torch

try:
    from tqdm.auto import tqdm
except ImportError:  # tqdm is a `train` extra
    tqdm = None


@torch.no_grad()
def sample(model, graph, noise, num_samples: int, length: int, steps: int,
           predictor: str = "analytic", denoise: bool = True, condition=None,
           generator: torch.Generator | None = None, eps: float = 1e-5, device=None,
           progress: bool = False) -> torch.Tensor:
    """Draw `num_samples` sequences of `length` tokens in `steps` predictor steps.

    condition: None, or (tokens [num_samples or 1, length] int64, given [.., length] bool): the
    given positions are written into x before every step and after the last, and frozen in the
    kernels (prefix, suffix, infilling: any pattern)."""
    if predictor not in ("analytic", "euler"):
        raise ValueError(f"predictor must be 'analytic' or 'euler', got {predictor!r}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    device = device or next(model.parameters()).device
    x = graph.sample_limit(num_samples, length, device=device, generator=generator)
    frozen = tokens = None
    if condition is not None:
        tokens, given = condition
        tokens = tokens.to(device).expand(num_samples, length)
        frozen = given.to(device).expand(num_samples, length).contiguous()
        x = torch.where(frozen, tokens, x)
    dt = (1 - eps) / steps
    grid = torch.linspace(1, eps, steps + 1, dtype=torch.float64)
    it = range(steps)
    if progress and tqdm is not None:
        it = tqdm(it, desc="sampling", leave=False)
    model_was_training = model.training
    model.eval()
    for k in it:
        t = grid[k]
        sigma = noise.total(t)
        log_score = model(x, torch.full((num_samples,), float(sigma), device=device))
        if predictor == "euler":
            dsigma = float(noise.rate(t)) * dt
        else:
            dsigma = float(sigma - noise.total(grid[k + 1]))
        x = graph.step(predictor, log_score, x, torch.full((num_samples,), dsigma, device=device),
                       generator, frozen)
    if denoise:
        sigma = float(noise.total(grid[-1]))
        log_score = model(x, torch.full((num_samples,), sigma, device=device))
        x = graph.denoise(log_score, x, torch.full((num_samples,), sigma, device=device),
                          generator, frozen)
    if frozen is not None:
        x = torch.where(frozen, tokens, x)
    model.train(model_was_training)
    return x
