"""Type stub for the compiled Cython module ``ce_fast._core`` (src/_core.pyx,
src/_core.pxd).

Internal: the public API is the Python layer in ``ce_fast``. Array arguments
are validated ndarrays (or None where a kernel argument is optional)."""

from enum import IntEnum
from typing import Any, TypedDict

import numpy.typing as npt

_Arr = npt.NDArray[Any]

class ce_status(IntEnum):
    CE_OK = 0
    CE_ERR_TARGET_INDEX = 1
    CE_ERR_NOMEM = 2
    CE_ERR_DOMAIN = 3

class ce_reduction(IntEnum):
    CE_RED_NONE = 0
    CE_RED_SUM = 1
    CE_RED_MEAN = 2

class ce_dtype(IntEnum):
    CE_DT_F32 = 0
    CE_DT_F64 = 1
    CE_DT_BF16 = 2
    CE_DT_F16 = 3

class ce_bin_mode(IntEnum):
    CE_BIN_LOGITS = 0
    CE_BIN_PROBS = 1
    CE_BIN_KL_DIV = 2
    CE_BIN_KL_DIV_LOG = 3

class ce_sm_op(IntEnum):
    CE_SM_LOGSUMEXP = 0
    CE_SM_LOG_SOFTMAX = 1
    CE_SM_SOFTMAX = 2
    CE_SM_ENTROPY = 3
    CE_SM_SOFTMAX_ENTROPY = 4

class ce_div_kind(IntEnum):
    CE_DIV_KL_FORWARD = 0
    CE_DIV_KL_REVERSE = 1
    CE_DIV_JS = 2

class ce_teacher_kind(IntEnum):
    CE_TEACHER_LOGITS = 0
    CE_TEACHER_LOG_PROBS = 1
    CE_TEACHER_PROBS = 2

class ce_vm_kind(IntEnum):
    CE_VM_LOG = 0
    CE_VM_LOG1P = 1
    CE_VM_EXP = 2

class _BuildFacts(TypedDict):
    compiler: str
    openmp: int
    default_threads: int
    isa: str
    isa_compiled: list[str]
    isa_supported: list[str]

def fast_path_hits() -> dict[str, int]: ...
def set_fast_paths(enabled: bool) -> bool: ...
def register_bfloat16(dt: Any) -> None: ...
def categorical_fast(
    x: Any,
    target: Any,
    reduction: ce_reduction,
    num_threads: int,
    grad_output_scalar: float,
    want_grad: bool,
    out: Any,
) -> tuple[Any, _Arr | None] | None: ...
def softmax_family_fast(op: ce_sm_op, x: Any, num_threads: int, out: Any) -> _Arr | None: ...
def binary_logits_fast(
    x: Any,
    target: Any,
    reduction: ce_reduction,
    num_threads: int,
    grad_output_scalar: float,
    want_loss: bool,
    want_grad: bool,
    out: Any,
) -> tuple[Any, _Arr | None] | None: ...
def categorical(
    *,
    x: _Arr,
    outer: int,
    C: int,
    inner: int,
    xs: tuple[int, int, int],
    target: _Arr | None = None,
    q: _Arr | None = None,
    qs: tuple[int, int, int] = (0, 0, 0),
    weight: _Arr | None = None,
    sample_weight: _Arr | None = None,
    grad_output: _Arr | None = None,
    grad_output_scalar: float = 1.0,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float = 0.0,
    reduction: ce_reduction = ...,
    loss_out: _Arr | None = None,
    grad: _Arr | None = None,
    num_threads: int = 0,
    lse_out: _Arr | None = None,
    lse: _Arr | None = None,
) -> tuple[ce_status, float, int, int]: ...
def binary(
    *,
    mode: ce_bin_mode,
    x: _Arr,
    rows: int,
    cols: int,
    xs: tuple[int, int],
    t: _Arr,
    ts: tuple[int, int],
    w: _Arr | None = None,
    ws: tuple[int, int] = (0, 0),
    pw: _Arr | None = None,
    pws: tuple[int, int] = (0, 0),
    go: _Arr | None = None,
    gos: tuple[int, int] = (0, 0),
    grad_output_scalar: float = 1.0,
    eps: float = 0.0,
    reduction: ce_reduction = ...,
    loss_out: _Arr | None = None,
    grad: _Arr | None = None,
    num_threads: int = 0,
) -> tuple[ce_status, float, int, int, float]: ...
def softmax_family(
    *,
    op: ce_sm_op,
    x: _Arr,
    outer: int,
    C: int,
    inner: int,
    xs: tuple[int, int, int],
    out: _Arr | None,
    num_threads: int = 0,
) -> tuple[ce_status, int, float]: ...
def divergence(
    *,
    kind: ce_div_kind,
    teacher_is: ce_teacher_kind,
    x: _Arr,
    outer: int,
    C: int,
    inner: int,
    xs: tuple[int, int, int],
    t: _Arr,
    ts: tuple[int, int, int],
    inv_temperature: float = 1.0,
    beta: float = 0.5,
    target: _Arr | None = None,
    ignore_index: int = 0,
    sample_weight: _Arr | None = None,
    grad_output: _Arr | None = None,
    grad_output_scalar: float = 1.0,
    reduction: ce_reduction = ...,
    loss_out: _Arr | None = None,
    grad: _Arr | None = None,
    num_threads: int = 0,
) -> tuple[ce_status, float]: ...
def weighted_logsumexp(
    *,
    a: _Arr,
    b: _Arr,
    outer: int,
    C: int,
    inner: int,
    as_: tuple[int, int, int],
    bs: tuple[int, int, int],
    out: _Arr,
    sign: _Arr | None = None,
    num_threads: int = 0,
) -> ce_status: ...
def prob_divergence(
    *,
    p: _Arr,
    outer: int,
    C: int,
    inner: int,
    ps: tuple[int, int, int],
    q: _Arr | None = None,
    qs: tuple[int, int, int] = (0, 0, 0),
    omit_nan: bool = False,
    out: _Arr,
    num_threads: int = 0,
) -> ce_status: ...
def log_loss(
    *,
    p: _Arr,
    N: int,
    C: int,
    ps: tuple[int, int],
    label: _Arr,
    w: _Arr | None = None,
    eps: float,
    sum_tol: float,
    num_threads: int = 0,
) -> tuple[ce_status, float, float, bool, bool, bool, int]: ...
def vecmath(kind: ce_vm_kind | int, x: _Arr, y: _Arr, num_threads: int = 1) -> None: ...
def isa() -> str: ...
def set_isa(name: str) -> bool: ...
def threads_for(requested: int, blocks: int, elements: int) -> int: ...
def serial_after_fork() -> bool: ...
def build_facts() -> _BuildFacts: ...
