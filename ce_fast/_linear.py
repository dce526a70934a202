"""Cross-entropy of a linear layer's output, ``hidden @ weight.T + bias``,
computed in chunks of rows so that the N x C logits never exist at once
(the chunking is ce_fast/_chunked.py's)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from ._categorical import _DOC_PARAMS, kernel
from ._chunked import LayerGrads, LinearLayer, auto_chunk_size, chunk_rows, chunk_upstream, chunks, finish
from ._core import ce_reduction
from ._validation import (
    as_array,
    as_float,
    categorical_layout,
    categorical_options,
    check_int_target,
    class_weight,
    int_target,
    is_half,
    per_sample,
)

__all__ = ["auto_chunk_size", "linear_cross_entropy", "linear_cross_entropy_and_grad"]

_NONE, _MEAN = ce_reduction.CE_RED_NONE, ce_reduction.CE_RED_MEAN


class _Problem:
    """Validated inputs, flattened to (N, D) rows."""

    def __init__(self, hidden: Any, weight: Any, target: Any, options: dict[str, Any]) -> None:
        """``options``: linear_cross_entropy's keywords."""
        self.opts = categorical_options(**options)
        self.layer = lay = LinearLayer(hidden, weight, options["bias"], half=True)
        self.sample_shape, self.N, self.C, self.dt = lay.sample_shape, lay.N, lay.C, lay.dt
        C, dt = lay.C, lay.dt
        t = as_array(target, "target")
        clay = categorical_layout(lay.like_logits(), t, -1, self.opts, dtype=dt)
        self.cw = class_weight(options["class_weight"], C, dt, "class_weight")
        sw = options["sample_weight"]
        self.sw = (
            None if sw is None else per_sample(sw, self.sample_shape, dt, "sample_weight").reshape(self.N)
        )
        if clay.probs:
            self.labels = None
            # 16-bit probabilities: converted a chunk of rows at a time (kernel())
            q = t if is_half(t.dtype) else as_float(t, "target", dt)
            self.q: np.ndarray | None = np.ascontiguousarray(q.reshape(self.N, C))
        else:
            # checked here, not by the per-chunk kernel calls, whose flat
            # positions would be relative to their chunk
            self.labels = int_target(t, clay, self.opts).reshape(self.N)
            self.q = None
            check_int_target(self.labels, C, self.opts)
        self.chunk = chunk_rows(options["chunk_size"], self.N, C, lay.D, dt.itemsize)

    def mean_denominator(self) -> float:
        return self.opts.mean_denominator(
            self.N, labels=self.labels, C=self.C, class_weight=self.cw, sample_weight=self.sw
        )

    def kernel(self, z: np.ndarray, r0: int, r1: int, red: ce_reduction, **kw: Any) -> float:
        """One chunk's loss (and gradient, with ``grad=``) through the fused
        kernel, with the chunk's rows of every per-row operand."""
        return kernel(
            z, 1, self.C, replace(self.opts, reduction=red),
            target=None if self.labels is None else self.labels[r0:r1],
            q=None if self.q is None else as_float(self.q[r0:r1], "target", self.dt), weight=self.cw,
            sample_weight=None if self.sw is None else self.sw[r0:r1], **kw,
        )  # fmt: skip


