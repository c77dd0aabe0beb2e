"""The training loop (docs/math.md §4): AdamW with warm-up, gradient clipping, EMA, gradient
accumulation, bf16 autocast on GPU, periodic eval / samples / checkpoints, exact resume, and DDP
through torchrun (gloo on CPU, NCCL on GPU). What is trained, on what loss, is the family's
(sedd.families): the trainer asks it.

`Trainer.fit` is the loop; each of its steps is a method here or a unit of its own: the
configuration (sedd.config), where the process runs (distributed), will it fit (memory), the data
order (batches), metrics and sample files (metrics), checkpoints that save and restore everything
(checkpoints), the final report (report)."""

from __future__ import annotations

import copy
import math
import os
import signal
import warnings

import torch

from ..config import TrainConfig
from ..core import faults
from ..data.corpora import load_corpus
from ..data.language import builtin_language
from ..families import build_model
from ..loading import load, read_config
from ..nn.layers import compile_model
from .batches import Batches, step_seed
from .checkpoints import (apply_training, check_resume, read_training, run_config, save_sharded,
                          save_training)
from .distributed import Distributed, gather_module
from .memory import check_memory
from .metrics import MetricsLogger, write_samples
from .report import final_report

__all__ = ["TrainConfig", "Trainer", "adamw"]


class _StopOnSignal:
    """SIGTERM / Ctrl-C ask the loop to stop after the current step (then it saves)."""

    def __enter__(self):
        self.requested = False
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


def corpus_of(cfg, dist: Distributed):
    """The run's corpus; rank 0 tokenizes a new one (sedd.data.prepare), then the others read
    its checked token file."""
    if not dist.is_main:
        dist.barrier()                  # rank 0 has built or checked the token file
    corpus = load_corpus(cfg.data, cfg.tokenizer, cfg.seq_len, seed=cfg.seed,
                         cache_dir=cfg.cache_dir, workers=cfg.data_workers,
                         progress=cfg.progress and dist.is_main)
    if dist.is_main:
        dist.barrier()
    return corpus


