"""ce_fast.torch.cross_entropy on float16 and bfloat16 tensors: the 16-bit
kernels, not torch, and results in torch's dtypes. The oracle is torch's
float64 computation on the same (16-bit) values: each gradient element
within half a unit of the 16-bit format (correctly rounded, up to the
float32 arithmetic), the loss to float32 accuracy."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import ce_fast.torch as ct  # noqa: E402
from ce_fast.torch import _bridge  # noqa: E402
from tests.test_half import BF16, F16  # noqa: E402
from tests.test_linear_half import U, allowances, ulps_beyond  # noqa: E402

# (bits of precision, smallest subnormal) of each format
FORMATS = {torch.bfloat16: (8, 2.0**-133), torch.float16: (11, 2.0**-24)}
HALF = pytest.mark.parametrize("dtype", sorted(_bridge.HALF_DTYPES, key=str), ids=str)


def _ulps(got: Any, exact: Any, dtype: Any) -> float:
    bits, tiny = FORMATS[dtype]
    spacing = (exact.abs() * 2.0 ** (1 - bits)).clamp_min(tiny)
    return float(((got.detach().double() - exact.detach()).abs() / spacing).max())


def _case(dtype: Any, N: int = 48, C: int = 37, seed: int = 0) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(seed)
    x = (3 * torch.randn(N, C, generator=g)).to(dtype)
    return x, torch.randint(0, C, (N,), generator=g)


OPTIONS = [
    {},
    {"label_smoothing": 0.2},
    {"ignore_index": 3},
    {"weight": True},
    {"z_loss": 1e-3, "softcap": 5.0},
    {"sample_weight": True},
]


@HALF
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("unit_upstream", [True, False], ids=["up1", "upstream"])
def test_against_float64(dtype: Any, reduction: str, opts: dict[str, Any], unit_upstream: bool) -> None:
    x, y = _case(dtype)
    kw = dict(opts)
    if kw.pop("weight", None):
        kw["weight"] = torch.rand(x.shape[1], generator=torch.Generator().manual_seed(1)).to(dtype)
    if kw.pop("sample_weight", None):
        kw["sample_weight"] = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(2)).to(dtype)
    before = sum(_bridge.FALLBACKS.values())
    xg = x.clone().requires_grad_()
    loss = ct.cross_entropy(xg, y, reduction=reduction, **kw)
    assert sum(_bridge.FALLBACKS.values()) == before, "fell through to torch"
    assert loss.dtype == dtype  # torch's rule: the loss in the input's dtype
    up = torch.ones_like(loss)
    if not unit_upstream:
        up = (torch.rand(loss.shape, dtype=torch.float64) + 0.5).to(dtype)
    (grad,) = torch.autograd.grad(loss, xg, up)
    assert grad.dtype == dtype

    x64 = x.double().requires_grad_()
    kw64 = {k: v.double() if isinstance(v, torch.Tensor) else v for k, v in kw.items()}
    want = ct.cross_entropy(x64, y, reduction=reduction, **kw64)  # float64: checked against F elsewhere
    if not kw64.keys() & {"z_loss", "softcap", "sample_weight"}:
        torch_loss = F.cross_entropy(x64, y, reduction=reduction, **kw64)
        torch.testing.assert_close(want, torch_loss, rtol=1e-12, atol=0)
    (want_g,) = torch.autograd.grad(want, x64, up.double())
    # the loss: float32 accuracy, then rounded to the 16-bit format
    assert _ulps(loss, want.detach(), dtype) <= 0.5 + 1e-3
    assert _ulps(grad, want_g, dtype) <= 0.5 + 1e-3


@HALF
def test_threads_give_the_same_bits(dtype: Any) -> None:
    x, y = _case(dtype, N=300, C=129)
    out = []
    for n in (1, 2):
        torch.set_num_threads(n)
        xg = x.clone().requires_grad_()
        loss = ct.cross_entropy(xg, y, label_smoothing=0.1)
        loss.backward()
        out.append((loss.detach(), xg.grad))
    torch.set_num_threads(2)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


@HALF
def test_probability_targets_and_retained_graph(dtype: Any) -> None:
    x, _ = _case(dtype)
    p = torch.softmax(torch.randn(x.shape, generator=torch.Generator().manual_seed(3)), 1).to(dtype)
    xg = x.clone().requires_grad_()
    loss = ct.cross_entropy(xg, p)
    (g1,) = torch.autograd.grad(loss, xg, retain_graph=True)
    (g2,) = torch.autograd.grad(loss, xg)
    assert torch.equal(g1, g2)
    x64 = x.double().requires_grad_()
    (want,) = torch.autograd.grad(F.cross_entropy(x64, p.double()), x64)
    assert _ulps(g1, want, dtype) <= 0.5 + 1e-3


@HALF
def test_compiled_fullgraph(dtype: Any) -> None:
    x, y = _case(dtype)

    def f(z: Any, t: Any) -> Any:
        return ct.cross_entropy(z, t, label_smoothing=0.1)

    _compiled_is_eager(lambda z: f(z, y), x)


def _compiled_is_eager(f: Any, x: Any) -> None:
    """torch.compile(fullgraph) of f: the loss and x's gradient bitwise
    those of eager f, in x's dtype."""
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    la, lb = f(a), compiled(b)
    la.backward()
    lb.backward()
    assert la.dtype == lb.dtype == x.dtype
    torch.testing.assert_close(lb, la, rtol=0, atol=0)
    torch.testing.assert_close(b.grad, a.grad, rtol=0, atol=0)


