"""ce_fast.scipy against SciPy itself (the oracle, float64 where SciPy's own
float32 arithmetic is the less accurate of the two) and against the
reference twins: dtypes, shapes (empty, one class, tuple axes, axis=None),
+-inf / NaN, b with zeros and negatives, return_sign, keepdims, base,
broadcasting of qk, nan_policy; thread counts bitwise identical."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

sps = pytest.importorskip("scipy.special")
st = pytest.importorskip("scipy.stats")
hyp = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as S  # noqa: E402

import ce_fast.reference as ref  # noqa: E402
import ce_fast.scipy as cfs  # noqa: E402
from ce_fast import _core  # noqa: E402
from tests.conftest import assert_bitwise  # noqa: E402

EPS = {np.dtype(np.float16): 1e-3, np.dtype(np.float32): 1.2e-7, np.dtype(np.float64): 2.3e-16}


def _same_type(got, want):
    """The drop-in's result has the original's type, dtype and shape."""
    if isinstance(want, tuple):
        assert isinstance(got, tuple) and len(got) == len(want)
        for g, w in zip(got, want):
            _same_type(g, w)
        return
    assert type(got) is type(want), (type(got), type(want))
    assert np.shape(got) == np.shape(want)
    assert np.asarray(got).dtype == np.asarray(want).dtype


def _close(got, want, tol, what=""):
    """Equal special values (NaN, +-inf positions); finite values within
    tol (an array, or a scalar) absolute."""
    g = np.asarray(got, dtype=np.float64)
    w = np.asarray(want, dtype=np.float64)
    assert g.shape == w.shape, what
    np.testing.assert_array_equal(np.isnan(g), np.isnan(w), err_msg=what)
    np.testing.assert_array_equal(np.isposinf(g), np.isposinf(w), err_msg=what)
    np.testing.assert_array_equal(np.isneginf(g), np.isneginf(w), err_msg=what)
    fin = np.isfinite(w)
    tol = np.broadcast_to(tol, w.shape)
    with np.errstate(invalid="ignore"):
        bad = np.abs(g - w)[fin] > tol[fin]
    assert not bad.any(), (what, g[fin][bad], w[fin][bad])


# ---------------------------------------------------------------------------
# logsumexp
# ---------------------------------------------------------------------------

VALUES = [0.0, 1.0, -1.0, 2.5, -30.0, 700.0, np.inf, -np.inf, np.nan]
WEIGHTS = [0.0, 1.0, -1.0, 0.5, 2.0, -3.0]


@S.composite
def lse_case(draw):
    ndim = draw(S.integers(0, 3))
    shape = tuple(draw(S.lists(S.integers(0, 4), min_size=ndim, max_size=ndim)))
    special = draw(S.booleans())
    elems = S.sampled_from(VALUES) if special else S.floats(-20, 20, width=32)
    a = np.array(draw(S.lists(elems, min_size=int(np.prod(shape)), max_size=int(np.prod(shape)))))
    a = a.reshape(shape)
    dtype = draw(S.sampled_from([np.float32, np.float64, np.float16, np.int64]))
    if dtype == np.int64:
        a = np.nan_to_num(a, nan=0, posinf=5, neginf=-5).clip(-50, 50).round()
    elif dtype == np.float16:
        a = np.clip(a, -30, 30)
    a = a.astype(dtype)
    b = None
    if draw(S.booleans()):
        bshape = shape[draw(S.integers(0, len(shape))) :]  # broadcast from the right
        if bshape and draw(S.booleans()):
            bshape = (1,) + bshape[1:]
        n = int(np.prod(bshape))
        b = np.array(draw(S.lists(S.sampled_from(WEIGHTS), min_size=n, max_size=n))).reshape(bshape)
        b = b.astype(draw(S.sampled_from([np.float32, np.float64, np.int32])))
    nd = max(a.ndim, 1)
    axis = draw(
        S.one_of(
            S.none(),
            S.integers(-nd, nd - 1),
            S.sets(S.integers(0, nd - 1), min_size=1).map(lambda s: tuple(sorted(s))),
        )
    )
    return a, b, axis, draw(S.booleans()), draw(S.booleans())


def _lse_tolerance(a, b, axis, keepdims, dtype):
    """Allowed error: a few ulps of the result's dtype, scaled by the
    conditioning of the sum (sum |b| e^a over |sum b e^a|)."""
    a64 = np.asarray(a, np.float64)
    b64 = None if b is None else np.abs(np.asarray(b, np.float64))
    with np.errstate(all="ignore"):
        mag = sps.logsumexp(a64, axis=axis, b=b64, keepdims=keepdims)
        val = sps.logsumexp(a64, axis=axis, b=b, keepdims=keepdims, return_sign=True)[0]
        cond = np.exp(np.clip(mag - val, 0, 50))
        return 16 * EPS[np.dtype(dtype)] * cond * (1 + np.abs(np.nan_to_num(val, posinf=0, neginf=0)))


@given(lse_case())
def test_logsumexp_against_scipy(case):
    a, b, axis, keepdims, return_sign = case
    kw = dict(axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            want = sps.logsumexp(a, **kw)
        except IndexError:
            # SciPy 1.17.1 cannot index the shape of an empty input with a
            # tuple of axes; the drop-in returns the log of the empty sum
            assert np.broadcast(a, 0 if b is None else b).size == 0
            got = cfs.logsumexp(a, **kw)
            assert np.all(np.asarray(got[0] if return_sign else got) == -np.inf)
            return
        got = cfs.logsumexp(a, **kw)
        twin = ref.scipy_logsumexp(a, **kw)
        _same_type(got, want)
        _same_type(twin, want)
        dtype = np.asarray(want[0] if return_sign else want).dtype
        tol = _lse_tolerance(a, b, axis, keepdims, dtype)
        # SciPy's float32 / float16 arithmetic is the less accurate: its
        # float64 result (rounded) is the oracle for values
        a64 = a.astype(np.float64)
        b64 = None if b is None else b.astype(np.float64)
        want64 = sps.logsumexp(a64, axis=axis, b=b64, keepdims=keepdims, return_sign=True)
    g = got if return_sign else (got, None)
    t = twin if return_sign else (twin, None)
    well = tol < 1e-2  # a sum that does not cancel to (nearly) nothing
    exact = np.asarray(want64[0]).astype(dtype)
    if np.all(well) or np.asarray(want64[0]).size == 0:
        _close(g[0], np.where(~return_sign & (want64[1] < 0), np.nan, exact), tol, "out")
        _close(t[0], g[0], tol, "twin")
        if return_sign:
            _close(g[1], want64[1], 0, "sign")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logsumexp_special_values(dtype):
    inf, nan = np.inf, np.nan
    a = np.array(
        [[1, 1, 1], [1, 1, 0], [inf, 0, 1], [inf, inf, 0], [-inf, -inf, -inf], [nan, 0, 1], [inf, 1, 2],
         [1000, 1000, 0], [2, 1, 0]],
        dtype,
    )  # fmt: skip
    b = np.array(
        [[1, -1, 0], [1, -1, 1], [0, 1, 1], [1, -1, 1], [1, 1, 1], [0, 1, 1], [-1, 1, 1], [-1, -1, 1],
         [1, -1, -1]],
        dtype,
    )  # fmt: skip
    for rs in (False, True):
        with np.errstate(all="ignore"):
            want = sps.logsumexp(a, axis=1, b=b, return_sign=rs)
        got = cfs.logsumexp(a, axis=1, b=b, return_sign=rs)
        _same_type(got, want)
        for g, w in zip(got if rs else (got,), want if rs else (want,)):
            _close(g, w, 4 * EPS[np.dtype(dtype)] * 1000)
    # a zero weight hides inf and NaN; the empty sum is -inf with sign -1
    assert cfs.logsumexp([np.inf, np.nan, 1.0], b=[0, 0, 1]) == 1.0
    assert cfs.logsumexp(np.zeros((2, 0)), axis=1, return_sign=True)[1].tolist() == [-1.0, -1.0]
    assert cfs.logsumexp([]) == -np.inf


def test_logsumexp_float32_cancellation_overflows_like_scipy():
    """An exact cancellation takes SciPy's direct form, whose exp overflows
    float32 at 100 (giving NaN) but not float64 (giving -inf, sign 0)."""
    for dt in (np.float32, np.float64):
        a, b = np.array([100, 100], dt), np.array([1, -1], dt)
        with np.errstate(all="ignore"):
            want = sps.logsumexp(a, b=b, return_sign=True)
        got = cfs.logsumexp(a, b=b, return_sign=True)
        _same_type(got, want)
        np.testing.assert_array_equal(got, want)


def test_logsumexp_dtypes_and_scalars():
    for a, b in [(1, None), (1.0, 2.0), (np.float32(1), 2.0), (np.ones(3, np.float32), np.float64(2)),
                 ([1, 2], None), (np.arange(4, dtype=np.int32), [1, -1, 1, -1])]:  # fmt: skip
        want = sps.logsumexp(a, b=b)
        got = cfs.logsumexp(a, b=b)
        _same_type(got, want)
        np.testing.assert_allclose(got, want, rtol=1e-6)
    with pytest.raises(ValueError, match="incompatible for broadcasting"):
        cfs.logsumexp(np.ones((2, 3)), b=np.ones(4))
    with pytest.raises(np.exceptions.AxisError):
        cfs.logsumexp(np.ones((2, 3)), axis=2)
    with pytest.raises(ValueError, match="duplicate value"):
        cfs.logsumexp(np.ones((2, 3)), axis=(0, 0))


def test_delegation_to_scipy():
    """Complex, object and masked input are SciPy's own results."""
    z = np.array([1 + 1j, 2 - 1j])
    np.testing.assert_array_equal(cfs.logsumexp(z), sps.logsumexp(z))
    m = np.ma.array([1.0, 2.0, 3.0], mask=[0, 1, 0])
    assert cfs.softmax(m).__class__ is sps.softmax(m).__class__
    u8 = np.array([1, 2], np.uint8)
    with np.errstate(all="ignore"):
        np.testing.assert_array_equal(cfs.softmax(u8), sps.softmax(u8))
    with pytest.raises(TypeError, match="boolean subtract"):
        cfs.softmax(np.array([True, False]))
    before = cfs.path_counts().get(("logsumexp", "scipy"), 0)
    cfs.logsumexp(z)
    assert cfs.path_counts()[("logsumexp", "scipy")] == before + 1


