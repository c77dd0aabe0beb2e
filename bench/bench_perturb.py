"""perturb (the forward process x_0 → x_t): the fused op (Philox, one draw per token) vs the
reference (torch's RNG) vs torch.compile of the reference, same run, tokens [B, 1024] (levels,
harness.py: quick B = 16, full 128, gpu 512). GB/s counts one read of the tokens plus one write.
Perturbation is not a hot op (a training step spends microseconds here); the suite checks that
the fused op is not slower than the baselines."""

import pytest
import torch

import sedd_kernels as sk
from sedd_kernels import reference as R

from harness import DEVICES, compiled, pick, record_kernel, sync, time_it

V, L = 50258, 1024


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
@pytest.mark.parametrize("impl", ["fused", "reference", "compiled"])
@pytest.mark.parametrize("device", DEVICES)
def test_perturb(benchmark, device, impl, graph):
    B = pick(device, quick=16, full=128, gpu=512)
    x0 = torch.randint(0, V - 1, (B, L), device=device)
    sigma = torch.rand(B, device=device) + 0.1

    def ref(a, s):
        return R.perturb(a, s, graph, V)

    f = {"fused": lambda: sk.perturb(x0, sigma, graph, V, validate=False),
         "reference": lambda: ref(x0, sigma),
         "compiled": lambda: compiled(("perturb", graph), ref)(x0, sigma)}[impl]

    def run():
        f()
        sync(device)

    time_it(benchmark, run, device, rounds=10)
    size = x0.numel() * x0.element_size()
    record_kernel(benchmark, suite="perturb", op="perturb", device=device, dtype=x0.dtype,
                  case=f"{graph} [{B}, {L}]", impl=impl, pass_="draw", bytes_moved=2 * size,
                  size_bytes=size)
