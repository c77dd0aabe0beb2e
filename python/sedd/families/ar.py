"""The autoregressive (AR) baseline: a causal transformer of the DDiT's size class
(sedd.nn.causal.ARModel), trained with next-token cross-entropy; its likelihood figure is the
exact NLL, and it generates ancestrally with a KV cache.

Sampling is ancestral: one network evaluation per generated token, each over the new token only
(the keys and values of the earlier positions come from the cache); the next token is drawn by
``sedd_kernels.sample_categorical`` from the softmax of the logits, shaped by temperature and
top-p with the samplers' one rule (``sedd.sampling.shaping.shaped_log_probs``). Without the cache
the whole prefix is run again at every position; both draw the same tokens from the same
generator. A prefix is honoured (it is the model's own conditioning); a suffix or infill blanks
are not — a left-to-right model cannot condition on what follows."""

from __future__ import annotations

import warnings

import torch

import sedd_kernels as sk

from ..core.options import ConfigError
from ..nn.causal import ARModel
from ..sampling.conditions import Condition
from ..sampling.sampler import SampleStats
from ..sampling.shaping import check_shaping, shaped_log_probs
from .base import Family, register, unwrap


@register
class AR(Family):
    name = "ar"
    title = "autoregressive"
    summary = ("the autoregressive baseline of the same size class (causal, next-token "
               "cross-entropy)")
    conditions = frozenset({"prefix"})
    no_condition = ("an autoregressive model generates left to right and cannot condition on text "
                    "after the blanks; use --prefix, or a SEDD checkpoint to infill")
    exact_likelihood = True
    likelihood_note = "its exact NLL (BOS in front of every block, all its tokens predicted)"

    @classmethod
    def vocab_size(cls, cfg, n):
        return n + 1                               # BOS

    @classmethod
    def network_options(cls, cfg):
        return dict(scale_by_sigma=False)

    @classmethod
    def check_network(cls, config):
        if config.parametrisation != "score" or config.scale_by_sigma:
            raise ValueError("the autoregressive baseline has no time conditioning: "
                             "parametrisation must be 'score' and scale_by_sigma False")

    @classmethod
    def build_network(cls, config):
        cls.check_network(config)
        return ARModel(config)

    @classmethod
    def read_record(cls, cfg, model, source):
        """No graph, no noise; V = n + 1 (BOS)."""
        n = int(cfg.get("n", model.vocab_size - 1))
        if model.vocab_size != n + 1:
            raise ConfigError(f"{source}: the autoregressive model over n = {n} tokens needs "
                              f"vocab_size {n + 1} (with BOS), the model has {model.vocab_size}")
        cls.check_loaded_network(model, source)
        return dict(graph=None, n=n, noise={})

    def network_vocab_size(self, n):
        return n + 1

    def record(self):
        return {"graph": None, "noise": {}}

    def describe(self):
        return "autoregressive (causal attention, next-token cross-entropy)"

    def loss(self, model, x0, generator, scale=1.0):
        """scale · mean over the batch of Σ_i −log p(x_i | x_<i): per sequence, the same scale as
        SEDD's loss (nats per sequence), so learning rate and clipping mean the same."""
        return model(x0, loss="sum", token_weight=scale / x0.shape[0])

    def eval_loss(self, model, x0, generator):
        return model(x0, loss="sum") / x0.shape[0]

    def nll(self, model, x0, generator=None, timesteps=0, *, low_discrepancy=False):
        """(exact per-sequence NLL [N] nats, zeros: no prior term, zeros: no estimator noise)."""
        nll = unwrap(model).nll(x0)
        return nll, torch.zeros_like(nll), torch.zeros_like(nll)

    def generate(self, model, num_samples, length, *, condition=None, generator=None,
                 device=None, temperature=1.0, top_p=1.0, stop_at_eos=False, eos=None,
                 cache=True, progress=False, return_stats=False):
        prefix = None
        if condition is not None:
            cond = Condition(*condition)
            P = cond.prefix_length()
            if P < 0:
                raise ValueError(self.no_condition)
            prefix = cond.tokens[:, :P]
        return ar_sample(unwrap(model), num_samples, length, generator=generator,
                         temperature=temperature, top_p=top_p, prefix=prefix, cache=cache,
                         stop_at_eos=stop_at_eos, eos=eos, device=device,
                         return_stats=return_stats)


