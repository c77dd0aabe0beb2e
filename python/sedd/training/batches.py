"""The data order of a run: a permutation per epoch, deterministic in the seed, so that the data
position is the step count (exact resume, disjoint ranks); batches checked on the host, so the
loss kernels need not read them back from the device."""

from __future__ import annotations

import torch


def step_seed(seed: int, *parts: int) -> int:
    """A seed for one purpose of one step (dropout, noise levels, samples, ...)."""
    h = seed & 0xFFFFFFFF
    for p in parts:
        h = (h * 1_000_003 + p + 0x9E3779B9) & 0x7FFFFFFFFFFF
    return h


class Batches:
    def __init__(self, corpus, cfg, world: int = 1, rank: int = 0):
        self.corpus, self.cfg, self.world, self.rank = corpus, cfg, world, rank
        self._perm_cache = None

    def __call__(self, step: int, micro: int) -> torch.Tensor:
        """The rank's micro-batch [batch_size, seq_len] of a step (on the CPU)."""
        cfg, data = self.cfg, self.corpus.train
        start = (step * cfg.accum + micro) * cfg.batch_size * self.world + self.rank * cfg.batch_size
        N = len(data)
        idx = []
        for g in range(start, start + cfg.batch_size):
            epoch, pos = divmod(g, N)
            idx.append(int(self._perm(epoch, N)[pos]))
        x0 = torch.stack([data[i] for i in idx])
        n = self.corpus.tokenizer.n
        if x0.numel() and (int(x0.min()) < 0 or int(x0.max()) >= n):
            raise ValueError(f"training data: token ids must be in [0, {n}), got "
                             f"[{int(x0.min())}, {int(x0.max())}] in the batch of step {step}")
        return x0

    def _perm(self, epoch, N):
        if self._perm_cache is None or self._perm_cache[0] != epoch:
            g = torch.Generator().manual_seed(step_seed(self.cfg.seed, 7, epoch))
            self._perm_cache = (epoch, torch.randperm(N, generator=g))
        return self._perm_cache[1]

    def held_out(self):
        """The held-out batches of the eval loss (the first eval_batches of the valid split)."""
        cfg, data = self.cfg, self.corpus.valid
        for b in range(cfg.eval_batches):
            lo = b * cfg.batch_size
            if lo >= len(data):
                return
            yield torch.stack([data[i] for i in range(lo, min(lo + cfg.batch_size, len(data)))])
