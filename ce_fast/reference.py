"""Plain-NumPy reference implementations of the ``ce_fast`` public API.

This module is the *executable specification* of ``ce_fast``: every public
function of the package has a twin here with the same name, the same
positional and keyword-only arguments and the same semantics, written to be
read, not to be fast.  The test-suite checks the compiled kernels against
these functions (in float64, to ~1e-12 relative), and checks these functions
against PyTorch and SciPy.

The module only imports NumPy and never imports the rest of ``ce_fast``.

Conventions shared by every function
------------------------------------
* **dtypes.**  ``float32`` and ``float64`` inputs give ``float32`` /
  ``float64`` results; ``float16`` and bfloat16 (``ml_dtypes.bfloat16``)
  give ``float32``, except the results of the logits' shape (gradients,
  ``softmax``, ``log_softmax``), which keep the 16-bit dtype (PyTorch's rule;
  their ``out=`` may also be ``float32``); integer and bool inputs give
  ``float64``.  complex, ``longdouble``, object, string, bytes, void,
  datetime and timedelta inputs (and ragged sequences) raise ``TypeError``
  naming the argument.
  Internally everything is computed in float64 (exact for the float32 inputs)
  and rounded once to the result dtype at the end.
* **Reduced results** (``reduction="mean"``/``"sum"``) are NumPy scalars of
  the result dtype (``np.float32(...)`` / ``np.float64(...)``), like
  ``np.sum``.  ``reduction="none"`` always returns an ``ndarray`` (0-d for a
  single sample).  ``logsumexp``, ``entropy`` and ``softmax_entropy`` follow
  ``np.sum(..., axis=axis)``: a NumPy scalar when the result is 0-d.
* **Numerical care.**  Row statistics use ``m = max x`` and
  ``s' = sum_k exp(x_k - m) - 1``, where ``s'`` is summed over every element
  except one occurrence of the arg-max (so no ``1 - 1`` cancellation; ties at
  the maximum contribute 1 each).  Then ``lse - x_c = (m - x_c) + log1p(s')``
  (a sum of two non-negative numbers) and ``p_argmax - 1 = -s'/(1 + s')``.
  Small losses and small gradients therefore keep their relative accuracy.
* **Zero coefficients.**  A term ``a * (lse - x_c)`` (or ``p log p``) whose
  coefficient ``a`` is exactly 0 contributes exactly 0, even when the other
  factor is infinite (``0 * log 0 = 0``).  So ``-inf`` logits on classes
  without target mass (and without smoothing mass) give a finite loss.
* ``num_threads`` (``None`` or a positive ``int``) is validated and ignored;
  ``out=`` is honoured (validated, filled, returned) where the API has it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_and_grad",
    "binary_cross_entropy_with_logits_grad",
    "cross_entropy",
    "cross_entropy_and_grad",
    "cross_entropy_grad",
    "entropy",
    "js_divergence",
    "js_divergence_and_grad",
    "kl_divergence",
    "kl_divergence_and_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_and_grad",
    "linear_js_divergence",
    "linear_js_divergence_and_grad",
    "linear_kl_divergence",
    "linear_kl_divergence_and_grad",
    "log_softmax",
    "logsumexp",
    "scipy_entropy",
    "scipy_logsumexp",
    "sklearn_log_loss",
    "softmax",
    "softmax_entropy",
]

_REDUCTIONS = ("mean", "sum", "none")

_AxisError = np.exceptions.AxisError


# ---------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------


def _check_num_threads(num_threads):
    """``num_threads`` must be None or a positive integer (bool is not)."""
    if num_threads is None:
        return
    if (
        isinstance(num_threads, (bool, np.bool_))
        or not isinstance(num_threads, (int, np.integer))
        or num_threads < 1
    ):
        raise ValueError(f"num_threads must be None or a positive integer, got {num_threads!r}")


def _check_reduction(reduction):
    """``reduction`` is one of "mean", "sum", "none" (case-sensitive)."""
    if not isinstance(reduction, str) or reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of 'mean', 'sum', 'none', got {reduction!r}")


def _real_scalar(value, name):
    """A real Python/NumPy number as a float; ValueError otherwise."""
    arr = np.asarray(value)
    if arr.ndim != 0 or arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real number, got {value!r}")
    return float(arr)


def _to_array(x, name):
    """``np.asarray`` (or ``np.from_dlpack``) plus the dtype-kind check."""
    if isinstance(x, np.ndarray):
        arr = x
    elif hasattr(x, "__dlpack__") and not hasattr(x, "__array__"):
        arr = np.from_dlpack(x)
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # ragged lists and other non-arrays
            raise TypeError(f"{name}: cannot convert {type(x).__name__} to an array ({exc})") from exc
    if arr.dtype.name == "bfloat16":  # ml_dtypes' bfloat16 (kind "V"): exactly representable in float32
        return arr
    if arr.dtype.kind not in "biuf" or (arr.dtype.kind == "f" and arr.itemsize > 8):
        raise TypeError(f"{name}: unsupported dtype {arr.dtype} (expected float16/32/64, integer or bool)")
    return arr


def _compute_dtype(dtype):
    """float16/bfloat16/float32 -> float32; float64, integer and bool -> float64."""
    if (dtype.kind == "f" and dtype.itemsize <= 4) or dtype.name == "bfloat16":  # any byte order
        return np.dtype(np.float32)
    return np.dtype(np.float64)


def _is_16bit(dtype):
    return (dtype.kind == "f" and dtype.itemsize == 2) or dtype.name == "bfloat16"


def _as_logits(x, name):
    """``(array as float64, compute dtype, dtype of the results of its
    shape)``: the 16-bit dtypes keep theirs (native byte order)."""
    arr = _to_array(x, name)
    shaped = arr.dtype.newbyteorder("=") if _is_16bit(arr.dtype) else _compute_dtype(arr.dtype)
    return arr.astype(np.float64), _compute_dtype(arr.dtype), shaped


def _as_float(x, name):
    """Return ``(array as float64, compute dtype)`` for a float-ish input."""
    arr = _to_array(x, name)
    return arr.astype(np.float64), _compute_dtype(arr.dtype)


def _as_float64(x, name):
    """Any real array-like (weights, grad_output, ...) as float64."""
    return _to_array(x, name).astype(np.float64)


def _normalize_axis(axis, ndim):
    """A valid non-negative axis, or AxisError (a ValueError subclass)."""
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"axis must be an integer, got {axis!r}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise _AxisError(axis, ndim)
    return axis % ndim


def _check_out(out, shape, dtype):
    """``out`` must be a writable C-contiguous ndarray of shape and dtype
    (or float32 for a 16-bit dtype)."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    ok = out.dtype == dtype or (_is_16bit(dtype) and out.dtype == np.float32)
    if out.shape != tuple(shape) or not ok:
        raise ValueError(
            f"out must have shape {tuple(shape)} and dtype {dtype}, "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not (out.flags.c_contiguous and out.flags.writeable and out.flags.aligned):
        raise ValueError("out must be a writable, aligned, C-contiguous array")


def _finish(result64, dtype, out):
    """Round a float64 result to ``dtype``, into ``out`` if given."""
    if out is None:
        return np.array(result64, dtype=dtype, order="C")  # keeps 0-d as 0-d
    out[...] = result64
    return out


def _broadcast_to(arr, shape, name, target_name):
    """One-directional broadcast with a ValueError that names things."""
    try:
        return np.broadcast_to(arr, shape)
    except ValueError:
        raise ValueError(
            f"{name} of shape {arr.shape} is not broadcastable to the {target_name} shape {tuple(shape)}"
        ) from None


def _grad_output(grad_output, reduction, sample_shape):
    """Upstream gradient as a float64 array of ``sample_shape`` (none) or 0-d.

    ``"mean"``/``"sum"``: a scalar (0-d) only.  ``"none"``: a scalar, or an
    array broadcastable (one-directionally) to the per-sample loss shape.
    Default 1.
    """
    if grad_output is None:
        g = np.float64(1.0)
    else:
        g = _as_float64(grad_output, "grad_output")
    if reduction == "none":
        if np.ndim(g) == 0:
            return np.full(sample_shape, float(g))
        return _broadcast_to(g, sample_shape, "grad_output", "per-sample loss")
    if np.ndim(g) != 0:
        raise ValueError(
            f"grad_output must be a scalar with reduction={reduction!r}, got shape {np.shape(g)}"
        )
    return np.asarray(g, dtype=np.float64)


def _reduce(per_sample, total, denominator, reduction, dtype):
    """Apply a reduction; ``per_sample`` is the float64 "none" array."""
    if reduction == "none":
        return np.asarray(per_sample, dtype=dtype)
    if reduction == "sum":
        return dtype.type(total)
    if denominator == 0:
        return dtype.type(np.nan)
    return dtype.type(total / denominator)


# ---------------------------------------------------------------------------
# Row statistics shared by the softmax-based functions
# ---------------------------------------------------------------------------


def _row_stats(x):
    """Stable per-row statistics of a ``(K, C)`` float64 array, ``C >= 1``.

    Returns ``m, am, e, sp`` with ``am`` the (first) arg-max, ``m = x[am]``,
    ``e = exp(x - m)`` (``e[am] = 1``) and ``sp = sum(e) - 1`` summed over
    every entry except ``am`` (no cancellation).  Rows with NaN have
    ``m = NaN``; such rows, rows containing ``+inf`` and all ``-inf`` rows
    must be handled by the caller (see :func:`_bad_rows`).
    """
    rows = np.arange(x.shape[0])
    with np.errstate(invalid="ignore", over="ignore"):
        am = np.argmax(x, axis=-1)  # the first NaN if any
        m = x[rows, am]
        e = np.exp(x - m[:, None])
        e[rows, am] = 0.0
        sp = e.sum(axis=-1)
        e[rows, am] = 1.0
    return m, am, e, sp


def _bad_rows(x):
    """Rows whose softmax is undefined: NaN or +inf anywhere, or all -inf."""
    return np.isnan(x).any(axis=-1) | np.isposinf(x).any(axis=-1) | np.isneginf(x).all(axis=-1)


def _neg_log_softmax(x, m, sp):
    """``lse - x_c = (m - x_c) + log1p(sp)``, each part non-negative."""
    with np.errstate(invalid="ignore"):
        return (m[:, None] - x) + np.log1p(sp)[:, None]


def _softmax_from_stats(e, sp):
    return e / (1.0 + sp)[:, None]


# ---------------------------------------------------------------------------
# Categorical cross-entropy
# ---------------------------------------------------------------------------


def _ce_rows(x, a, zc, lam, want_grad):
    """Loss, gradient and lse of ``sum_c a_c (lse - x_c) + lam * zc * lse**2``.

    ``x``: ``(K, C)`` (capped) logits; ``a``: ``(K, C)`` non-negative
    coefficients (a zero coefficient gives an exactly zero term); ``zc``:
    ``(K,)`` z-loss weight per row.  The gradient is
    ``g_j = p_j * B - a_j`` with ``B = sum(a) + 2 lam zc lse``; at the arg-max
    it is evaluated (where p_am > 1/2) as ``(B - a_am) + (p_am - 1) * B`` with
    ``B - a_am = sum_{c != am} a_c + 2 lam zc lse`` and
    ``p_am - 1 = -s'/(1 + s')``, so nothing cancels catastrophically.
    Bad rows (NaN/+inf anywhere, all -inf) get NaN loss, NaN gradient and
    NaN lse.
    """
    rows = np.arange(x.shape[0])
    bad = _bad_rows(x)
    m, am, e, sp = _row_stats(x)
    with np.errstate(all="ignore"):
        lse = m + np.log1p(sp)
        nlp = _neg_log_softmax(x, m, sp)
        loss = np.where(a != 0, a * nlp, 0.0).sum(axis=-1)
        if lam != 0:
            loss = loss + (lam * zc * lse) * lse  # not lse**2: that overflows first
        loss[bad] = np.nan
        lse[bad] = np.nan
        if not want_grad:
            return loss, None, lse
        p = _softmax_from_stats(e, sp)
        p_am_minus_1 = -sp / (1.0 + sp)
        a_rest = a.copy()
        a_rest[rows, am] = 0.0
        z = 2.0 * lam * zc * lse if lam != 0 else 0.0
        big_b = a.sum(axis=-1) + z
        rest_b = a_rest.sum(axis=-1) + z  # == big_b - a[am], without cancellation
        grad = p * big_b[:, None] - a
        # the p - 1 form only where p_am > 1/2 (sp < 1); elsewhere it would
        # cancel instead, and the plain form is the accurate one
        fixed = rest_b + p_am_minus_1 * big_b
        grad[rows, am] = np.where(sp < 1.0, fixed, grad[rows, am])
        grad[bad] = np.nan
    return loss, grad, lse


def _ce_grad_from_lse(x, a, zc, lam, lse):
    """The gradient of :func:`_ce_rows` from a given per-row ``lse`` (no row
    statistics): ``p = exp(x - lse)``, ``g = p B - a``, and where ``p > 1/2``
    the form ``(p - 1) B + (B - a)`` with ``p - 1 = expm1(x - lse)``, so a
    confident row's gradient keeps the accuracy of ``x - lse``."""
    with np.errstate(all="ignore"):
        d = x - lse[:, None]
        p = np.exp(d)
        big_b = a.sum(axis=-1) + (2.0 * lam * zc * lse if lam != 0 else 0.0)
        grad = p * big_b[:, None] - a
        near = (big_b[:, None] - a) + np.expm1(d) * big_b[:, None]
        return np.where(d > -np.log(2.0), near, grad)


def _softcap(x, cap):
    """``cap * tanh(x / cap)`` and its derivative ``1 - tanh(x/cap)**2``.

    The derivative is computed as ``4a / (1 + a)**2`` with
    ``a = exp(-2 |x / cap|)`` (no cancellation); ``+-inf`` maps to ``+-cap``
    with derivative 0.
    """
    u = x / cap
    a = np.exp(-2.0 * np.abs(u))
    return cap * np.tanh(u), 4.0 * a / (1.0 + a) ** 2


def _categorical(
    logits,
    target,
    *,
    axis,
    weight,
    sample_weight,
    ignore_index,
    reduction,
    label_smoothing,
    z_loss,
    softcap,
    num_threads,
    want_loss,
    want_grad,
    want_lse=False,
    lse=None,
    grad_output=None,
    out=None,
):
    """Shared implementation of the three ``cross_entropy*`` functions."""
    # -- scalar options -----------------------------------------------------
    _check_num_threads(num_threads)
    _check_reduction(reduction)
    eps = _real_scalar(label_smoothing, "label_smoothing")
    if not 0.0 <= eps <= 1.0:  # also rejects NaN
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    lam = _real_scalar(z_loss, "z_loss")
    if not 0.0 <= lam < np.inf:
        raise ValueError(f"z_loss must be finite and >= 0, got {z_loss!r}")
    cap = None
    if softcap is not None:
        cap = _real_scalar(softcap, "softcap")
        if not 0.0 < cap < np.inf:
            raise ValueError(f"softcap must be None or finite and > 0, got {softcap!r}")
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, (int, np.integer)):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    ignore_index = int(ignore_index)
    if not -(2**63) <= ignore_index < 2**63:
        raise ValueError(f"ignore_index {ignore_index} does not fit in int64")

    # -- logits and axis ----------------------------------------------------
    x, dtype, shaped = _as_logits(logits, "logits")
    if x.ndim == 0:
        raise ValueError("logits must have at least one dimension (the class axis)")
    ax = _normalize_axis(axis, x.ndim)
    n_classes = x.shape[ax]
    if n_classes == 0:
        raise ValueError("logits has an empty class axis (C == 0)")
    sample_shape = x.shape[:ax] + x.shape[ax + 1 :]
    moved_shape = sample_shape + (n_classes,)
    x2 = np.moveaxis(x, ax, -1).reshape(-1, n_classes)
    n_rows = x2.shape[0]

    # -- target -------------------------------------------------------------
    t = _to_array(target, "target")
    if t.dtype.kind == "b":
        raise TypeError(
            "target: boolean targets are ambiguous; pass integer class indices or floating probabilities"
        )
    integer_target = t.dtype.kind in "iu"
    expected = (
        f"expected an integer class-index target of shape {sample_shape} or a "
        f"floating probability target of shape {x.shape}"
    )
    if integer_target and t.shape != sample_shape:
        raise ValueError(f"{expected}; got an integer target of shape {t.shape}")
    if not integer_target and t.shape != x.shape:
        raise ValueError(f"{expected}; got a floating target of shape {t.shape}")
    if not integer_target and ignore_index >= 0:
        raise ValueError("ignore_index >= 0 is only supported with integer class-index targets")

    # -- class weights ------------------------------------------------------
    if weight is None:
        w = np.ones(n_classes)
    else:
        w = _as_float64(weight, "weight")
        if w.shape != (n_classes,):
            raise ValueError(f"weight must be 1-D of length C = {n_classes}, got shape {w.shape}")

    # -- sample weights -----------------------------------------------------
    if sample_weight is None:
        sw = np.ones(n_rows)
    else:
        sw = _as_float64(sample_weight, "sample_weight")
        sw = _broadcast_to(sw, sample_shape, "sample_weight", "per-sample loss")
        sw = sw.reshape(-1)

    # -- upstream gradient and out ------------------------------------------
    if want_grad:
        go = _grad_output(grad_output, reduction, sample_shape)
        if reduction == "none":
            go = go.reshape(-1)
        if out is not None:
            _check_out(out, x.shape, shaped)
        if lse is not None:
            lse = _as_float64(lse, "lse")
            if lse.shape != sample_shape:
                raise ValueError(
                    f"lse must have the per-sample shape {sample_shape} (the logits' shape without "
                    f"the class axis), got shape {lse.shape}"
                )
            lse = lse.reshape(-1)

    # -- rows that are computed and their coefficients ----------------------
    if integer_target:
        y_flat = t.reshape(-1)
        keep, y = _check_class_indices(y_flat, n_classes, ignore_index)
        xk = x2[keep]
        yk = y[keep]
        rows = np.arange(xk.shape[0])
        wy = w[yk]
        # a_c = (1 - eps) w_y [c == y] + (eps / C) w_c; the smoothing term only
        # with smoothing (as PyTorch: a NaN weight of an unused class is inert)
        a = np.tile((eps / n_classes) * w if eps > 0 else np.zeros_like(w), (xk.shape[0], 1))
        a[rows, yk] += (1.0 - eps) * wy
        zc = wy
        sk = sw[keep]
        denominator = np.sum(sk * wy)
    else:
        keep = np.ones(n_rows, dtype=bool)
        xk = x2
        q = np.moveaxis(t.astype(np.float64), ax, -1).reshape(-1, n_classes)
        q_smooth = (1.0 - eps) * q + eps / n_classes
        a = w * q_smooth  # a_c = w_c q'_c
        zc = np.ones(n_rows)
        sk = sw
        denominator = np.sum(sw)

    if cap is not None:
        xk, dcap = _softcap(xk, cap)

    loss_k, grad_k, lse_k = _ce_rows(xk, a, zc, lam, want_grad and lse is None)
    if want_grad and lse is not None:
        grad_k = _ce_grad_from_lse(xk, a, zc, lam, lse[keep])
    with np.errstate(invalid="ignore"):
        loss_k = sk * loss_k

    loss = None
    if want_loss:
        per_sample = np.zeros(n_rows)
        per_sample[keep] = loss_k
        loss = _reduce(
            per_sample.reshape(sample_shape),
            np.sum(loss_k),
            denominator,
            reduction,
            dtype,
        )
        if want_lse:
            lse_all = np.full(n_rows, np.nan)
            lse_all[keep] = lse_k
            return loss, lse_all.reshape(sample_shape)
    if not want_grad:
        return loss

    with np.errstate(invalid="ignore", divide="ignore"):
        if reduction == "none":
            scale = go[keep]
        elif reduction == "sum":
            scale = np.full(xk.shape[0], float(go))
        else:
            scale = np.full(xk.shape[0], float(go) / denominator if denominator != 0 else np.nan)
        grad_k = grad_k * (sk * scale)[:, None]
        if cap is not None:
            grad_k = grad_k * dcap
    grad2 = np.zeros((n_rows, n_classes))
    grad2[keep] = grad_k
    grad = np.moveaxis(grad2.reshape(moved_shape), -1, ax)
    return loss, _finish(grad, shaped, out)


