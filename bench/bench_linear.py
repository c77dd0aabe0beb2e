"""The loss stage of training at GPT-2 vocabulary — hidden states [N, H] to the loss and the
gradients of hidden, weight and bias — three ways, same run:

* fused:            sedd_kernels.linear_score_entropy(reduction="sum"), gradients in the forward;
* fused-recompute:  linear_score_entropy(reduction="none"), the backward recomputes the chunks;
* proj+fused:       materialised log-scores (F.linear) + the fused score_entropy op;
* proj+reference:   reference.linear_score_entropy (plain PyTorch: materialised log-scores,
                    upcast to fp32 as the model does, + reference.score_entropy);
* compiled:         torch.compile(dynamic=False) of reference.linear_score_entropy(dense=True).

H = 768, V = 50258, N = B·L (levels, harness.py: quick 512 fp32, full {512, 4096} fp32, gpu
{4096, 16384} fp32 + bf16), absorbing
graph with half the positions masked (the average over t of the log-linear schedule) and the
uniform graph. Peak memory is measured once per case, outside the timed rounds: on CUDA
max_memory_allocated above what was allocated before; on CPU the growth of the peak resident set
(VmHWM, reset through /proc/self/clear_refs). "peak" includes the three gradients the stage
returns (the fp32 weight gradient alone is 154 MB); "work" is peak minus those gradients: the
memory the loss stage needs beyond its inputs and outputs.
"""


import pytest
import torch
import torch.nn.functional as F

import sedd_kernels as sk
from sedd_kernels import reference as R

from harness import DEVICES, compiled, peak_bytes, pick, record_memory, sync, time_it

H, V = 768, 50258
IMPLS = ["fused", "fused-recompute", "proj+fused", "proj+reference", "compiled"]


def cases():
    for device in DEVICES:
        sizes = pick(device, quick=[(1, 512)], full=[(1, 512), (4, 1024)],
                     gpu=[(4, 1024), (16, 1024)])
        dtypes = pick(device, quick=[torch.float32], full=[torch.float32],
                      gpu=[torch.float32, torch.bfloat16])
        for dtype in dtypes:
            for B, L in sizes:
                for graph in ("absorb", "uniform"):
                    for impl in IMPLS:
                        yield pytest.param(device, dtype, B, L, graph, impl,
                                           id=f"{device}-{str(dtype)[6:]}-N{B * L}-{graph}-{impl}")


def make(device, dtype, B, L, graph):
    g = torch.Generator(device=device).manual_seed(0)
    hidden = torch.randn(B, L, H, device=device, generator=g).to(dtype).requires_grad_()
    weight = (torch.randn(V, H, device=device, generator=g) * 0.02).to(dtype).requires_grad_()
    bias = torch.zeros(V, device=device, dtype=dtype).requires_grad_()
    x0 = torch.randint(0, V - 1, (B, L), device=device, generator=g)
    if graph == "absorb":
        masked = torch.rand(B, L, device=device, generator=g) < 0.5
        xt = torch.where(masked, torch.full_like(x0, V - 1), x0)
    else:
        xt = torch.where(torch.rand(B, L, device=device, generator=g) < 0.5, x0,
                         torch.randint(0, V, (B, L), device=device, generator=g))
    sigma = torch.rand(B, device=device, generator=g) + 0.05
    offset = -torch.log(torch.expm1(sigma)) - torch.log(torch.tensor(V - 1.0, device=device))
    weight_per_token = (torch.rand(B, device=device, generator=g) + 0.5) / B
    return hidden, weight, bias, xt, x0, sigma, offset, weight_per_token


def step_fn(impl, graph, hidden, weight, bias, xt, x0, sigma, offset, tw):
    params = [hidden, weight, bias]
    if impl == "fused":
        def loss():
            return sk.linear_score_entropy(hidden, weight, bias, xt, x0, sigma, graph, offset,
                                           reduction="sum", token_weight=tw, validate=False)
    elif impl == "fused-recompute":
        def loss():
            se = sk.linear_score_entropy(hidden, weight, bias, xt, x0, sigma, graph, offset,
                                         validate=False)
            return (se * tw[:, None]).sum()
    elif impl == "proj+fused":
        def loss():
            ls = F.linear(hidden, weight, bias) + offset[:, None, None].to(hidden.dtype)
            se = sk.score_entropy(ls, xt, x0, sigma, graph, validate=False)
            return (se * tw[:, None]).sum()
    else:
        if impl == "compiled":
            ref = compiled(("linear", graph), lambda h, w, b, xt, x0, s, off: R.linear_score_entropy(
                h, w, b, xt, x0, s, graph, off, dense=True))
        else:
            def ref(h, w, b, xt, x0, s, off):
                return R.linear_score_entropy(h, w, b, xt, x0, s, graph, off)

        def loss():
            return (ref(hidden, weight, bias, xt, x0, sigma, offset) * tw[:, None]).sum()

    def run():
        grads = torch.autograd.grad(loss(), params)
        sync(hidden.device)
        return grads
    return run


@pytest.mark.parametrize("device,dtype,B,L,graph,impl", list(cases()))
def test_linear_score_entropy(benchmark, device, dtype, B, L, graph, impl):
    inputs = make(device, dtype, B, L, graph)
    run = step_fn(impl, graph, *inputs)
    grads = run()                                     # warm-up
    grad_bytes = sum(g.numel() * g.element_size() for g in grads)
    del grads
    peak = peak_bytes(run, device)
    fast = device == "cuda"
    time_it(benchmark, run, device, rounds=10 if fast else 2, warmup=1 if fast else 0)
    record_memory(benchmark, suite="linear", device=device, dtype=dtype, case=f"N={B * L} {graph}",
                  impl=impl, peak=peak, grad_bytes=grad_bytes, tokens=B * L)
