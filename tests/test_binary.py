"""The compiled binary cross-entropy kernels (on logits and on probabilities)
and the vector log they use, against ``ce_fast.reference`` (the
specification), PyTorch where available, finite differences, and themselves
(bitwise, across thread counts, fused vs separate, in place vs out of place).
"""

from __future__ import annotations

import numpy as np
import pytest

import ce_fast
import ce_fast.reference as ref
from tests.conftest import assert_bitwise, assert_close, fingerprint

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
FUNCS = ["loss", "grad", "both"]

# src/binary_impl.h: elements are summed in blocks of this many (fixed), and
# src/ce_util.h: one thread below CE_PARALLEL_MIN_ELEMENTS.
BLOCK = 65536


def run(func, *args, **kw):
    """(loss or None, grad or None) from one of the three logits functions."""
    if func == "loss":
        return ce_fast.binary_cross_entropy_with_logits(*args, **kw), None
    if func == "grad":
        return None, ce_fast.binary_cross_entropy_with_logits_grad(*args, **kw)
    return ce_fast.binary_cross_entropy_with_logits_and_grad(*args, **kw)


def run_ref(func, *args, **kw):
    kw.pop("num_threads", None)
    if func == "loss":
        return ref.binary_cross_entropy_with_logits(*args, **kw), None
    if func == "grad":
        return None, ref.binary_cross_entropy_with_logits_grad(*args, **kw)
    return ref.binary_cross_entropy_with_logits_and_grad(*args, **kw)


def check_pair(got, want, dtype):
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        if np.ndim(w) == 0 and not isinstance(w, np.ndarray):
            assert type(g) is type(w), (type(g), type(w))
        else:
            assert isinstance(g, np.ndarray) and g.dtype == w.dtype
        assert_close(g, w, dtype)


def problem(rng, shape, dtype, scale=4.0):
    x = (rng.standard_normal(shape) * scale).astype(dtype)
    t = rng.random(shape).astype(dtype)
    t[rng.random(shape) < 0.3] = 1.0
    t[rng.random(shape) < 0.3] = 0.0
    return x, t


# ---------------------------------------------------------------------------
# binary_cross_entropy_with_logits: against the reference
# ---------------------------------------------------------------------------

