"""Fused output projection + score entropy: the loss of ``hidden @ weight.T + bias + offset``
without materialising the [B·L, V] log-scores.

Rows are processed in chunks: a chunk's log-scores are one matrix product (ATen/cuBLAS) into a
[chunk, V] buffer; ``torch.ops.sedd.score_entropy_with_grad_`` (the score-entropy kernel of
csrc/score_entropy, docs/math.md §3) turns that buffer into the chunk's per-row loss and, in place,
the gradient of the loss with respect to the chunk's log-scores; two more matrix products give the
chunk's ``grad_hidden`` rows and its contribution to ``grad_weight`` (accumulated across chunks in
fp32, fp64 for fp64 inputs) and ``grad_bias``. For the absorbing graph only masked rows have a
loss: the others are skipped entirely (gathered out before the products), so the work shrinks in
proportion to the unmasked fraction.

Two modes:

* ``reduction="none"`` returns the per-token loss [B, L]; the backward recomputes each chunk's
  log-scores (one more projection) with the actual upstream gradient — exact for any use of the
  per-token losses.
* ``reduction="sum"`` returns ``Σ token_weight·SE`` (a scalar) and computes all gradients during
  the forward, in the same chunk pass (no recomputation); the backward only scales them by the
  scalar upstream gradient. This is what the trainer uses (token_weight = σ̇(t_b) / B).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._args import check_loss_values, graph_name, sigma_vector

_OP = "linear_score_entropy"


def default_chunk(N: int, H: int, V: int, element_size: int, device: torch.device) -> int:
    """Rows per chunk. Each chunk adds its [chunk, H] x [chunk, V] product into the fp32 weight
    gradient, reading and writing all V·H of it: with fewer than ~1000 rows per chunk that
    traffic, not the products, sets the time on a GPU (an H100 does ~200 bf16 flops per byte of
    HBM traffic; a chunk of K rows does 2K flops per 8 bytes of the accumulator). So: 1024 rows on
    CUDA (512 on CPU, where the products are slower and the accumulator's traffic matters less),
    more when the hidden states are larger than such a block (then the [chunk, V] block is as
    large as the hidden states, Liger-Kernel's rule), never more than N, and on CUDA at most an
    eighth of the free memory. At V = 50258 a 1024-row block is 206 MB in fp32, 103 MB in bf16."""
    chunk = max(1024 if device.type == "cuda" else 512, -(-N * H // max(V, 1)))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        chunk = min(chunk, max(1, free // 8 // max(1, V * element_size)))
    return int(max(1, min(chunk, N)))


def check_projection(op: str, hidden: Tensor, weight, bias) -> int:
    """The output projection's arguments of a fused loss (hidden [..., H], weight [V, H], bias
    [V] or None): shapes, floating dtypes, one device; returns V."""
    H = hidden.shape[-1]
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or weight.shape[1] != H:
        raise ValueError(f"{op}: weight must have shape [V, H] with H = {H}, got "
                         f"{list(getattr(weight, 'shape', []))}")
    V = weight.shape[0]
    if bias is not None and (bias.dim() != 1 or bias.shape[0] != V):
        raise ValueError(f"{op}: bias must have shape [V] = [{V}], got {list(bias.shape)}")
    for name, t in (("hidden", hidden), ("weight", weight), ("bias", bias)):
        if t is not None and t.dtype not in (torch.float32, torch.bfloat16, torch.float16,
                                             torch.float64):
            raise TypeError(f"{op}: {name} must be float32, bfloat16, float16 or float64, got "
                            f"{t.dtype}")
        if t is not None and t.device != hidden.device:
            raise ValueError(f"{op}: {name} must be on the same device as hidden "
                             f"({hidden.device}), got {t.device}")
    return V


def projection_dtype(op: str, hidden: Tensor, weight: Tensor, bias) -> Optional[torch.dtype]:
    """The dtype of the chunk products: autocast's (None outside autocast, where hidden, weight
    and bias must share a dtype)."""
    dt = hidden.device.type
    if torch.is_autocast_enabled(dt) and hidden.dtype != torch.float64:
        return torch.get_autocast_dtype(dt)
    if weight.dtype != hidden.dtype or (bias is not None and bias.dtype != hidden.dtype):
        raise TypeError(f"{op}: hidden, weight and bias must share a dtype outside autocast, "
                        f"got {hidden.dtype}, {weight.dtype}, "
                        f"{None if bias is None else bias.dtype}")
    return None


_OUT_DTYPE_MM = {}   # device type -> does torch.addmm(out_dtype=, out=) work there?


def _accumulate(acc: Tensor, a: Tensor, b: Tensor) -> None:
    """acc += a @ b without a [V, H] temporary: in place (beta = 1) when the dtypes agree; for
    bf16/fp16 products, accumulated in fp32 by the product itself where ATen offers it
    (addmm with out_dtype, CUDA), else through one rounded temporary per chunk."""
    if a.dtype == acc.dtype:
        acc.addmm_(a, b)
        return
    dev = acc.device.type
    if _OUT_DTYPE_MM.get(dev, True):
        try:
            torch.addmm(acc, a, b, out_dtype=acc.dtype, out=acc)
            _OUT_DTYPE_MM[dev] = True
            return
        except (RuntimeError, NotImplementedError, TypeError):
            _OUT_DTYPE_MM[dev] = False
    acc += (a @ b).to(acc.dtype)


@torch.library.custom_op("sedd::linear_score_entropy_rows", mutates_args=())
def _rows(hidden: Tensor, weight: Tensor, bias: Optional[Tensor], x_t: Tensor, x_0: Tensor,
          sigma: Tensor, offset: Optional[Tensor], row_weight: Optional[Tensor], graph: str,
          chunk: int, compute_grad: bool,
          compute_dtype: Optional[torch.dtype] = None) -> tuple[Tensor, Tensor, Tensor, Tensor,
                                                                Tensor]:
    """Flat rows: hidden [N, H], weight [V, H], bias [V]?, x_t/x_0 [N] int64, sigma [N] float64,
    offset [N]?, row_weight [N]? (the multiplier of each row's gradient; 1 if None);
    compute_dtype: the dtype of the products (autocast's; default hidden's) — hidden, weight and
    bias are cast to it once, and the gradients come back in their own dtypes, the weight's
    accumulated in fp32 (so an fp32 weight gets the fp32 accumulator itself, no copy).
    Returns (loss [N], grad_hidden [N, H], grad_weight [V, H], grad_bias [V], grad_offset [N]);
    the gradients are empty [0] tensors when not compute_grad (grad_bias also when bias is None)."""
    N, H = hidden.shape
    V = weight.shape[0]
    cd = compute_dtype or hidden.dtype
    acc = torch.float64 if cd == torch.float64 else torch.float32
    loss = torch.zeros(N, dtype=acc, device=hidden.device)
    def empty():  # a distinct tensor per output (outputs may not alias each other)
        return hidden.new_empty(0)

    gh = torch.zeros_like(hidden) if compute_grad else empty()
    gw = torch.zeros(V, H, dtype=acc, device=hidden.device) if compute_grad else empty()
    gb = (torch.zeros(V, dtype=acc, device=hidden.device) if compute_grad and bias is not None
          else empty())
    go = torch.zeros(N, dtype=acc, device=hidden.device) if compute_grad else empty()
    rows = None                                  # None: every row, in order (no gather)
    if graph == "absorb":                        # one host sync on CUDA (the row count)
        rows = torch.nonzero(x_t == V - 1).squeeze(1)
        if rows.numel() == N:
            rows = None
    n_active = N if rows is None else rows.numel()
    if chunk <= 0:
        chunk = default_chunk(n_active, H, V, hidden.element_size(), hidden.device)
    hid_c = hidden.to(cd)          # no copy when the dtypes agree; else one cast, as nn.Linear
    w_c = weight.to(cd)
    b_c = bias.to(cd) if bias is not None else None
    wt = w_c.t()
    block = None                   # one [chunk, V] block for every chunk: allocated (and its
    with torch.autocast(hidden.device.type, enabled=False):     # pages touched) once per call
        for s in range(0, n_active, chunk):
            e = min(s + chunk, n_active)
            n = e - s
            if rows is None:
                pick = lambda t: None if t is None else t[s:e]  # noqa: E731
            else:
                idx = rows[s:e]
                pick = lambda t: None if t is None else t.index_select(0, idx)  # noqa: E731
            h = pick(hid_c)
            if block is None:
                block = hid_c.new_empty(min(chunk, n_active), V)
            logits = block[:n]                                                 # [n, V]
            if b_c is not None:
                torch.addmm(b_c, h, wt, out=logits)
            else:
                torch.mm(h, wt, out=logits)
            off, rw = pick(offset), pick(row_weight)
            part = torch.ops.sedd.score_entropy_with_grad_(
                logits.view(n, 1, V), pick(x_t).view(n, 1), pick(x_0).view(n, 1), pick(sigma),
                graph, None if off is None else off.view(n, 1),
                None if rw is None or not compute_grad else rw.view(n, 1)).view(n)
            if rows is None:
                loss[s:e] = part
            else:
                loss.index_copy_(0, idx, part)
            if not compute_grad:
                continue
            g = logits                                                         # now ∂/∂logits
            if rows is None:
                gh[s:e] = g @ w_c
                go[s:e] = g.sum(1, dtype=acc)
            else:
                gh.index_copy_(0, idx, (g @ w_c).to(gh.dtype))
                go.index_copy_(0, idx, g.sum(1, dtype=acc))
            _accumulate(gw, g.t(), h)
            if bias is not None:
                gb += g.sum(0, dtype=acc)
            del logits, g
    if compute_grad:
        gw = gw.to(weight.dtype)
        if bias is not None:
            gb = gb.to(bias.dtype)
        if offset is not None:
            go = go.to(offset.dtype)
    return loss, gh, gw, gb, go


@_rows.register_fake
def _rows_fake(hidden, weight, bias, x_t, x_0, sigma, offset, row_weight, graph, chunk,
               compute_grad, compute_dtype=None):
    N, H = hidden.shape
    V = weight.shape[0]
    acc = torch.float64 if (compute_dtype or hidden.dtype) == torch.float64 else torch.float32
    loss = hidden.new_empty(N, dtype=acc)
    if not compute_grad:
        return loss, *(hidden.new_empty(0) for _ in range(4))
    gb = bias.new_empty(V) if bias is not None else hidden.new_empty(0)
    go = offset.new_empty(N) if offset is not None else hidden.new_empty(N, dtype=acc)
    return loss, hidden.new_empty(N, H), weight.new_empty(V, H), gb, go


class _LinearScoreEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, x_t, x_0, sigma, offset, token_weight, graph, chunk,
                reduction, compute_grad, compute_dtype):
        ctx.reduction, ctx.graph, ctx.chunk, ctx.cd = reduction, graph, chunk, compute_dtype
        ctx.has_bias, ctx.has_offset = bias is not None, offset is not None
        if reduction == "sum":
            loss, gh, gw, gb, go = _rows(hidden, weight, bias, x_t, x_0, sigma, offset,
                                         token_weight, graph, chunk, compute_grad, compute_dtype)
            ctx.save_for_backward(gh, gw, gb, go)
            return (loss * token_weight).sum() if token_weight is not None else loss.sum()
        loss = _rows(hidden, weight, bias, x_t, x_0, sigma, offset, None, graph, chunk, False,
                     compute_dtype)[0]
        ctx.save_for_backward(hidden, weight, bias, x_t, x_0, sigma, offset)
        return loss

    @staticmethod
    def backward(ctx, grad):
        if ctx.reduction == "sum":
            grads = ctx.saved_tensors
            # The usual upstream gradient is exactly 1 (the trainer folds every factor into
            # token_weight): then the stored gradients are returned as they are, with no second
            # [V, H] buffer. Finding out reads the value: done on the CPU only; on CUDA (no host
            # sync) and when compiling the gradients are always scaled.
            if (grad.device.type != "cpu" or torch.compiler.is_compiling() or grad.numel() != 1
                    or not bool(grad == 1)):
                grads = tuple(t * grad.to(t.dtype) for t in grads)
        else:
            hidden, weight, bias, x_t, x_0, sigma, offset = ctx.saved_tensors
            _, *grads = _rows(hidden, weight, bias, x_t, x_0, sigma, offset, grad.contiguous(),
                              ctx.graph, ctx.chunk, True, ctx.cd)
        gh, gw, gb, go = grads
        return (gh, gw, gb if ctx.has_bias else None, None, None, None,
                go if ctx.has_offset else None, None, None, None, None, None, None)


def _per_row(t, B, L, name, device, dtype=None):
    """A [B], [B, 1] or [B, L] tensor (or number) as [B·L] rows."""
    if not isinstance(t, torch.Tensor):
        t = torch.tensor(float(t), dtype=dtype or torch.float64, device=device)
    if t.device != device:
        raise ValueError(f"{_OP}: {name} must be on the same device as hidden ({device}), got "
                         f"{t.device}")
    if not t.is_floating_point():
        raise TypeError(f"{_OP}: {name} must be a floating-point tensor, got {t.dtype}")
    if t.dim() == 0:
        t = t.expand(B, L)
    elif t.dim() == 1 and t.shape[0] == B:
        t = t[:, None].expand(B, L)
    elif t.dim() == 2 and t.shape[0] == B and t.shape[1] in (1, L):
        t = t.expand(B, L)
    else:
        raise ValueError(f"{_OP}: {name} must have shape [B], [B, 1] or [B, L] with B = {B}, "
                         f"L = {L}, got {list(t.shape)}")
    return t.reshape(B * L) if dtype is None else t.reshape(B * L).to(dtype)


def linear_score_entropy(hidden: Tensor, weight: Tensor, bias: Optional[Tensor], x_t: Tensor,
                         x_0: Tensor, sigma, graph, logit_offset=None, *,
                         reduction: str = "none", token_weight=None,
                         chunk_size: Optional[int] = None,
                         validate: Optional[bool] = None) -> Tensor:
    """Score entropy (docs/math.md §3) of ``hidden @ weight.T + bias + logit_offset``, fused.

    Args:
        hidden: [B, L, H] hidden states (fp32, bf16, fp16 or fp64).
        weight: [V, H] output projection; bias: [V] or None.
        x_t, x_0: [B, L] int64 perturbed / clean tokens.
        sigma: σ̄(t) per sequence ([B], [B, 1], 0-d or a number), > 0.
        graph: "absorb" (mask id V − 1) or "uniform".
        logit_offset: what the network adds after the projection ([B], [B, 1] or [B, L]; the DDiT's
            scale_by_sigma shift), added in fp32; differentiable. The zero at the current token
            needs no help: the loss never reads ℓ there (docs/math.md §5).
        reduction: "none" → per-token loss [B, L] (backward recomputes the projection chunk by
            chunk); "sum" → Σ token_weight·SE, gradients computed in the forward.
        token_weight: with reduction="sum", per-token weights ([B], [B, 1] or [B, L]; default 1).
        chunk_size: rows per chunk (default: :func:`default_chunk`).
        validate: check token ids and sigma (one host sync on CUDA); default True outside
            torch.compile.

    Under autocast the products run in the autocast dtype (hidden, weight and bias cast once
    inside the op, as ``nn.Linear`` would be), accumulate in fp32, and ``grad_weight`` is
    accumulated over chunks in fp32 and returned in the weight's dtype: an fp32 parameter gets
    the fp32 accumulator itself (no bf16 round trip, no extra copy).
    """
    graph = graph_name(_OP, graph)
    if reduction not in ("none", "sum"):
        raise ValueError(f"{_OP}: reduction must be 'none' or 'sum', got {reduction!r}")
    if token_weight is not None and reduction != "sum":
        raise ValueError(f"{_OP}: token_weight needs reduction='sum'")
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        raise ValueError(f"{_OP}: hidden must have shape [B, L, H], got "
                         f"{list(getattr(hidden, 'shape', []))}")
    B, L, H = hidden.shape
    V = check_projection(_OP, hidden, weight, bias)
    for name, t in (("x_t", x_t), ("x_0", x_0)):
        if not isinstance(t, torch.Tensor) or t.dtype != torch.long or tuple(t.shape) != (B, L):
            raise ValueError(f"{_OP}: {name} must be an int64 tensor of shape [B, L] = [{B}, {L}],"
                             f" got {getattr(t, 'dtype', type(t))} {list(getattr(t, 'shape', []))}")
        if t.device != hidden.device:
            raise ValueError(f"{_OP}: {name} must be on the same device as hidden "
                             f"({hidden.device}), got {t.device}")
    if chunk_size is not None and int(chunk_size) < 1:
        raise ValueError(f"{_OP}: chunk_size must be >= 1, got {chunk_size}")
    sig = sigma_vector(sigma, hidden)
    if isinstance(sig, torch.Tensor) and sig.device != hidden.device:
        raise ValueError(f"{_OP}: sigma must be on the same device as hidden ({hidden.device}), "
                         f"got {sig.device}")
    if sig.dim() != 1 or sig.shape[0] != B:
        raise ValueError(f"{_OP}: sigma must have shape [B] = [{B}], got {list(sig.shape)}")
    if validate is None:
        validate = not torch.compiler.is_compiling()
    if validate:   # token ranges and σ > 0 for every row (the kernel only sees the active ones)
        check_loss_values(_OP, V, x_t, x_0, sig, graph)

    compute_dtype = projection_dtype(_OP, hidden, weight, bias)
    rows_sigma = sig.to(torch.float64)[:, None].expand(B, L).reshape(B * L)
    offset = None if logit_offset is None else _per_row(logit_offset, B, L, "logit_offset",
                                                        hidden.device)
    tw = None
    if token_weight is not None:
        acc = torch.float64 if hidden.dtype == torch.float64 else torch.float32
        tw = _per_row(token_weight, B, L, "token_weight", hidden.device, acc)
    needs = [t is not None and t.requires_grad for t in (hidden, weight, bias, offset)]
    compute_grad = torch.is_grad_enabled() and any(needs)
    out = _LinearScoreEntropy.apply(
        hidden.reshape(B * L, H), weight, bias, x_t.reshape(B * L), x_0.reshape(B * L),
        rows_sigma, offset, tw, graph, int(chunk_size or 0), reduction, compute_grad,
        compute_dtype)
    return out.view(B, L) if reduction == "none" else out

