"""Checkpoints as Hugging Face Hub folders: `model.safetensors` + `config.json`.

`save_pretrained(dir, model, config)` writes one; `from_pretrained(path_or_repo)` reads a local
folder, a training output folder (its latest checkpoint, EMA weights), or a Hub repository
through `huggingface_hub` (the same code path loads the paper's released SEDD checkpoints, whose
config uses their field names)."""

from __future__ import annotations

import json
import os

import torch

from .model import DDiT, ModelConfig


def save_pretrained(directory: str, model: DDiT, extra: dict | None = None) -> str:
    from safetensors.torch import save_file
    os.makedirs(directory, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              os.path.join(directory, "model.safetensors"))
    cfg = {"model": model.config.to_dict(), **(extra or {})}
    with open(os.path.join(directory, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=1)
    return directory


def _model_config(cfg: dict) -> ModelConfig:
    if "model" in cfg and "vocab_size" in cfg["model"]:          # ours
        return ModelConfig(**cfg["model"])
    # the paper's config (hydra): tokens, model.{hidden_size, cond_dim, n_blocks, n_heads, ...}
    m = cfg["model"]
    absorb = cfg.get("graph", {}).get("type", "absorb") == "absorb"
    return ModelConfig(vocab_size=int(cfg["tokens"]) + (1 if absorb else 0),
                       hidden_size=m["hidden_size"], n_blocks=m["n_blocks"],
                       n_heads=m["n_heads"], cond_dim=m["cond_dim"],
                       dropout=m.get("dropout", 0.1), scale_by_sigma=m.get("scale_by_sigma", absorb),
                       max_length=m.get("length", 1024))


def from_pretrained(path_or_repo: str, device="cpu", use_ema: bool = True):
    """(model, config dict). A local folder with model.safetensors + config.json, a training
    output folder or checkpoint (EMA weights by default), or a Hub repository id."""
    from safetensors.torch import load_file
    from .checkpoint import CheckpointError
    path = path_or_repo
    if not os.path.exists(path):
        looks_local = path.startswith((".", "/", "~")) or path.count("/") != 1
        if looks_local:
            raise CheckpointError(f"checkpoint {path!r} does not exist")
        try:
            from huggingface_hub import snapshot_download
            path = snapshot_download(path_or_repo)
        except Exception as e:  # offline, unknown repository, ...
            raise CheckpointError(f"{path_or_repo!r} is neither a local checkpoint nor a "
                                  f"reachable Hub repository: {e}") from e
    if os.path.isfile(os.path.join(path, "model.safetensors")) and not os.path.isfile(
            os.path.join(path, "state.pt")):
        cfg = json.load(open(os.path.join(path, "config.json")))
        weights = load_file(os.path.join(path, "model.safetensors"))
    elif os.path.isfile(os.path.join(path, "pytorch_model.bin")):
        cfg = json.load(open(os.path.join(path, "config.json")))
        weights = torch.load(os.path.join(path, "pytorch_model.bin"), map_location="cpu")
    else:
        from .checkpoint import load_checkpoint
        model_w, ema_w, _, cfg, _ = load_checkpoint(path)
        weights = ema_w if use_ema else model_w
    model = DDiT(_model_config(cfg))
    model.load_state_dict(weights, strict=True)
    return model.to(device).eval(), cfg
