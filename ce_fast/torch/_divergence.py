"""kl_divergence and js_divergence from the student's logits as torch custom
operators over the NumPy API's fused divergence kernel (one pass over the
student's and the teacher's rows for the loss and the student's gradient).

The gradient is with respect to the student's logits. A teacher (or a
sample weight) that requires grad is differentiated too: such a call is
computed by the torch composition of the same semantics (_composite), so
both gradients are exact -- never a silent zero, never an error."""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from .. import _divergence
from .._divergence import Reduction, TeacherIs
from .._validation import divergence_layout, divergence_options
from . import _composite
from ._bridge import empty, fell_through, maybe_view, plain_cpu, ready, scalar, threads, view
from ._fused import Fused


def _run(
    args: tuple[Any, ...], want_grad: bool, grad_output: Tensor | None = None
) -> tuple[Tensor, Tensor | None]:
    """(loss, student gradient or None) from the NumPy API's kernel; the
    gradient is for ``grad_output`` (1 when None)."""
    student, teacher, target, sample_weight, teacher_is, temperature, direction, beta, dim, ignore, red = args
    options = dict(
        teacher_is=teacher_is, temperature=temperature, direction=direction, beta=beta, axis=dim,
        sample_weight=maybe_view(sample_weight, "sample_weight"), ignore_index=ignore,
        target=maybe_view(target, "target"), reduction=red, num_threads=threads(),
    )  # fmt: skip
    # the NumPy API computes 16-bit students in float32 (its out= too): the
    # results are cast back to the student's dtype
    dt = student.dtype
    work = dt if dt in (torch.float32, torch.float64) else torch.float32
    g = g_np = None
    if want_grad:
        g, g_np = empty(student.shape, work)
    go = None if grad_output is None else view(grad_output, "grad_output")
    loss, _ = _divergence._run(
        view(student, "student"), view(teacher, "teacher"), options=options, want_grad=want_grad,
        grad_output=go, out=g_np,
    )  # fmt: skip
    g = None if g is None else g.to(dt)
    if isinstance(loss, np.ndarray):
        return torch.from_numpy(loss).to(dt), g
    return scalar(loss, dt), g


# The operators' arguments: the tensors, then the options (beta None: KL)
_ARGS = (
    "Tensor student, Tensor teacher, Tensor? target, Tensor? sample_weight, str teacher_is, "
    "float temperature, str direction, float? beta, int dim, int? ignore_index, str reduction"
)


def _forward_impl(*args: Any) -> Tensor:
    return _run(args, False)[0]


_forward = torch.library.custom_op(
    "ce_fast::divergence", _forward_impl, mutates_args=(), schema=f"({_ARGS}) -> Tensor"
)


@_forward.register_fake
def _(student: Tensor, *args: Any) -> Tensor:
    dim, reduction = args[7], args[9]
    d = dim + student.dim() if dim < 0 else dim
    shape = tuple(student.shape[:d]) + tuple(student.shape[d + 1 :])
    return student.new_empty(shape if reduction == "none" else ())


def _backward_impl(grad: Tensor, *args: Any) -> Tensor:
    """The student's gradient for the upstream gradient ``grad``."""
    g = _run(args, True, grad)[1]
    assert g is not None
    return g


_backward_op = torch.library.custom_op(
    "ce_fast::divergence_backward", _backward_impl, mutates_args=(), schema=f"(Tensor grad, {_ARGS})->Tensor"
)


@_backward_op.register_fake
def _(grad: Tensor, student: Tensor, *_: Any) -> Tensor:
    return torch.empty_like(student, memory_format=torch.contiguous_format)


def _expand(up: Tensor, args: tuple[Any, ...]) -> Tensor:
    """A per-row upstream gradient, broadcast over the class dim."""
    student, dim = args[0], args[8]
    return up.unsqueeze(dim + student.dim() if dim < 0 else dim)


_FUSED = Fused(
    run=_run, composite=_composite.divergence, n_tensors=4, expand=_expand, backward_op=_backward_op
)
_forward.register_autograd(_FUSED.backward, setup_context=_FUSED.setup_context)


class _Layout:
    """What the front door's layout check reads of a tensor it cannot view
    (another device, a 16-bit dtype): its shape and the kind of its dtype
    ("c" complex, "f" floating, "b" bool, "i" integer)."""

    def __init__(self, shape: tuple[int, ...], kind: str) -> None:
        self.shape = shape
        self.dtype = np.dtype({"c": np.complex128, "f": np.float64, "b": np.bool_, "i": np.int64}[kind])


def _kind(t: Tensor) -> str:
    return "c" if t.is_complex() else "f" if t.is_floating_point() else "b" if t.dtype == torch.bool else "i"


