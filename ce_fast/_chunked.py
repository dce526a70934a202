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

from ._validation import as_array, as_float, is_half, narrow, result_dtype, upstream, widen

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
    compute dtype (the promoted one, or ``dtype`` when given).

    ``half``: a float16 or bfloat16 ``hidden`` and ``weight`` (and bias) of
    one dtype are kept as they are and computed in float32, converted a
    chunk of rows of ``hidden`` and a slab of classes of ``weight`` at a time
    (NumPy has no 16-bit matmul), so that no float32 copy of either exists;
    the gradients come back in that dtype (:class:`LayerGrads`)."""

    def __init__(
        self,
        hidden: Any,
        weight: Any,
        bias: Any,
        names: tuple[str, str, str] = ("hidden", "weight", "bias"),
        dtype: np.dtype | None = None,
        half: bool = False,
    ) -> None:
        nh, nw, nb = names
        h, w = as_array(hidden, nh), as_array(weight, nw)
        b = None if bias is None else as_array(bias, nb)
        self.half = half and _one_half_dtype(h, w, b)
        if self.half:
            dtype = np.dtype(np.float32)
        else:
            h, w = as_float(h, nh), as_float(w, nw)
            b = None if b is None else as_float(b, nb)
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
        # the gradients' dtype: the 16-bit operands' own (PyTorch's rule)
        self.grad_dt = result_dtype(h.dtype) if self.half else self.dt
        store = None if self.half else dtype  # half: kept as they are
        self.h = np.ascontiguousarray(h.reshape(self.N, D), dtype=store)
        self.w = np.ascontiguousarray(w, dtype=store)
        self.b = None if b is None else as_float(np.ascontiguousarray(b), nb, self.dt)
        # half: the float32 rows of hidden last converted, and a slab of weight
        self._rows: tuple[int, int] | None = None
        self._hbuf: np.ndarray | None = None
        self._slab = np.empty((min(C, slab_classes(D, self.dt.itemsize)) if self.half else 0, D), self.dt)
        self._part: np.ndarray | None = None

    def like_logits(self) -> np.ndarray:
        """A zero-stride stand-in with the logits' shape and dtype (for the
        parsers, which read ``.shape`` and ``.dtype`` only)."""
        return np.broadcast_to(np.empty((), self.dt), self.sample_shape + (self.C,))

    def hidden_rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows [r0, r1) of hidden in the compute dtype (half: converted into
        a reused chunk buffer, once per chunk)."""
        if not self.half:
            return self.h[r0:r1]
        n = r1 - r0
        if self._hbuf is None or self._hbuf.shape[0] < n:
            self._hbuf = np.empty((n, self.D), self.dt)
        if self._rows != (r0, r1):
            widen(self.h[r0:r1], self._hbuf[:n])
            self._rows = (r0, r1)
        return self._hbuf[:n]

    def weight_slab(self, c0: int, c1: int) -> np.ndarray:
        """Classes [c0, c1) of weight in float32 (half only; one reused buffer)."""
        ws = self._slab[: c1 - c0]
        widen(self.w[c0:c1], ws)
        return ws

    def class_slabs(self) -> Iterator[tuple[int, int]]:
        """The class ranges of the weight slabs (one range unless half)."""
        k = self._slab.shape[0] or self.C
        for c0 in range(0, self.C, k):
            yield c0, min(self.C, c0 + k)

    def logits(self, buf: np.ndarray, r0: int, r1: int) -> np.ndarray:
        """Rows [r0, r1) of the logits, into the front of ``buf``."""
        z = buf[: r1 - r0]
        if not self.half:
            np.matmul(self.h[r0:r1], self.w.T, out=z)
        else:
            h = self.hidden_rows(r0, r1)
            for c0, c1 in self.class_slabs():
                ws = self.weight_slab(c0, c1)
                if c1 - c0 == self.C:
                    np.matmul(h, ws.T, out=z)
                    continue
                # BLAS writes a contiguous block; NumPy's matmul into the
                # strided columns of z would not use it (~1.5x slower)
                part = self._scratch(z.shape[0] * (c1 - c0)).reshape(z.shape[0], c1 - c0)
                np.matmul(h, ws.T, out=part)
                z[:, c0:c1] = part
        if self.b is not None:
            z += self.b
        return z

    def _scratch(self, size: int) -> np.ndarray:
        if self._part is None or self._part.size < size:
            self._part = np.empty(size, self.dt)
        return self._part[:size]


