"""ce_fast — fast, numerically careful cross-entropy kernels for NumPy.

C kernels with OpenMP threads and SIMD (chosen at import for this CPU), bound
through Cython. Every function has a plain-NumPy twin in
:mod:`ce_fast.reference` that serves as its specification."""

# Running from a source checkout (e.g. `python -m ce_fast.bench` in the repo
# root) finds this directory first, which has no compiled module: extend the
# package path so the installed build's ce_fast/_core is found as well.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)

from ._version import __version__  # noqa: E402
from ._config import _apply_isa_override, build_info, show_config
from ._categorical import cross_entropy, cross_entropy_and_grad, cross_entropy_grad
from ._binary import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_and_grad,
    binary_cross_entropy_with_logits_grad,
)
from ._divergence import js_divergence, js_divergence_and_grad, kl_divergence, kl_divergence_and_grad
from ._linear import linear_cross_entropy, linear_cross_entropy_and_grad
from ._linear_divergence import (
    linear_js_divergence,
    linear_js_divergence_and_grad,
    linear_kl_divergence,
    linear_kl_divergence_and_grad,
)
from ._softmax import entropy, log_softmax, logsumexp, softmax, softmax_entropy

_apply_isa_override()

__all__ = [
    "__version__",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_and_grad",
    "binary_cross_entropy_with_logits_grad",
    "build_info",
    "cross_entropy",
    "cross_entropy_and_grad",
    "cross_entropy_grad",
    "entropy",
    "js_divergence",
    "js_divergence_and_grad",
    "kl_divergence",
    "kl_divergence_and_grad",
    "linear_cross_entropy",
    "linear_cross_entropy_and_grad",
    "linear_js_divergence",
    "linear_js_divergence_and_grad",
    "linear_kl_divergence",
    "linear_kl_divergence_and_grad",
    "log_softmax",
    "logsumexp",
    "show_config",
    "softmax",
    "softmax_entropy",
]
