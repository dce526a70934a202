"""Dask arrays in, lazy dask results out: ce_fast's losses and softmax family
on arrays that are chunked any way, larger than one machine's memory included.

Needs dask with dask.array (``pip install "dask[array]"``, or
``pip install ".[dask]"`` in a clone of ce_fast: the package is not on PyPI);
``dask.distributed`` is optional (any dask scheduler works). Functions:

* :func:`cross_entropy`, :func:`cross_entropy_grad`, :func:`cross_entropy_and_grad`
* :func:`logsumexp`, :func:`log_softmax`, :func:`softmax`
* :func:`binary_cross_entropy_with_logits` (and ``_grad``, ``_and_grad``)
* :func:`kl_divergence`, :func:`js_divergence` (and ``_and_grad``): rows
  chunked any way, the class axis rechunked into one chunk

Each takes the keywords of the NumPy function of the same name in
:mod:`ce_fast` (except ``out=``: dask arrays are immutable) and has its
semantics; see those docstrings for the formulas. ``logits`` / ``x`` and
``target`` may be dask arrays or anything NumPy takes (wrapped with
``dask.array.from_array``, default chunking); ``weight`` (length C) is
materialised as NumPy; ``sample_weight``, ``pos_weight`` and a per-sample
``grad_output`` may be NumPy or dask arrays. ``num_threads`` is passed to
every kernel call (one per block; with several dask threads per process,
``num_threads=1`` avoids oversubscription).

Results are lazy
----------------
Every function only builds a graph and returns dask arrays: a 0-d dask array
for a "mean"/"sum" loss (its ``.compute()`` is a NumPy scalar of the compute
dtype, as the NumPy function returns), arrays for "none" and for gradients,
and a tuple ``(loss, grad)`` of lazy objects for ``*_and_grad``. Compute them
together, so that the fused kernel runs once per block::

    loss, grad = ce_fast.dask.cross_entropy_and_grad(logits, labels)
    loss, grad = dask.compute(loss, grad)          # or persist / store the grad

float16 and bfloat16
--------------------
The cross-entropy, softmax-family and binary functions hand 16-bit blocks to
the kernels as they are (read in place, computed in float32), and their
results have the NumPy functions' dtypes: losses and ``logsumexp`` float32,
gradients, ``softmax`` and ``log_softmax`` in the logits' dtype (float32 for
bfloat16 without ml_dtypes), as each lazy array's ``dtype`` says. With the
class axis in several chunks, the merge arithmetic around the kernels is
NumPy's: each block is widened to float32 there (one block at a time, exact)
and its result rounded once to the 16-bit dtype. The divergences convert
16-bit blocks to float32 and return float32 (their kernels have no 16-bit
instantiation).

Chunking
--------
Any chunking works. The class axis is moved last first (``da.moveaxis``,
lazy, no copy of the data until a block is computed); sample axes may be
chunked arbitrarily (``(N, ..., C)`` logits included).

* **Class axis in one chunk** (chunked along rows): one ce_fast kernel call
  per block -- the fused loss + gradient kernel for ``*_and_grad`` -- so each
  block is read once and the blocks stream through memory. "sum"/"mean" are
  a tree of float64 partial sums; the "mean" denominator ``sum s_i w_{y_i}``
  (non-ignored samples; ``sum s_i`` or N for probability targets) needs only
  the targets and weights, so it is a separate small graph whose result
  (``grad_output / denominator``, NaN when the denominator is 0) is fed into
  every block's gradient call -- exactly the scale the NumPy kernel applies
  (a gradient block waits for the targets' reduction, never for logits).
* **Class axis in several chunks** (vocabulary-sharded; no block ever holds
  a whole row): per block, ``m_b = max`` and ``l_b = log1p(s'_b)`` (the
  kernel's cross-entropy of the block against its own arg-max), the target
  logit's ``lse_b - x_y``, and the smoothing / probability-target partials
  ``sum_c w_c (lse_b - x_c)`` resp. ``sum_c w_c q'_c (lse_b - x_c)`` (kernel
  calls with the block's class weights) and ``sum_c w_c q'_c``; then, per
  row block, a fixed-order merge: ``lse = lse_b* + log1p(sum_{b != b*}
  exp(lse_b - lse_b*))`` (b* the block with the largest lse_b; all -inf
  blocks contribute 0), ``Delta_b = lse - lse_b >= 0`` and the loss as a sum
  of non-negative terms, e.g. ``lse - x_y = (lse_b - x_y) + Delta_b`` -- so
  small losses keep the relative accuracy of the NumPy kernels. The gradient
  is then computed per block as ``gs (A p_c - a_c)`` with ``p_c =
  softmax_b(x)_c * exp(-Delta_b)`` (the kernel's block softmax, rescaled in
  float64 and rounded once), the target entry ``gs (A p_y - a_y)`` taken as
  ``gs ((A - a_y) + A expm1(-(lse - x_y)))`` when ``p_y > 1/2``. softmax /
  log_softmax / logsumexp use the same merge. Soft-capping is applied to
  each block first (in double, rounded, as the kernel does). The loss alone
  streams (each block is read once); the gradient reads each block twice,
  before and after its row block's merge, so dask holds (or spills) a row
  block's class blocks until that merge is done: about ``row_chunk * C``
  elements per row block in flight, never the whole array.
* binary_cross_entropy_with_logits is elementwise: one kernel call per block,
  ``target`` / ``weight`` / ``pos_weight`` broadcast lazily (NumPy rules, as
  the NumPy function), "mean" = sum / numel.

Accuracy and determinism
------------------------
Results equal the NumPy functions on the materialised array to rounding
(tested: 2e-6 relative in float32, 1e-12 in float64, NaN and +-inf in the
same places; gradient entries that cancel, ``A p_c ~ a_c``, to that
accuracy on the scale of their terms, as in the NumPy kernels -- for
probability targets the arg-max entry does not get the kernels' ``p - 1``
treatment in the class-chunked path). All sums (over rows and over class blocks)
are taken in float64 in a fixed order given by the chunking (dask's
reduction tree over blocks is fixed, and every kernel is bitwise
reproducible for any thread count), so for a fixed chunking (and fixed
``dask.config`` ``split_every``) results are **bitwise reproducible**,
whatever the scheduler, worker count or task order. Different chunkings may
differ in the last bits.

Errors
------
Everything that can be checked from shapes, dtypes and options is checked
eagerly, when the graph is built, with the exception the NumPy function
raises (unknown reduction, options out of range, ``weight`` of the wrong
length, shape mismatches, C == 0 -> ValueError; complex / bool targets ->
TypeError; bad axis -> AxisError). Out-of-range class indices are found at
compute time: ``IndexError`` with the NumPy message, naming the flat
position (in the whole target) of the first offending index *of the block
that raised*; with several bad blocks which one raises first depends on the
scheduler. NaN/inf handling is the NumPy functions': NaN or +inf in a
non-ignored row gives that row a NaN loss and gradient, -inf logits mask
classes (a block or row chunk that is all -inf included), an all-ignored
"mean" is NaN with an all-zero gradient.

dask arrays with unknown chunk sizes (NaN shapes) are rejected
(``ValueError``; call ``compute_chunk_sizes()`` first).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

try:
    import dask.array as _dask_array
except ImportError as exc:  # pragma: no cover - exercised only without dask
    raise ImportError(
        'ce_fast.dask needs dask with dask.array; install it with: pip install "dask[array]"'
        ' (or, in a clone of ce_fast, pip install ".[dask]")'
    ) from exc

from . import _dask_blocks as B
from ._core import ce_sm_op
from ._validation import (
    REDUCTION_NAMES,
    as_array,
    as_float,
    binary_options,
    categorical_layout,
    categorical_options,
    check_broadcast,
    class_weight,
    compute_dtype,
    divergence_layout,
    divergence_options,
    is_half,
    result_dtype,
    softmax_call,
    upstream_is_scalar,
)

# dask.array is only partly annotated (blockwise, from_array, ... are not):
# used through an Any alias so that `mypy --strict ce_fast` stays clean.
da: Any = _dask_array

__all__ = [
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_and_grad",
    "binary_cross_entropy_with_logits_grad",
    "cross_entropy",
    "cross_entropy_and_grad",
    "cross_entropy_grad",
    "js_divergence",
    "js_divergence_and_grad",
    "kl_divergence",
    "kl_divergence_and_grad",
    "log_softmax",
    "logsumexp",
    "softmax",
]

_F64 = np.dtype(np.float64)
_SM_OPS = {
    "lse": ce_sm_op.CE_SM_LOGSUMEXP,
    "log_softmax": ce_sm_op.CE_SM_LOG_SOFTMAX,
    "softmax": ce_sm_op.CE_SM_SOFTMAX,
}
# index letters of blockwise: samples use lower case; these are reserved
_CLS, _FLD, _MRG, _WGT = "Z", "F", "G", "W"


# ---------------------------------------------------------------------------
# argument handling (eager, at graph construction)
# ---------------------------------------------------------------------------


def _is_dask(a: Any) -> bool:
    return isinstance(a, da.Array)


def _meta(ndim: int, dt: Any) -> np.ndarray:
    return np.empty((0,) * ndim, dtype=dt)


def _check_known(a: Any, name: str) -> None:
    if any(isinstance(s, float) and math.isnan(s) for s in a.shape):
        raise ValueError(f"{name}: a dask array with unknown chunk sizes; call .compute_chunk_sizes() first")


def _input(a: Any, name: str) -> Any:
    """The logits (or x) as a dask array (16-bit blocks as they are: the
    categorical, softmax-family and binary kernels read them natively)."""
    if _is_dask(a):
        _check_known(a, name)
    else:
        a = da.from_array(as_array(a, name))
    return a


def _float32_blocks(a: Any, name: str) -> Any:
    """A 16-bit dask array as float32 blocks, each converted as it is
    computed (the divergence kernels have no 16-bit instantiation)."""
    if is_half(a.dtype):
        a = a.map_blocks(lambda b: as_float(b, name), dtype=np.float32, meta=_meta(a.ndim, np.float32))
    return a


def _sample_letters(k: int) -> str:
    if k > 26:
        raise ValueError(f"ce_fast.dask supports at most 26 sample dimensions, got {k}")
    return "abcdefghijklmnopqrstuvwxyz"[:k]


def _positions(c: tuple[int, ...]) -> Any:
    """``arange`` chunked like one axis (generated lazily): the first element
    of a block is the block's offset."""
    return da.arange(sum(c), chunks=(tuple(c),), dtype=np.int64)


