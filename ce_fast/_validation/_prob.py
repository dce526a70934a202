"""The parser of the probability-vector family: Shannon entropy and the
Kullback-Leibler divergence of distributions normalised per row (the
kernels of ``ce_fast.scipy.entropy``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _options
from ._arrays import compute_dtype, normalize_axes

# SciPy's spelling of the policies and of the message (the set's order is
# that of SciPy's own set in this process)
NAN_POLICIES = {"propagate", "raise", "omit"}


@dataclass(frozen=True)
class ProbCall:
    """A validated entropy / KL call on operands of one (broadcast) shape."""

    shape: tuple[int, ...]
    dtype: np.dtype  # the compute dtype
    axes: tuple[int, ...]  # the distribution's axes: sorted, distinct, non-negative
    nan_policy: str
    num_threads: int  # 0: the OpenMP default

    @property
    def omit_nan(self) -> bool:
        return self.nan_policy == "omit"

    @property
    def result_shape(self) -> tuple[int, ...]:
        return tuple(n for k, n in enumerate(self.shape) if k not in self.axes)

    @property
    def n_classes(self) -> int:
        return math.prod(self.shape[k] for k in self.axes)


def nan_policy(value: Any) -> str:
    if not isinstance(value, str) or value not in NAN_POLICIES:
        raise ValueError(f"nan_policy must be one of {NAN_POLICIES}.")
    return value


def prob_call(pk: Any, qk: Any, axis: Any, policy: Any, num_threads: Any) -> ProbCall:
    """Check an entropy (``qk`` None) or KL call; ``pk`` and ``qk`` (anything
    with ``.shape`` and ``.dtype``) already have one shape. An empty axis is
    fine (the entropy of no outcomes is 0)."""
    shape = tuple(int(n) for n in pk.shape)
    dt = np.dtype(pk.dtype) if qk is None else np.result_type(pk.dtype, qk.dtype)
    if qk is not None and tuple(qk.shape) != shape:
        raise ValueError(f"pk of shape {shape} and qk of shape {tuple(qk.shape)} differ")
    return ProbCall(
        shape=shape,
        dtype=compute_dtype(dt, "pk"),
        axes=normalize_axes(axis, len(shape), "pk"),
        nan_policy=nan_policy(policy),
        num_threads=_options.num_threads(num_threads),
    )
