"""The loss modules: torch's own classes (same constructor, attributes and
state_dict) whose forward goes through ce_fast.torch's functions. ce_fast's
extras are keyword-only constructor arguments (z_loss, softcap) and, for
CrossEntropyLoss, a per-sample weight passed to forward."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._binary import binary_cross_entropy_with_logits
from ._categorical import cross_entropy
from ._linear import linear_cross_entropy


class CrossEntropyLoss(torch.nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss through :func:`ce_fast.torch.cross_entropy`;
    ``forward(input, target, sample_weight=None)``."""

    def __init__(self, *args: Any, z_loss: float = 0.0, softcap: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.z_loss = z_loss
        self.softcap = softcap

    def forward(self, input: Tensor, target: Tensor, sample_weight: Tensor | None = None) -> Tensor:
        return cross_entropy(
            input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
            label_smoothing=self.label_smoothing, sample_weight=sample_weight, z_loss=self.z_loss,
            softcap=self.softcap,
        )  # fmt: skip


class BCEWithLogitsLoss(torch.nn.BCEWithLogitsLoss):
    """torch.nn.BCEWithLogitsLoss through
    :func:`ce_fast.torch.binary_cross_entropy_with_logits`."""

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy_with_logits(
            input, target, self.weight, pos_weight=self.pos_weight, reduction=self.reduction
        )


class LinearCrossEntropyLoss(torch.nn.LinearCrossEntropyLoss):
    """torch.nn.LinearCrossEntropyLoss (a Linear layer and the loss, fused)
    through :func:`ce_fast.torch.linear_cross_entropy`."""

    def __init__(self, *args: Any, z_loss: float = 0.0, softcap: float | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.z_loss = z_loss
        self.softcap = softcap

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        lin = self.linear
        weight = lin.weight.reshape(self.num_classes, *self.out_features, lin.in_features)
        bias = None if lin.bias is None else lin.bias.reshape(self.num_classes, *self.out_features)
        return linear_cross_entropy(
            input, weight, target, linear_bias=bias, weight=self.weight, reduction=self.reduction,
            ignore_index=self.ignore_index, label_smoothing=self.label_smoothing, options=self.options,
            z_loss=self.z_loss, softcap=self.softcap,
        )  # fmt: skip
