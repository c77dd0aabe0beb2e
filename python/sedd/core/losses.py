"""The training loss and the likelihood bound of docs/math.md §4."""

from __future__ import annotations

import math

import torch


def _to(t: torch.Tensor, device, dtype=None) -> torch.Tensor:
    """A small host tensor onto the device without a host sync (non_blocking: from pageable
    memory CUDA stages the copy itself before returning, so the source may change afterwards)."""
    return t.to(device=device, dtype=dtype, non_blocking=True)


def training_times(shape, generator=None, *, eps_t: float = 1e-3, low_discrepancy=False,
                   lo: float | None = None, hi: float | None = None) -> torch.Tensor:
    """Diffusion times t ∈ [lo, hi] (default [ε_t, 1]) for the training loss, float64 [shape].

    Plain: independent uniforms. low_discrepancy (MDLM's and BD3LM's "antithetic" sampling): the
    n = numel draws are stratified — draw i lies in its own stratum [π(i), π(i) + 1)/n of the
    interval, π a random permutation, so that the batch covers the noise levels evenly: each
    draw is still uniform (the loss stays an unbiased estimate of the same expectation) and the
    batch mean's variance falls (docs/math.md §4). With lo, hi inside [ε_t, 1] (BD3LM's clipped
    schedules) the loss is no longer the bound's estimate, but a lower-variance training signal
    that leaves out the nearly clean and nearly masked levels."""
    lo = eps_t if lo is None else lo
    hi = 1.0 if hi is None else hi
    n = math.prod(shape)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    if low_discrepancy:
        u = (torch.randperm(n, generator=generator).double() + u) / n
    return (lo + (hi - lo) * u).view(shape)


def _noised(x0, graph, noise, generator, t, eps_t, validate=None, low_discrepancy=False):
    """t ~ U(ε_t, 1) per sequence (or the given t), σ̄(t), σ̇(t) (float64, CPU) and x_t."""
    B = x0.shape[0]
    if t is None:
        t = training_times((B,), generator, eps_t=eps_t, low_discrepancy=low_discrepancy)
    t = t.to(torch.float64).cpu()
    sigma, dsigma = noise.total(t), noise.rate(t)
    xt = graph.perturb(x0, _to(sigma, x0.device), generator if x0.device.type == "cpu" else None,
                       validate=validate)
    return sigma, dsigma, xt


def can_fuse_linear(model, graph) -> bool:
    """Whether batch_loss can use the fused projection + loss for this model and graph."""
    inner = getattr(model, "module", model)          # DDP / FSDP wrappers
    return bool(getattr(inner, "supports_fused_loss", False)) and graph.fused


def batch_loss(model, x0, graph, noise, generator=None, *, eps_t: float = 1e-3,
               use_reference: bool = False, fused_linear: bool = True, scale: float = 1.0,
               validate: bool | None = None, low_discrepancy: bool = False):
    """scale · mean over the batch of loss_fn (one scalar, what the trainer differentiates). With
    fused_linear (and a model/graph that allow it) the output projection and the loss are fused
    (sedd_kernels.linear_score_entropy): the [B, L, V] log-scores are never materialised. Same
    random draws, same value as the unfused path. validate=False skips the kernels' host checks
    of x0 (the trainer checks its batches on the host before they go to the device): on CUDA the
    fused path then makes no host sync except the absorbing loss's count of masked rows.
    low_discrepancy: stratified noise levels across the batch (training_times)."""
    if use_reference or not fused_linear or not can_fuse_linear(model, graph):
        t = training_times((x0.shape[0],), generator, eps_t=eps_t,
                           low_discrepancy=low_discrepancy) if low_discrepancy else None
        return loss_fn(model, x0, graph, noise, generator, t=t, eps_t=eps_t,
                       use_reference=use_reference).mean() * scale
    sigma, dsigma, xt = _noised(x0, graph, noise, generator, None, eps_t, validate,
                                low_discrepancy)
    weight = _to(dsigma * (scale / x0.shape[0]), x0.device)
    return model(xt, _to(sigma, x0.device, torch.float32),
                 fused_loss=dict(x_0=x0, sigma_total=_to(sigma, x0.device), graph=graph.name,
                                 token_weight=weight, validate=validate))


