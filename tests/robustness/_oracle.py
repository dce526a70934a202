"""Shared fuzzing oracle for the robustness suite (hypothesis tests and the
atheris harness in tools/robustness/fuzz_atheris.py).

A *case* is generated from a ``Chooser`` (a source of small integer choices:
hypothesis ``data.draw`` or atheris' ``FuzzedDataProvider``) by
:func:`make_case`.  :func:`check_case` builds the call twice from the same
recipe (so aliasing such as ``out=logits`` is reproduced exactly, and the
reference cannot disturb the arrays ce_fast sees), runs ``ce_fast.reference``
and ``ce_fast`` and checks the property:

* both raise an exception of the same documented kind (TypeError,
  IndexError, ValueError, numpy AxisError), or
* both return results of the same type/dtype/shape, NaN and +-inf positions
  identical, finite values within a tolerance scaled by the magnitude of the
  terms the result is computed from;
* ce_fast never modifies an input other than ``out``, and returns ``out``
  itself when one is given and accepted.

Anything else (another exception type, a crash, a hang) is a failure.
Values are drawn from a pool of dyadic numbers plus specials (0, +-inf, NaN,
+-1e4, ...) so that weighted mean denominators are exact in every summation
order; the comparison is therefore not at the mercy of cancellation in
``sum(w)``."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import ce_fast
import ce_fast.reference as ref

#: Set by the pytest suite: skip inputs that trigger the bugs pinned by strict
#: xfail tests in test_fuzz_api.py, so that the property tests stay green and
#: keep finding *new* problems (a generator clause reads it, e.g.
#: ``specials=ch.flag(1) and not AVOID_KNOWN_BUGS``). No bug is pinned at
#: present: every clause went with its fix. The atheris harness leaves it False.
AVOID_KNOWN_BUGS = False

CATEGORICAL = ["cross_entropy", "cross_entropy_grad", "cross_entropy_and_grad"]
BINARY_LOGITS = [
    "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits_grad",
    "binary_cross_entropy_with_logits_and_grad",
]
SOFTMAX = ["logsumexp", "log_softmax", "softmax", "entropy", "softmax_entropy"]
FUNCTIONS = CATEGORICAL + BINARY_LOGITS + ["binary_cross_entropy"] + SOFTMAX

DOCUMENTED = (TypeError, IndexError, ValueError)

VALUE_POOL = np.array(
    [0.0, 1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 3.25, -3.25, 7.5, -7.5, 15.0, -15.0,
     30.0, -30.0, 0.125, -0.125, 1e-3, 88.0, -88.0, 1e4, -1e4, 0.0, 1.0]
)  # fmt: skip
SPECIALS = np.array([np.nan, np.inf, -np.inf, -np.inf])
PROB_POOL = np.array([0.0, 1.0, 0.5, 0.25, 0.75, 0.125, 1e-3, 0.999, 1.0, 0.0])
WEIGHT_POOL = np.array([1.0, 0.0, 0.5, 2.0, 1.0, 0.25, -1.0, 3.0, 1.0])


class Chooser:
    """Source of choices. Subclasses implement ``integer(lo, hi)``."""

    def integer(self, lo: int, hi: int) -> int:  # inclusive
        raise NotImplementedError

    def choice(self, options: list) -> Any:
        return options[self.integer(0, len(options) - 1)]

    def flag(self, p_true_in_8: int = 4) -> bool:
        return self.integer(0, 7) < p_true_in_8


class RandomChooser(Chooser):
    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def integer(self, lo: int, hi: int) -> int:
        return int(self.rng.integers(lo, hi + 1))


class HypothesisChooser(Chooser):
    def __init__(self, data):
        from hypothesis import strategies as st

        self.data, self.st = data, st

    def integer(self, lo: int, hi: int) -> int:
        return self.data.draw(self.st.integers(lo, hi))


class AtherisChooser(Chooser):
    def __init__(self, fdp):
        self.fdp = fdp

    def integer(self, lo: int, hi: int) -> int:
        return self.fdp.ConsumeIntInRange(lo, hi)


# ---------------------------------------------------------------------------
# Array recipes: (kind, payload...) tuples, built fresh on each call
# ---------------------------------------------------------------------------


@dataclass
class Case:
    fn: str
    args: list  # recipes
    kwargs: dict  # name -> recipe or ("value", v)
    note: dict = field(default_factory=dict)

    def __repr__(self) -> str:
        return f"Case({self.fn}, args={self.args!r}, kwargs={self.kwargs!r})"


def _values(seed: int, shape, pool: np.ndarray, special_rate: int) -> np.ndarray:
    r = np.random.default_rng(seed)
    v = r.choice(pool, size=shape)
    if special_rate:
        mask = r.integers(0, 16, size=shape) < special_rate
        v = np.where(mask, r.choice(SPECIALS, size=shape), v)
    return v


def _materialise(recipe, built: dict) -> Any:
    """Build one argument from its recipe; ``built`` maps names already
    built in this call (for aliases such as ``("alias", "logits")``)."""
    kind = recipe[0]
    if kind == "value":
        return recipe[1]
    if kind == "alias":
        return built[recipe[1]]
    if kind == "array":
        _, shape, dtype, layout, seed, pool, special_rate = recipe
        base = _values(seed, shape, pool, special_rate)
        return _layout(base, dtype, layout)
    if kind == "labels":
        _, shape, dtype, values, layout = recipe
        r = np.random.default_rng(len(values) * 7919 + int(np.prod(shape, dtype=np.int64)))
        v = r.choice(np.array(values, dtype=object), size=shape) if values else np.zeros(shape, object)
        arr = np.array(v.tolist() if v.ndim else v.item(), dtype=dtype)
        return _layout(arr, arr.dtype, layout)
    if kind == "empty_out":
        _, shape, dtype, layout = recipe
        return _layout(np.zeros(shape), dtype, layout)
    raise AssertionError(recipe)


def _layout(base: np.ndarray, dtype, layout: str) -> Any:
    dtype = np.dtype(dtype)
    if dtype.kind in "OU":
        a = base.astype(dtype)
    elif dtype.kind == "c":
        a = base.astype(dtype) + 0.5j
    elif dtype.kind in "iub":
        with np.errstate(invalid="ignore"):
            a = np.nan_to_num(base, nan=0, posinf=3, neginf=-3).astype(dtype)
    else:
        with np.errstate(over="ignore", invalid="ignore"):
            a = base.astype(dtype)
    if layout == "C" or (a.ndim == 0 and layout != "list"):
        return a
    if layout == "F":  # same logical array, transposed memory
        return np.asfortranarray(a)
    if layout == "T":  # a transposed view of a C array holding a.T
        return np.ascontiguousarray(a.T).T
    if layout == "strided":  # every other element of a bigger buffer
        big = np.zeros(tuple(2 * n for n in a.shape), a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "neg":  # negative strides on every axis
        flipped = np.ascontiguousarray(a[tuple(slice(None, None, -1) for _ in a.shape)])
        return flipped[tuple(slice(None, None, -1) for _ in a.shape)]
    if layout == "readonly":
        a = a.copy()
        a.flags.writeable = False
        return a
    if layout == "unaligned":
        if a.dtype.itemsize == 1 or a.dtype.kind in "OU":
            return a
        buf = np.zeros(a.nbytes + 1, np.uint8)[1:]
        view = buf.view(a.dtype).reshape(a.shape)
        view[...] = a
        return view
    if layout == "byteswapped":
        if a.dtype.kind in "OU" or a.dtype.itemsize == 1:
            return a
        return a.astype(a.dtype.newbyteorder())
    if layout == "list":
        return a.tolist()
    if layout == "scalar0d":
        return a
    raise AssertionError(layout)


# ---------------------------------------------------------------------------
# Case generation
# ---------------------------------------------------------------------------

FLOAT_DTYPES = ["float32", "float64", "float16"]
ALL_DTYPES = FLOAT_DTYPES * 6 + ["int8", "int32", "int64", "uint8", "bool", "complex64", "object", "U3", "longdouble"]
LAYOUTS = ["C"] * 4 + ["F", "T", "strided", "neg", "readonly", "unaligned", "byteswapped", "list"]


def _shape(ch: Chooser, min_ndim: int, max_ndim: int = 3) -> tuple:
    ndim = ch.integer(min_ndim, max_ndim)
    dims = []
    for _ in range(ndim):
        k = ch.integer(0, 9)
        dims.append([0, 1, 1, 2, 3, 4, 5, 7, 17, 33][k])
    while math.prod(dims) > 3000:
        dims[dims.index(max(dims))] //= 2
    return tuple(dims)


def _seed(ch: Chooser) -> int:
    return ch.integer(0, 2**31 - 1)


_FAULTS: list = []


def _fault(tag, cond=True):
    """Record a (possible) reason for the call to fail; with two or more the
    order in which they are checked is unspecified, so only "both raise a
    documented exception" is required."""
    if cond:
        _FAULTS.append(tag)


