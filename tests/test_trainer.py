"""The SEDD model and trainer (issue: python/train.py from a laptop CPU to torchrun): a training
step lowers the loss, resume is bitwise exact on CPU, two torchrun processes keep identical
weights, the paper's checkpoint layout loads strictly, the built-in language's exact likelihood,
GPT-2 tokenization from the shared ranks file, and clear errors for bad input."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from sedd.core.graphs import Absorbing, Uniform
from sedd.data.language import builtin_language
from sedd.core.losses import batch_loss, loss_fn
from sedd.nn import DDiT, ModelConfig
from sedd.core.noise import Geometric, LogLinear
from sedd.config import TrainConfig
from sedd.training import Trainer

from conftest import ROOT, small_cfg

TINY = dict(hidden_size=32, n_blocks=2, n_heads=2, cond_dim=16, dropout=0.0)


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_training_step_lowers_the_loss(graph):
    """docs/math.md §4 loss on a fixed batch and fixed noise levels falls under AdamW."""
    lang = builtin_language()
    g = Absorbing(lang.n) if graph == "absorb" else Uniform(lang.n)
    noise = LogLinear() if graph == "absorb" else Geometric()
    model = DDiT(ModelConfig(vocab_size=g.V, scale_by_sigma=graph == "absorb", **TINY))
    x0 = torch.from_numpy(lang.sample(16, 24, seed=3))
    t = torch.linspace(0.05, 0.95, 16, dtype=torch.float64)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)

    def loss():
        return loss_fn(model, x0, g, noise, torch.Generator().manual_seed(0), t=t).mean()

    first = loss().item()
    for _ in range(15):
        opt.zero_grad()
        value = loss()
        value.backward()
        opt.step()
    assert loss().item() < 0.8 * first


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


def test_no_fused_linear_flag_trains(tmp_path):
    """--no-fused-linear reaches the config and trains to the same loss scale as the default."""
    from train import parse_args
    assert parse_args(["--no-fused-linear"]).no_fused_linear
    losses = []
    for fused in (True, False):
        t = Trainer(small_cfg(tmp_path / str(fused), steps=3, fused_linear=fused))
        losses.append([t.train_step()[0] for _ in range(3)])
    np.testing.assert_allclose(losses[0], losses[1], rtol=1e-3)


def test_torchrun_two_processes_keep_identical_weights(tmp_path):
    """`torchrun --nproc_per_node=2` of python/train.py's flags and Trainer on CPU (gloo, DDP)
    for a few steps (tests/ddp_train.py adds the all-gather that compares the ranks' weights)."""
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           os.path.join(ROOT, "tests", "ddp_train.py"), "--steps", "3", "--batch-size", "4",
           "--seq-len", "16", "--hidden-size", "32", "--n-blocks", "2", "--n-heads", "2",
           "--device", "cpu", "--out", str(out), "--no-progress", "--no-report",
           "--eval-every", "100", "--save-every", "100", "--sample-every", "100"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert (out / "ranks.txt").read_text().split()[-1] == "True"
    assert (out / "checkpoints" / "latest").read_text().strip() == "step-00000003"


@pytest.mark.parametrize("field, value, match", [
    ("steps", 0, "--steps must be >= 1"), ("batch_size", 0, "--batch-size"),
    ("lr", -1.0, "--lr must be > 0"), ("ema", 1.5, "--ema"), ("graph", "masked", "--graph"),
    ("accum", 0, "--accum")])
def test_bad_config(field, value, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig.from_preset("tiny", **{field: value})
    with pytest.raises(ValueError, match="preset must be one of"):
        TrainConfig.from_preset("huge")


def test_cli_rejects_bad_values(tmp_path):
    r = subprocess.run([sys.executable, os.path.join(ROOT, "python", "train.py"), "--steps", "0",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "--steps must be >= 1" in r.stderr


def test_training_with_a_general_rate_matrix(tmp_path):
    """--graph general:PATH trains on a user's Q (here a random one over the built-in words)
    through GeneralGraph and samples from it."""
    from sedd.sampling import sample
    V = builtin_language().n
    g = torch.Generator().manual_seed(0)
    Q = torch.rand(V, V, generator=g, dtype=torch.float64) / V
    Q.fill_diagonal_(0)
    Q -= torch.diag(Q.sum(0))
    torch.save(Q, tmp_path / "Q.pt")
    cfg = small_cfg(tmp_path / "run", steps=3, batch_size=4, seq_len=8,
                    graph=f"general:{tmp_path / 'Q.pt'}", noise="geometric")
    t = Trainer(cfg)
    t.fit()
    assert t.graph.name == "general" and not t.model.config.scale_by_sigma
    x = sample(t.ema_model, t.graph, t.noise, 2, 8, 4, generator=torch.Generator().manual_seed(1))
    assert x.shape == (2, 8) and ((x >= 0) & (x < V)).all()