def _drop_empty_class_chunks(x: Any) -> Any:
    """Class chunks of size 0 (possible after slicing) carry nothing and
    would give two blocks the same class offset: merge them away."""
    c = x.chunks[-1]
    if len(c) > 1 and 0 in c:
        x = x.rechunk({x.ndim - 1: tuple(n for n in c if n) or (0,)})
    return x


def _typed(value: Any, name: str, dt: np.dtype) -> Any:
    """An operand (NumPy or dask) in the compute dtype, by the dtype rules of
    every path."""
    if not _is_dask(value):
        return as_float(value, name, dt)
    _check_known(value, name)
    compute_dtype(value.dtype, name)
    return value.astype(dt)


def _broadcast_arg(value: Any, name: str, shape: tuple[int, ...], dt: np.dtype, what: str) -> Any:
    """An operand (NumPy or dask) checked and broadcast (lazily, never
    materialised) to ``shape``."""
    a = _typed(value, name, dt)
    check_broadcast(tuple(a.shape), shape, name, what)
    return da.broadcast_to(a, shape) if _is_dask(a) else np.broadcast_to(a, shape)


def _upstream(
    grad_output: Any, reduced: bool, shape: tuple[int, ...], dt: np.dtype, what: str
) -> tuple[Any, Any]:
    """(an operand broadcast to ``shape`` or None, a scalar: a float rounded
    to the compute dtype, as ce_fast does, or a 0-d dask array)."""
    if grad_output is None:
        return None, 1.0
    g = grad_output if _is_dask(grad_output) else as_array(grad_output, "grad_output")
    if upstream_is_scalar(g, reduced):
        return None, (g.astype(dt) if _is_dask(g) else float(as_float(g, "grad_output", dt)))
    return _broadcast_arg(g, "grad_output", shape, dt, what), 1.0


