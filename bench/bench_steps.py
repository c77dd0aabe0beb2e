"""Reverse steps at GPT-2 vocabulary, [B, 1024, 50258] log-scores (B = 2 on CPU, 8 on GPU;
SEDD_BENCH_B overrides): the fused Euler and analytic steps vs the reference eager step (the
SEDD.md recipe as the paper's code runs it: exp, staggered score, dense transition row, race on
dense weights) vs torch.compile(dynamic=False) of that reference, fp32 and bf16, same run.

Cases: absorbing with every position masked, absorbing with half masked (unmasked rows read
nothing), uniform. GB/s counts one read of the log-scores of the rows that can move (the floor),
as a fraction of a same-size copy timed in the same run."""

import pytest
import torch

import sedd_kernels as sk
from sedd_kernels import reference as R

from conftest import DEVICES, batch_size, record, sync

V, L = 50258, 1024
CASES = ["absorb-all", "absorb-half", "uniform"]
_COMPILED = {}


def make_inputs(device, dtype, case):
    B = batch_size(device)
    g = torch.Generator(device=device).manual_seed(0)
    ls = torch.randn(B, L, V, device=device, dtype=dtype, generator=g)
    if case == "uniform":
        x = torch.randint(0, V, (B, L), device=device, generator=g)
        moving = B * L
    else:
        frac = 1.0 if case == "absorb-all" else 0.5
        masked = torch.rand(B, L, device=device, generator=g) < frac
        x = torch.where(masked, V - 1, torch.randint(0, V - 1, (B, L), device=device, generator=g))
        moving = int(masked.sum())
    dsigma = torch.full((B,), 0.01, device=device)
    return ls, x, dsigma, moving


def implementation(impl, kind, graph):
    if impl == "fused":
        f = sk.euler_step if kind == "euler" else sk.analytic_step
        return lambda ls, x, d: f(ls, x, d, graph, validate=False)
    ref = R.euler_step if kind == "euler" else R.analytic_step
    if impl == "reference":
        return lambda ls, x, d: ref(ls, x, d, graph)
    key = (kind, graph)
    if key not in _COMPILED:
        _COMPILED[key] = torch.compile(lambda ls, x, d: ref(ls, x, d, graph), dynamic=False)
    return _COMPILED[key]


@pytest.mark.parametrize("impl", ["fused", "reference", "compiled"])
@pytest.mark.parametrize("kind", ["euler", "analytic"])
@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("device", DEVICES)
def test_step(benchmark, device, dtype, case, kind, impl):
    ls, x, d, moving = make_inputs(device, dtype, case)
    graph = "uniform" if case == "uniform" else "absorb"
    f = implementation(impl, kind, graph)

    def run():
        with torch.no_grad():
            f(ls, x, d)
        sync(device)

    run()
    fast = device == "cuda" or impl == "fused"
    benchmark.pedantic(run, rounds=10 if fast else 2, iterations=1, warmup_rounds=0)
    row_bytes = V * ls.element_size()
    record(benchmark, op=f"{kind}_step", device=device, dtype=dtype,
           case=f"{case} B={ls.shape[0]}", impl=impl, pass_="step",
           bytes_moved=moving * row_bytes, size_bytes=ls.numel() * ls.element_size())
