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

import contextlib

import torch


class NetworkView:
    """The network as the predictors see it: log-scores of x [B, W] at σ [B] — whole
    (`log_score`), in the fused steps' parts (`step_scores`) or as gathered rows (`rows`) —
    through the exact per-sequence cache for a time-independent model, counting the forward
    passes (`calls`), the sequences they ran (`sequences`) and the positions they computed
    (`positions`, summed over those sequences). The one interface a predictor
    uses to call the network."""

    def __init__(self, model, use_cache: bool, all_rows: bool = False):
        self.model, self.use_cache, self.all_rows = model, use_cache, all_rows
        self.calls = self.sequences = self.positions = 0
        self.held_x = self.held = None
        self.buffer = None      # step_scores' reused [B, W, V] block
        self.scratch = None     # where step_scores(rows=) has the projection write its rows

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
            self._count(x)
            return self.model(x, sigma)
        return self.model.log_score_from_clean(self._clean(x), x, sigma)

    def projects_rows(self) -> bool:
        """Whether `step_scores(rows=)` and `flat_rows` project the chosen rows alone (a model
        with log_score_parts(rows=), uncached, not all_rows); otherwise they compute every row
        and pick."""
        return (not self.use_cache and not self.all_rows
                and getattr(self.model, "projects_rows", False))

    def _count(self, x):
        self.calls += 1
        self.sequences += x.shape[0]
        part = getattr(self.model, "call_positions", None)      # a model that computes fewer
        self.positions += part(x) if part is not None else x.numel()

    @contextlib.contextmanager
    def using(self, model):
        """Call `model` instead for a while (the dual cache of one sub-block), counting on."""
        saved, self.model, self.buffer = self.model, model, None
        try:
            yield self
        finally:
            self.model, self.buffer = saved, None

    def step_scores(self, x, sigma, count=True, rows=None):
        """(prod, parts) with log-scores = (prod + parts["bias"]) + parts["shift"] and the current
        token's entry ignored — what the fused steps read (model.log_score_parts): the
        [B, W, V] block is written once, by the network's product, and read once, by the step.
        Read-only (it may be the cache's own tensor, or the block the next call writes into).
        rows: flat positions [R] (b·W + i) of the only rows the step will read (the absorbing
        graph's movable ones): when `projects_rows()`, the projection is computed for those rows
        alone and written at their places in the reused [B, W, V] block, whose other rows keep
        stale values the step does not read (no call at all when R = 0)."""
        if rows is not None and self.projects_rows():
            if rows.numel() == 0:
                return self.block(x), {"bias": None, "shift": None}
            self._count(x)
            # the product lands in a reused flat scratch (no fresh pages per step), then at its
            # rows' places in the block
            V = self.model.config.vocab_size
            n = (x.numel() + 15) // 16 * 16 * V               # rows padded to a multiple of 16
            if self.scratch is None or self.scratch.numel() < n:
                self.scratch = torch.empty(n, device=x.device)
            prod, bias, shift = self.model.log_score_parts(x, sigma, rows=rows, out=self.scratch)
            return self.block(x, prod, rows), {"bias": bias, "shift": shift}
        if not self.use_cache:
            if count:
                self._count(x)
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
        B, W = x.shape
        if self.use_cache:
            lp = self._clean(x, need)
            lp = lp.gather(1, pos[..., None].expand(-1, -1, lp.shape[-1]))
            return self.model.log_score_from_clean(lp, x.gather(1, pos), sigma)
        flat = (pos + W * torch.arange(B, device=x.device)[:, None]).reshape(-1)
        return self.flat_rows(x, sigma, flat).view(B, pos.shape[1], -1)

    def block(self, x, values=None, rows=None):
        """The reused [B, W, V] block (zeros when new), with `values` [R, V] written at the flat
        positions `rows` [R]: how rows computed alone reach the steps, which read a [B, W, V]
        layout (and draw each row's randomness by its place in it)."""
        V = values.shape[-1] if values is not None else self.model.config.vocab_size
        dtype = values.dtype if values is not None else torch.float32
        shape = (*x.shape, V)
        if self.buffer is None or self.buffer.shape != shape or self.buffer.dtype != dtype:
            self.buffer = torch.zeros(shape, dtype=dtype, device=x.device)
        if values is not None:
            self.buffer.view(-1, V).index_copy_(0, rows, values)
        return self.buffer

    def flat_rows(self, x, sigma, idx, need=None):
        """The log-score rows [R, V] (float32, contiguous, writable, the current token's entry 0)
        at flat positions idx [R] of x [B, W] (b·W + i): projected for those rows alone when the
        model can (`projects_rows`), else picked from the whole output (through the cache for a
        clean model: rows of sequences outside `need` [B] may then be stale)."""
        cur = x.reshape(-1).index_select(0, idx)
        if self.use_cache:
            lp = self._clean(x, need)
            lp = lp.reshape(-1, lp.shape[-1]).index_select(0, idx)
            seq = torch.div(idx, x.shape[1], rounding_mode="floor")
            return self.model.log_score_from_clean(lp[:, None], cur[:, None],
                                                   sigma.index_select(0, seq))[:, 0]
        if not self.projects_rows():
            ls = self.log_score(x, sigma)
            return ls.reshape(-1, ls.shape[-1]).index_select(0, idx)
        self._count(x)
        prod, bias, shift = self.model.log_score_parts(x, sigma, rows=idx)
        # a fresh product (no out=: nothing else holds it), on the CPU a transposed view
        out = prod.float().contiguous()
        if bias is not None:
            out += bias
        if shift is not None:
            seq = torch.div(idx, x.shape[1], rounding_mode="floor")
            out += shift.index_select(0, seq)[:, None]
        return out.scatter_(-1, cur[:, None], 0.0)


def model_device(model) -> torch.device:
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def model_window(model) -> int | None:
    """The longest sequence the model was built for (config.max_length), or None."""
    return getattr(getattr(model, "config", None), "max_length", None)