def _chunked(a: Any, chunks: tuple[tuple[int, ...], ...]) -> Any:
    """A NumPy or dask array as a dask array with exactly these chunks."""
    if _is_dask(a):
        return a.rechunk(chunks)
    return da.from_array(np.asarray(a), chunks=chunks)


def _const_or_dask(v: Any) -> list[Any]:
    """An (argument, index) pair for blockwise: a 0-d dask array or a constant."""
    return [v, ""] if _is_dask(v) else [v, None]


# ---------------------------------------------------------------------------
# categorical cross-entropy
# ---------------------------------------------------------------------------


def _categorical(
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
    want_loss: bool,
    want_grad: bool,
    grad_output: ArrayLike | None = None,
) -> tuple[Any, Any]:
    # -- the categorical parser, as every path -----------------------------
    opts = categorical_options(
        reduction=reduction, ignore_index=ignore_index, label_smoothing=label_smoothing,
        z_loss=z_loss, softcap=softcap, num_threads=num_threads,
    )  # fmt: skip
    x = _input(logits, "logits")
    if _is_dask(target):
        _check_known(target, "target")
        t = target
    else:
        t = as_array(target, "target")
    lay = categorical_layout(x, t, axis, opts)
    dt, ax, C, sample_shape = lay.dtype, lay.axis, lay.C, lay.sample_shape
    gdt = result_dtype(x.dtype)  # the gradient's (16-bit logits: theirs)
    mode = "prob" if lay.probs else "int"
    red = REDUCTION_NAMES[opts.reduction]
    eps, lam, ignore = opts.label_smoothing, opts.z_loss, opts.ignore_index
    cap = opts.softcap or None
    nt = opts.num_threads or None
    w = class_weight(weight, C, dt)
    sw = None
    if sample_weight is not None:
        sw = _broadcast_arg(sample_weight, "sample_weight", sample_shape, dt, "per-sample")
    go_arr, go_s = None, 1.0  # per-sample ("none") or scalar upstream gradient
    if want_grad:
        go_arr, go_s = _upstream(grad_output, red != "none", sample_shape, dt, "per-sample")

    # -- layout: class axis last, at least one sample axis -----------------
    moved = ax != x.ndim - 1
    if moved:
        x = da.moveaxis(x, ax, -1)
        if mode == "prob":
            t = da.moveaxis(t if _is_dask(t) else da.from_array(t), ax, -1)
    promoted = x.ndim == 1
    if promoted:
        x = x[None]
        t = t[None]
        sw = None if sw is None else sw[None]
        go_arr = None if go_arr is None else go_arr[None]
    S = tuple(int(n) for n in x.shape[:-1])
    k = len(S)
    s = _sample_letters(k)
    rchunks = x.chunks[:-1]
    tgt = _chunked(t, x.chunks if mode == "prob" else rchunks)
    tind = s + _CLS if mode == "prob" else s
    if mode == "int":
        # every block learns its offsets (for IndexError positions) in a
        # map_blocks that fuses with the target's own tasks
        tgt = tgt.map_blocks(B.tag, dtype=object, meta=_meta(k, object))
    sw_pair = [None, None] if sw is None else [_chunked(sw, rchunks), s]
    go_pair = _const_or_dask(go_s) if go_arr is None else [_chunked(go_arr, rchunks), s]
    w_all = [None, None] if w is None else [da.from_array(w, chunks=-1), _WGT]

    # -- the "mean" denominator: targets and weights only ------------------
    denom: Any = None
    if red == "mean":
        if mode == "int":
            parts = da.blockwise(
                B.denom_int, s, tgt, s, *w_all, *sw_pair,
                adjust_chunks={c: 1 for c in s}, concatenate=True, dtype=_F64, meta=_meta(k, _F64),
                opts=opts, C=C,
            )  # fmt: skip
            denom = parts.sum()
        elif sw is None:
            denom = opts.mean_denominator(math.prod(S))
        else:
            denom = da.blockwise(
                B.denom_prob, s, sw_pair[0], s,
                adjust_chunks={c: 1 for c in s}, dtype=_F64, meta=_meta(k, _F64), opts=opts,
            ).sum()  # fmt: skip
    scale: Any = None  # the scalar upstream scale of a reduced loss's gradient
    if want_grad and red != "none":
        if red == "sum":
            scale = go_s
        else:
            scale = da.blockwise(
                B.mean_scale, "", *_const_or_dask(denom), *_const_or_dask(go_s),
                dtype=_F64, meta=np.empty((), _F64),
            )  # fmt: skip

    x = _drop_empty_class_chunks(x)
    if mode == "prob":
        tgt = tgt.rechunk(x.chunks)
    nb = len(x.chunks[-1])
    red_adjust = {_CLS: 1} if red == "none" else {_CLS: 1, **{c: 1 for c in s}}
    red_dt = dt if red == "none" else _F64
    grad = None
    if nb == 1:
        # -- rows: one fused kernel call per block ---------------------------
        w_cls = [None, None] if w is None else [da.from_array(w, chunks=-1), _CLS]
        args = [x, s + _CLS, tgt, tind, *w_cls, *sw_pair, *go_pair, *_const_or_dask(scale)]
        kw = dict(shape=S, C=C, ignore=ignore, red=red, eps=eps, lam=lam, cap=cap, nt=nt, want_grad=want_grad)
        if want_grad:
            fused = da.blockwise(B.ce_rows, s + _CLS, *args, dtype=object, meta=_meta(k + 1, object), **kw)
            grad = da.blockwise(B.pick, s + _CLS, fused, s + _CLS, 1, None, dtype=gdt, meta=_meta(k + 1, gdt))
            loss_blocks = da.blockwise(
                B.pick, s + _CLS, fused, s + _CLS, 0, None,
                adjust_chunks=red_adjust, dtype=red_dt, meta=_meta(k + 1, red_dt),
            )  # fmt: skip
        else:
            loss_blocks = da.blockwise(
                B.ce_rows, s + _CLS, *args,
                adjust_chunks=red_adjust, dtype=red_dt, meta=_meta(k + 1, red_dt), **kw,
            )  # fmt: skip
        per_sample_loss = loss_blocks[..., 0] if red == "none" else None
        total = None if red == "none" else loss_blocks.sum()
    else:
        # -- class chunks: partials, merge per row block, gradient per block --
        cchunks = x.chunks[-1]
        starts = tuple(int(v) for v in np.concatenate([[0], np.cumsum(cchunks[:-1])]))
        starts_pair = [_positions(cchunks), _CLS]
        w_blk = [None, None] if w is None else [da.from_array(w, chunks=(cchunks,)), _CLS]
        stats = da.blockwise(
            B.cc_stats, s + _CLS + _FLD, x, s + _CLS, tgt, tind, *w_blk, *starts_pair,
            new_axes={_FLD: B.N_STATS}, adjust_chunks={_CLS: 1}, concatenate=True,
            dtype=_F64, meta=_meta(k + 2, _F64),
            mode=mode, dt=dt, C=C, eps=eps, cap=cap, ignore=ignore, nt=nt,
        )  # fmt: skip
        wsums = None
        W = float(C)
        if w is not None:
            w64 = w.astype(_F64)
            W = float(np.sum(w64))
            wsums = tuple(float(np.sum(w64[a : a + n])) for a, n in zip(starts, cchunks))
        elif eps > 0.0:
            wsums = tuple(float(n) for n in cchunks)
        merged = da.blockwise(
            B.cc_merge, s + _MRG, stats, s + _CLS + _FLD,
            *([tgt, s] if mode == "int" else [None, None]), *sw_pair, *go_pair,
            *_const_or_dask(scale), *w_all,
            new_axes={_MRG: B.N_MERGED + nb}, concatenate=True, dtype=_F64, meta=_meta(k + 1, _F64),
            mode=mode, shape=S, starts=starts, wsums=wsums, W=W, C=C, ignore=ignore, red=red,
            eps=eps, lam=lam, want_grad=want_grad,
        )  # fmt: skip
        row_loss = merged[..., B.MG_LOSS]
        per_sample_loss = row_loss.astype(dt) if red == "none" else None
        total = None if red == "none" else row_loss.sum(dtype=_F64)
        if want_grad:
            grad = da.blockwise(
                B.cc_grad, s + _CLS, x, s + _CLS, tgt, tind, *w_blk, *starts_pair, merged, s + _MRG,
                concatenate=True, dtype=gdt, meta=_meta(k + 1, gdt),
                mode=mode, starts=starts, dt=dt, out_dt=gdt, C=C, eps=eps, cap=cap, ignore=ignore, nt=nt,
            )  # fmt: skip

    loss = None
    if want_loss:
        if red == "none":
            assert per_sample_loss is not None
            # a 1-d problem has one sample: a 0-d array, as ce_fast returns
            loss = per_sample_loss.reshape(()) if promoted else per_sample_loss
        else:
            loss = da.blockwise(
                B.finish, "", total, "", *_const_or_dask(denom),
                mean=red == "mean", out_dtype=dt, dtype=dt, meta=np.empty((), dt),
            )  # fmt: skip
    if grad is not None:
        if promoted:
            grad = grad[0]
        elif moved:
            grad = da.moveaxis(grad, -1, ax)
    return loss, grad


