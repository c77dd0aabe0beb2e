"""The network as the predictors see it (NetworkView), with the exact per-sequence cache.

The exact cache (absorbing graph, time-independent "clean" model, see DDiT.clean_log_probs): such
a network's output depends on x alone, and the log-scores at noise σ are that output plus the
analytic shift −log expm1(σ). The view keeps the last output *per sequence*: a step
re-evaluates only the sequences whose tokens changed since their last evaluation (a sub-batch),
and reuses the held rows of the others (recomputing only the shift). This is exact, not an
approximation — a reused row is the output the network would give for that sequence now — so
the cached sampler is equal in distribution to the uncached one. It is bit-identical when the
network's output for a sequence does not depend on which other sequences share its batch: true
at batch size 1 and at steps where every sequence changed, and on CPU for the DDiT in this
project's tests (checked); a backend that picks its matmul kernel by batch size may round a
sub-batch differently in the last bit, which can change a draw that falls on a boundary (then the
samples differ, still from the same distribution). With the log-linear schedule about B·L/S
tokens are unmasked per grid step, so at S ≫ L most steps change no token of a given sequence:
the sequence evaluations fall to about B·min(L, S) (SampleStats.sequence_evaluations).
First-hitting changes every active sequence at each step: it needs ≤ L evaluations with or
without the cache; the cache skips the sequences that are finished. A σ-conditioned network
("score", the paper's) is never cached."""

from __future__ import annotations

import torch


class NetworkView:
    """The network as the predictors see it: log-scores of x [B, W] at σ [B] — whole
    (`log_score`), in the fused steps' parts (`step_scores`) or as gathered rows (`rows`) —
    through the exact per-sequence cache for a time-independent model, counting the forward
    passes (`calls`), the sequences they ran (`sequences`) and the positions they computed
    (`positions`, summed over those sequences). The one interface a predictor
    uses to call the network."""

    def __init__(self, model, use_cache: bool):
        self.model, self.use_cache = model, use_cache
        self.calls = self.sequences = self.positions = 0
        self.held_x = self.held = None
        self.buffer = None      # step_scores' reused [B, W, V] block

    def _clean(self, x, need=None):
        """The clean log-probs of x [B, W, V]; only the rows of the sequences in `need` [B]
        (default: all) are guaranteed current."""
        B = x.shape[0]
        if self.held is None or self.held_x.shape != x.shape:
            idx = None
        else:
            changed = (self.held_x != x).any(1)
            if need is not None:
                changed &= need
            idx = changed.nonzero().squeeze(1)
            if idx.numel() == 0:
                return self.held
        self.calls += 1
        if idx is None or idx.numel() == B:
            self.sequences += B
            self.positions += B * x.shape[1]
            self.held_x, self.held = x.clone(), self.model.clean_log_probs(x)
        else:
            self.sequences += idx.numel()
            self.positions += idx.numel() * x.shape[1]
            sub = x.index_select(0, idx)
            # a model whose sequences carry state of their own (the block family's committed
            # blocks) is told which sequences these are
            rows = dict(rows=idx) if getattr(self.model, "row_state", False) else {}
            self.held.index_copy_(0, idx, self.model.clean_log_probs(sub, **rows))
            self.held_x.index_copy_(0, idx, sub)
        return self.held

    def log_score(self, x, sigma):
        """[B, W, V] log-scores (a new tensor: the steps and shaping may write into it)."""
        if not self.use_cache:
            self.calls += 1
            self.sequences += x.shape[0]
            self.positions += x.numel()
            return self.model(x, sigma)
        return self.model.log_score_from_clean(self._clean(x), x, sigma)

    def step_scores(self, x, sigma, count=True):
        """(prod, parts) with log-scores = (prod + parts["bias"]) + parts["shift"] and the current
        token's entry ignored — what the fused steps read (model.log_score_parts): the
        [B, W, V] block is written once, by the network's product, and read once, by the step.
        Read-only (it may be the cache's own tensor, or the block the next call writes into)."""
        if not self.use_cache:
            if count:
                self.calls += 1
                self.sequences += x.shape[0]
                self.positions += x.numel()
            # the previous step's block is free again (its step has run): write into it
            reuse = self.buffer if self.buffer is not None and self.buffer.shape[:2] == x.shape \
                else None
            out, bias, shift = self.model.log_score_parts(x, sigma, out=reuse)
            self.buffer = out
            return out, {"bias": bias, "shift": shift}
        return self._clean(x), {"shift": self.model.log_score_offset(sigma.float())}

    def rows(self, x, sigma, pos, need=None):
        """The log-score rows [B, K, V] at positions pos [B, K] (contiguous, writable); with the
        cache, the rows of sequences outside `need` [B] may be stale (the caller ignores them)."""
        if self.use_cache:
            lp = self._clean(x, need)
            lp = lp.gather(1, pos[..., None].expand(-1, -1, lp.shape[-1]))
            return self.model.log_score_from_clean(lp, x.gather(1, pos), sigma)
        ls = self.log_score(x, sigma)
        return ls.gather(1, pos[..., None].expand(-1, -1, ls.shape[-1]))


def model_device(model) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def model_window(model) -> int | None:
    """The longest sequence the model was built for (config.max_length), or None."""
    return getattr(getattr(model, "config", None), "max_length", None)
