"""Property fuzzing of the whole public API against ``ce_fast.reference``.

Every public function (categorical, binary, softmax family) is called with
random shapes (0-length axes included), valid and invalid dtypes, layouts
(transposed, strided, negative strides, unaligned, byte-swapped, read-only,
lists), axes, options (reduction, label_smoothing, z_loss, softcap, class
weights and sample weights with zero and negative entries, ignore_index,
out-of-range / huge / negative labels, uint64 labels > 2**63), grad_output
and out= buffers (aliasing the logits, wrong shape/dtype/order, read-only).
Property (tests/robustness/_oracle.py): both raise the same documented
exception kind, or both return results equal within tolerance with
identical NaN and infinity positions; inputs are never modified.

Budget: the hypothesis profile from tests/conftest.py (``ci`` by default,
``HYPOTHESIS_PROFILE=long`` for 2000 examples per test)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ce_fast
import ce_fast.reference as ref
from tests.robustness import _oracle

_oracle.AVOID_KNOWN_BUGS = True

_N = settings().max_examples  # 60 (ci) or 2000 (long)


@pytest.mark.parametrize("fn", _oracle.FUNCTIONS)
@settings(max_examples=max(_N // 4, 12))
@given(data=st.data())
def test_matches_reference_or_raises_alike(fn, data):
    ch = _oracle.HypothesisChooser(data)
    case = _oracle.make_case(_ForcedFunction(ch, fn))
    _oracle.check_case(case)


class _ForcedFunction(_oracle.Chooser):
    """Answers the first choice (the function) with ``fn``."""

    def __init__(self, inner, fn):
        self.inner, self.fn, self.first = inner, fn, True

    def integer(self, lo, hi):
        if self.first:
            self.first = False
            return _oracle.FUNCTIONS.index(self.fn)
        return self.inner.integer(lo, hi)


@settings(max_examples=_N * 2)
@given(seed=st.integers(0, 2**32 - 1))
def test_random_cases(seed):
    """Cheap, broad: whole cases from a seeded generator (no shrinking of
    the case structure, but many more distinct calls per second)."""
    _oracle.check_case(_oracle.make_case(_oracle.RandomChooser(seed)))


def test_many_seeded_cases():
    """A fixed sweep (deterministic, independent of hypothesis' database)."""
    for seed in range(600):
        _oracle.check_case(_oracle.make_case(_oracle.RandomChooser(10**6 + seed)))


# ---------------------------------------------------------------------------
# Targeted properties
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint64, np.int64])
def test_labels_beyond_int64_or_huge_are_index_errors(dtype):
    x = np.zeros((3, 4))
    y = np.array([0, 1, 2**63 + 5 if dtype == np.uint64 else 2**62], dtype)
    for f in (ce_fast.cross_entropy, ce_fast.cross_entropy_grad, ce_fast.cross_entropy_and_grad):
        with pytest.raises(IndexError, match="flat position 2"):
            f(x, y)
    with pytest.raises(IndexError):
        ref.cross_entropy(x, y)


def test_negative_weights_flow_through_like_pytorch():
    """Negative class weights and sample weights are not rejected: they flow
    through the arithmetic (negative losses; a zero total weight gives a NaN
    mean), as in torch.nn.functional.cross_entropy."""
    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0], [0.0, 0.0, 0.0]])
    y = np.array([0, 2, 1])
    w = np.array([-1.0, 0.5, 2.0])
    loss = ce_fast.cross_entropy(x, y, weight=w, reduction="none")
    nll = -np.log(ref.softmax(x))[np.arange(3), y]
    np.testing.assert_allclose(loss, w[y] * nll, rtol=1e-13)
    np.testing.assert_allclose(
        ce_fast.cross_entropy(x, y, weight=w), np.sum(w[y] * nll) / np.sum(w[y]), rtol=1e-13
    )
    s = np.array([1.0, -2.0, 0.0])
    np.testing.assert_allclose(
        ce_fast.cross_entropy(x, y, sample_weight=s, reduction="none"), s * nll, rtol=1e-13
    )
    # zero denominator: NaN mean (0/0 or x/0 with mixed signs), as PyTorch
    assert np.isnan(ce_fast.cross_entropy(x[:2], y[:2], weight=np.array([-1.0, 1.0, 1.0])))
    torch = pytest.importorskip("torch")
    t = torch.nn.functional.cross_entropy(
        torch.tensor(x), torch.tensor(y), weight=torch.tensor(w), reduction="mean"
    )
    np.testing.assert_allclose(ce_fast.cross_entropy(x, y, weight=w), t.item(), rtol=1e-13)


