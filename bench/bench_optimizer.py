"""The optimizer phase of a training step — gradient clipping and the AdamW update (plus the EMA
update the trainer does after it) — with torch's per-parameter loop (what the trainer used:
AdamW's default on the CPU, clip_grad_norm_ without foreach) against the fused AdamW and foreach
clipping of sedd.training.adamw / Trainer.clip, same run, on the tiny DDiT (H 128, V 382) and a
GPT-2-vocabulary one (H 256, 4 blocks, V 50258). Throughput is the tokens of the step the phase
belongs to (tiny: 32 × 64; V 50258: 4 × 128) over the phase's time, so the ratio is the phase's
speed-up; the summary table prints it."""

import pytest
import torch

from sedd.nn import DDiT, ModelConfig
from sedd.training import adamw

from harness import DEVICES, record_throughput, sync

MODELS = {"tiny": (dict(vocab_size=382, hidden_size=128, n_blocks=4, n_heads=4, cond_dim=64), 32 * 64),
          "V 50258": (dict(vocab_size=50258, hidden_size=256, n_blocks=4, n_heads=4, cond_dim=128),
                      4 * 128)}


@pytest.mark.parametrize("impl", ["loop", "fused"])
@pytest.mark.parametrize("model_name", list(MODELS))
@pytest.mark.parametrize("device", DEVICES)
def test_optimizer_phase(benchmark, device, model_name, impl):
    cfg, tokens = MODELS[model_name]
    model = DDiT(ModelConfig(**cfg, dropout=0.0)).to(device)
    ema = [p.detach().clone() for p in model.parameters()]
    params = list(model.parameters())
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    if impl == "loop":
        opt = torch.optim.AdamW(params, lr=1e-4, foreach=False, weight_decay=0.0)
    else:
        opt = adamw(params, 1e-4)

    def phase():
        torch.nn.utils.clip_grad_norm_(params, 1.0, foreach=impl == "fused")
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, [p.detach() for p in params], 0.01)
        sync(device)

    phase()
    benchmark.pedantic(phase, rounds=10, iterations=1, warmup_rounds=1)
    record_throughput(benchmark, suite="optimizer", device=device,
                      case=f"{model_name} ({sum(p.numel() for p in params) / 1e6:.1f}M params)",
                      impl=impl, tokens=tokens, seconds=benchmark.stats.stats.median,
                      baseline="loop")
