"""Graphs of the forward process (docs/math.md §1) over the fused kernels of sedd_kernels.

``n`` is the number of real tokens; ``V`` the vocabulary the network sees (n + 1 for the absorbing
graph, whose mask is V − 1).

A graph owns its rules: everything the trainer, the sampler, the loaders and the evaluation ask of
it is an attribute or a method of `Graph`, never a comparison of names. To add a graph: subclass
`Graph`, set the class attributes and implement what its kernels cannot (see `General`); a
subclass with a `name` registers itself in `GRAPHS` (then `--graph NAME` works at every door; see
docs/extending.md, "Adding a graph")."""

from __future__ import annotations

import math
import os

import numpy as np
import torch

import sedd_kernels as sk
from sedd_kernels import reference


GRAPHS: dict[str, type["Graph"]] = {}     # name -> Graph class, filled by subclassing


class Graph:
    name: str                    # the kernels' graph name; also what get_graph reads
    n: int                       # real tokens
    V: int                       # states the network sees
    default_noise = "geometric"  # the schedule a run uses unless told (sedd.core.noise.get_noise)
    scale_by_sigma = False       # the DDiT's output offset −log(e^σ − 1) − log(V − 1) (docs/math.md §5)
    fused = True                 # closed forms in the kernels: fused loss, fused projection,
                                 # reference twins of the steps (else dense general formulas)
    supports_clean = False       # the time-independent ("clean") parametrisation applies
    step_kinds = ("euler", "analytic", "denoise")   # the reverse-step kernels it has
    moves_some = False           # its steps change (and read the rows of) `movable(x)` only
    from_file = False            # built from a file (general:PATH), not registered by name

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        if "name" in cls.__dict__ and not cls.from_file:
            if cls.name in GRAPHS:
                raise ValueError(f"graph {cls.name!r} is already registered")
            GRAPHS[cls.name] = cls

    @staticmethod
    def vocab_size(n: int) -> int:
        """V for n real tokens."""
        return int(n)

    @property
    def spec(self) -> str:
        """What get_graph takes to build this graph again (saved in checkpoints)."""
        return self.name

    # ---- forward process and loss
    def perturb(self, x0, sigma, generator=None, *, validate=None):
        return sk.perturb(x0, sigma, self.name, self.V, generator, validate=validate)

    def score_entropy(self, log_score, x_t, x_0, sigma, *, use_reference=False):
        if use_reference:
            return reference.score_entropy(log_score, x_t, x_0, sigma, self.name)
        return sk.score_entropy(log_score, x_t, x_0, sigma, self.name)

    # ---- reverse process
    def step(self, kind, log_score, x, dsigma, generator=None, frozen=None, *,
             use_reference=False, shift=None, bias=None, validate=None):
        """One reverse step of kernel `kind` ("euler", "analytic", "denoise") on log-scores
        (log_score + bias) + shift (bias [V], shift [B], each when given; the current token's
        entry is ignored). validate: sedd_kernels' host checks (None: theirs)."""
        if use_reference:
            return reference.reverse_step(log_score, x, dsigma, self.name, kind, generator, frozen,
                                          shift=shift, bias=bias)
        return sk.reverse_step(log_score, x, dsigma, self.name, kind, generator, frozen,
                               shift=shift, bias=bias, validate=validate)

    def denoise(self, log_score, x, sigma, generator=None, frozen=None):
        return self.step("denoise", log_score, x, sigma, generator, frozen)

    def sample_limit(self, *shape, device=None, generator=None):
        """x ~ the base distribution (the t = 1 end of the forward process)."""
        raise NotImplementedError

    def movable(self, x):
        """The positions [B, L] (bool) that a reverse step can change (what temperature / top-p
        shape, sedd.sampling.shaping): every position, unless the graph says otherwise."""
        return torch.ones_like(x, dtype=torch.bool)

    def prior_kl(self, sigma_max: float, eps: float = 0.0) -> float:
        """KL per token of P(σ̄(1))[:, x0] to the base distribution (docs/math.md §4)."""
        raise NotImplementedError


