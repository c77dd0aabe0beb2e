"""sample_categorical and perturb: the fused ops vs the reference (float64 race on torch's RNG;
torch RNG perturbation) vs torch.compile of the reference, same run. Weights [B·1024, 50258]
(B = 2 on CPU, 8 on GPU); tokens [B, 1024]. GB/s counts one read of the weights (categorical) or
of the tokens plus one write (perturb)."""

import pytest
import torch

import sedd_kernels as sk
from sedd_kernels import reference as R

from conftest import DEVICES, batch_size, record, sync

V, L = 50258, 1024
_COMPILED = {}


def compiled(name, fn):
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(fn, dynamic=False)
    return _COMPILED[name]


@pytest.mark.parametrize("impl", ["fused", "reference", "compiled"])
@pytest.mark.parametrize("device", DEVICES)
def test_sample_categorical(benchmark, device, impl):
    B = batch_size(device)
    w = torch.rand(B * L, V, device=device)
    f = {"fused": lambda: sk.sample_categorical(w, validate=False),
         "reference": lambda: R.sample_categorical(w),
         "compiled": lambda: compiled("cat", R.sample_categorical)(w)}[impl]

    def run():
        f()
        sync(device)

    run()
    benchmark.pedantic(run, rounds=10 if (device == "cuda" or impl == "fused") else 2,
                       iterations=1, warmup_rounds=0)
    size = w.numel() * w.element_size()
    record(benchmark, op="sample_categorical", device=device, dtype=w.dtype, case=f"[{B * L}, {V}]",
           impl=impl, pass_="draw", bytes_moved=size, size_bytes=size)


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
@pytest.mark.parametrize("impl", ["fused", "reference", "compiled"])
@pytest.mark.parametrize("device", DEVICES)
def test_perturb(benchmark, device, impl, graph):
    B = batch_size(device) * 64
    x0 = torch.randint(0, V - 1, (B, L), device=device)
    sigma = torch.rand(B, device=device) + 0.1
    f = {"fused": lambda: sk.perturb(x0, sigma, graph, V, validate=False),
         "reference": lambda: R.perturb(x0, sigma, graph, V),
         "compiled": lambda: compiled(f"perturb-{graph}",
                                      lambda a, s: R.perturb(a, s, graph, V))(x0, sigma)}[impl]

    def run():
        f()
        sync(device)

    run()
    benchmark.pedantic(run, rounds=10, iterations=1, warmup_rounds=0)
    size = x0.numel() * x0.element_size()
    record(benchmark, op="perturb", device=device, dtype=x0.dtype, case=f"{graph} [{B}, {L}]",
           impl=impl, pass_="draw", bytes_moved=2 * size, size_bytes=size)
