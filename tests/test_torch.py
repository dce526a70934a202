"""ce_fast.torch beyond torch's OpInfo samples (test_torch_opinfo.py): the
fall-throughs to torch, ce_fast's extras against the torch composition of
the same semantics, double backward, torch.compile, the custom operators'
registrations (opcheck), thread counts, retained graphs, the modules and
patch()."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import ce_fast.torch as ct  # noqa: E402
from ce_fast.torch import _bridge, _composite, _patch  # noqa: E402

f64 = torch.float64


def _fell(fn: Any) -> Any:
    """(result, how many calls fell through to torch)."""
    before = sum(_bridge.FALLBACKS.values())
    out = fn()
    return out, sum(_bridge.FALLBACKS.values()) - before


def _grads(loss: Any, leaves: list[Any]) -> tuple[Any, ...]:
    return torch.autograd.grad(loss.sum(), leaves)


def test_import_ce_fast_does_not_import_torch() -> None:
    code = "import sys, ce_fast; ce_fast.cross_entropy([[0.0, 1.0]], [1]); assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------
# What the kernels take, and what falls through to torch
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.complex64])
def test_other_dtypes_are_torchs(dtype: Any) -> None:
    x = torch.randn(4, 5).to(dtype)
    y = torch.tensor([0, 1, 2, 3])
    if dtype.is_complex:
        with pytest.raises(RuntimeError) as theirs:
            F.cross_entropy(x, y)
        with pytest.raises(RuntimeError) as ours:
            _fell(lambda: ct.cross_entropy(x, y))
        assert str(ours.value) == str(theirs.value)
        return
    # cross_entropy, binary_cross_entropy_with_logits, softmax, log_softmax
    # and logsumexp take 16-bit logits in their own kernels
    # (tests/test_torch_half.py); the other functions hand them to torch
    got, fell = _fell(lambda: ct.cross_entropy(x, y))
    assert fell == (dtype not in _bridge.HALF_DTYPES)
    torch.testing.assert_close(got, F.cross_entropy(x, y))
    got, fell = _fell(lambda: ct.logsumexp(x, -1))
    assert fell == (dtype not in _bridge.HALF_DTYPES)
    torch.testing.assert_close(got, torch.logsumexp(x, -1))
    t = torch.rand(4, 5).to(dtype)
    got, fell = _fell(lambda: ct.binary_cross_entropy_with_logits(x, t))
    assert fell == (dtype not in _bridge.HALF_DTYPES)
    torch.testing.assert_close(got, F.binary_cross_entropy_with_logits(x, t))
    lp = torch.log_softmax(torch.randn(4, 5), 1).to(dtype)
    got, fell = _fell(lambda: ct.kl_div(lp, t, reduction="batchmean"))
    assert fell == 1
    torch.testing.assert_close(got, F.kl_div(lp, t, reduction="batchmean"))


def test_meta_device_and_mixed_dtypes_are_torchs() -> None:
    x = torch.randn(4, 5, device="meta")
    y = torch.zeros(4, dtype=torch.int64, device="meta")
    got, fell = _fell(lambda: ct.cross_entropy(x, y))
    assert fell == 1 and got.device.type == "meta"
    # ce_fast's extras on a device the kernels cannot read: the torch composite
    got, fell = _fell(lambda: ct.cross_entropy(x, y, z_loss=0.1))
    assert fell == 1 and got.device.type == "meta"
    # float32 logits with float64 probabilities: torch promotes
    xs, q = torch.randn(4, 5), torch.rand(4, 5, dtype=f64)
    got, fell = _fell(lambda: ct.cross_entropy(xs, q))
    assert fell == 1 and got.dtype == f64
    torch.testing.assert_close(got, F.cross_entropy(xs, q))
    # int32 labels: torch's error
    with pytest.raises(RuntimeError, match="Long"):
        ct.cross_entropy(xs, torch.tensor([0, 1, 2, 3], dtype=torch.int32))


def test_legacy_arguments_and_weights_that_require_grad_are_torchs() -> None:
    x, y = torch.randn(4, 5, requires_grad=True), torch.tensor([0, 1, 2, 3])
    got, fell = _fell(lambda: ct.cross_entropy(x, y, size_average=False))
    assert fell == 1
    torch.testing.assert_close(got, F.cross_entropy(x, y, size_average=False))
    w = torch.rand(5, requires_grad=True)
    with pytest.raises(RuntimeError, match="weight"):  # torch's: no derivative for class weights
        _fell(lambda: ct.cross_entropy(x, y, weight=w))
    with pytest.raises(TypeError, match="size_average"):
        ct.cross_entropy(x, y, size_average=False, z_loss=0.1)


def test_errors_are_torchs_kind() -> None:
    x, y = torch.randn(4, 5), torch.tensor([0, 1, 2, 7])
    with pytest.raises(IndexError):
        ct.cross_entropy(x, y)
    with pytest.raises(ValueError, match="reduction"):
        ct.cross_entropy(x, torch.tensor([0, 1, 2, 3]), reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        ct.binary_cross_entropy_with_logits(x, torch.rand(4, 5), reduction="avg")
    with pytest.raises(ValueError):
        ct.binary_cross_entropy_with_logits(x, torch.rand(4, 1))  # torch: target size must match


@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_strided_inputs_are_read_in_place(dtype: Any) -> None:
    base = torch.randn(9, 12, dtype=dtype)
    x = base.t()[::2].requires_grad_()  # non-contiguous, class stride 9
    y = torch.randint(0, 9, (6,))
    got, fell = _fell(lambda: ct.cross_entropy(x, y, reduction="none"))
    assert fell == 0
    torch.testing.assert_close(got, F.cross_entropy(x, y, reduction="none"))
    torch.testing.assert_close(_grads(got, [x])[0], _grads(F.cross_entropy(x, y, reduction="none"), [x])[0])


# ---------------------------------------------------------------------------
# ce_fast's extras: the kernels against the torch composition
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("probs", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_extras_match_the_torch_composite(probs: bool, reduction: str) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(6, 5, 3, dtype=f64, generator=g).requires_grad_()
    t = torch.rand(6, 5, 3, dtype=f64, generator=g) if probs else torch.randint(0, 5, (6, 3), generator=g)
    w, sw = torch.rand(5, dtype=f64, generator=g) + 0.5, torch.rand(6, 3, dtype=f64, generator=g)
    opts = (w, sw, -100 if probs else 2, reduction, 0.1, 0.05, 4.0)
    got = ct.cross_entropy(x, t, w, ignore_index=opts[2], reduction=reduction, label_smoothing=0.1,
                           sample_weight=sw, z_loss=0.05, softcap=4.0)  # fmt: skip
    expected = _composite.cross_entropy(x, t, *opts)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(_grads(got, [x])[0], _grads(expected, [x])[0])
    fn = lambda x: ct.cross_entropy(x, t, w, ignore_index=opts[2], reduction=reduction, sample_weight=sw,  # noqa: E731
                                    z_loss=0.05, softcap=4.0)  # fmt: skip
    assert torch.autograd.gradcheck(fn, (x,))
    assert torch.autograd.gradgradcheck(fn, (x,))


def test_linear_extras_match_the_composition() -> None:
    g = torch.Generator().manual_seed(2)
    h = torch.randn(7, 4, dtype=f64, generator=g).requires_grad_()
    W = torch.randn(6, 4, dtype=f64, generator=g).requires_grad_()
    y = torch.randint(0, 6, (7,), generator=g)
    sw = torch.rand(7, dtype=f64, generator=g)
    kw = dict(sample_weight=sw, z_loss=0.1, softcap=2.0, label_smoothing=0.2)
    got = ct.linear_cross_entropy(h, W, y, **kw)  # type: ignore[arg-type]
    expected = _composite.cross_entropy(h @ W.T, y, None, sw, -100, "mean", 0.2, 0.1, 2.0)
    torch.testing.assert_close(got, expected)
    for a, b in zip(_grads(got, [h, W]), _grads(expected, [h, W])):
        torch.testing.assert_close(a, b)


def test_sample_weight_that_requires_grad_is_differentiated() -> None:
    x, y = torch.randn(4, 5, dtype=f64, requires_grad=True), torch.tensor([0, 1, 2, 3])
    sw = torch.rand(4, dtype=f64, requires_grad=True)
    got, fell = _fell(lambda: ct.cross_entropy(x, y, sample_weight=sw))
    assert fell == 1  # the composite
    assert torch.autograd.gradcheck(lambda x, s: ct.cross_entropy(x, y, sample_weight=s), (x, sw))


# ---------------------------------------------------------------------------
# Autograd: double backward, retained graphs, upstream scales
# ---------------------------------------------------------------------------


def test_double_backward() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(5, 4, dtype=f64, generator=g).requires_grad_()
    t = torch.rand(5, 4, dtype=f64, generator=g).requires_grad_()
    y = torch.tensor([0, 1, 2, 3, 1])
    W = torch.randn(3, 4, dtype=f64, generator=g).requires_grad_()
    pw = torch.rand(4, dtype=f64, generator=g)
    checks = [
        (lambda x, t: ct.cross_entropy(x, t, label_smoothing=0.1), (x, t)),
        (lambda x, t: ct.binary_cross_entropy_with_logits(x, t, pos_weight=pw), (x, t)),
        (lambda x: ct.logsumexp(x, 1), (x,)),
        (lambda x: ct.log_softmax(x, 0), (x,)),
        (lambda x: ct.softmax(x, 1), (x,)),
        (lambda x, W: ct.linear_cross_entropy(x, W, y % 3), (x, W)),
        (lambda x, W: ct.linear_cross_entropy(x, W, y % 3, reduction="none"), (x, W)),
    ]
    for fn, args in checks:
        assert torch.autograd.gradgradcheck(fn, args)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_retained_graph_and_upstream_scale(reduction: str) -> None:
    g = torch.Generator().manual_seed(4)
    h = torch.randn(9, 5, generator=g, requires_grad=True)
    W = torch.randn(7, 5, generator=g, requires_grad=True)
    b = torch.randn(7, generator=g, requires_grad=True)
    y = torch.randint(0, 7, (9,), generator=g)
    opts = torch.nn.LinearCrossEntropyOptions(batch_chunk_size=4)
    loss = ct.linear_cross_entropy(h, W, y, linear_bias=b, reduction=reduction, options=opts) * 3
    ref = F.linear_cross_entropy(h, W, y, linear_bias=b, reduction=reduction) * 3
    up = torch.rand(loss.shape, generator=g)
    first = torch.autograd.grad(loss, [h, W, b], up, retain_graph=True)
    second = torch.autograd.grad(loss, [h, W, b], up)
    expected = torch.autograd.grad(ref, [h, W, b], up)
    for a, c, e in zip(first, second, expected):
        assert torch.equal(a, c)  # bitwise: the recomputation is the forward's arithmetic
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)
    # .grad accumulates (the first backward may adopt the forward's buffers)
    for _ in range(2):
        ct.linear_cross_entropy(h, W, y, linear_bias=b, reduction=reduction).sum().backward()
    ref_loss = F.linear_cross_entropy(h, W, y, linear_bias=b, reduction=reduction)
    one = torch.autograd.grad(ref_loss.sum(), [W])[0]
    assert W.grad is not None
    torch.testing.assert_close(W.grad, 2 * one, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_threads_bitwise(dtype: Any) -> None:
    g = torch.Generator().manual_seed(5)
    x = torch.randn(300, 400, dtype=dtype, generator=g, requires_grad=True)
    y = torch.randint(0, 400, (300,), generator=g)
    prev = torch.get_num_threads()
    results = []
    try:
        for nt in (1, 2):
            torch.set_num_threads(nt)
            loss = ct.cross_entropy(x, y, label_smoothing=0.1)
            results.append((loss.detach(), *_grads(loss, [x])))
    finally:
        torch.set_num_threads(prev)
    for a, b in zip(*results):
        assert torch.equal(a, b)


# ---------------------------------------------------------------------------
# torch.compile and the operators' registrations
# ---------------------------------------------------------------------------


def test_compile_fullgraph_cross_entropy() -> None:
    torch._dynamo.reset()
    x = torch.randn(8, 5, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    fn = torch.compile(lambda x, y: ct.cross_entropy(x, y, label_smoothing=0.1, z_loss=1e-3), fullgraph=True)
    loss = fn(x, y)
    (gx,) = torch.autograd.grad(loss, [x])
    expected = ct.cross_entropy(x, y, label_smoothing=0.1, z_loss=1e-3)
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(gx, _grads(expected, [x])[0])


@pytest.mark.slow
@pytest.mark.parametrize("which", ["bce", "log_softmax", "softmax", "logsumexp", "linear"])
def test_compile_fullgraph_others(which: str) -> None:
    torch._dynamo.reset()
    x = torch.randn(8, 5, requires_grad=True)
    W = torch.randn(6, 5, requires_grad=True)
    fns = {
        "bce": lambda x: ct.binary_cross_entropy_with_logits(x, torch.ones_like(x) / 3),
        "log_softmax": lambda x: ct.log_softmax(x, 1).sum(),
        "softmax": lambda x: (ct.softmax(x, 0) ** 2).sum(),
        "logsumexp": lambda x: ct.logsumexp(x, 1).sum(),
        "linear": lambda x: ct.linear_cross_entropy(x, W, torch.arange(8) % 6),
    }
    fn = fns[which]
    loss = torch.compile(fn, fullgraph=True)(x)
    leaves = [x, W] if which == "linear" else [x]
    got = torch.autograd.grad(loss, leaves)
    expected = fn(x)
    torch.testing.assert_close(loss, expected)
    for a, b in zip(got, _grads(expected, leaves)):
        torch.testing.assert_close(a, b)


@pytest.mark.slow
def test_opcheck() -> None:
    x, y = torch.randn(6, 4, dtype=f64, requires_grad=True), torch.tensor([0, 1, 2, 3, 0, 1])
    W = torch.randn(3, 4, dtype=f64, requires_grad=True)
    ops = torch.ops.ce_fast
    torch.library.opcheck(ops.cross_entropy, (x, y, None, None, -100, "mean", 0.1, 0.0, 0.0))
    t = torch.rand(6, 4, dtype=f64)
    torch.library.opcheck(ops.binary_cross_entropy_with_logits, (x, t, None, None, "sum"))
    torch.library.opcheck(ops.log_softmax, (x, 1))
    torch.library.opcheck(ops.softmax, (x, 0))
    torch.library.opcheck(ops.logsumexp, (x, 1))
    args = (x, W, y % 3, None, None, None, -100, "mean", 0.0, 0.0, 0.0, 2, True, True, False)
    torch.library.opcheck(ops.linear_cross_entropy, args)


# ---------------------------------------------------------------------------
# Modules and patch()
# ---------------------------------------------------------------------------


def test_modules() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(5, 4, generator=g, requires_grad=True)
    y = torch.randint(0, 4, (5,), generator=g)
    w = torch.rand(4, generator=g)
    ours = ct.CrossEntropyLoss(weight=w, label_smoothing=0.1)
    theirs = torch.nn.CrossEntropyLoss(w, label_smoothing=0.1)
    torch.testing.assert_close(ours(x, y), theirs(x, y))
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    sw = torch.rand(5, generator=g)
    torch.testing.assert_close(
        ct.CrossEntropyLoss(z_loss=0.1, softcap=3.0)(x, y, sw),
        ct.cross_entropy(x, y, sample_weight=sw, z_loss=0.1, softcap=3.0),
    )
    t = torch.rand(5, 4, generator=g)
    pw = torch.rand(4, generator=g)
    bce, bce_t = ct.BCEWithLogitsLoss(pos_weight=pw), torch.nn.BCEWithLogitsLoss(pos_weight=pw)
    torch.testing.assert_close(bce(x, t), bce_t(x, t))
    torch.manual_seed(0)
    lin = ct.LinearCrossEntropyLoss(4, 6, bias=True)
    torch.manual_seed(0)
    lin_t = torch.nn.LinearCrossEntropyLoss(4, 6, bias=True)
    torch.testing.assert_close(lin(x, y), lin_t(x, y))
    assert lin.state_dict().keys() == lin_t.state_dict().keys()


def test_patch_and_unpatch() -> None:
    x, y = torch.randn(5, 4), torch.tensor([0, 1, 2, 3, 0])
    before = torch.nn.CrossEntropyLoss()  # torch's class, made before patch()
    try:
        with ct.patch():
            assert all(_patch.patched().values())
            assert torch.nn.CrossEntropyLoss is ct.CrossEntropyLoss
            assert F.cross_entropy is ct.cross_entropy
            # torch's module calls F.cross_entropy at run time: ce_fast's
            out = before(x.requires_grad_(), y)
            assert type(out.grad_fn).__name__ in ("_EagerBackward", "_CommonBackward")
            ct.patch()  # idempotent
        assert not any(_patch.patched().values())
    finally:
        ct.unpatch()
    assert F.cross_entropy is _bridge.TORCH["cross_entropy"]
    assert torch.nn.CrossEntropyLoss is _patch._TORCH_MODULES["CrossEntropyLoss"]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", [{}, {"label_smoothing": 0.1, "z_loss": 1e-3, "ignore_index": 2}])
def test_eager_fused_backward(reduction: str, options: dict[str, Any]) -> None:
    """Eager calls whose logits need a gradient run the fused kernel in the
    forward: the backward scales its gradient. It equals the operator's
    (gradient from the saved lse) to rounding, torch's to rounding, and a
    retained graph's second backward gives the same bits as the first."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(33, 7, 5, dtype=f64, generator=g, requires_grad=True)
    y = torch.randint(0, 7, (33, 5), generator=g)
    up = torch.rand(33, 5, dtype=f64, generator=g) if reduction == "none" else torch.tensor(2.5, dtype=f64)
    loss = ct.cross_entropy(x, y, reduction=reduction, **options)
    assert loss.grad_fn is not None and "Eager" in type(loss.grad_fn).__name__
    first = torch.autograd.grad(loss, x, up, retain_graph=True)[0]
    second = torch.autograd.grad(loss, x, up)[0]
    assert torch.equal(first, second)
    want = torch.autograd.grad(
        F.cross_entropy(x, y, reduction=reduction, **options)
        if not options.get("z_loss")
        else _composite.cross_entropy(
            x,
            y,
            None,
            None,
            options["ignore_index"],
            reduction,
            options["label_smoothing"],
            options["z_loss"],
            0.0,
        ),
        x,
        up,
    )[0]
    torch.testing.assert_close(first, want, rtol=1e-12, atol=1e-14)
    # the operator's path (torch.compile traces it): the gradient from the lse
    op = torch.ops.ce_fast.cross_entropy(
        x,
        y,
        None,
        None,
        options.get("ignore_index", -100),
        reduction,
        options.get("label_smoothing", 0.0),
        options.get("z_loss", 0.0),
        0.0,
    )[0]
    torch.testing.assert_close(torch.autograd.grad(op, x, up)[0], first, rtol=1e-13, atol=1e-15)