class Absorbing(Graph):
    name = "absorb"
    default_noise = "loglinear"
    scale_by_sigma = True
    supports_clean = True
    moves_some = True            # an unmasked token never moves in reverse (docs/math.md §6)

    def __init__(self, n: int):
        self.n, self.V = int(n), self.vocab_size(n)
        self.mask = self.V - 1

    @staticmethod
    def vocab_size(n: int) -> int:
        return int(n) + 1

    def sample_limit(self, *shape, device=None, generator=None):
        return torch.full(shape, self.mask, dtype=torch.long, device=device)

    def movable(self, x):
        return x == self.mask

    def prior_kl(self, sigma_max: float, eps: float = 0.0) -> float:
        """With e^{−σ̄(1)} = ε against the leaky base (mask w.p. 1 − ε, else uniform): ε·log n;
        0 when ε = 0."""
        return eps * math.log(self.n) if eps > 0 else 0.0


class Uniform(Graph):
    name = "uniform"

    def __init__(self, n: int):
        self.n = self.V = int(n)

    def sample_limit(self, *shape, device=None, generator=None):
        return torch.randint(0, self.n, shape, device=device, generator=generator)

    def prior_kl(self, sigma_max: float, eps: float = 0.0) -> float:
        """KL(P(σ)[:, x0] ‖ uniform) per token, exact: stay = e^{−σ} + (1 − e^{−σ})/n."""
        n = self.n
        move = -math.expm1(-sigma_max) / n
        stay = math.exp(-sigma_max) + move
        return stay * math.log(stay * n) + (n - 1) * move * math.log(move * n) if move > 0 else 0.0


class General(Graph):
    """A user's dense rate matrix Q [V, V] (sedd_kernels.GeneralGraph): exact exp(σQ),
    perturbation from its columns, the general score entropy (plain PyTorch, differentiable) and
    steps sampled with the fused race. For small vocabularies (DNA, proteins, toy problems)."""

    name = "general"
    fused = False
    from_file = True

    def __init__(self, Q, path: str | None = None):
        self.g = sk.GeneralGraph(Q)
        self.n = self.V = self.g.V
        self.path = path
        # the base distribution: the long-time limit of the chain
        self.base = self.g.transition(torch.tensor(1e4, dtype=torch.float64)).mean(1).clamp_min(0)

    @property
    def spec(self) -> str:
        return f"general:{self.path}" if self.path else "general"

    def perturb(self, x0, sigma, generator=None, *, validate=None):
        return self.g.perturb(x0, sigma, generator)

    def score_entropy(self, log_score, x_t, x_0, sigma, *, use_reference=False):
        return self.g.score_entropy(log_score, x_t, x_0, sigma)

    def step(self, kind, log_score, x, dsigma, generator=None, frozen=None, *,
             use_reference=False, shift=None, bias=None, validate=None):
        if shift is not None or bias is not None:
            raise ValueError("the general graph's steps take materialised log-scores (no shift or bias)")
        if use_reference:
            raise ValueError("use_reference needs a graph with closed forms (absorb, uniform); "
                             "the general graph's steps are its dense formulas already")
        return self.g.reverse_step(log_score, x, dsigma, kind, generator, frozen)

    def sample_limit(self, *shape, device=None, generator=None):
        w = self.base.to(device).expand(*shape, self.V)
        return sk.sample_categorical(w, generator)     # on any device: reproducible from it

    def prior_kl(self, sigma_max: float, eps: float = 0.0) -> float:
        """max over x0 of KL(P(σ_max)[:, x0] ‖ base) (an upper bound of the prior term)."""
        if math.isinf(sigma_max):
            return 0.0
        P = self.g.transition(torch.tensor(sigma_max, dtype=torch.float64))
        base = self.base.clamp_min(1e-300)
        kl = (P * (P.clamp_min(1e-300) / base[:, None]).log()).sum(0)
        return float(kl.max())


def graph_class(spec: str) -> type[Graph]:
    """The Graph class of a get_graph spec, without building it (its rules are class attributes)."""
    if spec == "absorbing":
        spec = "absorb"
    if spec in GRAPHS:
        return GRAPHS[spec]
    if isinstance(spec, str) and spec.startswith("general:"):
        return General
    raise ValueError(f"graph must be {', '.join(map(repr, GRAPHS))} or 'general:PATH', got {spec!r}")


def get_graph(name: str, n: int = 0) -> Graph:
    """'absorb' / 'uniform' over n tokens, or 'general:PATH' with a [V, V] rate matrix saved by
    torch.save (or as a .npy file)."""
    cls = graph_class(name)
    if cls is not General:
        return cls(n)
    path = name.split(":", 1)[1]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--graph {name}: no rate matrix file at {path}")
    if path.endswith(".npy"):
        Q = torch.from_numpy(np.load(path))
    else:
        Q = torch.load(path, map_location="cpu")
    return General(Q, path)
