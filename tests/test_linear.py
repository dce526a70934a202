"""``linear_cross_entropy`` / ``_and_grad`` (the chunked language-model head)
against ``ce_fast.reference``, the unfused ce_fast composition, finite
differences, and its memory promise."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ce_fast
import ce_fast.reference as ref
from ce_fast._linear import auto_chunk_size
from tests.conftest import assert_close

DTYPES = [np.float32, np.float64]
# float32 logits come from a float32 BLAS matmul here and a float64 one in the
# reference: the loss differs by ~D * eps32 * |h| |w|, not by the kernel's ulps.
F32 = {"rtol": 2e-4, "atol_factor": 2e-4}


def problem(rng, N, C, D, dtype, *, bias=True, probs=False, ignore_every=0):
    h = rng.standard_normal((N, D)).astype(dtype)
    w = (rng.standard_normal((C, D)) / np.sqrt(max(D, 1))).astype(dtype)
    b = rng.standard_normal(C).astype(dtype) if bias else None
    if probs:
        t = rng.random((N, C)).astype(dtype)
        t /= t.sum(axis=1, keepdims=True)
    else:
        t = rng.integers(0, C, N)
        if ignore_every:
            t[::ignore_every] = -100
    return h, w, b, t


def tol(dtype):
    return {} if np.dtype(dtype) == np.float64 else F32


def check_against_reference(h, w, t, b, dtype, **kw):
    loss, dh, dw, db = ce_fast.linear_cross_entropy_and_grad(h, w, t, bias=b, **kw)
    kw.pop("chunk_size", None)
    kw.pop("num_threads", None)
    rloss, rdh, rdw, rdb = ref.linear_cross_entropy_and_grad(h, w, t, bias=b, **kw)
    kw.pop("grad_output", None)
    only = ce_fast.linear_cross_entropy(h, w, t, bias=b, **kw)
    for got, want in ((loss, rloss), (only, rloss), (dh, rdh), (dw, rdw)):
        assert np.asarray(got).dtype == np.dtype(dtype)
        assert_close(got, want, dtype, **tol(dtype))
    if b is None:
        assert db is None and rdb is None
    else:
        assert_close(db, rdb, dtype, **tol(dtype))
    return loss, dh, dw, db


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [None, 1, 7, 64, 1000])
def test_matches_reference(rng, dtype, reduction, chunk_size):
    h, w, b, t = problem(rng, 50, 13, 9, dtype, ignore_every=5)
    check_against_reference(h, w, t, b, dtype, reduction=reduction, chunk_size=chunk_size)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "options",
    [
        {"label_smoothing": 0.2},
        {"z_loss": 1e-2},
        {"softcap": 3.0},
        {"class_weight": "random"},
        {"sample_weight": "random"},
        {"ignore_index": 2},
        {
            "class_weight": "random",
            "sample_weight": "random",
            "label_smoothing": 0.1,
            "z_loss": 1e-3,
            "softcap": 5.0,
        },
    ],
    ids=lambda o: "+".join(o),
)
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_every_option(rng, dtype, options, reduction):
    h, w, b, t = problem(rng, 40, 11, 6, dtype, ignore_every=7)
    kw = dict(options)
    if kw.get("class_weight") == "random":
        kw["class_weight"] = rng.random(11).astype(dtype)
    if kw.get("sample_weight") == "random":
        kw["sample_weight"] = rng.random(40).astype(dtype)
    if "ignore_index" in kw:
        t[t == -100] = kw["ignore_index"]
    check_against_reference(h, w, t, b, dtype, reduction=reduction, chunk_size=6, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_probability_targets(rng, dtype, reduction):
    h, w, b, t = problem(rng, 30, 8, 5, dtype, probs=True)
    check_against_reference(h, w, t, b, dtype, reduction=reduction, chunk_size=4, label_smoothing=0.1)


def test_equals_the_unfused_ce_fast_composition(rng):
    """Chunking only reorders the matmul work: the float64 results agree with
    materialising the logits and calling cross_entropy_and_grad."""
    h, w, b, t = problem(rng, 100, 17, 8, np.float64, ignore_every=9)
    z = h @ w.T + b
    loss0, g = ce_fast.cross_entropy_and_grad(z, t, label_smoothing=0.1)
    for cs in (1, 3, 33, 100):
        loss, dh, dw, db = ce_fast.linear_cross_entropy_and_grad(
            h, w, t, bias=b, label_smoothing=0.1, chunk_size=cs
        )
        np.testing.assert_allclose(loss, loss0, rtol=1e-14)
        np.testing.assert_allclose(dh, g @ w, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(dw, g.T @ h, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(db, g.sum(axis=0), rtol=1e-12, atol=1e-15)


def test_finite_differences_float64(rng):
    N, C, D = 6, 5, 4
    h, w, b, t = problem(rng, N, C, D, np.float64)
    kw = dict(label_smoothing=0.1, z_loss=1e-2, softcap=4.0, class_weight=rng.random(C) + 0.5, chunk_size=4)
    _, dh, dw, db = ce_fast.linear_cross_entropy_and_grad(h, w, t, bias=b, **kw)

    def f(hh, ww, bb):
        return float(ce_fast.linear_cross_entropy(hh, ww, t, bias=bb, **kw))

    step = 1e-6
    for arr, grad, which in ((h, dh, 0), (w, dw, 1), (b, db, 2)):
        fd = np.empty_like(arr)
        for idx in np.ndindex(arr.shape):
            args = [h.copy(), w.copy(), b.copy()]
            args[which][idx] += step
            up = f(*args)
            args[which][idx] -= 2 * step
            fd[idx] = (up - f(*args)) / (2 * step)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)


def test_grad_output(rng):
    h, w, b, t = problem(rng, 20, 6, 4, np.float64, ignore_every=3)
    go = rng.standard_normal(20)
    check_against_reference(h, w, t, b, np.float64, reduction="none", grad_output=go, chunk_size=3)
    check_against_reference(h, w, t, b, np.float64, reduction="mean", grad_output=2.5, chunk_size=3)
    with pytest.raises(ValueError, match="grad_output must be a scalar"):
        ce_fast.linear_cross_entropy_and_grad(h, w, t, grad_output=go)


def test_leading_axes_and_mixed_dtypes(rng):
    h = rng.standard_normal((3, 4, 5)).astype(np.float32)
    w = rng.standard_normal((7, 5))  # float64: promotes
    t = rng.integers(0, 7, (3, 4))
    loss, dh, dw, db = ce_fast.linear_cross_entropy_and_grad(h, w, t, reduction="none", chunk_size=5)
    assert loss.shape == (3, 4) and dh.shape == (3, 4, 5) and dw.shape == (7, 5) and db is None
    assert loss.dtype == dh.dtype == dw.dtype == np.float64
    rloss, rdh, rdw, _ = ref.linear_cross_entropy_and_grad(h, w, t, reduction="none")
    assert_close(loss, rloss)
    assert_close(dh, rdh)
    assert_close(dw, rdw)
    h16 = h.astype(np.float16)
    assert ce_fast.linear_cross_entropy(h16, w.astype(np.float16), t).dtype == np.float32


def test_edge_shapes(rng):
    h, w, b, t = problem(rng, 0, 4, 3, np.float64)
    for red, want in (("sum", 0.0), ("none", None)):
        loss, dh, dw, db = ce_fast.linear_cross_entropy_and_grad(h, w, t, bias=b, reduction=red)
        assert dh.shape == (0, 3) and not dw.any() and not db.any()
        assert (loss == want) if want is not None else loss.shape == (0,)
    assert np.isnan(ce_fast.linear_cross_entropy(h, w, t))
    loss = ce_fast.linear_cross_entropy(
        np.zeros((3, 0, 2)), np.ones((4, 2)), np.zeros((3, 0), int), reduction="none"
    )
    assert loss.shape == (3, 0)
    # one class: the loss is 0 and every gradient is 0
    h, w, b, t = problem(rng, 5, 1, 3, np.float64)
    loss, dh, dw, db = ce_fast.linear_cross_entropy_and_grad(h, w, t, bias=b)
    assert loss == 0 and not dh.any() and not dw.any() and not db.any()
    # D == 0: the logits are the bias alone
    h, w, b, t = problem(rng, 4, 3, 0, np.float64)
    check_against_reference(h, w, t, b, np.float64)


def test_all_ignored_mean_is_nan_with_zero_gradients(rng):
    h, w, b, t = problem(rng, 8, 4, 3, np.float64)
    t[:] = -100
    loss, dh, dw, db = ce_fast.linear_cross_entropy_and_grad(h, w, t, bias=b, chunk_size=3)
    assert np.isnan(loss) and not dh.any() and not dw.any() and not db.any()


def test_zero_total_weight_gives_nan_like_the_composition(rng):
    h, w, b, t = problem(rng, 6, 4, 3, np.float64)
    t[:] = 1
    t[0] = -100
    cw = np.array([1.0, 0.0, 1.0, 1.0])
    loss, dh, _, _ = ce_fast.linear_cross_entropy_and_grad(h, w, t, class_weight=cw, chunk_size=2)
    _, g = ce_fast.cross_entropy_and_grad(h @ w.T, t, weight=cw)
    assert np.isnan(loss)
    np.testing.assert_array_equal(np.isnan(dh), np.isnan(g @ w))
    assert not dh[0].any()


@pytest.mark.parametrize("dtype", DTYPES)
def test_edge_values_propagate(rng, dtype):
    """A NaN or +inf in a hidden row makes that row's loss NaN, as the
    composition does; huge activations stay finite through the stable kernel."""
    h, w, b, t = problem(rng, 9, 5, 4, dtype)
    h[2, 1] = np.nan
    h[5] *= 1e4
    loss, *_ = ce_fast.linear_cross_entropy_and_grad(h, w, t, bias=b, reduction="none", chunk_size=4)
    want = ce_fast.cross_entropy(h @ w.T + b, t, reduction="none")
    assert np.isnan(loss[2]) and np.isfinite(np.delete(loss, 2)).all()
    assert_close(loss, want, dtype, **tol(dtype))


@pytest.mark.usefixtures("oversubscribed")
def test_bitwise_across_thread_counts(rng):
    h, w, b, t = problem(rng, 256, 300, 16, np.float32)  # above the one-thread threshold
    runs = [ce_fast.linear_cross_entropy_and_grad(h, w, t, bias=b, num_threads=n) for n in (1, 2, 3)]
    for r in runs[1:]:
        for a, c in zip(r, runs[0]):
            np.testing.assert_array_equal(a, c)


def test_errors(rng):
    h, w, b, t = problem(rng, 5, 4, 3, np.float64)
    with pytest.raises(ValueError, match="features"):
        ce_fast.linear_cross_entropy(h, w[:, :2], t)
    with pytest.raises(ValueError, match="2-d"):
        ce_fast.linear_cross_entropy(h, w[0], t)
    with pytest.raises(ValueError, match="C == 0"):
        ce_fast.linear_cross_entropy(h, w[:0], t)
    with pytest.raises(ValueError, match="bias"):
        ce_fast.linear_cross_entropy(h, w, t, bias=b[:2])
    with pytest.raises(ValueError, match="weight must be 1-d"):
        ce_fast.linear_cross_entropy(h, w, t, class_weight=np.ones(3))
    with pytest.raises(IndexError, match="flat position 3"):
        ce_fast.linear_cross_entropy(h, w, np.array([0, 1, 2, 4, 0]))
    with pytest.raises(ValueError, match="integer class indices"):
        ce_fast.linear_cross_entropy(h, w, t[:3])
    with pytest.raises(ValueError, match="probabilities"):
        ce_fast.linear_cross_entropy(h, w, np.ones((5, 3)))
    with pytest.raises(ValueError, match="reduction"):
        ce_fast.linear_cross_entropy(h, w, t, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        ce_fast.linear_cross_entropy(h[:0], w, t[:0], label_smoothing=2.0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="chunk_size"):
            ce_fast.linear_cross_entropy(h, w, t, chunk_size=bad)
    with pytest.raises(TypeError):
        ce_fast.linear_cross_entropy(h.astype(complex), w, t)


def test_auto_chunk_size():
    # the budget: max(64 MiB, the weight matrix's bytes) of logits
    assert auto_chunk_size(8192, 128256, 1024, 4) == 1024
    assert auto_chunk_size(8192, 128256, 16, 4) == (64 << 20) // (128256 * 4)
    assert auto_chunk_size(10, 5, 3, 8) == 10  # everything in one chunk
    assert auto_chunk_size(10**6, 10**7, 1, 4) == 16  # never fewer than 16 rows
    assert auto_chunk_size(0, 10, 3, 4) == 1


def test_peak_memory_is_a_chunk_not_the_logits(rng):
    """The N x C logits (and their gradient) are never allocated: the peak
    traced allocation is the outputs plus about one chunk of logits."""
    N, C, D = 2048, 4000, 16
    h, w, b, t = problem(rng, N, C, D, np.float32)
    chunk = 128
    tracemalloc.start()
    try:
        ce_fast.linear_cross_entropy_and_grad(h, w, t, bias=b, chunk_size=chunk)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    outputs = (N * D + C * D + C) * 4
    logits = N * C * 4
    assert peak < outputs + 1.5 * chunk * C * 4 + (8 << 20)
    assert peak < logits / 4


@given(
    N=st.integers(0, 12),
    C=st.integers(1, 9),
    D=st.integers(0, 5),
    chunk=st.integers(1, 13),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    eps=st.sampled_from([0.0, 0.3]),
    bias=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_reference(N, C, D, chunk, reduction, eps, bias, seed):
    rng = np.random.default_rng(seed)
    h, w, b, t = problem(rng, N, C, D, np.float64, bias=bias, ignore_every=4)
    check_against_reference(
        h, w, t, b, np.float64, reduction=reduction, label_smoothing=eps, chunk_size=chunk
    )
