"""Fused output projection + next-token cross-entropy: the loss of ``hidden @ weight.T + bias``
against target ids without materialising the [N, V] logits (the autoregressive baseline's loss).

The same chunked machinery as :mod:`sedd_kernels.linear` (``default_chunk``, ``_accumulate``):
a chunk's logits are one matrix product into a [chunk, V] buffer, which is turned in place into
the gradient of the loss with respect to those logits, ``w·(softmax − onehot)``; two more matrix
products give the chunk's ``grad_hidden`` rows and its contribution to ``grad_weight``
(accumulated across chunks in fp32, fp64 for fp64 inputs) and ``grad_bias``. The per-row loss is
``logsumexp(z) − z_target`` computed in fp32 (fp64 for fp64 inputs), whatever the product dtype.

Rows whose target is ``ignore_index`` have loss 0 and no gradient; they are computed with a
weight of 0 rather than gathered out, so no host sync is needed to count them.

Modes: ``reduction="none"`` (per-row loss; the backward recomputes each chunk's logits with the
upstream gradient), ``"sum"`` (Σ token_weight·CE) and ``"mean"`` (mean over the rows that are
not ignored, as ``F.cross_entropy``); the last two compute all gradients in the forward pass and
the backward only scales them.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .linear import _accumulate, check_projection, default_chunk, projection_dtype

_OP = "linear_cross_entropy"


@torch.library.custom_op("sedd::linear_cross_entropy_rows", mutates_args=())
def _rows(hidden: Tensor, weight: Tensor, bias: Optional[Tensor], target: Tensor,
          row_weight: Optional[Tensor], ignore_index: int, chunk: int, compute_grad: bool,
          compute_dtype: Optional[torch.dtype] = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Flat rows: hidden [N, H], weight [V, H], bias [V]?, target [N] int64, row_weight [N]?
    (each row's gradient multiplier; 1 if None). Returns (loss [N], grad_hidden [N, H],
    grad_weight [V, H], grad_bias [V]); the gradients are empty [0] tensors when not
    compute_grad (grad_bias also when bias is None)."""
    N, H = hidden.shape
    V = weight.shape[0]
    cd = compute_dtype or hidden.dtype
    acc = torch.float64 if cd == torch.float64 else torch.float32
    loss = torch.zeros(N, dtype=acc, device=hidden.device)

    def empty():
        return hidden.new_empty(0)

    gh = torch.zeros_like(hidden) if compute_grad else empty()
    gw = torch.zeros(V, H, dtype=acc, device=hidden.device) if compute_grad else empty()
    gb = (torch.zeros(V, dtype=acc, device=hidden.device) if compute_grad and bias is not None
          else empty())
    if chunk <= 0:
        chunk = default_chunk(N, H, V, hidden.element_size(), hidden.device)
    hid_c, w_c = hidden.to(cd), weight.to(cd)
    b_c = bias.to(cd) if bias is not None else None
    wt = w_c.t()
    keep = target != ignore_index
    tgt = torch.where(keep, target, 0)
    with torch.autocast(hidden.device.type, enabled=False):
        for s in range(0, N, chunk):
            e = min(s + chunk, N)
            h = hid_c[s:e]
            logits = torch.addmm(b_c, h, wt) if b_c is not None else h @ wt        # [n, V]
            z = logits if logits.dtype == acc else logits.to(acc)
            lse = torch.logsumexp(z, 1)
            t = tgt[s:e, None]
            k = keep[s:e].to(acc)
            loss[s:e] = (lse - z.gather(1, t).squeeze(1)) * k
            if not compute_grad:
                del logits, z
                continue
            w = k if row_weight is None else k * row_weight[s:e].to(acc)
            g = z.sub_(lse[:, None]).exp_()                      # softmax, in place
            g.scatter_add_(1, t, -torch.ones_like(lse[:, None]))  # − onehot(target)
            g.mul_(w[:, None])
            g = g.to(cd)
            gh[s:e] = g @ w_c
            _accumulate(gw, g.t(), h)
            if bias is not None:
                gb += g.sum(0, dtype=acc)
            del logits, z, g
    if compute_grad:
        gw = gw.to(weight.dtype)
        if bias is not None:
            gb = gb.to(bias.dtype)
    return loss, gh, gw, gb


