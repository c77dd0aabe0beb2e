"""Score entropy at GPT-2 vocabulary, [B, L, 50258] (levels, harness.py: quick [1, 256] fp32,
full [2, 1024] fp32 + bf16, gpu [8, 1024] fp32 + bf16; SEDD_BENCH_B overrides B): the fused op vs the reference eager op (reference.score_entropy, boolean
indexing as in the paper's code) vs torch.compile(dynamic=False) of the compile-friendly
reference (reference.score_entropy_dense), forward and forward+backward, fp32 and bf16.

Absorbing batches have every position masked (every row is read: the most work per call).
Bytes moved: forward 1× the log-score tensor (one read); forward+backward 3× (read in the
forward, read + gradient write in the backward)."""

import pytest
import torch

import sedd_kernels as sk
from sedd_kernels import reference as R

from harness import DEVICES, compiled, record_kernel, rounds, row_dtypes, row_shape, sync, time_it

V = 50258
GRAPHS = ["absorb", "uniform"]
IMPLS = ["fused", "reference", "compiled"]


def make_inputs(device, dtype, graph):
    B, L = row_shape(device)
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
    return compiled(("score_entropy", graph),
                    lambda ls, xt, x0, s: R.score_entropy_dense(ls, xt, x0, s, graph))


def cases():
    for device in DEVICES:
        for dtype in row_dtypes(device):
            for graph in GRAPHS:
                for pass_ in ("fwd", "fwd+bwd"):
                    for impl in IMPLS:
                        yield pytest.param(device, dtype, graph, pass_, impl,
                                           id=f"{device}-{str(dtype)[6:]}-{graph}-{pass_}-{impl}")


@pytest.mark.parametrize("device,dtype,graph,pass_,impl", list(cases()))
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
    time_it(benchmark, run, device, rounds=rounds(device, impl, quick=2, full=3), warmup=1)
    size = ls.numel() * ls.element_size()
    record_kernel(benchmark, suite="score_entropy", op="score_entropy", device=device, dtype=dtype,
                  case=f"{graph} [{ls.shape[0]}, {ls.shape[1]}, {V}]", impl=impl, pass_=pass_,
                  bytes_moved=size * (1 if pass_ == "fwd" else 3), size_bytes=size)


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