def _arr(ch, shape, dtype=None, pool=VALUE_POOL, specials=True, layout=None):
    dtype = dtype or ch.choice(ALL_DTYPES)
    _fault("dtype", dtype in ("complex64", "complex128", "object", "U3", "longdouble"))
    layout = layout or ch.choice(LAYOUTS)
    rate = ch.choice([0, 0, 0, 1, 4]) if specials else 0
    return ("array", tuple(shape), dtype, layout, _seed(ch), pool, rate)


def _out(ch, shape, dtype, logits_recipe):
    k = ch.integer(0, 9)
    if k <= 3:
        return None
    if k == 4:
        return ("empty_out", tuple(shape), dtype, "C")
    if k == 5:  # in place; valid only if logits already is C-contiguous of the compute dtype
        _fault("out-alias", logits_recipe[0] != "array" or logits_recipe[2] != dtype or logits_recipe[3] not in ("C", "T", "F")
               or logits_recipe[3] in ("T", "F") and len(shape) > 1)
        return ("alias", "logits")
    _fault("out")
    if k == 6:
        return ("empty_out", tuple(shape), ch.choice(["float32", "float64", "float16", "int64"]), "C")
    if k == 7:
        return ("empty_out", tuple(shape), dtype, ch.choice(["F", "strided", "readonly", "neg", "unaligned"]))
    if k == 8:
        bad = tuple(shape) + (2,) if ch.flag() else tuple(max(n - 1, 0) for n in shape)
        return ("empty_out", bad, dtype, "C")
    return ("value", ch.choice([[0.0], 3, "out"]))


