"""sedd.sampling.mover: a step computes the output projection only for the rows it can move (the
absorbing graph's masked positions), at the same places of the [B, W, V] block the kernels read
— the same log-scores there within float tolerance, the same tokens."""

import pytest
import torch

from sedd.core.graphs import Absorbing, Uniform
from sedd.core.noise import Geometric, LogLinear
from sedd.sampling import NetworkView, sample

from conftest import random_ddit


@pytest.mark.parametrize("parametrisation", ["score", "clean"])
def test_the_rows_projected_alone_equal_the_whole_output(parametrisation):
    g = Absorbing(40)
    model = random_ddit(g.V, parametrisation)
    x = torch.randint(0, g.V, (3, 24))
    x[:, ::3] = g.mask
    sigma = torch.tensor([0.3, 1.5, 4.0])
    full = model(x, sigma).reshape(-1, g.V)
    idx = (x == g.mask).reshape(-1).nonzero().squeeze(1)
    view = NetworkView(model, use_cache=False)
    torch.testing.assert_close(view.flat_rows(x, sigma, idx), full[idx], rtol=1e-5, atol=1e-5)
    prod, parts = view.step_scores(x, sigma, rows=idx)           # the steps' parts form
    rows = prod.reshape(-1, g.V)[idx]
    if parts["bias"] is not None:
        rows = rows + parts["bias"]
    rows = rows + parts["shift"].repeat_interleave(24)[idx, None]
    rows[:, g.mask] = 0.0                                         # the current token's entry
    torch.testing.assert_close(rows, full[idx], rtol=1e-5, atol=1e-5)
    assert view.calls == 2 and view.positions == 2 * x.numel()


@pytest.mark.parametrize("predictor", ["analytic", "euler"])
@pytest.mark.parametrize("case", ["score", "clean", "temperature", "infill"])
def test_the_same_tokens_as_with_every_row_computed(predictor, case):
    """all_rows=True is the sampler as it was (every row projected): the row-wise sampler gives
    the same tokens (each row keeps its place in the block, so its randomness), and skips the
    call when nothing can move (here the denoiser after the last step)."""
    g = Absorbing(40)
    model = random_ddit(g.V, "clean" if case == "clean" else "score")
    kw = dict(temperature=0.7, top_p=0.8) if case == "temperature" else {}
    if case == "infill":
        tokens = torch.randint(0, g.n, (1, 24))
        given = torch.zeros(1, 24, dtype=torch.bool)
        given[:, 5:9] = given[:, 20:] = True
        kw["condition"] = (tokens, given)
    runs = []
    for all_rows in (True, False):
        x, s = sample(model, g, LogLinear(), 4, 24, 48, predictor, cache=False, return_stats=True,
                      all_rows=all_rows, generator=torch.Generator().manual_seed(0), **kw)
        runs.append((x, s))
    (a, sa), (b, sb) = runs
    assert (a == b).float().mean() >= 0.99 and int(b.max()) < g.n
    assert sb.network_calls <= sa.network_calls == 49


def test_graphs_that_move_every_position_and_the_reference_steps_project_every_row():
    """The uniform graph moves every position and the reference steps are dense: all rows are
    computed, as before (calls and tokens equal with and without all_rows)."""
    g = Uniform(30)
    model = random_ddit(g.V, "score")
    for kw in (dict(graph=g, noise=Geometric()),
               dict(graph=Absorbing(29), noise=LogLinear(), use_reference=True)):
        runs = [sample(model, kw["graph"], kw["noise"], 2, 24, 8, "analytic", cache=False,
                       all_rows=all_rows, use_reference=kw.get("use_reference", False),
                       generator=torch.Generator().manual_seed(1), return_stats=True)
                for all_rows in (True, False)]
        assert torch.equal(runs[0][0], runs[1][0])
        assert runs[0][1].network_calls == runs[1][1].network_calls == 9
