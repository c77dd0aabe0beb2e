"""The run's configuration in one place: the presets (one table), the TrainConfig fields (each
with its help text, range check and flag; a family's own options come from its module), the
resolution of a run's config (`resolve_config`: preset ← checkpoint ← flags, None = not given)
and the command line generated from the fields (`add_flags`, `from_args`).

Imports: sedd.core, sedd.families, sedd.loading (the --init-from checkpoint's config)."""

from __future__ import annotations

import argparse
import warnings
from dataclasses import MISSING, dataclass, fields, make_dataclass

from .core.options import (flag_name, nonneg_int, option, positive_float, positive_int,
                           unit_interval)
from .families import FAMILIES, get_family
from .families.base import MODEL_FIELDS
from .loading import read_config
from .nn.layers import ModelConfig

# ---- the presets: model sizes and training schedules by name. micro runs in seconds (tests,
# compare.py --level quick); tiny trains on 2 CPU cores in minutes on the built-in language;
# small and medium are the paper's sizes and schedule.
_PAPER = dict(steps=400_000, batch_size=512, seq_len=1024, lr=3e-4, warmup=2500, ema=0.9999,
              eval_every=5000, save_every=10_000, sample_every=10_000, sample_steps=256,
              data="openwebtext", tokenizer="gpt2")
_BUILTIN = dict(data="builtin", tokenizer="gpt2")

PRESETS = {
    "micro": dict(hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16, dropout=0.0,
                  steps=400, batch_size=16, seq_len=16, lr=3e-3, warmup=10, ema=0.9,
                  eval_every=100, save_every=400, sample_every=400, sample_steps=16, **_BUILTIN),
    "tiny": dict(hidden_size=128, n_blocks=4, n_heads=4, cond_dim=64, dropout=0.0,
                 steps=2400, batch_size=32, seq_len=64, lr=2e-3, warmup=100, ema=0.99,
                 eval_every=200, save_every=800, sample_every=800, sample_steps=64, **_BUILTIN),
    "small": dict(hidden_size=768, n_blocks=12, n_heads=12, cond_dim=128, dropout=0.1, **_PAPER),
    "medium": dict(hidden_size=1024, n_blocks=24, n_heads=16, cond_dim=128, dropout=0.1, **_PAPER),
}


def model_preset(name: str) -> dict:
    """The ModelConfig fields of a preset."""
    return {k: PRESETS[name][k] for k in MODEL_FIELDS}


