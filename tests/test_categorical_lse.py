"""cross_entropy(..., return_lse=True) and cross_entropy_grad(..., lse=...):
the per-sample log-sum-exp a forward keeps, and the gradient computed from
it in one pass (src/categorical_from_lse_impl.h), against ce_fast.reference
on every kernel path (row, tile, class-split), every option and both dtypes;
thread counts bitwise; accuracy of confident rows; bad input."""

from __future__ import annotations

import numpy as np
import pytest

import ce_fast
import ce_fast.reference as ref
from tests.conftest import assert_bitwise, assert_close

DTYPES = [np.float32, np.float64]

# (N, C, axis): row path, tile path (small C), class-axis-not-last (tile),
# class-split path (few huge rows)
SHAPES = {
    "rows": ((37, 300), -1),
    "tile": ((37, 7), -1),
    "inner": ((5, 6, 9), 1),
    "split": ((3, 70000), -1),
}
OPTIONS = {
    "plain": {},
    "smooth_weight": {"label_smoothing": 0.1, "weight": "w"},
    "zloss_sw": {"z_loss": 0.01, "sample_weight": "sw"},
    "softcap": {"softcap": 3.0},
    "ignore": {"ignore_index": 2},
}


def _problem(rng, shape, axis, dtype, kind, options):
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    C = shape[axis]
    sshape = tuple(n for i, n in enumerate(shape) if i != axis % len(shape))
    kw = dict(options)
    if kw.get("weight") == "w":
        kw["weight"] = (rng.random(C) + 0.5).astype(dtype)
    if kw.get("sample_weight") == "sw":
        kw["sample_weight"] = rng.random(sshape).astype(dtype)
    if kind == "int":
        t = rng.integers(0, C, sshape)
        if "ignore_index" in kw:
            t.reshape(-1)[::5] = kw["ignore_index"]
    else:
        kw.pop("ignore_index", None)
        q = rng.random(shape)
        t = (q / q.sum(axis=axis, keepdims=True)).astype(dtype)
    return x, t, sshape, kw


# the class-split path is covered in float32 for the options (float64: plain)
LSE_CASES = [
    (dtype, path, kind, option)
    for dtype in DTYPES
    for path in SHAPES
    for kind in ("int", "prob")
    for option in OPTIONS
    if not (path == "split" and option != "plain" and dtype == np.float64)
]


