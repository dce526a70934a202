"""cross_entropy as torch custom operators: the forward stores the loss and
the per-sample log-sum-exp into tensors allocated here; the backward is one
kernel call that reads the logits once (the gradient from the saved lse)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _categorical, _core
from .._categorical import plain_kernel
from .._core import ce_reduction
from .._validation import REDUCTIONS
from . import _composite
from ._bridge import (
    HALF_DTYPES,
    TORCH,
    empty,
    fell_through,
    maybe_view,
    plain_cpu,
    ready,
    scalar,
    threads,
    view,
)

_NONE = ce_reduction.CE_RED_NONE


def _prepare(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> _categorical.Prepared:
    """torch's layout (classes on dim 1, or dim 0 of unbatched input) as
    ce_fast's call."""
    return _categorical.prepare(
        view(input, "input"), view(target, "target"), axis=1 if input.dim() > 1 else 0,
        weight=maybe_view(weight, "weight"), sample_weight=maybe_view(sample_weight, "sample_weight"),
        ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing, z_loss=z_loss,
        softcap=softcap or None, num_threads=threads(),
    )  # fmt: skip


def _sample_shape(input: Tensor) -> tuple[int, ...]:
    return (input.shape[0], *input.shape[2:]) if input.dim() > 1 else ()


def _plain(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> ce_reduction | None:
    """The common call (a contiguous (N, C) input, contiguous int64 labels,
    no options) as its reduction code, for the kernel without the parsers;
    None otherwise (and for a bad reduction, which the parser reports)."""
    if weight is not None or sample_weight is not None or label_smoothing or z_loss or softcap:
        return None
    if ignore_index != -100 or input.dim() != 2 or target.dim() != 1 or target.dtype != torch.int64:
        return None
    if not (input.is_contiguous() and target.is_contiguous()) or input.is_neg():
        return None
    if input.dtype not in _COMMON_DTYPES:  # 16-bit: through the parsers
        return None
    return REDUCTIONS.get(reduction)


def _losses(input: Tensor, shape: Any) -> tuple[Tensor, np.ndarray]:
    """A tensor for per-sample losses: the kernels write float32 ones for
    16-bit logits (cast to the input's dtype, as torch returns them, by
    _as_input_dtype)."""
    return empty(shape, torch.float32 if input.dtype in HALF_DTYPES else input.dtype)


def _as_input_dtype(loss: Tensor, input: Tensor) -> Tensor:
    return loss.to(input.dtype)  # the same tensor, no copy, unless 16-bit


def _forward_impl(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> tuple[Tensor, Tensor]:
    """(loss, lse): the loss and the per-sample log-sum-exp (float64)."""
    red = _plain(
        input, target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss, softcap
    )
    if red is not None:
        x, y, nt = input.detach().numpy(), target.numpy(), threads()
        lse, lse_np = empty(input.shape[:1], torch.float64)
        if red != _NONE:
            return scalar(plain_kernel(x, y, red, nt, lse_out=lse_np), input.dtype), lse
        loss, loss_np = empty(input.shape[:1], input.dtype)
        plain_kernel(x, y, red, nt, loss_out=loss_np, lse_out=lse_np)
        return loss, lse
    call = _prepare(input, target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss,
                    softcap)  # fmt: skip
    lse, lse_np = empty(call.layout.sample_shape, torch.float64)
    if call.opts.reduction == _NONE:
        loss, loss_np = _losses(input, call.layout.sample_shape)
        call.forward(loss_out=loss_np, lse_out=lse_np)
        return _as_input_dtype(loss, input), lse
    return scalar(call.forward(lse_out=lse_np), input.dtype), lse


_forward = torch.library.custom_op("ce_fast::cross_entropy", _forward_impl, mutates_args=())


def _forward_fused(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss, lse, gradient for an upstream gradient of 1): the forward and
    the backward's work in one pass over the logits (the fused kernel)."""
    g, g_np = empty(input.shape, input.dtype)
    red = _plain(
        input, target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss, softcap
    )
    if red is not None:
        x, y, nt = input.detach().numpy(), target.numpy(), threads()
        lse, lse_np = empty(input.shape[:1], torch.float64)
        if red != _NONE:
            loss = plain_kernel(x, y, red, nt, lse_out=lse_np, grad=g_np)
            return scalar(loss, input.dtype), lse, g
        loss_t, loss_np = empty(input.shape[:1], input.dtype)
        plain_kernel(x, y, red, nt, loss_out=loss_np, lse_out=lse_np, grad=g_np)
        return loss_t, lse, g
    call = _prepare(input, target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss,
                    softcap)  # fmt: skip
    lse, lse_np = empty(call.layout.sample_shape, torch.float64)
    loss_np = call.backward(g_np, 1.0, lse_out=lse_np)
    if call.opts.reduction == _NONE:
        return _as_input_dtype(torch.from_numpy(loss_np), input), lse, g
    return scalar(loss_np, input.dtype), lse, g


@_forward.register_fake
def _(input: Tensor, target: Tensor, weight: Any, sample_weight: Any, ignore_index: int, reduction: str,
      *_: Any) -> tuple[Tensor, Tensor]:  # fmt: skip
    shape = _sample_shape(input)
    loss = input.new_empty(shape if reduction == "none" else ())
    return loss, input.new_empty(shape, dtype=torch.float64)


def _backward_input_impl(
    grad: Tensor,
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    lse: Tensor,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tensor:
    """The gradient with respect to the logits, from the saved lse."""
    g, g_np = empty(input.shape, input.dtype)
    red = _plain(
        input, target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss, softcap
    )
    if red is not None:
        go = grad.detach().numpy()
        x, y, nt, lse_np = input.detach().numpy(), target.numpy(), threads(), lse.numpy()
        if red == _NONE:
            go = np.ascontiguousarray(go)  # autograd's upstream of a sum is a stride-0 view
            plain_kernel(x, y, red, nt, grad=g_np, lse=lse_np, grad_output=go)
        else:
            plain_kernel(x, y, red, nt, grad=g_np, lse=lse_np, grad_output_scalar=float(go))
        return g
    call = _prepare(input, target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss,
                    softcap)  # fmt: skip
    up = grad.float() if grad.dtype in HALF_DTYPES else grad  # kernels take a float32 upstream
    call.backward(g_np, view(up, "grad_output"), lse=view(lse, "lse"))
    return g


_backward_input = torch.library.custom_op(
    "ce_fast::cross_entropy_backward", _backward_input_impl, mutates_args=()
)


@_backward_input.register_fake
def _(grad: Tensor, input: Tensor, *_: Any) -> Tensor:
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@torch.library.custom_op("ce_fast::cross_entropy_backward_target", mutates_args=())
def _backward_target(
    grad: Tensor,
    input: Tensor,
    target: Tensor,
    weight: Tensor | None,
    sample_weight: Tensor | None,
    lse: Tensor,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> Tensor:
    """The gradient with respect to probability targets (soft labels that
    require grad, e.g. a teacher's), ``-scale_i (1 - eps) w_c log p_c``,
    from the saved lse: a rare path, in NumPy."""
    call = _prepare(input, target, weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss,
                    softcap)  # fmt: skip
    g, g_np = empty(input.shape, input.dtype)
    g_np[...] = _target_grad(call, view(grad, "grad_output"), view(lse, "lse"))
    return g


@_backward_target.register_fake
def _(grad: Tensor, input: Tensor, *_: Any) -> Tensor:
    return torch.empty_like(input, memory_format=torch.contiguous_format)


def _target_grad(call: _categorical.Prepared, grad_output: Any, lse: Any) -> np.ndarray:
    lay, opts = call.layout, call.opts
    ax = lay.axis
    z = call.x.astype(np.float64)
    if opts.softcap > 0:
        z = opts.softcap * np.tanh(z / opts.softcap)
    logp = z - np.expand_dims(lse, ax)
    scale: np.ndarray = np.broadcast_to(np.asarray(grad_output, np.float64), lay.sample_shape)
    if call.sample_weight is not None:
        scale = scale * call.sample_weight
    if opts.reduction == ce_reduction.CE_RED_MEAN:
        n = int(np.prod(lay.sample_shape))
        scale = scale / opts.mean_denominator(n, sample_weight=call.sample_weight)
    coef: np.ndarray = np.full(lay.C, 1.0 - opts.label_smoothing)
    if call.weight is not None:
        coef = coef * call.weight
    coef = coef.reshape((lay.C,) + (1,) * (len(lay.shape) - ax - 1))
    return np.asarray(-(np.expand_dims(scale, ax) * coef * logp))


def _setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
    input, target, weight, sample_weight = inputs[:4]
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(input, target, weight, sample_weight, output[1])
    ctx.options = inputs[4:]


def _backward(ctx: Any, grad: Tensor, _grad_lse: Any) -> tuple[Tensor | None, ...]:
    input, target, weight, sample_weight, lse = ctx.saved_tensors
    nones = (None,) * 7
    if torch.is_grad_enabled():
        # create_graph=True: a gradient that is itself differentiable, from
        # torch's own operations (the kernels' gradient has no gradient)
        wanted = [t for t, need in zip((input, target), ctx.needs_input_grad[:2]) if need]
        loss = _composite.cross_entropy(input, target, weight, sample_weight, *ctx.options)
        got = iter(torch.autograd.grad(loss, wanted, grad, create_graph=True))
        return (*(next(got) if need else None for need in ctx.needs_input_grad[:2]), *nones)
    args = (grad, input, target, weight, sample_weight, lse, *ctx.options)
    # eager: the kernel's function itself (the operator adds a dispatch)
    eager = type(grad) is torch.Tensor and not torch.compiler.is_compiling()
    backward_input = _backward_input_impl if eager else _backward_input
    gi = backward_input(*args) if ctx.needs_input_grad[0] else None
    gt = _backward_target(*args) if ctx.needs_input_grad[1] else None
    return (gi, gt, *nones)


_forward.register_autograd(_backward, setup_context=_setup_context)


class _Eager(torch.autograd.Function):
    """The operator's semantics without the operator's dispatch (a few
    microseconds a call: small calls are dominated by it). Eager calls take
    this; torch.compile traces the operator. (forward takes ctx: with a
    separate setup_context, apply() binds the arguments through
    inspect.signature on every call.)

    When the logits' gradient will be wanted, the forward runs the fused
    kernel: the loss and the gradient for an upstream gradient of 1 in one
    pass over the logits, the gradient kept (as torch keeps log_softmax) for
    the backward, which only scales it by the upstream gradient -- unless it
    is 1 -- and hands it over without a copy. That is one read of the logits
    where the operator's forward + backward make two (and two exps per
    element). A second backward through a retained graph runs the same
    fused kernel again, so it gives the same bits."""

    @staticmethod
    def forward(ctx: Any, *args: Any) -> tuple[Tensor, Tensor]:
        ctx.fused = ctx.needs_input_grad[0] and not ctx.needs_input_grad[1]
        if ctx.fused:
            loss, lse, ctx.grad = _forward_fused(*args)
            out = (loss, lse)
        else:
            out = _forward_impl(*args)
        _setup_context(ctx, args, out)
        return out

    @staticmethod
    def backward(ctx: Any, *grads: Any) -> tuple[Tensor | None, ...]:
        up = grads[0]
        # a 16-bit gradient scaled after its rounding would be rounded twice:
        # unless the upstream gradient is 1, the kernel scales before it rounds
        rescaled16 = ctx.saved_tensors[0].dtype in HALF_DTYPES and not (up.dim() == 0 and float(up) == 1.0)
        if not ctx.fused or torch.is_grad_enabled() or rescaled16:
            if rescaled16:
                ctx.grad = None  # not used: free it now
            return _backward(ctx, *grads)
        g = ctx.grad
        ctx.grad = None  # handed over: autograd may adopt it as .grad without a copy
        input, target, weight, sample_weight = ctx.saved_tensors[:4]
        if g is None:  # a retained graph's second backward
            g = _forward_fused(input, target, weight, sample_weight, *ctx.options)[2]
        if up.dim() == 0:
            if float(up) != 1.0:
                g.mul_(up)
        else:  # "none": one upstream value per sample, broadcast over the class dim
            g.mul_(up.unsqueeze(1) if input.dim() > 1 else up)
        return (g, *(None,) * 8)


class _Common(torch.autograd.Function):
    """The common call that needs the logits' gradient, kept as lean as the
    autograd machinery allows: the fused kernel ran before apply() (it
    declines what it does not take); the forward only wraps its loss, and the
    backward hands over (or scales) its gradient, as _Eager does."""

    @staticmethod
    def forward(ctx: Any, input: Tensor, loss: Tensor, grad: np.ndarray, target: Tensor, red: Any) -> Tensor:
        ctx.grad, ctx.target, ctx.red = grad, target, red
        ctx.save_for_backward(input)
        return loss

    @staticmethod
    def backward(ctx: Any, up: Tensor) -> tuple[Tensor | None, ...]:
        g = ctx.grad
        ctx.grad = None  # handed over: autograd may adopt it as .grad without a copy
        if g is None:  # a retained graph's second backward: the same kernel again
            (input,) = ctx.saved_tensors
            g = _common_kernel(input, ctx.target, ctx.red, True)[1]  # type: ignore[index]
        t = torch.from_numpy(g)
        if torch.is_grad_enabled():  # create_graph: torch's own, differentiable
            return _backward_common_graph(ctx, up)
        if up.dim() == 0:
            if float(up) != 1.0:
                t.mul_(up)
        else:
            t.mul_(up.unsqueeze(1))
        return (t, None, None, None, None)


def _backward_common_graph(ctx: Any, up: Tensor) -> tuple[Tensor | None, ...]:
    (input,) = ctx.saved_tensors
    loss = _composite.cross_entropy(input, ctx.target, None, None, -100, _NAMES[ctx.red], 0.0, 0.0, 0.0)
    return (torch.autograd.grad(loss, input, up, create_graph=True)[0], None, None, None, None)


_NAMES = {code: name for name, code in REDUCTIONS.items()}
_COMMON_DTYPES = (torch.float32, torch.float64)


def _common_kernel(input: Tensor, target: Tensor, red: Any, want_grad: bool) -> tuple[Any, Any] | None:
    """(loss, gradient or None) of the common call from the NumPy API's C fast
    path (the same bits as the general path), or None where it declines."""
    return _core.categorical_fast(
        input.detach().numpy(), target.numpy(), red, threads(), 1.0, want_grad, None
    )


def _common(input: Tensor, target: Tensor, reduction: str) -> Tensor | None:
    """cross_entropy's common call -- a contiguous (N, C) float32/float64 CPU
    input, int64 labels, no options -- with the least glue (small calls are
    dominated by it); None for anything else."""
    red = REDUCTIONS.get(reduction)
    if (
        red is None
        or type(input) is not torch.Tensor
        or type(target) is not torch.Tensor
        or input.dtype not in _COMMON_DTYPES
        or target.dtype != torch.int64
        or not input.is_cpu
        or not target.is_cpu
        or input.is_neg()
        or target.requires_grad
        or torch.compiler.is_compiling()
    ):
        return None
    want_grad = input.requires_grad and torch.is_grad_enabled()
    r = _common_kernel(input, target, red, want_grad)
    if r is None:
        return None
    loss = torch.from_numpy(r[0]) if red == _NONE else torch.scalar_tensor(float(r[0]), dtype=input.dtype)
    if not want_grad:
        return loss
    return _Common.apply(input, loss, r[1], target, red)  # type: ignore[no-any-return, no-untyped-call]


def cross_entropy(
    input: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    size_average: bool | None = None,
    ignore_index: int = -100,
    reduce: bool | None = None,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
    *,
    sample_weight: Tensor | None = None,
    z_loss: float = 0.0,
    softcap: float | None = None,
) -> Tensor:
    if (
        weight is None
        and sample_weight is None
        and ignore_index == -100
        and not label_smoothing
        and not z_loss
        and softcap is None
        and size_average is None
        and reduce is None
    ):
        common = _common(input, target, reduction)
        if common is not None:
            return common
    if size_average is not None or reduce is not None:
        fell_through("cross_entropy")
        # the deprecated pair: torch's own, which has no extras
        if sample_weight is not None or z_loss or softcap is not None:
            raise TypeError("sample_weight, z_loss and softcap cannot be combined with size_average/reduce")
        return TORCH["cross_entropy"](  # type: ignore[no-any-return]
            input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing
        )
    cap = 0.0 if softcap is None else softcap
    args = (weight, sample_weight, ignore_index, reduction, label_smoothing, z_loss, cap)
    if not _takes(input, target, weight, sample_weight):
        fell_through("cross_entropy")
        return _composite.cross_entropy(input, target, *args)
    if torch.compiler.is_compiling():
        return _forward(input, target, *args)[0]  # type: ignore[no-any-return]
    return _Eager.apply(input, target, *args)[0]  # type: ignore[no-any-return, no-untyped-call]


def _takes(input: Tensor, target: Tensor, weight: Tensor | None, sample_weight: Tensor | None) -> bool:
    """Whether the kernels take the call (see ready()): also int64 class
    indices or probabilities of the input's dtype; not class or sample
    weights that require grad (the composite differentiates them, or torch
    says it cannot); not a 0-d input or an empty class axis (torch's errors
    and empty results)."""
    if not ready(input, weight, sample_weight, half=True) or not plain_cpu(target):
        return False
    if target.dtype != torch.int64 and target.dtype != input.dtype:
        return False
    if any(w is not None and w.requires_grad for w in (weight, sample_weight)):
        return False
    return input.dim() > 0 and input.shape[1 if input.dim() > 1 else 0] > 0