_CE_DOC = """
    Parameters
    ----------
    logits : dask.array.Array or array_like
        Any chunking (see the module docstring); the class axis is ``axis``.
    target : dask.array.Array or array_like
        Integer class indices (the logits' shape without the class axis) or
        floating probabilities (the logits' shape); rechunked to match the
        logits.
    axis, weight, sample_weight, ignore_index, reduction, label_smoothing, \
z_loss, softcap, num_threads
        As :func:`ce_fast.cross_entropy`. ``weight`` is converted to NumPy;
        ``sample_weight`` may be NumPy or dask. ``num_threads`` is passed to
        every block's kernel call."""

_CE_GRAD_DOC = """
    grad_output : float, 0-d dask array, or array_like / dask array
        As :func:`ce_fast.cross_entropy_grad` (a per-sample array only with
        ``reduction="none"``). There is no ``out=``."""


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
) -> Any:
    return _categorical(**locals(), want_loss=True, want_grad=False)[0]


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
) -> Any:
    return _categorical(**locals(), want_loss=False, want_grad=True)[1]


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
) -> tuple[Any, Any]:
    return _categorical(**locals(), want_loss=True, want_grad=True)


cross_entropy.__doc__ = (
    """Lazy :func:`ce_fast.cross_entropy` of dask arrays.
"""
    + _CE_DOC
    + """

    Returns
    -------
    loss : dask.array.Array
        0-d for "mean"/"sum" (``.compute()`` gives a NumPy scalar of the
        compute dtype), the per-sample losses for "none".

    Examples
    --------
    >>> import numpy as np, dask.array as da, ce_fast.dask as cfd
    >>> x = da.from_array(np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]]), chunks=(1, 2))
    >>> loss = cfd.cross_entropy(x, np.array([0, 2]))
    >>> round(float(loss.compute(scheduler="sync")), 6)
    0.175456
"""
)
cross_entropy_grad.__doc__ = (
    """Lazy :func:`ce_fast.cross_entropy_grad` of dask arrays (a dask array
    of the logits' shape and chunks, and the dtype of the NumPy function's
    gradient: the compute dtype, or the logits' own for 16-bit logits).
"""
    + _CE_DOC
    + _CE_GRAD_DOC
)
cross_entropy_and_grad.__doc__ = (
    """Lazy ``(loss, grad)`` of :func:`ce_fast.cross_entropy_and_grad`:
    compute both at once (``dask.compute(loss, grad)``) so the fused kernel
    reads each block once (rows path; the class-chunked path reads each
    block twice, see the module docstring).
"""
    + _CE_DOC
    + _CE_GRAD_DOC
    + """

    Examples
    --------
    >>> import dask, numpy as np, dask.array as da, ce_fast.dask as cfd
    >>> x = da.zeros((2, 4), chunks=(1, 2))
    >>> loss, grad = cfd.cross_entropy_and_grad(x, np.array([1, 3]), reduction="sum")
    >>> loss, grad = dask.compute(loss, grad, scheduler="sync")
    >>> grad[0]
    array([ 0.25, -0.75,  0.25,  0.25])
"""
)


