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
    from sedd.core.graphs import Absorbing, Uniform
    from sedd.nn import DDiT, ModelConfig
    from sedd.core.noise import Geometric, LogLinear
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
    from sedd.core.graphs import Absorbing
    from sedd.nn import DDiT, ModelConfig
    from sedd.core.noise import LogLinear
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
    from sedd.training.checkpoints import restore_rng, rng_state
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
    from sedd.core.graphs import Absorbing, Uniform
    from sedd.nn import DDiT, ModelConfig
    from sedd.core.noise import Geometric, LogLinear
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
    from sedd.training import Trainer
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


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_linear_score_entropy_default_chunks_cuda(graph):
    """The fused projection + loss on CUDA at its default chunk size (1024 rows: 2500 rows make
    three chunks, the last partial): value and gradients equal the float64 reference twin."""
    from sedd_kernels import reference as R
    g = torch.Generator().manual_seed(0)
    N, H, V = 2500, 64, 3000
    hidden = torch.randn(1, N, H, generator=g, dtype=torch.float64)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64) * 0.1
    bias = torch.randn(V, generator=g, dtype=torch.float64) * 0.1
    x_0 = torch.randint(0, V - 1, (1, N), generator=g)
    if graph == "absorb":
        x_t = torch.where(torch.rand(1, N, generator=g) < 0.5, V - 1, x_0)
    else:
        x_t = torch.where(torch.rand(1, N, generator=g) < 0.5, torch.randint(0, V, (1, N), generator=g), x_0)
    sigma = torch.tensor([0.7], dtype=torch.float64)
    ref_leaves = [t.clone().requires_grad_() for t in (hidden, weight, bias)]
    ref = R.linear_score_entropy(*ref_leaves, x_t, x_0, sigma, graph).sum()
    ref_grads = torch.autograd.grad(ref, ref_leaves)
    leaves = [t.float().cuda().requires_grad_() for t in (hidden, weight, bias)]
    out = sk.linear_score_entropy(*leaves, x_t.cuda(), x_0.cuda(), sigma.cuda(), graph,
                                  reduction="sum")
    grads = torch.autograd.grad(out, leaves)
    torch.testing.assert_close(out.double().cpu(), ref, rtol=1e-4, atol=1e-3)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.double().cpu(), b, rtol=1e-3, atol=1e-3)


def test_trainer_bf16_matches_fp32_and_resumes_exactly_cuda(tmp_path):
    """The trainer on CUDA (bf16 autocast, as the paper trains): the first steps' losses equal an
    fp32 run's (autocast off, same seeds) within bf16 tolerance, and N steps straight equal N/2 +
    resume + N/2 bitwise (CUDA RNG restored)."""
    from conftest import small_cfg
    from safetensors.torch import load_file
    from sedd.training import Trainer
    bf16 = Trainer(small_cfg(tmp_path / "bf16", device="cuda"))
    fp32 = Trainer(small_cfg(tmp_path / "fp32", device="cuda"))
    fp32.autocast = False
    assert bf16.autocast
    for _ in range(3):
        (lb, _), (lf, _) = bf16.train_step(), fp32.train_step()
        torch.testing.assert_close(lb.float(), lf.float(), rtol=3e-2, atol=1e-2)
    Trainer(small_cfg(tmp_path / "straight", steps=6, device="cuda")).fit()
    Trainer(small_cfg(tmp_path / "split", steps=3, device="cuda")).fit()
    Trainer(small_cfg(tmp_path / "split", steps=6, resume=True, device="cuda")).fit()
    a = load_file(str(tmp_path / "straight" / "checkpoints" / "step-00000006" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "checkpoints" / "step-00000006" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_block_diffusion_flex_and_sdpa_agree_with_gradients_cuda():
    """Issue 26 on the GPU: the flex-attention path (compiled, as --compile runs it, and eager)
    against SDPA with a boolean mask — the vectorised loss and every gradient; the KV-cached
    block log-probs equal the recomputed prefix's."""
    from test_families_block import block_by_block, block_net, masked_batch
    K, L = 4, 16
    x0, xt, weight, _, _ = masked_batch(L, K)
    x0, xt, weight = x0.cuda(), xt.cuda(), weight.cuda()
    res = {}
    for attention in ("sdpa", "flex"):
        net = block_net(K, L, attention=attention).cuda()
        loss = net(xt, block_loss=dict(x_0=x0, token_weight=weight))
        loss.backward()
        res[attention] = (loss.detach(), [p.grad for p in net.parameters()])
    compiled = block_net(K, L, attention="flex").cuda()
    fn = torch.compile(lambda: compiled(xt, block_loss=dict(x_0=x0, token_weight=weight)))
    loss = fn()
    loss.backward()
    res["flex compiled"] = (loss.detach(), [p.grad for p in compiled.parameters()])
    a, ga = res["sdpa"]
    for name in ("flex", "flex compiled"):
        b, gb = res[name]
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
        for u, v in zip(ga, gb):
            assert float((u - v).abs().max()) <= 1e-3 * float(u.abs().max()) + 1e-5, name
    net = block_net(K, L).cuda()
    with torch.no_grad():
        out = {c: block_by_block(net, xt, x0, K, c)[0] for c in (True, False)}
    torch.testing.assert_close(out[True], out[False], rtol=1e-4, atol=1e-4)


def test_block_diffusion_trains_and_generates_on_cuda(tmp_path):
    """train.py's path for --model block on the GPU (bf16 autocast, --attention flex) for a few
    steps, then block-by-block generation with the KV cache past the training length."""
    from sedd.config import resolve_config
    from sedd.training import Trainer
    cfg = resolve_config("micro", family="block", block_size=4, attention="flex", steps=4,
                         out=str(tmp_path / "run"), device="cuda", progress=False,
                         final_report=False, eval_every=100, save_every=4)
    t = Trainer(cfg)
    t.fit()
    x, stats = t.family.generate(t.ema_model, 4, 40, steps=8, device="cuda",
                                 generator=torch.Generator("cuda").manual_seed(0),
                                 return_stats=True)
    assert x.shape == (4, 40) and int(x.max()) < t.family.graph.n and stats.windows == 10