def _compute_dtype(dtype: str) -> str:
    dt = np.dtype(dtype)
    if dt.kind == "f" and dt.itemsize <= 4:
        return "float32"
    return "float64"


def make_case(ch: Chooser) -> Case:
    fn = ch.choice(FUNCTIONS)
    del _FAULTS[:]
    if fn in CATEGORICAL:
        case = _categorical_case(ch, fn)
    elif fn in BINARY_LOGITS:
        case = _binary_case(ch, fn)
    elif fn == "binary_cross_entropy":
        case = _bce_probs_case(ch, fn)
    else:
        case = _softmax_case(ch, fn)
    case.note["faults"] = list(_FAULTS)
    return case


def _opt(ch, valid: list, invalid: list, tag: str, p_invalid_in_8: int = 1):
    """A valid option value mostly, an invalid one (recorded) sometimes."""
    if invalid and ch.integer(0, 7) < p_invalid_in_8:
        _fault(tag)
        return ch.choice(invalid)
    return ch.choice(valid)


def _axis(ch, ndim):
    k = ch.integer(0, 7)
    if k < 5:
        return -1 if ndim == 0 else ch.integer(-ndim, ndim - 1)
    _fault("axis")
    if k == 5:
        return ch.choice([ndim, -ndim - 1, 100])
    if k == 6:
        return ch.choice([1.0, None, True])
    return -1


