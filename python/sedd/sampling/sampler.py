"""The sampler: reverse sampling (docs/math.md §6) on the fused step kernels, made of parts —
conditions (sedd.sampling.conditions), semi-autoregressive windows (windows), a predictor of the
registry running each window (predictors: Euler, analytic over the time grid, then the denoiser;
first_hitting with its own exact event times), temperature/top-p (shaping), the network view with
the exact per-sequence cache (network) and CUDA-graph capture (capture). `Settings.check` checks
every precondition of a call, once; `sample` composes the parts.

Costs: the grid predictors make S + 1 network calls per window (denoiser included), fewer with
the cache; first-hitting ⌈n/k⌉ (n masked positions, k tokens per step) ≤ min(S, n) with the
default k. Every path runs on the fused step kernels; use_reference=True takes the plain-PyTorch
twins (dense [B, L, V]) for comparisons."""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field, fields

import torch

from ..nn.layers import compile_model
from .conditions import Condition
from .dual_cache import DualCache
from .dual_cache import check as check_dual
from .confidence import RANK_BY
from .network import NetworkView, model_device, model_window
from .predictors import PREDICTORS, Predictor, get_predictor
from .remdm import check as check_remdm
from .shaping import Shaping
from .windows import all_ended, cut_at_eos, window_starts

try:
    from tqdm.auto import tqdm
except ImportError:  # optional: tqdm is a `train` extra
    tqdm = None


@dataclass
class SampleStats:
    """What one sample() call did: `evaluations` is the number of network outputs the steps
    consumed (what an uncached sampler computes; grid predictors: steps + 1 per window with the
    denoiser), `network_calls` the forward passes actually made (fewer when the exact cache
    reused outputs), `sequence_evaluations` the sequences those passes ran (B per uncached call;
    the per-sequence cache runs only the changed ones), `positions` the token positions those
    passes computed (summed over the sequences they ran), `windows` the semi-autoregressive
    windows and, with stop_at_eos, `lengths` and `ended` (whether the sequence produced its EOS)."""

    evaluations: int
    network_calls: int
    cached: bool
    sequence_evaluations: int = 0
    positions: int = 0
    windows: int = 1
    lengths: list = field(default_factory=list)
    ended: list = field(default_factory=list)

    @property
    def reused(self) -> int:
        return self.evaluations - self.network_calls


