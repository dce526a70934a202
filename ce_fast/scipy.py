"""Drop-in replacements for ``scipy.special.logsumexp``, ``softmax``,
``log_softmax`` and ``scipy.stats.entropy``, with the semantics of SciPy
1.17.1 (signatures, defaults, dtypes, shapes, special values, errors) and
ce_fast's kernels underneath: change the import, keep the code::

    from ce_fast.scipy import logsumexp, softmax, log_softmax, entropy

SciPy itself is optional. The kernels take NumPy input (arrays, scalars,
sequences, anything ``np.asarray`` takes) of real dtype; the rest --
complex or object data, ``numpy.ma`` masked arrays, the arrays of other
array-API namespaces (PyTorch, JAX, CuPy, Dask, array-api-strict), and the
few integer dtypes on which SciPy's own arithmetic wraps around -- is handed
to SciPy when it is installed, and is a ``TypeError`` otherwise. So the
results are SciPy's wherever the kernels do not apply.

What differs from SciPy, by design: the kernels round once at the end and
keep their sums in double, so results are at least as accurate as SciPy's
(a float16 input is computed in float32 and rounded to float16); NumPy's
floating-point ``RuntimeWarning`` s (overflow, invalid value) that SciPy's
NumPy compositions emit on infinite or NaN input are not emitted."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from . import _core
from ._core import ce_sm_op, ce_status
from ._softmax import family
from ._validation import (
    as_float,
    merge_axes,
    no_memory,
    prob_call,
    softmax_call,
    strided_view,
)
from ._validation import (
    nan_policy as check_nan_policy,
)

SCIPY_VERSION = "1.17.1"  # the release whose semantics these follow

__all__ = ["SCIPY_VERSION", "entropy", "log_softmax", "logsumexp", "path_counts", "softmax"]

# where SciPy keeps the originals (its public names may be replaced by these)
_ORIGINALS = {
    "logsumexp": ("scipy.special._logsumexp", "logsumexp"),
    "softmax": ("scipy.special._logsumexp", "softmax"),
    "log_softmax": ("scipy.special._logsumexp", "log_softmax"),
    "entropy": ("scipy.stats._entropy", "entropy"),
}


_PATHS: dict[tuple[str, str], int] = {}


def path_counts() -> dict[tuple[str, str], int]:
    """How many calls of each drop-in ran on ce_fast's kernels ("kernel")
    or were handed to SciPy ("scipy") in this process: a test hook that
    shows which path the peers' tests exercised."""
    return dict(_PATHS)


def _count(name: str, path: str) -> None:
    _PATHS[name, path] = _PATHS.get((name, path), 0) + 1


def original(name: str) -> Any:
    """SciPy's own function ``name`` (ImportError without SciPy)."""
    import importlib

    module, attr = _ORIGINALS[name]
    return getattr(importlib.import_module(module), attr)


def _delegate(name: str, why: str, *args: Any, **kwargs: Any) -> Any:
    _count(name, "scipy")
    try:
        fn = original(name)
    except ImportError:
        raise TypeError(
            f"ce_fast.scipy.{name}: {why}, which ce_fast's kernels do not compute; "
            "SciPy (not installed) would handle it"
        ) from None
    return fn(*args, **kwargs)


def _foreign(x: Any) -> str | None:
    """Why ``x`` is not for the kernels as an input array, or None."""
    if isinstance(x, np.ma.MaskedArray):
        return "a numpy.ma masked array"
    if isinstance(x, (np.ndarray, np.generic, numbers.Number, list, tuple)) or x is None:
        return None
    if hasattr(x, "__array_namespace__"):
        return f"an array of another array-API namespace ({type(x).__module__}.{type(x).__name__})"
    return None


# the input dtypes SciPy's arithmetic treats as the kernels do: real floats
# (float16 computed in float32), and integers whose exp is float64 and whose
# subtraction does not wrap (SciPy's softmax of uint8 computes x - max(x)
# modulo 256 and exp in float16: that stays SciPy's)
def _kernel_dtype(dt: np.dtype, ints: bool) -> bool:
    if dt.kind == "f":
        return dt.itemsize <= 8
    return ints and dt.kind == "i" and dt.itemsize >= 4


def _asarray(x: Any) -> Any:
    """SciPy's conversion in ``xp_promote``: iterables to arrays, scalars kept
    (so a Python float is a weak scalar in the dtype rules)."""
    return np.asarray(x) if np.iterable(x) else x


