"""sedd.sampling.shaping: temperature and top-p rewrite a step's log-scores so that the targets
follow the shaped distribution while their total mass stays (the samplers' one rule; its effect
on whole samples is measured in test_long_generation.py against the exact language)."""

import math

import torch

from sedd.sampling.shaping import shape_rows


def test_shape_rows_math():
    """Mass-preserving (logsumexp over y ≠ x unchanged), the current token's ℓ untouched,
    −inf stays −inf, T = 1 / p = 1 is the identity, top-p keeps the smallest set reaching p
    (including the token that crosses it), temperature is q ∝ p^{1/T}."""
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(50, 30, generator=g, dtype=torch.float64) * 2
    rows[:, 7] = -math.inf
    cur = torch.randint(0, 30, (50,), generator=g)
    rows.scatter_(1, cur[:, None], 0.0)

    def others(r):
        return r.scatter(1, cur[:, None], -math.inf)

    same = shape_rows(rows.clone(), cur, 1.0, 1.0)
    torch.testing.assert_close(same, rows, rtol=0, atol=1e-12)
    for T, p in ((0.5, 1.0), (2.0, 1.0), (1.0, 0.6), (0.8, 0.3)):
        out = shape_rows(rows.clone(), cur, T, p)
        torch.testing.assert_close(torch.logsumexp(others(out), 1), torch.logsumexp(others(rows), 1))
        assert (out.gather(1, cur[:, None]) == 0).all()
        assert torch.isinf(out[:, 7][cur != 7]).all()
        q = torch.softmax(others(rows) / T, 1)
        kept = torch.isfinite(others(out))
        for b in range(50):
            order = torch.argsort(q[b], descending=True)
            need = int((torch.cumsum(q[b][order], 0) < p).sum()) + 1   # the smallest set ≥ p
            need = min(need, int((q[b] > 0).sum()))                      # (p = 1: the support)
            assert set(order[:need].tolist()) == set(kept[b].nonzero().flatten().tolist())
        want = torch.where(kept, q, 0.0)
        torch.testing.assert_close(torch.softmax(others(out), 1), want / want.sum(1, keepdim=True))
    # float32 rows, shaped in float64 chunks and written back
    r32 = rows.float()
    shape_rows(r32, cur, 0.5, 0.9)
    assert r32.dtype == torch.float32 and torch.isfinite(r32.gather(1, cur[:, None])).all()
