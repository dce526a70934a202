"""The softmax family and information measures: logsumexp, log_softmax,
softmax, entropy, softmax_entropy. The arithmetic is in src/softmax_impl.h."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
from numpy.typing import ArrayLike

from . import _core
from ._core import ce_sm_op, ce_status
from ._validation import (
    INPUT_NAMES,
    SoftmaxCall,
    as_array,
    as_logits,
    fast_threads,
    merge_axes,
    no_memory,
    output,
    result_dtype,
    softmax_call,
    strided_view,
    unaliased,
)

_DOC_AXIS = """
    axis : int or tuple of ints, default -1
        The axis to reduce / normalise over; a tuple of axes is taken as one
        flattened axis (as NumPy reductions and SciPy do). Any single axis
        is walked in place (no transposing copy) when the other axes
        collapse to uniform strides, which is always true for C-contiguous
        input, and so are consecutive axes of C-contiguous input; other
        layouts are copied once. NumPy arrays (memmaps and read-only ones included) and
        ``__dlpack__`` objects (CPU PyTorch tensors, non-contiguous ones too;
        one that requires grad is read through ``detach()``) are read in
        place; otherwise a copy is made only for another dtype, byte-swapped
        (non-native) or unaligned memory.
    num_threads : int, optional
        Threads for this call; default: the OpenMP default (honours
        ``OMP_NUM_THREADS`` and threadpoolctl). A request above
        max(default, processors) or ``OMP_THREAD_LIMIT`` is clamped (see
        :func:`ce_fast.build_info`). Results are bitwise identical for every
        thread count."""

_DOC_OUT = """
    out : ndarray, optional
        A writable C-contiguous array of ``x``'s shape and compute dtype (for
        16-bit ``x``: its own dtype or float32) that receives the result;
        ``out=x`` works in place."""

_DOC_DTYPES = """float32 and float64 are computed natively;
        float16 and bfloat16 are read in place and computed in float32
        (results of ``x``'s shape in ``x``'s dtype, rounded to nearest even
        -- float32 for bfloat16 without ml_dtypes -- reduced ones in
        float32); integer and bool in float64."""


def _run(op: ce_sm_op, x: Any, axis: Any, num_threads: Any, out: Any = None, keepdims: Any = False) -> Any:
    rowwise = op in (ce_sm_op.CE_SM_LOG_SOFTMAX, ce_sm_op.CE_SM_SOFTMAX)
    nt = fast_threads(num_threads)
    if type(axis) is int and axis == -1 and nt >= 0 and keepdims is False and (rowwise or out is None):
        # the common call, checked and run in C (None: take the general path)
        res = _core.softmax_family_fast(op, x, nt, out if rowwise else None)
        if res is not None:
            return res if rowwise else res[()]
    a = as_array(x, INPUT_NAMES.get(op, "x"))
    call = softmax_call(op, a, axis, num_threads, keepdims=keepdims, multi_axis=True)
    return family(call, as_logits(a, call.name), out)


def family(call: SoftmaxCall, a: np.ndarray, out: Any = None) -> Any:
    """Run a validated softmax-family call on ``a`` (of the compute dtype,
    or 16-bit, see as_logits): the general path of every front end. The class axes are merged
    into one (a view when they are consecutive, else a copy with them last).
    Returns the result (reduced results of 0-d as NumPy scalars)."""
    axes = call.axes
    consecutive = axes == tuple(range(axes[0], axes[-1] + 1))
    if call.rowwise:
        res = output(out, call.shape, result_dtype(a.dtype), also=call.dtype)
        a = unaliased(res, a, in_place=True)
        if a.size == 0:
            return res
        merged, ax = merge_axes(a, axes)
        target = res.reshape(merged.shape) if consecutive else np.empty(merged.shape, res.dtype)
    else:  # out: the reduced result's buffer (front ends that allocate their own)
        res = (
            np.empty(call.result_shape, call.dtype)
            if out is None
            else output(out, call.result_shape, call.dtype)
        )
        if a.size == 0:
            res.fill(-np.inf)  # logsumexp of an empty axis: log(0); empty otherwise
            return res[()]
        merged, ax = merge_axes(a, axes)
        target = res.reshape(-1)
    merged, outer, C, inner, xs = strided_view(merged, ax)
    status, pos, val = _core.softmax_family(
        op=call.op, x=merged, outer=outer, C=C, inner=inner, xs=xs, out=target, num_threads=call.num_threads
    )
    if status == ce_status.CE_ERR_DOMAIN:
        raise ValueError(f"{call.name} must be non-negative; found {val!r} at flat position {pos}")
    if status == ce_status.CE_ERR_NOMEM:
        raise no_memory()
    if call.rowwise and not consecutive:
        rest = [k for k in range(len(call.shape)) if k not in axes]
        moved = target.reshape([call.shape[k] for k in rest + list(axes)])
        res[...] = moved.transpose(np.argsort(rest + list(axes)))
    return res if call.rowwise else res[()]


def logsumexp(
    x: ArrayLike, *, axis: int | tuple[int, ...] = -1, keepdims: bool = False, num_threads: int | None = None
) -> Any:
    return _run(ce_sm_op.CE_SM_LOGSUMEXP, x, axis, num_threads, keepdims=keepdims)


def log_softmax(
    x: ArrayLike,
    *,
    axis: int | tuple[int, ...] = -1,
    out: np.ndarray | None = None,
    num_threads: int | None = None,
) -> np.ndarray:
    return cast(np.ndarray, _run(ce_sm_op.CE_SM_LOG_SOFTMAX, x, axis, num_threads, out))


def softmax(
    x: ArrayLike,
    *,
    axis: int | tuple[int, ...] = -1,
    out: np.ndarray | None = None,
    num_threads: int | None = None,
) -> np.ndarray:
    return cast(np.ndarray, _run(ce_sm_op.CE_SM_SOFTMAX, x, axis, num_threads, out))


def entropy(probs: ArrayLike, *, axis: int | tuple[int, ...] = -1, num_threads: int | None = None) -> Any:
    return _run(ce_sm_op.CE_SM_ENTROPY, probs, axis, num_threads)


def softmax_entropy(
    logits: ArrayLike, *, axis: int | tuple[int, ...] = -1, num_threads: int | None = None
) -> Any:
    return _run(ce_sm_op.CE_SM_SOFTMAX_ENTROPY, logits, axis, num_threads)


logsumexp.__doc__ = f"""``log(sum(exp(x), axis))``, computed stably (as ``scipy.special.logsumexp``).

    Parameters
    ----------
    x : array_like
        At least 1-d; {_DOC_DTYPES}{_DOC_AXIS}
    keepdims : bool, default False
        Keep the reduced axes as axes of length 1 (the result then
        broadcasts against ``x``).

    Returns
    -------
    lse : ndarray or numpy scalar
        ``x``'s shape without ``axis``, in the compute dtype (a NumPy scalar
        for a 0-d result, like ``np.sum``).

    Notes
    -----
    One read of ``x``: ``m = max x``, then ``lse = m + log1p(s')`` with
    ``s' = sum exp(x - m) - 1`` summed without the arg-max term (so nothing
    cancels). Edge rules as SciPy: NaN in the row gives NaN; otherwise any
    ``+inf`` gives ``+inf``; an all ``-inf`` row gives ``-inf``, and so does
    an empty ``axis`` (the log of an empty sum, as SciPy and PyTorch).

    Raises
    ------
    ValueError
        0-d input, a repeated axis.
    numpy.exceptions.AxisError
        ``axis`` out of range.

    Examples
    --------
    >>> import numpy as np, ce_fast
    >>> round(float(ce_fast.logsumexp(np.array([0.0, np.log(3.0)]))), 12)
    1.38629436112
    >>> ce_fast.logsumexp(np.array([[-np.inf, -np.inf], [1.0, np.inf]]))
    array([-inf,  inf])
