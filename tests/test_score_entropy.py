"""score_entropy (docs/math.md §3): the fused op against the plain-PyTorch reference and the
definition, its gradient, its registration (opcheck, torch.compile) and its input checks."""

import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sedd_kernels as sk
from sedd_kernels import reference as R

from conftest import make_batch

GRAPHS = ["absorb", "uniform"]
SHAPES = [(1, 1, 2), (2, 3, 5), (3, 7, 33), (2, 4, 300), (1, 2, 1030), (2, 2, 2049)]
EPS = {torch.float32: 2.0**-23, torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def ref64(log_score, x_t, x_0, sigma, graph):
    """The reference in float64 on CPU, from the exact values the kernel sees."""
    return R.score_entropy(log_score.detach().cpu().double(), x_t.cpu(), x_0.cpu(),
                           sigma.cpu().double(), graph)


def ref_grad64(log_score, x_t, x_0, sigma, graph, grad_out):
    ls = log_score.detach().cpu().double().requires_grad_(True)
    R.score_entropy(ls, x_t.cpu(), x_0.cpu(), sigma.cpu().double(), graph).backward(
        grad_out.cpu().double())
    return ls.grad


def loss_magnitude(log_score, graph):
    """Size of the terms the loss sums (Σ w_y e^{ℓ_y} + Σ w_y |ℓ_y|), the scale of rounding."""
    ls = log_score.detach().cpu().double()
    w = 1.0 if graph == "absorb" else 1.0 / ls.shape[-1]
    finite = torch.where(torch.isfinite(ls), ls, 0.0)
    return (ls.exp().sum(-1) + finite.abs().sum(-1)) * w


# ---------------------------------------------------------------- agreement with the reference

@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("shape", SHAPES)
def test_matches_reference_float64(device, graph, shape):
    ls, xt, x0, sigma = make_batch(*shape, graph, device=device)
    out = sk.score_entropy(ls, xt, x0, sigma, graph)
    assert out.dtype == torch.float64 and out.shape == shape[:2]
    ref = ref64(ls, xt, x0, sigma, graph)
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-12, atol=1e-11)


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("V", [2, 3, 9])
def test_closed_forms_match_the_definition(graph, V):
    """The closed forms of §3 (reference.score_entropy) equal the definition
    Σ_{y≠x} Q[x,y](e^{ℓ_y} − r_y ℓ_y + K(r_y)) with P = exp(σQ) (reference.score_entropy_general),
    and so does the fused op."""
    ls, xt, x0, sigma = make_batch(3, 6, V, graph, seed=V)
    Q = R.rate_matrix(graph, V)
    general = R.score_entropy_general(ls, xt, x0, sigma, Q)
    torch.testing.assert_close(R.score_entropy(ls, xt, x0, sigma, graph), general, rtol=1e-10,
                               atol=1e-10)
    torch.testing.assert_close(R.score_entropy_dense(ls, xt, x0, sigma, graph), general,
                               rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(sk.score_entropy(ls, xt, x0, sigma, graph), general, rtol=1e-10,
                               atol=1e-10)


@pytest.mark.parametrize("graph", GRAPHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("shape", [(2, 3, 7), (2, 5, 1031), (1, 2, 4099)])
def test_low_precision_inputs(device, graph, dtype, shape):
    """fp32/bf16/fp16 inputs are read exactly and accumulated in fp32 (lanes of ≤ 128 terms,
    combined in fp64), with an fp32 exp of ≤ 2 ulp: the loss agrees with the float64 reference on
    the same values to 1e-5 of the magnitude of the summed terms. The gradient is computed in fp32
    and rounded once to the input dtype: within 4 ulp of that dtype of its terms' size."""
    ls, xt, x0, sigma = make_batch(*shape, graph, dtype=dtype, device=device)
    out = sk.score_entropy(ls, xt, x0, sigma, graph)
    assert out.dtype == torch.float32
    ref = ref64(ls, xt, x0, sigma, graph)
    tol = 1e-5 * (loss_magnitude(ls, graph) + ref.abs()) + 1e-6
    assert ((out.cpu().double() - ref).abs() <= tol).all()

    g = torch.rand(shape[:2], dtype=torch.float32, device=device) + 0.5
    ls.requires_grad_(True)
    sk.score_entropy(ls, xt, x0, sigma, graph).backward(g)
    assert ls.grad.dtype == dtype and ls.grad.shape == ls.shape
    gref = ref_grad64(ls, xt, x0, sigma, graph, g)
    inv_e = 1.0 / torch.expm1(sigma.cpu().double())
    scale = g.cpu().double()[..., None] * (ls.detach().cpu().double().exp() + 1 + inv_e[:, None, None])
    err = (ls.grad.cpu().double() - gref).abs()
    assert (err <= 4 * max(EPS[dtype], 2.0**-22) * scale + 1e-30).all()


def test_gpt2_vocabulary(device):
    """V = 50258 (GPT-2 + mask), fp32 and bf16, both graphs."""
    for graph in GRAPHS:
        for dtype in (torch.float32, torch.bfloat16):
            ls, xt, x0, sigma = make_batch(2, 3, 50258, graph, dtype=dtype, device=device,
                                           mask_frac=0.7)
            out = sk.score_entropy(ls, xt, x0, sigma, graph)
            ref = ref64(ls, xt, x0, sigma, graph)
            tol = 1e-5 * (loss_magnitude(ls, graph) + ref.abs()) + 1e-6
            assert ((out.cpu().double() - ref).abs() <= tol).all()


@pytest.mark.parametrize("graph", GRAPHS)
def test_non_contiguous_inputs(device, graph):
    """Any strides except along V: a slice of a wider tensor, transposed token tensors, a
    broadcast (stride-0) log-score and sigma given as [B, 1]."""
    B, L, V = 3, 5, 40
    ls, xt, x0, sigma = make_batch(B, 2 * L, V + 7, graph, device=device)
    ls = ls[:, ::2, :V]                                   # strides (..., 2·(V+7), 1)
    x0 = x0[:, ::2].clamp(max=V - 2)
    xt = torch.where(xt[:, ::2] >= V - 1, torch.full_like(x0, V - 1), x0) if graph == "absorb" \
        else xt[:, ::2] % V
    xt_t = xt.t().contiguous().t()                        # column-major copies
    x0_t = x0.t().contiguous().t()
    assert not ls.is_contiguous() and not xt_t.is_contiguous()
    out = sk.score_entropy(ls, xt_t, x0_t, sigma[:, None], graph)
    torch.testing.assert_close(out.cpu(), ref64(ls, xt, x0, sigma, graph), rtol=1e-12, atol=1e-11)
    # a stride-0 batch: one row broadcast to every position
    row = ls[:1, :1]
    lsb = row.expand(B, L, V)
    torch.testing.assert_close(sk.score_entropy(lsb, xt, x0, sigma, graph).cpu(),
                               ref64(lsb, xt, x0, sigma, graph), rtol=1e-12, atol=1e-11)
    # the gradient of a non-contiguous input
    ls = ls.detach().requires_grad_(True)
    sk.score_entropy(ls, xt, x0, sigma, graph).sum().backward()
    torch.testing.assert_close(ls.grad.cpu(), ref_grad64(ls, xt, x0, sigma, graph,
                                                         torch.ones(B, L)), rtol=1e-12, atol=1e-12)


def test_sequence_length_one(device):
    for graph in GRAPHS:
        ls, xt, x0, sigma = make_batch(4, 1, 17, graph, device=device, mask_frac=1.0)
        torch.testing.assert_close(sk.score_entropy(ls, xt, x0, sigma, graph).cpu(),
                                   ref64(ls, xt, x0, sigma, graph), rtol=1e-12, atol=1e-11)


def test_sigma_forms_and_extremes(device):
    """sigma as a number, 0-d, [B] and [B, 1]; tiny, huge and infinite noise levels."""
    ls, xt, x0, _ = make_batch(3, 4, 11, "uniform", device=device)
    a = sk.score_entropy(ls, xt, x0, 0.7, "uniform")
    for s in (torch.tensor(0.7, device=device), torch.full((3,), 0.7, device=device),
              torch.full((3, 1), 0.7, device=device, dtype=torch.float32)):
        torch.testing.assert_close(sk.score_entropy(ls, xt, x0, s, "uniform"), a)
    for graph in GRAPHS:
        ls, xt, x0, _ = make_batch(3, 4, 11, graph, device=device, mask_frac=1.0)
        sigma = torch.tensor([1e-7, 35.0, 300.0], dtype=torch.float64, device=device)
        out = sk.score_entropy(ls, xt, x0, sigma, graph)
        torch.testing.assert_close(out.cpu(), ref64(ls, xt, x0, sigma, graph), rtol=1e-10,
                                   atol=1e-9)
        # σ = +inf is the limit r → 0 (absorb) / ρ → 1 (uniform), with K(0) = 0
        inf = sk.score_entropy(ls, xt, x0, torch.full((3,), math.inf, device=device), graph)
        big = sk.score_entropy(ls, xt, x0, torch.full((3,), 1e3, device=device), graph)
        torch.testing.assert_close(inf, big, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- properties of the loss

@pytest.mark.parametrize("graph", GRAPHS)
def test_zero_at_the_exact_score_and_nonnegative_elsewhere(device, graph):
    """SE = 0 exactly when e^{ℓ_y} = r_y = P[y, x0] / P[x, x0] for every neighbour y (§3), and
    SE ≥ 0 for any other log-scores."""
    B, L, V = 4, 6, 13
    ls, xt, x0, sigma = make_batch(B, L, V, graph, device="cpu", mask_frac=1.0, same_frac=0.4)
    P = R.transition_matrix(graph, V, sigma)                    # [B, V, V], P[y, x0]
    cols = torch.gather(P[:, None].expand(B, L, V, V), -1,
                        x0[..., None, None].expand(B, L, V, 1)).squeeze(-1)
    ratio = cols / torch.gather(cols, -1, xt[..., None])
    exact = torch.log(ratio)                                    # −inf where r_y = 0
    out = sk.score_entropy(exact.to(device), xt.to(device), x0.to(device), sigma.to(device), graph)
    scale = loss_magnitude(exact, graph) + 1.0
    assert (out.cpu().abs() <= 1e-12 * scale).all(), out
    rand = sk.score_entropy(ls.to(device), xt.to(device), x0.to(device), sigma.to(device), graph)
    assert (rand.cpu() >= -1e-12 * (loss_magnitude(ls, graph) + 1)).all()
    assert (rand.cpu()[xt.cpu() == V - 1] > 0).all() if graph == "absorb" else (rand > 0).any()


def test_unmasked_absorbing_rows_are_zero(device):
    ls, xt, x0, sigma = make_batch(3, 8, 21, "absorb", device=device, mask_frac=0.5)
    ls = ls.requires_grad_(True)
    out = sk.score_entropy(ls, xt, x0, sigma, "absorb")
    unmasked = xt != 20
    assert (out[unmasked] == 0).all() and (out[~unmasked] > 0).all()
    out.sum().backward()
    assert (ls.grad[unmasked] == 0).all()


def test_overflow_and_nan_are_not_hidden(device):
    """exp overflow gives +inf (never a finite wrong loss); NaN log-scores give NaN."""
    for graph in GRAPHS:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            ls, xt, x0, sigma = make_batch(1, 3, 50, graph, dtype=dtype, device=device,
                                           mask_frac=1.0)
            ls[0, :, 7] = 100.0 if dtype != torch.float16 else 60000.0
            xt[0, :] = 49 if graph == "absorb" else 3
            out = sk.score_entropy(ls, xt, x0, sigma, graph)
            assert torch.isposinf(out).all(), out
            ls[0, 1, 9] = float("nan")
            assert torch.isnan(sk.score_entropy(ls, xt, x0, sigma, graph)[0, 1])


# ---------------------------------------------------------------- autograd and registration

@pytest.mark.parametrize("graph", GRAPHS)
def test_gradcheck(device, graph):
    ls, xt, x0, sigma = make_batch(2, 3, 6, graph, device=device, scale=1.0)
    ls.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: sk.score_entropy(t, xt, x0, sigma, graph), (ls,))
    # non-contiguous input
    wide = make_batch(2, 6, 9, graph, device=device, scale=1.0, seed=3)[0][:, ::2, :6]
    wide = wide.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: sk.score_entropy(t, xt, x0, sigma, graph), (wide,))


@pytest.mark.parametrize("graph", GRAPHS)
def test_opcheck(device, graph):
    ls, xt, x0, sigma = make_batch(2, 3, 17, graph, dtype=torch.float32, device=device)
    torch.library.opcheck(torch.ops.sedd.score_entropy.default, (ls, xt, x0, sigma, graph))
    torch.library.opcheck(torch.ops.sedd.score_entropy.default,
                          (ls.clone().requires_grad_(True), xt, x0, sigma, graph))
    g = torch.rand(2, 3, device=device)
    torch.library.opcheck(torch.ops.sedd.score_entropy_backward.default,
                          (g, ls, xt, x0, sigma, graph))


def test_torch_compile_fullgraph(device):
    def loss_fn(ls, xt, x0, sigma, dsigma):
        se = sk.score_entropy(ls, xt, x0, sigma, "absorb")
        return (dsigma[:, None] * se).sum(-1).mean()

    compiled = torch.compile(loss_fn, fullgraph=True)
    ls, xt, x0, sigma = make_batch(2, 8, 33, "absorb", dtype=torch.float32, device=device)
    dsigma = torch.rand(2, device=device, dtype=torch.float32)
    a = ls.clone().requires_grad_(True)
    b = ls.clone().requires_grad_(True)
    ea = loss_fn(a, xt, x0, sigma, dsigma)
    eb = compiled(b, xt, x0, sigma, dsigma)
    torch.testing.assert_close(ea, eb)
    ea.backward()
    eb.backward()
    torch.testing.assert_close(a.grad, b.grad)


# ---------------------------------------------------------------- fuzz

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(B=st.integers(1, 3), L=st.integers(1, 4), V=st.integers(2, 1100),
       graph=st.sampled_from(GRAPHS), scale=st.floats(0.01, 12.0),
       dtype=st.sampled_from([torch.float64, torch.float32, torch.bfloat16, torch.float16]),
       strided=st.booleans(), sigma=st.floats(1e-6, 40.0), seed=st.integers(0, 2**16),
       mask_frac=st.floats(0.0, 1.0))
def test_fuzz_against_reference(B, L, V, graph, scale, dtype, strided, sigma, seed, mask_frac):
    if dtype == torch.float16:
        scale = min(scale, 8.0)  # keep e^ℓ inside fp16's range for the gradient check below
    ls, xt, x0, sig = make_batch(B, L * (2 if strided else 1), V, graph, dtype=dtype, scale=scale,
                                 seed=seed, mask_frac=mask_frac)
    if strided:
        ls, xt, x0 = ls[:, ::2], xt[:, ::2], x0[:, ::2]
    sig = sig * 0 + sigma
    out = sk.score_entropy(ls, xt, x0, sig, graph)
    ref = ref64(ls, xt, x0, sig, graph)
    if dtype == torch.float64:
        tol = 1e-11 * (loss_magnitude(ls, graph) + ref.abs()) + 1e-11
    else:
        tol = 1e-5 * (loss_magnitude(ls, graph) + ref.abs()) + 1e-6
    assert ((out.double() - ref).abs() <= tol).all(), (out, ref)


# ---------------------------------------------------------------- 64-bit offsets

def test_offsets_beyond_int32():
    """B·L·V > 2^31 (B = 43, L = 1024, V = 50258): the forward reads a stride-0 input, the
    backward writes a 4.4 GB bf16 gradient whose last rows lie beyond element 2^31; and an input
    whose second sequence starts past element 2^31 of its storage."""
    V, B, L = 50258, 43, 1024
    assert B * L * V > 2**31
    g = torch.Generator().manual_seed(0)
    row = torch.randn(1, 1, V, generator=g).bfloat16()
    x0 = torch.randint(0, V - 1, (B, L), generator=g)
    xt = torch.full_like(x0, V - 1)
    sigma = torch.rand(B, generator=g, dtype=torch.float64) + 0.1
    ls = row.expand(B, L, V)
    loss = sk.score_entropy(ls, xt, x0, sigma, "absorb")
    for b, i in [(0, 0), (B - 1, L - 1), (B // 2, 7)]:
        one = ref64(row, xt[b:b + 1, i:i + 1], x0[b:b + 1, i:i + 1], sigma[b:b + 1], "absorb")
        assert abs(loss[b, i].item() - one.item()) <= 1e-5 * (abs(one.item()) + V)
    gout = torch.ones(B, L)
    grad = torch.ops.sedd.score_entropy_backward(gout, ls, xt, x0, sigma, "absorb")
    assert grad.shape == (B, L, V) and grad.dtype == torch.bfloat16
    for b, i in [(B - 1, L - 1), (B - 1, 3)]:
        assert (b * L + i) * V > 2**31
        one = ref_grad64(row, xt[b:b + 1, i:i + 1], x0[b:b + 1, i:i + 1], sigma[b:b + 1],
                         "absorb", torch.ones(1, 1))
        torch.testing.assert_close(grad[b, i].double(), one[0, 0], rtol=2**-7, atol=1e-3)
    del grad
    # an input row that starts beyond element 2^31 of its storage
    storage = torch.empty(2**31 + 2 * V, dtype=torch.bfloat16)  # pages are touched lazily
    far = storage.as_strided((2, 1, V), (2**31 + V, V, 1))
    far[0, 0] = torch.randn(V, generator=g).bfloat16()
    far[1, 0] = torch.randn(V, generator=g).bfloat16()
    xt2, x02 = torch.full((2, 1), V - 1), torch.tensor([[5], [77]])
    out = sk.score_entropy(far, xt2, x02, sigma[:2], "absorb")
    ref = ref64(far.clone(), xt2, x02, sigma[:2], "absorb")
    assert ((out.double() - ref).abs() <= 1e-5 * (ref.abs() + V)).all()


# ---------------------------------------------------------------- bad input

def _args(device="cpu", graph="absorb", V=10):
    return list(make_batch(2, 3, V, graph, dtype=torch.float32, device=device))


@pytest.mark.parametrize("case, exc, match", [
    ("log_score_int", TypeError, "log_score must be float32"),
    ("log_score_rank", ValueError, r"log_score must have shape \[B, L, V\]"),
    ("x_t_dtype", TypeError, "x_t must be an int64"),
    ("x_0_shape", ValueError, r"x_0 must have shape \[B, L\]"),
    ("sigma_shape", ValueError, r"sigma must have shape \[B\]"),
    ("sigma_int", TypeError, "sigma must be a floating-point"),
    ("sigma_zero", ValueError, "sigma must be > 0"),
    ("sigma_negative", ValueError, "sigma must be > 0"),
    ("sigma_nan", ValueError, "sigma must be > 0"),
    ("x_t_negative", ValueError, r"x_t must hold token ids in \[0, V\)"),
    ("x_t_too_big", ValueError, r"x_t must hold token ids in \[0, V\)"),
    ("x_0_too_big", ValueError, "x_0 must hold token ids"),
    ("x_0_mask", ValueError, "mask id V-1 is not a clean token"),
    ("graph", ValueError, "graph must be 'absorb' or 'uniform'"),
    ("v_stride", ValueError, "unit stride along V"),
    ("v_too_small", ValueError, "V >= 2"),
    ("device", ValueError, "same device as log_score"),
])
def test_bad_input(device, case, exc, match):
    ls, xt, x0, sigma = _args(device)
    graph = "absorb"
    if case == "log_score_int":
        ls = ls.long()
    elif case == "log_score_rank":
        ls = ls[0]
    elif case == "x_t_dtype":
        xt = xt.int()
    elif case == "x_0_shape":
        x0 = x0[:, :2]
    elif case == "sigma_shape":
        sigma = torch.ones(3, device=device)
    elif case == "sigma_int":
        sigma = torch.ones(2, dtype=torch.long, device=device)
    elif case == "sigma_zero":
        sigma = torch.tensor([1.0, 0.0], device=device)
    elif case == "sigma_negative":
        sigma = torch.tensor([-1.0, 1.0], device=device)
    elif case == "sigma_nan":
        sigma = torch.tensor([1.0, float("nan")], device=device)
    elif case == "x_t_negative":
        xt[0, 0] = -1
    elif case == "x_t_too_big":
        xt[1, 2] = 10
    elif case == "x_0_too_big":
        x0[0, 1] = 12
    elif case == "x_0_mask":
        x0[0, 1] = 9
    elif case == "graph":
        graph = "absorbingg"
    elif case == "v_stride":
        ls = ls.transpose(1, 2).contiguous().transpose(1, 2)[:, :, :]
        ls = torch.empty(2, 3, 10, 2, device=device)[..., 0]
    elif case == "v_too_small":
        ls = ls[..., :1]
        xt = torch.zeros_like(xt)
        x0 = torch.zeros_like(x0)
    elif case == "device":
        sigma = sigma.to("meta")
    with pytest.raises(exc, match=match):
        sk.score_entropy(ls, xt, x0, sigma, graph)
    if case in ("graph", "device", "log_score_rank"):
        return
    value_case = case.startswith(("sigma_zero", "sigma_negative", "sigma_nan", "x_t_", "x_0_"))
    if device.type == "cuda" and value_case and case != "x_t_dtype" and case != "x_0_shape":
        # CUDA kernels cannot raise without a host sync: the raw op marks the rows NaN instead
        # and reads nothing out of bounds (the public function above raised).
        out = torch.ops.sedd.score_entropy(ls, xt, x0, sigma, graph)
        torch.cuda.synchronize()
        assert torch.isnan(out).any()
        return
    with pytest.raises(exc, match=match):  # the raw op checks the same way
        torch.ops.sedd.score_entropy(ls, xt, x0, sigma, graph)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_mixed_devices_are_rejected_cuda():
    ls, xt, x0, sigma = _args("cuda")
    for name, args in (("x_t", (ls, xt.cpu(), x0, sigma)), ("sigma", (ls, xt, x0, sigma.cpu()))):
        with pytest.raises(ValueError, match=f"{name} must be on the same device"):
            sk.score_entropy(*args, "absorb")
        with pytest.raises(RuntimeError, match=f"{name} must be on the same device"):
            torch.ops.sedd.score_entropy(*args, "absorb")


def test_backward_op_checks_grad_shape():
    ls, xt, x0, sigma = _args()
    with pytest.raises(ValueError, match=r"grad must have shape \[B, L\]"):
        torch.ops.sedd.score_entropy_backward(torch.ones(3), ls, xt, x0, sigma, "absorb")


@pytest.mark.parametrize("graph", GRAPHS)
def test_empty_tensors(device, graph):
    for B, L in [(0, 4), (3, 0)]:
        ls = torch.randn(B, L, 8, device=device, requires_grad=True)
        xt = torch.zeros(B, L, dtype=torch.long, device=device)
        out = sk.score_entropy(ls, xt, xt, torch.ones(B, device=device), graph)
        assert out.shape == (B, L)
        out.sum().backward()
        assert ls.grad.shape == ls.shape
