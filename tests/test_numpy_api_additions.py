"""What the NumPy API gained for the drop-ins: tuple axes for the softmax
family (reduced as one flattened axis), keepdims for logsumexp, empty class
axes for logsumexp / softmax / log_softmax, and binary_cross_entropy's
elementwise weight -- against the reference, SciPy and PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps

import ce_fast
import ce_fast.reference as ref
from tests.conftest import assert_bitwise, assert_close

FAMILY = ["logsumexp", "log_softmax", "softmax", "entropy", "softmax_entropy"]
AXES = [(0, 1), (1, 2), (0, 2), (0, 1, 2), (2, 0), (-1, 0), (1,)]


def _input(name, rng, shape, dtype):
    x = rng.standard_normal(shape) * 3
    return (np.abs(x) if name == "entropy" else x).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", AXES, ids=str)
@pytest.mark.parametrize("name", FAMILY)
def test_tuple_axes_against_reference_and_scipy(name, axis, dtype, rng):
    x = _input(name, rng, (5, 6, 7), dtype)
    got = getattr(ce_fast, name)(x, axis=axis)
    want = getattr(ref, name)(x, axis=axis)
    assert got.shape == want.shape and got.dtype == dtype
    assert_close(got, want, dtype)
    if name in ("logsumexp", "log_softmax", "softmax"):
        assert_close(got, getattr(sps, name)(x.astype(np.float64), axis=axis).astype(dtype), dtype)
    # strided and Fortran-ordered inputs take the same values
    for v in (np.asfortranarray(x), x[::-1, :, ::2]):
        assert_close(getattr(ce_fast, name)(v, axis=axis), getattr(ref, name)(v, axis=axis), dtype)


@pytest.mark.parametrize("axis", [(0, 2), (1, 2), -1, 0])
def test_logsumexp_keepdims(axis, rng):
    x = rng.standard_normal((4, 5, 6))
    got = ce_fast.logsumexp(x, axis=axis, keepdims=True)
    want = sps.logsumexp(x, axis=axis, keepdims=True)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-13)
    assert_close(got, ref.logsumexp(x, axis=axis, keepdims=True), np.float64)
    with pytest.raises(TypeError, match="keepdims"):
        ce_fast.logsumexp(x, keepdims="yes")


@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
@pytest.mark.parametrize("axis", [(0, 2), (1, 2)], ids=str)
def test_tuple_axes_out_and_in_place(name, axis, rng):
    x = rng.standard_normal((4, 5, 6))
    want = getattr(ce_fast, name)(x, axis=axis)
    out = np.full_like(x, 7.0)
    assert getattr(ce_fast, name)(x, axis=axis, out=out) is out
    assert_bitwise(out, want)
    xi = x.copy()
    assert getattr(ce_fast, name)(xi, axis=axis, out=xi) is xi
    assert_bitwise(xi, want)


@pytest.mark.parametrize("name", ["logsumexp", "log_softmax", "softmax"])
def test_tuple_axes_threads_bitwise(name, rng):
    x = rng.standard_normal((40, 300, 30)).astype(np.float32)
    for axis in ((0, 2), (1, 2)):
        res = {nt: getattr(ce_fast, name)(x, axis=axis, num_threads=nt) for nt in (1, 2, 3)}
        assert_bitwise(res[2], res[1])
        assert_bitwise(res[3], res[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_empty_class_axis(dtype):
    """log(sum of nothing) = -inf; the softmax of an empty row is empty (as
    NumPy, SciPy and PyTorch); entropies of no distribution stay errors."""
    x = np.zeros((3, 0, 2), dtype)
    lse = ce_fast.logsumexp(x, axis=1)
    assert lse.dtype == dtype and lse.shape == (3, 2) and np.all(lse == -np.inf)
    np.testing.assert_array_equal(lse, sps.logsumexp(x, axis=1))
    assert ce_fast.logsumexp(x, axis=(1, 2), keepdims=True).shape == (3, 1, 1)
    assert ce_fast.logsumexp(np.zeros(0, dtype)) == -np.inf
    for name in ("log_softmax", "softmax"):
        for axis in (1, (0, 1), -1):
            res = getattr(ce_fast, name)(x, axis=axis)
            assert res.shape == x.shape and res.dtype == dtype
        assert_bitwise(getattr(ce_fast, name)(x, axis=1), getattr(ref, name)(x, axis=1))
    assert_bitwise(lse, ref.logsumexp(x, axis=1))
    for name in ("entropy", "softmax_entropy"):
        with pytest.raises(ValueError, match="C == 0"):
            getattr(ce_fast, name)(x, axis=1)
    torch = pytest.importorskip("torch")
    t = torch.zeros((3, 0, 2), dtype=torch.float64)
    np.testing.assert_array_equal(ce_fast.logsumexp(t, axis=1), torch.logsumexp(t, 1).numpy())
    assert ce_fast.softmax(t, axis=1).shape == tuple(torch.softmax(t, 1).shape)


def test_axes_errors():
    x = np.zeros((3, 4))
    for name in FAMILY:
        fn = getattr(ce_fast, name)
        with pytest.raises(ValueError, match="duplicate value in 'axis'"):
            fn(x, axis=(0, -2))
        with pytest.raises(np.exceptions.AxisError):
            fn(x, axis=(0, 2))
        with pytest.raises(ValueError, match="names no class axis"):
            fn(x, axis=())
        with pytest.raises(TypeError):
            fn(x, axis=(0, 1.0))


# ---------------------------------------------------------------------------
# binary_cross_entropy(weight=)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_bce_weight(dtype, reduction, rng):
    p = rng.random((300, 7)).astype(dtype)
    t = (rng.random((300, 7)) > 0.5).astype(dtype)
    for w in (rng.random((300, 7)) * 3, rng.random(7), rng.random((300, 1)), np.float64(2.5), [0.0] * 7):
        got = ce_fast.binary_cross_entropy(p, t, weight=w, reduction=reduction)
        want = ref.binary_cross_entropy(p, t, weight=w, reduction=reduction)
        assert_close(got, want, dtype)
    # weight 1 is bitwise the unweighted loss; the weight is never an N x C copy
    one = ce_fast.binary_cross_entropy(p, t, weight=np.ones(7, dtype), reduction=reduction)
    assert_bitwise(one, ce_fast.binary_cross_entropy(p, t, reduction=reduction))
    torch = pytest.importorskip("torch")
    w = rng.random(7)
    tw = torch.nn.functional.binary_cross_entropy(
        torch.from_numpy(p.astype(np.float64)), torch.from_numpy(t.astype(np.float64)),
        weight=torch.from_numpy(w), reduction=reduction,
    )  # fmt: skip
    got = ce_fast.binary_cross_entropy(p, t, weight=w, reduction=reduction)
    assert_close(got, tw.numpy().astype(dtype), dtype)


def test_bce_weight_errors_and_threads(rng):
    p, t = rng.random((3, 4)), np.ones((3, 4))
    with pytest.raises(ValueError, match="weight of shape"):
        ce_fast.binary_cross_entropy(p, t, weight=np.ones(3))
    with pytest.raises(ValueError, match="weight of shape"):
        ref.binary_cross_entropy(p, t, weight=np.ones(3))
    with pytest.raises(TypeError):
        ce_fast.binary_cross_entropy(p, t, weight=np.ones(4, complex))
    p = rng.random((400, 1000))
    t = rng.random((400, 1000))
    w = rng.random(1000)
    res = {nt: ce_fast.binary_cross_entropy(p, t, weight=w, num_threads=nt) for nt in (1, 2, 3)}
    assert res[1] == res[2] == res[3]
