"""kl_div: torch.nn.functional.kl_div on log-probabilities, elementwise.

The options go through ce_fast's parser (torch's rules, messages and
warnings). Operands the kernel takes -- float32 / float64 CPU tensors of one
dtype and one shape, a target that does not require grad -- go to the
elementwise kernel of src/binary_impl.h (kldiv_chunk): the terms, their
reduction and the input's gradient in one pass, with no N x C temporaries
(torch's composition allocates three). Everything else (broadcasting, mixed
or 16-bit dtypes, other devices, a target that requires grad, empty inputs)
is torch's own operator (``torch.kl_div``), so it behaves as torch's
function in every case."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from .. import _core
from .._core import ce_bin_mode, ce_reduction, ce_status
from .._validation import REDUCTIONS, flat_2d, kl_div_options, no_memory, upstream
from ._bridge import TORCH, empty, fell_through, ready, scalar, threads, view
from ._fused import Fused

# torch's reduction codes (torch/nn/_reduction.py)
_CODES = {"none": 0, "mean": 1, "sum": 2}
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_NONE = ce_reduction.CE_RED_NONE


def _composite(input: Tensor, target: Tensor, reduction: str, batchmean: bool, log_target: bool) -> Tensor:
    """torch's kl_div on resolved options (its own operator)."""
    out = torch.kl_div(input, target, _CODES[reduction], log_target=log_target)
    return out / input.size()[0] if batchmean and input.dim() != 0 else out


def _run(args: tuple[Any, ...], want_grad: bool, grad_output: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """(loss, input gradient or None) from the kernel; the gradient is for
    ``grad_output`` (1 when None). Without ``want_grad`` the loss alone; a
    backward call (``grad_output`` given) computes the gradient alone."""
    input, target, reduction, batchmean, log_target = args
    x, t = view(input, "input"), view(target, "target")
    shape, dt, red = tuple(x.shape), x.dtype, REDUCTIONS[reduction]
    go, scale = upstream(None if grad_output is None else view(grad_output, "grad_output"),
                         red != _NONE, shape, dt, "per-element loss")  # fmt: skip
    batch = input.size()[0] if batchmean and input.dim() != 0 else 1
    scale /= batch
    ops = [x, t] if go is None else [x, t, go]
    rows, cols, ops, strides = flat_2d(shape, ops)
    backward_only = grad_output is not None
    loss = loss_np = g = g_np = None
    if red == _NONE and not backward_only:
        loss, loss_np = empty(shape, input.dtype)
    if want_grad:
        g, g_np = empty(shape, input.dtype)
    if backward_only and red != _NONE:
        # the gradient alone: "none" without a loss buffer computes no loss,
        # the mean's 1/N folded into the scale
        scale = scale / x.size if red == ce_reduction.CE_RED_MEAN else scale
        red = _NONE
    mode = ce_bin_mode.CE_BIN_KL_DIV_LOG if log_target else ce_bin_mode.CE_BIN_KL_DIV
    status, total, *_ = _core.binary(
        mode=mode, x=ops[0], rows=rows, cols=cols, xs=strides[0], t=ops[1], ts=strides[1],
        go=None if go is None else ops[2], gos=(0, 0) if go is None else strides[2],
        grad_output_scalar=scale, reduction=red, loss_out=loss_np, grad=g_np, num_threads=threads(),
    )  # fmt: skip
    if status == ce_status.CE_ERR_NOMEM:
        raise no_memory()
    if loss is None:
        loss = scalar(total / batch, input.dtype)
    return loss, g


@torch.library.custom_op("ce_fast::kl_div", mutates_args=())
def _forward(input: Tensor, target: Tensor, reduction: str, batchmean: bool, log_target: bool) -> Tensor:
    return _run((input, target, reduction, batchmean, log_target), False, None)[0]


@_forward.register_fake
def _(input: Tensor, target: Tensor, reduction: str, batchmean: bool, log_target: bool) -> Tensor:
    if reduction == "none":
        return torch.empty_like(input, memory_format=torch.contiguous_format)
    return input.new_empty(())


@torch.library.custom_op("ce_fast::kl_div_backward", mutates_args=())
def _backward_op(
    grad: Tensor, input: Tensor, target: Tensor, reduction: str, batchmean: bool, log_target: bool
) -> Tensor:
    g = _run((input, target, reduction, batchmean, log_target), True, grad)[1]
    assert g is not None
    return g


@_backward_op.register_fake
def _(grad: Tensor, input: Tensor, *_: Any) -> Tensor:
    return torch.empty_like(input, memory_format=torch.contiguous_format)


_FUSED = Fused(
    run=_run, composite=_composite, n_tensors=2, expand=lambda up, args: up, backward_op=_backward_op
)
_forward.register_autograd(_FUSED.backward, setup_context=_FUSED.setup_context)


def _takes(input: Tensor, target: Tensor) -> bool:
    """ready() (the dtype gate of every front end), and what this kernel
    has: float32 / float64 (no 16-bit instantiation), operands of one shape,
    at least one element, no target gradient."""
    return (
        ready(input, target)
        and input.dtype in (torch.float32, torch.float64)
        and input.shape == target.shape
        and input.numel() > 0
        and not target.requires_grad
    )


def kl_div(
    input: Tensor,
    target: Tensor,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    log_target: bool = False,
) -> Tensor:
    """``torch.nn.functional.kl_div`` (same signature, semantics, warnings
    and gradients): ``input`` holds log-probabilities, ``target``
    probabilities (log-probabilities with ``log_target=True``); the terms
    are ``xlogy(target, target) - target * input`` (0 where ``target`` is 0
    and ``input`` finite), or ``exp(target) * (target - input)``; and
    ``reduction`` is "mean" (over all elements, with torch's warning),
    "batchmean" (the sum divided by the input's first dimension), "sum" or
    "none". The kernel's float32 terms use ce_fast's log / exp and its sums
    are accumulated in float64, so values agree with torch's to rounding,
    not bit for bit. Tensor subclasses (``__torch_function__``) go to
    torch's own function. Under torch.compile, ce_fast's parser emits no
    warnings (Dynamo cannot trace ``warnings.warn``; torch's own function
    warns while tracing)."""
    if type(input) not in _PLAIN or type(target) not in _PLAIN:
        fell_through("kl_div")
        torch_kl_div = TORCH["kl_div"]
        return torch_kl_div(input, target, size_average, reduce, reduction, log_target)  # type: ignore[no-any-return]
    opts = kl_div_options(
        size_average=size_average, reduce=reduce, reduction=reduction, log_target=log_target,
        warn=not torch.compiler.is_compiling(),
    )  # fmt: skip
    args = (input, target, opts.reduction, opts.batchmean, opts.log_target)
    # (legacy "none" with reduction="batchmean": torch divides the terms by the batch size)
    if not _takes(input, target) or (opts.batchmean and opts.reduction == "none"):
        fell_through("kl_div")
        return _composite(*args)
    if torch.compiler.is_compiling():
        return _forward(*args)  # type: ignore[no-any-return]
    if input.requires_grad and torch.is_grad_enabled():
        return _FUSED.eager(*args)
    return _run(args, False, None)[0]
