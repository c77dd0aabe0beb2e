"""One source of training configuration: the presets, the TrainConfig fields (each with its help
text), and the command line generated from them (`add_flags`, `from_args`).

A field left None means "not given": `TrainConfig.from_preset` fills it from the preset (PRESETS,
the only place presets live), then from the --init-from checkpoint (graph, noise, model shape,
tokenizer, length), then from the graph's own rules (its default noise schedule)."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, dataclass, field, fields

from .cli import nonneg_int, positive_float, positive_int, unit_interval
from .graphs import graph_class
from .model import ModelConfig

from .presets import MODEL_FIELDS, PRESETS, model_preset  # noqa: F401  (the presets' one home)


def _f(help, default=None, check=None, flag=None, choices=None):
    """A TrainConfig field with its command-line flag: `check` an argparse type, `flag` the flag
    name when it is not --field-name (e.g. --no-report for a True default)."""
    return field(default=default, metadata=dict(help=help, check=check, flag=flag, choices=choices))


@dataclass
class TrainConfig:
    preset: str = _f("model and schedule sizes (default tiny)", "tiny", choices=sorted(PRESETS))
    model: str = _f("sedd (default): a SEDD model (DDiT, score entropy); ar: the autoregressive "
                    "baseline of the same size class (causal, next-token cross-entropy; sedd.ar)",
                    "sedd", choices=["sedd", "ar"])
    data: str | None = _f("builtin (default for tiny), a text file or folder, or a datasets name "
                          "(openwebtext, wikitext2, wikitext103, ptb, lm1b, lambada, text8)")
    tokenizer: str | None = _f("gpt2, gpt2:PATH.tiktoken, bpe[:N], char, or a path (ignored for "
                               "builtin)")
    graph: str = _f("forward process: absorb (default), uniform, or general:PATH (a [V, V] rate "
                    "matrix Q saved with torch.save or as .npy; Q[y, x] = rate x -> y)", "absorb")
    noise: str | None = _f("noise schedule (default: the graph's, loglinear for absorb)",
                           choices=["loglinear", "geometric"])
    steps: int | None = _f("total optimizer steps of the run (resume continues to it)",
                           check=positive_int)
    batch_size: int | None = _f("sequences per optimizer step and process (before --accum)",
                                check=positive_int)
    accum: int = _f("gradient accumulation micro-batches per step", 1, positive_int)
    seq_len: int | None = _f("tokens per sequence", check=positive_int)
    lr: float | None = _f("peak learning rate (AdamW, linear warm-up, then constant)",
                          check=positive_float)
    warmup: int | None = _f("warm-up steps", check=nonneg_int)
    grad_clip: float = _f("gradient-norm clipping", 1.0, positive_float)
    ema: float | None = _f("EMA decay of the weights used for eval and samples", check=unit_interval)
    out: str = _f("output folder", "runs/sedd")
    resume: bool = _f("continue from OUT/checkpoints/latest", False)
    init_from: str | None = _f("fine-tune: start from this checkpoint's weights (any layout; EMA "
                               "initialised from them)")
    init_weights: str = _f("which weights of --init-from", "ema", choices=["ema", "raw"])
    cache_dir: str | None = _f("token files and trained tokenizers (default $SEDD_CACHE or "
                               "~/.cache/sedd)")
    device: str | None = _f("cpu, cuda or cuda:N (default: cuda if available)")
    seed: int = _f("seed of data order, noise levels, perturbations", 0, nonneg_int)
    eval_every: int | None = _f("steps between held-out eval losses", check=positive_int)
    eval_batches: int = _f("batches of the held-out loss", 4, positive_int)
    save_every: int | None = _f("steps between checkpoints", check=positive_int)
    sample_every: int | None = _f("steps between sample files", check=positive_int)
    sample_steps: int | None = _f("sampler steps for periodic samples", check=positive_int)
    log_every: int = _f("steps between metric rows (the loss is read from the device then)", 10,
                        positive_int)
    hidden_size: int | None = _f("override the preset's hidden size", check=positive_int)
    n_blocks: int | None = _f("override the preset's number of blocks", check=positive_int)
    n_heads: int | None = _f("override the preset's number of heads", check=positive_int)
    cond_dim: int | None = _f("override the preset's width of the noise condition",
                              check=positive_int)
    dropout: float | None = _f("override the preset's dropout", check=unit_interval)
    parametrisation: str = _f("score (default): the paper's sigma-conditioned network; clean: "
                              "time-independent absorbing model, log p(y | x) turned into scores "
                              "analytically (exact sampling cache)", "score",
                              choices=["score", "clean"])
    reference_loss: bool = _f("plain-PyTorch loss instead of the fused kernel", False)
    fused_linear: bool = _f("materialise the [B, L, V] log-scores and apply the fused loss to "
                            "them, instead of fusing the output projection into the loss "
                            "(linear_score_entropy, the default)", True, flag="--no-fused-linear")
    fsdp: bool = _f("FullyShardedDataParallel instead of DDP (GPUs, torchrun)", False)
    compile: bool = _f("torch.compile the model (trunk + fused loss, fullgraph; the first steps "
                       "pay the compilation)", False)
    progress: bool = _f("no progress bar", True, flag="--no-progress")
    final_report: bool = _f("skip the final samples and likelihood report", True, flag="--no-report")

    # ---- building
    @classmethod
    def from_preset(cls, preset: str, **overrides) -> "TrainConfig":
        """The preset's values, then the overrides that are not None, then what --init-from's
        checkpoint fixes, then the graph's default noise; validated."""
        if preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig field(s): {', '.join(unknown)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        values = {**PRESETS[preset], **given, "preset": preset}
        if given.get("init_from"):
            values.update(inherit_from_checkpoint(given["init_from"], given,
                                                  check=not given.get("resume")))
        if values.get("model") == "ar":
            sedd_only = [k for k in ("graph", "noise", "parametrisation", "reference_loss")
                         if k in given and given[k] != getattr(cls, k, None)]
            if sedd_only:
                raise ValueError(f"bad configuration: --model ar has no "
                                 f"{', '.join('--' + k.replace('_', '-') for k in sedd_only)} "
                                 f"(a SEDD model's settings)")
        cfg = cls(**values)
        if cfg.noise is None and cfg.model != "ar":
            cfg.noise = cfg.graph_rules().default_noise
        cfg.validate()
        return cfg

    def graph_rules(self):
        """The Graph class of --graph (its rules are class attributes)."""
        try:
            return graph_class(self.graph)
        except ValueError:
            raise ValueError(f"bad configuration: --graph must be absorb, uniform or "
                             f"general:PATH, got {self.graph!r}") from None

    def validate(self):
        def need(cond, msg):
            if not cond:
                raise ValueError(f"bad configuration: {msg}")
        for f in fields(self):
            if f.metadata.get("check") is not None and getattr(self, f.name) is not None:
                try:
                    f.metadata["check"](flag_name(f))(str(getattr(self, f.name)))
                except argparse.ArgumentTypeError as e:
                    need(False, str(e))
            choices = f.metadata.get("choices")
            if choices and getattr(self, f.name) is not None:
                need(getattr(self, f.name) in choices,
                     f"{flag_name(f)} must be one of {', '.join(choices)}, got {getattr(self, f.name)!r}")
        cls = self.graph_rules()
        need(self.parametrisation == "score" or cls.supports_clean,
             f"--parametrisation clean needs --graph absorb, got {self.graph!r}")
        H, heads = self.hidden_size, self.n_heads
        need(H % heads == 0, f"--hidden-size {H} is not divisible by --n-heads {heads}")
        need((H // heads) % 2 == 0, f"the head width --hidden-size / --n-heads = {H // heads} "
                                    f"must be even (rotary positions)")

    def model_config(self, vocab_size: int) -> ModelConfig:
        """The network of the run over `vocab_size` ids (SEDD: the graph's V; AR: n + 1, BOS)."""
        if self.init_from:      # the checkpoint's network (its window included), new dropout
            from .hub import read_run_config
            m = read_run_config(self.init_from).model.to_dict()
            return ModelConfig(**{**m, "dropout": self.dropout})
        if self.model == "ar":
            return ModelConfig(vocab_size=vocab_size, scale_by_sigma=False, max_length=self.seq_len,
                               arch="ar", **{k: getattr(self, k) for k in MODEL_FIELDS})
        return ModelConfig(vocab_size=vocab_size, scale_by_sigma=self.graph_rules().scale_by_sigma,
                           max_length=self.seq_len, parametrisation=self.parametrisation,
                           **{k: getattr(self, k) for k in MODEL_FIELDS})

    def vocab_size(self, n: int) -> int:
        """Network ids over n real tokens: the graph's V (SEDD) or n + 1 with BOS (AR)."""
        return n + 1 if self.model == "ar" else self.graph_rules().vocab_size(n)


# ---- the command line, generated from the fields
def flag_name(f) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def add_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, with its help text, type and range; defaults None (= not
    given: the preset's)."""
    for f in fields(TrainConfig):
        name, meta = flag_name(f), f.metadata
        default = f.default if f.default is not MISSING else None
        if isinstance(default, bool):      # store_true; --no-x (dest no_x) for those that default True
            parser.add_argument(name, action="store_true", help=meta["help"])
            continue
        kind = meta["check"](name) if meta.get("check") else (float if "float" in str(f.type) else str)
        extra = {"choices": meta["choices"]} if meta.get("choices") else {}
        shown = f" (default {default})" if default is not None and "default" not in meta["help"] else ""
        parser.add_argument(name, dest=f.name, type=kind, default=None,
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
    return TrainConfig.from_preset(given.pop("preset") or "tiny", **given)


# ---- fine-tuning
INHERITED = ("model", "graph", "noise", "hidden_size", "n_blocks", "n_heads", "cond_dim",
             "parametrisation")


def inherit_from_checkpoint(path: str, given: dict, check: bool = True) -> dict:
    """The TrainConfig fields a fine-tuning run takes from its --init-from checkpoint (graph,
    noise, model shape, tokenizer, training length). A flag the user gave that disagrees is an
    error (dropout and the length may be changed: the length up to the model's window)."""
    from .hub import read_run_config
    run = read_run_config(path)
    m = run.model
    have = {"model": "ar" if m.arch == "ar" else "sedd", "hidden_size": m.hidden_size,
            "n_blocks": m.n_blocks, "n_heads": m.n_heads, "cond_dim": m.cond_dim}
    if m.arch != "ar":
        have.update(graph=run.graph, noise=run.noise["name"], parametrisation=m.parametrisation)
    if check:
        for k in INHERITED:
            if k in given and k in have and given[k] != have[k]:
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
            raise ValueError(f"--init-from {path}: the checkpoint's vocabulary is the "
                             f"{run.tokenizer} tokenizer's ({run.n} tokens); pass --data (a text "
                             f"file or folder, or a datasets name) to fine-tune on")
        out["data"] = "builtin"
    return out


def estimate_memory(cfg: TrainConfig, model_cfg: ModelConfig, device: str = "cpu") -> dict:
    """A rough upper estimate of a run's memory in bytes, by part: weights with gradients, AdamW
    state and the EMA copy (5 fp32 copies); activations kept for backward (about 20 values per
    token, width and block: bf16 under CUDA autocast, fp32 on the CPU) and the [tokens, V]
    log-score block (a chunk of rows when the projection is fused); the built-in corpus's
    sequences (int64, generated once)."""
    H, C, V, n = model_cfg.hidden_size, model_cfg.cond_dim, model_cfg.vocab_size, model_cfg.n_blocks
    params = 2 * V * H + V + n * (12 * H * H + 6 * H * C + 13 * H) + 2 * H * C + 256 * C + C * C
    tokens = cfg.batch_size * cfg.seq_len
    act = 2 if str(device).startswith("cuda") else 4
    parts = {"weights, gradients, optimizer, EMA": 20 * params,
             "activations": act * 20 * tokens * H * n,
             "log-scores": 4 * 3 * V * (min(tokens, 1024) if cfg.fused_linear else tokens)}
    if cfg.data == "builtin":
        parts["built-in corpus"] = 2 * 8 * 21_000 * cfg.seq_len
    return parts
