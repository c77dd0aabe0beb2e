"""Sub-blocks of a window and Fast-dLLM's dual cache, for full-window (bidirectional) models.

`block_length` K: a window is denoised one sub-block of K positions at a time, left to right
(Fast-dLLM / LLaDA's semi-autoregressive blocks inside one window): the predictor runs on the
sub-block with everything outside it frozen (the prefix clean, the suffix still masked), with
⌈steps·K/W⌉ of the window's steps.

`kv_cache="dual"`: while a sub-block [lo, hi) is denoised, the network is seen through
`DualCache`. A full pass over the window keeps each layer's keys and values of the positions
outside the sub-block (prefix *and* suffix: "dual"); the other calls run the sub-block's K
positions alone through the trunk, attending to those kept keys and values and to the
sub-block's own fresh ones. A call then costs K positions instead of W. It is approximate: the
kept keys and values were computed with the sub-block's tokens (and, for a σ-conditioned model
such as the paper's, at the noise level) of the last full pass, while a bidirectional model's
outside positions depend on both. `refresh` P: a full pass every P calls (default: the first
call of each sub-block only, as Fast-dLLM does); P = 1 is a full pass at every call, the exact
log-scores. Right after a full pass, on the same x and σ, the partial pass gives the full pass's
values (the kept keys and values are exactly those a full pass computes: tested), so the error
is only what changed since. The time-independent ("clean") parametrisation, whose network does
not read σ, has only the first kind of staleness; a σ-conditioned model has both (more
approximate)."""

from __future__ import annotations

import torch


class DualCache:
    """A full-window DDiT as the sampler sees it while the sub-block [lo, hi) is denoised (the
    NetworkView's model for that sub-block): log_score_parts (rows= within the sub-block),
    forward, and `call_positions` (the positions the next call computes). Rows outside the
    sub-block are not computed (they are frozen: no step reads them)."""

    projects_rows = True

    def __init__(self, model, lo: int, hi: int, use_kv: bool = True, refresh: int | None = None):
        self.model, self.lo, self.hi = model, lo, hi
        self.use_kv, self.refresh = use_kv, refresh
        self.config, self.time_independent = model.config, model.time_independent
        self.kept = None                 # per layer (k, v) of the positions outside [lo, hi)
        self.calls = 0

    def log_score_offset(self, sigma):
        return self.model.log_score_offset(sigma)

    def _full_next(self) -> bool:
        return (not self.use_kv or self.kept is None
                or (self.refresh is not None and self.calls % self.refresh == 0))

    def call_positions(self, x) -> int:
        return x.numel() if self._full_next() else x.shape[0] * (self.hi - self.lo)

    def _outside(self, t):
        return torch.cat([t[:, :, :self.lo], t[:, :, self.hi:]], 2)

    def hidden(self, x, sigma):
        """What the projection reads at the sub-block's positions, [B, K, H]."""
        m, lo, hi = self.model, self.lo, self.hi
        full = self._full_next()
        self.calls += 1
        if full:
            kept = []

            def keep(k, v):
                kept.append((self._outside(k), self._outside(v)))
                return k, v

            h, c = m.trunk(x, sigma, kv=[keep] * len(m.blocks))
            self.kept = kept if self.use_kv else None
            h = h[:, lo:hi]
        else:
            splice = [lambda k, v, ko=ko, vo=vo: (torch.cat([ko, k], 2), torch.cat([vo, v], 2))
                      for ko, vo in self.kept]
            h, c = m.trunk(x[:, lo:hi], sigma, kv=splice, start=lo)
        return m.output_layer.modulated(h, c)

    def log_score_parts(self, x, sigma, out=None, rows=None):
        """DDiT.log_score_parts over the sub-block: prod [B, W, V] with the sub-block's rows (the
        others zero), or [R, V] for flat positions `rows` inside the sub-block."""
        B, W = x.shape
        K = self.hi - self.lo
        offset = self.model.log_score_offset(sigma.float())
        hidden = self.hidden(x, sigma)
        if rows is not None:
            i = rows % W
            if bool(((i < self.lo) | (i >= self.hi)).any()):
                raise ValueError("the dual cache computes the rows of its sub-block only")
            local = torch.div(rows, W, rounding_mode="floor") * K + (i - self.lo)
            return self.model.project(hidden.reshape(-1, hidden.shape[-1]).index_select(0, local),
                                      out) + (offset,)
        prod, bias = self.model.project(hidden)
        whole = prod.new_zeros(B, W, prod.shape[-1])
        whole[:, self.lo:self.hi] = prod
        return whole, bias, offset

    def __call__(self, x, sigma):
        """Log-scores [B, W, V] (DDiT.forward's form) at the sub-block's rows."""
        prod, bias, offset = self.log_score_parts(x, sigma)
        out = prod.float()
        if bias is not None:
            out = out + bias
        if offset is not None:
            out = out + offset[:, None, None]
        return torch.scatter(out, -1, x[..., None], torch.zeros_like(out[..., :1]))


def check(model, kv_cache, block_length, refresh):
    """The sub-block and dual-cache settings' errors, one line each (Settings.check calls it)."""
    if kv_cache not in (None, "none", "dual"):
        raise ValueError(f"kv_cache must be 'dual' or 'none', got {kv_cache!r}")
    if block_length is not None and block_length < 1:
        raise ValueError(f"block_length must be >= 1, got {block_length}")
    if refresh is not None and refresh < 1:
        raise ValueError(f"refresh must be >= 1, got {refresh}")
    if refresh is not None and kv_cache != "dual":
        raise ValueError("refresh applies to kv_cache='dual' (--kv-cache dual)")
    if kv_cache == "dual" and not all(hasattr(model, a) for a in
                                      ("trunk", "blocks", "output_layer", "project")):
        raise ValueError("kv_cache='dual' (--kv-cache dual) needs a full-window DDiT "
                         f"(got {type(model).__name__})")