def _categorical_case(ch, fn) -> Case:
    shape = _shape(ch, ch.choice([1, 1, 1, 0]))
    logits = _arr(ch, shape)
    kw: dict = {}
    ndim = len(shape)
    _fault("shape", ndim == 0)
    axis = _axis(ch, ndim) if ch.flag(3) else -1
    if axis != -1:
        kw["axis"] = ("value", axis)
    ax = axis % ndim if (ndim and isinstance(axis, int) and not isinstance(axis, bool) and -ndim <= axis < ndim) else ndim - 1
    C = shape[ax] if ndim else 0
    _fault("shape", C == 0)
    sshape = shape[:ax] + shape[ax + 1 :] if ndim else ()
    cdt = _compute_dtype(logits[2]) if np.dtype(logits[2]).kind in "fiub" else "float64"

    ignore = ch.choice([-100, -100, -100, -1, 0, 1, 2**62, -(2**63)])
    if ignore != -100:
        kw["ignore_index"] = ("value", ignore)
    tk = ch.integer(0, 9)
    if tk <= 5:  # integer class indices
        dtype = ch.choice(["int64", "int64", "int32", "uint8", "int16", "uint64", "int8"])
        values = list(range(max(C, 1))) * 3 + [ignore]
        if ch.flag(2):
            values += ch.choice([[C], [-1], [2**62], [-(2**63)], [C + 1000], [2**63 + 5], [2**64 - 1]])
        info = np.iinfo(dtype)
        values = [v for v in values if info.min <= v <= info.max]
        _fault("label", any((v < 0 or v >= C) and v != ignore for v in values))
        tshape = sshape if ch.integer(0, 9) else ch.choice([shape, sshape + (1,), (3,)])
        _fault("target-shape", tshape != sshape)
        target = ("labels", tuple(tshape), dtype, tuple(values), ch.choice(["C", "C", "F", "neg", "readonly", "list"]))
    elif tk <= 7:  # probabilities
        tshape = shape if ch.integer(0, 9) else ch.choice([sshape, shape + (1,)])
        _fault("target-shape", tshape != shape)
        _fault("ignore-prob", ignore >= 0)
        target = _arr(ch, tshape, ch.choice(["float32", "float64", "float64", "float16"]), PROB_POOL, specials=False)
    elif ch.flag(6):  # mostly valid plain labels after all
        target = ("labels", tuple(sshape), "int64", tuple(range(max(C, 1))), "C")
    else:  # invalid kinds
        _fault("target-kind")
        target = _arr(ch, sshape, ch.choice(["bool", "complex128", "object", "U3"]), PROB_POOL, specials=False)

    if ch.flag(3):
        wshape = (C,) if ch.integer(0, 5) else ch.choice([(C + 1,), (1,), (C, 1), ()])
        _fault("weight-shape", wshape != (C,))
        kw["weight"] = _arr(ch, wshape, ch.choice(["float64", "float32", "int64", "float16"]), WEIGHT_POOL, specials=ch.flag(1), layout=ch.choice(["C", "neg", "list", "readonly"]))
    if ch.flag(3):
        swshape = ch.choice([sshape, sshape, (), sshape[-1:], (7,)])
        _fault("sw-shape", swshape not in (sshape, ()))
        kw["sample_weight"] = _arr(ch, swshape, ch.choice(["float64", "float32", "int32"]), WEIGHT_POOL, specials=ch.flag(1), layout=ch.choice(["C", "strided", "list"]))
    if ch.flag(2):
        kw["reduction"] = ("value", _opt(ch, ["none", "sum", "mean", "none", "sum"], ["MEAN", "bogus", None], "reduction"))
    if ch.flag(2):
        kw["label_smoothing"] = ("value", _opt(ch, [0.1, 0.5, 1.0, 0.25, 0], [-0.1, 1.5, float("nan"), "x"], "label_smoothing"))
    if ch.flag(2):
        kw["z_loss"] = ("value", _opt(ch, [1e-4, 0.125, 1.0], [-1.0, float("nan"), float("inf")], "z_loss"))
    if ch.flag(2):
        kw["softcap"] = ("value", _opt(ch, [5.0, 30.0, 0.5, None], [0.0, -1.0, float("nan"), float("inf")], "softcap"))
    if ch.flag(1):
        kw["num_threads"] = ("value", _opt(ch, [1, 2, 3, None], [0, -1, 1.5], "num_threads"))
    if fn != "cross_entropy":
        red = kw.get("reduction", ("value", "mean"))[1]
        if ch.flag(3):
            if red == "none" and ch.flag():
                goshape = ch.choice([sshape, sshape, (), (5,)])
                _fault("go-shape", goshape not in (sshape, ()))
                kw["grad_output"] = _arr(ch, goshape, ch.choice(["float64", "float32"]), WEIGHT_POOL, specials=ch.flag(1), layout=ch.choice(["C", "list"]))
            else:
                kw["grad_output"] = ("value", _opt(ch, [2.0, 0.5, -1.0, 0.0, np.float32(3.0), float("nan")], [[1.0, 2.0]], "grad_output"))
        o = _out(ch, shape, cdt, logits)
        if o is not None:
            kw["out"] = o
    return Case(fn, [logits, target], kw)


