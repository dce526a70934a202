"""ce_fast.torch: differentiable drop-ins for torch.nn.functional on the CPU.

Importing this module requires PyTorch (``import ce_fast`` never imports it).
"""

from __future__ import annotations

from ._binary import binary_cross_entropy, binary_cross_entropy_with_logits
from ._categorical import cross_entropy
from ._linear import linear_cross_entropy
from ._softmax import log_softmax, logsumexp, softmax

__all__ = [
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "linear_cross_entropy",
    "log_softmax",
    "logsumexp",
    "softmax",
]
