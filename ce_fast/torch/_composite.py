"""ce_fast's categorical and divergence semantics in torch's own
differentiable operations: what a call takes where the CPU kernels cannot
(another device, a 16-bit or complex dtype, operands whose gradient the
kernels do not give) and what double backward differentiates. Without
ce_fast's extras, cross_entropy is torch's cross_entropy itself."""

from __future__ import annotations

import math

import torch

from ._bridge import TORCH, TORCH_LOGSUMEXP


def cross_entropy(
    input: torch.Tensor,
    target: torch.Tensor,
    weight: torch.Tensor | None,
    sample_weight: torch.Tensor | None,
    ignore_index: int,
    reduction: str,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
) -> torch.Tensor:
    """``ce_fast.torch.cross_entropy`` (softcap 0: off) in torch's ops."""
    x = softcap * torch.tanh(input / softcap) if softcap else input
    kw = dict(weight=weight, ignore_index=ignore_index, label_smoothing=label_smoothing)
    if sample_weight is None and not z_loss:
        return TORCH["cross_entropy"](x, target, reduction=reduction, **kw)  # type: ignore[no-any-return]
    per: torch.Tensor = TORCH["cross_entropy"](x, target, reduction="none", **kw)
    if target.is_floating_point():
        wy = torch.ones_like(per)
    else:
        keep = target != ignore_index
        wy = keep.to(per.dtype)
        if weight is not None:
            wy = wy * weight[torch.where(keep, target, 0)]
    if z_loss:
        lse = TORCH_LOGSUMEXP(x, 1 if x.dim() > 1 else 0)
        per = per + z_loss * wy * lse * lse
    if sample_weight is not None:
        sw = sample_weight.expand_as(per)
        per = per * sw
        wy = wy * sw
    if reduction == "none":
        return per
    total: torch.Tensor = per.sum()
    return total if reduction == "sum" else total / wy.sum()


def divergence(
    student: torch.Tensor,
    teacher: torch.Tensor,
    target: torch.Tensor | None,
    sample_weight: torch.Tensor | None,
    teacher_is: str,
    temperature: float,
    direction: str,
    beta: float | None,
    dim: int,
    ignore_index: int | None,
    reduction: str,
) -> torch.Tensor:
    """``ce_fast.torch.kl_divergence`` (beta None) / ``js_divergence`` in
    torch's ops, on validated options: differentiable in every tensor
    (twice), so it also gives the teacher's gradient. It does not clamp
    (the kernels clamp what rounding takes below the lower bound)."""
    log_q = TORCH["log_softmax"](student / temperature, dim)
    if teacher_is == "logits":
        log_p = TORCH["log_softmax"](teacher / temperature, dim)
    else:
        log_p = teacher if teacher_is == "log_probs" else torch.log(teacher)
    p = teacher if teacher_is == "probs" else torch.exp(log_p)
    if beta is not None and 0.0 < beta < 1.0:
        log_m = torch.logaddexp(log_p + math.log(beta), log_q + math.log1p(-beta))
        q = torch.exp(log_q)
        per = beta * _relative(p, log_p, log_m, dim) + (1.0 - beta) * _relative(q, log_q, log_m, dim)
    elif (beta is None and direction == "forward") or beta == 0.0:
        per = _relative(p, log_p, log_q, dim)
    else:
        per = _relative(torch.exp(log_q), log_q, log_p, dim)
    weight = torch.ones_like(per)
    if ignore_index is not None and target is not None:
        keep = target != ignore_index
        per = torch.where(keep, per, 0.0)
        weight = keep.to(per.dtype)
    if sample_weight is not None:
        sw = sample_weight.expand_as(per)
        per, weight = per * sw, weight * sw
    if reduction == "none":
        return per
    total = per.sum()
    return total if reduction == "sum" else total / weight.sum()


def _relative(a: torch.Tensor, log_a: torch.Tensor, log_b: torch.Tensor, dim: int) -> torch.Tensor:
    """sum over dim of a (log a - log b), 0 where a is 0 (also where log b
    is -inf there), with finite gradients at those classes."""
    pos = a > 0
    terms = a * (torch.where(pos, log_a, 0.0) - torch.where(pos, log_b, 0.0))
    return terms.sum(dim)
