"""sedd.sampling.confidence: confidence-ordered parallel decoding (Fast-dLLM's threshold,
LLaDA's k per call) — exact with one position per call on exact scores, at any ranking, over a
whole window and inside blocks; a greedy token or several per call are not, and the tests see it."""

import math

import numpy as np
import pytest
import torch

from sedd.core.graphs import Absorbing
from sedd.core.noise import LogLinear
from sedd.data.language import BlockLanguageOracle, LanguageOracle, builtin_language
from sedd.families import get_family
from sedd.sampling import sample
from sedd.sampling.confidence import confidences

from conftest import random_ddit

LANG = builtin_language()
ORACLE = LanguageOracle(LANG)
GRAPH = Absorbing(LANG.n)
NOISE = LogLinear(1e-3)
L = 16


def nll(x):
    x = np.asarray(x.cpu())
    return -LANG.log_likelihood(x) / x.shape[1]


def at_entropy_rate(x, tol=3.5):
    """All valid, and the mean exact NLL within `tol` combined standard errors of H(X_1..L)/L."""
    v = nll(x)
    H, se_h = LANG.entropy_rate(x.shape[1], num=len(v), seed=5)
    assert np.isfinite(v).all(), f"{(~np.isfinite(v)).sum()} invalid samples"
    z = (v.mean() - H) / math.hypot(v.std(ddof=1) / math.sqrt(len(v)), se_h)
    return abs(z) < tol, (v.mean(), H, z)


@pytest.mark.parametrize("rule", [dict(tokens_per_step=1), dict(tokens_per_step=1, rank_by="margin"),
                                  dict(tokens_per_step=1, rank_by="entropy"),
                                  dict(threshold=1.0)])
def test_one_position_per_call_on_exact_scores_is_exact(rule):
    """Any confidence order with one exact draw per call is the chain rule: all valid, NLL at the
    entropy rate, L calls (τ = 1 unmasks only the certain positions beyond the top one: still
    exact, in at most L calls)."""
    N = 1500
    x, s = sample(ORACLE, GRAPH, NOISE, N, L, L, "confidence", return_stats=True,
                  generator=torch.Generator().manual_seed(3), **rule)
    ok, got = at_entropy_rate(x)
    assert ok, got
    assert (s.evaluations == L) if "tokens_per_step" in rule else (s.evaluations <= L)


def test_greedy_and_many_per_call_are_not_exact_and_the_tests_see_it():
    """A greedy argmax token is no draw: the samples' NLL falls far below the entropy rate. Eight
    positions per call drawn independently: L / 8 calls, and sequences the language cannot emit."""
    N = 600
    g = dict(generator=torch.Generator().manual_seed(4), return_stats=True)
    x, _ = sample(ORACLE, GRAPH, NOISE, N, L, L, "confidence", tokens_per_step=1, greedy=True, **g)
    v = nll(x)
    H, _ = LANG.entropy_rate(L)
    assert np.isfinite(v).all() and v.mean() < H - 0.3, (v.mean(), H)
    x, s = sample(ORACLE, GRAPH, NOISE, N, L, L, "confidence", tokens_per_step=8, **g)
    assert s.evaluations == L // 8
    assert (~np.isfinite(nll(x))).mean() > 0.05


def test_threshold_unmasks_more_per_call_as_it_falls():
    """Fast-dLLM's rule: lower τ, fewer calls per sequence (the cache runs a sequence only while
    it has masked positions: sequence evaluations / N); every position is unmasked. (The
    built-in language has 3.35 nats per token: a masked word's top probability is mostly below
    0.3, so the thresholds that bite here are low ones.)"""
    calls = []
    for tau in (0.5, 0.1, 0.02):
        x, s = sample(ORACLE, GRAPH, NOISE, 64, L, L, "confidence", threshold=tau,
                      generator=torch.Generator().manual_seed(5), return_stats=True)
        assert int(x.max()) < GRAPH.n and s.evaluations <= L
        calls.append(s.sequence_evaluations / 64)
    assert calls[0] >= calls[1] >= calls[2] and calls[2] < calls[0] - 1, calls


def test_inside_blocks_with_exact_block_conditionals_is_exact():
    """Block diffusion's blocks denoised by confidence (k = 1) on the exact block conditionals:
    all valid, at the entropy rate."""
    fam = get_family("block").bind(GRAPH, NOISE)
    x, s = fam.generate(BlockLanguageOracle(LANG, 4), 1000, L, predictor="confidence", steps=L,
                        tokens_per_step=1, generator=torch.Generator().manual_seed(6),
                        device="cpu", return_stats=True)
    ok, got = at_entropy_rate(x)
    assert ok, got
    assert s.evaluations == L and s.windows == L // 4


def test_over_semi_autoregressive_windows_and_a_prefix():
    """Windows of 8 sliding by 4 on a 24-token sample with a given prefix: the prefix stays, no
    mask is left, every window is decoded one position per call (24 − prefix calls in all)."""
    P = 3
    prefix = torch.from_numpy(LANG.sample(1, P, 0)).long()
    tokens = torch.full((1, 24), GRAPH.mask)
    tokens[:, :P] = prefix
    given = torch.zeros(1, 24, dtype=torch.bool)
    given[:, :P] = True
    x, s = sample(ORACLE, GRAPH, NOISE, 5, 24, 8, "confidence", tokens_per_step=1, window=8,
                  stride=4, condition=(tokens, given), generator=torch.Generator().manual_seed(7),
                  return_stats=True)
    assert torch.equal(x[:, :P], prefix.expand(5, -1)) and int(x.max()) < GRAPH.n
    assert s.evaluations == 24 - P and s.windows > 1


def test_confidence_values():
    """top = the largest probability; margin = top − second; entropy = exp(−H); the mask column
    is never a candidate."""
    p = torch.tensor([[0.5, 0.3, 0.2, 0.0], [0.25, 0.25, 0.25, 0.25]])
    rows = torch.log(p.clamp_min(1e-30)) + 7.0          # any shift; column 3 is the mask
    rows[:, 3] = 50.0
    real = p[:, :3] / p[:, :3].sum(1, keepdim=True)
    torch.testing.assert_close(confidences(rows, 3, "top"), real.max(1).values)
    torch.testing.assert_close(confidences(rows, 3, "margin"),
                               real.topk(2, 1).values[:, 0] - real.topk(2, 1).values[:, 1])
    H = -(real * real.log()).sum(1)
    torch.testing.assert_close(confidences(rows, 3, "entropy"), torch.exp(-H))


@pytest.mark.parametrize("parametrisation", ["score", "clean"])
def test_a_ddit_decodes_through_the_projection_of_masked_rows(parametrisation):
    """On a DDiT (σ-conditioned, and clean with and without the exact cache): no mask left, calls
    = ⌈L/k⌉, the temperature / top-p path runs, the same seed gives the same tokens."""
    g = Absorbing(20)
    model = random_ddit(g.V, parametrisation, L=12)
    runs = []
    for cache in (True, False):
        x, s = sample(model, g, LogLinear(), 3, 12, 12, "confidence", tokens_per_step=3,
                      cache=cache, generator=torch.Generator().manual_seed(0), return_stats=True,
                      temperature=0.8, top_p=0.9)
        assert int(x.max()) < g.n and s.evaluations == 4
        runs.append(x)
    if parametrisation == "clean":      # the cache is exact: the same rows, the same draws
        assert torch.equal(runs[0], runs[1])
