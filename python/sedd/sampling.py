"""The sampler: reverse sampling (SEDD.md §6) on the fused step kernels, with a predictor of the
registry (sedd.predictors: Euler, analytic) over the time grid t_k = 1 − kΔt, then the denoiser;
given positions stay fixed through every step.

The exact cache (absorbing graph, time-independent "clean" model, see DDiT.clean_log_probs): such
a network's output depends on x alone, and the log-scores at noise σ are that output plus the
analytic shift −log expm1(σ). So when a step changes no token of the batch, the network output of
the previous step *is* the output the network would give now: the sampler reuses it and
recomputes only the shift (DDiT.log_score_from_clean). This is exact, not an approximation — the
cached sampler computes the same log-scores from the same floats as the uncached one, so with the
same generator its samples are bit-identical (tested); it only skips evaluations whose result it
already holds. The reuse is all-or-nothing over the batch (a step that changes any token of any
sequence calls the network on the whole batch), so it saves calls when most steps change nothing:
with the log-linear schedule about B·L/S tokens are unmasked per step, and roughly a fraction
exp(−B·L/S) of the S steps can reuse the output (e.g. most steps at S = 1024, B·L = 16; almost
none at S = 1024, B·L = 8192). A σ-conditioned network ("score", the paper's) is never cached."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .predictors import get_predictor

try:
    from tqdm.auto import tqdm
except ImportError:  # tqdm is a `train` extra
    tqdm = None


@dataclass
class SampleStats:
    """What one sample() call did: `evaluations` is the number of network outputs the steps
    consumed (predictor steps, + 1 with the denoiser; what an uncached sampler computes), and
    `network_calls` the forward passes actually made (fewer when the exact cache reused outputs)."""

    evaluations: int
    network_calls: int
    cached: bool

    @property
    def reused(self) -> int:
        return self.evaluations - self.network_calls


@torch.no_grad()
def sample(model, graph, noise, num_samples: int, length: int, steps: int,
           predictor: str = "analytic", denoise: bool = True, condition=None,
           generator: torch.Generator | None = None, eps: float = 1e-5, device=None,
           progress: bool = False, cache: bool = True, use_reference: bool = False,
           return_stats: bool = False):
    """Draw `num_samples` sequences of `length` tokens in `steps` predictor steps; returns the
    tokens [num_samples, length], or (tokens, SampleStats) with return_stats=True.

    condition: None, or (tokens [num_samples or 1, length] int64, given [.., length] bool): the
    given positions are written into x before every step and after the last, and frozen in the
    kernels (prefix, suffix, infilling: any pattern).
    cache: reuse the network output of a time-independent model (`model.time_independent`,
    absorbing graph only) across steps that change no token — exact, see the module docstring;
    ignored for σ-conditioned models. use_reference: take the steps from the plain-PyTorch
    sedd_kernels.reference ops (dense over [B, L, V]) instead of the fused kernels (absorbing and
    uniform graphs; for comparisons and benchmarks)."""
    pred = get_predictor(predictor)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    time_independent = bool(getattr(model, "time_independent", False))
    if time_independent and not graph.supports_clean:
        raise ValueError(f"a time-independent ('clean') model needs the absorbing graph, got "
                         f"{graph.name!r}")
    if use_reference and not graph.fused:
        raise ValueError(f"use_reference needs the absorbing or uniform graph, got {graph.name!r}")
    use_cache = cache and time_independent
    device = device or next(model.parameters()).device
    x = graph.sample_limit(num_samples, length, device=device, generator=generator)
    frozen = tokens = None
    if condition is not None:
        tokens, given = condition
        tokens = tokens.to(device).expand(num_samples, length)
        frozen = given.to(device).expand(num_samples, length).contiguous()
        x = torch.where(frozen, tokens, x)

    calls = 0
    held = None  # (x, clean_log_probs(x)) of the last network call, when caching

    def log_score_at(x, sigma):
        nonlocal calls, held
        sigma = torch.full((num_samples,), float(sigma), device=device)
        if not use_cache:
            calls += 1
            return model(x, sigma)
        if held is None or not torch.equal(held[0], x):
            calls += 1
            held = (x, model.clean_log_probs(x))
        return model.log_score_from_clean(held[1], x, sigma)

    def per_sequence(v):
        return torch.full((num_samples,), float(v), device=device)

    dt = (1 - eps) / steps
    grid = torch.linspace(1, eps, steps + 1, dtype=torch.float64)
    it = range(steps)
    if progress and tqdm is not None:
        it = tqdm(it, desc="sampling", leave=False)
    model_was_training = model.training
    model.eval()
    try:
        for k in it:
            t = grid[k]
            log_score = log_score_at(x, noise.total(t))
            dsigma = per_sequence(pred.dsigma(noise, t, grid[k + 1], dt))
            x = pred.step(graph, log_score, x, dsigma, generator, frozen, use_reference)
        if denoise:
            sigma = float(noise.total(grid[-1]))
            x = graph.step("denoise", log_score_at(x, sigma), x, per_sequence(sigma), generator,
                           frozen, use_reference=use_reference)
    finally:
        model.train(model_was_training)
    if frozen is not None:
        x = torch.where(frozen, tokens, x)
    if return_stats:
        return x, SampleStats(evaluations=steps + int(denoise), network_calls=calls,
                              cached=use_cache)
    return x
