"""linear_cross_entropy as torch custom operators, chunked so that the N x C
logits never exist at once (ce_fast._linear's chunk loop: each chunk's
logits by BLAS into one reused buffer, turned into their gradient in place
by the categorical kernel, pushed back through the two matmuls).

With a reduced loss and parameters that require grad, the forward computes
the gradients as it goes (three matmuls per chunk instead of the four that
a recomputing backward needs) and the backward hands them over, scaled by
the upstream gradient unless it is 1. A second backward through the same
graph (retain_graph=True), and every backward of reduction="none" (whose
upstream gradient is per row), recompute them chunk by chunk from the
saved per-row log-sum-exp.

float16 / bfloat16 operands (input, linear_weight and the others of that
dtype) are computed in float32 by ce_fast._linear's 16-bit layer (each
chunk of input and each slab of linear_weight converted as the matmuls need
it): the loss and the gradients come back in that dtype, each rounded once
from its float32 value, so an upstream gradient other than 1 is applied
before that rounding (by recomputing the gradients, not by scaling the
forward's)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from .. import _linear
from . import _categorical, _composite
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

_NO_GRAD = (False, False, False)


def _problem(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    chunk_size: int,
) -> _linear._Problem:
    return _linear._Problem(
        view(input, "input"), view(linear_weight, "linear_weight"), view(target, "target"),
        dict(
            bias=maybe_view(linear_bias, "linear_bias"), class_weight=maybe_view(weight, "weight"),
            sample_weight=maybe_view(sample_weight, "sample_weight"), ignore_index=ignore_index,
            reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss,
            softcap=softcap or None, num_threads=threads(), chunk_size=chunk_size or None,
        ),
    )  # fmt: skip


def _grad_buffers(
    input: Tensor, linear_weight: Tensor, wanted: tuple[bool, bool, bool]
) -> tuple[list[Tensor], dict[str, Any]]:
    """The gradient tensors (empty ones where not wanted) and their ndarray
    views for the chunk loop: (N, D), (C, D), (C,)."""
    C, D = linear_weight.shape
    shapes = ((math.prod(input.shape[:-1]), D), (C, D), (C,))
    tensors, arrays = [], {}
    for name, shape, want in zip(("d_hidden", "d_weight", "d_bias"), shapes, wanted):
        t, a = empty(shape if want else (0,), input.dtype)
        tensors.append(t)
        arrays[name] = a if want else None
    return tensors, arrays


@torch.library.custom_op("ce_fast::linear_cross_entropy", mutates_args=())
def _forward(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    chunk_size: int,
    want_input: bool,
    want_weight: bool,
    want_bias: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(loss, lse, d_input, d_weight, d_bias); a gradient that is not wanted
    is an empty tensor. Gradients are those of the loss itself (upstream 1)."""
    p = _problem(input, linear_weight, target, linear_bias, weight, sample_weight, ignore_index, reduction,
                 label_smoothing, z_loss, softcap, chunk_size)  # fmt: skip
    wanted = (want_input, want_weight, want_bias and linear_bias is not None)
    lse, lse_np = empty(p.sample_shape, torch.float64)
    grads, arrays = _grad_buffers(input, linear_weight, wanted)
    loss, *_ = _linear.run(p, grads=wanted, lse_out=lse_np.reshape(-1), via_lse=True, **arrays)
    loss_t = rounded(loss, input.dtype) if reduction == "none" else scalar(loss, input.dtype)
    d_input = grads[0].reshape(input.shape) if want_input else grads[0]
    return loss_t, lse, d_input, grads[1], grads[2]


@_forward.register_fake
def _(input: Tensor, linear_weight: Tensor, target: Tensor, linear_bias: Any, weight: Any, sample_weight: Any,
      ignore_index: int, reduction: str, *rest: Any) -> tuple[Tensor, ...]:  # fmt: skip
    want_input, want_weight, want_bias = rest[-3:]
    shape = input.shape[:-1]
    empty0 = input.new_empty((0,))
    return (
        input.new_empty(shape if reduction == "none" else ()),
        input.new_empty(shape, dtype=torch.float64),
        input.new_empty(input.shape) if want_input else empty0,
        input.new_empty(linear_weight.shape) if want_weight else empty0.clone(),
        input.new_empty(linear_weight.shape[:1]) if want_bias and linear_bias is not None else empty0.clone(),
    )


