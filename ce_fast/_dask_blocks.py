"""Per-block functions behind :mod:`ce_fast.dask`.

Every function here takes and returns plain NumPy arrays (one dask block, or
a few small per-row partials) and calls the ce_fast kernels; nothing here
imports dask, so the graph's tasks unpickle on a worker with NumPy and
ce_fast alone. The graph construction, the validation and the documentation
are in ce_fast/dask.py.

Notation (as in ce_fast/_categorical.py): a row is one sample's logits, the
class axis is always the last axis here (ce_fast.dask moves it there), and a
block holds the classes ``[start, start + C_b)`` of a range of rows.

Class-chunked rows are handled in three steps:

* ``cc_stats`` -- per (row block, class block): the block's max ``m_b`` and
  ``l_b = log1p(s'_b)`` (``lse_b = m_b + l_b``, ``s'_b`` the sum of
  ``exp(x - m_b)`` without the arg-max term), the target logit's distance
  ``d_y = lse_b - x_y`` (in the block that holds y), and the smoothing or
  probability-target partials; each one from a ce_fast kernel call, so that
  every term is non-negative and keeps the kernels' accuracy;
* ``cc_merge`` -- per row block: every class block's partials merged in a
  fixed order into the row's lse, loss and gradient coefficients, and
  ``Delta_b = lse - lse_b`` for every class block;
* ``cc_grad`` / ``sm_apply`` -- per (row block, class block) again: the
  gradient (or softmax / log_softmax) of the block from ``Delta_b``.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Literal

import numpy as np

import ce_fast

from ._core import ce_reduction
from ._divergence import kernel as div_kernel
from ._validation import as_float, tokens

_F64 = np.dtype(np.float64)
_LOG2 = math.log(2.0)
_INT64_MAX = np.iinfo(np.int64).max

# fields of the per-(row, class block) statistics
ST_M, ST_L, ST_A, ST_B = range(4)
N_STATS = 4
# fields of the merged per-row array of the categorical loss (then one Delta per class block)
MG_LOSS, MG_LSE, MG_GSA, MG_GS, MG_GY, MG_FLAG = range(6)
N_MERGED = 6
# row flags
OK, IGNORED, BAD = 0.0, 1.0, 2.0


# ---------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------


def pick(t: tuple[Any, ...], i: int) -> Any:
    """Element ``i`` of a block that is a tuple (fused loss + gradient)."""
    return t[i]


def tag(y: Any, block_info: Any = None) -> tuple[np.ndarray, tuple[int, ...]]:
    """An integer-target block with the offsets of its sample ranges in the
    whole target, ``(y, offsets)`` (for the flat position of an IndexError).
    Applied with ``map_blocks``, so it fuses with the target's producer
    instead of adding tasks."""
    loc = block_info[None]["array-location"] if block_info else [(0, 0)] * np.ndim(y)
    return np.asarray(y), tuple(int(a) for a, _ in loc)


def untag(t: Any) -> Any:
    return t[0] if isinstance(t, tuple) else t


def labels(t: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """Integer class indices (a block or a tagged block) as int64, and
    (uint64 only) the mask of values that do not fit in int64 (those are out
    of range, never wrapped)."""
    t = np.asarray(untag(t))
    if t.dtype == np.uint64:
        big = t > _INT64_MAX
        return np.where(big, 0, t).astype(np.int64), big
    return t.astype(np.int64, copy=False), None


def index_error(t: Any, shape: tuple[int, ...], C: int, ignore: int) -> IndexError | None:
    """The IndexError ce_fast raises for the first out-of-range class index of
    this (tagged) block, with its flat position in the whole target (None if
    every index is valid)."""
    y0, offs = t
    y0 = np.asarray(y0)
    y, big = labels(y0)
    ignored = y == ignore
    bad = (y < 0) | (y >= C)
    if big is not None:
        ignored &= ~big
        bad |= big
    bad &= ~ignored
    if not bad.any():
        return None
    local = int(np.flatnonzero(bad.reshape(-1))[0])
    coords = np.unravel_index(local, y0.shape)
    glob = tuple(int(c) + o for c, o in zip(coords, offs))
    # a promoted 1-d problem has shape (1,) here and the user's target is 0-d
    pos = int(np.ravel_multi_index(glob, shape)) if shape else 0
    return IndexError(
        f"target: class index {int(y0.reshape(-1)[local])} at flat position {pos} is outside "
        f"[0, {C}) and is not ignore_index ({ignore})"
    )


def _as(x: Any, dt: np.dtype) -> np.ndarray:
    """A block in the compute dtype ``dt`` (16-bit blocks widened exactly,
    bfloat16 in either representation)."""
    return as_float(np.asarray(x), "x", dt)


def softcap(x: np.ndarray, cap: float) -> np.ndarray:
    """``cap * tanh(x / cap)`` evaluated in double and rounded to x's dtype,
    as the kernel's capping pass does."""
    return (cap * np.tanh(x.astype(_F64) / cap)).astype(x.dtype)


