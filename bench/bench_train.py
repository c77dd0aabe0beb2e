"""Training-step throughput (tokens/s) and peak memory of the DDiT model, same run, three losses:
fused-linear (the trainer's default: output projection fused into the loss,
sedd_kernels.linear_score_entropy), fused (log-scores materialised, then the fused score-entropy
op) and reference (log-scores + the plain-PyTorch loss). The tiny preset on the built-in
language's vocabulary, and the small preset (GPT-2 vocabulary, V = 50258) at a reduced batch on
CPU. Peak memory: one step (forward, backward, optimizer) above the memory in use before it.
Levels (harness.py): quick and full run both presets on the CPU shapes below (full: more
rounds); gpu runs the GPU shapes under bf16 autocast."""

import pytest
import torch

from sedd.core.graphs import Absorbing
from sedd.core.losses import batch_loss
from sedd.config import model_preset
from sedd.nn import DDiT, ModelConfig
from sedd.core.noise import LogLinear

from harness import DEVICES, peak_bytes, pick, record_throughput, sync

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
    model = DDiT(ModelConfig(vocab_size=graph.V, **model_preset(preset))).to(device)
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
    rounds = 5 if preset == "tiny" else pick(device, quick=2, full=3, gpu=5)
    benchmark.pedantic(step, rounds=rounds, iterations=1, warmup_rounds=1)
    record_throughput(benchmark, suite="train", device=device,
                      case=f"{preset} {B} × {L}, V {graph.V}", impl=loss, tokens=B * L,
                      seconds=benchmark.stats.stats.median, baseline="reference", peak=peak)
