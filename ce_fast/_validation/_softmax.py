"""The softmax family's parser: logsumexp, log_softmax, softmax, entropy,
softmax_entropy, for every path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core import ce_sm_op
from . import _options
from ._arrays import compute_dtype, normalize_axis

# each op's name for its input, in error messages
INPUT_NAMES = {ce_sm_op.CE_SM_ENTROPY: "probs", ce_sm_op.CE_SM_SOFTMAX_ENTROPY: "logits"}


@dataclass(frozen=True)
class SoftmaxCall:
    """A validated softmax-family call (from shapes and dtypes alone)."""

    op: ce_sm_op
    name: str  # the input's name in messages
    shape: tuple[int, ...]
    dtype: np.dtype  # the compute dtype
    axis: int  # non-negative
    num_threads: int  # 0: the OpenMP default

    @property
    def rowwise(self) -> bool:
        """The result has the input's shape (else it is reduced over axis)."""
        return self.op in (ce_sm_op.CE_SM_LOG_SOFTMAX, ce_sm_op.CE_SM_SOFTMAX)

    @property
    def result_shape(self) -> tuple[int, ...]:
        return self.shape if self.rowwise else self.shape[: self.axis] + self.shape[self.axis + 1 :]


def softmax_call(op: ce_sm_op, x: Any, axis: Any, num_threads: Any) -> SoftmaxCall:
    """Check a softmax-family call on ``x`` (anything with ``.shape`` and
    ``.dtype``: NumPy or dask arrays)."""
    name = INPUT_NAMES.get(op, "x")
    shape = tuple(int(n) for n in x.shape)
    dt = compute_dtype(np.dtype(x.dtype), name)
    ax = normalize_axis(axis, len(shape), name)
    if shape[ax] == 0:
        raise ValueError(f"{name}: axis {axis} is empty (C == 0)")
    return SoftmaxCall(op, name, shape, dt, ax, _options.num_threads(num_threads))