SHAPES = [(), (1,), (7,), (0,), (0, 5), (13, 1), (50, 3), (9, 7, 41), (2, 3, 4, 5)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("func", FUNCS)
def test_logits_match_reference(dtype, shape, reduction, func, rng):
    x, t = problem(rng, shape, dtype)
    check_pair(run(func, x, t, reduction=reduction), run_ref(func, x, t, reduction=reduction), dtype)


def _weights(rng, shape, kind):
    K = shape[-1]
    return {
        "scalar": 0.7,
        "full": rng.random(shape) * 2,
        "last": rng.random(K) * 2,
        "rows": rng.random(shape[:-1] + (1,)) * 2,
        "middle": rng.random((shape[0], 1, K)) * 2,  # no (rows, cols) split: copied
        "negative": rng.standard_normal(shape),
    }[kind]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("wkind", [None, "scalar", "full", "last", "rows", "middle", "negative"])
@pytest.mark.parametrize("pwkind", [None, "scalar", "full", "last", "rows", "middle"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_weight_and_pos_weight_broadcasting(dtype, wkind, pwkind, reduction, rng):
    shape = (6, 5, 11)
    x, t = problem(rng, shape, dtype)
    w = None if wkind is None else _weights(rng, shape, wkind)
    pw = None if pwkind is None else np.abs(_weights(rng, shape, pwkind))
    kw = dict(weight=w, pos_weight=pw, reduction=reduction)
    check_pair(run("both", x, t, **kw), run_ref("both", x, t, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_target_broadcast_and_soft_targets(dtype, rng):
    x = (rng.standard_normal((8, 6)) * 3).astype(dtype)
    for t in (np.float64(0.25), rng.random(6), rng.random((8, 1)), rng.uniform(-0.5, 1.5, (8, 6))):
        for red in REDUCTIONS:
            check_pair(run("both", x, t, reduction=red), run_ref("both", x, t, reduction=red), dtype)


def test_multilabel_matches_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(7)
    x = rng.standard_normal((64, 10)) * 5
    t = (rng.random((64, 10)) < 0.3).astype(np.float64)
    w = rng.random(10)
    pw = rng.random(10) * 3
    for red in REDUCTIONS:
        xt = torch.tensor(x, requires_grad=True)
        lt = F.binary_cross_entropy_with_logits(
            xt, torch.tensor(t), weight=torch.tensor(w), pos_weight=torch.tensor(pw), reduction=red
        )
        lt.backward(torch.ones_like(lt))
        loss, grad = ce_fast.binary_cross_entropy_with_logits_and_grad(
            x, t, weight=w, pos_weight=pw, reduction=red
        )
        # (PyTorch loses relative accuracy on tiny losses: compare on the scale of 1)
        np.testing.assert_allclose(np.asarray(loss), lt.detach().numpy(), rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_grad_output(dtype, reduction, rng):
    x, t = problem(rng, (9, 7), dtype)
    gos = [None, 2.5, np.float32(-0.5)]
    if reduction == "none":
        gos += [rng.standard_normal((9, 7)), rng.standard_normal(7), rng.standard_normal((9, 1))]
    for go in gos:
        kw = dict(reduction=reduction, grad_output=go, pos_weight=np.full(7, 1.5))
        check_pair(run("both", x, t, **kw), run_ref("both", x, t, **kw), dtype)
        check_pair(run("grad", x, t, **kw), run_ref("grad", x, t, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_fused_equals_separate_bitwise(dtype, reduction, rng):
    x, t = problem(rng, (300, 257), dtype)
    kw = dict(reduction=reduction, weight=rng.random(257), pos_weight=rng.random((300, 1)))
    loss, grad = ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, **kw)
    assert_bitwise(loss, ce_fast.binary_cross_entropy_with_logits(x, t, **kw))
    assert_bitwise(grad, ce_fast.binary_cross_entropy_with_logits_grad(x, t, **kw))


# ---------------------------------------------------------------------------
# Numerical behaviour
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_stable_tails_and_huge_logits(isa, dtype):
    x = np.array([40.0, -40.0, 1e4, -1e4, 100.0, -100.0, 0.0], dtype)
    t = np.array([1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.5], dtype)
    loss = ce_fast.binary_cross_entropy_with_logits(x, t, reduction="none")
    want = ref.binary_cross_entropy_with_logits(x, t, reduction="none")
    assert np.all(np.isfinite(loss))
    # the e^-40 tails keep relative accuracy (not 0, not rounded to 1 ulp of 1)
    np.testing.assert_allclose(loss[:2], np.exp(-40.0), rtol=4 * np.finfo(dtype).eps)
    assert_close(loss, want, dtype)
    np.testing.assert_allclose(loss[4:6], 100.0, rtol=4 * np.finfo(dtype).eps)
    g = ce_fast.binary_cross_entropy_with_logits_grad(x, t, reduction="sum")
    assert np.all(np.isfinite(g))
    assert_close(g, ref.binary_cross_entropy_with_logits_grad(x, t, reduction="sum"), dtype)
    # the gradient of a confident correct logit is ~ -e^-40, not 0
    np.testing.assert_allclose(g[:2], [-np.exp(-40.0), np.exp(-40.0)], rtol=8 * np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_special_values(isa, dtype, reduction):
    x = np.array([np.inf, -np.inf, np.nan, np.inf, -np.inf, 0.0, 3.0], dtype)
    t = np.array([1.0, 0.0, 1.0, 0.0, 1.0, np.nan, 0.5], dtype)
    for func in FUNCS:
        check_pair(run(func, x, t, reduction=reduction), run_ref(func, x, t, reduction=reduction), dtype)
    # a finite subset gives finite results
    check_pair(run("both", x[5:][1:], t[5:][1:], reduction=reduction),
               run_ref("both", x[5:][1:], t[5:][1:], reduction=reduction), dtype)  # fmt: skip


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize(
    "opts", [{}, {"weight": "w"}, {"pos_weight": "pw"}, {"weight": "w", "pos_weight": "pw"}]
)
def test_gradient_matches_finite_differences(reduction, opts, rng):
    """float64, 4th-order central differences of sum(grad_output * loss)."""
    x = rng.standard_normal((5, 4)) * 2
    t = rng.random((5, 4))
    kw = {k: (rng.random((5, 4)) + 0.5 if v == "w" else rng.random(4) * 2 + 0.2) for k, v in opts.items()}
    go = rng.standard_normal((5, 4)) if reduction == "none" else 1.7

    def f(z):
        loss = ce_fast.binary_cross_entropy_with_logits(z, t, reduction=reduction, **kw)
        return float(np.sum(go * loss))

    g = ce_fast.binary_cross_entropy_with_logits_grad(x, t, reduction=reduction, grad_output=go, **kw)
    h = 1e-3
    fd = np.empty_like(x)
    for i in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[i] = h
        fd[i] = (-f(x + 2 * e) + 8 * f(x + e) - 8 * f(x - e) + f(x - 2 * e)) / (12 * h)
    np.testing.assert_allclose(g, fd, rtol=1e-8, atol=1e-10)


# ---------------------------------------------------------------------------
# Threads, determinism, layouts, out=
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("oversubscribed")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_threads_bitwise_identical(dtype, reduction, rng):
    shape = (1000, 150)  # 150000 elements: 3 blocks of 65536, really parallel
    x, t = problem(rng, shape, dtype)
    x.reshape(-1)[::977] = np.nan
    kw = dict(reduction=reduction, pos_weight=rng.random(150) + 0.5, weight=rng.random((1000, 1)))
    res = {
        nt: ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, num_threads=nt, **kw) for nt in (1, 2, 3)
    }
    for nt in (2, 3):
        assert_bitwise(res[nt][0], res[1][0])
        assert_bitwise(res[nt][1], res[1][1])
    check_pair(res[1], run_ref("both", x, t, **kw), dtype)
    p = rng.random(shape).astype(dtype)
    r1 = ce_fast.binary_cross_entropy(p, t, reduction=reduction, num_threads=1)
    for nt in (2, 3, None):
        assert_bitwise(ce_fast.binary_cross_entropy(p, t, reduction=reduction, num_threads=nt), r1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_out_separate_and_in_place(dtype, reduction, rng):
    x, t = problem(rng, (33, 17), dtype)
    kw = dict(reduction=reduction, pos_weight=rng.random(17))
    want_loss, want_grad = ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, **kw)
    out = np.full(x.shape, 7.0, dtype)
    loss, g = ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, out=out, **kw)
    assert g is out
    assert_bitwise(g, want_grad)
    assert_bitwise(loss, want_loss)
    xi = x.copy()
    loss, g = ce_fast.binary_cross_entropy_with_logits_and_grad(xi, t, out=xi, **kw)
    assert g is xi
    assert_bitwise(xi, want_grad)
    assert_bitwise(loss, want_loss)
    xi = x.copy()
    g = ce_fast.binary_cross_entropy_with_logits_grad(xi, t, out=xi, **kw)
    assert g is xi
    assert_bitwise(xi, want_grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_out_overlapping_operands(dtype, rng):
    x, t = problem(rng, (6, 8), dtype)
    want = ce_fast.binary_cross_entropy_with_logits_grad(x, t)
    # out = the target buffer: the target is read from a snapshot
    tt = t.copy()
    assert_bitwise(ce_fast.binary_cross_entropy_with_logits_grad(x, tt, out=tt), want)
    # out = a weight buffer of the full shape
    w = np.ones((6, 8), dtype)
    assert_bitwise(ce_fast.binary_cross_entropy_with_logits_grad(x, t, weight=w, out=w), want)
    # logits a strided view that partially overlaps out
    buf = np.zeros((6, 16), dtype)
    buf[:, 1::2] = x
    out = buf[:, :8]
    assert not out.flags.c_contiguous
    out2 = np.zeros(48, dtype)
    big = np.zeros(96, dtype)
    big[1::2] = x.reshape(-1)
    view = big[1::2].reshape(6, 8)
    out2 = big[:48].reshape(6, 8)  # overlaps the first half of `view`'s memory
    assert_bitwise(ce_fast.binary_cross_entropy_with_logits_grad(view, t, out=out2), want)


@pytest.mark.parametrize("dtype", DTYPES)
def test_bad_out(dtype):
    x = np.zeros((3, 4), dtype)
    t = np.zeros((3, 4), dtype)
    f = ce_fast.binary_cross_entropy_with_logits_grad
    with pytest.raises(TypeError):
        f(x, t, out=[[0.0] * 4] * 3)
    for bad in (np.zeros((4, 3), dtype), np.zeros((3, 4), np.float16 if dtype == np.float32 else np.float32),
                np.zeros((4, 3), dtype).T, np.zeros((3, 4), dtype)[:, :]):  # fmt: skip
        if bad.shape == (3, 4) and bad.dtype == dtype and bad.flags.c_contiguous:
            bad = bad.copy()
            bad.flags.writeable = False
        with pytest.raises(ValueError):
            f(x, t, out=bad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts_read_only_and_never_modified(dtype, rng):
    base = (rng.standard_normal((20, 30)) * 3).astype(dtype)
    tb = rng.random((30, 20)).astype(dtype)
    x, t = base[:, ::3], tb.T[:, ::3]  # non-contiguous both
    x.flags.writeable = False
    fx, ft = fingerprint(x), fingerprint(t)
    pw = rng.random(10)
    for red in REDUCTIONS:
        check_pair(
            ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, reduction=red, pos_weight=pw),
            ref.binary_cross_entropy_with_logits_and_grad(x, t, reduction=red, pos_weight=pw),
            dtype,
        )
        check_pair((ce_fast.binary_cross_entropy(np.abs(np.tanh(x)), t, reduction=red),),
                   (ref.binary_cross_entropy(np.abs(np.tanh(x)), t, reduction=red),), dtype)  # fmt: skip
    assert fingerprint(x) == fx and fingerprint(t) == ft
    # negative strides
    xr = base[::-1, ::-2]
    check_pair(run("both", xr, 0.3), run_ref("both", xr, 0.3), dtype)


def test_input_types():
    x = [[1.0, -2.0], [0.5, 3.0]]
    t = [[1, 0], [0, 1]]
    want = ref.binary_cross_entropy_with_logits_and_grad(x, t)
    check_pair(ce_fast.binary_cross_entropy_with_logits_and_grad(x, t), want, np.float64)
    # bool target, float16 logits -> float32, int logits -> float64
    tb = np.array(t, bool)
    l16 = ce_fast.binary_cross_entropy_with_logits(np.array(x, np.float16), tb)
    assert type(l16) is np.float32
    assert_close(l16, ref.binary_cross_entropy_with_logits(np.array(x, np.float16), tb), np.float32)
    li = ce_fast.binary_cross_entropy_with_logits(np.array([[1, -2], [0, 3]]), tb, reduction="none")
    assert li.dtype == np.float64
    # non-native byte order
    xb = np.array(x, ">f8")
    check_pair(ce_fast.binary_cross_entropy_with_logits_and_grad(xb, t), want, np.float64)


def test_torch_tensor_inputs():
    torch = pytest.importorskip("torch")
    x = torch.randn(5, 3, dtype=torch.float64)
    t = torch.rand(5, 3, dtype=torch.float64)
    got = ce_fast.binary_cross_entropy_with_logits(x, t)
    want = torch.nn.functional.binary_cross_entropy_with_logits(x, t).item()
    assert abs(float(got) - want) < 1e-12


def test_logits_errors():
    x = np.zeros((3, 4))
    f = ce_fast.binary_cross_entropy_with_logits
    with pytest.raises(ValueError):
        f(x, np.zeros((3, 5)))
    with pytest.raises(ValueError):
        f(x, np.zeros(4), weight=np.ones(3))
    with pytest.raises(ValueError):
        f(x, np.zeros(4), pos_weight=np.ones((2, 4)))
    with pytest.raises(ValueError):
        f(x, np.zeros(4), reduction="Mean")
    with pytest.raises(ValueError):
        f(x, np.zeros(4), reduction=None)
    for nt in (0, -1, 1.5, True):
        with pytest.raises(ValueError):
            f(x, np.zeros(4), num_threads=nt)
    with pytest.raises(TypeError):
        f(x.astype(complex), np.zeros(4))
    with pytest.raises(TypeError):
        f(x, np.array(["a"] * 4))
    with pytest.raises(TypeError):
        f(x, np.zeros(4), weight=np.zeros(4, complex))
    with pytest.raises(ValueError):
        ce_fast.binary_cross_entropy_with_logits_grad(x, np.zeros(4), grad_output=np.ones((3, 4)))
    with pytest.raises(ValueError):
        ce_fast.binary_cross_entropy_with_logits_grad(
            x, np.zeros(4), reduction="none", grad_output=np.ones(5)
        )


# ---------------------------------------------------------------------------
# binary_cross_entropy on probabilities
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (0,), (7,), (9, 7, 41), (50, 3)], ids=str)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("eps", [None, 0.0, 1e-3, 0.5])
def test_probs_match_reference(dtype, shape, reduction, eps, rng):
    p = rng.random(shape).astype(dtype)
    t = rng.random(shape).astype(dtype)
    if p.size > 4:
        p.reshape(-1)[:4] = [0.0, 1.0, 0.0, 1.0]
        t.reshape(-1)[:4] = [0.0, 1.0, 1.0, 0.0]  # the last two are infinite when eps == 0
    got = ce_fast.binary_cross_entropy(p, t, eps=eps, reduction=reduction)
    want = ref.binary_cross_entropy(p, t, eps=eps, reduction=reduction)
    check_pair((got,), (want,), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_probs_hard_targets_clip_and_broadcast(isa, dtype, rng):
    p = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 1e-30, 1 - 1e-7], dtype)
    t = np.array([0, 1, 1, 0, 1, 1, 0])
    got = ce_fast.binary_cross_entropy(p, t, reduction="none")
    e = np.finfo(dtype).eps
    np.testing.assert_allclose(got[:2], e, rtol=1e-6)  # -log1p(-eps), -log(1 - eps)
    assert_close(got, ref.binary_cross_entropy(p, t, reduction="none"), dtype)
    np.testing.assert_allclose(got[2], -np.log(np.float64(dtype(e))), rtol=2 * e)
    # target broadcast along the last axis; bool targets
    pp = rng.random((10, 3)).astype(dtype)
    tb = np.array([True, False, True])
    check_pair((ce_fast.binary_cross_entropy(pp, tb, reduction="sum"),),
               (ref.binary_cross_entropy(pp, tb, reduction="sum"),), dtype)  # fmt: skip


@pytest.mark.usefixtures("oversubscribed")
@pytest.mark.parametrize("dtype", DTYPES)
def test_probs_domain_errors(dtype):
    N = 3 * BLOCK + 11  # several blocks: the reported position is the first one
    p = np.full(N, 0.5, dtype)
    t = np.full(N, 1.0, dtype)
    f = ce_fast.binary_cross_entropy
    for bad_val in (1.5, -0.25, np.nan, np.inf):
        pb = p.copy()
        pb[[BLOCK + 5, 2 * BLOCK + 1, N - 1]] = bad_val
        for nt in (1, 2, 3):
            with pytest.raises(ValueError, match=rf"probs must lie in \[0, 1\].*flat position {BLOCK + 5}"):
                f(pb, t, num_threads=nt)
    tb = t.copy()
    tb[[7, BLOCK]] = 2.0
    with pytest.raises(ValueError, match=r"target must lie in \[0, 1\].*found 2\.0 at flat position 7"):
        f(p, tb)
    # probabilities are reported before targets, even when a target comes first
    pb = p.copy()
    pb[100] = -1.0
    with pytest.raises(ValueError, match=r"probs .* flat position 100"):
        f(pb, tb)
    # position in C order of the logical shape, for a non-contiguous input
    p2 = np.full((40, 30), 0.5, dtype)
    p2[3, 6] = 7.0  # -> transposed (30, 40): position 6*40 + 3
    with pytest.raises(ValueError, match=rf"flat position {6 * 40 + 3}\b"):
        f(p2.T, 1.0)
    for eps in (-0.1, 0.6, np.nan, "x"):
        with pytest.raises(ValueError):
            f(p[:4], t[:4], eps=eps)
    with pytest.raises(ValueError):
        f(p[:4], t[:3])
    with pytest.raises(ValueError):
        f(p[:4], t[:4], reduction="avg")
    with pytest.raises(TypeError):
        f(p[:4].astype(complex), t[:4])


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_inputs(dtype):
    x = np.zeros((0, 4), dtype)
    assert ce_fast.binary_cross_entropy_with_logits(x, x, reduction="sum") == 0
    assert np.isnan(ce_fast.binary_cross_entropy_with_logits(x, x))
    assert ce_fast.binary_cross_entropy_with_logits(x, x, reduction="none").shape == (0, 4)
    loss, g = ce_fast.binary_cross_entropy_with_logits_and_grad(x, x)
    assert np.isnan(loss) and g.shape == (0, 4) and g.dtype == dtype
    assert np.isnan(ce_fast.binary_cross_entropy(x, x))
    assert type(ce_fast.binary_cross_entropy(x, x, reduction="sum")) is np.dtype(dtype).type


def test_large_case_and_gil_released(rng):
    """A 10^6-element call from two Python threads at once (the kernels run
    without the GIL) gives the same bits as a single call."""
    import threading

    x, t = problem(rng, (1000, 1000), np.float32)
    want = ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, num_threads=1)
    res = [None, None]

    def work(i):
        res[i] = ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, num_threads=1)

    ths = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    for r in res:
        assert_bitwise(r[0], want[0])
        assert_bitwise(r[1], want[1])
    check_pair(want, ref.binary_cross_entropy_with_logits_and_grad(x, t), np.float32)