def _result(res: np.ndarray, dtype: np.dtype) -> Any:
    """A result in SciPy's dtype, 0-d as a NumPy scalar."""
    if res.dtype != dtype:
        res = res.astype(dtype)
    return res[()]


def _axes(axis: Any, ndim: int, source: bool = False) -> tuple[int, ...]:
    """SciPy's axis handling, with NumPy's errors (AxisError, TypeError,
    repeated axes), as SciPy's NumPy calls raise them."""
    from numpy.lib.array_utils import normalize_axis_tuple

    if source:  # np.moveaxis(x, axis, ...) in SciPy's stats decorator
        return tuple(sorted(normalize_axis_tuple(axis, ndim, "source")))
    axes = normalize_axis_tuple(axis, ndim, allow_duplicate=True)
    if len(set(axes)) != len(axes):  # NumPy's reductions' message
        raise ValueError("duplicate value in 'axis'")
    return tuple(sorted(axes))


# ---------------------------------------------------------------------------
# scipy.special
# ---------------------------------------------------------------------------


def logsumexp(
    a: ArrayLike,
    axis: int | tuple[int, ...] | None = None,
    b: ArrayLike | None = None,
    keepdims: bool = False,
    return_sign: bool = False,
) -> Any:
    why = _foreign(a) or _foreign(b)
    if why is None:
        a1, b1 = _asarray(a), (None if b is None else _asarray(b))
        dtype = np.result_type(*[v for v in (a1, b1) if v is not None], 1.0)
        if not _kernel_dtype(dtype, False):
            why = f"dtype {dtype}"
    if why is not None:
        return _delegate("logsumexp", why, a, axis=axis, b=b, keepdims=keepdims, return_sign=return_sign)
    _count("logsumexp", "kernel")
    arrays = [np.asarray(v, dtype=dtype) for v in (a1, b1) if v is not None]
    try:
        shape = np.broadcast_shapes(*(v.shape for v in arrays))
    except ValueError as e:
        raise ValueError("Array shapes are incompatible for broadcasting.") from e
    arrays = [np.atleast_1d(np.broadcast_to(v, shape)) for v in arrays]
    x = arrays[0]
    w = arrays[1] if b is not None else None
    axes = _axes(tuple(range(x.ndim)) if axis is None else axis, x.ndim)
    call = softmax_call(ce_sm_op.CE_SM_LOGSUMEXP, x, axes, None, keepdims=bool(keepdims), multi_axis=True)
    if x.size == 0:  # SciPy: -inf with the sign of -inf
        out = np.full(call.result_shape, -np.inf, dtype)
        return (_result(out, dtype), _result(-np.ones_like(out), dtype)) if return_sign else out[()]
    xc = as_float(x, "a", call.dtype)
    if w is None:
        out = np.asarray(family(call, xc))
        if not return_sign:
            return _result(out, dtype)
        with np.errstate(invalid="ignore"):
            sign = np.where(out == -np.inf, 0.0, 1.0).astype(out.dtype)
        sign[np.isnan(out)] = np.nan
        return _result(out, dtype), _result(sign, dtype)
    wout, wsign = _weighted(call, xc, as_float(w, "b", call.dtype), return_sign)
    if wsign is None:
        return _result(wout, dtype)
    return _result(wout, dtype), _result(wsign, dtype)