@HALF
@pytest.mark.parametrize("fn", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [0, 1, -1])
def test_softmax_family_against_float64(dtype: Any, fn: str, dim: int) -> None:
    """The result correctly rounded to the input's format, through the
    16-bit kernels; the backward is torch's own on that result."""
    x, _ = _case(dtype)
    x3 = x.reshape(6, 8, -1)
    before = sum(_bridge.FALLBACKS.values())
    got = getattr(ct, fn)(x3, dim)
    assert sum(_bridge.FALLBACKS.values()) == before, "fell through to torch"
    assert got.dtype == dtype
    want = getattr(F, fn)(x3.double(), dim)
    assert _ulps(got, want, dtype) <= 0.5 + 1e-3
    xg = x3.clone().requires_grad_()
    up = torch.randn(x3.shape, generator=torch.Generator().manual_seed(4)).to(dtype)
    (g,) = torch.autograd.grad(getattr(ct, fn)(xg, dim), xg, up)
    xt = x3.clone().requires_grad_()
    (gt,) = torch.autograd.grad(getattr(F, fn)(xt, dim), xt, up)
    torch.testing.assert_close(g, gt, rtol=2e-2, atol=2e-2 * float(gt.abs().max()))


@HALF
@pytest.mark.parametrize("dims", [1, 0, (0, 2), -1])
@pytest.mark.parametrize("keepdim", [False, True])
def test_logsumexp_against_float64(dtype: Any, dims: Any, keepdim: bool) -> None:
    """Reduced in float32 and rounded once to the input's format (within half
    a unit of the exact value, up to float32 arithmetic); the gradient
    softmax times the upstream, also rounded once."""
    x, _ = _case(dtype)
    x3 = x.reshape(6, 8, -1)
    before = sum(_bridge.FALLBACKS.values())
    xg = x3.clone().requires_grad_()
    got = ct.logsumexp(xg, dims, keepdim)
    assert sum(_bridge.FALLBACKS.values()) == before, "fell through to torch"
    x64 = x3.double().requires_grad_()
    want = torch.logsumexp(x64, dims, keepdim)
    assert got.dtype == dtype and got.shape == want.shape
    assert _ulps(got, want, dtype) <= 0.5 + 1e-3
    up = torch.randn(want.shape, generator=torch.Generator().manual_seed(5)).to(dtype)
    (g,) = torch.autograd.grad(got, xg, up)
    (g64,) = torch.autograd.grad(want, x64, up.double())
    assert g.dtype == dtype
    assert _ulps(g, g64, dtype) <= 0.5 + 1e-3


