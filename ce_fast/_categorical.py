"""Categorical cross-entropy: the public functions and their argument
handling. The arithmetic is in src/categorical_impl.h."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

from . import _core
from ._validation import (
    REDUCTIONS,
    as_array,
    as_float,
    check_out,
    fast_scale,
    fast_threads,
    finite_option,
    normalize_axis,
    per_sample,
    reduction_code,
    same_buffer,
    strided_view,
    thread_count,
)

_DOC_PARAMS = """
    Parameters
    ----------
    logits : array_like
        Unnormalised scores; float32 and float64 are computed natively,
        float16 in float32, integer and bool in float64.
    target : array_like
        Either integer class indices with the logits' shape minus the class
        axis (any integer dtype), or floating probabilities with exactly the
        logits' shape.
    axis : int, default -1
        The class axis. Any axis is walked in place (no transposing copy)
        when the other axes collapse to uniform strides, which is always true
        for C-contiguous input; other layouts are copied once. NumPy arrays
        (memmaps and read-only ones included) and ``__dlpack__`` objects (CPU
        PyTorch tensors, non-contiguous ones too; one that requires grad is
        read through ``detach()``) are read in place; otherwise a copy is made
        only for another dtype, byte-swapped (non-native) or unaligned memory.
        Integer targets of any dtype and byte order are converted to int64
        (a copy of the N labels unless they already are native int64).
    weight : array_like of shape (C,), optional
        Class weights ``w_c``.
    sample_weight : array_like, optional
        Per-sample weights ``s_i``, broadcastable to the per-sample shape.
    ignore_index : int, default -100
        Integer targets equal to it contribute neither loss nor gradient;
        their logits are never read (an ignored row holding NaN still gives
        loss 0 and a zero gradient row). Must be negative with probability
        targets.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" is the weighted mean ``sum(loss_i) / sum(s_i * w_{y_i})`` over
        non-ignored samples (``sum(s_i)`` or N for probability targets), as
        PyTorch; a zero denominator (everything ignored, empty batch, zero
        total weight) gives NaN.
    label_smoothing : float in [0, 1], default 0
    z_loss : float >= 0, default 0
        Adds ``s_i * w_y * z_loss * lse**2`` (``s_i * z_loss * lse**2`` for
        probability targets).
    softcap : float > 0, optional
        Replaces every logit x by ``softcap * tanh(x / softcap)`` first. The
        capped logits are finite, so +-inf logits become +-softcap.
    num_threads : int, optional
        Threads for this call; default: the OpenMP default (honours
        ``OMP_NUM_THREADS`` and threadpoolctl). A request above
        max(default, processors) or ``OMP_THREAD_LIMIT`` is clamped (see
        :func:`ce_fast.build_info`). Results are bitwise identical for every
        thread count."""

_DOC_GRAD = """
    grad_output : float or array_like, optional
        Upstream gradient (default 1): a scalar for "mean"/"sum"; a scalar or
        a per-sample array for "none" (the gradient of
        ``sum(grad_output_i * loss_i)``).
    out : ndarray, optional
        A writable C-contiguous array of the logits' shape and compute dtype
        that receives the gradient. ``out=logits`` overwrites the logits in
        place with no extra memory."""

_DOC_NOTES = """
    Notes
    -----
    For sample i with logits row x (after soft-capping), m = max x,
    lse = logsumexp(x), p = softmax(x), eps = label_smoothing,
    lam = z_loss: integer target y gives

        loss_i = s_i [(1 - eps) w_y (lse - x_y) + eps/C sum_c w_c (lse - x_c)]
                 + s_i w_y lam lse**2;

    a probability target q gives, with q' = (1 - eps) q + eps/C,

        loss_i = -s_i sum_c w_c q'_c log p_c + s_i lam lse**2,

    where classes with q'_c == 0 contribute nothing (so -inf logits may mask
    them). lse - x_c is evaluated as (m - x_c) + log1p(sum_{k != argmax}
    e^(x_k - m)), so tiny losses keep their relative accuracy, and the
    true-class gradient p_y - 1 is evaluated without cancellation.

    NaN or +inf anywhere in a (non-ignored) row makes that row's loss and
    gradient NaN; a row of all -inf gives NaN; -inf on the target class gives
    an infinite loss. With "mean" and a zero denominator the gradient rows of
    non-ignored samples are NaN (as PyTorch's 0/0) and ignored rows are 0.

    Raises
    ------
    IndexError
        A class index outside [0, C) that is not ``ignore_index`` (the
        message names the first offending flat position and its value).
    ValueError
        Wrong target shape, C == 0, unknown reduction, options out of range,
        ``weight`` not of length C, bad ``out``.
    TypeError
        Complex, object, string or boolean input."""


def _doc(summary: str, returns: str, grad: bool, example: str) -> str:
    return (
        summary
        + "\n"
        + _DOC_PARAMS
        + (_DOC_GRAD if grad else "")
        + "\n\n    Returns\n    -------\n"
        + returns
        + "\n"
        + _DOC_NOTES
        + "\n\n    Examples\n    --------\n"
        + example
    )


def _int_target(t: np.ndarray, shape: tuple[int, ...], C: int, ignore_index: int) -> np.ndarray:
    """Integer class indices as contiguous int64 (values beyond int64 are
    reported as out of range, never wrapped)."""
    if t.shape != shape:
        raise ValueError(
            "target: expected integer class indices of shape "
            f"{shape} (the logits' shape without the class axis) or probabilities of "
            f"the logits' shape; got an integer array of shape {t.shape}"
        )
    if t.dtype == np.uint64 and t.size and t.max() > np.iinfo(np.int64).max:
        flat = t.reshape(-1)
        pos = int(np.argmax(flat > np.iinfo(np.int64).max))
        raise IndexError(
            f"target: class index {int(flat[pos])} at flat position {pos} is outside "
            f"[0, {C}) and is not ignore_index ({ignore_index})"
        )
    return np.ascontiguousarray(t, dtype=np.int64)


_NUMBER = (int, float)


def _fast(
    logits: Any, target: Any, reduction: Any, num_threads: Any, want_grad: bool, grad_output: Any, out: Any
) -> Any:
    """The common call -- 2-d C-contiguous float logits, int64 labels, no
    options -- with the array checks done in C (``_core.categorical_fast``),
    so that tiny calls cost little more than the kernel. Returns None to fall
    back to the general path (which also produces every error message)."""
    red = REDUCTIONS.get(reduction) if type(reduction) is str else None
    nt, go = fast_threads(num_threads), fast_scale(grad_output)
    if red is None or nt < 0 or go is None:
        return None
    return _core.categorical_fast(logits, target, red, nt, go, want_grad, out)


def _defaults(
    axis: Any,
    weight: Any,
    sample_weight: Any,
    ignore_index: Any,
    label_smoothing: Any,
    z_loss: Any,
    softcap: Any,
) -> bool:
    """True when every option is at its default (the fast path applies)."""
    return (
        weight is None
        and sample_weight is None
        and softcap is None
        and type(axis) is int
        and axis in (-1, 1)
        and type(ignore_index) is int
        and ignore_index == -100
        and type(label_smoothing) in _NUMBER
        and label_smoothing == 0
        and type(z_loss) in _NUMBER
        and z_loss == 0
    )


def _run(
    logits: Any,
    target: Any,
    *,
    axis: Any,
    weight: Any,
    sample_weight: Any,
    ignore_index: Any,
    reduction: Any,
    label_smoothing: Any,
    z_loss: Any,
    softcap: Any,
    num_threads: Any,
    want_grad: bool,
    grad_output: Any = None,
    out: Any = None,
) -> tuple[Any, np.ndarray | None]:
    if _defaults(axis, weight, sample_weight, ignore_index, label_smoothing, z_loss, softcap):
        fast = _fast(logits, target, reduction, num_threads, want_grad, grad_output, out)
        if fast is not None:
            return fast  # type: ignore[no-any-return]
    x = as_float(logits, "logits")
    dt = x.dtype
    ax = normalize_axis(axis, x.ndim)
    C = x.shape[ax]
    if C == 0:
        raise ValueError("logits: the class axis is empty (C == 0)")
    sample_shape = x.shape[:ax] + x.shape[ax + 1 :]
    red = reduction_code(reduction)
    eps = finite_option(label_smoothing, "label_smoothing", 0.0, 1.0)
    lam = finite_option(z_loss, "z_loss", 0.0, math.inf)
    if math.isinf(lam):
        raise ValueError(f"z_loss must be finite, got {z_loss!r}")
    cap = 0.0
    if softcap is not None:
        cap = finite_option(softcap, "softcap", 0.0, math.inf, lo_open=True)
        if math.isinf(cap):
            raise ValueError(f"softcap must be finite, got {softcap!r}")
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, (numbers.Integral, np.integer)):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    ignore = int(ignore_index)
    if not -(2**63) <= ignore < 2**63:
        raise ValueError(f"ignore_index {ignore} does not fit in int64")
    nt = thread_count(num_threads)

    t = as_array(target, "target")
    if t.dtype.kind == "b":
        raise TypeError("target: a boolean array is ambiguous (class indices or probabilities?)")
    q = None
    qs = (0, 0, 0)
    if t.dtype.kind in "iu":
        tgt = _int_target(t, sample_shape, C, ignore)
    elif t.dtype.kind == "f":
        if t.shape != x.shape:
            raise ValueError(
                f"target: expected probabilities of the logits' shape {x.shape} or integer "
                f"class indices of shape {sample_shape}; got a floating array of shape {t.shape}"
            )
        if ignore >= 0:
            raise ValueError("ignore_index is only supported with integer class-index targets")
        tgt = None
        q = as_float(t, "target", dt)
    else:
        raise TypeError(f"target: dtype {t.dtype} is neither integer class indices nor probabilities")

    w = None
    if weight is not None:
        w = as_float(weight, "weight", dt)
        if w.shape != (C,):
            raise ValueError(f"weight must be 1-d of length C = {C}, got shape {w.shape}")
        w = np.ascontiguousarray(w)
    sw = None if sample_weight is None else per_sample(sample_weight, sample_shape, dt, "sample_weight")

    go_arr, go = _grad_output(grad_output, red, sample_shape, dt) if want_grad else (None, 1.0)

    grad = None
    if want_grad:
        if out is None:
            grad = np.empty(x.shape, dt)
        else:
            grad = check_out(out, x.shape, dt)
            if np.may_share_memory(grad, x) and not (x.flags.c_contiguous and same_buffer(grad, x)):
                x = x.copy()  # partial overlap: read from a snapshot
            if q is not None and np.may_share_memory(grad, q):
                q = q.copy()
    x, outer, _, inner, xs = strided_view(x, ax)
    if q is not None:
        q, _, _, _, qs = strided_view(q, ax)
    loss_out = np.empty(sample_shape, dt) if red == 0 else None

    rc, loss, pos, val = _core.categorical(
        x, outer, C, inner, xs, tgt, q, qs, w, sw, go_arr, go, ignore,
        eps, lam, cap, red, loss_out, grad, nt,
    )  # fmt: skip
    if rc == _core.ERR_TARGET_INDEX:
        raise IndexError(
            f"target: class index {val} at flat position {pos} is outside [0, {C}) "
            f"and is not ignore_index ({ignore})"
        )
    if rc == _core.ERR_NOMEM:
        raise MemoryError("ce_fast: could not allocate per-thread scratch memory")
    return (loss_out if red == 0 else dt.type(loss)), grad


def _grad_output(
    grad_output: Any, red: int, sample_shape: tuple[int, ...], dt: np.dtype
) -> tuple[np.ndarray | None, float]:
    """(per-sample array or None, scalar) for the kernel."""
    if grad_output is None:
        return None, 1.0
    g = as_float(grad_output, "grad_output", dt)
    if g.ndim == 0:
        return None, float(g)
    if red != 0:
        raise ValueError(f"grad_output must be a scalar with a reduced loss, got shape {g.shape}")
    return per_sample(g, sample_shape, dt, "grad_output"), 1.0


def cross_entropy(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    num_threads: int | None = None,
) -> Any:
    loss, _ = _run(
        logits, target, axis=axis, weight=weight, sample_weight=sample_weight,
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, num_threads=num_threads, want_grad=False,
    )  # fmt: skip
    return loss


def cross_entropy_grad(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    num_threads: int | None = None,
    grad_output: Any = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    _, grad = _run(
        logits, target, axis=axis, weight=weight, sample_weight=sample_weight,
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, num_threads=num_threads, want_grad=True,
        grad_output=grad_output, out=out,
    )  # fmt: skip
    assert grad is not None
    return grad


def cross_entropy_and_grad(
    logits: Any,
    target: Any,
    *,
    axis: int = -1,
    weight: Any = None,
    sample_weight: Any = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    num_threads: int | None = None,
    grad_output: Any = None,
    out: np.ndarray | None = None,
) -> tuple[Any, np.ndarray]:
    loss, grad = _run(
        logits, target, axis=axis, weight=weight, sample_weight=sample_weight,
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, num_threads=num_threads, want_grad=True,
        grad_output=grad_output, out=out,
    )  # fmt: skip
    assert grad is not None
    return loss, grad


cross_entropy.__doc__ = _doc(
    "Cross-entropy of softmax(logits) against integer or probability targets.",
    "    loss : numpy scalar or ndarray\n"
    '        A NumPy scalar of the compute dtype for "mean"/"sum"; the per-sample\n'
    "        losses (the target's shape, or the logits' shape minus the class axis)\n"
    '        for "none".',
    False,
    "    >>> import numpy as np, ce_fast\n"
    "    >>> logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])\n"
    "    >>> round(float(ce_fast.cross_entropy(logits, np.array([0, 2]))), 6)\n"
    "    0.175456\n",
)
cross_entropy_grad.__doc__ = _doc(
    "Gradient of :func:`cross_entropy` with respect to the logits.",
    "    grad : ndarray\n        The logits' shape and compute dtype (``out`` if given).",
    True,
    "    >>> import numpy as np, ce_fast\n"
    "    >>> g = ce_fast.cross_entropy_grad(np.zeros((2, 4)), np.array([1, 3]))\n"
    "    >>> g[0]\n"
    "    array([ 0.125, -0.375,  0.125,  0.125])\n",
)
cross_entropy_and_grad.__doc__ = _doc(
    "Loss and gradient of :func:`cross_entropy` in one fused pass over memory.",
    "    loss : numpy scalar or ndarray\n        As :func:`cross_entropy`.\n"
    "    grad : ndarray\n        As :func:`cross_entropy_grad`.",
    True,
    "    >>> import numpy as np, ce_fast\n"
    "    >>> x = np.random.default_rng(0).standard_normal((8, 5)).astype(np.float32)\n"
    "    >>> loss, grad = ce_fast.cross_entropy_and_grad(x, np.arange(8) % 5, out=x)\n"
    "    >>> grad is x, grad.dtype, bool(abs(grad.sum()) < 1e-6)\n"
    "    (True, dtype('float32'), True)\n",
)
