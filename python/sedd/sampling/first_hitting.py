"""First-hitting sampling of the absorbing graph (Zheng et al. 2024, "Masked diffusion models are
secretly time-agnostic masked models and exploit inaccurate categorical sampling", §4): instead of
a time grid, draw the exact time at which the next masked position unmasks, pick that position,
and sample its token.

Why it is exact. Under the absorbing forward process every position is masked independently at
a random time τ_i with P(τ_i ≤ t) = m(t) = 1 − e^{−σ̄(t)} (docs/math.md §1–2), and stays masked. Run
backwards from time t with n positions masked, their τ_i are i.i.d. with CDF m(s)/m(t) on
s ≤ t, so the next unmasking happens at the largest of them, whose CDF is (m(s)/m(t))^n: with
u ~ U(0, 1), m(s) = m(t)·u^{1/n} exactly (a closed form in m for every schedule; σ̄(s) =
−log(1 − m(s)), no inversion of the schedule is needed). Which position it is, is uniform over
the masked ones (exchangeability). And what it unmasks to is the data conditional p(x_i = y |
the unmasked tokens): for the absorbing graph the reverse posterior at a masked position does
not depend on the time (the network's scores at any σ are e^{−σ} p(y | x)/(1 − e^{−σ}), whose
normalisation over y ≠ M is p(y | x)). So with exact scores each step samples exactly from the
reverse process: no discretisation error, and each masked position costs one network evaluation
(at most L per window; with k tokens per step, ⌈L/k⌉). Only the start is approximate, as in
every sampler: the chain starts fully masked at t = 1 although m(1) = 1 − e^{−σ̄(1)} may be
below 1 (the leaky prior of docs/math.md §4, ε·log n per token for the log-linear schedule).

A time-independent ("clean") model needs no time at all; a σ-conditioned model is evaluated at
σ̄ of the drawn time of the step's first unmasking (clamped below at σ̄(ε), the grid's end).

`steps` caps the evaluations per window: each sequence unmasks k = ⌈n/steps⌉ positions per
evaluation (1, the exact sampler, when steps ≥ n, the number of masked positions), or
`tokens_per_step` if given (then `steps` is not read). With k > 1 the k positions are drawn
together from one evaluation, independently given x (the usual speed/quality trade; times of
the k events follow the same order statistics, and the next step continues from the k-th)."""

from __future__ import annotations

import math

import torch


@torch.no_grad()
def first_hitting(net, graph, noise, x, frozen, settings):
    """Unmask every masked, non-frozen position of x [B, W]; returns (x, evaluations).
    settings: the sampler's (steps, tokens_per_step, eps, generator, use_reference, shaping,
    progress).

    `net` is the sampler's NetworkView (sedd.sampling.network): net.rows(x, σ [B], pos [B, K],
    active [B]) gives the log-score rows [B, K, V] at positions pos (from the exact cache for a
    clean model, so no [B, W, V] shift is computed, and finished sequences are not evaluated). The token of each unmasked position is drawn with the
    graph's denoise kernel on those rows (its weights at a masked row are ∝ e^{ℓ_y}, y ≠ M)."""
    B, W = x.shape
    dev = x.device
    steps, tokens_per_step, eps = settings.steps, settings.tokens_per_step, settings.eps
    generator, use_reference = settings.generator, settings.use_reference
    shaping, progress = settings.shaping, settings.progress
    masked = x == graph.mask
    if frozen is not None:
        masked &= ~frozen
    n = masked.sum(1)                                                        # [B]
    if tokens_per_step is not None:
        k = torch.full_like(n, int(tokens_per_step))
    else:
        k = ((n + steps - 1) // steps).clamp_min(1)
    sigma_1 = float(noise.total(torch.tensor(1.0, dtype=torch.float64)))
    log_m = torch.full((B,), math.log(-math.expm1(-sigma_1)) if math.isfinite(sigma_1) else 0.0,
                       dtype=torch.float64, device=dev)                      # log m(t), t = 1
    sigma_floor = float(noise.total(torch.tensor(eps, dtype=torch.float64)))
    evaluations = 0
    while True:
        active = n > 0
        if not bool(active.any()):
            break
        kb = torch.minimum(k, n)                                             # events this step
        K = int(kb.max())
        j = torch.arange(K, device=dev)
        valid = j[None] < kb[:, None]                                        # [B, K]
        # the event times: m_j = m_{j−1}·u_j^{1/(n − j)}, n − j positions masked before event j
        u = torch.rand(B, K, generator=generator, dtype=torch.float64, device=dev)
        left = (n[:, None] - j[None]).clamp_min(1).double()
        log_mj = log_m[:, None] + torch.cumsum(torch.where(valid, torch.log(u) / left, 0.0), 1)
        sigma = -torch.log1p(-torch.exp(log_mj[:, 0]))                       # σ̄ of the first
        sigma = torch.where(active, sigma.clamp_min(sigma_floor), sigma_floor)
        log_m = torch.where(active, log_mj[:, -1], log_m)
        # the positions: a uniform subset of kb masked ones per sequence
        keys = torch.rand(B, W, generator=generator, device=dev).masked_fill_(~masked, -1.0)
        pos = keys.topk(K, 1).indices                                        # [B, K]
        sig = sigma.float()
        rows = net.rows(x, sig, pos, active)                                 # [B, K, V]
        cur = x.gather(1, pos)
        if shaping is not None:
            shaping.rows(rows, cur)
        new = graph.step("denoise", rows, cur, sig, generator, ~valid, use_reference=use_reference)
        x = x.scatter(1, pos, new)
        masked = masked.scatter(1, pos, masked.gather(1, pos) & ~valid)
        n = n - kb
        evaluations += 1
        if progress is not None:
            progress.update(1)
    return x, evaluations
