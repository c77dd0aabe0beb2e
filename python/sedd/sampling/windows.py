"""Semi-autoregressive windows (MDLM's stride scheme) and the end-of-sequence cut.

For `length` N above the window W (the model's config.max_length, or window=), the sampler
denoises the window [0, W), slides by `stride` (default W // 2), and denoises [s, s + W) with
every token it has already generated frozen as context (the first W − stride positions), and so
on; the last window ends at N. A given position (prefix, suffix, infill) is frozen in whichever
window it falls. Each window runs the whole predictor. N ≤ W: one window."""

from __future__ import annotations

import torch


def window_starts(length: int, window: int, stride: int) -> list[int]:
    """The first position of each semi-autoregressive window (the last one ends at `length`)."""
    if length <= window:
        return [0]
    starts, lo = [], 0
    while True:
        lo = min(lo, length - window)
        starts.append(lo)
        if lo + window >= length:
            return starts
        lo += stride


def first_eos(x, eos, given, done):
    """Per sequence: the index just after the first generated EOS, or −1 (none)."""
    hit = (x == eos) & done
    if given is not None:
        hit &= ~given
    any_hit = hit.any(1)
    first = hit.int().argmax(1)
    return torch.where(any_hit, first + 1, torch.full_like(first, -1))


def all_ended(x, eos, given, done) -> bool:
    """Every sequence has generated its EOS (semi-autoregressive generation can stop)."""
    return bool((first_eos(x, eos, given, done) > 0).all())


def cut_at_eos(x, eos, given, done):
    """(rows cut after their first generated EOS, lengths, ended flags)."""
    ends = first_eos(x, eos, given, done).tolist()
    rows = [row[:e] if e > 0 else row for row, e in zip(x, ends)]
    return rows, [len(r) for r in rows], [e > 0 for e in ends]
