"""Check the plain-NumPy specification ``ce_fast.reference`` against peers.

Peers: PyTorch (values and autograd gradients), SciPy, scikit-learn and
mpmath (high-precision checks of the accuracy claims).  Each peer is
optional: tests that need an absent one are skipped.
"""

import itertools
import zlib

import numpy as np
import pytest

import ce_fast.reference as ref

DTYPES = [np.float32, np.float64]


def tol(dtype):
    """(rtol, atol) for comparing the reference with a peer in ``dtype``."""
    if np.dtype(dtype) == np.float32:
        return {"rtol": 2e-5, "atol": 2e-6}
    return {"rtol": 1e-11, "atol": 1e-13}


def seed_for(*args):
    """A per-parameter seed that does not depend on PYTHONHASHSEED."""
    return zlib.crc32(repr(args).encode())


def close(actual, desired, dtype, err_msg=""):
    np.testing.assert_allclose(actual, desired, **tol(dtype), err_msg=err_msg)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


# (logits shape, class axis)
CAT_SHAPES = [
    ((16, 5), -1),
    ((9, 7, 41), 1),
    ((0, 5), -1),
    ((8, 1), -1),
    ((11,), 0),
    ((3, 4, 6), -1),
    ((6, 3, 2), 0),
]


def sample_shape(shape, axis):
    ax = axis % len(shape)
    return shape[:ax] + shape[ax + 1 :]


def make_logits(rng, shape, dtype):
    return (rng.standard_normal(shape) * 3).astype(dtype)


def make_int_target(rng, shape, axis, ignore=None):
    C = shape[axis]
    y = rng.integers(0, C, size=sample_shape(shape, axis))
    if ignore is not None and y.size > 2:
        y.reshape(-1)[::3] = ignore
    return y


def make_prob_target(rng, shape, axis, dtype):
    q = rng.random(shape) ** 3
    q = q / q.sum(axis=axis, keepdims=True)
    return q.astype(dtype)


def _torch_layout(a, axis):
    """Move the class axis to where torch wants it (1, or 0 for 1-D)."""
    return np.ascontiguousarray(np.moveaxis(a, axis, 1 if a.ndim > 1 else 0))


def torch_ce(torch, x, target, *, axis, reduction, grad_output, **kw):
    """(loss, grad) from torch.nn.functional.cross_entropy + autograd."""
    F = torch.nn.functional
    prob = np.issubdtype(np.asarray(target).dtype, np.floating)
    xt = torch.tensor(_torch_layout(x, axis), requires_grad=True)
    tt = torch.tensor(_torch_layout(target, axis) if prob else target)
    if kw.get("weight") is not None:
        kw["weight"] = torch.tensor(kw["weight"], dtype=xt.dtype)
    loss = F.cross_entropy(xt, tt, reduction=reduction, **kw)
    (loss * torch.tensor(grad_output, dtype=xt.dtype)).sum().backward()
    grad = np.moveaxis(xt.grad.numpy(), 1 if x.ndim > 1 else 0, axis)
    return loss.detach().numpy(), grad


def torch_ce_manual(
    torch,
    x,
    target,
    *,
    axis,
    reduction,
    grad_output,
    weight=None,
    sample_weight=None,
    ignore_index=-100,
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
):
    """The documented formulas written with torch ops, differentiated by autograd."""
    xt = torch.tensor(np.moveaxis(x, axis, -1).astype(np.float64), requires_grad=True)
    z = softcap * torch.tanh(xt / softcap) if softcap else xt
    C = z.shape[-1]
    lse = torch.logsumexp(z, dim=-1)
    logp = z - lse[..., None]
    w = torch.ones(C, dtype=torch.float64)
    if weight is not None:
        w = torch.tensor(weight, dtype=torch.float64)
    s = torch.ones(lse.shape, dtype=torch.float64)
    if sample_weight is not None:
        s = torch.tensor(np.broadcast_to(sample_weight, lse.shape).astype(np.float64))
    eps = label_smoothing
    if np.issubdtype(np.asarray(target).dtype, np.integer):
        y = torch.tensor(target)
        ign = y == ignore_index
        yc = torch.where(ign, torch.zeros_like(y), y)
        wy = w[yc]
        nll = -logp.gather(-1, yc[..., None])[..., 0]
        smooth = -(logp * w).sum(-1)
        per = s * ((1 - eps) * wy * nll + eps / C * smooth) + s * wy * z_loss * lse**2
        per = torch.where(ign, torch.zeros_like(per), per)
        den = (s * wy * (~ign)).sum()
    else:
        q = torch.tensor(np.moveaxis(target, axis, -1).astype(np.float64))
        qs = (1 - eps) * q + eps / C
        per = -s * (w * qs * logp).sum(-1) + s * z_loss * lse**2
        den = s.sum()
    loss = {"none": per, "sum": per.sum(), "mean": per.sum() / den}[reduction]
    (loss * torch.tensor(grad_output, dtype=torch.float64)).sum().backward()
    return loss.detach().numpy(), np.moveaxis(xt.grad.numpy(), -1, axis)


def grad_output_for(rng, reduction, sshape):
    if reduction == "none":
        return rng.standard_normal(sshape)
    return np.float64(0.7)


# ---------------------------------------------------------------------------
# Categorical cross-entropy against PyTorch
# ---------------------------------------------------------------------------


# The option grids below loop inside each test (a failure names its case):
# without torch, each grid is one skipped test, not hundreds.


