"""Every error path of the categorical cross-entropy functions (as documented in the docstrings):
the exact exception type, and a message that names what is wrong.

Each case runs through all three ce_fast functions and through the
reference, which must raise the same exception type."""

from __future__ import annotations

import re

import numpy as np
import pytest

import ce_fast
import ce_fast.reference as ref
from tests.conftest import fingerprint

FUNCS = ["cross_entropy", "cross_entropy_grad", "cross_entropy_and_grad"]
GRAD_FUNCS = ["cross_entropy_grad", "cross_entropy_and_grad"]
IMPLS = {"ce_fast": ce_fast, "reference": ref}


@pytest.fixture(params=FUNCS)
def func(request):
    return request.param


@pytest.fixture(params=list(IMPLS))
def impl(request):
    return IMPLS[request.param]


def _x(shape=(4, 5), dtype=np.float64):
    return np.random.default_rng(0).standard_normal(shape).astype(dtype)


def _y(n=4, C=5):
    return np.arange(n) % C


# ---------------------------------------------------------------------------
# IndexError: class index out of range
# ---------------------------------------------------------------------------


def _message_names(msg, *numbers):
    for v in numbers:
        assert re.search(rf"(?<![\d.]){v}(?![\d.])", msg), f"{v} not named in {msg!r}"


@pytest.mark.parametrize(
    ("target", "pos", "val", "absent"),
    [
        ([0, 1, 2, 5, 1, 9], 3, 5, "9"),  # == C
        ([0, 1, 2, 4, 7, 1], 4, 7, None),
        ([0, -1, 2, 3, 1, -7], 1, -1, "-7"),  # negative, not ignore_index
        ([0, 1, 2, 3, 1, -101], 5, -101, None),
        ([0, 1, 2, 3, 1, 2**62], 5, 2**62, None),
    ],
)
def test_index_error_names_first_position_and_value(
    impl, func, target, pos, val, absent
):
    x = _x((6, 5))
    with pytest.raises(IndexError) as exc:
        getattr(impl, func)(x, np.array(target))
    msg = str(exc.value)
    _message_names(msg, pos, val)
    if absent is not None:
        assert absent not in msg.replace(str(val), ""), "names a later offender"


@pytest.mark.parametrize(
    "value", [2**63, 2**63 + 5, 2**64 - 1], ids=["2^63", "2^63+5", "2^64-1"]
)
def test_index_error_uint64_beyond_int64(impl, func, value):
    """uint64 values that do not fit int64 are out of range, never wrapped
    (2**64 - 1 must not be taken for -1, 2**64 - 100 not for ignore_index)."""
    x = _x((4, 5))
    y = np.array([1, 2, value, 0], dtype=np.uint64)
    with pytest.raises(IndexError) as exc:
        getattr(impl, func)(x, y)
    _message_names(str(exc.value), 2, value)


def test_index_error_uint64_not_confused_with_ignore_index(impl):
    x = _x((3, 5))
    y = np.array([0, 2**64 - 100, 1], dtype=np.uint64)  # == -100 if wrapped
    with pytest.raises(IndexError):
        impl.cross_entropy(x, y)
    y = np.array([0, 2**64 - 1, 1], dtype=np.uint64)  # == -1 if wrapped
    with pytest.raises(IndexError):
        impl.cross_entropy(x, y, ignore_index=-1)


@pytest.mark.parametrize(
    "tdtype",
    [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64],
)
def test_index_error_every_integer_dtype(func, tdtype):
    x = _x((4, 5))
    y = np.array([0, 1, 5, 2], dtype=tdtype)
    with pytest.raises(IndexError) as exc:
        getattr(ce_fast, func)(x, y)
    _message_names(str(exc.value), 2, 5)


def test_index_error_nd_flat_position(impl, func):
    """N-d target: the C-order flat position of the first offender."""
    x = _x((3, 7, 4))  # class axis 1 -> target shape (3, 4)
    y = np.zeros((3, 4), np.int64)
    y[1, 2] = 7
    y[2, 0] = 9
    with pytest.raises(IndexError) as exc:
        getattr(impl, func)(x, y, axis=1)
    _message_names(str(exc.value), 6, 7)


@pytest.mark.usefixtures("oversubscribed")
def test_index_error_large_parallel_problem(func):
    """The first offender is found also when the work is split over threads."""
    x = _x((6000, 13), np.float32)
    y = np.zeros(6000, np.int64)
    y[4321] = 13
    y[5000] = -3
    with pytest.raises(IndexError) as exc:
        getattr(ce_fast, func)(x, y, num_threads=3)
    _message_names(str(exc.value), 4321, 13)


