"""ce_fast.dask's kl_divergence / js_divergence (and ``_and_grad``) against
the NumPy functions on the materialised arrays."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import dask  # noqa: E402

import ce_fast  # noqa: E402
import ce_fast.dask as cfd  # noqa: E402
from tests.conftest import assert_bitwise, assert_close  # noqa: E402

KINDS = {
    "forward": ("kl_divergence", {"direction": "forward"}),
    "reverse": ("kl_divergence", {"direction": "reverse"}),
    "js": ("js_divergence", {"beta": 0.3}),
}


def compute(*a):
    return dask.compute(*a, scheduler="sync")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunks", [(4, 11), (3, 4), (40, 11)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_numpy(rng, kind, reduction, chunks, dtype):
    name, kw = KINDS[kind]
    s = (rng.standard_normal((13, 11)) * 2).astype(dtype)
    t = (rng.standard_normal((13, 11)) * 2).astype(dtype)
    sw, y = rng.random(13) + 0.5, rng.integers(0, 4, 13)
    go = rng.random(13) if reduction == "none" else 0.6
    kw = dict(kw, reduction=reduction, temperature=1.5, sample_weight=sw, target=y, ignore_index=2)
    want = getattr(ce_fast, name + "_and_grad")(s, t, grad_output=go, **kw)
    ds, dt_ = da.from_array(s, chunks=chunks), da.from_array(t, chunks=(5, 6))
    dsw = da.from_array(sw, chunks=4)
    lazy = getattr(cfd, name + "_and_grad")(ds, dt_, grad_output=go, **dict(kw, sample_weight=dsw))
    loss, grad = compute(*lazy)
    only = compute(getattr(cfd, name)(ds, dt_, **dict(kw, sample_weight=dsw)))[0]
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype
    tol = {} if dtype == np.float64 else {"rtol": 1e-5}
    assert_close(loss, want[0], dtype, **tol)
    assert_close(only, want[0], dtype, **tol)
    if chunks[1] == 11 and reduction != "mean":
        # rows whole: the same kernel on the same rows, bit for bit (the
        # "mean" denominator is summed by blocks here, by rows in the kernel)
        assert_bitwise(grad, want[1])
    else:
        assert_close(grad, want[1], dtype)


@pytest.mark.parametrize("axis", [0, 1])
def test_axis_teacher_probs_and_one_dimensional(rng, axis):
    s = rng.standard_normal((6, 5, 4))
    moved = np.moveaxis(s, axis, -1).shape
    p = rng.dirichlet(np.ones(moved[-1]), size=moved[:-1])
    p = np.moveaxis(p, -1, axis)
    want = ce_fast.kl_divergence_and_grad(s, p, teacher_is="probs", axis=axis, reduction="none")
    got = compute(*cfd.kl_divergence_and_grad(da.from_array(s, chunks=2), p, teacher_is="probs", axis=axis,
                                              reduction="none"))  # fmt: skip
    assert_close(got[0], want[0])
    assert_close(got[1], want[1])
    x = s[0, 0]
    one = compute(*cfd.js_divergence_and_grad(da.from_array(x, chunks=2), x[::-1]))
    want1 = ce_fast.js_divergence_and_grad(x, x[::-1])
    assert_close(one[0], want1[0])
    assert_close(one[1], want1[1])


def test_all_ignored_mean_and_errors(rng):
    s = da.from_array(rng.standard_normal((4, 3)), chunks=2)
    loss, grad = compute(*cfd.kl_divergence_and_grad(s, s, target=np.zeros(4, int), ignore_index=0))
    assert np.isnan(loss) and not grad.any()
    with pytest.raises(ValueError, match="teacher must have"):
        cfd.kl_divergence(s, s[:, :2])
    with pytest.raises(ValueError, match="target and ignore_index"):
        cfd.kl_divergence(s, s, ignore_index=0)
    with pytest.raises(ValueError, match="direction"):
        cfd.kl_divergence(s, s, direction="both")
