"""Scalar options shared by the families: the reduction, the thread count,
real-valued options with their ranges, the ignore index."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np

from .._core import ce_reduction

REDUCTIONS = {
    "none": ce_reduction.CE_RED_NONE,
    "sum": ce_reduction.CE_RED_SUM,
    "mean": ce_reduction.CE_RED_MEAN,
}
REDUCTION_NAMES = {code: name for name, code in REDUCTIONS.items()}

# The largest count a C int holds; the kernels clamp it to what the machine
# and the work can use.
_MAX_THREADS = 2**31 - 1


def reduction(value: Any) -> ce_reduction:
    try:
        return REDUCTIONS[value]
    except (KeyError, TypeError):
        raise ValueError(
            f"reduction must be one of 'mean', 'sum', 'none' (case-sensitive), got {value!r}"
        ) from None


def num_threads(value: Any) -> int:
    """None -> 0 (the OpenMP default, resolved at call time), or the
    positive integer asked for."""
    if value is None:
        return 0
    integral = isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))
    if not integral or value < 1:
        raise ValueError(f"num_threads must be None or a positive integer, got {value!r}")
    return min(int(value), _MAX_THREADS)


def fast_threads(value: Any) -> int:
    """num_threads() for the fast paths, which take only the common
    spellings (None, a positive int); -1 leaves the call to the general path."""
    if value is None:
        return 0
    if type(value) is int and value > 0:
        return min(value, _MAX_THREADS)
    return -1


def fast_scale(grad_output: Any) -> float | None:
    """A scalar grad_output for the fast paths: 1.0 for None, the value of a
    plain float or (exactly representable) int; None leaves the call to the
    general path."""
    if grad_output is None:
        return 1.0
    t = type(grad_output)
    if t is float or (t is int and -(1 << 53) <= grad_output <= 1 << 53):
        return float(grad_output)
    return None


def real(value: Any, name: str, lo: float, hi: float, *, lo_open: bool = False) -> float:
    """A finite real number (Python or NumPy, never a string) in [lo, hi],
    or (lo, hi] with ``lo_open``."""
    arr = None if isinstance(value, (str, bytes)) else np.asarray(value)
    if arr is None or arr.ndim != 0 or arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a real number, got {value!r}")
    v = float(arr)
    if not (math.isfinite(v) and (v > lo if lo_open else v >= lo) and v <= hi):
        interval = ("(" if lo_open else "[") + f"{lo:g}, {hi:g}" + ("]" if math.isfinite(hi) else ")")
        raise ValueError(f"{name} must be a finite number in {interval}, got {value!r}")
    return v


def flag(value: Any, name: str) -> bool:
    """A bool (Python or NumPy), never a truthy stand-in such as 1 or "no"."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def ignore_index(value: Any) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (numbers.Integral, np.integer)):
        raise TypeError(f"ignore_index must be an integer, got {value!r}")
    v = int(value)
    if not -(2**63) <= v < 2**63:
        raise ValueError(f"ignore_index {v} does not fit in int64")
    return v


def no_memory() -> MemoryError:
    """The error for a kernel's CE_ERR_NOMEM (its scratch or partials)."""
    return MemoryError("ce_fast: a kernel could not allocate its scratch memory")


def torch_reduction(value: Any, warn: bool = True) -> str:
    """A reduction name as torch's loss functions take it (torch's message;
    its deprecated "elementwise_mean" is "mean", with torch's warning)."""
    if value == "elementwise_mean":
        if warn:
            warnings.warn("reduction='elementwise_mean' is deprecated. Please use reduction='mean' instead.",
                          stacklevel=4)  # fmt: skip
        return "mean"
    if not isinstance(value, str) or value not in REDUCTIONS:
        raise ValueError(f"{value} is not a valid value for reduction")
    return value


def legacy_reduction(size_average: Any, reduce: Any, warn: bool = True) -> str:
    """torch's deprecated ``size_average`` / ``reduce`` pair as a reduction
    name (None counts as True), with torch's deprecation warning."""
    size_average = True if size_average is None else size_average
    reduce = True if reduce is None else reduce
    name = "mean" if size_average and reduce else "sum" if reduce else "none"
    if warn:
        message = f"size_average and reduce args will be deprecated, please use reduction='{name}' instead."
        warnings.warn(message, stacklevel=4)
    return name
