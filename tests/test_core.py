"""sedd.core: the noise schedules (docs/math.md §2: σ̄ and σ̇ of the log-linear and geometric
schedules), the graphs' registry and rules (§1), and the losses (§3–§4: the fused and reference
losses, the fused projection, the bound's integrand). The kernels under the graphs are tested in
test_score_entropy.py, test_steps.py and test_general_graph.py."""

import math

import pytest
import torch

from sedd.core.graphs import GRAPHS, Absorbing, Graph, Uniform, get_graph, graph_class
from sedd.core.losses import batch_loss, loss_fn, training_times
from sedd.core.noise import Geometric, LogLinear, get_noise
from sedd.data.language import builtin_language
from sedd.nn import DDiT, ModelConfig

TINY = dict(hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16, dropout=0.0)


@pytest.mark.parametrize("noise", [LogLinear(), LogLinear(0.0), LogLinear(0.05), Geometric(),
                                   Geometric(1e-3, 7.5)], ids=repr)
def test_rate_is_the_derivative_of_the_total(noise):
    t = torch.linspace(0.01, 0.98, 41, dtype=torch.float64)
    h = 1e-6
    numeric = (noise.total(t + h) - noise.total(t - h)) / (2 * h)
    torch.testing.assert_close(noise.rate(t), numeric, rtol=1e-6, atol=0)
    assert bool((noise.rate(t) > 0).all())


def test_end_points():
    ll = LogLinear(1e-3)
    assert float(ll.total(torch.tensor(0.0, dtype=torch.float64))) == 0.0
    assert math.isclose(float(ll.total(torch.tensor(1.0, dtype=torch.float64))), -math.log(1e-3),
                        rel_tol=1e-12)
    assert ll.sigma_max == -math.log(1e-3) and LogLinear(0.0).sigma_max == math.inf
    g = Geometric(1e-4, 20.0)
    assert math.isclose(float(g.total(torch.tensor(0.0))), 1e-4, rel_tol=1e-6)
    assert math.isclose(float(g.total(torch.tensor(1.0))), 20.0, rel_tol=1e-6)
    # the log-linear schedule masks a token with probability (1 − ε)t by time t
    t = torch.tensor([0.25, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(1 - torch.exp(-ll.total(t)), (1 - 1e-3) * t)


@pytest.mark.parametrize("make, match", [
    (lambda: LogLinear(1.0), "eps must be in"), (lambda: LogLinear(-0.1), "eps must be in"),
    (lambda: Geometric(1.0, 0.5), "sigma_min < sigma_max"), (lambda: Geometric(0.0, 1.0), "0 < sigma_min"),
    (lambda: get_noise("cosine"), "noise must be 'loglinear' or 'geometric'")])
def test_bad_schedules(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_fused_and_reference_loss_agree():
    lang = builtin_language()
    g = Absorbing(lang.n)
    model = DDiT(ModelConfig(vocab_size=g.V, **TINY))
    torch.nn.init.normal_(model.output_layer.linear.weight, std=0.05)
    x0 = torch.from_numpy(lang.sample(4, 12, seed=1))
    a = loss_fn(model, x0, g, LogLinear(), torch.Generator().manual_seed(2))
    b = loss_fn(model, x0, g, LogLinear(), torch.Generator().manual_seed(2), use_reference=True)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_fused_linear_loss_matches_the_unfused_model(graph):
    """batch_loss through the fused projection + loss (linear_score_entropy, the trainer's
    default) equals the unfused path — DDiT log-scores [B, L, V] then the fused loss — in value
    and in every parameter's gradient (float64 model, same random draws)."""
    lang = builtin_language()
    g = Absorbing(lang.n) if graph == "absorb" else Uniform(lang.n)
    noise = LogLinear() if graph == "absorb" else Geometric()
    model = DDiT(ModelConfig(vocab_size=g.V, scale_by_sigma=graph == "absorb", **TINY))
    for p in model.parameters():          # move off the zero initialisation of the output layer
        torch.nn.init.normal_(p, std=0.05)
    x0 = torch.from_numpy(lang.sample(4, 12, seed=1))
    values, grads = [], []
    for fused in (True, False):
        model.zero_grad()
        v = batch_loss(model, x0, g, noise, torch.Generator().manual_seed(2), fused_linear=fused,
                       scale=0.5)
        v.backward()
        values.append(v.detach())
        grads.append([p.grad.clone() for p in model.parameters()])
    torch.testing.assert_close(values[0], values[1], rtol=1e-5, atol=1e-5)
    for a, b in zip(*grads):
        assert float((a - b).abs().max()) <= 1e-4 * float(b.abs().max()) + 1e-7


def test_low_discrepancy_noise_levels_are_uniform_stratified_and_lower_variance():
    """training_times: every low-discrepancy draw is uniform on [lo, hi] (one per stratum, in a
    random order), so the loss keeps its expectation; a batch mean of a smooth f(t) has a far
    smaller variance than with independent draws; the plain draws are today's, bit for bit."""
    g = torch.Generator().manual_seed(0)
    t = training_times((4, 64), g, low_discrepancy=True, lo=0.2, hi=0.7)
    assert t.shape == (4, 64) and float(t.min()) >= 0.2 and float(t.max()) < 0.7
    strata = ((t - 0.2) / 0.5 * 256).floor().long().flatten().sort().values
    assert torch.equal(strata, torch.arange(256))                     # one draw per stratum
    assert not torch.equal(t.flatten().argsort(), torch.arange(256))  # in a random order
    first = torch.stack([training_times((8,), g, low_discrepancy=True)[0] for _ in range(4000)])
    ks = (first.sort().values - (torch.arange(4000) + 0.5) / 4000 * (1 - 1e-3) - 1e-3).abs().max()
    assert float(ks) < 1.63 / math.sqrt(4000)                        # KS at the 1 % level
    f = lambda t: torch.log1p(-0.999 * t).neg()                         # noqa: E731 (σ̄ itself)
    means = {ld: torch.stack([f(training_times((32,), g, low_discrepancy=ld)).mean()
                              for _ in range(400)]) for ld in (False, True)}
    assert abs(float(means[True].mean() - means[False].mean())) < 4 * float(means[False].std()) / 20
    assert float(means[True].var()) < 0.1 * float(means[False].var())
    plain = training_times((5,), torch.Generator().manual_seed(3))
    old = (1 - 1e-3) * torch.rand(5, generator=torch.Generator().manual_seed(3),
                                  dtype=torch.float64) + 1e-3
    assert torch.equal(plain, old)


def test_low_discrepancy_training_loss_keeps_its_mean():
    """The SEDD family's training loss with stratified noise levels has the expectation of the
    loss with independent draws (within the estimates' noise). Its spread over batches is not
    asserted: the small-t levels' heavy tail (a masked position costs ∝ 1/t, docs/math.md §4)
    dominates it, and stratification makes every batch visit the lowest stratum."""
    lang = builtin_language()
    g = Absorbing(lang.n)
    model = DDiT(ModelConfig(vocab_size=g.V, **TINY))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.05)
    x0 = torch.from_numpy(lang.sample(32, 12, seed=1))
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():
        vals = {ld: torch.stack([batch_loss(model, x0, g, LogLinear(), gen, low_discrepancy=ld)
                                 for _ in range(300)]).double() for ld in (False, True)}
    se = math.hypot(float(vals[False].std()), float(vals[True].std())) / math.sqrt(300)
    assert abs(float(vals[True].mean() - vals[False].mean())) < 4 * se


def test_bound_integrand_through_the_fused_projection():
    """The likelihood bound's integrand (score_entropy_sum) goes through the fused projection for
    a DDiT and equals the unfused network + loss with the same draws."""
    from sedd.core.losses import score_entropy_sum
    lang = builtin_language()
    g = Absorbing(lang.n)
    model = DDiT(ModelConfig(vocab_size=g.V, **TINY))
    torch.nn.init.normal_(model.output_layer.linear.weight, std=0.05)

    class Unfused(torch.nn.Module):          # the same network without supports_fused_loss
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x, sigma):
            return self.m(x, sigma)

    x0 = torch.from_numpy(lang.sample(4, 12, seed=1))
    sigma = torch.tensor([0.01, 0.5, 2.0, 7.0], dtype=torch.float64)
    a = score_entropy_sum(model, x0, g, sigma, torch.Generator().manual_seed(3))
    b = score_entropy_sum(Unfused(model), x0, g, sigma, torch.Generator().manual_seed(3))
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-4)


