"""The end-of-training report: a few samples and, on the built-in corpus, the model's likelihood
figure (its family's: a bound or an exact NLL) against the exact NLL and entropy rate of the true
language."""

from __future__ import annotations

import math

import numpy as np
import torch


def final_report(trainer, num_samples=4, bound_sequences=128, timesteps=32, seed=0, model=None):
    """model: the network to report on (default the trainer's EMA copy)."""
    model = model or trainer.ema_model
    x, texts = trainer.samples(num_samples, model=model)
    print("\nsamples:")
    for t in texts:
        print("  " + t)
    lang = trainer.corpus.language
    if lang is None:
        return
    L = trainer.cfg.seq_len
    nll_samples = -lang.log_likelihood(x.cpu().numpy()) / L
    valid = np.isfinite(nll_samples)
    data = trainer.corpus.valid
    x0 = torch.stack([data[i] for i in range(min(bound_sequences, len(data)))]).to(trainer.device)
    bound, prior, _ = trainer.family.nll(model, x0,
                                         torch.Generator().manual_seed(seed), timesteps)
    exact = -lang.log_likelihood(x0.cpu().numpy())
    per_tok = bound.mean().item() / L
    # the spread of the per-sequence estimates already holds their timestep noise
    stderr = bound.std().item() / math.sqrt(len(bound)) / L
    if trainer.family.exact_likelihood:
        print(f"\nheld-out NLL under the model (exact, {trainer.family.title}): {per_tok:.4f} ± "
              f"{stderr:.4f} nats/token")
    else:
        print(f"\nheld-out likelihood bound: {per_tok:.4f} ± {stderr:.4f} nats/token "
              f"(prior term {prior.mean().item() / L:.4f}; {timesteps} stratified timesteps)")
    print(f"NLL of the same sequences under the true language: {exact.mean() / L:.4f} nats/token "
          f"(the language's entropy rate at L = {L}: {lang.entropy_rate(L)[0]:.4f})")
    print(f"gap: {per_tok - exact.mean() / L:.4f} nats/token")
    print(f"samples with positive probability under the true language: {valid.sum()}/"
          f"{len(valid)}" + (f"; their exact NLL: {nll_samples[valid].mean():.3f} nats/token"
                             if valid.any() else ""))
