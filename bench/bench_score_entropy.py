"""Score entropy at GPT-2 vocabulary, [B, 1024, 50258] (B = 2 on CPU, 8 on GPU; override with
SEDD_BENCH_B): the fused op vs the reference eager op (reference.score_entropy, boolean
indexing as in the paper's code) vs torch.compile(dynamic=False) of the compile-friendly
reference (reference.score_entropy_dense), forward and forward+backward, fp32 and bf16.

Absorbing batches have every position masked (every row is read: the most work per call).
Bytes moved: forward 1× the log-score tensor (one read); forward+backward 3× (read in the
forward, read + gradient write in the backward)."""

import pytest
import torch

import sedd_kernels as sk
from sedd_kernels import reference as R

from conftest import DEVICES, batch_size, record, sync

V, L = 50258, 1024
GRAPHS = ["absorb", "uniform"]
DTYPES = [torch.float32, torch.bfloat16]
IMPLS = ["fused", "reference", "compiled"]
_COMPILED = {}


def make_inputs(device, dtype, graph):
    B = batch_size(device)
    g = torch.Generator(device=device).manual_seed(0)
    ls = torch.randn(B, L, V, device=device, dtype=dtype, generator=g)
    x0 = torch.randint(0, V - 1, (B, L), device=device, generator=g)
    xt = torch.full_like(x0, V - 1) if graph == "absorb" else torch.where(
        torch.rand(B, L, device=device, generator=g) < 0.5, x0,
        torch.randint(0, V, (B, L), device=device, generator=g))
    sigma = torch.rand(B, device=device, generator=g) + 0.05
    return ls, xt, x0, sigma


def implementation(impl, graph):
    if impl == "fused":
        return lambda ls, xt, x0, s: sk.score_entropy(ls, xt, x0, s, graph, validate=False)
    if impl == "reference":
        return lambda ls, xt, x0, s: R.score_entropy(ls, xt, x0, s, graph)
    if graph not in _COMPILED:
        _COMPILED[graph] = torch.compile(
            lambda ls, xt, x0, s: R.score_entropy_dense(ls, xt, x0, s, graph), dynamic=False)
    return _COMPILED[graph]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("pass_", ["fwd", "fwd+bwd"])
@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["fp32", "bf16"])
@pytest.mark.parametrize("device", DEVICES)
def test_score_entropy(benchmark, device, dtype, graph, pass_, impl):
    ls, xt, x0, sigma = make_inputs(device, dtype, graph)
    f = implementation(impl, graph)
    if pass_ == "fwd":
        def run():
            with torch.no_grad():
                f(ls, xt, x0, sigma)
            sync(device)
    else:
        ls.requires_grad_(True)

        def run():
            loss = f(ls, xt, x0, sigma).sum()
            torch.autograd.grad(loss, ls)
            sync(device)
    run()  # warm-up (and compilation)
    fast = device == "cuda" or impl == "fused"
    benchmark.pedantic(run, rounds=10 if fast else 3, iterations=1, warmup_rounds=1)
    size = ls.numel() * ls.element_size()
    record(benchmark, op="score_entropy", device=device, dtype=dtype, case=f"{graph} B={ls.shape[0]}",
           impl=impl, pass_=pass_, bytes_moved=size * (1 if pass_ == "fwd" else 3), size_bytes=size)


@pytest.mark.skipif("cuda" not in DEVICES, reason="peak-memory accounting is for CUDA devices")
@pytest.mark.parametrize("graph", GRAPHS)
def test_peak_memory_fwd_bwd(benchmark, graph):
    """Extra memory of fused fwd+bwd beyond its inputs: the gradient tensor and O(B·L) more."""
    ls, xt, x0, sigma = make_inputs("cuda", torch.bfloat16, graph)
    ls.requires_grad_(True)

    def run():
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        loss = sk.score_entropy(ls, xt, x0, sigma, graph, validate=False).sum()
        (grad,) = torch.autograd.grad(loss, ls)
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base, grad.numel() * grad.element_size()

    extra, grad_bytes = benchmark.pedantic(run, rounds=1, iterations=1)
    benchmark.extra_info.update(peak_extra_bytes=extra, grad_bytes=grad_bytes)
    assert extra <= grad_bytes + 64 * ls.shape[0] * ls.shape[1] + (1 << 20)
