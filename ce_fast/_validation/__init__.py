"""Argument checking and normalisation: one parser per family, shared by
every entry point (the NumPy functions, linear_cross_entropy, ce_fast.dask
and the front ends), so that an input is accepted, converted or refused the
same way — with the same message — wherever it arrives.

Each parser returns a frozen object of validated options; everything here
runs before a kernel is called, so a kernel only ever sees arrays of its own
dtype, in a layout it can walk, with valid options. The error messages live
here and nowhere else (ce_fast.reference, the independent twin, keeps its
own)."""

from ._arrays import (
    BFLOAT16,
    as_array,
    as_float,
    as_logits,
    broadcast_operand,
    check_broadcast,
    compute_dtype,
    flat_2d,
    is_half,
    merge_axes,
    narrow,
    normalize_axes,
    normalize_axis,
    output,
    per_sample,
    result_dtype,
    strided_view,
    unaliased,
    upstream,
    upstream_is_scalar,
    widen,
)
from ._binary import BinaryOptions, binary_options
from ._categorical import (
    CategoricalLayout,
    CategoricalOptions,
    categorical_layout,
    categorical_options,
    check_int_target,
    class_weight,
    int_target,
    saved_lse,
    target_index_error,
)
from ._divergence import (
    DivergenceLayout,
    DivergenceOptions,
    KlDivOptions,
    divergence_layout,
    divergence_options,
    kl_div_options,
    tokens,
)
from ._options import REDUCTION_NAMES, REDUCTIONS, fast_scale, fast_threads, flag, no_memory
from ._prob import NAN_POLICIES, ProbCall, nan_policy, prob_call
from ._softmax import INPUT_NAMES, SoftmaxCall, softmax_call

__all__ = [
    "BFLOAT16",
    "INPUT_NAMES",
    "KlDivOptions",
    "NAN_POLICIES",
    "REDUCTIONS",
    "REDUCTION_NAMES",
    "BinaryOptions",
    "CategoricalLayout",
    "CategoricalOptions",
    "DivergenceLayout",
    "DivergenceOptions",
    "ProbCall",
    "SoftmaxCall",
    "as_array",
    "as_float",
    "as_logits",
    "binary_options",
    "broadcast_operand",
    "categorical_layout",
    "categorical_options",
    "check_broadcast",
    "check_int_target",
    "class_weight",
    "compute_dtype",
    "divergence_layout",
    "divergence_options",
    "fast_scale",
    "fast_threads",
    "flag",
    "flat_2d",
    "is_half",
    "merge_axes",
    "int_target",
    "kl_div_options",
    "nan_policy",
    "narrow",
    "no_memory",
    "normalize_axes",
    "normalize_axis",
    "output",
    "per_sample",
    "prob_call",
    "result_dtype",
    "widen",
    "saved_lse",
    "softmax_call",
    "strided_view",
    "target_index_error",
    "tokens",
    "unaliased",
    "upstream",
    "upstream_is_scalar",
]
