"""patch() / unpatch(): ce_fast.torch's functions and modules in place of
torch's, for a whole program (torch's own modules call F.<name> at run
time, so their instances made before patch() switch too)."""

from __future__ import annotations

from types import TracebackType
from typing import Any

import torch
import torch.nn.functional as F

from . import _binary, _categorical, _kl_div, _linear, _modules, _softmax
from ._bridge import TORCH

_FUNCTIONS = {
    "cross_entropy": _categorical.cross_entropy,
    "binary_cross_entropy_with_logits": _binary.binary_cross_entropy_with_logits,
    "log_softmax": _softmax.log_softmax,
    "softmax": _softmax.softmax,
    "linear_cross_entropy": _linear.linear_cross_entropy,
    "kl_div": _kl_div.kl_div,
}
_MODULES = {
    "CrossEntropyLoss": _modules.CrossEntropyLoss,
    "BCEWithLogitsLoss": _modules.BCEWithLogitsLoss,
    "LinearCrossEntropyLoss": _modules.LinearCrossEntropyLoss,
}
_TORCH_MODULES = {name: getattr(torch.nn, name) for name in _MODULES}


class Patched:
    """What patch() returns: also a context manager that unpatches on exit."""

    def __enter__(self) -> Patched:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        unpatch()


def patch() -> Patched:
    """Swap ce_fast.torch's functions into ``torch.nn.functional``
    (cross_entropy, binary_cross_entropy_with_logits, log_softmax, softmax,
    linear_cross_entropy, kl_div -- and so torch.nn.KLDivLoss, which calls
    F.kl_div) and its loss modules into ``torch.nn``
    (CrossEntropyLoss, BCEWithLogitsLoss, LinearCrossEntropyLoss).
    Idempotent; ``with ce_fast.torch.patch(): ...`` undoes it on exit."""
    for name, fn in _FUNCTIONS.items():
        setattr(F, name, fn)
    for name, cls in _MODULES.items():
        setattr(torch.nn, name, cls)
    return Patched()


def unpatch() -> None:
    """Put torch's own functions and modules back."""
    for name in _FUNCTIONS:
        setattr(F, name, TORCH[name])
    for name, cls in _TORCH_MODULES.items():
        setattr(torch.nn, name, cls)


def patched() -> dict[str, Any]:
    """Which names are ce_fast's now (a test hook)."""
    on = {f"F.{n}": getattr(F, n) is fn for n, fn in _FUNCTIONS.items()}
    on.update({f"nn.{n}": getattr(torch.nn, n) is cls for n, cls in _MODULES.items()})
    return on
