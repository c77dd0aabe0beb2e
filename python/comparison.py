"""The paper's claims, measured: an autoregressive baseline against SEDD (absorbing and uniform)
and block diffusion (K = 4, 16) trained alike, compared on likelihood, sample quality against
network evaluations, the fast-decoding predictors' trade, and infilling — on the built-in language
exactly, elsewhere through a causal LM.

What is run (`run_comparison`):

1. Training: the models of MODELS with the same data, tokenizer, trainer, schedule and number of
   tokens; the AR model gets the DDiT's width and heads and the number of blocks
   that brings its non-embedding parameter count closest to the DDiT's (the DDiT's time
   conditioning — sigma_map and the adaLN layers — has no AR counterpart; both counts are in the
   results).
2. Likelihood on held-out sequences: the AR model's exact NLL, each SEDD model's likelihood bound
   (± standard error over sequences, timestep noise included), the true language's NLL of the
   same sequences and its entropy rate; perplexity ratios to AR (the paper's "within +10 %").
3. Sample quality against network evaluations: SEDD with the analytic and Euler predictors on a
   grid of steps (and first-hitting on the absorbing graph, whose evaluations are at most the
   length), AR ancestral sampling (L evaluations). Built-in language: the exact NLL of the samples
   under the true language (of the samples it can produce at all), the fraction it can produce
   (valid), and the unigram entropy (degenerate repetition shows as a low one). Other data: the
   generative perplexity under a causal LM (sedd.evaluation.genppl) instead.
4. Fewer network calls at a known cost: every decoding setting of sedd.evaluation.decoding
   (confidence at a fixed k or threshold τ, over the window or sub-blocks with and without the
   dual cache; ReMDM's schedules at 1×, 2× and 4× L calls; first-hitting and the analytic grid
   as references) on sedd-absorb, and those that run within a block on the block models (steps
   per block): network calls and positions computed per generated token, tokens/s, and the
   samples' quality as in 3; the AR row as the reference (the quick level keeps a subset).
5. Infilling: random blanks (a fixed fraction of positions) in held-out sequences, filled by each
   SEDD model (the AR model cannot condition on the right context); on the built-in language the
   exact conditional NLL of the fills given the context, −[log p(x) − log p(x_context)] per
   blank token, against the same figure for the held-out truth, which is a draw from the exact
   conditional (its mean estimates the conditional entropy).

Written to OUT: results.json (the rows, the machine, versions, seeds, settings, timings),
results.csv (the rows), table.md (the printed tables) and compare.png (quality against
evaluations, AR marked, the entropy rate as a line).

The experiment behind python/compare.py; it sits beside the doors, not in the library: it uses
the library as a user would (sedd.config presets, the Trainer, the families' generate and nll)."""

from __future__ import annotations

import csv
import json
import math
import os
import platform
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

import sedd_kernels as sk
from sedd.config import PRESETS, TrainConfig
from sedd.data import get_tokenizer, load_corpus, text_files
from sedd.evaluation import exact_sample_report, lm_sample_report
from sedd.evaluation.decoding import decoding_settings
from sedd.evaluation.genppl import load_causal_lm
from sedd.families import build_model, get_family
from sedd.nn.layers import ModelConfig
from sedd.sampling import get_predictor
from sedd.training import Trainer

_TRAIN = ("hidden_size", "n_blocks", "n_heads", "cond_dim", "steps", "batch_size", "seq_len",
          "lr", "warmup", "ema")


def _level(preset, **measure):
    return {**{k: PRESETS[preset][k] for k in _TRAIN}, "preset": preset, **measure}


