"""One reverse step of a window through the network view (`Mover`): the unit every grid
predictor, confidence and ReMDM step on, and the one place that decides which rows of the output
projection a step needs (docs/math.md §6)."""

from __future__ import annotations

import torch


def as_float(v) -> float:
    return float(v.item() if isinstance(v, torch.Tensor) else v)


def per_sequence(v, B, device):
    """A float or a [B] tensor as [B] float32 on `device`."""
    if isinstance(v, torch.Tensor) and v.dim() == 1:
        return v.to(device=device, dtype=torch.float32)
    return torch.full((B,), as_float(v), device=device)


def folds(model, graph, settings, step=None) -> bool:
    """Whether the steps read the network's bare product (model.log_score_parts): the fused
    steps add the projection's bias and the network's σ offset and ignore the current token's
    entry themselves, unless something must first rewrite the log-scores (temperature / top-p)
    or the steps are the dense reference ops. `step`: a predictor's own step function (None: a
    graph kernel), which must say it takes those parts."""
    return (settings.shaping.identity and not settings.use_reference and graph.fused
            and hasattr(model, "log_score_parts")
            and (step is None or getattr(step, "takes_parts", False)))


class Mover:
    """One reverse step of a window, x [B, W] → x: the network at noise σ (per sequence), then
    the step kernel with δσ. It computes what the step reads and nothing more: on a graph whose
    steps move only some positions (graph.movable: the absorbing graph's masked ones) and a
    model that can project chosen rows (DDiT, uncached), the output projection runs for those
    rows alone and lands in the [B, W, V] block the kernels read, at the same places (so each
    row draws the same randomness as with every row computed); with temperature / top-p the
    same rows are shaped. On CPU only: on CUDA it would cost a host sync per step (untried on a
    GPU). settings.all_rows (NetworkView.all_rows) computes every row, as a captured step does."""

    def __init__(self, net, graph, frozen, settings, step=None):
        self.step, self.net, self.graph, self.frozen, self.s = step, net, graph, frozen, settings
        self.fold = folds(net.model, graph, settings, step)
        self.last = None        # the log-scores and parts the last step read
        # on CUDA the number of rows would be a host sync per step (the grid loop has none, and
        # a captured step needs fixed shapes): there every row is projected
        self.rowwise = (not settings.use_reference and not settings.cuda_graph
                        and settings.device.type == "cpu" and net.projects_rows()
                        and graph.moves_some)

    def movable(self, x):
        """Flat positions [R] (b·W + i) a step can change."""
        m = self.graph.movable(x)
        if self.frozen is not None:
            m = m & ~self.frozen
        return m.reshape(-1).nonzero().squeeze(1)

    def scores(self, x, sigma):
        """(log-scores [B, W, V], the steps' parts) at σ [B]."""
        net, s = self.net, self.s
        if self.rowwise:
            idx = self.movable(x)
            if self.fold:
                log_score, parts = net.step_scores(x, sigma, rows=idx)
                return log_score, dict(parts, validate=False)
            rows = net.flat_rows(x, sigma, idx) if idx.numel() else None
            if rows is not None:
                s.shaping.rows(rows[:, None], x.reshape(-1).index_select(0, idx)[:, None])
            return net.block(x, rows, idx), {}
        if self.fold:
            log_score, parts = net.step_scores(x, sigma)
            return log_score, dict(parts, validate=False)
        return s.shaping.scores(net.log_score(x, sigma), x, self.graph), {}

    def __call__(self, x, sigma, dsigma, kind=None):
        """x after one step at σ (a float or [B]) with δσ (a float or [B]); `kind` a graph
        kernel ("analytic", "denoise", ...) instead of the predictor's step."""
        B, dev = x.shape[0], x.device
        sigma, dsigma = per_sequence(sigma, B, dev), per_sequence(dsigma, B, dev)
        log_score, parts = self.last = self.scores(x, sigma)
        if kind is not None:
            return self.graph.step(kind, log_score, x, dsigma, self.s.generator, self.frozen,
                                   use_reference=self.s.use_reference, **parts)
        return self.step(self.graph, log_score, x, dsigma, self.s.generator, self.frozen,
                         self.s.use_reference, **parts)

