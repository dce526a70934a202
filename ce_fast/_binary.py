"""Binary cross-entropy (on logits and on probabilities): the public
functions and their argument handling. The arithmetic is in
src/binary_impl.h."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from . import _core
from ._core import ce_bin_mode, ce_reduction, ce_status
from ._validation import (
    REDUCTIONS,
    as_logits,
    binary_options,
    broadcast_operand,
    compute_dtype,
    fast_scale,
    fast_threads,
    flat_2d,
    no_memory,
    output,
    result_dtype,
    unaliased,
    upstream,
)

_DOC_LOGITS_PARAMS = """
    Parameters
    ----------
    logits : array_like
        Logits of any shape (0-d included); float32 and float64 are computed
        natively; float16 and bfloat16 (``ml_dtypes.bfloat16``, or a
        bfloat16 ``__dlpack__`` tensor) are read in place and computed in
        float32 (the loss float32, the gradient float16 / bfloat16, rounded
        to nearest even; without ml_dtypes a bfloat16 gradient is returned
        as float32); integer and bool in float64.
    target : array_like
        Targets broadcastable to the logits' shape: hard 0/1 labels or soft
        labels (any real numbers, not validated; bool and integer targets are
        read as 0/1 floats). Multi-label (N, K) targets are just elementwise.
        Targets, weights and ``grad_output`` of any float dtype are converted
        to the compute dtype (float32 for 16-bit logits).
    weight : array_like, optional
        Elementwise weight ``w``, broadcastable to the logits' shape.
    pos_weight : array_like, optional
        Weight ``pw`` of the positive term, broadcastable to the logits' shape;
        a ``(K,)`` vector thus applies along the last axis, as in PyTorch.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" averages over all elements (NaN for an empty input); "none"
        returns the per-element losses, of the logits' shape.
    num_threads : int, optional
        Threads for this call; default: the OpenMP default (honours
        ``OMP_NUM_THREADS`` and threadpoolctl). A request above
        max(default, processors) or ``OMP_THREAD_LIMIT`` is clamped (see
        :func:`ce_fast.build_info`). Results are bitwise identical for every
        thread count."""

_DOC_GRAD = """
    grad_output : float or array_like, optional
        Upstream gradient (default 1): a scalar for "mean"/"sum"; a scalar or
        an array broadcastable to the logits' shape for "none" (the gradient
        of ``sum(grad_output * loss)``).
    out : ndarray, optional
        A writable C-contiguous array of the logits' shape and compute dtype
        (for 16-bit logits: their own dtype or float32) that receives the
        gradient. ``out=logits`` overwrites the logits in place with no
        extra memory."""

_DOC_LOGITS_NOTES = """
    Notes
    -----
    PyTorch semantics (``torch.nn.functional.binary_cross_entropy_with_logits``):

        loss = -w [pw t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]

    evaluated as ``w [pw t softplus(-x) + (1 - t) softplus(x)]`` with
    ``softplus(z) = max(z, 0) + log1p(exp(-|z|))``: nothing overflows for
    any finite logit (``|x| = 1e4`` in float32 is fine) and both tails keep
    their relative accuracy (``x = 40, t = 1`` gives ``~exp(-40)``, not 0).
    The gradient ``w [(1 - t) sigmoid(x) - pw t sigmoid(-x)]`` uses a stable
    sigmoid. Infinite logits follow the formula in IEEE arithmetic
    (``0 * inf`` is NaN); NaN propagates.

    ``target``, ``weight``, ``pos_weight`` and ``grad_output`` are never
    materialised at the logits' shape: the kernel walks their broadcast
    strides (a copy of one of them is made only in the rare case that its
    broadcast layout cannot be seen as (rows, cols) with uniform strides).
    Operands of another dtype are converted to the compute dtype first. The
    logits are read in place in any strided layout: NumPy arrays (memmaps and
    read-only ones included) and ``__dlpack__`` objects (CPU PyTorch tensors,
    non-contiguous ones too; one that requires grad is read through
    ``detach()``); 16-bit logits are converted to float32 a few hundred
    elements at a time inside the kernel, never as a whole; a copy is made
    only for another dtype (integer, bool), byte-swapped (non-native) or
    unaligned memory.

    Raises
    ------
    ValueError
        An operand not broadcastable to the logits' shape, unknown reduction,
        a non-scalar ``grad_output`` with a reduced loss, bad ``out``.
    TypeError
        Complex, object or string input."""


def _doc(summary: str, grad: bool, returns: str, example: str) -> str:
    return (
        summary
        + "\n"
        + _DOC_LOGITS_PARAMS
        + (_DOC_GRAD if grad else "")
        + "\n\n    Returns\n    -------\n"
        + returns
        + "\n"
        + _DOC_LOGITS_NOTES
        + "\n\n    Examples\n    --------\n"
        + example
    )


_NONE, _MEAN = ce_reduction.CE_RED_NONE, ce_reduction.CE_RED_MEAN


def _empty_result(red: ce_reduction, shape: tuple[int, ...], dt: np.dtype) -> Any:
    if red == _NONE:
        return np.empty(shape, dt)
    return dt.type(np.nan) if red == _MEAN else dt.type(0.0)


def _logits_run(
    logits: Any,
    target: Any,
    *,
    weight: Any,
    pos_weight: Any,
    reduction: Any,
    num_threads: Any,
    want_loss: bool,
    want_grad: bool,
    grad_output: Any = None,
    out: Any = None,
    loss_out: np.ndarray | None = None,
) -> tuple[Any, np.ndarray | None]:
    """``loss_out``: a buffer of the logits' shape and compute dtype for the
    "none" losses (front ends that allocate their own outputs)."""
    if weight is None and pos_weight is None and type(reduction) is str and loss_out is None:
        # the common call, checked and run in C (None: take the general path)
        red, nt, go1 = REDUCTIONS.get(reduction), fast_threads(num_threads), fast_scale(grad_output)
        if red is not None and nt >= 0 and go1 is not None:
            r = _core.binary_logits_fast(logits, target, red, nt, go1, want_loss, want_grad, out)
            if r is not None:
                return r
    opts = binary_options(reduction=reduction, num_threads=num_threads)
    x = as_logits(logits, "logits")
    dt, shape = compute_dtype(x.dtype, "logits"), x.shape
    t = broadcast_operand(target, "target", shape, dt, "logits'")
    w = None if weight is None else broadcast_operand(weight, "weight", shape, dt, "logits'")
    pw = None if pos_weight is None else broadcast_operand(pos_weight, "pos_weight", shape, dt, "logits'")
    go, go_scalar = None, 1.0
    grad = None
    if want_grad:
        go, go_scalar = upstream(grad_output, opts.reduction != _NONE, shape, dt, "per-element loss")
        grad = output(out, shape, result_dtype(x.dtype), also=dt)
        x = unaliased(grad, x, in_place=True)
        t, w, pw, go = (unaliased(grad, a) for a in (t, w, pw, go))
    if not x.flags.aligned:
        x = x.copy()
    if x.size == 0:
        return (_empty_result(opts.reduction, shape, dt) if want_loss else None), grad

    ops = [x, t] + [a for a in (w, pw, go) if a is not None]
    rows, cols, ops, strides = flat_2d(shape, ops)
    it = iter(zip(ops[2:], strides[2:]))
    (w, ws) = next(it) if w is not None else (None, (0, 0))
    (pw, pws) = next(it) if pw is not None else (None, (0, 0))
    (go, gos) = next(it) if go is not None else (None, (0, 0))
    if want_loss and opts.reduction == _NONE:
        loss_out = output(loss_out, shape, dt, "loss_out")
    else:
        loss_out = None
    kernel_red = opts.reduction
    if not want_loss:
        # gradient only: tell the kernel "none" without a loss buffer (so it
        # computes no loss at all) and fold the mean's 1/N into the scale,
        # exactly as the kernel would (one double division)
        kernel_red = _NONE
        if opts.reduction == _MEAN:
            go_scalar = go_scalar / x.size
    status, loss, _, _, _ = _core.binary(
        mode=ce_bin_mode.CE_BIN_LOGITS, x=ops[0], rows=rows, cols=cols, xs=strides[0], t=ops[1],
        ts=strides[1], w=w, ws=ws, pw=pw, pws=pws, go=go, gos=gos, grad_output_scalar=go_scalar,
        reduction=kernel_red, loss_out=loss_out, grad=grad, num_threads=opts.num_threads,
    )  # fmt: skip
    if status == ce_status.CE_ERR_NOMEM:
        raise no_memory()
    if not want_loss:
        return None, grad
    return (loss_out if loss_out is not None else dt.type(loss)), grad


def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    num_threads: int | None = None,
) -> Any:
    return _logits_run(**locals(), want_loss=True, want_grad=False)[0]


def binary_cross_entropy_with_logits_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    num_threads: int | None = None,
    grad_output: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    grad = _logits_run(**locals(), want_loss=False, want_grad=True)[1]
    assert grad is not None
    return grad


def binary_cross_entropy_with_logits_and_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    num_threads: int | None = None,
    grad_output: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> tuple[Any, np.ndarray]:
    loss, grad = _logits_run(**locals(), want_loss=True, want_grad=True)
    assert grad is not None
    return loss, grad


def binary_cross_entropy(
    probs: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    eps: float | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    num_threads: int | None = None,
) -> Any:
    opts = binary_options(reduction=reduction, num_threads=num_threads, eps=eps)
    p = as_logits(probs, "probs")
    dt, shape = compute_dtype(p.dtype, "probs"), p.shape
    t = broadcast_operand(target, "target", shape, dt, "probs'")
    w = None if weight is None else broadcast_operand(weight, "weight", shape, dt, "probs'")
    if not p.flags.aligned:
        p = p.copy()
    if p.size == 0:
        return _empty_result(opts.reduction, shape, dt)
    rows, cols, ops, strides = flat_2d(shape, [p, t] if w is None else [p, t, w])
    w, ws = (ops[2], strides[2]) if w is not None else (None, (0, 0))
    loss_out = np.empty(shape, dt) if opts.reduction == _NONE else None
    status, loss, arg, pos, val = _core.binary(
        mode=ce_bin_mode.CE_BIN_PROBS, x=ops[0], rows=rows, cols=cols, xs=strides[0], t=ops[1],
        ts=strides[1], w=w, ws=ws, eps=opts.clip(dt), reduction=opts.reduction, loss_out=loss_out,
        num_threads=opts.num_threads,
    )  # fmt: skip
    if status == ce_status.CE_ERR_DOMAIN:
        name = "probs" if arg == 0 else "target"
        raise ValueError(f"{name} must lie in [0, 1] (and not be NaN); found {val!r} at flat position {pos}")
    if status == ce_status.CE_ERR_NOMEM:
        raise no_memory()
    return loss_out if loss_out is not None else dt.type(loss)


binary_cross_entropy_with_logits.__doc__ = _doc(
    "Binary cross-entropy on logits (elementwise, PyTorch semantics).",
    False,
    "    loss : numpy scalar or ndarray\n"
    '        A NumPy scalar of the compute dtype for "mean"/"sum"; the\n'
    '        per-element losses (the logits\' shape) for "none".',
    "    >>> import numpy as np, ce_fast\n"
    "    >>> x = np.array([[40.0, -1.0], [0.0, 3.0]])\n"
    "    >>> t = np.array([[1.0, 0.0], [1.0, 0.5]])\n"
    '    >>> ce_fast.binary_cross_entropy_with_logits(x, t, reduction="none")\n'
    "    array([[4.24835426e-18, 3.13261688e-01],\n"
    "           [6.93147181e-01, 1.54858735e+00]])\n"
    "    >>> round(float(ce_fast.binary_cross_entropy_with_logits(\n"
    "    ...     x, t, pos_weight=np.array([2.0, 1.0]))), 6)\n"
    "    0.812036\n",
)
binary_cross_entropy_with_logits_grad.__doc__ = _doc(
    "Gradient of :func:`binary_cross_entropy_with_logits` with respect to the logits.",
    True,
    "    grad : ndarray\n        The logits' shape and compute dtype, or the dtype of 16-bit logits\n"
    "        (``out`` if given).",
    "    >>> import numpy as np, ce_fast\n"
    "    >>> ce_fast.binary_cross_entropy_with_logits_grad(\n"
    '    ...     np.array([0.0, 2.0]), np.array([1.0, 0.0]), reduction="sum")\n'
    "    array([-0.5       ,  0.88079708])\n",
)
binary_cross_entropy_with_logits_and_grad.__doc__ = _doc(
    "Loss and gradient of :func:`binary_cross_entropy_with_logits` in one pass.",
    True,
    "    loss : numpy scalar or ndarray\n        As :func:`binary_cross_entropy_with_logits`.\n"
    "    grad : ndarray\n        As :func:`binary_cross_entropy_with_logits_grad`.",
    "    >>> import numpy as np, ce_fast\n"
    "    >>> x = np.zeros((4, 3), np.float32)\n"
    "    >>> loss, grad = ce_fast.binary_cross_entropy_with_logits_and_grad(\n"
    "    ...     x, np.ones((4, 3)), out=x)\n"
    "    >>> round(float(loss), 6), grad is x, round(float(grad[0, 0]), 6)\n"
    "    (0.693147, True, -0.041667)\n",
)
binary_cross_entropy.__doc__ = """Binary cross-entropy on probabilities (as ``sklearn.metrics.log_loss``).

    Parameters
    ----------
    probs : array_like
        Probabilities in [0, 1], any shape; float32 and float64 computed
        natively; float16 and bfloat16 read in place and computed in float32
        (the loss float32); integer and bool in float64.
    target : array_like
        Targets in [0, 1] (hard or soft labels; bool and integer read as
        0/1), broadcastable to ``probs``' shape.
    weight : array_like, optional
        Elementwise weight ``w`` of the loss, broadcastable to ``probs``'
        shape (as PyTorch's ``binary_cross_entropy(..., weight=)``: it
        rescales each element's loss; "mean" still divides by the number of
        elements). Not validated: any real values.
    eps : float in [0, 0.5], optional
        Probabilities are clipped (in the compute dtype) to
        ``[eps, 1 - eps]``; default ``np.finfo(compute dtype).eps``.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" averages over all elements (NaN if empty).
    num_threads : int, optional
        Threads for this call (default: the OpenMP default); results are
        bitwise identical for every thread count.

    Returns
    -------
    loss : numpy scalar or ndarray
        A NumPy scalar of the compute dtype for "mean"/"sum"; the
        per-element losses (``probs``' shape) for "none".

    Notes
    -----
    ``loss = -w [t log p + (1 - t) log1p(-p)]`` on the clipped ``p``, a
    term whose coefficient (``t`` or ``1 - t``) is exactly 0 contributing
    exactly 0. ``weight`` is never materialised at ``probs``' shape (the
    kernel walks its broadcast strides). The range check runs inside the kernel, in the same pass as the loss
    (no extra pass over memory, no temporary).

    Raises
    ------
    ValueError
        A probability or target outside [0, 1] or NaN (the message names the
        first offending flat position and its value; probabilities are
        checked before targets), ``eps`` outside [0, 0.5], ``target`` or
        ``weight`` not broadcastable, unknown reduction.
    TypeError
        Complex, object or string input.

    Examples
    --------
    >>> import numpy as np, ce_fast
    >>> p = np.array([0.9, 0.2, 0.5])
    >>> ce_fast.binary_cross_entropy(p, np.array([1, 0, 1]), reduction="none")
    array([0.10536052, 0.22314355, 0.69314718])
    >>> ce_fast.binary_cross_entropy(p, np.array([1, 0, 1]), weight=np.array([2.0, 1.0, 0.0]),
    ...                              reduction="none")
    array([0.21072103, 0.22314355, 0.        ])
    >>> ce_fast.binary_cross_entropy(np.array([1.5]), np.array([1.0]))
    Traceback (most recent call last):
    ...
    ValueError: probs must lie in [0, 1] (and not be NaN); found 1.5 at flat position 0
"""

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_and_grad",
    "binary_cross_entropy_with_logits_grad",
]
