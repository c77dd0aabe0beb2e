"""Reverse steps at GPT-2 vocabulary, [B, L, 50258] log-scores: the fused Euler and analytic steps
vs the reference eager step (the docs/math.md recipe as the paper's code runs it: exp, staggered
score, dense transition row, race on dense weights) vs torch.compile(dynamic=False) of that
reference, same run.

Levels (harness.py): quick [1, 256, V] fp32; full [2, 1024, V] fp32 + bf16; gpu [8, 1024, V]
fp32 + bf16 (SEDD_BENCH_B overrides B). Cases: absorbing with every position masked, absorbing
with half masked (unmasked rows read nothing), uniform. GB/s counts one read of the log-scores
of the rows that can move (the floor), as a fraction of a same-size copy timed in the same run."""

import pytest
import torch

import sedd_kernels as sk
from sedd_kernels import reference as R

from harness import DEVICES, compiled, record_kernel, rounds, row_dtypes, row_shape, sync, time_it

V = 50258
CASES = ["absorb-all", "absorb-half", "uniform"]


def make_inputs(device, dtype, case):
    B, L = row_shape(device)
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
        return lambda ls, x, d: sk.reverse_step(ls, x, d, graph, kind, validate=False)
    if impl == "fused+bias+shift":     # the sampler's form: the bare projection product
        def parts(ls, x, d):
            bias = torch.zeros(ls.shape[-1], device=ls.device)
            shift = torch.full((ls.shape[0],), -10.8, device=ls.device)
            return sk.reverse_step(ls, x, d, graph, kind, bias=bias, shift=shift, validate=False)
        return parts
    def ref(ls, x, d):
        return R.reverse_step(ls, x, d, graph, kind)
    return ref if impl == "reference" else compiled(("step", kind, graph), ref)


def cases():
    for device in DEVICES:
        for dtype in row_dtypes(device):
            for case in CASES:
                for kind in ("euler", "analytic"):
                    for impl in ("fused", "fused+bias+shift", "reference", "compiled"):
                        yield pytest.param(device, dtype, case, kind, impl,
                                           id=f"{device}-{str(dtype)[6:]}-{case}-{kind}-{impl}")


@pytest.mark.parametrize("device,dtype,case,kind,impl", list(cases()))
def test_step(benchmark, device, dtype, case, kind, impl):
    ls, x, d, moving = make_inputs(device, dtype, case)
    f = implementation(impl, kind, "uniform" if case == "uniform" else "absorb")

    def run():
        with torch.no_grad():
            f(ls, x, d)
        sync(device)

    parts = impl == "fused+bias+shift"     # its own row of the summary, in the fused column
    time_it(benchmark, run, device, rounds=rounds(device, "fused" if parts else impl))
    record_kernel(benchmark, suite="steps", op=f"{kind}_step", device=device, dtype=dtype,
                  case=f"{case} [{ls.shape[0]}, {ls.shape[1]}, {V}]" + (" + bias, shift" if parts else ""),
                  impl="fused" if parts else impl, pass_="step",
                  bytes_moved=moving * V * ls.element_size(),
                  size_bytes=ls.numel() * ls.element_size())
