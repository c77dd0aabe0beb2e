"""Loading and saving: every checkpoint format behind one `load` (sedd.loading.formats) — this
project's training runs and Hub folders, the paper's Hub folders and training-run folders, Hub
repository ids — with `read_config` (the RunConfig alone), `save_pretrained` (this project's
layout or the paper's) beside it; the atomic training checkpoints (checkpoints); the typed config
a checkpoint records, read and written by one class (runconfig.RunConfig).

Imports: sedd.core, sedd.data (tokenizers), sedd.nn, sedd.families. Optional dependencies
imported where used: safetensors, huggingface_hub (Hub ids), PyYAML (a paper run's hydra config).

Old names, deprecated for one release: load_pretrained, load_run, load_for_inference,
from_pretrained, read_run_config."""

from __future__ import annotations

import warnings

from ..core.options import ConfigError
from .checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from .formats import Loaded, load, load_weights, locate, read_config, save_pretrained
from .runconfig import RunConfig


def _deprecated(old: str, new: str):
    warnings.warn(f"{old} is deprecated: use {new}", DeprecationWarning, stacklevel=3)


def load_pretrained(path_or_repo: str, device="cpu", use_ema: bool = True) -> Loaded:
    """Deprecated: load(path_or_repo, device, use_ema, tokenizer=False)."""
    _deprecated("load_pretrained", "sedd.loading.load")
    return load(path_or_repo, device, use_ema, tokenizer=False)


def load_run(checkpoint: str, device="cpu", use_ema=True, tokenizer: str | None = None) -> Loaded:
    """Deprecated: load(checkpoint, device, use_ema, tokenizer)."""
    _deprecated("load_run", "sedd.loading.load")
    return load(checkpoint, device, use_ema, tokenizer)


def load_for_inference(checkpoint: str, device="cpu", use_ema=True, tokenizer=None):
    """Deprecated: (model, graph, noise, tokenizer, config dict) of load()."""
    _deprecated("load_for_inference", "sedd.loading.load")
    r = load(checkpoint, device, use_ema, tokenizer)
    return r.model, r.graph, r.noise, r.tokenizer, r.run.to_dict()


def from_pretrained(path_or_repo: str, device="cpu", use_ema: bool = True):
    """Deprecated: (model, config dict in this project's format) of load()."""
    _deprecated("from_pretrained", "sedd.loading.load")
    r = load(path_or_repo, device, use_ema, tokenizer=False)
    return r.model, r.run.to_dict()


def read_run_config(path_or_repo: str) -> RunConfig:
    """Deprecated: read_config."""
    _deprecated("read_run_config", "sedd.loading.read_config")
    return read_config(path_or_repo)


__all__ = ["CheckpointError", "ConfigError", "Loaded", "RunConfig", "load", "load_checkpoint",
           "load_weights", "locate", "read_config", "save_checkpoint", "save_pretrained",
           "load_pretrained", "load_run", "load_for_inference", "from_pretrained",
           "read_run_config"]
