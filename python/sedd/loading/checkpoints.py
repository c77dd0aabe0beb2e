"""This project's training checkpoints on disk: weights and EMA weights in safetensors plus a
state file (optimizer, step, generators) and the run's config; a sharded run (--fsdp) adds its
training state as torch.distributed.checkpoint shards in train/ (sedd.training.checkpoints).
Written atomically: a hidden folder, synced, renamed into place, then the `latest` pointer
replaced, so a crash or a kill never leaves a half-written checkpoint and never touches the last
good one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch

from ..core import faults


class CheckpointError(RuntimeError):
    pass


def _atomic_write_text(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def checkpoint_name(step: int) -> str:
    return f"step-{step:08d}"


def staging_folder(root: str, name: str | None = None) -> str:
    """A fresh hidden folder under root to write a checkpoint into, leftovers of killed saves
    removed first (one run writes a checkpoints folder). name: a fixed name (every rank of a
    sharded save writes into the same one); default a unique one."""
    os.makedirs(root, exist_ok=True)
    for old in os.listdir(root):
        if old.startswith(".tmp-"):
            path = os.path.join(root, old)
            if os.path.isdir(path):
                shutil.rmtree(path, ignore_errors=True)
            else:
                os.remove(path)
    if name is None:
        return tempfile.mkdtemp(dir=root, prefix=".tmp-")
    tmp = os.path.join(root, ".tmp-" + name)
    os.makedirs(tmp)
    return tmp


def write_weights(folder: str, weights: dict, ema: dict, state: dict, config: dict) -> None:
    """model.safetensors, ema.safetensors, state.pt and config.json of a checkpoint."""
    from safetensors.torch import save_file
    save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()},
              os.path.join(folder, "model.safetensors"))
    faults.point("checkpoint.weights")
    save_file({k: v.detach().contiguous().cpu() for k, v in ema.items()},
              os.path.join(folder, "ema.safetensors"))
    torch.save(state, os.path.join(folder, "state.pt"))
    with open(os.path.join(folder, "config.json"), "w") as fh:
        json.dump(config, fh, indent=1)


def _fsync_tree(folder: str) -> None:
    """Every file of a written checkpoint on disk before it is renamed into place."""
    for base, _, files in os.walk(folder):
        for f in files:
            fd = os.open(os.path.join(base, f), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def promote(root: str, tmp: str, name: str, keep: int = 3) -> str:
    """A written checkpoint folder renamed into place, then the `latest` pointer moved to it,
    then all but the newest `keep` removed: a kill at any moment leaves `latest` naming a
    complete checkpoint."""
    final = os.path.join(root, name)
    _fsync_tree(tmp)
    faults.point("checkpoint.promote")
    if os.path.exists(final):            # a checkpoint of this step a killed run left unnamed
        shutil.rmtree(final)
    os.replace(tmp, final)
    faults.point("checkpoint.latest")
    _atomic_write_text(os.path.join(root, "latest"), name + "\n")
    kept = sorted(d for d in os.listdir(root) if d.startswith("step-"))
    for old in kept[:-keep]:
        if old != name:
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


def save_checkpoint(root: str, step: int, model, ema_model, state: dict, config: dict,
                    keep: int = 3) -> str:
    """One process's checkpoint of a model, its EMA copy and the training state."""
    tmp = staging_folder(root)
    try:
        write_weights(tmp, model.state_dict(), ema_model.state_dict(), state, config)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return promote(root, tmp, checkpoint_name(step), keep)


def resolve_checkpoint(path: str) -> str:
    """A training output folder (its latest checkpoint), a checkpoints folder, or one checkpoint."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    for root in (os.path.join(path, "checkpoints"), path):
        latest = os.path.join(root, "latest")
        if os.path.isfile(latest):
            name = open(latest).read().strip()
            ckpt = os.path.join(root, name)
            if not name:
                raise CheckpointError(f"{latest} is empty (it should name a checkpoint folder)")
            if os.sep in name or not os.path.isdir(ckpt):
                raise CheckpointError(f"{latest} points to {name!r}, which is missing")
            return ckpt
    if os.path.isfile(os.path.join(path, "model.safetensors")):
        return path
    raise CheckpointError(f"no checkpoint found in {path!r} (expected checkpoints/latest or "
                          f"model.safetensors)")


def load_checkpoint(path: str, map_location="cpu"):
    """(model weights, ema weights, state dict, config) of a checkpoint; clear errors when files
    are missing or corrupt."""
    from safetensors.torch import load_file
    ckpt = resolve_checkpoint(path)
    out = []
    for name in ("model.safetensors", "ema.safetensors"):
        f = os.path.join(ckpt, name)
        if not os.path.isfile(f):
            raise CheckpointError(f"checkpoint {ckpt!r} is missing {name}")
        try:
            out.append(load_file(f, device=str(map_location)))
        except Exception as e:  # safetensors raises its own error types
            raise CheckpointError(f"checkpoint file {f!r} is corrupt: {e}") from e
    try:
        state = torch.load(os.path.join(ckpt, "state.pt"), map_location=map_location,
                           weights_only=False)
        config = json.load(open(os.path.join(ckpt, "config.json")))
    except FileNotFoundError as e:
        raise CheckpointError(f"checkpoint {ckpt!r} is incomplete: {e}") from e
    except Exception as e:
        raise CheckpointError(f"checkpoint {ckpt!r} is corrupt: {e}") from e
    return out[0], out[1], state, config, ckpt
