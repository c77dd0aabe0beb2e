"""Graphs from a user's dense rate matrix (small vocabularies: DNA, proteins, toy problems).

``GeneralGraph(Q)`` implements docs/math.md §1, §3 and §6 with the general formulas: P(σ) = exp(σQ)
exactly (eigendecomposition when Q is symmetric, batched scaling-and-squaring otherwise),
perturbation from the columns of P, score entropy from its definition, and Euler / analytic /
denoising steps whose weights are sampled with the fused exponential race. Given the absorbing or
the uniform Q it reproduces the closed-form ops (tests/test_general_graph.py).
"""

from __future__ import annotations

import torch

from ._args import sigma_vector
from ._sampling import sample_categorical


class GeneralGraph:
    """A continuous-time Markov chain on V states with rate matrix ``Q`` [V, V]: ``Q[y, x]`` is the
    rate of jumping from x to y (off-diagonal ≥ 0, every column sums to 0).

    A state whose column of Q is zero is absorbing; if there is exactly one, the denoiser drops it
    (as the absorbing graph drops its mask)."""

    name = "general"

    def __init__(self, Q, *, atol: float = 1e-9):
        Q = torch.as_tensor(Q, dtype=torch.float64)
        if Q.dim() != 2 or Q.shape[0] != Q.shape[1] or Q.shape[0] < 2:
            raise ValueError(f"GeneralGraph: Q must be a square [V, V] matrix with V >= 2, got "
                             f"{tuple(Q.shape)}")
        off = Q - torch.diag(torch.diagonal(Q))
        if not bool(torch.isfinite(Q).all()) or bool((off < 0).any()):
            raise ValueError("GeneralGraph: Q must be finite with non-negative off-diagonal rates")
        scale = float(Q.abs().max()) or 1.0
        if float(Q.sum(0).abs().max()) > atol * scale * Q.shape[0]:
            raise ValueError("GeneralGraph: every column of Q must sum to 0 (Q[y, x] = rate x -> y)")
        self.Q = Q
        self.V = Q.shape[0]
        self.symmetric = bool(torch.equal(Q, Q.T))
        if self.symmetric:
            self._evals, self._evecs = torch.linalg.eigh(Q)
        absorbing = [i for i in range(self.V) if bool((Q[:, i] == 0).all())]
        self.absorbing_state = absorbing[0] if len(absorbing) == 1 else None

    # ---- docs/math.md §1
    def transition(self, sigma) -> torch.Tensor:
        """P(σ) = exp(σQ) for σ of any shape [...]: [..., V, V], float64, P[..., y, x]."""
        sigma = torch.as_tensor(sigma, dtype=torch.float64)
        if self.symmetric:
            U, lam = self._evecs, self._evals
            return (U * torch.exp(sigma[..., None, None] * lam)) @ U.T
        return torch.linalg.matrix_exp(sigma[..., None, None] * self.Q)

    def _cols(self, P, x):
        """P[b][:, x[b, i]] for every position: [B, L, V]."""
        B, L = x.shape
        return torch.gather(P.transpose(1, 2)[:, None].expand(B, L, self.V, self.V), 2,
                            x[..., None, None].expand(B, L, 1, self.V)).squeeze(2)

    def _rows(self, P, x):
        """P[b][x[b, i], :] for every position: [B, L, V]."""
        B, L = x.shape
        return torch.gather(P[:, None].expand(B, L, self.V, self.V), 2,
                            x[..., None, None].expand(B, L, 1, self.V)).squeeze(2)

    def perturb(self, x_0, sigma, generator=None):
        """x_t ~ P(σ)[:, x_0] per position."""
        sigma = sigma_vector(sigma, x_0).to(torch.float64).cpu()
        probs = self._cols(self.transition(sigma), x_0.cpu()).clamp_min(0.0)
        return sample_categorical(probs.to(x_0.device), generator)

    # ---- docs/math.md §3
    def score_entropy(self, log_score, x_t, x_0, sigma) -> torch.Tensor:
        """Σ_{y≠x} Q[x, y](e^{ℓ_y} − r_y ℓ_y + K(r_y)), r_y = P[y, x0] / P[x, x0]; differentiable."""
        sigma = sigma_vector(sigma, log_score).to(torch.float64).cpu()
        dtype = torch.float64 if log_score.dtype == torch.float64 else torch.float32
        P = self.transition(sigma).to(log_score.device)
        cols = self._cols(P, x_0)
        ratio = (cols / torch.gather(cols, -1, x_t[..., None])).to(dtype)
        w = self.Q.to(log_score.device)[x_t].to(dtype)
        not_x = torch.arange(self.V, device=log_score.device) != x_t[..., None]
        w = torch.where(not_x, w, 0.0)
        score = log_score.to(dtype)
        safe = torch.where(ratio > 0, ratio, 1.0)
        K = torch.where(ratio > 0, ratio * (torch.log(safe) - 1), 0.0)
        term = score.exp() - torch.where(ratio > 0, ratio * score, 0.0) + K
        return (w * torch.where(w != 0, term, 0.0)).sum(-1)

    # ---- docs/math.md §6
    def step_weights(self, log_score, x, dsigma, kind, frozen=None) -> torch.Tensor:
        """Unnormalised weights [B, L, V] (float64) of one reverse step from the general formulas."""
        B, L, V = log_score.shape
        d = sigma_vector(dsigma, log_score).to(torch.float64).cpu()
        x_cpu = x.cpu()
        s = log_score.detach().cpu().to(torch.float64).exp()
        onehot = torch.nn.functional.one_hot(x_cpu, V).to(torch.float64)
        s = torch.where(onehot > 0, 1.0, s)                        # s_x = 1
        if kind == "euler":
            w = d[:, None, None] * self.Q[x_cpu] * s
            w = torch.where(onehot > 0, 0.0, w)
            w = w + onehot * (1 - w.sum(-1, keepdim=True))
        elif kind in ("analytic", "denoise"):
            stag = torch.einsum("byz,blz->bly", self.transition(-d), s)   # exp(−δQ)·s
            w = stag * self._rows(self.transition(d), x_cpu)              # · exp(δQ)[x, y]
            if kind == "denoise" and self.absorbing_state is not None:
                w[..., self.absorbing_state] = 0.0
        else:
            raise ValueError(f"kind must be 'euler', 'analytic' or 'denoise', got {kind!r}")
        w = w.clamp_min(0.0)
        empty = w.sum(-1, keepdim=True) <= 0
        if kind == "denoise" and self.absorbing_state is not None:
            fallback = torch.ones_like(w)
            fallback[..., self.absorbing_state] = 0.0
        else:
            fallback = onehot
        w = torch.where(empty, fallback, w)
        if frozen is not None:
            w = torch.where(frozen.cpu()[..., None], onehot, w)
        return w.to(log_score.device)

    def reverse_step(self, log_score, x, dsigma, kind, generator=None, frozen=None):
        """One reverse step of `kind` ("euler", "analytic", "denoise"): its weights, then the race."""
        return sample_categorical(self.step_weights(log_score, x, dsigma, kind, frozen), generator)

    def euler_step(self, log_score, x, dsigma, generator=None, frozen=None):
        return self.reverse_step(log_score, x, dsigma, "euler", generator, frozen)

    def analytic_step(self, log_score, x, dsigma, generator=None, frozen=None):
        return self.reverse_step(log_score, x, dsigma, "analytic", generator, frozen)

    def denoise_step(self, log_score, x, sigma, generator=None, frozen=None):
        return self.reverse_step(log_score, x, sigma, "denoise", generator, frozen)
