"""The compiled softmax family (logsumexp, log_softmax, softmax, entropy,
softmax_entropy) against ``ce_fast.reference`` (the specification) and SciPy,
and against itself bitwise (thread counts, in place vs out of place)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special as sps
import scipy.stats

import ce_fast
import ce_fast.reference as ref
from tests.conftest import assert_bitwise, assert_close, fingerprint

DTYPES = [np.float32, np.float64]
ROWWISE = ["log_softmax", "softmax"]
REDUCING = ["logsumexp", "entropy", "softmax_entropy"]
FUNCS = ROWWISE + REDUCING
SCIPY = {
    "logsumexp": lambda x, axis: sps.logsumexp(x, axis=axis),
    "log_softmax": lambda x, axis: sps.log_softmax(x, axis=axis),
    "softmax": lambda x, axis: sps.softmax(x, axis=axis),
    "entropy": lambda p, axis: sps.entr(p).sum(axis=axis),
}
# (shape, axis) pairs: odd sizes, C == 1, N == 0, N-d with several axes
CASES = [
    ((7,), 0), ((1,), -1), ((5, 1), -1), ((1, 5), 0), ((0, 4), -1), ((4, 0, 3), 0),
    ((9, 7, 41), -1), ((9, 7, 41), 0), ((9, 7, 41), 1), ((3, 4, 5, 6), 2), ((3, 4, 5, 6), -4),
]  # fmt: skip


def inputs(func, rng, shape, dtype):
    if func == "entropy":
        p = rng.random(shape)
        p[p < 0.2] = 0.0  # 0 log 0 = 0
        return p.astype(dtype)
    return (rng.standard_normal(shape) * 4).astype(dtype)


def call(func, x, **kw):
    return getattr(ce_fast, func)(x, **kw)


def call_ref(func, x, **kw):
    kw.pop("num_threads", None)
    return getattr(ref, func)(x, **kw)


def check(got, want, dtype):
    if isinstance(want, np.ndarray):
        assert isinstance(got, np.ndarray) and got.shape == want.shape
    else:
        assert type(got) is type(want), (type(got), type(want))
    assert np.asarray(got).dtype == np.dtype(dtype)
    assert_close(got, want, dtype)


# ---------------------------------------------------------------------------
# Against the reference and SciPy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=str)
@pytest.mark.parametrize("func", FUNCS)
def test_match_reference_and_scipy(func, case, dtype, rng):
    shape, axis = case
    x = inputs(func, rng, shape, dtype)
    got = call(func, x, axis=axis)
    check(got, call_ref(func, x, axis=axis), dtype)
    if func in SCIPY and x.size:
        assert_close(got, SCIPY[func](x.astype(np.float64), axis).astype(dtype), dtype)
    if func == "entropy" and x.size:
        with np.errstate(invalid="ignore"):  # all-zero rows: NaN in both
            q = x / x.sum(axis=axis, keepdims=True)
        assert_close(call(func, q, axis=axis), scipy.stats.entropy(q.astype(np.float64), axis=axis), dtype)
    if func == "softmax_entropy" and x.size:
        p = sps.softmax(x.astype(np.float64), axis=axis)
        assert_close(
            got, sps.entr(p).sum(axis=axis), dtype, atol_factor=1e-5 if dtype == np.float32 else 1e-13
        )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("func", FUNCS)
def test_every_isa(isa, func, dtype, rng):
    for shape, axis in [((37, 129), -1), ((6, 33, 5), 1), ((100_000,), 0)]:
        x = inputs(func, rng, shape, dtype)
        check(call(func, x, axis=axis), call_ref(func, x, axis=axis), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_1d_against_scipy(dtype, rng):
    """A 10^5-element single row (one thread, one pass) against SciPy."""
    x = (rng.standard_normal(100_000) * 10).astype(dtype)
    x64 = x.astype(np.float64)
    check(ce_fast.logsumexp(x), ref.logsumexp(x), dtype)
    assert_close(ce_fast.logsumexp(x), dtype(sps.logsumexp(x64)), dtype)
    assert_close(ce_fast.softmax(x), sps.softmax(x64).astype(dtype), dtype)
    assert_close(ce_fast.log_softmax(x), sps.log_softmax(x64).astype(dtype), dtype)
    p = sps.softmax(x64)
    assert_close(ce_fast.entropy(p), sps.entr(p).sum(), np.float64)
    assert_close(ce_fast.softmax_entropy(x64), sps.entr(p).sum(), np.float64)


# ---------------------------------------------------------------------------
# Edge values
# ---------------------------------------------------------------------------

EDGE_ROWS = [
    [0.0, 1.0, 2.0],
    [-np.inf, -np.inf, -np.inf],  # all -inf
    [-np.inf, 0.0, 1.0],  # masked entry
    [np.inf, 0.0, 1.0],  # +inf
    [np.inf, np.inf, -np.inf],
    [np.nan, 0.0, 1.0],
    [np.nan, np.inf, -np.inf],
    [1.0, 1.0, 1.0],  # ties at the max
    [40.0, 0.0, 0.0],  # tiny entries keep relative accuracy
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("func", ["logsumexp", "log_softmax", "softmax", "softmax_entropy"])
def test_edge_rows(isa, func, dtype):
    x = np.array(EDGE_ROWS, dtype)
    got = call(func, x)
    check(got, call_ref(func, x), dtype)
    for axis_layout in (x.T.copy(),):  # the same rows along axis 0
        g0 = call(func, axis_layout, axis=0)
        assert_close(g0 if func in REDUCING else g0.T, got, dtype)
    with np.errstate(invalid="ignore"):
        if func in ("logsumexp", "softmax"):  # SciPy's edge rules, exactly
            assert_close(got, SCIPY[func](x.astype(np.float64), -1).astype(dtype), dtype)
        if func == "log_softmax":  # SciPy agrees except on +inf rows (documented)
            ok = ~np.isposinf(x).any(axis=1)
            assert_close(got[ok], sps.log_softmax(x[ok].astype(np.float64), axis=-1).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_small_results_keep_relative_accuracy(isa, dtype):
    x = np.array([40.0, 0.0], dtype)  # log_softmax[0] = -log1p(e^-40) ~ -e^-40
    e40 = np.exp(-40.0)
    rt = 4 * np.finfo(dtype).eps
    np.testing.assert_allclose(ce_fast.log_softmax(x)[0], -e40, rtol=rt)
    np.testing.assert_allclose(ce_fast.logsumexp(np.array([0.0, -40.0], dtype)), e40, rtol=rt)
    np.testing.assert_allclose(ce_fast.softmax(x)[1], e40, rtol=rt)
    # H = e^-40 (1 + 40) to first order
    np.testing.assert_allclose(
        ce_fast.softmax_entropy(x), ref.softmax_entropy(x), rtol=8 * np.finfo(dtype).eps
    )
    assert ce_fast.softmax_entropy(x) > 0


@pytest.mark.parametrize("dtype", DTYPES)
def test_sums_on_either_side_of_the_exact_recount(isa, dtype):
    """The pass over the exponentials sums them in one accumulator and, when
    s' = sum exp(x - max) - 1 comes out below 1, recounts the row in two parts
    (see rowscan_impl.h). Rows on either side of that switch, a near tie (an
    exponential that rounds to 1) and an exact tie all keep full accuracy."""
    eps = float(np.finfo(dtype).eps)
    rows = []
    for s1 in (1e-6, 0.5, 1 - 4 * eps, 1.0, 1 + 4 * eps, 2.0, 100.0):
        row = np.full(300, -60.0)  # 298 terms of e^-60: s' = s1 + 2.6e-24
        row[0], row[7] = 0.0, np.log(s1)
        rows.append(row)
    near = np.full(300, -5.0)
    near[0], near[1] = 0.0, -eps / 8
    tie = np.full(300, -5.0)
    tie[0] = tie[299] = 0.0
    x = np.array(rows + [near, tie], dtype)
    xl = x.astype(np.longdouble)
    exact = np.log1p(np.exp(xl[:, 1:]).sum(-1))  # the loss of class 0, the max
    # (the last two rows sum 298 equal terms, the worst case for the lanes'
    # sequential sums: float64 errs by up to ~5 eps there, < 1 eps elsewhere)
    got = ce_fast.cross_entropy(x, np.zeros(len(x), np.int64), reduction="none")
    np.testing.assert_allclose(got.astype(np.longdouble), exact, rtol=8 * eps)
    np.testing.assert_allclose(ce_fast.logsumexp(x).astype(np.longdouble), exact, rtol=8 * eps)
    for func in ("log_softmax", "softmax"):
        check(call(func, x), call_ref(func, x), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_huge_and_tiny_values(isa, dtype, rng):
    big = np.finfo(dtype).max / 4
    tiny = np.finfo(dtype).tiny
    x = np.array([[big, -big, 0.0], [tiny, -tiny, 0.0], [big, big, big], [-big, -big, -big]], dtype)
    for func in ("logsumexp", "log_softmax", "softmax", "softmax_entropy"):
        check(call(func, x), call_ref(func, x), dtype)
    p = np.array(
        [[tiny, 1.0, 0.0], [np.finfo(dtype).smallest_subnormal, 0.5, 0.5], [1e-30, 1 - 1e-7, 0]], dtype
    )
    check(ce_fast.entropy(p), ref.entropy(p), dtype)
    assert_close(ce_fast.entropy(p), sps.entr(p.astype(np.float64)).sum(-1).astype(dtype), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_entropy_special_values(isa, dtype):
    p = np.array([[0.0, 0.0, 0.0], [np.nan, 0.5, 0.5], [np.inf, 0.0, 0.5], [2.0, 0.0, 1.0]], dtype)
    got = ce_fast.entropy(p)
    check(got, ref.entropy(p), dtype)
    assert got[0] == 0 and not np.signbit(got[0])


# ---------------------------------------------------------------------------
# Threads, layouts, out=
# ---------------------------------------------------------------------------


@pytest.mark.usefixtures("oversubscribed")
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("func", FUNCS)
@pytest.mark.parametrize("case", [((3000, 100), -1), ((100, 3000), 0), ((20, 150, 40), 1)], ids=str)
def test_threads_bitwise_identical(func, case, dtype, rng):
    shape, axis = case  # >= 240000 elements in >= 3 blocks: really parallel
    x = inputs(func, rng, shape, dtype)
    x.reshape(-1)[::997] = np.nan
    if func != "entropy":
        x.reshape(-1)[5::1009] = -np.inf
    res = {nt: call(func, x, axis=axis, num_threads=nt) for nt in (1, 2, 3, None)}
    for nt in (2, 3, None):
        assert_bitwise(res[nt], res[1])
    check(res[1], call_ref(func, x, axis=axis), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("func", ROWWISE)
@pytest.mark.parametrize("case", [((33, 17), -1), ((33, 17), 0), ((4, 5, 6), 1)], ids=str)
def test_out_and_in_place(func, case, dtype, rng):
    shape, axis = case
    x = inputs(func, rng, shape, dtype)
    want = call(func, x, axis=axis)
    out = np.full(shape, 7.0, dtype)
    assert call(func, x, axis=axis, out=out) is out
    assert_bitwise(out, want)
    xi = x.copy()
    assert call(func, xi, axis=axis, out=xi) is xi
    assert_bitwise(xi, want)
    # a strided input partially overlapping out: read from a snapshot
    big = np.zeros(2 * x.size, dtype)
    big[1::2] = x.reshape(-1)
    view = big[1::2].reshape(shape)
    out2 = big[: x.size].reshape(shape)
    assert_bitwise(call(func, view, axis=axis, out=out2), want)


@pytest.mark.parametrize("func", ROWWISE)
def test_bad_out(func):
    x = np.zeros((3, 4))
    with pytest.raises(TypeError):
        call(func, x, out=[[0.0] * 4] * 3)
    ro = np.zeros((3, 4))
    ro.flags.writeable = False
    for bad in (np.zeros((4, 3)), np.zeros((3, 4), np.float32), np.zeros((4, 3)).T, ro):
        with pytest.raises(ValueError):
            call(func, x, out=bad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("func", FUNCS)
def test_layouts_read_only_never_modified(func, dtype, rng):
    base = inputs(func, rng, (30, 40, 6), dtype)
    views = [
        (base[:, ::3, :], 1),  # strided class axis, collapsible
        (base.transpose(2, 0, 1), 0),  # axes that collapse on neither side: copied
        (base[::-1, :, ::-2], -1),  # negative strides
        (np.asfortranarray(base), 1),
    ]
    for v, axis in views:
        v.flags.writeable = False
        fp = fingerprint(v)
        got = call(func, v, axis=axis)
        check(got, call_ref(func, v, axis=axis), dtype)
        assert_close(got, call(func, np.ascontiguousarray(v), axis=axis), dtype)
        assert fingerprint(v) == fp


def test_input_types():
    x = [[1.0, 2.0, 0.5], [0.0, 1.5, 3.0]]
    for func in FUNCS:
        check(call(func, x), call_ref(func, x), np.float64)
        h = call(func, np.array(x, np.float16))  # 16-bit in: 16-bit results of x's shape
        assert np.asarray(h).dtype == (np.float16 if func in ("softmax", "log_softmax") else np.float32)
        assert np.asarray(call(func, np.array([[1, 2], [3, 4]]))).dtype == np.float64
        check(call(func, np.array(x, ">f8")), call_ref(func, x), np.float64)
    # 1-d input to a reducing function gives a NumPy scalar of the compute dtype
    assert type(ce_fast.logsumexp(np.array([1.0, 2.0], np.float32))) is np.float32
    assert type(ce_fast.entropy([0.5, 0.5])) is np.float64


def test_torch_tensor_inputs():
    torch = pytest.importorskip("torch")
    x = torch.randn(4, 6, dtype=torch.float64)
    np.testing.assert_allclose(ce_fast.log_softmax(x), torch.log_softmax(x, -1).numpy(), rtol=1e-13)
    np.testing.assert_allclose(ce_fast.logsumexp(x), torch.logsumexp(x, -1).numpy(), rtol=1e-13)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("func", FUNCS)
def test_errors(func):
    if func in ("entropy", "softmax_entropy"):  # no distribution on an empty axis
        with pytest.raises(ValueError, match="C == 0"):
            call(func, np.zeros((3, 0)))
        with pytest.raises(ValueError, match="C == 0"):
            call(func, np.zeros((0, 3)), axis=0)
    with pytest.raises(ValueError, match="duplicate"):
        call(func, np.zeros((3, 4)), axis=(1, -1))
    with pytest.raises(ValueError):
        call(func, np.float64(1.0))
    with pytest.raises(np.exceptions.AxisError):
        call(func, np.zeros((3, 4)), axis=2)
    with pytest.raises(TypeError):
        call(func, np.zeros((3, 4)), axis=1.0)
    for nt in (0, -2, 2.0, True):
        with pytest.raises(ValueError):
            call(func, np.zeros((3, 4)), num_threads=nt)
    with pytest.raises(TypeError):
        call(func, np.zeros((3, 4), complex))
    with pytest.raises(TypeError):
        call(func, np.array([["a", "b"]]))


@pytest.mark.usefixtures("oversubscribed")
@pytest.mark.parametrize("dtype", DTYPES)
def test_entropy_negative_probabilities(dtype):
    p = np.full((5000, 100), 0.01, dtype)  # 8 blocks of 655 rows
    p[4000, 3] = -0.5
    p[2000, 50] = -1e-30 if dtype == np.float64 else -1e-20
    p[2001, 7] = -2.0
    for nt in (1, 2, 3):
        with pytest.raises(
            ValueError, match=rf"probs must be non-negative; found .* at flat position {2000 * 100 + 50}\b"
        ):
            ce_fast.entropy(p, num_threads=nt)
    # along axis 0 the rows are columns: the first offending flat C-order
    # position is still reported (row 2000 col 50 comes before row 2001 col 7)
    with pytest.raises(ValueError, match=rf"flat position {2000 * 100 + 50}\b"):
        ce_fast.entropy(p, axis=0)
    q = np.array([[0.5, 0.5], [0.2, -0.0]], dtype)  # -0.0 is not negative
    check(ce_fast.entropy(q), ref.entropy(q), dtype)
    with pytest.raises(ValueError, match="found -inf at flat position 1"):
        ce_fast.entropy(np.array([0.5, -np.inf], dtype))