@_rows.register_fake
def _rows_fake(hidden, weight, bias, target, row_weight, ignore_index, chunk, compute_grad,
               compute_dtype=None):
    N, H = hidden.shape
    V = weight.shape[0]
    acc = torch.float64 if (compute_dtype or hidden.dtype) == torch.float64 else torch.float32
    loss = hidden.new_empty(N, dtype=acc)
    if not compute_grad:
        return loss, *(hidden.new_empty(0) for _ in range(3))
    gb = bias.new_empty(V) if bias is not None else hidden.new_empty(0)
    return loss, hidden.new_empty(N, H), weight.new_empty(V, H), gb


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, target, row_weight, ignore_index, chunk, reduction,
                compute_grad, compute_dtype):
        ctx.reduction, ctx.ignore, ctx.chunk, ctx.cd = reduction, ignore_index, chunk, compute_dtype
        ctx.has_bias = bias is not None
        if reduction == "none":
            loss = _rows(hidden, weight, bias, target, None, ignore_index, chunk, False,
                         compute_dtype)[0]
            ctx.save_for_backward(hidden, weight, bias, target)
            return loss
        loss, gh, gw, gb = _rows(hidden, weight, bias, target, row_weight, ignore_index, chunk,
                                 compute_grad, compute_dtype)
        ctx.save_for_backward(gh, gw, gb)
        return (loss * row_weight).sum() if row_weight is not None else loss.sum()

    @staticmethod
    def backward(ctx, grad):
        if ctx.reduction == "none":
            hidden, weight, bias, target = ctx.saved_tensors
            _, *grads = _rows(hidden, weight, bias, target, grad.contiguous(), ctx.ignore,
                              ctx.chunk, True, ctx.cd)
        else:       # scaled on the device: no host sync to test for an upstream gradient of 1
            grads = tuple(t * grad.to(t.dtype) for t in ctx.saved_tensors)
        gh, gw, gb = grads
        return (gh, gw, gb if ctx.has_bias else None, None, None, None, None, None, None, None)


def linear_cross_entropy(hidden: Tensor, weight: Tensor, bias: Optional[Tensor], target: Tensor,
                         *, reduction: str = "mean", ignore_index: int = -100,
                         token_weight=None, chunk_size: Optional[int] = None,
                         validate: Optional[bool] = None) -> Tensor:
    """Cross-entropy of ``hidden @ weight.T + bias`` against ``target``, fused (no [N, V] logits).

    Args:
        hidden: [..., H] hidden states (fp32, bf16, fp16 or fp64).
        weight: [V, H] output projection; bias: [V] or None.
        target: [...] int64 class ids in [0, V), or ``ignore_index`` (no loss, no gradient).
        reduction: "mean" (over the rows not ignored; F.cross_entropy's), "sum" (Σ token_weight·CE)
            or "none" (per-row loss, shape of target, 0 where ignored).
        token_weight: with reduction="sum", a tensor of target's shape (or broadcastable to it).
        chunk_size: rows per chunk (default: sedd_kernels.linear.default_chunk).
        validate: check that the targets are in range (one host sync on CUDA); default True
            outside torch.compile.

    Under autocast the products run in the autocast dtype (hidden, weight and bias cast once, as
    nn.Linear would be), the loss and the weight gradient accumulate in fp32.
    """
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"{_OP}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if token_weight is not None and reduction != "sum":
        raise ValueError(f"{_OP}: token_weight needs reduction='sum'")
    if not isinstance(hidden, torch.Tensor) or hidden.dim() < 1:
        raise ValueError(f"{_OP}: hidden must be a tensor of shape [..., H]")
    H = hidden.shape[-1]
    lead = tuple(hidden.shape[:-1])
    V = check_projection(_OP, hidden, weight, bias)
    if not isinstance(target, torch.Tensor) or target.dtype != torch.long or \
            tuple(target.shape) != lead:
        raise ValueError(f"{_OP}: target must be an int64 tensor of shape {list(lead)} (hidden's "
                         f"without H), got {getattr(target, 'dtype', type(target))} "
                         f"{list(getattr(target, 'shape', []))}")
    if target.device != hidden.device:
        raise ValueError(f"{_OP}: target must be on the same device as hidden ({hidden.device}), "
                         f"got {target.device}")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"{_OP}: chunk_size must be >= 1, got {chunk_size}")
    if validate is None:
        validate = not torch.compiler.is_compiling()
    if validate and target.numel():
        bad = (target != ignore_index) & ((target < 0) | (target >= V))
        if bool(bad.any()):
            v = int(target[bad][0])
            raise ValueError(f"{_OP}: target must hold class ids in [0, V) = [0, {V}) or "
                             f"ignore_index = {ignore_index}, got {v}")
    compute_dtype = projection_dtype(_OP, hidden, weight, bias)
    N = target.numel()
    acc = torch.float64 if (compute_dtype or hidden.dtype) == torch.float64 else torch.float32
    flat_t = target.reshape(N)
    rw = None
    if reduction == "mean":      # 1 / (rows not ignored), kept on the device
        count = (flat_t != ignore_index).sum().clamp_min(1).to(acc)
        rw = (1.0 / count).expand(N)
    elif token_weight is not None:
        if not isinstance(token_weight, torch.Tensor):
            token_weight = torch.tensor(float(token_weight), dtype=acc, device=hidden.device)
        if token_weight.device != hidden.device:
            raise ValueError(f"{_OP}: token_weight must be on the same device as hidden "
                             f"({hidden.device}), got {token_weight.device}")
        try:
            rw = token_weight.to(acc).expand(lead).reshape(N)
        except RuntimeError:
            raise ValueError(f"{_OP}: token_weight must broadcast to target's shape {list(lead)},"
                             f" got {list(token_weight.shape)}") from None
    needs = [t is not None and t.requires_grad for t in (hidden, weight, bias)]
    compute_grad = torch.is_grad_enabled() and any(needs)
    out = _LinearCrossEntropy.apply(hidden.reshape(N, H), weight, bias, flat_t, rw, int(ignore_index),
                                    int(chunk_size or 0), reduction, compute_grad, compute_dtype)
    return out.view(lead) if reduction == "none" else out