def test_index_error_with_ignore_index_a_class(impl):
    """With ignore_index=2 the default -100 is an ordinary, invalid value."""
    x = _x((3, 5))
    with pytest.raises(IndexError) as exc:
        impl.cross_entropy(x, np.array([2, -100, 1]), ignore_index=2)
    _message_names(str(exc.value), 1, -100)
    # and ignore_index outside [0, C) is fine where it is used
    impl.cross_entropy(x, np.array([0, 77, 1]), ignore_index=77)


@pytest.mark.parametrize("func", GRAD_FUNCS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_index_error_leaves_out_logits_untouched(func, dtype):
    x = _x((7, 5), dtype)
    x[3, 2] = np.nan
    before = fingerprint(x)
    y = np.array(
        [0, 1, 2, 3, 4, 1, 5]
    )  # last row invalid: found after earlier valid rows
    with pytest.raises(IndexError):
        getattr(ce_fast, func)(x, y, out=x)
    assert fingerprint(x) == before
    out = np.full_like(x, 42.0)
    with pytest.raises(IndexError):
        getattr(ce_fast, func)(x, y, out=out)
    assert np.all(out == 42.0), "out written before the IndexError"


@pytest.mark.usefixtures("oversubscribed")
def test_index_error_large_in_place_untouched():
    x = _x((6000, 13), np.float32)
    before = fingerprint(x)
    y = np.zeros(6000, np.int64)
    y[-1] = 20
    with pytest.raises(IndexError):
        ce_fast.cross_entropy_and_grad(x, y, out=x, num_threads=3)
    assert fingerprint(x) == before


# ---------------------------------------------------------------------------
# ValueError: shapes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("xshape", "axis", "tshape", "tdtype"),
    [
        ((4, 5), -1, (5,), np.int64),
        ((4, 5), -1, (4, 1), np.int64),
        ((4, 5), -1, (4, 5), np.int64),  # integer target of the logits' shape
        ((4, 5), -1, (), np.int64),
        ((4, 5), -1, (3,), np.int64),
        ((9, 7, 41), 1, (9, 7), np.int64),
        ((9, 7, 41), 1, (41, 9), np.int64),
        ((4, 5), -1, (4,), np.float64),  # floating target of the sample shape
        ((4, 5), -1, (5, 4), np.float64),
        ((4, 5), -1, (4, 5, 1), np.float32),
        ((9, 7, 41), 1, (9, 41), np.float64),
        ((11,), 0, (1,), np.int64),
    ],
)
def test_wrong_target_shape(impl, func, xshape, axis, tshape, tdtype):
    x = _x(xshape)
    t = np.zeros(tshape, tdtype)
    with pytest.raises(ValueError) as exc:
        getattr(impl, func)(x, t, axis=axis)
    msg = str(exc.value)
    assert str(tuple(tshape)) in msg, f"arrived shape not named: {msg!r}"
    ax = axis % len(xshape)
    sshape = xshape[:ax] + xshape[ax + 1 :]
    expected = (
        str(tuple(sshape)) if np.issubdtype(tdtype, np.integer) else str(tuple(xshape))
    )
    assert expected in msg, f"expected shape not named: {msg!r}"


@pytest.mark.parametrize(
    ("xshape", "axis", "tshape"),
    [((3, 0), -1, (3,)), ((0, 0), -1, (0,)), ((4, 0, 3), 1, (4, 3)), ((0,), 0, ())],
)
@pytest.mark.parametrize("kind", ["int", "prob"])
def test_empty_class_axis(impl, func, xshape, axis, tshape, kind):
    x = np.zeros(xshape)
    t = np.zeros(tshape, np.int64) if kind == "int" else np.zeros(xshape)
    with pytest.raises(ValueError, match=r"C == 0|empty"):
        getattr(impl, func)(x, t, axis=axis)


def test_zero_dimensional_logits(impl, func):
    with pytest.raises(ValueError):
        getattr(impl, func)(np.float64(1.0), np.int64(0))


@pytest.mark.parametrize("axis", [2, -3, 5])
def test_axis_out_of_range(impl, func, axis):
    with pytest.raises(np.exceptions.AxisError):
        getattr(impl, func)(_x(), _y(), axis=axis)


@pytest.mark.parametrize("axis", [1.0, "1", None, True])
def test_axis_not_an_integer(impl, func, axis):
    with pytest.raises(TypeError, match="axis"):
        getattr(impl, func)(_x(), _y(), axis=axis)


