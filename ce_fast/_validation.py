"""Argument checking and normalisation shared by every public function.

Everything here runs before a kernel is called, so a kernel only ever sees
arrays of its own dtype, in a layout it can walk, with valid options."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

REDUCTIONS = {"none": 0, "sum": 1, "mean": 2}


def as_array(a: Any, name: str) -> np.ndarray:
    """Any array-like as an ndarray, without a copy where possible.

    Objects exposing ``__dlpack__`` (CPU PyTorch tensors, ...) are taken
    through DLPack, which shares their memory, whatever their strides. A
    tensor that requires grad is read through its ``detach()`` (the same
    memory, outside the autograd graph: ce_fast returns plain arrays and
    records nothing for autograd)."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "__dlpack__"):
        try:
            return np.from_dlpack(a)
        except (TypeError, BufferError, RuntimeError, ValueError):
            # PyTorch refuses to export a tensor that requires grad: its
            # detach() is a view of the same memory that it does export.
            detach = getattr(a, "detach", None)
            if callable(detach):
                try:
                    return np.from_dlpack(detach())
                except (TypeError, BufferError, RuntimeError, ValueError, AttributeError):
                    pass
            # else fall back to __array__ below (e.g. a GPU tensor raises there)
    try:
        return np.asarray(a)
    except Exception as exc:  # ragged lists and other non-arrays
        raise TypeError(f"{name}: cannot convert {type(a).__name__} to an array ({exc})") from exc


def compute_dtype(dt: np.dtype, name: str) -> np.dtype:
    """The dtype a float input is computed in (API.md, dtypes)."""
    if dt.kind == "f":
        if dt.itemsize <= 4:
            return np.dtype(np.float32)
        if dt.itemsize == 8:
            return np.dtype(np.float64)
        raise TypeError(f"{name}: dtype {dt} is not supported (use float32 or float64)")
    if dt.kind in "iub":
        return np.dtype(np.float64)
    raise TypeError(f"{name}: dtype {dt} is not supported; expected a real floating, integer or bool array")


def as_float(a: Any, name: str, dtype: np.dtype | None = None) -> np.ndarray:
    """A native-endian float32/float64 array (``dtype`` forces which); keeps
    the input's memory when it already has that dtype."""
    arr = as_array(a, name)
    target = compute_dtype(arr.dtype, name) if dtype is None else dtype
    if dtype is not None and arr.dtype.kind not in "fiub":
        raise TypeError(f"{name}: dtype {arr.dtype} is not supported; expected a real number array")
    if arr.dtype != target or not arr.dtype.isnative:
        arr = arr.astype(target)
    return arr


