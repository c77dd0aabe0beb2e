"""sedd.sampling.dual_cache: sub-blocks of a window, and Fast-dLLM's dual cache — the kept keys
and values are exactly a full pass's, so right after a refresh the partial pass gives the full
log-scores, a refresh at every call is the uncached sampler, and a call costs the sub-block's
positions otherwise."""

import pytest
import torch

from sedd.core.graphs import Absorbing
from sedd.core.noise import LogLinear
from sedd.data.language import LanguageOracle, builtin_language
from sedd.sampling import sample
from sedd.sampling.dual_cache import DualCache

from conftest import random_ddit

G = Absorbing(40)


@pytest.mark.parametrize("parametrisation", ["score", "clean"])
@pytest.mark.parametrize("lo,hi", [(0, 8), (8, 16), (24, 32)])
def test_the_partial_pass_after_a_refresh_is_the_full_pass(parametrisation, lo, hi):
    model = random_ddit(G.V, parametrisation, L=32, n_blocks=3)
    x = torch.randint(0, G.n, (3, 32))
    x[:, 12:] = G.mask
    sigma = torch.tensor([0.4, 1.1, 3.0])
    full = model(x, sigma)[:, lo:hi]
    cache = DualCache(model, lo, hi)
    first, again = cache(x, sigma)[:, lo:hi], cache(x, sigma)[:, lo:hi]   # full, then partial
    torch.testing.assert_close(first, full, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(again, full, rtol=1e-5, atol=1e-5)
    # the rows= form: the same rows, projected alone
    idx = torch.tensor([lo, 32 + hi - 1, 64 + lo + 1])
    prod, bias, shift = cache.log_score_parts(x, sigma, rows=idx)
    rows = prod.float() + (bias if bias is not None else 0.0) + shift[idx // 32][:, None]
    rows.scatter_(1, x.reshape(-1)[idx][:, None], 0.0)
    torch.testing.assert_close(rows, model(x, sigma).reshape(-1, G.V)[idx], rtol=1e-5, atol=1e-5)
    # and the cache is stale once the sub-block's tokens change: the partial pass differs
    y = x.clone()
    y[:, lo:hi] = torch.randint(0, G.n, (3, hi - lo))
    assert not torch.allclose(cache(y, sigma)[:, lo:hi], model(y, sigma)[:, lo:hi], atol=1e-4)


@pytest.mark.parametrize("predictor", ["confidence", "first_hitting", "analytic"])
def test_a_refresh_at_every_call_is_the_uncached_sampler(predictor):
    model = random_ddit(G.V, "clean", L=32, n_blocks=3)
    runs = [sample(model, G, LogLinear(), 3, 32, 32, predictor, block_length=8, cache=False,
                   generator=torch.Generator().manual_seed(2), return_stats=True, **kw)
            for kw in (dict(kv_cache="none"), dict(kv_cache="dual", refresh=1))]
    (a, sa), (b, sb) = runs
    assert (a == b).float().mean() >= 0.99 and int(b.max()) < G.n
    assert sa.network_calls == sb.network_calls


def test_dual_calls_cost_the_sub_block_and_sub_blocks_go_left_to_right():
    """First-hitting, one token per call, 4 sub-blocks of 8 in a window of 32, B 2: one full
    pass per sub-block (B·32 positions) and 7 partial ones (B·8 each); without the cache every
    call is a full pass. The suffix is still masked while a sub-block is denoised: a call's σ
    for a σ-conditioned model reads the window's masked share."""
    model = random_ddit(G.V, "clean", L=32, n_blocks=3)
    kw = dict(generator=torch.Generator().manual_seed(3), return_stats=True, block_length=8)
    _, s_none = sample(model, G, LogLinear(), 2, 32, 32, "first_hitting", kv_cache="none", **kw)
    x, s_dual = sample(model, G, LogLinear(), 2, 32, 32, "first_hitting", kv_cache="dual", **kw)
    assert s_none.network_calls == s_dual.network_calls == 32
    assert s_none.positions == 32 * 2 * 32
    assert s_dual.positions == 4 * (2 * 32 + 7 * 2 * 8)
    assert int(x.max()) < G.n


def test_dual_cache_with_every_predictor_and_a_prefix():
    model = random_ddit(G.V, "score", L=32, n_blocks=3)
    tokens = torch.randint(0, G.n, (1, 32))
    given = torch.zeros(1, 32, dtype=torch.bool)
    given[:, :5] = True
    for predictor in ("analytic", "euler", "first_hitting", "confidence", "remdm"):
        x = sample(model, G, LogLinear(), 2, 32, 16, predictor, kv_cache="dual", block_length=8,
                   condition=(tokens, given), generator=torch.Generator().manual_seed(4))
        assert torch.equal(x[:, :5], tokens[:, :5].expand(2, -1)) and int(x.max()) < G.n


def test_bad_settings_are_one_clear_error():
    model = random_ddit(G.V, "clean", L=32, n_blocks=3)
    cases = [(dict(kv_cache="triple"), "kv_cache must be 'dual' or 'none'"),
             (dict(refresh=2), "refresh applies to kv_cache='dual'"),
             (dict(kv_cache="dual", refresh=0), "refresh must be >= 1"),
             (dict(block_length=0), "block_length must be >= 1")]
    for kw, message in cases:
        with pytest.raises(ValueError, match=message):
            sample(model, G, LogLinear(), 1, 32, 8, **kw)
    lang = builtin_language()
    with pytest.raises(ValueError, match="needs a full-window DDiT"):
        sample(LanguageOracle(lang), Absorbing(lang.n), LogLinear(), 1, 8, 8, kv_cache="dual")
