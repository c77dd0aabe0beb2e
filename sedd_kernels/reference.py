"""Plain-PyTorch twins of the fused ops, written as SEDD.md states them.

They are the baseline of every test and benchmark: correct by inspection, not fast. They compute
in float64 for float64 inputs and in float32 otherwise (bf16/fp16 inputs are upcast).

- :func:`score_entropy` — the closed forms of SEDD.md §3, in the style of the paper's own code
  (boolean indexing of masked rows for the absorbing graph). The "reference eager" baseline.
- :func:`score_entropy_dense` — the same closed forms with dense masks and no data-dependent
  shapes, so that ``torch.compile`` can fuse it. The "compiled reference" baseline.
- :func:`score_entropy_general` — the definition Σ_y w_y (e^{ℓ_y} − r_y ℓ_y + K(r_y)) with a dense
  rate matrix Q and P = exp(σQ); small V only. It checks the closed forms.
"""

from __future__ import annotations

import torch

__all__ = [
    "rate_matrix",
    "transition_matrix",
    "score_entropy",
    "score_entropy_dense",
    "score_entropy_general",
]


def _graph_name(graph) -> str:
    name = getattr(graph, "name", graph)
    if name == "absorbing":
        name = "absorb"
    if name not in ("absorb", "uniform"):
        raise ValueError(f"graph must be 'absorb' or 'uniform', got {graph!r}")
    return name


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def _sigma(sigma, B, device, dtype) -> torch.Tensor:
    if not isinstance(sigma, torch.Tensor):
        sigma = torch.tensor(float(sigma))
    sigma = sigma.to(device=device, dtype=dtype).reshape(-1)
    return sigma.expand(B) if sigma.numel() == 1 else sigma


