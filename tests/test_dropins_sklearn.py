"""ce_fast.sklearn.log_loss against scikit-learn's own (the oracle): values,
warnings and errors, message for message; the label encoding without a
one-hot; the kernel's path proven by its counter; thread counts bitwise
identical."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

sk_metrics = pytest.importorskip("sklearn.metrics")
hyp = pytest.importorskip("hypothesis")
from hypothesis import given  # noqa: E402
from hypothesis import strategies as S  # noqa: E402

import ce_fast.reference as ref  # noqa: E402
import ce_fast.sklearn as cfk  # noqa: E402
from ce_fast import _core  # noqa: E402

sk_log_loss = cfk.original()


def _outcome(fn, *args, **kw):
    """(value or None, (error type, message) or None, [(category, message)])."""
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        try:
            val, err = fn(*args, **kw), None
        except Exception as e:
            val, err = None, (type(e), str(e))
    return val, err, [(w.category, str(w.message)) for w in rec]


def _kernel_ran():
    return cfk.path_counts().get(("log_loss", "kernel"), 0)


def _compare(*args, via_kernel=None, **kw):
    want, werr, wwarn = _outcome(sk_log_loss, *args, **kw)
    before = _kernel_ran()
    got, gerr, gwarn = _outcome(cfk.log_loss, *args, **kw)
    assert gerr == werr
    assert gwarn == wwarn
    if werr is None:
        assert type(got) is float
        p = args[1] if len(args) > 1 else kw.get("y_pred")
        np.testing.assert_allclose(got, want, rtol=1e-5 if _dtype(p) == np.float32 else 1e-12)
    if via_kernel is not None:
        assert (_kernel_ran() > before) == via_kernel
    return got


def _dtype(p):
    return getattr(p, "dtype", np.float64)


def _probs(rng, n, c, dtype=np.float64):
    p = rng.random((n, c)) + 0.05
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_values_and_weights(rng, dtype):
    p = _probs(rng, 200, 7, dtype)
    y = rng.integers(0, 7, 200)
    y[:7] = np.arange(7)
    w = rng.random(200)
    for kw in ({}, {"normalize": False}, {"sample_weight": w}, {"sample_weight": w, "normalize": False},
               {"sample_weight": list(range(200))}, {"labels": np.arange(7)}):  # fmt: skip
        _compare(y, p, via_kernel=True, **kw)
    assert np.isclose(cfk.log_loss(y, p, sample_weight=w), ref.sklearn_log_loss(y, p, sample_weight=w))
    # labels: strings, floats, a sparse range of integers, negative integers
    names = np.array(["ant", "bee", "cat", "dog", "eel", "fox", "gnu"])
    _compare(names[y], p, via_kernel=True)
    _compare(list(names[y]), p, via_kernel=True)
    _compare(y.astype(float) * 2, p, via_kernel=True)  # integral floats
    _compare(y.astype(float) / 2, p, via_kernel=False)  # continuous: scikit-learn's error
    _compare(y * 10**12 - 5, p, via_kernel=True)  # np.unique rather than a table
    _compare((y - 3).astype(np.int8), p, via_kernel=True)
    _compare(y.astype(np.uint16), p, via_kernel=True)
    _compare(y[:, None], p, via_kernel=True)  # a column of labels


def test_binary_forms(rng):
    p1 = rng.random(50)
    y = rng.integers(0, 2, 50)
    _compare(y, p1, via_kernel=True)
    _compare(y, p1[:, None], via_kernel=True)
    _compare(np.where(y == 1, "yes", "no"), np.stack([1 - p1, p1], axis=1), via_kernel=True)
    _compare(y, p1.astype(np.float32), via_kernel=True)
    _compare([0, 1, 0], [0, 1, 0], via_kernel=True)  # perfect predictions: clipped, not 0
    _compare(np.array([2, 2]), np.array([[0.1, 0.9], [0.1, 0.9]]), labels=[1, 2], via_kernel=True)


def test_labels_wider_than_y_true_and_order_warning(rng):
    p = _probs(rng, 30, 4)
    y = rng.integers(1, 3, 30)
    _compare(y, p, labels=[0, 1, 2, 3], via_kernel=True)
    _compare(y, p, labels=[3, 1, 2, 0], via_kernel=True)  # the ordering warning, then the value
    _compare(np.array(["b", "c"])[y - 1], p, labels=["d", "b", "c", "a"], via_kernel=True)


def test_not_normalised_warning(rng):
    for dtype in (np.float32, np.float64):
        p = _probs(rng, 20, 3, dtype)
        y = np.arange(20) % 3
        _compare(y, p, via_kernel=True)  # no warning
        p[5] *= 1.01
        _compare(y, p, via_kernel=True)  # the warning, the value
        p[5] /= 1.01
        p[6, 0] += 2 * np.sqrt(np.finfo(dtype).eps)  # just outside the tolerance
        _compare(y, p, via_kernel=True)


@pytest.mark.parametrize(
    ("y", "p", "kw"),
    [
        ([1, 0, 2], [[0.3, 0.7], [0.6, 0.4], [0.4, 0.6]], {}),  # classes differ from columns
        ([1, 0, 2], [[0.3, 0.7], [0.6, 0.4], [0.4, 0.6]], {"labels": [0, 1, 2]}),
        (["a", "b", "c"], [[0.9, 0.1, 0.0], [0.1, 0.9, 0.0], [0.1, 0.1, 0.8]], {"labels": ["a", "c", "d"]}),
        ([2, 2], [[0.2, 0.8], [0.6, 0.4]], {}),  # one label
        ([2, 2], [[0.2, 0.8], [0.6, 0.4]], {"labels": [2]}),
        ([2, 2], [[0.2, 0.8], [0.6, 0.4], [0.7, 0.3]], {}),  # lengths
        ([0, 1], [[0.2, 1.8], [0.6, 0.4]], {}),  # > 1
        ([0, 1], [[0.2, -0.8], [0.6, 0.4]], {}),  # < 0
        ([0, 1], [[0.2, np.nan], [0.6, 0.4]], {}),
        ([0, 1], [[0.2, np.inf], [0.6, 0.4]], {}),
        ([0, 1], [[0.2, 0.8], [0.6, 0.4]], {"sample_weight": [0.0, 0.0]}),  # weights sum to 0
        ([0, 1], [[0.2, 0.8], [0.6, 0.4]], {"sample_weight": [1.0, np.nan]}),
        ([0, 1], [[0.2, 0.8], [0.6, 0.4]], {"sample_weight": [1.0]}),
        ([0, 1], [[0.2, 0.8], [0.6, 0.4]], {"normalize": 1}),  # not a bool
        ([0, 1], [[0.2, 0.8], [0.6, 0.4]], {"labels": "ab"}),
        ([0.5, 1.5], [[0.2, 0.8], [0.6, 0.4]], {}),  # continuous targets
        ([[0, 1], [1, 1]], [[0.2, 0.8], [0.6, 0.4]], {}),  # multilabel indicator: scikit-learn's
        ([0, 1], [[[0.2, 0.8]], [[0.6, 0.4]]], {}),  # 3-d probabilities
        ([], np.empty((0, 2)), {}),
        ([0, 1], [["a", "b"], ["c", "d"]], {}),
        ([0, 1], [[0.2, 0.8j], [0.6, 0.4]], {}),
        ([b"a", b"b"], [[0.2, 0.8], [0.6, 0.4]], {}),
    ],
)
def test_errors_and_refusals_are_sklearn_s(y, p, kw):
    _compare(y, p, **kw)


def test_y_pred_deprecation():
    y, p = np.array([0, 1, 1, 0]), np.array([[0.1, 0.9], [0.9, 0.1], [0.8, 0.2], [0.35, 0.65]])
    _compare(y, y_pred=p)
    _compare(y, p, y_pred=p)
    _compare(y)


@S.composite
def ll_case(draw):
    n = draw(S.integers(1, 40))
    c = draw(S.integers(1, 6))
    dtype = draw(S.sampled_from([np.float32, np.float64]))
    vals = S.sampled_from([0.0, 1.0, 0.5, 1e-12, 1 - 1e-12, 0.3]) | S.floats(0, 1)
    p = np.array(draw(S.lists(vals, min_size=n * c, max_size=n * c))).reshape(n, c)
    if draw(S.booleans()):
        p = p / np.maximum(p.sum(axis=1, keepdims=True), 1e-300)
    p = p.astype(dtype)
    ncls = max(c, 2)
    y = np.array(draw(S.lists(S.integers(0, ncls - 1), min_size=n, max_size=n)))
    if c == 1:
        p = p[:, 0] if draw(S.booleans()) else p
    kw = {}
    if draw(S.booleans()):
        kw["sample_weight"] = np.array(draw(S.lists(S.floats(0, 5), min_size=n, max_size=n)))
    if draw(S.booleans()):
        kw["normalize"] = False
    if draw(S.booleans()):
        kw["labels"] = list(range(ncls))
    return y, p, kw


@given(ll_case())
def test_log_loss_against_sklearn(case):
    y, p, kw = case
    _compare(y, p, **kw)


def test_label_table_without_sort():
    """Integer labels in a narrow range are encoded by a table (classes and
    indices as np.unique gives them), wide ranges by np.unique."""
    rng = np.random.default_rng(0)
    for y in (rng.integers(-5, 40, 1000), rng.integers(0, 2**40, 50), np.array([7, 7, 3], np.uint8)):
        classes, idx = cfk._int_classes(y)
        want_c, want_i = np.unique(y, return_inverse=True)
        np.testing.assert_array_equal(classes, want_c)
        assert classes.dtype == y.dtype
        np.testing.assert_array_equal(idx, want_i)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_threads_bitwise_identical(rng, dtype):
    p = _probs(rng, 50_000, 10, dtype)
    y = rng.integers(0, 10, 50_000)
    w = rng.random(50_000)
    res = {}
    for nt in (1, 2, 3):
        with threadpool_limits(limits=nt):
            res[nt] = (cfk.log_loss(y, p), cfk.log_loss(y, p, sample_weight=w, normalize=False))
        res[nt] += _core.log_loss(p=p, N=50_000, C=10, ps=(10, 1), label=y, w=w, eps=1e-7, sum_tol=1e-3,
                                  num_threads=nt)[1:3]  # fmt: skip
    assert res[1] == res[2] == res[3]


def test_kernel_reports_bad_labels():
    p = np.full((3, 2), 0.5)
    st, *_, pos = _core.log_loss(p=p, N=3, C=2, ps=(2, 1), label=np.array([0, 2, -1]), eps=1e-7, sum_tol=1e-3)
    assert st == _core.ce_status.CE_ERR_TARGET_INDEX and pos == 1
