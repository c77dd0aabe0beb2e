"""Forward process and reverse steps (docs/math.md §1, §6): bindings of the fused sampling kernels,
the closed-form dense rows, and random-number plumbing (torch.Generator → Philox seed/offset)."""

from __future__ import annotations


import torch

from ._args import (check_nonneg, check_tokens, graph_name, same_device, sigma_vector,
                    want_validate)

KINDS = ("euler", "analytic", "denoise")


def philox_rng(generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """The (seed, offset) of one call of a sampling kernel: an int64 [2] tensor on `device`, two
    62-bit numbers drawn by torch.randint from `generator` (default: the device's default
    generator). The kernels read it themselves, so nothing is read back to the host (no sync) and
    a CUDA-graph capture replays with fresh numbers: torch's own random op advances the
    generator's Philox offset at capture and at every replay (a non-default generator must be
    registered with the graph, `CUDAGraph.register_generator_state`). Same generator state →
    same numbers, captured or not."""
    device = torch.device(device)
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator: a {generator.device.type} generator cannot drive a sampling "
                         f"kernel on {device}; create it with torch.Generator(device={device.type!r})")
    return torch.randint(0, 1 << 62, (2,), device=device, generator=generator)


def perturb(x_0: torch.Tensor, sigma, graph, num_tokens: int,
            generator: torch.Generator | None = None, *, validate: bool | None = None):
    """x_t ~ P(σ)[:, x_0] per position (docs/math.md §1). ``num_tokens`` is V (for 'absorb' the mask is
    V − 1: with probability 1 − e^{−σ} a token becomes the mask; for 'uniform' it becomes a
    uniform draw from [0, V)). ``sigma``: [B], [B, 1], 0-d or a number, ≥ 0."""
    graph = graph_name("perturb", graph)
    sigma = sigma_vector(sigma, x_0)
    same_device("perturb", x_0, "x_0", sigma=sigma)
    if want_validate(validate, x_0):
        check_tokens("perturb", x_0, num_tokens)
        check_nonneg("perturb", sigma, "sigma")
    return torch.ops.sedd.perturb(x_0, sigma, graph, int(num_tokens),
                                  philox_rng(generator, x_0.device))


def sample_categorical(weights: torch.Tensor, generator: torch.Generator | None = None, *,
                       validate: bool | None = None) -> torch.Tensor:
    """Indices ~ Categorical(weights / Σ weights) over the last dimension, by the exponential race
    argmin_y E_y / w_y (docs/math.md §6) run with exponential jumps: O(log V) float64 random numbers of
    53 bits per row, not one per entry (csrc/sampling/steps.h, "The jump race").
    ``weights``: non-negative, not NaN, at least one positive entry per row."""
    if want_validate(validate, weights) and weights.numel():
        if not bool(((weights >= 0) & ~torch.isnan(weights)).all()):
            raise ValueError("sample_categorical: weights must be non-negative and not NaN")
        if not bool((weights.amax(dim=-1) > 0).all()):
            raise ValueError("sample_categorical: every row of weights needs a positive entry")
    return torch.ops.sedd.sample_categorical(weights, philox_rng(generator, weights.device))


