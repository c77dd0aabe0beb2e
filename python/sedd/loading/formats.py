"""Checkpoints in, checkpoints out: every layout a user brings, read through one function.

`load(path_or_repo)` reads
- a Hub folder (`config.json` + `model.safetensors` or `pytorch_model.bin`), written by this
  project's `save_pretrained` or by the paper's code (its released `louaaron/sedd-small` and
  `louaaron/sedd-medium`: config.json holds the paper's hydra config as JSON);
- a Hub repository id (`owner/name`), through `huggingface_hub.snapshot_download` (which honours
  its cache and `HF_HUB_OFFLINE=1`);
- a training output folder or one checkpoint of this project (`checkpoints/latest`, EMA weights
  by default);
- a training run folder of the paper's code: `.hydra/config.yaml` plus
  `checkpoints-meta/checkpoint.pth` (else the newest `checkpoints/checkpoint_N.pth`), or one of
  those `.pth` files; keys `model`, `ema` (the paper's ExponentialMovingAverage state: `decay`,
  `num_updates`, `shadow_params` in the order of `model.parameters()`), `optimizer`, `step`. EMA
  weights by default (`use_ema=False`: the raw ones), as the paper's `load_model_local` does.

The weights load strictly: a missing or unexpected parameter is named, a shape mismatch names the
parameter and both shapes. `save_pretrained(dir, model, extra, layout="paper")` writes a folder
the paper's `SEDD.from_pretrained` reads (its config, `model.safetensors`)."""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass

import torch

from ..core.options import ConfigError
from .checkpoints import CheckpointError, load_checkpoint, resolve_checkpoint
from .runconfig import RunConfig

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


@dataclass
class Loaded:
    """A checkpoint, loaded: the network (eval mode), its family bound to the recorded process
    (SEDD: graph and noise), the tokenizer (None when not asked for), the RunConfig, where the
    weights came from and which ("ema", "raw" or "hub": a Hub folder holds one set), and a
    training checkpoint's other entries (optimizer, step, ...)."""

    model: torch.nn.Module
    family: object
    tokenizer: object
    run: RunConfig
    path: str
    weights: str
    state: dict | None = None

    @property
    def graph(self):
        return getattr(self.family, "graph", None)

    @property
    def noise(self):
        return getattr(self.family, "noise", None)

    @property
    def length(self) -> int:
        """The training length (the model's window when the config has none)."""
        return self.run.seq_len or self.model.config.max_length


# ---- finding the files
def locate(path_or_repo: str) -> str:
    """A local path as it is, or a Hub repository id downloaded (or found in the Hub cache)."""
    path = os.path.expanduser(path_or_repo)
    if os.path.exists(path):
        return path
    looks_local = path_or_repo.startswith((".", "/", "~")) or path_or_repo.count("/") != 1 \
        or path_or_repo.endswith((".pth", ".pt", ".json", ".safetensors", ".bin"))
    if looks_local:
        raise CheckpointError(f"checkpoint {path_or_repo!r} does not exist")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise CheckpointError(f"{path_or_repo!r} is not a local path, and huggingface_hub (the "
                              f"'train' extra) is not installed to fetch it from the Hub") from None
    try:
        return snapshot_download(path_or_repo, allow_patterns=["*.json", *WEIGHT_FILES, "*.md"])
    except Exception as e:  # offline and not cached, unknown repository, ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path_or_repo!r} is neither a local checkpoint nor a reachable "
                              f"Hub repository ({type(e).__name__}: {first})") from None


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not JSON ({e})") from None
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not JSON (not UTF-8 text)") from None


