"""The model-family protocol: everything the trainer, the evaluation, the loader and the doors
ask of a kind of model. A family is one module of sedd/families/ with one `Family` subclass,
registered by name (`@register`); nothing outside the family modules compares family names.

A family answers, as a class (no run needed):
- `options`: the TrainConfig fields only it reads, declared like the shared ones
  (sedd.core.options.option); another family refuses them when they are given;
- `configure(cfg)`: fill its defaults in a TrainConfig and refuse what it cannot run;
- `vocab_size(cfg, n)`, `model_config(cfg, V)`, `check_network(config)`, `build_network(config)`:
  the network it trains over n real tokens;
- `read_record(cfg, model, source)`: what this project's checkpoint config records for it (the
  RunConfig fields graph, n, noise), read and checked; `inherited(run)`: the TrainConfig values a
  fine-tuning run takes from such a checkpoint;
- `conditions` (what `generate` honours: "prefix", "suffix", "infill", "windows"),
  `sample_options` (the sampling settings it reads), `exact_likelihood`, `paper_layout`.

and, bound to a run's process (`bind(graph, noise, ...)`, or `for_config` / `for_run`):
- `loss` (the trainer's scalar), `eval_loss`, `nll` (a bound or an exact NLL, per sequence),
  `generate` (and `preview`, the trainer's periodic samples), `record()` (what the checkpoint
  records), `describe()`.

Imports: sedd.core, sedd.nn, sedd.sampling."""

from __future__ import annotations

from typing import ClassVar

import torch

from ..core.options import ConfigError
from ..nn.layers import ModelConfig

MODEL_FIELDS = ("hidden_size", "n_blocks", "n_heads", "cond_dim", "dropout")


