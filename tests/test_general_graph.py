"""GeneralGraph (docs/math.md §1, §3, §6 with a user's dense Q): exact transitions, and — given the
absorbing or uniform Q — the closed-form ops to float64 precision."""

import math

import pytest
import torch

import sedd_kernels as sk
from sedd_kernels import reference as R

GRAPHS = ["absorb", "uniform"]


def random_q(V, seed=0):
    g = torch.Generator().manual_seed(seed)
    Q = torch.rand(V, V, generator=g, dtype=torch.float64)
    Q.fill_diagonal_(0)
    Q -= torch.diag(Q.sum(0))
    return Q


@pytest.mark.parametrize("graph", GRAPHS)
def test_transition_matches_closed_form(graph):
    """exp(σQ) (eigendecomposition for the symmetric uniform Q, scaling-and-squaring for the
    absorbing one) equals the closed forms of §1."""
    V = 8
    G = sk.GeneralGraph(R.rate_matrix(graph, V))
    assert G.symmetric == (graph == "uniform")
    assert G.absorbing_state == (V - 1 if graph == "absorb" else None)
    sigma = torch.tensor([1e-6, 0.3, 4.0, 25.0], dtype=torch.float64)
    torch.testing.assert_close(G.transition(sigma), R.transition_matrix(graph, V, sigma),
                               rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("graph", GRAPHS)
def test_score_entropy_matches_closed_form(graph):
    V, B, L = 7, 3, 5
    G = sk.GeneralGraph(R.rate_matrix(graph, V))
    g = torch.Generator().manual_seed(1)
    ls = torch.randn(B, L, V, generator=g, dtype=torch.float64)
    x0 = torch.randint(0, V - 1, (B, L), generator=g)
    xt = torch.where(torch.rand(B, L, generator=g) < 0.5,
                     torch.full_like(x0, V - 1) if graph == "absorb" else torch.randint(0, V, (B, L), generator=g),
                     x0)
    sigma = torch.tensor([0.01, 0.5, 3.0], dtype=torch.float64)
    torch.testing.assert_close(G.score_entropy(ls, xt, x0, sigma),
                               sk.score_entropy(ls, xt, x0, sigma, graph), rtol=1e-10, atol=1e-10)


def closed_form_weights(ls, x, d, graph, kind):
    """Weights of docs/math.md §6 written with its closed forms (not matrices), float64."""
    V = ls.shape[-1]
    s = ls.exp().scatter(-1, x[..., None], 1.0)
    d = d[:, None, None]
    onehot = torch.nn.functional.one_hot(x, V).double()
    if graph == "absorb":
        masked = (x == V - 1)[..., None]
        c = d if kind == "euler" else torch.expm1(d)
        w = c * s
        w[..., V - 1] = 0 if kind == "denoise" else 1 - (c[..., 0] * s[..., :V - 1].sum(-1))
        w = torch.where(masked, w, onehot)
    elif kind == "euler":
        w = d / V * s * (1 - onehot)
        w = w + onehot * (1 - w.sum(-1, keepdim=True))
    else:
        stag = torch.exp(d) * s - torch.expm1(d) * s.sum(-1, keepdim=True) / V
        trans = -torch.expm1(-d) / V + torch.exp(-d) * onehot
        w = stag * trans
    return w.clamp_min(0)


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("kind", ["euler", "analytic", "denoise"])
def test_step_weights_match_closed_form(graph, kind):
    V, B, L = 6, 2, 4
    G = sk.GeneralGraph(R.rate_matrix(graph, V))
    g = torch.Generator().manual_seed(2)
    ls = torch.randn(B, L, V, generator=g, dtype=torch.float64) * 0.5
    x = torch.randint(0, V, (B, L), generator=g)
    if graph == "absorb":
        x[:, :3] = V - 1
    d = torch.tensor([0.05, 0.4], dtype=torch.float64)
    got = G.step_weights(ls, x, d, kind)
    want = closed_form_weights(ls, x, d, graph, kind)
    torch.testing.assert_close(got, want, rtol=1e-11, atol=1e-12)


def test_general_q_properties():
    """A random non-symmetric Q: columns of P(σ) are distributions, P(a)P(b) = P(a + b),
    dP/dσ = QP, the score entropy of the exact conditional score is 0, and the analytic step
    samples its own weights."""
    V = 5
    Q = random_q(V)
    G = sk.GeneralGraph(Q)
    assert not G.symmetric
    P = G.transition(torch.tensor(0.7, dtype=torch.float64))
    torch.testing.assert_close(P.sum(0), torch.ones(V, dtype=torch.float64))
    torch.testing.assert_close(G.transition(torch.tensor(0.3, dtype=torch.float64)) @
                               G.transition(torch.tensor(0.4, dtype=torch.float64)), P,
                               rtol=1e-12, atol=1e-13)
    h = 1e-6
    dP = (G.transition(torch.tensor(0.7 + h, dtype=torch.float64)) -
          G.transition(torch.tensor(0.7 - h, dtype=torch.float64))) / (2 * h)
    torch.testing.assert_close(dP, Q @ P, rtol=1e-6, atol=1e-8)
    # exact conditional score: ℓ_y = log(P[y, x0] / P[x, x0])
    x0 = torch.tensor([[0, 1, 2, 3, 4]])
    xt = torch.tensor([[1, 1, 0, 4, 2]])
    sig = torch.tensor([0.7], dtype=torch.float64)
    cols = P[:, x0[0]].T[None]                                        # [1, 5, V]
    exact = torch.log(cols / torch.gather(cols, -1, xt[..., None]))
    assert G.score_entropy(exact, xt, x0, sig).abs().max() < 1e-12
    assert (G.score_entropy(exact + 0.3 * torch.randn_like(exact), xt, x0, sig) > 0).all()
    # sampling
    N = 100_000
    ls = torch.randn(1, 1, V, dtype=torch.float64)
    x = torch.tensor([[2]])
    w = G.step_weights(ls, x, sig, "analytic")[0, 0]
    out = G.analytic_step(ls.expand(1, N, V), x.expand(1, N), sig, torch.Generator().manual_seed(0))
    freq = torch.bincount(out.flatten(), minlength=V).double() / N
    assert (freq - w / w.sum()).abs().max() < 6 * math.sqrt(0.25 / N)
    # perturbation follows the columns of P
    xt = G.perturb(torch.full((1, N), 1), sig, torch.Generator().manual_seed(1))
    freq = torch.bincount(xt.flatten(), minlength=V).double() / N
    assert (freq - P[:, 1]).abs().max() < 6 * math.sqrt(0.25 / N)


def test_bad_rate_matrices():
    with pytest.raises(ValueError, match="square"):
        sk.GeneralGraph(torch.zeros(3, 4))
    Q = random_q(4)
    Q[0, 1] = -0.5
    with pytest.raises(ValueError, match="non-negative"):
        sk.GeneralGraph(Q)
    Q = random_q(4)
    Q[1, 1] += 0.3
    with pytest.raises(ValueError, match="sum to 0"):
        sk.GeneralGraph(Q)