def test_delegation_without_scipy_is_a_type_error(monkeypatch):
    def missing(name):
        raise ImportError("no scipy here")

    monkeypatch.setattr(cfs, "original", missing)
    with pytest.raises(TypeError, match="complex128"):
        cfs.logsumexp(np.array([1j]))
    assert cfs.logsumexp(np.array([0.0, 0.0])) == np.log(2)  # the kernels need no SciPy


# ---------------------------------------------------------------------------
# softmax, log_softmax
# ---------------------------------------------------------------------------


@S.composite
def sm_case(draw):
    ndim = draw(S.integers(0, 3))
    shape = tuple(draw(S.lists(S.integers(1, 5), min_size=ndim, max_size=ndim)))
    special = draw(S.booleans())
    elems = S.sampled_from(VALUES) if special else S.floats(-30, 30, width=32)
    n = int(np.prod(shape))
    a = np.array(draw(S.lists(elems, min_size=n, max_size=n))).reshape(shape)
    dtype = draw(S.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int32]))
    if np.dtype(dtype).kind == "i":
        a = np.nan_to_num(a, nan=0, posinf=5, neginf=-5).clip(-50, 50).round()
    elif dtype == np.float16:
        a = np.clip(a, -30, 30)
    nd = max(len(shape), 1)
    axis = draw(
        S.one_of(
            S.none(),
            S.integers(-nd, nd - 1) if ndim else S.none(),
            S.sets(S.integers(0, nd - 1), min_size=1).map(lambda s: tuple(sorted(s))) if ndim else S.none(),
        )
    )
    return a.astype(dtype), axis


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(case=sm_case())
def test_softmax_family_against_scipy(name, case):
    x, axis = case
    with np.errstate(all="ignore"):
        want = getattr(sps, name)(x, axis=axis)
        want64 = getattr(sps, name)(x.astype(np.float64), axis=axis)
    got = getattr(cfs, name)(x, axis=axis)
    _same_type(got, want)
    dt = np.asarray(want).dtype
    tol = 8 * EPS[dt] * (1 + np.abs(np.nan_to_num(np.asarray(want64), posinf=0, neginf=0)))
    _close(got, np.asarray(want64).astype(dt), tol)