@torch._dynamo.assume_constant_result  # type: ignore[untyped-decorator]
def _checked(
    options: tuple[Any, ...], layouts: tuple[tuple[tuple[int, ...], str] | None, ...]
) -> tuple[float, float | None, int]:
    """The front door's checks of a call the kernel declines: (temperature,
    beta, the class axis), validated. Plain values in and out, so that
    torch.compile runs it while tracing and keeps its result as a constant."""
    teacher_is, temperature, direction, beta, dim, ignore_index, reduction = options
    opts = divergence_options(
        teacher_is=teacher_is, temperature=temperature, direction=direction, beta=beta,
        reduction=reduction, ignore_index=ignore_index, num_threads=None,
    )  # fmt: skip
    student, teacher, target = (None if lay is None else _Layout(*lay) for lay in layouts)
    lay = divergence_layout(student, teacher, target, dim, opts)
    return opts.temperature, None if beta is None else opts.beta, lay.axis


def _takes(student: Tensor, teacher: Tensor, target: Tensor | None, sample_weight: Tensor | None) -> bool:
    """Whether the kernel takes the call: ready() (the dtype gate of
    cross_entropy) for the student, the teacher and the sample weight, a
    CPU target, and only the student requiring grad."""
    if not ready(student, teacher, sample_weight) or (target is not None and not plain_cpu(target)):
        return False
    return not (teacher.requires_grad or (sample_weight is not None and sample_weight.requires_grad))


def _call(
    student: Tensor, teacher: Tensor, target: Tensor | None, sample_weight: Tensor | None, *options: Any
) -> Tensor:
    if _takes(student, teacher, target, sample_weight):
        if torch.compiler.is_compiling():
            return _forward(student, teacher, target, sample_weight, *options)  # type: ignore[no-any-return]
        if not (student.requires_grad and torch.is_grad_enabled()):
            return _forward_impl(student, teacher, target, sample_weight, *options)
        return _FUSED.eager(student, teacher, target, sample_weight, *options)
    fell_through("divergence")
    layouts = tuple(None if t is None else (tuple(t.shape), _kind(t)) for t in (student, teacher, target))
    temperature, beta, axis = _checked(options, layouts)
    teacher_is, _, direction, _, _, ignore_index, reduction = options
    return _composite.divergence(
        student, teacher, target, sample_weight, teacher_is, temperature, direction, beta, axis,
        ignore_index, reduction,
    )  # fmt: skip


def kl_divergence(
    student: Tensor,
    teacher: Tensor,
    *,
    teacher_is: TeacherIs = "logits",
    temperature: float = 1.0,
    direction: Literal["forward", "reverse"] = "forward",
    dim: int = -1,
    sample_weight: Tensor | None = None,
    ignore_index: int | None = None,
    target: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """Kullback-Leibler divergence between a teacher distribution P and
    Q = softmax(student / temperature) along ``dim``, differentiable: the
    semantics of :func:`ce_fast.kl_divergence` (``axis`` is ``dim`` here),
    with torch tensors in and out.

    P = softmax(teacher / T) (``teacher_is="logits"``), exp(teacher)
    ("log_probs") or teacher ("probs"); ``direction`` "forward" is
    KL(P || Q), "reverse" KL(Q || P), per row (no T**2 factor). "mean" is
    the sum over rows divided by their number (torch's "batchmean"), or by
    the sum of ``sample_weight`` over the rows not ignored; rows whose
    ``target`` equals ``ignore_index`` contribute nothing.

    float32 / float64 CPU tensors of one dtype go to the fused kernel: when
    the student requires grad, the forward computes the loss and its
    gradient in one pass and the backward only scales the gradient. A
    teacher or sample weight that requires grad gets its exact gradient: the
    call is then computed by the torch composition of the same semantics,
    as are other devices and dtypes (and double backward). Bad options,
    shapes and dtypes raise ce_fast's ValueError / TypeError."""
    return _call(student, teacher, target, sample_weight, teacher_is, temperature, direction, None, dim,
                 ignore_index, reduction)  # fmt: skip


def js_divergence(
    student: Tensor,
    teacher: Tensor,
    *,
    beta: float = 0.5,
    teacher_is: TeacherIs = "logits",
    temperature: float = 1.0,
    dim: int = -1,
    sample_weight: Tensor | None = None,
    ignore_index: int | None = None,
    target: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    """The generalised Jensen-Shannon divergence
    beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q,
    differentiable: the semantics of :func:`ce_fast.js_divergence` (beta 0
    is the forward KL(P || Q), beta 1 the reverse KL(Q || P)); the other
    arguments, the routing and the gradients as :func:`kl_divergence`."""
    return _call(student, teacher, target, sample_weight, teacher_is, temperature, "forward", beta, dim,
                 ignore_index, reduction)  # fmt: skip
