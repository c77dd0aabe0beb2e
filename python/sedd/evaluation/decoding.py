"""The decoding settings whose trade (network calls against sample quality) the project measures:
first-hitting and the analytic grid as references, then the fast-decoding predictors of
docs/sampling.md — confidence with a fixed k per call (LLaDA) or a threshold τ (Fast-dLLM), over
the whole window or sub-blocks with and without the dual cache, and ReMDM's remasking schedules
at 1×, 2× and 4× L calls. One list for bench/bench_decoding.py and compare.py.

Each entry: name -> (predictor, steps as a multiple of the length L, sampler options, quick),
where `quick` marks the subset the CI-sized runs keep."""

from __future__ import annotations

DECODING = {
    "first_hitting": ("first_hitting", 1, {}, True),
    "analytic": ("analytic", 1, {}, True),
    "confidence k=1": ("confidence", 1, dict(tokens_per_step=1), True),
    "confidence k=2": ("confidence", 1, dict(tokens_per_step=2), False),
    "confidence k=4": ("confidence", 1, dict(tokens_per_step=4), True),
    "confidence k=8": ("confidence", 1, dict(tokens_per_step=8), False),
    "confidence τ=0.5": ("confidence", 1, dict(threshold=0.5), False),
    "confidence τ=0.7": ("confidence", 1, dict(threshold=0.7), False),
    "confidence τ=0.9": ("confidence", 1, dict(threshold=0.9), False),
    "confidence τ=0.99": ("confidence", 1, dict(threshold=0.99), False),
    "confidence τ=0.1": ("confidence", 1, dict(threshold=0.1), True),
    "confidence τ=0.05": ("confidence", 1, dict(threshold=0.05), False),
    "confidence k=1 greedy": ("confidence", 1, dict(tokens_per_step=1, greedy=True), False),
    "confidence k=1, sub-blocks 16": ("confidence", 1, dict(tokens_per_step=1, block_length=16),
                                      True),
    "confidence k=1, sub-blocks 16, dual cache": ("confidence", 1, dict(
        tokens_per_step=1, block_length=16, kv_cache="dual"), True),
    "confidence τ=0.9, sub-blocks 16": ("confidence", 1, dict(threshold=0.9, block_length=16),
                                        False),
    "confidence τ=0.9, sub-blocks 16, dual cache": ("confidence", 1, dict(
        threshold=0.9, block_length=16, kv_cache="dual"), False),
    "first_hitting, sub-blocks 16, dual cache": ("first_hitting", 1, dict(
        block_length=16, kv_cache="dual"), False),
    **{f"remdm {r} {m}L": ("remdm", m, dict(remask=r), r == "loop" or m == 1)
       for r in ("cap", "rescale", "conf", "loop") for m in (1, 2, 4) if r == "loop" or m < 4},
}


def decoding_settings(quick: bool) -> dict:
    """The settings a run measures: the quick subset, or every one."""
    return {k: v for k, v in DECODING.items() if v[3] or not quick}