def reverse_step(log_score, x, dsigma, graph, kind, generator=None, frozen=None, *,
                 shift=None, bias=None, validate=None):
    """One reverse step of ``kind`` ("euler", "analytic" or "denoise"; see those functions)."""
    if kind not in KINDS:
        raise ValueError(f"reverse_step: kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return _step(kind, log_score, x, dsigma, graph, generator, frozen, shift, bias, validate)


def _step(kind, log_score, x, dsigma, graph, generator, frozen, shift, bias, validate):
    op = kind + "_step"
    graph = graph_name(op, graph)
    dsigma = sigma_vector(dsigma, log_score)
    if shift is not None:
        shift = sigma_vector(shift, log_score)
    same_device(op, log_score, "log_score", x=x, dsigma=dsigma, frozen=frozen, shift=shift,
                bias=bias)
    if want_validate(validate, log_score):
        check_tokens(op, x, log_score.shape[-1])
        check_nonneg(op, dsigma, "dsigma")
    return torch.ops.sedd.reverse_step(log_score, x, dsigma, graph, kind,
                                       philox_rng(generator, log_score.device), frozen, shift, bias)


_SHIFT_DOC = """
    ``bias`` [V] and ``shift`` [B] (or a number): the log-scores read are
    ``(log_score + bias) + shift`` in their accumulation type (fp32 for fp32/bf16/fp16) — the
    output projection's bias and the network's scale_by_sigma offset, so that the bare product
    ``h @ Wᵀ`` can be stepped on without materialising the [B, L, V] log-scores again. The
    log-score at the current token is ignored (taken as 0) either way."""


def euler_step(log_score, x, dsigma, graph, generator=None, frozen=None, *, shift=None,
               bias=None, validate=None):
    """One Euler (τ-leaping) step, docs/math.md §6, with ``dsigma = Δt·σ̇(t)`` per sequence: weights
    Δt·σ̇·Q[x, y]·s_y for y ≠ x and 1 − Σ of them for x (negatives count as 0). Returns new tokens
    [B, L]. ``frozen`` [B, L] bool: positions that keep their token. The score at the current token
    is taken as 1 whatever ``log_score`` holds there."""
    return _step("euler", log_score, x, dsigma, graph, generator, frozen, shift, bias, validate)


def analytic_step(log_score, x, dsigma, graph, generator=None, frozen=None, *, shift=None,
                  bias=None, validate=None):
    """One analytic (Tweedie τ-leaping) step, docs/math.md §6, with ``dsigma = σ̄(t) − σ̄(t − Δt)``:
    weights stag_y · exp(δQ)[x, y] with the staggered score stag = exp(−δQ)·s."""
    return _step("analytic", log_score, x, dsigma, graph, generator, frozen, shift, bias,
                 validate)


def denoise_step(log_score, x, sigma, graph, generator=None, frozen=None, *, shift=None,
                 bias=None, validate=None):
    """The final denoising step, docs/math.md §6: the analytic step with δ = σ̄(t) all the way to σ = 0;
    for the absorbing graph the mask column is dropped, so the output never holds the mask."""
    return _step("denoise", log_score, x, sigma, graph, generator, frozen, shift, bias, validate)


for _f in (reverse_step, euler_step, analytic_step, denoise_step):
    _f.__doc__ += _SHIFT_DOC


def transition(x: torch.Tensor, sigma, graph, num_tokens: int) -> torch.Tensor:
    """The dense rows p(x_t = y | x_0 = x) = P(σ)[y, x] over y, [B, L, V] float64 (docs/math.md §1)."""
    graph = graph_name("transition", graph)
    sigma = sigma_vector(sigma, x).to(torch.float64)
    V = int(num_tokens)
    stay = torch.exp(-sigma)[:, None, None]
    onehot = torch.nn.functional.one_hot(x, V).to(torch.float64)
    if graph == "uniform":
        return stay * onehot + (1 - stay) / V
    out = stay * onehot  # P[x, x] = e^{−σ}; the rest moves to the mask (the mask stays: 1)
    out[..., V - 1] += -torch.expm1(-sigma)[:, None]
    return out


def staggered_score(score: torch.Tensor, dsigma, graph) -> torch.Tensor:
    """stag = exp(−δQ)·s in closed form (docs/math.md §6), for scores s [B, L, V] (not log-scores):
    absorbing e^δ s_y (y ≠ M) and s_M − (e^δ − 1)Σ_{y≠M} s_y; uniform e^δ s_y − (e^δ − 1)S/V."""
    graph = graph_name("staggered_score", graph)
    d = sigma_vector(dsigma, score).to(score.dtype)[:, None, None]
    if graph == "uniform":
        return torch.exp(d) * score - torch.expm1(d) * score.sum(-1, keepdim=True) / score.shape[-1]
    out = torch.exp(d) * score
    out[..., -1] = score[..., -1] - torch.expm1(d)[..., 0] * score[..., :-1].sum(-1)
    return out


# ---- fake kernels ----

@torch.library.register_fake("sedd::perturb")
def _perturb_fake(x_0, sigma, graph, num_tokens, rng):
    return torch.empty_like(x_0)


@torch.library.register_fake("sedd::sample_categorical")
def _sample_categorical_fake(weights, rng):
    return weights.new_empty(weights.shape[:-1], dtype=torch.long)


@torch.library.register_fake("sedd::reverse_step")
def _reverse_step_fake(log_score, x, dsigma, graph, kind, rng, frozen=None, shift=None,
                       bias=None):
    return torch.empty_like(x)