def test_softmax_family_errors_as_scipy():
    for name in ("softmax", "log_softmax"):
        for x, axis in [(np.zeros((3, 0)), 1), (np.zeros((0,)), None)]:
            with pytest.raises(ValueError, match="zero-size array"):
                getattr(sps, name)(x, axis=axis)
            with pytest.raises(ValueError, match="zero-size array"):
                getattr(cfs, name)(x, axis=axis)
        assert getattr(cfs, name)(np.zeros((0, 3)), axis=1).shape == (0, 3)
        with pytest.raises(np.exceptions.AxisError):
            getattr(cfs, name)(1.0, axis=0)


def test_log_softmax_inf_rows_as_scipy():
    inf, nan = np.inf, np.nan
    x = np.array([[inf, 0, 1], [inf, -inf, inf], [nan, inf, 0], [-inf, -inf, -inf], [0, -inf, 1]])
    with np.errstate(all="ignore"):
        for axis, xx in ((1, x), (0, x.T.copy()), ((0, 2), x[:, None, :])):
            want = sps.log_softmax(xx, axis=axis)
            got = cfs.log_softmax(xx, axis=axis)
            np.testing.assert_array_equal(got, want)


# ---------------------------------------------------------------------------
# entropy
# ---------------------------------------------------------------------------

