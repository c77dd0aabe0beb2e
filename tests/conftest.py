import os
import sys

import pytest
import torch

# the modeling layer lives in python/ (installed as `sedd` by `pip install -e .` too)
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")


@pytest.fixture(params=DEVICES)
def device(request):
    return torch.device(request.param)


def make_batch(B, L, V, graph, *, dtype=torch.float64, device="cpu", mask_frac=0.5,
               same_frac=0.5, scale=2.0, seed=0):
    """Random log-scores and tokens that exercise every branch of the formulas: for 'absorb',
    a mix of masked and unmasked rows; for 'uniform', a mix of x_t = x_0 and x_t != x_0."""
    g = torch.Generator().manual_seed(seed)
    log_score = (torch.randn(B, L, V, generator=g, dtype=torch.float64) * scale).to(dtype)
    if graph == "absorb":
        x_0 = torch.randint(0, V - 1, (B, L), generator=g)
        masked = torch.rand(B, L, generator=g) < mask_frac
        x_t = torch.where(masked, torch.full_like(x_0, V - 1), x_0)
    else:
        x_0 = torch.randint(0, V, (B, L), generator=g)
        other = torch.randint(0, V, (B, L), generator=g)
        x_t = torch.where(torch.rand(B, L, generator=g) < same_frac, x_0, other)
    sigma = torch.rand(B, generator=g, dtype=torch.float64) * 4 + 1e-3
    return (log_score.to(device), x_t.to(device), x_0.to(device), sigma.to(device))


def tiny_run_config(out, **overrides):
    """The TrainConfig of the short tiny CPU runs that the sampling/evaluation tests train on."""
    from sedd.config import TrainConfig
    base = dict(steps=40, batch_size=16, seq_len=24, lr=3e-3, warmup=5, ema=0.5, eval_every=1000,
                save_every=1000, sample_every=1000, out=str(out), progress=False,
                final_report=False, hidden_size=32, n_blocks=2, n_heads=2, device="cpu")
    base.update(overrides)
    return TrainConfig.from_preset("tiny", **base)


@pytest.fixture(autouse=True)
def _seed():
    """Every test starts from the same global RNG state: failures reproduce."""
    torch.manual_seed(0)


def small_cfg(out, **kw):
    """The TrainConfig of the few-step trainer tests (16 tokens, H = 32)."""
    from sedd.config import TrainConfig
    base = dict(steps=6, batch_size=8, seq_len=16, lr=1e-3, warmup=2, ema=0.9, eval_every=1000,
                save_every=1000, sample_every=1000, log_every=1, out=str(out), progress=False,
                final_report=False, hidden_size=32, n_blocks=2, n_heads=2, dropout=0.0,
                device="cpu")
    base.update(kw)
    return TrainConfig.from_preset("tiny", **base)


def random_ddit(V, parametrisation="score", L=24, n_blocks=2, std=0.3):
    """A small DDiT (H 32, 2 heads) with every parameter drawn N(0, std), far from the zero
    initialisation (so its scores are neither uniform nor tiny), in eval mode."""
    from sedd.nn import DDiT, ModelConfig
    model = DDiT(ModelConfig(vocab_size=V, hidden_size=32, n_blocks=n_blocks, n_heads=2,
                             cond_dim=16, max_length=L, parametrisation=parametrisation)).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=std)
    return model


def script(name, *args, **kw):
    """Run a door of python/ (sample.py, evaluate.py, ...) as a user would."""
    import subprocess
    return subprocess.run([sys.executable, os.path.join(ROOT, "python", name), *args],
                          capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A briefly trained tiny run folder (the built-in language, 24 tokens)."""
    from sedd.training import Trainer
    out = tmp_path_factory.mktemp("run")
    Trainer(tiny_run_config(out)).fit()
    return out
