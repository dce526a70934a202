"""The tiny-call fast path (``_core.categorical_fast``, reached through
``ce_fast._categorical._fast``): where it applies it must give exactly what
the general path gives, and everywhere else it must decline (return None) so
that the general path validates, converts or raises."""

from __future__ import annotations

import numpy as np
import pytest

import ce_fast
from ce_fast import _categorical, _core
from tests.conftest import assert_bitwise

FUNCS = ["cross_entropy", "cross_entropy_grad", "cross_entropy_and_grad"]


def _general(monkeypatch, name, *args, **kw):
    """The same call with the fast path switched off."""
    with monkeypatch.context() as m:
        m.setattr(_categorical, "_fast", lambda *a: None)
        return getattr(ce_fast, name)(*args, **kw)


def _as_tuple(r):
    return r if isinstance(r, tuple) else (r,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(0, 3), (1, 1), (5, 3), (33, 10), (7, 1000)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", FUNCS)
def test_fast_path_equals_general_path(monkeypatch, rng, dtype, shape, reduction, name):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    y = rng.integers(0, shape[1], shape[0])
    if shape[0] > 2:
        y[1] = -100  # the default ignore_index is honoured
    fast = _as_tuple(getattr(ce_fast, name)(x, y, reduction=reduction))
    slow = _as_tuple(_general(monkeypatch, name, x, y, reduction=reduction))
    for f, s in zip(fast, slow, strict=True):
        assert_bitwise(f, s)
    if name != "cross_entropy_grad":
        assert type(fast[0]) is (np.ndarray if reduction == "none" else np.dtype(dtype).type)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_path_out_and_in_place(monkeypatch, rng, dtype):
    x = rng.standard_normal((9, 6)).astype(dtype)
    y = rng.integers(0, 6, 9)
    want = _general(monkeypatch, "cross_entropy_and_grad", x, y, grad_output=2.5)
    out = np.empty_like(x)
    loss, g = ce_fast.cross_entropy_and_grad(x, y, grad_output=2.5, out=out)
    assert g is out
    assert_bitwise(loss, want[0])
    assert_bitwise(g, want[1])
    xi = x.copy()
    loss, g = ce_fast.cross_entropy_and_grad(xi, y, grad_output=2.5, out=xi)
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
    assert _declines(x.astype(np.float16), y)
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
