"""What a checkpoint says about its run, typed: the network's shape, the graph, the noise schedule,
the tokenizer and the data — read from this project's config or from the paper's.

Two config formats reach the loaders:

- this project's (`config.json` of a checkpoint or Hub folder): ``model`` (a ModelConfig),
  ``graph`` ("absorb", "uniform" or "general:PATH"), ``n`` (real tokens), ``noise``
  ({"name": ..., schedule arguments}) and ``train`` (the TrainConfig: data, tokenizer, seq_len);
- the paper's (louaaron/Score-Entropy-Discrete-Diffusion: its hydra config, stored as JSON in a
  Hub folder's config.json or as YAML in a run's .hydra/config.yaml): ``tokens`` (real tokens:
  the absorbing graph adds the mask, V = tokens + 1), ``graph.type``, ``noise.type`` with
  ``sigma_min``/``sigma_max``, ``model.{hidden_size, cond_dim, n_blocks, n_heads, dropout,
  scale_by_sigma, length}``, ``data.train`` and ``training.ema``. The paper's code always uses
  GPT-2's tokenizer, and its log-linear schedule has ε = 1e-3 fixed in code (``sigma_min`` and
  ``sigma_max`` are read by the geometric schedule only; for the log-linear one they are unused
  there too, and `notes` says so).

`RunConfig.from_dict` reads either, checks every field it uses and names what is wrong;
`to_dict` writes ours and `paper_dict` the paper's (what its `SEDD.from_pretrained` reads)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..core.graphs import GRAPHS, get_graph

PAPER_GRAPHS = ("absorb", "uniform")   # the graph types of the paper's code
from ..core.noise import NOISES, get_noise, noise_spec
from ..core.options import ConfigError, number as _num
from ..data.corpora import WordTokenizer, get_tokenizer, text_files
from ..data.language import builtin_language
from ..families import build_model, get_family
from ..nn.layers import ModelConfig

PAPER_LOGLINEAR_EPS = 1e-3     # noise_lib.LogLinearNoise of the paper's code
_PAPER_MODEL_KEYS = ("hidden_size", "cond_dim", "n_blocks", "n_heads", "dropout", "scale_by_sigma",
                     "length")


def _bool(value, what):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"{what} must be true or false, got {value!r}")


def _section(cfg: dict, key: str, source: str) -> dict:
    sec = cfg.get(key)
    if not isinstance(sec, dict):
        raise ConfigError(f"{source}: the paper's config needs a {key!r} section, "
                          f"got {type(sec).__name__ if sec is not None else 'none'}")
    return sec


@dataclass
class RunConfig:
    model: ModelConfig
    graph: str | None             # "absorb", "uniform" or "general:PATH"; None: autoregressive
    n: int                        # real tokens (the absorbing graph's V is n + 1)
    noise: dict                   # {"name": "loglinear"|"geometric", arguments}
    tokenizer: str = "gpt2"       # sedd.data.get_tokenizer spec; "builtin" for the built-in words
    data: str = "builtin"
    seq_len: int | None = None    # the training length (None: the model's max_length)
    seed: int = 0
    cache_dir: str | None = None
    layout: str = "sedd-kernels"  # or "paper"
    ema_decay: float | None = None
    train: dict = field(default_factory=dict)   # this project's TrainConfig fields, as saved
    notes: list = field(default_factory=list)   # what a reader should be told (printed by doors)

    # ---- reading
    @classmethod
    def from_dict(cls, cfg, source: str = "config") -> "RunConfig":
        if not isinstance(cfg, dict):
            raise ConfigError(f"{source}: expected a JSON/YAML mapping, got {type(cfg).__name__}")
        if "tokens" in cfg:
            return cls._from_paper(cfg, source)
        if isinstance(cfg.get("model"), dict) and "vocab_size" in cfg["model"]:
            return cls._from_ours(cfg, source)
        raise ConfigError(f"{source}: neither this project's config (model.vocab_size) nor the "
                          f"paper's (tokens, graph, noise, model)")

    @classmethod
    def _from_ours(cls, cfg, source):
        """This project's config.json: the family's record (graph, n, noise) read by the family."""
        try:
            model = ModelConfig(**cfg["model"])
            family = get_family(model.family)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{source}: model: {e}") from None
        record = family.read_record(cfg, model, source)
        train = dict(cfg.get("train") or {})
        data = train.get("data", cfg.get("data", "builtin"))
        tokenizer = "builtin" if data == "builtin" else (train.get("tokenizer") or "gpt2")
        return cls(model=model, **record, tokenizer=tokenizer, data=data,
                   seq_len=train.get("seq_len"), seed=int(train.get("seed", 0)),
                   cache_dir=train.get("cache_dir") or None, layout="sedd-kernels",
                   ema_decay=train.get("ema"), train=train)

    @property
    def family(self):
        """The model family (a sedd.families class)."""
        return get_family(self.model.family)

    def process(self, **settings):
        """The family bound to what this checkpoint recorded (SEDD: its graph and noise)."""
        return self.family.for_run(self, **settings)

    @classmethod
    def _from_paper(cls, cfg, source):
        tokens = _num(cfg["tokens"], f"{source}: tokens", int)
        if tokens < 2:
            raise ConfigError(f"{source}: tokens must be >= 2, got {tokens}")
        gtype = _section(cfg, "graph", source).get("type")
        if gtype not in PAPER_GRAPHS:
            raise ConfigError(f"{source}: unknown graph type {gtype!r}: expected one of "
                              f"{', '.join(PAPER_GRAPHS)}")
        gcls = GRAPHS[gtype]
        nsec = dict(_section(cfg, "noise", source))
        ntype = nsec.pop("type", None)
        notes = []
        if ntype == "loglinear":
            unused = [k for k in ("sigma_min", "sigma_max") if k in nsec]
            eps = nsec.pop("eps", PAPER_LOGLINEAR_EPS)
            for k in unused:
                nsec.pop(k)
            if unused:
                notes.append(f"noise: log-linear with eps = {eps:g} (the paper's code); its "
                             f"{' and '.join(unused)} are unused by this schedule, as there")
            noise = noise_spec("loglinear", eps=eps, **nsec)
        elif ntype == "geometric":
            for k in ("sigma_min", "sigma_max"):
                if k not in nsec:
                    raise ConfigError(f"{source}: the geometric schedule needs noise.{k}")
            noise = noise_spec("geometric", **nsec)
        else:
            raise ConfigError(f"{source}: unknown noise type {ntype!r}: expected one of "
                              f"{', '.join(NOISES)}")
        m = _section(cfg, "model", source)
        missing = [k for k in _PAPER_MODEL_KEYS if k not in m]
        if missing:
            raise ConfigError(f"{source}: model is missing {', '.join(missing)}")
        if m.get("type", "ddit") != "ddit":
            raise ConfigError(f"{source}: model.type {m['type']!r} is not the DDiT ('ddit')")
        scale = _bool(m["scale_by_sigma"], f"{source}: model.scale_by_sigma")
        if scale and not gcls.scale_by_sigma:
            raise ConfigError(f"{source}: model.scale_by_sigma needs the absorbing graph (the "
                              f"paper's code asserts it), the graph is {gtype!r}")
        try:
            model = ModelConfig(vocab_size=gcls.vocab_size(tokens),
                                hidden_size=_num(m["hidden_size"], "model.hidden_size", int),
                                n_blocks=_num(m["n_blocks"], "model.n_blocks", int),
                                n_heads=_num(m["n_heads"], "model.n_heads", int),
                                cond_dim=_num(m["cond_dim"], "model.cond_dim", int),
                                dropout=_num(m["dropout"], "model.dropout"),
                                scale_by_sigma=scale,
                                max_length=_num(m["length"], "model.length", int))
        except ValueError as e:
            raise ConfigError(f"{source}: {e}") from None
        check_model_shape(model, source)
        data = cfg.get("data", {}).get("train", "openwebtext") if isinstance(
            cfg.get("data"), dict) else "openwebtext"
        training = cfg.get("training") if isinstance(cfg.get("training"), dict) else {}
        ema = _num(training["ema"], "training.ema") if "ema" in training else None
        # the paper's code always tokenizes with GPT-2; a folder this project exported from a
        # model of the built-in language says data.train = builtin
        tokenizer = "builtin" if data == "builtin" else "gpt2"
        return cls(model=model, graph=gtype, n=tokens, noise=noise, tokenizer=tokenizer, data=data,
                   seq_len=model.max_length, layout="paper", ema_decay=ema, notes=notes)

    # ---- building
    @property
    def V(self) -> int:
        return self.model.vocab_size

    def build_graph(self):
        """The graph (None for a family without one, e.g. the autoregressive baseline)."""
        return None if self.graph is None else get_graph(self.graph, self.n)

    def build_noise(self):
        """The noise schedule (None for a family without one)."""
        return get_noise(**self.noise) if self.noise else None

    def build_model(self):
        """The network, built by its family (sedd.families.build_model)."""
        return build_model(self.model)

    def build_tokenizer(self, override: str | None = None):
        """The run's tokenizer (or `override`, a get_tokenizer spec such as gpt2:PATH.tiktoken
        for offline use), checked against the vocabulary."""
        spec = override or self.tokenizer
        if spec == "builtin":
            tok = WordTokenizer(builtin_language())
        else:
            files = None
            if spec.startswith("bpe") and self.data != "builtin":
                try:
                    files = text_files(self.data)
                except FileNotFoundError:
                    files = None
            tok = get_tokenizer(spec, files, self.cache_dir)
        self.check_tokenizer(tok, spec)
        return tok

    def check_tokenizer(self, tok, spec: str):
        general = bool(self.graph) and self.graph.startswith("general:")
        if (tok.n != self.n) if not general else (tok.n > self.n):
            raise ConfigError(f"tokenizer {spec!r} has {tok.n} tokens but the checkpoint's "
                              f"vocabulary has {self.n} real tokens (V = {self.V})")

    # ---- writing
    def to_dict(self) -> dict:
        """This project's config.json."""
        train = dict(self.train) or {"data": self.data, "tokenizer": self.tokenizer,
                                     "seq_len": self.seq_len, "seed": self.seed}
        return {"train": train, "model": self.model.to_dict(), "graph": self.graph, "n": self.n,
                "noise": dict(self.noise), "data": self.data}

    def paper_dict(self) -> dict:
        """The paper's hydra config (as its SEDD.from_pretrained reads config.json). Refuses what
        the paper's code cannot represent exactly."""
        m = self.model
        if not self.family.paper_layout:
            raise ConfigError(f"the paper's code has no {self.family.title} model; save it with "
                              f"layout='sedd-kernels'")
        if self.graph not in PAPER_GRAPHS:
            raise ConfigError(f"the paper's code has no graph {self.graph!r} (absorb or uniform)")
        if m.time_independent:
            raise ConfigError("the paper's code has no time-independent ('clean') model")
        if m.scale_by_sigma != GRAPHS[self.graph].scale_by_sigma:
            raise ConfigError(f"scale_by_sigma = {m.scale_by_sigma} with the {self.graph} graph "
                              f"cannot be written for the paper's code")
        noise = {"type": self.noise["name"]}
        if self.noise["name"] == "loglinear":
            eps = self.noise.get("eps", PAPER_LOGLINEAR_EPS)
            if not math.isclose(eps, PAPER_LOGLINEAR_EPS, rel_tol=0, abs_tol=1e-15):
                raise ConfigError(f"the paper's log-linear schedule has eps = "
                                  f"{PAPER_LOGLINEAR_EPS:g} fixed; this model's is {eps:g}")
            noise.update(sigma_min=1e-4, sigma_max=20.0)      # the paper's defaults (unused)
        else:
            noise.update(sigma_min=float(self.noise["sigma_min"]),
                         sigma_max=float(self.noise["sigma_max"]))
        return {
            "tokens": self.n,
            "graph": {"type": self.graph, "file": "data", "report_all": False},
            "noise": noise,
            "model": {"name": "sedd-kernels", "type": "ddit", "hidden_size": m.hidden_size,
                      "cond_dim": m.cond_dim, "length": m.max_length, "n_blocks": m.n_blocks,
                      "n_heads": m.n_heads, "scale_by_sigma": m.scale_by_sigma,
                      "dropout": m.dropout},
            "data": {"train": self.data, "valid": self.data, "cache_dir": "data"},
            "training": {"ema": self.ema_decay if self.ema_decay is not None else 0.9999},
            "sampling": {"predictor": "euler", "steps": 128, "noise_removal": True},
        }


def check_model_shape(model: ModelConfig, source: str = "config"):
    for k in ("hidden_size", "n_blocks", "n_heads", "cond_dim", "max_length"):
        if getattr(model, k) < 1:
            raise ConfigError(f"{source}: model.{k} must be >= 1, got {getattr(model, k)}")
    if model.hidden_size % model.n_heads:
        raise ConfigError(f"{source}: hidden_size {model.hidden_size} is not divisible by "
                          f"n_heads {model.n_heads}")
    if (model.hidden_size // model.n_heads) % 2:
        raise ConfigError(f"{source}: the head width hidden_size / n_heads = "
                          f"{model.hidden_size // model.n_heads} must be even (rotary positions)")
    if not 0 <= model.dropout < 1:
        raise ConfigError(f"{source}: dropout must be in [0, 1), got {model.dropout}")
