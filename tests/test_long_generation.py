"""Generation at any length and budget (issue 14): first-hitting sampling, semi-autoregressive
windows, stop at EOS, temperature / top-p, the per-sequence cache — against exact scores (the
exactness harness, tests/exact.py, and the built-in language's forward–backward oracle,
sedd.data.language.LanguageOracle) and from the command line on a trained tiny run."""

import json
import math

import numpy as np
import pytest
import torch

from exact import ExactModel, tv
from sedd.core.graphs import Absorbing, get_graph
from sedd.data.language import LanguageOracle, builtin_language
from sedd.core.noise import Geometric, LogLinear
from sedd.sampling import sample, window_starts

from conftest import script
from test_exact import noise_floor, p0_cases

LANG = builtin_language()
ORACLE = LanguageOracle(LANG)
GRAPH = Absorbing(LANG.n)
NOISE = LogLinear(1e-3)
EOS = LANG.words.index(".")
ALL = 10 ** 6     # steps: more than any window's masked positions (first-hitting at k = 1)


def nll_per_token(x):
    """Exact NLL per token of each sequence [N] (inf for a sequence the language cannot emit)."""
    x = np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x)
    return -LANG.log_likelihood(x) / x.shape[1]


def z_to_entropy(nll, L, seed=777):
    """(z-score of the mean NLL against the entropy rate, both standard errors combined, H)."""
    H, se_h = LANG.entropy_rate(L, num=len(nll), seed=seed)
    se = nll.std(ddof=1) / math.sqrt(len(nll))
    return (nll.mean() - H) / math.hypot(se, se_h), H


# ------------------------------------------------------------------ the oracle itself

def test_language_oracle_is_the_exact_conditional():
    """p(x_i = y | unmasked tokens) by forward–backward equals the normalised exact likelihood of
    every completion (one masked position, and one with a second masked position summed out)."""
    x = torch.from_numpy(LANG.sample(2, 7, 1))
    x[:, 3] = LANG.n
    x[1, 5] = LANG.n
    lp = ORACLE.clean_log_probs(x).double()
    for b in range(2):
        ys = np.tile(x[b].numpy(), (LANG.n, 1))
        ys[:, 3] = np.arange(LANG.n)
        if b == 0:
            p = np.exp(LANG.log_likelihood(ys))
        else:
            p = np.zeros(LANG.n)
            for z in range(LANG.n):
                ys[:, 5] = z
                p += np.exp(LANG.log_likelihood(ys))
        np.testing.assert_allclose(lp[b, 3, :LANG.n].exp().numpy(), p / p.sum(), atol=1e-6)
    assert (lp[..., LANG.n] == 0).all()


# ------------------------------------------------------------------ first-hitting, exact

@pytest.mark.parametrize("case", ["random", "peaked"])
def test_first_hitting_with_a_sigma_conditioned_oracle_is_exact(case):
    """The exactness harness's σ-conditioned oracle (exact marginal scores at each sequence's own
    drawn time): TV(first-hitting samples, p0) is at the noise floor of the draws — no
    discretisation error — with L = 3 evaluations (the analytic sampler needs ~256 steps for
    TV < 0.02, tests/test_exact.py)."""
    n, L, N = 4, 3, 20_000
    M = ExactModel("absorb", n, L, p0_cases(n, L)[case] ** 3)
    oracle = M.network()

    class Chunked(torch.nn.Module):        # the oracle's marginals per distinct σ, 2000 at a time
        def forward(self, x, sigma):
            return torch.cat([oracle(x[i:i + 2000], sigma[i:i + 2000])
                              for i in range(0, len(x), 2000)])

    x, stats = sample(Chunked(), get_graph("absorb", n), LogLinear(1e-3), N, L, ALL,
                      "first_hitting", device="cpu", generator=torch.Generator().manual_seed(4),
                      return_stats=True)
    assert stats.evaluations == stats.network_calls == L and not stats.cached
    assert tv(x, M) < 2.5 * noise_floor(M, N) + 0.003, (tv(x, M), noise_floor(M, N))