def test_general_sample_limit_is_reproducible_from_its_generator(device):
    """The base draw of a general graph follows the generator on every device (on CUDA it
    used to fall back to the default generator, so a seeded sampler was not reproducible)."""
    from sedd.core.graphs import General
    V = 6
    Q = torch.rand(V, V, dtype=torch.float64) + 0.1
    Q -= torch.diag(Q.sum(0))
    g = General(Q)
    draw = [g.sample_limit(64, 32, device=device,
                           generator=torch.Generator(device=device).manual_seed(s)) for s in (3, 3, 4)]
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
    if device.type == "cuda":
        with pytest.raises(ValueError, match="generator: a cpu generator cannot drive"):
            g.sample_limit(4, 4, device=device, generator=torch.Generator().manual_seed(0))


def test_a_python_only_graph_is_one_class():
    """A Graph subclass with a name registers itself: get_graph and graph_class find it, its rules
    are its class attributes, and a second class of the same name is refused."""
    class Cyclic(Graph):                 # x -> x + 1 (mod n), a toy graph in plain PyTorch
        name = "cyclic-test"
        fused = False

        def __init__(self, n):
            self.n = self.V = int(n)

        def sample_limit(self, *shape, device=None, generator=None):
            return torch.randint(0, self.n, shape, device=device, generator=generator)

    try:
        assert GRAPHS["cyclic-test"] is Cyclic and graph_class("cyclic-test") is Cyclic
        g = get_graph("cyclic-test", 5)
        assert isinstance(g, Cyclic) and g.V == 5 and g.default_noise == "geometric"
        assert g.movable(torch.zeros(2, 3, dtype=torch.long)).all()
        with pytest.raises(ValueError, match="already registered"):
            type("Again", (Graph,), {"name": "cyclic-test"})
    finally:
        GRAPHS.pop("cyclic-test", None)
    with pytest.raises(ValueError, match="graph must be"):
        graph_class("cyclic-test")

