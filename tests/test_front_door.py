"""One front door: every entry point (the NumPy functions, linear_cross_entropy,
ce_fast.dask) accepts, converts or refuses an input the same way, with the
same message, because they share one parser per family; and the fast paths
run (their hit counters move) and agree with the general path bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import ce_fast
from ce_fast import _core
from ce_fast import reference as ref
from tests.conftest import assert_bitwise

LONGDOUBLE_IS_WIDER = np.dtype(np.longdouble).itemsize > 8
needs_wide = pytest.mark.skipif(not LONGDOUBLE_IS_WIDER, reason="long double is float64 here")


def _dask():
    return pytest.importorskip("ce_fast.dask")


def _ce_paths():
    """cross_entropy through every entry point, as f(logits, target, **kw)."""
    cfd = _dask()

    def dask_ce(x, t, **kw):
        return cfd.cross_entropy(x, t, **kw).compute(scheduler="sync")

    def linear_ce(x, t, **kw):
        """The logits as a linear layer's output: hidden @ eye(C).T."""
        if "weight" in kw:
            kw["class_weight"] = kw.pop("weight")
        return ce_fast.linear_cross_entropy(x, np.eye(np.shape(x)[-1]), t, **kw)

    return {
        "numpy": ce_fast.cross_entropy,
        "dask": dask_ce,
        "linear": linear_ce,
        "reference": ref.cross_entropy,
    }


