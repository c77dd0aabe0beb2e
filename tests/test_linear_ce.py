"""linear_cross_entropy (fused output projection + next-token cross-entropy, the autoregressive
baseline's loss): value and every gradient against F.cross_entropy on materialised float64
logits, ignore_index, chunk boundaries, reductions, dtypes and autocast, non-contiguous inputs,
torch.compile, opcheck, gradcheck, bad input."""

import pytest
import torch
import torch.nn.functional as F

import sedd_kernels as sk
from sedd_kernels import reference as R
from sedd_kernels.linear_ce import _rows

from conftest import DEVICES


def problem(shape, H, V, *, device="cpu", dtype=torch.float64, bias=True, ignore=0.0, seed=0,
            scale=1.0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*shape, H, generator=g, dtype=torch.float64) * scale
    weight = torch.randn(V, H, generator=g, dtype=torch.float64) / H ** 0.5
    b = torch.randn(V, generator=g, dtype=torch.float64) if bias else None
    target = torch.randint(0, V, shape, generator=g)
    if ignore:
        target[torch.rand(shape, generator=g) < ignore] = -100
    cast = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
    return cast(hidden), cast(weight), cast(b), target.to(device)


def leaves(*ts):
    return [t.detach().clone().requires_grad_() if t is not None else None for t in ts]


def grads_of(loss, ts):
    return torch.autograd.grad(loss, [t for t in ts if t is not None])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("ignore", [0.0, 0.3])
def test_matches_f_cross_entropy_float64(device, reduction, bias, ignore):
    h, w, b, t = problem((3, 7), 16, 37, device=device, bias=bias, ignore=ignore)
    hf, wf, bf = leaves(h, w, b)
    out = sk.linear_cross_entropy(hf, wf, bf, t, reduction=reduction, chunk_size=5)
    hr, wr, br = leaves(h, w, b)
    logits = F.linear(hr, wr, br)                        # materialised, float64
    ref = F.cross_entropy(logits.reshape(-1, 37), t.reshape(-1), reduction=reduction)
    ref = ref.view(3, 7) if reduction == "none" else ref
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    up = torch.randn_like(out) if reduction == "none" else torch.tensor(0.7, dtype=out.dtype)
    for a, r in zip(grads_of((out * up.to(out.device)).sum(), [hf, wf, bf]),
                    grads_of((ref * up.to(ref.device)).sum(), [hr, wr, br])):
        torch.testing.assert_close(a, r, rtol=1e-11, atol=1e-12)


def test_reference_twin_is_f_cross_entropy():
    h, w, b, t = problem((4, 5), 8, 11, ignore=0.2)
    tw = torch.rand(4, 5, dtype=torch.float64)
    ce = F.cross_entropy(F.linear(h, w, b).reshape(-1, 11), t.reshape(-1), reduction="none",
                         ignore_index=-100).view(4, 5)
    torch.testing.assert_close(R.linear_cross_entropy(h, w, b, t, reduction="sum", token_weight=tw),
                               (ce * tw).sum())
    torch.testing.assert_close(sk.linear_cross_entropy(h, w, b, t, reduction="sum", token_weight=tw),
                               (ce * tw).sum(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk", [1, 3, 20, 21, 1000])
def test_chunk_boundaries_do_not_change_anything(chunk):
    h, w, b, t = problem((3, 7), 8, 13, ignore=0.2)
    ref = R.linear_cross_entropy(h, w, b, t, reduction="none")
    torch.testing.assert_close(sk.linear_cross_entropy(h, w, b, t, reduction="none",
                                                       chunk_size=chunk), ref,
                               rtol=1e-13, atol=1e-13)


def test_every_row_ignored_gives_zero_loss_and_gradient():
    h, w, b, t = problem((2, 3), 8, 13)
    t = torch.full_like(t, -100)
    hf, wf, bf = leaves(h, w, b)
    out = sk.linear_cross_entropy(hf, wf, bf, t)
    assert out.item() == 0.0
    for g in grads_of(out, [hf, wf, bf]):
        assert torch.count_nonzero(g) == 0


def test_extreme_logits_stay_finite():
    """Logits of ±1e4: logsumexp in the kernel's accumulation dtype, no overflow."""
    h, w, b, t = problem((2, 4), 8, 13, scale=3e3)
    out = sk.linear_cross_entropy(h, w, b, t, reduction="none")
    ref = F.cross_entropy(F.linear(h, w, b).reshape(-1, 13), t.reshape(-1), reduction="none")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.reshape(-1), ref, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_gradcheck(reduction):
    h, w, b, t = problem((2, 3), 4, 6, ignore=0.3)
    f = lambda h, w, b: sk.linear_cross_entropy(h, w, b, t, reduction=reduction,  # noqa: E731
                                                chunk_size=4)
    assert torch.autograd.gradcheck(f, tuple(leaves(h, w, b)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 3e-2),
                                       (torch.float16, 1e-2)])
def test_low_precision(device, dtype, tol):
    h, w, b, t = problem((4, 9), 32, 50, device=device, dtype=dtype, ignore=0.1)
    ref = R.linear_cross_entropy(h.double(), w.double(), b.double(), t, reduction="none")
    out = sk.linear_cross_entropy(h, w, b, t, reduction="none")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)