class Family:
    name: ClassVar[str]                     # the registry key: --model NAME, ModelConfig.family
    title: ClassVar[str]                    # in messages: "SEDD", "autoregressive"
    summary: ClassVar[str]                  # one line of --model's help
    options: ClassVar[dict] = {}            # TrainConfig fields only this family reads
    inherited_options: ClassVar[tuple[str, ...]] = ()   # of those, fixed by an --init-from checkpoint
    conditions: ClassVar[frozenset] = frozenset()       # "prefix", "suffix", "infill", "windows"
    no_condition: ClassVar[str] = ""        # why a condition it lacks cannot be honoured
    sample_options: ClassVar[tuple[str, ...]] = ()      # sampling settings generate() reads
    exact_likelihood: ClassVar[bool] = False  # nll() is the exact NLL (else an upper bound)
    likelihood_note: ClassVar[str] = "its exact NLL"   # how evaluate.py describes an exact figure
    paper_layout: ClassVar[bool] = False    # can be written in the paper's checkpoint layout

    # ---- config and network
    @classmethod
    def configure(cls, cfg) -> None:
        """Fill the family's defaults in a TrainConfig; raise ValueError("bad configuration:
        ...") for what it cannot run."""

    @classmethod
    def vocab_size(cls, cfg, n: int) -> int:
        """The network's V over n real tokens."""
        raise NotImplementedError

    @classmethod
    def model_config(cls, cfg, vocab_size: int) -> ModelConfig:
        """The network of a TrainConfig over `vocab_size` ids."""
        return ModelConfig(vocab_size=vocab_size, max_length=cfg.seq_len, family=cls.name,
                           **{k: getattr(cfg, k) for k in MODEL_FIELDS},
                           **cls.network_options(cfg))

    @classmethod
    def network_options(cls, cfg) -> dict:
        """The ModelConfig fields this family sets from a TrainConfig (beyond the shape)."""
        return {}

    @classmethod
    def check_network(cls, config: ModelConfig) -> None:
        """Refuse a ModelConfig this family's network cannot be (ValueError)."""

    @classmethod
    def check_loaded_network(cls, config: ModelConfig, source: str) -> None:
        """check_network on a checkpoint's ModelConfig: a ConfigError naming the source."""
        try:
            cls.check_network(config)
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None

    @classmethod
    def build_network(cls, config: ModelConfig) -> torch.nn.Module:
        raise NotImplementedError

    # ---- checkpoints
    @classmethod
    def read_record(cls, cfg: dict, model: ModelConfig, source: str) -> dict:
        """The RunConfig fields graph, n and noise from this project's config.json (ConfigError
        naming the field when something is wrong)."""
        raise NotImplementedError

    @classmethod
    def inherited(cls, run) -> dict:
        """The family's TrainConfig options fixed by the checkpoint `run` (a RunConfig)."""
        return {}

    def record(self) -> dict:
        """What a checkpoint records of the run's process: {"graph", "n", "noise"}."""
        raise NotImplementedError

    # ---- a run
    @classmethod
    def bind(cls, graph=None, noise=None, cfg=None) -> "Family":
        """The family bound to a run's process (SEDD: its graph and noise schedule), with the
        family's options of a TrainConfig `cfg` (None: their defaults)."""
        return cls()

    @classmethod
    def for_config(cls, cfg, n: int) -> "Family":
        """The process a TrainConfig asks for, over n real tokens."""
        return cls.bind(cfg=cfg)

    @classmethod
    def for_run(cls, run, cfg=None) -> "Family":
        """The process a checkpoint recorded (a RunConfig); options from `cfg` when given."""
        return cls.bind(run.build_graph(), run.build_noise(), cfg)

    def network_vocab_size(self, n: int) -> int:
        """The network's V over n real tokens, for this process."""
        raise NotImplementedError

    def describe(self) -> str:
        return self.summary

    def loss(self, model, x0, generator, scale: float = 1.0) -> torch.Tensor:
        """The trainer's scalar: scale · mean over the batch of the per-sequence loss (nats)."""
        raise NotImplementedError

    def eval_loss(self, model, x0, generator) -> torch.Tensor:
        raise NotImplementedError

    def nll(self, model, x0, generator=None, timesteps: int = 32, *,
            low_discrepancy: bool = False):
        """(per-sequence NLL or its bound [N] nats, prior term [N], standard error [N])."""
        raise NotImplementedError

    def generate(self, model, num_samples: int, length: int, *, condition=None, generator=None,
                 device=None, temperature: float = 1.0, top_p: float = 1.0,
                 stop_at_eos: bool = False, eos: int | None = None, cache: bool = True,
                 progress: bool = False, return_stats: bool = False, **options):
        """Samples [num_samples, length] (a list of rows with stop_at_eos), or (that,
        SampleStats). condition: (tokens, given) as sedd.sampling.sample's, within
        `conditions`; options: the family's `sample_options`."""
        raise NotImplementedError

    def preview(self, model, num_samples: int, length: int, steps: int, generator, device):
        """The trainer's periodic samples (`steps` read where the family samples in steps)."""
        kw = {"steps": steps} if "steps" in self.sample_options else {}
        return self.generate(model, num_samples, length, generator=generator, device=device, **kw)


FAMILIES: dict[str, type[Family]] = {}


def register(cls: type[Family]) -> type[Family]:
    """Class decorator: add a family to the registry under cls.name."""
    if cls.name in FAMILIES:
        raise ValueError(f"model family {cls.name!r} is already registered")
    FAMILIES[cls.name] = cls
    return cls


def get_family(name: str) -> type[Family]:
    if name not in FAMILIES:
        raise ValueError(f"family must be one of {', '.join(map(repr, sorted(FAMILIES)))}, got "
                         f"{name!r}")
    return FAMILIES[name]


def unwrap(model):
    """The network inside DDP / FSDP wrappers."""
    return getattr(model, "module", model)


__all__ = ["ConfigError", "FAMILIES", "Family", "MODEL_FIELDS", "get_family", "register", "unwrap"]
