"""End-to-end sampling throughput (tokens/s = B·L / seconds per sample() call): the analytic
predictor with the denoiser, on the fused step kernels vs the reference steps (the plain-PyTorch
ops of sedd_kernels.reference, dense over [B, L, V]), with and without the exact cache, same run.

Every variant samples from the same time-independent ("clean") absorbing DDiT of the preset with
random weights (the zero-initialised output projection drawn N(0, 0.02)): under the clean
parametrisation the number of tokens a step unmasks does not depend on the weights (the unmasking
probability is expm1(δ)/expm1(σ) whatever p(y | x) is), so the cache's hit rate is the one of a
trained model. Without the cache the clean network costs what the σ-conditioned one does (same
layers, plus a log-softmax).

Shapes (n real tokens, batch B, length L) and steps, by level (harness.py):
- quick (CPU default): tiny (381, 4, 64) at 64 and 256 steps; small (50257, 1, 64) at 16 steps.
- full (CPU): tiny at 64, 256 and 1024 steps; small at 64 steps (a small-preset network call
  takes ~0.15 s on 2 cores).
- gpu: tiny (381, 8, 1024) and small (50257, 8, 1024), the paper's sample shape, at 64, 256 and
  1024 steps; the network under bf16 autocast (as in training), the steps in fp32.
After a 2-step warm-up, one timed round per case on CUDA; on the CPU 2 or 3 rounds and tokens/s
from the fastest (a shared 2-core machine: the fastest round is the least disturbed).

The cache saves a call only when a step changes no token of the batch: about B·L/S tokens are
unmasked per step, so roughly a fraction exp(−B·L/S) of the S steps reuse the output
(sedd/sampling.py). On CPU that is most steps at B·L = 256, S = 1024; at B·L = 8192 (CUDA) almost
none below S ≈ 10⁴.
"""

import pytest
import torch

from sedd.core.graphs import Absorbing
from sedd.config import model_preset
from sedd.nn import DDiT, ModelConfig
from sedd.core.noise import LogLinear
from sedd.sampling import sample

from harness import DEVICES, level, record_throughput, sync

SHAPES = {  # preset: (n real tokens, batch, length) per level
    "tiny": {"quick": (381, 4, 64), "full": (381, 4, 64), "gpu": (381, 8, 1024)},
    "small": {"quick": (50257, 1, 64), "full": (50257, 1, 64), "gpu": (50257, 8, 1024)},
}
STEPS = {"quick": {"tiny": (64, 256), "small": (16,)},
         "full": {"tiny": (64, 256, 1024), "small": (64,)},
         "gpu": {"tiny": (64, 256, 1024), "small": (64, 256, 1024)}}
_MODELS = {}


def clean_model(preset, device):
    key = (preset, device)
    if key not in _MODELS:
        _MODELS.clear()  # one preset's model at a time (the small one is 0.7 GB in fp32)
        n, _, L = SHAPES[preset][level(device)]
        torch.manual_seed(0)
        model = DDiT(ModelConfig(vocab_size=n + 1, max_length=L, parametrisation="clean",
                                 **model_preset(preset)))
        torch.nn.init.normal_(model.output_layer.linear.weight, std=0.02)
        _MODELS[key] = model.to(device).eval()
    return _MODELS[key]


def cases():
    for device in DEVICES:
        for preset in SHAPES:
            for steps in STEPS[level(device)][preset]:
                for step in ("fused", "reference"):
                    for cache in ("no-cache", "cache"):
                        yield pytest.param(device, preset, steps, step, cache,
                                           id=f"{device}-{preset}-{steps}-{step}-{cache}")


def time_sample(benchmark, device, preset, steps, rounds, **kw):
    """Time sample() on the preset's clean model at the level's shape (a 2-step warm-up, then
    `rounds` timed calls); returns the SampleStats of the last call. `kw` goes to sample()."""
    n, B, L = SHAPES[preset][level(device)]
    model, graph, noise = clean_model(preset, device), Absorbing(n), LogLinear()
    stats = []

    def run(num_steps=steps):
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            x, s = sample(model, graph, noise, B, L, num_steps, generator=gen, device=device,
                          return_stats=True, **kw)
        sync(device)
        assert x.max() < n                     # a finished sample: no mask left
        stats.append(s)

    run(2)
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    return stats[-1]


@pytest.mark.parametrize("device,preset,steps,step,cache", list(cases()))
def test_sample(benchmark, device, preset, steps, step, cache):
    n, B, L = SHAPES[preset][level(device)]
    rounds = 1 if device == "cuda" else (3 if preset == "tiny" and steps <= 256 else 2)
    s = time_sample(benchmark, device, preset, steps, rounds, predictor="analytic",
                    cache=cache == "cache", use_reference=step == "reference")
    record_throughput(benchmark, suite="sampler", device=device,
                      case=f"{preset} {B} × {L}, V {n + 1}, {steps} steps",
                      impl=step + ("+cache" if cache == "cache" else ""), tokens=B * L,
                      seconds=benchmark.stats.stats.min, baseline="reference",
                      network_calls=s.network_calls, evaluations=s.evaluations)
