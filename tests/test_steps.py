"""Forward process and reverse steps (docs/math.md §1, §6): distributions of the fused sampling kernels
against exact probabilities, determinism, frozen positions, registration and input checks."""

import math

import pytest
import torch

import sedd_kernels as sk
from sedd_kernels import reference as R


GRAPHS = ["absorb", "uniform"]
KINDS = ["euler", "analytic", "denoise"]
STEP = {"euler": sk.euler_step, "analytic": sk.analytic_step, "denoise": sk.denoise_step}


def _rng(device, seed=0, offset=0):
    """The (seed, offset) tensor the raw sampling ops take."""
    return torch.tensor([seed, offset], device=device)


def chi2(counts, probs):
    """Pearson's statistic of observed counts against probabilities (bins with p > 0)."""
    n = counts.sum()
    keep = probs > 0
    expected = probs[keep] * n
    return float(((counts[keep] - expected) ** 2 / expected).sum()), int(keep.sum()) - 1


def chi2_ok(counts, probs, z=6.0):
    """Chi-square within mean + z·sd of its distribution (dof + z·sqrt(2·dof)); p ≈ 1e-8 at z=6
    for the sizes used here, so a seeded test fails only on a real mismatch."""
    stat, dof = chi2(counts.double(), probs.double())
    assert counts[probs == 0].sum() == 0, "a zero-probability outcome was drawn"
    return stat <= dof + z * math.sqrt(2 * max(dof, 1)), (stat, dof)


# ---------------------------------------------------------------- sample_categorical

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_sample_categorical_chi_square(device, dtype):
    """10^6 draws from known weights (exponential race, docs/math.md §6) match their probabilities."""
    w = torch.tensor([0.5, 1.0, 2.0, 0.0, 4.0, 0.25, 3.0, 1.5], dtype=dtype)
    g = torch.Generator(device=device).manual_seed(1)
    out = sk.sample_categorical(w.to(device).expand(10**6, 8), g)
    counts = torch.bincount(out.cpu(), minlength=8)
    ok, info = chi2_ok(counts, w.double() / w.double().sum())
    assert ok, info


def test_sample_categorical_tail(device):
    """Tokens of probability 1e-7 appear at their rate. 10^4 such tokens next to one of weight 1:
    the group wins with probability 1e-3/(1 + 1e-3), 200 times in 2·10^5 draws (sd 14). A race on
    float32 −log(U) (24-bit U: no E below 6e-8) lets each of them win about 3× too rarely, ~70."""
    V = 10001
    w = torch.full((V,), 1e-7, device=device)
    w[0] = 1.0
    g = torch.Generator(device=device).manual_seed(7)
    out = sk.sample_categorical(w.expand(200_000, V), g)
    hits = int((out > 0).sum())
    expected = 200_000 * 1e-3 / (1 + 1e-3)
    assert abs(hits - expected) <= 5 * math.sqrt(expected), hits


@pytest.mark.parametrize("V", [2, 70])         # the scalar path and the 64-wide vector blocks
def test_sample_categorical_extreme_weights(device, V):
    """Weights at both ends of the range are drawn at their rate (issue 13, defect 2): two equal
    weights of 3e38 (keys above FLT_MAX once E < 1, which pruned every later entry: 67/33), and
    float64 weights of 1e-300 (below the float range: they rounded to 0 and could never win)."""
    for big, dtype in [(3e38, torch.float32), (1e-300, torch.float64), (1e300, torch.float64)]:
        w = torch.zeros(V, dtype=dtype)
        w[0], w[V - 1] = big, big
        g = torch.Generator(device=device).manual_seed(11)
        out = sk.sample_categorical(w.to(device).expand(100_000, V), g).cpu()
        assert set(out.unique().tolist()) <= {0, V - 1}
        ok, info = chi2_ok(torch.bincount(out, minlength=V), w.double() / w.double().sum())
        assert ok, (big, info)
    for lo in (1e-300, 1e-320):             # 1 : 3 far below the float range, and subnormal
        w = torch.zeros(V, dtype=torch.float64)
        w[0], w[1] = lo, 3 * lo
        out = sk.sample_categorical(w.to(device).expand(100_000, V),
                                    torch.Generator(device=device).manual_seed(12)).cpu()
        ok, info = chi2_ok(torch.bincount(out, minlength=V), w / w.sum())
        assert ok, (lo, info)


