"""Temperature and nucleus (top-p) shaping of the distribution a reverse step samples from.

A reverse step at a position that can move (absorbing: a masked position; uniform: every
position) draws from weights built from the log-scores ℓ_y of the other tokens y ≠ x. Shaping
rewrites those ℓ_y in place so that the *targets* follow the shaped distribution while their
total mass Σ_{y≠x} e^{ℓ_y} stays as it was:

    q_y ∝ e^{ℓ_y / T},  restricted to the smallest set of most likely y whose q-mass reaches p
    (the token that crosses p is kept), renormalised;   ℓ'_y = log q_y + logsumexp_{y≠x} ℓ_y.

For the absorbing graph this is exactly temperature / top-p on the unmasking distribution
p(y | x) (the probability *of* unmasking in a step depends on the mass only, so the schedule is
untouched); for the uniform graph it shapes the relative weights of the jump targets. Tokens of
probability 0 (ℓ = −inf) stay at 0 at any temperature. T = 1 and p = 1 leave the scores alone
(the caller skips this module: the exact sampler's bits are unchanged).

Computed in float64 over chunks of rows (at most ~2²² elements at a time), so no [B, L, V]
temporary is made beyond the scores themselves."""

from __future__ import annotations

import math

import torch

_CHUNK_ELEMENTS = 1 << 22


def check_shaping(temperature: float, top_p: float):
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"temperature must be > 0 (finite), got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def is_identity(temperature: float, top_p: float) -> bool:
    return temperature == 1.0 and top_p == 1.0


def shaped_log_probs(ell: torch.Tensor, temperature: float = 1.0,
                     top_p: float = 1.0) -> torch.Tensor:
    """log q [R, V] of unnormalised log-weights rows `ell` [R, V] (−inf: excluded):
    q ∝ e^{ℓ/T}, restricted to the smallest set of most likely entries whose mass reaches top_p
    (the entry that crosses top_p is kept), renormalised. The one rule of temperature and top-p
    for every sampler (the reverse steps' targets, the autoregressive baseline's next token)."""
    logq = torch.log_softmax(ell / temperature, 1)
    if top_p < 1:
        sorted_q, order = torch.sort(logq, 1, descending=True)
        before = torch.cumsum(sorted_q.exp(), 1) - sorted_q.exp()   # mass of the better ones
        drop_sorted = before >= top_p                               # the crossing one stays
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter_(1, order, drop_sorted)
        logq = torch.log_softmax(logq.masked_fill(drop, -math.inf), 1)
    return logq


def shape_rows(rows: torch.Tensor, current: torch.Tensor, temperature: float = 1.0,
               top_p: float = 1.0) -> torch.Tensor:
    """Shape log-score rows [R, V] in place, excluding each row's current token `current` [R]
    (its ℓ stays as it is); returns `rows`."""
    R, V = rows.shape
    if R == 0:
        return rows
    step = max(1, _CHUNK_ELEMENTS // V)
    for lo in range(0, R, step):
        chunk = rows[lo:lo + step]
        cur = current[lo:lo + step, None]
        ell = chunk.double()
        keep_cur = ell.gather(1, cur)
        ell.scatter_(1, cur, -math.inf)
        mass = torch.logsumexp(ell, 1, keepdim=True)
        logq = shaped_log_probs(ell, temperature, top_p)
        out = torch.where(torch.isfinite(mass), logq + mass, ell)       # no mass: nothing to shape
        out.scatter_(1, cur, keep_cur)
        chunk.copy_(out)
    return rows


def shape_scores(log_score: torch.Tensor, x: torch.Tensor, movable: torch.Tensor,
                 temperature: float = 1.0, top_p: float = 1.0) -> torch.Tensor:
    """Shape the rows of log_score [B, L, V] at the positions `movable` [B, L] (bool) in place."""
    if is_identity(temperature, top_p):
        return log_score
    idx = movable.reshape(-1).nonzero().squeeze(1)
    if idx.numel() == 0:
        return log_score
    if not log_score.is_contiguous():
        raise ValueError("shape_scores needs contiguous log-scores")
    V = log_score.shape[-1]
    flat = log_score.view(-1, V)
    cur = x.reshape(-1)
    step = max(1, _CHUNK_ELEMENTS // V)
    for lo in range(0, idx.numel(), step):
        part = idx[lo:lo + step]
        rows = flat.index_select(0, part)
        shape_rows(rows, cur.index_select(0, part), temperature, top_p)
        flat.index_copy_(0, part, rows)
    return log_score


class Shaping:
    """Temperature / top-p as the samplers apply them (validated; identity at 1.0 / 1.0)."""

    def __init__(self, temperature: float = 1.0, top_p: float = 1.0):
        check_shaping(temperature, top_p)
        self.temperature, self.top_p = float(temperature), float(top_p)

    @property
    def identity(self) -> bool:
        return is_identity(self.temperature, self.top_p)

    def scores(self, log_score, x, graph):
        """In place on the rows of log_score [B, L, V] that graph.movable(x) says can move."""
        if not self.identity:
            shape_scores(log_score, x, graph.movable(x), self.temperature, self.top_p)
        return log_score

    def rows(self, rows, current):
        """In place on gathered rows [B, K, V] (contiguous) with their current tokens [B, K]."""
        if not self.identity:
            V = rows.shape[-1]
            shape_rows(rows.view(-1, V), current.reshape(-1), self.temperature, self.top_p)
        return rows
