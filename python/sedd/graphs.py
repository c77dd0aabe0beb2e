"""Graphs of the forward process (SEDD.md §1) over the fused kernels of sedd_kernels.

``n`` is the number of real tokens; ``V`` the vocabulary the network sees (n + 1 for the absorbing
graph, whose mask is V − 1)."""

from __future__ import annotations

import torch

import sedd_kernels as sk
from sedd_kernels import reference


class Graph:
    name: str
    n: int
    V: int

    def perturb(self, x0, sigma, generator=None):
        return sk.perturb(x0, sigma, self.name, self.V, generator)

    def score_entropy(self, log_score, x_t, x_0, sigma, *, use_reference=False):
        if use_reference:
            return reference.score_entropy(log_score, x_t, x_0, sigma, self.name)
        return sk.score_entropy(log_score, x_t, x_0, sigma, self.name)

    def step(self, predictor, log_score, x, dsigma, generator=None, frozen=None):
        fn = {"euler": sk.euler_step, "analytic": sk.analytic_step}[predictor]
        return fn(log_score, x, dsigma, self.name, generator, frozen)

    def denoise(self, log_score, x, sigma, generator=None, frozen=None):
        return sk.denoise_step(log_score, x, sigma, self.name, generator, frozen)


class Absorbing(Graph):
    name = "absorb"

    def __init__(self, n: int):
        self.n, self.V = int(n), int(n) + 1
        self.mask = self.V - 1

    def sample_limit(self, *shape, device=None, generator=None):
        return torch.full(shape, self.mask, dtype=torch.long, device=device)

    def prior_kl(self, sigma_max: float, eps: float = 0.0) -> float:
        """KL per token of P(σ̄(1))[:, x0] to the base (SEDD.md §4): with e^{−σ̄(1)} = ε against
        the leaky base (mask w.p. 1 − ε, else uniform): ε·log n; 0 when ε = 0."""
        import math
        return eps * math.log(self.n) if eps > 0 else 0.0


class Uniform(Graph):
    name = "uniform"

    def __init__(self, n: int):
        self.n = self.V = int(n)

    def sample_limit(self, *shape, device=None, generator=None):
        return torch.randint(0, self.n, shape, device=device, generator=generator)

    def prior_kl(self, sigma_max: float, eps: float = 0.0) -> float:
        """KL(P(σ)[:, x0] ‖ uniform) per token, exact: stay = e^{−σ} + (1 − e^{−σ})/n."""
        import math
        n = self.n
        move = -math.expm1(-sigma_max) / n
        stay = math.exp(-sigma_max) + move
        return stay * math.log(stay * n) + (n - 1) * move * math.log(move * n) if move > 0 else 0.0


class General(Graph):
    """A user's dense rate matrix Q [V, V] (sedd_kernels.GeneralGraph): exact exp(σQ),
    perturbation from its columns, the general score entropy (plain PyTorch, differentiable) and
    steps sampled with the fused race. For small vocabularies (DNA, proteins, toy problems)."""

    name = "general"

    def __init__(self, Q):
        self.g = sk.GeneralGraph(Q)
        self.n = self.V = self.g.V
        # the base distribution: the long-time limit of the chain
        self.base = self.g.transition(torch.tensor(1e4, dtype=torch.float64)).mean(1).clamp_min(0)

    def perturb(self, x0, sigma, generator=None):
        return self.g.perturb(x0, sigma, generator)

    def score_entropy(self, log_score, x_t, x_0, sigma, *, use_reference=False):
        return self.g.score_entropy(log_score, x_t, x_0, sigma)

    def step(self, predictor, log_score, x, dsigma, generator=None, frozen=None):
        fn = {"euler": self.g.euler_step, "analytic": self.g.analytic_step}[predictor]
        return fn(log_score, x, dsigma, generator, frozen)

    def denoise(self, log_score, x, sigma, generator=None, frozen=None):
        return self.g.denoise_step(log_score, x, sigma, generator, frozen)

    def sample_limit(self, *shape, device=None, generator=None):
        w = self.base.to(device).expand(*shape, self.V)
        return sk.sample_categorical(w, generator if device is None or str(device) == "cpu" else None)

    def prior_kl(self, sigma_max: float, eps: float = 0.0) -> float:
        """max over x0 of KL(P(σ_max)[:, x0] ‖ base) (an upper bound of the prior term)."""
        import math
        if math.isinf(sigma_max):
            return 0.0
        P = self.g.transition(torch.tensor(sigma_max, dtype=torch.float64))
        base = self.base.clamp_min(1e-300)
        kl = (P * (P.clamp_min(1e-300) / base[:, None]).log()).sum(0)
        return float(kl.max())


def get_graph(name: str, n: int = 0) -> Graph:
    """'absorb' / 'uniform' over n tokens, or 'general:PATH' with a [V, V] rate matrix saved by
    torch.save (or as a .npy file)."""
    if name in ("absorb", "absorbing"):
        return Absorbing(n)
    if name == "uniform":
        return Uniform(n)
    if name.startswith("general:"):
        path = name.split(":", 1)[1]
        if path.endswith(".npy"):
            import numpy as np
            Q = torch.from_numpy(np.load(path))
        else:
            Q = torch.load(path, map_location="cpu")
        return General(Q)
    raise ValueError(f"graph must be 'absorb', 'uniform' or 'general:PATH', got {name!r}")
