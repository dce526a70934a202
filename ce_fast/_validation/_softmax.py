"""The softmax family's parser: logsumexp, log_softmax, softmax, entropy,
softmax_entropy, for every path."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core import ce_sm_op
from . import _options
from ._arrays import compute_dtype, normalize_axes, normalize_axis

# each op's name for its input, in error messages
INPUT_NAMES = {ce_sm_op.CE_SM_ENTROPY: "probs", ce_sm_op.CE_SM_SOFTMAX_ENTROPY: "logits"}

# the ops defined on an empty class axis: log(sum of nothing) = -inf, and the
# (empty) softmax of an empty row; entropy and softmax_entropy of an empty
# distribution have no meaning
_EMPTY_OK = (ce_sm_op.CE_SM_LOGSUMEXP, ce_sm_op.CE_SM_LOG_SOFTMAX, ce_sm_op.CE_SM_SOFTMAX)


@dataclass(frozen=True)
class SoftmaxCall:
    """A validated softmax-family call (from shapes and dtypes alone)."""

    op: ce_sm_op
    name: str  # the input's name in messages
    shape: tuple[int, ...]
    dtype: np.dtype  # the compute dtype
    axes: tuple[int, ...]  # the class axes: non-negative, sorted, distinct
    num_threads: int  # 0: the OpenMP default
    keepdims: bool = False

    @property
    def axis(self) -> int:
        """The class axis of a single-axis call."""
        assert len(self.axes) == 1
        return self.axes[0]

    @property
    def n_classes(self) -> int:
        return math.prod(self.shape[k] for k in self.axes)

    @property
    def rowwise(self) -> bool:
        """The result has the input's shape (else it is reduced over axis)."""
        return self.op in (ce_sm_op.CE_SM_LOG_SOFTMAX, ce_sm_op.CE_SM_SOFTMAX)

    @property
    def result_shape(self) -> tuple[int, ...]:
        if self.rowwise:
            return self.shape
        if self.keepdims:
            return tuple(1 if k in self.axes else n for k, n in enumerate(self.shape))
        return tuple(n for k, n in enumerate(self.shape) if k not in self.axes)


def softmax_call(
    op: ce_sm_op, x: Any, axis: Any, num_threads: Any, *, keepdims: Any = False, multi_axis: bool = False
) -> SoftmaxCall:
    """Check a softmax-family call on ``x`` (anything with ``.shape`` and
    ``.dtype``: NumPy or dask arrays). ``multi_axis``: the caller takes a
    tuple of axes (reduced as one flattened axis) as well as an int."""
    name = INPUT_NAMES.get(op, "x")
    shape = tuple(int(n) for n in x.shape)
    dt = compute_dtype(np.dtype(x.dtype), name)
    if multi_axis:
        axes = normalize_axes(axis, len(shape), name)
    else:
        axes = (normalize_axis(axis, len(shape), name),)
    if not isinstance(keepdims, (bool, np.bool_)):
        raise TypeError(f"keepdims must be a bool, got {keepdims!r}")
    call = SoftmaxCall(op, name, shape, dt, axes, _options.num_threads(num_threads), bool(keepdims))
    if call.n_classes == 0 and op not in _EMPTY_OK:
        raise ValueError(f"{name}: axis {axis} is empty (C == 0)")
    return call