@torch.library.custom_op("ce_fast::linear_cross_entropy_backward", mutates_args=())
def _backward_op(
    grad: Tensor,
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    lse: Tensor,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    chunk_size: int,
    want_input: bool,
    want_weight: bool,
    want_bias: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """The gradients recomputed chunk by chunk from the saved lse: with
    reduction "none" times the upstream gradient (per row); with a reduced
    loss of the loss itself (the caller scales them, as it scales the
    forward's, so that both are bitwise the same) -- but for 16-bit operands,
    whose gradients are rounded once, with the upstream gradient inside."""
    p = _problem(input, linear_weight, target, linear_bias, weight, sample_weight, ignore_index, reduction,
                 label_smoothing, z_loss, softcap, chunk_size)  # fmt: skip
    wanted = (want_input, want_weight, want_bias and linear_bias is not None)
    grads, arrays = _grad_buffers(input, linear_weight, wanted)
    lse_np = view(lse, "lse").reshape(-1)
    go = view(grad, "grad_output") if reduction == "none" or input.dtype in HALF_DTYPES else None
    _linear.run(p, grads=wanted, grad_output=go, lse=lse_np, **arrays)
    return grads[0].reshape(input.shape) if want_input else grads[0], grads[1], grads[2]


@_backward_op.register_fake
def _(grad: Tensor, input: Tensor, linear_weight: Tensor, target: Tensor, linear_bias: Any,
      *rest: Any) -> tuple[Tensor, ...]:  # fmt: skip
    want_input, want_weight, want_bias = rest[-3:]
    empty0 = input.new_empty((0,))
    return (
        input.new_empty(input.shape) if want_input else empty0,
        input.new_empty(linear_weight.shape) if want_weight else empty0.clone(),
        input.new_empty(linear_weight.shape[:1]) if want_bias and linear_bias is not None else empty0.clone(),
    )


@torch.library.custom_op("ce_fast::linear_cross_entropy_backward_target", mutates_args=())
def _backward_target(
    grad: Tensor,
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    lse: Tensor,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tensor:
    """The gradient with respect to probability targets (a rare path: the
    logits are materialised, then as cross_entropy's)."""
    logits = TORCH["linear"](input, linear_weight, linear_bias)
    call = _categorical._prepare(
        logits, target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss, softcap
    )
    g, g_np = empty(logits.shape, input.dtype)
    g_np[...] = _categorical._target_grad(call, view(grad, "grad_output"), view(lse, "lse"))
    return g


@_backward_target.register_fake
def _(grad: Tensor, input: Tensor, linear_weight: Tensor, *_: Any) -> Tensor:
    return input.new_empty((*input.shape[:-1], linear_weight.shape[0]))


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, ...]) -> None:
    ctx.mark_non_differentiable(*output[1:])  # lse and the gradients: not results to differentiate
    ctx.save_for_backward(*inputs[:6], *output[1:])
    ctx.options = inputs[6:12]
    ctx.precomputed = inputs[12:15]
    ctx.handed = False


def _backward(ctx: Any, grad: Tensor, *_: Any) -> tuple[Tensor | None, ...]:
    input, lw, target, bias, weight, sw, lse, di, dw, db = ctx.saved_tensors
    need_input, need_weight, need_target, need_bias = ctx.needs_input_grad[:4]
    rest = (None,) * 13
    if torch.is_grad_enabled():  # create_graph=True: torch's differentiable gradient
        return (*_composite_grads(ctx, grad), *rest[2:])
    args = (grad, input, lw, target, bias, weight, sw, lse, *ctx.options)
    gt = _backward_target(*args[:-1]) if need_target else None
    needed = (need_input, need_weight, need_bias and bias is not None)
    if not any(needed):
        return (None, None, gt, *rest[:-2])
    # eager (a plain tensor, not traced): the upstream value can be read
    eager = type(grad) is torch.Tensor and not torch.compiler.is_compiling()
    unit = ctx.options[1] == "none" or (eager and float(grad) == 1.0)
    # 16-bit gradients scaled after their rounding would be rounded twice:
    # unless the upstream gradient is 1, they are recomputed with it inside
    half = input.dtype in HALF_DTYPES
    kept = all(have or not need for have, need in zip(ctx.precomputed, needed))
    if kept and not ctx.handed and (unit or not half):
        # the forward's gradients; the first backward may hand them over as
        # they are (autograd then adopts them as .grad), so a later one
        # (retain_graph) must not use them again
        ctx.handed = eager
        grads = (di, dw, db)
    else:
        grads = _backward_op(*args, *needed)
    if not unit and not half:
        grads = tuple(g * grad if need else g for g, need in zip(grads, needed))
    gi, gw, gb = (g if need else None for g, need in zip(grads, needed))
    return (gi, gw, gt, gb, *rest[:-2])


def _composite_grads(ctx: Any, grad: Tensor) -> list[Tensor | None]:
    """d loss / d (input, linear_weight, target, linear_bias) through torch's
    own operations, differentiable again (double backward)."""
    input, lw, target, bias, weight, sw = ctx.saved_tensors[:6]
    ignore_index, reduction, label_smoothing, z_loss, softcap, _ = ctx.options
    logits = TORCH["linear"](input, lw, bias)
    loss = _composite.cross_entropy(
        logits, target, weight, sw, ignore_index, reduction, label_smoothing, z_loss, softcap
    )
    operands = (input, lw, target, bias)
    wanted = [t for t, need in zip(operands, ctx.needs_input_grad[:4]) if need]
    got = iter(torch.autograd.grad(loss, wanted, grad, create_graph=True))
    return [next(got) if need else None for need in ctx.needs_input_grad[:4]]