def _check_class_indices(y_flat, n_classes, ignore_index):
    """Validate integer targets; return (non-ignored mask, int64 indices).

    ``IndexError`` names the first offending flat (C-order) position.
    """
    if y_flat.dtype == np.uint64:
        too_big = y_flat > np.uint64(np.iinfo(np.int64).max)
        y = np.where(too_big, np.uint64(0), y_flat).astype(np.int64)
    else:
        too_big = np.zeros(y_flat.shape, dtype=bool)
        y = y_flat.astype(np.int64)
    ignored = ~too_big & (y == ignore_index)
    bad = ~ignored & (too_big | (y < 0) | (y >= n_classes))
    if bad.any():
        pos = int(np.flatnonzero(bad)[0])
        raise IndexError(
            f"target: class index {y_flat[pos]} at flat position {pos} is outside "
            f"[0, {n_classes}) and is not ignore_index ({ignore_index})"
        )
    return ~ignored, y


_CE_DOC_COMMON = """
    Parameters
    ----------
    logits : array_like, at least 1-D
        Unnormalised scores; the class axis is ``axis`` (``C`` classes,
        ``C >= 1``).
    target : array_like
        Either *integer* class indices with the logits' shape without the
        class axis (any integer dtype), or *floating* probabilities with
        exactly the logits' shape.  bool/complex/object/string targets raise
        ``TypeError``; any other shape raises ``ValueError``.
    axis : int
        The class axis.
    weight : array_like, optional
        Class weights ``w``, 1-D of length ``C``.
    sample_weight : array_like, optional
        Per-sample weights ``s``, broadcastable (one-directionally) to the
        per-sample loss shape.
    ignore_index : int
        Integer targets equal to it are ignored: their loss is 0, they are
        left out of the ``"mean"`` denominator, their gradient row is exactly
        0, and their logits row is never read (NaN/inf there is harmless).
        With a probability target it must be negative (``ValueError``).
    reduction : {"mean", "sum", "none"}
    label_smoothing : float in [0, 1]
    z_loss : float >= 0 (finite)
        Adds ``s_i * w_y * z_loss * lse**2`` (integer target) or
        ``s_i * z_loss * lse**2`` (probability target).
    softcap : float > 0 (finite), optional
        Replaces every logit ``x`` by ``softcap * tanh(x / softcap)`` first.
        ``+-inf`` logits are capped to ``+-softcap`` (finite), so with a
        soft-cap ``-inf`` no longer masks a class and ``+inf`` is not NaN.
    num_threads : None or positive int
        Validated and ignored by the reference.

    Semantics
    ---------
    For sample ``i`` with (capped) logits ``x``, ``m = max x``,
    ``lse = logsumexp(x)``, ``p = softmax(x)``, ``eps = label_smoothing``:

    * integer target ``y``:
      ``loss_i = s_i [(1-eps) w_y (lse - x_y) + (eps/C) sum_c w_c (lse - x_c)]
      + s_i w_y z_loss lse**2``; ``"mean"`` divides the sum by
      ``sum_{non-ignored} s_i w_{y_i}`` (PyTorch semantics).
    * probability target ``q``: ``q' = (1-eps) q + eps/C``,
      ``loss_i = -s_i sum_c w_c q'_c log p_c + s_i z_loss lse**2``;
      ``"mean"`` divides by ``sum_i s_i`` (``N`` without ``sample_weight``).
      The probabilities are not validated (as PyTorch).
    * Terms with a zero coefficient (``w_c q'_c == 0``, resp.
      ``(1-eps) w_y [c == y] + (eps/C) w_c == 0``) are exactly 0, so ``-inf``
      logits on classes without target mass give a finite loss.
    * A row with NaN or ``+inf`` anywhere, or with all ``-inf``, has NaN loss
      and an all-NaN gradient row (NaN propagates to ``"sum"``/``"mean"``).
      ``-inf`` on the target class (row not all ``-inf``) gives ``+inf`` loss
      and a finite gradient.
    * ``"mean"`` with a zero denominator (no samples, all ignored, zero total
      weight) is NaN; its gradient is 0 on ignored rows and NaN on the others
      (so an all-ignored batch has an all-zero gradient).  ``"sum"`` of
      nothing is 0; ``"none"`` returns an ndarray of the target's shape.
    * Reduced losses are NumPy scalars of the compute dtype.
    * Errors: class index outside ``[0, C)`` and not ``ignore_index`` ->
      ``IndexError`` naming the first flat position and its value; ``C == 0``,
      0-d logits, bad ``reduction``/``label_smoothing``/``z_loss``/``softcap``,
      bad ``weight``/``sample_weight``/``grad_output`` shape, bad
      ``num_threads`` -> ``ValueError``; axis out of range -> ``AxisError``
      (a ``ValueError``).
"""

