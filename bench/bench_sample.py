"""End-to-end sampling throughput (tokens/s = B·L / seconds per sample() call): the analytic
predictor with the denoiser, on the fused step kernels vs the reference steps (the plain-PyTorch
ops of sedd_kernels.reference, dense over [B, L, V]), with and without the exact cache, same run.

Every variant samples from the same time-independent ("clean") absorbing DDiT of the preset with
random weights (the zero-initialised output projection drawn N(0, 0.02)): under the clean
parametrisation the number of tokens a step unmasks does not depend on the weights (the unmasking
probability is expm1(δ)/expm1(σ) whatever p(y | x) is), so the cache's hit rate is the one of a
trained model. Without the cache the clean network costs what the σ-conditioned one does (same
layers, plus a log-softmax).

Shapes (n real tokens, batch B, length L) and steps:
- CPU: tiny (381, 4, 64) at 64, 256 and 1024 steps; small (50257, 1, 64) at 64 steps only (a
  small-preset network call takes ~0.15 s on 2 cores).
- CUDA: tiny (381, 8, 1024) and small (50257, 8, 1024), the paper's sample shape, at 64, 256 and
  1024 steps; the network under bf16 autocast (as in training), the steps in fp32.
After a 2-step warm-up, one timed round per case on CUDA; on the CPU 2 or 3 rounds and tokens/s
from the fastest (a shared 2-core machine: the fastest round is the least disturbed).

The cache saves a call only when a step changes no token of the batch: about B·L/S tokens are
unmasked per step, so roughly a fraction exp(−B·L/S) of the S steps reuse the output
(sedd/sampling.py). On CPU that is most steps at B·L = 256, S = 1024; at B·L = 8192 (CUDA) almost
none below S ≈ 10⁴.

`python bench/bench_sample.py RESULTS.json` prints the table of a `--benchmark-json` file."""

import json
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))

from sedd.graphs import Absorbing  # noqa: E402
from sedd.model import PRESETS, DDiT, ModelConfig  # noqa: E402
from sedd.noise import LogLinear  # noqa: E402
from sedd.sampling import sample  # noqa: E402

from conftest import DEVICES, machine, sync  # noqa: E402

SHAPES = {  # preset: (n real tokens, batch, length) per device
    "tiny": {"cpu": (381, 4, 64), "cuda": (381, 8, 1024)},
    "small": {"cpu": (50257, 1, 64), "cuda": (50257, 8, 1024)},
}
STEPS = {"cpu": {"tiny": (64, 256, 1024), "small": (64,)},
         "cuda": {"tiny": (64, 256, 1024), "small": (64, 256, 1024)}}
_MODELS = {}


def clean_model(preset, device):
    key = (preset, device)
    if key not in _MODELS:
        _MODELS.clear()  # one preset's model at a time (the small one is 0.7 GB in fp32)
        n, _, L = SHAPES[preset][device]
        torch.manual_seed(0)
        model = DDiT(ModelConfig(vocab_size=n + 1, max_length=L, parametrisation="clean",
                                 **PRESETS[preset]))
        torch.nn.init.normal_(model.output_layer.linear.weight, std=0.02)
        _MODELS[key] = model.to(device).eval()
    return _MODELS[key]


@pytest.mark.parametrize("cache", ["cache", "no-cache"])
@pytest.mark.parametrize("step", ["fused", "reference"])
@pytest.mark.parametrize("steps", [64, 256, 1024])
@pytest.mark.parametrize("preset", ["tiny", "small"])
@pytest.mark.parametrize("device", DEVICES)
def test_sample(benchmark, device, preset, steps, step, cache):
    if steps not in STEPS[device][preset]:
        pytest.skip(f"{preset} on {device}: only {STEPS[device][preset]} steps (run time)")
    n, B, L = SHAPES[preset][device]
    model, graph, noise = clean_model(preset, device), Absorbing(n), LogLinear()
    stats = []

    def run(num_steps=steps):
        gen = torch.Generator(device=device).manual_seed(0)
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            x, s = sample(model, graph, noise, B, L, num_steps, "analytic", generator=gen,
                          device=device, cache=cache == "cache", use_reference=step == "reference",
                          return_stats=True)
        sync(device)
        assert x.max() < n                     # a finished sample: no mask left
        stats.append(s)

    run(2)
    rounds = 1 if device == "cuda" else (3 if preset == "tiny" and steps <= 256 else 2)
    benchmark.pedantic(run, rounds=rounds, iterations=1, warmup_rounds=0)
    tps = B * L / benchmark.stats.stats.min
    s = stats[-1]
    benchmark.extra_info.update(tokens_per_s=round(tps, 1), batch=B, length=L, vocab=graph.V,
                                network_calls=s.network_calls, evaluations=s.evaluations,
                                machine=machine(device))
    print(f"\n{preset} {device} {steps} steps {step} {cache}: {tps:,.1f} tokens/s "
          f"(B={B}, L={L}, V={graph.V}; {s.network_calls}/{s.evaluations} network calls)")


def table(path):
    """Markdown table of a pytest-benchmark JSON file of this suite."""
    rows = {}
    for b in json.load(open(path))["benchmarks"]:
        p, e = b["params"], b["extra_info"]
        key = (p["device"], p["preset"], e["batch"], e["length"], e["vocab"], p["steps"])
        rows.setdefault(key, {})[(p["step"], p["cache"])] = e
    out = ["| device | preset | B × L | V | steps | fused | fused + cache | reference | "
           "reference + cache | network calls (cache / none) | fused × ref | cache × |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = lambda k: (k[0], list(SHAPES).index(k[1]), k[5])  # noqa: E731
    for (dev, preset, B, L, V, steps), r in sorted(rows.items(), key=lambda kv: order(kv[0])):
        tps = {k: v["tokens_per_s"] for k, v in r.items()}
        f, fc = tps.get(("fused", "no-cache")), tps.get(("fused", "cache"))
        ref, rc = tps.get(("reference", "no-cache")), tps.get(("reference", "cache"))
        calls = r.get(("fused", "cache")) or r.get(("reference", "cache"))
        fmt = lambda v: f"{v:,.0f}" if v and v >= 100 else (f"{v:.1f}" if v else "-")  # noqa: E731
        ratio = lambda a, b: f"{a / b:.2f}" if a and b else "-"  # noqa: E731
        out.append(f"| {dev} | {preset} | {B} × {L} | {V} | {steps} | {fmt(f)} | {fmt(fc)} | "
                   f"{fmt(ref)} | {fmt(rc)} | "
                   + (f"{calls['network_calls']} / {calls['evaluations']}" if calls else "-")
                   + f" | {ratio(f, ref)} | {ratio(fc, f)} |")
    return "\n".join(out)


if __name__ == "__main__":
    print(table(sys.argv[1]))
