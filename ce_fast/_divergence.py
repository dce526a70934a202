"""Divergences between a teacher distribution and the student's softmax, for
knowledge distillation: the public functions and their argument handling.
The arithmetic is in src/divergence_impl.h."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from . import _core
from ._core import ce_reduction, ce_status
from ._validation import (
    DivergenceLayout,
    DivergenceOptions,
    as_array,
    as_float,
    divergence_layout,
    divergence_options,
    no_memory,
    output,
    per_sample,
    strided_view,
    tokens,
    unaliased,
    upstream,
)

_NONE = ce_reduction.CE_RED_NONE
TeacherIs = Literal["logits", "log_probs", "probs"]
Reduction = Literal["mean", "sum", "none"]


def kernel(
    x: np.ndarray,
    t: np.ndarray,
    axis: int,
    C: int,
    opts: DivergenceOptions,
    *,
    target: np.ndarray | None = None,
    sample_weight: np.ndarray | None = None,
    grad_output: np.ndarray | None = None,
    grad_output_scalar: float = 1.0,
    grad: np.ndarray | None = None,
    loss_out: np.ndarray | None = None,
) -> float:
    """The divergence kernel on validated, converted and unaliased operands
    (also the linear functions' per-chunk call and ce_fast.dask's per-block
    call). Returns the reduced divergence (0 for "none": see loss_out)."""
    x, outer, _, inner, xs = strided_view(x, axis)
    t, _, _, _, ts = strided_view(t, axis)
    status, loss = _core.divergence(
        kind=opts.kind, teacher_is=opts.teacher_is, x=x, outer=outer, C=C, inner=inner, xs=xs,
        t=t, ts=ts, inv_temperature=opts.inv_temperature, beta=opts.beta, target=target,
        ignore_index=0 if opts.ignore_index is None else opts.ignore_index,
        sample_weight=sample_weight, grad_output=grad_output,
        grad_output_scalar=grad_output_scalar, reduction=opts.reduction, loss_out=loss_out,
        grad=grad, num_threads=opts.num_threads,
    )  # fmt: skip
    if status == ce_status.CE_ERR_NOMEM:
        raise no_memory()
    return float(loss)


def prepare(
    student: Any, teacher: Any, target: Any, axis: Any, opts: DivergenceOptions
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, DivergenceLayout]:
    """The student, the teacher (in the student's compute dtype) and the
    tokens as the kernel takes them, with their checked layout."""
    x = as_float(student, "student")
    tch = as_array(teacher, "teacher")
    y = None if target is None else as_array(target, "target")
    lay = divergence_layout(x, tch, y, axis, opts)
    t = as_float(tch, "teacher", lay.dtype)
    return x, t, None if y is None else tokens(y, opts), lay


def _run(
    student: Any,
    teacher: Any,
    *,
    options: dict[str, Any],
    want_grad: bool,
    grad_output: Any = None,
    out: Any = None,
) -> tuple[Any, np.ndarray | None]:
    opts = divergence_options(**options)
    x, t, y, lay = prepare(student, teacher, options["target"], options["axis"], opts)
    dt = lay.dtype
    sw = options["sample_weight"]
    sw = None if sw is None else per_sample(sw, lay.sample_shape, dt, "sample_weight")
    go_arr, go = None, 1.0
    grad = None
    if want_grad:
        go_arr, go = upstream(grad_output, opts.reduction != _NONE, lay.sample_shape, dt, "per-sample")
        go_arr = None if go_arr is None else np.ascontiguousarray(go_arr)
        grad = output(out, lay.shape, dt)
        x = unaliased(grad, x, in_place=True)
        t, y, sw, go_arr = (unaliased(grad, a) for a in (t, y, sw, go_arr))
    loss_out = np.empty(lay.sample_shape, dt) if opts.reduction == _NONE else None
    loss = kernel(
        x, t, lay.axis, lay.C, opts, target=y, sample_weight=sw, grad_output=go_arr,
        grad_output_scalar=go, grad=grad, loss_out=loss_out,
    )  # fmt: skip
    return (loss_out if loss_out is not None else dt.type(loss)), grad


def kl_divergence(
    student: ArrayLike,
    teacher: ArrayLike,
    *,
    teacher_is: TeacherIs = "logits",
    temperature: float = 1.0,
    direction: Literal["forward", "reverse"] = "forward",
    axis: int = -1,
    sample_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    target: ArrayLike | None = None,
    reduction: Reduction = "mean",
    num_threads: int | None = None,
) -> Any:
    options = locals().copy()
    del options["student"], options["teacher"]
    return _run(student, teacher, options=options, want_grad=False)[0]


def kl_divergence_and_grad(
    student: ArrayLike,
    teacher: ArrayLike,
    *,
    teacher_is: TeacherIs = "logits",
    temperature: float = 1.0,
    direction: Literal["forward", "reverse"] = "forward",
    axis: int = -1,
    sample_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    target: ArrayLike | None = None,
    reduction: Reduction = "mean",
    num_threads: int | None = None,
    grad_output: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> tuple[Any, np.ndarray]:
    options = locals().copy()
    for k in ("student", "teacher", "grad_output", "out"):
        del options[k]
    loss, grad = _run(student, teacher, options=options, want_grad=True, grad_output=grad_output, out=out)
    assert grad is not None
    return loss, grad


def js_divergence(
    student: ArrayLike,
    teacher: ArrayLike,
    *,
    beta: float = 0.5,
    teacher_is: TeacherIs = "logits",
    temperature: float = 1.0,
    axis: int = -1,
    sample_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    target: ArrayLike | None = None,
    reduction: Reduction = "mean",
    num_threads: int | None = None,
) -> Any:
    options = locals().copy()
    del options["student"], options["teacher"]
    return _run(student, teacher, options=options, want_grad=False)[0]


def js_divergence_and_grad(
    student: ArrayLike,
    teacher: ArrayLike,
    *,
    beta: float = 0.5,
    teacher_is: TeacherIs = "logits",
    temperature: float = 1.0,
    axis: int = -1,
    sample_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    target: ArrayLike | None = None,
    reduction: Reduction = "mean",
    num_threads: int | None = None,
    grad_output: ArrayLike | None = None,
    out: np.ndarray | None = None,
) -> tuple[Any, np.ndarray]:
    options = locals().copy()
    for k in ("student", "teacher", "grad_output", "out"):
        del options[k]
    loss, grad = _run(student, teacher, options=options, want_grad=True, grad_output=grad_output, out=out)
    assert grad is not None
    return loss, grad


DOC_COMMON = """
    student : array_like
        The student's logits x; float32 and float64 are computed natively,
        float16 in float32, integers and bool in float64. Q = softmax(x / T).
    teacher : array_like
        The student's shape; converted to the student's compute dtype.
        Read as ``teacher_is`` says.
    teacher_is : {"logits", "log_probs", "probs"}, default "logits"
        P = softmax(teacher / T) for "logits"; P = exp(teacher) for
        "log_probs" and P = teacher for "probs" (neither renormalised nor
        tempered, as ``torch.nn.functional.kl_div`` takes its target).
    temperature : float > 0, default 1
        T. There is no T**2 factor: multiply the result (and the gradient)
        by T**2 yourself where the recipe asks for it.
    axis : int, default -1
        The class axis (any axis is walked in place where the layout allows,
        as :func:`cross_entropy`).
    sample_weight : array_like, optional
        Per-row weights ``s_i`` (broadcastable to the per-row shape).
    ignore_index : int, optional
    target : array_like of int, optional
        Token ids of the per-row shape, given together with ``ignore_index``:
        rows whose target equals ``ignore_index`` (padding, prompt tokens)
        contribute nothing, their gradient rows are 0 and their logits are
        never read.
    reduction : {"mean", "sum", "none"}, default "mean"
        "mean" is ``sum_i s_i D_i / sum_i s_i`` over the rows that are not
        ignored (torch's "batchmean" without weights: the sum over rows
        divided by their number); NaN when that denominator is 0. "none"
        returns ``s_i D_i`` per row.
    num_threads : int, optional
        Threads for this call (default: the OpenMP default). Results are
        bitwise identical for every thread count."""

DOC_GRAD = """
    grad_output : float or array_like, optional
        Upstream gradient (default 1): a scalar for "mean"/"sum"; a scalar or
        a per-row array for "none".
    out : ndarray, optional
        A writable C-contiguous array of the student's shape and compute
        dtype for the gradient; ``out=student`` overwrites the student's
        logits in place. Any other operand that shares memory with ``out``
        is read as it was before the call."""

DOC_NOTES = """
    Notes
    -----
    Per row, with r_c = log P_c - log Q_c evaluated from differences of
    logits (never from two rounded log-probabilities), the divergence is a
    sum with no cancellation between large terms: a divergence of 1e-9
    (e.g. teacher = student + 1e-4 noise) keeps ~1e-7 relative accuracy in
    float64, identical student and teacher rows give exactly 0 (and a zero
    gradient). Classes with P_c = 0 (resp. Q_c = 0 for the reverse KL)
    contribute 0, so -inf logits mask classes. The result is clamped below
    at its mathematical lower bound (0 for logits, Z log Z / -log Z for a
    given teacher whose probabilities sum to Z), which it can only cross by
    rounding; for a normalised teacher every row is >= 0.

    The gradient is that of the returned value with respect to the
    student's logits x (it includes the 1/T of the chain rule): for the
    forward KL ``(Z Q - P) / T`` per row (Z = sum P, 1 for logits), for the
    reverse KL ``Q (log Q - log P - KL) / T``, scaled by the sample weight,
    ``grad_output`` and, for "mean", 1 / the denominator.

    Row rules: NaN, +inf or all -inf in the student's row; NaN or +inf in
    the teacher's; all -inf teacher logits; a negative teacher probability:
    that row's divergence and gradient are NaN. An infinite forward KL (P > 0
    on a class the student masks) keeps its finite gradient; an infinite
    reverse KL has a NaN gradient row.

    Raises
    ------
    ValueError
        Shapes that differ, C == 0, options out of range, ``target`` without
        ``ignore_index`` (or the reverse), a bad ``out``.
    TypeError
        Complex, object or string input; a target that is not integer."""


def _doc(summary: str, params: str, returns: str, grad: bool, example: str) -> str:
    return (
        summary
        + "\n\n    Parameters\n    ----------"
        + params
        + (DOC_GRAD if grad else "")
        + "\n\n    Returns\n    -------\n"
        + returns
        + "\n"
        + DOC_NOTES
        + "\n\n    Examples\n    --------\n"
        + example
    )


KL_PARAMS = DOC_COMMON.replace(
    "    axis : int",
    '    direction : {"forward", "reverse"}, default "forward"\n'
    "        KL(P || Q) = sum P (log P - log Q), the usual distillation loss, or\n"
    "        KL(Q || P) (mode-seeking, on-policy distillation).\n    axis : int",
)
JS_PARAMS = (
    """
    beta : float in [0, 1], default 0.5
        The generalised Jensen-Shannon divergence
        ``beta KL(P || M) + (1 - beta) KL(Q || M)``, M = beta P + (1 - beta) Q
        (TRL's GKD loss, Liger-Kernel's JSD); beta = 0.5 is the symmetric JSD.
        The endpoints are defined, as there, as beta = 0: the forward
        KL(P || Q) and beta = 1: the reverse KL(Q || P) (the formula's own
        limit there is 0)."""
    + DOC_COMMON
)
_RET_LOSS = (
    "    loss : numpy scalar or ndarray\n"
    '        A NumPy scalar of the compute dtype for "mean"/"sum"; the per-row\n'
    '        divergences (the per-row shape) for "none".'
)
_RET_GRAD = (
    "    loss : numpy scalar or ndarray\n        As without the gradient.\n"
    "    grad : ndarray\n        The student's shape and compute dtype (``out`` if given)."
)

kl_divergence.__doc__ = _doc(
    "Kullback-Leibler divergence between a teacher distribution P and softmax(student / T).",
    KL_PARAMS,
    _RET_LOSS,
    False,
    "    >>> import numpy as np, ce_fast\n"
    "    >>> s = np.array([[1.0, 2.0, 3.0]]); t = np.array([[1.0, 2.0, 3.5]])\n"
    "    >>> float(ce_fast.kl_divergence(s, s))\n"
    "    0.0\n"
    "    >>> round(float(ce_fast.kl_divergence(s, t)), 6)\n"
    "    0.024317\n",
)
kl_divergence_and_grad.__doc__ = _doc(
    "Loss and gradient (w.r.t. the student's logits) of :func:`kl_divergence`, in one fused pass.",
    KL_PARAMS,
    _RET_GRAD,
    True,
    "    >>> import numpy as np, ce_fast\n"
    "    >>> s = np.zeros((2, 4)); t = np.log([[0.7, 0.1, 0.1, 0.1]] * 2)\n"
    '    >>> loss, g = ce_fast.kl_divergence_and_grad(s, t, teacher_is="log_probs", reduction="sum")\n'
    "    >>> g[0]\n"
    "    array([-0.45,  0.15,  0.15,  0.15])\n",
)
js_divergence.__doc__ = _doc(
    "Generalised Jensen-Shannon divergence between a teacher distribution P and softmax(student / T).",
    JS_PARAMS,
    _RET_LOSS,
    False,
    "    >>> import numpy as np, ce_fast\n"
    "    >>> s = np.array([[0.0, 0.0]]); t = np.array([[0.0, -np.inf]])\n"
    "    >>> bool(np.isclose(ce_fast.js_divergence(s, t), 0.75 * np.log(4 / 3)))\n"
    "    True\n",
)
js_divergence_and_grad.__doc__ = _doc(
    "Loss and gradient (w.r.t. the student's logits) of :func:`js_divergence`.",
    JS_PARAMS,
    _RET_GRAD,
    True,
    "    >>> import numpy as np, ce_fast\n"
    "    >>> x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)\n"
    "    >>> loss, g = ce_fast.js_divergence_and_grad(x, x[::-1].copy(), beta=0.1, out=x)\n"
    "    >>> g is x, bool(abs(g.sum()) < 1e-6)\n"
    "    (True, True)\n",
)