# ---------------------------------------------------------------------------
# binary_cross_entropy_with_logits
# ---------------------------------------------------------------------------

BCE_OPTIONS = [
    {},
    {"weight": "row"},
    {"pos_weight": "row"},
    {"weight": "full", "pos_weight": "row"},
]


def _bce_case(dtype: Any, soft: bool, opts: dict[str, Any], N: int = 48, K: int = 37) -> tuple[Any, ...]:
    g = torch.Generator().manual_seed(6)
    x = (4 * torch.randn(N, K, generator=g)).to(dtype)
    t = torch.rand(N, K, generator=g) if soft else torch.randint(0, 2, (N, K), generator=g).double()
    kw = {}
    for name, kind in opts.items():
        shape = (K,) if kind == "row" else (N, K)
        kw[name] = (torch.rand(shape, generator=g, dtype=torch.float64) * 2 + 0.25).to(dtype)
    return x, t.to(dtype), kw


def _bce_slack(x: Any, t: Any, kw: dict[str, Any], up: Any, reduction: str) -> Any:
    """A few float32 units of the magnitude of the gradient's two terms,
    w (1 - t) sigmoid(x) and w pw t sigmoid(-x), whose difference it is: the
    float32 arithmetic's error before the one rounding to 16 bits (soft
    targets can make the difference far smaller than the terms)."""
    x64, t64 = x.double(), t.double()
    terms = (1 - t64).abs() * torch.sigmoid(x64) + t64.abs() * torch.sigmoid(-x64) * kw.get(
        "pos_weight", torch.ones(())
    ).double().abs()
    terms = terms * kw.get("weight", torch.ones(())).double().abs() * up.double().abs()
    if reduction == "mean":
        terms = terms / x.numel()
    return 8 * 2.0**-24 * terms


def _ulps_beyond(got: Any, exact: Any, dtype: Any, slack: Any) -> float:
    """As _ulps, after ``slack`` (an absolute allowance) is taken off each error."""
    bits, tiny = FORMATS[dtype]
    spacing = (exact.abs() * 2.0 ** (1 - bits)).clamp_min(tiny)
    err = ((got.detach().double() - exact.detach()).abs() - slack).clamp_min(0)
    return float((err / spacing).max())


@HALF
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("opts", BCE_OPTIONS, ids=lambda o: "-".join(f"{k}_{v}" for k, v in o.items()) or "0")
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("unit_upstream", [True, False], ids=["up1", "upstream"])
def test_bce_with_logits_against_float64(
    dtype: Any, reduction: str, opts: dict[str, Any], soft: bool, unit_upstream: bool
) -> None:
    """The loss (in the input's dtype, as torch's) and the gradient within
    half a unit of the 16-bit format of torch's float64 values on the same
    16-bit operands, up to float32 arithmetic; through the 16-bit kernel."""
    x, t, kw = _bce_case(dtype, soft, opts)
    before = sum(_bridge.FALLBACKS.values())
    xg = x.clone().requires_grad_()
    loss = ct.binary_cross_entropy_with_logits(xg, t, reduction=reduction, **kw)
    assert sum(_bridge.FALLBACKS.values()) == before, "fell through to torch"
    assert loss.dtype == dtype and loss.shape == (x.shape if reduction == "none" else ())
    up = torch.ones_like(loss)
    if not unit_upstream:
        up = torch.rand(loss.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64) + 0.5
        up = up.to(dtype)
    (grad,) = torch.autograd.grad(loss, xg, up)
    assert grad.dtype == dtype

    x64 = x.double().requires_grad_()
    kw64 = {k: v.double() for k, v in kw.items()}
    want = F.binary_cross_entropy_with_logits(x64, t.double(), reduction=reduction, **kw64)
    (want_g,) = torch.autograd.grad(want, x64, up.double())
    # the loss: non-negative terms (no cancellation), float32 accuracy
    assert _ulps(loss, want.detach(), dtype) <= 0.5 + 1e-3
    slack = _bce_slack(x, t, kw, up if reduction == "none" else up.reshape(()), reduction)
    assert _ulps_beyond(grad, want_g, dtype, slack) <= 0.5 + 1e-3
    if not soft:  # one term per element: no cancellation, no slack needed
        assert _ulps(grad, want_g, dtype) <= 0.5 + 1e-3


