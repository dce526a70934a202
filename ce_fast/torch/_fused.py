"""The autograd glue of a loss whose kernel gives the loss and the gradient
with respect to its first operand in one pass (kl_div, kl_divergence,
js_divergence): the operator's backward, and an eager twin without the
operator's dispatch whose forward runs the fused kernel."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

# run(args, want_grad, grad_output) -> (loss, gradient or None): the kernel on
# the operator's arguments (tensors first); the gradient is for grad_output
# (1 when None)
Run = Callable[[tuple[Any, ...], bool, "Tensor | None"], tuple[Tensor, "Tensor | None"]]


@dataclass(frozen=True)
class Fused:
    run: Run
    composite: Callable[..., Tensor]  # the same loss in torch's differentiable operations
    n_tensors: int  # the operator's tensor arguments, then its options
    # the upstream gradient of a "none" loss, shaped to broadcast over the gradient
    expand: Callable[[Tensor, tuple[Any, ...]], Tensor]
    backward_op: Callable[..., Tensor]  # (grad, *args) -> gradient: the operator

    def setup_context(self, ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
        ctx.save_for_backward(*inputs[: self.n_tensors])
        ctx.options = inputs[self.n_tensors :]

    def _nones(self, ctx: Any) -> tuple[None, ...]:
        return (None,) * (self.n_tensors - 1 + len(ctx.options))

    def graph_backward(self, ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        """create_graph=True: a gradient that is itself differentiable, from
        torch's operations (the kernel's gradient has no gradient)."""
        first = ctx.saved_tensors[0]
        loss = self.composite(*ctx.saved_tensors, *ctx.options)
        return (torch.autograd.grad(loss, first, grad, create_graph=True)[0], *self._nones(ctx))

    def backward(self, ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        """The operator's backward (register_autograd)."""
        if torch.is_grad_enabled():
            return self.graph_backward(ctx, grad)
        args = (*ctx.saved_tensors, *ctx.options)
        if type(grad) is torch.Tensor and not torch.compiler.is_compiling():
            g = self.run(args, True, grad)[1]  # eager: the kernel itself (the operator adds a dispatch)
        else:
            g = self.backward_op(grad, *args)
        return (g, *self._nones(ctx))

    def eager(self, *args: Any) -> Tensor:
        """The operator's semantics for an eager call whose first operand
        requires grad: the forward runs the fused kernel and keeps the
        gradient for an upstream gradient of 1; the backward scales it (unless
        the upstream gradient is 1) and hands it over without a copy. A second
        backward through a retained graph runs the kernel again."""
        return _Eager.apply(self, *args)  # type: ignore[no-any-return, no-untyped-call]


class _Eager(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, fused: Fused, *args: Any) -> Tensor:
        ctx.fused = fused
        loss, ctx.grad = fused.run(args, True, None)
        fused.setup_context(ctx, args, loss)
        return loss

    @staticmethod
    def backward(ctx: Any, up: Tensor) -> tuple[Tensor | None, ...]:
        fused: Fused = ctx.fused
        if torch.is_grad_enabled():
            return (None, *fused.graph_backward(ctx, up))
        g = ctx.grad
        ctx.grad = None  # handed over: autograd may adopt it as .grad without a copy
        args = (*ctx.saved_tensors, *ctx.options)
        if g is None:  # a retained graph's second backward
            g = fused.run(args, True, None)[1]
        if up.dim() == 0:
            if float(up) != 1.0:
                g.mul_(up)
        else:  # "none": one upstream value per loss element
            g.mul_(fused.expand(up, args))
        return (None, g, *fused._nones(ctx))
