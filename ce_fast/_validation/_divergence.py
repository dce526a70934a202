"""The divergence family's parser: kl_divergence and js_divergence (and their
``_and_grad`` forms), linear_kl_divergence / linear_js_divergence and
ce_fast.dask's versions. Options are checked here once, shapes and dtypes
from ``.shape`` / ``.dtype`` alone (NumPy or dask arrays)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core import ce_div_kind, ce_reduction, ce_teacher_kind
from . import _options
from ._arrays import compute_dtype, normalize_axis

TEACHER_KINDS = {
    "logits": ce_teacher_kind.CE_TEACHER_LOGITS,
    "log_probs": ce_teacher_kind.CE_TEACHER_LOG_PROBS,
    "probs": ce_teacher_kind.CE_TEACHER_PROBS,
}
DIRECTIONS = {"forward": ce_div_kind.CE_DIV_KL_FORWARD, "reverse": ce_div_kind.CE_DIV_KL_REVERSE}


@dataclass(frozen=True)
class DivergenceOptions:
    """The validated scalar options of a divergence call."""

    kind: ce_div_kind  # JS with beta 0 / 1 is the forward / reverse KL
    teacher_is: ce_teacher_kind
    temperature: float  # > 0
    beta: float  # JS only, in (0, 1)
    reduction: ce_reduction
    ignore_index: int | None  # None: no row is ignored
    num_threads: int  # 0: the OpenMP default

    @property
    def inv_temperature(self) -> float:
        return 1.0 / self.temperature

    def mean_denominator(self, n: int, *, tokens: Any = None, sample_weight: Any = None) -> float:
        """The "mean" denominator of ``n`` rows: the float64 sum of the sample
        weights (1 when not given) of the rows whose token is not
        ignore_index. The denominators of blocks of rows add up to the whole's."""
        s = np.ones(n, np.float64) if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
        if tokens is not None and self.ignore_index is not None:
            s = s[np.asarray(tokens).ravel() != self.ignore_index]
        return float(np.sum(s))


def divergence_options(
    *,
    teacher_is: Any,
    temperature: Any,
    reduction: Any,
    ignore_index: Any,
    num_threads: Any,
    direction: Any = "forward",
    beta: Any = None,
    **_: Any,
) -> DivergenceOptions:
    """Check the scalar options of kl_divergence (``direction``) or
    js_divergence (``beta`` given); other keywords are left to their own
    parser."""
    if not isinstance(teacher_is, str) or teacher_is not in TEACHER_KINDS:
        raise ValueError(f"teacher_is must be one of 'logits', 'log_probs', 'probs', got {teacher_is!r}")
    if beta is None:
        if not isinstance(direction, str) or direction not in DIRECTIONS:
            raise ValueError(f"direction must be 'forward' or 'reverse', got {direction!r}")
        kind, b = DIRECTIONS[direction], 0.5
    else:
        b = _options.real(beta, "beta", 0.0, 1.0)
        kind = {0.0: DIRECTIONS["forward"], 1.0: DIRECTIONS["reverse"]}.get(b, ce_div_kind.CE_DIV_JS)
    return DivergenceOptions(
        kind=kind,
        teacher_is=TEACHER_KINDS[teacher_is],
        temperature=_options.real(temperature, "temperature", 0.0, np.inf, lo_open=True),
        beta=b,
        reduction=_options.reduction(reduction),
        ignore_index=None if ignore_index is None else _options.ignore_index(ignore_index),
        num_threads=_options.num_threads(num_threads),
    )


@dataclass(frozen=True)
class DivergenceLayout:
    """Shapes and dtypes of a divergence call, checked."""

    shape: tuple[int, ...]  # the student's (and the teacher's)
    dtype: np.dtype  # the compute dtype
    axis: int  # the class axis, non-negative
    C: int
    sample_shape: tuple[int, ...]  # the shape without the class axis