def rate_matrix(graph, V: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """Dense Q [V, V] of SEDD.md §1: Q[y, x] is the rate from x to y; columns sum to 0."""
    graph = _graph_name(graph)
    if graph == "absorb":
        Q = torch.zeros(V, V, dtype=dtype, device=device)
        idx = torch.arange(V - 1, device=device)
        Q[V - 1, idx] = 1.0
        Q[idx, idx] = -1.0
        return Q
    return torch.full((V, V), 1.0 / V, dtype=dtype, device=device) - torch.eye(V, dtype=dtype,
                                                                              device=device)


def transition_matrix(graph, V: int, sigma, dtype=torch.float64) -> torch.Tensor:
    """P(σ) = exp(σQ) in closed form, [..., V, V] for sigma of shape [...]: P[y, x0]."""
    graph = _graph_name(graph)
    sigma = torch.as_tensor(sigma, dtype=dtype)
    stay = torch.exp(-sigma)[..., None, None]
    eye = torch.eye(V, dtype=dtype)
    if graph == "uniform":
        return stay * eye + (1 - stay) / V
    P = stay * eye
    P = P.expand(*sigma.shape, V, V).clone()
    P[..., V - 1, :] += (1 - stay[..., 0])
    P[..., V - 1, V - 1] = 1.0
    return P


def score_entropy(log_score, x_t, x_0, sigma, graph) -> torch.Tensor:
    """SEDD.md §3 closed forms, eager PyTorch (boolean-indexed masked rows for 'absorb')."""
    graph = _graph_name(graph)
    dtype = _compute_dtype(log_score)
    score = log_score.to(dtype)
    B, L, V = score.shape
    sigma = _sigma(sigma, B, score.device, dtype)[:, None].expand(B, L)
    esigm1 = torch.expm1(sigma)
    if graph == "absorb":
        masked = x_t == V - 1
        ratio = 1.0 / esigm1[masked]
        rows = score[masked]
        neg_term = ratio * torch.gather(rows, -1, x_0[masked][:, None]).squeeze(-1)
        pos_term = rows[:, :-1].exp().sum(dim=-1)
        const = ratio * (ratio.log() - 1)
        out = torch.zeros(B, L, dtype=dtype, device=score.device)
        out[masked] = pos_term - neg_term + const
        return out
    n = V
    rho = esigm1 / (esigm1 + n)
    l_x = torch.gather(score, -1, x_t[..., None]).squeeze(-1)
    l_x0 = torch.gather(score, -1, x_0[..., None]).squeeze(-1)
    neg = score.mean(dim=-1) - l_x / n                      # N = Σ_{y≠x} ℓ_y / n
    neg = torch.where(x_t == x_0, rho * neg, l_x0 / esigm1 + neg)
    const = torch.where(x_t == x_0, (n - 1) / n * rho * (rho.log() - 1),
                        ((-rho.log() - 1) / rho - (n - 2)) / n)
    sexp = score.exp()
    pos = sexp.mean(dim=-1) - torch.gather(sexp, -1, x_t[..., None]).squeeze(-1) / n  # A
    return pos - neg + const


def score_entropy_dense(log_score, x_t, x_0, sigma, graph) -> torch.Tensor:
    """SEDD.md §3 closed forms with dense masks only (no boolean indexing): compile-friendly."""
    graph = _graph_name(graph)
    dtype = _compute_dtype(log_score)
    score = log_score.to(dtype)
    B, L, V = score.shape
    sigma = _sigma(sigma, B, score.device, dtype)[:, None]
    esigm1 = torch.expm1(sigma)
    l_x0 = torch.gather(score, -1, x_0[..., None]).squeeze(-1)
    if graph == "absorb":
        ratio = 1.0 / esigm1
        pos = score[..., :-1].exp().sum(dim=-1)
        val = pos - ratio * l_x0 + ratio * (ratio.log() - 1)
        return torch.where(x_t == V - 1, val, torch.zeros_like(val))
    n = V
    rho = esigm1 / (esigm1 + n)
    not_x = torch.arange(V, device=score.device) != x_t[..., None]
    A = torch.where(not_x, score.exp(), 0.0).sum(dim=-1) / n
    N = torch.where(not_x, score, 0.0).sum(dim=-1) / n
    same = x_t == x_0
    return torch.where(same, A - rho * N + (n - 1) / n * rho * (rho.log() - 1),
                       A - (N + l_x0 / esigm1) + ((-rho.log() - 1) / rho - (n - 2)) / n)


def _K(a: torch.Tensor) -> torch.Tensor:
    return torch.where(a > 0, a * (torch.log(torch.where(a > 0, a, 1.0)) - 1), 0.0)


def score_entropy_general(log_score, x_t, x_0, sigma, Q) -> torch.Tensor:
    """The definition of SEDD.md §3 for a dense rate matrix Q [V, V] (small V):

        SE = Σ_{y ≠ x} w_y (e^{ℓ_y} − r_y ℓ_y + K(r_y)),  w_y = Q[x, y],
        r_y = P[y, x0] / P[x, x0],  P = exp(σQ).
    """
    dtype = _compute_dtype(log_score)
    score = log_score.to(dtype)
    B, L, V = score.shape
    Q = Q.to(dtype=dtype, device=score.device)
    sigma = _sigma(sigma, B, score.device, dtype)
    P = torch.linalg.matrix_exp(sigma[:, None, None] * Q)           # [B, V, V]
    P = P[:, None].expand(B, L, V, V)
    cols = torch.gather(P, -1, x_0[..., None, None].expand(B, L, V, 1)).squeeze(-1)  # P[:, x0]
    ratio = cols / torch.gather(cols, -1, x_t[..., None])            # r_y
    w = Q[x_t]                                                       # row x of Q: [B, L, V]
    not_x = torch.arange(V, device=score.device) != x_t[..., None]
    w = torch.where(not_x, w, 0.0)
    term = score.exp() - torch.where(ratio > 0, ratio * score, 0.0) + _K(ratio)
    return (w * torch.where(w != 0, term, 0.0)).sum(dim=-1)
