"""This project's training checkpoints on disk: weights in safetensors plus a state file
(optimizer, EMA, step, config), written atomically (a temporary folder renamed into place, then the `latest` pointer replaced), so a crash
or a kill never leaves a half-written checkpoint and never touches the last good one."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import torch


class CheckpointError(RuntimeError):
    pass


def _atomic_write_text(path, text):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(root: str, step: int, model, ema_model, state: dict, config: dict,
                    keep: int = 3) -> str:
    from safetensors.torch import save_file
    os.makedirs(root, exist_ok=True)
    name = f"step-{step:08d}"
    final = os.path.join(root, name)
    tmp = tempfile.mkdtemp(dir=root, prefix=".tmp-")
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
                  os.path.join(tmp, "model.safetensors"))
        save_file({k: v.detach().contiguous().cpu() for k, v in ema_model.state_dict().items()},
                  os.path.join(tmp, "ema.safetensors"))
        torch.save(state, os.path.join(tmp, "state.pt"))
        with open(os.path.join(tmp, "config.json"), "w") as fh:
            json.dump(config, fh, indent=1)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _atomic_write_text(os.path.join(root, "latest"), name + "\n")
    kept = sorted(d for d in os.listdir(root) if d.startswith("step-"))
    for old in kept[:-keep]:
        if old != name:
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return final


def resolve_checkpoint(path: str) -> str:
    """A training output folder (its latest checkpoint), a checkpoints folder, or one checkpoint."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    for root in (os.path.join(path, "checkpoints"), path):
        latest = os.path.join(root, "latest")
        if os.path.isfile(latest):
            name = open(latest).read().strip()
            ckpt = os.path.join(root, name)
            if not os.path.isdir(ckpt):
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
