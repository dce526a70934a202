"""The binary family's parser: binary_cross_entropy_with_logits (and its
gradient forms) and binary_cross_entropy, for every path."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from .._core import ce_reduction
from . import _options


@dataclass(frozen=True)
class BinaryOptions:
    """The validated scalar options of a binary call."""

    reduction: ce_reduction
    num_threads: int  # 0: the OpenMP default
    eps: float | None  # probabilities are clipped to [eps, 1 - eps]; None: see clip()

    def clip(self, dtype: np.dtype) -> float:
        """The clipping bound for probabilities of compute dtype ``dtype``:
        ``eps``, by default the dtype's machine epsilon (as sklearn.metrics.log_loss)."""
        return float(np.finfo(dtype).eps) if self.eps is None else self.eps


def binary_options(*, reduction: Any, num_threads: Any, eps: Any = None, **_: Any) -> BinaryOptions:
    """Check the scalar options of the binary losses (other keywords are
    left to their own parser)."""
    return BinaryOptions(
        reduction=_options.reduction(reduction),
        num_threads=_options.num_threads(num_threads),
        eps=None if eps is None else _options.real(eps, "eps", 0.0, 0.5),
    )