_CE_GRAD_DOC = """
    Gradient (w.r.t. the *raw* logits, logits' shape and compute dtype) of the
    returned quantity.  Per sample, integer target:
    ``g_j = s_i [p_j ((1-eps) w_y + (eps/C) W + 2 z_loss w_y lse)
    - (1-eps) w_y [j == y] - (eps/C) w_j]`` with ``W = sum_c w_c``; probability
    target: ``g_j = s_i [p_j (Q + 2 z_loss lse) - w_j q'_j]`` with
    ``Q = sum_c w_c q'_c``; times ``1 - tanh(x_j/softcap)**2`` with a soft-cap.
    It is then scaled by ``grad_output`` (``"none"``: a scalar or an array
    broadcastable to the per-sample shape, default 1; ``"sum"``: a scalar; ``"mean"``:
    ``grad_output / denominator``).  A non-scalar ``grad_output`` with
    ``"mean"``/``"sum"`` is a ``ValueError``.  ``out``, if given, must be a
    writable C-contiguous ndarray of the logits' shape and compute dtype
    (``TypeError`` if not an ndarray, ``ValueError`` otherwise); it may be
    the logits array itself.  The arg-max entry uses ``p - 1 = -s'/(1+s')``
    so tiny gradients are not swallowed by cancellation.
"""


def cross_entropy(
    logits,
    target,
    *,
    axis=-1,
    weight=None,
    sample_weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    num_threads=None,
    return_lse=False,
):
    return _categorical(
        logits,
        target,
        axis=axis,
        weight=weight,
        sample_weight=sample_weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        num_threads=num_threads,
        want_loss=True,
        want_grad=False,
        want_lse=bool(return_lse),
    )


def cross_entropy_grad(
    logits,
    target,
    *,
    axis=-1,
    weight=None,
    sample_weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    num_threads=None,
    grad_output=None,
    out=None,
    lse=None,
):
    _, grad = _categorical(
        logits,
        target,
        axis=axis,
        weight=weight,
        sample_weight=sample_weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        num_threads=num_threads,
        want_loss=False,
        want_grad=True,
        lse=lse,
        grad_output=grad_output,
        out=out,
    )
    return grad


def cross_entropy_and_grad(
    logits,
    target,
    *,
    axis=-1,
    weight=None,
    sample_weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    num_threads=None,
    grad_output=None,
    out=None,
):
    return _categorical(
        logits,
        target,
        axis=axis,
        weight=weight,
        sample_weight=sample_weight,
        ignore_index=ignore_index,
        reduction=reduction,
        label_smoothing=label_smoothing,
        z_loss=z_loss,
        softcap=softcap,
        num_threads=num_threads,
        want_loss=True,
        want_grad=True,
        grad_output=grad_output,
        out=out,
    )


cross_entropy.__doc__ = (
    """Categorical cross-entropy of softmax(logits) against ``target``.
"""
    + _CE_DOC_COMMON
    + """
    return_lse : bool, default False
        Also return the per-sample log-sum-exp of the (capped) logits.

    Returns
    -------
    loss : NumPy scalar (``"mean"``/``"sum"``) or ndarray (``"none"``).
    lse : float64 ndarray of the per-sample shape, with ``return_lse=True``
        (then ``(loss, lse)`` is returned): ``log sum_c exp(x_c)`` of each
        row's (capped) logits, in float64 whatever the logits' dtype; NaN for
        ignored samples (never read) and for rows whose loss is NaN (NaN or
        ``+inf`` in the row, or all ``-inf``).
"""
)
cross_entropy_grad.__doc__ = (
    """Gradient of :func:`cross_entropy` with respect to ``logits``.
"""
    + _CE_DOC_COMMON
    + _CE_GRAD_DOC
    + """
    ``lse`` (optional): the per-sample log-sum-exp that
    ``cross_entropy(..., return_lse=True)`` returned for these logits and
    options (any float dtype, read as float64; its values at ignored samples
    are not read).  The gradient is then computed from it in one pass
    (``p = exp(x - lse)``, and ``p - 1 = expm1(x - lse)`` where ``p > 1/2``),
    without the row maximum or sum; it is as accurate as ``lse`` (an absolute
    error of about ``2**-53 |lse|`` in ``x - lse``).  A ``lse`` of another
    shape is a ``ValueError``; one that does not belong to the logits gives a
    wrong gradient (it is not checked).
"""
)
cross_entropy_and_grad.__doc__ = (
    """``(cross_entropy(...), cross_entropy_grad(...))`` in one call.
"""
    + _CE_DOC_COMMON
    + _CE_GRAD_DOC
)


# ---------------------------------------------------------------------------
# Cross-entropy of a linear layer (the language-model head)
# ---------------------------------------------------------------------------


