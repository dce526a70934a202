"""A linear layer's logits, ``hidden @ weight.T + bias``, a chunk of rows at
a time, and the gradients pushed back through it chunk by chunk: the pieces
every chunked loss (linear_cross_entropy, linear_kl_divergence, ...) shares,
so that the N x C logits never exist at once.

Each chunk's logits are produced by NumPy's BLAS into one reused buffer,
turned into their gradient in place by a fused kernel, and pushed back
through the two matmuls (:class:`LayerGrads`) before the next chunk
overwrites them."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator
from typing import Any

import numpy as np

from ._validation import as_float, upstream

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


def auto_chunk_size(N: int, C: int, D: int, itemsize: int, buffers: int = 1) -> int:
    """Rows per chunk when ``chunk_size`` is None: the chunk's ``buffers``
    logits buffers take at most max(64 MiB, the weight matrix's bytes) in
    all, i.e. about max(D, 64 MiB / C) / buffers rows, and at least 16 rows."""
    budget = max(_BUDGET_FLOOR, C * D * itemsize)
    rows = budget // max(1, buffers * C * itemsize)
    return max(1, min(N, max(_MIN_CHUNK, rows)))


def chunk_rows(chunk_size: Any, N: int, C: int, D: int, itemsize: int, buffers: int = 1) -> int:
    """The validated ``chunk_size`` (None: :func:`auto_chunk_size`)."""
    if chunk_size is None:
        return auto_chunk_size(N, C, D, itemsize, buffers)
    integral = isinstance(chunk_size, (numbers.Integral, np.integer)) and not isinstance(chunk_size, bool)
    if not integral or chunk_size < 1:
        raise ValueError(f"chunk_size must be None or a positive integer, got {chunk_size!r}")
    return int(min(chunk_size, max(N, 1)))


def chunks(N: int, chunk: int) -> Iterator[tuple[int, int]]:
    for r0 in range(0, N, chunk):
        yield r0, min(N, r0 + chunk)


class LinearLayer:
    """A validated linear layer: ``hidden`` (..., D) flattened to (N, D)
    rows, ``weight`` (C, D), ``bias`` (C,) or None, all contiguous in one
    compute dtype (the promoted one, or ``dtype`` when given)."""

    def __init__(
        self,
        hidden: Any,
        weight: Any,
        bias: Any,
        names: tuple[str, str, str] = ("hidden", "weight", "bias"),
        dtype: np.dtype | None = None,
    ) -> None:
        nh, nw, nb = names
        h = as_float(hidden, nh)
        w = as_float(weight, nw)
        b = None if bias is None else as_float(bias, nb)
        if dtype is None:
            dtype = np.result_type(h.dtype, w.dtype, *(() if b is None else (b.dtype,)))
        if h.ndim < 1:
            raise ValueError(f"{nh} must have at least one dimension (the features, D)")
        if w.ndim != 2:
            raise ValueError(f"{nw} must be 2-d (C, D), got shape {w.shape}")
        C, D = w.shape
        if h.shape[-1] != D:
            raise ValueError(f"{nh} has {h.shape[-1]} features but {nw} has shape {w.shape} (C, D)")
        if C == 0:
            raise ValueError(f"{nw} has no rows: the class axis is empty (C == 0)")
        if b is not None and b.shape != (C,):
            raise ValueError(f"{nb} must be 1-d of length C = {C}, got shape {b.shape}")
        self.sample_shape: tuple[int, ...] = h.shape[:-1]
        self.N = math.prod(self.sample_shape)
        self.C, self.D, self.dt = C, D, np.dtype(dtype)
        self.h = np.ascontiguousarray(h.reshape(self.N, D), dtype=dtype)
        self.w = np.ascontiguousarray(w, dtype=dtype)
        self.b = None if b is None else np.ascontiguousarray(b, dtype=dtype)

    def like_logits(self) -> np.ndarray:
        """A zero-stride stand-in with the logits' shape and dtype (for the
        parsers, which read ``.shape`` and ``.dtype`` only)."""
        return np.broadcast_to(np.empty((), self.dt), self.sample_shape + (self.C,))

    def logits(self, buf: np.ndarray, r0: int, r1: int) -> np.ndarray:
        """Rows [r0, r1) of the logits, into the front of ``buf``."""
        z = buf[: r1 - r0]
        np.matmul(self.h[r0:r1], self.w.T, out=z)
        if self.b is not None:
            z += self.b
        return z


class LayerGrads:
    """The gradients of a :class:`LinearLayer`, accumulated chunk by chunk
    from the logits' gradient G: ``d_hidden[rows] = G @ weight``,
    ``d_weight += G.T @ hidden[rows]``, ``d_bias`` the float64 sum of G over
    rows. ``wanted``: which of the three to compute (d_bias only with a
    bias), into the given C-contiguous buffers of the compute dtype (a
    front end's own tensors) or new ones."""

    def __init__(
        self,
        layer: LinearLayer,
        wanted: tuple[bool, bool, bool] = (True, True, True),
        d_hidden: np.ndarray | None = None,
        d_weight: np.ndarray | None = None,
        d_bias: np.ndarray | None = None,
    ) -> None:
        dt, N, C, D = layer.dt, layer.N, layer.C, layer.D
        want_h, want_w, want_b = wanted
        self.layer = layer
        self.d_hidden = None if not want_h else np.empty((N, D), dt) if d_hidden is None else d_hidden
        self.d_weight = None
        if want_w:
            self.d_weight = np.zeros((C, D), dt) if d_weight is None else d_weight
            if N == 0:
                self.d_weight[...] = 0  # no chunk writes it
        self.d_bias = None if layer.b is None or not want_b else np.zeros(C, np.float64)
        self.d_bias_out = d_bias
        self.acc = np.empty((max(1, min(C, _ACCUMULATE_BYTES // max(1, D * dt.itemsize))), D), dt)
        self.first = True

    def add(self, g: np.ndarray, r0: int, r1: int) -> None:
        """Push rows [r0, r1) of the logits' gradient back through the layer."""
        lay = self.layer
        if self.d_hidden is not None:
            np.matmul(g, lay.w, out=self.d_hidden[r0:r1])
        if self.d_weight is not None:
            self._accumulate_weight_grad(self.d_weight, g, lay.h[r0:r1])
        if self.d_bias is not None:
            self.d_bias += g.sum(axis=0, dtype=np.float64)

    def _accumulate_weight_grad(self, d_weight: np.ndarray, g: np.ndarray, h: np.ndarray) -> None:
        """d_weight += g.T @ h, a slab of classes at a time (g.T's slabs are
        strided views that BLAS reads in place)."""
        k = self.acc.shape[0]
        for c0 in range(0, d_weight.shape[0], k):
            c1 = min(d_weight.shape[0], c0 + k)
            if self.first:
                np.matmul(g[:, c0:c1].T, h, out=d_weight[c0:c1])
            else:
                part = self.acc[: c1 - c0]
                np.matmul(g[:, c0:c1].T, h, out=part)
                d_weight[c0:c1] += part
        self.first = False

    def result(self) -> tuple[Any, Any, np.ndarray | None]:
        """(d_hidden of hidden's shape, d_weight, d_bias), None where not
        wanted."""
        lay = self.layer
        d_bias = self.d_bias_out
        if self.d_bias is not None:
            if d_bias is None:
                d_bias = self.d_bias.astype(lay.dt)
            else:
                d_bias[...] = self.d_bias
        d_hidden = None if self.d_hidden is None else self.d_hidden.reshape(lay.sample_shape + (lay.D,))
        return d_hidden, self.d_weight, d_bias


def chunk_upstream(
    grad_output: Any, reduced: bool, mean: bool, layer: LinearLayer, denominator: Any
) -> tuple[np.ndarray | None, float]:
    """grad_output for per-chunk kernel calls, which run with "sum" (or
    "none"): a per-row array (or None) and a scalar with the "mean"
    denominator (``denominator()``) folded in; a zero denominator makes the
    loss 0/0, so the rows that count get a NaN gradient (ignored rows stay 0)."""
    rows, g = upstream(grad_output, reduced, layer.sample_shape, layer.dt, "per-sample")
    if rows is not None:
        return np.ascontiguousarray(rows).reshape(layer.N), 1.0
    if mean:
        denom = denominator()
        g = g / denom if denom != 0 else math.nan
    return None, g


def finish(total: float, per_row: np.ndarray | None, layer: LinearLayer, mean: bool, denominator: Any) -> Any:
    """The loss of the chunk calls: the per-row losses (of the samples'
    shape), or the float64 total as a scalar of the compute dtype, divided by
    ``denominator()`` for "mean" (NaN when that is 0)."""
    if per_row is not None:
        return per_row.reshape(layer.sample_shape)
    if mean:
        denom = denominator()
        total = total / denom if denom != 0 else math.nan
    return layer.dt.type(total)
