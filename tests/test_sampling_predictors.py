"""sedd.sampling.predictors: a predictor is one registry entry — a grid step (a δσ rule and a
step) or its own loop over the public network view (sedd.sampling.network.NetworkView)."""

import pytest
import torch

from sedd.core.graphs import Absorbing, Uniform
from sedd.core.noise import LogLinear
from sedd.nn import DDiT, ModelConfig
from sedd.sampling import PREDICTORS, NetworkView, register, sample

TINY = dict(hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16, dropout=0.0)


def test_a_predictor_is_one_registry_entry():
    """A predictor added with one register() call drives sample() and the door's choices; here a
    'half-analytic' predictor (δσ half the interval's) whose step is the analytic kernel."""
    from sedd.sampling.predictors import PREDICTORS, get_predictor, register
    from sedd.sampling import sample
    g, noise = Absorbing(9), LogLinear()
    model = DDiT(ModelConfig(vocab_size=g.V, **TINY)).eval()
    try:
        register("half-analytic", lambda noise, t, t_next, dt:
                 0.5 * float(noise.total(t) - noise.total(t_next)),
                 step=lambda graph, ls, x, d, gen, frozen, ref=False:
                 graph.step("analytic", ls, x, d, gen, frozen, use_reference=ref))
        x = sample(model, g, noise, 3, 8, 4, "half-analytic",
                   generator=torch.Generator().manual_seed(0))
        assert x.shape == (3, 8) and int(x.max()) < g.n
        from importlib import util
        import os
        from conftest import ROOT
        spec = util.spec_from_file_location("door_sample", os.path.join(ROOT, "python", "sample.py"))
        mod = util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        assert "half-analytic" in mod.parser()._option_string_actions["--predictor"].choices
    finally:
        PREDICTORS.pop("half-analytic", None)
    with pytest.raises(ValueError, match="predictor must be one of 'analytic', 'confidence', 'euler'"):
        get_predictor("half-analytic")
    with pytest.raises(ValueError, match="already registered"):
        register("euler", lambda *a: 0.0)


def one_call_loop(net, graph, noise, x, frozen, settings):
    """A loop predictor: every movable position unmasked from one network call, through the
    public NetworkView (rows at the chosen positions) and the graph's denoise kernel."""
    assert isinstance(net, NetworkView)
    B, W = x.shape
    pos = torch.arange(W, device=x.device).expand(B, W)
    sigma = torch.full((B,), 1.0, device=x.device)
    rows = net.rows(x, sigma, pos)
    keep = frozen if frozen is not None else torch.zeros_like(x, dtype=torch.bool)
    new = graph.step("denoise", rows, x, sigma, settings.generator, keep)
    return new, 1


def test_a_loop_predictor_sees_the_network_through_the_public_view():
    g, noise = Absorbing(9), LogLinear()
    model = DDiT(ModelConfig(vocab_size=g.V, **TINY)).eval()
    try:
        register("one-call", loop=one_call_loop, graphs=("absorb",))
        x, stats = sample(model, g, noise, 3, 8, 4, "one-call", return_stats=True,
                          generator=torch.Generator().manual_seed(0))
        assert x.shape == (3, 8) and int(x.max()) < g.n          # nothing left masked
        assert stats.evaluations == 1 and stats.network_calls == 1
        with pytest.raises(ValueError, match="needs the absorb graph, got 'uniform'"):
            sample(DDiT(ModelConfig(vocab_size=9, **TINY, scale_by_sigma=False)).eval(),
                   Uniform(9), noise, 2, 8, 4, "one-call")
        with pytest.raises(ValueError, match="cuda_graph=True applies to the grid predictors"):
            sample(model, g, noise, 2, 8, 4, "one-call", cuda_graph=True)
    finally:
        PREDICTORS.pop("one-call", None)