def draw(logits, generator=None, temperature: float = 1.0, top_p: float = 1.0):
    """Next tokens [B] ~ the softmax of logits [B, n] shaped by temperature / top-p."""
    weights = shaped_log_probs(logits.double(), temperature, top_p).exp()
    return sk.sample_categorical(weights, generator)


@torch.no_grad()
def ar_sample(model: ARModel, num_samples: int, length: int, *, generator=None,
              temperature: float = 1.0, top_p: float = 1.0, prefix=None, cache: bool = True,
              stop_at_eos: bool = False, eos: int | None = None, device=None,
              return_stats: bool = False):
    """Ancestral samples [num_samples, length] (with stop_at_eos a list of rows cut after their
    first generated EOS; generation stops once every row has one). prefix: token ids
    [1 or num_samples, P] kept as the start of every row. cache: reuse keys and values (one
    new position per evaluation); without it the whole prefix is recomputed per token."""
    check_shaping(temperature, top_p)
    if length < 1 or num_samples < 1:
        raise ValueError(f"length and num_samples must be >= 1, got {length}, {num_samples}")
    W = model.config.max_length
    if length > W:
        raise ValueError(f"length {length} is longer than the autoregressive model's window {W}")
    if stop_at_eos and eos is None:
        raise ValueError("stop_at_eos needs the eos token id")
    device = torch.device(device) if device is not None else model.lm_head.weight.device
    B = num_samples
    x = torch.zeros(B, length, dtype=torch.long, device=device)
    P = 0
    if prefix is not None:
        prefix = torch.as_tensor(prefix, dtype=torch.long, device=device)
        if prefix.dim() != 2 or prefix.shape[0] not in (1, B):
            raise ValueError(f"prefix must have shape [1 or {B}, P], got {list(prefix.shape)}")
        P = prefix.shape[1]
        if P > length:
            raise ValueError(f"the prefix ({P} tokens) is longer than the length {length}")
        x[:, :P] = prefix
    bos = torch.full((B, 1), model.bos, dtype=torch.long, device=device)
    ended = torch.zeros(B, dtype=torch.bool, device=device)
    ends = torch.full((B,), length, dtype=torch.long, device=device)
    calls = positions = 0
    kv = model.new_cache(B, length, device=device) if cache and P < length else None
    logits = None
    for i in range(P, length):
        if kv is None:
            logits = model.next_logits(torch.cat([bos, x[:, :i]], 1))
            positions += B * (i + 1)
        elif logits is None:                          # prefill: BOS and the prefix at once
            logits = model.next_logits(torch.cat([bos, x[:, :i]], 1), kv)
            positions += B * (i + 1)
        calls += 1
        x[:, i] = draw(logits, generator, temperature, top_p)
        if stop_at_eos:
            hit = (x[:, i] == eos) & ~ended
            ends = torch.where(hit, i + 1, ends)
            ended |= hit
            if bool(ended.all()):
                break
        if kv is not None and i + 1 < length:
            logits = model.next_logits(x[:, i:i + 1], kv)
            positions += B
    out = x
    lengths = ends.tolist()
    if stop_at_eos:
        out = [x[b, :lengths[b]] for b in range(B)]
    if not return_stats:
        return out
    stats = SampleStats(evaluations=calls, network_calls=calls, cached=kv is not None,
                        sequence_evaluations=B * calls, windows=1, positions=positions,
                        lengths=lengths if stop_at_eos else [], ended=ended.tolist() if stop_at_eos else [])
    return out, stats


def is_autoregressive(model) -> bool:
    """Deprecated (the family seam asks the family): whether `model` is the AR baseline."""
    warnings.warn("sedd.model.is_autoregressive is deprecated: ask the family "
                  "(sedd.families.family_of(model))", DeprecationWarning, stacklevel=2)
    return getattr(getattr(unwrap(model), "config", None), "family", "sedd") == AR.name


ARObjective = AR          # the name of this class before the family seam (sedd.objectives)
