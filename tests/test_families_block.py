"""The block-diffusion family (sedd.families.block, sedd.nn.block): the vectorised training loss
equals the loop over blocks and, at K = L, SEDD's clean-parametrisation loss; cached block
inference equals the uncached and the vectorised forward; K = 1's bound is the exact
autoregressive NLL up to the leaky end; exact block conditionals give exact samples; the trainer
resumes it exactly; every door takes it, and bad settings are one line."""

import json
import math
import os

import numpy as np
import pytest
import torch

from sedd.config import resolve_config
from sedd.core.graphs import Absorbing
from sedd.core.noise import LogLinear
from sedd.data.language import BlockLanguageOracle, builtin_language
from sedd.families import build_model, get_family
from sedd.nn import ModelConfig
from sedd.training import Trainer

from conftest import script

LANG = builtin_language()
G = Absorbing(LANG.n)
TINY = dict(hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16, dropout=0.0)


def block_net(K, L=16, seed=0, attention="sdpa"):
    cfg = ModelConfig(vocab_size=G.V, max_length=L, family="block", parametrisation="clean",
                      block_size=K, attention=attention, **TINY)
    torch.manual_seed(seed)
    net = build_model(cfg)
    for p in net.parameters():                    # off the zero initialisation
        torch.nn.init.normal_(p, std=0.1)
    return net.eval()


def family():
    return get_family("block").bind(G, LogLinear())