def _raises(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except Exception as e:  # noqa: BLE001 - the type and message are the subject
        return type(e), str(e)
    return None


# ---- the dtype rules are the same on every path ---------------------------


@needs_wide
@pytest.mark.parametrize("what", ["logits", "prob_target", "weight", "sample_weight"])
def test_float128_is_refused_everywhere_with_one_message(rng, what):
    x = rng.standard_normal((4, 3))
    t = rng.integers(0, 3, 4)
    kw = {}
    wide = np.longdouble
    if what == "logits":
        x = x.astype(wide)
    elif what == "prob_target":
        t = np.full((4, 3), 1 / 3, wide)
    elif what == "weight":
        kw["weight"] = np.ones(3, wide)
    else:
        kw["sample_weight"] = np.ones(4, wide)
    errors = {}
    for name, f in _ce_paths().items():
        errors[name] = _raises(f, x, t, **kw)
    assert all(e is not None and e[0] is TypeError for e in errors.values()), errors
    # ce_fast's own paths: one message (after the operand's name, which the
    # linear layer spells hidden / class_weight)
    ours = {e[1].split(": ", 1)[1] for n, e in errors.items() if n != "reference"}
    assert len(ours) == 1, ours


@pytest.mark.parametrize(
    "target",
    [
        np.array([True, False, True]),
        np.array([1 + 1j, 0, 2]),
        np.array(["a", "b", "c"]),
        np.array([1, 0, 2], dtype=object),
        np.array(["2020-01-01"] * 3, dtype="datetime64[D]"),
    ],
    ids=["bool", "complex", "str", "object", "datetime"],
)
def test_bad_target_dtypes_are_a_type_error_on_every_path(rng, target):
    x = rng.standard_normal((3, 4))
    for name, f in _ce_paths().items():
        e = _raises(f, x, target)
        assert e is not None and e[0] is TypeError, (name, e)


@pytest.mark.parametrize(
    "option, value",
    [("label_smoothing", "0.1"), ("z_loss", "1"), ("softcap", "2"), ("label_smoothing", [0.1])],
)
def test_numeric_options_given_as_strings_are_refused_everywhere(rng, option, value):
    x = rng.standard_normal((3, 4))
    t = np.array([0, 1, 2])
    for name, f in _ce_paths().items():
        e = _raises(f, x, t, **{option: value})
        assert e is not None and e[0] is ValueError, (name, e)
    e = _raises(ce_fast.binary_cross_entropy, np.full(3, 0.5), np.ones(3), eps="0.1")
    assert e is not None and e[0] is ValueError


@pytest.mark.parametrize("value", [0, -1.0, np.inf, np.nan])
def test_softcap_range_message_is_consistent(rng, value):
    x = rng.standard_normal((3, 4))
    e = _raises(ce_fast.cross_entropy, x, np.array([0, 1, 2]), softcap=value)
    assert e is not None and e[0] is ValueError
    assert "softcap must be a finite number in (0, inf)" in e[1]


def test_linear_class_weight_may_require_grad(rng):
    torch = pytest.importorskip("torch")
    h, W = rng.standard_normal((6, 4)), rng.standard_normal((5, 4))
    y = np.arange(6) % 5
    w = torch.rand(5, dtype=torch.float64, requires_grad=True)
    got = ce_fast.linear_cross_entropy(h, W, y, class_weight=w)
    want = ce_fast.cross_entropy(h @ W.T, y, weight=w)
    assert np.isclose(got, want, rtol=1e-12)


def test_column_of_labels_gets_a_hint(rng):
    with pytest.raises(ValueError, match=r"ravel\(\)"):
        ce_fast.cross_entropy(rng.standard_normal((5, 3)), np.zeros((5, 1), np.int64))


def test_torch_negative_and_conjugate_views_are_resolved(rng):
    torch = pytest.importorskip("torch")
    v = torch.randn(3, 4, dtype=torch.complex128).conj().imag
    assert v.is_neg()
    want = ref.logsumexp(v.resolve_neg().numpy())
    assert np.allclose(ce_fast.logsumexp(v), want, rtol=1e-12)
    cfd = _dask()
    assert np.allclose(cfd.logsumexp(v).compute(scheduler="sync"), want, rtol=1e-12)
    c = torch.randn(3, 4, dtype=torch.float64)
    assert np.allclose(ce_fast.softmax(-c), ce_fast.softmax(c.neg()), rtol=1e-14)


# ---- the fast paths run, and equal the general path -----------------------


def _hits():
    return dict(_core.fast_path_hits())


@pytest.fixture
def general_path():
    """Run a call with every fast path switched off."""

    def run(fn, *a, **kw):
        prev = _core.set_fast_paths(False)
        try:
            before = _hits()
            r = fn(*a, **kw)
            assert _hits() == before  # nothing took a fast path
            return r
        finally:
            _core.set_fast_paths(prev)

    return run


def _ce(dtype=np.float64, n=32, c=10):
    return lambda r: (r.standard_normal((n, c)).astype(dtype), r.integers(0, c, n))


def _bce(shape, dtype=np.float64):
    return lambda r: (r.standard_normal(shape).astype(dtype), r.random(shape).astype(dtype))


def _sm(shape, dtype=np.float64, probs=False):
    return lambda r: ((r.random(shape) if probs else r.standard_normal(shape)).astype(dtype),)


CASES = [
    ("categorical", ce_fast.cross_entropy, _ce()),
    ("categorical", ce_fast.cross_entropy_and_grad, _ce()),
    ("categorical", ce_fast.cross_entropy_grad, _ce(np.float32, 5, 3)),
    ("softmax_family", ce_fast.softmax, _sm((7, 4))),
    ("softmax_family", ce_fast.log_softmax, _sm((7, 4), np.float32)),
    ("softmax_family", ce_fast.logsumexp, _sm((2, 7, 4))),
    ("softmax_family", ce_fast.entropy, _sm((7, 4), probs=True)),
    ("softmax_family", ce_fast.softmax_entropy, _sm(9)),
    ("binary_logits", ce_fast.binary_cross_entropy_with_logits, _bce((6, 5))),
    ("binary_logits", ce_fast.binary_cross_entropy_with_logits_and_grad, _bce(6)),
    ("binary_logits", ce_fast.binary_cross_entropy_with_logits_grad, _bce((3, 2), np.float32)),
]


@pytest.mark.parametrize("path, fn, make", CASES, ids=[f"{c[1].__name__}-{i}" for i, c in enumerate(CASES)])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_fast_path_is_taken_and_equals_the_general_path(rng, general_path, path, fn, make, reduction):
    args = make(rng)
    kw = {"reduction": reduction} if path != "softmax_family" else {}
    before = _hits()[path]
    fast = fn(*args, **kw)
    assert _hits()[path] == before + 1, f"the {path} fast path was not taken"
    slow = general_path(fn, *args, **kw)
    as_tuple = lambda r: r if isinstance(r, tuple) else (r,)  # noqa: E731
    for f, s in zip(as_tuple(fast), as_tuple(slow)):
        assert type(f) is type(s)
        assert_bitwise(f, s)


def test_set_fast_paths_returns_the_previous_setting():
    assert _core.set_fast_paths(False) is True
    assert _core.set_fast_paths(True) is False


# ---- the private test hooks check their arguments -------------------------


@pytest.mark.parametrize(
    "x, y, err",
    [
        (np.zeros(4, np.float16), np.zeros(4, np.float16), TypeError),
        (np.zeros(4), np.zeros(3), ValueError),
        (np.zeros(4), np.zeros(4, np.float32), TypeError),
        (np.zeros(8)[::2], np.zeros(4), TypeError),
        ([0.0, 0.0], np.zeros(2), TypeError),
    ],
)
def test_vecmath_checks_its_arguments(x, y, err):
    with pytest.raises(err):
        _core.vecmath(_core.ce_vm_kind.CE_VM_EXP, x, y)


def test_vecmath_checks_kind_threads_and_writability():
    x = np.zeros(4)
    with pytest.raises(ValueError):
        _core.vecmath(7, x, np.zeros(4))
    with pytest.raises(ValueError):
        _core.vecmath(2, x, np.zeros(4), 0)
    y = np.zeros(4)
    y.flags.writeable = False
    with pytest.raises(ValueError):
        _core.vecmath(2, x, y)
