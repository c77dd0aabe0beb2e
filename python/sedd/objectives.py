"""What a model family trains on, samples and is measured by — the trainer's one seam between
SEDD and the autoregressive baseline.

An objective knows four things about its models: the training loss of a batch (one scalar the
trainer differentiates), the held-out loss it logs, how it samples, and its per-sequence negative
log-likelihood figure on held-out data — SEDD's likelihood bound (an upper bound, estimated with
stratified noise levels) or the AR model's exact NLL. Adding a family (say, MDLM's masked
objective) means one class here and one network in sedd/."""

from __future__ import annotations

import torch

from .losses import batch_loss, likelihood_bound


class SEDDObjective:
    """Score entropy over a graph and noise schedule (SEDD.md §3–4)."""

    exact_likelihood = False
    family = "sedd"

    def __init__(self, graph, noise, *, use_reference: bool = False, fused_linear: bool = True):
        self.graph, self.noise = graph, noise
        self.use_reference, self.fused_linear = use_reference, fused_linear

    def describe(self) -> str:
        return f"graph {self.graph.name}, noise {self.noise.name}"

    def loss(self, model, x0, generator, scale: float = 1.0):
        """The trainer's loss: its batches are checked on the host (Trainer.batch), so the kernels'
        device-side value checks are off (no host syncs on CUDA)."""
        return batch_loss(model, x0, self.graph, self.noise, generator,
                          use_reference=self.use_reference, fused_linear=self.fused_linear,
                          scale=scale, validate=False)

    def eval_loss(self, model, x0, generator) -> torch.Tensor:
        return batch_loss(model, x0, self.graph, self.noise, generator,
                          fused_linear=self.fused_linear)

    def sample(self, model, num, length, steps, generator, device):
        from .sampling import sample
        return sample(model, self.graph, self.noise, num, length, steps, generator=generator,
                      device=device)

    def nll(self, model, x0, generator, timesteps: int = 32):
        """(per-sequence bound [N] nats, prior term [N])."""
        bound, prior, _ = likelihood_bound(model, x0, self.graph, self.noise, timesteps, generator)
        return bound, prior


class ARObjective:
    """Next-token cross-entropy (the autoregressive baseline, sedd.ar)."""

    exact_likelihood = True
    family = "ar"
    graph = noise = None

    def describe(self) -> str:
        return "autoregressive (causal attention, next-token cross-entropy)"

    def loss(self, model, x0, generator, scale: float = 1.0):
        """scale · mean over the batch of Σ_i −log p(x_i | x_<i): per sequence, the same scale as
        SEDD's loss (nats per sequence), so learning rate and clipping mean the same."""
        return model(x0, loss="sum", token_weight=scale / x0.shape[0])

    def eval_loss(self, model, x0, generator) -> torch.Tensor:
        return model(x0, loss="sum") / x0.shape[0]

    def sample(self, model, num, length, steps, generator, device):
        from .ar import ar_sample
        return ar_sample(getattr(model, "module", model), num, length, generator=generator,
                         device=device)

    def nll(self, model, x0, generator=None, timesteps: int = 0):
        """(exact per-sequence NLL [N] nats, zeros: no prior term)."""
        nll = getattr(model, "module", model).nll(x0)
        return nll, torch.zeros_like(nll)


def objective_for(model, graph, noise, **kw):
    """The objective of a network (AR models ignore graph and noise)."""
    from .model import is_autoregressive
    return ARObjective() if is_autoregressive(model) else SEDDObjective(graph, noise, **kw)
