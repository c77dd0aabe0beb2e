"""Training-step throughput (tokens/s) and peak memory of the DDiT model, same run, three losses:
fused-linear (the trainer's default: output projection fused into the loss,
sedd_kernels.linear_score_entropy), fused (log-scores materialised, then the fused score-entropy
op) and reference (log-scores + the plain-PyTorch loss). The tiny preset on the built-in
language's vocabulary, and the small preset (GPT-2 vocabulary, V = 50258) at a reduced batch on
CPU. Peak memory: one step (forward, backward, optimizer) above the memory in use before it."""

import os
import sys
import time

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

from sedd.graphs import Absorbing  # noqa: E402
from sedd.losses import batch_loss  # noqa: E402
from sedd.model import PRESETS, DDiT, ModelConfig  # noqa: E402
from sedd.noise import LogLinear  # noqa: E402

from conftest import DEVICES, peak_bytes, sync  # noqa: E402

SHAPES = {  # preset: (n real tokens, batch, length) per device
    "tiny": {"cpu": (381, 32, 64), "cuda": (381, 64, 256)},
    "small": {"cpu": (50257, 1, 256), "cuda": (50257, 8, 1024)},
}


@pytest.mark.parametrize("loss", ["fused-linear", "fused", "reference"])
@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("device", DEVICES)
def test_train_step(benchmark, device, preset, loss):
    n, B, L = SHAPES[preset][device]
    graph = Absorbing(n)
    model = DDiT(ModelConfig(vocab_size=graph.V, **PRESETS[preset])).to(device)
    torch.nn.init.normal_(model.output_layer.linear.weight, std=0.02)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x0 = torch.randint(0, n, (B, L), device=device)
    noise = LogLinear()

    def step():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            value = batch_loss(model, x0, graph, noise, torch.Generator().manual_seed(0),
                               use_reference=loss == "reference",
                               fused_linear=loss == "fused-linear")
        value.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)

    step()
    peak = peak_bytes(step, device)
    rounds = 5 if (device == "cuda" or preset == "tiny") else 2
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
    tps = B * L / benchmark.stats.stats.median
    benchmark.extra_info.update(tokens_per_s=round(tps), batch=B, length=L, vocab=graph.V,
                                peak_bytes=peak)
    mem = f", peak {peak / 2 ** 20:,.0f} MiB" if peak is not None else ""
    print(f"\n{preset} {device} {loss}: {tps:,.0f} tokens/s (B={B}, L={L}, V={graph.V}){mem}")