"""

log_softmax.__doc__ = f"""``x - logsumexp(x, axis)``, computed stably (as ``scipy.special.log_softmax``).

    Parameters
    ----------
    x : array_like
        At least 1-d; {_DOC_DTYPES}{_DOC_AXIS}{_DOC_OUT}

    Returns
    -------
    y : ndarray
        ``x``'s shape and dtype (16-bit or compute, see above; ``out`` if
        given).

    Notes
    -----
    Evaluated as ``-((m - x) + log1p(s'))``, so entries near 0 keep their
    relative accuracy. A row with NaN or ``+inf`` anywhere, or all ``-inf``,
    is all NaN (SciPy gives NaN only at the ``+inf`` positions and ``-inf``
    elsewhere for ``+inf`` rows; we make the whole row NaN, as for the
    losses). ``-inf`` entries of a valid row give ``-inf``. One read of ``x``
    and one write of the result per row (the row stays in cache between the
    passes).

    An empty ``axis`` gives an empty result (as NumPy, SciPy and PyTorch).

    Raises
    ------
    ValueError
        0-d input, a repeated axis, bad ``out``.

    Examples
    --------
    >>> import numpy as np, ce_fast
    >>> ce_fast.log_softmax(np.array([1.0, 2.0, 3.0]))
    array([-2.40760596, -1.40760596, -0.40760596])
"""

softmax.__doc__ = f"""``exp(x - logsumexp(x, axis))`` (as ``scipy.special.softmax``).

    Parameters
    ----------
    x : array_like
        At least 1-d; {_DOC_DTYPES}{_DOC_AXIS}{_DOC_OUT}

    Returns
    -------
    p : ndarray
        ``x``'s shape and dtype (16-bit or compute, see above; ``out`` if
        given).

    Notes
    -----
    Each ``exp`` is computed once: stored into the output row, then scaled
    by ``1 / sum``. A row with NaN or ``+inf`` anywhere, or all ``-inf``, is
    all NaN (as SciPy); ``-inf`` entries of a valid row give exactly 0.

    An empty ``axis`` gives an empty result (as NumPy, SciPy and PyTorch).

    Raises
    ------
    ValueError
        0-d input, a repeated axis, bad ``out``.

    Examples
    --------
    >>> import numpy as np, ce_fast
    >>> x = np.array([[1.0, 1.0], [0.0, -np.inf]], np.float32)
    >>> ce_fast.softmax(x, out=x)
    array([[0.5, 0.5],
           [1. , 0. ]], dtype=float32)
"""

entropy.__doc__ = f"""Shannon entropy ``-sum(p log p)`` in nats along ``axis``, ``0 log 0 = 0``.

    Parameters
    ----------
    probs : array_like
        Non-negative values, at least 1-d; {_DOC_DTYPES}
        Not renormalised (unlike ``scipy.stats.entropy``; this is
        ``scipy.special.entr(p).sum(axis)``).{_DOC_AXIS}

    Returns
    -------
    h : ndarray or numpy scalar
        ``probs``' shape without ``axis`` (a NumPy scalar for 1-d input).

    Notes
    -----
    One pass over memory with a vectorised log (< 1 ulp); the range check
    runs in the same pass. NaN propagates to its row.

    Raises
    ------
    ValueError
        A negative probability (the message names the first offending flat
        C-order position and its value), 0-d input, an empty ``axis``.

    Examples
    --------
    >>> import numpy as np, ce_fast
    >>> float(ce_fast.entropy(np.array([0.5, 0.5, 0.0])))
    0.6931471805599453
"""

softmax_entropy.__doc__ = f"""Entropy of ``softmax(logits)`` along ``axis``, in one pass and stably.

    Parameters
    ----------
    logits : array_like
        At least 1-d; {_DOC_DTYPES}{_DOC_AXIS}

    Returns
    -------
    h : ndarray or numpy scalar
        ``logits``' shape without ``axis`` (a NumPy scalar for 1-d input).

    Notes
    -----
    ``H = lse - sum(p x)``, evaluated without cancellation as
    ``log1p(s') + sum_c p_c (m - x_c)`` (all terms non-negative), where terms
    with ``p_c == 0`` (e.g. ``x_c = -inf``) are 0; the softmax itself is
    never materialised. A row with NaN or ``+inf`` anywhere, or all
    ``-inf``, gives NaN.

    Raises
    ------
    ValueError
        0-d input or an empty ``axis``.

    Examples
    --------
    >>> import numpy as np, ce_fast
    >>> float(ce_fast.softmax_entropy(np.zeros(4)))  # log(4)
    1.3862943611198906
"""