def _binary_case(ch, fn) -> Case:
    shape = _shape(ch, 0)
    logits = _arr(ch, shape)
    cdt = _compute_dtype(logits[2]) if np.dtype(logits[2]).kind in "fiub" else "float64"

    def bshape():
        k = ch.integer(0, 7)
        if k <= 3:
            return shape
        if k == 4:
            return shape[-1:]
        if k == 5:
            return ()
        if k == 6:
            return tuple(1 if i % 2 else n for i, n in enumerate(shape))
        _fault("broadcast")
        return shape + (2,) if shape else (2,)

    target = _arr(ch, bshape(), ch.choice(["float64", "float32", "int64", "bool", "float16", "complex64", "U3"]), PROB_POOL if ch.flag(6) else VALUE_POOL, specials=ch.flag(1))
    kw: dict = {}
    if ch.flag(2):
        kw["weight"] = _arr(ch, bshape(), ch.choice(["float64", "float32"]), WEIGHT_POOL, specials=ch.flag(1))
    if ch.flag(2):
        kw["pos_weight"] = _arr(ch, bshape(), ch.choice(["float64", "float32"]), WEIGHT_POOL, specials=ch.flag(1))
    if ch.flag(3):
        kw["reduction"] = ("value", _opt(ch, ["none", "sum", "mean", "none"], ["Sum"], "reduction"))
    if ch.flag(1):
        kw["num_threads"] = ("value", _opt(ch, [1, 2, 3], [0, -2], "num_threads"))
    if fn != "binary_cross_entropy_with_logits":
        red = kw.get("reduction", ("value", "mean"))[1]
        if ch.flag(3):
            if red == "none" and ch.flag():
                kw["grad_output"] = _arr(ch, bshape(), "float64", WEIGHT_POOL, specials=ch.flag(1))
            else:
                kw["grad_output"] = ("value", _opt(ch, [2.0, -0.5, 0.0, float("nan")], [[1.0, 2.0]], "grad_output"))
        o = _out(ch, shape, cdt, logits)
        if o is not None:
            kw["out"] = o
    return Case(fn, [logits, target], kw)


def _bce_probs_case(ch, fn) -> Case:
    shape = _shape(ch, 0)
    good = ch.flag(7)
    probs = _arr(ch, shape, pool=PROB_POOL if good else VALUE_POOL, specials=ch.flag(1))
    _fault("probs-range", not good or probs[-1])
    tshape = shape if ch.flag(6) else ch.choice([shape[-1:], (), shape + (3,)])
    _fault("broadcast", tshape == shape + (3,))
    good = ch.flag(7)
    target = _arr(ch, tshape, ch.choice(["float64", "float32", "int64", "bool"]), PROB_POOL if good else VALUE_POOL, specials=ch.flag(1))
    _fault("target-range", not good or target[-1])
    kw: dict = {}
    if ch.flag(2):
        kw["eps"] = ("value", _opt(ch, [0.0, 1e-7, 0.1, 0.5, None], [0.6, -1e-3, float("nan")], "eps"))
    if ch.flag(3):
        kw["reduction"] = ("value", _opt(ch, ["none", "sum", "mean"], ["avg"], "reduction"))
    if ch.flag(1):
        kw["num_threads"] = ("value", _opt(ch, [1, 2], [0], "num_threads"))
    return Case(fn, [probs, target], kw)


def _softmax_case(ch, fn) -> Case:
    shape = _shape(ch, ch.choice([1, 1, 1, 0]))
    pool = PROB_POOL if (fn == "entropy" and ch.flag(7)) else VALUE_POOL
    x = _arr(ch, shape, pool=pool)
    _fault("entropy-range", fn == "entropy" and (pool is VALUE_POOL or x[-1]))
    kw: dict = {}
    ndim = len(shape)
    _fault("shape", ndim == 0 or 0 in shape)
    if ch.flag(3):
        kw["axis"] = ("value", _axis(ch, ndim))
    if ch.flag(1):
        kw["num_threads"] = ("value", _opt(ch, [1, 2, 3, None], [0], "num_threads"))
    if fn in ("log_softmax", "softmax"):
        cdt = _compute_dtype(x[2]) if np.dtype(x[2]).kind in "fiub" else "float64"
        o = _out(ch, shape, cdt, x)
        if o is not None:
            kw["out"] = o
    return Case(fn, [x], kw)


# ---------------------------------------------------------------------------
# Running and comparing
# ---------------------------------------------------------------------------


def build(case: Case) -> tuple[list, dict]:
    built: dict = {}
    args = []
    for name, r in zip(["logits", "target"], case.args):
        built[name] = _materialise(r, built)
        args.append(built[name])
    kwargs = {k: _materialise(r, built) for k, r in case.kwargs.items()}
    return args, kwargs


