"""The presets, in one place: model sizes and training schedules by name. tiny trains on 2 CPU
cores in minutes on the built-in language; small and medium are the paper's sizes and schedule.
TrainConfig (sedd.config) takes a preset's values for every field not given."""

MODEL_FIELDS = ("hidden_size", "n_blocks", "n_heads", "cond_dim", "dropout")

_PAPER = dict(steps=400_000, batch_size=512, seq_len=1024, lr=3e-4, warmup=2500, ema=0.9999,
              eval_every=5000, save_every=10_000, sample_every=10_000, sample_steps=256,
              data="openwebtext", tokenizer="gpt2")

PRESETS = {
    "tiny": dict(hidden_size=128, n_blocks=4, n_heads=4, cond_dim=64, dropout=0.0,
                 steps=2400, batch_size=32, seq_len=64, lr=2e-3, warmup=100, ema=0.99,
                 eval_every=200, save_every=800, sample_every=800, sample_steps=64,
                 data="builtin", tokenizer="gpt2"),
    "small": dict(hidden_size=768, n_blocks=12, n_heads=12, cond_dim=128, dropout=0.1, **_PAPER),
    "medium": dict(hidden_size=1024, n_blocks=24, n_heads=16, cond_dim=128, dropout=0.1, **_PAPER),
}


def model_preset(name: str) -> dict:
    """The ModelConfig fields of a preset."""
    return {k: PRESETS[name][k] for k in MODEL_FIELDS}
