"""Noise schedules (docs/math.md §2): total noise σ̄(t) and rate σ̇(t) for t ∈ [0, 1]."""

from __future__ import annotations

import math

import torch

from .options import ConfigError, number


class LogLinear:
    """σ̄(t) = −log(1 − (1 − ε)t), σ̇(t) = (1 − ε)/(1 − (1 − ε)t); the absorbing graph's default.
    With ε = 0, every token is masked at t = 1 (σ̄(1) = ∞)."""

    name = "loglinear"

    def __init__(self, eps: float = 1e-3):
        if not 0 <= eps < 1:
            raise ValueError(f"LogLinear: eps must be in [0, 1), got {eps}")
        self.eps = eps

    def total(self, t):
        return -torch.log1p(-(1 - self.eps) * t)

    def rate(self, t):
        return (1 - self.eps) / (1 - (1 - self.eps) * t)

    @property
    def sigma_max(self):
        return math.inf if self.eps == 0 else -math.log(self.eps)


class Geometric:
    """σ̄(t) = σ_min^{1−t} σ_max^t, σ̇(t) = σ̄(t)(log σ_max − log σ_min); the uniform graph's."""

    name = "geometric"

    def __init__(self, sigma_min: float = 1e-4, sigma_max: float = 20.0):
        if not 0 < sigma_min < sigma_max:
            raise ValueError(f"Geometric: need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max

    def total(self, t):
        return self.sigma_min ** (1 - t) * self.sigma_max ** t

    def rate(self, t):
        return self.total(t) * (math.log(self.sigma_max) - math.log(self.sigma_min))


def get_noise(name: str, **kw):
    if name == "loglinear":
        return LogLinear(**kw)
    if name == "geometric":
        return Geometric(**kw)
    raise ValueError(f"noise must be 'loglinear' or 'geometric', got {name!r}")


NOISES = ("loglinear", "geometric")


def noise_spec(name: str, **kwargs) -> dict:
    """A checked noise description {"name": ..., arguments} (get_noise's), as checkpoints
    record it."""
    if name not in NOISES:
        raise ConfigError(f"unknown noise type {name!r}: expected one of {', '.join(NOISES)}")
    allowed = {"loglinear": ("eps",), "geometric": ("sigma_min", "sigma_max")}[name]
    extra = sorted(set(kwargs) - set(allowed))
    if extra:
        raise ConfigError(f"noise {name!r} takes {', '.join(allowed)}; unknown "
                          f"{', '.join(map(repr, extra))}")
    out = {"name": name, **{k: number(v, f"noise.{k}") for k, v in kwargs.items()}}
    try:
        get_noise(**out)     # the schedule's own range checks
    except ValueError as e:
        raise ConfigError(f"noise: {e}") from None
    return out