def _run(fn: Callable, args, kwargs):
    try:
        with np.errstate(all="ignore"):
            return "ok", fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - classified below
        return "raise", exc


def _kind(exc: BaseException) -> str:
    if isinstance(exc, np.exceptions.AxisError):
        return "AxisError"
    for t in DOCUMENTED:
        if isinstance(exc, t):
            return t.__name__
    return f"undocumented {type(exc).__name__}"


def _snapshot(x) -> Any:
    if isinstance(x, np.ndarray):
        return (x.dtype.str, x.shape, x.strides, x.tobytes(order="A") if x.dtype.kind != "O" else repr(x.tolist()))
    if isinstance(x, list):
        return repr(x)
    return None


class Mismatch(AssertionError):
    pass


def check_case(case: Case, tol_f32: float = 2e-4, tol_f64: float = 1e-9) -> str:
    """Run ``case`` through the reference and ce_fast; raise Mismatch (an
    AssertionError) if the property is violated. Returns a short outcome tag."""
    rargs, rkwargs = build(case)
    st_r, r = _run(getattr(ref, case.fn), rargs, rkwargs)
    args, kwargs = build(case)
    out = kwargs.get("out")
    before = {k: _snapshot(v) for k, v in list(enumerate(args)) + list(kwargs.items()) if k != "out" and v is not out}
    st_c, c = _run(getattr(ce_fast, case.fn), args, kwargs)
    if st_c == "raise" and _kind(c).startswith("undocumented"):
        raise Mismatch(f"{case!r}: ce_fast raised an undocumented {type(c).__name__}: {c}") from c
    if st_r == "raise" and _kind(r).startswith("undocumented"):
        raise Mismatch(f"{case!r}: reference raised an undocumented {type(r).__name__}: {r}") from r
    if st_r != st_c:
        raise Mismatch(f"{case!r}: reference {st_r} {r!r}, ce_fast {st_c} {c!r}")
    # inputs untouched (unless aliased as out)
    for k, v in list(enumerate(args)) + list(kwargs.items()):
        if k == "out" or v is out:
            continue
        if _snapshot(v) != before[k]:
            raise Mismatch(f"{case!r}: ce_fast modified input {k}")
    if st_r == "raise":
        if _kind(r) != _kind(c) and len(case.note.get("faults", [])) < 2:
            raise Mismatch(f"{case!r}: reference raised {type(r).__name__}({r}), ce_fast {type(c).__name__}({c})")
        return "raise:" + _kind(c)
    rr = r if isinstance(r, tuple) else (r,)
    cc = c if isinstance(c, tuple) else (c,)
    if len(rr) != len(cc):
        raise Mismatch(f"{case!r}: result arity {len(cc)} != {len(rr)}")
    scales = _scales(case, args, kwargs, rr)
    for i, (a, d, sc) in enumerate(zip(cc, rr, scales)):
        _compare(case, i, a, d, sc, tol_f32, tol_f64)
    if out is not None and isinstance(out, np.ndarray):
        grad = cc[-1]
        if grad is not out:
            raise Mismatch(f"{case!r}: out= was accepted but not returned")
    return "ok"


def _compare(case, i, a, d, scale, tol_f32, tol_f64):
    where = f"{case!r}: result {i}"
    if type(a) is not type(d):
        raise Mismatch(f"{where}: type {type(a).__name__} != reference {type(d).__name__}")
    a = np.asarray(a)
    d = np.asarray(d)
    if a.dtype != d.dtype or a.shape != d.shape:
        raise Mismatch(f"{where}: {a.dtype}{a.shape} != reference {d.dtype}{d.shape}")
    a64, d64 = a.astype(np.float64), d.astype(np.float64)
    if not np.array_equal(np.isnan(a64), np.isnan(d64)):
        raise Mismatch(f"{where}: NaN positions differ: ce_fast {a64.ravel()[:8]} reference {d64.ravel()[:8]}")
    inf = np.isinf(a64) | np.isinf(d64)
    if not np.array_equal(a64[inf], d64[inf]):
        raise Mismatch(f"{where}: infinities differ: ce_fast {a64[inf][:8]} reference {d64[inf][:8]}")
    fin = np.isfinite(d64)
    if not fin.any():
        return
    rtol = tol_f32 if d.dtype == np.float32 else tol_f64
    sc = np.broadcast_to(np.asarray(scale, np.float64), d64.shape)[fin]
    sc = np.where(np.isfinite(sc), sc, 0.0)
    err = np.abs(a64[fin] - d64[fin])
    lim = rtol * (np.abs(d64[fin]) + sc) + np.finfo(d.dtype).tiny
    if (err > lim).any():
        k = int(np.argmax(err - lim))
        raise Mismatch(
            f"{where}: |{a64[fin][k]!r} - {d64[fin][k]!r}| = {err[k]:.3g} > {lim[k]:.3g} (scale {sc[k]:.3g})"
        )


