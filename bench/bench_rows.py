"""The output projection for the rows that can move (sedd.sampling.mover): sample() tokens/s with
the projection computed at every position (`all_rows=True`, the sampler before it) against only
at the masked positions a step can move or a predictor reads, same run, same model.

The shape is the one the sampler's tables use: a σ-conditioned absorbing DDiT with H 256,
4 blocks, V 50258 (the GPT-2 vocabulary + mask), fp32, random weights (projection N(0, 0.02)),
B 4 × L 128; the analytic predictor at 32 steps (+ the denoiser), first-hitting and confidence
at 4 tokens per call (32 calls). At V 50258 the projection is about two thirds of a step; with
the log-linear schedule about half the positions are masked on average over the grid.
Levels: quick and full (CPU) as above (full: 3 rounds); gpu: B 8 × L 1024 (where the grid
predictors keep projecting every row: the row count would be a host sync per step)."""

import pytest
import torch

from sedd.core.graphs import Absorbing
from sedd.core.noise import LogLinear
from sedd.nn import DDiT, ModelConfig
from sedd.sampling import sample

from harness import DEVICES, pick, record_throughput, sync

N = 50257
SHAPE = dict(hidden_size=256, n_blocks=4, n_heads=4, cond_dim=128)
RUNS = {"analytic": dict(predictor="analytic", steps=32),
        "first_hitting": dict(predictor="first_hitting", steps=32),
        "confidence": dict(predictor="confidence", steps=32)}
_MODEL = {}


def model(device, L):
    if (device, L) not in _MODEL:
        _MODEL.clear()
        torch.manual_seed(0)
        net = DDiT(ModelConfig(vocab_size=N + 1, max_length=L, **SHAPE))
        torch.nn.init.normal_(net.output_layer.linear.weight, std=0.02)
        _MODEL[(device, L)] = net.to(device).eval()
    return _MODEL[(device, L)]


@pytest.mark.parametrize("rows", ["every row", "movable rows"])
@pytest.mark.parametrize("run", list(RUNS))
@pytest.mark.parametrize("device", DEVICES)
def test_rows(benchmark, device, run, rows):
    B, L = pick(device, quick=(4, 128), full=(4, 128), gpu=(8, 1024))
    net, g = model(device, L), Absorbing(N)
    out = []

    def go(steps=RUNS[run]["steps"]):
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            x, s = sample(net, g, LogLinear(), B, L, steps, RUNS[run]["predictor"],
                          generator=gen, device=device, return_stats=True,
                          all_rows=rows == "every row")
        sync(device)
        assert int(x.max()) < N
        out.append(s)

    go(2)                                                          # warm-up
    benchmark.pedantic(go, rounds=pick(device, quick=2, full=3, gpu=3), iterations=1,
                       warmup_rounds=0)
    record_throughput(benchmark, suite="rows", device=device,
                      case=f"{run}, B {B} × L {L}, V {N + 1}, H 256 × 4", impl=rows,
                      tokens=B * L, seconds=benchmark.stats.stats.min, baseline="every row",
                      network_calls=out[-1].network_calls)
