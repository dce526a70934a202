"""KL and Jensen-Shannon divergences of a linear layer's output (the
student's ``hidden @ weight.T + bias``) from a teacher, in chunks of rows so
that the student's N x C logits -- and the teacher's, when the teacher is
given as its own layer -- never exist at once (the chunking is
ce_fast/_chunked.py's, as linear_cross_entropy's)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from ._chunked import LayerGrads, LinearLayer, chunk_rows, chunk_upstream, chunks, finish
from ._core import ce_reduction, ce_teacher_kind
from ._divergence import DOC_COMMON, TeacherIs, kernel
from ._validation import as_array, as_float, divergence_layout, divergence_options, per_sample, tokens

_NONE, _MEAN = ce_reduction.CE_RED_NONE, ce_reduction.CE_RED_MEAN


class _Problem:
    """Validated inputs, flattened to (N, D) rows."""

    def __init__(self, hidden: Any, weight: Any, teacher: Any, options: dict[str, Any]) -> None:
        self.opts = opts = divergence_options(**options)
        self.student = lay = LinearLayer(hidden, weight, options["bias"])
        N, C, dt = lay.N, lay.C, lay.dt
        th = options["teacher_hidden"]
        self.teacher: LinearLayer | None = None
        self.t: np.ndarray | None = None
        if (teacher is None) == (th is None and options["teacher_weight"] is None):
            raise ValueError(
                "give the teacher either as an array (teacher) or as teacher_hidden, teacher_weight"
            )
        y = options["target"]
        y = None if y is None else as_array(y, "target")
        if teacher is None:
            if opts.teacher_is != ce_teacher_kind.CE_TEACHER_LOGITS:
                raise ValueError("a teacher given as a layer (teacher_hidden, teacher_weight) gives logits")
            names = ("teacher_hidden", "teacher_weight", "teacher_bias")
            self.teacher = tl = LinearLayer(th, options["teacher_weight"], options["teacher_bias"], names, dt)
            if (tl.sample_shape, tl.C) != (lay.sample_shape, C):
                raise ValueError(
                    f"the teacher's logits would have shape {tl.sample_shape + (tl.C,)}, "
                    f"the student's {lay.sample_shape + (C,)}"
                )
            divergence_layout(lay.like_logits(), tl.like_logits(), y, -1, opts, dtype=dt)
        else:
            t = as_array(teacher, "teacher")
            divergence_layout(lay.like_logits(), t, y, -1, opts, dtype=dt)
            self.t = np.ascontiguousarray(as_float(t, "teacher", dt).reshape(N, C))
        self.y = None if y is None else tokens(y, opts).reshape(N)
        sw = options["sample_weight"]
        self.sw = None if sw is None else per_sample(sw, lay.sample_shape, dt, "sample_weight").reshape(N)
        buffers = 1 if self.teacher is None else 2
        self.chunk = chunk_rows(options["chunk_size"], N, C, lay.D, dt.itemsize, buffers)

    def mean_denominator(self) -> float:
        return self.opts.mean_denominator(self.student.N, tokens=self.y, sample_weight=self.sw)


def _run(
    hidden: Any, weight: Any, teacher: Any, options: dict[str, Any], want_grad: bool
) -> tuple[Any, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    grad_output = options.pop("grad_output", None)
    p = _Problem(hidden, weight, teacher, options)
    lay, red = p.student, p.opts.reduction
    go_rows, go = (
        chunk_upstream(grad_output, red != _NONE, red == _MEAN, lay, p.mean_denominator)
        if want_grad
        else (None, 1.0)
    )
    rows = min(p.chunk, lay.N)
    buf = np.empty((rows, lay.C), lay.dt)
    tbuf = None if p.teacher is None else np.empty((rows, lay.C), lay.dt)
    per = np.empty(lay.N, lay.dt) if red == _NONE else None
    opts = replace(p.opts, reduction=_NONE if per is not None else ce_reduction.CE_RED_SUM)
    grads = LayerGrads(lay) if want_grad else None
    total = 0.0
    for r0, r1 in chunks(lay.N, p.chunk):
        z = lay.logits(buf, r0, r1)
        if p.teacher is not None:
            assert tbuf is not None
            tz = p.teacher.logits(tbuf, r0, r1)
        else:
            assert p.t is not None
            tz = p.t[r0:r1]
        total += kernel(
            z, tz, 1, lay.C, opts, target=None if p.y is None else p.y[r0:r1],
            sample_weight=None if p.sw is None else p.sw[r0:r1],
            grad_output=None if go_rows is None else go_rows[r0:r1], grad_output_scalar=go,
            grad=z if grads is not None else None, loss_out=None if per is None else per[r0:r1],
        )  # fmt: skip
        if grads is not None:
            grads.add(z, r0, r1)
    loss = finish(total, per, lay, red == _MEAN, p.mean_denominator)
    if grads is None:
        return loss, None, None, None
    return (loss, *grads.result())


def linear_kl_divergence(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher: ArrayLike | None = None,
    *,
    bias: ArrayLike | None = None,
    teacher_hidden: ArrayLike | None = None,
    teacher_weight: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    teacher_is: TeacherIs = "logits",
    temperature: float = 1.0,
    direction: Literal["forward", "reverse"] = "forward",
    sample_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    target: ArrayLike | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    num_threads: int | None = None,
    chunk_size: int | None = None,
) -> Any:
    options = locals().copy()
    del options["hidden"], options["weight"], options["teacher"]
    return _run(hidden, weight, teacher, options, want_grad=False)[0]


def linear_kl_divergence_and_grad(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher: ArrayLike | None = None,
    *,
    bias: ArrayLike | None = None,
    teacher_hidden: ArrayLike | None = None,
    teacher_weight: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    teacher_is: TeacherIs = "logits",
    temperature: float = 1.0,
    direction: Literal["forward", "reverse"] = "forward",
    sample_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    target: ArrayLike | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    num_threads: int | None = None,
    grad_output: ArrayLike | None = None,
    chunk_size: int | None = None,
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray | None]:
    options = locals().copy()
    del options["hidden"], options["weight"], options["teacher"]
    return _grads(_run(hidden, weight, teacher, options, want_grad=True))


def linear_js_divergence(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher: ArrayLike | None = None,
    *,
    beta: float = 0.5,
    bias: ArrayLike | None = None,
    teacher_hidden: ArrayLike | None = None,
    teacher_weight: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    teacher_is: TeacherIs = "logits",
    temperature: float = 1.0,
    sample_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    target: ArrayLike | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    num_threads: int | None = None,
    chunk_size: int | None = None,
) -> Any:
    options = locals().copy()
    del options["hidden"], options["weight"], options["teacher"]
    return _run(hidden, weight, teacher, options, want_grad=False)[0]


def linear_js_divergence_and_grad(
    hidden: ArrayLike,
    weight: ArrayLike,
    teacher: ArrayLike | None = None,
    *,
    beta: float = 0.5,
    bias: ArrayLike | None = None,
    teacher_hidden: ArrayLike | None = None,
    teacher_weight: ArrayLike | None = None,
    teacher_bias: ArrayLike | None = None,
    teacher_is: TeacherIs = "logits",
    temperature: float = 1.0,
    sample_weight: ArrayLike | None = None,
    ignore_index: int | None = None,
    target: ArrayLike | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    num_threads: int | None = None,
    grad_output: ArrayLike | None = None,
    chunk_size: int | None = None,
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray | None]:
    options = locals().copy()
    del options["hidden"], options["weight"], options["teacher"]
    return _grads(_run(hidden, weight, teacher, options, want_grad=True))


def _grads(
    res: tuple[Any, np.ndarray | None, np.ndarray | None, np.ndarray | None],
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray | None]:
    loss, d_hidden, d_weight, d_bias = res
    assert d_hidden is not None and d_weight is not None
    return loss, d_hidden, d_weight, d_bias


_PARAMS = (
    """
    Parameters
    ----------
    hidden : array_like of shape (..., D)
        The student layer's input; the leading axes are the rows. Mixed
        dtypes compute in the promoted one, float16 in float32, integers in
        float64.
    weight : array_like of shape (C, D)
        The student's logits are ``hidden @ weight.T + bias`` (``torch.nn.Linear``).
    teacher : array_like of shape (..., C), optional
        The teacher as ``teacher_is`` says (logits, log-probabilities or
        probabilities), converted to the student's compute dtype. Give either
        this or ``teacher_hidden`` and ``teacher_weight``.
    bias : array_like of shape (C,), optional
    teacher_hidden, teacher_weight, teacher_bias : array_like, optional
        The teacher as its own layer (hidden of the student's leading shape,
        any width D'; weight (C, D')): its logits are computed a chunk at a
        time too, in the student's compute dtype. No gradient flows to it.