@pytest.mark.parametrize(("dtype", "path", "kind", "option"), LSE_CASES)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_lse_and_grad_from_lse_match_reference(rng, dtype, path, kind, option, reduction):
    shape, axis = SHAPES[path]
    x, t, sshape, kw = _problem(rng, shape, axis, dtype, kind, OPTIONS[option])
    kw.update(axis=axis, reduction=reduction)
    loss, lse = ce_fast.cross_entropy(x, t, return_lse=True, **kw)
    r_loss, r_lse = ref.cross_entropy(x, t, return_lse=True, **kw)
    assert lse.dtype == np.float64 and lse.shape == sshape
    assert_close(loss, r_loss, dtype)
    assert_close(lse, r_lse, np.float64, rtol=1e-6 if dtype == np.float32 else 1e-13)
    assert_bitwise(loss, ce_fast.cross_entropy(x, t, **kw))  # lse_out changes nothing
    go = rng.standard_normal(sshape).astype(dtype) if reduction == "none" else 0.75
    g = ce_fast.cross_entropy_grad(x, t, lse=lse, grad_output=go, **kw)
    assert_close(g, ref.cross_entropy_grad(x, t, lse=r_lse, grad_output=go, **kw), dtype)
    assert_close(g, ref.cross_entropy_grad(x, t, grad_output=go, **kw), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_isa(isa, rng, dtype):
    x, t, _, kw = _problem(rng, (20, 130), -1, dtype, "prob", {"label_smoothing": 0.2})
    lse = ce_fast.cross_entropy(x, t, return_lse=True, **kw)[1]
    assert_close(ce_fast.cross_entropy_grad(x, t, lse=lse, **kw), ref.cross_entropy_grad(x, t, **kw), dtype)


@pytest.mark.usefixtures("oversubscribed")
@pytest.mark.parametrize("shape", [(600, 1000), (3, 70000)])
def test_threads_bitwise(rng, shape):
    x, t, _, kw = _problem(rng, shape, -1, np.float32, "int", {"z_loss": 0.1})
    lse = ce_fast.cross_entropy(x, t, return_lse=True, num_threads=1, **kw)[1]
    for nt in (2, 3):
        assert_bitwise(lse, ce_fast.cross_entropy(x, t, return_lse=True, num_threads=nt, **kw)[1])
    g1 = ce_fast.cross_entropy_grad(x, t, lse=lse, num_threads=1, **kw)
    for nt in (2, 3):
        assert_bitwise(g1, ce_fast.cross_entropy_grad(x, t, lse=lse, num_threads=nt, **kw))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", ["int", "prob"])
def test_confident_rows_keep_their_gradient(dtype, kind):
    """p_y - 1 ~ -1e-12: taken as expm1(x_y - lse), not lost to cancellation;
    as accurate as x - lse with lse in float64 (|lse| * 2**-53 absolute)."""
    x = np.array([[30.0, 2.0, 0.0, -1.0], [0.0, 29.0, 1.0, 0.5]], dtype)
    y = np.array([0, 1])
    t = y if kind == "int" else np.eye(4, dtype=dtype)[y]
    lse = ce_fast.cross_entropy(x, t, reduction="sum", return_lse=True)[1]
    g = ce_fast.cross_entropy_grad(x, t, reduction="sum", lse=lse).astype(np.float64)
    t64 = t if kind == "int" else t.astype(np.float64)
    exact = ref.cross_entropy_grad(x.astype(np.float64), t64, reduction="sum")
    for r, c in enumerate(y):
        assert g[r, c] < 0
        bound = 4 * 2.0**-53 * abs(lse[r]) + 4 * np.finfo(dtype).eps * abs(exact[r, c])
        assert abs(g[r, c] - exact[r, c]) <= bound


@pytest.mark.parametrize("dtype", DTYPES)
def test_in_place_and_ignored_and_nan_rows(rng, dtype):
    x = (rng.standard_normal((6, 40)) * 2).astype(dtype)
    x[1, 3] = np.nan  # a NaN row: NaN lse, NaN gradient
    x[4, :] = np.nan  # an ignored row: never read
    y = np.array([0, 1, 2, 3, -100, 5])
    lse = ce_fast.cross_entropy(x, y, reduction="sum", return_lse=True)[1]
    assert np.isnan(lse[[1, 4]]).all() and np.isfinite(lse[[0, 2, 3, 5]]).all()
    expected = ref.cross_entropy_grad(x, y, reduction="sum")
    g = ce_fast.cross_entropy_grad(x, y, reduction="sum", lse=lse)
    assert_close(g, expected, dtype)
    assert (g[4] == 0).all() and np.isnan(g[1]).all()
    xi = x.copy()
    out = ce_fast.cross_entropy_grad(xi, y, reduction="sum", lse=lse, out=xi)
    assert out is xi
    assert_bitwise(xi, g)


def test_prob_target_with_a_dominant_class_is_fixed_up():
    """Probability targets: the one class with p > 1/2 takes the expm1 form
    (A (p - 1) + (A - w q')), found by the vector loop."""
    x = np.array([[25.0, 0.0, 1.0, -2.0] * 100], np.float32)
    q = np.full_like(x, 0.0)
    q[0, 0] = 1.0
    lse = ce_fast.cross_entropy(x, q, reduction="sum", return_lse=True)[1]
    g = ce_fast.cross_entropy_grad(x, q, reduction="sum", lse=lse)
    exact = ref.cross_entropy_grad(x.astype(np.float64), q.astype(np.float64), reduction="sum")
    assert g[0, 0] < 0
    assert abs(g[0, 0] - exact[0, 0]) <= 4 * 2.0**-53 * abs(lse[0]) + 1e-7 * abs(exact[0, 0])


def test_bad_arguments():
    x, y = np.zeros((3, 4)), np.array([0, 1, 2])
    with pytest.raises(ValueError, match="lse must have the per-sample shape"):
        ce_fast.cross_entropy_grad(x, y, lse=np.zeros(4))
    with pytest.raises(TypeError, match="return_lse must be True or False"):
        ce_fast.cross_entropy(x, y, return_lse=1)
    with pytest.raises(ValueError, match="lse must have the per-sample shape"):
        ref.cross_entropy_grad(x, y, lse=np.zeros(4))
    # a lse of another float dtype is read as float64 (here rounded to float32 first)
    lse32 = ce_fast.cross_entropy(x, y, return_lse=True)[1].astype(np.float32)
    assert_close(ce_fast.cross_entropy_grad(x, y, lse=lse32), ref.cross_entropy_grad(x, y, lse=lse32))
