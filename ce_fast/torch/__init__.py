"""ce_fast.torch: differentiable drop-ins for torch.nn.functional on the CPU.

Importing this module requires PyTorch (``import ce_fast`` never imports it).
"""

from __future__ import annotations

from ._categorical import cross_entropy

__all__ = ["cross_entropy"]