@pytest.mark.parametrize("L", [6, 24, 64])
def test_first_hitting_on_the_language_reaches_the_entropy_rate(L, capsys):
    """Exact scores of the built-in language: every first-hitting sample is a valid sequence and
    the mean exact NLL equals the entropy rate H(X_1..L)/L within 3.5 combined standard errors,
    at any L, in L evaluations (exact cache: one network call per unmasked position)."""
    N = 3000 if L < 64 else 1000
    x, stats = sample(ORACLE, GRAPH, NOISE, N, L, ALL, "first_hitting",
                      generator=torch.Generator().manual_seed(L), return_stats=True)
    nll = nll_per_token(x)
    assert np.isfinite(nll).all()
    z, H = z_to_entropy(nll, L)
    with capsys.disabled():
        print(f"\nfirst-hitting L={L}: NLL {nll.mean():.4f} vs entropy rate {H:.4f} (z = {z:.2f})")
    assert abs(z) < 3.5
    assert stats.cached and stats.evaluations == stats.network_calls == L


def test_grid_samplers_approach_the_entropy_rate_as_steps_grow(capsys):
    """The analytic and Euler samplers on the same exact scores: their valid fraction rises to 1
    and their NLL approaches the entropy rate as steps grow (the curve is printed); first-hitting
    is valid everywhere at L evaluations. (Under the log-linear schedule the absorbing Euler and
    analytic steps coincide, so Euler runs on the geometric schedule here.)"""
    L, N = 16, 1000
    H, _ = LANG.entropy_rate(L)
    curve = {}
    for predictor, noise in (("analytic", NOISE), ("euler", Geometric(1e-4, 20.0))):
        for steps in (8, 32, 128, 512):
            x = sample(ORACLE, GRAPH, noise, N, L, steps, predictor,
                       generator=torch.Generator().manual_seed(steps))
            nll = nll_per_token(x)
            ok = np.isfinite(nll)
            curve[predictor, steps] = (ok.mean(), nll[ok].mean() if ok.any() else math.inf)
    with capsys.disabled():
        print(f"\nentropy rate {H:.4f}; (valid fraction, NLL of the valid) by predictor, steps:")
        for k, (v, nll) in curve.items():
            print(f"  {k[0]:8s} {k[1]:4d}: {v:.3f}  {nll:.4f}")
    for predictor in ("analytic", "euler"):
        valid = [curve[predictor, s][0] for s in (8, 32, 128, 512)]
        assert valid == sorted(valid) and valid[0] < 0.5 and valid[-1] > 0.9, valid


def test_tokens_per_step_trades_evaluations_for_quality():
    """k tokens per evaluation: ⌈L/k⌉ evaluations; unmasking neighbours together from one
    evaluation produces invalid sequences (k = 1 produces none); steps caps the evaluations."""
    L, N = 24, 1000
    out = {}
    for k in (1, 4, 12):
        x, s = sample(ORACLE, GRAPH, NOISE, N, L, ALL, "first_hitting", tokens_per_step=k,
                      generator=torch.Generator().manual_seed(k), return_stats=True)
        assert s.evaluations == math.ceil(L / k) and x.max() < LANG.n
        out[k] = np.isfinite(nll_per_token(x)).mean()
    assert out[1] == 1.0 and out[1] > out[4] > out[12], out
    _, s = sample(ORACLE, GRAPH, NOISE, 4, L, 5, "first_hitting", return_stats=True)
    assert s.evaluations == 5                           # ⌈24 / 5⌉ = 5 tokens per evaluation