def _read_weights(path: str) -> dict:
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file
            return load_file(path)
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # safetensors and pickle raise their own types
        raise CheckpointError(f"checkpoint file {path} is corrupt or unreadable "
                              f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None


def _paper_run_files(path: str):
    """(run root, checkpoint .pth) of a paper training run folder or of one of its .pth files."""
    if os.path.isfile(path):
        root = os.path.dirname(os.path.dirname(os.path.abspath(path)))
        return root, path
    meta = os.path.join(path, "checkpoints-meta", "checkpoint.pth")
    if os.path.isfile(meta):
        return path, meta
    folder = os.path.join(path, "checkpoints")
    numbered = []
    if os.path.isdir(folder):
        for f in os.listdir(folder):
            m = re.fullmatch(r"checkpoint_(\d+)\.pth", f)
            if m:
                numbered.append((int(m.group(1)), os.path.join(folder, f)))
    if not numbered:
        raise CheckpointError(f"paper run {path}: no checkpoints-meta/checkpoint.pth and no "
                              f"checkpoints/checkpoint_N.pth")
    return path, max(numbered)[1]


def _read_paper_yaml(root: str) -> dict:
    path = os.path.join(root, ".hydra", "config.yaml")
    if not os.path.isfile(path):
        raise CheckpointError(f"paper run {root}: {path} is missing (the run's hydra config)")
    try:
        import yaml
    except ImportError:
        raise CheckpointError("reading a paper run's .hydra/config.yaml needs PyYAML "
                              "(pip install pyyaml)") from None
    try:
        with open(path, encoding="utf-8") as fh:
            cfg = yaml.safe_load(fh)
    except yaml.YAMLError as e:
        raise CheckpointError(f"{path} is not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(cfg, dict):
        raise CheckpointError(f"{path}: expected a mapping, got {type(cfg).__name__}")
    return cfg


# ---- matching weights to the network
def _strip_prefixes(weights: dict) -> dict:
    """DDP's `module.` and torch.compile's `_orig_mod.` prefixes, when every key has one."""
    for prefix in ("module.", "_orig_mod."):
        if weights and all(k.startswith(prefix) for k in weights):
            weights = {k[len(prefix):]: v for k, v in weights.items()}
    return weights


def _names(keys, limit=6):
    keys = sorted(keys)
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_weights(model: torch.nn.Module, weights: dict, source: str) -> None:
    """load_state_dict(strict=True) with every disagreement named: missing, unexpected, shape."""
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{source}: the weights are not a mapping of names to tensors")
    weights = _strip_prefixes(weights)
    expected = model.state_dict()
    missing = set(expected) - set(weights)
    extra = set(weights) - set(expected)
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} parameter(s): {_names(missing)}")
    if extra:
        problems.append(f"unexpected {len(extra)} parameter(s): {_names(extra)}")
    wrong = [k for k in expected if k in weights and tuple(weights[k].shape) != tuple(expected[k].shape)]
    if wrong:
        k = wrong[0]
        more = f" ({len(wrong) - 1} more parameter(s) differ in shape)" if len(wrong) > 1 else ""
        problems.append(f"{k} has shape {tuple(weights[k].shape)}, the model (from the config) "
                        f"expects {tuple(expected[k].shape)}{more}")
    if problems:
        raise CheckpointError(f"{source}: the weights do not match the config: "
                              + "; ".join(problems))
    model.load_state_dict(weights, strict=True)


def paper_ema_weights(model: torch.nn.Module, raw: dict, ema, source: str) -> dict:
    """The paper's EMA as a state dict: `shadow_params[i]` is the i-th trainable parameter of
    the paper's SEDD, whose registration order DDiT keeps (vocab_embed, sigma_map, blocks,
    output_layer; in a block norm1, attn_qkv, attn_out, norm2, mlp, adaLN_modulation)."""
    if not isinstance(ema, dict) or "shadow_params" not in ema:
        raise CheckpointError(f"{source}: 'ema' is not the paper's ExponentialMovingAverage state "
                              f"(no shadow_params); use the raw weights (--no-ema)")
    shadow = list(ema["shadow_params"])
    params = [(k, p) for k, p in model.named_parameters() if p.requires_grad]
    if len(shadow) != len(params):
        raise CheckpointError(f"{source}: ema.shadow_params has {len(shadow)} tensors, the model "
                              f"has {len(params)} parameters")
    out = dict(_strip_prefixes(raw))
    for i, ((name, p), s) in enumerate(zip(params, shadow)):
        if not isinstance(s, torch.Tensor) or tuple(s.shape) != tuple(p.shape):
            got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise CheckpointError(f"{source}: ema.shadow_params[{i}] has shape {got}, parameter "
                                  f"{name} expects {tuple(p.shape)}")
        out[name] = s
    return out


# ---- reading
def _inspect(path_or_repo: str):
    """(kind, RunConfig, where) of a checkpoint without reading its weights: kind "paper-run"
    (where = (root, .pth)), "hub" (where = the weights file) or "run" (this project's
    checkpoint folder)."""
    path = locate(path_or_repo)
    if (os.path.isfile(path) and path.endswith(".pth")) or \
            os.path.isfile(os.path.join(path, ".hydra", "config.yaml")):
        root, ckpt = _paper_run_files(path)
        cfg_path = os.path.join(root, ".hydra", "config.yaml")
        return "paper-run", _run_config(_read_paper_yaml(root), cfg_path), ckpt
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, "config.json")) and \
            not os.path.isfile(os.path.join(path, "state.pt")):
        cfg_path = os.path.join(path, "config.json")
        run = _run_config(_read_json(cfg_path), cfg_path)
        files = [os.path.join(path, f) for f in WEIGHT_FILES if os.path.isfile(os.path.join(path, f))]
        if not files:
            raise CheckpointError(f"{path} has a config.json but no weights "
                                  f"({' or '.join(WEIGHT_FILES)})")
        return "hub", run, files[0]
    if os.path.isfile(path):
        raise CheckpointError(f"{path}: not a checkpoint (expected a folder, or a paper run's "
                              f".pth file)")
    ckpt = resolve_checkpoint(path)
    cfg_path = os.path.join(ckpt, "config.json")
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"checkpoint {ckpt!r} is incomplete: config.json is missing")
    return "run", _run_config(_read_json(cfg_path), cfg_path), ckpt