def test_sample_categorical_tiny_and_infinite_weights(device):
    """A row whose only positive weight is tiny (float64 1e-300 … the smallest subnormal) always
    draws it (the race used to refuse such rows at random: "needs a positive entry"); an infinite
    weight always wins, the first of several."""
    for tiny in (1e-46, 1e-300, 1e-320, 5e-324):
        w = torch.zeros(100, dtype=torch.float64)
        w[37] = tiny
        out = sk.sample_categorical(w.to(device).expand(20_000, 100),
                                    torch.Generator(device=device).manual_seed(2))
        assert (out == 37).all(), tiny
    w = torch.tensor([1.0, float("inf"), 2.0, float("inf")], device=device)
    assert (sk.sample_categorical(w.expand(1000, 4)) == 1).all()
    w = torch.tensor([1e-300, 1.0, 1e300], dtype=torch.float64, device=device)
    assert (sk.sample_categorical(w.expand(1000, 3)) == 2).all()


# The jump race runs one race per segment of steps.h's kSegment = 8192 entries: these rows span
# several, with the heavy entries in different segments.
SEGMENT = 8192


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_sample_categorical_across_segments(device, dtype):
    """3·10^5 draws over V = 20000 (three segments, the last one partial) match the probabilities
    in 50 groups of 400 entries; a few heavy entries sit at segment edges and inside the last."""
    V, N = 20_000, 300_000
    g = torch.Generator().manual_seed(5)
    w = torch.rand(V, generator=g, dtype=torch.float64) ** 4
    w[[0, SEGMENT - 1, SEGMENT, 2 * SEGMENT + 7, V - 1]] = torch.tensor([30.0, 50.0, 20.0, 80.0, 40.0],
                                                                      dtype=torch.float64)
    w = w.to(dtype)
    out = sk.sample_categorical(w.to(device).expand(N, V),
                                torch.Generator(device=device).manual_seed(6)).cpu()
    groups = torch.bincount(out // 400, minlength=V // 400)
    p = w.double().reshape(V // 400, 400).sum(1)
    ok, info = chi2_ok(groups, p / p.sum())
    assert ok, info
    for y in (0, SEGMENT - 1, SEGMENT, 2 * SEGMENT + 7, V - 1):   # the heavy entries one by one
        rate = float(w.double()[y] / w.double().sum())
        hits = int((out == y).sum())
        assert abs(hits - N * rate) <= 6 * math.sqrt(N * rate), (y, hits, N * rate)


def test_sample_categorical_segments_deterministic_across_threads():
    w = torch.rand(16, 20_000)
    a = sk.sample_categorical(w, torch.Generator().manual_seed(1))
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b = sk.sample_categorical(w, torch.Generator().manual_seed(1))
    finally:
        torch.set_num_threads(n)
    assert torch.equal(a, b)


def test_sample_categorical_shapes_and_determinism(device):
    w = torch.rand(3, 4, 50, device=device)
    a = sk.sample_categorical(w, torch.Generator(device=device).manual_seed(3))
    b = sk.sample_categorical(w, torch.Generator(device=device).manual_seed(3))
    c = sk.sample_categorical(w, torch.Generator(device=device).manual_seed(4))
    assert a.shape == (3, 4) and a.dtype == torch.long
    assert torch.equal(a, b) and not torch.equal(a, c)
    # one positive entry: always chosen
    one = torch.zeros(5, 70, device=device)
    one[torch.arange(5), torch.tensor([0, 17, 63, 64, 69])] = 3.0
    assert sk.sample_categorical(one).cpu().tolist() == [0, 17, 63, 64, 69]


@pytest.mark.parametrize("bad, match", [
    (-1.0, "non-negative"), (float("nan"), "non-negative"), ("zeros", "positive entry")])
def test_sample_categorical_bad_weights(device, bad, match):
    w = torch.rand(4, 9, device=device)
    if bad == "zeros":
        w[2] = 0.0
    else:
        w[1, 3] = bad
    with pytest.raises(ValueError, match=match):
        sk.sample_categorical(w)


# ---------------------------------------------------------------- perturbation

@pytest.mark.parametrize("graph", GRAPHS)
def test_perturb_rates(device, graph):
    """P(x_t ≠ x_0) = 1 − e^{−σ} (absorbing) and (1 − e^{−σ})(1 − 1/V) (uniform, the new token is
    uniform over all V); the mask stays the mask."""
    V, L = 11, 100_000
    sigma = torch.tensor([0.05, 0.7, 3.0], device=device)
    x0 = torch.randint(0, V - 1, (3, L), device=device)
    g = torch.Generator(device=device).manual_seed(5)
    xt = sk.perturb(x0, sigma, graph, V, g)
    for b, s in enumerate(sigma.tolist()):
        moved = (xt[b] != x0[b]).double().mean().item()
        p = -math.expm1(-s) * (1 if graph == "absorb" else 1 - 1 / V)
        assert abs(moved - p) <= 6 * math.sqrt(p * (1 - p) / L), (s, moved, p)
    if graph == "absorb":
        assert set(xt[x0 != xt].unique().tolist()) <= {V - 1}
        mask = torch.full((1, 50), V - 1, device=device)
        assert torch.equal(sk.perturb(mask, 2.0, graph, V), mask)
    else:
        # from a fixed x_0 = 3, a token that changed is uniform over the other V − 1
        x3 = torch.full((1, 200_000), 3, device=device)
        new = sk.perturb(x3, 1.0, graph, V, g)
        new = new[new != 3]
        probs = torch.ones(V, dtype=torch.float64)
        probs[3] = 0
        ok, info = chi2_ok(torch.bincount(new.cpu(), minlength=V), probs / probs.sum())
        assert ok, info


def test_perturb_determinism_and_threads():
    x0 = torch.randint(0, 50, (4, 3000))
    sig = torch.rand(4) + 0.1
    a = sk.perturb(x0, sig, "uniform", 51, torch.Generator().manual_seed(9))
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        b = sk.perturb(x0, sig, "uniform", 51, torch.Generator().manual_seed(9))
    finally:
        torch.set_num_threads(n)
    assert torch.equal(a, b)


# ---------------------------------------------------------------- reverse steps

def _position(graph, V, dtype, seed, special=True):
    g = torch.Generator().manual_seed(seed)
    ls = (torch.randn(1, 1, V, generator=g, dtype=torch.float64) * 0.8).to(dtype)
    x = torch.tensor([[V - 1 if graph == "absorb" else 3]])
    return ls, x


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("V", [7, 130])
def test_step_distribution(device, graph, kind, V):
    """For one position repeated 2·10^5 times, the next-token frequencies of the fused step match
    the exact probabilities of docs/math.md §6 computed by reference.step_weights in float64 from the
    dense matrix exponentials (V = 7: scalar path; V = 130: SIMD blocks + tail)."""
    ls, x = _position(graph, V, torch.float32, seed=V)
    delta = {"euler": 0.02 if graph == "absorb" else 0.9, "analytic": 0.05, "denoise": 0.3}[kind]
    d = torch.tensor([delta], dtype=torch.float64)
    probs = R.step_weights(ls.double(), x, d, graph, kind)[0, 0]
    assert probs.min() >= 0 and abs(probs.sum() - 1) < 1e-12
    N = 200_000
    gen = torch.Generator(device=device).manual_seed(11)
    out = STEP[kind](ls.to(device).expand(1, N, V), x.to(device).expand(1, N).contiguous(),
                     d.to(device), graph, gen)
    counts = torch.bincount(out.cpu().flatten(), minlength=V)
    ok, info = chi2_ok(counts, probs)
    assert ok, info
    if graph == "absorb" and kind == "denoise":
        assert (out != V - 1).all()


def _closed_form_weights(ls, x, delta, graph, kind):
    """The step's probabilities [V] in float64 from docs/math.md §6's closed forms (for V too large
    for the dense matrix exponentials of reference.step_weights); ls [1, 1, V], x [1, 1]."""
    V = ls.shape[-1]
    s = ls.double().exp()[0, 0]
    xi = int(x)
    s[xi] = 1.0
    d = torch.tensor(delta, dtype=torch.float64)
    if graph == "absorb":               # x = M: (e^δ − 1)·s_y, or δ·s_y (Euler); the rest stays
        f = torch.expm1(d) if kind == "analytic" else d
        w = f * s
        w[xi] = (1 - f * (s.sum() - 1)).clamp_min(0)
    elif kind == "euler":
        w = d / V * s
        w[xi] = (1 - d / V * (s.sum() - 1)).clamp_min(0)
    else:
        stag = sk.staggered_score(s[None, None], d[None], "uniform")[0, 0]
        w = (stag * sk.transition(x, d[None], "uniform", V)[0, 0]).clamp_min(0)
    return w / w.sum()


@pytest.mark.parametrize("graph, kind", [("absorb", "analytic"), ("absorb", "euler"),
                                         ("uniform", "euler"), ("uniform", "analytic")])
@pytest.mark.parametrize("V, dtype", [(1100, torch.float32), (4099, torch.float16),
                                      (4099, torch.float64), (20_000, torch.float32)])
def test_step_distribution_long_rows(device, graph, kind, V, dtype):
    """One position repeated 2·10^5 times on long rows — the CUDA kernels' block-per-row path
    (V ≥ 1024), fp16 and fp64 rows, three race segments at V = 20000: the next-token frequencies
    match the closed-form probabilities in 40 groups of tokens, the special entry (the mask, or
    x) on its own; the steps add `shift` themselves (here −2.5)."""
    N, shift, G = 200_000, -2.5, 40
    g = torch.Generator().manual_seed(9)
    ls = (torch.randn(1, 1, V, generator=g, dtype=torch.float64) * 1.5).to(dtype)
    x = torch.tensor([[V - 1 if graph == "absorb" else V // 2 + 7]])
    delta = 1e-4 * 20_000 / V if graph == "absorb" else 0.5
    read = ls.double() if dtype == torch.float64 else ls.float().double()
    probs = _closed_form_weights(read + shift, x, delta, graph, kind)
    out = STEP[kind](ls.to(device).expand(1, N, V), x.to(device).expand(1, N).contiguous(),
                     torch.tensor([delta], device=device), graph,
                     torch.Generator(device=device).manual_seed(10),
                     shift=torch.tensor([shift], device=device)).cpu().flatten()
    sp = int(x)
    group = torch.arange(V) * G // V
    rest = probs.clone()
    rest[sp] = 0
    counts = torch.bincount(group[out[out != sp]], minlength=G)
    ok, info = chi2_ok(torch.cat([counts, (out == sp).sum()[None]]),
                       torch.cat([torch.zeros(G, dtype=torch.float64).index_add_(0, group, rest),
                                  probs[sp][None]]))
    assert ok, info


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("with_bias", [False, True])
def test_bias_and_shift_are_the_materialised_log_scores(device, graph, kind, dtype, with_bias):
    """step(prod, bias=b, shift=c) draws exactly the tokens of step((prod + b) + c with 0 at the
    current token): the network's forward() without its [B, L, V] passes (same numbers, same
    draws)."""
    B, L, V = 2, 40, 300
    g = torch.Generator().manual_seed(3)
    prod = (torch.randn(B, L, V, generator=g) * 2).to(dtype)
    x = torch.randint(0, V, (B, L), generator=g)
    if graph == "absorb":
        x[:, ::2] = V - 1
    c = torch.tensor([-3.25, 1.5])
    b = torch.randn(V, generator=g) if with_bias else None
    full = prod.float() + b if with_bias else prod.float()
    full = (full + c[:, None, None]).scatter(-1, x[..., None], 0.0)
    d = torch.tensor([0.2, 0.7])
    on = (lambda t: None if t is None else t.to(device))
    a = STEP[kind](full.to(device), x.to(device), d.to(device), graph,
                   torch.Generator(device=device).manual_seed(4))
    f = STEP[kind](prod.to(device), x.to(device), d.to(device), graph,
                   torch.Generator(device=device).manual_seed(4), shift=c.to(device), bias=on(b))
    assert torch.equal(a, f)
    r = R.reverse_step(prod, x, d, graph, kind, torch.Generator().manual_seed(4), shift=c, bias=b)
    assert torch.equal(r, R.reverse_step(full, x, d, graph, kind, torch.Generator().manual_seed(4)))
    with pytest.raises(ValueError, match=r"shift must have shape \[B\]"):
        torch.ops.sedd.reverse_step(prod.to(device), x.to(device), d.to(device), graph, kind,
                                    _rng(device), None, torch.zeros(3, device=device))
    with pytest.raises(ValueError, match=r"bias must have shape \[V\]"):
        torch.ops.sedd.reverse_step(prod.to(device), x.to(device), d.to(device), graph, kind,
                                    _rng(device), None, None, torch.zeros(V + 1, device=device))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_step_distribution_low_precision(device, dtype):
    ls, x = _position("uniform", 70, dtype, seed=2)
    d = torch.tensor([0.2], dtype=torch.float64)
    probs = R.step_weights(ls.double(), x, d, "uniform", "analytic")[0, 0]
    out = sk.analytic_step(ls.to(device).expand(1, 100_000, 70),
                           x.to(device).expand(1, 100_000).contiguous(), d.to(device), "uniform",
                           torch.Generator(device=device).manual_seed(0))
    ok, info = chi2_ok(torch.bincount(out.cpu().flatten(), minlength=70), probs)
    assert ok, info


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("kind", KINDS)
def test_frozen_and_immobile_positions(device, graph, kind):
    """Frozen positions keep their token under every step; absorbing positions that are not
    masked never move; masked ones move to non-mask tokens or stay; the denoiser never outputs M."""
    B, L, V = 3, 200, 90
    g = torch.Generator().manual_seed(4)
    ls = torch.randn(B, L, V, generator=g) * 2
    x = torch.randint(0, V, (B, L), generator=g)
    if graph == "absorb":
        x = torch.where(torch.rand(B, L, generator=g) < 0.6, torch.full_like(x, V - 1), x)
    frozen = torch.rand(B, L, generator=g) < 0.3
    d = torch.tensor([0.5, 2.0, 8.0])
    out = STEP[kind](ls.to(device), x.to(device), d.to(device), graph, None,
                     frozen.to(device)).cpu()
    assert torch.equal(out[frozen], x[frozen])
    if graph == "absorb":
        unmasked = x != V - 1
        assert torch.equal(out[unmasked], x[unmasked])
        if kind == "denoise":
            assert (out[~frozen] != V - 1).all()
    assert ((out >= 0) & (out < V)).all()
    # the score at the current token is ignored (taken as 1)
    ls2 = ls.clone()
    ls2.scatter_(-1, x[..., None], 30.0)
    g1 = torch.Generator(device=device).manual_seed(8)
    g2 = torch.Generator(device=device).manual_seed(8)
    a = STEP[kind](ls.to(device), x.to(device), d.to(device), graph, g1)
    b = STEP[kind](ls2.to(device), x.to(device), d.to(device), graph, g2)
    assert torch.equal(a, b)


def test_denoise_never_outputs_mask_even_without_scores(device):
    V = 40
    ls = torch.full((2, 30, V), float("-inf"), device=device)   # every score 0
    x = torch.full((2, 30), V - 1, device=device)
    out = sk.denoise_step(ls, x, torch.tensor([0.1, 5.0], device=device), "absorb")
    assert (out != V - 1).all() and (out >= 0).all()
    # Euler/analytic keep the mask when every other weight is 0
    assert torch.equal(sk.analytic_step(ls, x, torch.tensor([0.1, 5.0], device=device), "absorb"), x)


@pytest.mark.parametrize("kind", KINDS)
def test_steps_deterministic_across_threads(kind):
    B, L, V = 2, 64, 300
    ls = torch.randn(B, L, V)
    x = torch.randint(0, V, (B, L))
    d = torch.tensor([0.3, 0.6])
    a = STEP[kind](ls, x, d, "uniform", torch.Generator().manual_seed(1))
    b = STEP[kind](ls, x, d, "uniform", torch.Generator().manual_seed(1))
    n = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        c = STEP[kind](ls, x, d, "uniform", torch.Generator().manual_seed(1))
    finally:
        torch.set_num_threads(n)
    assert torch.equal(a, b) and torch.equal(a, c)
    assert not torch.equal(a, STEP[kind](ls, x, d, "uniform", torch.Generator().manual_seed(2)))


def test_paper_style_reference_steps_match_the_definition():
    """The reference eager steps (closed forms, as the paper's code) give the distributions of the
    definition: compared through their sampling frequencies."""
    V, N = 9, 100_000
    for graph in GRAPHS:
        for kind in KINDS:
            ls, x = _position(graph, V, torch.float64, seed=3)
            d = torch.tensor([0.4], dtype=torch.float64)
            probs = R.step_weights(ls, x, d, graph, kind)[0, 0]
            ref = getattr(R, f"{kind}_step")(ls.expand(1, N, V), x.expand(1, N), d, graph,
                                              torch.Generator().manual_seed(0))
            ok, info = chi2_ok(torch.bincount(ref.flatten(), minlength=V), probs)
            assert ok, (graph, kind, info)


# ---------------------------------------------------------------- dense rows

@pytest.mark.parametrize("graph", GRAPHS)
def test_transition_and_staggered_score_closed_forms(graph):
    """transition (P(σ)[:, x]) and staggered_score (exp(−δQ)·s) in closed form equal the dense
    matrix exponentials of the definition (reference)."""
    V = 9
    x = torch.randint(0, V, (3, 5))
    sigma = torch.tensor([1e-4, 0.5, 7.0], dtype=torch.float64)
    torch.testing.assert_close(sk.transition(x, sigma, graph, V), R.transition(x, sigma, graph, V),
                               rtol=1e-12, atol=1e-14)
    s = torch.rand(3, 5, V, dtype=torch.float64) * 3
    torch.testing.assert_close(sk.staggered_score(s, sigma, graph),
                               R.staggered_score(s, sigma, graph), rtol=1e-11, atol=1e-11)
    rows = sk.transition(x, sigma, graph, V)
    torch.testing.assert_close(rows.sum(-1), torch.ones(3, 5, dtype=torch.float64))


# ---------------------------------------------------------------- registration and errors

def test_opcheck(device):
    ls = torch.randn(2, 3, 70, device=device)
    x = torch.randint(0, 70, (2, 3), device=device)
    d = torch.rand(2, device=device, dtype=torch.float64)
    frozen = torch.rand(2, 3, device=device) < 0.5
    for kind in KINDS:
        torch.library.opcheck(torch.ops.sedd.reverse_step.default,
                              (ls, x, d, "uniform", kind, _rng(device, 5, 0), frozen))
        torch.library.opcheck(torch.ops.sedd.reverse_step.default,
                              (ls, x, d, "absorb", kind, _rng(device, 5, 0), None, d.float(),
                               ls[0, 0]))
    torch.library.opcheck(torch.ops.sedd.sample_categorical.default, (ls.exp(), _rng(device, 3, 4)))
    torch.library.opcheck(torch.ops.sedd.perturb.default, (x, d, "absorb", 71, _rng(device, 1, 2)))


@pytest.mark.parametrize("case, exc, match", [
    ("x_range", ValueError, "token ids"),
    ("negative_dsigma", ValueError, "dsigma must be >= 0"),
    ("x_dtype", TypeError, "x must be an int64"),
    ("frozen_dtype", TypeError, "frozen must be a bool"),
    ("frozen_shape", ValueError, r"frozen must have shape \[B, L\]"),
    ("rank", ValueError, r"log_score must have shape \[B, L, V\]"),
    ("kind", ValueError, "kind must be"),
])
def test_step_bad_input(device, case, exc, match):
    ls = torch.randn(2, 3, 10, device=device)
    x = torch.randint(0, 10, (2, 3), device=device)
    d = torch.rand(2, device=device)
    frozen = None
    fn = sk.euler_step
    if case == "x_range":
        x[1, 1] = 10
    elif case == "negative_dsigma":
        d[0] = -0.1
    elif case == "x_dtype":
        x = x.int()
    elif case == "frozen_dtype":
        frozen = torch.zeros(2, 3, device=device)
    elif case == "frozen_shape":
        frozen = torch.zeros(2, 4, dtype=torch.bool, device=device)
    elif case == "rank":
        ls = ls[0]
    if case == "kind":
        with pytest.raises(exc, match=match):
            torch.ops.sedd.reverse_step(ls, x, d, "uniform", "leap", _rng(device), None)
        return
    with pytest.raises(exc, match=match):
        fn(ls, x, d, "uniform", None, frozen)


@pytest.mark.parametrize("kind", KINDS)
def test_nan_log_scores_raise_on_the_cpu(kind):
    """Issue 13, defect 1, CPU half: NaN log-scores are an error naming the row (the CUDA kernels
    stop with a device-side assert: tests/test_cuda.py), never a −1 token."""
    ls = torch.randn(2, 3, 10)
    ls[1, 2, 4] = float("nan")
    x = torch.randint(0, 10, (2, 3))
    with pytest.raises(ValueError, match=r"log_score has NaN entries in row \[1, 2\]"):
        STEP[kind](ls, x, torch.rand(2), "uniform")


def test_perturb_bad_input(device):
    x0 = torch.randint(0, 4, (2, 3), device=device)
    x0[1, 2] = 4
    with pytest.raises(ValueError, match="token ids|x_0 must hold"):
        sk.perturb(x0, 1.0, "absorb", 4)
    with pytest.raises(ValueError, match="sigma must be >= 0"):
        sk.perturb(x0, -1.0, "absorb", 6)
    with pytest.raises(ValueError, match="graph must be"):
        sk.perturb(x0, 1.0, "masked", 6)


def test_rng_argument_is_checked(device):
    """The raw ops take (seed, offset) as an int64 [2] tensor on their device (read in-kernel:
    CUDA-graph safe); anything else is an error naming it."""
    w = torch.rand(3, 5, device=device)
    for bad, exc, match in [(torch.tensor([1.0, 2.0], device=device), TypeError, "rng must be an int64"),
                            (torch.tensor([1, 2, 3], device=device), ValueError, r"rng must have shape \[2\]")]:
        with pytest.raises(exc, match=match):
            torch.ops.sedd.sample_categorical(w, bad)
    if device.type == "cuda":
        with pytest.raises(ValueError, match="rng must be on the same device"):
            torch.ops.sedd.sample_categorical(w, torch.tensor([1, 2]))
    a = torch.ops.sedd.sample_categorical(w, _rng(device, 7, 9))
    assert torch.equal(a, torch.ops.sedd.sample_categorical(w, _rng(device, 7, 9)))


def test_wrapper_errors_name_the_op_called():
    """The shared normalisers (sedd_kernels._args) take the op's name for their messages."""
    x0 = torch.randint(0, 4, (2, 3))
    with pytest.raises(ValueError, match="^perturb: graph must be 'absorb' or 'uniform'"):
        sk.perturb(x0, 1.0, "masked", 6)
    ls = torch.randn(2, 3, 6)
    with pytest.raises(ValueError, match="^analytic_step: graph must be"):
        sk.analytic_step(ls, x0, 0.1, "masked")
    with pytest.raises(ValueError, match="^reverse_step: kind must be one of euler, analytic, denoise"):
        sk.reverse_step(ls, x0, 0.1, "absorb", "leap")
    with pytest.raises(ValueError, match="^staggered_score: graph must be"):
        sk.staggered_score(ls.exp(), 0.1, "masked")
    with pytest.raises(ValueError, match="^linear_score_entropy: graph must be"):
        sk.linear_score_entropy(torch.randn(2, 3, 4), torch.randn(6, 4), None, x0, x0, 1.0, "masked")
