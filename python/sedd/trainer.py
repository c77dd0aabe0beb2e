"""The training loop (SEDD.md §4): AdamW with warm-up, gradient clipping, EMA, gradient
accumulation, bf16 autocast on GPU, periodic eval / samples / checkpoints, CSV + TensorBoard
metrics, exact resume, and DDP through torchrun (gloo on CPU, NCCL on GPU)."""

from __future__ import annotations

import copy
import csv
import math
import os
import signal
import time
from dataclasses import asdict, dataclass, field, fields

import numpy as np
import torch
import torch.distributed as dist

from .checkpoint import load_checkpoint, save_checkpoint
from .cli import available_memory, check_device, gib
from .data import load_corpus
from .graphs import get_graph
from .hub import load_pretrained, read_run_config
from .losses import batch_loss, likelihood_bound
from .model import PRESETS, DDiT, ModelConfig
from .noise import get_noise
from .sampling import sample

# Trainer defaults per preset; every field can be overridden from the command line.
TRAIN_PRESETS = {
    "tiny": dict(steps=2400, batch_size=32, seq_len=64, lr=2e-3, warmup=100, ema=0.99,
                 eval_every=200, save_every=800, sample_every=800, sample_steps=64),
    "small": dict(steps=400_000, batch_size=512, seq_len=1024, lr=3e-4, warmup=2500, ema=0.9999,
                  eval_every=5000, save_every=10_000, sample_every=10_000, sample_steps=256,
                  data="openwebtext", tokenizer="gpt2"),
    "medium": dict(steps=400_000, batch_size=512, seq_len=1024, lr=3e-4, warmup=2500,
                   ema=0.9999, eval_every=5000, save_every=10_000, sample_every=10_000,
                   sample_steps=256, data="openwebtext", tokenizer="gpt2"),
}


