"""linear_score_entropy (fused output projection + score entropy, docs/math.md §3 on
ℓ = hidden·Wᵀ + b + offset) and its chunk kernel score_entropy_with_grad_: value and all gradients
against the unfused float64 reference, chunk boundaries, dtypes, autocast, torch.compile, opcheck,
bad input."""

import pytest
import torch

import sedd_kernels as sk
from sedd_kernels import reference as R
from sedd_kernels.linear import _rows, default_chunk

from conftest import DEVICES, make_batch


def problem(B, L, H, V, graph, *, device="cpu", dtype=torch.float64, bias=True, offset="seq",
            mask_frac=0.5, seed=0):
    """hidden [B, L, H], weight [V, H], bias [V]?, tokens, sigma [B], offset ([B] or [B, L])."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, L, H, generator=g, dtype=torch.float64)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64) / H ** 0.5
    b = torch.randn(V, generator=g, dtype=torch.float64) * 0.5 if bias else None
    _, x_t, x_0, sigma = make_batch(B, L, V, graph, mask_frac=mask_frac, seed=seed)
    off = {"seq": torch.randn(B, generator=g, dtype=torch.float64),
           "token": torch.randn(B, L, generator=g, dtype=torch.float64), None: None}[offset]
    cast = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
    return (cast(hidden), cast(weight), cast(b), x_t.to(device), x_0.to(device),
            sigma.to(device), cast(off))


def unfused(hidden, weight, bias, x_t, x_0, sigma, graph, off):
    """The reference twin (reference.linear_score_entropy) in float64."""
    d = lambda t: None if t is None else t.double()  # noqa: E731
    return R.linear_score_entropy(d(hidden), d(weight), d(bias), x_t, x_0, sigma, graph, d(off))


def leaves(*ts):
    return [t.detach().clone().requires_grad_() if t is not None else None for t in ts]


def grads_of(value, ts):
    present = [t for t in ts if t is not None]
    gs = iter(torch.autograd.grad(value, present))
    return [next(gs) if t is not None else None for t in ts]


@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("graph", ["absorb", "uniform"])
@pytest.mark.parametrize("device", DEVICES)
def test_value_and_gradients_match_unfused_float64(device, graph, bias, reduction):
    """Value and ∂/∂hidden, ∂/∂weight, ∂/∂bias, ∂/∂offset equal those of the unfused float64
    path, with a chunk that does not divide the rows."""
    h, w, b, xt, x0, sig, off = problem(3, 7, 16, 37, graph, device=device, bias=bias)
    tw = torch.rand(3, 7, dtype=torch.float64, device=device)
    ins = leaves(h, w, b, off)
    ref_ins = leaves(h, w, b, off)
    ref = unfused(ref_ins[0], ref_ins[1], ref_ins[2], xt, x0, sig, graph, ref_ins[3])
    if reduction == "none":
        out = sk.linear_score_entropy(ins[0], ins[1], ins[2], xt, x0, sig, graph, ins[3],
                                      chunk_size=4)
        assert out.shape == (3, 7) and out.dtype == torch.float64
        torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
        g, gref = grads_of((out * tw).sum(), ins), grads_of((ref * tw).sum(), ref_ins)
    else:
        out = sk.linear_score_entropy(ins[0], ins[1], ins[2], xt, x0, sig, graph, ins[3],
                                      chunk_size=4, reduction="sum", token_weight=tw)
        assert out.dim() == 0
        torch.testing.assert_close(out, (ref * tw).sum(), rtol=1e-12, atol=1e-12)
        g, gref = grads_of(2.5 * out, ins), grads_of(2.5 * (ref * tw).sum(), ref_ins)
    for a, e in zip(g, gref):
        if e is None:
            assert a is None
        else:
            torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_reference_twins_agree_with_the_definition(graph):
    """reference.linear_score_entropy (eager and dense) is score entropy of the explicit
    projection, and the dense twin (the compiled baseline) equals the eager one."""
    h, w, b, xt, x0, sig, off = problem(2, 5, 8, 11, graph, offset="token")
    explicit = R.score_entropy_general(h @ w.T + b + off[..., None], xt, x0, sig,
                                       R.rate_matrix(graph, 11))
    torch.testing.assert_close(R.linear_score_entropy(h, w, b, xt, x0, sig, graph, off), explicit,
                               rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(R.linear_score_entropy(h, w, b, xt, x0, sig, graph, off,
                                                      dense=True), explicit,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 5, 64, None])
@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_chunk_boundaries(graph, chunk):
    """A chunk of one row, a chunk that leaves a remainder, a chunk larger than B·L and the
    default give the same values and gradients (float64)."""
    h, w, b, xt, x0, sig, off = problem(2, 9, 8, 13, graph, offset="token")
    ins = leaves(h, w, b, off)
    out = sk.linear_score_entropy(*ins[:3], xt, x0, sig, graph, ins[3], chunk_size=chunk)
    ref_ins = leaves(h, w, b, off)
    ref = unfused(*ref_ins[:3], xt, x0, sig, graph, ref_ins[3])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    for a, e in zip(grads_of(out.sum(), ins), grads_of(ref.sum(), ref_ins)):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("mask_frac", [0.0, 1.0])
def test_absorbing_all_or_no_rows_masked(mask_frac):
    """No masked row: zero loss and zero gradients (nothing is projected); all masked: every row
    is active and no gather happens — both equal the reference."""
    h, w, b, xt, x0, sig, off = problem(2, 5, 8, 11, "absorb", mask_frac=mask_frac)
    ins = leaves(h, w, b, off)
    out = sk.linear_score_entropy(*ins[:3], xt, x0, sig, "absorb", ins[3], chunk_size=3)
    ref_ins = leaves(h, w, b, off)
    ref = unfused(*ref_ins[:3], xt, x0, sig, "absorb", ref_ins[3])
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    g = grads_of(out.sum(), ins)
    for a, e in zip(g, grads_of(ref.sum(), ref_ins)):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11)
    if mask_frac == 0.0:
        assert all(bool((t == 0).all()) for t in g)


@pytest.mark.parametrize("reduction", ["none", "sum"])
@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_gradcheck(graph, reduction):
    """Finite differences in float64 through hidden, weight, bias and the offset."""
    h, w, b, xt, x0, sig, off = problem(2, 3, 4, 6, graph, offset="token")
    tw = torch.rand(2, 3, dtype=torch.float64)

    def f(h, w, b, off):
        if reduction == "sum":
            return sk.linear_score_entropy(h, w, b, xt, x0, sig, graph, off, chunk_size=2,
                                           reduction="sum", token_weight=tw)
        return sk.linear_score_entropy(h, w, b, xt, x0, sig, graph, off, chunk_size=2)

    assert torch.autograd.gradcheck(f, tuple(leaves(h, w, b, off)))


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 2e-5), (torch.bfloat16, 2e-2),
                                       (torch.float16, 4e-3)])
@pytest.mark.parametrize("graph", ["absorb", "uniform"])
@pytest.mark.parametrize("device", DEVICES)
def test_low_precision(device, graph, dtype, tol):
    """fp32/bf16/fp16 inputs: the loss (fp32) and the gradients (input dtype) match the float64
    reference on the same rounded inputs, to the precision of the products."""
    h, w, b, xt, x0, sig, off = problem(2, 33, 64, 300, graph, device=device, dtype=dtype)
    ins = leaves(h, w, b, off)
    out = sk.linear_score_entropy(*ins[:3], xt, x0, sig, graph, ins[3], chunk_size=16,
                                  reduction="sum")
    assert out.dtype == torch.float32
    ref_ins = leaves(*(t.double() for t in (h, w, b, off)))
    ref = unfused(*ref_ins[:3], xt, x0, sig, graph, ref_ins[3]).sum()
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    for a, e in zip(grads_of(out, ins), grads_of(ref, ref_ins)):
        assert a.dtype == dtype
        scale = e.abs().max().clamp_min(1e-6)
        assert float((a.double() - e).abs().max() / scale) < 4 * tol


def test_autocast_matches_unfused_linear_under_autocast():
    """Under CPU bf16 autocast the op casts like nn.Linear: same loss and gradients as the
    projection computed under autocast followed by the fused loss, to bf16 precision."""
    h, w, b, xt, x0, sig, off = problem(2, 17, 32, 50, "absorb", dtype=torch.float32)
    ins, ref_ins = leaves(h, w, b, off), leaves(h, w, b, off)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sk.linear_score_entropy(*ins[:3], xt, x0, sig, "absorb", ins[3], reduction="sum")
        ls = torch.nn.functional.linear(ref_ins[0], ref_ins[1], ref_ins[2]).float()
        ref = sk.score_entropy(ls + ref_ins[3][:, None, None], xt, x0, sig, "absorb").sum()
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)
    for a, e in zip(grads_of(out, ins), grads_of(ref, ref_ins)):
        assert a.dtype == torch.float32          # flows back through the casts to fp32 leaves
        assert float((a - e).abs().max() / e.abs().max()) < 3e-2


def test_non_contiguous_inputs():
    """Strided hidden states and a transposed-storage weight give the contiguous result."""
    h, w, b, xt, x0, sig, off = problem(2, 6, 8, 10, "uniform")
    h_nc = torch.stack([h, -h], dim=-1).reshape(2, 6, 16)[..., ::2]
    w_nc = w.T.contiguous().T
    assert not h_nc.is_contiguous() and not w_nc.is_contiguous()
    out = sk.linear_score_entropy(h_nc, w_nc, b, xt[:, :], x0, sig, "uniform", off, chunk_size=5)
    torch.testing.assert_close(out, unfused(h, w, b, xt, x0, sig, "uniform", off), rtol=1e-12,
                               atol=1e-12)


def test_no_grad_computes_only_the_loss():
    h, w, b, xt, x0, sig, off = problem(2, 4, 8, 10, "absorb")
    with torch.no_grad():
        out = sk.linear_score_entropy(*leaves(h, w, b), xt, x0, sig, "absorb", off,
                                      reduction="sum")
    assert not out.requires_grad
    torch.testing.assert_close(out, unfused(h, w, b, xt, x0, sig, "absorb", off).sum())


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_torch_compile_of_a_caller(reduction):
    """A compiled caller (fullgraph) gives the eager value and gradients."""
    h, w, b, xt, x0, sig, off = problem(2, 5, 8, 12, "absorb", dtype=torch.float32)

    def step(h, w, b):
        out = sk.linear_score_entropy(torch.tanh(h), w, b, xt, x0, sig, "absorb", off,
                                      reduction=reduction, chunk_size=3)
        return out.sum() * 0.5

    ins = leaves(h, w, b)
    eager = step(*ins)
    ge = grads_of(eager, ins)
    cins = leaves(h, w, b)
    compiled = torch.compile(step, fullgraph=True)(*cins)
    torch.testing.assert_close(compiled, eager)
    for a, e in zip(grads_of(compiled, cins), ge):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("graph", ["absorb", "uniform"])
def test_opcheck(graph):
    h, w, b, xt, x0, sig, off = problem(2, 4, 8, 10, graph)
    rows_sigma = sig[:, None].expand(2, 4).reshape(-1)
    rows_off = off[:, None].expand(2, 4).reshape(-1)
    for compute_grad in (False, True):
        torch.library.opcheck(_rows, (h.reshape(8, 8), w, b, xt.reshape(-1), x0.reshape(-1),
                                      rows_sigma, rows_off, torch.rand(8, dtype=torch.float64),
                                      graph, 3, compute_grad))
        # fp32 inputs, bf16 products (the autocast path): gradients in the inputs' dtypes
        f32 = [t.float() for t in (h.reshape(8, 8), w, b)]
        torch.library.opcheck(_rows, (*f32, xt.reshape(-1), x0.reshape(-1), rows_sigma,
                                      rows_off.float(), None, graph, 3, compute_grad,
                                      torch.bfloat16))
    ls, xt2, x02, sig2 = make_batch(2, 3, 7, graph)
    torch.library.opcheck(torch.ops.sedd.score_entropy_with_grad_.default,
                          (ls.float(), xt2, x02, sig2, graph, torch.randn(2, 3), torch.rand(2, 3)))
    torch.library.opcheck(torch.ops.sedd.score_entropy_with_grad_.default,
                          (ls, xt2, x02, sig2, graph))


# ---- the chunk kernel itself

@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("graph", ["absorb", "uniform"])
@pytest.mark.parametrize("device", DEVICES)
def test_with_grad_kernel_matches_reference(device, graph, dtype):
    """score_entropy_with_grad_: the loss of ℓ = log_score + offset and, written in place,
    grad·∂SE/∂ℓ (docs/math.md §3), on strided rows, against the float64 reference's autograd."""
    ls, xt, x0, sig = make_batch(3, 8, 1100, graph, device=device)
    off = torch.randn(3, 8, dtype=torch.float64, device=device)
    gout = torch.randn(3, 8, dtype=torch.float64, device=device)
    buf = torch.zeros(3, 8, 1200, dtype=dtype, device=device)[..., 50:1150]   # strided rows
    buf.copy_(ls)
    rounded = buf.double().clone().requires_grad_()
    ref = R.score_entropy(rounded + off[..., None], xt, x0, sig, graph)
    (gref,) = torch.autograd.grad((ref * gout).sum(), rounded)
    out = torch.ops.sedd.score_entropy_with_grad_(buf, xt, x0, sig, graph, off, gout)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5}.get(dtype, 1e-2)
    torch.testing.assert_close(out.double(), ref.detach(), rtol=tol, atol=tol * 10)
    torch.testing.assert_close(buf.double(), gref.to(dtype).double(), rtol=tol * 4, atol=tol)
    if graph == "absorb":   # unmasked rows: zero loss, zero gradient
        unmasked = xt != 1099
        assert bool((out[unmasked] == 0).all()) and bool((buf[unmasked] == 0).all())


