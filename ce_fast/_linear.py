"""Cross-entropy of a linear layer's output, ``hidden @ weight.T + bias``,
computed in chunks of rows so that the N x C logits never exist at once.

Each chunk's logits are produced by NumPy's BLAS into one reused buffer,
turned into their gradient in place by the fused categorical kernel, and
pushed back through the two matmuls before the next chunk overwrites them."""

from __future__ import annotations

import math
import numbers
from dataclasses import replace
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from ._categorical import _DOC_PARAMS, kernel
from ._core import ce_reduction
from ._validation import (
    as_array,
    as_float,
    categorical_layout,
    categorical_options,
    check_int_target,
    class_weight,
    int_target,
    per_sample,
    upstream,
)

_NONE, _MEAN = ce_reduction.CE_RED_NONE, ce_reduction.CE_RED_MEAN

# Each chunk's matmuls re-read (and BLAS re-packs) the whole weight matrix
# and read-modify-write its gradient, about 5 C x D of memory traffic per
# chunk against 6 rows x C x D flops: chunks of >= D rows keep that overhead
# near 10 %. So a chunk's logits may take as much memory as the weight matrix,
# and never less than this floor.
_BUDGET_FLOOR = 64 << 20
_MIN_CHUNK = 16
# Rows of the weight gradient written per matmul when accumulating across
# chunks (NumPy has no C += A @ B, so each product lands in a small buffer).
_ACCUMULATE_BYTES = 8 << 20


def auto_chunk_size(N: int, C: int, D: int, itemsize: int) -> int:
    """Rows per chunk when ``chunk_size`` is None: the chunk's logits take at
    most max(64 MiB, the weight matrix's bytes), i.e. about max(D, 64 MiB / C)
    rows, and at least 16 rows."""
    budget = max(_BUDGET_FLOOR, C * D * itemsize)
    rows = budget // max(1, C * itemsize)
    return max(1, min(N, max(_MIN_CHUNK, rows)))


class _Problem:
    """Validated inputs, flattened to (N, D) rows."""

    def __init__(self, hidden: Any, weight: Any, target: Any, options: dict[str, Any]) -> None:
        """``options``: linear_cross_entropy's keywords."""
        self.opts = categorical_options(**options)
        h = as_float(hidden, "hidden")
        w = as_float(weight, "weight")
        b = None if options["bias"] is None else as_float(options["bias"], "bias")
        dt = np.result_type(h.dtype, w.dtype, *(() if b is None else (b.dtype,)))
        if h.ndim < 1:
            raise ValueError("hidden must have at least one dimension (the features, D)")
        if w.ndim != 2:
            raise ValueError(f"weight must be 2-d (C, D), got shape {w.shape}")
        C, D = w.shape
        if h.shape[-1] != D:
            raise ValueError(f"hidden has {h.shape[-1]} features but weight has shape {w.shape} (C, D)")
        if C == 0:
            raise ValueError("weight has no rows: the class axis is empty (C == 0)")
        if b is not None and b.shape != (C,):
            raise ValueError(f"bias must be 1-d of length C = {C}, got shape {b.shape}")
        self.sample_shape = h.shape[:-1]
        self.N = math.prod(self.sample_shape)
        self.C, self.D, self.dt = C, D, dt
        # the logits' shape and dtype, never materialised
        logits = np.broadcast_to(np.empty((), dt), self.sample_shape + (C,))
        t = as_array(target, "target")
        lay = categorical_layout(logits, t, -1, self.opts, dtype=dt)
        self.h = np.ascontiguousarray(h.reshape(self.N, D), dtype=dt)
        self.w = np.ascontiguousarray(w, dtype=dt)
        self.b = None if b is None else np.ascontiguousarray(b, dtype=dt)
        self.cw = class_weight(options["class_weight"], C, dt, "class_weight")
        sw = options["sample_weight"]
        self.sw = (
            None if sw is None else per_sample(sw, self.sample_shape, dt, "sample_weight").reshape(self.N)
        )
        if lay.probs:
            self.labels = None
            self.q: np.ndarray | None = np.ascontiguousarray(as_float(t, "target", dt).reshape(self.N, C))
        else:
            # checked here, not by the per-chunk kernel calls, whose flat
            # positions would be relative to their chunk
            self.labels = int_target(t, lay, self.opts).reshape(self.N)
            self.q = None
            check_int_target(self.labels, C, self.opts)
        self.chunk = self._chunk_rows(options["chunk_size"])

    def _chunk_rows(self, chunk_size: Any) -> int:
        if chunk_size is None:
            return auto_chunk_size(self.N, self.C, self.D, self.dt.itemsize)
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (numbers.Integral, np.integer)):
            raise ValueError(f"chunk_size must be None or a positive integer, got {chunk_size!r}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be None or a positive integer, got {chunk_size!r}")
        return int(min(chunk_size, max(self.N, 1)))

    def mean_denominator(self) -> float:
        return self.opts.mean_denominator(
            self.N, labels=self.labels, C=self.C, class_weight=self.cw, sample_weight=self.sw
        )

    def chunks(self) -> Any:
        for r0 in range(0, self.N, self.chunk):
            yield r0, min(self.N, r0 + self.chunk)

    def logits(self, buf: np.ndarray, r0: int, r1: int) -> np.ndarray:
        z = buf[: r1 - r0]
        np.matmul(self.h[r0:r1], self.w.T, out=z)
        if self.b is not None:
            z += self.b
        return z

    def kernel(self, z: np.ndarray, r0: int, r1: int, red: ce_reduction, **kw: Any) -> float:
        """One chunk's loss (and gradient, with ``grad=``) through the fused
        kernel, with the chunk's rows of every per-row operand."""
        return kernel(
            z, 1, self.C, replace(self.opts, reduction=red),
            target=None if self.labels is None else self.labels[r0:r1],
            q=None if self.q is None else self.q[r0:r1], weight=self.cw,
            sample_weight=None if self.sw is None else self.sw[r0:r1], **kw,
        )  # fmt: skip

    def finish(self, total: float, per_sample: np.ndarray | None) -> Any:
        if per_sample is not None:
            return per_sample.reshape(self.sample_shape)
        if self.opts.reduction == _MEAN:
            denom = self.mean_denominator()
            total = total / denom if denom != 0 else math.nan
        return self.dt.type(total)


