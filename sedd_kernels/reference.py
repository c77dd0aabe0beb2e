"""Plain-PyTorch twins of the fused ops, written as docs/math.md states them.

They are the baseline of every test and benchmark: correct by inspection, not fast. They compute
in float64 for float64 inputs and in float32 otherwise (bf16/fp16 inputs are upcast).

- :func:`score_entropy` — the closed forms of docs/math.md §3, in the style of the paper's own code
  (boolean indexing of masked rows for the absorbing graph). The "reference eager" baseline.
- :func:`score_entropy_dense` — the same closed forms with dense masks and no data-dependent
  shapes, so that ``torch.compile`` can fuse it. The "compiled reference" baseline.
- :func:`linear_score_entropy` — the unfused twin of the fused projection + loss: the log-scores
  ``hidden @ weight.T + bias + offset`` materialised, then :func:`score_entropy` (``dense=True``:
  :func:`score_entropy_dense`, for ``torch.compile``).
- :func:`linear_cross_entropy` — the unfused twin of the fused projection + cross-entropy (the
  autoregressive baseline's loss): the logits materialised, then ``F.cross_entropy``.
- :func:`score_entropy_general` — the definition Σ_y w_y (e^{ℓ_y} − r_y ℓ_y + K(r_y)) with a dense
  rate matrix Q and P = exp(σQ); small V only. It checks the closed forms.
- Sampling (§1, §6): :func:`sample_categorical` (float64 exponential race with torch's RNG),
  :func:`perturb`, the definitions :func:`transition`, :func:`staggered_score`, :func:`step_weights`
  (dense matrix exponentials; small V) and the paper-style dense steps :func:`euler_step`,
  :func:`analytic_step`, :func:`denoise_step` (any V; the "reference eager" baseline).
"""

from __future__ import annotations

import torch

