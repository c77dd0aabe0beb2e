"""The training loss and the likelihood bound of SEDD.md §4."""

from __future__ import annotations

import math

import torch


def loss_fn(model, x0, graph, noise, generator=None, *, t=None, eps_t: float = 1e-3,
            use_reference: bool = False):
    """σ̇(t)·Σ_i SE_i per sequence, t ~ U(ε_t, 1) per sequence (or given), [B]."""
    B = x0.shape[0]
    if t is None:
        t = (1 - eps_t) * torch.rand(B, generator=generator, dtype=torch.float64) + eps_t
    t = t.to(torch.float64).cpu()
    sigma, dsigma = noise.total(t), noise.rate(t)
    xt = graph.perturb(x0, sigma.to(x0.device), generator if x0.device.type == "cpu" else None)
    log_score = model(xt, sigma.to(device=x0.device, dtype=torch.float32))
    se = graph.score_entropy(log_score, xt, x0, sigma.to(x0.device), use_reference=use_reference)
    return dsigma.to(device=x0.device, dtype=se.dtype) * se.sum(-1)


@torch.no_grad()
def likelihood_bound(model, x0, graph, noise, timesteps: int = 64, generator=None):
    """The bound of SEDD.md §4 per sequence, in nats: ∫₀¹ E[σ̇(t)Σ_i SE_i] dt estimated with
    `timesteps` stratified t per sequence over all of [0, 1] (no ε_t cut), plus the prior term
    L·KL(P(σ̄(1))[:, x0] ‖ π). Returns (bound [B], prior [B], standard error [B] of the integral)."""
    B, L = x0.shape
    vals = []
    for k in range(timesteps):
        u = torch.rand(B, generator=generator, dtype=torch.float64)
        t = ((k + u) / timesteps).clamp(1e-12, 1 - 1e-12)
        vals.append(loss_fn(model, x0, graph, noise, generator, t=t).double().cpu())
    vals = torch.stack(vals)                           # [K, B]
    integral = vals.mean(0)
    stderr = vals.std(0, unbiased=True) / math.sqrt(timesteps)
    eps = getattr(noise, "eps", 0.0)
    prior = torch.full((B,), L * graph.prior_kl(float(noise.sigma_max), eps), dtype=torch.float64)
    return integral + prior, prior, stderr