def test_nan_sample_weight_poisons_its_row_and_the_reduction():
    x = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
    y = np.array([0, 2])
    s = np.array([np.nan, 1.0])
    for f in (ce_fast, ref):
        loss = f.cross_entropy(x, y, sample_weight=s, reduction="none")
        assert np.isnan(loss[0]) and np.isfinite(loss[1])
        assert np.isnan(f.cross_entropy(x, y, sample_weight=s))
        g = f.cross_entropy_grad(x, y, sample_weight=s, reduction="none")
        assert np.isnan(g[0]).all() and np.isfinite(g[1]).all()


# ---------------------------------------------------------------------------
# Bugs found by the fuzzers: regression tests for the fixed ones, strict
# xfails for the open ones (whoever fixes one removes its marker and its
# AVOID_KNOWN_BUGS clause)
# ---------------------------------------------------------------------------

_X = np.array([[1.0, 2.0, 3.0], [0.5, -1.0, 2.0]])
_Y = np.array([0, 2])
_W_NAN_UNUSED = np.array([1.0, np.nan, 1.0])  # class 1 is nobody's target


def _torch_like(w):
    """PyTorch's value: only w[y] enters (no label smoothing)."""
    nll = -np.log(ref.softmax(_X))[np.arange(2), _Y]
    p = ref.softmax(_X)
    onehot = np.eye(3)[_Y]
    wy = w[_Y]
    return wy * nll, wy[:, None] * (p - onehot)


def test_fixed_nan_weight_of_unused_class_gradient():
    loss, grad = ce_fast.cross_entropy_and_grad(_X, _Y, weight=_W_NAN_UNUSED, reduction="none")
    want_loss, want_grad = _torch_like(_W_NAN_UNUSED)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-12, atol=1e-15)


def test_fixed_reference_nan_weight_of_unused_class_loss():
    loss = ref.cross_entropy(_X, _Y, weight=_W_NAN_UNUSED, reduction="none")
    np.testing.assert_allclose(loss, _torch_like(_W_NAN_UNUSED)[0], rtol=1e-12)


def test_fixed_zero_dim_weight_with_one_class_is_rejected():
    with pytest.raises(ValueError, match="weight"):
        ce_fast.cross_entropy(np.zeros((2, 1)), np.array([0, 0]), weight=np.float64(2.0))


def test_fixed_infinite_class_weight_with_smoothing():
    x, y = np.array([[0.0, 0.0]]), np.array([0])
    with np.errstate(all="ignore"):
        got = ce_fast.cross_entropy(x, y, weight=np.array([1.0, np.inf]), label_smoothing=0.5, reduction="sum")
        want = ref.cross_entropy(x, y, weight=np.array([1.0, np.inf]), label_smoothing=0.5, reduction="sum")
    assert want == np.inf
    assert got == want


def test_fixed_infinite_grad_output_with_smoothing():
    x, y = np.array([[0.0, 1.0]]), np.array([0])
    with np.errstate(all="ignore"):
        got = ce_fast.cross_entropy_grad(x, y, grad_output=np.inf, reduction="none", label_smoothing=0.2)
        want = ref.cross_entropy_grad(x, y, grad_output=np.inf, reduction="none", label_smoothing=0.2)
    np.testing.assert_array_equal(want, [[-np.inf, np.inf]])
    np.testing.assert_array_equal(got, want)


def _unaligned_f64(rows, cols):
    buf = np.zeros(8 * rows * cols + 1, np.uint8)[1:]
    x = buf.view(np.float64).reshape(rows, cols)
    x[...] = np.arange(rows * cols).reshape(rows, cols) % 5 - 2.0
    assert not x.flags.aligned and x.flags.c_contiguous
    return x


@pytest.mark.parametrize("which", ["softmax", "logsumexp", "cross_entropy"])
def test_fixed_unaligned_input_is_realigned(which, monkeypatch):
    from ce_fast import _core

    seen = []
    name = "categorical" if which == "cross_entropy" else "softmax_family"
    real = getattr(_core, name)

    def spy(**kw):
        seen.append(kw["x"].flags.aligned)
        return real(**kw)

    monkeypatch.setattr(_core, name, spy)
    x = _unaligned_f64(4, 3)
    if which == "cross_entropy":
        ce_fast.cross_entropy(x, np.array([0, 1, 2, 0]), label_smoothing=0.1)
    else:
        getattr(ce_fast, which)(x)
    assert seen and all(seen), "an unaligned array was handed to the C kernel"