@pytest.mark.parametrize("device", DEVICES)
def test_with_grad_kernel_bad_input(device):
    ls, xt, x0, sig = make_batch(2, 3, 7, "uniform", device=device)
    with pytest.raises((RuntimeError, ValueError), match="offset must have shape"):
        torch.ops.sedd.score_entropy_with_grad_(ls, xt, x0, sig, "uniform",
                                                torch.zeros(2, device=device))
    with pytest.raises((RuntimeError, TypeError), match="grad must be a floating"):
        torch.ops.sedd.score_entropy_with_grad_(ls, xt, x0, sig, "uniform", None,
                                                torch.zeros(2, 3, dtype=torch.long, device=device))
    # overlapping memory (issue 13, defect 4): an expanded buffer would be written by every row
    # that shares it; refused before anything is written
    shared = ls[:1, :1].expand(2, 3, 7)
    before = shared.clone()
    with pytest.raises((RuntimeError, ValueError), match="must not have overlapping memory"):
        torch.ops.sedd.score_entropy_with_grad_(shared, xt, x0, sig, "uniform")
    assert torch.equal(shared, before)
    strided = torch.empty(2, 5, 7, dtype=ls.dtype, device=device)[:, ::2]
    strided.copy_(ls)               # strided rows, not overlapping: accepted, same result
    ref = torch.ops.sedd.score_entropy_with_grad_(ls.clone(), xt, x0, sig, "uniform")
    torch.testing.assert_close(torch.ops.sedd.score_entropy_with_grad_(strided, xt, x0, sig,
                                                                       "uniform"), ref)