__all__ = [
    "rate_matrix",
    "transition_matrix",
    "score_entropy",
    "score_entropy_dense",
    "score_entropy_general",
    "sample_categorical",
    "perturb",
    "transition",
    "staggered_score",
    "step_weights",
    "euler_step",
    "analytic_step",
    "denoise_step",
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
    """Dense Q [V, V] of docs/math.md §1: Q[y, x] is the rate from x to y; columns sum to 0."""
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
    """docs/math.md §3 closed forms, eager PyTorch (boolean-indexed masked rows for 'absorb')."""
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
    """docs/math.md §3 closed forms with dense masks only (no boolean indexing): compile-friendly."""
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


def linear_score_entropy(hidden, weight, bias, x_t, x_0, sigma, graph, logit_offset=None, *,
                         dense: bool = False) -> torch.Tensor:
    """Per-token score entropy [B, L] of ℓ = hidden @ weight.T + bias + logit_offset (docs/math.md §3
    on the network's output projection): the log-scores materialised in full, in float32
    (float64 for float64 inputs), as the unfused network computes them. logit_offset: [B] or
    [B, L] or None."""
    ls = torch.nn.functional.linear(hidden, weight, bias)
    ls = ls.to(_compute_dtype(ls))
    if logit_offset is not None:
        off = logit_offset.to(ls.dtype)
        ls = ls + (off[:, None, None] if off.dim() == 1 else off[..., None])
    fn = score_entropy_dense if dense else score_entropy
    return fn(ls, x_t, x_0, sigma, graph)


def linear_cross_entropy(hidden, weight, bias, target, *, reduction="mean", ignore_index=-100,
                         token_weight=None) -> torch.Tensor:
    """F.cross_entropy of the materialised logits hidden @ weight.T + bias ([..., V], in float32,
    float64 for float64 inputs), ignored rows 0; reduction mean / sum (Σ token_weight·CE) / none."""
    z = torch.nn.functional.linear(hidden, weight, bias)
    z = z.to(_compute_dtype(z))
    ce = torch.nn.functional.cross_entropy(z.reshape(-1, z.shape[-1]), target.reshape(-1),
                                           reduction="none", ignore_index=ignore_index)
    ce = ce.view(target.shape)
    if reduction == "none":
        return ce
    if reduction == "mean":
        return ce.sum() / (target != ignore_index).sum().clamp_min(1)
    return (ce * token_weight).sum() if token_weight is not None else ce.sum()


def _K(a: torch.Tensor) -> torch.Tensor:
    return torch.where(a > 0, a * (torch.log(torch.where(a > 0, a, 1.0)) - 1), 0.0)


def score_entropy_general(log_score, x_t, x_0, sigma, Q) -> torch.Tensor:
    """The definition of docs/math.md §3 for a dense rate matrix Q [V, V] (small V):

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


# ---------------------------------------------------------------- forward process and sampling

def sample_categorical(weights: torch.Tensor, generator=None) -> torch.Tensor:
    """Exponential race in float64: argmax_y w_y / E_y, E_y = −log1p(−u_y), u ~ U[0, 1) with 53
    random bits (torch.rand in float64). Same distribution as the fused op, other random numbers."""
    w = weights.to(torch.float64)
    u = torch.rand(w.shape, dtype=torch.float64, device=w.device, generator=generator)
    return torch.argmax(w / -torch.log1p(-u), dim=-1)


def perturb(x_0, sigma, graph, num_tokens, generator=None):
    """docs/math.md §1 with torch's RNG: move with probability 1 − e^{−σ} to the mask (absorb) or to a
    uniform token of [0, V) (uniform)."""
    graph = _graph_name(graph)
    B = x_0.shape[0]
    sigma = _sigma(sigma, B, x_0.device, torch.float64)[:, None]
    move = torch.rand(x_0.shape, dtype=torch.float64, device=x_0.device, generator=generator) \
        < -torch.expm1(-sigma)
    if graph == "absorb":
        target = torch.full_like(x_0, num_tokens - 1)
    else:
        target = torch.randint(0, num_tokens, x_0.shape, device=x_0.device, generator=generator)
    return torch.where(move, target, x_0)


def transition(x, sigma, graph, num_tokens):
    """p(x_t = y | x_0 = x) = exp(σQ)[y, x] over y, [B, L, V] float64, from the dense matrix
    exponential of the rate matrix (the definition; small V)."""
    V = int(num_tokens)
    B = x.shape[0]
    sigma = _sigma(sigma, B, x.device, torch.float64)
    P = torch.linalg.matrix_exp(sigma[:, None, None] * rate_matrix(graph, V, device=x.device))
    cols = P.transpose(1, 2)                                   # cols[b, x] = P[:, x]
    return torch.gather(cols[:, None].expand(B, x.shape[1], V, V), 2,
                        x[..., None, None].expand(B, x.shape[1], 1, V)).squeeze(2)


def staggered_score(score, dsigma, graph):
    """stag = exp(−δQ)·s from the dense matrix exponential (the definition; small V)."""
    B, L, V = score.shape
    d = _sigma(dsigma, B, score.device, torch.float64)
    Pm = torch.linalg.matrix_exp(-d[:, None, None] * rate_matrix(graph, V, device=score.device))
    return torch.einsum("byz,blz->bly", Pm, score.to(torch.float64))


def step_weights(log_score, x, dsigma, graph, kind, frozen=None):
    """The weights of one reverse step, docs/math.md §6, from the dense rate matrix (the definition;
    small V), float64 [B, L, V], rows normalised to sum 1. s = e^ℓ with s_x = 1; Euler: δ·Q[x, y]·s_y
    and 1 − Σ at x; analytic: (exp(−δQ)·s)_y · exp(δQ)[x, y]; denoise: analytic, absorbing mask
    column dropped. Negative weights count as 0; a row of zeros keeps x (the absorbing denoiser:
    uniform over non-mask tokens); frozen rows and absorbing rows with x ≠ M keep x."""
    graph = _graph_name(graph)
    B, L, V = log_score.shape
    Q = rate_matrix(graph, V, device=log_score.device)
    d = _sigma(dsigma, B, log_score.device, torch.float64)
    s = log_score.to(torch.float64).exp()
    onehot = torch.nn.functional.one_hot(x, V).to(torch.float64)
    s = torch.where(onehot > 0, 1.0, s)
    if kind == "euler":
        w = d[:, None, None] * Q[x] * s
        w = torch.where(onehot > 0, 0.0, w)
        w = w + onehot * (1 - w.sum(-1, keepdim=True))
    elif kind in ("analytic", "denoise"):
        fwd = torch.linalg.matrix_exp(d[:, None, None] * Q)      # exp(δQ)
        bwd = torch.linalg.matrix_exp(-d[:, None, None] * Q)     # exp(−δQ)
        stag = torch.einsum("byz,blz->bly", bwd, s)
        row = torch.gather(fwd[:, None].expand(B, L, V, V), 2,
                           x[..., None, None].expand(B, L, 1, V)).squeeze(2)  # exp(δQ)[x, :]
        w = stag * row
        if kind == "denoise" and graph == "absorb":
            w[..., V - 1] = 0.0
    else:
        raise ValueError(f"kind must be 'euler', 'analytic' or 'denoise', got {kind!r}")
    w = w.clamp_min(0.0)
    total = w.sum(-1, keepdim=True)
    if kind == "denoise" and graph == "absorb":
        fallback = torch.ones_like(w)
        fallback[..., V - 1] = 0.0
    else:
        fallback = onehot
    w = torch.where(total > 0, w, fallback)
    stays = x != V - 1 if graph == "absorb" else torch.zeros_like(x, dtype=torch.bool)
    if frozen is not None:
        stays = stays | frozen
    w = torch.where(stays[..., None], onehot, w)
    return w / w.sum(-1, keepdim=True)


def _paper_step(log_score, x, dsigma, graph, kind, generator=None, frozen=None, shift=None,
                bias=None):
    """A reverse step as the paper's code computes it, dense over [B, L, V] (any V): exp of the
    log-scores (as (log_score + bias) + shift when given), the staggered score and the transition
    row in closed form, the product, and the race in float64 (instead of its float32 Gumbel
    noise)."""
    graph = _graph_name(graph)
    B, L, V = log_score.shape
    d = _sigma(dsigma, B, log_score.device, torch.float32)[:, None, None]
    ls = log_score.float()
    if bias is not None:
        ls = ls + bias.float()
    if shift is not None:
        ls = ls + _sigma(shift, B, log_score.device, torch.float32)[:, None, None]
    score = ls.exp()
    score = score.scatter(-1, x[..., None], 1.0)                   # s_x = 1
    onehot = torch.nn.functional.one_hot(x, V).float()
    if kind == "euler":
        Qrow = onehot.new_zeros(B, L, V)
        if graph == "absorb":
            Qrow = torch.where((x == V - 1)[..., None], 1.0, Qrow)
        else:
            Qrow = Qrow + 1.0 / V
        probs = d * Qrow * score * (1 - onehot)
        probs = probs + onehot * (1 - probs.sum(-1, keepdim=True))
    else:
        if graph == "absorb":
            stag = score * torch.exp(d)
            stag[..., -1] = score[..., -1] - torch.expm1(d)[..., 0] * score[..., :-1].sum(-1)
            trans = torch.exp(-d) * onehot + torch.where((x == V - 1)[..., None],
                                                         -torch.expm1(-d), 0.0)
        else:
            stag = torch.exp(d) * score - torch.expm1(d) * score.sum(-1, keepdim=True) / V
            trans = -torch.expm1(-d) / V + torch.exp(-d) * onehot
        probs = stag * trans
        if kind == "denoise" and graph == "absorb":
            probs[..., -1] = 0.0
    probs = probs.clamp_min(0.0)
    new = sample_categorical(probs, generator)
    if frozen is not None:
        new = torch.where(frozen, x, new)
    return new


def reverse_step(log_score, x, dsigma, graph, kind, generator=None, frozen=None, *, shift=None,
                 bias=None):
    """The reference twin of sedd_kernels.reverse_step (the paper's dense formulas)."""
    return _paper_step(log_score, x, dsigma, graph, kind, generator, frozen, shift, bias)


def euler_step(log_score, x, dsigma, graph, generator=None, frozen=None, *, shift=None,
               bias=None):
    return _paper_step(log_score, x, dsigma, graph, "euler", generator, frozen, shift, bias)


def analytic_step(log_score, x, dsigma, graph, generator=None, frozen=None, *, shift=None,
                  bias=None):
    return _paper_step(log_score, x, dsigma, graph, "analytic", generator, frozen, shift, bias)


def denoise_step(log_score, x, sigma, graph, generator=None, frozen=None, *, shift=None,
                 bias=None):
    return _paper_step(log_score, x, sigma, graph, "denoise", generator, frozen, shift, bias)