LEVELS = {
    # CI-sized: minutes on 2 cores; asserts only that the tables are complete and finite
    "quick": _level("micro", num_samples=16, sample_steps=[4, 16], fh_steps=[4, 16],
                    bound_sequences=32, timesteps=8, infill_sequences=16, infill_steps=16,
                    decoding="quick"),
    # the manual's figures (docs/evaluation.md): about an hour on 2 cores (five models)
    "default": _level("tiny", num_samples=48, sample_steps=[8, 16, 32, 64, 128, 256, 512, 1024],
                      fh_steps=[8, 16, 32, 64], bound_sequences=256, timesteps=32,
                      infill_sequences=48, infill_steps=128, decoding="all"),
}
# the decoding table (sedd.evaluation.decoding; decoding_plan): every setting of the level on
# these models, steps per block on the block models
DECODING_MODELS = ("sedd-absorb", "block-4", "block-16")
# the compared models: row name -> TrainConfig fields. The baseline's depth is matched to the
# DDiT's non-embedding parameter count (match_depth).
BASELINE = "ar"
MODELS = {
    BASELINE: dict(family="ar", match_depth=True),
    "sedd-absorb": dict(family="sedd", graph="absorb"),
    "sedd-uniform": dict(family="sedd", graph="uniform"),
    "block-4": dict(family="block", block_size=4),
    "block-16": dict(family="block", block_size=16),
}


@dataclass
class Settings:
    level: str = "default"
    preset: str | None = None          # a TrainConfig preset instead of the level's sizes
    data: str = "builtin"
    tokenizer: str | None = None
    causal_lm: str | None = None       # scores samples when the data is not the built-in language
    out: str = "runs/compare"
    seed: int = 0
    device: str = "cpu"
    retrain: bool = False
    overrides: dict = field(default_factory=dict)   # any LEVELS key, e.g. steps=300

    def values(self) -> dict:
        v = dict(LEVELS[self.level])
        v.update({k: x for k, x in self.overrides.items() if x is not None})
        return v


# ---- training
def matched_ar_blocks(hidden_size, n_heads, cond_dim, n_blocks, vocab_n) -> tuple[int, int, int]:
    """(AR blocks, AR non-embedding parameters, DDiT non-embedding parameters): the AR depth whose
    non-embedding count is closest to the DDiT's at the same width."""
    ddit = build_model(ModelConfig(vocab_size=vocab_n + 1, hidden_size=hidden_size,
                                   n_blocks=n_blocks, n_heads=n_heads, cond_dim=cond_dim,
                                   max_length=8)).num_parameters()
    best = None
    for k in range(1, 2 * n_blocks + 2):
        ar = build_model(ModelConfig(vocab_size=vocab_n + 1, hidden_size=hidden_size, n_blocks=k,
                                     n_heads=n_heads, scale_by_sigma=False, max_length=8,
                                     family=MODELS[BASELINE]["family"])).num_parameters()
        if best is None or abs(ar - ddit) < abs(best[1] - ddit):
            best = (k, ar)
    return best[0], best[1], ddit