def test_eager_fused_gradient_is_handed_over_without_a_copy(monkeypatch: Any) -> None:
    from ce_fast.torch import _categorical as tc

    made = []
    real = tc._forward_fused

    def spy(*args: Any) -> Any:
        out = real(*args)
        made.append(out[2].data_ptr())
        return out

    monkeypatch.setattr(tc, "_forward_fused", spy)
    x = torch.randn(64, 10, requires_grad=True)
    y = torch.randint(0, 10, (64,))
    ct.cross_entropy(x, y, label_smoothing=0.1).backward()  # an option: the _Eager path
    assert len(made) == 1 and x.grad.data_ptr() == made[0]  # adopted as .grad, not copied


def test_common_call_takes_the_lean_path_and_matches_the_operator() -> None:
    """The common call (no options) goes through _Common: its gradient is
    adopted without a copy, a retained graph's second backward gives the same
    bits, and both equal the operator's to rounding."""
    for reduction in ("mean", "sum", "none"):
        x = torch.randn(40, 9, dtype=f64, requires_grad=True)
        y = torch.randint(0, 9, (40,))
        loss = ct.cross_entropy(x, y, reduction=reduction)
        assert type(loss.grad_fn).__name__ == "_CommonBackward"
        up = torch.rand(40, dtype=f64) if reduction == "none" else torch.tensor(0.5, dtype=f64)
        first = torch.autograd.grad(loss, x, up, retain_graph=True)[0]
        assert torch.equal(first, torch.autograd.grad(loss, x, up)[0])
        op = torch.ops.ce_fast.cross_entropy(x, y, None, None, -100, reduction, 0.0, 0.0, 0.0)[0]
        torch.testing.assert_close(torch.autograd.grad(op, x, up)[0], first, rtol=1e-13, atol=1e-15)
        with torch.no_grad():
            assert torch.equal(ct.cross_entropy(x, y, reduction=reduction), loss.detach())
    x = torch.randn(64, 10, requires_grad=True)
    ct.cross_entropy(x, torch.randint(0, 10, (64,))).backward()
    assert x.grad is not None