def softcap_factor(x: np.ndarray, cap: float) -> np.ndarray:
    """``1 - tanh(x / cap)**2 = 4a / (1 + a)**2`` with ``a = exp(-2|x/cap|)``
    (no cancellation), evaluated in double and rounded to x's dtype."""
    a = np.exp(-2.0 * np.abs(x.astype(_F64) / cap))
    return (4.0 * a / ((1.0 + a) * (1.0 + a))).astype(x.dtype)


def zmul(coef: Any, value: Any) -> Any:
    """``coef * value`` where a zero coefficient gives exactly 0 (even against
    an infinite value), as the kernels do."""
    with np.errstate(invalid="ignore", over="ignore"):
        return np.where(coef != 0, coef * value, 0.0)


def partial_shape(ndim: int) -> tuple[int, ...]:
    return (1,) * ndim


def finish(total: Any, denom: Any = None, *, mean: bool, out_dtype: np.dtype) -> Any:
    """The reduced loss as a NumPy scalar of the compute dtype."""
    total = float(np.asarray(total))
    if not mean:
        return out_dtype.type(total)
    d = float(np.asarray(denom))
    return out_dtype.type(total / d) if d != 0.0 else out_dtype.type(np.nan)


def mean_scale(denom: Any, go: Any) -> float:
    """The kernels' "mean" gradient scale: grad_output / denominator, NaN
    for a zero denominator (0/0, as PyTorch)."""
    d = float(np.asarray(denom))
    return float(np.asarray(go)) / d if d != 0.0 else math.nan


def scalar(v: Any) -> float:
    return float(np.asarray(v))


# ---------------------------------------------------------------------------
# categorical: class axis in one chunk (blocks of whole rows)
# ---------------------------------------------------------------------------


def ce_rows(
    x: Any,
    t: Any,
    w: Any,
    sw: Any,
    go: Any,
    scale: Any,
    *,
    shape: tuple[int, ...],
    C: int,
    ignore: int,
    red: str,
    eps: float,
    lam: float,
    cap: float | None,
    nt: int | None,
    want_grad: bool,
) -> Any:
    """One block of whole rows through the fused kernel.

    The kernel always runs with reduction "none": the per-sample losses are
    returned (``red == "none"``, with a trailing axis of length 1) or summed
    in float64 into this block's partial sum (an array of ones in every
    dimension); the gradient's upstream scale is ``grad_output`` ("none"),
    the scalar ``grad_output`` ("sum") or ``grad_output / denominator``
    ("mean", computed once for the whole array and passed in as ``scale``),
    which is exactly the scale the kernel itself applies for "sum"/"mean"."""
    kw = dict(
        weight=w, sample_weight=sw, ignore_index=ignore, label_smoothing=eps,
        z_loss=lam, softcap=cap, num_threads=nt,
    )  # fmt: skip
    grad = None
    y = untag(t)
    try:
        if want_grad:
            g = go if red == "none" else scalar(scale)
            loss, grad = ce_fast.cross_entropy_and_grad(x, y, reduction="none", grad_output=g, **kw)
        else:
            loss = ce_fast.cross_entropy(x, y, reduction="none", **kw)
    except IndexError:
        err = index_error(t, shape, C, ignore)
        if err is None:  # pragma: no cover - the kernel and index_error agree
            raise
        raise err from None
    loss = np.asarray(loss)
    if red == "none":
        out = loss[..., None]
    else:
        out = np.full(partial_shape(loss.ndim + 1), np.sum(loss, dtype=_F64))
    return (out, grad) if want_grad else out


