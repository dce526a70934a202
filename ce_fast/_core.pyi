"""Type stub for the compiled Cython module ``ce_fast._core`` (src/_core.pyx).

Internal: the public API is the Python layer in ``ce_fast``. Array arguments
are validated ndarrays (or None where a kernel argument is optional)."""

from typing import Any, TypedDict

import numpy.typing as npt

_Arr = npt.NDArray[Any]

class _BuildFacts(TypedDict):
    compiler: str
    openmp: int
    default_threads: int
    fork_safe_runtime: bool
    isa: str
    isa_compiled: list[str]
    isa_supported: list[str]

def categorical_fast(
    x: Any,
    target: Any,
    reduction: int,
    num_threads: int,
    grad_output_scalar: float,
    want_grad: bool,
    out: Any,
) -> tuple[Any, _Arr | None] | None: ...
def softmax_family_fast(op: int, x: Any, num_threads: int, out: Any) -> _Arr | None: ...
def binary_logits_fast(
    x: Any,
    target: Any,
    reduction: int,
    num_threads: int,
    grad_output_scalar: float,
    want_loss: bool,
    want_grad: bool,
    out: Any,
) -> tuple[Any, _Arr | None] | None: ...
def categorical(
    x: _Arr,
    outer: int,
    C: int,
    inner: int,
    xs: tuple[int, int, int],
    target: _Arr | None,
    q: _Arr | None,
    qs: tuple[int, int, int],
    weight: _Arr | None,
    sample_weight: _Arr | None,
    grad_output: _Arr | None,
    grad_output_scalar: float,
    ignore_index: int,
    label_smoothing: float,
    z_loss: float,
    softcap: float,
    reduction: int,
    loss_out: _Arr | None,
    grad: _Arr | None,
    num_threads: int,
) -> tuple[int, float, int, int]: ...
def binary(
    mode: int,
    x: _Arr,
    rows: int,
    cols: int,
    xs: tuple[int, int],
    t: _Arr | None,
    ts: tuple[int, int],
    w: _Arr | None,
    ws: tuple[int, int],
    pw: _Arr | None,
    pws: tuple[int, int],
    go: _Arr | None,
    gos: tuple[int, int],
    grad_output_scalar: float,
    eps: float,
    reduction: int,
    loss_out: _Arr | None,
    grad: _Arr | None,
    num_threads: int,
) -> tuple[int, float, int, int, float]: ...
def softmax_family(
    op: int,
    x: _Arr,
    outer: int,
    C: int,
    inner: int,
    xs: tuple[int, int, int],
    out: _Arr | None,
    num_threads: int,
) -> tuple[int, int, float]: ...
def vecmath(kind: int, x: _Arr, y: _Arr, num_threads: int = 1) -> None: ...
def isa() -> str: ...
def set_isa(name: str) -> bool: ...
def threads_for(requested: int, blocks: int, elements: int) -> int: ...
def serial_after_fork() -> bool: ...
def build_facts() -> _BuildFacts: ...

ERR_TARGET_INDEX: int
ERR_NOMEM: int
ERR_DOMAIN: int