@HALF
def test_bce_with_logits_target_gradient(dtype: Any) -> None:
    """Soft targets that require grad: the target's gradient (computed in
    float64, rounded once to the input's dtype) next to the input's."""
    x, t, kw = _bce_case(dtype, True, {"weight": "row", "pos_weight": "row"})
    xg, tg = x.clone().requires_grad_(), t.clone().requires_grad_()
    loss = ct.binary_cross_entropy_with_logits(xg, tg, **kw)
    gx, gt = torch.autograd.grad(loss, (xg, tg))
    assert gx.dtype == gt.dtype == dtype
    x64, t64 = x.double().requires_grad_(), t.double().requires_grad_()
    want = F.binary_cross_entropy_with_logits(x64, t64, **{k: v.double() for k, v in kw.items()})
    wx, wt = torch.autograd.grad(want, (x64, t64))
    assert _ulps(gt, wt, dtype) <= 0.5 + 1e-3
    assert _ulps_beyond(gx, wx, dtype, _bce_slack(x, t, kw, torch.ones(()), "mean")) <= 0.5 + 1e-3


@HALF
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bce_with_logits_threads_give_the_same_bits(dtype: Any, reduction: str) -> None:
    """More than one block of the kernel (65536 elements) per thread count."""
    g = torch.Generator().manual_seed(8)
    x = (4 * torch.randn(300, 451, generator=g)).to(dtype)
    t, pw = torch.rand(300, 451, generator=g).to(dtype), torch.rand(451, generator=g).to(dtype)
    out = []
    for n in (1, 2):
        torch.set_num_threads(n)
        xg = x.clone().requires_grad_()
        loss = ct.binary_cross_entropy_with_logits(xg, t, pos_weight=pw, reduction=reduction)
        loss.backward(torch.full_like(loss, 0.75))
        out.append((loss.detach(), xg.grad))
    torch.set_num_threads(2)
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


@HALF
def test_bce_with_logits_compiled_fullgraph(dtype: Any) -> None:
    x, t, kw = _bce_case(dtype, True, {"pos_weight": "row"})

    def f(z: Any) -> Any:
        return ct.binary_cross_entropy_with_logits(z, t, **kw) * 3

    _compiled_is_eager(f, x)


@HALF
def test_bce_with_logits_opcheck(dtype: Any) -> None:
    """The operators' fake (meta) results have the dtypes of the real ones."""
    x, t, kw = _bce_case(dtype, True, {"weight": "row"}, N=6, K=5)
    ops = torch.ops.ce_fast
    for reduction in ("sum", "none"):
        torch.library.opcheck(
            ops.binary_cross_entropy_with_logits, (x.requires_grad_(), t, kw["weight"], None, reduction)
        )


# ---------------------------------------------------------------------------
# linear_cross_entropy
# ---------------------------------------------------------------------------


def _lce_case(dtype: Any, bias: bool) -> tuple[Any, ...]:
    g = torch.Generator().manual_seed(9)
    N, C, D = 70, 45, 24
    h = torch.randn(N, D, generator=g).to(dtype)
    w = (torch.randn(C, D, generator=g) * 3 / D**0.5).to(dtype)
    b = torch.randn(C, generator=g).to(dtype) if bias else None
    return h, w, b, torch.randint(0, C, (N,), generator=g)


