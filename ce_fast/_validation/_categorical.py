"""The categorical family's parser: cross_entropy and everything built on it
(linear_cross_entropy, ce_fast.dask, the front ends). Options are checked
here once, shapes and dtypes from ``.shape`` / ``.dtype`` alone (so lazy
arrays are checked before anything is computed), and the operands converted
here for every NumPy-backed path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core import ce_reduction
from . import _options
from ._arrays import as_float, compute_dtype, is_bfloat16, normalize_axis


@dataclass(frozen=True)
class CategoricalOptions:
    """The validated scalar options of a categorical call."""

    reduction: ce_reduction
    ignore_index: int
    label_smoothing: float
    z_loss: float
    softcap: float  # 0.0: no capping
    num_threads: int  # 0: the OpenMP default

    def mean_denominator(
        self,
        n: int,
        *,
        labels: np.ndarray | None = None,
        C: int = 0,
        class_weight: Any = None,
        sample_weight: Any = None,
    ) -> float:
        """The "mean" denominator of ``n`` samples, as PyTorch: the float64
        sum of ``s_i * w_{y_i}`` over the samples whose class index (int
        ``labels``) is neither ignore_index nor outside [0, C), or of ``s_i``
        for probability targets (``labels`` None); s = 1 and w = 1 when not
        given. The denominators of blocks of samples add up to the whole's."""
        s = np.ones(n, np.float64) if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
        if labels is None:
            return float(np.sum(s))
        y = np.asarray(labels).ravel()
        keep = (y != self.ignore_index) & (y >= 0) & (y < C)
        v = s[keep]
        if class_weight is not None:
            v = v * np.asarray(class_weight, np.float64)[y[keep]]
        return float(np.sum(v))


def categorical_options(
    *,
    reduction: Any,
    ignore_index: Any,
    label_smoothing: Any,
    z_loss: Any,
    softcap: Any,
    num_threads: Any,
    **_: Any,
) -> CategoricalOptions:
    """Check the scalar options of cross_entropy (any other keyword is left
    to its own parser, so a caller may pass its whole keyword set)."""
    return CategoricalOptions(
        reduction=_options.reduction(reduction),
        ignore_index=_options.ignore_index(ignore_index),
        label_smoothing=_options.real(label_smoothing, "label_smoothing", 0.0, 1.0),
        z_loss=_options.real(z_loss, "z_loss", 0.0, np.inf),
        softcap=0.0 if softcap is None else _options.real(softcap, "softcap", 0.0, np.inf, lo_open=True),
        num_threads=_options.num_threads(num_threads),
    )


@dataclass(frozen=True)
class CategoricalLayout:
    """Shapes and dtypes of a categorical call, checked."""

    shape: tuple[int, ...]  # the logits'
    dtype: np.dtype  # the compute dtype
    axis: int  # the class axis, non-negative
    C: int
    sample_shape: tuple[int, ...]  # the logits' shape without the class axis
    probs: bool  # probability targets (else integer class indices)


def categorical_layout(
    logits: Any, target: Any, axis: Any, options: CategoricalOptions, *, dtype: np.dtype | None = None
) -> CategoricalLayout:
    """Check the logits' and the target's shapes and dtypes (anything with
    ``.shape`` and ``.dtype``: NumPy or dask arrays). ``dtype``: the compute
    dtype when the caller has chosen it (linear_cross_entropy)."""
    shape = tuple(int(n) for n in logits.shape)
    dt = compute_dtype(np.dtype(logits.dtype), "logits") if dtype is None else dtype
    ax = normalize_axis(axis, len(shape), "logits")
    C = shape[ax]
    if C == 0:
        raise ValueError("logits: the class axis is empty (C == 0)")
    sample_shape = shape[:ax] + shape[ax + 1 :]
    t_shape, t_dtype = tuple(int(n) for n in target.shape), np.dtype(target.dtype)
    kind = "f" if is_bfloat16(t_dtype) else t_dtype.kind
    if kind == "b":
        raise TypeError("target: a boolean array is ambiguous (class indices or probabilities?)")
    if kind in "iu":
        if t_shape != sample_shape:
            hint = ""
            if t_shape == sample_shape + (1,):
                hint = "; flatten a column of labels with target.ravel()"
            raise ValueError(
                "target: expected integer class indices of shape "
                f"{sample_shape} (the logits' shape without the class axis) or probabilities of "
                f"the logits' shape; got an integer array of shape {t_shape}{hint}"
            )
    elif kind == "f":
        compute_dtype(t_dtype, "target")
        if t_shape != shape:
            raise ValueError(
                f"target: expected probabilities of the logits' shape {shape} or integer "
                f"class indices of shape {sample_shape}; got a floating array of shape {t_shape}"
            )
        if options.ignore_index >= 0:
            raise ValueError("ignore_index is only supported with integer class-index targets")
    else:
        raise TypeError(f"target: dtype {t_dtype} is neither integer class indices nor probabilities")
    return CategoricalLayout(shape, dt, ax, C, sample_shape, kind == "f")


def target_index_error(value: int, pos: int, C: int, ignore_index: int) -> IndexError:
    """The error for a class index outside [0, C) that is not ignore_index."""
    return IndexError(
        f"target: class index {value} at flat position {pos} is outside [0, {C}) "
        f"and is not ignore_index ({ignore_index})"
    )


def int_target(t: np.ndarray, layout: CategoricalLayout, options: CategoricalOptions) -> np.ndarray:
    """Integer class indices as contiguous int64 (uint64 values beyond int64
    are reported as out of range, never wrapped)."""
    if t.dtype == np.uint64 and t.size and t.max() > np.iinfo(np.int64).max:
        flat = t.reshape(-1)
        pos = int(np.argmax(flat > np.iinfo(np.int64).max))
        raise target_index_error(int(flat[pos]), pos, layout.C, options.ignore_index)
    return np.ascontiguousarray(t, dtype=np.int64)


def check_int_target(y: np.ndarray, C: int, options: CategoricalOptions) -> None:
    """IndexError for the first class index outside [0, C) that is not
    ignore_index (the kernels check this themselves; this is for callers
    that index with the labels before a kernel runs)."""
    bad = (y != options.ignore_index) & ((y < 0) | (y >= C))
    if bad.any():
        pos = int(np.flatnonzero(bad.reshape(-1))[0])
        raise target_index_error(int(y.reshape(-1)[pos]), pos, C, options.ignore_index)


def class_weight(weight: Any, C: int, dtype: np.dtype, name: str = "weight") -> np.ndarray | None:
    """Class weights as a contiguous (C,) array of the compute dtype."""
    if weight is None:
        return None
    w = as_float(weight, name, dtype)
    if w.shape != (C,):
        raise ValueError(f"{name} must be 1-d of length C = {C}, got shape {w.shape}")
    return np.ascontiguousarray(w)


def saved_lse(lse: Any, layout: CategoricalLayout) -> np.ndarray:
    """A saved per-sample log-sum-exp (``cross_entropy_grad(lse=...)``) as
    contiguous float64 of the per-sample shape."""
    arr = as_float(lse, "lse", np.dtype(np.float64))
    if arr.shape != layout.sample_shape:
        raise ValueError(
            f"lse must have the per-sample shape {layout.sample_shape} (the logits' shape without the "
            f"class axis), got shape {arr.shape}"
        )
    return np.ascontiguousarray(arr)
