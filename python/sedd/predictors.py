"""Predictors of the reverse process (SEDD.md §6): one registry, name → how far a step moves
(its δσ rule) and the step itself. The sampler, the doors' --predictor choices and the tests
read this registry; adding a predictor is one `register(...)` call (README: "Adding a predictor").

A predictor step at grid time t with next grid time t' (Δt = t − t') gets
`dsigma(noise, t, t', dt)` per sequence and calls `step(graph, log_score, x, dsigma, generator,
frozen, use_reference)`; the default step is the graph's reverse-step kernel of the same name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch


def _kernel_step(kind):
    def step(graph, log_score, x, dsigma, generator, frozen, use_reference=False):
        return graph.step(kind, log_score, x, dsigma, generator, frozen, use_reference=use_reference)
    return step


@dataclass(frozen=True)
class Predictor:
    name: str
    dsigma: Callable            # (noise, t, t_next, dt) -> float: what the step's kernel is given
    step: Callable              # (graph, log_score, x, dsigma [B], generator, frozen, use_reference)
    doc: str = ""


PREDICTORS: dict[str, Predictor] = {}


def register(name: str, dsigma: Callable, step: Callable | None = None, doc: str = "") -> Predictor:
    """Add a predictor; `step` defaults to the graphs' reverse-step kernel called `name`."""
    if name in PREDICTORS:
        raise ValueError(f"predictor {name!r} is already registered")
    p = Predictor(name, dsigma, step or _kernel_step(name), doc)
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
