"""kl_div: torch.nn.functional.kl_div on log-probabilities, elementwise.

No ce_fast kernel computes this: the probability kernels normalise their
rows (scipy.stats.entropy) and the divergence kernels take the student's
logits, where kl_div's input is taken as log-probabilities as it is. So the
options go through ce_fast's parser and the arithmetic is torch's own
operator (``torch.kl_div``, the terms ``xlogy(t, t) - t * input``, or
``exp(t) * (t - input)`` with ``log_target``), which gives torch's values
bit for bit, its broadcasting, dtype promotion, NaN / inf behaviour and
gradients with respect to both operands (twice differentiable), and traces
into a torch.compile graph without a break."""

from __future__ import annotations

import torch
from torch import Tensor

from .._validation import kl_div_options
from ._bridge import TORCH, fell_through

# torch's reduction codes (torch/nn/_reduction.py)
_CODES = {"none": 0, "mean": 1, "sum": 2}
_PLAIN = (torch.Tensor, torch.nn.Parameter)


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """``torch.nn.functional.kl_div`` (same signature, values, warnings and
    gradients): ``input`` holds log-probabilities, ``target`` probabilities
    (log-probabilities with ``log_target=True``); the terms are
    ``target * (log(target) - input)`` (0 where ``target`` is 0) and
    ``reduction`` is "mean" (over all elements, with torch's warning),
    "batchmean" (the sum over the input's first dimension), "sum" or "none".
    Under torch.compile, ce_fast's parser emits no warnings (Dynamo cannot
    trace ``warnings.warn``; torch's own function warns while tracing).
    Tensor subclasses (``__torch_function__``) go to torch's own function."""
    if type(input) not in _PLAIN or type(target) not in _PLAIN:
        fell_through("kl_div")
        return TORCH["kl_div"](input, target, size_average, reduce, reduction, log_target)  # type: ignore[no-any-return]
    opts = kl_div_options(
        size_average=size_average, reduce=reduce, reduction=reduction, log_target=log_target,
        warn=not torch.compiler.is_compiling(),
    )  # fmt: skip
    out = torch.kl_div(input, target, _CODES[opts.reduction], log_target=opts.log_target)
    if opts.batchmean and input.dim() != 0:
        out = out / input.size()[0]
    return out