def test_first_hitting_keeps_given_positions_and_needs_the_absorbing_graph():
    tokens = torch.from_numpy(LANG.sample(1, 16, 3))
    given = torch.zeros(1, 16, dtype=torch.bool)
    given[0, :4] = given[0, 9] = True
    x, s = sample(ORACLE, GRAPH, NOISE, 200, 16, ALL, "first_hitting",
                  condition=(tokens, given), generator=torch.Generator().manual_seed(0),
                  return_stats=True)
    assert (x[:, given[0]] == tokens[:, given[0]]).all() and x.max() < LANG.n
    assert s.evaluations == 11 and np.isfinite(nll_per_token(x)).all()
    # the reference twin of the denoise step draws the tokens with use_reference=True
    xr, sr = sample(ORACLE, GRAPH, NOISE, 200, 16, ALL, "first_hitting", use_reference=True,
                    condition=(tokens, given), generator=torch.Generator().manual_seed(0),
                    return_stats=True, top_p=0.95)
    assert (xr[:, given[0]] == tokens[:, given[0]]).all() and sr.evaluations == 11
    assert np.isfinite(nll_per_token(xr)).all()
    with pytest.raises(ValueError, match="needs the absorb graph, got 'uniform'"):
        sample(ORACLE, get_graph("uniform", 5), Geometric(), 2, 8, 8, "first_hitting")
    with pytest.raises(ValueError, match="tokens_per_step applies to predictor 'first_hitting'"):
        sample(ORACLE, GRAPH, NOISE, 2, 8, 8, "analytic", tokens_per_step=2)


# ------------------------------------------------------------------ semi-autoregressive

def test_semi_autoregressive_samples_four_windows_long(capsys):
    """length = 4 × window: windows slide by the stride, each frozen on what is generated; every
    sample is valid and its NLL per token is within 0.03 nats (≈ 1 %) of the entropy rate
    (the windows condition on the last window − stride tokens only: for this language, whose
    hidden state forgets within a few tokens, that costs ~0.01 nats)."""
    W, L, N = 24, 96, 1000
    assert window_starts(L, W, 12) == [0, 12, 24, 36, 48, 60, 72]
    x, s = sample(ORACLE, GRAPH, NOISE, N, L, ALL, "first_hitting", window=W,
                  generator=torch.Generator().manual_seed(2), return_stats=True)
    nll = nll_per_token(x)
    H, se = LANG.entropy_rate(L, num=N)
    with capsys.disabled():
        print(f"\nsemi-AR {L} tokens in windows of {W}: NLL {nll.mean():.4f} vs entropy rate "
              f"{H:.4f} ± {se:.4f}; {s.windows} windows, {s.evaluations} evaluations")
    assert np.isfinite(nll).all() and abs(nll.mean() - H) < 0.03
    # each later window generates only its last `stride` tokens: L evaluations in all
    assert s.windows == 7 and s.evaluations == L and x.shape == (N, L)
    # the grid sampler runs every window in full
    x2, s2 = sample(ORACLE, GRAPH, NOISE, 8, 40, 16, "analytic", window=W, stride=8,
                    return_stats=True)
    assert s2.windows == len(window_starts(40, W, 8)) == 3 and s2.evaluations == 3 * 17
    assert x2.max() < LANG.n


def test_semi_autoregressive_keeps_conditions_in_every_window():
    """A prefix, a middle stretch and a suffix 3 windows apart are all kept; the suffix window
    sees its suffix, so the sequence is valid end to end."""
    L = 72
    tokens = torch.from_numpy(LANG.sample(1, L, 5))
    given = torch.zeros(1, L, dtype=torch.bool)
    given[0, :3] = given[0, 30:34] = given[0, -4:] = True
    x = sample(ORACLE, GRAPH, NOISE, 100, L, ALL, "first_hitting", window=24,
               condition=(tokens, given), generator=torch.Generator().manual_seed(1))
    assert (x[:, given[0]] == tokens[:, given[0]]).all()
    assert np.isfinite(nll_per_token(x)).all()


def test_window_and_stride_errors():
    with pytest.raises(ValueError, match=r"stride must be in \[1, window = 8\], got 9"):
        sample(ORACLE, GRAPH, NOISE, 2, 20, 4, window=8, stride=9)
    with pytest.raises(ValueError, match="window must be >= 1"):
        sample(ORACLE, GRAPH, NOISE, 2, 20, 4, window=0)