def divergence_layout(
    student: Any,
    teacher: Any,
    target: Any,
    axis: Any,
    options: DivergenceOptions,
    *,
    dtype: np.dtype | None = None,
) -> DivergenceLayout:
    """Check the student's, the teacher's and the target's shapes and dtypes
    (anything with ``.shape`` and ``.dtype``; ``target`` may be None).
    ``dtype``: the compute dtype when the caller has chosen it (the linear
    functions); else the student's."""
    shape = tuple(int(n) for n in student.shape)
    dt = compute_dtype(np.dtype(student.dtype), "student") if dtype is None else dtype
    ax = normalize_axis(axis, len(shape), "student")
    C = shape[ax]
    if C == 0:
        raise ValueError("student: the class axis is empty (C == 0)")
    compute_dtype(np.dtype(teacher.dtype), "teacher")
    t_shape = tuple(int(n) for n in teacher.shape)
    if t_shape != shape:
        raise ValueError(f"teacher must have the student's shape {shape}, got {t_shape}")
    sample_shape = shape[:ax] + shape[ax + 1 :]
    if (target is None) != (options.ignore_index is None):
        raise ValueError(
            "target and ignore_index go together: rows whose target equals ignore_index are "
            f"skipped (got target={'None' if target is None else 'an array'}, "
            f"ignore_index={options.ignore_index!r})"
        )
    if target is not None:
        y_dt, y_shape = np.dtype(target.dtype), tuple(int(n) for n in target.shape)
        if y_dt.kind not in "iu":
            raise TypeError(f"target: expected integer tokens, got dtype {y_dt}")
        if y_shape != sample_shape:
            raise ValueError(
                f"target: expected integer tokens of shape {sample_shape} (the student's shape "
                f"without the class axis), got shape {y_shape}"
            )
    return DivergenceLayout(shape, dt, ax, C, sample_shape)


def tokens(y: np.ndarray, options: DivergenceOptions) -> np.ndarray:
    """Integer tokens as contiguous int64 for the kernel, which only compares
    them with ignore_index (uint64 values beyond int64 never equal it, and
    are never wrapped onto it)."""
    if y.dtype == np.uint64 and y.size and y.max() > np.iinfo(np.int64).max:
        ign = options.ignore_index
        assert ign is not None
        y = np.where(y == ign, ign, ign ^ 1) if ign >= 0 else np.zeros(y.shape, np.int64)
    return np.ascontiguousarray(y, dtype=np.int64)


# torch.nn.functional.kl_div's options (ce_fast.torch.kl_div): torch's
# reductions, its legacy pair and its warnings, word for word.
_KL_DIV_MEAN_WARNING = (
    "reduction: 'mean' divides the total loss by both the batch size and the support size."
    "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
    "'mean' will be changed to behave the same as 'batchmean' in the next major release."
)


@dataclass(frozen=True)
class KlDivOptions:
    """torch.nn.functional.kl_div's options, resolved as torch resolves them."""

    reduction: str  # of the elementwise terms: "none", "sum" or "mean" (over all elements)
    batchmean: bool  # the reduced value is then divided by the input's first dimension
    log_target: bool


def kl_div_options(
    *, size_average: Any, reduce: Any, reduction: Any, log_target: Any, warn: bool = True
) -> KlDivOptions:
    """torch's rules: the legacy ``size_average`` / ``reduce`` pair, when
    either is given, decides the reduction (with torch's deprecation
    warning), yet a ``reduction="batchmean"`` passed along still divides by
    the batch size; otherwise "mean" warns that it is not the batch mean,
    and "batchmean" is the sum divided by the batch size. ``warn=False``:
    no warnings (torch.compile cannot trace ``warnings.warn``)."""
    flag = _options.flag(log_target, "log_target")
    if size_average is not None or reduce is not None:
        legacy = _options.legacy_reduction(size_average, reduce, warn)
        return KlDivOptions(legacy, reduction == "batchmean", flag)
    if reduction == "mean" and warn:
        warnings.warn(_KL_DIV_MEAN_WARNING, stacklevel=3)
    if reduction == "batchmean":
        return KlDivOptions("sum", True, flag)
    return KlDivOptions(_options.torch_reduction(reduction, warn), False, flag)