# ---------------------------------------------------------------------------
# ValueError: options
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reduction", ["Mean", "SUM", "None", "avg", "", None, 1, "mean "]
)
def test_bad_reduction(impl, func, reduction):
    with pytest.raises(ValueError, match="reduction"):
        getattr(impl, func)(_x(), _y(), reduction=reduction)


@pytest.mark.parametrize(
    "value", [-0.1, -1e-300, 1.0000001, 2.0, np.nan, np.inf, -np.inf]
)
def test_bad_label_smoothing(impl, func, value):
    with pytest.raises(ValueError, match="label_smoothing"):
        getattr(impl, func)(_x(), _y(), label_smoothing=value)


@pytest.mark.parametrize("value", [-1e-3, -1.0, np.nan, np.inf])
def test_bad_z_loss(impl, func, value):
    with pytest.raises(ValueError, match="z_loss"):
        getattr(impl, func)(_x(), _y(), z_loss=value)


@pytest.mark.parametrize("value", [0.0, -0.0, -1.0, np.nan, np.inf, -np.inf])
def test_bad_softcap(impl, func, value):
    with pytest.raises(ValueError, match="softcap"):
        getattr(impl, func)(_x(), _y(), softcap=value)


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_label_smoothing_bounds_are_valid(impl, value):
    impl.cross_entropy(_x(), _y(), label_smoothing=value)


@pytest.mark.parametrize("shape", [(4,), (6,), (1, 5), (5, 1), ()])
def test_bad_weight_length(impl, func, shape):
    with pytest.raises(ValueError, match="weight"):
        getattr(impl, func)(_x(), _y(), weight=np.ones(shape))


@pytest.mark.parametrize("shape", [(5,), (4, 2), (3,), (2, 4)])
def test_bad_sample_weight_shape(impl, func, shape):
    with pytest.raises(ValueError, match="sample_weight"):
        getattr(impl, func)(_x(), _y(), sample_weight=np.ones(shape))


@pytest.mark.parametrize(
    "value", [0, -1, -100, 1.5, 2.0, True, False, "2", np.float64(2.0)]
)
def test_bad_num_threads(impl, func, value):
    with pytest.raises(ValueError, match="num_threads"):
        getattr(impl, func)(_x(), _y(), num_threads=value)


@pytest.mark.parametrize("value", [None, 1, 2, 3, np.int64(2), np.uint8(1)])
def test_good_num_threads(impl, value):
    impl.cross_entropy(_x(), _y(), num_threads=value)


@pytest.mark.parametrize("ignore_index", [0, 1, 4, 100])
def test_ignore_index_with_probability_target(impl, func, ignore_index):
    q = np.full((4, 5), 0.2)
    with pytest.raises(ValueError, match="ignore_index"):
        getattr(impl, func)(_x(), q, ignore_index=ignore_index)


def test_negative_ignore_index_with_probability_target_is_fine(impl):
    q = np.full((4, 5), 0.2)
    impl.cross_entropy(_x(), q, ignore_index=-1)
    impl.cross_entropy(_x(), q, ignore_index=-100)


@pytest.mark.parametrize("value", [1.0, "1", None, True])
def test_ignore_index_not_an_integer(impl, value):
    with pytest.raises(TypeError, match="ignore_index"):
        impl.cross_entropy(_x(), _y(), ignore_index=value)


# ---------------------------------------------------------------------------
# grad_output
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("func", GRAD_FUNCS)
@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("shape", [(4,), (1,), (2, 2)])
def test_grad_output_array_with_reduced_loss(impl, func, reduction, shape):
    with pytest.raises(ValueError, match="grad_output"):
        getattr(impl, func)(_x(), _y(), reduction=reduction, grad_output=np.ones(shape))


@pytest.mark.parametrize("func", GRAD_FUNCS)
@pytest.mark.parametrize("shape", [(5,), (3,), (4, 2), (2, 4)])
def test_grad_output_wrong_shape_with_none(impl, func, shape):
    with pytest.raises(ValueError, match="grad_output"):
        getattr(impl, func)(_x(), _y(), reduction="none", grad_output=np.ones(shape))


@pytest.mark.parametrize("func", GRAD_FUNCS)
def test_grad_output_complex(func):
    with pytest.raises(TypeError, match="grad_output"):
        getattr(ce_fast, func)(
            _x(), _y(), reduction="none", grad_output=np.ones(4, complex)
        )


