"""Fewer network calls at a known cost (issue 27): each decoding predictor and setting — network
calls per token, tokens/s, and the quality of its samples on the built-in language, measured
twice: with the language's exact scores (sedd.data.language.LanguageOracle: the sampler's own
error) and with a trained tiny model (what a user gets). First-hitting (exact), the analytic grid
and the autoregressive baseline are the reference rows.

Quality, N sequences of L = 64 tokens: the fraction the language can emit ("valid"), the
fraction of their 8-token windows it can emit (the others summed out: "valid-8", which still
moves when no whole sequence is valid), the mean
exact NLL per token of the valid ones minus the entropy rate H(X_1..L)/L ("NLL − H"; 0 is exact,
below 0 is too little diversity), and the unigram entropy of all sampled tokens minus the
language's own ("unigram Δ", nats; repetition shows as a negative Δ). Calls per token: network
calls / L of the batch; "per sequence": the calls a sequence took part in, per token (a
batch call runs only the sequences that still have masked positions, where the predictor
allows it: confidence does). tokens/s: N·L / seconds of the trained model's call
(no exact cache: every call is a network call). The dual cache rows (Fast-dLLM: sub-blocks of 16
decoded left to right, the keys and values outside the sub-block kept and refreshed once per
sub-block) are the network's approximation: their exact-score columns are the same sub-block
schedule without it (the oracle has no keys and values). "positions / token" counts the token
positions the calls computed per generated token.

The trained models are the tiny preset's SEDD (the default recipe: σ-conditioned absorbing
DDiT) and AR baseline, trained here once per level and kept in bench/.cache/ (quick: 300 steps
each, ~1 minute; full: the preset's 2400 steps, what `python python/train.py` trains). Levels:
quick: a subset of the settings; full: every setting (ReMDM at 4L for the loop only: a
4L row is ~4 minutes here); N = 128 at both. CPU only (the oracle is NumPy)."""

import math
import os

import numpy as np
import pytest
import torch

from sedd.core.graphs import Absorbing
from sedd.core.noise import LogLinear
from sedd.data.language import LanguageOracle, builtin_language
from sedd.evaluation.decoding import DECODING

from harness import ROWS, level, machine

L = 64
HERE = os.path.dirname(os.path.abspath(__file__))
# name: (predictor, steps as a multiple of L, settings, in the quick subset): the project's one
# list (sedd.evaluation.decoding, which compare.py runs too) and the AR reference
SETTINGS = {**DECODING, "ar": (None, 1, {}, True)}
_STATE = {}


def lang():
    if "lang" not in _STATE:
        lg = builtin_language()
        data = lg.sample(20000, L, 99)
        _STATE["lang"] = (lg, LanguageOracle(lg), lg.entropy_rate(L)[0], unigram_entropy(data))
    return _STATE["lang"]


def unigram_entropy(x) -> float:
    counts = np.bincount(np.asarray(x).reshape(-1))
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def quality(x):
    lg, _, H, H1 = lang()
    x = np.asarray(x.cpu())
    nll = -lg.log_likelihood(x) / L
    ok = np.isfinite(nll)
    windows = []
    for lo in range(0, L, 8):                   # each 8-token window, the rest summed out
        known = np.zeros(x.shape, dtype=bool)
        known[:, lo:lo + 8] = True
        windows.append(np.isfinite(lg.log_likelihood(x, known)))
    return dict(valid=float(ok.mean()), valid8=float(np.mean(windows)),
                nll_excess=float(nll[ok].mean() - H) if ok.any() else math.inf,
                unigram_delta=unigram_entropy(x) - H1)


def trained(family):
    """The loaded tiny model of `family` ("sedd" or "ar"), trained once per level."""
    if family not in _STATE:
        from sedd.config import TrainConfig
        from sedd.loading import load
        from sedd.training import Trainer
        steps = 2400 if level("cpu") == "full" else 300
        out = os.path.join(HERE, ".cache", f"decoding-{family}-{steps}")
        if not os.path.isdir(os.path.join(out, "checkpoints")):
            Trainer(TrainConfig.from_preset("tiny", family=family, steps=steps, out=out,
                                            progress=False, final_report=False, device="cpu",
                                            sample_every=10 ** 9, eval_every=10 ** 9,
                                            save_every=steps)).fit()
        _STATE[family] = load(out, "cpu", True, tokenizer=False)
    return _STATE[family]


def cases():
    full = level("cpu") == "full"
    return [pytest.param(name, id=name.replace(" ", "-")) for name, v in SETTINGS.items()
            if full or v[3]]


@pytest.mark.parametrize("name", cases())
def test_decoding(benchmark, name):
    predictor, mult, settings, _ = SETTINGS[name]
    N = 128
    lg, oracle, _, _ = lang()
    graph, noise = Absorbing(lg.n), LogLinear(1e-3)
    row = dict(suite="decoding", kind="decoding", device="cpu", machine=machine("cpu"),
               case=f"built-in language, N {N} × L {L}", impl=name)
    if predictor is not None:                          # the sampler's own error: exact scores
        from sedd.sampling import sample
        exact = {k: v for k, v in settings.items() if k not in ("kv_cache", "refresh")}
        x, s = sample(oracle, graph, noise, N, L, mult * L, predictor, return_stats=True,
                      generator=torch.Generator().manual_seed(0), **exact)
        row.update({f"exact_{k}": v for k, v in quality(x).items()})
    r = trained("ar" if predictor is None else "sedd")
    out = []

    def run():
        gen = torch.Generator().manual_seed(1)
        kw = {} if predictor is None else dict(steps=mult * L, predictor=predictor, cache=False,
                                               **settings)
        out.append(r.family.generate(r.model, N, L, generator=gen, device="cpu",
                                     return_stats=True, **kw))

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    x, s = out[-1]
    assert x.shape == (N, L) and int(x.max()) < lg.n
    row.update({f"model_{k}": v for k, v in quality(x).items()})
    per_sequence = s.sequence_evaluations / (N * L) if s.sequence_evaluations else None
    row.update(calls_per_token=s.network_calls / L, positions_per_token=s.positions / (N * L),
               sequence_calls_per_token=per_sequence,
               tokens_per_s=N * L / benchmark.stats.stats.min)
    benchmark.extra_info.update(row)
    ROWS.append(row)