def _linear_logits(hidden, weight, bias):
    """``(hidden @ weight.T + bias in float64, compute dtype)``."""
    h, h_dtype = _as_float(hidden, "hidden")
    w, w_dtype = _as_float(weight, "weight")
    dtypes = [h_dtype, w_dtype]
    if h.ndim < 1 or w.ndim != 2 or h.shape[-1] != w.shape[1]:
        raise ValueError(f"hidden (..., D) and weight (C, D) do not match: {h.shape} and {w.shape}")
    if w.shape[0] == 0:
        raise ValueError("weight has no rows: the class axis is empty (C == 0)")
    z = h @ w.T
    if bias is not None:
        b, b_dtype = _as_float(bias, "bias")
        if b.shape != (w.shape[0],):
            raise ValueError(f"bias must be 1-d of length C = {w.shape[0]}, got shape {b.shape}")
        z = z + b
        dtypes.append(b_dtype)
    return z, h, w, np.result_type(*dtypes)


def linear_cross_entropy(
    hidden,
    weight,
    target,
    *,
    bias=None,
    class_weight=None,
    sample_weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    num_threads=None,
    chunk_size=None,
):
    """``cross_entropy(hidden @ weight.T + bias, target, weight=class_weight, ...)``.

    The logits are materialised here (this is the specification);
    ``chunk_size`` is accepted for signature compatibility and ignored.
    """
    z, _, _, dtype = _linear_logits(hidden, weight, bias)
    loss = cross_entropy(
        z, target, weight=class_weight, sample_weight=sample_weight, ignore_index=ignore_index,
        reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
        num_threads=num_threads,
    )  # fmt: skip
    return loss.astype(dtype) if isinstance(loss, np.ndarray) else dtype.type(loss)


def linear_cross_entropy_and_grad(
    hidden,
    weight,
    target,
    *,
    bias=None,
    class_weight=None,
    sample_weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    z_loss=0.0,
    softcap=None,
    num_threads=None,
    grad_output=None,
    chunk_size=None,
):
    """``(loss, d_hidden, d_weight, d_bias)`` of :func:`linear_cross_entropy`
    by the chain rule through the materialised logits: with G the logits'
    gradient, ``d_hidden = G @ weight``, ``d_weight = G.T @ hidden`` and
    ``d_bias = G.sum(rows)`` (None without ``bias``).
    """
    z, h, w, dtype = _linear_logits(hidden, weight, bias)
    loss, g = cross_entropy_and_grad(
        z, target, weight=class_weight, sample_weight=sample_weight, ignore_index=ignore_index,
        reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap,
        num_threads=num_threads, grad_output=grad_output,
    )  # fmt: skip
    n = int(np.prod(h.shape[:-1]))
    g2 = g.reshape(n, w.shape[0])
    h2 = h.reshape(n, w.shape[1])
    loss = loss.astype(dtype) if isinstance(loss, np.ndarray) else dtype.type(loss)
    d_bias = None if bias is None else g2.sum(axis=0).astype(dtype)
    return loss, (g @ w).astype(dtype), (g2.T @ h2).astype(dtype), d_bias


# ---------------------------------------------------------------------------
# Binary cross-entropy
# ---------------------------------------------------------------------------


def _sigmoid_pair(x):
    """``(sigmoid(x), sigmoid(-x))`` computed without overflow/cancellation."""
    with np.errstate(invalid="ignore"):
        e = np.exp(-np.abs(x))
        big = 1.0 / (1.0 + e)
        small = e / (1.0 + e)
        pos = x >= 0
        return np.where(pos, big, small), np.where(pos, small, big)


def _softplus(z):
    """``log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|))``, stable."""
    with np.errstate(invalid="ignore"):
        return np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))


def _binary_logits(
    logits,
    target,
    *,
    weight,
    pos_weight,
    reduction,
    num_threads,
    want_loss,
    want_grad,
    grad_output=None,
    out=None,
):
    """Shared implementation of ``binary_cross_entropy_with_logits*``."""
    _check_num_threads(num_threads)
    _check_reduction(reduction)
    x, dtype, shaped = _as_logits(logits, "logits")
    shape = x.shape
    t = _broadcast_to(_as_float64(target, "target"), shape, "target", "logits'")
    w = 1.0
    if weight is not None:
        w = _broadcast_to(_as_float64(weight, "weight"), shape, "weight", "logits'")
    pw = 1.0
    if pos_weight is not None:
        pw = _broadcast_to(_as_float64(pos_weight, "pos_weight"), shape, "pos_weight", "logits'")
    if want_grad:
        go = _grad_output(grad_output, reduction, shape)
        if out is not None:
            _check_out(out, shape, shaped)

    loss = None
    with np.errstate(invalid="ignore", divide="ignore"):
        if want_loss:
            # -w [pw t log sigmoid(x) + (1-t) log(1 - sigmoid(x))]
            #   = w [pw t softplus(-x) + (1-t) softplus(x)]: two non-negative
            # terms for t in [0, 1], so the e^-40 tails survive.
            per = w * (pw * t * _softplus(-x) + (1.0 - t) * _softplus(x))
            loss = _reduce(per, np.sum(per), per.size, reduction, dtype)
        if not want_grad:
            return loss
        # w [(1 + (pw-1) t) sigmoid(x) - pw t] = w [(1-t) sigmoid(x) - pw t sigmoid(-x)]
        sig, sig_neg = _sigmoid_pair(x)
        grad = w * ((1.0 - t) * sig - pw * t * sig_neg)
        if reduction == "mean":
            grad = grad * (go / x.size if x.size else np.nan)
        else:
            grad = grad * go
    return loss, _finish(grad, shaped, out)


_BCE_LOGITS_DOC = """
    Elementwise binary cross-entropy on logits, PyTorch semantics
    (``torch.nn.functional.binary_cross_entropy_with_logits``).

    ``loss = -w [pw t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))]``,
    computed as ``w [pw t softplus(-x) + (1 - t) softplus(x)]`` (equal to
    PyTorch's ``(1-t) x + (1 + (pw-1) t)(log1p(exp(-|x|)) + max(-x, 0))`` and
    accurate in both tails: ``x = 40, t = 1`` gives ``~exp(-40)``, not 0).

    ``target``, ``weight`` and ``pos_weight`` are broadcast (NumPy rules,
    one-directionally) to the logits' shape, which is the per-element loss
    shape; ``pos_weight`` of shape ``(C,)`` thus applies along the last axis,
    as in PyTorch.  Targets may be any real numbers (soft labels; bool and
    integer targets are read as 0/1 floats) and are not validated.
    Infinite logits follow the formula in IEEE arithmetic (``0 * inf`` is
    NaN).  ``"mean"`` averages over all elements (NaN for an empty input).
    ``logits`` may be 0-d.
"""

_BCE_GRAD_DOC = """
    Gradient w.r.t. the logits: ``w [(1 + (pw-1) t) sigmoid(x) - pw t]``,
    evaluated as ``w [(1-t) sigmoid(x) - pw t sigmoid(-x)]`` with a stable
    sigmoid, times ``grad_output`` (scalar, or with ``"none"`` an array
    broadcastable to the logits' shape; divided by the element count with ``"mean"``).
    ``out`` as for :func:`cross_entropy_grad`.
"""


def binary_cross_entropy_with_logits(
    logits, target, *, weight=None, pos_weight=None, reduction="mean", num_threads=None
):
    return _binary_logits(
        logits,
        target,
        weight=weight,
        pos_weight=pos_weight,
        reduction=reduction,
        num_threads=num_threads,
        want_loss=True,
        want_grad=False,
    )


def binary_cross_entropy_with_logits_grad(
    logits,
    target,
    *,
    weight=None,
    pos_weight=None,
    reduction="mean",
    num_threads=None,
    grad_output=None,
    out=None,
):
    _, grad = _binary_logits(
        logits,
        target,
        weight=weight,
        pos_weight=pos_weight,
        reduction=reduction,
        num_threads=num_threads,
        want_loss=False,
        want_grad=True,
        grad_output=grad_output,
        out=out,
    )
    return grad


def binary_cross_entropy_with_logits_and_grad(
    logits,
    target,
    *,
    weight=None,
    pos_weight=None,
    reduction="mean",
    num_threads=None,
    grad_output=None,
    out=None,
):
    return _binary_logits(
        logits,
        target,
        weight=weight,
        pos_weight=pos_weight,
        reduction=reduction,
        num_threads=num_threads,
        want_loss=True,
        want_grad=True,
        grad_output=grad_output,
        out=out,
    )


binary_cross_entropy_with_logits.__doc__ = "Binary cross-entropy with logits.\n" + _BCE_LOGITS_DOC
binary_cross_entropy_with_logits_grad.__doc__ = (
    "Gradient of :func:`binary_cross_entropy_with_logits`.\n" + _BCE_LOGITS_DOC + _BCE_GRAD_DOC
)
binary_cross_entropy_with_logits_and_grad.__doc__ = (
    "``(loss, grad)`` of :func:`binary_cross_entropy_with_logits`.\n" + _BCE_LOGITS_DOC + _BCE_GRAD_DOC
)


