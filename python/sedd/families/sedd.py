"""SEDD: the DDiT trained with score entropy over a graph and a noise schedule (docs/math.md
§1–§6) — the paper's family. Its likelihood figure is the bound of docs/math.md §4; it generates
with the sampler of sedd.sampling (any predictor, any condition: prefix, suffix, infill, and
semi-autoregressive windows past the model's window).

Options only it reads: --graph, --noise, --parametrisation (score: the paper's σ-conditioned
network; clean: the time-independent absorbing model with the exact sampling cache),
--reference-loss, --no-fused-linear."""

from __future__ import annotations

import torch

from ..core.graphs import GRAPHS, get_graph, graph_class
from ..core.losses import batch_loss, likelihood_bound
from ..core.noise import get_noise, noise_spec
from ..core.options import ConfigError, option
from ..nn.ddit import DDiT
from ..sampling.sampler import sample
from .base import Family, register


@register
class SEDD(Family):
    name = "sedd"
    title = "SEDD"
    summary = "a SEDD model (DDiT, score entropy)"
    options = {
        "graph": option("forward process: absorb (default), uniform, or general:PATH (a [V, V] "
                        "rate matrix Q saved with torch.save or as .npy; Q[y, x] = rate x -> y)",
                        "absorb"),
        "noise": option("noise schedule (default: the graph's, loglinear for absorb)",
                        choices=["loglinear", "geometric"]),
        "parametrisation": option("score (default): the paper's sigma-conditioned network; clean: "
                                  "time-independent absorbing model, log p(y | x) turned into "
                                  "scores analytically (exact sampling cache)", "score",
                                  choices=["score", "clean"]),
        "reference_loss": option("plain-PyTorch loss instead of the fused kernel", False),
        "fused_linear": option("materialise the [B, L, V] log-scores and apply the fused loss to "
                               "them, instead of fusing the output projection into the loss "
                               "(linear_score_entropy, the default)", True,
                               flag="--no-fused-linear"),
        "noise_levels": option("training noise levels across a batch: low-discrepancy "
                               "(stratified, MDLM/BD3LM's antithetic sampling; the default) or "
                               "uniform (independent draws, the paper's)",
                               choices=["low-discrepancy", "uniform"]),
    }
    inherited_options = ("graph", "noise", "parametrisation")
    conditions = frozenset({"prefix", "suffix", "infill", "windows"})
    sample_options = ("steps", "predictor", "window", "stride", "tokens_per_step", "threshold",
                      "rank_by", "greedy", "remask", "eta", "loop", "block_length", "kv_cache",
                      "refresh", "compile", "cuda_graph")
    paper_layout = True

    default_noise_levels = "low-discrepancy"

    def __init__(self, graph, noise, *, use_reference: bool = False, fused_linear: bool = True,
                 low_discrepancy: bool = False):
        self.graph, self.noise = graph, noise
        self.use_reference, self.fused_linear = use_reference, fused_linear
        self.low_discrepancy = low_discrepancy

    # ---- config and network
    @staticmethod
    def graph_rules(spec: str):
        """The Graph class of --graph (its rules are class attributes)."""
        try:
            return graph_class(spec)
        except ValueError:
            raise ValueError(f"bad configuration: --graph must be {', '.join(GRAPHS)} or "
                             f"general:PATH, got {spec!r}") from None

    @classmethod
    def configure(cls, cfg):
        if cfg.noise_levels is None:
            cfg.noise_levels = cls.default_noise_levels
        rules = cls.graph_rules(cfg.graph)
        if cfg.noise is None:
            cfg.noise = rules.default_noise
        if not (cfg.parametrisation == "score" or rules.supports_clean):
            raise ValueError(f"bad configuration: --parametrisation clean needs --graph absorb, "
                             f"got {cfg.graph!r}")

    @classmethod
    def vocab_size(cls, cfg, n):
        return cls.graph_rules(cfg.graph).vocab_size(n)

    @classmethod
    def network_options(cls, cfg):
        return dict(scale_by_sigma=cls.graph_rules(cfg.graph).scale_by_sigma,
                    parametrisation=cfg.parametrisation)

    @classmethod
    def build_network(cls, config):
        return DDiT(config)

    # ---- checkpoints
    @classmethod
    def read_record(cls, cfg, model, source):
        graph = cfg.get("graph", "absorb")
        try:
            gcls = graph_class(graph)
        except ValueError:
            raise ConfigError(f"{source}: unknown graph type {graph!r}: expected "
                              f"{', '.join(GRAPHS)} or general:PATH") from None
        if "n" in cfg:
            n = int(cfg["n"])
        else:    # V = n (+ 1 for the absorbing mask)
            n = model.vocab_size - gcls.vocab_size(0)
        if gcls in GRAPHS.values() and model.vocab_size != gcls.vocab_size(n):
            raise ConfigError(f"{source}: the {graph} graph over n = {n} tokens needs vocab_size "
                              f"{gcls.vocab_size(n)}, the model has {model.vocab_size}")
        noise = dict(cfg.get("noise") or {"name": gcls.default_noise})
        noise = noise_spec(noise.pop("name", gcls.default_noise), **noise)
        if model.time_independent and not gcls.supports_clean:
            raise ConfigError(f"{source}: a time-independent ('clean') model needs the absorbing "
                              f"graph, the config says {graph!r}")
        return dict(graph=graph, n=n, noise=noise)

    @classmethod
    def inherited(cls, run):
        return dict(graph=run.graph, noise=run.noise["name"],
                    parametrisation=run.model.parametrisation)

    def record(self):
        return {"graph": self.graph.spec, "n": self.graph.n,
                "noise": {"name": self.noise.name, **vars(self.noise)}}

    # ---- a run
    @classmethod
    def bind(cls, graph=None, noise=None, cfg=None):
        if cfg is None:
            return cls(graph, noise)
        return cls(graph, noise, use_reference=cfg.reference_loss, fused_linear=cfg.fused_linear,
                   low_discrepancy=cfg.noise_levels == "low-discrepancy")

    @classmethod
    def for_config(cls, cfg, n):
        graph = get_graph(cfg.graph, n)
        if graph.V < n:
            raise ValueError(f"--graph {cfg.graph}: Q has {graph.V} states but the tokenizer has "
                             f"{n} tokens")
        return cls.bind(graph, get_noise(cfg.noise), cfg)

    def network_vocab_size(self, n):
        return self.graph.V

    def describe(self):
        return f"graph {self.graph.name}, noise {self.noise.name}"

    def loss(self, model, x0, generator, scale=1.0):
        """The trainer's loss: its batches are checked on the host (Trainer.batch), so the kernels'
        device-side value checks are off (no host syncs on CUDA)."""
        return batch_loss(model, x0, self.graph, self.noise, generator,
                          use_reference=self.use_reference, fused_linear=self.fused_linear,
                          scale=scale, validate=False, low_discrepancy=self.low_discrepancy)

    def eval_loss(self, model, x0, generator) -> torch.Tensor:
        return batch_loss(model, x0, self.graph, self.noise, generator,
                          fused_linear=self.fused_linear)

    def nll(self, model, x0, generator=None, timesteps=32, *, low_discrepancy=False):
        """The likelihood bound per sequence (docs/math.md §4), its prior term and standard error."""
        return likelihood_bound(model, x0, self.graph, self.noise, timesteps, generator,
                                batch_low_discrepancy=low_discrepancy)

    def generate(self, model, num_samples, length, *, condition=None, generator=None,
                 device=None, temperature=1.0, top_p=1.0, stop_at_eos=False, eos=None,
                 cache=True, progress=False, return_stats=False, steps=128,
                 predictor="analytic", **options):
        return sample(model, self.graph, self.noise, num_samples, length, steps, predictor,
                      condition=condition, generator=generator, device=device,
                      progress=progress, cache=cache, return_stats=return_stats,
                      temperature=temperature, top_p=top_p, stop_at_eos=stop_at_eos, eos=eos,
                      **options)


SEDDObjective = SEDD      # the name of this class before the family seam (sedd.objectives)