def loss_fn(model, x0, graph, noise, generator=None, *, t=None, eps_t: float = 1e-3,
            use_reference: bool = False):
    """σ̇(t)·Σ_i SE_i per sequence, t ~ U(ε_t, 1) per sequence (or given), [B]."""
    sigma, dsigma, xt = _noised(x0, graph, noise, generator, t, eps_t)
    log_score = model(xt, sigma.to(device=x0.device, dtype=torch.float32))
    se = graph.score_entropy(log_score, xt, x0, sigma.to(x0.device), use_reference=use_reference)
    return dsigma.to(device=x0.device, dtype=se.dtype) * se.sum(-1)


SIGMA_FLOOR = 1e-20      # the smallest σ̄ evaluated (see NoiseLevelSampler)


def log_expm1(s: torch.Tensor) -> torch.Tensor:
    """log(e^σ − 1) for σ > 0 in float64, without overflow (σ = ∞ gives ∞)."""
    small = s < 30
    return torch.where(small, torch.log(torch.expm1(s.clamp(max=30.0))),
                       s + torch.log1p(-torch.exp(-s)))


class NoiseLevelSampler:
    """Where likelihood_bound evaluates the integrand: total-noise levels σ and their weights.

    The bound's integral depends on the schedule only through its end points: with σ = σ̄(t)
    (σ̇ ≥ 0), ∫₀¹ σ̇(t) f(σ̄(t)) dt = ∫_{σ̄(0)}^{σ̄(1)} f(σ) dσ, f(σ) = E_{x_t~P(σ)[:, x0]}[Σ_i SE_i].
    The levels are σ = softplus(μ + β·logit(u)) with u uniform on the image [u₀, u₁] of
    [max(σ̄(0), SIGMA_FLOOR), σ̄(1)], i.e. log(e^σ − 1) — the log-odds of a token having been hit,
    1 − e^{−σ} — is logistic with centre μ = log(e^{σ̄(1/2)} − 1) and scale β (β = 1 and μ = 0 is
    exactly uniform t under the log-linear schedule with ε = 0). An evaluation point is
    u = u₀ + (u₁ − u₀)·w, w ∈ [0, 1), and its weight is the Jacobian dσ/dw, so that
    ∫ f(σ(w)) σ'(w) dw over [0, 1] is the integral above exactly.

    Why: near σ → 0 a position differs from x0 with probability ∝ σ and then costs ∝ 1/σ (the
    r ℓ_{x0} terms with r = 1/expm1(σ)); under uniform t these rare, large values give the
    estimator a heavy tail (its variance diverges logarithmically at t → 0, so K samples land
    several reported standard errors from the truth). Here σ ≈ e^μ u^β near 0, the weight is
    ∝ u^{β−1}, and each draw's second moment ∝ u^{β−2}: finite for β > 1, and its tail falls
    like z^{−(β+1)}; β = 3 makes the variance, and its estimate, well behaved. At the top the
    log-odds grow like σ, so levels thin out like e^{−σ/β} (σ̄(1) = ∞ is allowed).

    SIGMA_FLOOR: levels below 1e-20 are not evaluated (float32 networks cannot represent them);
    the omitted ∫₀^{1e-20} f dσ is below 1e-20·max f — for a bounded integrand nothing that any
    figure shows."""

    def __init__(self, noise, spread: float = 3.0):
        if not spread > 0:
            raise ValueError(f"NoiseLevelSampler: spread must be > 0, got {spread}")
        level = lambda t: float(noise.total(torch.tensor(t, dtype=torch.float64)))  # noqa: E731
        lo, hi, mid = max(level(0.0), SIGMA_FLOOR), level(1.0), level(0.5)
        if not (lo < hi and lo <= mid <= hi):
            raise ValueError(f"NoiseLevelSampler: the schedule must increase: σ̄(0) = {level(0.0)}, "
                             f"σ̄(1/2) = {mid}, σ̄(1) = {hi}")
        self.spread, self.lo, self.hi = float(spread), lo, hi
        self.mu = float(log_expm1(torch.tensor(mid, dtype=torch.float64)))
        z = log_expm1(torch.tensor([lo, hi], dtype=torch.float64))
        s = (z - self.mu) / self.spread
        self.u0, self.u1 = torch.sigmoid(s).tolist()          # u at σ = lo, hi
        self.v0, self.v1 = torch.sigmoid(-s).tolist()         # 1 − u, without cancellation

    def __call__(self, w: torch.Tensor):
        """Levels σ and weights dσ/dw (float64) at w ∈ [0, 1)."""
        w = w.to(torch.float64)
        width = self.u1 - self.u0
        u = self.u0 + width * w
        v = self.v1 + width * (1 - w)                          # 1 − u
        z = self.mu + self.spread * (torch.log(u) - torch.log(v))
        sigma = torch.logaddexp(z, torch.zeros_like(z)).clamp(self.lo, self.hi)
        weight = width * self.spread / (u * v) * torch.sigmoid(z)
        return sigma, weight