# ---- argument checks

def _args(**kw):
    h, w, b, xt, x0, sig, off = problem(2, 3, 4, 6, "absorb", dtype=torch.float32)
    a = dict(hidden=h, weight=w, bias=b, x_t=xt, x_0=x0, sigma=sig, graph="absorb",
             logit_offset=off)
    a.update(kw)
    return a


@pytest.mark.parametrize("kw,exc,match", [
    (dict(hidden=torch.zeros(6, 4)), ValueError, "hidden must have shape"),
    (dict(weight=torch.zeros(6, 5)), ValueError, "weight must have shape"),
    (dict(bias=torch.zeros(5)), ValueError, "bias must have shape"),
    (dict(weight=torch.zeros(6, 4, dtype=torch.float64)), TypeError, "share a dtype"),
    (dict(hidden=torch.zeros(2, 3, 4, dtype=torch.long)), TypeError, "hidden must be float32"),
    (dict(x_t=torch.zeros(2, 4, dtype=torch.long)), ValueError, "x_t must be an int64 tensor"),
    (dict(x_0=torch.zeros(2, 3, dtype=torch.int32)), ValueError, "x_0 must be an int64 tensor"),
    (dict(x_t=torch.full((2, 3), 6)), ValueError, r"x_t must hold token ids in \[0, V\)"),
    (dict(x_0=torch.full((2, 3), 5)), ValueError, "mask id V-1 is not a clean token"),
    (dict(sigma=torch.tensor([1.0, 0.0])), ValueError, "sigma must be > 0"),
    (dict(sigma=torch.tensor([1.0, float("nan")])), ValueError, "sigma must be > 0"),
    (dict(sigma=torch.ones(3)), ValueError, "sigma must have shape"),
    (dict(logit_offset=torch.zeros(3)), ValueError, "logit_offset must have shape"),
    (dict(graph="bogus"), ValueError, "graph must be"),
])
def test_bad_input(kw, exc, match):
    with pytest.raises(exc, match=match):
        sk.linear_score_entropy(**_args(**kw))


