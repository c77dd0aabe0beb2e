"""The autoregressive baseline's loss stage at GPT-2 vocabulary — hidden states [N, H] to the
next-token cross-entropy and the gradients of hidden, weight and bias — four ways, same run:

* fused:            sedd_kernels.linear_cross_entropy(reduction="mean"), gradients in the forward;
* fused-recompute:  linear_cross_entropy(reduction="none").mean(), the backward recomputes chunks;
* reference:        reference.linear_cross_entropy (materialised logits, upcast to fp32 as a
                    model does, F.cross_entropy);
* compiled:         torch.compile(dynamic=False) of the reference.

H = 768, V = 50257 (GPT-2's tokens: the AR model predicts no mask), N = B·L (levels, harness.py:
quick 512 fp32, full {512, 4096} fp32, gpu {4096, 16384} fp32 + bf16). Peak memory as in
bench_linear.py: "work" is the peak minus the three gradients the stage returns.
"""

import pytest
import torch

import sedd_kernels as sk
from sedd_kernels import reference as R

from harness import DEVICES, compiled, peak_bytes, pick, record_memory, sync, time_it

H, V = 768, 50257
IMPLS = ["fused", "fused-recompute", "reference", "compiled"]


def cases():
    for device in DEVICES:
        sizes = pick(device, quick=[(1, 512)], full=[(1, 512), (4, 1024)],
                     gpu=[(4, 1024), (16, 1024)])
        dtypes = pick(device, quick=[torch.float32], full=[torch.float32],
                      gpu=[torch.float32, torch.bfloat16])
        for dtype in dtypes:
            for B, L in sizes:
                for impl in IMPLS:
                    yield pytest.param(device, dtype, B, L, impl,
                                       id=f"{device}-{str(dtype)[6:]}-N{B * L}-{impl}")


def make(device, dtype, B, L):
    g = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(B, L, H, device=device, generator=g).to(dtype).requires_grad_()
    weight = (torch.randn(V, H, device=device, generator=g) * 0.02).to(dtype).requires_grad_()
    bias = torch.zeros(V, device=device, dtype=dtype).requires_grad_()
    target = torch.randint(0, V, (B, L), device=device, generator=g)
    return hidden, weight, bias, target


def step_fn(impl, hidden, weight, bias, target):
    params = [hidden, weight, bias]
    if impl == "fused":
        def loss():
            return sk.linear_cross_entropy(hidden, weight, bias, target, validate=False)
    elif impl == "fused-recompute":
        def loss():
            return sk.linear_cross_entropy(hidden, weight, bias, target, reduction="none",
                                           validate=False).mean()
    else:
        ref = R.linear_cross_entropy if impl == "reference" else compiled(
            ("linear_ce",), lambda h, w, b, t: R.linear_cross_entropy(h, w, b, t))

        def loss():
            return ref(hidden, weight, bias, target)

    def run():
        grads = torch.autograd.grad(loss(), params)
        sync(hidden.device)
        return grads
    return run


@pytest.mark.parametrize("device,dtype,B,L,impl", list(cases()))
def test_linear_cross_entropy(benchmark, device, dtype, B, L, impl):
    inputs = make(device, dtype, B, L)
    run = step_fn(impl, *inputs)
    grads = run()                                     # warm-up
    grad_bytes = sum(g.numel() * g.element_size() for g in grads)
    del grads
    peak = peak_bytes(run, device)
    fast = device == "cuda"
    time_it(benchmark, run, device, rounds=10 if fast else 2, warmup=1 if fast else 0)
    record_memory(benchmark, suite="linear_ce", device=device, dtype=dtype, case=f"N={B * L}",
                  impl=impl, peak=peak, grad_bytes=grad_bytes, tokens=B * L)
