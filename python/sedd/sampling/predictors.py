"""Predictors of the reverse process (docs/math.md §6): one registry, name → how a window is
denoised. The sampler, the doors' --predictor choices and the tests read this registry; adding a
predictor is one `register(...)` call (docs/extending.md: "Adding a predictor").

A grid predictor moves over the time grid t_k = 1 − kΔt (`grid_window`, then the denoiser): a
step at grid time t with next grid time t' (Δt = t − t') gets `dsigma(noise, t, t', dt)` per
sequence and calls `step(graph, log_score, x, dsigma, generator, frozen, use_reference)`; the
default step is the graph's reverse-step kernel of the same name (which also takes `shift=`,
`bias=`, `validate=`: the sampler then hands it the bare output product with the projection's
bias and the network's per-sequence offset).

A predictor with its own loop instead of the time grid (`loop=`, e.g. first_hitting) is called
once per window as loop(net, graph, noise, x, frozen, settings) → (x, evaluations) and needs no
denoiser. `net` is the public NetworkView (sedd.sampling.network); `settings` the checked
settings of the sample() call (sedd.sampling.sampler.Settings: steps, eps, generator,
use_reference, shaping, progress, tokens_per_step, ...). `graphs` names the graphs a predictor
applies to (None: all); `reads` the settings only it reads (e.g. first_hitting's
tokens_per_step); `capturable` whether its steps can be captured in a CUDA graph."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .capture import CapturedStep
from .confidence import confidence
from .first_hitting import first_hitting
from .mover import Mover, as_float, folds
from .remdm import remdm


def _kernel_step(kind):
    def step(graph, log_score, x, dsigma, generator, frozen, use_reference=False, **parts):
        return graph.step(kind, log_score, x, dsigma, generator, frozen,
                          use_reference=use_reference, **parts)
    step.takes_parts = True     # the sampler may hand it the bare product + shift= and bias=
    return step


@dataclass(frozen=True)
class Predictor:
    name: str
    dsigma: Callable | None     # (noise, t, t_next, dt) -> float: what the step's kernel is given
    step: Callable | None       # (graph, log_score, x, dsigma [B], generator, frozen, use_reference)
    doc: str = ""
    loop: Callable | None = None          # its own sampling loop (no grid, no denoiser)
    graphs: tuple[str, ...] | None = None  # the graphs it applies to (None: every graph)
    reads: tuple[str, ...] = ()            # sample() settings only this predictor reads

    @property
    def capturable(self) -> bool:
        """Its steps can be captured in a CUDA graph (the grid predictors)."""
        return self.loop is None

    def check_graph(self, graph):
        if self.graphs is not None and graph.name not in self.graphs:
            raise ValueError(f"predictor {self.name!r} needs the "
                             f"{' or '.join(self.graphs)} graph, got {graph.name!r}")

    def folds(self, model, graph, settings) -> bool:
        """Whether its steps read the network's bare product (model.log_score_parts): the fused
        steps add the projection's bias and the network's σ offset and ignore the current
        token's entry themselves, unless something must first rewrite the log-scores
        (temperature / top-p) or the steps are the dense reference ops."""
        return folds(model, graph, settings, self.step)

    def run(self, net, graph, noise, x, frozen, settings):
        """Denoise one window x [B, W] (frozen [B, W] or None): (x, evaluations)."""
        if self.loop is not None:
            return self.loop(net, graph, noise, x, frozen, settings)
        return grid_window(self, net, graph, noise, x, frozen, settings)


PREDICTORS: dict[str, Predictor] = {}


def register(name: str, dsigma: Callable | None = None, step: Callable | None = None, doc: str = "",
             loop: Callable | None = None, graphs=None, reads=()) -> Predictor:
    """Add a predictor; `step` defaults to the graphs' reverse-step kernel called `name`
    (unless it brings its own `loop`)."""
    if name in PREDICTORS:
        raise ValueError(f"predictor {name!r} is already registered")
    if loop is None and dsigma is None:
        raise ValueError(f"predictor {name!r} needs a dsigma rule or its own loop")
    p = Predictor(name, dsigma, step or (None if loop else _kernel_step(name)), doc, loop,
                  tuple(graphs) if graphs else None, tuple(reads))
    PREDICTORS[name] = p
    return p


def get_predictor(name: str) -> Predictor:
    if name not in PREDICTORS:
        raise ValueError(f"predictor must be one of {', '.join(map(repr, sorted(PREDICTORS)))}, "
                         f"got {name!r}")
    return PREDICTORS[name]


register("euler", lambda noise, t, t_next, dt: as_float(noise.rate(t)) * dt,
         doc="τ-leaping with the rate at t: δσ = σ̇(t)·Δt")
register("analytic", lambda noise, t, t_next, dt: as_float(noise.total(t) - noise.total(t_next)),
         doc="Tweedie τ-leaping over the exact noise of the interval: δσ = σ̄(t) − σ̄(t')")
register("first_hitting", loop=first_hitting, graphs=("absorb",), reads=("tokens_per_step",),
         doc="exact unmasking times (absorbing): one position per evaluation, ≤ L evaluations")
register("confidence", loop=confidence, graphs=("absorb",),
         reads=("tokens_per_step", "threshold", "rank_by", "greedy"),
         doc="the most confident masked positions first (Fast-dLLM's threshold, LLaDA's k per "
             "call); exact with one position per call")
register("remdm", loop=remdm, graphs=("absorb",), reads=("remask", "eta", "loop"),
         doc="ReMDM's remasking steps (cap, rescale, conf, loop): more calls, better samples; "
             "σ = 0 is the analytic predictor")


def grid_window(pred, net, graph, noise, x, frozen, settings):
    """A grid predictor over one window: `settings.steps` predictor steps, then the denoiser
    (settings.denoise); replayed from one CUDA-graph capture with settings.cuda_graph.
    The sampler builds x and dsigma itself: the kernels' host checks (a device sync each on
    CUDA) are skipped."""
    s = settings
    move = Mover(net, graph, frozen, s, pred.step)
    captured = CapturedStep(net, graph, pred, x, frozen, s.generator) if s.cuda_graph else None
    dt = (1 - s.eps) / s.steps
    grid = torch.linspace(1, s.eps, s.steps + 1, dtype=torch.float64)
    for k in range(s.steps):
        t = grid[k]
        if captured is not None:
            x = captured(x, float(noise.total(t)), float(pred.dsigma(noise, t, grid[k + 1], dt)))
        else:
            x = move(x, noise.total(t), pred.dsigma(noise, t, grid[k + 1], dt))
        if s.progress is not None:
            s.progress.update(1)
    if s.denoise:
        sigma = float(noise.total(grid[-1]))
        x = move(x, sigma, sigma, kind="denoise")
    return x, s.steps + int(s.denoise)