def _fin_max(a, default=1.0) -> float:
    a = np.abs(np.asarray(a, np.float64))
    a = a[np.isfinite(a)]
    return float(a.max()) if a.size else default


def _scales(case: Case, args, kwargs, results) -> list:
    """Magnitude of the terms each result is computed from (absolute error
    budget = rtol * scale)."""
    x = np.asarray(args[0], dtype=np.float64) if not isinstance(args[0], np.ndarray) else args[0].astype(np.float64)
    L = _fin_max(x, 0.0)
    if case.fn in SOFTMAX:
        C = x.shape[np.asarray(kwargs.get("axis", -1)).item() % x.ndim] if x.ndim else 1
        s = L + math.log(max(C, 1)) + 1.0
        if case.fn == "entropy":
            s = (1.0 + L * (abs(math.log(L)) if L > 0 else 1.0)) * max(C, 1) + 1.0
        return [s] * len(results)
    red = kwargs.get("reduction", "mean")
    go = kwargs.get("grad_output")
    G = _fin_max(go, 1.0) if go is not None else 1.0
    if case.fn in CATEGORICAL:
        ax = kwargs.get("axis", -1) % x.ndim
        C = x.shape[ax]
        N = max(x.size // max(C, 1), 1)
        W = _fin_max(kwargs.get("weight", 1.0))
        S = _fin_max(kwargs.get("sample_weight", 1.0))
        cap = kwargs.get("softcap")
        Lc = min(L, cap) if cap else L
        z = float(kwargs.get("z_loss", 0.0))
        lse = Lc + math.log(C) + 1.0
        per = S * W * (2 * lse + z * lse * lse)
        gper = G * S * W * (2.0 + 2 * z * lse)
        denom = _categorical_denominator(args, kwargs, ax) if red == "mean" else 1.0
        div = abs(denom) if denom else 1.0
        loss_scale = per if red == "none" else per * N / div
        grad_scale = gper / div
    else:  # binary
        t = np.asarray(args[1], np.float64) if np.asarray(args[1]).dtype.kind in "fiub" else 1.0
        w = np.abs(np.asarray(kwargs.get("weight", 1.0), np.float64))
        pw = np.abs(np.asarray(kwargs.get("pos_weight", 1.0), np.float64))
        with np.errstate(all="ignore"):
            term = w * (pw * np.abs(t) + np.abs(1 - t))
            per = np.broadcast_to(term * (np.abs(x) + 1.0), x.shape)
            n = max(x.size, 1)
            if red == "none":
                loss_scale = per
            else:
                loss_scale = float(np.nansum(np.where(np.isfinite(per), per, 0))) / (n if red == "mean" else 1)
            grad_scale = np.broadcast_to(term * G, x.shape) / (n if red == "mean" else 1)
        if case.fn == "binary_cross_entropy":
            loss_scale = 40.0 * (1 if red != "sum" else x.size)
    if case.fn.endswith("_and_grad"):
        return [loss_scale, grad_scale]
    if case.fn.endswith("_grad"):
        return [grad_scale]
    return [loss_scale]


def _categorical_denominator(args, kwargs, ax) -> float:
    x = np.asarray(args[0])
    t = np.asarray(args[1])
    sshape = x.shape[:ax] + x.shape[ax + 1 :]
    sw = np.broadcast_to(np.asarray(kwargs.get("sample_weight", 1.0), np.float64), sshape).ravel()
    if t.dtype.kind in "iu":
        y = t.ravel().astype(np.int64)
        keep = y != kwargs.get("ignore_index", -100)
        w = np.asarray(kwargs.get("weight", np.ones(x.shape[ax])), np.float64)
        wy = np.where(keep, w[np.where(keep, y, 0)], 0.0)
        with np.errstate(all="ignore"):
            return float(np.sum(sw * wy))
    return float(np.sum(sw))
