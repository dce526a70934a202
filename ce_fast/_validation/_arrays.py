"""Arrays in: conversion (NumPy, DLPack, anything ``np.asarray`` takes), the
dtype rules, layouts the kernels walk in place, and ``out=`` buffers with
the aliasing contract."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from .. import _core, _dlpack

try:
    import ml_dtypes

    BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
    _core.register_bfloat16(BFLOAT16)  # the fast paths take it
except ImportError:  # optional: bfloat16 memory is then typed as tagged uint16
    BFLOAT16 = np.dtype(np.uint16, metadata={"ce_fast": "bfloat16"})


def is_bfloat16(dt: np.dtype) -> bool:
    """bfloat16 elements: ml_dtypes.bfloat16, or (without ml_dtypes) the
    tagged uint16 that DLPack import gives them."""
    tag: dict[str, str] = dict(BFLOAT16.metadata or {})
    return bool(dt == BFLOAT16) and dict(dt.metadata or {}).get("ce_fast") == tag.get("ce_fast")


def is_half(dt: np.dtype) -> bool:
    """A 16-bit float: float16, or bfloat16 (either representation)."""
    return (dt.kind == "f" and dt.itemsize == 2) or is_bfloat16(dt)  # any byte order


def result_dtype(dt: np.dtype) -> np.dtype:
    """The dtype of the results of the logits' shape (gradient, softmax,
    log_softmax) for logits of dtype ``dt`` as a kernel reads them (see
    as_logits): ``dt`` itself (PyTorch's rule: 16-bit in, 16-bit out), except
    bfloat16 without ml_dtypes, which NumPy cannot name: float32."""
    if is_bfloat16(dt) and BFLOAT16.metadata:
        return np.dtype(np.float32)
    return dt


def as_logits(a: Any, name: str) -> np.ndarray:
    """The input of a kernel with 16-bit instantiations (categorical, the
    softmax family): a float16 or bfloat16 array as it is (read in place;
    float16 in native byte order), anything else as :func:`as_float`. The
    kernels compute 16-bit inputs in float32."""
    arr = as_array(a, name)
    if is_half(arr.dtype):
        return arr if arr.dtype.isnative else arr.astype(arr.dtype.newbyteorder("="))
    return as_float(arr, name)


def as_array(a: Any, name: str) -> np.ndarray:
    """Any array-like as an ndarray, without a copy where possible.

    Objects exposing ``__dlpack__`` (CPU PyTorch tensors, JAX arrays, ...)
    are imported by ce_fast's own DLPack reader (ce_fast._dlpack: version,
    device, read-only flag and dtype checked; bfloat16 included, which NumPy
    cannot import), sharing their memory whatever their strides. PyTorch's
    lazy views are resolved first: a tensor with the negative or conjugate
    bit set holds ``-v`` / ``conj(v)`` in memory as ``v`` and exports the
    memory without the bit, so it is materialised (``resolve_neg()`` /
    ``resolve_conj()``, a copy); a tensor that requires grad is read through
    ``detach()`` (the same memory)."""
    if isinstance(a, np.ndarray):
        return a
    if hasattr(a, "__dlpack__"):
        a = _resolved_view(a)
        try:
            return _dlpack.from_dlpack(a, BFLOAT16)
        except (BufferError, RuntimeError, TypeError, ValueError) as exc:
            problem = exc  # e.g. a GPU tensor; np.asarray below may still read it
    else:
        problem = None
    try:
        arr = np.asarray(a)
    except Exception as exc:  # ragged lists, device memory and other non-arrays
        why = problem if problem is not None else exc
        raise TypeError(f"{name}: cannot convert {type(a).__name__} to an array ({why})") from exc
    if problem is not None and arr.dtype == object:  # NumPy only boxed it
        raise TypeError(f"{name}: cannot read {type(a).__name__} through DLPack ({problem})")
    return arr


def _resolved_view(a: Any) -> Any:
    """A DLPack producer whose exported memory means what it says."""
    for flag, resolve in (("is_neg", "resolve_neg"), ("is_conj", "resolve_conj")):
        test = getattr(a, flag, None)
        if callable(test) and test():
            a = getattr(a, resolve)()
    if getattr(a, "requires_grad", False) and callable(getattr(a, "detach", None)):
        a = a.detach()
    return a


def compute_dtype(dt: np.dtype, name: str) -> np.dtype:
    """The dtype an operand of dtype ``dt`` is computed in: float32 for
    float16/float32, float64 for float64, integers and bool. Everything else
    (complex, floats wider than 64 bits, strings, objects, dates) is a
    TypeError, the same on every path."""
    if dt.kind == "f":
        if dt.itemsize <= 4:
            return np.dtype(np.float32)
        if dt.itemsize == 8:
            return np.dtype(np.float64)
        raise TypeError(
            f"{name}: dtype {dt} is not supported (float32 and float64 are computed natively; "
            "convert wider floats to float64 yourself)"
        )
    if dt.kind in "iub" and not is_bfloat16(dt):
        return np.dtype(np.float64)
    if is_bfloat16(dt):
        return np.dtype(np.float32)
    raise TypeError(f"{name}: dtype {dt} is not supported; expected a real floating, integer or bool array")


def as_float(a: Any, name: str, dtype: np.dtype | None = None) -> np.ndarray:
    """A native-endian float32/float64 array, in ``dtype`` when given (an
    operand of another array's compute dtype), else in its own compute
    dtype; the input's memory is kept when it already has that dtype."""
    arr = as_array(a, name)
    target = compute_dtype(arr.dtype, name)
    if dtype is not None:
        target = dtype
    if is_bfloat16(arr.dtype):
        wide = np.empty(arr.shape, np.float32)
        widen(arr, wide)
        return wide.astype(target, copy=False)
    if arr.dtype != target or not arr.dtype.isnative:
        arr = arr.astype(target)
    return arr


# float16's smallest normal; adding 0.75 (whose float32 unit is 2**-24,
# float16's subnormal unit) rounds anything smaller to float16's subnormal grid
_F16_NORMAL, _F16_GRID = np.float32(2.0**-14), np.float32(0.75)
_NARROW_BLOCK = 1 << 16  # elements: the temporaries stay in cache


def narrow(src: np.ndarray, out: np.ndarray) -> None:
    """The float32 array ``src`` rounded to nearest even into ``out`` (of
    its shape; float16, bfloat16 or float32), a block at a time. For float16
    the values below its normal range are rounded in float32 first (to the
    same value, exactly as the conversion rounds them): NumPy converts an
    inexact float16 subnormal by raising the underflow flag through denormal
    arithmetic, ~80 ns an element (the gradients of a large batch's "mean"
    loss are mostly there), an exact one at the normal speed."""
    if out.dtype != np.float16:
        np.copyto(out, src)
        return
    s, o = src.reshape(-1), out.reshape(-1)
    for i in range(0, s.size, _NARROW_BLOCK):
        v = s[i : i + _NARROW_BLOCK]
        on_grid = np.copysign((v + _F16_GRID) - _F16_GRID, v)  # the sign of -0 kept
        np.copyto(o[i : i + _NARROW_BLOCK], np.where(np.abs(v) < _F16_NORMAL, on_grid, v))


def widen(src: np.ndarray, out: np.ndarray) -> None:
    """16-bit floats (float16, or bfloat16 in either representation) into the
    float32 array ``out`` of the same shape, exactly: a bfloat16 is the upper
    half of a float32, so its bits are shifted straight into ``out``."""
    if is_bfloat16(src.dtype):
        np.left_shift(src.view(np.uint16), 16, out=out.view(np.uint32), dtype=np.uint32)
    else:
        np.copyto(out, src)


def normalize_axis(axis: Any, ndim: int, name: str) -> int:
    if ndim == 0:
        raise ValueError(f"{name}: a 0-d array has no class axis")
    if not isinstance(axis, (numbers.Integral, np.integer)) or isinstance(axis, (bool, np.bool_)):
        raise TypeError(f"axis must be an integer, got {axis!r}")
    ax = int(axis)
    if not -ndim <= ax < ndim:
        raise np.exceptions.AxisError(ax, ndim)
    return ax % ndim


def normalize_axes(axis: Any, ndim: int, name: str) -> tuple[int, ...]:
    """An int or a non-empty tuple of ints as sorted, distinct, non-negative
    axes (each checked as normalize_axis does)."""
    if not isinstance(axis, tuple):
        return (normalize_axis(axis, ndim, name),)
    if not axis:
        raise ValueError(f"{name}: axis=() names no class axis")
    axes = tuple(normalize_axis(a, ndim, name) for a in axis)
    if len(set(axes)) != len(axes):
        raise ValueError("duplicate value in 'axis'")
    return tuple(sorted(axes))


def merge_axes(a: np.ndarray, axes: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """``a`` with the (sorted) ``axes`` as one axis, in C order of their
    elements: (array, its axis). A view when the axes are consecutive and
    their strides allow it; otherwise the other axes keep their order and the
    merged axis comes last, in a copy."""
    if len(axes) == 1:
        return a, axes[0]
    shape = a.shape
    size = math.prod(shape[k] for k in axes)
    k0, k1 = axes[0], axes[-1] + 1
    if axes == tuple(range(k0, k1)):
        return a.reshape(shape[:k0] + (size,) + shape[k1:]), k0
    rest = [k for k in range(a.ndim) if k not in axes]
    moved = a.transpose(rest + list(axes))
    return moved.reshape(moved.shape[: len(rest)] + (size,)), len(rest)


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


def broadcast_operand(
    value: Any, name: str, shape: tuple[int, ...], dtype: np.dtype, what: str
) -> np.ndarray:
    """``value`` in the compute dtype, broadcast (a zero-stride view, never a
    copy of the broadcast) to ``shape``; aligned, native-endian memory."""
    arr = as_float(value, name, dtype)
    if not arr.flags.aligned:
        arr = arr.copy()
    check_broadcast(arr.shape, shape, name, what)
    return np.broadcast_to(arr, shape)


def check_broadcast(src: tuple[int, ...], dst: tuple[int, ...], name: str, what: str) -> None:
    """ValueError unless an operand of shape ``src`` broadcasts to ``dst``
    (one way: the result has shape ``dst``)."""
    try:
        ok = np.broadcast_shapes(tuple(src), tuple(dst)) == tuple(dst)
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"{name} of shape {tuple(src)} is not broadcastable to the {what} shape {tuple(dst)}"
        )


def per_sample(value: Any, shape: tuple[int, ...], dtype: np.dtype, name: str) -> np.ndarray:
    """A per-sample operand (sample_weight, grad_output): broadcast to the
    per-sample shape, contiguous, in the compute dtype."""
    return np.ascontiguousarray(broadcast_operand(value, name, shape, dtype, "per-sample"))


def upstream(
    grad_output: Any, reduced: bool, shape: tuple[int, ...], dtype: np.dtype, what: str
) -> tuple[np.ndarray | None, float]:
    """grad_output as (an array broadcast to ``shape`` or None, a scalar):
    a scalar with a reduced loss; a scalar or an array broadcastable to the
    ``what`` loss shape with reduction "none"."""
    if grad_output is None:
        return None, 1.0
    g = as_float(grad_output, "grad_output", dtype)
    if upstream_is_scalar(g, reduced):
        return None, float(g)
    return broadcast_operand(g, "grad_output", shape, dtype, what), 1.0


def upstream_is_scalar(grad_output: Any, reduced: bool) -> bool:
    """Whether grad_output (anything with ``.shape``) is a scalar; an array
    with a reduced loss is a ValueError."""
    shape = tuple(grad_output.shape)
    if shape and reduced:
        raise ValueError(f"grad_output must be a scalar with a reduced loss, got shape {shape}")
    return not shape


def output(
    out: Any, shape: tuple[int, ...], dtype: np.dtype, name: str = "out", also: np.dtype | None = None
) -> np.ndarray:
    """A fresh result array, or the caller's ``out=`` after checking it
    (of ``dtype``, or of ``also`` when given: the compute dtype of 16-bit
    inputs)."""
    if out is None:
        return np.empty(shape, dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"{name} must be a numpy.ndarray, got {type(out).__name__}")
    ok = out.dtype == dtype and (not is_bfloat16(dtype) or is_bfloat16(out.dtype))
    if out.shape != shape or not (ok or (also is not None and out.dtype == also)):
        want = f"{dtype}" if also is None or also == dtype else f"{dtype} or {also}"
        raise ValueError(
            f"{name} must have shape {shape} and dtype {want}, got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.c_contiguous or not out.flags.writeable or not out.flags.aligned:
        raise ValueError(f"{name} must be a writable, aligned, C-contiguous array")
    return out


def unaliased(out: np.ndarray, operand: Any, in_place: bool = False) -> Any:
    """The aliasing contract of every ``out=``: an operand that shares memory
    with ``out`` would be overwritten while the kernel still reads it, so it
    is replaced by a snapshot (a copy) and the result is the unaliased one.
    ``in_place`` operands (the input a kernel may overwrite element by
    element, e.g. ``out=logits``) are kept when they are exactly ``out``'s
    elements in ``out``'s order, which the kernels support at no cost."""
    if operand is None or not np.may_share_memory(out, operand):
        return operand
    if in_place and _same_elements(out, operand):
        return operand
    return operand.copy()


def _same_elements(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.__array_interface__["data"][0] == b.__array_interface__["data"][0]
        and a.shape == b.shape
        and a.strides == b.strides
        and a.dtype == b.dtype
    )