def normalize_axis(axis: Any, ndim: int, name: str = "logits") -> int:
    if ndim == 0:
        raise ValueError(f"{name}: a 0-d array has no class axis")
    if not isinstance(axis, (numbers.Integral, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis must be an integer, got {axis!r}")
    ax = int(axis)
    if not -ndim <= ax < ndim:
        raise np.exceptions.AxisError(ax, ndim)
    return ax % ndim


def reduction_code(reduction: Any) -> int:
    try:
        return REDUCTIONS[reduction]
    except (KeyError, TypeError):
        raise ValueError(
            f"reduction must be one of 'mean', 'sum', 'none' (case-sensitive), got {reduction!r}"
        ) from None


def thread_count(num_threads: Any) -> int:
    """0 means "the OpenMP default, resolved at call time"."""
    if num_threads is None:
        return 0
    if isinstance(num_threads, bool) or not isinstance(num_threads, (numbers.Integral, np.integer)):
        raise ValueError(f"num_threads must be None or a positive integer, got {num_threads!r}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be None or a positive integer, got {num_threads!r}")
    return min(int(num_threads), 1 << 16)


def fast_threads(num_threads: Any) -> int:
    """thread_count() for the fast paths, which take only the common
    spellings (None, a positive int); -1 leaves the call to the general path."""
    if num_threads is None:
        return 0
    if type(num_threads) is int and num_threads > 0:
        return min(num_threads, 1 << 16)
    return -1


def fast_scale(grad_output: Any) -> float | None:
    """A scalar grad_output for the fast paths: 1.0 for None, the value of a
    plain float or (exactly representable) int; None leaves the call to the
    general path."""
    if grad_output is None:
        return 1.0
    t = type(grad_output)
    if t is float or (t is int and -(1 << 53) <= grad_output <= 1 << 53):
        return float(grad_output)
    return None


def finite_option(value: Any, name: str, lo: float, hi: float, lo_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    ok = (v > lo if lo_open else v >= lo) and v <= hi
    if math.isnan(v) or not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}]"
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return v


def strided_view(a: np.ndarray, axis: int) -> tuple[np.ndarray, int, int, int, tuple[int, int, int]]:
    """Describe ``a`` as (outer, C, inner) with element strides.

    Returns (array, outer, C, inner, (s_outer, s_class, s_inner)). The axes
    before ``axis`` must collapse into one strided dimension, and so must the
    axes after it; otherwise (and for unaligned or byte-swapped memory) a
    C-contiguous copy is made — the only case in which the input is copied."""
    shape = a.shape
    outer = math.prod(shape[:axis])
    C = shape[axis]
    inner = math.prod(shape[axis + 1 :])
    if a.size and a.flags.aligned:
        item = a.itemsize
        so = _collapse(shape[:axis], a.strides[:axis], item)
        si = _collapse(shape[axis + 1 :], a.strides[axis + 1 :], item)
        sc = a.strides[axis]
        if so is not None and si is not None and sc % item == 0:
            return a, outer, C, inner, (so, sc // item, si)
    a = np.array(a, order="C")  # a fresh copy: contiguous *and* aligned
    return a, outer, C, inner, (C * inner, inner, 1)


def _collapse(shape: tuple[int, ...], strides: tuple[int, ...], item: int) -> int | None:
    """Element stride of the dims (shape, strides) seen as one flat dimension,
    or None if they are not one uniform stride."""
    dims = [(n, s) for n, s in zip(shape, strides) if n != 1]
    if not dims:
        return 1
    for (_n_hi, s_hi), (n_lo, s_lo) in zip(dims, dims[1:]):
        if s_hi != s_lo * n_lo:
            return None
    s = dims[-1][1]
    return s // item if s % item == 0 else None


def check_out(out: Any, shape: tuple[int, ...], dtype: np.dtype, name: str = "out") -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"{name} must have shape {shape} and dtype {dtype}, got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.c_contiguous or not out.flags.writeable or not out.flags.aligned:
        raise ValueError(f"{name} must be a writable, aligned, C-contiguous array")
    return out


def same_buffer(a: np.ndarray, b: np.ndarray) -> bool:
    """True if a and b are exactly the same elements in the same order."""
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
    )


def per_sample(value: Any, shape: tuple[int, ...], dtype: np.dtype, name: str) -> np.ndarray:
    """A per-sample array (sample_weight, grad_output): broadcast to the
    per-sample shape, contiguous, in the compute dtype."""
    arr = as_float(value, name, dtype)
    try:
        arr = np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(
            f"{name} must be broadcastable to the per-sample shape {shape}, got shape {arr.shape}"
        ) from None
    return np.ascontiguousarray(arr)


def broadcast_operand(
    value: Any, name: str, shape: tuple[int, ...], dtype: np.dtype, what: str
) -> np.ndarray:
    """``value`` in the compute dtype, broadcast (a zero-stride view, never a
    copy of the broadcast) to ``shape``; aligned, native-endian memory."""
    arr = as_float(value, name, dtype)
    if not arr.flags.aligned:
        arr = arr.copy()
    try:
        return np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(
            f"{name} of shape {arr.shape} is not broadcastable to the {what} shape {shape}"
        ) from None


def flat_2d(
    shape: tuple[int, ...], arrays: list[np.ndarray]
) -> tuple[int, int, list[np.ndarray], list[tuple[int, int]]]:
    """View arrays of one ``shape`` (broadcast views allowed) as (rows, cols).

    Chooses the split ``rows = prod(shape[:k])``, ``cols = prod(shape[k:])``
    with the fewest elements to copy (ties: the largest ``cols``) such that
    each array has one uniform element stride over the row dims and one over
    the column dims. Arrays that fit no such split (rare: e.g. a broadcast of
    shape ``(A, 1, C)`` against ``(A, B, C)``) are copied C-contiguously.
    Returns (rows, cols, arrays, [(row_stride, col_stride), ...])."""
    ndim = len(shape)
    best: tuple[int, int, list[tuple[int, int] | None]] | None = None
    for k in range(ndim + 1):
        strides: list[tuple[int, int] | None] = []
        cost = 0
        for a in arrays:
            item = a.itemsize
            rs = _collapse(shape[:k], a.strides[:k], item)
            cs = _collapse(shape[k:], a.strides[k:], item)
            if rs is None or cs is None:
                cost += a.size
                strides.append(None)
            else:
                strides.append((rs, cs))
        if best is None or cost < best[0]:
            best = (cost, k, strides)
        if cost == 0:
            break
    assert best is not None  # range(ndim + 1) is never empty
    _, k, strides = best
    rows = math.prod(shape[:k])
    cols = math.prod(shape[k:])
    out_arrays: list[np.ndarray] = []
    out_strides: list[tuple[int, int]] = []
    for a, st in zip(arrays, strides):
        if st is None:
            a = np.ascontiguousarray(a)
            st = (cols, 1)
        out_arrays.append(a)
        out_strides.append(st)
    return rows, cols, out_arrays, out_strides