def masked_batch(L=16, K=4, seed=1):
    g = torch.Generator().manual_seed(seed)
    x0 = torch.from_numpy(LANG.sample(3, L, seed=seed))
    t = torch.rand(3, L // K, generator=g, dtype=torch.float64) * 0.98 + 0.01
    noise = LogLinear()
    sigma, dsigma = noise.total(t), noise.rate(t)
    masked = torch.rand(3, L, generator=g, dtype=torch.float64) < \
        (-torch.expm1(-sigma)).repeat_interleave(K, 1)
    weight = torch.where(masked, (dsigma / torch.expm1(sigma)).repeat_interleave(K, 1), 0.0)
    return x0, torch.where(masked, G.mask, x0), weight, sigma, dsigma


def block_by_block(net, xt, x0, K, use_cache=True):
    """Generation's path: each noised block's log-probs [B, L, V] after the committed clean
    blocks before it, and the state."""
    state = net.start(xt.shape[0], use_cache=use_cache)
    rows = []
    for lo in range(0, xt.shape[1], K):
        rows.append(net.block_log_probs(state, xt[:, lo:lo + K]))
        net.commit(state, x0[:, lo:lo + K])
    return torch.cat(rows, 1), state


def test_the_vectorised_loss_equals_the_loop_over_blocks():
    """Value and every parameter's gradient: one forward over [x_t, x_0] under the vectorised
    mask against block-by-block inference (committed clean prefix, then the noised block)."""
    K, L = 4, 16
    net = block_net(K, L)
    x0, xt, weight, _, _ = masked_batch(L, K)
    grads = []
    net.zero_grad()
    vec = net(xt, block_loss=dict(x_0=x0, token_weight=weight))
    vec.backward()
    grads.append([p.grad.clone() for p in net.parameters()])
    net.zero_grad()
    logp, _ = block_by_block(net, xt, x0, K)
    loop = (-logp[..., :-1].gather(-1, x0[..., None]).squeeze(-1) * weight.float()).sum()
    loop.backward()
    grads.append([p.grad.clone() for p in net.parameters()])
    torch.testing.assert_close(vec, loop, rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max()) + 1e-6


@pytest.mark.parametrize("K", [1, 4, 16])
def test_flex_attention_and_sdpa_give_the_same_losses_and_log_probs(K):
    """The flex-attention path (a BlockMask built once per shape) against SDPA with a boolean
    mask: per-token training losses and the block-causal log-probs. Forward only: torch has no
    flex-attention backward on CPU (the gradients are compared in tests/test_cuda.py), and
    training with --attention flex on a CPU is refused in one line."""
    L = 16
    x0, xt, weight, _, _ = masked_batch(L, K)
    res = {}
    with torch.no_grad():
        for attention in ("sdpa", "flex"):
            net = block_net(K, L, attention=attention)
            res[attention] = (net(xt, block_loss=dict(x_0=x0, token_weight=weight,
                                                      reduction="none")), net(xt))
    (a, la), (b, lb) = res.values()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(la, lb, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="attention must be 'sdpa' or 'flex'"):
        block_net(K, L, attention="dense")
    with pytest.raises(ValueError, match="--attention flex trains on CUDA only"):
        resolve_config("micro", family="block", attention="flex", device="cpu")


def test_one_block_is_sedds_clean_loss():
    """K = L: σ̇·Σ SE of the clean log-scores (the SEDD score-entropy kernel) equals the weighted
    cross-entropy of the masked positions, on the same x_t and noise level (docs/math.md §3)."""
    L = 16
    net = block_net(L, L)
    x0, xt, weight, sigma, dsigma = masked_batch(L, L)
    block = net(xt, block_loss=dict(x_0=x0, token_weight=weight, reduction="none")).sum(1)
    with torch.no_grad():
        log_score = net.log_score_from_clean(net(xt), xt, sigma[:, 0].float())
    se = G.score_entropy(log_score, xt, x0, sigma[:, 0]).sum(1) * dsigma[:, 0]
    torch.testing.assert_close(block.double(), se.double(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("K", [1, 4])
def test_cached_block_inference_equals_uncached_and_vectorised(K):
    L = 16
    net = block_net(K, L)
    x0, xt, _, _, _ = masked_batch(L, K)
    out = {}
    for use_cache in (True, False):
        out[use_cache], state = block_by_block(net, xt, x0, K, use_cache)
        assert state.calls == 2 * (L // K) - (0 if use_cache else L // K)
    torch.testing.assert_close(out[True], out[False], rtol=1e-5, atol=1e-5)
    h, _ = net.vectorised_hidden(xt, x0, net._mask(L, True, "cpu"))
    vec = torch.log_softmax(net.output_layer.linear(h).float()[..., :-1], -1)
    torch.testing.assert_close(out[True][..., :-1], vec, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("length", [None, 40])
def test_past_the_window_the_cache_equals_the_recomputed_prefix(length):
    """Generating 40 tokens with a 16-token window (K = 4): the cache keeps the last 12
    positions (its buffers slide, sized by `length` or not), the recomputed prefix the last 12
    tokens — the same log-probs at every block, for the whole batch and for a sub-batch."""
    K, L = 4, 16
    net = block_net(K, L)
    x = torch.from_numpy(LANG.sample(3, 40, seed=4))
    xt = torch.where(torch.rand(3, 40, generator=torch.Generator().manual_seed(0)) < 0.5, G.mask, x)
    rows = torch.tensor([2, 0])
    out = {}
    with torch.no_grad():
        for use_cache in (True, False):
            state = net.start(3, use_cache=use_cache, length=length)
            got = []
            for lo in range(0, 40, K):
                got.append(net.block_log_probs(state, xt[:, lo:lo + K]))
                got.append(net.block_log_probs(state, xt[rows, lo:lo + K], rows))
                net.commit(state, x[:, lo:lo + K])
            out[use_cache] = got
            if use_cache:
                assert state.k[0].shape[2] == (2 * 12 + 4 if length is None else 28)
    for a, b in zip(out[True], out[False]):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_k1_bound_is_the_exact_autoregressive_nll_up_to_the_leaky_end():
    """K = 1: E[bound] = (1 − ε)·Σ_i −log p(x_i | x_<i) + L·ε·log n (log-linear, ε = 1e-3)."""
    L = 8
    net = block_net(1, L)
    x0 = torch.from_numpy(LANG.sample(4, L, seed=3))
    with torch.no_grad():
        state = net.start(4)
        nll = torch.zeros(4, dtype=torch.float64)
        for i in range(L):
            logp = net.block_log_probs(state, torch.full((4, 1), G.mask))[:, 0, :-1]
            nll -= logp.gather(1, x0[:, i:i + 1]).squeeze(1).double()
            net.commit(state, x0[:, i:i + 1])
    eps = 1e-3
    want = (1 - eps) * nll + L * eps * math.log(LANG.n)
    bound, prior, se = family().nll(net, x0, torch.Generator().manual_seed(0), 1024)
    assert torch.allclose(prior, torch.full_like(prior, L * eps * math.log(LANG.n)))
    gap, gap_se = (bound - want).mean(), se.pow(2).sum().sqrt() / len(se)
    assert abs(gap) < 4 * gap_se and gap_se < 0.03 * want.mean(), (bound, want, se)


@pytest.mark.parametrize("K", [1, 4, 16])
def test_first_hitting_on_exact_block_conditionals_is_exact(K):
    """With the language's exact block conditionals, block-by-block first-hitting samples are
    all valid and their NLL is the entropy rate, at every K (and past one block's length)."""
    L, N = 16, 600
    oracle = BlockLanguageOracle(LANG, K)
    x, stats = family().generate(oracle, N, L, predictor="first_hitting", steps=10 ** 6,
                                 generator=torch.Generator().manual_seed(K), device="cpu",
                                 return_stats=True)
    nll = -LANG.log_likelihood(x.numpy()) / L
    H, se = LANG.entropy_rate(L, num=N)
    assert np.isfinite(nll).all()
    assert abs(nll.mean() - H) < 4 * math.hypot(nll.std() / math.sqrt(N), se) + 0.01
    assert stats.evaluations == L and stats.windows == L // K


@pytest.mark.parametrize("predictor,steps", [("first_hitting", 10 ** 6), ("analytic", 64)])
def test_the_per_sequence_cache_inside_blocks_gives_the_same_tokens_for_fewer_evaluations(
        predictor, steps):
    """The exact per-sequence cache (sedd.sampling.network) over a block: a sub-batch call reads
    its own sequences' cached keys and values (rows=), so the tokens are those of the uncached
    sampler (CPU, batch-independent rounding), with fewer sequence evaluations; the KV cache
    and the recomputed prefix agree too."""
    net = block_net(4, 16)
    out = {}
    for cache, kv in [(True, True), (False, True), (True, False)]:
        out[cache, kv] = family().generate(
            net, 6, 24, steps=steps, predictor=predictor, cache=cache, no_kv_cache=not kv,
            generator=torch.Generator().manual_seed(5), device="cpu", return_stats=True)
    (a, sa), (b, sb), (c, sc) = out.values()
    assert torch.equal(a, b) and torch.equal(a, c)
    # first-hitting changes every sequence at each of a block's K calls: nothing to skip
    fewer = (lambda u, v: u < v) if predictor == "analytic" else (lambda u, v: u == v)
    assert fewer(sa.sequence_evaluations, sb.sequence_evaluations)
    assert fewer(sa.positions, sb.positions) and sa.positions < sc.positions
    assert sb.network_calls == sb.evaluations + 24 // 4 - 1    # a call per evaluation + commits


def test_clipped_mask_rates_keep_every_block_inside_and_eval_uses_the_full_bound():
    """--mask-rate LO,HI (BD3LM's clipped schedule): the training levels' mask rates lie in
    [LO, HI] and every block's masked share too (redrawn when outside); the held-out loss
    (eval_loss) is still the bound's estimator — full range, independent draws."""
    cfg = resolve_config("micro", family="block", block_size=4, mask_rate="0.45,0.95",
                         noise_levels="low-discrepancy")
    fam = get_family("block").for_config(cfg, LANG.n)
    assert fam.mask_rate == (0.45, 0.95) and fam.low_discrepancy
    g = torch.Generator().manual_seed(0)
    x0 = torch.from_numpy(LANG.sample(64, 16, seed=2))
    clip = tuple(r / (1 - fam.noise.eps) for r in fam.mask_rate)
    sigma, _ = fam._block_levels(64, 4, g, clip)
    rate = -torch.expm1(-sigma)
    assert float(rate.min()) >= 0.45 - 1e-12 and float(rate.max()) <= 0.95 + 1e-12
    share = fam._masked(x0, sigma, g, fam.mask_rate).view(64, 4, 4).double().mean(-1)
    assert float(share.min()) >= 0.5 and float(share.max()) <= 0.75     # {0.5, 0.75} of 4
    net = block_net(4, 16)
    seen = []
    real = fam._block_levels
    fam._block_levels = lambda *a: (seen.append((a[3], fam.low_discrepancy)), real(*a))[1]
    with torch.no_grad():
        fam.loss(net, x0, g)
        fam.eval_loss(net, x0, g)
    assert seen[0] == (clip, True) and seen[1] == (None, False) and fam.low_discrepancy


def test_prefix_and_stop_at_eos_and_any_length():
    oracle = BlockLanguageOracle(LANG, 4)
    the = LANG.encode("the")[0]
    eos = LANG.words.index(".")
    given = torch.zeros(1, 40, dtype=torch.bool)
    given[0, :6] = True
    tokens = torch.from_numpy(LANG.sample(1, 40, seed=9))
    tokens[0, 0] = the
    x = family().generate(oracle, 5, 40, condition=(tokens, given), steps=8, device="cpu",
                          generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 40) and torch.equal(x[:, :6], tokens[:, :6].expand(5, 6))
    rows, stats = family().generate(oracle, 5, 400, stop_at_eos=True, eos=eos, steps=8,
                                    device="cpu", return_stats=True,
                                    generator=torch.Generator().manual_seed(1))
    assert all(int(r[-1]) == eos and int((r == eos).sum()) == 1 for r in rows)
    assert stats.windows < 100                       # stopped long before 400 tokens
    with pytest.raises(ValueError, match="cannot condition on text after"):
        suffix = torch.zeros(1, 40, dtype=torch.bool)
        suffix[0, -3:] = True
        family().generate(oracle, 2, 40, condition=(tokens, suffix), device="cpu")


def test_temperature_and_top_p_reach_every_block():
    """Shaping goes into each block's sampler: with top-p near 0 (or a low temperature) every
    unmasking draws the mode of its exact conditional, so the samples are far more likely under
    the language than its entropy rate; at top-p 1 and temperature 1 they sit at it."""
    oracle = BlockLanguageOracle(LANG, 4)
    H, _ = LANG.entropy_rate(24, num=200)
    nll = {}
    for name, kw in [("top_p", dict(top_p=1e-9)), ("temperature", dict(temperature=0.05)),
                     ("plain", {})]:
        x = family().generate(oracle, 64, 24, predictor="first_hitting", steps=10 ** 6,
                              generator=torch.Generator().manual_seed(0), device="cpu", **kw)
        nll[name] = float((-LANG.log_likelihood(x.numpy()) / 24).mean())
    assert nll["top_p"] < H - 1 and nll["temperature"] < H - 1, (nll, H)
    assert abs(nll["plain"] - H) < 0.25, (nll, H)


def test_bad_settings_are_one_clear_error():
    assert resolve_config("micro", family="block").block_size == 4      # the default K
    with pytest.raises(ValueError, match="--block-size 5 does not divide --seq-len 16"):
        resolve_config("micro", family="block", block_size=5)
    with pytest.raises(ValueError, match="--block-size must be >= 1"):
        resolve_config("micro", family="block", block_size=0)
    with pytest.raises(ValueError, match="--model sedd has no --block-size"):
        resolve_config("micro", block_size=4)
    with pytest.raises(ValueError, match="--mask-rate must be LO,HI with 0 < LO < HI <= 1"):
        resolve_config("micro", family="block", mask_rate="0.8,0.3")
    with pytest.raises(ValueError, match="--model ar has no --noise-levels"):
        resolve_config("micro", family="ar", noise_levels="uniform")
    with pytest.raises(ValueError, match="--model block has no --graph"):
        resolve_config("micro", family="block", block_size=4, graph="uniform")


@pytest.fixture(scope="module")
def block_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("block") / "run"
    r = script("train.py", "--model", "block", "--block-size", "4", "--preset", "micro",
               "--steps", "60", "--out", str(out), "--no-progress", "--device", "cpu")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "held-out likelihood bound" in r.stdout
    return out


def test_the_doors_train_evaluate_and_sample_it(block_run, tmp_path):
    r = script("evaluate.py", "--checkpoint", str(block_run), "--num-sequences", "16",
               "--timesteps", "4")
    assert r.returncode == 0 and "likelihood bound:" in r.stdout, r.stderr
    r = script("evaluate.py", "--checkpoint", str(block_run), "--num-sequences", "16",
               "--timesteps", "4", "--protocol", "mdlm")
    assert r.returncode == 0 and "likelihood bound:" in r.stdout, r.stderr
    out = tmp_path / "s.jsonl"
    r = script("sample.py", "--checkpoint", str(block_run), "--length", "512", "--stop-at-eos",
               "--eos", ".", "--steps", "8", "--num-samples", "2", "--out", str(out))
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 2 and all(row["length"] <= 512 for row in rows)
    for flags, match in [(["--window", "8"], "--window applies to SEDD models"),
                         (["--suffix", "."], "--suffix: a block-diffusion model"),
                         (["--predictor", "first_hitting", "--no-kv-cache", "--prefix", "the"], None)]:
        r = script("sample.py", "--checkpoint", str(block_run), "--out", str(out), *flags)
        if match is None:
            assert r.returncode == 0, r.stderr
        else:
            assert r.returncode != 0 and match in r.stderr and "Traceback" not in r.stderr


def test_resume_is_exact(tmp_path):
    common = dict(family="block", block_size=4, progress=False, final_report=False,
                  device="cpu", save_every=3, eval_every=100)
    Trainer(resolve_config("micro", steps=6, out=str(tmp_path / "a"), **common)).fit()
    Trainer(resolve_config("micro", steps=3, out=str(tmp_path / "b"), **common)).fit()
    Trainer(resolve_config("micro", steps=6, out=str(tmp_path / "b"), resume=True,
                           **common)).fit()
    from safetensors.torch import load_file
    for f in ("model.safetensors", "ema.safetensors"):
        a = load_file(str(tmp_path / "a" / "checkpoints" / "step-00000006" / f))
        b = load_file(str(tmp_path / "b" / "checkpoints" / "step-00000006" / f))
        assert all(torch.equal(a[k], b[k]) for k in a)