def _weighted(
    call: Any, a: np.ndarray, b: np.ndarray, return_sign: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """The b-weighted kernel over the call's axes (a and b of one shape)."""
    out = np.empty(call.result_shape, call.dtype)
    sign = np.empty(call.result_shape, call.dtype) if return_sign else None
    am, ax = merge_axes(a, call.axes)
    bm, _ = merge_axes(b, call.axes)
    am, outer, C, inner, xs = strided_view(am, ax)
    bm, _, _, _, bs = strided_view(bm, ax)
    status = _core.weighted_logsumexp(
        a=am, b=bm, outer=outer, C=C, inner=inner, as_=xs, bs=bs, out=out.reshape(-1),
        sign=None if sign is None else sign.reshape(-1),
    )  # fmt: skip
    if status == ce_status.CE_ERR_NOMEM:  # pragma: no cover - the kernel allocates nothing
        raise no_memory()
    return out, sign


def _softmax_input(name: str, x: Any, axis: Any) -> tuple[Any, Any, Any] | Any:
    """(x as an array, SoftmaxCall, SciPy's result dtype), or the delegated
    result."""
    why = _foreign(x)
    if why is None:
        arr = np.asarray(x)
        if not _kernel_dtype(arr.dtype, True):
            why = f"dtype {arr.dtype}"
    if why is not None:
        return None, None, _delegate(name, why, x, axis=axis)
    _count(name, "kernel")
    dtype = np.result_type(arr.dtype, 1.0) if arr.dtype.kind == "f" else np.dtype(np.float64)
    x1 = np.atleast_1d(arr)
    if axis is None:
        axes = tuple(range(x1.ndim))
    else:
        axes = _axes(axis, arr.ndim)  # a 0-d x has no axis 0, as in SciPy
    op = ce_sm_op.CE_SM_SOFTMAX if name == "softmax" else ce_sm_op.CE_SM_LOG_SOFTMAX
    call = softmax_call(op, x1, axes, None, multi_axis=True)
    if call.n_classes == 0:  # SciPy takes the max over the axis first
        raise ValueError("zero-size array to reduction operation maximum which has no identity")
    return x1, call, dtype


def softmax(x: ArrayLike, axis: int | tuple[int, ...] | None = None) -> Any:
    x1, call, dtype = _softmax_input("softmax", x, axis)
    if call is None:
        return dtype
    res = family(call, as_float(x1, "x", call.dtype))
    return _result(res.reshape(np.shape(x)), dtype)


def log_softmax(x: ArrayLike, axis: int | tuple[int, ...] | None = None) -> Any:
    x1, call, dtype = _softmax_input("log_softmax", x, axis)
    if call is None:
        return dtype
    xc = as_float(x1, "x", call.dtype)
    res = family(call, xc)
    _scipy_bad_rows(res, xc, call.axes)
    return _result(res.reshape(np.shape(x)), dtype)


def _scipy_bad_rows(res: np.ndarray, x: np.ndarray, axes: tuple[int, ...]) -> None:
    """SciPy's log_softmax of a row holding +inf (and no NaN) is NaN at the
    +inf positions and -inf elsewhere; the kernel makes such rows all NaN,
    as it does rows with NaN or all -inf (where SciPy agrees). The kernel's
    bad rows are those whose first element is NaN: only they are read
    again."""
    k = len(axes)
    last = tuple(range(res.ndim - k, res.ndim))
    rm = np.moveaxis(res, axes, last)[np.newaxis]  # views: rows are leading indices, >= 1 of them
    first = rm[(...,) + (0,) * k]
    bad = np.nonzero(np.isnan(first))
    if not bad[0].size:
        return
    rows = np.moveaxis(x, axes, last)[np.newaxis][bad]
    flat = rows.reshape(rows.shape[0], -1)
    pinf = np.isposinf(flat)
    fixed = np.where(pinf, np.nan, -np.inf)
    fixed[np.isnan(flat).any(axis=1) | ~pinf.any(axis=1)] = np.nan
    rm[bad] = fixed.reshape(rows.shape)


# ---------------------------------------------------------------------------
# scipy.stats.entropy
# ---------------------------------------------------------------------------


def entropy(
    pk: ArrayLike,
    qk: ArrayLike | None = None,
    base: float | None = None,
    axis: int | tuple[int, ...] | None = 0,
    *,
    nan_policy: str = "propagate",
    keepdims: bool = False,
) -> Any:
    why = _foreign(pk) or _foreign(qk)
    if why is None:
        p1, q1 = _asarray(pk), (None if qk is None else _asarray(qk))
        dtype = np.result_type(*[v for v in (p1, q1) if v is not None])
        if dtype.kind not in "biuf" or dtype.itemsize > 8 or dtype == np.float16:
            why = f"dtype {dtype}"
    if why is not None:
        return _delegate("entropy", why, pk, qk, base, axis, nan_policy=nan_policy, keepdims=keepdims)
    _count("entropy", "kernel")
    samples = [np.atleast_1d(np.asarray(v, dtype=dtype)) for v in (p1, q1) if v is not None]
    if axis is None:
        reduced: tuple[int, ...] = tuple(range(max(v.ndim for v in samples)))
        samples = [v.ravel() for v in samples]
        axes: tuple[int, ...] = (0,)
    else:
        reduced = axis if isinstance(axis, tuple) else (axis,)

    def nan_first() -> Any:
        """SciPy's 1-d path answers NaN for a NaN input before anything else
        is checked (the shapes, base): its result then, else None."""
        if nan_policy != "propagate" or any(v.ndim > 1 for v in samples):
            return None
        if not any(v.dtype.kind == "f" and v.size and np.isnan(np.max(v)) for v in samples):
            return None
        nan = np.result_type(*samples, 1.0).type(np.nan)
        return np.expand_dims(nan, reduced) if keepdims else nan

    try:
        shape = np.broadcast_shapes(*(v.shape for v in samples))
    except ValueError as e:
        if (res := nan_first()) is not None:
            return res
        raise ValueError("Array shapes are incompatible for broadcasting.") from e
    if axis is None and (res := nan_first()) is not None:  # raveled: NaN even where nothing is left
        return res
    samples = [np.broadcast_to(v, shape) for v in samples]
    if axis is not None:
        axes = _axes(axis, len(shape), source=True)
    check_nan_policy(nan_policy)
    if nan_policy == "raise" and any(v.dtype.kind == "f" and np.isnan(np.max(v)) for v in samples if v.size):
        raise ValueError("The input contains nan values")
    if base is not None and base <= 0:
        if (res := nan_first()) is not None:
            return res
        raise ValueError("`base` must be a positive number or `None`.")
    p, q = samples[0], (samples[1] if len(samples) > 1 else None)
    call = prob_call(p, q, axes, nan_policy, None)
    if math.prod(call.result_shape) == 0:
        S: Any = np.full(call.result_shape, np.nan, np.result_type(dtype, 1.0))
    else:
        S = _prob_kernel(
            call, as_float(p, "pk", call.dtype), None if q is None else as_float(q, "qk", call.dtype)
        )
    S = S[()]
    if base is not None:
        S /= math.log(base)
    if keepdims:
        S = np.expand_dims(S, reduced)
    return S


def _prob_kernel(call: Any, p: np.ndarray, q: np.ndarray | None) -> np.ndarray:
    out = np.empty(call.result_shape, call.dtype)
    if call.n_classes == 0:  # the entropy of no outcomes: an empty sum
        out.fill(0.0)
        return out
    pm, ax = merge_axes(p, call.axes)
    pm, outer, C, inner, ps = strided_view(pm, ax)
    qs: tuple[int, int, int] = (0, 0, 0)
    if q is not None:
        qm, _ = merge_axes(q, call.axes)
        q, _, _, _, qs = strided_view(qm, ax)
    status = _core.prob_divergence(
        p=pm, outer=outer, C=C, inner=inner, ps=ps, q=q, qs=qs, omit_nan=call.omit_nan,
        out=out.reshape(-1), num_threads=call.num_threads,
    )  # fmt: skip
    if status == ce_status.CE_ERR_NOMEM:  # pragma: no cover - the kernel allocates nothing
        raise no_memory()
    return out


logsumexp.__doc__ = """Compute the log of the sum of exponentials of input elements.

    ``log(sum(b * exp(a), axis))``, computed stably, with exactly the
    semantics of ``scipy.special.logsumexp`` in SciPy 1.17.1.

    Parameters
    ----------
    a : array_like
        Input array.
    axis : None or int or tuple of ints, optional
        Axis or axes over which the sum is taken; all elements by default.
    b : array_like, optional
        Scaling factors for ``exp(a)``, broadcast with ``a`` (both ways);
        they may be negative (subtraction) or zero (the element is left out,
        even when it is infinite or NaN).
    keepdims : bool, optional
        Keep the reduced axes as axes of length 1.
    return_sign : bool, optional
        Also return the sign of the sum; without it a negative sum gives NaN.

    Returns
    -------
    res : ndarray or NumPy scalar
        ``log|sum|`` (a NumPy scalar when 0-d), in SciPy's dtype: the
        promotion of ``a``, ``b`` and a Python float (integers give
        float64).
    sgn : ndarray or NumPy scalar
        With ``return_sign``: +1, 0 or -1 (NaN for a NaN sum).

    Notes
    -----
    ``b=None`` runs ce_fast's log-sum-exp (``m + log1p(s')``, one read of
    ``a``); ``b`` the b-weighted kernel: the maxima are summed apart from the
    rest, as SciPy does, in double, and rows whose stable result is not
    finite (infinite or NaN input, every weight zero, an exact cancellation)
    take SciPy's direct form, so their special values are SciPy's. Broadcast
    operands are read through zero strides; a tuple of non-consecutive axes
    is gathered into one axis first (a copy). Complex or object input,
    masked arrays and other array-API namespaces are SciPy's (or a
    ``TypeError`` without SciPy).

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast.scipy import logsumexp
    >>> float(logsumexp(np.arange(10)))
    9.45862974442671
    >>> logsumexp([1, 2], b=[1, -1], return_sign=True)
    (np.float64(1.5413248546129181), np.float64(-1.0))
"""

_SM_PARAMS = """
    Parameters
    ----------
    x : array_like
        Input array (a 0-d input gives a NumPy scalar).
    axis : int or tuple of ints, optional
        Axis or axes to compute along; the whole array by default.

    Returns
    -------
    s : ndarray or NumPy scalar
        ``x``'s shape; float16, float32 and float64 keep their dtype (float16
        is computed in float32), integers give float64.
"""

softmax.__doc__ = f"""Compute the softmax function, as ``scipy.special.softmax``
    (SciPy 1.17.1): ``exp(x) / sum(exp(x))`` over ``axis``.
{_SM_PARAMS}
    Notes
    -----
    One read of ``x`` and one write of the result per row (ce_fast's
    softmax kernel). A row holding NaN or +inf, or all -inf, is all NaN, as
    in SciPy. An empty ``axis`` raises ``ValueError`` (SciPy's max over an
    empty axis). Small signed integers (int8, int16), unsigned integers and
    bool are SciPy's (its arithmetic on them wraps around or raises).

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast.scipy import softmax
    >>> softmax(np.array([[1.0, 1.0], [0.0, -np.inf]]), axis=1)
    array([[0.5, 0.5],
           [1. , 0. ]])
"""

log_softmax.__doc__ = f"""Compute the logarithm of the softmax function, as
    ``scipy.special.log_softmax`` (SciPy 1.17.1).
{_SM_PARAMS}
    Notes
    -----
    Computed as ``-((m - x) + log1p(s'))`` (ce_fast's kernel), as accurate as
    SciPy's ``(x - m) - log(s)`` or better. Special values are SciPy's: a
    row with NaN, or all -inf, is all NaN; a row holding +inf is NaN at the
    +inf positions and -inf elsewhere (such rows are recomputed after the
    kernel, which makes them all NaN). An empty ``axis`` raises
    ``ValueError``. The one visible difference: where the result is exactly
    0 (the maximum of a row whose other entries underflow), the kernel gives
    -0.0 where SciPy gives +0.0 (equal as numbers).

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast.scipy import log_softmax
    >>> log_softmax(np.array([[1.0, 2.0, 3.0], [0.0, np.inf, 1.0]]), axis=1)
    array([[-2.40760596, -1.40760596, -0.40760596],
           [       -inf,         nan,        -inf]])
"""

entropy.__doc__ = """Calculate the Shannon entropy or relative entropy of given
    distribution(s), as ``scipy.stats.entropy`` (SciPy 1.17.1).

    ``H = -sum(pk log pk)``, or with ``qk`` the Kullback-Leibler divergence
    ``D = sum(pk log(pk / qk))``, after normalising ``pk`` and ``qk`` to sum
    to 1 along ``axis``.

    Parameters
    ----------
    pk : array_like
        The (possibly unnormalised) distribution(s).
    qk : array_like, optional
        The distribution(s) to compare with, broadcast with ``pk``.
    base : float, optional
        The logarithmic base (default e); must be positive.
    axis : int or tuple of ints or None, default 0
        The axis (or axes, or all with None) of each distribution.
    nan_policy : {"propagate", "omit", "raise"}, default "propagate"
        NaN in a distribution gives NaN ("propagate"), is left out together
        with its partner in the other distribution ("omit"), or raises
        ``ValueError`` ("raise").
    keepdims : bool, default False
        Keep the reduced axes as axes of length 1.

    Returns
    -------
    S : NumPy scalar or ndarray
        float64, or float32 for float32 input.

    Notes
    -----
    One kernel per row (ce_fast's prob_divergence_impl.h): the two sums,
    then the terms with ``u = pk / sum(pk)`` and ``v = qk / sum(qk)``
    rounded as SciPy rounds them, ``0 log 0 = 0``, ``+inf`` where
    ``qk = 0 < pk``, summed in double; no temporary of the inputs' size.
    ``pk`` / ``qk`` broadcast through zero strides. float16, complex and
    object input, masked arrays and other array-API namespaces are SciPy's
    (or a ``TypeError`` without SciPy).

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast.scipy import entropy
    >>> float(entropy([0.5, 0.5], base=2))
    1.0
    >>> float(entropy([9, 1], [1, 1]))  # KL(p || uniform), p = (0.9, 0.1)
    0.3680642071684971
"""