# ---------------------------------------------------------------------------
# out=
# ---------------------------------------------------------------------------


def _bad_outs(dtype):
    base = np.empty((4, 5), dtype)
    ro = np.empty((4, 5), dtype)
    ro.flags.writeable = False
    other = np.float32 if np.dtype(dtype) == np.float64 else np.float64
    return {
        "shape_transposed": np.empty((5, 4), dtype),
        "shape_flat": np.empty(20, dtype),
        "shape_bigger": np.empty((4, 6), dtype),
        "dtype": np.empty((4, 5), other),
        "dtype_int": np.empty((4, 5), np.int64),
        "fortran": np.asfortranarray(base),
        "strided": np.empty((4, 10), dtype)[:, ::2],
        "negative_stride": np.empty((4, 5), dtype)[::-1],
        "read_only": ro,
        "byte_swapped": np.empty((4, 5), np.dtype(dtype).newbyteorder()),
    }


@pytest.mark.parametrize("func", GRAD_FUNCS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "case",
    ["shape_transposed", "shape_flat", "shape_bigger", "dtype", "dtype_int", "fortran",
     "strided", "negative_stride", "read_only", "byte_swapped"],
)  # fmt: skip
def test_bad_out(impl, func, dtype, case):
    out = _bad_outs(dtype)[case]
    before = fingerprint(out)
    with pytest.raises(ValueError, match="out"):
        getattr(impl, func)(_x(dtype=dtype), _y(), out=out)
    assert fingerprint(out) == before


@pytest.mark.parametrize("func", GRAD_FUNCS)
def test_out_float16_logits_takes_float16_or_float32_out(func):
    x = _x(dtype=np.float16)
    with pytest.raises(ValueError, match="out"):
        getattr(ce_fast, func)(x, _y(), out=np.empty((4, 5), np.float64))
    for out in (np.empty((4, 5), np.float32), np.empty((4, 5), np.float16), x):
        res = getattr(ce_fast, func)(x, _y(), out=out)
        assert (res[1] if isinstance(res, tuple) else res) is out


@pytest.mark.parametrize("func", GRAD_FUNCS)
@pytest.mark.parametrize(
    "out", [[[0.0] * 5] * 4, (1, 2), 3.0, memoryview(np.empty((4, 5))), "out"], ids=type
)
def test_out_not_an_array(impl, func, out):
    with pytest.raises(TypeError, match="out"):
        getattr(impl, func)(_x(), _y(), out=out)


# ---------------------------------------------------------------------------
# TypeError: dtypes
# ---------------------------------------------------------------------------

BAD_ARRAYS = {
    "complex": lambda s: np.zeros(s, np.complex128),
    "complex64": lambda s: np.zeros(s, np.complex64),
    "object": lambda s: np.zeros(s, object),
    "str": lambda s: np.full(s, "a"),
    "bytes": lambda s: np.full(s, b"a"),
    "datetime": lambda s: np.zeros(s, "datetime64[s]"),
}


@pytest.mark.parametrize("kind", list(BAD_ARRAYS))
def test_bad_logits_dtype(impl, func, kind):
    with pytest.raises(TypeError, match="logits"):
        getattr(impl, func)(BAD_ARRAYS[kind]((4, 5)), _y())


@pytest.mark.parametrize("kind", list(BAD_ARRAYS))
@pytest.mark.parametrize("shape", [(4,), (4, 5)])
def test_bad_target_dtype(impl, func, kind, shape):
    with pytest.raises(TypeError, match="target"):
        getattr(impl, func)(_x(), BAD_ARRAYS[kind](shape))


@pytest.mark.parametrize("shape", [(4,), (4, 5)])
def test_boolean_target(impl, func, shape):
    with pytest.raises(TypeError, match="target"):
        getattr(impl, func)(_x(), np.zeros(shape, bool))


def test_boolean_target_list(impl):
    with pytest.raises(TypeError, match="target"):
        impl.cross_entropy(_x(), [True, False, True, False])


def test_complex_weight(impl, func):
    with pytest.raises(TypeError, match="weight"):
        getattr(impl, func)(_x(), _y(), weight=np.ones(5, complex))


def test_ragged_logits(impl):
    with pytest.raises((TypeError, ValueError)):
        impl.cross_entropy([[1.0, 2.0], [3.0]], [0, 0])


def test_python_complex_scalars_in_list(impl):
    with pytest.raises(TypeError, match="logits"):
        impl.cross_entropy([[1 + 2j, 0.0]], [0])