def test_autocast_matches_the_unfused_linear_under_autocast():
    h, w, b, t = problem((4, 9), 32, 50, dtype=torch.float32)
    hf, wf, bf = leaves(h, w, b)
    hr, wr, br = leaves(h, w, b)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sk.linear_cross_entropy(hf, wf, bf, t)
        ref = F.cross_entropy(F.linear(hr, wr, br).float().reshape(-1, 50), t.reshape(-1))
    torch.testing.assert_close(out, ref, rtol=1e-2, atol=1e-2)
    gw, gr = grads_of(out, [wf])[0], grads_of(ref, [wr])[0]
    assert gw.dtype == torch.float32
    torch.testing.assert_close(gw, gr, rtol=5e-2, atol=5e-3)


def test_non_contiguous_inputs():
    h, w, b, t = problem((6, 5), 8, 13, ignore=0.2)
    hn = h.transpose(0, 1)                               # [5, 6, 8], not contiguous
    tn = t.t()
    wn = w.t().contiguous().t()                          # same values, transposed strides
    assert not hn.is_contiguous() and not wn.is_contiguous()
    torch.testing.assert_close(sk.linear_cross_entropy(hn, wn, b, tn, reduction="none"),
                               R.linear_cross_entropy(hn, w, b, tn, reduction="none"),
                               rtol=1e-12, atol=1e-12)


def test_no_grad_computes_only_the_loss():
    h, w, b, t = problem((2, 3), 8, 13)
    hf, wf, bf = leaves(h, w, b)
    with torch.no_grad():
        out = sk.linear_cross_entropy(hf, wf, bf, t)
    assert not out.requires_grad
    torch.testing.assert_close(out, R.linear_cross_entropy(h, w, b, t))


def test_torch_compile_of_a_caller():
    h, w, b, t = problem((2, 8), 16, 29, dtype=torch.float32)

    def f(h, w, b):
        return sk.linear_cross_entropy(torch.tanh(h), w, b, t, validate=False)

    hf, wf, bf = leaves(h, w, b)
    hr, wr, br = leaves(h, w, b)
    out = torch.compile(f, backend="aot_eager", fullgraph=True)(hf, wf, bf)
    ref = f(hr, wr, br)
    torch.testing.assert_close(out, ref)
    for a, r in zip(grads_of(out, [hf, wf, bf]), grads_of(ref, [hr, wr, br])):
        torch.testing.assert_close(a, r)


def test_opcheck():
    h, w, b, t = problem((3, 4), 8, 13, dtype=torch.float32, ignore=0.2)
    N = t.numel()
    rw = torch.rand(N)
    for args in [(h.reshape(N, 8), w, b, t.reshape(N), rw, -100, 5, True),
                 (h.reshape(N, 8), w, None, t.reshape(N), None, -100, 0, False)]:
        torch.library.opcheck(_rows, args)


@pytest.mark.parametrize("kw,exc,match", [
    (dict(target=torch.tensor([[0, 13]])), ValueError, r"target must hold class ids in \[0, V\)"),
    (dict(target=torch.tensor([[0, -1]])), ValueError, "ignore_index = -100"),
    (dict(target=torch.tensor([[0, 1, 2]])), ValueError, "target must be an int64 tensor of shape"),
    (dict(target=torch.tensor([[0.0, 1.0]])), ValueError, "target must be an int64"),
    (dict(weight=torch.randn(13, 5)), ValueError, "weight must have shape"),
    (dict(bias=torch.randn(12)), ValueError, "bias must have shape"),
    (dict(hidden=torch.randn(1, 2, 8, dtype=torch.float64)), TypeError, "must share a dtype"),
    (dict(reduction="avg"), ValueError, "reduction must be"),
    (dict(token_weight=torch.ones(1, 2)), ValueError, "token_weight needs reduction='sum'"),
    (dict(chunk_size=0), ValueError, "chunk_size must be >= 1"),
])
def test_bad_input(kw, exc, match):
    args = dict(hidden=torch.randn(1, 2, 8), weight=torch.randn(13, 8), bias=torch.randn(13),
                target=torch.tensor([[0, 12]]))
    opts = {k: kw.pop(k) for k in ("reduction", "token_weight", "chunk_size") if k in kw}
    args.update(kw)
    with pytest.raises(exc, match=match):
        sk.linear_cross_entropy(args["hidden"], args["weight"], args["bias"], args["target"],
                                **opts)
