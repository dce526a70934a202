"""The tiny-call fast paths (``_core.categorical_fast``,
``softmax_family_fast``, ``binary_logits_fast``): where they apply they must
give exactly what the general path gives, and everywhere else they must
decline (return None) so that the general path validates, converts or
raises."""

from __future__ import annotations

import numpy as np
import pytest

import ce_fast
from ce_fast import _core
from tests.conftest import assert_bitwise

FUNCS = ["cross_entropy", "cross_entropy_grad", "cross_entropy_and_grad"]
try:
    import ml_dtypes

    HALVES = [np.float16, ml_dtypes.bfloat16]
except ImportError:  # bfloat16 arrays need ml_dtypes
    HALVES = [np.float16]
DTYPES = [np.float32, np.float64, *HALVES]


def _general(monkeypatch, name, *args, **kw):
    """The same call with the fast paths switched off."""
    prev = _core.set_fast_paths(False)
    try:
        return getattr(ce_fast, name)(*args, **kw)
    finally:
        _core.set_fast_paths(prev)


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (5, 3), (33, 10), (7, 1000)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", FUNCS)
def test_fast_path_equals_general_path(monkeypatch, rng, dtype, shape, reduction, name):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    if shape[0] > 2:
        y[1] = -100  # the default ignore_index is honoured
    hits = _core.fast_path_hits()["categorical"]
    fast = _as_tuple(getattr(ce_fast, name)(x, y, reduction=reduction))
    assert _core.fast_path_hits()["categorical"] == hits + 1
    slow = _as_tuple(_general(monkeypatch, name, x, y, reduction=reduction))
    for f, s in zip(fast, slow, strict=True):
        assert_bitwise(f, s)
        assert f.dtype == s.dtype
    if name != "cross_entropy_grad":
        # the loss: float32 for 16-bit logits, as PyTorch
        loss_type = np.float32 if dtype in HALVES else dtype
        assert type(fast[0]) is (np.ndarray if reduction == "none" else loss_type)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_path_out_and_in_place(monkeypatch, rng, dtype):
    x = rng.standard_normal((9, 6)).astype(dtype)
    y = rng.integers(0, 6, 9)
    want = _general(monkeypatch, "cross_entropy_and_grad", x, y, grad_output=0.1)
    out = np.empty_like(x)
    loss, g = ce_fast.cross_entropy_and_grad(x, y, grad_output=0.1, out=out)
    assert g is out
    assert_bitwise(loss, want[0])
    assert_bitwise(g, want[1])
    xi = x.copy()
    loss, g = ce_fast.cross_entropy_and_grad(xi, y, grad_output=0.1, out=xi)
    assert g is xi
    assert_bitwise(g, want[1])


def _declines(x, y, out=None, want_grad=True):
    return _core.categorical_fast(x, y, 1, 0, 1.0, want_grad, out) is None


def test_fast_path_declines_what_it_does_not_handle(rng):
    x = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, 6)
    assert not _declines(x, y)
    assert _declines(x.astype(">f8"), y)  # byte-swapped
    assert _declines(np.asfortranarray(rng.standard_normal((6, 4))), y)
    assert _declines(x[:, ::2], y)  # strided
    assert _declines(x[None], y)  # 3-d
    assert not _declines(x.astype(np.float16), y)
    assert _declines(x.astype(np.float16), y, out=np.empty((6, 4), np.float32))  # a float32 out= of 16-bit
    assert _declines(x.astype(np.float16).view(np.uint16), y)  # (bfloat16 bits without ml_dtypes)
    assert _declines(x, y.astype(np.int32))
    assert _declines(x, y[:5])  # N mismatch
    assert _declines(x[:, :0], y)  # C == 0
    assert _declines(x.view(np.matrix), y)  # a subclass
    assert _declines(x.tolist(), y)
    assert _declines(x, np.array([0, 1, 2, 3, 4, 9]))  # a label out of range: the kernel refuses
    ro = np.empty_like(x)
    ro.flags.writeable = False
    assert _declines(x, y, out=ro)
    assert _declines(x, y, out=np.empty((6, 4), np.float32))
    assert _declines(x, y, out=np.empty((4, 6)))
    xr = x.copy()
    xr.flags.writeable = False
    assert _declines(xr, y, out=xr)
    assert not _declines(xr, y, want_grad=False)  # read-only logits are fine for the loss


def test_fast_path_declines_overlapping_out(rng):
    buf = rng.standard_normal(40)
    x = buf[:24].reshape(6, 4)
    assert _declines(x, rng.integers(0, 4, 6), out=buf[4:28].reshape(6, 4))
    raw = np.zeros(6 * 8, np.uint8)  # labels (all 0) and gradient in the same bytes
    y = raw.view(np.int64)
    assert not _declines(np.zeros((6, 1)), y, out=np.zeros((6, 1)))
    assert _declines(np.zeros((6, 1)), y, out=raw.view(np.float64).reshape(6, 1))