def score_entropy_sum(model, x0, graph, sigma, generator=None):
    """Σ_i SE_i per sequence at total noise σ̄ = sigma [B] (float64, CPU), x_t ~ P(σ̄)[:, x0]:
    one sample of the bound's integrand f(σ̄) (docs/math.md §3, §4), [B] float64 on the CPU."""
    sigma = sigma.to(torch.float64).cpu()
    xt = graph.perturb(x0, sigma.to(x0.device), generator if x0.device.type == "cpu" else None)
    sigma32 = sigma.to(device=x0.device, dtype=torch.float32)
    if can_fuse_linear(model, graph):   # per-token losses without materialising [B, L, V]
        se = model(xt, sigma32, fused_loss=dict(x_0=x0, sigma_total=sigma.to(x0.device),
                                                 graph=graph.name, reduction="none"))
    else:
        se = graph.score_entropy(model(xt, sigma32), xt, x0, sigma.to(x0.device))
    return se.sum(-1).double().cpu()


def stratified_stderr(vals: torch.Tensor) -> torch.Tensor:
    """Standard error of the mean of K values per column, one drawn in each of K equal strata
    ([K, B] → [B]): collapsed strata — neighbouring strata in pairs (the last three together
    when K is odd), each group's m/(m − 1)·Σ(Z − Z̄)² estimating its summed variance. Its
    expectation is the stratified estimator's variance plus the (small) spread of the means
    within each group: honest, and far tighter than the plain std/√K, which counts the whole
    spread of the integrand over [0, 1]. NaN for K < 2."""
    K = vals.shape[0]
    if K < 2:
        return torch.full(vals.shape[1:], math.nan, dtype=torch.float64)
    starts = list(range(0, K, 2)) if K % 2 == 0 else list(range(0, K - 3, 2)) + [K - 3]
    var = torch.zeros(vals.shape[1:], dtype=torch.float64)
    for a, b in zip(starts, starts[1:] + [K]):
        g = vals[a:b].double()
        var += (b - a) / (b - a - 1) * ((g - g.mean(0)) ** 2).sum(0)
    return var.sqrt() / K


@torch.no_grad()
def likelihood_bound(model, x0, graph, noise, timesteps: int = 64, generator=None, *,
                     batch_low_discrepancy: bool = False, spread: float = 3.0):
    """The bound of docs/math.md §4 (paper, Thm 3.6) per sequence, in nats:
    ∫₀¹ E_{x_t}[σ̇(t)·Σ_i SE_i] dt over all of [0, 1] (no ε_t cut) plus the prior term
    L·KL(P(σ̄(1))[:, x0] ‖ π).

    The integral is estimated with `timesteps` = K evaluations per sequence, one in each of K
    equal strata of w ∈ [0, 1), at the noise levels σ(w) of NoiseLevelSampler weighted by
    dσ/dw (the change of variable t → σ̄(t) → w; unbiased for any increasing schedule and any
    graph). With batch_low_discrepancy, the B draws of a stratum are spread evenly over it
    (MDLM's low-discrepancy sampler: offsets (π(b) + u)/B with a random permutation π and one
    u per stratum): each sequence's estimate keeps its law, sequences are negatively coupled.

    Returns (bound [B], prior [B], standard error [B] of the integral: stratified_stderr)."""
    B, L = x0.shape
    levels = NoiseLevelSampler(noise, spread)
    vals = []
    for k in range(timesteps):
        if batch_low_discrepancy:
            offset = torch.randperm(B, generator=generator).double()
            offset = (offset + torch.rand((), generator=generator, dtype=torch.float64)) / B
        else:
            offset = torch.rand(B, generator=generator, dtype=torch.float64)
        sigma, weight = levels((k + offset) / timesteps)
        vals.append(weight * score_entropy_sum(model, x0, graph, sigma, generator))
    vals = torch.stack(vals)                           # [K, B]
    eps = getattr(noise, "eps", 0.0)
    prior = torch.full((B,), L * graph.prior_kl(float(noise.sigma_max), eps), dtype=torch.float64)
    return vals.mean(0) + prior, prior, stratified_stderr(vals)