def _run(
    hidden: Any, weight: Any, target: Any, options: dict[str, Any], want_grad: bool
) -> tuple[Any, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    grad_output = options.pop("grad_output", None)
    p = _Problem(hidden, weight, target, options)
    wanted = (want_grad, want_grad, want_grad)
    return run(p, grads=wanted, grad_output=grad_output)


def run(
    p: _Problem,
    *,
    grads: tuple[bool, bool, bool] = (False, False, False),
    grad_output: Any = None,
    d_hidden: np.ndarray | None = None,
    d_weight: np.ndarray | None = None,
    d_bias: np.ndarray | None = None,
    lse_out: np.ndarray | None = None,
    lse: np.ndarray | None = None,
    via_lse: bool = False,
) -> tuple[Any, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The chunk loop. ``grads``: which of (d_hidden, d_weight, d_bias) to
    compute, into the given buffers ((N, D), (C, D), (C,) of the compute
    dtype, C-contiguous) or new ones (see LayerGrads). ``lse_out``: the
    per-row log-sum-exp is stored there ((N,) float64). ``lse``: the
    gradients alone, from this saved log-sum-exp (no loss: None is returned
    for it). ``via_lse``: loss and gradients with each chunk's gradient taken
    from its lse (a second pass over the chunk's logits, in cache), so that
    they are bitwise those that a later call with ``lse`` recomputes
    (autograd's retained graphs)."""
    red = p.opts.reduction
    want_grad = any(grads)
    go_rows, go_scalar = (
        chunk_upstream(grad_output, red != _NONE, red == _MEAN, p.layer, p.mean_denominator)
        if want_grad
        else (None, 1.0)
    )
    buf = np.empty((min(p.chunk, p.N), p.C), p.dt)
    per = np.empty(p.N, p.dt) if red == _NONE and lse is None else None
    chunk_red = _NONE if red == _NONE else ce_reduction.CE_RED_SUM
    acc = LayerGrads(p.layer, grads, d_hidden, d_weight, d_bias) if want_grad else None
    if via_lse and want_grad and lse is None and lse_out is None:
        lse_out = np.empty(p.N, np.float64)
    total = 0.0
    for r0, r1 in chunks(p.N, p.chunk):
        z = p.layer.logits(buf, r0, r1)
        rows = {
            "loss_out": None if per is None else per[r0:r1],
            "lse_out": None if lse_out is None else lse_out[r0:r1],
            "lse": None if lse is None else lse[r0:r1],
        }
        if acc is None or via_lse:
            total += p.kernel(z, r0, r1, chunk_red, **rows)
            if acc is None:
                continue
            rows = {"lse": rows["lse_out"]}
        go = None if go_rows is None else go_rows[r0:r1]
        total += p.kernel(z, r0, r1, chunk_red, grad=z, grad_output=go, grad_output_scalar=go_scalar, **rows)
        acc.add(z, r0, r1)
    loss = None if lse is not None else finish(total, per, p.layer, red == _MEAN, p.mean_denominator)
    if acc is None:
        return loss, None, None, None
    return (loss, *acc.result())


def linear_cross_entropy(
    hidden: ArrayLike,
    weight: ArrayLike,
    target: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    num_threads: int | None = None,
    chunk_size: int | None = None,
) -> Any:
    options = locals().copy()
    del options["hidden"], options["weight"], options["target"]
    return _run(hidden, weight, target, options, want_grad=False)[0]


def linear_cross_entropy_and_grad(
    hidden: ArrayLike,
    weight: ArrayLike,
    target: ArrayLike,
    *,
    bias: ArrayLike | None = None,
    class_weight: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    ignore_index: int = -100,
    reduction: Literal["mean", "sum", "none"] = "mean",
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    num_threads: int | None = None,
    grad_output: ArrayLike | None = None,
    chunk_size: int | None = None,
) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray | None]:
    options = locals().copy()
    del options["hidden"], options["weight"], options["target"]
    loss, d_hidden, d_weight, d_bias = _run(hidden, weight, target, options, want_grad=True)
    assert d_hidden is not None and d_weight is not None
    return loss, d_hidden, d_weight, d_bias


_LINEAR_PARAMS = (
    """
    Parameters
    ----------
    hidden : array_like of shape (..., D)
        The layer's input; the leading axes are the samples. float32 and
        float64 are computed natively (mixed inputs in the promoted dtype),
        integers in float64. float16 or bfloat16 ``hidden`` and ``weight``
        (and ``bias``) of one dtype are multiplied in float32 (NumPy has no
        16-bit matmul), a chunk of rows of ``hidden`` and a slab of ~8 MiB
        of ``weight`` converted at a time, never a whole float32 copy: the
        loss is float32, the gradients come back in that 16-bit dtype
        (accumulated in float32, each rounded once; float32 for bfloat16
        without ml_dtypes). Mixed with another dtype: the promoted dtype.
    weight : array_like of shape (C, D)
        The layer's weight, as ``torch.nn.Linear``: the logits are
        ``hidden @ weight.T + bias``.
    target : array_like
        Integer class indices of shape ``hidden.shape[:-1]``, or probabilities
        of shape ``hidden.shape[:-1] + (C,)``.
    bias : array_like of shape (C,), optional
    class_weight : array_like of shape (C,), optional
        The class weights that :func:`cross_entropy` calls ``weight`` (renamed
        because ``weight`` is the layer's matrix here, as in ``F.linear``).
"""
    + _DOC_PARAMS[_DOC_PARAMS.index("    sample_weight :") :]
    + """
    chunk_size : int, optional
        Rows per chunk. Default: max(D, 64 MiB / (C * itemsize)) rows (the
        chunk's logits take as much memory as ``weight``), at least 16: few
        enough chunks that re-reading the weight matrix per chunk costs
        ~10 %. The peak extra memory is then about ``chunk_size * C``
        elements plus the outputs (``2 C D + N D`` in all by default): the
        N x C logits never exist at once. The matmuls are NumPy's (its BLAS and its threads);
        ``num_threads`` applies to the cross-entropy kernel. With 16-bit
        operands the logits are float32 and ``d_weight`` is accumulated in
        a float32 (C, D) array (the one float32 array of the weight's size)
        before it is rounded."""
)

linear_cross_entropy.__doc__ = (
    """Cross-entropy of ``hidden @ weight.T + bias`` without holding the logits.

    The same value as ``cross_entropy(hidden @ weight.T + bias, target, ...)``
    (to rounding), computed a chunk of rows at a time.
"""
    + _LINEAR_PARAMS
    + """

    Returns
    -------
    loss : numpy scalar or ndarray
        As :func:`cross_entropy` (per-sample losses of shape
        ``hidden.shape[:-1]`` for "none").

    Examples
    --------
    >>> import numpy as np, ce_fast
    >>> rng = np.random.default_rng(0)
    >>> h, W = rng.standard_normal((6, 4)), rng.standard_normal((5, 4))
    >>> y = np.array([0, 1, 2, 3, 4, 0])
    >>> a = ce_fast.linear_cross_entropy(h, W, y, chunk_size=4)
    >>> bool(np.isclose(a, ce_fast.cross_entropy(h @ W.T, y)))
    True
"""
)
linear_cross_entropy_and_grad.__doc__ = (
    """Loss and gradients of :func:`linear_cross_entropy`, chunk by chunk.

    For each chunk of rows the logits are computed into one reused buffer,
    overwritten in place by their gradient (the fused kernel), and
    multiplied back: ``d_hidden[rows] = G @ weight`` and
    ``d_weight += G.T @ hidden[rows]``; ``d_bias`` sums G over rows in
    float64. The results equal the unfused composition to rounding.
"""
    + _LINEAR_PARAMS
    + """
    grad_output : float or array_like, optional
        Upstream gradient (default 1): a scalar for "mean"/"sum"; a scalar or
        an array of shape ``hidden.shape[:-1]`` for "none".

    Returns
    -------
    loss : numpy scalar or ndarray
        As :func:`linear_cross_entropy`.
    d_hidden : ndarray
        The gradient with respect to ``hidden`` (its shape, compute dtype).
    d_weight : ndarray of shape (C, D)
    d_bias : ndarray of shape (C,) or None
        None when ``bias`` is None.

    Examples
    --------
    >>> import numpy as np, ce_fast
    >>> rng = np.random.default_rng(0)
    >>> h, W, b = rng.standard_normal((6, 4)), rng.standard_normal((5, 4)), np.zeros(5)
    >>> loss, dh, dW, db = ce_fast.linear_cross_entropy_and_grad(h, W, np.arange(6) % 5, bias=b)
    >>> g = ce_fast.cross_entropy_grad(h @ W.T, np.arange(6) % 5)
    >>> bool(np.allclose(dh, g @ W) and np.allclose(dW, g.T @ h) and np.allclose(db, g.sum(0)))
    True
"""
)