def denom_int(t: Any, w: Any, sw: Any, *, opts: Any, C: int) -> np.ndarray:
    """This block's part of the "mean" denominator (the rule of
    CategoricalOptions.mean_denominator; indices beyond int64 are left out
    here, as out-of-range ones are: they raise IndexError where the loss is
    computed)."""
    y, big = labels(t)
    if big is not None:
        y = np.where(big, C, y)  # out of range, or ignored: left out either way
    d = opts.mean_denominator(y.size, labels=y, C=C, class_weight=w, sample_weight=sw)
    return np.full(partial_shape(y.ndim), d)


def denom_prob(sw: Any, *, opts: Any) -> np.ndarray:
    """This block's part of the "mean" denominator of probability targets."""
    sw = np.asarray(sw)
    return np.full(partial_shape(sw.ndim), opts.mean_denominator(sw.size, sample_weight=sw))


# ---------------------------------------------------------------------------
# categorical: class-chunked rows
# ---------------------------------------------------------------------------


def block_lse_stats(xc: np.ndarray, nt: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(m_b, l_b)`` of every row of a block, in float64: ``m_b`` the max
    (NaN if the row holds NaN, +inf if it holds +inf, -inf if it is all
    -inf) and ``l_b = log1p(s'_b) = lse_b - m_b``, taken from the kernel as
    the cross-entropy of the row against its own arg-max (``m - x_am = 0``),
    so it is accurate even when ``lse_b - m_b`` is far below ``ulp(m_b)``."""
    am = np.argmax(xc, axis=-1)  # the first NaN, if any
    m = np.take_along_axis(xc, am[..., None], axis=-1)[..., 0].astype(_F64)
    ell = np.asarray(ce_fast.cross_entropy(xc, am, reduction="none", num_threads=nt), _F64)
    return m, ell


def cc_stats(
    x: Any,
    t: Any,
    w_b: Any,
    start: Any,
    *,
    mode: str,
    dt: np.dtype,
    C: int,
    eps: float,
    cap: float | None,
    ignore: int,
    nt: int | None,
) -> np.ndarray:
    """Partials of one (row block, class block): shape ``(*rows, 1, 4)``.

    Fields: ``m_b``, ``l_b`` (see :func:`block_lse_stats`), then

    * ``mode == "int"``: ``d_y = lse_b - x_y = (m_b - x_y) + l_b`` in the
      block that holds the target class (0 elsewhere, so the sum over class
      blocks is exact), and, with label smoothing,
      ``S_b = sum_c w_c (lse_b - x_c)`` over the block (the kernel's loss
      for a probability target of ones with the block's class weights);
    * ``mode == "prob"``: ``K_b = sum_c w_c q'_c (lse_b - x_c)`` (the
      kernel's loss for the target q') and ``Q_b = sum_c w_c q'_c``;
    * ``mode == "lse"``: nothing more.

    A row that is all -inf inside this block (allowed, as long as the whole
    row is not) makes the kernel return NaN; its partials are set to their
    exact values: ``d_y = +inf`` and ``S_b`` / ``K_b`` = the sum of
    ``coef * inf`` over the non-zero coefficients."""
    xb = _as(x, dt)
    xc = softcap(xb, cap) if cap else xb
    m, ell = block_lse_stats(xc, nt)
    empty = m == -np.inf
    fa = np.zeros(m.shape, _F64)
    fb = np.zeros(m.shape, _F64)
    s0 = int(np.asarray(start).reshape(-1)[0])
    cb = xc.shape[-1]
    with np.errstate(invalid="ignore", over="ignore"):
        if mode == "int":
            y, big = labels(t)
            own = (y != ignore) & (y >= s0) & (y < s0 + cb)
            if big is not None:
                own &= ~big
            yl = np.where(own, y - s0, 0)
            xy = np.take_along_axis(xc, yl[..., None], axis=-1)[..., 0].astype(_F64)
            d = np.where(empty, np.inf, (m - xy) + ell)
            fa = np.where(own, d, 0.0)
            if eps > 0.0:
                ones = np.broadcast_to(np.ones((), dt), xc.shape)
                fb = np.asarray(
                    ce_fast.cross_entropy(xc, ones, weight=w_b, reduction="none", num_threads=nt), _F64
                )
                if empty.any():
                    wv = np.ones(cb) if w_b is None else np.asarray(w_b, _F64)
                    fb = np.where(empty, np.sum(zmul(wv, np.inf)), fb)
        elif mode == "prob":
            q = _as(untag(t), dt)
            if eps > 0.0:
                # q' = (1 - eps) q + eps / C in the compute dtype, as the kernel does
                q = (dt.type(1.0 - eps) * q + dt.type(eps / C)).astype(dt)
            fa = np.asarray(ce_fast.cross_entropy(xc, q, weight=w_b, reduction="none", num_threads=nt), _F64)
            a = q.astype(_F64) if w_b is None else q.astype(_F64) * np.asarray(w_b, _F64)
            fb = np.sum(a, axis=-1, dtype=_F64)
            if empty.any():
                fa = np.where(empty, np.sum(zmul(a, np.inf), axis=-1), fa)
    out = np.stack([m, ell, np.broadcast_to(fa, m.shape), np.broadcast_to(fb, m.shape)], axis=-1)
    return out[..., None, :]


def merge_lse(m_b: np.ndarray, ell_b: np.ndarray) -> dict[str, np.ndarray]:
    """Merge class blocks' ``(m_b, l_b)`` (class blocks on the last axis) in
    a fixed order: with ``lse_b = m_b + l_b`` and ``b*`` the (first) block of
    the largest ``lse_b``,

        lse = lse_b* + log1p(R),  R = sum_{b != b*} exp(lse_b - lse_b*),
        Delta_b = lse - lse_b = (lse_b* - lse_b) + log1p(R),

    every term non-negative (``Delta_b* = log1p(R)`` exactly, so nothing
    cancels in a dominant block). ``nan``/``pinf``/``ninf`` flag the rows
    with a NaN, with a +inf, and the rows that are all -inf."""
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        empty = m_b == -np.inf
        lse_b = np.where(empty, -np.inf, m_b + ell_b)
        nan = np.isnan(m_b).any(axis=-1)
        pinf = (m_b == np.inf).any(axis=-1)
        ninf = empty.all(axis=-1)
        bstar = np.argmax(np.where(np.isnan(lse_b), -np.inf, lse_b), axis=-1)[..., None]
        top = np.take_along_axis(lse_b, bstar, axis=-1)
        e = np.exp(lse_b - top)
        np.put_along_axis(e, bstar, 0.0, axis=-1)
        lp = np.log1p(np.sum(e, axis=-1))
        lse = top[..., 0] + lp
        delta = (top - lse_b) + lp[..., None]
        np.put_along_axis(delta, bstar, lp[..., None], axis=-1)
    return {"lse": lse, "delta": delta, "lse_b": lse_b, "nan": nan, "pinf": pinf, "ninf": ninf}


def cc_merge(
    stats: Any,
    t: Any,
    sw: Any,
    go: Any,
    scale: Any,
    w: Any,
    *,
    mode: str,
    shape: tuple[int, ...],
    starts: tuple[int, ...],
    wsums: tuple[float, ...] | None,
    W: float,
    C: int,
    ignore: int,
    red: str,
    eps: float,
    lam: float,
    want_grad: bool,
) -> np.ndarray:
    """One row block: every class block's partials (``stats``, shape
    ``(*rows, n_blocks, 4)``) merged into ``(*rows, 6 + n_blocks)`` float64:
    the sample's loss (0 if ignored), lse, the gradient's row coefficients
    ``gs * A`` and ``gs`` (``g_c = gs (A p_c - a_c)``), the target entry of
    the gradient ``g_y`` (integer targets), a row flag (OK / IGNORED / BAD)
    and ``Delta_b`` for every class block.

    Integer target y (class weights w, ``W = sum w``, smoothing eps, z-loss
    lam, sample weight s):

        loss = s [(1 - eps) w_y D + eps/C sum_b (S_b + W_b Delta_b) + lam w_y lse^2],
        D = lse - x_y = d_y + Delta_{b_y},
        A = (1 - eps) w_y + eps/C W + 2 lam w_y lse,
        g_y = gs (A exp(-D) - a_y),  a_y = (1 - eps) w_y + eps/C w_y,

    with g_y taken as ``gs ((A - a_y) + A expm1(-D))`` when ``p_y > 1/2``
    (``D < log 2``) so the true-class gradient of a confident row keeps its
    relative accuracy. Probability target q' (``Q = sum_b Q_b``):

        loss = s [sum_b (K_b + Q_b Delta_b) + lam lse^2],  A = Q + 2 lam lse.

    Smoothing terms appear only with smoothing, z-loss terms only with
    z-loss, and zero coefficients give exact zeros, as in the kernel."""
    st = np.asarray(stats)
    m_b, ell_b = st[..., ST_M], st[..., ST_L]
    mg = merge_lse(m_b, ell_b)
    lse, delta, lse_b = mg["lse"], mg["delta"], mg["lse_b"]
    bad = mg["nan"] | mg["pinf"] | mg["ninf"]
    rows = lse.shape
    sw64 = np.ones(rows) if sw is None else np.broadcast_to(np.asarray(sw, _F64), rows)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if mode == "int":
            y, big = labels(t)
            err = index_error(t, shape, C, ignore)
            if err is not None:
                raise err
            keep = y != ignore
            if big is not None:
                keep &= ~big
            yk = np.where(keep, y, 0)
            wy = np.ones(rows) if w is None else np.asarray(w, _F64)[yk]
            by = np.searchsorted(np.asarray(starts), yk, side="right") - 1
            D = np.sum(st[..., ST_A], axis=-1) + np.take_along_axis(delta, by[..., None], axis=-1)[..., 0]
            ct = (1.0 - eps) * wy
            L = zmul(ct, D)
            if eps > 0.0:
                assert wsums is not None
                wb = np.asarray(wsums, _F64)
                T = st[..., ST_B] + np.where(lse_b == -np.inf, 0.0, zmul(wb, delta))
                L = L + (eps / C) * np.sum(T, axis=-1)
            if lam > 0.0:
                L = L + wy * lam * lse * lse
        else:
            keep = np.ones(rows, bool)
            Q = np.sum(st[..., ST_B], axis=-1)
            T = st[..., ST_A] + np.where(lse_b == -np.inf, 0.0, zmul(st[..., ST_B], delta))
            L = np.sum(T, axis=-1)
            if lam > 0.0:
                L = L + lam * lse * lse
        L = np.where(bad, np.nan, L)
        loss = np.where(keep, L * sw64, 0.0)
        out = np.zeros(rows + (N_MERGED + delta.shape[-1],), _F64)
        out[..., MG_LOSS] = loss
        out[..., MG_LSE] = lse
        out[..., MG_FLAG] = np.where(~keep, IGNORED, np.where(bad, BAD, OK))
        out[..., N_MERGED:] = delta
        if want_grad:
            # grad_output ("none"), or its scalar ("sum") divided by the denominator ("mean")
            up = np.asarray(go, _F64) if red == "none" else np.asarray(scalar(scale), _F64)
            gs = np.broadcast_to(up, rows) * sw64
            if mode == "int":
                A = (1.0 - eps) * wy + ((eps / C) * W if eps > 0.0 else 0.0)
                ay = (1.0 - eps) * wy + ((eps / C) * wy if eps > 0.0 else 0.0)
                rest = (eps / C) * (W - wy) if eps > 0.0 else np.zeros(rows)
                if lam > 0.0:
                    A = A + 2.0 * lam * wy * lse
                    rest = rest + 2.0 * lam * wy * lse
                gy = np.where(D < _LOG2, rest + A * np.expm1(-D), A * np.exp(-D) - ay)
                out[..., MG_GY] = gs * gy
            else:
                A = Q + (2.0 * lam * lse if lam > 0.0 else 0.0)
            out[..., MG_GSA] = gs * A
            out[..., MG_GS] = gs
    return out


def cc_grad(
    x: Any,
    t: Any,
    w_b: Any,
    start: Any,
    merged: Any,
    *,
    mode: str,
    starts: tuple[int, ...],
    dt: np.dtype,
    out_dt: np.dtype,
    C: int,
    eps: float,
    cap: float | None,
    ignore: int,
    nt: int | None,
) -> np.ndarray:
    """The gradient of one (row block, class block):
    ``g_c = gs A p_c - gs a_c`` (times the soft-cap factor), with
    ``p_c = softmax_b(x)_c * exp(-Delta_b)``: the kernel's softmax of the
    block (exact zeros for -inf logits) rescaled from the block's lse to the
    row's, by a factor computed in float64; the integer target's entry is
    the merged ``g_y``; ignored rows are 0 and bad rows NaN. Computed in
    ``dt`` and rounded once to ``out_dt`` (16-bit logits: their dtype)."""
    xb = _as(x, dt)
    xc = softcap(xb, cap) if cap else xb
    mg = np.asarray(merged)
    flag = mg[..., MG_FLAG]
    s0 = int(np.asarray(start).reshape(-1)[0])
    j = starts.index(s0)
    delta = mg[..., N_MERGED + j]
    cb = xc.shape[-1]
    g = ce_fast.softmax(xc, num_threads=nt)
    with np.errstate(invalid="ignore", over="ignore"):
        # a row that is all -inf in this block (Delta_b = +inf; the whole row
        # is not, or it is flagged BAD): p = 0 here, where the kernel says NaN
        g[delta == np.inf] = 0
        f = mg[..., MG_GSA] * np.exp(-delta)
        np.multiply(g, f[..., None], out=g, casting="same_kind")
        gs = mg[..., MG_GS]
        if mode == "int":
            if eps > 0.0:
                wv = np.ones(cb) if w_b is None else np.asarray(w_b, _F64)
                np.subtract(g, (gs * (eps / C))[..., None] * wv, out=g, casting="same_kind")
            y, big = labels(t)
            own = (y != ignore) & (y >= s0) & (y < s0 + cb)
            if big is not None:
                own &= ~big
            if own.any():
                yl = np.where(own, y - s0, 0)[..., None]
                cur = np.take_along_axis(g, yl, axis=-1)
                gy = mg[..., MG_GY][..., None].astype(dt)
                np.put_along_axis(g, yl, np.where(own[..., None], gy, cur), axis=-1)
        else:
            q = _as(t, dt)
            if eps > 0.0:
                q = (dt.type(1.0 - eps) * q + dt.type(eps / C)).astype(dt)
            a = q.astype(_F64) if w_b is None else q.astype(_F64) * np.asarray(w_b, _F64)
            np.subtract(g, gs[..., None] * a, out=g, casting="same_kind")
        if cap:
            g *= softcap_factor(xb, cap)
    g[flag == IGNORED] = 0
    g[flag == BAD] = np.nan
    return g.astype(out_dt, copy=False)


# ---------------------------------------------------------------------------
# the softmax family
# ---------------------------------------------------------------------------


def lse_rows(x: Any, *, nt: int | None) -> Any:
    return np.asarray(ce_fast.logsumexp(x, num_threads=nt))


def softmax_rows(x: Any, *, log: bool, nt: int | None) -> np.ndarray:
    fn = ce_fast.log_softmax if log else ce_fast.softmax
    return fn(x, num_threads=nt)


def sm_stats(x: Any, *, dt: np.dtype, nt: int | None) -> np.ndarray:
    """``(m_b, l_b)`` of one block, shape ``(*rows, 1, 2)``."""
    m, ell = block_lse_stats(_as(x, dt), nt)
    return np.stack([m, ell], axis=-1)[..., None, :]


def sm_merge(stats: Any, *, dt: np.dtype | None) -> np.ndarray:
    """``dt`` given: the row's logsumexp in ``dt`` (NaN if the row holds
    NaN, else +inf if it holds +inf, -inf if it is all -inf, as
    ce_fast.logsumexp). ``dt`` None: ``(*rows, 2 + n_blocks)`` float64 with
    lse, a flag (OK / BAD) and ``Delta_b`` per class block."""
    st = np.asarray(stats)
    mg = merge_lse(st[..., 0], st[..., 1])
    lse = mg["lse"]
    if dt is not None:
        lse = np.where(mg["ninf"], -np.inf, lse)
        lse = np.where(mg["pinf"], np.inf, lse)
        lse = np.where(mg["nan"], np.nan, lse)
        return lse.astype(dt)
    bad = mg["nan"] | mg["pinf"] | mg["ninf"]
    out = np.empty(lse.shape + (2 + mg["delta"].shape[-1],), _F64)
    out[..., 0] = lse
    out[..., 1] = np.where(bad, BAD, OK)
    out[..., 2:] = mg["delta"]
    return out


def sm_apply(
    x: Any,
    start: Any,
    merged: Any,
    *,
    starts: tuple[int, ...],
    log: bool,
    dt: np.dtype,
    out_dt: np.dtype,
    nt: int | None,
) -> np.ndarray:
    """softmax / log_softmax of one (row block, class block) from the
    block's own (``log_softmax_b(x) - Delta_b`` or
    ``softmax_b(x) * exp(-Delta_b)``, the shift applied in float64 and
    rounded once); a row that is all -inf in this block gives -inf / 0,
    and a bad row (NaN, +inf, all -inf) is all NaN, as ce_fast. Computed
    in ``dt`` and rounded once to ``out_dt``."""
    xb = _as(x, dt)
    j = starts.index(int(np.asarray(start).reshape(-1)[0]))
    mg = np.asarray(merged)
    d = mg[..., 2 + j][..., None]
    empty = d[..., 0] == np.inf  # all -inf in this block (Delta_b = +inf)
    with np.errstate(invalid="ignore", over="ignore"):
        if log:
            r = ce_fast.log_softmax(xb, num_threads=nt)
            np.subtract(r, d, out=r, casting="same_kind")
            r[empty] = -np.inf
        else:
            r = ce_fast.softmax(xb, num_threads=nt)
            np.multiply(r, np.exp(-d), out=r, casting="same_kind")
            r[empty] = 0
    r[mg[..., 1] == BAD] = np.nan
    return r.astype(out_dt, copy=False)


# ---------------------------------------------------------------------------
# binary cross-entropy with logits (elementwise)
# ---------------------------------------------------------------------------


def bce_block(
    x: Any,
    t: Any,
    w: Any,
    pw: Any,
    go: Any,
    go_scalar: Any,
    *,
    red: str,
    nt: int | None,
    want_loss: bool,
    want_grad: bool,
) -> Any:
    """One block of the elementwise binary loss. "sum"/"mean" call the kernel
    with "sum" (and, for "mean", the scalar upstream gradient already divided
    by the global element count, as ce_fast does) and return this block's
    partial sum in float64 (an array of ones in every dimension)."""
    kw = dict(weight=w, pos_weight=pw, num_threads=nt)
    kred: Literal["none", "sum"] = "none" if red == "none" else "sum"
    if want_grad:
        g = go if (red == "none" and go is not None) else scalar(go_scalar)
        if want_loss:
            loss, grad = ce_fast.binary_cross_entropy_with_logits_and_grad(
                x, t, reduction=kred, grad_output=g, **kw
            )
        else:
            return ce_fast.binary_cross_entropy_with_logits_grad(x, t, reduction=kred, grad_output=g, **kw)
    else:
        loss = ce_fast.binary_cross_entropy_with_logits(x, t, reduction=kred, **kw)
    loss = np.asarray(loss) if red == "none" else np.full(partial_shape(np.ndim(x)), float(loss))
    return (loss, grad) if want_grad else loss


# ---------------------------------------------------------------------------
# divergences: blocks of whole rows
# ---------------------------------------------------------------------------


def div_rows(
    x: Any,
    t: Any,
    y: Any,
    sw: Any,
    go: Any,
    scale: Any,
    *,
    opts: Any,
    dt: np.dtype,
    red: str,
    want_grad: bool,
) -> Any:
    """One block of whole rows (class axis last) through the divergence
    kernel, always with reduction "none": the per-row divergences are
    returned (``red == "none"``, with a trailing axis of length 1) or summed
    in float64 into this block's partial (an array of ones in every
    dimension). The gradient's scale is ``grad_output`` per row ("none") or
    the scalar ``scale`` (grad_output, divided by the whole array's "mean"
    denominator for "mean") -- the kernel's own scale for "sum"/"mean"."""
    x, t = _as(x, dt), _as(t, dt)
    loss = np.empty(x.shape[:-1], dt)
    grad = np.empty(x.shape, dt) if want_grad else None
    per_row = red == "none" and np.ndim(go) > 0  # else the scalar scale (grad_output itself for "none")
    div_kernel(
        x, t, x.ndim - 1, x.shape[-1], replace(opts, reduction=ce_reduction.CE_RED_NONE),
        target=None if y is None else tokens(np.asarray(y), opts).reshape(-1),
        sample_weight=None if sw is None else np.ascontiguousarray(_as(sw, dt)).reshape(-1),
        grad_output=np.ascontiguousarray(_as(go, dt)).reshape(-1) if per_row else None,
        grad_output_scalar=1.0 if per_row else scalar(scale), grad=grad, loss_out=loss,
    )  # fmt: skip
    out = (
        loss[..., None] if red == "none" else np.full(partial_shape(loss.ndim + 1), np.sum(loss, dtype=_F64))
    )
    return (out, grad) if want_grad else out


def denom_div(y: Any, sw: Any, *, opts: Any) -> np.ndarray:
    """This block's part of the divergences' "mean" denominator."""
    shape = np.shape(y) if y is not None else np.shape(sw)
    d = opts.mean_denominator(int(np.prod(shape)), tokens=y, sample_weight=sw)
    return np.full(partial_shape(len(shape)), d)