def train_configs(s: Settings, vocab_n: int) -> dict:
    v = s.values()
    shared = dict(data=s.data, tokenizer=s.tokenizer, steps=v["steps"], seed=s.seed,
                  device=s.device, progress=False, final_report=False,
                  eval_every=max(1, v["steps"] // 4), save_every=v["steps"],
                  sample_every=10 ** 9, log_every=max(1, v["steps"] // 20))
    if s.preset is None:
        shared.update({k: v[k] for k in ("batch_size", "seq_len", "lr", "warmup", "ema")},
                      dropout=0.0)
        widths = {k: v[k] for k in ("hidden_size", "n_heads", "cond_dim")}
        blocks = v["n_blocks"]
    else:
        p = PRESETS[s.preset]
        widths = {k: p[k] for k in ("hidden_size", "n_heads", "cond_dim")}
        blocks = p["n_blocks"]
        shared.update({k: s.overrides[k] for k in ("batch_size", "seq_len", "lr", "warmup", "ema")
                       if s.overrides.get(k) is not None})
    ar_blocks, _, _ = matched_ar_blocks(widths["hidden_size"], widths["n_heads"],
                                        widths["cond_dim"], blocks, vocab_n)
    preset = s.preset or v["preset"]
    out = {}
    for name, fields in MODELS.items():
        fields = dict(fields)
        depth = ar_blocks if fields.pop("match_depth", False) else blocks
        out[name] = TrainConfig.from_preset(preset, **shared, **widths, **fields, n_blocks=depth,
                                            out=os.path.join(s.out, name))
    return out


def train_all(s: Settings, log=print) -> dict:
    """Train (or resume to the same step count) the three models; {name: Trainer} with timings."""
    probe = load_corpus(s.data, s.tokenizer or "gpt2", 8, seed=s.seed) if s.data == "builtin" \
        else None
    vocab_n = probe.tokenizer.n if probe is not None else None
    if vocab_n is None:
        files = None
        try:
            files = text_files(s.data)
        except FileNotFoundError:
            pass
        vocab_n = get_tokenizer(s.tokenizer or "gpt2", files).n
    trainers = {}
    for name, cfg in train_configs(s, vocab_n).items():
        if s.retrain and os.path.isdir(cfg.out):
            shutil.rmtree(cfg.out)
        cfg.resume = os.path.isfile(os.path.join(cfg.out, "checkpoints", "latest"))
        t = Trainer(cfg)
        start, t0 = t.step, time.perf_counter()
        t.fit()
        t.wall = time.perf_counter() - t0
        t.trained_steps = t.step - start
        tokens = t.trained_steps * cfg.batch_size * cfg.seq_len
        log(f"{name}: {t.model.num_parameters():,} non-embedding parameters, "
            f"{cfg.steps} steps ({t.trained_steps} now, {tokens:,} tokens in {t.wall:.0f} s)")
        trainers[name] = t
    return trainers


# ---- measuring
def _held_out(t, count):
    data = t.corpus.valid
    return torch.stack([data[i] for i in range(min(count, len(data)))])


def likelihood_rows(trainers, v, seed, device) -> list[dict]:
    rows = []
    ar = trainers[BASELINE]
    x0 = _held_out(ar, v["bound_sequences"])
    L = x0.shape[1]
    lang = ar.corpus.language
    for name, t in trainers.items():
        gen = torch.Generator().manual_seed(seed + 11)
        vals = torch.cat([t.family.nll(t.ema_model, x0[i:i + 32].to(device), gen,
                                       v["timesteps"])[0].cpu()
                          for i in range(0, len(x0), 32)]).double() / L
        exact = t.family.exact_likelihood
        rows.append(dict(section="likelihood", model=name,
                         kind="exact NLL" if exact else "bound",
                         nll=float(vals.mean()),
                         stderr=float(vals.std() / math.sqrt(len(vals))), sequences=len(vals),
                         timesteps=0 if exact else v["timesteps"],
                         parameters=t.model.num_parameters()))
    base = rows[0]["nll"]
    for r in rows:
        r["ppl"] = math.exp(r["nll"])
        r["ppl_ratio_to_ar"] = math.exp(r["nll"] - base)
    if lang is not None:
        truth = float(-lang.log_likelihood(x0.numpy()).mean() / L)
        rate, rate_se = lang.entropy_rate(L)
        rows.append(dict(section="likelihood", model="true language", kind="exact NLL",
                         nll=truth, stderr=float((-lang.log_likelihood(x0.numpy()) / L).std()
                                                 / math.sqrt(len(x0))),
                         sequences=len(x0), timesteps=0, parameters=0, ppl=math.exp(truth),
                         ppl_ratio_to_ar=math.exp(truth - base)))
        rows.append(dict(section="likelihood", model="entropy rate", kind="exact", nll=rate,
                         stderr=rate_se, sequences=4000, timesteps=0, parameters=0,
                         ppl=math.exp(rate), ppl_ratio_to_ar=math.exp(rate - base)))
    return rows


class Scorer:
    """Sample quality: exact under the built-in language, else a causal LM's perplexity."""

    def __init__(self, lang, tokenizer, causal_lm, device):
        self.lang, self.tok, self.device = lang, tokenizer, device
        self.lm = None
        if lang is None:
            if not causal_lm:
                raise ValueError("data other than the built-in language needs --causal-lm (the "
                                 "model that scores the samples)")
            try:
                self.lm = load_causal_lm(causal_lm, device)
            except RuntimeError as e:
                raise ValueError(str(e)) from None

    def __call__(self, x) -> dict:
        tokens = [r.tolist() for r in x.cpu()]
        if self.lang is not None:
            rep = exact_sample_report(tokens, self.lang)
            return dict(nll=math.log(rep.perplexity_valid) if rep.valid_fraction else math.nan,
                        valid=rep.valid_fraction, entropy=rep.entropy)
        texts = [self.tok.decode(t) for t in tokens]
        rep, _ = lm_sample_report(texts, tokens, *self.lm, device=self.device)
        return dict(nll=rep.nll_per_token, valid=math.nan, entropy=rep.entropy)


def generated_row(section, name, t, predictor, steps, N, L, seed, device, scorer, **kw) -> dict:
    """Generate N × L samples from trainer t's EMA model, timed, and their row: the network
    evaluations, calls and positions computed (in all and per generated token), tokens/s and
    the samples' quality (`scorer`). predictor None: the family's own (ancestral) sampler."""
    gen = torch.Generator(device=device).manual_seed(seed)
    if predictor is not None:
        kw.update(steps=steps, predictor=predictor)
    t0 = time.perf_counter()
    x, stats = t.family.generate(t.ema_model, N, L, generator=gen, device=device,
                                 return_stats=True, **kw)
    seconds = time.perf_counter() - t0
    calls = getattr(stats, "network_calls", None)
    calls = stats.evaluations if calls is None else calls
    positions = getattr(stats, "positions", None) or math.nan
    return dict(section=section, model=name, predictor=predictor or "ancestral", steps=steps,
                evaluations=stats.evaluations, network_calls=calls, calls_per_token=calls / L,
                positions=positions, positions_per_token=positions / (N * L), seconds=seconds,
                tokens_per_s=N * L / max(seconds, 1e-9), **scorer(x))


def sample_rows(trainers, v, seed, device, scorer, log=print) -> list[dict]:
    rows = []
    N = v["num_samples"]
    L = trainers[BASELINE].cfg.seq_len
    x0 = _held_out(trainers[BASELINE], N)
    rows.append(dict(section="samples", model="data", predictor="held-out", steps=0,
                     evaluations=0, seconds=0.0, **scorer(x0)))
    first_hitting = get_predictor("first_hitting")
    for name, t in trainers.items():
        if "predictor" not in t.family.sample_options:      # ancestral: one call per token
            plan = [(None, L)]
        else:
            plan = [(p, s) for p in ("analytic", "euler") for s in v["sample_steps"]]
            if first_hitting.graphs is None or t.graph.name in first_hitting.graphs:
                plan += [("first_hitting", s) for s in v["fh_steps"]]
        for predictor, steps in plan:
            r = generated_row("samples", name, t, predictor, steps, N, L,
                              seed + (21 if predictor is None else 31 + steps), device, scorer)
            rows.append(r)
            log(f"  {name:13s} {r['predictor']:13s} steps {steps:5d}: evaluations "
                f"{r['evaluations']:5d}, NLL {r['nll']:.3f}, valid {r['valid']:.3f}, "
                f"entropy {r['entropy']:.3f}")
    return rows


def decoding_plan(model, v) -> dict:
    """The level's decoding settings that `model` (a MODELS name) runs: those whose options its
    family's sampler reads (`sample_options`) — a block model has no sub-blocks or dual cache of
    its own (its KV cache is exact; the dual cache is for full-window models)."""
    reads = set(get_family(MODELS[model]["family"]).sample_options)
    return {k: d for k, d in decoding_settings(v["decoding"] == "quick").items()
            if set(d[2]) <= reads}


def decoding_rows(trainers, v, seed, device, scorer, log=print) -> list[dict]:
    """Fewer network calls at a known cost: each decoding setting of the level on the trained
    models of DECODING_MODELS (steps = the setting's multiple of L, or of K within a block), with
    network calls and positions computed per generated token, tokens/s and the samples' quality
    as in the samples table; the AR baseline's ancestral row as the reference."""
    rows = []
    N = v["num_samples"]
    L = trainers[BASELINE].cfg.seq_len
    for name in DECODING_MODELS:
        t = trainers.get(name)
        if t is None:
            continue
        for setting, (predictor, mult, options, _) in decoding_plan(name, v).items():
            steps = mult * (t.cfg.block_size or L)             # per block on a block model
            r = generated_row("decoding", name, t, predictor, steps, N, L, seed + 61, device,
                              scorer, cache=False, **options)
            r["predictor"] = setting
            rows.append(r)
            log(f"  {name:13s} {setting:42s}: calls/token {r['calls_per_token']:.3f}, "
                f"NLL {r['nll']:.3f}, valid {r['valid']:.3f}, {r['tokens_per_s']:.0f} tok/s")
    return rows


def infill_rows(trainers, v, seed, device, scorer, fraction=0.25, log=print) -> list[dict]:
    x0 = _held_out(trainers[BASELINE], v["infill_sequences"])
    N, L = x0.shape
    k = max(1, round(fraction * L))
    g = torch.Generator().manual_seed(seed + 41)
    blank = torch.zeros(N, L, dtype=torch.bool)
    for i in range(N):
        blank[i, torch.randperm(L, generator=g)[:k]] = True
    given = ~blank
    lang = trainers[BASELINE].corpus.language

    def score(x):
        if lang is None:
            r = scorer(x)
            return dict(nll=r["nll"], valid=math.nan)
        full = lang.log_likelihood(x.numpy())
        context = lang.log_likelihood(x.numpy(), given.numpy())
        cond = -(full - context) / k
        ok = np.isfinite(cond)
        return dict(nll=float(cond[ok].mean()) if ok.any() else math.nan, valid=float(ok.mean()))

    rows = [dict(section="infill", model="truth", predictor="held-out", steps=0, blanks=k,
                 **score(x0))]
    for name, t in trainers.items():
        if "infill" not in t.family.conditions:
            rows.append(dict(section="infill", model=name, predictor="cannot infill", steps=0,
                             blanks=k, nll=math.nan, valid=math.nan))
            continue
        gen = torch.Generator(device=device).manual_seed(seed + 51)
        x = t.family.generate(t.ema_model, N, L, steps=v["infill_steps"], predictor="analytic",
                              condition=(x0.to(device), given.to(device)), generator=gen,
                              device=device)
        x = x.cpu()
        assert torch.equal(x[given], x0[given])
        rows.append(dict(section="infill", model=name, predictor="analytic",
                         steps=v["infill_steps"], blanks=k, **score(x)))
        log(f"  infill {name}: conditional NLL {rows[-1]['nll']:.3f} per blank token, valid "
            f"{rows[-1]['valid']:.3f} (truth {rows[0]['nll']:.3f})")
    return rows


# ---- reporting
def _f(x, nd=3):
    return "—" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def tables(rows) -> str:
    lik = [r for r in rows if r["section"] == "likelihood"]
    smp = [r for r in rows if r["section"] == "samples"]
    inf = [r for r in rows if r["section"] == "infill"]
    out = ["Likelihood of held-out sequences (nats/token)", "",
           "| model | figure | NLL | ± s.e. | perplexity | × AR perplexity | non-emb. params |",
           "|---|---|---|---|---|---|---|"]
    for r in lik:
        out.append(f"| {r['model']} | {r['kind']} | {_f(r['nll'], 4)} | {_f(r['stderr'], 4)} | "
                   f"{_f(r['ppl'], 2)} | {_f(r['ppl_ratio_to_ar'], 3)} | "
                   f"{r['parameters']:,} |" if r["parameters"] else
                   f"| {r['model']} | {r['kind']} | {_f(r['nll'], 4)} | {_f(r['stderr'], 4)} | "
                   f"{_f(r['ppl'], 2)} | {_f(r['ppl_ratio_to_ar'], 3)} | — |")
    out += ["", "Sample quality against network evaluations (NLL: nats/token of the valid samples "
                "under the true language; valid: share the language can produce)", "",
            "| model | predictor | steps | evaluations | NLL | valid | unigram entropy |",
            "|---|---|---|---|---|---|---|"]
    for r in smp:
        out.append(f"| {r['model']} | {r['predictor']} | {r['steps'] or '—'} | "
                   f"{r['evaluations'] or '—'} | {_f(r['nll'])} | {_f(r['valid'])} | "
                   f"{_f(r['entropy'])} |")
    dec = [r for r in rows if r["section"] == "decoding"]
    ar = [r for r in smp if r["model"] == BASELINE]
    if dec:
        out += ["", "Fewer network calls at a known cost (calls and positions per generated token; "
                    "steps per block for the block models; NLL and valid as above)", "",
                "| model | predictor | steps | calls / token | positions / token | tok/s | NLL | "
                "valid | unigram entropy |", "|---|---|---|---|---|---|---|---|---|"]
        for r in dec + ar:
            out.append(f"| {r['model']} | {r['predictor']} | {r['steps'] or '—'} | "
                       f"{_f(r['calls_per_token'])} | {_f(r['positions_per_token'], 1)} | "
                       f"{_f(r['tokens_per_s'], 0)} | {_f(r['nll'])} | {_f(r['valid'])} | "
                       f"{_f(r['entropy'])} |")
    out += ["", "Infilling random blanks (NLL: exact conditional nats per blank token given the "
                "context)", "",
            "| model | sampler | steps | blanks | NLL | valid |", "|---|---|---|---|---|---|"]
    for r in inf:
        out.append(f"| {r['model']} | {r['predictor']} | {r['steps'] or '—'} | {r['blanks']} | "
                   f"{_f(r['nll'])} | {_f(r['valid'])} |")
    return "\n".join(out)


def check_complete(rows, v, exact: bool) -> None:
    """Every model, predictor and step count has its row, with finite numbers where defined
    (an NLL of valid samples needs at least one valid sample)."""
    lik = {r["model"] for r in rows if r["section"] == "likelihood"}
    missing = [m for m in MODELS if m not in lik]
    want = {(BASELINE, "ancestral")} | {(m, p, s) for m in MODELS if m != BASELINE
                                    for p in ("analytic", "euler") for s in v["sample_steps"]} | \
        {("sedd-absorb", "first_hitting", s) for s in v["fh_steps"]}
    have = {(r["model"], r["predictor"], r["steps"]) for r in rows if r["section"] == "samples"} | \
        {(r["model"], r["predictor"]) for r in rows if r["section"] == "samples"}
    missing += [str(w) for w in want if w not in have]
    dec = {(r["model"], r["predictor"]) for r in rows if r["section"] == "decoding"}
    missing += [f"({m!r}, {name!r})" for m in DECODING_MODELS for name in decoding_plan(m, v)
                if (m, name) not in dec]
    missing += [m for m in ("sedd-absorb", "sedd-uniform")
                if m not in {r["model"] for r in rows if r["section"] == "infill"}]
    if missing:
        raise AssertionError(f"comparison table incomplete: missing {', '.join(missing)}")
    for r in rows:
        if r["section"] == "likelihood":
            vals = [r["nll"], r["stderr"], r["ppl_ratio_to_ar"]]
        elif r["section"] in ("samples", "decoding"):
            vals = [r["entropy"]] + ([r["valid"]] if exact else []) + \
                ([r["nll"]] if not exact or r["valid"] > 0 else [])
        elif r["model"] != BASELINE and r.get("predictor") != "cannot infill":
            vals = ([r["valid"]] if exact else []) + \
                ([r["nll"]] if not exact or r["valid"] > 0 else [])
        else:
            continue
        if not all(math.isfinite(x) for x in vals):
            raise AssertionError(f"comparison row not finite: {r}")


def plot(rows, path, entropy_rate=None) -> str | None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    smp = [r for r in rows if r["section"] == "samples" and r["evaluations"]]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for (model, pred) in dict.fromkeys((r["model"], r["predictor"]) for r in smp):
        pts = sorted((r["evaluations"], r["nll"], r["valid"]) for r in smp
                     if r["model"] == model and r["predictor"] == pred)
        e, nll, valid = zip(*pts)
        style = dict(marker="*", markersize=14, linestyle="none", color="black") \
            if model == BASELINE else dict(marker="o", markersize=4)
        for ax, y in zip(axes, (nll, valid)):
            if any(math.isfinite(v) for v in y):      # other data: no valid fraction
                ax.plot(e, y, label=f"{model} {pred}", **style)
    if entropy_rate is not None:
        axes[0].axhline(entropy_rate, color="gray", linestyle="--", label="entropy rate (truth)")
    axes[1].axhline(1.0, color="gray", linestyle="--", label="data")
    labels = ("NLL of valid samples, nats/token (lower = better)" if entropy_rate is not None
              else "generative perplexity's NLL, nats/token", "fraction of valid samples")
    for ax, lab in zip(axes, labels):
        if not any(len(line.get_xdata()) for line in ax.get_lines() if line.get_label() != "data"):
            ax.set_visible(False)
            continue
        ax.set_xscale("log", base=2)
        ax.set_xlabel("network evaluations per sample")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def machine() -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, cwd=os.path.dirname(__file__), timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return dict(platform=platform.platform(), processor=platform.processor() or platform.machine(),
                cpus=os.cpu_count(), torch_threads=torch.get_num_threads(),
                python=platform.python_version(), torch=torch.__version__,
                sedd_kernels=sk.__version__, build=sk.build_info(), commit=commit,
                date=time.strftime("%Y-%m-%d %H:%M:%S %Z"))


def run_comparison(s: Settings, log=print) -> dict:
    """Train, measure, write OUT/results.{json,csv}, table.md and compare.png; the results."""
    v = s.values()
    os.makedirs(s.out, exist_ok=True)
    t_start = time.perf_counter()
    torch.manual_seed(s.seed)
    trainers = train_all(s, log)
    t_train = time.perf_counter() - t_start
    lang = trainers[BASELINE].corpus.language
    scorer = Scorer(lang, trainers[BASELINE].corpus.tokenizer, s.causal_lm, s.device)
    log("likelihood ...")
    rows = likelihood_rows(trainers, v, s.seed, s.device)
    log("samples ...")
    rows += sample_rows(trainers, v, s.seed, s.device, scorer, log)
    log("decoding ...")
    rows += decoding_rows(trainers, v, s.seed, s.device, scorer, log)
    log("infilling ...")
    rows += infill_rows(trainers, v, s.seed, s.device, scorer, log=log)
    check_complete(rows, v, exact=lang is not None)
    text = tables(rows)
    rate = next((r["nll"] for r in rows if r["model"] == "entropy rate"), None)
    png = plot(rows, os.path.join(s.out, "compare.png"), rate)
    result = dict(settings=dict(asdict(s), values=v), machine=machine(),
                  training={n: dict(steps=t.cfg.steps, trained_now=t.trained_steps,
                                    seconds=round(t.wall, 1), batch_size=t.cfg.batch_size,
                                    seq_len=t.cfg.seq_len, n_blocks=t.cfg.n_blocks,
                                    hidden_size=t.cfg.hidden_size,
                                    tokens=t.cfg.steps * t.cfg.batch_size * t.cfg.seq_len,
                                    non_embedding_parameters=t.model.num_parameters())
                            for n, t in trainers.items()},
                  seconds=dict(training=round(t_train, 1),
                               total=round(time.perf_counter() - t_start, 1)),
                  rows=rows, plot=png)
    with open(os.path.join(s.out, "results.json"), "w") as fh:
        json.dump(result, fh, indent=1, default=str)
    keys = sorted({k for r in rows for k in r})
    with open(os.path.join(s.out, "results.csv"), "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(rows)
    with open(os.path.join(s.out, "table.md"), "w") as fh:
        fh.write(text + "\n")
    log("\n" + text)
    log(f"\nwrote {s.out}/results.json, results.csv, table.md" + (", compare.png" if png else "")
        + f" in {result['seconds']['total']:.0f} s")
    return result
