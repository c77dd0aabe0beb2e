"""Block diffusion (BD3LM, Arriola et al. ICLR 2025) with score entropy: the sequence is cut into
blocks of K tokens, generated left to right; each block is an absorbing-graph diffusion over its
K positions given the clean blocks before it, whose keys and values are cached (sedd.nn.block;
the formulas: docs/math.md §8).
K = L is a (clean-parametrisation) SEDD model; K = 1 an autoregressive one.

The parametrisation is the clean, time-independent one of the absorbing graph (as BD3LM's): the
network gives log p(x_i = y | the block's unmasked tokens, the clean blocks before it), and the
log-scores at total noise σ are that plus −log expm1(σ) (docs/math.md §3, §5). A σ-conditioned
variant is not offered: the DDiT's adaLN condition is one σ per sequence, and the vectorised
forward needs one per block.

Training (BD3LM's vectorised form): every block of a sequence gets its own noise level t_b ~
U(ε_t, 1); positions of block b are masked with probability 1 − e^{−σ̄(t_b)}; one forward over
[x_t, x_0] under the vectorised block mask gives every block's conditional. Under the clean
parametrisation the score entropy of a masked position is −log p(x_0 | ·)/expm1(σ̄) (docs/math.md
§3 with s_y = p(y | ·)/expm1(σ)), so the loss σ̇·Σ SE is a cross-entropy weighted by
σ̇(t_b)/expm1(σ̄(t_b)) over the masked rows — the fused projection + cross-entropy on the gathered
rows, no [B, L, V] logits (1/t_b for the log-linear schedule with ε = 0: MDLM's weight).

Likelihood: the bound is the sum over blocks of each block's bound given the clean blocks
before it (docs/math.md §4 per block), estimated with stratified noise levels drawn per block
(sedd.core.losses.NoiseLevelSampler), plus the prior term. With K = 1 a block is one token: its
bound's integrand is −log p(x_i | x_<i)/expm1(σ) with probability 1 − e^{−σ} of being masked,
whose integral over σ ∈ [0, σ̄(1)] is exactly (1 − e^{−σ̄(1)})·(−log p(x_i | x_<i)); with the
prior term the bound is the exact autoregressive NLL up to the leaky end (ε·(log n − NLL) per
token for the log-linear schedule), with no noise from the estimator beyond the masking draws.

Generation: block by block, each block denoised by a registered predictor (analytic, Euler,
first-hitting) through sedd.sampling.sample over K positions; a prefix is honoured (its whole
blocks committed, a partial block given to the block's sampler), any length (past the training
length the cache keeps the last max_length − K positions), stop_at_eos stops generating blocks
once every sequence has its EOS, temperature / top-p as for SEDD. no_kv_cache=True recomputes the
clean prefix at every call (tests, benchmarks)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from ..core.graphs import Absorbing
from ..core.losses import NoiseLevelSampler, stratified_stderr, training_times
from ..core.noise import LogLinear
from ..core.options import ConfigError, option, positive_int
from ..nn.block import BlockDDiT
from ..sampling.conditions import Condition
from ..sampling.network import model_device
from ..sampling.sampler import SampleStats, sample
from ..sampling.windows import cut_at_eos
from .base import register, unwrap
from .sedd import SEDD


class BlockView(torch.nn.Module):
    """One block as the sampler sees a network: a time-independent model of x_block [B, T]
    whose clean log-probs come from the block network given the committed blocks (`state`)."""

    time_independent = True
    row_state = True          # the per-sequence cache passes rows= (sedd.sampling.network)

    def __init__(self, net: BlockDDiT, state):
        super().__init__()
        self.net, self.state = net, state
        self.config = SimpleNamespace(max_length=None)

    def clean_log_probs(self, x, rows=None):
        return self.net.block_log_probs(self.state, x, rows)

    def log_score_offset(self, sigma):
        return self.net.log_score_offset(sigma)

    def log_score_from_clean(self, log_probs, x, sigma):
        return self.net.log_score_from_clean(log_probs, x, sigma)

    def log_score_parts(self, x, sigma, out=None):
        return self.clean_log_probs(x), None, self.log_score_offset(sigma.float())

    def forward(self, x, sigma):
        return self.log_score_from_clean(self.clean_log_probs(x), x, sigma)


@register
class Block(SEDD):
    name = "block"
    title = "block-diffusion"
    summary = "block diffusion (absorbing graph, clean parametrisation, KV cache; --block-size K)"
    options = {"block_size": option("tokens per block of --model block (a divisor of --seq-len; "
                                    "K = seq-len is SEDD, K = 1 autoregressive; default 4)",
                                    check=positive_int),
               "attention": option("block diffusion's masked attention: sdpa (a boolean mask) "
                                   "or flex (flex_attention, compiled with --compile); the same "
                                   "numbers (default sdpa)", choices=("sdpa", "flex")),
               "noise_levels": SEDD.options["noise_levels"],
               "mask_rate": option("LO,HI: train on mask rates in [LO, HI] only, each block's "
                                   "masked share kept inside it (BD3LM's clipped schedule; "
                                   "default: the full range, the bound's own estimator)")}
    default_block_size = 4
    inherited_options = ("block_size",)
    conditions = frozenset({"prefix", "windows"})
    no_condition = ("a block-diffusion model generates its blocks left to right and cannot "
                    "condition on text after them; use --prefix")
    sample_options = ("steps", "predictor", "tokens_per_step", "threshold", "rank_by", "greedy",
                      "remask", "eta", "loop", "no_kv_cache")
    paper_layout = False
    eps_t = 1e-3                                     # training noise levels t ∈ [ε_t, 1]

    # ---- config and network
    def __init__(self, graph, noise, *, low_discrepancy: bool = False, mask_rate=None):
        super().__init__(graph, noise, low_discrepancy=low_discrepancy)
        self.mask_rate = mask_rate

    @staticmethod
    def parse_mask_rate(text):
        """'LO,HI' → (lo, hi) with 0 < lo < hi ≤ 1; None → None."""
        if text is None:
            return None
        try:
            lo, hi = (float(v) for v in str(text).split(","))
        except ValueError:
            lo = hi = math.nan
        if not 0 < lo < hi <= 1:
            raise ValueError(f"bad configuration: --mask-rate must be LO,HI with 0 < LO < HI <= 1, "
                             f"got {text!r}")
        return lo, hi

    @classmethod
    def configure(cls, cfg):
        if cfg.noise_levels is None:
            cfg.noise_levels = cls.default_noise_levels
        cls.parse_mask_rate(cfg.mask_rate)
        if cfg.block_size is None:
            cfg.block_size = min(cls.default_block_size, cfg.seq_len)
        K = cfg.block_size
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        if cfg.attention == "flex" and torch.device(device).type != "cuda":
            raise ValueError("bad configuration: --attention flex trains on CUDA only (torch has "
                             "no flex-attention backward on a CPU); use --attention sdpa")
        if cfg.seq_len % K:
            raise ValueError(f"bad configuration: --block-size {K} does not divide --seq-len "
                             f"{cfg.seq_len}")

    @classmethod
    def vocab_size(cls, cfg, n):
        return Absorbing.vocab_size(n)

    @classmethod
    def network_options(cls, cfg):
        return dict(scale_by_sigma=True, parametrisation="clean", block_size=cfg.block_size,
                    attention=cfg.attention or "sdpa")

    @classmethod
    def check_network(cls, config):
        if not config.block_size or config.parametrisation != "clean":
            raise ValueError("a block-diffusion network needs block_size >= 1 and "
                             "parametrisation='clean'")

    @classmethod
    def build_network(cls, config):
        return BlockDDiT(config)

    @classmethod
    def read_record(cls, cfg, model, source):
        record = super().read_record(cfg, model, source)
        if record["graph"] != Absorbing.name:
            raise ConfigError(f"{source}: block diffusion runs on the absorbing graph, the config "
                              f"says {record['graph']!r}")
        cls.check_loaded_network(model, source)
        return record

    @classmethod
    def inherited(cls, run):
        return dict(block_size=run.model.block_size)

    @classmethod
    def bind(cls, graph=None, noise=None, cfg=None):
        if cfg is None:
            return cls(graph, noise)
        return cls(graph, noise, low_discrepancy=cfg.noise_levels == "low-discrepancy",
                   mask_rate=cls.parse_mask_rate(cfg.mask_rate))

    @classmethod
    def for_config(cls, cfg, n):
        return cls.bind(Absorbing(n), LogLinear(), cfg)

    def describe(self):
        return f"block diffusion, absorbing graph, noise {self.noise.name}"

    # ---- training and the bound
    def _masked(self, x0, sigma, generator, share=None):
        """Positions masked at per-block total noise sigma [B, blocks] (float64, CPU). share =
        (lo, hi): a block whose masked share falls outside [lo, hi] is drawn again (BD3LM's
        clipped schedule; at most 64 rounds, then kept as it is)."""
        K = x0.shape[1] // sigma.shape[1]
        move = (-torch.expm1(-sigma)).repeat_interleave(K, 1)
        masked = torch.rand(x0.shape, generator=generator, dtype=torch.float64) < move
        for _ in range(64 if share is not None else 0):
            frac = masked.view(*sigma.shape, K).double().mean(-1)
            bad = ((frac < share[0] - 1e-9) | (frac > share[1] + 1e-9)).repeat_interleave(K, 1)
            if not bool(bad.any()):
                break
            again = torch.rand(x0.shape, generator=generator, dtype=torch.float64) < move
            masked = torch.where(bad, again, masked)
        return masked.to(x0.device)

    def _block_levels(self, B, blocks, generator, clip=None):
        lo, hi = clip if clip is not None else (None, None)
        t = training_times((B, blocks), generator, eps_t=self.eps_t,
                           low_discrepancy=self.low_discrepancy, lo=lo, hi=hi)
        return self.noise.total(t), self.noise.rate(t)

    def loss(self, model, x0, generator, scale=1.0, clipped=True):
        """scale · mean over the batch of Σ_blocks σ̇·Σ SE (nats per sequence); with a mask rate
        (and clipped=True) over the clipped levels only."""
        K = unwrap(model).config.block_size
        B, L = x0.shape
        clip = self.mask_rate if clipped else None
        if clip is not None:          # mask rate 1 − e^{−σ̄(t)} = (1 − ε)·t (log-linear)
            clip = tuple(min(1.0, r / (1 - self.noise.eps)) for r in clip)
        sigma, dsigma = self._block_levels(B, L // K, generator, clip)
        masked = self._masked(x0, sigma, generator, self.mask_rate if clipped else None)
        per_block = (dsigma / torch.expm1(sigma)).repeat_interleave(K, 1).to(x0.device)
        weight = torch.where(masked, per_block, 0.0) * (scale / B)
        x_t = torch.where(masked, self.graph.mask, x0)
        return model(x_t, block_loss=dict(x_0=x0, token_weight=weight))

    def eval_loss(self, model, x0, generator):
        """The bound's one-sample estimate (full range of levels, independent draws)."""
        ld, self.low_discrepancy = self.low_discrepancy, False
        try:
            return self.loss(model, x0, generator, clipped=False)
        finally:
            self.low_discrepancy = ld

    @torch.no_grad()
    def nll(self, model, x0, generator=None, timesteps=32, *, low_discrepancy=False):
        """The bound per sequence: Σ over blocks of each block's bound given the clean blocks
        before it, K stratified noise levels per block; (bound, prior term, standard error)."""
        net = unwrap(model)
        K = net.config.block_size
        B, L = x0.shape
        blocks = L // K
        levels = NoiseLevelSampler(self.noise)
        vals = []
        for k in range(timesteps):
            if low_discrepancy:
                perm = torch.stack([torch.randperm(B, generator=generator) for _ in range(blocks)], 1)
                offset = (perm.double() + torch.rand(blocks, generator=generator,
                                                     dtype=torch.float64)) / B
            else:
                offset = torch.rand(B, blocks, generator=generator, dtype=torch.float64)
            sigma, weight = levels((k + offset) / timesteps)
            masked = self._masked(x0, sigma, generator)
            x_t = torch.where(masked, self.graph.mask, x0)
            ce = net(x_t, block_loss=dict(x_0=x0, token_weight=masked.float(),
                                          reduction="none")).double().cpu()
            factor = (weight / torch.expm1(sigma)).repeat_interleave(K, 1)
            vals.append((ce * factor).sum(1))
        vals = torch.stack(vals)
        eps = getattr(self.noise, "eps", 0.0)
        prior = torch.full((B,), L * self.graph.prior_kl(float(self.noise.sigma_max), eps),
                           dtype=torch.float64)
        return vals.mean(0) + prior, prior, stratified_stderr(vals)

    # ---- generation
    @torch.no_grad()
    def generate(self, model, num_samples, length, *, condition=None, generator=None,
                 device=None, temperature=1.0, top_p=1.0, stop_at_eos=False, eos=None,
                 cache=True, progress=False, return_stats=False, steps=128,
                 predictor="analytic", no_kv_cache=False, **predictor_settings):
        """Block by block (docs/block.md); predictor_settings: the predictor's own settings of
        sedd.sampling.Settings (tokens_per_step, threshold, remask, ...), for every block."""
        net = unwrap(model)
        K, B = net.config.block_size, num_samples
        if length < 1 or B < 1:
            raise ValueError(f"length and num_samples must be >= 1, got {length}, {B}")
        if stop_at_eos and (eos is None or not 0 <= int(eos) < self.graph.n):
            raise ValueError(f"stop_at_eos needs eos, a token id in [0, {self.graph.n}), got {eos}")
        device = torch.device(device) if device is not None else model_device(net)
        x = torch.full((B, length), self.graph.mask, dtype=torch.long, device=device)
        P = 0
        if condition is not None:
            cond = Condition(*condition)
            P = cond.prefix_length()
            if P < 0:
                raise ValueError(self.no_condition)
            x[:, :P] = cond.tokens[:, :P].to(device)
        state = net.start(B, device, use_cache=not no_kv_cache, length=length)
        view = BlockView(net, state)
        was_training = net.training
        net.eval()
        evaluations = blocks = sequences = 0

        def commit(block):
            nonlocal sequences
            net.commit(state, block)
            sequences += B if not no_kv_cache else 0

        try:
            for lo in range(0, (P // K) * K, K):                # the prefix's whole blocks
                commit(x[:, lo:lo + K])
            lo = (P // K) * K
            while lo < length:
                T = min(K, length - lo)
                given = None
                if lo < P:                                     # a partial block of the prefix
                    g = torch.zeros(B, T, dtype=torch.bool, device=device)
                    g[:, :P - lo] = True
                    given = (x[:, lo:lo + T], g)
                xb, stats = sample(view, self.graph, self.noise, B, T, steps, predictor,
                                   condition=given, generator=generator, device=device,
                                   cache=cache, return_stats=True, temperature=temperature,
                                   top_p=top_p, **predictor_settings)
                x[:, lo:lo + T] = xb
                evaluations += stats.evaluations
                sequences += stats.sequence_evaluations
                blocks += 1
                lo += T
                if T == K and lo < length:
                    commit(xb)
                if stop_at_eos and bool(((x[:, P:lo] == eos).any(1)).all()):
                    break                          # every sequence has ended: no more blocks
        finally:
            net.train(was_training)
        out = x[:, :lo]
        stats = SampleStats(evaluations=evaluations, network_calls=state.calls,
                            cached=bool(cache), sequence_evaluations=sequences,
                            windows=blocks)
        if stop_at_eos:
            given = torch.zeros_like(out, dtype=torch.bool)
            given[:, :P] = True
            out, stats.lengths, stats.ended = cut_at_eos(out, eos, given,
                                                         torch.ones_like(given))
        stats.positions = state.positions
        return (out, stats) if return_stats else out