@HALF
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("unit_upstream", [True, False], ids=["up1", "upstream"])
@pytest.mark.parametrize("frozen", [False, True], ids=["all", "frozen_weight"])
def test_linear_cross_entropy_against_float64(
    dtype: Any, reduction: str, bias: bool, unit_upstream: bool, frozen: bool
) -> None:
    """Through the 16-bit layer (no fall-through): the loss and every
    gradient in the input's dtype, within half a unit of the format of the
    float64 values plus the float32 error bound of tests/test_linear_half.py
    (an upstream gradient other than 1 applied before the one rounding)."""
    h, w, b, y = _lce_case(dtype, bias)
    leaves = [h.clone().requires_grad_(), w.clone().requires_grad_(not frozen)]
    leaves += [] if b is None else [b.clone().requires_grad_()]
    before = sum(_bridge.FALLBACKS.values())
    chunks = SimpleNamespace(batch_chunk_size=16)
    loss = ct.linear_cross_entropy(leaves[0], leaves[1], y, linear_bias=leaves[2] if bias else None,
                                   reduction=reduction, options=chunks)  # fmt: skip
    assert sum(_bridge.FALLBACKS.values()) == before, "fell through to torch"
    assert loss.dtype == dtype
    up = torch.ones_like(loss)
    if not unit_upstream:
        up = torch.rand(loss.shape, generator=torch.Generator().manual_seed(10), dtype=torch.float64) + 0.5
        up = up.to(dtype)
    wanted = [t for t in leaves if t.requires_grad]
    grads = torch.autograd.grad(loss, wanted, up)
    assert all(gr.dtype == dtype for gr in grads)

    wide = [t.double() for t in (h, w, b) if t is not None]
    x64 = [t.clone().requires_grad_(lf.requires_grad) for t, lf in zip(wide, leaves)]
    want = F.cross_entropy(x64[0] @ x64[1].T + (x64[2] if bias else 0), y, reduction=reduction)
    exact = torch.autograd.grad(want, [t for t in x64 if t.requires_grad], up.double())
    args = {
        "hidden": wide[0].numpy(), "weight": wide[1].numpy(), "target": y.numpy(),
        "bias": wide[2].numpy() if bias else None,
    }  # fmt: skip
    kw = {"reduction": reduction, "grad_output": up.double().numpy() if reduction == "none" else float(up)}
    allow = allowances(args, kw)
    names = [n for n, lf in zip(("d_hidden", "d_weight", "d_bias"), leaves) if lf.requires_grad]
    np_dt = {torch.float16: F16, torch.bfloat16: BF16}[dtype]
    exact_loss = want.detach().numpy()
    # the loss: its float32 value (within A and a float32 rounding), rounded once
    loss_allow = 2 * (np.asarray(allow["loss"]) + U * np.abs(exact_loss))
    assert ulps_beyond(np_dt, loss.detach().double().numpy(), exact_loss, loss_allow) <= 0.5 + 1e-3
    for name, got, ex in zip(names, grads, exact):
        assert ulps_beyond(np_dt, got.double().numpy(), ex.numpy(), 2 * allow[name]) <= 0.5 + 1e-3, name


@HALF
def test_linear_cross_entropy_retained_graph_compiled_and_threads(dtype: Any) -> None:
    """A second backward through a retained graph, torch.compile(fullgraph)
    and every thread count give the same bits as the eager first backward
    (with an upstream gradient other than 1 too: recomputed, not scaled)."""
    h, w, b, y = _lce_case(dtype, True)
    chunks = SimpleNamespace(batch_chunk_size=16)

    def f(a: Any, c: Any, d: Any) -> Any:
        return ct.linear_cross_entropy(a, c, y, linear_bias=d, label_smoothing=0.1, options=chunks)

    def run(fn: Any, up: float, twice: bool = False) -> list[Any]:
        leaves = [t.clone().requires_grad_() for t in (h, w, b)]
        loss = fn(*leaves)
        grads = torch.autograd.grad(loss, leaves, torch.tensor(up, dtype=dtype), retain_graph=twice)
        if twice:
            grads = torch.autograd.grad(loss, leaves, torch.tensor(up, dtype=dtype))
        return [loss.detach(), *grads]

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    for up in (1.0, 0.75):
        want = run(f, up)
        assert want[0].dtype == dtype and all(g.dtype == dtype for g in want[1:])
        others = [run(f, up, twice=True), run(compiled, up)]
        torch.set_num_threads(1)
        try:
            others.append(run(f, up))
        finally:
            torch.set_num_threads(2)
        for got in others:
            for a, c in zip(got, want):
                assert torch.equal(a, c)