# ---------------------------------------------------------------------------
# divergences (knowledge distillation)
# ---------------------------------------------------------------------------


def _divergence(
    student: Any,
    teacher: Any,
    options: dict[str, Any],
    want_loss: bool,
    want_grad: bool,
    grad_output: Any = None,
) -> tuple[Any, Any]:
    opts = divergence_options(**options)
    x = _float32_blocks(_input(student, "student"), "student")
    t = _float32_blocks(_input(teacher, "teacher"), "teacher")
    y = options["target"]
    if y is not None:
        y = y if _is_dask(y) else as_array(y, "target")
    lay = divergence_layout(x, t, y, options["axis"], opts)
    dt, ax, sample_shape = lay.dtype, lay.axis, lay.sample_shape
    red = REDUCTION_NAMES[opts.reduction]
    t = t.astype(dt)
    sw = options["sample_weight"]
    if sw is not None:
        sw = _broadcast_arg(sw, "sample_weight", sample_shape, dt, "per-sample")
    go_arr, go_s = None, 1.0
    if want_grad:
        go_arr, go_s = _upstream(grad_output, red != "none", sample_shape, dt, "per-sample")

    # -- layout: class axis last and in one chunk, at least one row axis ------
    moved = ax != x.ndim - 1
    if moved:
        x, t = da.moveaxis(x, ax, -1), da.moveaxis(t, ax, -1)
    promoted = x.ndim == 1
    if promoted:
        x, t = x[None], t[None]
        y, sw, go_arr = (None if a is None else a[None] for a in (y, sw, go_arr))
    x = x.rechunk({x.ndim - 1: -1})
    t = t.rechunk(x.chunks)
    S = tuple(int(n) for n in x.shape[:-1])
    k = len(S)
    s = _sample_letters(k)
    rchunks = x.chunks[:-1]
    y_pair = [None, None] if y is None else [_chunked(y, rchunks), s]
    sw_pair = [None, None] if sw is None else [_chunked(sw, rchunks), s]
    go_pair = _const_or_dask(go_s) if go_arr is None else [_chunked(go_arr, rchunks), s]

    denom: Any = None
    if red == "mean":
        if y is None and sw is None:
            denom = opts.mean_denominator(math.prod(S))
        else:
            denom = da.blockwise(
                B.denom_div, s, *y_pair, *sw_pair,
                adjust_chunks={c: 1 for c in s}, dtype=_F64, meta=_meta(k, _F64), opts=opts,
            ).sum()  # fmt: skip
    scale: Any = go_s
    if want_grad and red == "mean":
        scale = da.blockwise(
            B.mean_scale,
            "",
            *_const_or_dask(denom),
            *_const_or_dask(go_s),
            dtype=_F64,
            meta=np.empty((), _F64),
        )

    args = [x, s + _CLS, t, s + _CLS, *y_pair, *sw_pair, *go_pair, *_const_or_dask(scale)]
    kw = dict(opts=opts, dt=dt, red=red, want_grad=want_grad)
    red_adjust = {_CLS: 1} if red == "none" else {_CLS: 1, **{c: 1 for c in s}}
    red_dt = dt if red == "none" else _F64
    grad = None
    if want_grad:
        fused = da.blockwise(B.div_rows, s + _CLS, *args, dtype=object, meta=_meta(k + 1, object), **kw)
        grad = da.blockwise(B.pick, s + _CLS, fused, s + _CLS, 1, None, dtype=dt, meta=_meta(k + 1, dt))
        loss_blocks = da.blockwise(
            B.pick, s + _CLS, fused, s + _CLS, 0, None,
            adjust_chunks=red_adjust, dtype=red_dt, meta=_meta(k + 1, red_dt),
        )  # fmt: skip
    else:
        loss_blocks = da.blockwise(
            B.div_rows,
            s + _CLS,
            *args,
            adjust_chunks=red_adjust,
            dtype=red_dt,
            meta=_meta(k + 1, red_dt),
            **kw,
        )
    loss = None
    if want_loss:
        if red == "none":
            loss = loss_blocks[..., 0]
            loss = loss.reshape(()) if promoted else loss
        else:
            loss = da.blockwise(
                B.finish, "", loss_blocks.sum(), "", *_const_or_dask(denom),
                mean=red == "mean", out_dtype=dt, dtype=dt, meta=np.empty((), dt),
            )  # fmt: skip
    if grad is not None:
        if promoted:
            grad = grad[0]
        elif moved:
            grad = da.moveaxis(grad, -1, ax)
    return loss, grad