"""
    + DOC_COMMON[DOC_COMMON.index("    teacher_is :") : DOC_COMMON.index("    axis :")]
    + DOC_COMMON[DOC_COMMON.index("    sample_weight :") :]
    + """
    chunk_size : int, optional
        Rows per chunk. Default: the chunk's logits buffers (one, or two
        with a teacher layer) take max(64 MiB, the weight matrix's bytes) in
        all, at least 16 rows; the peak extra memory is then about that plus
        the outputs (``C D + N D``). The matmuls are NumPy's (its BLAS and
        threads); ``num_threads`` applies to the divergence kernel."""
)
_GRAD = """
    grad_output : float or array_like, optional
        Upstream gradient (default 1): a scalar for "mean"/"sum"; a scalar or
        an array of shape ``hidden.shape[:-1]`` for "none".

    Returns
    -------
    loss : numpy scalar or ndarray
    d_hidden : ndarray
        The gradient with respect to ``hidden`` (its shape, compute dtype).
    d_weight : ndarray of shape (C, D)
    d_bias : ndarray of shape (C,) or None
        None when ``bias`` is None."""
_JS = """
    beta : float in [0, 1], default 0.5
        As :func:`js_divergence` (0: forward KL, 1: reverse KL)."""
_DIRECTION = """
    direction : {"forward", "reverse"}, default "forward"
        KL(P || Q) or KL(Q || P)."""


def _doc(summary: str, extra: str, grad: bool, example: str) -> str:
    returns = _GRAD if grad else "\n\n    Returns\n    -------\n    loss : numpy scalar or ndarray"
    return summary + "\n" + _PARAMS + extra + returns + "\n\n    Examples\n    --------\n" + example


_EX = (
    "    >>> import numpy as np, ce_fast\n"
    "    >>> rng = np.random.default_rng(0)\n"
    "    >>> h, W = rng.standard_normal((6, 4)), rng.standard_normal((5, 4))\n"
    "    >>> th, tW = rng.standard_normal((6, 3)), rng.standard_normal((5, 3))\n"
)
linear_kl_divergence.__doc__ = _doc(
    """KL divergence between a teacher and ``softmax((hidden @ weight.T + bias) / T)``
    without holding the logits: the value of ``kl_divergence(hidden @ weight.T
    + bias, teacher_logits, ...)`` (to rounding), a chunk of rows at a time.""",
    _DIRECTION,
    False,
    _EX
    + "    >>> a = ce_fast.linear_kl_divergence(h, W, teacher_hidden=th, teacher_weight=tW, chunk_size=4)\n"
    "    >>> bool(np.isclose(a, ce_fast.kl_divergence(h @ W.T, th @ tW.T)))\n"
    "    True\n",
)
linear_kl_divergence_and_grad.__doc__ = _doc(
    """Loss and gradients (to ``hidden``, ``weight``, ``bias``) of
    :func:`linear_kl_divergence`, chunk by chunk: each chunk's logits are
    overwritten by their gradient (the fused kernel) and multiplied back.""",
    _DIRECTION,
    True,
    _EX + "    >>> t = th @ tW.T\n"
    "    >>> loss, dh, dW, db = ce_fast.linear_kl_divergence_and_grad(h, W, t, direction='reverse')\n"
    "    >>> g = ce_fast.kl_divergence_and_grad(h @ W.T, t, direction='reverse')[1]\n"
    "    >>> bool(np.allclose(dh, g @ W) and np.allclose(dW, g.T @ h)), db is None\n"
    "    (True, True)\n",
)
linear_js_divergence.__doc__ = _doc(
    """Generalised Jensen-Shannon divergence between a teacher and the student's
    ``softmax((hidden @ weight.T + bias) / T)``, chunked as :func:`linear_kl_divergence`.""",
    _JS,
    False,
    _EX + "    >>> a = ce_fast.linear_js_divergence(h, W, teacher_hidden=th, teacher_weight=tW, beta=0.1)\n"
    "    >>> bool(np.isclose(a, ce_fast.js_divergence(h @ W.T, th @ tW.T, beta=0.1)))\n"
    "    True\n",
)
linear_js_divergence_and_grad.__doc__ = _doc(
    """Loss and gradients of :func:`linear_js_divergence`.""",
    _JS,
    True,
    _EX + "    >>> b = np.zeros(5)\n"
    "    >>> loss, dh, dW, db = ce_fast.linear_js_divergence_and_grad(h, W, th @ tW.T, bias=b)\n"
    "    >>> g = ce_fast.js_divergence_and_grad(h @ W.T, th @ tW.T)[1]\n"
    "    >>> bool(np.allclose(db, g.sum(0)))\n"
    "    True\n",
)
