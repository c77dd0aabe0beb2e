"""sedd.training: a training step lowers the loss, the general graph trains, torchrun keeps two
processes identical, checkpoints resume bit for bit (also after SIGTERM) and refuse a run with
other settings, and the random state round-trips. The config's checks: test_config.py."""

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


def test_resume_is_bitwise_exact(tmp_path):
    """N steps straight and N/2 + resume + N/2 give bitwise-identical weights on CPU."""
    from safetensors.torch import load_file
    Trainer(small_cfg(tmp_path / "straight", steps=6)).fit()
    Trainer(small_cfg(tmp_path / "split", steps=3)).fit()
    Trainer(small_cfg(tmp_path / "split", steps=6, resume=True)).fit()
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-00000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "step-00000006" / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    e1 = load_file(str(tmp_path / "straight" / "checkpoints" / "step-00000006" / "ema.safetensors"))
    e2 = load_file(str(tmp_path / "split" / "checkpoints" / "step-00000006" / "ema.safetensors"))
    assert all(torch.equal(e1[k], e2[k]) for k in e1)


@pytest.mark.parametrize("signum", ["SIGTERM", "SIGINT"])
def test_sigterm_saves_a_checkpoint_and_resume_continues(tmp_path, signum):
    """SIGTERM (or Ctrl-C's SIGINT) stops the run after the current step with a checkpoint;
    --resume continues."""
    import signal
    import time
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "python", "train.py"), "--steps", "100000",
           "--batch-size", "4", "--seq-len", "16", "--hidden-size", "32", "--n-blocks", "2",
           "--n-heads", "2", "--device", "cpu", "--out", str(out), "--no-progress", "--no-report",
           "--eval-every", "100000", "--save-every", "100000", "--sample-every", "100000",
           "--log-every", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        if (out / "metrics.csv").exists() and len((out / "metrics.csv").read_text().splitlines()) > 3:
            break
        time.sleep(0.2)
    proc.send_signal(getattr(signal, signum))
    log, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, log
    assert "stopped at step" in log
    name = (out / "checkpoints" / "latest").read_text().strip()
    step = int(name.split("-")[1])
    assert step >= 3
    cfg = small_cfg(out, steps=step + 2, batch_size=4, resume=True)
    t = Trainer(cfg)
    assert t.step == step
    t.fit()
    assert (out / "checkpoints" / "latest").read_text().strip() == f"step-{step + 2:08d}"


def test_resume_rejects_a_different_parametrisation(tmp_path):
    """Weights of a σ-conditioned model have the shapes of a time-independent one: resuming with
    the other --parametrisation must fail clearly, not load silently."""
    Trainer(small_cfg(tmp_path / "run", steps=1)).fit()
    with pytest.raises(ValueError, match="parametrisation = 'score', this run has 'clean'"):
        Trainer(small_cfg(tmp_path / "run", steps=2, resume=True, parametrisation="clean"))


def test_rng_state_round_trip():
    """The training checkpoint's random state (CPU here; CUDA generators in tests/test_cuda.py)
    brings the draws back: exact resume of dropout and noise levels."""
    from sedd.training.checkpoints import restore_rng, rng_state
    saved = rng_state()
    a = torch.rand(5)
    torch.rand(9)
    restore_rng(saved)
    assert torch.equal(torch.rand(5), a)
