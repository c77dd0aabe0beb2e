"""Generation throughput by model family (issue 26): tokens/s generating L tokens, with the
network calls and the token positions they computed per generated token, for

- sedd-full: a SEDD model whose window is the whole length, first-hitting with the exact
  per-sequence cache (one full-window call per token: the cheapest exact full-window sampler);
- sedd-windows: the same kind of model with a 64-token window, semi-autoregressive windows of
  stride 32, first-hitting + cache in each;
- block16+kv: block diffusion, K = 16, first-hitting inside each block (one call per token on
  16 positions) with the KV cache of the committed blocks, plus one call per block to commit it;
- block16+kv-analytic8: the same with 8 analytic steps per block (0.5 calls per token);
- block16-nokv: block16+kv recomputing the clean prefix at every call (--no-kv-cache);
- ar+kv: the autoregressive baseline of the same size with its KV cache.

Every model is the preset's shape (tiny: H 128 × 4 blocks over the built-in language's 381
tokens; small: the paper's H 768 × 12 blocks over GPT-2's 50257) with random weights, its
window the generated length (sedd-windows: 64): first-hitting makes one call per token and the
analytic grid a fixed number, whatever the weights, so the calls and the cost are a trained
model's. The clean parametrisation everywhere (the block family's; SEDD's exact cache needs it).

Cases by level (harness.py): quick (the default): tiny, 1024 tokens, batch 1. full (CPU,
--bench-full): tiny 1024 tokens at batch 1 and 8, small 256 tokens at batch 1 and 8 — without
sedd-full at small batch 8 (256 full-window calls on 8 × 256 positions: about 20 minutes on 2
cores). gpu: every case and method. One timed round after a warm-up on a short length (a CPU
round of sedd-full takes ~40 s at tiny batch 1).
"""

import pytest
import torch

from sedd.config import model_preset
from sedd.core.graphs import Absorbing
from sedd.core.noise import LogLinear
from sedd.families import build_model, get_family
from sedd.nn import ModelConfig

from harness import DEVICES, level, record_generation, sync

N = {"tiny": 381, "small": 50257}
CASES = {  # level: [(preset, length, batch)]
    "quick": [("tiny", 1024, 1)],
    "full": [("tiny", 1024, 1), ("tiny", 1024, 8), ("small", 256, 1), ("small", 256, 8)],
    "gpu": [("tiny", 1024, 1), ("tiny", 1024, 8), ("small", 256, 1), ("small", 256, 8)],
}
METHODS = ["sedd-full", "sedd-windows", "block16+kv", "block16+kv-analytic8", "block16-nokv",
           "ar+kv"]
SKIP = {"full": {("small", 256, 8, "sedd-full")}}
_MODELS = {}


def model(kind, preset, length, device):
    """The preset's network of this kind, random weights, window `length` (cached per shape)."""
    key = (kind, preset, length, device)
    if key not in _MODELS:
        if len(_MODELS) > 3:
            _MODELS.clear()
        n = N[preset]
        shape = model_preset(preset)
        if kind == "ar":
            cfg = ModelConfig(vocab_size=get_family("ar").vocab_size(None, n), max_length=length,
                              family="ar", scale_by_sigma=False, **shape)
        else:
            cfg = ModelConfig(vocab_size=n + 1, max_length=length, parametrisation="clean",
                              family=kind, block_size=16 if kind == "block" else None, **shape)
        torch.manual_seed(0)
        net = build_model(cfg)
        for p in net.parameters():                     # off the zero initialisations
            if p.dim() > 1:
                torch.nn.init.normal_(p, std=0.02)
        _MODELS[key] = net.to(device).eval()
    return _MODELS[key]


def generate(method, preset, length, batch, device):
    """Run `method` once: (tokens, SampleStats)."""
    n = N[preset]
    gen = torch.Generator(device=device).manual_seed(0)
    common = dict(generator=gen, device=device, return_stats=True)
    if method == "ar+kv":
        return get_family("ar").bind().generate(model("ar", preset, length, device), batch,
                                                length, **common)
    if method.startswith("sedd"):
        fam = get_family("sedd").bind(Absorbing(n), LogLinear())
        if method == "sedd-full":
            net = model("sedd", preset, length, device)
            return fam.generate(net, batch, length, steps=length, predictor="first_hitting",
                                **common)
        net = model("sedd", preset, 64, device)
        return fam.generate(net, batch, length, steps=64, predictor="first_hitting", window=64,
                            stride=32, **common)
    fam = get_family("block").bind(Absorbing(n), LogLinear())
    net = model("block", preset, length, device)
    analytic = method.endswith("analytic8")
    return fam.generate(net, batch, length, steps=8 if analytic else 16,
                        predictor="analytic" if analytic else "first_hitting",
                        no_kv_cache=method.endswith("nokv"), **common)


def cases():
    for device in DEVICES:
        lvl = level(device)
        for preset, length, batch in CASES[lvl]:
            for method in METHODS:
                if (preset, length, batch, method) not in SKIP.get(lvl, ()):
                    yield pytest.param(device, preset, length, batch, method,
                                       id=f"{device}-{preset}-{length}-b{batch}-{method}")


@pytest.mark.parametrize("device,preset,length,batch,method", list(cases()))
def test_generation(benchmark, device, preset, length, batch, method):
    generate(method, preset, 64, batch, device)                    # warm-up, short
    sync(device)
    out = []

    def run():
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=device == "cuda"):
            out.append(generate(method, preset, length, batch, device))
        sync(device)

    benchmark.pedantic(run, rounds=1, iterations=1, warmup_rounds=0)
    x, stats = out[-1]
    assert x.shape == (batch, length) and int(x.max()) < N[preset]    # finished samples
    tokens = batch * length
    record_generation(benchmark, suite="block", device=device,
                      case=f"{preset}, {length} tokens, batch {batch}", impl=method,
                      tokens=tokens, seconds=benchmark.stats.stats.min,
                      calls_per_token=stats.network_calls / length,
                      positions_per_token=stats.positions / tokens)