def slab_classes(D: int, itemsize: int) -> int:
    """Classes per slab of a weight matrix (or its gradient) of D features:
    about _ACCUMULATE_BYTES of it."""
    return max(1, _ACCUMULATE_BYTES // max(1, D * itemsize))


def _one_half_dtype(h: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> bool:
    """Whether hidden, weight (and bias) share one 16-bit dtype."""
    same = all(a.dtype == h.dtype and is_half(a.dtype) == is_half(h.dtype) for a in (w, b) if a is not None)
    return is_half(h.dtype) and same


class LayerGrads:
    """The gradients of a :class:`LinearLayer`, accumulated chunk by chunk
    from the logits' gradient G: ``d_hidden[rows] = G @ weight``,
    ``d_weight += G.T @ hidden[rows]``, ``d_bias`` the float64 sum of G over
    rows. ``wanted``: which of the three to compute (d_bias only with a
    bias), into the given C-contiguous buffers of the gradients' dtype (a
    front end's own tensors) or new ones.

    A 16-bit layer (``half``) accumulates in float32 and rounds once: each
    chunk's d_hidden rows are summed over the weight's slabs in a float32
    buffer, then rounded into d_hidden; d_weight is accumulated in a float32
    (C, D) array (the one float32 array of the weight's size) and rounded
    at the end."""

    def __init__(
        self,
        layer: LinearLayer,
        wanted: tuple[bool, bool, bool] = (True, True, True),
        d_hidden: np.ndarray | None = None,
        d_weight: np.ndarray | None = None,
        d_bias: np.ndarray | None = None,
    ) -> None:
        dt, gdt, N, C, D = layer.dt, layer.grad_dt, layer.N, layer.C, layer.D
        want_h, want_w, want_b = wanted
        self.layer = layer
        self.d_hidden = None if not want_h else np.empty((N, D), gdt) if d_hidden is None else d_hidden
        self.d_weight = None
        self.d_weight_out = d_weight
        if want_w:
            # the accumulator: the result itself, unless it is 16-bit
            given = None if layer.half else d_weight
            self.d_weight = np.empty((C, D), dt) if given is None else given
            if N == 0:
                self.d_weight[...] = 0  # no chunk writes it
        self.d_bias = None if layer.b is None or not want_b else np.zeros(C, np.float64)
        self.d_bias_out = d_bias
        self.acc = np.empty((min(C, slab_classes(D, dt.itemsize)) if want_w else 0, D), dt)
        self.dh: np.ndarray | None = None  # half: a chunk's float32 d_hidden rows, and a partial sum
        self.dh_part: np.ndarray | None = None
        self.first = True

    def add(self, g: np.ndarray, r0: int, r1: int) -> None:
        """Push rows [r0, r1) of the logits' gradient back through the layer."""
        lay = self.layer
        h = lay.hidden_rows(r0, r1) if self.d_weight is not None else None
        if self.d_hidden is not None and not lay.half:
            np.matmul(g, lay.w, out=self.d_hidden[r0:r1])
        dh = self._dh_rows(r1 - r0) if self.d_hidden is not None and lay.half else None
        for c0, c1 in lay.class_slabs():
            if dh is not None:
                self._add_hidden_slab(dh, g[:, c0:c1], lay.weight_slab(c0, c1), c0 == 0)
            if h is not None:
                self._accumulate_weight_grad(g, h, c0, c1)
        if dh is not None:
            assert self.d_hidden is not None
            narrow(dh, self.d_hidden[r0:r1])  # rounded once to the 16-bit dtype
        self.first = False
        if self.d_bias is not None:
            self.d_bias += g.sum(axis=0, dtype=np.float64)

    def _dh_rows(self, n: int) -> np.ndarray:
        if self.dh is None or self.dh.shape[0] < n:
            self.dh = np.empty((n, self.layer.D), self.layer.dt)
        return self.dh[:n]

    def _add_hidden_slab(self, dh: np.ndarray, g: np.ndarray, ws: np.ndarray, first: bool) -> None:
        """dh (+)= g @ ws: one slab of classes' share of a chunk's d_hidden."""
        if first:
            np.matmul(g, ws, out=dh)
            return
        if self.dh_part is None or self.dh_part.shape[0] < dh.shape[0]:
            self.dh_part = np.empty_like(dh)
        part = self.dh_part[: dh.shape[0]]
        np.matmul(g, ws, out=part)
        dh += part

    def _accumulate_weight_grad(self, g: np.ndarray, h: np.ndarray, c0: int, c1: int) -> None:
        """d_weight[c0:c1] (+)= g[:, c0:c1].T @ h, a slab of self.acc's
        classes at a time (g.T's slabs are strided views that BLAS reads in
        place; NumPy has no C += A @ B, so each product lands in self.acc)."""
        assert self.d_weight is not None
        k = self.acc.shape[0]
        for s0 in range(c0, c1, k):
            s1 = min(c1, s0 + k)
            if self.first:
                np.matmul(g[:, s0:s1].T, h, out=self.d_weight[s0:s1])
            else:
                part = self.acc[: s1 - s0]
                np.matmul(g[:, s0:s1].T, h, out=part)
                self.d_weight[s0:s1] += part

    def result(self) -> tuple[Any, Any, np.ndarray | None]:
        """(d_hidden of hidden's shape, d_weight, d_bias), None where not
        wanted; a 16-bit layer's d_weight rounded once from its float32 sum."""
        lay = self.layer
        d_weight = self.d_weight
        if lay.half and d_weight is not None:
            out = self.d_weight_out
            out = np.empty(d_weight.shape, lay.grad_dt) if out is None else out
            narrow(d_weight, out)
            self.d_weight = d_weight = out
        d_bias = self.d_bias_out
        if self.d_bias is not None:
            # float32 first: the 16-bit value is the float32 sum rounded once
            total = self.d_bias.astype(lay.dt)
            d_bias = np.empty(total.shape, lay.grad_dt) if d_bias is None else d_bias
            narrow(total, d_bias)
        d_hidden = None if self.d_hidden is None else self.d_hidden.reshape(lay.sample_shape + (lay.D,))
        return d_hidden, d_weight, d_bias


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
