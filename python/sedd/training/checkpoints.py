"""A training run's checkpoints: everything needed to continue bit for bit (weights, EMA,
optimizer, step, the CPU and CUDA generators) written through the atomic checkpoint format of
sedd.loading.checkpoints, with the run's config as the loader reads it (RunConfig.to_dict: one
class writes and reads it); resuming refuses a checkpoint whose settings change what the weights
mean.

Under FSDP2 (--fsdp, more than one process) the training state (weights, EMA, AdamW moments) is
saved with torch.distributed.checkpoint: every rank writes its own shard into train/ of the one
staging folder, rank 0 the index (.metadata). The weights and EMA weights are also gathered
into the usual model.safetensors / ema.safetensors, so every door reads an FSDP run like any
other. A sharded checkpoint loads at any world size, sharded or not (DCP reshards); a
one-process checkpoint loads into a sharded run too."""

from __future__ import annotations

import os
import warnings

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict, set_state_dict)

from ..core import faults
from ..loading.checkpoints import (CheckpointError, checkpoint_name, load_checkpoint, promote,
                                   save_checkpoint, staging_folder, write_weights)
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


def save_sharded(root: str, step: int, model, ema_model, optimizer, config: dict, dist,
                 keep: int = 3) -> str | None:
    """The sharded checkpoint of an FSDP2 run; every rank calls it (collectives). Returns the
    checkpoint's path on rank 0, None elsewhere."""
    name = checkpoint_name(step)
    tmp = os.path.join(root, ".tmp-" + name)
    if dist.is_main:
        staging_folder(root, name)
    dist.barrier()
    weights, optim = get_state_dict(model, optimizer)
    dcp.save({"model": weights, "ema": get_model_state_dict(ema_model), "optimizer": optim},
             checkpoint_id=os.path.join(tmp, "train"))
    faults.point("checkpoint.shards")
    full = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=full)      # rank 0 holds them, others {}
    ema = get_model_state_dict(ema_model, options=full)
    if dist.is_main:
        state = {"step": step, "rng": rng_state(), "sharded": {"world": dist.world}}
        write_weights(tmp, weights, ema, state, config)
    dist.barrier()                                           # every shard and file written
    path = promote(root, tmp, name, keep) if dist.is_main else None
    dist.barrier()
    return path


def check_shards(folder: str) -> None:
    """A sharded training state is whole: its index and every file the index names."""
    if not os.path.isfile(os.path.join(folder, ".metadata")):
        raise CheckpointError(f"checkpoint {os.path.dirname(folder)!r}: the sharded training "
                              f"state has no index ({folder}/.metadata)")
    try:
        meta = FileSystemReader(folder).read_metadata()
    except Exception as e:              # a torn or foreign index
        raise CheckpointError(f"checkpoint {os.path.dirname(folder)!r}: the shard index "
                              f"{folder}/.metadata cannot be read ({type(e).__name__})") from None
    files = sorted({item.relative_path for item in meta.storage_data.values()})
    missing = [f for f in files if not os.path.isfile(os.path.join(folder, f))]
    if missing:
        raise CheckpointError(f"checkpoint {os.path.dirname(folder)!r} is missing "
                              f"{len(missing)} of its {len(files)} shard files "
                              f"({', '.join(missing)} in {folder})")


def load_sharded(folder: str, model, ema_model, optimizer) -> None:
    """A DCP training state into the model, EMA and optimizer of this run (sharded or not, any
    world size)."""
    check_shards(folder)
    weights, optim = get_state_dict(model, optimizer)
    state = {"model": weights, "ema": get_model_state_dict(ema_model), "optimizer": optim}
    one_process = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    try:
        with warnings.catch_warnings():    # "assuming the intent is to load in a single process"
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(state, checkpoint_id=folder, no_dist=one_process)
    except Exception as e:              # DCP wraps every rank's failure in its own error type
        raise CheckpointError(f"checkpoint {os.path.dirname(folder)!r}: the sharded training "
                              f"state does not load ({str(e).splitlines()[0][:300]})") from None
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])
    set_model_state_dict(ema_model, state["ema"])


def load_full_into_sharded(model, ema_model, optimizer, weights, ema, optim_state) -> None:
    """A one-process checkpoint (full tensors, optimizer state by parameter index) into an FSDP2
    run: each rank keeps its shards."""
    full = StateDictOptions(full_state_dict=True)
    set_model_state_dict(model, weights, options=full)
    set_model_state_dict(ema_model, ema, options=full)
    names = [n for n, _ in model.named_parameters()]
    by_name = {"state": {names[i]: v for i, v in optim_state["state"].items()},
               "param_groups": [{**g, "params": [names[i] for i in g["params"]]}
                                for g in optim_state["param_groups"]]}
    set_optimizer_state_dict(model, optimizer, by_name, options=full)


def read_training(out: str, map_location="cpu"):
    """(weights, EMA weights, state, config, path) of a run folder's latest checkpoint, for
    `apply_training` once the caller has checked the config against its run."""
    root = os.path.join(out, "checkpoints")
    if not os.path.exists(os.path.join(root, "latest")):
        raise FileNotFoundError(f"--resume: no checkpoint in {root} (expected {root}/latest)")
    return load_checkpoint(out, map_location=map_location)


def apply_training(model, ema_model, optimizer, weights, ema, state, path=None,
                   sharded=False) -> int:
    """Weights, EMA, optimizer and generators of read_training's checkpoint (`path`); returns its
    step. A sharded checkpoint's state comes from its train/ shards; sharded: this run's model
    is sharded by FSDP2."""
    if "sharded" in state:
        load_sharded(os.path.join(path, "train"), model, ema_model, optimizer)
    elif sharded:
        load_full_into_sharded(model, ema_model, optimizer, weights, ema, state["optimizer"])
    else:
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
