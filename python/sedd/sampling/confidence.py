"""Confidence-ordered parallel decoding of the absorbing graph (Fast-dLLM's threshold, LLaDA's
fixed k per call): at each network call, every masked position gets a confidence from its
denoising distribution, and the most confident ones are unmasked together.

At a masked position i the denoising distribution is q_i(y) ∝ e^{ℓ_{i,y}}, y ≠ M (the absorbing
log-scores at any σ are log p(y | x) plus a constant, docs/math.md §5–6; temperature / top-p
shape it first). Its confidence (`rank_by`):
- "top": max_y q_i(y) (Fast-dLLM, LLaDA's low-confidence remasking);
- "margin": the top probability minus the second;
- "entropy": exp(−H(q_i)), in (0, 1] like the others (1: a certain position).

Which positions a call unmasks, per sequence: those whose confidence is ≥ `threshold` τ, and at
least the most confident one (Fast-dLLM); or, without a threshold, the `tokens_per_step` = k most
confident (LLaDA; default k = ⌈masked/steps⌉, so at most `steps` calls per window). Each chosen
position draws its token from q_i through the graph's denoise kernel (`greedy`: its argmax).

Why one position per call is exact. With exact scores, q_i is the data conditional p(x_i | the
unmasked tokens). Choosing *which* position comes next from the tokens revealed so far (any rule,
confidence included) and then drawing its token from that conditional is the chain rule in an
order that depends on the past: the probability of a completed sequence is the product of its
conditionals along the order taken, whatever the order, so the samples are exact (all valid,
NLL at the entropy rate). That holds for k = 1, or for a τ above every confidence (one per call).
It does not hold for a greedy argmax (a deterministic token is not a draw from the conditional),
nor for k > 1 or a reachable τ (several tokens drawn independently given the same past: the
usual speed/quality trade, measured in bench/README.md).

A σ-conditioned network is evaluated at the level whose expected masked share is the window's
current one: 1 − e^{−σ} = masked / W, frozen masked positions included (clamped to the grid's
[σ̄(ε), σ̄(1)])."""

from __future__ import annotations

import math

import torch

RANK_BY = ("top", "margin", "entropy")


def confidences(rows, M, rank_by):
    """Confidence [R] of log-score rows [R, V] whose column M (the mask, the current token) is
    excluded: the distribution is softmax over the other columns."""
    real = rows[:, :M] if M == rows.shape[1] - 1 else torch.cat([rows[:, :M], rows[:, M + 1:]], 1)
    log_z = torch.logsumexp(real, -1)
    if rank_by == "entropy":
        logp = real - log_z[:, None]
        return torch.exp((logp.exp() * logp).nan_to_num_(0.0).sum(-1))
    if rank_by == "margin":
        top2 = real.topk(min(2, real.shape[1]), -1).values
        p = torch.exp(top2 - log_z[:, None])
        return p[:, 0] - (p[:, 1] if p.shape[1] > 1 else 0.0)
    return torch.exp(real.max(-1).values - log_z)


@torch.no_grad()
def confidence(net, graph, noise, x, frozen, settings):
    """Unmask every masked, non-frozen position of x [B, W]; returns (x, evaluations)."""
    B, W = x.shape
    s, dev, M = settings, x.device, graph.mask
    movable = x == M
    if frozen is not None:
        movable &= ~frozen
    n = movable.sum(1)
    k = (torch.full_like(n, int(s.tokens_per_step)) if s.tokens_per_step is not None
         else ((n + s.steps - 1) // s.steps).clamp_min(1))                    # k per call
    sigma_hi = float(noise.total(torch.tensor(1.0, dtype=torch.float64)))
    sigma_lo = float(noise.total(torch.tensor(s.eps, dtype=torch.float64)))
    x = x.clone()
    flat_x, flat_m = x.view(-1), movable.view(-1)
    evaluations = 0
    while True:
        active = n > 0
        if not bool(active.any()):
            break
        idx = flat_m.nonzero().squeeze(1)                                     # [R]
        share = (x == M).sum(1).double() / W                 # frozen masks (a suffix) count
        sigma = (-torch.log1p(-share.clamp(max=1.0))).clamp(sigma_lo, sigma_hi)
        sub = active.nonzero().squeeze(1)
        if net.use_cache or sub.numel() == B or getattr(net.model, "row_state", False):
            rows = net.flat_rows(x, sigma.float(), idx, need=active)          # [R, V]
        else:                  # uncached: run the sequences that still have masked positions
            idx_sub = movable.index_select(0, sub).reshape(-1).nonzero().squeeze(1)
            rows = net.flat_rows(x.index_select(0, sub), sigma.float().index_select(0, sub),
                                 idx_sub)                    # the same rows, in idx's order
        cur = flat_x.index_select(0, idx)
        if not s.shaping.identity:
            s.shaping.rows(rows[:, None], cur[:, None])
        conf = torch.full((B * W,), -math.inf, device=dev)
        # a row with no possible token (every score 0: e.g. exact scores of a state the tokens
        # drawn together made impossible) ranks lowest; its draw is then uniform (the kernel's rule)
        conf[idx] = confidences(rows, M, s.rank_by).float().nan_to_num_(0.0)
        conf = conf.view(B, W)
        best = conf.argmax(1)                                                 # [B]
        if s.threshold is not None:
            chosen = conf >= s.threshold
            chosen[torch.arange(B, device=dev), best] |= active
        else:
            K = int(torch.minimum(k, n).max())
            top = conf.topk(K, 1)
            keep = (torch.arange(K, device=dev)[None] < torch.minimum(k, n)[:, None]) \
                & (top.values > -math.inf)
            chosen = torch.zeros_like(movable).scatter_(1, top.indices, keep)
        chosen &= movable
        pick = chosen.view(-1).index_select(0, idx)                          # [R] bool
        sel, at = rows[pick], idx[pick]
        if s.greedy:
            sel[:, M] = -math.inf
            new = sel.argmax(-1)
        else:
            seq = torch.div(at, W, rounding_mode="floor")
            new = graph.step("denoise", sel[:, None], cur[pick][:, None],
                             sigma.float().index_select(0, seq), s.generator, None,
                             use_reference=s.use_reference)[:, 0]
        flat_x[at] = new
        flat_m[at] = False
        n = n - chosen.sum(1)
        evaluations += 1
        if s.progress is not None:
            s.progress.update(1)
    return x, evaluations
