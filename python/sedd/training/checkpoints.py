"""A training run's checkpoints: everything needed to continue bit for bit (weights, EMA,
optimizer, step, the CPU and CUDA generators) written through the atomic checkpoint format of
sedd.loading.checkpoints, with the run's config as the loader reads it (RunConfig.to_dict: one
class writes and reads it); resuming refuses a checkpoint whose settings change what the weights
mean."""

from __future__ import annotations

import os

import torch

from ..loading.checkpoints import load_checkpoint, save_checkpoint
from ..loading.runconfig import RunConfig


def rng_state() -> dict:
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def restore_rng(state: dict) -> None:
    """The CPU generator, and every CUDA device's that was saved (exact resume on GPUs too)."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(cuda)[:torch.cuda.device_count()])


def save_training(root: str, step: int, model, ema_model, optimizer, config: dict,
                  keep: int = 3) -> str:
    """A checkpoint of everything `apply_training` needs to continue bit for bit."""
    state = {"step": step, "optimizer": optimizer.state_dict(), "rng": rng_state()}
    return save_checkpoint(root, step, model, ema_model, state, config, keep)


def read_training(out: str, map_location="cpu"):
    """(weights, EMA weights, state, config, path) of a run folder's latest checkpoint, for
    `apply_training` once the caller has checked the config against its run."""
    root = os.path.join(out, "checkpoints")
    if not os.path.exists(os.path.join(root, "latest")):
        raise FileNotFoundError(f"--resume: no checkpoint in {root} (expected {root}/latest)")
    return load_checkpoint(out, map_location=map_location)


def apply_training(model, ema_model, optimizer, weights, ema, state) -> int:
    """Weights, EMA, optimizer and generators of read_training's checkpoint; returns its step."""
    model.load_state_dict(weights, strict=True)
    ema_model.load_state_dict(ema, strict=True)
    optimizer.load_state_dict(state["optimizer"])
    restore_rng(state["rng"])
    return int(state["step"])


def run_config(cfg, model_cfg, family, tokenizer_n: int) -> RunConfig:
    """What the run's checkpoints record: the network, the family's process (graph, n, noise),
    the data and the TrainConfig."""
    record = {"n": tokenizer_n, **family.record()}
    return RunConfig(model=model_cfg, **record, data=cfg.data, seq_len=cfg.seq_len,
                     seed=cfg.seed, cache_dir=cfg.cache_dir, ema_decay=cfg.ema,
                     tokenizer="builtin" if cfg.data == "builtin" else cfg.tokenizer,
                     train=dict(vars(cfg)))


# the ModelConfig fields that change what the weights mean (same shapes would load silently)
MEANING = ("family", "parametrisation", "scale_by_sigma", "vocab_size", "hidden_size", "n_blocks",
           "n_heads", "cond_dim")


def check_resume(saved: dict, now: RunConfig, path: str) -> None:
    """Refuse to resume a checkpoint trained with other settings than this run's."""
    was = RunConfig.from_dict(saved or {"model": now.model.to_dict()}, path)
    for key in MEANING:
        a, b = getattr(was.model, key), getattr(now.model, key)
        if a != b:
            raise ValueError(f"--resume: the checkpoint {path} was trained with {key} = {a!r}, "
                             f"this run has {b!r}")
    if was.graph != now.graph:
        raise ValueError(f"--resume: the checkpoint {path} was trained with --graph "
                         f"{was.graph!r}, this run has {now.graph!r}")
