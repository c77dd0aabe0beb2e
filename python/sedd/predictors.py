"""Predictors of the reverse process (SEDD.md §6): one registry, name → how far a step moves
(its δσ rule) and the step itself. The sampler, the doors' --predictor choices and the tests
read this registry; adding a predictor is one `register(...)` call (README: "Adding a predictor").

A predictor step at grid time t with next grid time t' (Δt = t − t') gets
`dsigma(noise, t, t', dt)` per sequence and calls `step(graph, log_score, x, dsigma, generator,
frozen, use_reference)`; the default step is the graph's reverse-step kernel of the same name
(which also takes `shift=`, `bias=`, `validate=`: the sampler then hands it the bare output
product with the projection's bias and the network's per-sequence offset, see sampling.py).

A predictor with its own loop instead of the time grid (`loop=`, e.g. first_hitting) is called
once per window as loop(net, graph, noise, x, frozen, steps=, tokens_per_step=, eps=, generator=,
use_reference=, shaping=, progress=) → (x, evaluations), and needs no denoiser; `graphs` names the
graphs it applies to (None: all)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .first_hitting import first_hitting


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

    def check_graph(self, graph):
        if self.graphs is not None and graph.name not in self.graphs:
            raise ValueError(f"predictor {self.name!r} needs the "
                             f"{' or '.join(self.graphs)} graph, got {graph.name!r}")


PREDICTORS: dict[str, Predictor] = {}


def register(name: str, dsigma: Callable | None = None, step: Callable | None = None, doc: str = "",
             loop: Callable | None = None, graphs=None) -> Predictor:
    """Add a predictor; `step` defaults to the graphs' reverse-step kernel called `name`
    (unless it brings its own `loop`)."""
    if name in PREDICTORS:
        raise ValueError(f"predictor {name!r} is already registered")
    if loop is None and dsigma is None:
        raise ValueError(f"predictor {name!r} needs a dsigma rule or its own loop")
    p = Predictor(name, dsigma, step or (None if loop else _kernel_step(name)), doc, loop,
                  tuple(graphs) if graphs else None)
    PREDICTORS[name] = p
    return p


def get_predictor(name: str) -> Predictor:
    if name not in PREDICTORS:
        raise ValueError(f"predictor must be one of {', '.join(map(repr, sorted(PREDICTORS)))}, "
                         f"got {name!r}")
    return PREDICTORS[name]


def _as_float(v) -> float:
    return float(v.item() if isinstance(v, torch.Tensor) else v)


register("euler", lambda noise, t, t_next, dt: _as_float(noise.rate(t)) * dt,
         doc="τ-leaping with the rate at t: δσ = σ̇(t)·Δt")
register("analytic", lambda noise, t, t_next, dt: _as_float(noise.total(t) - noise.total(t_next)),
         doc="Tweedie τ-leaping over the exact noise of the interval: δσ = σ̄(t) − σ̄(t')")
register("first_hitting", loop=first_hitting, graphs=("absorb",),
         doc="exact unmasking times (absorbing): one position per evaluation, ≤ L evaluations")