def binary_cross_entropy(probs, target, *, weight=None, eps=None, reduction="mean", num_threads=None):
    """Binary cross-entropy on probabilities (``sklearn.metrics.log_loss``).

    ``probs`` are clipped (in the compute dtype) to ``[eps, 1 - eps]``, with
    ``eps`` defaulting to ``np.finfo(compute dtype).eps``; then
    ``loss = -w [t log p + (1 - t) log1p(-p)]`` elementwise, where a term
    whose coefficient (``t`` or ``1 - t``) is 0 contributes exactly 0, and
    ``w`` is ``weight`` (default 1; PyTorch's elementwise rescaling, not
    validated).  ``target`` and ``weight`` are broadcast (one-directionally)
    to ``probs``' shape; bool and integer targets are read as 0/1.  ``ValueError`` if any probability or
    target is outside ``[0, 1]`` or NaN, or if ``eps`` is not in
    ``[0, 0.5]``.  ``"mean"`` averages over all elements (NaN if empty).

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> p, t = np.array([0.5, 0.9]), np.array([1.0, 1.0])
    >>> reference.binary_cross_entropy(p, t, reduction="none")
    array([0.69314718, 0.10536052])
    """
    _check_num_threads(num_threads)
    _check_reduction(reduction)
    p, dtype = _as_float(probs, "probs")
    t = _broadcast_to(_as_float64(target, "target"), p.shape, "target", "probs'")
    w = 1.0 if weight is None else _broadcast_to(_as_float64(weight, "weight"), p.shape, "weight", "probs'")
    if eps is None:
        eps = float(np.finfo(dtype).eps)
    else:
        eps = _real_scalar(eps, "eps")
        if not 0.0 <= eps <= 0.5:
            raise ValueError(f"eps must be in [0, 0.5], got {eps!r}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("probs must lie in [0, 1] (and not be NaN)")
    if not np.all((t >= 0) & (t <= 1)):
        raise ValueError("target must lie in [0, 1] (and not be NaN)")
    # clip in the compute dtype, like sklearn.metrics.log_loss
    pc = np.clip(p.astype(dtype), dtype.type(eps), dtype.type(1 - eps)).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        pos = np.where(t != 0, t * np.log(pc), 0.0)
        neg = np.where(t != 1, (1.0 - t) * np.log1p(-pc), 0.0)
    per = w * -(pos + neg)
    return _reduce(per, np.sum(per), per.size, reduction, dtype)


# ---------------------------------------------------------------------------
# Softmax family and information measures
# ---------------------------------------------------------------------------


def _rows_along(x, axis, name, empty_ok=False, rowwise=False):
    """Validate and move the class axes last, flattened into one:
    ``(2-D rows, dtype, axes, shape with the class axes last)``.  ``axis``
    is an int or a tuple of ints (distinct); ``empty_ok``: an empty class
    axis is allowed; ``rowwise``: dtype is that of a result of x's shape
    (else the compute dtype)."""
    a, dtype, shaped = _as_logits(x, name)
    dtype = shaped if rowwise else dtype
    if a.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension")
    axes = axis if isinstance(axis, tuple) else (axis,)
    if not axes:
        raise ValueError("axis=() names no class axis")
    axes = tuple(_normalize_axis(ax, a.ndim) for ax in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"duplicate value in 'axis': {axis!r}")
    moved = np.moveaxis(a, axes, tuple(range(a.ndim - len(axes), a.ndim)))
    n_classes = int(np.prod(moved.shape[a.ndim - len(axes) :]))
    if n_classes == 0 and not empty_ok:
        raise ValueError(f"{name} has an empty axis {axis} (C == 0)")
    rows = moved.reshape(int(np.prod(moved.shape[: a.ndim - len(axes)])), n_classes)
    return rows, dtype, axes, moved.shape


def _restore(rows, axes, moved_shape):
    """Undo :func:`_rows_along` for a row-wise result."""
    k = len(axes)
    nd = len(moved_shape)
    return np.moveaxis(rows.reshape(moved_shape), tuple(range(nd - k, nd)), axes)


def _reduced(values, axes, moved_shape, keepdims, dtype):
    """A per-row result in the input's shape without ``axes`` (length-1 axes
    with ``keepdims``); a NumPy scalar when 0-d."""
    k = len(axes)
    res = values.reshape(moved_shape[: len(moved_shape) - k])
    if keepdims:
        res = np.expand_dims(res, axes)
    return np.asarray(res, dtype=dtype)[()]


def logsumexp(x, *, axis=-1, keepdims=False, num_threads=None):
    """``log(sum(exp(x), axis))``, stably, as ``scipy.special.logsumexp``.

    Computed as ``m + log1p(s')`` (see the module docstring).  Edge rules as
    SciPy: a NaN in the row gives NaN; otherwise any ``+inf`` gives ``+inf``;
    an all ``-inf`` row gives ``-inf``, and so does an empty ``axis`` (the
    log of an empty sum).  ``axis`` is an int or a tuple of ints (reduced as
    one flattened axis); the result has ``x``'s shape without ``axis`` (its
    axes kept with length 1 when ``keepdims``; a NumPy scalar when 0-d).

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> reference.logsumexp(np.array([[0.0, 0.0], [1000.0, 1000.0]])) - [0.0, 1000.0]
    array([0.69314718, 0.69314718])
    """
    _check_num_threads(num_threads)
    x2, dtype, axes, moved_shape = _rows_along(x, axis, "x", empty_ok=True)
    if x2.shape[1] == 0:
        return _reduced(np.full(x2.shape[0], -np.inf), axes, moved_shape, keepdims, dtype)
    m, _, _, sp = _row_stats(x2)
    with np.errstate(invalid="ignore"):
        lse = np.where(np.isinf(m), m, m + np.log1p(sp))
    return _reduced(lse, axes, moved_shape, keepdims, dtype)


def log_softmax(x, *, axis=-1, out=None, num_threads=None):
    """``x - logsumexp(x)`` along ``axis``, as ``scipy.special.log_softmax``.

    Computed as ``-((m - x) + log1p(s'))`` (relative accuracy near 0).  A row
    with NaN or ``+inf`` anywhere, or all ``-inf``, is all NaN (SciPy gives
    NaN at ``+inf`` positions and ``-inf`` elsewhere for ``+inf`` rows; we
    make the whole row NaN, as for the losses).  ``-inf`` entries of a valid
    row give ``-inf``.  ``axis``: an int or a tuple of ints (one flattened
    axis).  ``out``: writable C-contiguous ndarray of ``x``'s shape and
    compute dtype.  An empty ``axis`` gives an empty result.

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> reference.log_softmax(np.array([0.0, 0.0]))
    array([-0.69314718, -0.69314718])
    """
    _check_num_threads(num_threads)
    x2, dtype, axes, moved_shape = _rows_along(x, axis, "x", empty_ok=True, rowwise=True)
    if out is not None:
        _check_out(out, np.shape(x), dtype)
    if x2.size == 0:
        return _finish(_restore(x2, axes, moved_shape), dtype, out)
    m, _, _, sp = _row_stats(x2)
    res = -_neg_log_softmax(x2, m, sp)
    res[_bad_rows(x2)] = np.nan
    return _finish(_restore(res, axes, moved_shape), dtype, out)


def softmax(x, *, axis=-1, out=None, num_threads=None):
    """``exp(x - logsumexp(x))`` along ``axis``, as ``scipy.special.softmax``.

    A row with NaN or ``+inf`` anywhere, or all ``-inf``, is all NaN (as
    SciPy).  ``-inf`` entries of a valid row give exactly 0.  ``axis`` and
    ``out`` as for :func:`log_softmax`; an empty ``axis`` gives an empty
    result.

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> reference.softmax(np.array([[0.0, np.log(3.0)], [0.0, -np.inf]]))
    array([[0.25, 0.75],
           [1.  , 0.  ]])
    """
    _check_num_threads(num_threads)
    x2, dtype, axes, moved_shape = _rows_along(x, axis, "x", empty_ok=True, rowwise=True)
    if out is not None:
        _check_out(out, np.shape(x), dtype)
    if x2.size == 0:
        return _finish(_restore(x2, axes, moved_shape), dtype, out)
    _, _, e, sp = _row_stats(x2)
    with np.errstate(invalid="ignore"):
        res = _softmax_from_stats(e, sp)
    res[_bad_rows(x2)] = np.nan
    return _finish(_restore(res, axes, moved_shape), dtype, out)


def entropy(probs, *, axis=-1, num_threads=None):
    """Shannon entropy ``-sum(p log p)`` (nats) along ``axis``, ``0 log 0 = 0``.

    Unlike ``scipy.stats.entropy`` the input is **not** renormalised (this is
    ``scipy.special.entr(p).sum(axis)``).  Negative probabilities ->
    ``ValueError``; NaN propagates to its row.  The result has the input's
    shape without ``axis`` (an int or a tuple of ints; a NumPy scalar when
    0-d).  ``C == 0`` -> ``ValueError``.

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> reference.entropy(np.array([[0.5, 0.5], [1.0, 0.0]]))
    array([0.69314718, 0.        ])
    """
    _check_num_threads(num_threads)
    p2, dtype, axes, moved_shape = _rows_along(probs, axis, "probs")
    if np.any(p2 < 0):
        raise ValueError("probs must be non-negative")
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(p2 == 0, 0.0, -p2 * np.log(p2))
    return _reduced(terms.sum(axis=-1), axes, moved_shape, False, dtype)


def softmax_entropy(logits, *, axis=-1, num_threads=None):
    """Entropy of ``softmax(logits)`` along ``axis``, computed stably.

    Mathematically ``lse - sum(p x)``; evaluated without cancellation as
    ``log1p(s') + sum_c p_c (m - x_c)`` (all terms non-negative), where terms
    with ``p_c == 0`` (e.g. ``x_c = -inf``) are 0.  A row with NaN or ``+inf``
    anywhere, or all ``-inf``, gives NaN.  Shape as :func:`entropy`.
    ``C == 0`` -> ``ValueError``.

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> reference.softmax_entropy(np.zeros((1, 4)))
    array([1.38629436])
    """
    _check_num_threads(num_threads)
    x2, dtype, axes, moved_shape = _rows_along(logits, axis, "logits")
    m, _, e, sp = _row_stats(x2)
    with np.errstate(invalid="ignore"):
        p = _softmax_from_stats(e, sp)
        terms = np.where(p == 0, 0.0, p * (m[:, None] - x2))
        h = np.log1p(sp) + terms.sum(axis=-1)
    h[_bad_rows(x2)] = np.nan
    return _reduced(h, axes, moved_shape, False, dtype)


# ---------------------------------------------------------------------------
# The drop-ins' semantics (ce_fast.scipy, ce_fast.sklearn) on NumPy input
# ---------------------------------------------------------------------------


def _scipy_promote(arrays, force_floating):
    """SciPy's xp_promote: the result dtype of the arguments (iterables as
    arrays, scalars weak), a float with ``force_floating``."""
    args = [np.asarray(v) if np.iterable(v) else v for v in arrays if v is not None]
    return np.result_type(*args, *([1.0] if force_floating else []))


def scipy_logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """``scipy.special.logsumexp`` (SciPy 1.17.1) on real NumPy input.

    ``a`` and ``b`` broadcast with each other; the dtype is their promotion
    with a Python float.  Per reduced slice: elements with ``b == 0`` are
    left out (``a`` set to -inf); ``m = max a``; ``M`` = the sum of ``b``
    over the maxima, ``s`` = the sum of ``b exp(a - m)`` over the rest,
    ``s / M`` unless ``s == 0``; ``sign = sign(s + 1) sign(M)``;
    ``out = log|1 + s| + log|M| + m``, NaN where ``sign < 0`` unless the sign
    is returned.  Where that is not finite, the direct form
    ``log(sum b exp(a))`` (in the dtype: an ``exp`` that overflows is inf)
    and its sign.  An empty ``a`` gives -inf (sign -1).  Sums in float64.

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> reference.scipy_logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
    (np.float64(1.5413248546129181), np.float64(-1.0))
    """
    dtype = _scipy_promote([a, b], True)
    arrs = [np.asarray(v, dtype=dtype) for v in (a, b) if v is not None]
    shape = np.broadcast_shapes(*(v.shape for v in arrs))
    arrs = [np.atleast_1d(np.broadcast_to(v, shape)) for v in arrs]
    x = arrs[0]
    w = arrs[1] if b is not None else np.ones_like(x)
    axes = tuple(range(x.ndim)) if axis is None else axis
    axes = axes if isinstance(axes, tuple) else (axes,)
    axes = tuple(sorted(ax % x.ndim for ax in axes))
    rest = [k for k in range(x.ndim) if k not in axes]
    out_shape = [x.shape[k] for k in rest]
    if x.size == 0:
        out = np.full(out_shape, -np.inf)
        sgn = np.full(out_shape, -1.0)
    else:
        n_cls = int(np.prod([x.shape[k] for k in axes]))
        xr = np.moveaxis(x, axes, tuple(range(-len(axes), 0))).reshape(int(np.prod(out_shape)), n_cls)
        wr = np.moveaxis(w, axes, tuple(range(-len(axes), 0))).reshape(xr.shape)
        out = np.empty(xr.shape[0])
        sgn = np.empty(xr.shape[0])
        with np.errstate(all="ignore"):
            for i, (row, bw) in enumerate(zip(xr.astype(np.float64), wr.astype(np.float64))):
                ap = np.where(bw != 0, row, -np.inf)
                m = np.max(ap)
                at = ap == m
                M = np.sum(bw[at])
                s = np.sum((bw * np.exp(ap - m))[~at])
                s = s if s == 0 else s / M
                sg = np.sign(s + 1) * np.sign(M)
                o = np.log(np.abs(1 + s)) if s < -1 else np.log1p(s)
                o = o + np.log(np.abs(M)) + m
                if not return_sign and sg < 0:
                    o = np.nan
                if not np.isfinite(dtype.type(o)):
                    direct = np.sum((wr[i] * np.exp(xr[i].astype(dtype))).astype(np.float64))
                    sg = np.sign(direct)
                    o = np.log(np.abs(direct)) if return_sign else np.log(direct)
                out[i], sgn[i] = o, sg
        out, sgn = out.reshape(out_shape), sgn.reshape(out_shape)
    if keepdims:
        out, sgn = np.expand_dims(out, axes), np.expand_dims(sgn, axes)
    out, sgn = out.astype(dtype)[()], sgn.astype(dtype)[()]
    return (out, sgn) if return_sign else out


def scipy_entropy(pk, qk=None, base=None, axis=0, *, nan_policy="propagate", keepdims=False):
    """``scipy.stats.entropy`` (SciPy 1.17.1) on real NumPy input.

    ``pk`` and ``qk`` broadcast; along ``axis`` (an int, a tuple, or None for
    all) each is normalised, ``u = pk / sum pk`` and ``v = qk / sum qk`` (in
    the promoted dtype), and the result is ``sum entr(u)`` or
    ``sum rel_entr(u, v)``: ``-u log u`` (0 at 0, -inf below), and
    ``u log(u / v)`` for ``u, v > 0`` (as ``u log1p((u - v) / v)`` for
    ``0.5 < u / v < 2``, ``u (log u - log v)`` where ``u / v`` overflows or
    underflows), 0 for ``u == 0 <= v``, +inf otherwise; NaN in gives NaN (for 1-d input, before the shapes and
    ``base`` are checked, as SciPy's decorator does).  ``nan_policy="omit"``
    drops the positions where ``pk`` or ``qk`` is NaN, ``"raise"`` refuses
    NaN.  Divided by
    ``log(base)``.  float32 (and float16) give float32, the rest float64.

    Examples
    --------
    >>> from ce_fast import reference
    >>> float(reference.scipy_entropy([0.5, 0.5], base=2))
    1.0
    """
    if nan_policy not in ("propagate", "raise", "omit"):
        raise ValueError("nan_policy must be one of {'propagate', 'raise', 'omit'}")
    dtype = _scipy_promote([pk, qk], False)
    cdt = np.dtype(np.float32) if dtype.kind == "f" and dtype.itemsize <= 4 else np.dtype(np.float64)
    ss = [np.atleast_1d(np.asarray(v, dtype=dtype)) for v in (pk, qk) if v is not None]
    if axis is None:
        reduced = tuple(range(max(v.ndim for v in ss)))
        ss = [v.ravel() for v in ss]
        axes = tuple(range(1))
    else:
        reduced = axis if isinstance(axis, tuple) else (axis,)
    if nan_policy == "propagate" and all(v.ndim == 1 for v in ss):
        # SciPy's 1-d path: NaN in, NaN out, before the shapes or base are checked
        if any(v.dtype.kind == "f" and np.isnan(v).any() for v in ss):
            nan = np.result_type(*ss, 1.0).type(np.nan)
            return np.expand_dims(nan, reduced) if keepdims else nan
    shape = np.broadcast_shapes(*(v.shape for v in ss))
    ss = [np.broadcast_to(v, shape) for v in ss]
    if axis is not None:
        axes = tuple(sorted(ax % len(shape) for ax in reduced))
    if nan_policy == "raise" and any(np.isnan(v.astype(np.float64)).any() for v in ss):
        raise ValueError("The input contains nan values")
    if base is not None and base <= 0:
        raise ValueError("`base` must be a positive number or `None`.")
    rest = [k for k in range(len(shape)) if k not in axes]
    out_shape = [shape[k] for k in rest]
    n_cls = int(np.prod([shape[k] for k in axes]))
    rows = [
        np.moveaxis(v, axes, tuple(range(-len(axes), 0))).reshape(int(np.prod(out_shape)), n_cls) for v in ss
    ]
    res = np.empty(len(rows[0]))
    with np.errstate(all="ignore"):
        for i in range(len(res)):
            p = rows[0][i].astype(cdt)
            q = rows[1][i].astype(cdt) if len(rows) > 1 else None
            keep = np.ones(p.shape, bool)
            if nan_policy == "omit":
                keep = ~np.isnan(p) & (np.ones_like(keep) if q is None else ~np.isnan(q))
            p = p[keep]
            u = (p / cdt.type(p.astype(np.float64).sum())).astype(np.float64)
            if q is None:
                t = np.where(u > 0, -u * np.log(u), np.where(u == 0, 0.0, -np.inf))
                t = np.where(np.isnan(u), np.nan, t)
            else:
                q = q[keep]
                v = (q / cdt.type(q.astype(np.float64).sum())).astype(np.float64)
                r = u / v  # SciPy's three forms of u log(u / v), by the ratio
                lr = np.where((r > 0.5) & (r < 2), np.log1p((u - v) / v), np.log(r))
                lr = np.where((r > np.finfo(float).tiny) & (r < np.inf), lr, np.log(u) - np.log(v))
                t = np.where((u > 0) & (v > 0), u * lr, np.where((u == 0) & (v >= 0), 0.0, np.inf))
                t = np.where(np.isnan(u) | np.isnan(v), np.nan, t)
            res[i] = t.sum()
    S = res.reshape(out_shape).astype(cdt)[()]
    if int(np.prod(out_shape)) == 0:  # SciPy's NaN-filled empty result, in its own dtype
        S = np.full(out_shape, np.nan, np.result_type(dtype, 1.0))
    if base is not None:
        S = np.true_divide(S, float(np.log(base)))
    return np.expand_dims(S, reduced) if keepdims else S


def sklearn_log_loss(y_true, y_proba, *, normalize=True, sample_weight=None, labels=None):
    """``sklearn.metrics.log_loss`` (scikit-learn 1.9.1) on valid input.

    The classes are the sorted unique values of ``labels`` (else of
    ``y_true``); a 1-d ``y_proba`` is the positive class of a binary problem
    (columns ``1 - p, p``).  Row i's loss is ``-log(clip(p[i, y_i], eps,
    1 - eps))`` with ``eps`` the machine epsilon of ``y_proba``'s dtype
    (float32 or float64), clipped in that dtype; the result is the
    (weighted) mean, or the (weighted) sum without ``normalize``, as a
    Python float.  Probabilities are not renormalised.  (scikit-learn's
    input checks, warnings and errors are not repeated here.)

    Examples
    --------
    >>> from ce_fast import reference
    >>> round(reference.sklearn_log_loss([1, 0], [[0.2, 0.8], [0.6, 0.4]]), 6)
    0.366985
    """
    p = np.asarray(y_proba)
    if p.dtype not in (np.float32, np.float64):
        p = p.astype(np.float64)
    if p.ndim == 1 or p.shape[1] == 1:
        p1 = p.reshape(-1)
        p = np.stack([1 - p1, p1], axis=1)
    classes = np.unique(np.asarray(y_true) if labels is None else np.asarray(labels))
    idx = np.searchsorted(classes, np.asarray(y_true))
    eps = np.finfo(p.dtype).eps
    py = np.clip(p[np.arange(len(idx)), idx], eps, p.dtype.type(1) - eps)
    loss = -np.log(py.astype(np.float64))
    w = np.ones(len(loss)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    total = float(np.sum(w * loss))
    return total / float(np.sum(w)) if normalize else total


# Examples of the functions whose docstrings are assembled above.


def _add_examples(fn, examples):
    fn.__doc__ = (fn.__doc__ or "").rstrip() + "\n\n" + examples


_add_examples(
    cross_entropy,
    """\
    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.1, 0.2, 3.0]])
    >>> round(float(reference.cross_entropy(logits, np.array([0, 2]))), 6)
    0.175456
""",
)
_add_examples(
    cross_entropy_grad,
    """\
    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> reference.cross_entropy_grad(np.zeros((2, 4)), np.array([1, 3]))[0]
    array([ 0.125, -0.375,  0.125,  0.125])
""",
)
_add_examples(
    cross_entropy_and_grad,
    """\
    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> loss, grad = reference.cross_entropy_and_grad(np.zeros((1, 4)), np.array([2]), reduction="sum")
    >>> round(float(loss), 6), grad
    (1.386294, array([[ 0.25,  0.25, -0.75,  0.25]]))
""",
)
_add_examples(
    binary_cross_entropy_with_logits,
    """\
    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> x, t = np.array([0.0, 0.0]), np.array([1.0, 0.0])
    >>> reference.binary_cross_entropy_with_logits(x, t, reduction="none")
    array([0.69314718, 0.69314718])
""",
)
_add_examples(
    binary_cross_entropy_with_logits_grad,
    """\
    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> x, t = np.array([0.0, 0.0]), np.array([1.0, 0.0])
    >>> reference.binary_cross_entropy_with_logits_grad(x, t)
    array([-0.25,  0.25])
""",
)
_add_examples(
    binary_cross_entropy_with_logits_and_grad,
    """\
    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> x, t = np.array([0.0]), np.array([1.0])
    >>> loss, grad = reference.binary_cross_entropy_with_logits_and_grad(x, t, reduction="sum")
    >>> round(float(loss), 6), grad
    (0.693147, array([-0.5]))
""",
)
_add_examples(
    linear_cross_entropy,
    """\
    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> h, W = np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[2.0, 0.0], [0.0, 2.0]])
    >>> round(float(reference.linear_cross_entropy(h, W, np.array([0, 1]))), 6)
    0.126928
""",
)
_add_examples(
    linear_cross_entropy_and_grad,
    """\
    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> h, W = np.array([[1.0, 0.0]]), np.array([[0.0, 0.0], [0.0, 0.0]])
    >>> loss, dh, dW, db = reference.linear_cross_entropy_and_grad(h, W, np.array([0]))
    >>> dW, db
    (array([[-0.5,  0. ],
           [ 0.5,  0. ]]), None)
""",
)


# ---------------------------------------------------------------------------
# Divergences between a teacher and the student's softmax (distillation)
# ---------------------------------------------------------------------------

_TEACHER_KINDS = ("logits", "log_probs", "probs")


def _log_softmax_rows(z):
    """``(log softmax, softmax)`` of the rows of a 2-D float64 array (rows
    with NaN, +inf or all -inf give garbage the caller masks)."""
    m, _, e, sp = _row_stats(z)
    with np.errstate(invalid="ignore"):
        return _neg_log_softmax(z, m, sp) * -1.0, _softmax_from_stats(e, sp)


def _divergence(
    student,
    teacher,
    *,
    beta,
    direction,
    teacher_is,
    temperature,
    axis,
    sample_weight,
    ignore_index,
    target,
    reduction,
    num_threads,
    want_grad,
    grad_output=None,
    out=None,
):
    """Shared implementation of ``kl_divergence*`` (``beta`` None) and
    ``js_divergence*``."""
    # -- options --------------------------------------------------------------
    _check_num_threads(num_threads)
    _check_reduction(reduction)
    if not isinstance(teacher_is, str) or teacher_is not in _TEACHER_KINDS:
        raise ValueError(f"teacher_is must be one of {_TEACHER_KINDS}, got {teacher_is!r}")
    if beta is None:
        if direction not in ("forward", "reverse"):
            raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
        kind = direction
    else:
        beta = _real_scalar(beta, "beta")
        if not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be in [0, 1], got {beta!r}")
        kind = "forward" if beta == 0.0 else "reverse" if beta == 1.0 else "js"
    T = _real_scalar(temperature, "temperature")
    if not 0.0 < T < np.inf:
        raise ValueError(f"temperature must be finite and > 0, got {temperature!r}")
    if (target is None) != (ignore_index is None):
        raise ValueError("target and ignore_index go together")

    # -- arrays ---------------------------------------------------------------
    x, dtype = _as_float(student, "student")
    t = _as_float64(teacher, "teacher")
    if x.ndim == 0:
        raise ValueError("student must have at least one dimension (the class axis)")
    if t.shape != x.shape:
        raise ValueError(f"teacher must have the student's shape {x.shape}, got {t.shape}")
    ax = _normalize_axis(axis, x.ndim)
    C = x.shape[ax]
    if C == 0:
        raise ValueError("student has an empty class axis (C == 0)")
    sample_shape = x.shape[:ax] + x.shape[ax + 1 :]
    moved_shape = sample_shape + (C,)
    a = np.moveaxis(x, ax, -1).reshape(-1, C) / T
    b = np.moveaxis(t, ax, -1).reshape(-1, C)
    n_rows = a.shape[0]
    keep = np.ones(n_rows, dtype=bool)
    if target is not None:
        y = _to_array(target, "target")
        if y.dtype.kind not in "iu":
            raise TypeError(f"target: expected integer tokens, got dtype {y.dtype}")
        if y.shape != sample_shape:
            raise ValueError(f"target must hold integer tokens of shape {sample_shape}, got {y.shape}")
        keep = y.reshape(-1) != ignore_index
    sw = np.ones(n_rows)
    if sample_weight is not None:
        sw = _broadcast_to(_as_float64(sample_weight, "sample_weight"), sample_shape, "sample_weight",
                           "per-sample loss").reshape(-1)  # fmt: skip
    if want_grad:
        go = _grad_output(grad_output, reduction, sample_shape)
        if reduction == "none":
            go = go.reshape(-1)
        if out is not None:
            _check_out(out, x.shape, dtype)

    # -- the two distributions --------------------------------------------------
    log_q, q = _log_softmax_rows(a)
    bad = _bad_rows(a) | np.isnan(b).any(axis=-1) | np.isposinf(b).any(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if teacher_is == "logits":
            b = b / T
            log_p, p = _log_softmax_rows(b)
            bad |= np.isneginf(b).all(axis=-1)
            z = np.ones(n_rows)
        elif teacher_is == "log_probs":
            log_p, p = b, np.exp(b)
            z = p.sum(axis=-1)
        else:
            bad |= (b < 0).any(axis=-1)
            log_p, p = np.log(b), b
            z = p.sum(axis=-1)

        # -- the divergence per row: zero weights contribute exactly 0 -------------
        r = log_p - log_q
        if kind == "forward":
            d = np.where(p > 0, p * r, 0.0).sum(axis=-1)
            lower = np.where(z > 0, z * np.log(z), 0.0)  # Gibbs: >= Z log Z
        elif kind == "reverse":
            d = np.where(q > 0, -q * r, 0.0).sum(axis=-1)
            lower = -np.log(z)  # >= -log Z
        else:
            log_m = np.log(beta * p + (1.0 - beta) * q)
            rho_q = log_q - log_m
            tq = np.where(q > 0, q * rho_q, 0.0)
            d = (np.where(p > 0, beta * p * (log_p - log_m), 0.0) + (1.0 - beta) * tq).sum(axis=-1)
            lower = np.zeros(n_rows)
        if teacher_is == "logits":
            lower = np.zeros(n_rows)
        d = np.maximum(d, lower)  # below the bound only by rounding
        d[bad] = np.nan
        loss_rows = np.where(keep, sw * d, 0.0)

    loss = _reduce(loss_rows.reshape(sample_shape), np.sum(loss_rows), np.sum(sw[keep]), reduction, dtype)
    if not want_grad:
        return loss

    # -- the gradient with respect to a = student / T, then x ----------------------
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind == "forward":
            g = q * z[:, None] - p
        elif kind == "reverse":
            g = np.where(q > 0, q * (-r - d[:, None]), 0.0)
            g[np.isposinf(d)] = np.nan  # no derivative
        else:
            g = (1.0 - beta) * np.where(q > 0, q * (rho_q - tq.sum(axis=-1)[:, None]), 0.0)
        if reduction == "none":
            scale = go
        elif reduction == "sum":
            scale = np.full(n_rows, float(go))
        else:
            denominator = np.sum(sw[keep])
            scale = np.full(n_rows, float(go) / denominator if denominator != 0 else np.nan)
        g = g * (sw * scale / T)[:, None]
        g[bad] = np.nan
        g[~keep] = 0.0
    grad = np.moveaxis(g.reshape(moved_shape), -1, ax)
    return loss, _finish(grad, dtype, out)


def kl_divergence(
    student,
    teacher,
    *,
    teacher_is="logits",
    temperature=1.0,
    direction="forward",
    axis=-1,
    sample_weight=None,
    ignore_index=None,
    target=None,
    reduction="mean",
    num_threads=None,
):
    """KL(P || Q) (``direction="forward"``) or KL(Q || P) per row, with
    Q = softmax(student / T) and P = softmax(teacher / T) (``teacher_is=
    "logits"``), exp(teacher) ("log_probs") or teacher ("probs", never
    renormalised, as ``torch.nn.functional.kl_div``); no T**2 factor.

    Per row: ``sum_{P > 0} P (log P - log Q)`` (forward) or
    ``sum_{Q > 0} Q (log Q - log P)`` (reverse), clamped below at the bound
    Gibbs' inequality gives (0; ``Z log Z`` resp. ``-log Z`` for a given
    teacher whose probabilities sum to Z). ``"mean"``: the sum of
    ``s_i D_i`` over rows whose ``target`` is not ``ignore_index``, divided
    by their ``sum s_i`` (torch's "batchmean"). NaN rows: NaN, +inf or all
    -inf student; NaN or +inf teacher; all -inf teacher logits; negative
    teacher probabilities.

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> s = np.array([[0.0, 0.0]]); p = np.array([[0.75, 0.25]])
    >>> bool(np.isclose(reference.kl_divergence(s, p, teacher_is="probs"),
    ...                 0.75 * np.log(1.5) + 0.25 * np.log(0.5)))
    True
    """
    return _divergence(
        student, teacher, beta=None, direction=direction, teacher_is=teacher_is,
        temperature=temperature, axis=axis, sample_weight=sample_weight, ignore_index=ignore_index,
        target=target, reduction=reduction, num_threads=num_threads, want_grad=False,
    )  # fmt: skip


def kl_divergence_and_grad(
    student,
    teacher,
    *,
    teacher_is="logits",
    temperature=1.0,
    direction="forward",
    axis=-1,
    sample_weight=None,
    ignore_index=None,
    target=None,
    reduction="mean",
    num_threads=None,
    grad_output=None,
    out=None,
):
    """``(kl_divergence(...), d/d student)``: per row ``(Z Q - P) / T``
    (forward) or ``Q (log Q - log P - KL) / T`` (reverse; NaN where the KL is
    infinite), times ``s_i``, ``grad_output`` and 1/denominator for "mean".

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> s = np.zeros((1, 2)); p = np.array([[0.75, 0.25]])
    >>> reference.kl_divergence_and_grad(s, p, teacher_is="probs")[1]
    array([[-0.25,  0.25]])
    """
    return _divergence(
        student, teacher, beta=None, direction=direction, teacher_is=teacher_is,
        temperature=temperature, axis=axis, sample_weight=sample_weight, ignore_index=ignore_index,
        target=target, reduction=reduction, num_threads=num_threads, want_grad=True,
        grad_output=grad_output, out=out,
    )  # fmt: skip


def js_divergence(
    student,
    teacher,
    *,
    beta=0.5,
    teacher_is="logits",
    temperature=1.0,
    axis=-1,
    sample_weight=None,
    ignore_index=None,
    target=None,
    reduction="mean",
    num_threads=None,
):
    """The generalised JSD ``beta KL(P || M) + (1 - beta) KL(Q || M)`` with
    ``M = beta P + (1 - beta) Q``, P and Q as :func:`kl_divergence`; beta = 0
    is defined as the forward KL(P || Q) and beta = 1 as the reverse
    KL(Q || P) (TRL's GKD, Liger-Kernel's JSD). Clamped below at 0.

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> s = np.array([[0.0, 0.0]]); t = np.array([[0.0, -np.inf]])
    >>> bool(np.isclose(reference.js_divergence(s, t), 0.75 * np.log(4 / 3)))
    True
    """
    return _divergence(
        student, teacher, beta=beta, direction=None, teacher_is=teacher_is,
        temperature=temperature, axis=axis, sample_weight=sample_weight, ignore_index=ignore_index,
        target=target, reduction=reduction, num_threads=num_threads, want_grad=False,
    )  # fmt: skip


def js_divergence_and_grad(
    student,
    teacher,
    *,
    beta=0.5,
    teacher_is="logits",
    temperature=1.0,
    axis=-1,
    sample_weight=None,
    ignore_index=None,
    target=None,
    reduction="mean",
    num_threads=None,
    grad_output=None,
    out=None,
):
    """``(js_divergence(...), d/d student)``: per row
    ``(1 - beta) Q (rho - sum Q rho) / T`` with ``rho = log(Q / M)``.

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> x = np.array([[1.0, 2.0, 3.0]])
    >>> bool(np.abs(reference.js_divergence_and_grad(x, x)[1]).max() < 1e-15)
    True
    """
    return _divergence(
        student, teacher, beta=beta, direction=None, teacher_is=teacher_is,
        temperature=temperature, axis=axis, sample_weight=sample_weight, ignore_index=ignore_index,
        target=target, reduction=reduction, num_threads=num_threads, want_grad=True,
        grad_output=grad_output, out=out,
    )  # fmt: skip


def _linear_divergence(fn, opts):
    """``fn(hidden @ weight.T + bias, teacher logits, **keywords)`` for the
    linear function whose ``locals()`` are ``opts``, the teacher given as an
    array or as ``teacher_hidden @ teacher_weight.T + teacher_bias``; a
    gradient (when ``fn`` gives one) pushed back through the student's layer:
    ``(loss, d_hidden, d_weight, d_bias)``."""
    layer = ("hidden", "weight", "teacher", "bias", "teacher_hidden", "teacher_weight", "teacher_bias")
    kw = {k: v for k, v in opts.items() if k not in layer and k != "chunk_size"}
    z, h, w, dtype = _linear_logits(opts["hidden"], opts["weight"], opts["bias"])
    teacher = opts["teacher"]
    if (teacher is None) == (opts["teacher_hidden"] is None and opts["teacher_weight"] is None):
        raise ValueError("give the teacher either as an array (teacher) or as teacher_hidden, teacher_weight")
    if teacher is None:
        if kw["teacher_is"] != "logits":
            raise ValueError("a teacher given as a layer (teacher_hidden, teacher_weight) gives logits")
        teacher, *_ = _linear_logits(opts["teacher_hidden"], opts["teacher_weight"], opts["teacher_bias"])
    res = fn(z, teacher, **kw)
    if not isinstance(res, tuple):
        return res.astype(dtype) if isinstance(res, np.ndarray) else dtype.type(res)
    loss, g = res
    n = int(np.prod(h.shape[:-1]))
    g2, h2 = g.reshape(n, w.shape[0]), h.reshape(n, w.shape[1])
    loss = loss.astype(dtype) if isinstance(loss, np.ndarray) else dtype.type(loss)
    d_bias = None if opts["bias"] is None else g2.sum(axis=0).astype(dtype)
    return loss, (g @ w).astype(dtype), (g2.T @ h2).astype(dtype), d_bias


def linear_kl_divergence(
    hidden,
    weight,
    teacher=None,
    *,
    bias=None,
    teacher_hidden=None,
    teacher_weight=None,
    teacher_bias=None,
    teacher_is="logits",
    temperature=1.0,
    direction="forward",
    sample_weight=None,
    ignore_index=None,
    target=None,
    reduction="mean",
    num_threads=None,
    chunk_size=None,
):
    """``kl_divergence(hidden @ weight.T + bias, teacher, ...)``, the teacher's
    logits being ``teacher_hidden @ teacher_weight.T + teacher_bias`` when it
    is given as a layer; the logits are materialised here (the specification),
    ``chunk_size`` is accepted and ignored.

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> h, W = np.ones((2, 3)), np.zeros((4, 3))
    >>> float(reference.linear_kl_divergence(h, W, teacher_hidden=h, teacher_weight=W))
    0.0
    """
    return _linear_divergence(kl_divergence, locals())


def linear_kl_divergence_and_grad(
    hidden,
    weight,
    teacher=None,
    *,
    bias=None,
    teacher_hidden=None,
    teacher_weight=None,
    teacher_bias=None,
    teacher_is="logits",
    temperature=1.0,
    direction="forward",
    sample_weight=None,
    ignore_index=None,
    target=None,
    reduction="mean",
    num_threads=None,
    grad_output=None,
    chunk_size=None,
):
    """``(loss, d_hidden, d_weight, d_bias)`` of :func:`linear_kl_divergence`
    by the chain rule through the materialised logits (G their gradient):
    ``G @ weight``, ``G.T @ hidden``, ``G.sum(rows)`` (None without ``bias``).

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> h, W = np.ones((2, 3)), np.zeros((4, 3))
    >>> reference.linear_kl_divergence_and_grad(h, W, np.zeros((2, 4)))[2]
    array([[0., 0., 0.],
           [0., 0., 0.],
           [0., 0., 0.],
           [0., 0., 0.]])
    """
    return _linear_divergence(kl_divergence_and_grad, locals())


def linear_js_divergence(
    hidden,
    weight,
    teacher=None,
    *,
    beta=0.5,
    bias=None,
    teacher_hidden=None,
    teacher_weight=None,
    teacher_bias=None,
    teacher_is="logits",
    temperature=1.0,
    sample_weight=None,
    ignore_index=None,
    target=None,
    reduction="mean",
    num_threads=None,
    chunk_size=None,
):
    """``js_divergence(hidden @ weight.T + bias, teacher, ...)``, as
    :func:`linear_kl_divergence`.

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> h, W = np.ones((2, 3)), np.zeros((4, 3))
    >>> float(reference.linear_js_divergence(h, W, np.zeros((2, 4)), beta=0.2))
    0.0
    """
    return _linear_divergence(js_divergence, locals())


def linear_js_divergence_and_grad(
    hidden,
    weight,
    teacher=None,
    *,
    beta=0.5,
    bias=None,
    teacher_hidden=None,
    teacher_weight=None,
    teacher_bias=None,
    teacher_is="logits",
    temperature=1.0,
    sample_weight=None,
    ignore_index=None,
    target=None,
    reduction="mean",
    num_threads=None,
    grad_output=None,
    chunk_size=None,
):
    """``(loss, d_hidden, d_weight, d_bias)`` of :func:`linear_js_divergence`.

    Examples
    --------
    >>> import numpy as np
    >>> from ce_fast import reference
    >>> h, W = np.ones((2, 3)), np.zeros((4, 3))
    >>> reference.linear_js_divergence_and_grad(h, W, np.zeros((2, 4)), bias=np.zeros(4))[3]
    array([0., 0., 0., 0.])
    """
    return _linear_divergence(js_divergence_and_grad, locals())
