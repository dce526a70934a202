"""ce_fast — fast, numerically careful cross-entropy kernels for NumPy.

C kernels with OpenMP threads and SIMD (chosen at import for this CPU), bound
through Cython. Every function has a plain-NumPy twin in
:mod:`ce_fast.reference` that serves as its specification."""

from ._version import __version__
from ._config import _apply_isa_override, build_info, show_config
from ._categorical import cross_entropy, cross_entropy_and_grad, cross_entropy_grad

_apply_isa_override()

__all__ = [
    "__version__",
    "build_info",
    "cross_entropy",
    "cross_entropy_and_grad",
    "cross_entropy_grad",
    "show_config",
]