_forward.register_autograd(_backward, setup_context=_setup_context)


def linear_cross_entropy(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    *,
    linear_bias: Tensor | None = None,
    weight: Tensor | None = None,
    reduction: str = "mean",
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    options: Any = None,
    sample_weight: Tensor | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> Tensor:
    extras = sample_weight is not None or bool(z_loss) or softcap is not None
    if not _takes(input, linear_weight, target, linear_bias, weight, sample_weight, ignore_index):
        if _k_dim(input, linear_weight, target, linear_bias, ignore_index) or extras:
            # torch's reference composition: the logits, then cross_entropy
            # (ce_fast's, which takes them or hands them to torch in turn)
            logits = TORCH["linear"](input, linear_weight.flatten(0, -2), _flat(linear_bias))
            logits = logits.reshape(*input.shape[:-1], *linear_weight.shape[:-1])
            return _categorical.cross_entropy(
                logits, target, weight, ignore_index=-100 if ignore_index is None else ignore_index,
                reduction=reduction, label_smoothing=label_smoothing, sample_weight=sample_weight,
                z_loss=z_loss, softcap=softcap,
            )  # fmt: skip
        fell_through("linear_cross_entropy")
        return TORCH["linear_cross_entropy"](  # type: ignore[no-any-return]
            input, linear_weight, target, linear_bias=linear_bias, weight=weight, reduction=reduction,
            ignore_index=ignore_index, label_smoothing=label_smoothing, options=options,
        )  # fmt: skip
    grad_on = torch.is_grad_enabled() and reduction != "none"
    wanted = (
        grad_on and input.requires_grad,
        grad_on and linear_weight.requires_grad,
        grad_on and linear_bias is not None and linear_bias.requires_grad,
    )
    chunk = getattr(options, "batch_chunk_size", None) or _lean_chunk(linear_weight)
    loss: Tensor = _forward(
        input, linear_weight, target, linear_bias, weight, sample_weight,
        -100 if ignore_index is None else ignore_index, reduction, label_smoothing, z_loss,
        0.0 if softcap is None else softcap, chunk, *wanted,
    )[0]  # fmt: skip
    return loss


def _k_dim(
    input: Tensor, linear_weight: Tensor, target: Tensor, linear_bias: Tensor | None, ignore_index: int | None
) -> bool:
    """K-dimensional linear weights (C, d_1, ..., d_K, D) on an (N, D) input,
    which torch's checks accept: logits (N, C, d_1, ..., d_K)."""
    if linear_weight.dim() < 3 or input.dim() != 2 or input.shape[-1] != linear_weight.shape[-1]:
        return False
    if linear_bias is not None and linear_bias.shape != linear_weight.shape[:-1]:
        return False
    probs = tuple(target.shape) == (input.shape[0], *linear_weight.shape[:-1])
    return not (probs and ignore_index is not None)


# A chunk's logits take at most this much by default: the gradient of the
# weight matrix (C x D, which autograd must receive whole) then dominates
# the peak. Chunks of 256 rows at D = 1024, C = 32000 re-read the weight
# matrix 16 times for 4096 rows: ~8 % of the time of the matmuls.
_LEAN_CHUNK_BYTES = 32 << 20


def _lean_chunk(linear_weight: Tensor) -> int:
    """Rows per chunk unless options.batch_chunk_size says otherwise."""
    # the chunk's logits are float32 for 16-bit weights
    row = max(1, linear_weight.shape[0] * max(4, linear_weight.element_size()))
    return max(16, _LEAN_CHUNK_BYTES // row)


def _flat(bias: Tensor | None) -> Tensor | None:
    return None if bias is None else bias.flatten()


def _takes(
    input: Tensor,
    linear_weight: Tensor,
    target: Tensor,
    linear_bias: Tensor | None,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    ignore_index: int | None,
) -> bool:
    """ready() (16-bit too); a (D,) or (N, D) input, a (C, D) weight with C > 0, a (C,)
    bias; int64 class indices of the input's batch shape, or probabilities of
    the logits' shape without ignore_index (torch refuses that); no class or
    sample weights that require grad. The rest (K-dimensional weights
    included) is torch's."""
    operands = (linear_weight, linear_bias, weight, sample_weight)
    if not ready(input, *operands, half=True) or not plain_cpu(target):
        return False
    if input.dim() not in (1, 2) or linear_weight.dim() != 2 or linear_weight.shape[0] == 0:
        return False
    C, D = linear_weight.shape
    if input.shape[-1] != D or (linear_bias is not None and tuple(linear_bias.shape) != (C,)):
        return False
    batch = tuple(input.shape[:-1])
    if target.dtype == torch.int64:
        ok = tuple(target.shape) == batch
    else:
        ok = target.dtype == input.dtype and tuple(target.shape) == (*batch, C) and ignore_index is None
    return ok and not any(w is not None and w.requires_grad for w in (weight, sample_weight))