@pytest.mark.parametrize(("shape", "axis"), CAT_SHAPES)
def test_ce_integer_target_vs_torch(torch, shape, axis):
    grid = itertools.product(DTYPES, ["mean", "sum", "none"], [False, True], [0.0, 0.15], [-100, 1])
    for dtype, reduction, use_weight, label_smoothing, ignore_index in grid:
        case = f"{dtype.__name__} {reduction} weight={use_weight} eps={label_smoothing} ignore={ignore_index}"
        rng = np.random.default_rng(seed_for(shape, axis, reduction))
        C = shape[axis]
        if ignore_index >= C:
            continue  # ignore_index is not a class here
        x = make_logits(rng, shape, dtype)
        y = make_int_target(rng, shape, axis, ignore=ignore_index)
        weight = rng.random(C) + 0.5 if use_weight else None
        go = grad_output_for(rng, reduction, y.shape)
        kw = {"weight": weight, "ignore_index": ignore_index, "label_smoothing": label_smoothing}
        expected_loss, expected_grad = torch_ce(
            torch, x, y, axis=axis, reduction=reduction, grad_output=go, **kw
        )
        kw.update(axis=axis, reduction=reduction)
        loss = ref.cross_entropy(x, y, **kw)
        grad = ref.cross_entropy_grad(x, y, grad_output=go, **kw)
        loss2, grad2 = ref.cross_entropy_and_grad(x, y, grad_output=go, **kw)

        if reduction == "none":
            assert isinstance(loss, np.ndarray) and loss.shape == y.shape, case
        else:
            assert isinstance(loss, np.generic) and np.ndim(loss) == 0, case
        assert loss.dtype == dtype and grad.dtype == dtype and grad.shape == x.shape, case
        assert grad.flags.c_contiguous, case
        close(loss, expected_loss, dtype, err_msg=case)
        close(grad, expected_grad, dtype, err_msg=case)
        np.testing.assert_array_equal(loss2, loss, err_msg=case)
        np.testing.assert_array_equal(grad2, grad, err_msg=case)


@pytest.mark.parametrize(("shape", "axis"), CAT_SHAPES)
def test_ce_probability_target_vs_torch(torch, shape, axis):
    for dtype, reduction, use_weight, label_smoothing in itertools.product(
        DTYPES, ["mean", "sum", "none"], [False, True], [0.0, 0.2]
    ):
        case = f"{dtype.__name__} {reduction} weight={use_weight} eps={label_smoothing}"
        rng = np.random.default_rng(seed_for(shape, axis, reduction, 1))
        C = shape[axis]
        x = make_logits(rng, shape, dtype)
        q = make_prob_target(rng, shape, axis, dtype)
        weight = rng.random(C) + 0.5 if use_weight else None
        go = grad_output_for(rng, reduction, sample_shape(shape, axis))
        kw = {"weight": weight, "label_smoothing": label_smoothing}
        expected_loss, expected_grad = torch_ce(
            torch, x, q, axis=axis, reduction=reduction, grad_output=go, **kw
        )
        loss, grad = ref.cross_entropy_and_grad(x, q, axis=axis, reduction=reduction, grad_output=go, **kw)
        assert loss.dtype == dtype and grad.dtype == dtype, case
        close(loss, expected_loss, dtype, err_msg=case)
        close(grad, expected_grad, dtype, err_msg=case)


EXTENDED = [
    {"sample_weight": "per-sample"},
    {"sample_weight": "broadcast"},
    {"z_loss": 1e-3},
    {"z_loss": 0.5, "label_smoothing": 0.1},
    {"softcap": 2.5},
    {"softcap": 30.0, "z_loss": 1e-2, "label_smoothing": 0.3, "weight": True},
    {"sample_weight": "per-sample", "weight": True, "z_loss": 0.1, "softcap": 4.0},
    {"ignore_index": 0, "sample_weight": "per-sample", "z_loss": 0.2},
]


@pytest.mark.parametrize("target_kind", ["int", "prob"])
def test_ce_extended_options_vs_torch_autograd(torch, target_kind):
    """sample_weight, z_loss and softcap (not in torch) against autograd."""
    grid = itertools.product(EXTENDED, ["mean", "sum", "none"], [((12, 6), -1), ((5, 4, 3), 1)])
    for opts, reduction, (shape, axis) in grid:
        case = f"{opts} {reduction} {shape} axis={axis}"
        opts = dict(opts)
        if target_kind == "prob" and opts.get("ignore_index", -100) >= 0:
            continue  # ignore_index >= 0 needs an integer target
        rng = np.random.default_rng(7)
        sshape = sample_shape(shape, axis)
        C = shape[axis]
        x = make_logits(rng, shape, np.float64)
        if target_kind == "int":
            t = make_int_target(rng, shape, axis, ignore=opts.get("ignore_index"))
        else:
            t = make_prob_target(rng, shape, axis, np.float64)
        if opts.get("weight"):
            opts["weight"] = rng.random(C) + 0.5
        if opts.get("sample_weight") == "per-sample":
            opts["sample_weight"] = rng.random(sshape) + 0.1
        elif opts.get("sample_weight") == "broadcast":
            opts["sample_weight"] = rng.random(sshape[-1:]) + 0.1
        go = grad_output_for(rng, reduction, sshape)
        expected_loss, expected_grad = torch_ce_manual(
            torch, x, t, axis=axis, reduction=reduction, grad_output=go, **opts
        )
        loss, grad = ref.cross_entropy_and_grad(x, t, axis=axis, reduction=reduction, grad_output=go, **opts)
        close(loss, expected_loss, np.float64, err_msg=case)
        close(grad, expected_grad, np.float64, err_msg=case)