def read_config(path_or_repo: str) -> RunConfig:
    """The RunConfig of any checkpoint `load` reads, without loading the weights."""
    return _inspect(path_or_repo)[1]


def load(path_or_repo: str, device="cpu", use_ema: bool = True, tokenizer=None) -> Loaded:
    """Any checkpoint of the layouts above: the model (eval mode, on `device`), its family, its
    RunConfig and, unless tokenizer=False, its tokenizer (or `tokenizer`, a
    sedd.data.get_tokenizer spec such as gpt2:PATH.tiktoken to work offline; it must have the
    checkpoint's vocabulary). The one load function of every door and of the Python API."""
    kind, run, where = _inspect(path_or_repo)
    model = run.build_model()
    state = None
    if kind == "paper-run":
        try:
            obj = torch.load(where, map_location="cpu", weights_only=True)
        except Exception as e:
            raise CheckpointError(f"checkpoint file {where} is corrupt or unreadable "
                                  f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
        if not isinstance(obj, dict) or "model" not in obj:
            raise CheckpointError(f"{where}: not a checkpoint of the paper's code (expected the "
                                  f"keys model, ema, optimizer, step)")
        if use_ema:
            if "ema" not in obj:
                raise CheckpointError(f"{where} has no 'ema' entry; load the raw weights (--no-ema)")
            weights, which = paper_ema_weights(model, obj["model"], obj["ema"], where), "ema"
        else:
            weights, which = obj["model"], "raw"
        load_weights(model, weights, where)
        state = {k: v for k, v in obj.items() if k != "model"}
    elif kind == "hub":
        load_weights(model, _read_weights(where), where)
        which = "hub"
    else:
        model_w, ema_w, state, _, where = load_checkpoint(where)
        load_weights(model, ema_w if use_ema else model_w, where)
        which = "ema" if use_ema else "raw"
    tok = None if tokenizer is False else run.build_tokenizer(tokenizer)
    return Loaded(model.to(device).eval(), run.process(), tok, run, where, which, state)


def _run_config(cfg, source) -> RunConfig:
    try:
        return RunConfig.from_dict(cfg, source)
    except ConfigError as e:
        raise CheckpointError(str(e)) from None


# ---- writing
def save_pretrained(directory: str, model: torch.nn.Module, extra: dict | None = None, *,
                    layout: str = "sedd-kernels", run: RunConfig | None = None) -> str:
    """A Hub folder: `model.safetensors` + `config.json`. layout="sedd-kernels" (default) writes
    this project's config ({"model": ..., **extra}); layout="paper" the paper's hydra config,
    which its `SEDD.from_pretrained` (PyTorchModelHubMixin) reads; the graph, n and noise come
    from `run` or from `extra` (graph, n, noise keys of this project's config)."""
    from safetensors.torch import save_file
    if layout not in ("sedd-kernels", "paper"):
        raise ValueError(f"layout must be 'sedd-kernels' or 'paper', got {layout!r}")
    if run is not None:
        cfg = run.paper_dict() if layout == "paper" else run.to_dict()
    else:
        cfg = {"model": model.config.to_dict(), **(extra or {})}
        if layout == "paper":
            cfg = RunConfig.from_dict(cfg, "save_pretrained").paper_dict()
    os.makedirs(directory, exist_ok=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()},
              os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=1)
    return directory
