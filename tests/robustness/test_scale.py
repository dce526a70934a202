"""Scale: more than 2**31 elements (64-bit indexing everywhere), and
absurd shapes from zero-stride views (rejected promptly, never wrapped)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided

import ce_fast

HUGE = 2**40  # rows of a zero-stride view: 4 TiB as float32 if materialised


def _zero_stride(value, shape, dtype):
    return as_strided(np.full(1, value, dtype), shape=shape, strides=(0,) * len(shape))


def test_numpy_refuses_int64_overflowing_shapes():
    """Shapes whose byte size overflows int64 cannot even be built as NumPy
    views (so they cannot reach ce_fast through an ndarray)."""
    with pytest.raises(ValueError, match="too big"):
        _zero_stride(0.0, (2**32, 2**32), np.float32)
    with pytest.raises(ValueError, match="too big"):
        _zero_stride(0.0, (2**62, 2), np.float32)


@pytest.mark.parametrize(
    "call",
    [
        lambda x, y: ce_fast.cross_entropy(x, y),
        lambda x, y: ce_fast.cross_entropy_and_grad(x, y),
        lambda x, y: ce_fast.softmax_entropy(x),
        lambda x, y: ce_fast.entropy(x),
    ],
)
def test_huge_view_with_empty_class_axis_is_rejected(call):
    x = _zero_stride(0.0, (HUGE, 0), np.float32)
    y = _zero_stride(0, (HUGE,), np.int64)
    t0 = time.perf_counter()
    with pytest.raises(ValueError, match="C == 0"):
        call(x, y)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize("func", ["softmax", "log_softmax"])
def test_huge_view_with_empty_class_axis_gives_an_empty_result(func):
    """softmax / log_softmax of an empty class axis are empty (as NumPy,
    SciPy and PyTorch): an empty result, at once, whatever the batch."""
    x = _zero_stride(0.0, (HUGE, 0), np.float32)
    t0 = time.perf_counter()
    res = getattr(ce_fast, func)(x)
    assert res.shape == (HUGE, 0) and res.dtype == np.float32
    assert time.perf_counter() - t0 < 1.0


def test_huge_view_with_empty_class_axis_logsumexp_is_too_big():
    """logsumexp of an empty class axis is -inf per row: 2**40 rows are 4 TiB
    of result, which NumPy refuses to allocate (a MemoryError, promptly)."""
    x = _zero_stride(0.0, (HUGE, 0), np.float32)
    t0 = time.perf_counter()
    with pytest.raises(MemoryError):
        ce_fast.logsumexp(x)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.parametrize(
    "call",
    [
        lambda x, y: ce_fast.cross_entropy(x, y),  # int64 labels are made contiguous
        lambda x, y: ce_fast.cross_entropy(x, y, reduction="none"),
        lambda x, y: ce_fast.cross_entropy_grad(x, y),
        lambda x, y: ce_fast.softmax(x),
        lambda x, y: ce_fast.log_softmax(x),
        lambda x, y: ce_fast.logsumexp(x),
        lambda x, y: ce_fast.binary_cross_entropy_with_logits_grad(x, 0.5),
        lambda x, y: ce_fast.binary_cross_entropy_with_logits(x, 0.5, reduction="none"),
    ],
)
def test_huge_view_needing_a_result_buffer_fails_cleanly(call):
    """A 2**40-row zero-stride view is valid memory, but every call that
    needs an N-sized result or label buffer fails at once with NumPy's
    MemoryError (nothing wraps to a small size, nothing crashes).

    Not covered on purpose: reductions that need no N-sized buffer (e.g.
    binary_cross_entropy_with_logits(view, t) with "mean") accept such a
    view and would honestly walk all 2**40 elements (~20 min)."""
    x = _zero_stride(0.0, (HUGE, 1), np.float32)
    y = _zero_stride(0, (HUGE,), np.int64)
    t0 = time.perf_counter()
    with pytest.raises(MemoryError):
        call(x, y)
    assert time.perf_counter() - t0 < 1.0


@pytest.mark.slow
def test_more_than_2_31_elements_float32():
    """(2**16 + 1) x 32768 float32 = 2**31 + 32768 elements (8.6 GB; needs
    ~9 GB of RAM). Every row is constant except the last, so every loss is
    exactly log(C) but the last one, which sits beyond element 2**31 and has
    the closed form log(1 + (C - 1) e^-10) (logit 10 on the target)."""
    N, C = 2**16 + 1, 32768
    assert N * C > 2**31
    x = np.empty((N, C), np.float32)
    x[:] = (np.arange(N, dtype=np.float32) % 7)[:, None]  # constant rows
    y = (np.arange(N) * 7919) % C
    x[-1] = 0.0
    x[-1, y[-1]] = 10.0
    last = math.log1p((C - 1) * math.exp(-10.0))
    logC = math.log(C)

    t0 = time.perf_counter()
    losses = ce_fast.cross_entropy(x, y, reduction="none")
    t_loss = time.perf_counter() - t0
    np.testing.assert_allclose(losses[:-1], logC, rtol=2e-6)
    np.testing.assert_allclose(losses[-1], last, rtol=2e-6)
    mean = ce_fast.cross_entropy(x, y)
    np.testing.assert_allclose(mean, ((N - 1) * logC + last) / N, rtol=2e-6)
    lse = ce_fast.logsumexp(x)
    np.testing.assert_allclose(lse[-2], ((N - 2) % 7) + logC, rtol=2e-6)

    # gradient in place (no second 8.6 GB buffer): rows are p - onehot
    t0 = time.perf_counter()
    loss, g = ce_fast.cross_entropy_and_grad(x, y, reduction="sum", out=x)
    t_grad = time.perf_counter() - t0
    assert g is x
    np.testing.assert_allclose(loss, (N - 1) * logC + last, rtol=2e-6)
    np.testing.assert_allclose(g[0, (y[0] + 1) % C], 1.0 / C, rtol=2e-6)
    np.testing.assert_allclose(g[0, y[0]], 1.0 / C - 1.0, rtol=2e-6)
    z = 1.0 + (C - 1) * math.exp(-10.0)
    np.testing.assert_allclose(g[-1, (y[-1] + 1) % C], math.exp(-10.0) / z, rtol=2e-6)
    np.testing.assert_allclose(g[-1, y[-1]], 1.0 / z - 1.0, rtol=2e-6)
    np.testing.assert_allclose(g[-1].sum(dtype=np.float64), 0.0, atol=1e-6)
    print(f"\n>2**31 elements: loss(none) {t_loss:.2f} s, loss+grad in place {t_grad:.2f} s")
