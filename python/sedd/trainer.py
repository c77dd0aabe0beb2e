"""The training loop (SEDD.md §4): AdamW with warm-up, gradient clipping, EMA, gradient
accumulation, bf16 autocast on GPU, periodic eval / samples / checkpoints, exact resume, and DDP
through torchrun (gloo on CPU, NCCL on GPU).

`Trainer.fit` is the loop; each of its steps is a method here or a unit of its own: the
configuration (sedd.config), where the process runs (sedd.distributed), metrics and sample files
(sedd.metrics), checkpoints that save and restore everything (sedd.checkpoint)."""

from __future__ import annotations

import copy
import math
import os
import signal

import numpy as np
import torch

from .checkpoint import apply_training, read_training, save_training
from .cli import available_memory, gib
from .config import PRESETS, TrainConfig, estimate_memory
from .data import load_corpus
from .distributed import Distributed
from .graphs import get_graph
from .hub import load_pretrained, read_run_config
from .metrics import MetricsLogger, write_samples
from .model import build_model, compile_model
from .noise import get_noise
from .objectives import objective_for

TRAIN_PRESETS = PRESETS        # the presets' one home is sedd.config
__all__ = ["TRAIN_PRESETS", "TrainConfig", "Trainer"]


def _step_seed(seed: int, *parts: int) -> int:
    h = seed & 0xFFFFFFFF
    for p in parts:
        h = (h * 1_000_003 + p + 0x9E3779B9) & 0x7FFFFFFFFFFF
    return h


