"""ce_fast.torch's divergences: kl_div against torch.nn.functional.kl_div
(bit for bit: values, warnings, errors, gradients), and kl_divergence /
js_divergence from logits against float64 compositions of torch's
log_softmax and F.kl_div on every option, finite differences (gradcheck),
the fused forward, torch.compile, the operators' registrations, patch() and
bad input."""

from __future__ import annotations

import dataclasses
import functools
import itertools
import warnings
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import ce_fast  # noqa: E402
import ce_fast.torch as ct  # noqa: E402
from ce_fast.torch import _bridge, _patch  # noqa: E402
from ce_fast.torch import _divergence as tdiv  # noqa: E402
from ce_fast.torch import _kl_div as tkl  # noqa: E402

f64 = torch.float64
TORCH_KL_DIV = _bridge.TORCH["kl_div"]


def _fell(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """(fn's result, how many calls fell through to torch or the composite)."""
    before = sum(_bridge.FALLBACKS.values())
    out = fn(*args, **kwargs)
    return out, sum(_bridge.FALLBACKS.values()) - before


def _same(a: Any, b: Any) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def _quiet(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """fn's result, its warnings (kl_div's "mean") silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------
# kl_div: torch's function, bit for bit
# ---------------------------------------------------------------------------

KL_DIV_REDUCTIONS = ["none", "mean", "batchmean", "sum"]


def _kl_div_operands(shape_x: tuple[int, ...], shape_t: tuple[int, ...], dtype: Any, log_target: bool) -> Any:
    g = torch.Generator().manual_seed(sum(shape_x) + 7 * len(shape_t))
    x = torch.randn(shape_x, dtype=dtype, generator=g)
    x = x.log_softmax(-1) if shape_x else x
    t = torch.rand(shape_t, dtype=dtype, generator=g)
    if t.numel() > 2:
        t.view(-1)[1] = 0.0  # a zero probability: xlogy's 0
    return x, (t.log() if log_target else t)


SAME_SHAPES = [((4, 5), (4, 5)), ((2, 3, 4), (2, 3, 4)), ((5,), (5,)), ((), ()), ((300, 500), (300, 500))]
BROADCASTS = [((4, 5), (1, 5)), ((1, 5), (3, 5))]


def _close(got: Any, expected: Any, dtype: Any) -> None:
    """Agreement to rounding: the kernel's log / exp are ce_fast's and its
    sums are accumulated in float64."""
    tol = {"rtol": 1e-12, "atol": 1e-14} if dtype == f64 else {"rtol": 2e-6, "atol": 1e-7}
    torch.testing.assert_close(got, expected, equal_nan=True, **tol)


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", KL_DIV_REDUCTIONS)
@pytest.mark.parametrize("shapes", SAME_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_kl_div_kernel_matches_torch(shapes: Any, reduction: str, log_target: bool, dtype: Any) -> None:
    x, t = _kl_div_operands(*shapes, dtype, log_target)
    x.requires_grad_()
    kw = dict(reduction=reduction, log_target=log_target)
    got, fell = _fell(_quiet, ct.kl_div, x, t, **kw)
    expected = _quiet(F.kl_div, x, t, **kw)
    assert fell == 0  # the kernel's
    assert got.shape == expected.shape and got.dtype == expected.dtype
    _close(got, expected, dtype)
    up = torch.rand(expected.shape, dtype=dtype) + 0.5
    _close(torch.autograd.grad(got, [x], up)[0], torch.autograd.grad(expected, [x], up)[0], dtype)
    with torch.no_grad():
        _close(_quiet(ct.kl_div, x, t, **kw), expected, dtype)


@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("reduction", KL_DIV_REDUCTIONS)
@pytest.mark.parametrize("shapes", SAME_SHAPES[:4] + BROADCASTS)
def test_kl_div_is_torchs_where_the_kernel_declines(shapes: Any, reduction: str, log_target: bool) -> None:
    """Broadcasting, a target that requires grad, 16-bit dtypes: torch's
    operator, bit for bit (both gradients)."""
    x, t = _kl_div_operands(*shapes, f64, log_target)
    x.requires_grad_()
    t.requires_grad_()
    kw = dict(reduction=reduction, log_target=log_target)
    for a, b in [(x, t), (x.detach().half(), t.detach().half())]:
        got, fell = _fell(_quiet, ct.kl_div, a, b, **kw)
        expected = _quiet(F.kl_div, a, b, **kw)
        assert fell == 1
        _same(got, expected)
    leaves = [x, t]
    got, expected = _quiet(ct.kl_div, x, t, **kw), _quiet(F.kl_div, x, t, **kw)
    for a, b in zip(torch.autograd.grad(got.sum(), leaves), torch.autograd.grad(expected.sum(), leaves)):
        _same(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_kl_div_edge_values_are_torchs(dtype: Any) -> None:
    inf, nan = float("inf"), float("nan")
    x = torch.tensor([[-inf, -1.0, 0.5, nan, -2.0, -inf, -1.0], [0.0, -inf, inf, -1.0, -3.0, -0.1, -1e30]])
    t = torch.tensor([[0.0, 0.0, -0.5, 0.3, nan, 0.2, -inf], [1.0, 0.2, 0.0, inf, 0.4, 1e-45, 1e-30]])
    x, t = x.to(dtype), t.to(dtype)
    for log_target, reduction in itertools.product([False, True], KL_DIV_REDUCTIONS):
        kw = dict(reduction=reduction, log_target=log_target)
        got, fell = _fell(_quiet, ct.kl_div, x, t, **kw)
        assert fell == 0
        _close(got, _quiet(F.kl_div, x, t, **kw), dtype)
        # row by row too: each NaN / inf where torch has it
        for r in range(2):
            _close(_quiet(ct.kl_div, x[r], t[r], **kw), _quiet(F.kl_div, x[r], t[r], **kw), dtype)


def test_kl_div_gradients_match_finite_differences() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, dtype=f64, generator=g).log_softmax(1).requires_grad_()
    t = (torch.rand(3, 4, dtype=f64, generator=g) + 0.1).requires_grad_()
    for reduction, log_target in itertools.product(KL_DIV_REDUCTIONS, [False, True]):
        fn = functools.partial(_quiet, ct.kl_div, reduction=reduction, log_target=log_target)
        assert torch.autograd.gradcheck(fn, (x, t))  # torch's (the target requires grad)
        assert torch.autograd.gradgradcheck(fn, (x, t))
        fx = functools.partial(fn, target=t.detach())  # the kernel's (double backward: torch's)
        assert torch.autograd.gradcheck(fx, (x,))
        assert torch.autograd.gradgradcheck(fx, (x,))


def test_kl_div_threads_bitwise() -> None:
    x, t = _kl_div_operands((300, 700), (300, 700), torch.float32, False)
    old = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            xx = x.clone().requires_grad_()
            loss = ct.kl_div(xx, t, reduction="sum")
            results.append((loss, torch.autograd.grad(loss, [xx])[0]))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_kl_div_forward_runs_the_fused_kernel_once(monkeypatch: Any) -> None:
    calls: list[bool] = []
    run = tkl._run

    def counted(args: Any, want_grad: bool, grad_output: Any) -> Any:
        calls.append(want_grad)
        return run(args, want_grad, grad_output)

    monkeypatch.setattr(tkl, "_run", counted)
    monkeypatch.setattr(tkl, "_FUSED", dataclasses.replace(tkl._FUSED, run=counted))
    x, t = _kl_div_operands((5, 6), (5, 6), torch.float32, False)
    x.requires_grad_()
    loss = ct.kl_div(x, t, reduction="batchmean")
    loss.backward(retain_graph=True)
    assert calls == [True]  # loss and gradient in one pass; the backward hands it over
    first = x.grad.clone()
    x.grad = None
    loss.backward(torch.tensor(3.0))  # a retained graph: the kernel again, scaled
    assert calls == [True, True]
    torch.testing.assert_close(x.grad, 3 * first)
    torch.testing.assert_close(first, -t / 5)


def test_kl_div_warnings_are_torchs() -> None:
    x, t = _kl_div_operands((3, 4), (3, 4), torch.float32, False)

    def caught(fn: Any, **kw: Any) -> list[str]:
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter("always")
            fn(x, t, **kw)
        return [str(m.message) for m in w]

    reductions = [{"reduction": r} for r in ("mean", "batchmean", "elementwise_mean")]
    legacy = [{"size_average": False}, {"reduce": False}, {"size_average": True, "reduce": True}]
    for kw in [{}, *reductions, *legacy]:
        ours, theirs = caught(ct.kl_div, **kw), caught(F.kl_div, **kw)
        assert ours == theirs, kw
        assert ours or kw == {"reduction": "batchmean"}
    # the mean warning points at the caller, as torch's
    with pytest.warns(UserWarning, match="batchmean") as record:
        ct.kl_div(x, t)
    assert record[0].filename == __file__


@pytest.mark.parametrize("size_average", [None, True, False])
@pytest.mark.parametrize("reduce", [None, True, False])
@pytest.mark.parametrize("reduction", ["mean", "batchmean", "none"])
def test_kl_div_legacy_arguments_are_torchs(size_average: Any, reduce: Any, reduction: str) -> None:
    x, t = _kl_div_operands((3, 4), (3, 4), f64, False)
    kw = dict(size_average=size_average, reduce=reduce, reduction=reduction)
    _same(_quiet(ct.kl_div, x, t, **kw), _quiet(F.kl_div, x, t, **kw))


def test_kl_div_errors_are_torchs() -> None:
    x, t = _kl_div_operands((3, 4), (3, 4), torch.float32, False)
    cases: list[Any] = [
        ((x, t), {"reduction": "avg"}, ValueError),
        ((x, t), {"reduction": None}, ValueError),
        ((x, torch.rand(3, 5)), {}, RuntimeError),  # not broadcastable
        ((x.to(torch.int64), t), {}, RuntimeError),  # integral input
        ((x.to(torch.complex64), t.to(torch.complex64)), {}, RuntimeError),
    ]
    for args, kw, kind in cases:
        with pytest.raises(kind) as theirs:
            _quiet(F.kl_div, *args, **kw)
        with pytest.raises(kind) as ours:
            _quiet(ct.kl_div, *args, **kw)
        assert str(ours.value) == str(theirs.value)
    # log_target goes through ce_fast's flag parser: torch's kind of error, ce_fast's message
    with pytest.raises(TypeError, match="log_target must be True or False"):
        ct.kl_div(x, t, log_target=1)
    # mixed dtypes promote, as torch's
    _same(ct.kl_div(x, t.double(), reduction="sum"), F.kl_div(x, t.double(), reduction="sum"))


def test_kl_div_subclasses_go_to_torchs_function() -> None:
    class Sub(torch.Tensor):
        pass

    x, t = _kl_div_operands((3, 4), (3, 4), torch.float32, False)
    got, fell = _fell(ct.kl_div, x.as_subclass(Sub), t, reduction="sum")
    assert fell == 1
    _same(got.as_subclass(torch.Tensor), F.kl_div(x, t, reduction="sum"))


@pytest.mark.parametrize("reduction", ["mean", "batchmean", "none"])
def test_kl_div_compiles_without_a_graph_break(reduction: str) -> None:
    torch._dynamo.reset()
    x, t = _kl_div_operands((4, 5), (4, 5), torch.float32, False)
    x.requires_grad_()
    t = t + 0.05  # no 0: inductor's xlogy gradient there is NaN, eager's -inf
    fn = lambda x, t: ct.kl_div(x, t, reduction=reduction).sum()  # noqa: E731
    for target in (t, t.clone().requires_grad_()):  # the kernel's operator, torch's
        leaves = [x] if target is t else [x, target]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            got = torch.compile(fn, fullgraph=True)(x, target)
            expected = F.kl_div(x, target, reduction=reduction).sum()
        torch.testing.assert_close(got, expected)
        for a, b in zip(torch.autograd.grad(got, leaves), torch.autograd.grad(expected, leaves)):
            torch.testing.assert_close(a, b)


# ---------------------------------------------------------------------------
# kl_divergence / js_divergence: against torch compositions on every option
# ---------------------------------------------------------------------------

# (function, keywords): forward KL, reverse KL, JS and its two endpoints
KINDS: dict[str, tuple[Any, dict[str, Any]]] = {
    "forward": (ct.kl_divergence, {"direction": "forward"}),
    "reverse": (ct.kl_divergence, {"direction": "reverse"}),
    "js": (ct.js_divergence, {"beta": 0.3}),
    "js0": (ct.js_divergence, {"beta": 0.0}),
    "js1": (ct.js_divergence, {"beta": 1.0}),
}


def oracle(s: Any, t: Any, kind: str, teacher_is: str = "logits", temperature: float = 1.0, dim: int = -1,
           sample_weight: Any = None, ignore_index: Any = None, target: Any = None,
           reduction: str = "mean") -> Any:  # fmt: skip
    """log_softmax + F.kl_div: the per-row divergence, weighted, reduced."""
    ls = F.log_softmax(s / temperature, dim)
    lt = {"logits": lambda: F.log_softmax(t / temperature, dim), "log_probs": lambda: t,
          "probs": lambda: t.log()}[teacher_is]()  # fmt: skip

    def kl(log_a: Any, log_b: Any) -> Any:  # KL(A || B)
        return F.kl_div(log_b, log_a, reduction="none", log_target=True).sum(dim)

    if kind in ("forward", "js0"):
        per = kl(lt, ls)
    elif kind in ("reverse", "js1"):
        per = kl(ls, lt)
    else:
        beta = KINDS[kind][1]["beta"]
        lm = (beta * lt.exp() + (1 - beta) * ls.exp()).log()
        per = beta * kl(lt, lm) + (1 - beta) * kl(ls, lm)
    w = torch.ones_like(per)
    if ignore_index is not None:
        w = w * (target != ignore_index)
    if sample_weight is not None:
        w = w * sample_weight
    per = per * w
    if reduction == "none":
        return per
    return per.sum() if reduction == "sum" else per.sum() / w.sum()


def _teacher(t_logits: Any, teacher_is: str, dim: int) -> Any:
    """The teacher in the form teacher_is takes (a distribution that is not
    tempered for log_probs / probs)."""
    if teacher_is == "logits":
        return t_logits
    lp = F.log_softmax(t_logits, dim)
    return lp if teacher_is == "log_probs" else lp.exp()


def _pair(shape: tuple[int, ...], seed: int, dtype: Any = f64) -> Any:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, dtype=dtype, generator=g) * 2, torch.randn(shape, dtype=dtype, generator=g) * 2


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("teacher_is", ["logits", "log_probs", "probs"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_divergences_match_the_torch_composition(kind: str, teacher_is: str, reduction: str) -> None:
    fn, kw = KINDS[kind]
    s, tl = _pair((6, 5, 3), 11)
    g = torch.Generator().manual_seed(12)
    sw = torch.rand(6, 3, dtype=f64, generator=g) + 0.1
    target = torch.randint(0, 4, (6, 3), generator=g)
    for options in [
        {},
        {"temperature": 2.5},
        {"dim": 1, "sample_weight": sw},
        {"dim": 1, "ignore_index": 2, "target": target, "temperature": 0.7},
        {"dim": -2, "ignore_index": 2, "target": target, "sample_weight": sw},
    ]:
        t = _teacher(tl, teacher_is, options.get("dim", -1))
        x = s.clone().requires_grad_()
        got, fell = _fell(fn, x, t, teacher_is=teacher_is, reduction=reduction, **kw, **options)
        assert fell == 0
        xe = s.clone().requires_grad_()
        expected = oracle(xe, t, kind, teacher_is, reduction=reduction, **options)
        where = str(options)
        torch.testing.assert_close(got, expected, msg=where)
        assert got.dtype == f64 and got.shape == expected.shape
        up = torch.rand(expected.shape, dtype=f64, generator=g) + 0.5  # a non-trivial upstream gradient
        (gx,) = torch.autograd.grad(got, [x], up)
        (ge,) = torch.autograd.grad(expected, [xe], up)
        torch.testing.assert_close(gx, ge, msg=where)


@pytest.mark.parametrize("kind", ["forward", "reverse", "js"])
@pytest.mark.parametrize("dtype", [torch.float32, f64])
def test_results_are_the_numpy_apis(kind: str, dtype: Any) -> None:
    fn, kw = KINDS[kind]
    s, t = _pair((7, 9), 5, dtype)
    x = s.clone().requires_grad_()
    loss = fn(x, t, temperature=2.0, **kw)
    (gx,) = torch.autograd.grad(loss, [x])
    np_fn = getattr(ce_fast, fn.__name__ + "_and_grad")
    loss_np, g_np = np_fn(s.numpy(), t.numpy(), temperature=2.0, **kw)
    assert loss.dtype == dtype and gx.dtype == dtype
    assert float(loss.detach()) == float(loss_np)
    assert torch.equal(gx, torch.from_numpy(g_np))


@pytest.mark.parametrize("kind", ["forward", "reverse", "js"])
def test_gradcheck(kind: str) -> None:
    fn, kw = KINDS[kind]
    s, t = _pair((4, 5), 21)
    sw = torch.rand(4, dtype=f64) + 0.5
    x = s.clone().requires_grad_()
    for reduction in ("mean", "none"):
        f = functools.partial(fn, teacher=t, temperature=1.5, sample_weight=sw, reduction=reduction, **kw)
        assert torch.autograd.gradcheck(f, (x,))
        assert torch.autograd.gradgradcheck(f, (x,))


@pytest.mark.parametrize("teacher_is", ["logits", "log_probs", "probs"])
@pytest.mark.parametrize("kind", ["forward", "reverse", "js"])
def test_a_teacher_that_requires_grad_gets_its_exact_gradient(kind: str, teacher_is: str) -> None:
    fn, kw = KINDS[kind]
    s, tl = _pair((4, 5), 31)
    t = _teacher(tl, teacher_is, -1).detach().requires_grad_()
    x = s.clone().requires_grad_()
    sw = (torch.rand(4, dtype=f64) + 0.5).requires_grad_()
    f = lambda x, t, sw: fn(x, t, teacher_is=teacher_is, temperature=1.3, sample_weight=sw, **kw)  # noqa: E731
    assert torch.autograd.gradcheck(f, (x, t, sw))
    loss, fell = _fell(f, x, t, sw)
    assert fell == 1  # the composition, which differentiates the teacher
    gt = torch.autograd.grad(loss, [t])[0]
    te = t.detach().clone().requires_grad_()
    ge = torch.autograd.grad(oracle(x, te, kind, teacher_is, 1.3, sample_weight=sw), [te])[0]
    assert gt.abs().max() > 1e-3
    torch.testing.assert_close(gt, ge)


def test_the_forward_runs_the_fused_kernel_once(monkeypatch: Any) -> None:
    calls: list[bool] = []
    run = tdiv._run

    def counted(args: Any, want_grad: bool, grad_output: Any = None) -> Any:
        calls.append(want_grad)
        return run(args, want_grad, grad_output)

    monkeypatch.setattr(tdiv, "_run", counted)
    monkeypatch.setattr(tdiv, "_FUSED", dataclasses.replace(tdiv._FUSED, run=counted))
    s, t = _pair((5, 6), 41, torch.float32)
    x = s.clone().requires_grad_()
    loss = ct.kl_divergence(x, t, reduction="sum")
    assert calls == [True]  # loss and gradient in one pass
    loss.backward(retain_graph=True)
    assert calls == [True]  # the backward only hands the gradient over
    first = x.grad.clone()
    x.grad = None
    loss.backward(torch.tensor(3.0))  # a retained graph: the kernel again, scaled
    assert calls == [True, True]
    torch.testing.assert_close(x.grad, 3 * first)
    with torch.no_grad():
        ct.kl_divergence(x, t)
    ct.kl_divergence(s, t)
    assert calls == [True, True, False, False]  # no gradient wanted: the loss alone


def test_threads_bitwise() -> None:
    s, t = _pair((64, 300), 51, torch.float32)
    old = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            x = s.clone().requires_grad_()
            loss = ct.js_divergence(x, t, beta=0.4)
            results.append((loss, torch.autograd.grad(loss, [x])[0]))
    finally:
        torch.set_num_threads(old)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def test_other_dtypes_and_devices_take_the_composition() -> None:
    s, t = _pair((4, 6), 61, torch.float32)
    expected = ct.kl_divergence(s, t, temperature=2.0)
    for a, b in [(s.half(), t.half()), (s.bfloat16(), t.bfloat16()), (s, t.double())]:
        got, fell = _fell(ct.kl_divergence, a, b, temperature=2.0)
        assert fell == 1
        torch.testing.assert_close(got.float(), expected, rtol=2e-2, atol=2e-2)
    got, fell = _fell(ct.js_divergence, s.to("meta"), t.to("meta"), reduction="none")
    assert fell == 1 and got.device.type == "meta" and got.shape == (4,)


def test_16_bit_students_are_computed_in_float32_and_cast_back() -> None:
    """The kernel glue on float16 tensors (today ready() sends them to the
    composition; the 16-bit kernels will take them through the same glue)."""
    s, t = _pair((4, 6), 62, torch.float32)
    args = (s.half(), t.half(), None, None, "logits", 2.0, "forward", None, -1, None)
    for red in ("mean", "none"):
        loss, g = tdiv._run((*args, red), True)
        assert loss.dtype == torch.float16 and g is not None and g.dtype == torch.float16
        x = s.half().float().requires_grad_()
        expected = ct.kl_divergence(x, t.half().float(), temperature=2.0, reduction=red)
        torch.testing.assert_close(loss, expected.half())
        torch.testing.assert_close(g, torch.autograd.grad(expected.sum(), [x])[0].half())


# ---------------------------------------------------------------------------
# torch.compile, the operators' registrations, patch()
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_compile_fullgraph(reduction: str) -> None:
    torch._dynamo.reset()
    s, t = _pair((8, 5), 71, torch.float32)
    sw = torch.rand(8)
    y = torch.arange(8) % 3

    def fn(x: Any) -> Any:
        kl = ct.kl_divergence(x, t, temperature=2.0, reduction=reduction, ignore_index=1, target=y)
        return (kl + ct.js_divergence(x, t, beta=0.2, sample_weight=sw, reduction=reduction)).sum()

    x = s.clone().requires_grad_()
    got = torch.compile(fn, fullgraph=True)(x)
    (gx,) = torch.autograd.grad(got, [x])
    xe = s.clone().requires_grad_()
    expected = fn(xe)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(gx, torch.autograd.grad(expected, [xe])[0])


def test_compile_fullgraph_with_a_teacher_that_requires_grad() -> None:
    """The composition's path, its front-door checks run while tracing."""
    torch._dynamo.reset()
    s, t = _pair((6, 5), 72, torch.float32)
    fn = lambda x, t: ct.js_divergence(x, t, beta=0.3, temperature=2.0)  # noqa: E731
    x, tt = s.clone().requires_grad_(), t.clone().requires_grad_()
    got = torch.compile(fn, fullgraph=True)(x, tt)
    xe, te = s.clone().requires_grad_(), t.clone().requires_grad_()
    expected = oracle(xe, te, "js", temperature=2.0)
    torch.testing.assert_close(got, expected)
    for a, b in zip(torch.autograd.grad(got, [x, tt]), torch.autograd.grad(expected, [xe, te])):
        torch.testing.assert_close(a, b)
    with pytest.raises(Exception, match=r"beta must be a finite number in \[0, 1\]"):
        torch.compile(lambda x, t: ct.js_divergence(x, t, beta=3.0), fullgraph=True)(x, tt)


@pytest.mark.slow
def test_opcheck() -> None:
    s, t = _pair((6, 4), 81)
    x = s.clone().requires_grad_()
    y, sw = torch.tensor([0, 1, 2, 0, 1, 2]), torch.rand(6, dtype=f64)
    ops = torch.ops.ce_fast
    kl = ("logits", 2.0, "reverse", None, -1, None, "mean")
    js = ("logits", 1.0, "forward", 0.3, 1, 2, "none")
    torch.library.opcheck(ops.divergence, (x, t, None, None, *kl))
    torch.library.opcheck(ops.divergence, (x, t, y, sw, *js))
    # the backward's own operator has no derivative (double backward is torch's composition)
    torch.library.opcheck(ops.divergence_backward, (torch.rand(6, dtype=f64), s, t, y, sw, *js))
    p = torch.rand(6, 4, dtype=f64)
    for options in [("mean", False, False), ("sum", True, True), ("none", False, True)]:
        torch.library.opcheck(ops.kl_div, (x, p, *options))
    torch.library.opcheck(ops.kl_div_backward, (torch.rand(6, 4, dtype=f64), s, p, "none", False, False))


def test_patch_and_unpatch_kl_div() -> None:
    x, t = _kl_div_operands((3, 4), (3, 4), torch.float32, False)
    before = torch.nn.KLDivLoss(reduction="batchmean")  # torch's module calls F.kl_div at run time
    try:
        with ct.patch():
            assert F.kl_div is ct.kl_div and _patch.patched()["F.kl_div"]
            got, fell = _fell(before, x, t)
            assert fell == 0  # the kernel's
            _close(got, TORCH_KL_DIV(x, t, reduction="batchmean"), torch.float32)
        assert F.kl_div is TORCH_KL_DIV
    finally:
        ct.unpatch()
    assert not any(_patch.patched().values())


def test_exports() -> None:
    for name in ("kl_div", "kl_divergence", "js_divergence"):
        assert name in ct.__all__ and callable(getattr(ct, name))


# ---------------------------------------------------------------------------
# Bad input: ce_fast's clear exceptions, on the kernel's path and the composition's
# ---------------------------------------------------------------------------

BAD: list[tuple[dict[str, Any], Any, str]] = [
    ({"teacher_is": "prob"}, ValueError, "teacher_is must be one of"),
    ({"temperature": 0.0}, ValueError, "temperature must be a finite number"),
    ({"temperature": "2"}, ValueError, "temperature must be a real number"),
    ({"direction": "backward"}, ValueError, "direction must be 'forward' or 'reverse'"),
    ({"reduction": "batchmean"}, ValueError, "reduction must be one of"),
    ({"dim": 2}, ValueError, "axis"),
    ({"ignore_index": 1}, ValueError, "target and ignore_index go together"),
    ({"target": torch.zeros(4, dtype=torch.int64)}, ValueError, "target and ignore_index go together"),
    ({"target": torch.zeros(4), "ignore_index": 0}, TypeError, "expected integer tokens"),
    ({"target": torch.zeros(3, dtype=torch.int64), "ignore_index": 0}, ValueError, "integer tokens of shape"),
    ({"ignore_index": 1.5, "target": torch.zeros(4, dtype=torch.int64)}, TypeError, "ignore_index must be"),
]


@pytest.mark.parametrize("path", ["kernel", "composition"])
@pytest.mark.parametrize(("options", "kind", "match"), BAD)
def test_bad_input_raises_clearly(options: dict[str, Any], kind: Any, match: str, path: str) -> None:
    s, t = _pair((4, 6), 91, torch.float32)
    if path == "composition":
        t = t.clone().requires_grad_()
    with pytest.raises(kind, match=match):
        ct.kl_divergence(s, t, **options)


@pytest.mark.parametrize("path", ["kernel", "composition"])
def test_bad_shapes_and_beta_raise_clearly(path: str) -> None:
    s, t = _pair((4, 6), 92, torch.float32)
    if path == "composition":
        t = t.clone().requires_grad_()
    with pytest.raises(ValueError, match="teacher must have the student's shape"):
        ct.kl_divergence(s, t[:, :5])
    with pytest.raises(ValueError, match=r"beta must be a finite number in \[0, 1\]"):
        ct.js_divergence(s, t, beta=1.5)
    with pytest.raises(ValueError, match="class axis is empty"):
        ct.js_divergence(s[:, :0], t[:, :0])
    with pytest.raises(TypeError, match="complex"):
        ct.kl_divergence(s.to(torch.complex64), t.to(torch.complex64))
