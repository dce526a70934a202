"""Hypothesis property tests: random shapes, class axes, dtypes, targets and
options, compared with ``ce_fast.reference``.

Example counts come from the hypothesis profile (conftest.py: ``ci`` by
default, ``long`` with HYPOTHESIS_PROFILE=long).

Logits are finite within +-30 (plus -inf/NaN/+inf in the "specials"
test), and the float32 tolerance grows with the logit span: x - max x is
rounded in float32 (test_tiny_loss_float32_few_ulps_with_inexact_differences
in test_categorical.py, a strict xfail).
Gradients are compared on the scale of the terms they are computed from
(conftest.categorical_grad_term_scale), so exactly cancelling gradients
(uniform targets on flat rows) are judged fairly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import assume, given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ce_fast
import ce_fast.reference as ref
from tests.conftest import (
    assert_bitwise,
    assert_close,
    categorical_grad_term_scale,
    fingerprint,
)

REDUCTIONS = ["mean", "sum", "none"]
LOGIT_BOUND = 30.0


# ---------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------


def _floats(dtype, lo, hi, **kw):
    width = 32 if np.dtype(dtype) == np.float32 else 64
    return st.floats(lo, hi, width=width, allow_nan=False, allow_infinity=False, **kw)


@st.composite
def problems(draw, specials=False, max_C=9):
    """A random categorical problem: (x, target, kwargs, grad_output)."""
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    kind = draw(st.sampled_from(["int", "prob"]))
    ndim = draw(st.integers(1, 4))
    shape = draw(st.lists(st.integers(0, 5), min_size=ndim, max_size=ndim))
    axis = draw(st.integers(-ndim, ndim - 1))
    C = draw(st.integers(1, max_C))
    shape[axis] = C
    shape = tuple(shape)
    ax = axis % ndim
    sshape = shape[:ax] + shape[ax + 1 :]

    elem = _floats(dtype, -LOGIT_BOUND, LOGIT_BOUND)
    if specials:
        elem = st.one_of(
            elem, elem, elem, st.just(-np.inf), st.just(np.nan), st.just(np.inf)
        )
    x = draw(hnp.arrays(dtype, shape, elements=elem))

    kw = {"axis": axis}
    if kind == "int":
        ignore_index = draw(st.sampled_from([-100, -1, 0, C - 1, C + 3]))
        if ignore_index != -100:
            kw["ignore_index"] = ignore_index
        values = st.one_of(st.integers(0, C - 1), st.just(ignore_index))
        t = draw(hnp.arrays(np.int64, sshape, elements=values))
        tdtype = draw(st.sampled_from([np.int64, np.int32, np.int16, np.uint8]))
        if tdtype is np.uint8 and (ignore_index < 0 or ignore_index > 255):
            tdtype = np.int16
        t = t.astype(tdtype)
    else:
        q = draw(hnp.arrays(np.float64, shape, elements=st.floats(0, 1)))
        if draw(st.booleans()) and q.size:
            s = q.sum(axis=ax, keepdims=True)
            q = np.where(s > 0, q / np.where(s > 0, s, 1), 1.0 / C)
        t = q.astype(draw(st.sampled_from([dtype, np.float64, np.float32])))
        if draw(st.booleans()):
            kw["ignore_index"] = draw(st.integers(-1000, -1))

    kw["reduction"] = draw(st.sampled_from(REDUCTIONS))
    weights = st.one_of(st.just(0.0), st.floats(1e-3, 3.0))
    if draw(st.booleans()):
        kw["weight"] = draw(hnp.arrays(np.float64, (C,), elements=weights))
    if draw(st.booleans()):
        sw = st.one_of(st.just(0.0), st.floats(1e-3, 3.0))
        kw["sample_weight"] = draw(hnp.arrays(np.float64, sshape, elements=sw))
    if draw(st.booleans()):
        kw["label_smoothing"] = draw(st.sampled_from([0.0, 0.05, 0.3, 1.0]))
    if draw(st.booleans()):
        kw["z_loss"] = draw(st.sampled_from([0.0, 1e-4, 0.1]))
    if draw(st.booleans()):
        kw["softcap"] = draw(st.sampled_from([0.5, 5.0, 20.0]))

    go = None
    if draw(st.booleans()):
        if kw["reduction"] == "none":
            go = draw(hnp.arrays(np.float64, sshape, elements=st.floats(-2.0, 2.0)))
        else:
            go = draw(st.floats(-2.0, 2.0))
    return x, t, kw, go


def _rtol(x):
    """float32: a few ulps plus the rounding of x - max x (|x - m| * 2**-24)."""
    if x.dtype != np.float32:
        return None
    fin = x[np.isfinite(x)]
    span = float(fin.max() - fin.min()) if fin.size else 0.0
    return 2e-6 + span * 2.0**-24


def _check(x, t, kw, go):
    inputs = [x, t] + [v for v in kw.values() if isinstance(v, np.ndarray)]
    before = [fingerprint(a) for a in inputs]
    loss = ce_fast.cross_entropy(x, t, **kw)
    grad = ce_fast.cross_entropy_grad(x, t, grad_output=go, **kw)
    loss2, grad2 = ce_fast.cross_entropy_and_grad(x, t, grad_output=go, **kw)
    assert [fingerprint(a) for a in inputs] == before, "an input was modified"
    with np.errstate(all="ignore"):
        rloss, rgrad = ref.cross_entropy_and_grad(x, t, grad_output=go, **kw)
    dt = rgrad.dtype
    assert grad.dtype == dt and grad.shape == x.shape
    assert np.asarray(loss).dtype == dt and np.shape(loss) == np.shape(rloss)
    if kw["reduction"] != "none":
        assert type(loss) is dt.type
    rtol = _rtol(x)
    assert_close(loss, rloss, dt, rtol=rtol, err_msg="loss")
    scale = categorical_grad_term_scale(x, t, kw, go)
    assert_close(grad, rgrad, dt, rtol=rtol, scale=scale, err_msg="grad")
    assert_bitwise(loss2, loss, "fused loss")
    assert_bitwise(grad2, grad, "fused grad")
    return loss, grad


# ---------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------


@given(problems())
def test_matches_reference(problem):
    _check(*problem)


@given(problems(specials=True))
def test_special_values_match_reference(problem):
    """NaN, +inf and -inf sprinkled in: NaN positions must match exactly."""
    _check(*problem)


@given(problems(), st.data())
def test_in_place_equals_out_of_place(problem, data):
    x, t, kw, go = problem
    expected_loss, expected = ce_fast.cross_entropy_and_grad(x, t, grad_output=go, **kw)
    xc = np.ascontiguousarray(x)
    func = data.draw(st.sampled_from(["cross_entropy_grad", "cross_entropy_and_grad"]))
    res = getattr(ce_fast, func)(xc, t, grad_output=go, out=xc, **kw)
    grad = res[1] if isinstance(res, tuple) else res
    assert grad is xc
    assert_bitwise(xc, expected)
    if isinstance(res, tuple):
        assert_bitwise(res[0], expected_loss)


@given(problems(), st.data())
def test_layout_does_not_change_the_result(problem, data):
    """A random axis permutation (a non-contiguous view of the same numbers)
    gives the same loss and gradient as the contiguous array, to a few ulps."""
    x, t, kw, go = problem
    ndim = x.ndim
    ax = kw["axis"] % ndim
    perm = data.draw(st.permutations(range(ndim)))
    # store the logits permuted, then view them back in the original order
    inv = np.argsort(perm)
    xv = np.ascontiguousarray(np.transpose(x, perm)).transpose(inv)
    if data.draw(st.booleans()):  # also reverse one axis in memory
        k = data.draw(st.integers(0, ndim - 1))
        sl = tuple(
            slice(None, None, -1) if i == k else slice(None) for i in range(ndim)
        )
        xv = xv[sl].copy()[sl]
    assert np.array_equal(xv, x, equal_nan=True)
    loss, grad = ce_fast.cross_entropy_and_grad(x, t, grad_output=go, **kw)
    lv, gv = ce_fast.cross_entropy_and_grad(xv, t, grad_output=go, **kw)
    eps = np.finfo(grad.dtype).eps
    note(f"perm={perm} axis={ax} strides={xv.strides}")
    assert_close(lv, loss, grad.dtype, rtol=8 * eps, atol_factor=2 * eps)
    assert_close(gv, grad, grad.dtype, rtol=8 * eps, atol_factor=2 * eps)


@given(problems(), st.integers(-40, 40))
def test_loss_is_shift_invariant(problem, c):
    """Adding a constant to every logit of a row leaves the loss and the
    gradient unchanged (without z_loss and softcap, which see absolute
    values). A mathematical property, checked independently of the
    reference."""
    x, t, kw, go = problem
    kw = {k: v for k, v in kw.items() if k not in ("z_loss", "softcap")}
    assume(x.dtype == np.float64)  # exact-ish shifts; float32 would round x + c
    xs = x + float(c)
    loss, grad = ce_fast.cross_entropy_and_grad(x, t, grad_output=go, **kw)
    ls, gs = ce_fast.cross_entropy_and_grad(xs, t, grad_output=go, **kw)
    # x + c is rounded (|x + c| <= 70): perturbations of ~70 * eps per logit
    assert_close(ls, loss, np.float64, rtol=1e-12, atol_factor=1e-12)
    scale = max(float(np.max(np.abs(grad), initial=0.0)), 1.0)
    np.testing.assert_allclose(gs, grad, rtol=1e-10, atol=1e-12 * scale)


@given(problems())
def test_reduced_losses_are_consistent_with_none(problem):
    """ "sum" is the sum of the "none" losses and "mean" is "sum" over the
    weight total (computed here independently of the reference)."""
    x, t, kw, _ = problem
    kw = dict(kw)
    per = ce_fast.cross_entropy(x, t, **dict(kw, reduction="none")).astype(np.float64)
    assume(np.isfinite(per).all())
    total = float(ce_fast.cross_entropy(x, t, **dict(kw, reduction="sum")))
    mean = float(ce_fast.cross_entropy(x, t, **dict(kw, reduction="mean")))
    eps = float(np.finfo(np.float32 if x.dtype == np.float32 else np.float64).eps)
    # per-sample values rounded to the dtype, the kernel's float64 running sum
    # (no promise of pairwise summation inside a block of rows), the result
    # rounded to the dtype
    n = max(per.size, 2)
    bound = (eps + n * 2.0**-52) * np.abs(per).sum() + eps * abs(total)
    assert abs(total - per.sum()) <= bound
    # the denominator
    ss = per.shape
    sw = np.broadcast_to(kw.get("sample_weight", 1.0), ss).astype(np.float64)
    if np.issubdtype(t.dtype, np.integer):
        keep = t.astype(np.int64) != kw.get("ignore_index", -100)
        w = np.asarray(kw.get("weight", np.ones(x.shape[kw["axis"]])), np.float64)
        wy = np.where(keep, w[np.where(keep, t, 0).astype(np.int64)], 0.0)
        denom = float(np.sum(sw * wy))
    else:
        denom = float(np.sum(sw))
    if denom == 0:
        assert math.isnan(mean)
    else:
        expected = per.sum() / denom
        assert (
            abs(mean - expected)
            <= bound / abs(denom) + 4 * eps * abs(expected) + 1e-300
        )
