"""The argument normalisers and value checks every op wrapper shares. Each takes the op's name,
so that its messages name the op the user called (perturb, euler_step, ...)."""

from __future__ import annotations

import torch

GRAPHS = ("absorb", "uniform")


def graph_name(op: str, graph) -> str:
    """'absorb' or 'uniform' from a name or a graph object of the modeling layer (its .name)."""
    name = getattr(graph, "name", graph)
    if name == "absorbing":
        name = "absorb"
    if name not in GRAPHS:
        raise ValueError(f"{op}: graph must be 'absorb' or 'uniform', got {graph!r}")
    return name


def sigma_vector(sigma, ref: torch.Tensor) -> torch.Tensor:
    """sigma as a [B] tensor (B = ref.shape[0]): accepts a Python number, a 0-d, [B] or [B, 1]
    tensor."""
    B = ref.shape[0] if ref.dim() >= 1 else 0
    if not isinstance(sigma, torch.Tensor):
        sigma = torch.full((B,), float(sigma), dtype=torch.float64, device=ref.device)
    elif sigma.dim() == 0:
        sigma = sigma.expand(B)
    elif sigma.dim() == 2 and sigma.shape[1] == 1:
        sigma = sigma[:, 0]
    return sigma


def same_device(op: str, ref: torch.Tensor, ref_name: str = "", **tensors) -> None:
    for name, t in tensors.items():
        if isinstance(t, torch.Tensor) and t.device != ref.device:
            of = f" as {ref_name}" if ref_name else ""
            raise ValueError(f"{op}: {name} must be on the same device{of} ({ref.device}), "
                             f"got {t.device}")


def want_validate(validate, t: torch.Tensor) -> bool:
    """Data-dependent checks run for CUDA tensors unless turned off or under torch.compile (the
    CPU kernels check in C++ at no cost)."""
    if validate is None:
        validate = not torch.compiler.is_compiling()
    return bool(validate) and t.device.type != "cpu"


def check_tokens(op: str, x: torch.Tensor, V: int, name: str = "token ids") -> None:
    """Token ids in [0, V) (one host sync)."""
    if x.numel():
        lo, hi = int(x.min()), int(x.max())
        if lo < 0 or hi >= V:
            raise ValueError(f"{op}: {name} must be in [0, {V}), got values in [{lo}, {hi}]")


def check_nonneg(op: str, t: torch.Tensor, name: str) -> None:
    if t.numel() and not bool((t >= 0).all()):
        raise ValueError(f"{op}: {name} must be >= 0, got min {float(t.min())}")


def check_loss_values(op, V, x_t, x_0, sigma, graph):
    """Token ids in range (x_0 never the absorbing mask) and sigma > 0, as clear errors."""
    if x_t.numel():
        lo, hi = int(x_t.min()), int(x_t.max())
        if lo < 0 or hi >= V:
            raise ValueError(f"{op}: x_t must hold token ids in [0, V) = [0, {V}), "
                             f"got values in [{lo}, {hi}]")
        hi0 = V - 1 if graph == "absorb" else V
        lo, hi = int(x_0.min()), int(x_0.max())
        if lo < 0 or hi >= hi0:
            note = " (the mask id V-1 is not a clean token)" if graph == "absorb" else ""
            raise ValueError(f"{op}: x_0 must hold token ids in [0, {hi0}){note}, "
                             f"got values in [{lo}, {hi}]")
    if sigma.numel() and not bool((sigma > 0).all()):
        raise ValueError(f"{op}: sigma must be > 0 (+inf is allowed), got "
                         f"min {float(sigma.min())}")
