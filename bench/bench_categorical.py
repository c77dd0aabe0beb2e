"""sample_categorical: the fused race vs the reference (float64 race on torch's RNG) vs
torch.compile of the reference, same run. Weights [R, 50258] with R = B·L rows (levels,
harness.py: quick 256, full 2048, gpu 8192). GB/s counts one read of the weights."""

import pytest
import torch

import sedd_kernels as sk
from sedd_kernels import reference as R

from harness import DEVICES, compiled, pick, record_kernel, rounds, sync, time_it

V = 50258


@pytest.mark.parametrize("impl", ["fused", "reference", "compiled"])
@pytest.mark.parametrize("device", DEVICES)
def test_sample_categorical(benchmark, device, impl):
    rows = pick(device, quick=256, full=2048, gpu=8192)
    w = torch.rand(rows, V, device=device)
    f = {"fused": lambda: sk.sample_categorical(w, validate=False),
         "reference": lambda: R.sample_categorical(w),
         "compiled": lambda: compiled("categorical", R.sample_categorical)(w)}[impl]

    def run():
        f()
        sync(device)

    time_it(benchmark, run, device, rounds=rounds(device, impl))
    size = w.numel() * w.element_size()
    record_kernel(benchmark, suite="categorical", op="sample_categorical", device=device,
                  dtype=w.dtype, case=f"[{rows}, {V}]", impl=impl, pass_="draw",
                  bytes_moved=size, size_bytes=size)