# ------------------------------------------------------------------ stop at EOS

def test_stop_at_eos_cuts_after_the_first_end_and_stops_the_windows():
    L, W = 96, 24
    out, s = sample(ORACLE, GRAPH, NOISE, 40, L, ALL, "first_hitting", window=W,
                    stop_at_eos=True, eos=EOS, generator=torch.Generator().manual_seed(3),
                    return_stats=True)
    assert isinstance(out, list) and len(out) == 40 and s.lengths == [len(r) for r in out]
    for row, ended in zip(out, s.ended):
        assert ended and row[-1] == EOS and (row[:-1] != EOS).all() and row.max() < LANG.n
    assert len(set(s.lengths)) > 3                       # variable lengths
    # every sentence ended early: the later windows were never generated
    assert s.windows < len(window_starts(L, W, W // 2))
    # single window: a sequence without EOS is returned whole, ended = False
    out, s = sample(ORACLE, GRAPH, NOISE, 200, 4, ALL, "first_hitting", stop_at_eos=True,
                    eos=EOS, generator=torch.Generator().manual_seed(0), return_stats=True)
    assert not all(s.ended) and any(s.ended)
    assert all(len(r) == 4 for r, e in zip(out, s.ended) if not e)
    with pytest.raises(ValueError, match="stop_at_eos needs eos"):
        sample(ORACLE, GRAPH, NOISE, 2, 8, 4, stop_at_eos=True)


# ------------------------------------------------------------------ temperature and top-p

def test_top_p_lowers_and_temperature_raises_the_sample_nll(capsys):
    """On the exact language scores (first-hitting, L = 16): top-p 0.9 and temperature 0.7
    lower the mean exact NLL below the entropy rate, temperature 1.5 raises it; every sample
    stays valid (a token of probability 0 is never drawn)."""
    L, N = 16, 2000
    H, _ = LANG.entropy_rate(L)
    res = {}
    for T, p in ((1.0, 1.0), (1.0, 0.9), (0.7, 1.0), (1.5, 1.0)):
        x = sample(ORACLE, GRAPH, NOISE, N, L, ALL, "first_hitting", temperature=T, top_p=p,
                   generator=torch.Generator().manual_seed(1))
        nll = nll_per_token(x)
        assert np.isfinite(nll).all()
        res[T, p] = nll.mean()
    with capsys.disabled():
        print(f"\nentropy rate {H:.4f}; NLL by (temperature, top-p): "
              + ", ".join(f"{k}: {v:.4f}" for k, v in res.items()))
    assert res[1.0, 0.9] < H - 0.1 and res[0.7, 1.0] < H - 0.3 and res[1.5, 1.0] > H + 0.3
    assert abs(res[1.0, 1.0] - H) < 0.05


@pytest.mark.parametrize("predictor", ["analytic", "euler"])
@pytest.mark.parametrize("use_reference", [False, True])
def test_shaping_on_the_grid_samplers(predictor, use_reference):
    """Top-p on the analytic / Euler steps (fused kernels and the reference twins): lower NLL of
    the valid samples than the unshaped sampler with the same steps."""
    L, N = 12, 600
    nll = {}
    for p in (1.0, 0.5):
        x = sample(ORACLE, GRAPH, NOISE, N, L, 64, predictor, top_p=p, use_reference=use_reference,
                   generator=torch.Generator().manual_seed(5))
        v = nll_per_token(x)
        nll[p] = v[np.isfinite(v)].mean()
    assert nll[0.5] < nll[1.0] - 0.3, nll


def test_shaping_on_the_uniform_graph_changes_the_targets_only():
    """Uniform graph: top-p < 1 narrows the transition targets (fewer distinct tokens), and
    temperature / top-p errors are named."""
    n, L = 6, 3
    M = ExactModel("uniform", n, L, p0_cases(n, L)["random"] ** 3)
    g = get_graph("uniform", n)
    distinct = {}
    for p in (1.0, 0.3):
        x = sample(M.network(), g, LogLinear(1e-3), 20000, L, 64, top_p=p, device="cpu",
                   generator=torch.Generator().manual_seed(0))
        distinct[p] = torch.unique(M.index(x)).numel()
    assert distinct[0.3] < distinct[1.0]
    with pytest.raises(ValueError, match="top_p must be in"):
        sample(M.network(), g, LogLinear(1e-3), 2, L, 4, top_p=0.0, device="cpu")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        sample(M.network(), g, LogLinear(1e-3), 2, L, 4, temperature=-1, device="cpu")


# ------------------------------------------------------------------ the per-sequence cache

def test_per_sequence_cache_runs_only_the_changed_sequences():
    """Batch 8, 256 analytic steps: the cached sampler makes the same samples (bit-identical
    here, CPU) with far fewer sequence evaluations than the all-or-nothing rule would (B per
    call that changes any sequence); first-hitting: ≤ L calls, finished sequences skipped."""
    from test_sampling_cache import tiny_model
    model, graph, noise = tiny_model(seed=2), Absorbing(40), LogLinear()
    B, L = 8, 16
    # uncached with all_rows: a call of all B sequences at every one of the 257 evaluations
    runs = {c: sample(model, graph, noise, B, L, 256, cache=c, return_stats=True, all_rows=not c,
                      generator=torch.Generator().manual_seed(3)) for c in (True, False)}
    (xc, sc), (xu, su) = runs[True], runs[False]
    assert torch.equal(xc, xu)
    assert su.sequence_evaluations == B * 257
    assert sc.sequence_evaluations <= B * L + B and sc.sequence_evaluations < sc.network_calls * B / 2
    # first-hitting with given positions of different counts per sequence: the shorter ones end
    # first and are not evaluated again
    tokens = torch.zeros(B, L, dtype=torch.long)
    given = torch.arange(L)[None] < torch.arange(B)[:, None]         # sequence b has b given
    x, s = sample(model, graph, noise, B, L, ALL, "first_hitting", condition=(tokens, given),
                  return_stats=True, generator=torch.Generator().manual_seed(0))
    assert s.evaluations == s.network_calls == L
    assert s.sequence_evaluations == sum(L - b for b in range(B))
    assert x.max() < graph.n


# ------------------------------------------------------------------ the command line

def run_sample(run_dir, tmp_path, *args):
    out = tmp_path / "s.jsonl"
    r = script("sample.py", "--checkpoint", str(run_dir), "--device", "cpu", "--out", str(out),
               "--num-samples", "3", *args)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in out.read_text().splitlines()], r.stderr


def test_cli_long_samples_first_hitting_top_p_and_eos(run_dir, tmp_path):
    """A trained tiny run (24-token window): --length 96 in windows, --predictor first_hitting
    (network calls ≤ L reported), --top-p 0.9 --temperature 0.8, --stop-at-eos --eos ."""
    rows, err = run_sample(run_dir, tmp_path, "--length", "96", "--stride", "12", "--steps", "16")
    assert all(len(r["tokens"]) == 96 and max(r["tokens"]) < LANG.n for r in rows)
    assert "7 windows" in err, err
    rows, err = run_sample(run_dir, tmp_path, "--predictor", "first_hitting")
    calls = int(err.split("network calls: ")[1].split()[0])
    assert calls <= 24 and all(len(r["tokens"]) == 24 for r in rows), err
    rows, _ = run_sample(run_dir, tmp_path, "--predictor", "first_hitting", "--top-p", "0.9",
                         "--temperature", "0.8", "--tokens-per-step", "2")
    assert all(max(r["tokens"]) < LANG.n for r in rows)
    rows, _ = run_sample(run_dir, tmp_path, "--length", "72", "--stop-at-eos", "--eos", ".",
                         "--predictor", "first_hitting")
    for r in rows:
        assert r["length"] == len(r["tokens"]) <= 72
        ends = [i for i, t in enumerate(r["tokens"]) if t == EOS]
        assert (ends == [r["length"] - 1]) if r["ended"] else not ends