PVALS = [0.0, 1.0, 0.25, 3.0, 1e-300, np.nan, np.inf, -1.0]


@S.composite
def entropy_case(draw):
    ndim = draw(S.integers(1, 3))
    shape = tuple(draw(S.lists(S.integers(0, 4), min_size=ndim, max_size=ndim)))
    special = draw(S.booleans())
    elems = S.sampled_from(PVALS) if special else S.floats(0, 10)
    n = int(np.prod(shape))
    pk = np.array(draw(S.lists(elems, min_size=n, max_size=n))).reshape(shape)
    qk = None
    if draw(S.booleans()):
        qshape = shape[draw(S.integers(0, len(shape))) :]
        if qshape and draw(S.booleans()):
            qshape = (1,) + qshape[1:]
        m = int(np.prod(qshape))
        qk = np.array(draw(S.lists(elems, min_size=m, max_size=m))).reshape(qshape)
    dtype = draw(S.sampled_from([np.float32, np.float64, np.int64]))
    if dtype == np.int64:
        pk = np.nan_to_num(pk, nan=0, posinf=3).round()
        qk = None if qk is None else np.nan_to_num(qk, nan=0, posinf=3).round()
    pk = pk.astype(dtype)
    axis = draw(
        S.one_of(
            S.none(),
            S.integers(-ndim, ndim - 1),
            S.sets(S.integers(0, ndim - 1), min_size=1).map(lambda s: tuple(sorted(s))),
        )
    )
    base = draw(S.sampled_from([None, 2.0, 10]))
    policy = draw(S.sampled_from(["propagate", "omit"]))
    return pk, qk, axis, base, policy, draw(S.booleans())


@given(entropy_case())
def test_entropy_against_scipy(case):
    pk, qk, axis, base, policy, keepdims = case
    kw = dict(base=base, axis=axis, nan_policy=policy, keepdims=keepdims)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            want = st.entropy(pk, qk, **kw)
        except (ValueError, IndexError) as e:
            if axis is None and policy == "omit" and qk is not None and qk.size != pk.size:
                # SciPy 1.17.1 removes NaN pairs of the raveled pk and qk
                # before it broadcasts them, and fails there (IndexError, or
                # NumPy's broadcasting message); the drop-in broadcasts first:
                # a result where the shapes broadcast, else SciPy's message
                try:
                    cfs.entropy(pk, qk, **kw)
                except ValueError as ours:
                    assert "incompatible for broadcasting" in str(ours)
                return
            assert isinstance(e, ValueError)
            with pytest.raises(ValueError, match=str(e)[:30]):
                cfs.entropy(pk, qk, **kw)
            return
        got = cfs.entropy(pk, qk, **kw)
        twin = ref.scipy_entropy(pk, qk, **kw)
        want64 = st.entropy(pk.astype(np.float64), None if qk is None else qk.astype(np.float64), **kw)
    _same_type(got, want)
    _same_type(twin, want)
    dt = np.asarray(want).dtype
    tol = 64 * EPS[dt] * (1 + np.abs(np.nan_to_num(np.asarray(want64, np.float64), posinf=0, neginf=0)))
    _close(got, want64, tol)
    _close(twin, got, tol)


