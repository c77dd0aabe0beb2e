"""The sampler: reverse sampling (SEDD.md §6) on the fused step kernels, with a predictor of the
registry (sedd.predictors: Euler, analytic over the time grid t_k = 1 − kΔt, then the denoiser;
first-hitting, sedd.first_hitting, with its own exact event times); given positions stay fixed
through every step. Longer than the model's window, it generates semi-autoregressively; it can
stop at an end-of-sequence token, and shape each step's distribution (temperature, top-p).

Semi-autoregressive windows (MDLM's stride scheme). For `length` N above the window W (the
model's config.max_length, or window=), the sampler denoises the window [0, W), slides by
`stride` (default W // 2), and denoises [s, s + W) with every token it has already generated
frozen as context (the first W − stride positions), and so on; the last window ends at N. A
given position (prefix, suffix, infill) is frozen in whichever window it falls. Each window
runs the whole predictor (`steps` each). N ≤ W: one window, exactly as before.

The exact cache (absorbing graph, time-independent "clean" model, see DDiT.clean_log_probs): such
a network's output depends on x alone, and the log-scores at noise σ are that output plus the
analytic shift −log expm1(σ). The sampler keeps the last output *per sequence*: a step
re-evaluates only the sequences whose tokens changed since their last evaluation (a sub-batch),
and reuses the held rows of the others (recomputing only the shift). This is exact, not an
approximation — a reused row is the output the network would give for that sequence now — so
the cached sampler is equal in distribution to the uncached one. It is bit-identical when the
network's output for a sequence does not depend on which other sequences share its batch: true
at batch size 1 and at steps where every sequence changed, and on CPU for the DDiT in this project's
tests (checked); a backend that picks its matmul kernel by batch size may round a sub-batch
differently in the last bit, which can change a draw that falls on a boundary (then the samples
differ, still from the same distribution). With the log-linear schedule about B·L/S tokens are
unmasked per grid step, so at S ≫ L most steps change no token of a given sequence: the
sequence evaluations fall to about B·min(L, S) (SampleStats.sequence_evaluations). First-hitting
changes every active sequence at each step: it needs ≤ L evaluations with or without the cache;
the cache skips the sequences that are finished. A σ-conditioned network ("score", the paper's)
is never cached.

Costs: the grid predictors make S + 1 network calls per window (denoiser included), fewer with
the cache; first-hitting ⌈n/k⌉ (n masked positions, k tokens per step) ≤ min(S, n) with the
default k. Every path runs on the fused step kernels; use_reference=True takes the plain-PyTorch
twins (dense [B, L, V]) for comparisons."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .model import compile_model
from .predictors import get_predictor
from .shaping import Shaping

try:
    from tqdm.auto import tqdm
except ImportError:  # tqdm is a `train` extra
    tqdm = None


@dataclass
class SampleStats:
    """What one sample() call did: `evaluations` is the number of network outputs the steps
    consumed (what an uncached sampler computes; grid predictors: steps + 1 per window with the
    denoiser), `network_calls` the forward passes actually made (fewer when the exact cache
    reused outputs), `sequence_evaluations` the sequences those passes ran (B per uncached call;
    the per-sequence cache runs only the changed ones), `windows` the semi-autoregressive windows
    and, with stop_at_eos, `lengths` and `ended` (whether the sequence produced its EOS)."""

    evaluations: int
    network_calls: int
    cached: bool
    sequence_evaluations: int = 0
    windows: int = 1
    lengths: list = field(default_factory=list)
    ended: list = field(default_factory=list)

    @property
    def reused(self) -> int:
        return self.evaluations - self.network_calls


class _Network:
    """The network as the steps see it: log-scores of x [B, W] at σ [B], through the exact
    per-sequence cache for a time-independent model, counting calls and sequences."""

    def __init__(self, model, use_cache: bool):
        self.model, self.use_cache = model, use_cache
        self.calls = self.sequences = 0
        self.held_x = self.held = None
        self.buffer = None      # step_scores' reused [B, W, V] block

    def _clean(self, x, need=None):
        """The clean log-probs of x [B, W, V]; only the rows of the sequences in `need` [B]
        (default: all) are guaranteed current."""
        B = x.shape[0]
        if self.held is None or self.held_x.shape != x.shape:
            idx = None
        else:
            changed = (self.held_x != x).any(1)
            if need is not None:
                changed &= need
            idx = changed.nonzero().squeeze(1)
            if idx.numel() == 0:
                return self.held
        self.calls += 1
        if idx is None or idx.numel() == B:
            self.sequences += B
            self.held_x, self.held = x.clone(), self.model.clean_log_probs(x)
        else:
            self.sequences += idx.numel()
            sub = x.index_select(0, idx)
            self.held.index_copy_(0, idx, self.model.clean_log_probs(sub))
            self.held_x.index_copy_(0, idx, sub)
        return self.held

    def log_score(self, x, sigma):
        """[B, W, V] log-scores (a new tensor: the steps and shaping may write into it)."""
        if not self.use_cache:
            self.calls += 1
            self.sequences += x.shape[0]
            return self.model(x, sigma)
        return self.model.log_score_from_clean(self._clean(x), x, sigma)

    def step_scores(self, x, sigma, count=True):
        """(prod, parts) with log-scores = (prod + parts["bias"]) + parts["shift"] and the current
        token's entry ignored — what the fused steps read (model.log_score_parts): the
        [B, W, V] block is written once, by the network's product, and read once, by the step.
        Read-only (it may be the cache's own tensor, or the block the next call writes into)."""
        if not self.use_cache:
            if count:
                self.calls += 1
                self.sequences += x.shape[0]
            # the previous step's block is free again (its step has run): write into it
            reuse = self.buffer if self.buffer is not None and self.buffer.shape[:2] == x.shape \
                else None
            out, bias, shift = self.model.log_score_parts(x, sigma, out=reuse)
            self.buffer = out
            return out, {"bias": bias, "shift": shift}
        return self._clean(x), {"shift": self.model.log_score_offset(sigma.float())}

    def rows(self, x, sigma, pos, need=None):
        """The log-score rows [B, K, V] at positions pos [B, K] (contiguous, writable); with the
        cache, the rows of sequences outside `need` [B] may be stale (the caller ignores them)."""
        if self.use_cache:
            lp = self._clean(x, need)
            lp = lp.gather(1, pos[..., None].expand(-1, -1, lp.shape[-1]))
            return self.model.log_score_from_clean(lp, x.gather(1, pos), sigma)
        ls = self.log_score(x, sigma)
        return ls.gather(1, pos[..., None].expand(-1, -1, ls.shape[-1]))


def _model_device(model):
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def model_window(model) -> int | None:
    """The longest sequence the model was built for (config.max_length), or None."""
    return getattr(getattr(model, "config", None), "max_length", None)


class _CapturedStep:
    """One predictor step — network + fused step kernel — captured once in a CUDA graph and
    replayed with new σ, δσ and x written into its static inputs (no host sync, no launch
    overhead). The kernels read their Philox seed/offset from a tensor drawn by torch's own
    random op, so every replay draws fresh numbers, the same ones the uncaptured step would draw
    from the same generator state. The warm-up before the capture runs on copies and gives the
    generator its state back."""

    def __init__(self, net, graph, pred, x, frozen, generator):
        self.net, self.graph, self.pred, self.frozen = net, graph, pred, frozen
        self.generator = generator
        self.x = x.clone()
        self.sigma = torch.zeros(x.shape[0], device=x.device)
        self.dsigma = torch.zeros(x.shape[0], device=x.device)
        gen = generator or torch.cuda.default_generators[x.device.index or 0]
        state = gen.get_state()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(2):
                self._run()
        torch.cuda.current_stream(x.device).wait_stream(side)
        gen.set_state(state)
        self.cuda_graph = torch.cuda.CUDAGraph()
        if generator is not None:
            if not hasattr(self.cuda_graph, "register_generator_state"):
                raise ValueError(f"cuda_graph=True with a generator needs torch >= 2.5 "
                                 f"(CUDAGraph.register_generator_state); torch "
                                 f"{torch.__version__} can capture the default generator only")
            self.cuda_graph.register_generator_state(generator)
        with torch.cuda.graph(self.cuda_graph):
            self.out = self._run()

    def _run(self):
        log_score, parts = self.net.step_scores(self.x, self.sigma, count=False)
        return self.pred.step(self.graph, log_score, self.x, self.dsigma, self.generator,
                              self.frozen, False, validate=False, **parts)

    def __call__(self, x, sigma, dsigma):
        self.x.copy_(x)
        self.sigma.fill_(sigma)
        self.dsigma.fill_(dsigma)
        self.cuda_graph.replay()
        self.net.calls += 1
        self.net.sequences += x.shape[0]
        return self.out.clone()


def _grid_window(net, graph, noise, pred, x, frozen, *, steps, denoise, eps, generator,
                 use_reference, shaping, progress, cuda_graph=False):
    """The grid predictors over one window: `steps` predictor steps, then the denoiser."""
    B, dev = x.shape[0], x.device

    def per_sequence(v):
        return torch.full((B,), float(v), device=dev)

    # The fused steps add the projection's bias and the network's σ offset and ignore the
    # current token's entry themselves: hand them the bare product (model.log_score_parts)
    # unless something must first rewrite the log-scores (temperature / top-p) or the steps are
    # the dense reference ops. The sampler builds x and dsigma itself: the kernels' host checks
    # (a device sync each on CUDA) are skipped.
    fold = (shaping.identity and not use_reference and graph.fused
            and hasattr(net.model, "log_score_parts")
            and getattr(pred.step, "takes_parts", False))

    def scores_at(x, sigma):
        if fold:
            log_score, parts = net.step_scores(x, per_sequence(sigma))
            return log_score, dict(parts, validate=False)
        return shaping.scores(net.log_score(x, per_sequence(sigma)), x, graph), {}

    captured = None
    if cuda_graph:                      # sample() checked the rest; the model must split itself
        if not fold:
            raise ValueError("cuda_graph=True needs a model with log_score_parts (the DDiT)")
        captured = _CapturedStep(net, graph, pred, x, frozen, generator)
    dt = (1 - eps) / steps
    grid = torch.linspace(1, eps, steps + 1, dtype=torch.float64)
    for k in range(steps):
        t = grid[k]
        if captured is not None:
            x = captured(x, float(noise.total(t)), float(pred.dsigma(noise, t, grid[k + 1], dt)))
        else:
            log_score, parts = scores_at(x, noise.total(t))
            dsigma = per_sequence(pred.dsigma(noise, t, grid[k + 1], dt))
            x = pred.step(graph, log_score, x, dsigma, generator, frozen, use_reference, **parts)
        if progress is not None:
            progress.update(1)
    if denoise:
        sigma = float(noise.total(grid[-1]))
        log_score, parts = scores_at(x, sigma)
        x = graph.step("denoise", log_score, x, per_sequence(sigma), generator, frozen,
                       use_reference=use_reference, **parts)
    return x, steps + int(denoise)


def _first_eos(x, eos, given, done):
    """Per sequence: the index just after the first generated EOS, or −1 (none)."""
    hit = (x == eos) & done
    if given is not None:
        hit &= ~given
    any_hit = hit.any(1)
    first = hit.int().argmax(1)
    return torch.where(any_hit, first + 1, torch.full_like(first, -1))


@torch.no_grad()
def sample(model, graph, noise, num_samples: int, length: int, steps: int,
           predictor: str = "analytic", denoise: bool = True, condition=None,
           generator: torch.Generator | None = None, eps: float = 1e-5, device=None,
           progress: bool = False, cache: bool = True, use_reference: bool = False,
           return_stats: bool = False, *, window: int | None = None, stride: int | None = None,
           tokens_per_step: int | None = None, temperature: float = 1.0, top_p: float = 1.0,
           stop_at_eos: bool = False, eos: int | None = None, compile: bool = False,
           cuda_graph: bool = False):
    """Draw `num_samples` sequences of `length` tokens; returns the tokens [num_samples, length]
    (with stop_at_eos, a list of 1-D tensors cut after their first EOS), or (that,
    SampleStats) with return_stats=True.

    steps: predictor steps per window (grid predictors), or the cap on evaluations per window
    (first_hitting: ⌈masked/steps⌉ tokens per evaluation; tokens_per_step overrides it).
    condition: None, or (tokens [num_samples or 1, length] int64, given [.., length] bool): the
    given positions are written into x before every step and after the last, and frozen in the
    kernels (prefix, suffix, infilling: any pattern).
    window, stride: semi-autoregressive generation when length > window (default: the model's
    config.max_length; stride default window // 2), see the module docstring.
    temperature, top_p: shape each step's distribution over the movable positions' targets
    (sedd.shaping); 1.0 / 1.0 is the exact sampler (nothing is touched).
    stop_at_eos, eos: cut each sequence after its first generated `eos` token; in
    semi-autoregressive mode, stop once every sequence has one (the rest is not generated).
    cache: the exact per-sequence cache of a time-independent model (module docstring).
    use_reference: take the steps from the plain-PyTorch sedd_kernels.reference ops (dense over
    [B, L, V]) instead of the fused kernels (absorbing and uniform graphs).
    compile: torch.compile the model's trunk in place first (sedd.model.compile_model; fullgraph,
    one compilation per window shape).
    cuda_graph: capture one predictor step (network + fused step) in a CUDA graph per window and
    replay it (_CapturedStep): same tokens as without for the same generator state; needs CUDA,
    the fused steps without temperature/top-p, a grid predictor and no exact cache."""
    pred = get_predictor(predictor)
    pred.check_graph(graph)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if length < 1 or num_samples < 1:
        raise ValueError(f"length and num_samples must be >= 1, got {length}, {num_samples}")
    if tokens_per_step is not None and tokens_per_step < 1:
        raise ValueError(f"tokens_per_step must be >= 1, got {tokens_per_step}")
    if cuda_graph and pred.loop is not None:
        raise ValueError(f"cuda_graph=True applies to the grid predictors, not {predictor!r}")
    if tokens_per_step is not None and pred.loop is None:
        raise ValueError(f"tokens_per_step applies to predictor 'first_hitting', not {predictor!r}")
    shaping = Shaping(temperature, top_p)
    if stop_at_eos and (eos is None or not 0 <= int(eos) < graph.n):
        raise ValueError(f"stop_at_eos needs eos, a token id in [0, {graph.n}), got {eos}")
    time_independent = bool(getattr(model, "time_independent", False))
    if time_independent and not graph.supports_clean:
        raise ValueError(f"a time-independent ('clean') model needs the absorbing graph, got "
                         f"{graph.name!r}")
    if use_reference and not graph.fused:
        raise ValueError(f"use_reference needs the absorbing or uniform graph, got {graph.name!r}")
    W = window if window is not None else model_window(model)
    W = length if W is None or W >= length else int(W)
    if W < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    stride = max(1, W // 2) if stride is None else int(stride)
    if not 1 <= stride <= W:
        raise ValueError(f"stride must be in [1, window = {W}], got {stride}")

    device = device or _model_device(model)
    if cuda_graph and (torch.device(device).type != "cuda" or use_reference or not graph.fused
                       or not shaping.identity or (cache and time_independent)):
        raise ValueError("cuda_graph=True needs a CUDA model, the fused steps (no use_reference, "
                         "temperature or top-p) and no exact cache (cache=False for a clean model)")
    if compile:
        compile_model(model, training=False)
    x = graph.sample_limit(num_samples, length, device=device, generator=generator)
    given = tokens = None
    if condition is not None:
        tokens, given = condition
        tokens = tokens.to(device).expand(num_samples, length)
        given = given.to(device).expand(num_samples, length).contiguous()
        if given.dtype != torch.bool:
            raise ValueError(f"condition: given must be a bool tensor, got {given.dtype}")
        if bool(((tokens < 0) | (tokens >= graph.n))[given].any()):   # once per call: the steps
            raise ValueError(f"condition: given tokens must be in [0, {graph.n})")  # skip checks
        x = torch.where(given, tokens, x)

    net = _Network(model, cache and time_independent)
    bar = tqdm(desc="sampling", leave=False, unit="eval") if progress and tqdm is not None else None
    run = {"steps": steps, "eps": eps, "generator": generator, "use_reference": use_reference,
           "shaping": shaping, "progress": bar}
    evaluations = windows = 0
    done = torch.zeros(num_samples, length, dtype=torch.bool, device=device)
    model_was_training = model.training
    model.eval()
    try:
        for lo in window_starts(length, W, stride):
            win = slice(lo, lo + W)
            frozen = done[:, win] if given is None else done[:, win] | given[:, win]
            if given is None and windows == 0:
                frozen = None                       # nothing frozen: the kernels' fast path
            xw = x[:, win].contiguous()
            if pred.loop is not None:
                xw, ev = pred.loop(net, graph, noise, xw, frozen, tokens_per_step=tokens_per_step,
                                   **run)
            else:
                xw, ev = _grid_window(net, graph, noise, pred, xw, frozen, denoise=denoise,
                                      cuda_graph=cuda_graph, **run)
            x[:, win] = xw
            done[:, win] = True
            evaluations += ev
            windows += 1
            if stop_at_eos and lo + W < length and bool((_first_eos(x, eos, given, done) > 0).all()):
                break                               # every sequence has ended: stop generating
    finally:
        model.train(model_was_training)
        if bar is not None:
            bar.close()
    if given is not None:
        x = torch.where(given, tokens, x)
    stats = SampleStats(evaluations=evaluations, network_calls=net.calls, cached=net.use_cache,
                        sequence_evaluations=net.sequences, windows=windows)
    if stop_at_eos:
        ends = _first_eos(x, eos, given, done).tolist()
        out = [row[:e] if e > 0 else row for row, e in zip(x, ends)]
        stats.lengths = [len(r) for r in out]
        stats.ended = [e > 0 for e in ends]
        x = out
    if return_stats:
        return x, stats
    return x


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """The first position of each semi-autoregressive window (the last one ends at `length`)."""
    if length <= window:
        return [0]
    starts, lo = [], 0
    while True:
        lo = min(lo, length - window)
        starts.append(lo)
        if lo + window >= length:
            return starts
        lo += stride