def kl_divergence(
    student: Any,
    teacher: Any,
    *,
    teacher_is: str = "logits",
    temperature: float = 1.0,
    direction: str = "forward",
    axis: int = -1,
    sample_weight: Any = None,
    ignore_index: int | None = None,
    target: Any = None,
    reduction: str = "mean",
    num_threads: int | None = None,
) -> Any:
    options = locals().copy()
    del options["student"], options["teacher"]
    return _divergence(student, teacher, options, want_loss=True, want_grad=False)[0]


def kl_divergence_and_grad(
    student: Any,
    teacher: Any,
    *,
    teacher_is: str = "logits",
    temperature: float = 1.0,
    direction: str = "forward",
    axis: int = -1,
    sample_weight: Any = None,
    ignore_index: int | None = None,
    target: Any = None,
    reduction: str = "mean",
    num_threads: int | None = None,
    grad_output: Any = None,
) -> tuple[Any, Any]:
    options = locals().copy()
    for name in ("student", "teacher", "grad_output"):
        del options[name]
    return _divergence(student, teacher, options, want_loss=True, want_grad=True, grad_output=grad_output)


def js_divergence(
    student: Any,
    teacher: Any,
    *,
    beta: float = 0.5,
    teacher_is: str = "logits",
    temperature: float = 1.0,
    axis: int = -1,
    sample_weight: Any = None,
    ignore_index: int | None = None,
    target: Any = None,
    reduction: str = "mean",
    num_threads: int | None = None,
) -> Any:
    options = locals().copy()
    del options["student"], options["teacher"]
    return _divergence(student, teacher, options, want_loss=True, want_grad=False)[0]


def js_divergence_and_grad(
    student: Any,
    teacher: Any,
    *,
    beta: float = 0.5,
    teacher_is: str = "logits",
    temperature: float = 1.0,
    axis: int = -1,
    sample_weight: Any = None,
    ignore_index: int | None = None,
    target: Any = None,
    reduction: str = "mean",
    num_threads: int | None = None,
    grad_output: Any = None,
) -> tuple[Any, Any]:
    options = locals().copy()
    for name in ("student", "teacher", "grad_output"):
        del options[name]
    return _divergence(student, teacher, options, want_loss=True, want_grad=True, grad_output=grad_output)


_DIV_DOC = """
    Parameters
    ----------
    student, teacher : dask.array.Array or array_like
        The student's logits and the teacher (as ``teacher_is`` says), of one
        shape; rows may be chunked any way. The class axis is rechunked into
        one chunk first (``rechunk``: a vocabulary-sharded array is gathered
        row block by row block; the class-chunked merge of
        :func:`cross_entropy` is not implemented for divergences).
    target : array_like or dask.array.Array, optional
        Tokens of the per-row shape, with ``ignore_index``, as the NumPy
        function; ``sample_weight`` and a per-row ``grad_output`` may be NumPy
        or dask.
    teacher_is, temperature, axis, sample_weight, ignore_index, reduction, num_threads
        As the NumPy function (see its docstring for the formulas). One fused
        kernel call per block; "sum"/"mean" are float64 trees of block sums,
        bitwise reproducible for a fixed chunking."""

