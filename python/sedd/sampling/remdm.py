"""ReMDM: remasking reverse steps for the absorbing graph (Wang et al. 2025, "Remasking discrete
diffusion models with inference-time scaling"; kuleshov-group/remdm), so that more network calls
keep buying better samples instead of saturating once every position is unmasked.

With α = e^{−σ̄} the share of unmasked positions (docs/math.md §1), a step from grid time t to
s < t (α_s ≥ α_t) draws, per position, from
- an unmasked token x: stay w.p. 1 − σ_t, back to the mask w.p. σ_t;
- the mask: a token y w.p. (α_s − (1 − σ_t)·α_t)/(1 − α_t) · p(y | ·), stay masked otherwise,
with 0 ≤ σ_t ≤ σ_max = min(1, (1 − α_s)/α_t), which keeps the marginal share of unmasked
positions α_s. The masked rule is the analytic (Tweedie) step of the absorbing graph at an
effective δσ' with α_t·e^{δσ'} = α_s + σ_t·α_t, i.e. δσ' = δσ + log1p(σ_t·e^{−δσ}) (δσ = σ̄_t − σ̄_s):
the fused kernel does it as it is. The remasking of the unmasked positions (those unmasked before
the step, not given by a condition) is one Bernoulli draw each, made only where σ_t > 0; so with
σ_t = 0 throughout the steps, the randomness and the tokens are the plain analytic predictor's,
bit for bit.

Schedules (`remask`, `eta` η):
- "cap": σ_t = min(η, σ_max) (default η 0.008, the authors' script);
- "rescale": σ_t = η·σ_max (default η 0.015);
- "conf": per position σ_t^i = σ_max·softmax_i(−ψ) over the unmasked positions of the window,
  ψ_i the probability its token had when it was drawn (least confident first); the masked rule
  keeps σ = 0 there (as the authors' code does); η is not read;
- "loop" (`loop` = (t_on, t_off, α_on), default (0.55, 0.05, 0.9), η default 0.02): α rises
  linearly from α(1) to α_on over t ∈ [1, t_on] with σ_t = 0, stays at α_on over (t_off, t_on]
  with σ_t = min(η, σ_max) (remasking and unmasking at a fixed level: the loop), then rises to
  1 at t = 0 over [0, t_off] with σ_t = 0. The network is evaluated at σ̄ = −log α of the
  profile.
Every window ends with the denoiser, like the grid predictors."""

from __future__ import annotations

import math

import torch

from .mover import Mover

REMASK = ("cap", "rescale", "conf", "loop")
DEFAULT_ETA = {"cap": 0.008, "rescale": 0.015, "loop": 0.02}
DEFAULT_LOOP = (0.55, 0.05, 0.9)


def check(remask, eta, loop):
    """The ReMDM settings' errors, one line each (Settings.check calls it)."""
    if remask not in REMASK:
        raise ValueError(f"remask must be one of {', '.join(REMASK)}, got {remask!r}")
    if eta is not None and remask == "conf":
        raise ValueError("eta applies to remask 'cap', 'rescale' or 'loop', not 'conf'")
    if eta is not None and not (0.0 <= eta <= 1.0):
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    if loop is not None:
        if remask != "loop":
            raise ValueError(f"loop applies to remask 'loop', not {remask!r}")
        t_on, t_off, alpha_on = loop
        if not (0.0 < t_off < t_on < 1.0 and 0.0 < alpha_on < 1.0):
            raise ValueError(f"loop (T_ON,T_OFF,ALPHA_ON) needs 0 < T_OFF < T_ON < 1 and "
                             f"0 < ALPHA_ON < 1, got {tuple(loop)}")