def test_ce_matches_torch_with_masked_classes(torch):
    """-inf logits on non-target classes are legal (torch agrees)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10, 6))
    y = rng.integers(0, 3, 10)
    x[:, 4:] = -np.inf
    expected_loss, expected_grad = torch_ce(
        torch, x, y, axis=-1, reduction="mean", grad_output=np.float64(1.0)
    )
    loss, grad = ref.cross_entropy_and_grad(x, y)
    assert np.isfinite(loss) and np.all(np.isfinite(grad))
    close(loss, expected_loss, np.float64)
    close(grad, expected_grad, np.float64)
    assert np.all(grad[:, 4:] == 0)


def test_ce_input_from_torch_tensor(torch):
    x = torch.randn(4, 5, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 3])
    assert ref.cross_entropy(x, y) == ref.cross_entropy(x.numpy(), y.numpy())


# ---------------------------------------------------------------------------
# Categorical cross-entropy: accuracy claims (mpmath as the exact answer)
# ---------------------------------------------------------------------------


def mp_ce_row(x, y, weight=None, eps=0.0, z_loss=0.0):
    """Exact (50-digit) loss and gradient of one row, integer target."""
    mpmath = pytest.importorskip("mpmath")
    mp = mpmath.mp
    mp.dps = 50
    xs = [mpmath.mpf(float(v)) for v in x]
    C = len(xs)
    w = [mpmath.mpf(1)] * C if weight is None else [mpmath.mpf(float(v)) for v in weight]
    lse = mpmath.log(mpmath.fsum(mpmath.exp(v) for v in xs))
    p = [mpmath.exp(v - lse) for v in xs]
    nlp = [lse - v for v in xs]
    W = mpmath.fsum(w)
    loss = (1 - eps) * w[y] * nlp[y] + eps / C * mpmath.fsum(wc * n for wc, n in zip(w, nlp))
    loss += w[y] * z_loss * lse**2
    big_b = (1 - eps) * w[y] + eps / C * W + 2 * z_loss * w[y] * lse
    grad = [p[j] * big_b - (1 - eps) * w[y] * (j == y) - eps / C * w[j] for j in range(C)]
    return float(loss), np.array([float(g) for g in grad])


@pytest.mark.parametrize(
    "row",
    [
        [40.0, 0.0, 0.0],  # loss ~ 2e-18: must not be 0
        [27.6, 0.0],  # loss ~ 1e-12
        [30.0, 30.0 - 1e-9, -5.0],  # near tie at the max
        [1e3, 1e3, 1e3 - 50],  # exact tie at the max, large values
        [-1e4, -1e4 - 45, -1e4 - 60, -1e4 - 80],
        [0.3, -0.2, 0.1, 2.0, -1.0],
    ],
)
@pytest.mark.parametrize(
    "opts",
    [
        {},
        {"weight": [2.0, 0.5, 1.0, 3.0, 0.25]},
        {"z_loss": 1e-4},
        {"eps": 1e-3},
    ],
)
def test_ce_accuracy_vs_mpmath(row, opts):
    x = np.array([row])
    C = x.shape[1]
    weight = None if "weight" not in opts else np.array(opts["weight"][:C])
    eps = opts.get("eps", 0.0)
    lam = opts.get("z_loss", 0.0)
    for y in range(C):
        exact_loss, exact_grad = mp_ce_row(row, y, weight, eps, lam)
        loss, grad = ref.cross_entropy_and_grad(
            x, np.array([y]), weight=weight, label_smoothing=eps, z_loss=lam,
            reduction="sum",
        )  # fmt: skip
        np.testing.assert_allclose(loss, exact_loss, rtol=1e-13, atol=0)
        # the gradient of each class, relative to its own size; with smoothing
        # the true-class entry is a genuine difference, so allow its scale
        scale = np.abs(exact_grad) + (1e-3 * np.abs(exact_grad).max() if eps else 0)
        assert np.all(np.abs(grad[0] - exact_grad) <= 1e-13 * scale + 1e-300)


def test_ce_tiny_loss_float32_is_not_zero():
    x = np.array([[20.0, 0.0, -3.0]], dtype=np.float32)
    loss, grad = ref.cross_entropy_and_grad(x, np.array([0]))
    expected = np.log1p(np.exp(-20.0) + np.exp(-23.0))
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss, expected, rtol=1e-6)
    assert grad[0, 0] < 0
    np.testing.assert_allclose(grad[0].sum(), 0.0, atol=1e-12)


def test_ce_gradient_rows_sum_to_zero():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((50, 30)) * 10
    y = rng.integers(0, 30, 50)
    g = ref.cross_entropy_grad(x, y, weight=rng.random(30), reduction="sum")
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-15)


def test_ce_softcap_accuracy():
    """Large |x|/cap: the derivative 1 - tanh^2 must not be 0 by cancellation."""
    x = np.array([[60.0, 0.0, -1.0]])
    cap = 3.0
    g = ref.cross_entropy_grad(x, np.array([1]), softcap=cap, reduction="sum")
    xc = cap * np.tanh(x / cap)
    p = np.exp(xc - np.log(np.exp(xc).sum()))
    dtanh = 4 * np.exp(-2 * 60 / cap) / (1 + np.exp(-2 * 60 / cap)) ** 2
    np.testing.assert_allclose(g[0, 0], p[0, 0] * dtanh, rtol=1e-13)
    assert g[0, 0] > 0


# ---------------------------------------------------------------------------
# Categorical cross-entropy: edge cases
# ---------------------------------------------------------------------------


def test_ce_ignored_rows_are_never_read():
    x = np.array([[np.nan, np.inf, 1.0], [1.0, 2.0, 3.0], [-np.inf] * 3])
    y = np.array([-100, 2, -100])
    loss, grad = ref.cross_entropy_and_grad(x, y, reduction="none")
    assert loss[0] == 0 and loss[2] == 0 and np.isfinite(loss[1])
    assert np.all(grad[[0, 2]] == 0) and np.all(np.isfinite(grad[1]))
    m, gm = ref.cross_entropy_and_grad(x, y)
    np.testing.assert_allclose(m, loss[1])
    np.testing.assert_allclose(gm[1], grad[1])


@pytest.mark.parametrize(
    "bad_row",
    [[np.nan, 0.0, 1.0], [0.0, np.inf, 1.0], [-np.inf, -np.inf, -np.inf], [np.inf] * 3],
)
@pytest.mark.parametrize("target_kind", ["int", "prob"])
def test_ce_bad_rows_are_nan(bad_row, target_kind):
    x = np.array([[1.0, 2.0, 3.0], bad_row])
    t = np.array([0, 1]) if target_kind == "int" else np.full((2, 3), 1 / 3)
    loss, grad = ref.cross_entropy_and_grad(x, t, reduction="none")
    assert np.isfinite(loss[0]) and np.isnan(loss[1])
    assert np.all(np.isfinite(grad[0])) and np.all(np.isnan(grad[1]))
    assert np.isnan(ref.cross_entropy(x, t, reduction="sum"))
    assert np.isnan(ref.cross_entropy(x, t))


def test_ce_neg_inf_on_target_class():
    x = np.array([[-np.inf, 0.0, 1.0]])
    loss, grad = ref.cross_entropy_and_grad(x, np.array([0]))
    assert loss == np.inf
    assert np.all(np.isfinite(grad)) and grad[0, 0] == -1.0


def test_ce_probability_target_zero_mass_on_masked_class():
    x = np.array([[0.5, -np.inf, 1.0]])
    q = np.array([[0.25, 0.0, 0.75]])
    loss, grad = ref.cross_entropy_and_grad(x, q)
    p = np.exp(x - np.log(np.exp(x).sum()))
    np.testing.assert_allclose(loss, -(0.25 * np.log(p[0, 0]) + 0.75 * np.log(p[0, 2])))
    np.testing.assert_allclose(grad, p - q)
    assert grad[0, 1] == 0
    # smoothing puts mass on the masked class: the loss is infinite
    assert ref.cross_entropy(x, q, label_smoothing=0.1) == np.inf


def test_ce_softcap_caps_infinities():
    x = np.array([[np.inf, 0.0, -np.inf]])
    loss, grad = ref.cross_entropy_and_grad(x, np.array([0]), softcap=2.0)
    xc = np.array([2.0, 0.0, -2.0])
    expected = np.log(np.exp(xc).sum()) - 2.0
    np.testing.assert_allclose(loss, expected)
    assert grad[0, 0] == 0 and grad[0, 2] == 0 and grad[0, 1] > 0


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_ce_all_ignored(reduction):
    x = np.array([[1.0, 2.0], [np.nan, 0.0]])
    y = np.array([-100, -100])
    loss, grad = ref.cross_entropy_and_grad(x, y, reduction=reduction)
    if reduction == "mean":
        assert np.isnan(loss)
    else:
        assert np.all(loss == 0)
    assert np.all(grad == 0)


def test_ce_zero_total_weight_mean_is_nan_and_grad_nan_on_kept_rows():
    x = np.array([[1.0, 2.0], [3.0, 0.0], [0.0, 0.0]])
    y = np.array([0, 0, -100])
    loss, grad = ref.cross_entropy_and_grad(x, y, weight=[0.0, 1.0])
    assert np.isnan(loss)
    assert np.all(np.isnan(grad[:2])) and np.all(grad[2] == 0)


@pytest.mark.parametrize("target_kind", ["int", "prob"])
def test_ce_empty_batch(target_kind):
    x = np.zeros((0, 4), dtype=np.float32)
    t = np.zeros(0, dtype=np.int64) if target_kind == "int" else np.zeros((0, 4))
    assert np.isnan(ref.cross_entropy(x, t))
    s = ref.cross_entropy(x, t, reduction="sum")
    assert s == 0 and s.dtype == np.float32
    assert ref.cross_entropy(x, t, reduction="none").shape == (0,)
    assert ref.cross_entropy_grad(x, t).shape == (0, 4)


def test_ce_single_sample_and_one_class():
    assert ref.cross_entropy(np.array([1.0, 2.0, 3.0]), 2).dtype == np.float64
    none = ref.cross_entropy(np.array([1.0, 2.0, 3.0]), 2, reduction="none")
    assert isinstance(none, np.ndarray) and none.shape == ()
    loss, grad = ref.cross_entropy_and_grad(np.ones((4, 1)), np.zeros(4, int))
    assert loss == 0 and np.all(grad == 0)


@pytest.mark.parametrize(
    ("in_dtype", "out_dtype"),
    [
        (np.float16, np.float32),
        (np.float32, np.float32),
        (np.float64, np.float64),
        (np.int32, np.float64),
        (np.uint8, np.float64),
        (np.bool_, np.float64),
    ],
)
def test_ce_dtypes(in_dtype, out_dtype):
    x = np.array([[1, 0, 1], [0, 1, 1]]).astype(in_dtype)
    y = np.array([0, 2], dtype=np.uint16)
    loss, grad = ref.cross_entropy_and_grad(x, y)
    # 16-bit logits: 16-bit gradient (PyTorch's rule), float32 loss
    assert loss.dtype == out_dtype and grad.dtype == (np.float16 if in_dtype is np.float16 else out_dtype)
    expected = ref.cross_entropy(x.astype(np.float64), y)
    np.testing.assert_allclose(loss, expected, rtol=1e-6)


def test_ce_does_not_modify_readonly_input_and_out_works():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 4))
    y = np.array([0, 1, 2, 3, 0])
    x.flags.writeable = False
    g = ref.cross_entropy_grad(x, y)
    out = np.empty_like(x)
    assert ref.cross_entropy_grad(x, y, out=out) is out
    np.testing.assert_array_equal(out, g)
    x2 = x.copy()
    loss, g2 = ref.cross_entropy_and_grad(x2, y, out=x2)
    assert g2 is x2
    np.testing.assert_array_equal(x2, g)
    np.testing.assert_allclose(loss, ref.cross_entropy(x, y))


def test_ce_index_error_names_first_position():
    x = np.zeros((2, 3, 4))
    y = np.zeros((2, 4), dtype=np.int64)
    y[1, 2] = 7
    y[1, 3] = -1
    with pytest.raises(IndexError, match=r"class index 7 at flat position 6"):
        ref.cross_entropy(x, y, axis=1)
    y = np.array([3, 2**64 - 1], dtype=np.uint64)
    with pytest.raises(IndexError, match="flat position 0"):
        ref.cross_entropy(np.zeros((2, 3)), y)
    with pytest.raises(IndexError, match="18446744073709551615 at flat position 1"):
        ref.cross_entropy(np.zeros((2, 3)), y, ignore_index=3)


X23 = np.zeros((2, 3))
Y2 = np.array([0, 1])


@pytest.mark.parametrize(
    ("args", "kwargs", "exc", "match"),
    [
        ((X23, np.array([True, False])), {}, TypeError, "target"),
        ((X23, np.array([1 + 0j, 0j])), {}, TypeError, "target"),
        ((X23, np.array(["a", "b"])), {}, TypeError, "target"),
        ((X23, np.array([0, 1], dtype=object)), {}, TypeError, "target"),
        ((X23 + 0j, Y2), {}, TypeError, "logits"),
        ((X23.astype(object), Y2), {}, TypeError, "logits"),
        ((np.array(["1", "2"]), 0), {}, TypeError, "logits"),
        ((X23, np.array([0, 1, 2])), {}, ValueError, r"integer.*\(3,\)"),
        ((X23, np.zeros((2, 2))), {}, ValueError, r"floating.*\(2, 2\)"),
        ((X23, np.zeros(2)), {}, ValueError, r"\(2, 3\)"),
        ((np.zeros((2, 0)), Y2), {}, ValueError, "C == 0"),
        ((np.float64(1.0), 0), {}, ValueError, None),
        ((X23, Y2), {"reduction": "Mean"}, ValueError, "reduction"),
        ((X23, Y2), {"reduction": None}, ValueError, "reduction"),
        ((X23, Y2), {"label_smoothing": 1.5}, ValueError, "label_smoothing"),
        ((X23, Y2), {"label_smoothing": -0.1}, ValueError, "label_smoothing"),
        ((X23, Y2), {"label_smoothing": np.nan}, ValueError, "label_smoothing"),
        ((X23, Y2), {"z_loss": -1e-3}, ValueError, "z_loss"),
        ((X23, Y2), {"z_loss": np.nan}, ValueError, "z_loss"),
        ((X23, Y2), {"softcap": 0.0}, ValueError, "softcap"),
        ((X23, Y2), {"softcap": -1.0}, ValueError, "softcap"),
        ((X23, Y2), {"softcap": np.nan}, ValueError, "softcap"),
        ((X23, Y2), {"weight": [1.0, 2.0]}, ValueError, "weight"),
        ((X23, Y2), {"weight": np.ones((1, 3))}, ValueError, "weight"),
        ((X23, Y2), {"sample_weight": np.ones(3)}, ValueError, "sample_weight"),
        ((X23, Y2), {"sample_weight": np.ones((2, 1))}, ValueError, "sample_weight"),
        ((X23, Y2), {"num_threads": 0}, ValueError, "num_threads"),
        ((X23, Y2), {"num_threads": -2}, ValueError, "num_threads"),
        ((X23, Y2), {"num_threads": 1.5}, ValueError, "num_threads"),
        ((X23, Y2), {"num_threads": True}, ValueError, "num_threads"),
        ((X23, Y2), {"axis": 2}, ValueError, None),
        ((X23, Y2), {"axis": -3}, ValueError, None),
        (
            (X23, np.full((2, 3), 1 / 3)),
            {"ignore_index": 0},
            ValueError,
            "ignore_index",
        ),
        ((X23, np.array([0, 3])), {}, IndexError, "position 1"),
        ((X23, np.array([-1, 0])), {}, IndexError, "position 0"),
    ],
)
@pytest.mark.parametrize("fn", [ref.cross_entropy, ref.cross_entropy_grad, ref.cross_entropy_and_grad])
def test_ce_errors(fn, args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        fn(*args, **kwargs)


def test_ce_axis_error_is_numpy_axis_error():
    with pytest.raises(np.exceptions.AxisError):
        ref.cross_entropy(X23, Y2, axis=5)


@pytest.mark.parametrize(
    ("kwargs", "exc"),
    [
        ({"reduction": "mean", "grad_output": np.ones(2)}, ValueError),
        ({"reduction": "sum", "grad_output": np.ones(1)}, ValueError),
        ({"reduction": "none", "grad_output": np.ones(3)}, ValueError),
        ({"reduction": "none", "grad_output": np.ones((2, 2))}, ValueError),
        ({"reduction": "none", "grad_output": np.ones(2) + 1j}, TypeError),
        ({"out": np.empty((3, 2))}, ValueError),
        ({"out": np.empty((2, 3), dtype=np.float32)}, ValueError),
        ({"out": np.empty((3, 2)).T}, ValueError),
        ({"out": [[0.0] * 3] * 2}, TypeError),
    ],
)
def test_ce_grad_argument_errors(kwargs, exc):
    with pytest.raises(exc):
        ref.cross_entropy_grad(X23, Y2, **kwargs)
    with pytest.raises(exc):
        ref.cross_entropy_and_grad(X23, Y2, **kwargs)


def test_ce_readonly_out_rejected():
    out = np.empty((2, 3))
    out.flags.writeable = False
    with pytest.raises(ValueError):
        ref.cross_entropy_grad(X23, Y2, out=out)


# ---------------------------------------------------------------------------
# Binary cross-entropy with logits against PyTorch
# ---------------------------------------------------------------------------


BIN_SHAPES = [(0,), (17,), (6, 5), (3, 4, 5), ()]


@pytest.mark.parametrize("shape", BIN_SHAPES)
def test_bce_logits_vs_torch(torch, shape):
    F = torch.nn.functional
    grid = itertools.product(DTYPES, ["mean", "sum", "none"], [False, True], [False, True])
    for dtype, reduction, use_weight, use_pos_weight in grid:
        case = f"{dtype.__name__} {reduction} weight={use_weight} pos_weight={use_pos_weight}"
        rng = np.random.default_rng(11)
        x = (rng.standard_normal(shape) * 4).astype(dtype)
        t = rng.random(shape).astype(dtype)  # soft labels
        if len(shape):
            t.reshape(-1)[::2] = np.round(t.reshape(-1)[::2])
        last = shape[-1:] if shape else ()
        weight = (rng.random(shape) + 0.5).astype(dtype) if use_weight else None
        pos_weight = (rng.random(last) * 3).astype(dtype) if use_pos_weight else None
        go = rng.standard_normal(shape) if reduction == "none" else np.float64(0.7)

        xt = torch.tensor(x, requires_grad=True)
        kw_t = {}
        if weight is not None:
            kw_t["weight"] = torch.tensor(weight)
        if pos_weight is not None:
            kw_t["pos_weight"] = torch.tensor(pos_weight)
        lt = F.binary_cross_entropy_with_logits(xt, torch.tensor(t), reduction=reduction, **kw_t)
        (lt * torch.tensor(go, dtype=xt.dtype)).sum().backward()

        kw = {"weight": weight, "pos_weight": pos_weight, "reduction": reduction}
        loss = ref.binary_cross_entropy_with_logits(x, t, **kw)
        grad = ref.binary_cross_entropy_with_logits_grad(x, t, grad_output=go, **kw)
        loss2, grad2 = ref.binary_cross_entropy_with_logits_and_grad(x, t, grad_output=go, **kw)
        assert loss.dtype == dtype and grad.dtype == dtype and grad.shape == x.shape, case
        if reduction == "none":
            assert isinstance(loss, np.ndarray) and loss.shape == x.shape, case
        else:
            assert isinstance(loss, np.generic), case
        close(loss, lt.detach().numpy(), dtype, err_msg=case)
        close(grad, xt.grad.numpy(), dtype, err_msg=case)
        np.testing.assert_array_equal(loss2, loss, err_msg=case)
        np.testing.assert_array_equal(grad2, grad, err_msg=case)


def test_bce_logits_broadcast_target_and_weights(torch):
    F = torch.nn.functional
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 3))
    t = rng.random(3)
    w = rng.random((4, 1))
    xt = torch.tensor(x, requires_grad=True)
    lt = F.binary_cross_entropy_with_logits(
        xt, torch.tensor(np.broadcast_to(t, x.shape).copy()), weight=torch.tensor(w)
    )
    lt.backward()
    loss, grad = ref.binary_cross_entropy_with_logits_and_grad(x, t, weight=w)
    close(loss, lt.item(), np.float64)
    close(grad, xt.grad.numpy(), np.float64)


def test_bce_logits_tails_are_accurate():
    x = np.array([40.0, -40.0, 800.0, -800.0, 40.0])
    t = np.array([1.0, 0.0, 1.0, 0.0, 0.0])
    loss, grad = ref.binary_cross_entropy_with_logits_and_grad(x, t, reduction="none")
    e = np.exp(-40.0)
    np.testing.assert_allclose(loss, [e, e, 0.0, 0.0, 40.0 + e], rtol=1e-15)
    np.testing.assert_allclose(grad, [-e, e, 0.0, 0.0, 1.0], rtol=1e-15)
    assert loss[0] > 0 and grad[0] < 0
    l32 = ref.binary_cross_entropy_with_logits(np.float32(20.0), np.float32(1.0))
    assert l32.dtype == np.float32
    np.testing.assert_allclose(l32, np.exp(-20.0), rtol=1e-6)


def test_bce_logits_errors():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError):
        ref.binary_cross_entropy_with_logits(x, np.zeros(2))
    with pytest.raises(ValueError):
        ref.binary_cross_entropy_with_logits(x, np.zeros((2, 3)), weight=np.ones(2))
    with pytest.raises(ValueError):
        ref.binary_cross_entropy_with_logits(x, np.zeros((2, 3)), pos_weight=np.ones(2))
    with pytest.raises(ValueError):
        ref.binary_cross_entropy_with_logits(x, np.zeros((2, 3)), reduction="avg")
    with pytest.raises(ValueError):
        ref.binary_cross_entropy_with_logits(x, np.zeros((2, 3)), num_threads=0)
    with pytest.raises(TypeError, match="logits"):
        ref.binary_cross_entropy_with_logits(x + 1j, np.zeros((2, 3)))
    with pytest.raises(TypeError, match="target"):
        ref.binary_cross_entropy_with_logits(x, np.zeros((2, 3), dtype=object))
    with pytest.raises(ValueError):
        ref.binary_cross_entropy_with_logits_grad(x, x, grad_output=np.ones(3))
    with pytest.raises(ValueError):
        ref.binary_cross_entropy_with_logits_grad(x, x, reduction="none", grad_output=np.ones(2))
    with pytest.raises(ValueError):
        ref.binary_cross_entropy_with_logits_grad(x, x, out=np.empty((3, 2)))


def test_bce_logits_empty():
    x = np.zeros((0, 3))
    assert np.isnan(ref.binary_cross_entropy_with_logits(x, x))
    assert ref.binary_cross_entropy_with_logits(x, x, reduction="sum") == 0
    assert ref.binary_cross_entropy_with_logits_grad(x, x).shape == (0, 3)


# ---------------------------------------------------------------------------
# Binary cross-entropy on probabilities
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_probs_vs_sklearn(dtype):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(4)
    t = rng.integers(0, 2, 200)
    p = rng.random(200).astype(dtype)
    p[:3] = [0.0, 1.0, 1.0]
    t[:3] = [1, 0, 1]
    loss = ref.binary_cross_entropy(p, t)
    assert loss.dtype == dtype
    close(loss, metrics.log_loss(t, p, labels=[0, 1]), dtype)


def test_bce_probs_vs_torch(torch):
    F = torch.nn.functional
    for dtype, reduction in itertools.product(DTYPES, ["mean", "sum", "none"]):
        rng = np.random.default_rng(6)
        p = (rng.random((7, 3)) * 0.98 + 0.01).astype(dtype)
        t = rng.random((7, 3)).astype(dtype)
        expected = F.binary_cross_entropy(torch.tensor(p), torch.tensor(t), reduction=reduction)
        got = ref.binary_cross_entropy(p, t, reduction=reduction)
        close(got, expected.numpy(), dtype, err_msg=f"{dtype.__name__} {reduction}")


def test_bce_probs_clipping_and_zero_terms():
    p = np.array([0.0, 1.0, 0.0, 1.0, 1e-20])
    t = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    eps = np.finfo(np.float64).eps
    loss = ref.binary_cross_entropy(p, t, reduction="none")
    np.testing.assert_allclose(
        loss,
        [-np.log1p(-eps), -np.log1p(-eps), -np.log(eps), -np.log(eps), -np.log(eps)],
    )
    loss = ref.binary_cross_entropy(p, t, eps=0.0, reduction="none")
    np.testing.assert_array_equal(loss[:4], [0.0, 0.0, np.inf, np.inf])
    loss = ref.binary_cross_entropy(p, t, eps=0.1, reduction="none")
    np.testing.assert_allclose(loss[2], -np.log(0.1))


@pytest.mark.parametrize(
    ("probs", "target", "kwargs"),
    [
        ([0.5, 1.5], [0, 1], {}),
        ([0.5, -0.1], [0, 1], {}),
        ([0.5, np.nan], [0, 1], {}),
        ([0.5, 0.5], [0, 2], {}),
        ([0.5, 0.5], [0, np.nan], {}),
        ([0.5, 0.5], [0, 1], {"eps": -1e-3}),
        ([0.5, 0.5], [0, 1], {"eps": np.nan}),
        ([0.5, 0.5], [0, 1], {"reduction": "SUM"}),
        ([0.5, 0.5], [0, 1, 1], {}),
    ],
)
def test_bce_probs_errors(probs, target, kwargs):
    with pytest.raises(ValueError):
        ref.binary_cross_entropy(np.array(probs), np.array(target), **kwargs)


# ---------------------------------------------------------------------------
# Softmax family against SciPy
# ---------------------------------------------------------------------------


FAMILY_SHAPES = [
    ((10, 7), -1),
    ((9, 7, 41), 1),
    ((0, 5), -1),
    ((8, 1), -1),
    ((13,), 0),
    ((4, 3, 5), 0),
]


@pytest.fixture(scope="module")
def special():
    return pytest.importorskip("scipy.special")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # SciPy on all -inf rows
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("shape", "axis"), FAMILY_SHAPES)
def test_softmax_family_vs_scipy(special, dtype, shape, axis):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(8)
    x = (rng.standard_normal(shape) * 5).astype(dtype)
    x.reshape(-1)[::7] = -np.inf  # masked entries (all -inf rows when C == 1)
    x64 = x.astype(np.float64)

    lse = ref.logsumexp(x, axis=axis)
    ls = ref.log_softmax(x, axis=axis)
    sm = ref.softmax(x, axis=axis)
    h = ref.softmax_entropy(x, axis=axis)
    for r in (lse, ls, sm, h):
        assert r.dtype == dtype
    close(lse, special.logsumexp(x64, axis=axis), dtype)
    close(ls, special.log_softmax(x64, axis=axis), dtype)
    close(sm, special.softmax(x64, axis=axis), dtype)
    p = special.softmax(x64, axis=axis)
    if p.size:
        close(h, stats.entropy(p, axis=axis), dtype)
    close(h, special.entr(p).sum(axis=axis), dtype)

    probs = rng.random(shape).astype(dtype)
    probs.reshape(-1)[::5] = 0.0
    e = ref.entropy(probs, axis=axis)
    assert e.dtype == dtype
    close(e, special.entr(probs.astype(np.float64)).sum(axis=axis), dtype)
    if probs.size and shape[axis] > 1:
        norm = probs / probs.sum(axis=axis, keepdims=True)
        close(ref.entropy(norm, axis=axis), stats.entropy(norm, axis=axis), dtype)


def test_softmax_family_scalar_results_for_1d():
    x = np.array([1.0, 2.0, 3.0])
    for fn in (ref.logsumexp, ref.entropy, ref.softmax_entropy):
        r = fn(x / 6)
        assert isinstance(r, np.float64)


def test_softmax_family_edge_rows(special):
    inf, nan = np.inf, np.nan
    x = np.array(
        [
            [-inf, -inf, -inf],
            [inf, 1.0, 0.0],
            [nan, 1.0, 0.0],
            [-inf, 0.0, 1.0],
            [nan, inf, 0],
        ]
    )
    with np.errstate(all="ignore"):
        expected_lse = special.logsumexp(x, axis=-1)
    np.testing.assert_array_equal(ref.logsumexp(x), expected_lse)
    np.testing.assert_array_equal(ref.logsumexp(x), [-inf, inf, nan, np.log(1 + np.e), nan])
    for fn in (ref.log_softmax, ref.softmax):
        r = fn(x)
        assert np.all(np.isnan(r[[0, 1, 2, 4]]))
        assert np.all(np.isfinite(r[3, 1:]))
    assert ref.log_softmax(x)[3, 0] == -inf and ref.softmax(x)[3, 0] == 0
    h = ref.softmax_entropy(x)
    assert np.all(np.isnan(h[[0, 1, 2, 4]])) and np.isfinite(h[3])
    assert np.isnan(ref.entropy(np.array([0.5, nan])))


def test_softmax_family_accuracy():
    x = np.array([[50.0, 0.0, 0.0]])
    e = np.exp(-50.0)
    np.testing.assert_allclose(ref.log_softmax(x)[0, 0], -2 * e, rtol=1e-15)
    np.testing.assert_allclose(ref.logsumexp(x), 50.0 + 2 * e, rtol=1e-15)
    # entropy of an almost-one-hot distribution: ~ 2 * 51 * e^-50
    h = ref.softmax_entropy(x)
    np.testing.assert_allclose(h, 2 * e * 51, rtol=1e-13)
    # (entropy(softmax(x)) cannot match here: p_0 rounds to 1 and log p_0 to 0)
    y = np.array([[3.0, 0.0, -1.0, 0.5]])
    np.testing.assert_allclose(ref.softmax_entropy(y), ref.entropy(ref.softmax(y)), rtol=1e-14)
    sm = ref.softmax(x)
    np.testing.assert_allclose(sm[0, 1], e, rtol=1e-15)


def test_softmax_family_out_and_errors():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 4))
    out = np.empty((3, 4))
    assert ref.softmax(x, out=out) is out
    np.testing.assert_array_equal(out, ref.softmax(x))
    assert ref.log_softmax(x, axis=0, out=out) is out
    np.testing.assert_array_equal(out, ref.log_softmax(x, axis=0))
    with pytest.raises(ValueError):
        ref.softmax(x, out=np.empty((4, 3)))
    with pytest.raises(ValueError):
        ref.log_softmax(x, out=np.empty((3, 4), dtype=np.float32))
    with pytest.raises(TypeError):
        ref.softmax(x, out=[0.0])
    # an empty class axis: log(0) for logsumexp, empty softmaxes, an error
    # where there is no distribution
    np.testing.assert_array_equal(ref.logsumexp(np.zeros((3, 0))), np.full(3, -np.inf))
    assert ref.log_softmax(np.zeros((3, 0))).shape == (3, 0)
    assert ref.softmax(np.zeros((3, 0)), axis=1).shape == (3, 0)
    for fn in (
        ref.logsumexp,
        ref.log_softmax,
        ref.softmax,
        ref.entropy,
        ref.softmax_entropy,
    ):
        if fn in (ref.entropy, ref.softmax_entropy):
            with pytest.raises(ValueError, match="C == 0"):
                fn(np.zeros((3, 0)))
        with pytest.raises(ValueError):
            fn(np.zeros((3, 2)), axis=2)
        with pytest.raises(ValueError):
            fn(np.float64(1.0))
        with pytest.raises(ValueError):
            fn(np.zeros((3, 2)), num_threads=0)
        with pytest.raises(TypeError):
            fn(np.zeros((3, 2), dtype=complex))
        assert fn(np.zeros((0, 2))).shape[0] == 0
    with pytest.raises(ValueError, match="non-negative"):
        ref.entropy(np.array([0.5, -0.1]))


@pytest.mark.parametrize(
    ("in_dtype", "out_dtype"),
    [(np.float16, np.float32), (np.int64, np.float64), (np.bool_, np.float64)],
)
def test_softmax_family_dtypes(in_dtype, out_dtype):
    x = np.array([[1, 0, 1]]).astype(in_dtype)
    for fn in (
        ref.logsumexp,
        ref.log_softmax,
        ref.softmax,
        ref.entropy,
        ref.softmax_entropy,
    ):
        rowwise = fn in (ref.log_softmax, ref.softmax) and in_dtype is np.float16
        assert fn(x).dtype == (np.float16 if rowwise else out_dtype)


def test_public_names_match_api():
    expected = {
        "cross_entropy",
        "cross_entropy_grad",
        "cross_entropy_and_grad",
        "binary_cross_entropy_with_logits",
        "binary_cross_entropy_with_logits_grad",
        "binary_cross_entropy_with_logits_and_grad",
        "binary_cross_entropy",
        "logsumexp",
        "log_softmax",
        "softmax",
        "entropy",
        "softmax_entropy",
        "linear_cross_entropy",
        "linear_cross_entropy_and_grad",
        "kl_divergence",
        "kl_divergence_and_grad",
        "js_divergence",
        "js_divergence_and_grad",
        "linear_kl_divergence",
        "linear_kl_divergence_and_grad",
        "linear_js_divergence",
        "linear_js_divergence_and_grad",
    }
    # the twins of the drop-ins (ce_fast.scipy, ce_fast.sklearn), by their
    # peer's name: the semantics of the kernels the NumPy API does not expose
    expected |= {"scipy_logsumexp", "scipy_entropy", "sklearn_log_loss"}
    assert set(ref.__all__) == expected
    for name in expected:
        assert getattr(ref, name).__doc__
