"""binary_cross_entropy_with_logits as torch custom operators: the forward
writes the loss into a tensor allocated here, the backward is one kernel
call (the gradient from the logits, scaled by the upstream gradient).

float16 and bfloat16 operands (all of the input's dtype: torch promotes
mixed ones, which are its own) go through the 16-bit kernel, which reads the
logits in place and computes in float32: the loss is the kernel's float32
loss rounded once to the input's dtype, the gradient is rounded once from
float32 inside the kernel, the upstream gradient applied before that
rounding (as torch, whose results are in the input's dtype)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _binary
from ._bridge import (
    HALF_DTYPES,
    TORCH,
    empty,
    fell_through,
    maybe_view,
    plain_cpu,
    ready,
    rounded,
    scalar,
    threads,
    view,
)


def _operands(
    input: Tensor, target: Tensor, weight: Tensor | None, pos_weight: Tensor | None
) -> dict[str, Any]:
    return dict(
        logits=view(input, "input"), target=view(target, "target"), weight=maybe_view(weight, "weight"),
        pos_weight=maybe_view(pos_weight, "pos_weight"), num_threads=threads(),
    )  # fmt: skip


@torch.library.custom_op("ce_fast::binary_cross_entropy_with_logits", mutates_args=())
def _forward(
    input: Tensor, target: Tensor, weight: Tensor | None, pos_weight: Tensor | None, reduction: str
) -> Tensor:
    ops = _operands(input, target, weight, pos_weight)
    if reduction == "none":
        half = input.dtype in HALF_DTYPES  # the kernel's losses are float32
        loss, loss_np = empty(input.shape, torch.float32 if half else input.dtype)
        _binary._logits_run(**ops, reduction=reduction, want_loss=True, want_grad=False, loss_out=loss_np)
        return rounded(loss_np, input.dtype) if half else loss
    value = _binary._logits_run(**ops, reduction=reduction, want_loss=True, want_grad=False)[0]
    return scalar(value, input.dtype)


@_forward.register_fake
def _(input: Tensor, target: Tensor, weight: Any, pos_weight: Any, reduction: str) -> Tensor:
    return input.new_empty(input.shape if reduction == "none" else ())


@torch.library.custom_op("ce_fast::binary_cross_entropy_with_logits_backward", mutates_args=())
def _backward_input(
    grad: Tensor,
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    reduction: str,
) -> Tensor:
    g, g_np = empty(input.shape, input.dtype)
    _binary._logits_run(
        **_operands(input, target, weight, pos_weight), reduction=reduction, want_loss=False, want_grad=True,
        grad_output=view(grad, "grad_output"), out=g_np,
    )  # fmt: skip
    return g


@_backward_input.register_fake
def _(grad: Tensor, input: Tensor, *_: Any) -> Tensor:
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@torch.library.custom_op("ce_fast::binary_cross_entropy_with_logits_backward_target", mutates_args=())
def _backward_target(
    grad: Tensor,
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    pos_weight: Tensor | None,
    reduction: str,
) -> Tensor:
    """d loss / d target = w ((pw - 1) softplus(-x) - x), times the upstream
    gradient (soft labels that require grad: a rare path, in NumPy)."""
    x = np.asarray(view(input, "input"), np.float64)
    d = -x
    if pos_weight is not None:
        d = d + (np.asarray(view(pos_weight, "pos_weight"), np.float64) - 1.0) * np.logaddexp(0.0, -x)
    if weight is not None:
        d = d * np.asarray(view(weight, "weight"))
    d = d * np.asarray(view(grad, "grad_output"))
    if reduction == "mean":
        d = d / max(1, x.size)
    g, g_np = empty(input.shape, input.dtype)
    g_np[...] = d
    return g


@_backward_target.register_fake
def _(grad: Tensor, input: Tensor, *_: Any) -> Tensor:
    return torch.empty_like(input, memory_format=torch.contiguous_format)


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    ctx.save_for_backward(*inputs[:4])
    ctx.reduction = inputs[4]


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
    input, target, weight, pos_weight = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: torch's differentiable gradient
        wanted = [t for t, need in zip((input, target), ctx.needs_input_grad[:2]) if need]
        loss = TORCH["binary_cross_entropy_with_logits"](
            input, target, weight, reduction=ctx.reduction, pos_weight=pos_weight
        )
        got = iter(torch.autograd.grad(loss, wanted, grad, create_graph=True))
        return (*(next(got) if need else None for need in ctx.needs_input_grad[:2]), None, None, None)
    args = (grad, input, target, weight, pos_weight, ctx.reduction)
    gi = _backward_input(*args) if ctx.needs_input_grad[0] else None
    gt = _backward_target(*args) if ctx.needs_input_grad[1] else None
    return gi, gt, None, None, None


_forward.register_autograd(_backward, setup_context=_setup_context)


def binary_cross_entropy_with_logits(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
    pos_weight: Tensor | None = None,
) -> Tensor:
    legacy = size_average is not None or reduce is not None
    if legacy or not _takes(input, target, weight, pos_weight):
        fell_through("binary_cross_entropy_with_logits")
        return TORCH["binary_cross_entropy_with_logits"](  # type: ignore[no-any-return]
            input, target, weight, size_average, reduce, reduction, pos_weight
        )
    return _forward(input, target, weight, pos_weight, reduction)  # type: ignore[no-any-return]


def _takes(input: Tensor, target: Tensor, weight: Tensor | None, pos_weight: Tensor | None) -> bool:
    """ready() (16-bit too), a target of the input's shape (torch refuses
    others), no weights that require grad, a non-empty input."""
    if not ready(input, target, weight, pos_weight, half=True) or not plain_cpu(target):
        return False
    if target.shape != input.shape or input.numel() == 0:
        return False
    return not any(w is not None and w.requires_grad for w in (weight, pos_weight))


def binary_cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    reduce: bool | None = None,
    reduction: str = "mean",
) -> Tensor:
    """torch's own binary_cross_entropy, always: its semantics (each log
    clamped at -100, so probabilities of exactly 0 or 1 give finite losses,
    and the gradient (p - t) / max(p (1 - p), 1e-12)) are not what ce_fast's
    probability kernel computes (probabilities clipped to [eps, 1 - eps],
    no gradient), so there is nothing faster to offer here yet."""
    fell_through("binary_cross_entropy")
    return TORCH["binary_cross_entropy"](  # type: ignore[no-any-return]
        input, target, weight, size_average, reduce, reduction
    )