@dataclass
class TrainConfig:
    preset: str = "tiny"
    data: str = "builtin"
    tokenizer: str = "gpt2"
    graph: str = "absorb"
    noise: str = ""                 # default: loglinear (absorb), geometric (uniform)
    steps: int = 2400
    batch_size: int = 32
    seq_len: int = 64
    lr: float = 2e-3
    warmup: int = 100
    grad_clip: float = 1.0
    ema: float = 0.99
    accum: int = 1
    out: str = "runs/sedd"
    resume: bool = False
    device: str = ""                # default: cuda if available, else cpu
    seed: int = 0
    eval_every: int = 200
    eval_batches: int = 4
    save_every: int = 800
    sample_every: int = 800
    sample_steps: int = 64
    log_every: int = 10
    reference_loss: bool = False    # use sedd_kernels.reference.score_entropy (for comparison)
    fused_linear: bool = True       # fuse the output projection into the loss (linear_score_entropy)
    parametrisation: str = "score"  # "clean": time-independent absorbing model (ModelConfig)
    fsdp: bool = False
    hidden_size: int = 0            # 0: the preset's
    n_blocks: int = 0
    n_heads: int = 0
    cond_dim: int = 0
    dropout: float = -1.0
    progress: bool = True
    final_report: bool = True
    init_from: str = ""             # fine-tune: start from this checkpoint's weights (any layout)
    init_weights: str = "ema"       # "ema" or "raw" weights of init_from
    cache_dir: str = ""             # token files and trained tokenizers (default ~/.cache/sedd)
    extra: dict = field(default_factory=dict)

    @classmethod
    def from_preset(cls, preset: str, **overrides):
        if preset not in TRAIN_PRESETS:
            raise ValueError(f"preset must be one of {sorted(TRAIN_PRESETS)}, got {preset!r}")
        values = dict(TRAIN_PRESETS[preset])
        given = {k: v for k, v in overrides.items() if v is not None}
        values.update(given)
        values["preset"] = preset
        if given.get("init_from") and not given.get("resume"):
            values.update(_inherit_from_checkpoint(given["init_from"], given))
        elif given.get("init_from"):
            values.update(_inherit_from_checkpoint(given["init_from"], given, check=False))
        cfg = cls(**{k: v for k, v in values.items() if k in {f.name for f in fields(cls)}})
        cfg.validate()
        return cfg

    def validate(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(f"bad configuration: {msg}")
        need(self.steps >= 1, f"--steps must be >= 1, got {self.steps}")
        need(self.batch_size >= 1, f"--batch-size must be >= 1, got {self.batch_size}")
        need(self.seq_len >= 1, f"--seq-len must be >= 1, got {self.seq_len}")
        need(self.lr > 0 and math.isfinite(self.lr), f"--lr must be > 0, got {self.lr}")
        need(self.accum >= 1, f"--accum must be >= 1, got {self.accum}")
        need(0 <= self.ema < 1, f"--ema must be in [0, 1), got {self.ema}")
        need(self.graph in ("absorb", "uniform") or self.graph.startswith("general:"),
             f"--graph must be absorb, uniform or general:PATH, got {self.graph!r}")
        need(self.noise in ("", "loglinear", "geometric"),
             f"--noise must be loglinear or geometric, got {self.noise!r}")
        need(self.warmup >= 0, f"--warmup must be >= 0, got {self.warmup}")
        need(self.parametrisation in ("score", "clean"),
             f"--parametrisation must be score or clean, got {self.parametrisation!r}")
        need(self.parametrisation == "score" or self.graph == "absorb",
             f"--parametrisation clean needs --graph absorb, got {self.graph!r}")
        for name in ("eval_every", "save_every", "sample_every", "log_every", "sample_steps",
                     "eval_batches"):
            need(getattr(self, name) >= 1, f"--{name.replace('_', '-')} must be >= 1")
        need(self.grad_clip > 0 and math.isfinite(self.grad_clip),
             f"--grad-clip must be > 0, got {self.grad_clip}")
        need(self.init_weights in ("ema", "raw"),
             f"--init-weights must be ema or raw, got {self.init_weights!r}")
        for name in ("hidden_size", "n_blocks", "n_heads", "cond_dim"):
            need(getattr(self, name) >= 0, f"--{name.replace('_', '-')} must be >= 1")
        need(self.dropout < 1, f"--dropout must be in [0, 1), got {self.dropout}")
        if self.preset in PRESETS:
            p = dict(PRESETS[self.preset])
            H = self.hidden_size or p["hidden_size"]
            heads = self.n_heads or p["n_heads"]
            need(H % heads == 0, f"--hidden-size {H} is not divisible by --n-heads {heads}")
            need((H // heads) % 2 == 0, f"the head width --hidden-size / --n-heads = "
                                        f"{H // heads} must be even (rotary positions)")

    def model_config(self, vocab_size: int) -> ModelConfig:
        if self.init_from:
            run = read_run_config(self.init_from)
            m = run.model.to_dict()
            if self.dropout >= 0:
                m["dropout"] = self.dropout
            return ModelConfig(**m)
        p = dict(PRESETS[self.preset])
        for k in ("hidden_size", "n_blocks", "n_heads", "cond_dim"):
            if getattr(self, k) > 0:
                p[k] = getattr(self, k)
        if self.dropout >= 0:
            p["dropout"] = self.dropout
        return ModelConfig(vocab_size=vocab_size, scale_by_sigma=self.graph == "absorb",
                           max_length=self.seq_len, parametrisation=self.parametrisation, **p)


INHERITED = ("graph", "noise", "hidden_size", "n_blocks", "n_heads", "cond_dim", "parametrisation")


def _inherit_from_checkpoint(path: str, given: dict, check: bool = True) -> dict:
    """The TrainConfig fields a fine-tuning run takes from its --init-from checkpoint (graph,
    noise, model shape, tokenizer, training length). A flag the user gave that disagrees is an
    error (dropout and the length may be changed: the length up to the model's window)."""
    run = read_run_config(path)
    m = run.model
    graph = run.graph
    have = {"graph": graph, "noise": run.noise["name"], "hidden_size": m.hidden_size,
            "n_blocks": m.n_blocks, "n_heads": m.n_heads, "cond_dim": m.cond_dim,
            "parametrisation": m.parametrisation}
    if check:
        for k in INHERITED:
            if k in given and given[k] not in ("", 0, -1.0) and given[k] != have[k]:
                raise ValueError(f"--{k.replace('_', '-')} {given[k]} disagrees with the "
                                 f"checkpoint's {have[k]} (--init-from {path}); leave the flag "
                                 f"out to take the checkpoint's")
    out = dict(have)
    out["dropout"] = given.get("dropout", m.dropout)
    out["seq_len"] = given.get("seq_len", run.seq_len or m.max_length)
    if out["seq_len"] > m.max_length:
        raise ValueError(f"--seq-len {out['seq_len']} is longer than the checkpoint's window "
                         f"{m.max_length} (--init-from {path})")
    if "tokenizer" not in given and run.tokenizer != "builtin":
        out["tokenizer"] = run.tokenizer
    if "data" not in given:
        if run.tokenizer != "builtin":
            raise ValueError(f"--init-from {path}: the checkpoint's vocabulary is the {run.tokenizer} "
                             f"tokenizer's ({run.n} tokens); pass --data (a text file or folder, "
                             f"or a datasets name) to fine-tune on")
        out["data"] = "builtin"
    return out


def estimate_memory(cfg: "TrainConfig", model_cfg: ModelConfig, device: str = "cpu") -> dict:
    """A rough upper estimate of a run's memory in bytes, by part: weights with gradients, AdamW
    state and the EMA copy (5 fp32 copies); activations kept for backward (about 20 values per
    token, width and block: bf16 under CUDA autocast, fp32 on the CPU) and the [tokens, V]
    log-score block (a chunk of rows when the projection is fused); the built-in corpus's
    sequences (int64, generated once)."""
    H, C, V, n = model_cfg.hidden_size, model_cfg.cond_dim, model_cfg.vocab_size, model_cfg.n_blocks
    params = 2 * V * H + V + n * (12 * H * H + 6 * H * C + 13 * H) + 2 * H * C + 256 * C + C * C
    tokens = cfg.batch_size * cfg.seq_len
    parts = {"weights, gradients, optimizer, EMA": 20 * params,
             "activations": (2 if str(device).startswith("cuda") else 4) * 20 * tokens * H * n,
             "log-scores": 4 * 3 * V * (min(tokens, 1024) if cfg.fused_linear else tokens)}
    if cfg.data == "builtin":
        parts["built-in corpus"] = 2 * 8 * 21_000 * cfg.seq_len
    return parts


def _step_seed(seed: int, *parts: int) -> int:
    h = seed & 0xFFFFFFFF
    for p in parts:
        h = (h * 1_000_003 + p + 0x9E3779B9) & 0x7FFFFFFFFFFF
    return h


def _builtin_vocab(cfg) -> int:
    from .language import builtin_language
    n = builtin_language().n
    return n + 1 if cfg.graph == "absorb" else n


class Trainer:
    def __init__(self, cfg: TrainConfig):
        cfg.validate()
        self.cfg = cfg
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        dev = check_device(cfg.device or None)
        if dev == "cuda" and self.world > 1:
            dev = f"cuda:{self.local_rank}"
            torch.cuda.set_device(self.local_rank)
        self.device = torch.device(dev)
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.is_main = self.rank == 0
        torch.manual_seed(cfg.seed)
        init = read_run_config(cfg.init_from) if cfg.init_from else None
        # refuse a run that cannot fit before allocating it (V is known up front here)
        if init is not None:
            self._check_memory(cfg.model_config(init.V), cfg)
        elif cfg.data == "builtin":
            self._check_memory(cfg.model_config(_builtin_vocab(cfg)), cfg)
        self.corpus = load_corpus(cfg.data, cfg.tokenizer, cfg.seq_len, seed=cfg.seed,
                                  cache_dir=cfg.cache_dir or None)
        if init is not None:
            init.check_tokenizer(self.corpus.tokenizer, cfg.tokenizer if cfg.data != "builtin"
                                 else "builtin")
            self.graph, self.noise = init.build_graph(), init.build_noise()
            self.graph_spec = init.graph
        else:
            self.graph_spec = cfg.graph
            self.graph = get_graph(cfg.graph, self.corpus.tokenizer.n)
            if self.graph.V < self.corpus.tokenizer.n:
                raise ValueError(f"--graph {cfg.graph}: Q has {self.graph.V} states but the "
                                 f"tokenizer has {self.corpus.tokenizer.n} tokens")
            noise = cfg.noise or ("loglinear" if cfg.graph == "absorb" else "geometric")
            self.noise = get_noise(noise)
        self.model_cfg = cfg.model_config(self.graph.V)
        if cfg.data != "builtin" and init is None:
            self._check_memory(self.model_cfg, cfg)
        self.model = DDiT(self.model_cfg).to(self.device)
        if init is not None and not cfg.resume:
            p = load_pretrained(cfg.init_from, use_ema=cfg.init_weights == "ema")
            self.model.load_state_dict(p.model.state_dict(), strict=True)
            if self.is_main:
                print(f"initialised from {p.path} ({p.weights} weights, {init.layout} layout)")
        self.ema_model = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, betas=(0.9, 0.999),
                                     eps=1e-8, weight_decay=0.0)
        self.step = 0
        self.ckpt_root = os.path.join(cfg.out, "checkpoints")
        if cfg.resume:
            self._resume()
        self.wrapped = self.model
        if self.world > 1:
            if cfg.fsdp:
                if self.device.type != "cuda":
                    raise ValueError("--fsdp needs CUDA devices")
                from torch.distributed.fsdp import FullyShardedDataParallel
                self.wrapped = FullyShardedDataParallel(self.model)
            else:
                from torch.nn.parallel import DistributedDataParallel
                self.wrapped = DistributedDataParallel(
                    self.model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)
        self.stop_requested = False
        self.autocast = self.device.type == "cuda"

    def _check_memory(self, model_cfg, cfg):
        parts = estimate_memory(cfg, model_cfg, str(self.device))
        total, have = sum(parts.values()), available_memory(str(self.device))
        if total > 0.9 * have:
            detail = ", ".join(f"{k} {gib(v)}" for k, v in parts.items())
            raise ValueError(f"--batch-size {cfg.batch_size} x --seq-len {cfg.seq_len} would need "
                             f"about {gib(total)} ({detail}), more than the {gib(have)} available "
                             f"on {self.device}; lower --seq-len or --batch-size (or raise --accum)")

    # ---- checkpoints
    def _config_dict(self):
        return {"train": {k: v for k, v in asdict(self.cfg).items() if k != "extra"},
                "model": self.model_cfg.to_dict(), "graph": self.graph_spec, "n": self.graph.n,
                "noise": {"name": self.noise.name, **{k: v for k, v in vars(self.noise).items()}},
                "data": self.cfg.data}

    def save(self):
        if not self.is_main:
            return None
        state = {"step": self.step, "optimizer": self.opt.state_dict(), "data_position": self.step,
                 "rng": {"torch": torch.get_rng_state(),
                         "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}}
        return save_checkpoint(self.ckpt_root, self.step, self.model, self.ema_model, state,
                               self._config_dict())

    def _resume(self):
        if not os.path.exists(os.path.join(self.ckpt_root, "latest")):
            raise FileNotFoundError(f"--resume: no checkpoint in {self.ckpt_root} "
                                    f"(expected {self.ckpt_root}/latest)")
        weights, ema, state, saved, path = load_checkpoint(self.cfg.out, map_location=self.device)
        # Settings that change what the weights mean must match (same shapes would load silently).
        saved_model = (saved or {}).get("model", {})
        for key in ("parametrisation", "scale_by_sigma", "vocab_size", "hidden_size", "n_blocks",
                    "n_heads", "cond_dim"):
            was, now = saved_model.get(key, "score" if key == "parametrisation" else None), \
                getattr(self.model_cfg, key)
            if was is not None and was != now:
                raise ValueError(f"--resume: the checkpoint {path} was trained with {key} = "
                                 f"{was!r}, this run has {now!r}")
        if (saved or {}).get("graph", self.graph_spec) != self.graph_spec:
            raise ValueError(f"--resume: the checkpoint {path} was trained with --graph "
                             f"{saved['graph']!r}, this run has {self.graph_spec!r}")
        self.model.load_state_dict(weights, strict=True)
        self.ema_model.load_state_dict(ema, strict=True)
        self.opt.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        torch.set_rng_state(state["rng"]["torch"])
        cuda_states = state["rng"].get("cuda")
        if cuda_states is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(cuda_states[:torch.cuda.device_count()])
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
            perm = self._perm(epoch, N)
            idx.append(int(perm[pos]))
        return torch.stack([data[i] for i in idx]).to(self.device)

    def _perm(self, epoch, N):
        cache = getattr(self, "_perm_cache", None)
        if cache is None or cache[0] != epoch:
            g = torch.Generator().manual_seed(_step_seed(self.cfg.seed, 7, epoch))
            self._perm_cache = (epoch, torch.randperm(N, generator=g))
        return self._perm_cache[1]

    def lr_at(self, step):
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup))

    # ---- one optimizer step
    def train_step(self):
        cfg = self.cfg
        for group in self.opt.param_groups:
            group["lr"] = self.lr_at(self.step)
        self.wrapped.train()
        total = 0.0
        for micro in range(cfg.accum):
            seed = _step_seed(cfg.seed, self.step, micro, self.rank)
            torch.manual_seed(seed)                      # dropout: a function of the step
            gen = torch.Generator().manual_seed(seed)
            x0 = self.batch(self.step, micro)
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16,
                                enabled=self.autocast):
                loss = batch_loss(self.wrapped, x0, self.graph, self.noise, gen,
                                  use_reference=cfg.reference_loss,
                                  fused_linear=cfg.fused_linear, scale=1.0 / cfg.accum)
            loss.backward()
            total += float(loss.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            ema_p = list(self.ema_model.parameters())
            torch._foreach_lerp_(ema_p, [p.detach() for p in self.model.parameters()],
                                 1.0 - cfg.ema)
        self.step += 1
        return total, float(grad_norm)

    @torch.no_grad()
    def eval_loss(self):
        cfg, data = self.cfg, self.corpus.valid
        losses = []
        for b in range(cfg.eval_batches):
            lo = b * cfg.batch_size
            if lo >= len(data):
                break
            x0 = torch.stack([data[i] for i in range(lo, min(lo + cfg.batch_size, len(data)))])
            gen = torch.Generator().manual_seed(_step_seed(cfg.seed, 99, b))
            losses.append(batch_loss(self.ema_model, x0.to(self.device), self.graph, self.noise,
                                     gen, fused_linear=cfg.fused_linear).item())
        return sum(losses) / max(1, len(losses))

    def samples(self, num=4, steps=None):
        gen = torch.Generator(device=self.device).manual_seed(_step_seed(self.cfg.seed, 5, self.step))
        x = sample(self.ema_model, self.graph, self.noise, num, self.cfg.seq_len,
                   steps or self.cfg.sample_steps, generator=gen, device=self.device)
        return x, [self.corpus.tokenizer.decode(row.tolist()) for row in x.cpu()]

    # ---- the loop
    def _handle_signal(self, signum, frame):
        self.stop_requested = True

    def fit(self):
        cfg = self.cfg
        os.makedirs(cfg.out, exist_ok=True)
        old = {s: signal.signal(s, self._handle_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        writer = csv_file = tb = bar = None
        try:
            if self.is_main:
                new = not os.path.exists(os.path.join(cfg.out, "metrics.csv"))
                csv_file = open(os.path.join(cfg.out, "metrics.csv"), "a", newline="")
                writer = csv.writer(csv_file)
                if new:
                    writer.writerow(["step", "loss", "eval_loss", "lr", "grad_norm", "tokens_per_s"])
                try:
                    from torch.utils.tensorboard import SummaryWriter
                    tb = SummaryWriter(os.path.join(cfg.out, "tb"))
                except ImportError:
                    tb = None
                if cfg.progress:
                    try:
                        from tqdm.auto import tqdm
                        bar = tqdm(total=cfg.steps, initial=self.step, desc="training")
                    except ImportError:
                        bar = None
                print(f"model: {self.model.num_parameters():,} non-embedding parameters, "
                      f"V = {self.graph.V}, graph {self.graph.name}, noise {self.noise.name}, "
                      f"device {self.device}, world {self.world}")
            tokens_per_step = cfg.batch_size * cfg.accum * cfg.seq_len * self.world
            t_last, s_last = time.perf_counter(), self.step
            while self.step < cfg.steps and not self.stop_requested:
                loss, gnorm = self.train_step()
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss became {loss} at step {self.step}")
                eval_loss = ""
                if self.step % cfg.eval_every == 0 or self.step == cfg.steps:
                    eval_loss = self.eval_loss()
                if self.is_main and (self.step % cfg.log_every == 0 or eval_loss != ""):
                    now = time.perf_counter()
                    tps = tokens_per_step * (self.step - s_last) / max(now - t_last, 1e-9)
                    t_last, s_last = now, self.step
                    writer.writerow([self.step, f"{loss:.5f}", eval_loss, f"{self.lr_at(self.step - 1):.3g}",
                                     f"{gnorm:.4f}", f"{tps:.0f}"])
                    csv_file.flush()
                    if tb is not None:
                        tb.add_scalar("loss/train", loss, self.step)
                        if eval_loss != "":
                            tb.add_scalar("loss/eval", eval_loss, self.step)
                    if bar is not None:
                        bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tps:.0f}",
                                        **({"eval": f"{eval_loss:.3f}"} if eval_loss != "" else {}))
                if bar is not None:
                    bar.update(1)
                if self.is_main and self.step % cfg.sample_every == 0:
                    _, texts = self.samples()
                    os.makedirs(os.path.join(cfg.out, "samples"), exist_ok=True)
                    with open(os.path.join(cfg.out, "samples", f"step-{self.step:08d}.txt"), "w") as fh:
                        fh.write("\n\n".join(texts) + "\n")
                if self.step % cfg.save_every == 0:
                    self.save()
            self.save()
            if self.stop_requested and self.is_main:
                print(f"\nstopped at step {self.step}; checkpoint saved in {self.ckpt_root}")
            self._check_ranks_consistent()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
            if csv_file is not None:
                csv_file.close()
            if tb is not None:
                tb.close()
        if self.is_main and not self.stop_requested:
            self._plot()
            if cfg.final_report:
                self.report()

    def _check_ranks_consistent(self):
        if self.world == 1:
            return
        flat = torch.cat([p.detach().double().flatten().cpu() for p in self.model.parameters()])
        mine = torch.tensor([float(flat.sum()), float((flat * flat).sum()),
                             float(flat[::97].sum())], dtype=torch.float64)
        allv = [torch.zeros_like(mine) for _ in range(self.world)]
        dist.all_gather(allv, mine)
        same = all(torch.equal(allv[0], v) for v in allv)
        if self.is_main:
            with open(os.path.join(self.cfg.out, "ranks.txt"), "w") as fh:
                fh.write(f"world {self.world} step {self.step} identical_weights {same}\n")

    def _plot(self):
        try:
            import matplotlib
            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        rows = list(csv.DictReader(open(os.path.join(self.cfg.out, "metrics.csv"))))
        steps = [int(r["step"]) for r in rows]
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(steps, [float(r["loss"]) for r in rows], label="train")
        ev = [(int(r["step"]), float(r["eval_loss"])) for r in rows if r["eval_loss"]]
        if ev:
            ax.plot(*zip(*ev), "o-", label="eval (EMA)")
        ax.set_xlabel("step")
        ax.set_ylabel("loss (nats per sequence)")
        ax.set_yscale("log")
        ax.legend()
        fig.tight_layout()
        fig.savefig(os.path.join(self.cfg.out, "loss.png"), dpi=100)
        plt.close(fig)

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
        bound, prior, _ = likelihood_bound(self.ema_model, x0, self.graph, self.noise, timesteps,
                                            torch.Generator().manual_seed(_step_seed(self.cfg.seed, 11)))
        exact = -lang.log_likelihood(x0.cpu().numpy())
        per_tok = bound.mean().item() / L
        # the spread of the per-sequence estimates already holds their timestep noise
        stderr = bound.std().item() / math.sqrt(len(bound)) / L
        print(f"\nheld-out likelihood bound: {per_tok:.4f} ± {stderr:.4f} nats/token "
              f"(prior term {prior.mean().item() / L:.4f}; {timesteps} stratified timesteps)")
        print(f"exact NLL of the same sequences: {exact.mean() / L:.4f} nats/token "
              f"(the language's entropy rate at L = {L}: {lang.entropy_rate(L)[0]:.4f})")
        print(f"gap: {per_tok - exact.mean() / L:.4f} nats/token")
        print(f"samples with positive probability under the true language: {valid.sum()}/"
              f"{len(valid)}" + (f"; their exact NLL: {nll_samples[valid].mean():.3f} nats/token"
                                 if valid.any() else ""))
