"""Tensors in and out of the kernels without a copy, and the routing rule:
which calls ce_fast's CPU kernels take, and which go to torch's own
implementation (saved here before ``patch()`` can replace it)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import BFLOAT16, as_array

# torch's own functions, kept before patch() swaps F's attributes: every
# fall-through calls these, never F.<name> (which may be ce_fast's).
TORCH = {
    name: getattr(F, name)
    for name in (
        "cross_entropy",
        "binary_cross_entropy_with_logits",
        "binary_cross_entropy",
        "log_softmax",
        "softmax",
        "linear_cross_entropy",
        "linear",
        "kl_div",
    )
}
TORCH_LOGSUMEXP = torch.logsumexp

# calls each front end left to torch (or to the torch composite): tests read
# this to prove which samples the kernels took
FALLBACKS: Counter[str] = Counter()


def fell_through(name: str) -> None:
    FALLBACKS[name] += 1


_KERNEL_DTYPES = (torch.float32, torch.float64)
# the 16-bit dtypes whose kernels a front end may opt into (half=True): the
# categorical, softmax-family and binary kernels have them; bfloat16 results need
# ml_dtypes to be NumPy arrays of their own dtype
HALF_DTYPES = (torch.float16, torch.bfloat16) if not BFLOAT16.metadata else (torch.float16,)


def ready(input: torch.Tensor, *others: torch.Tensor | None, half: bool = False) -> bool:
    """Whether the CPU kernels take these operands: every tensor a plain CPU
    tensor, ``input`` float32 or float64 (or, with ``half``, float16 or
    bfloat16) and every other one of its dtype. Anything else (CUDA and
    other devices, complex dtypes, mixed dtypes, which torch promotes or
    refuses, tensor subclasses) is torch's to handle."""
    if not plain_cpu(input) or not (input.dtype in _KERNEL_DTYPES or (half and input.dtype in HALF_DTYPES)):
        return False
    return all(t is None or (plain_cpu(t) and t.dtype == input.dtype) for t in others)


def plain_cpu(t: Any) -> bool:
    return (type(t) is torch.Tensor or type(t) is torch.nn.Parameter) and t.device.type == "cpu"


def threads() -> int:
    """torch's intra-op thread count (torch.set_num_threads), which the
    kernels use too."""
    return max(1, torch.get_num_threads())


def view(t: torch.Tensor, name: str) -> np.ndarray:
    """A CPU tensor's memory as an ndarray (shared, whatever its strides)."""
    return as_array(t, name)


def maybe_view(t: torch.Tensor | None, name: str) -> np.ndarray | None:
    return None if t is None else as_array(t, name)


_NUMPY_DTYPES: dict[torch.dtype, np.dtype[Any]] = {
    torch.float16: np.dtype(np.float16),
    torch.float32: np.dtype(np.float32),
    torch.float64: np.dtype(np.float64),
}


def empty(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> tuple[torch.Tensor, np.ndarray]:
    """A new tensor and the ndarray that shares its memory, for a kernel to
    write into. The memory is NumPy's, adopted by torch without a copy
    (torch.from_numpy): NumPy asks the kernel for transparent huge pages for
    large arrays and torch's CPU allocator does not, and first touching a
    fresh N x C gradient costs ~3x more in 4 KiB pages (65 MB: 36 ms against
    12 ms for the whole fused kernel, measured on our 2-vCPU machine)."""
    if dtype == torch.bfloat16:  # torch.from_numpy takes no bfloat16: its bits, viewed
        bits = np.empty([int(n) for n in shape], np.uint16)
        return torch.from_numpy(bits).view(dtype), bits.view(BFLOAT16)
    a: np.ndarray = np.empty([int(n) for n in shape], _NUMPY_DTYPES[dtype])
    return torch.from_numpy(a), a


def rounded(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """A float32 result of 16-bit input as a tensor of the input's dtype
    (rounded once, to nearest even, as torch rounds its float32 accumulations)."""
    return torch.from_numpy(a).to(dtype)


def scalar(value: Any, dtype: torch.dtype) -> torch.Tensor:
    """A 0-d tensor holding a reduced loss."""
    return torch.tensor(float(value), dtype=dtype)


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)
