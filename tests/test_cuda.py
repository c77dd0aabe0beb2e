"""What only a GPU shows (issue 13): the CUDA kernels' device-side asserts on invalid values, a
sampler step loop without a host sync, sample() on CUDA. Skipped without a CUDA device (the CPU
halves live with their op's tests); bench/device_check.sh runs them (`-k cuda`)."""

import subprocess
import sys
import textwrap

import pytest
import torch

import sedd_kernels as sk

from conftest import ROOT

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _run(code):
    """Run code in a fresh process: a device-side assert leaves the CUDA context unusable."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=120, cwd=ROOT)


@pytest.mark.parametrize("what", ["nan_log_score", "x_out_of_range", "nan_weights"])
def test_invalid_values_stop_the_cuda_kernels(what):
    """Issue 13, defect 1: NaN log-scores (and, with the host checks off, tokens outside [0, V)
    or NaN weights) stop the kernel with a device-side assert instead of writing −1 tokens."""
    call = {
        "nan_log_score": "ls[0, 1, 3] = float('nan'); sk.euler_step(ls, x, d, 'uniform', validate=False)",
        "x_out_of_range": "x[1, 2] = 10; sk.analytic_step(ls, x, d, 'uniform', validate=False)",
        "nan_weights": "w = ls.exp()[0]; w[2, 1] = float('nan'); sk.sample_categorical(w, validate=False)",
    }[what]
    r = _run(f"""
        import torch, sedd_kernels as sk
        ls = torch.randn(2, 3, 10, device="cuda")
        x = torch.randint(0, 10, (2, 3), device="cuda")
        d = torch.rand(2, device="cuda")
        {call}
        torch.cuda.synchronize()
        print("NO ERROR")
    """)
    assert r.returncode != 0 and "NO ERROR" not in r.stdout, (r.stdout, r.stderr)
    assert "device-side assert" in r.stderr or "assert" in (r.stdout + r.stderr).lower()


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_sampler_steps_do_not_sync_cuda(graph):
    """The sampler's step loop (network + fused step, the bare projection product handed to the
    kernel) makes no host sync once warm: torch.cuda.set_sync_debug_mode('error') raises on one."""
    from sedd.graphs import Absorbing, Uniform
    from sedd.model import DDiT, ModelConfig
    from sedd.noise import Geometric, LogLinear
    from sedd.sampling import sample
    g = Absorbing(200) if graph == "absorb" else Uniform(200)
    noise = LogLinear() if graph == "absorb" else Geometric()
    model = DDiT(ModelConfig(vocab_size=g.V, hidden_size=64, n_blocks=2, n_heads=2, cond_dim=32,
                             dropout=0.0, scale_by_sigma=graph == "absorb")).cuda().eval()
    gen = torch.Generator(device="cuda").manual_seed(0)
    sample(model, g, noise, 4, 32, 4, generator=gen)              # warm-up (allocations, cuBLAS)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        x = sample(model, g, noise, 4, 32, 16, generator=gen)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert x.shape == (4, 32) and int(x.max()) < g.n


def test_sample_on_cuda_is_reproducible_cuda():
    from sedd.graphs import Absorbing
    from sedd.model import DDiT, ModelConfig
    from sedd.noise import LogLinear
    from sedd.sampling import sample
    g = Absorbing(500)
    model = DDiT(ModelConfig(vocab_size=g.V, hidden_size=64, n_blocks=2, n_heads=2, cond_dim=32,
                             dropout=0.0)).cuda()
    torch.nn.init.normal_(model.output_layer.linear.weight, std=0.5)
    a = sample(model, g, LogLinear(), 4, 64, 32, generator=torch.Generator("cuda").manual_seed(1))
    b = sample(model, g, LogLinear(), 4, 64, 32, generator=torch.Generator("cuda").manual_seed(1))
    assert torch.equal(a, b) and a.device.type == "cuda"
    assert int(a.max()) < g.n and int(a.min()) >= 0


def test_checkpoint_restores_the_cuda_rng_cuda():
    """Issue 13, defect 5: the trainer's checkpoint restores the CUDA generators too, so a
    resumed GPU run draws what the uninterrupted one would have (dropout, perturbation)."""
    from sedd.checkpoint import restore_rng, rng_state
    torch.cuda.manual_seed_all(3)
    saved = rng_state()
    a = torch.rand(5, device="cuda")
    torch.rand(7, device="cuda")                   # the interrupted run moves on
    restore_rng(saved)
    assert torch.equal(torch.rand(5, device="cuda"), a)


def test_a_captured_step_replays_with_fresh_randomness_cuda():
    """The step kernels read their Philox seed/offset from a device tensor drawn by torch's own
    random op: a CUDA-graph capture of a step replays with new numbers each time, and the first
    replay draws what the uncaptured step draws from the same generator state."""
    ls = torch.randn(2, 64, 3000, device="cuda")
    x = torch.randint(0, 3000, (2, 64), device="cuda")
    d = torch.full((2,), 0.5, device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        sk.analytic_step(ls, x, d, "uniform", validate=False)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = sk.analytic_step(ls, x, d, "uniform", validate=False)
    state = torch.cuda.get_rng_state()
    graph.replay()
    first = out.clone()
    graph.replay()
    assert not torch.equal(first, out)
    torch.cuda.set_rng_state(state)
    assert torch.equal(first, sk.analytic_step(ls, x, d, "uniform", validate=False))


@pytest.mark.parametrize("graph_name", ["absorb", "uniform"])
def test_sample_with_cuda_graph_matches_the_eager_sampler_cuda(graph_name):
    """sample(cuda_graph=True) captures network + step once per window and replays it: the same
    tokens as the uncaptured sampler for the same generator, over two semi-autoregressive
    windows, with given positions."""
    from sedd.graphs import Absorbing, Uniform
    from sedd.model import DDiT, ModelConfig
    from sedd.noise import Geometric, LogLinear
    from sedd.sampling import sample
    g = Absorbing(300) if graph_name == "absorb" else Uniform(300)
    noise = LogLinear() if graph_name == "absorb" else Geometric()
    torch.manual_seed(0)
    model = DDiT(ModelConfig(vocab_size=g.V, hidden_size=64, n_blocks=2, n_heads=2, cond_dim=32,
                             dropout=0.0, max_length=32,
                             scale_by_sigma=graph_name == "absorb")).cuda().eval()
    torch.nn.init.normal_(model.output_layer.linear.weight, std=0.5)
    tokens = torch.randint(0, 300, (1, 48), device="cuda")
    given = torch.zeros(1, 48, dtype=torch.bool, device="cuda")
    given[0, :4] = True
    runs = [sample(model, g, noise, 4, 48, 16, condition=(tokens, given), cuda_graph=cg,
                   generator=torch.Generator("cuda").manual_seed(5)) for cg in (False, True)]
    assert torch.equal(runs[0], runs[1])


def test_training_steps_do_not_sync_cuda(tmp_path):
    """A uniform-graph training step (fused projection + loss, clipping, fused AdamW, EMA) makes
    no host sync once warm: the batch is checked on the host and uploaded without a sync, the
    noise levels too, the kernels' value checks are off and the loss is read only when logged.
    (The absorbing loss keeps one sync per step: it counts its masked rows to skip the others'
    products.)"""
    from conftest import small_cfg
    from sedd.trainer import Trainer
    t = Trainer(small_cfg(tmp_path, graph="uniform", device="cuda"))
    t.train_step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            loss, norm = t.train_step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss) and torch.isfinite(norm)
