"""ce_fast's categorical semantics in torch's own differentiable operations:
what a call takes where the CPU kernels cannot (another device, a 16-bit or
complex dtype) and what double backward differentiates. Without ce_fast's
extras it is torch's cross_entropy itself."""

from __future__ import annotations

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