def test_bad_options():
    with pytest.raises(ValueError, match="reduction must be"):
        sk.linear_score_entropy(**_args(), reduction="mean")
    with pytest.raises(ValueError, match="token_weight needs reduction='sum'"):
        sk.linear_score_entropy(**_args(), token_weight=torch.ones(2))
    with pytest.raises(ValueError, match="chunk_size must be >= 1"):
        sk.linear_score_entropy(**_args(), chunk_size=0)
    with pytest.raises(ValueError, match="token_weight must have shape"):
        sk.linear_score_entropy(**_args(), reduction="sum", token_weight=torch.ones(5))


def test_default_chunk_bounds_the_block():
    """The default chunk: 512 rows on CPU, or a [chunk, V] block as large as the hidden states
    when that is larger; never more than the rows."""
    cpu = torch.device("cpu")
    assert default_chunk(16384, 768, 50258, 4, cpu) == 512
    assert default_chunk(100, 768, 50258, 4, cpu) == 100
    c = default_chunk(10 ** 6, 768, 50258, 2, cpu)
    assert 512 < c and (c - 1) * 50258 < 10 ** 6 * 768 <= c * 50258


def test_sum_mode_backward_twice():
    """reduction='sum' returns its stored gradients unscaled when the upstream gradient is 1: a
    retained graph's second backward gives the same gradients, and a scaled one scales them."""
    h, w, b, xt, x0, sig, off = problem(2, 3, 4, 6, "uniform")
    ins = leaves(h, w, b)
    out = sk.linear_score_entropy(*ins, xt, x0, sig, "uniform", off, reduction="sum")
    first = torch.autograd.grad(out, ins, retain_graph=True)
    second = torch.autograd.grad(out, ins, retain_graph=True)
    third = torch.autograd.grad(3 * out, ins)
    for a, b_, c in zip(first, second, third):
        torch.testing.assert_close(a, b_, rtol=0, atol=0)
        torch.testing.assert_close(3 * a, c)
