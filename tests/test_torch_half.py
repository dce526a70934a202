"""ce_fast.torch.cross_entropy on float16 and bfloat16 tensors: the 16-bit
kernels, not torch, and results in torch's dtypes. The oracle is torch's
float64 computation on the same (16-bit) values: each gradient element
within half a unit of the 16-bit format (correctly rounded, up to the
float32 arithmetic), the loss to float32 accuracy."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import ce_fast.torch as ct  # noqa: E402
from ce_fast.torch import _bridge  # noqa: E402

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

    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    la, lb = f(a, y), compiled(b, y)
    la.backward()
    lb.backward()
    assert la.dtype == lb.dtype == dtype
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
