"""log_softmax, softmax and logsumexp as torch custom operators. The
forwards are ce_fast's kernels writing into tensors allocated here; the
backwards of log_softmax and softmax are torch's own fused kernels on the
saved result (one call each, differentiable again), logsumexp's is the
softmax kernel scaled by the upstream gradient."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .. import _softmax
from .._core import ce_sm_op
from ._bridge import HALF_DTYPES, TORCH, TORCH_LOGSUMEXP, empty, fell_through, ready, rounded, threads, view

_LOG_SOFTMAX, _SOFTMAX, _LSE = ce_sm_op.CE_SM_LOG_SOFTMAX, ce_sm_op.CE_SM_SOFTMAX, ce_sm_op.CE_SM_LOGSUMEXP


def _rowwise(op: ce_sm_op, input: Tensor, dim: int) -> Tensor:
    out, out_np = empty(input.shape, input.dtype)
    _softmax._run(op, view(input, "input"), dim, threads(), out_np)
    return out


@torch.library.custom_op("ce_fast::log_softmax", mutates_args=())
def _log_softmax(input: Tensor, dim: int) -> Tensor:
    return _rowwise(_LOG_SOFTMAX, input, dim)


@torch.library.custom_op("ce_fast::softmax", mutates_args=())
def _softmax_op(input: Tensor, dim: int) -> Tensor:
    return _rowwise(_SOFTMAX, input, dim)


@_log_softmax.register_fake
def _(input: Tensor, dim: int) -> Tensor:
    return torch.empty_like(input, memory_format=torch.contiguous_format)


@_softmax_op.register_fake
def _(input: Tensor, dim: int) -> Tensor:
    return torch.empty_like(input, memory_format=torch.contiguous_format)


def _save_result(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    ctx.save_for_backward(output)
    ctx.dim = inputs[1]
    ctx.dtype = inputs[0].dtype


def _log_softmax_backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
    (out,) = ctx.saved_tensors
    return torch.ops.aten._log_softmax_backward_data(grad, out, ctx.dim, ctx.dtype), None


def _softmax_backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
    (out,) = ctx.saved_tensors
    return torch.ops.aten._softmax_backward_data(grad, out, ctx.dim, ctx.dtype), None


_log_softmax.register_autograd(_log_softmax_backward, setup_context=_save_result)
_softmax_op.register_autograd(_softmax_backward, setup_context=_save_result)


@torch.library.custom_op("ce_fast::logsumexp", mutates_args=())
def _logsumexp(input: Tensor, dim: int) -> Tensor:
    """The log-sum-exp over ``dim`` (removed from the shape); 16-bit input is
    reduced in float32 and the result rounded to its dtype."""
    shape = input.shape[:dim] + input.shape[dim + 1 :]
    if input.dtype in HALF_DTYPES:
        lse = np.empty([int(n) for n in shape], np.float32)
        _softmax._run(_LSE, view(input, "input"), dim, threads(), lse)
        return rounded(lse, input.dtype)
    out, out_np = empty(shape, input.dtype)
    _softmax._run(_LSE, view(input, "input"), dim, threads(), out_np)
    return out


@_logsumexp.register_fake
def _(input: Tensor, dim: int) -> Tensor:
    return input.new_empty(input.shape[:dim] + input.shape[dim + 1 :])


@torch.library.custom_op("ce_fast::logsumexp_backward", mutates_args=())
def _logsumexp_backward_op(grad: Tensor, input: Tensor, dim: int) -> Tensor:
    """softmax(input) along dim times the upstream gradient (for 16-bit
    input, both in float32 and the product rounded once)."""
    half = input.dtype in HALF_DTYPES
    g, g_np = (None, np.empty(tuple(input.shape), np.float32)) if half else empty(input.shape, input.dtype)
    _softmax._run(_SOFTMAX, view(input, "input"), dim, threads(), g_np)
    g_np *= np.expand_dims(view(grad, "grad_output"), dim).astype(g_np.dtype, copy=False)
    return rounded(g_np, input.dtype) if g is None else g


@_logsumexp_backward_op.register_fake
def _(grad: Tensor, input: Tensor, dim: int) -> Tensor:
    return torch.empty_like(input, memory_format=torch.contiguous_format)


def _logsumexp_setup(ctx: Any, inputs: tuple[Any, ...], output: Tensor) -> None:
    ctx.save_for_backward(inputs[0], output)
    ctx.dim = inputs[1]


def _logsumexp_backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
    input, out = ctx.saved_tensors
    if torch.is_grad_enabled():  # create_graph=True: torch's differentiable form
        return grad.unsqueeze(ctx.dim) * torch.exp(input - out.unsqueeze(ctx.dim)), None
    return _logsumexp_backward_op(grad, input, ctx.dim), None


_logsumexp.register_autograd(_logsumexp_backward, setup_context=_logsumexp_setup)


def _takes(input: Tensor, dims: Sequence[Any], half: bool = False) -> bool:
    """ready() (with ``half``, 16-bit too: softmax, log_softmax and
    logsumexp come back in the input's dtype, as torch's), at least 1-d, non-empty, and one or
    more distinct dims in range (several are moved last and flattened: a
    view when they are adjacent and contiguous)."""
    nd = input.dim()
    if not ready(input, half=half) or nd == 0 or input.numel() == 0 or not dims:
        return False
    if not all(isinstance(d, int) and -nd <= d < nd for d in dims):
        return False
    return len({_dim(d, nd) for d in dims}) == len(dims)


def _dim(dim: int, ndim: int) -> int:
    return dim + ndim if dim < 0 else dim


def log_softmax(
    input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: torch.dtype | None = None
) -> Tensor:
    x = input if dtype is None else input.to(dtype)
    if not _takes(x, (dim,), half=True):
        fell_through("log_softmax")
        return TORCH["log_softmax"](input, dim, _stacklevel, dtype)  # type: ignore[no-any-return]
    return _log_softmax(x, _dim(dim, x.dim()))  # type: ignore[no-any-return, arg-type]


def softmax(
    input: Tensor, dim: int | None = None, _stacklevel: int = 3, dtype: torch.dtype | None = None
) -> Tensor:
    x = input if dtype is None else input.to(dtype)
    if not _takes(x, (dim,), half=True):
        fell_through("softmax")
        return TORCH["softmax"](input, dim, _stacklevel, dtype)  # type: ignore[no-any-return]
    return _softmax_op(x, _dim(dim, x.dim()))  # type: ignore[no-any-return, arg-type]


def logsumexp(input: Tensor, dim: int | Sequence[int], keepdim: bool = False) -> Tensor:
    dims = (dim,) if isinstance(dim, int) else tuple(dim)
    if not _takes(input, dims, half=True):
        fell_through("logsumexp")
        return TORCH_LOGSUMEXP(input, dim, keepdim)  # type: ignore[arg-type]
    nd = input.dim()
    axes = sorted(_dim(d, nd) for d in dims)
    x = input
    if len(axes) > 1:
        rest = [d for d in range(nd) if d not in axes]
        x = input.permute(*rest, *axes).reshape(*(input.shape[d] for d in rest), -1)
    out: Tensor = _logsumexp(x, axes[0] if len(axes) == 1 else x.dim() - 1)
    if keepdim:
        for d in axes:
            out = out.unsqueeze(d)
    return out