class _StopOnSignal:
    """SIGTERM / Ctrl-C ask the loop to stop after the current step (then it saves)."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self.old = {s: signal.signal(s, self._handle) for s in (signal.SIGTERM, signal.SIGINT)}
        return self

    def _handle(self, signum, frame):
        self.requested = True

    def __exit__(self, *exc):
        for s, h in self.old.items():
            signal.signal(s, h)


def adamw(params, lr: float) -> torch.optim.Optimizer:
    """AdamW (β = 0.9, 0.999, ε = 1e-8, no weight decay) with torch's fused kernel where the
    parameters' device has one (CPU and CUDA): one vectorised pass over every parameter instead
    of a Python loop of ~10 ops per parameter; else the foreach implementation."""
    params = list(params)
    kw = dict(lr=lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    try:
        return torch.optim.AdamW(params, fused=True, **kw)
    except (RuntimeError, ValueError, TypeError):     # a device or dtype without the fused kernel
        return torch.optim.AdamW(params, foreach=True, **kw)


class Trainer:
    def __init__(self, cfg: TrainConfig):
        cfg.validate()
        self.cfg = cfg
        self.dist = Distributed.setup(cfg.device)
        self.device, self.is_main = self.dist.device, self.dist.is_main
        self.world, self.rank = self.dist.world, self.dist.rank
        torch.manual_seed(cfg.seed)
        init = read_run_config(cfg.init_from) if cfg.init_from else None
        if init is not None:                     # refuse a run that cannot fit, before allocating
            self._check_memory(cfg.model_config(init.V))
        elif cfg.data == "builtin":
            from .language import builtin_language
            self._check_memory(cfg.model_config(cfg.vocab_size(builtin_language().n)))
        self.corpus = load_corpus(cfg.data, cfg.tokenizer, cfg.seq_len, seed=cfg.seed,
                                  cache_dir=cfg.cache_dir)
        tok = self.corpus.tokenizer
        if init is not None:
            init.check_tokenizer(tok, cfg.tokenizer if cfg.data != "builtin" else "builtin")
            self.graph, self.noise = init.build_graph(), init.build_noise()
        elif cfg.model == "ar":
            self.graph = self.noise = None
        else:
            self.graph, self.noise = get_graph(cfg.graph, tok.n), get_noise(cfg.noise)
            if self.graph.V < tok.n:
                raise ValueError(f"--graph {cfg.graph}: Q has {self.graph.V} states but the "
                                 f"tokenizer has {tok.n} tokens")
        self.model_cfg = cfg.model_config(self.graph.V if self.graph is not None else tok.n + 1)
        if cfg.data != "builtin" and init is None:
            self._check_memory(self.model_cfg)
        self.model = build_model(self.model_cfg).to(self.device)
        self.objective = objective_for(self.model, self.graph, self.noise,
                                       use_reference=cfg.reference_loss,
                                       fused_linear=cfg.fused_linear)
        if init is not None and not cfg.resume:
            p = load_pretrained(cfg.init_from, use_ema=cfg.init_weights == "ema")
            self.model.load_state_dict(p.model.state_dict(), strict=True)
            if self.is_main:
                print(f"initialised from {p.path} ({p.weights} weights, {init.layout} layout)")
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False)
        if cfg.compile:
            compile_model(self.model, training=True)   # after the EMA copy: that stays eager
        self.opt = adamw(self.model.parameters(), cfg.lr)
        self.step = 0
        self.ckpt_root = os.path.join(cfg.out, "checkpoints")
        if cfg.resume:
            self._resume()
        self.wrapped = self.dist.wrap(self.model, cfg.fsdp)
        self.autocast = self.device.type == "cuda"

    def _check_memory(self, model_cfg):
        cfg = self.cfg
        parts = estimate_memory(cfg, model_cfg, str(self.device))
        total, have = sum(parts.values()), available_memory(str(self.device))
        if total > 0.9 * have:
            detail = ", ".join(f"{k} {gib(v)}" for k, v in parts.items())
            raise ValueError(f"--batch-size {cfg.batch_size} x --seq-len {cfg.seq_len} would need "
                             f"about {gib(total)} ({detail}), more than the {gib(have)} available "
                             f"on {self.device}; lower --seq-len or --batch-size (or raise --accum)")

    # ---- checkpoints
    def config_dict(self) -> dict:
        """What the checkpoint's config.json holds (sedd.runconfig.RunConfig reads it back)."""
        if self.graph is None:          # the autoregressive baseline: no graph, no noise
            return {"train": dict(vars(self.cfg)), "model": self.model_cfg.to_dict(), "graph": None,
                    "n": self.model_cfg.vocab_size - 1, "noise": {}, "data": self.cfg.data}
        return {"train": {k: v for k, v in vars(self.cfg).items()},
                "model": self.model_cfg.to_dict(), "graph": self.graph.spec, "n": self.graph.n,
                "noise": {"name": self.noise.name, **vars(self.noise)}, "data": self.cfg.data}

    def save(self):
        if self.is_main:
            return save_training(self.ckpt_root, self.step, self.model, self.ema_model, self.opt,
                                 self.config_dict())
        return None

    def _resume(self):
        weights, ema, state, saved, path = read_training(self.cfg.out, map_location=self.device)
        # Settings that change what the weights mean must match (same shapes would load silently).
        saved_model = (saved or {}).get("model", {})
        defaults = {"parametrisation": "score", "arch": "ddit"}
        for key in ("arch", "parametrisation", "scale_by_sigma", "vocab_size", "hidden_size",
                    "n_blocks", "n_heads", "cond_dim"):
            was, now = saved_model.get(key, defaults.get(key)), getattr(self.model_cfg, key)
            if was is not None and was != now:
                raise ValueError(f"--resume: the checkpoint {path} was trained with {key} = "
                                 f"{was!r}, this run has {now!r}")
        spec = self.graph.spec if self.graph is not None else None
        if (saved or {}).get("graph", spec) != spec:
            raise ValueError(f"--resume: the checkpoint {path} was trained with --graph "
                             f"{saved['graph']!r}, this run has {self.graph.spec!r}")
        self.step = apply_training(self.model, self.ema_model, self.opt, weights, ema, state)
        if self.is_main:
            print(f"resumed from {path} at step {self.step}")

    # ---- data
    def batch(self, step: int, micro: int) -> torch.Tensor:
        """The rank's micro-batch of a step: a permutation per epoch, deterministic in the seed,
        so that the data position is the step count (exact resume, disjoint ranks)."""
        cfg, data = self.cfg, self.corpus.train
        start = (step * cfg.accum + micro) * cfg.batch_size * self.world + self.rank * cfg.batch_size
        N = len(data)
        idx = []
        for g in range(start, start + cfg.batch_size):
            epoch, pos = divmod(g, N)
            idx.append(int(self._perm(epoch, N)[pos]))
        x0 = torch.stack([data[i] for i in idx])
        # checked here on the host, so the loss kernels need not read it back from the device
        n = self.corpus.tokenizer.n
        if x0.numel() and (int(x0.min()) < 0 or int(x0.max()) >= n):
            raise ValueError(f"training data: token ids must be in [0, {n}), got "
                             f"[{int(x0.min())}, {int(x0.max())}] in the batch of step {step}")
        return x0.to(self.device, non_blocking=True)

    def _perm(self, epoch, N):
        cache = getattr(self, "_perm_cache", None)
        if cache is None or cache[0] != epoch:
            g = torch.Generator().manual_seed(_step_seed(self.cfg.seed, 7, epoch))
            self._perm_cache = (epoch, torch.randperm(N, generator=g))
        return self._perm_cache[1]

    # ---- the pieces of one optimizer step
    def lr_at(self, step):
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup))

    def set_lr(self) -> float:
        lr = self.lr_at(self.step)
        for group in self.opt.param_groups:
            group["lr"] = lr
        return lr

    def forward_backward(self) -> torch.Tensor:
        """Σ over the micro-batches of loss/accum, gradients accumulated; the loss stays on the
        device (read at log time)."""
        cfg = self.cfg
        self.wrapped.train()
        total = torch.zeros((), device=self.device)
        for micro in range(cfg.accum):
            seed = _step_seed(cfg.seed, self.step, micro, self.rank)
            torch.manual_seed(seed)                      # dropout: a function of the step
            gen = torch.Generator().manual_seed(seed)
            x0 = self.batch(self.step, micro)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                enabled=self.autocast):
                loss = self.objective.loss(self.wrapped, x0, gen, scale=1.0 / cfg.accum)
            loss.backward()
            total += loss.detach().float()
        return total

    def clip(self) -> torch.Tensor:
        """The gradient norm, clipped to --grad-clip: one foreach norm and one foreach scale over
        all gradients (no per-parameter loop), the norm left on the device."""
        return torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip,
                                              foreach=True)

    def optimizer_step(self):
        """AdamW, then the EMA; the step count moves on."""
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema_model.parameters()),
                                 [p.detach() for p in self.model.parameters()], 1.0 - self.cfg.ema)
        self.step += 1

    def train_step(self):
        """One optimizer step: (loss, gradient norm) as device tensors."""
        self.set_lr()
        loss = self.forward_backward()
        grad_norm = self.clip()
        self.optimizer_step()
        return loss, grad_norm

    def due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.cfg.steps

    @torch.no_grad()
    def eval_loss(self) -> float:
        cfg, data = self.cfg, self.corpus.valid
        losses = []
        for b in range(cfg.eval_batches):
            lo = b * cfg.batch_size
            if lo >= len(data):
                break
            x0 = torch.stack([data[i] for i in range(lo, min(lo + cfg.batch_size, len(data)))])
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed, 99, b))
            losses.append(self.objective.eval_loss(self.ema_model, x0.to(self.device), gen).item())
        return sum(losses) / max(1, len(losses))

    def samples(self, num=4, steps=None):
        gen = torch.Generator(device=self.device).manual_seed(_step_seed(self.cfg.seed, 5, self.step))
        x = self.objective.sample(self.ema_model, num, self.cfg.seq_len,
                                  steps or self.cfg.sample_steps, gen, self.device)
        return x, [self.corpus.tokenizer.decode(row.tolist()) for row in x.cpu()]

    # ---- the loop
    def fit(self):
        cfg = self.cfg
        os.makedirs(cfg.out, exist_ok=True)
        if self.is_main:
            print(f"model: {self.model.num_parameters():,} non-embedding parameters, "
                  f"V = {self.model_cfg.vocab_size}, {self.objective.describe()}, "
                  f"device {self.device}, world {self.world}")
        tokens_per_step = cfg.batch_size * cfg.accum * cfg.seq_len * self.world
        log = MetricsLogger(cfg.out, enabled=self.is_main, total_steps=cfg.steps,
                            start_step=self.step, tokens_per_step=tokens_per_step,
                            progress=cfg.progress)
        with log, _StopOnSignal() as stop:
            while self.step < cfg.steps and not stop.requested:
                lr = self.set_lr()                                  # lr
                loss = self.forward_backward()                      # forward / backward
                grad_norm = self.clip()                             # clip
                self.optimizer_step()                               # step (+ EMA)
                eval_loss = self.eval_loss() if self.due(cfg.eval_every) else ""     # eval
                if self.due(cfg.log_every) or eval_loss != "":      # log (reads the device)
                    loss_value = float(loss)
                    if not math.isfinite(loss_value):
                        raise FloatingPointError(f"loss became {loss_value} at step {self.step}")
                    log.log(self.step, loss_value, eval_loss, lr, float(grad_norm))
                log.advance()
                if self.is_main and self.step % cfg.sample_every == 0:              # sample
                    write_samples(cfg.out, self.step, self.samples()[1])
                if self.step % cfg.save_every == 0:                 # save
                    self.save()
            self.save()
        if stop.requested:
            if self.is_main:
                print(f"\nstopped at step {self.step}; checkpoint saved in {self.ckpt_root}")
            return
        if self.is_main:
            log.plot()
            if cfg.final_report:
                self.report()

    def report(self, num_samples=4, bound_sequences=128, timesteps=32):
        """Samples, and on the built-in corpus the likelihood bound vs the exact entropy."""
        x, texts = self.samples(num_samples)
        print("\nsamples:")
        for t in texts:
            print("  " + t)
        lang = self.corpus.language
        if lang is None:
            return
        L = self.cfg.seq_len
        nll_samples = -lang.log_likelihood(x.cpu().numpy()) / L
        valid = np.isfinite(nll_samples)
        data = self.corpus.valid
        x0 = torch.stack([data[i] for i in range(min(bound_sequences, len(data)))]).to(self.device)
        bound, prior = self.objective.nll(self.ema_model, x0,
                                          torch.Generator().manual_seed(_step_seed(self.cfg.seed, 11)),
                                          timesteps)
        exact = -lang.log_likelihood(x0.cpu().numpy())
        per_tok = bound.mean().item() / L
        # the spread of the per-sequence estimates already holds their timestep noise
        stderr = bound.std().item() / math.sqrt(len(bound)) / L
        if self.objective.exact_likelihood:
            print(f"\nheld-out NLL under the model (exact, autoregressive): {per_tok:.4f} ± "
                  f"{stderr:.4f} nats/token")
        else:
            print(f"\nheld-out likelihood bound: {per_tok:.4f} ± {stderr:.4f} nats/token "
                  f"(prior term {prior.mean().item() / L:.4f}; {timesteps} stratified timesteps)")
        print(f"NLL of the same sequences under the true language: {exact.mean() / L:.4f} nats/token "
              f"(the language's entropy rate at L = {L}: {lang.entropy_rate(L)[0]:.4f})")
        print(f"gap: {per_tok - exact.mean() / L:.4f} nats/token")
        print(f"samples with positive probability under the true language: {valid.sum()}/"
              f"{len(valid)}" + (f"; their exact NLL: {nll_samples[valid].mean():.3f} nats/token"
                                 if valid.any() else ""))