@dataclass
class Settings:
    """The settings of one sample() call, checked together by `check` (the one place every
    precondition of the sampler lives), and what the predictors read.

    steps: predictor steps per window (grid predictors), or the cap on evaluations per window
    (first_hitting: ⌈masked/steps⌉ tokens per evaluation; tokens_per_step overrides it).
    threshold, rank_by, greedy (confidence; tokens_per_step is its k per call): see
    sedd.sampling.confidence. remask, eta, loop (remdm): see sedd.sampling.remdm.
    denoise: end each window with the denoiser (grid predictors). eps: the grid's last time.
    window, stride: semi-autoregressive generation when length > window (default: the model's
    config.max_length; stride default window // 2), see sedd.sampling.windows.
    temperature, top_p: shape each step's distribution over the movable positions' targets
    (sedd.sampling.shaping); 1.0 / 1.0 is the exact sampler (nothing is touched).
    stop_at_eos, eos: cut each sequence after its first generated `eos` token; in
    semi-autoregressive mode, stop once every sequence has one (the rest is not generated).
    cache: the exact per-sequence cache of a time-independent model (sedd.sampling.network).
    use_reference: the steps of the plain-PyTorch sedd_kernels.reference ops (dense over
    [B, L, V]) instead of the fused kernels (absorbing and uniform graphs).
    compile: torch.compile the model's sampling entry in place first (sedd.nn.compile_model).
    cuda_graph: capture one predictor step (network + fused step) in a CUDA graph per window and
    replay it (sedd.sampling.capture): same tokens as without for the same generator state;
    needs CUDA, the fused steps without temperature/top-p, a grid predictor and no exact cache.
    block_length, kv_cache, refresh: sub-blocks of a window denoised left to right, and
    Fast-dLLM's dual cache over them (sedd.sampling.dual_cache).
    all_rows: compute the output projection at every position, not only at the rows a step can
    move or a predictor reads (sedd.sampling.mover); for comparisons (the same samples up to the
    last bit of the projection's rounding)."""

    steps: int
    predictor: str = "analytic"
    denoise: bool = True
    eps: float = 1e-5
    cache: bool = True
    use_reference: bool = False
    window: int | None = None
    stride: int | None = None
    tokens_per_step: int | None = None
    threshold: float | None = None
    rank_by: str | None = None
    greedy: bool = False
    remask: str | None = None
    eta: float | None = None
    loop: tuple | None = None
    block_length: int | None = None
    kv_cache: str | None = None
    refresh: int | None = None
    temperature: float = 1.0
    top_p: float = 1.0
    stop_at_eos: bool = False
    eos: int | None = None
    compile: bool = False
    cuda_graph: bool = False
    all_rows: bool = False
    # resolved by check()
    generator: torch.Generator | None = None
    device: torch.device | None = None
    progress: object = None
    shaping: Shaping = field(default=None, repr=False)
    pred: Predictor = field(default=None, repr=False)

    @classmethod
    def names(cls) -> set[str]:
        """The settings a caller may give (sample()'s keywords)."""
        return {f.name for f in fields(cls)} - {"generator", "device", "progress", "shaping",
                                                  "pred"}

    def check(self, model, graph, num_samples: int, length: int) -> "Settings":
        """Every precondition of a sample() call, checked once; fills the resolved fields."""
        pred = self.pred = get_predictor(self.predictor)
        pred.check_graph(graph)
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if length < 1 or num_samples < 1:
            raise ValueError(f"length and num_samples must be >= 1, got {length}, {num_samples}")
        if self.tokens_per_step is not None and self.tokens_per_step < 1:
            raise ValueError(f"tokens_per_step must be >= 1, got {self.tokens_per_step}")
        self._check_predictor_settings(pred)
        self.shaping = Shaping(self.temperature, self.top_p)
        if self.stop_at_eos and (self.eos is None or not 0 <= int(self.eos) < graph.n):
            raise ValueError(f"stop_at_eos needs eos, a token id in [0, {graph.n}), got {self.eos}")
        time_independent = bool(getattr(model, "time_independent", False))
        if time_independent and not graph.supports_clean:
            raise ValueError(f"a time-independent ('clean') model needs the absorbing graph, got "
                             f"{graph.name!r}")
        check_dual(model, self.kv_cache, self.block_length, self.refresh)
        if self.kv_cache == "dual" and self.block_length is None:
            self.block_length = 32                      # Fast-dLLM's default block
        self.cache = bool(self.cache and time_independent and self.kv_cache != "dual")
        if self.use_reference and not graph.fused:
            raise ValueError(f"use_reference needs the absorbing or uniform graph, got "
                             f"{graph.name!r}")
        self._check_window(model, length)
        self.device = torch.device(self.device) if self.device is not None else model_device(model)
        if self.cuda_graph:
            self._check_capture(model, graph)
        return self

    def _check_predictor_settings(self, pred):
        """The settings only some predictors read: given to another, an error naming the readers
        (sedd.sampling.predictors: `reads`); then their values."""
        for name in PREDICTOR_SETTINGS:
            if getattr(self, name) not in (None, False) and name not in pred.reads:
                takers = [p for p, q in PREDICTORS.items() if name in q.reads]
                raise ValueError(f"{name} applies to predictor {' or '.join(map(repr, takers))}, "
                                 f"not {self.predictor!r}")
        if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")
        if self.threshold is not None and self.tokens_per_step is not None:
            raise ValueError("threshold and tokens_per_step are two rules for how many positions "
                             "a call unmasks: give one")
        if "rank_by" in pred.reads:
            self.rank_by = self.rank_by or "top"
            if self.rank_by not in RANK_BY:
                raise ValueError(f"rank_by must be one of {', '.join(RANK_BY)}, "
                                 f"got {self.rank_by!r}")
        if "remask" in pred.reads:
            self.remask = self.remask or "loop"
            check_remdm(self.remask, self.eta, self.loop)

    def _check_window(self, model, length):
        own = model_window(model)
        if self.window is not None and self.window < 1:
            raise ValueError(f"window must be >= 1, got {self.window}")
        if self.window is not None and own is not None and self.window > own:
            raise ValueError(f"window {self.window} (--window) is longer than the model's window "
                             f"{own}")
        W = self.window if self.window is not None else own
        self.window = length if W is None or W >= length else int(W)
        self.stride = max(1, self.window // 2) if self.stride is None else int(self.stride)
        if not 1 <= self.stride <= self.window:
            raise ValueError(f"stride must be in [1, window = {self.window}], got {self.stride}"
                             + (" (--stride is longer than the window)"
                                if self.stride > self.window else ""))

    def _check_capture(self, model, graph):
        if self.block_length is not None:
            raise ValueError("cuda_graph=True does not apply with block_length (sub-blocks)")
        if not self.pred.capturable:
            raise ValueError(f"cuda_graph=True applies to the grid predictors, not "
                             f"{self.predictor!r}")
        if (self.device.type != "cuda" or self.use_reference or not graph.fused
                or not self.shaping.identity or self.cache):
            raise ValueError("cuda_graph=True (--cuda-graph) needs a CUDA model (--device cuda), "
                             "the fused steps (no use_reference, temperature or top-p) and no "
                             "exact cache (cache=False for a clean model: --no-cache)")
        if not self.pred.folds(model, graph, self):
            raise ValueError("cuda_graph=True needs a model with log_score_parts (the DDiT)")


# the settings only some predictors read (each predictor's `reads` names its own)
PREDICTOR_SETTINGS = ("tokens_per_step", "threshold", "rank_by", "greedy", "remask", "eta", "loop")


def run_window(net, graph, noise, x, frozen, s):
    """The predictor over one window x [B, W] — whole, or one sub-block of s.block_length at a
    time (the rest frozen, ⌈steps·K/W⌉ steps each) through the dual cache with s.kv_cache
    "dual" (sedd.sampling.dual_cache): (x, evaluations)."""
    W = x.shape[1]
    K = s.block_length
    if K is None or (K >= W and s.kv_cache != "dual"):
        return s.pred.run(net, graph, noise, x, frozen, s)
    sub = dataclasses.replace(s, steps=max(1, -(-s.steps * K // W)))
    evaluations = 0
    for lo in range(0, W, K):
        hi = min(lo + K, W)
        outside = torch.ones_like(x, dtype=torch.bool)
        outside[:, lo:hi] = False
        f = outside if frozen is None else outside | frozen
        dual = s.kv_cache == "dual"
        with net.using(DualCache(net.model, lo, hi, True, s.refresh)) if dual \
                else contextlib.nullcontext():
            x, ev = s.pred.run(net, graph, noise, x, f, sub)
        evaluations += ev
    return x, evaluations


@contextlib.contextmanager
def _eval_mode(model):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@torch.no_grad()
def sample(model, graph, noise, num_samples: int, length: int, steps: int,
           predictor: str = "analytic", denoise: bool = True, condition=None,
           generator: torch.Generator | None = None, eps: float = 1e-5, device=None,
           progress: bool = False, cache: bool = True, use_reference: bool = False,
           return_stats: bool = False, **settings):
    """Draw `num_samples` sequences of `length` tokens: the tokens [num_samples, length] (with
    stop_at_eos a list of 1-D tensors cut after their first EOS), or (that, SampleStats) with
    return_stats=True. condition: None, or (tokens [num_samples or 1, length] int64, given
    [.., length] bool): the given positions are kept through every step (prefix, suffix,
    infilling: any pattern). The other keywords are `Settings` (window, stride, tokens_per_step,
    temperature, top_p, stop_at_eos, eos, compile, cuda_graph)."""
    unknown = sorted(set(settings) - Settings.names())
    if unknown:
        raise TypeError(f"sample() got unexpected keyword argument(s) {', '.join(unknown)}")
    s = Settings(steps, predictor, denoise, eps, cache, use_reference, device=device,
                 **settings).check(model, graph, num_samples, length)
    if s.compile:
        compile_model(model, training=False)
    cond = Condition.of(condition, num_samples, length, graph.n, s.device)
    x = cond.apply(graph.sample_limit(num_samples, length, device=s.device, generator=generator))
    net, s.generator = NetworkView(model, s.cache, s.all_rows), generator
    done = torch.zeros(num_samples, length, dtype=torch.bool, device=s.device)
    evaluations = windows = 0
    bar = tqdm(desc="sampling", leave=False, unit="eval") if progress and tqdm else None
    with _eval_mode(model), (bar if bar is not None else contextlib.nullcontext()):
        s.progress = bar
        for lo in window_starts(length, s.window, s.stride):
            win = slice(lo, lo + s.window)
            frozen = cond.frozen(done, win, first=windows == 0)
            x[:, win], ev = run_window(net, graph, noise, x[:, win].contiguous(), frozen, s)
            done[:, win] = True
            evaluations, windows = evaluations + ev, windows + 1
            if s.stop_at_eos and lo + s.window < length and all_ended(x, s.eos, cond.given, done):
                break                           # every sequence has ended: stop generating
    x = cond.apply(x)
    stats = SampleStats(evaluations, net.calls, net.use_cache, net.sequences, net.positions, windows)
    if s.stop_at_eos:
        x, stats.lengths, stats.ended = cut_at_eos(x, s.eos, cond.given, done)
    return (x, stats) if return_stats else x
