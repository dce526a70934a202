"""Categorical cross-entropy: the public functions and their argument
handling. The arithmetic is in src/categorical_impl.h."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from . import _core
from ._core import ce_reduction, ce_status
from ._validation import (
    REDUCTIONS,
    CategoricalLayout,
    CategoricalOptions,
    as_array,
    as_float,
    as_logits,
    categorical_layout,
    categorical_options,
    class_weight,
    fast_scale,
    fast_threads,
    flag,
    int_target,
    no_memory,
    output,
    per_sample,
    result_dtype,
    saved_lse,
    strided_view,
    target_index_error,
    unaliased,
    upstream,
)

_DOC_PARAMS = """
    Parameters
    ----------
    logits : array_like
        Unnormalised scores; float32 and float64 are computed natively;
        float16 and bfloat16 (``ml_dtypes.bfloat16``, or a bfloat16
        ``__dlpack__`` tensor) are read in place and computed in float32
        (the loss float32, the gradient float16 / bfloat16, rounded to
        nearest even; without ml_dtypes a bfloat16 gradient is returned as
        float32); integer and bool in float64. Probability targets of a
        16-bit dtype, and every weight, are converted to float32.
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
        (for 16-bit logits: their own dtype or float32) that receives the
        gradient. ``out=logits`` overwrites the logits in place with no
        extra memory."""

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


_NUMBER = (int, float)
_NONE = ce_reduction.CE_RED_NONE


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
    return_lse: Any = False,
    lse: Any = None,
) -> tuple[Any, np.ndarray | None]:
    plain = return_lse is False and lse is None
    if plain and _defaults(axis, weight, sample_weight, ignore_index, label_smoothing, z_loss, softcap):
        fast = _fast(logits, target, reduction, num_threads, want_grad, grad_output, out)
        if fast is not None:
            return fast  # type: ignore[no-any-return]
    call = prepare(
        logits, target, axis=axis, weight=weight, sample_weight=sample_weight, ignore_index=ignore_index,
        reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
        num_threads=num_threads,
    )  # fmt: skip
    lay = call.layout
    if not want_grad:
        lse_out = np.empty(lay.sample_shape, np.float64) if flag(return_lse, "return_lse") else None
        loss = call.forward(lse_out=lse_out)
        return (loss if lse_out is None else (loss, lse_out)), None
    saved = None if lse is None else saved_lse(lse, lay)
    grad = output(out, lay.shape, result_dtype(call.x.dtype), also=lay.dtype)
    loss = call.backward(grad, grad_output, lse=saved)
    return loss, grad


@dataclass(frozen=True)
class Prepared:
    """A categorical call with validated options and converted operands,
    ready for the kernel (the NumPy functions, and front ends that bring
    their own output buffers)."""

    x: np.ndarray
    layout: CategoricalLayout
    opts: CategoricalOptions
    target: np.ndarray | None
    q: np.ndarray | None
    weight: np.ndarray | None
    sample_weight: np.ndarray | None

    def forward(self, *, loss_out: np.ndarray | None = None, lse_out: np.ndarray | None = None) -> Any:
        """The loss (``loss_out``, allocated here unless given, for "none";
        else a NumPy scalar), and the per-sample log-sum-exp into ``lse_out``
        (float64, the per-sample shape) when given."""
        lay = self.layout
        if self.opts.reduction == _NONE and loss_out is None:
            loss_out = np.empty(lay.sample_shape, lay.dtype)
        loss = self._kernel(self.x, loss_out=loss_out, lse_out=lse_out)
        return loss_out if self.opts.reduction == _NONE else lay.dtype.type(loss)

    def backward(
        self,
        grad: np.ndarray,
        grad_output: Any,
        *,
        lse: np.ndarray | None = None,
        lse_out: np.ndarray | None = None,
    ) -> Any:
        """The gradient into ``grad`` (a checked output buffer) and, without
        ``lse``, the loss of the fused pass (as :meth:`forward`, with the
        per-sample log-sum-exp into ``lse_out`` when given); with a saved
        ``lse`` (float64, checked) the gradient alone, from it."""
        lay, dt = self.layout, self.layout.dtype
        go_arr, go = upstream(grad_output, self.opts.reduction != _NONE, lay.sample_shape, dt, "per-sample")
        go_arr = None if go_arr is None else np.ascontiguousarray(go_arr)
        x = unaliased(grad, self.x, in_place=True)
        tgt, q, w, sw, go_arr, lse = (
            unaliased(grad, a) for a in (self.target, self.q, self.weight, self.sample_weight, go_arr, lse)
        )
        ops = dict(target=tgt, q=q, weight=w, sample_weight=sw)
        loss_out = np.empty(lay.sample_shape, dt) if self.opts.reduction == _NONE and lse is None else None
        loss = self._kernel(
            x, grad_output=go_arr, grad_output_scalar=go, grad=grad, loss_out=loss_out, lse=lse,
            lse_out=lse_out, **ops,
        )  # fmt: skip
        if lse is not None:
            return None
        return loss_out if loss_out is not None else dt.type(loss)

    def _kernel(self, x: np.ndarray, **kw: Any) -> float:
        kw.setdefault("target", self.target)
        kw.setdefault("q", self.q)
        kw.setdefault("weight", self.weight)
        kw.setdefault("sample_weight", self.sample_weight)
        return kernel(x, self.layout.axis, self.layout.C, self.opts, **kw)


def prepare(
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
) -> Prepared:
    """Check a categorical call and convert its operands (the general path)."""
    opts = categorical_options(
        reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, num_threads=num_threads,
    )  # fmt: skip
    x = as_logits(logits, "logits")
    t = as_array(target, "target")
    lay = categorical_layout(x, t, axis, opts)
    dt = lay.dtype
    tgt = None if lay.probs else int_target(t, lay, opts)
    q = as_float(t, "target", dt) if lay.probs else None
    w = class_weight(weight, lay.C, dt)
    sw = None if sample_weight is None else per_sample(sample_weight, lay.sample_shape, dt, "sample_weight")
    return Prepared(x, lay, opts, tgt, q, w, sw)


def kernel(
    x: np.ndarray,
    axis: int,
    C: int,
    opts: CategoricalOptions,
    *,
    target: np.ndarray | None = None,
    q: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
    grad_output: np.ndarray | None = None,
    grad_output_scalar: float = 1.0,
    grad: np.ndarray | None = None,
    loss_out: np.ndarray | None = None,
    lse_out: np.ndarray | None = None,
    lse: np.ndarray | None = None,
) -> float:
    """The categorical kernel on validated, converted and unaliased operands
    (also linear_cross_entropy's per-chunk call). Returns the reduced loss
    (0 for "none", whose losses go to loss_out). ``lse_out``: the per-sample
    log-sum-exp is stored there (float64, contiguous). ``lse`` (with
    ``grad``): the gradient alone, from this saved log-sum-exp."""
    x, outer, _, inner, xs = strided_view(x, axis)
    qs = (0, 0, 0)
    if q is not None:
        q, _, _, _, qs = strided_view(q, axis)
    status, loss, pos, val = _core.categorical(
        x=x, outer=outer, C=C, inner=inner, xs=xs, target=target, q=q, qs=qs, weight=weight,
        sample_weight=sample_weight, grad_output=grad_output, grad_output_scalar=grad_output_scalar,
        ignore_index=opts.ignore_index, label_smoothing=opts.label_smoothing, z_loss=opts.z_loss,
        softcap=opts.softcap, reduction=opts.reduction, loss_out=loss_out, grad=grad,
        num_threads=opts.num_threads, lse_out=lse_out, lse=lse,
    )  # fmt: skip
    _check(status, pos, val, C, opts.ignore_index)
    return float(loss)


def _check(status: ce_status, pos: int, val: int, C: int, ignore_index: int) -> None:
    if status == ce_status.CE_ERR_TARGET_INDEX:
        raise target_index_error(val, pos, C, ignore_index)
    if status == ce_status.CE_ERR_NOMEM:
        raise no_memory()


def plain_kernel(
    x: np.ndarray,
    target: np.ndarray,
    reduction: ce_reduction,
    num_threads: int,
    *,
    loss_out: np.ndarray | None = None,
    lse_out: np.ndarray | None = None,
    grad: np.ndarray | None = None,
    lse: np.ndarray | None = None,
    grad_output: np.ndarray | None = None,
    grad_output_scalar: float = 1.0,
) -> float:
    """The kernel on the common call -- C-contiguous (N, C) float32/float64
    logits, contiguous int64 labels, no options, a valid reduction and
    thread count -- which the caller has established (a front end's small
    calls, with its own output buffers); the kernel checks the labels."""
    N, C = x.shape
    status, loss, pos, val = _core.categorical(
        x=x, outer=N, C=C, inner=1, xs=(C, 1, 1), target=target, reduction=reduction, loss_out=loss_out,
        grad=grad, lse_out=lse_out, lse=lse, grad_output=grad_output, grad_output_scalar=grad_output_scalar,
        num_threads=num_threads,
    )  # fmt: skip
    _check(status, pos, val, C, -100)
    return float(loss)


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    num_threads: int | None = None,
    return_lse: bool = False,
) -> Any:
    return _run(**locals(), want_grad=False)[0]


def cross_entropy_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    num_threads: int | None = None,
    grad_output: ArrayLike | None = None,
    out: np.ndarray | None = None,
    lse: ArrayLike | None = None,
) -> np.ndarray:
    grad = _run(**locals(), want_grad=True)[1]
    assert grad is not None
    return grad


def cross_entropy_and_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    axis: int = -1,
    weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    num_threads: int | None = None,
    grad_output: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> tuple[Any, np.ndarray]:
    loss, grad = _run(**locals(), want_grad=True)
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
    "    grad : ndarray\n        The logits' shape, in their compute dtype or 16-bit dtype (``out`` if\n"
    "        given).",
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

# the saved-lse pair (an autograd's forward and backward: ce_fast.torch's)
cross_entropy.__doc__ += """
    return_lse : bool, default False
        Return ``(loss, lse)``: ``lse`` is each sample's log-sum-exp of its
        (capped) logits, float64 of the per-sample shape whatever the
        logits' dtype (rounded to float32 it would lose what a confident
        row's gradient needs); NaN for ignored samples (never read) and for
        rows whose loss is NaN. Storing it costs one write per sample.
"""
cross_entropy_grad.__doc__ += """
    lse : array_like, optional
        The ``lse`` that ``cross_entropy(..., return_lse=True)`` returned for
        these logits and options (read as float64; its values at ignored
        samples are not read). The gradient is then computed from it in one
        pass over the logits, ``p = exp(x - lse)``, without the row maximum
        and sum passes; where ``p > 1/2`` it takes ``A expm1(x - lse) +
        (A - b)`` so that confident rows keep their gradient (as accurate as
        ``x - lse``: an absolute error of about ``2**-53 |lse|``). No loss is
        computed. A ``lse`` of another shape is a ValueError; one that does
        not belong to the logits gives a wrong gradient (it is not checked).
"""