class Profile:
    """α(t) and the network's σ̄(t) along the grid: the noise schedule's (cap, rescale, conf),
    or the loop's three pieces."""

    def __init__(self, noise, remask, loop):
        self.noise, self.loop = noise, (tuple(loop or DEFAULT_LOOP) if remask == "loop" else None)
        self.alpha_1 = math.exp(-float(noise.total(torch.tensor(1.0, dtype=torch.float64))))

    def sigma(self, t) -> float:
        """σ̄ at grid time t (the schedule's own value when not looping: the analytic
        predictor's numbers exactly)."""
        if self.loop is None:
            return float(self.noise.total(torch.as_tensor(t, dtype=torch.float64)))
        return -math.log(self.alpha(t))

    def alpha(self, t) -> float:
        t = float(t)
        if self.loop is None:
            return math.exp(-self.sigma(t))
        t_on, t_off, a_on = self.loop
        if t > t_on:
            return self.alpha_1 + (a_on - self.alpha_1) * (1 - t) / (1 - t_on)
        if t > t_off:
            return a_on
        return 1 - (1 - a_on) * t / t_off

    def looping(self, t) -> bool:
        return self.loop is not None and self.loop[1] < float(t) <= self.loop[0]


@torch.no_grad()
def remdm(net, graph, noise, x, frozen, settings):
    """Denoise one window x [B, W] with remasking; returns (x, evaluations)."""
    s = settings
    B, W = x.shape
    M, dev = graph.mask, x.device
    eta = s.eta if s.eta is not None else DEFAULT_ETA.get(s.remask, 0.0)
    prof = Profile(noise, s.remask, s.loop)
    move = Mover(net, graph, frozen, s)
    keep = frozen if frozen is not None else torch.zeros_like(x, dtype=torch.bool)
    psi = torch.full((B, W), math.inf, device=dev)       # conf: each token's probability
    grid = torch.linspace(1, s.eps, s.steps + 1, dtype=torch.float64)
    for k in range(s.steps):
        t, t_s = grid[k], grid[k + 1]
        sig_t, sig_s = prof.sigma(t), prof.sigma(t_s)
        a_t, a_s = math.exp(-sig_t), math.exp(-sig_s)
        dsig = sig_t - sig_s
        sigma_max = min(1.0, (1 - a_s) / a_t)
        if s.remask == "cap":
            rate = min(eta, sigma_max)
        elif s.remask == "rescale":
            rate = eta * sigma_max
        elif s.remask == "loop":
            rate = min(eta, sigma_max) if prof.looping(t) else 0.0
        else:
            rate = None                                   # conf: per position, below
        unmasked = (x != M) & ~keep
        masked_rate = rate if rate is not None else 0.0
        dsig_eff = dsig + math.log1p(masked_rate * math.exp(-dsig)) if masked_rate > 0 else dsig
        new = move(x, sig_t, dsig_eff, kind="analytic")
        if s.remask == "conf":
            drawn = (x == M) & (new != M)
            if bool(drawn.any()):
                psi[drawn] = token_probability(move.last, new, drawn, M)
            ranked = unmasked & torch.isfinite(psi)       # tokens this sampler drew
            w = torch.where(ranked, -psi, -math.inf)
            has = ranked.any(1, keepdim=True)
            rate_pos = torch.where(has, torch.softmax(torch.where(has, w, 0.0), 1), 0.0) * sigma_max
        else:
            rate_pos = rate
        if rate_pos is not None and (not isinstance(rate_pos, float) or rate_pos > 0) \
                and bool(unmasked.any()):
            u = torch.rand(B, W, generator=s.generator, device=dev)
            back = unmasked & (u < rate_pos)
            new = new.masked_fill(back, M)
            psi.masked_fill_(back, math.inf)
        x = new
        if s.progress is not None:
            s.progress.update(1)
    evaluations = s.steps
    if s.denoise:
        sigma = prof.sigma(grid[-1])
        x = move(x, sigma, sigma, kind="denoise")
        evaluations += 1
    return x, evaluations


def token_probability(last, new, drawn, M):
    """q(y) of the tokens y = new[drawn] under the rows the step read (last = (log-scores
    [B, W, V], parts)): softmax over the real tokens; the shift cancels."""
    log_score, parts = last
    V = log_score.shape[-1]
    rows = log_score.reshape(-1, V)[drawn.reshape(-1)].float()
    if parts.get("bias") is not None:
        rows = rows + parts["bias"].float()
    real = rows[:, :M]
    y = new[drawn]
    return torch.exp(real.gather(1, y[:, None])[:, 0] - torch.logsumexp(real, -1))
