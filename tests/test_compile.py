"""torch.compile of the modeling layer (issue 13): `--compile` / TrainConfig.compile compiles the
model's forward — trunk + the fused projection-loss custom op — with fullgraph=True (a graph
break would be an error), `sample(compile=True)` / sample.py --compile the DDiT trunk. Inductor
runs on the CPU, so these run everywhere: same losses, gradients and samples as eager within
float tolerance."""

import pytest
import torch

from sedd.core.graphs import Absorbing, Uniform
from sedd.nn import DDiT, ModelConfig, compile_model
from sedd.core.noise import Geometric, LogLinear
from sedd.sampling import sample
from sedd.training import Trainer

from conftest import script, small_cfg


@pytest.mark.parametrize("graph", ["absorb", "uniform", "block"])
def test_compiled_training_steps_match_eager(tmp_path, graph):
    """Three optimizer steps of the same run, eager and compiled: equal losses, gradient norms
    and weights to float tolerance; the EMA copy and the checkpoint stay plain modules. Block
    diffusion compiles its vectorised trunk (the masked rows' gather and the fused loss run
    after it: their count depends on the data)."""
    runs = {}
    kw = dict(family="block", block_size=4) if graph == "block" else dict(graph=graph)
    for compiled in (False, True):
        t = Trainer(small_cfg(tmp_path / str(compiled), compile=compiled, **kw))
        runs[compiled] = (t, [t.train_step() for _ in range(3)])
    (eager, e_steps), (comp, c_steps) = runs[False], runs[True]
    entry = "vectorised_hidden" if graph == "block" else "forward"
    assert comp.model._sedd_compiled == entry and not hasattr(comp.ema_model, "_sedd_compiled")
    for (le, ge), (lc, gc) in zip(e_steps, c_steps):
        torch.testing.assert_close(lc, le, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(gc, ge, rtol=1e-3, atol=1e-5)
    for (name, pe), pc in zip(eager.model.named_parameters(), comp.model.parameters()):
        torch.testing.assert_close(pc, pe, rtol=1e-3, atol=1e-5, msg=name)
    assert list(comp.model.state_dict()) == list(eager.model.state_dict())
    comp.save()                                                  # a plain state_dict on disk


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_compiled_sampler_matches_eager(graph):
    """sample(compile=True): the compiled trunk's log-scores equal eager's to float tolerance and
    the draws agree (a token can differ only where a float rounding flips a race)."""
    g = Absorbing(30) if graph == "absorb" else Uniform(30)
    noise = LogLinear() if graph == "absorb" else Geometric()
    torch.manual_seed(0)
    model = DDiT(ModelConfig(vocab_size=g.V, hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16,
                             dropout=0.0, scale_by_sigma=graph == "absorb")).eval()
    torch.nn.init.normal_(model.output_layer.linear.weight, std=0.5)
    x = torch.randint(0, g.n, (4, 16))
    sigma = torch.full((4,), 0.8)
    eager_parts = model.log_score_parts(x, sigma)
    a = sample(model, g, noise, 8, 16, 10, generator=torch.Generator().manual_seed(2))
    b = sample(model, g, noise, 8, 16, 10, generator=torch.Generator().manual_seed(2),
               compile=True)
    assert model._sedd_compiled == "trunk"
    torch.testing.assert_close(model.log_score_parts(x, sigma)[0], eager_parts[0], rtol=1e-4,
                               atol=1e-5)
    assert (a == b).float().mean() >= 0.95, (a != b).sum()
    assert compile_model(model, training=False) is model         # idempotent


def test_sample_door_refuses_compile_for_the_autoregressive_model(tmp_path):
    from sedd.training import Trainer as T
    out = tmp_path / "ar"
    T(small_cfg(out, family="ar", steps=2)).fit()
    r = script("sample.py", "--checkpoint", str(out), "--compile", "--device", "cpu",
               "--steps", "2")
    assert r.returncode != 0 and "--compile applies to SEDD models" in r.stderr
    assert "Traceback" not in r.stderr