def _run(
    hidden: Any, weight: Any, target: Any, options: dict[str, Any], want_grad: bool
) -> tuple[Any, np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    grad_output = options.pop("grad_output", None)
    p = _Problem(hidden, weight, target, options)
    wanted = (want_grad, want_grad, want_grad and p.b is not None)
    loss, d_hidden, d_weight, d_bias = run(p, grads=wanted, grad_output=grad_output)
    return loss, None if d_hidden is None else d_hidden.reshape(p.sample_shape + (p.D,)), d_weight, d_bias


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
    dtype, C-contiguous) or new ones. ``lse_out``: the per-row log-sum-exp
    is stored there ((N,) float64). ``lse``: the gradients alone, from this
    saved log-sum-exp (no loss: None is returned for it). ``via_lse``: loss
    and gradients with each chunk's gradient taken from its lse (a second
    pass over the chunk's logits, in cache), so that they are bitwise those
    that a later call with ``lse`` recomputes (autograd's retained graphs)."""
    dt, N, C, D = p.dt, p.N, p.C, p.D
    want_dh, want_dw, want_db = grads
    want_grad = any(grads)
    go_rows, go_scalar = _grad_output(grad_output, p) if want_grad else (None, 1.0)
    buf = np.empty((min(p.chunk, N), C), dt)
    per = np.empty(N, dt) if p.opts.reduction == _NONE and lse is None else None
    chunk_red = _NONE if p.opts.reduction == _NONE else ce_reduction.CE_RED_SUM
    acc = db64 = None
    if want_dh and d_hidden is None:
        d_hidden = np.empty((N, D), dt)
    if want_dw:
        d_weight = np.empty((C, D), dt) if d_weight is None else d_weight
        acc = np.empty((max(1, min(C, _ACCUMULATE_BYTES // max(1, D * dt.itemsize))), D), dt)
        if N == 0:
            d_weight[...] = 0
    if want_db:
        db64 = np.zeros(C, np.float64)
    total = 0.0
    if via_lse and want_grad and lse is None and lse_out is None:
        lse_out = np.empty(N, np.float64)
    for r0, r1 in p.chunks():
        z = p.logits(buf, r0, r1)
        rows = {
            "loss_out": None if per is None else per[r0:r1],
            "lse_out": None if lse_out is None else lse_out[r0:r1],
            "lse": None if lse is None else lse[r0:r1],
        }
        if not want_grad or via_lse:
            total += p.kernel(z, r0, r1, chunk_red, **rows)
            if not want_grad:
                continue
            rows = {"lse": rows["lse_out"]}
        go = None if go_rows is None else go_rows[r0:r1]
        total += p.kernel(z, r0, r1, chunk_red, grad=z, grad_output=go, grad_output_scalar=go_scalar, **rows)
        if d_hidden is not None:
            np.matmul(z, p.w, out=d_hidden[r0:r1])
        if d_weight is not None and acc is not None:
            _accumulate_weight_grad(d_weight, z, p.h[r0:r1], acc, first=r0 == 0)
        if db64 is not None:
            db64 += z.sum(axis=0, dtype=np.float64)
    if db64 is not None:
        if d_bias is None:
            d_bias = db64.astype(dt)
        else:
            d_bias[...] = db64
    loss = None if lse is not None else p.finish(total, per)
    return loss, d_hidden, d_weight, d_bias


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


def _grad_output(go: Any, p: _Problem) -> tuple[np.ndarray | None, float]:
    """(per-row array or None, scalar) for the chunk calls, with the "mean"
    denominator folded into the scalar (every chunk is called with "sum")."""
    rows, g = upstream(go, p.opts.reduction != _NONE, p.sample_shape, p.dt, "per-sample")
    if rows is not None:
        return np.ascontiguousarray(rows).reshape(p.N), 1.0
    if p.opts.reduction == _MEAN:
        denom = p.mean_denominator()
        # A zero denominator makes the loss 0/0: as cross_entropy, the rows
        # that count get a NaN gradient and ignored rows stay 0.
        g = g / denom if denom != 0 else math.nan
    return None, g


def _accumulate_weight_grad(
    d_weight: np.ndarray, g: np.ndarray, h: np.ndarray, acc: np.ndarray, first: bool
) -> None:
    """d_weight += g.T @ h, a slab of classes at a time (g.T's slabs are
    strided views that BLAS reads in place)."""
    k = acc.shape[0]
    for c0 in range(0, d_weight.shape[0], k):
        c1 = min(d_weight.shape[0], c0 + k)
        if first:
            np.matmul(g[:, c0:c1].T, h, out=d_weight[c0:c1])
        else:
            part = acc[: c1 - c0]
            np.matmul(g[:, c0:c1].T, h, out=part)
            d_weight[c0:c1] += part


_LINEAR_PARAMS = (
    """
    Parameters
    ----------
    hidden : array_like of shape (..., D)
        The layer's input; the leading axes are the samples. float32 and
        float64 are computed natively (mixed inputs in the promoted dtype),
        float16 in float32, integers in float64.
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
        ``num_threads`` applies to the cross-entropy kernel."""
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
