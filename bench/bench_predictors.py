"""The speed/quality trade of the predictors, one table: tokens/s of first-hitting + exact cache
vs the analytic predictor + exact cache at 64/256/1024 steps (sample() end to end, fused steps),
beside the sample quality the same predictor reaches at the same tokens per step with *exact*
scores — the built-in language's forward–backward oracle (sedd.data.language.LanguageOracle): the
fraction of valid sequences and the mean exact NLL per token minus the entropy rate. So the
quality columns are the sampler's own error (a trained model adds its own on top), and the
speed columns the cost on the preset's network.

Speed: a time-independent ("clean") absorbing DDiT of the preset with random weights (as in
bench_sampler.py; the number of tokens each step unmasks does not depend on the weights), at
the shapes of bench_sampler.py's level (quick: tiny 4 × 64 at 64 and 256 steps, small 1 × 64 at
16; full: tiny at 64/256/1024, small at 64; gpu: tiny and small 8 × 1024 at 64/256/1024).
First-hitting with `steps` S unmasks k = ⌈L/S⌉ positions per evaluation (1 when S ≥ L: the
exact sampler, L evaluations whatever S is). Quality: 256 sequences of 64 tokens with the steps
scaled to the same tokens per step (S·64/L), so a row's two halves describe the same sampler.
"""

import math

import numpy as np
import pytest
import torch

from sedd.core.graphs import Absorbing
from sedd.data.language import LanguageOracle, builtin_language
from sedd.core.noise import LogLinear
from sedd.sampling import sample

from bench_sampler import SHAPES, STEPS, time_sample
from harness import DEVICES, ROWS, level, machine

PREDICTORS = ("analytic", "first_hitting")
QUALITY_N, QUALITY_L = 256, 64
_LANG = {}


def quality(predictor, steps):
    """(valid fraction, NLL per token − entropy rate) with exact scores, memoised."""
    key = (predictor, steps)
    if key not in _LANG:
        if "lang" not in _LANG:
            lang = builtin_language()
            _LANG["lang"] = (lang, LanguageOracle(lang), lang.entropy_rate(QUALITY_L)[0])
        lang, oracle, H = _LANG["lang"]
        x = sample(oracle, Absorbing(lang.n), LogLinear(1e-3), QUALITY_N, QUALITY_L, steps,
                   predictor, generator=torch.Generator().manual_seed(0))
        nll = -lang.log_likelihood(x.numpy()) / QUALITY_L
        ok = np.isfinite(nll)
        _LANG[key] = (float(ok.mean()), float(nll[ok].mean() - H) if ok.any() else math.inf)
    return _LANG[key]


def cases():
    for device in DEVICES:
        for preset in SHAPES:
            for steps in STEPS[level(device)][preset]:
                for predictor in PREDICTORS:
                    yield pytest.param(device, preset, steps, predictor,
                                       id=f"{device}-{preset}-{steps}-{predictor}")


@pytest.mark.parametrize("device,preset,steps,predictor", list(cases()))
def test_predictor(benchmark, device, preset, steps, predictor):
    n, B, L = SHAPES[preset][level(device)]
    rounds = 1 if device == "cuda" or preset == "small" else 3
    s = time_sample(benchmark, device, preset, steps, rounds, predictor=predictor)
    tps = B * L / benchmark.stats.stats.min
    valid, excess = quality(predictor, max(1, round(steps * QUALITY_L / L)))
    benchmark.extra_info.update(machine=machine(device), tokens_per_s=round(tps, 1),
                                network_calls=s.network_calls, valid=valid, nll_excess=excess)
    ROWS.append(dict(suite="predictors", kind="trade", device=str(device), machine=machine(device),
                     case=f"{preset} {B} × {L}, V {n + 1}", steps=steps, impl=predictor,
                     tokens_per_s=tps, evaluations=s.evaluations, network_calls=s.network_calls,
                     sequences=s.sequence_evaluations, batch=B, valid=valid, nll_excess=excess))