kl_divergence.__doc__ = (
    """Lazy :func:`ce_fast.kl_divergence` of dask arrays (a 0-d dask array for
    "mean"/"sum", the per-row divergences for "none").

    ``direction`` as the NumPy function.
"""
    + _DIV_DOC
    + """

    Examples
    --------
    >>> import numpy as np, dask.array as da, ce_fast, ce_fast.dask as cfd
    >>> x = np.random.default_rng(0).standard_normal((6, 5))
    >>> d = cfd.kl_divergence(da.from_array(x, chunks=(2, 5)), x[::-1])
    >>> bool(np.isclose(d.compute(scheduler="sync"), ce_fast.kl_divergence(x, x[::-1])))
    True
"""
)
kl_divergence_and_grad.__doc__ = (
    """Lazy ``(loss, grad)`` of :func:`ce_fast.kl_divergence_and_grad`; compute
    both together (``dask.compute``) so that the fused kernel runs once per block.
"""
    + _DIV_DOC
)
js_divergence.__doc__ = (
    """Lazy :func:`ce_fast.js_divergence` of dask arrays (``beta`` as there).
"""
    + _DIV_DOC
)
js_divergence_and_grad.__doc__ = (
    """Lazy ``(loss, grad)`` of :func:`ce_fast.js_divergence_and_grad`.
"""
    + _DIV_DOC
)


# ---------------------------------------------------------------------------
# the softmax family
# ---------------------------------------------------------------------------


def _softmax_family(x_in: Any, axis: Any, num_threads: Any, op: str) -> Any:
    x = _input(x_in, "x")
    call = softmax_call(_SM_OPS[op], x, axis, num_threads)
    dt, ax = call.dtype, call.axis
    rdt = result_dtype(x.dtype)  # softmax / log_softmax (16-bit x: its own)
    nt = call.num_threads or None
    moved = ax != x.ndim - 1
    if moved:
        x = da.moveaxis(x, ax, -1)
    promoted = x.ndim == 1
    if promoted:
        x = x[None]
    k = x.ndim - 1
    s = _sample_letters(k)
    x = _drop_empty_class_chunks(x)
    nb = len(x.chunks[-1])
    if op == "lse":
        if nb == 1:
            r = da.blockwise(B.lse_rows, s, x, s + _CLS, concatenate=True, dtype=dt, meta=_meta(k, dt), nt=nt)
        else:
            stats = da.blockwise(
                B.sm_stats, s + _CLS + _FLD, x, s + _CLS, new_axes={_FLD: 2}, adjust_chunks={_CLS: 1},
                dtype=_F64, meta=_meta(k + 2, _F64), dt=dt, nt=nt,
            )  # fmt: skip
            r = da.blockwise(
                B.sm_merge, s, stats, s + _CLS + _FLD, concatenate=True, dtype=dt, meta=_meta(k, dt), dt=dt
            )
        return r[0] if promoted else r
    log = op == "log_softmax"
    if nb == 1:
        r = da.blockwise(
            B.softmax_rows, s + _CLS, x, s + _CLS, dtype=rdt, meta=_meta(k + 1, rdt), log=log, nt=nt
        )
    else:
        cchunks = x.chunks[-1]
        starts = tuple(int(v) for v in np.concatenate([[0], np.cumsum(cchunks[:-1])]))
        stats = da.blockwise(
            B.sm_stats, s + _CLS + _FLD, x, s + _CLS, new_axes={_FLD: 2}, adjust_chunks={_CLS: 1},
            dtype=_F64, meta=_meta(k + 2, _F64), dt=dt, nt=nt,
        )  # fmt: skip
        merged = da.blockwise(
            B.sm_merge, s + _MRG, stats, s + _CLS + _FLD, new_axes={_MRG: 2 + nb}, concatenate=True,
            dtype=_F64, meta=_meta(k + 1, _F64), dt=None,
        )  # fmt: skip
        r = da.blockwise(
            B.sm_apply, s + _CLS, x, s + _CLS, _positions(cchunks), _CLS, merged, s + _MRG,
            concatenate=True, dtype=rdt, meta=_meta(k + 1, rdt), starts=starts, log=log, dt=dt, out_dt=rdt,
            nt=nt,
        )  # fmt: skip
    if promoted:
        return r[0]
    return da.moveaxis(r, -1, ax) if moved else r


def logsumexp(x: ArrayLike, *, axis: int = -1, num_threads: int | None = None) -> Any:
    """Lazy :func:`ce_fast.logsumexp` of a dask array (any chunking; with the
    axis in several chunks, the blocks' ``(max, log1p(s'))`` are merged
    exactly, in a fixed order). Returns a dask array of ``x``'s shape
    without ``axis`` (0-d for 1-d input; ``.compute()`` gives a NumPy
    scalar then)."""
    return _softmax_family(x, axis, num_threads, "lse")


def log_softmax(x: ArrayLike, *, axis: int = -1, num_threads: int | None = None) -> Any:
    """Lazy :func:`ce_fast.log_softmax` of a dask array (any chunking: with
    the axis in several chunks, each block's log-softmax minus
    ``Delta_b = lse - lse_b``). No ``out=``."""
    return _softmax_family(x, axis, num_threads, "log_softmax")


def softmax(x: ArrayLike, *, axis: int = -1, num_threads: int | None = None) -> Any:
    """Lazy :func:`ce_fast.softmax` of a dask array (any chunking: with the
    axis in several chunks, each block's softmax times
    ``exp(lse_b - lse)``). No ``out=``."""
    return _softmax_family(x, axis, num_threads, "softmax")


# ---------------------------------------------------------------------------
# binary cross-entropy with logits
# ---------------------------------------------------------------------------