class Trainer:
    def __init__(self, cfg: TrainConfig):
        cfg.validate()
        self.cfg = cfg
        self.dist = Distributed.setup(cfg.device)
        self.device, self.is_main = self.dist.device, self.dist.is_main
        self.world, self.rank = self.dist.world, self.dist.rank
        self.sharded = self.dist.sharding(cfg.fsdp)
        self.shards = self.world if self.sharded else 1
        torch.manual_seed(cfg.seed)
        init = read_config(cfg.init_from) if cfg.init_from else None
        if init is not None or cfg.data == "builtin":    # refuse a run that cannot fit, early
            V = init.V if init is not None else cfg.vocab_size(builtin_language().n)
            check_memory(cfg, cfg.model_config(V), self.device, self.shards)
        self.corpus = corpus_of(cfg, self.dist)
        tok = self.corpus.tokenizer
        if init is not None:
            init.check_tokenizer(tok, cfg.tokenizer if cfg.data != "builtin" else "builtin")
            self.family = init.family.for_run(init, cfg)
            self.model_cfg = cfg.model_config(init.V)
        else:
            self.family = cfg.family_class().for_config(cfg, tok.n)
            self.model_cfg = cfg.model_config(self.family.network_vocab_size(tok.n))
            if cfg.data != "builtin":
                check_memory(cfg, self.model_cfg, self.device, self.shards)
        self.run = run_config(cfg, self.model_cfg, self.family, tok.n)
        self.model = build_model(self.model_cfg).to(self.device)
        if init is not None and not cfg.resume:
            p = load(cfg.init_from, use_ema=cfg.init_weights == "ema", tokenizer=False)
            self.model.load_state_dict(p.model.state_dict(), strict=True)
            if self.is_main:
                print(f"initialised from {p.path} ({p.weights} weights, {init.layout} layout)")
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False)
        self.wrapped = self.dist.wrap(self.model, self.sharded, ema=self.ema_model)
        if cfg.compile:          # after the EMA copy (that stays eager); FSDP2: block by block
            compile_model(self.model, training=True, blocks=self.sharded)
        self.opt = adamw(self.model.parameters(), cfg.lr)
        self.step, self.saved_step = 0, None
        self.ckpt_root = os.path.join(cfg.out, "checkpoints")
        self.batches = Batches(self.corpus, cfg, self.world, self.rank)
        if cfg.resume:
            self._resume()
        self.autocast = self.device.type == "cuda"

    # the family's process, under the names used before the family seam
    graph, noise = (property(lambda self, k=k: getattr(self.family, k, None))
                    for k in ("graph", "noise"))

    @property
    def objective(self):
        warnings.warn("Trainer.objective is deprecated: use Trainer.family", DeprecationWarning,
                      stacklevel=2)
        return self.family

    # ---- checkpoints
    def save(self):
        """Every rank calls it (sharded: each writes its shard; else rank 0 writes), once per
        step: a checkpoint is never rewritten in place (`latest` may name it)."""
        if self.step != self.saved_step:
            self.saved_step = self.step
            args = (self.ckpt_root, self.step, self.model, self.ema_model, self.opt,
                    self.run.to_dict())
            if self.sharded:
                save_sharded(*args, self.dist)
            elif self.is_main:
                save_training(*args)

    def _resume(self):
        weights, ema, state, saved, path = read_training(
            self.cfg.out, map_location="cpu" if self.sharded else self.device)
        check_resume(saved, self.run, path)
        self.step = self.saved_step = apply_training(self.model, self.ema_model, self.opt, weights,
                                                     ema, state, path, sharded=self.sharded)
        if self.is_main:
            print(f"resumed from {path} at step {self.step}")

    # ---- the pieces of one optimizer step
    def batch(self, step: int, micro: int) -> torch.Tensor:
        """The rank's micro-batch of a step, on the device (training.batches)."""
        return self.batches(step, micro).to(self.device, non_blocking=True)

    def set_lr(self) -> float:
        lr = self.cfg.lr * min(1.0, (self.step + 1) / max(1, self.cfg.warmup))
        for group in self.opt.param_groups:
            group["lr"] = lr
        return lr

    def forward_backward(self) -> torch.Tensor:
        """Σ over the micro-batches of loss/accum, gradients accumulated; the loss stays on the
        device (read at log time)."""
        cfg = self.cfg
        self.wrapped.train()
        total = torch.zeros((), device=self.device)
        for micro in range(cfg.accum):     # the step's micro-batch micro·world + rank (batches)
            seed = step_seed(cfg.seed, self.step, micro * self.world + self.rank)
            torch.manual_seed(seed)                      # dropout: a function of the step
            gen = torch.Generator().manual_seed(seed)
            x0 = self.batch(self.step, micro)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                enabled=self.autocast):
                loss = self.family.loss(self.wrapped, x0, gen, scale=1.0 / cfg.accum)
            loss.backward()
            faults.point("step")
            total += loss.detach().float()
        return total

    def clip(self) -> torch.Tensor:
        """The gradient norm, clipped to --grad-clip: one foreach norm and one foreach scale over
        all gradients (no per-parameter loop), the norm left on the device."""
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip,
                                              foreach=True)
        return norm.full_tensor() if hasattr(norm, "full_tensor") else norm   # FSDP2: a DTensor

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
        losses = []
        for b, x0 in enumerate(self.batches.held_out()):
            gen = torch.Generator().manual_seed(step_seed(self.cfg.seed, 99, b))
            losses.append(self.family.eval_loss(self.ema_model, x0.to(self.device), gen).item())
        return sum(losses) / max(1, len(losses))

    def inference_model(self):
        """The EMA network whole; sharded: gathered on rank 0 (all ranks call it), else None."""
        if not self.sharded:
            return self.ema_model
        return gather_module(self.ema_model, lambda: build_model(self.model_cfg), self.dist)

    def samples(self, num=4, steps=None, model=None):
        gen = torch.Generator(device=self.device).manual_seed(step_seed(self.cfg.seed, 5, self.step))
        x = self.family.preview(model or self.ema_model, num, self.cfg.seq_len,
                                steps or self.cfg.sample_steps, gen, self.device)
        return x, [self.corpus.tokenizer.decode(row.tolist()) for row in x.cpu()]

    # ---- the loop
    def fit(self):
        cfg = self.cfg
        os.makedirs(cfg.out, exist_ok=True)
        if self.is_main:
            print(f"model: {self.model.num_parameters():,} non-embedding parameters, "
                  f"V = {self.model_cfg.vocab_size}, {self.family.describe()}, "
                  f"device {self.device}, world {self.world}")
        log = MetricsLogger(cfg.out, enabled=self.is_main, total_steps=cfg.steps,
                            start_step=self.step, progress=cfg.progress,
                            tokens_per_step=cfg.batch_size * cfg.accum * cfg.seq_len * self.world)
        stopping = False               # what every rank agreed (a signal may reach one only)
        with log, _StopOnSignal() as stop:
            while self.step < cfg.steps and not stopping:
                lr = self.set_lr()                                  # lr
                loss = self.forward_backward()                      # forward / backward
                grad_norm = self.clip()                             # clip
                self.optimizer_step()                               # step (+ EMA)
                eval_loss = self.eval_loss() if self.due(cfg.eval_every) else ""     # eval
                if self.due(cfg.log_every) or eval_loss != "":      # log (reads the device)
                    loss_value = float(self.dist.mean(loss))
                    if not math.isfinite(loss_value):
                        raise FloatingPointError(f"loss became {loss_value} at step {self.step}")
                    log.log(self.step, loss_value, eval_loss, lr, float(grad_norm))
                log.advance()
                if self.step % cfg.sample_every == 0:               # sample
                    model = self.inference_model()
                    if self.is_main:
                        write_samples(cfg.out, self.step, self.samples(model=model)[1])
                if self.step % cfg.save_every == 0:                 # save
                    self.save()
                stopping = self.dist.any(stop.requested)            # one decision for all ranks
            self.save()
        if stopping:                        # every rank says it (each saved its part)
            who = f"rank {self.rank}: " if self.world > 1 else ""
            print(f"\n{who}stopped at step {self.step}; checkpoint saved in {self.ckpt_root}")
            return
        model = self.inference_model() if cfg.final_report else None
        if self.is_main:
            log.plot()
            if cfg.final_report:
                self.report(model=model)

    def report(self, num_samples=4, bound_sequences=128, timesteps=32, model=None):
        """Samples, and on the built-in corpus the likelihood figure vs the exact entropy."""
        final_report(self, num_samples, bound_sequences, timesteps,
                     seed=step_seed(self.cfg.seed, 11), model=model or self.ema_model)