def test_fast_path_errors_come_from_the_general_path():
    x = np.zeros((3, 4))
    with pytest.raises(IndexError):
        ce_fast.cross_entropy_and_grad(x, np.array([0, 1, 7]))
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError):
        ce_fast.cross_entropy_and_grad(x, np.array([0, 1, 2]), out=ro)


FAMILY = ["logsumexp", "log_softmax", "softmax", "softmax_entropy"]
BINARY = [
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "binary_cross_entropy_with_logits_and_grad",
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1,), (7,), (5, 3), (2, 3, 40), (0, 3), (3, 0), (0,)])
@pytest.mark.parametrize("name", FAMILY + ["entropy"])
def test_family_fast_path_equals_general_path(monkeypatch, rng, dtype, shape, name):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    if name == "entropy":
        x = np.abs(x)
    if shape[-1] == 0 and name in ("entropy", "softmax_entropy"):  # no distribution: an error
        with pytest.raises(ValueError):
            getattr(ce_fast, name)(x)
        return
    hits = _core.fast_path_hits()["softmax_family"]
    fast = getattr(ce_fast, name)(x)
    assert _core.fast_path_hits()["softmax_family"] == hits + (x.size > 0)
    slow = _general(monkeypatch, name, x)
    assert_bitwise(fast, slow)
    assert type(fast) is type(slow)
    assert fast.dtype == slow.dtype


@pytest.mark.parametrize("dtype", [np.float32, *HALVES])
@pytest.mark.parametrize("name", ["log_softmax", "softmax"])
def test_family_fast_path_out(monkeypatch, rng, name, dtype):
    x = rng.standard_normal((6, 5)).astype(dtype)
    want = _general(monkeypatch, name, x)
    out = np.empty_like(x)
    assert getattr(ce_fast, name)(x, out=out) is out
    assert_bitwise(out, want)
    xi = x.copy()
    assert getattr(ce_fast, name)(xi, out=xi) is xi
    assert_bitwise(xi, want)
    buf = x.ravel().copy()
    part = np.concatenate([buf, buf])
    res = getattr(ce_fast, name)(part[:30].reshape(6, 5), out=part[5:35].reshape(6, 5))
    assert_bitwise(res, want)  # partial overlap: the general path snapshots the input


def test_family_fast_path_declines(rng):
    x = rng.standard_normal((4, 6))
    assert _core.softmax_family_fast(2, x, 0, None) is not None
    assert _core.softmax_family_fast(2, x.astype(">f8"), 0, None) is None
    assert _core.softmax_family_fast(2, x[:, ::2], 0, None) is None
    assert _core.softmax_family_fast(2, x.astype(np.int64), 0, None) is None
    assert _core.softmax_family_fast(2, np.float64(1.0), 0, None) is None
    assert _core.softmax_family_fast(3, -x, 0, None) is None  # entropy of negatives: an error
    assert _core.softmax_family_fast(2, x, 0, np.empty((4, 6), np.float32)) is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(1,), (9,), (4, 7), (2, 3, 5), (0, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", BINARY)
def test_binary_fast_path_equals_general_path(monkeypatch, rng, dtype, shape, reduction, name):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    t = rng.random(shape).astype(dtype)
    kw = {"reduction": reduction}
    if name != "binary_cross_entropy_with_logits":
        kw["grad_output"] = 0.1
    fast = _as_tuple(getattr(ce_fast, name)(x, t, **kw))
    slow = _as_tuple(_general(monkeypatch, name, x, t, **kw))
    for f, s in zip(fast, slow, strict=True):
        assert_bitwise(f, s)
        assert type(f) is type(s)


def test_binary_fast_path_out_and_declines(monkeypatch, rng):
    x = rng.standard_normal((5, 4)).astype(np.float32)
    t = rng.random((5, 4)).astype(np.float32)
    want = _general(monkeypatch, "binary_cross_entropy_with_logits_and_grad", x, t)
    out = np.empty_like(x)
    loss, g = ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, out=out)
    assert g is out
    assert_bitwise(loss, want[0])
    assert_bitwise(g, want[1])
    fast = _core.binary_logits_fast
    assert fast(x, t, 2, 0, 1.0, True, True, None) is not None
    assert fast(x, t.astype(np.float64), 2, 0, 1.0, True, True, None) is None
    assert fast(x, t[:, :2], 2, 0, 1.0, True, True, None) is None
    assert fast(x, t[0], 2, 0, 1.0, True, True, None) is None  # broadcasting: general path
    assert fast(x, t, 2, 0, 1.0, True, True, t) is None  # out is the target