def test_entropy_peer_cases():
    pk = np.array([[0.1, 0.2], [0.6, 0.3], [0.3, 0.5]])
    qk = np.array([[0.0, 0.1], [0.3, 0.6], [0.5, 0.3]])
    np.testing.assert_allclose(cfs.entropy(pk, qk), [np.inf, 0.18609809], rtol=1e-7)
    assert cfs.entropy(pk[:, 0], pk[:, 0]) == 0.0  # exactly
    with pytest.raises(ValueError, match="The input contains nan values"):
        cfs.entropy([0.5, np.nan], nan_policy="raise")
    with pytest.raises(ValueError, match="nan_policy must be one of"):
        cfs.entropy([0.5, 0.5], nan_policy="nope")
    with pytest.raises(ValueError, match="`base` must be a positive number"):
        cfs.entropy([0.5, 0.5], base=0)
    with pytest.raises(ValueError, match="incompatible for broadcasting"):
        cfs.entropy(np.ones((10, 1, 12)), np.ones((11, 2)))
    with pytest.raises(np.exceptions.AxisError, match="source"):
        cfs.entropy([1.0, 2.0], axis=1)
    assert cfs.entropy([np.nan, np.nan], nan_policy="omit") == 0.0
    np.testing.assert_array_equal(cfs.entropy(np.zeros((3, 0)), axis=1), np.zeros(3))


# ---------------------------------------------------------------------------
# layouts and threads
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_layouts(dtype, rng):
    x = rng.standard_normal((6, 50, 7)).astype(dtype)
    b = rng.standard_normal((50, 7)).astype(dtype)
    p, q = rng.random((6, 50, 7)).astype(dtype), rng.random((50, 7)).astype(dtype)
    for axis in (0, 1, 2, (0, 2), (1, 2), None):
        if axis is None:  # SciPy ravels before it broadcasts
            q = np.broadcast_to(q, p.shape)
        with np.errstate(all="ignore"):
            x64, b64, p64, q64 = (v.astype(np.float64) for v in (x, b, p, q))
            for got, want in [
                (cfs.logsumexp(x, axis=axis, b=b, return_sign=True),
                 sps.logsumexp(x64, axis=axis, b=b64, return_sign=True)),
                (cfs.softmax(x[:, ::-2], axis=axis), sps.softmax(x64[:, ::-2], axis=axis)),
                (cfs.entropy(p, q, axis=axis), st.entropy(p64, q64, axis=axis)),
            ]:  # fmt: skip
                for g, w in zip(
                    got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)
                ):
                    np.testing.assert_allclose(g, w, rtol=2e-4 if dtype == np.float32 else 1e-10, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_bitwise_identical(dtype, rng):
    x = rng.standard_normal((3000, 100)).astype(dtype)
    b = rng.standard_normal((3000, 100)).astype(dtype)
    b[::7] = 0
    x.reshape(-1)[::997] = np.nan
    p, q = rng.random((3000, 100)).astype(dtype), rng.random((100, 3000)).astype(dtype)
    calls = [
        lambda: cfs.logsumexp(x, axis=1, b=b, return_sign=True),
        lambda: cfs.logsumexp(x, axis=0, b=b, return_sign=True),
        lambda: cfs.entropy(p, q.T, axis=1, nan_policy="omit"),
        lambda: cfs.entropy(p, axis=0),
        lambda: cfs.entropy(q, axis=0),  # the tiled layout
        lambda: cfs.log_softmax(x, axis=1),
    ]
    for call in calls:
        res = {}
        for nt in (1, 2, 3):
            with threadpool_limits(limits=nt):
                res[nt] = call()
        for nt in (2, 3):
            for g, w in zip(
                res[nt] if isinstance(res[nt], tuple) else (res[nt],),
                res[1] if isinstance(res[1], tuple) else (res[1],),
            ):
                assert_bitwise(g, w)
    out = {nt: np.empty(3000, dtype) for nt in (1, 2, 3)}
    for nt in (1, 2, 3):
        _core.prob_divergence(p=p, outer=3000, C=100, inner=1, ps=(100, 1, 1), q=q.T.copy(), qs=(100, 1, 1),
                              out=out[nt], num_threads=nt)  # fmt: skip
    assert_bitwise(out[2], out[1])
    assert_bitwise(out[3], out[1])