def _elementwise(value: Any, name: str, x: Any, dt: np.dtype, what: str = "logits'") -> Any:
    """An elementwise operand broadcast lazily to the logits' shape and
    chunks (a zero-stride view per block), checked eagerly."""
    shape = tuple(int(n) for n in x.shape)
    a = _typed(value, name, dt)
    check_broadcast(tuple(a.shape), shape, name, what)
    full = (1,) * (len(shape) - a.ndim) + tuple(a.shape)
    a = a.reshape(full)
    chunks = tuple((1,) if n == 1 else c for n, c in zip(full, x.chunks))
    a = _chunked(a, chunks)
    return da.broadcast_to(a, shape, chunks=x.chunks)


def _bce(
    logits: Any,
    target: Any,
    *,
    weight: Any,
    pos_weight: Any,
    reduction: Any,
    num_threads: Any,
    want_loss: bool,
    want_grad: bool,
    grad_output: ArrayLike | None = None,
) -> tuple[Any, Any]:
    opts = binary_options(reduction=reduction, num_threads=num_threads)
    x = _input(logits, "logits")
    dt, gdt = compute_dtype(x.dtype, "logits"), result_dtype(x.dtype)
    red = REDUCTION_NAMES[opts.reduction]
    nt = opts.num_threads or None
    promoted = x.ndim == 0
    if promoted:
        x = x[None]
    t = _elementwise(target, "target", x, dt)
    w = None if weight is None else _elementwise(weight, "weight", x, dt)
    pw = None if pos_weight is None else _elementwise(pos_weight, "pos_weight", x, dt)
    go_s: Any = 1.0
    go = None
    if want_grad:
        go, go_s = _upstream(grad_output, red != "none", tuple(x.shape), dt, "per-element loss")
        if go is not None:
            go = _elementwise(grad_output, "grad_output", x, dt, "per-element loss")
    numel = math.prod(int(n) for n in x.shape)
    if red == "mean" and numel:
        # one double division, as ce_fast
        go_s = go_s.astype(_F64) / numel if _is_dask(go_s) else go_s / numel
    k = x.ndim
    s = _sample_letters(k)

    def pair(a: Any) -> list[Any]:
        return [None, None] if a is None else [a, s]

    args = [x, s, *pair(t), *pair(w), *pair(pw), *pair(go), *_const_or_dask(go_s)]
    kw = dict(red=red, nt=nt, want_loss=want_loss, want_grad=want_grad)
    red_adjust = {} if red == "none" else {c: 1 for c in s}
    red_dt = dt if red == "none" else _F64
    grad = loss_blocks = None
    if want_grad and want_loss:
        fused = da.blockwise(B.bce_block, s, *args, dtype=object, meta=_meta(k, object), **kw)
        grad = da.blockwise(B.pick, s, fused, s, 1, None, dtype=gdt, meta=_meta(k, gdt))
        loss_blocks = da.blockwise(
            B.pick, s, fused, s, 0, None, adjust_chunks=red_adjust, dtype=red_dt, meta=_meta(k, red_dt)
        )
    elif want_grad:
        grad = da.blockwise(B.bce_block, s, *args, dtype=gdt, meta=_meta(k, gdt), **kw)
    else:
        loss_blocks = da.blockwise(
            B.bce_block, s, *args, adjust_chunks=red_adjust, dtype=red_dt, meta=_meta(k, red_dt), **kw
        )
    loss = None
    if loss_blocks is not None:
        if red == "none":
            loss = loss_blocks.reshape(()) if promoted else loss_blocks
        else:
            loss = da.blockwise(
                B.finish, "", loss_blocks.sum(), "", float(numel), None,
                mean=red == "mean", out_dtype=dt, dtype=dt, meta=np.empty((), dt),
            )  # fmt: skip
    if grad is not None and promoted:
        grad = grad.reshape(())
    return loss, grad


_BCE_DOC = """
    Parameters
    ----------
    logits : dask.array.Array or array_like
        Any shape and chunking.
    target, weight, pos_weight : array_like or dask.array.Array
        Broadcast (NumPy rules, as :func:`ce_fast.binary_cross_entropy_with_logits`)
        lazily to the logits' shape and chunks.
    reduction, num_threads
        As the NumPy function; "mean" is the float64 sum of the blocks'
        sums divided by the number of elements (NaN if empty)."""


def binary_cross_entropy_with_logits(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    num_threads: int | None = None,
) -> Any:
    return _bce(**locals(), want_loss=True, want_grad=False)[0]


def binary_cross_entropy_with_logits_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    num_threads: int | None = None,
    grad_output: ArrayLike | None = None,
) -> Any:
    return _bce(**locals(), want_loss=False, want_grad=True)[1]


def binary_cross_entropy_with_logits_and_grad(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: ArrayLike | None = None,
    pos_weight: ArrayLike | None = None,
    reduction: Literal["mean", "sum", "none"] = "mean",
    num_threads: int | None = None,
    grad_output: ArrayLike | None = None,
) -> tuple[Any, Any]:
    return _bce(**locals(), want_loss=True, want_grad=True)


binary_cross_entropy_with_logits.__doc__ = (
    """Lazy :func:`ce_fast.binary_cross_entropy_with_logits` of dask arrays
    (a 0-d dask array for "mean"/"sum", the logits' shape for "none").
"""
    + _BCE_DOC
)
binary_cross_entropy_with_logits_grad.__doc__ = (
    """Lazy :func:`ce_fast.binary_cross_entropy_with_logits_grad`; ``grad_output``
    a number, or (``reduction="none"``) an array broadcastable to the logits.
"""
    + _BCE_DOC
)
binary_cross_entropy_with_logits_and_grad.__doc__ = (
    """Lazy ``(loss, grad)``; compute both together (``dask.compute``) so
    that the fused kernel runs once per block.
"""
    + _BCE_DOC
)
