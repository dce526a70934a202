"""ce_fast.torch: differentiable drop-ins for ``torch.nn.functional`` on the CPU.

Importing this module requires PyTorch (``import ce_fast`` never imports
it). The functions have torch's signatures and semantics, plus ce_fast's
extras as keyword-only arguments where they apply (``sample_weight``,
``z_loss``, ``softcap``):

* ``cross_entropy``, ``binary_cross_entropy_with_logits``,
  ``binary_cross_entropy``, ``log_softmax``, ``softmax``, ``logsumexp``,
  ``linear_cross_entropy`` (torch 2.13's signature; always chunked, so the
  N x C logits never exist at once), ``kl_div`` (torch's, on
  log-probabilities: terms, reduction and gradient in one elementwise pass);
* ``kl_divergence`` and ``js_divergence`` from the student's logits (the
  NumPy API's fused divergence kernel: loss and gradient in one pass);
* the modules ``CrossEntropyLoss``, ``BCEWithLogitsLoss``,
  ``LinearCrossEntropyLoss`` (torch's classes, forward through the above);
* ``patch()`` / ``unpatch()``: swap torch's into ``torch.nn.functional`` and
  ``torch.nn`` for a whole program (``with ce_fast.torch.patch(): ...``).

They are torch custom operators (``torch.library.custom_op``, namespace
``ce_fast``) with autograd and fake implementations, so they work under
``torch.compile(fullgraph=True)``, ``torch.autograd.gradcheck`` and double
backward. Tensors are read in place and results written into tensors
allocated by torch: no copy either way. The kernels use
``torch.get_num_threads()`` threads. The forward of ``cross_entropy`` keeps
only the per-sample log-sum-exp (N float64 values) for the backward, which
reads the logits once.

What the CPU kernels do not take goes to torch's own implementation (or,
with ce_fast's extras, to a composition of torch operations with the same
semantics), so nothing raises where torch would not: other devices (CUDA,
meta, ...), float16 / bfloat16 except in ``cross_entropy``,
``binary_cross_entropy_with_logits``, ``softmax``, ``log_softmax`` and
``logsumexp`` (which take them in their 16-bit kernels) and
``linear_cross_entropy`` (whose matmuls are float32, a chunk of the input
and a slab of the weight converted at a time): results and gradients in
the input's dtype, as torch, each rounded once from float32; bfloat16 needs
ml_dtypes), complex and mixed dtypes, tensor
subclasses, the deprecated ``size_average`` / ``reduce`` arguments, class
weights (or ``pos_weight``) that require grad, 0-d and empty inputs of the
softmax family, and ``binary_cross_entropy`` on probabilities (always
torch's: see its docstring). Double backward (``create_graph=True``)
differentiates torch's operations.
"""

from __future__ import annotations

from ._binary import binary_cross_entropy, binary_cross_entropy_with_logits
from ._categorical import cross_entropy
from ._divergence import js_divergence, kl_divergence
from ._kl_div import kl_div
from ._linear import linear_cross_entropy
from ._modules import BCEWithLogitsLoss, CrossEntropyLoss, LinearCrossEntropyLoss
from ._patch import patch, unpatch
from ._softmax import log_softmax, logsumexp, softmax

__all__ = [
    "BCEWithLogitsLoss",
    "CrossEntropyLoss",
    "LinearCrossEntropyLoss",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "cross_entropy",
    "js_divergence",
    "kl_div",
    "kl_divergence",
    "linear_cross_entropy",
    "log_softmax",
    "logsumexp",
    "patch",
    "softmax",
    "unpatch",
]