# ---- the fields every family shares
@dataclass
class _SharedConfig:
    preset: str = option("model and schedule sizes (default tiny)", "tiny", choices=sorted(PRESETS))
    family: str = option("the model family: " + "; ".join(f"{n}: {f.summary}" for n, f in
                                                           sorted(FAMILIES.items()))
                         + " (default sedd)", "sedd", choices=sorted(FAMILIES), flag="--model",
                         aliases=("--family",))
    data: str | None = option("builtin (default for tiny), a text file or folder, or a datasets "
                              "name (openwebtext, wikitext2, wikitext103, ptb, lm1b, lambada, "
                              "text8)")
    tokenizer: str | None = option("gpt2, gpt2:PATH.tiktoken, bpe[:N], char, or a path (ignored "
                                   "for builtin)")
    steps: int | None = option("total optimizer steps of the run (resume continues to it)",
                               check=positive_int)
    batch_size: int | None = option("sequences per optimizer step and process (before --accum)",
                                    check=positive_int)
    accum: int = option("gradient accumulation micro-batches per step", 1, positive_int)
    seq_len: int | None = option("tokens per sequence", check=positive_int)
    lr: float | None = option("peak learning rate (AdamW, linear warm-up, then constant)",
                              check=positive_float)
    warmup: int | None = option("warm-up steps", check=nonneg_int)
    grad_clip: float = option("gradient-norm clipping", 1.0, positive_float)
    ema: float | None = option("EMA decay of the weights used for eval and samples",
                               check=unit_interval)
    out: str = option("output folder", "runs/sedd")
    resume: bool = option("continue from OUT/checkpoints/latest", False)
    init_from: str | None = option("fine-tune: start from this checkpoint's weights (any layout; "
                                   "EMA initialised from them)")
    init_weights: str = option("which weights of --init-from", "ema", choices=["ema", "raw"])
    data_workers: int | None = option("processes that tokenize a corpus the first time (default: "
                                      "the CPUs this process may use, at most 8)",
                                      check=positive_int)
    cache_dir: str | None = option("token files and trained tokenizers (default $SEDD_CACHE or "
                                   "~/.cache/sedd)")
    device: str | None = option("cpu, cuda or cuda:N (default: cuda if available)")
    seed: int = option("seed of data order, noise levels, perturbations", 0, nonneg_int)
    eval_every: int | None = option("steps between held-out eval losses", check=positive_int)
    eval_batches: int = option("batches of the held-out loss", 4, positive_int)
    save_every: int | None = option("steps between checkpoints", check=positive_int)
    sample_every: int | None = option("steps between sample files", check=positive_int)
    sample_steps: int | None = option("sampler steps for periodic samples", check=positive_int)
    log_every: int = option("steps between metric rows (the loss is read from the device then)",
                            10, positive_int)
    hidden_size: int | None = option("override the preset's hidden size", check=positive_int)
    n_blocks: int | None = option("override the preset's number of blocks", check=positive_int)
    n_heads: int | None = option("override the preset's number of heads", check=positive_int)
    cond_dim: int | None = option("override the preset's width of the noise condition",
                                  check=positive_int)
    dropout: float | None = option("override the preset's dropout", check=unit_interval)
    fsdp: bool = option("FSDP2 instead of DDP under torchrun: weights, gradients, AdamW state and "
                        "EMA sharded over the processes, sharded checkpoints (CPUs with gloo, "
                        "GPUs with NCCL and bf16 compute)", False)
    compile: bool = option("torch.compile the model (trunk + fused loss, fullgraph; the first "
                           "steps pay the compilation)", False)
    progress: bool = option("no progress bar", True, flag="--no-progress")
    final_report: bool = option("skip the final samples and likelihood report", True,
                                flag="--no-report")

    # ---- building
    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "TrainConfig":
        """resolve_config(preset, **overrides)."""
        return resolve_config(preset, **overrides)

    def family_class(self):
        return get_family(self.family)

    @property
    def model(self) -> str:
        """Deprecated name of `family`."""
        warnings.warn("TrainConfig.model is deprecated: use TrainConfig.family",
                      DeprecationWarning, stacklevel=2)
        return self.family

    def validate(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(f"bad configuration: {msg}")
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata.get("check") is not None and value is not None:
                try:
                    f.metadata["check"](flag_name(f))(str(value))
                except argparse.ArgumentTypeError as e:
                    need(False, str(e))
            choices = f.metadata.get("choices")
            if choices and value is not None:
                need(value in choices,
                     f"{flag_name(f)} must be one of {', '.join(choices)}, got {value!r}")
        self.family_class().configure(self)
        H, heads = self.hidden_size, self.n_heads
        need(H % heads == 0, f"--hidden-size {H} is not divisible by --n-heads {heads}")
        need((H // heads) % 2 == 0, f"the head width --hidden-size / --n-heads = {H // heads} "
                                    f"must be even (rotary positions)")

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The network of the run over `vocab_size` ids (the family's)."""
        if self.init_from:      # the checkpoint's network (its window included), new dropout
            m = read_config(self.init_from).model.to_dict()
            return ModelConfig(**{**m, "dropout": self.dropout})
        return self.family_class().model_config(self, vocab_size)

    def vocab_size(self, n: int) -> int:
        """Network ids over n real tokens (the family's)."""
        return self.family_class().vocab_size(self, n)


def _family_fields():
    """Every family's own options, as TrainConfig fields."""
    out, seen = [], {}
    for family in FAMILIES.values():
        for name, f in family.options.items():
            if name in seen:
                if seen[name] is f:              # one option shared by two families
                    continue
                raise ValueError(f"option {name!r} is declared by two families")
            seen[name] = f
            kind = type(f.default) if f.default is not MISSING and f.default is not None else str
            out.append((name, kind | None, f))
    return out


TrainConfig = make_dataclass("TrainConfig", _family_fields(), bases=(_SharedConfig,))
TrainConfig.__module__ = __name__
TrainConfig.__doc__ = ("The run's configuration: the shared fields and every family's options "
                       "(sedd.families); built by resolve_config.")


def resolve_config(preset: str = "tiny", **flags) -> TrainConfig:
    """The run's config: the preset's values, then what the --init-from checkpoint fixes (graph,
    noise, model shape, tokenizer, length), then the flags that are not None; the family's
    defaults; validated. A flag that disagrees with the checkpoint is an error; a flag that
    belongs to another family's options is an error."""
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
    if "model" in flags:
        warnings.warn("the TrainConfig field `model` is now `family`", DeprecationWarning,
                      stacklevel=3)
        flags.setdefault("family", flags.pop("model"))
    names = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(flags) - names)
    if unknown:
        raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
    given = {k: v for k, v in flags.items() if v is not None}
    values = dict(PRESETS[preset])
    fixed = {}
    if given.get("init_from"):
        fixed = inherit_from_checkpoint(given["init_from"], given, check=not given.get("resume"))
    values.update(fixed)
    values.update({k: v for k, v in given.items() if k not in fixed})
    values["preset"] = preset
    _refuse_other_families(values.get("family", "sedd"), given)
    cfg = TrainConfig(**values)
    cfg.validate()
    return cfg


def _refuse_other_families(name: str, given: dict):
    family = get_family(name) if name in FAMILIES else None
    own = family.options if family is not None else {}
    for other in FAMILIES.values():
        theirs = [k for k, f in other.options.items()
                  if k not in own and k in given and given[k] != f.default]
        if theirs and other is not family:
            flags = ", ".join(flag_name(other.options[k]) for k in theirs)
            raise ValueError(f"bad configuration: --model {name} has no {flags} (a "
                             f"{other.title} model's settings)")


# ---- the command line, generated from the fields
def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, with its help text, type and range; defaults None (= not
    given: the preset's)."""
    for f in fields(TrainConfig):
        name, meta = flag_name(f), f.metadata
        names = (name, *meta.get("aliases", ()))
        default = f.default if f.default is not MISSING else None
        if isinstance(default, bool):      # store_true; --no-x (dest no_x) for those that default True
            parser.add_argument(*names, action="store_true", help=meta["help"])
            continue
        kind = meta["check"](name) if meta.get("check") else (float if "float" in str(f.type) else str)
        extra = {"choices": meta["choices"]} if meta.get("choices") else {}
        shown = f" (default {default})" if default is not None and "default" not in meta["help"] else ""
        parser.add_argument(*names, dest=f.name, type=kind, default=None,
                            help=meta["help"] + shown, **extra)


def from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig of parsed add_flags arguments (flags not given stay None)."""
    given = {}
    for f in fields(TrainConfig):
        if isinstance(f.default, bool):
            set_ = getattr(args, flag_name(f)[2:].replace("-", "_"))
            given[f.name] = (not f.default) if set_ else None
        else:
            given[f.name] = getattr(args, f.name)
    return resolve_config(given.pop("preset") or "tiny", **given)


# ---- fine-tuning
SHAPE = ("family", "hidden_size", "n_blocks", "n_heads", "cond_dim")


def inherit_from_checkpoint(path: str, given: dict, check: bool = True) -> dict:
    """The TrainConfig fields a fine-tuning run takes from its --init-from checkpoint (family,
    its options, model shape, tokenizer, training length). A flag the user gave that disagrees
    is an error (dropout and the length may be changed: the length up to the model's window)."""
    run = read_config(path)
    m = run.model
    family = get_family(m.family)
    have = {k: getattr(m, k) for k in SHAPE}
    have.update(family.inherited(run))
    if check:
        for k in (*SHAPE, *family.inherited_options):
            if k in given and k in have and given[k] != have[k]:
                flag = "--model" if k == "family" else "--" + k.replace("_", "-")
                raise ValueError(f"{flag} {given[k]} disagrees with the checkpoint's {have[k]} "
                                 f"(--init-from {path}); leave the flag out to take the "
                                 f"checkpoint's")
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
            raise ValueError(f"--init-from {path}: the checkpoint's vocabulary is the "
                             f"{run.tokenizer} tokenizer's ({run.n} tokens); pass --data (a text "
                             f"file or folder, or a datasets name) to fine-tune on")
        out["data"] = "builtin"
    return out
