"""linear_cross_entropy(_and_grad) on float16 / bfloat16 hidden and weight
(issue 15): computed in float32 (NumPy has no 16-bit matmul), a chunk of
hidden's rows and a slab of weight's classes converted at a time, so that
no float32 copy of either exists; the loss float32, the gradients in the
operands' 16-bit dtype, each rounded once from its float32 value.

The oracle is ce_fast.reference in float64 on the same 16-bit values. The
bound tested, per element: |got - exact| <= 0.5 unit of the 16-bit format
at exact + 2 * A, where A bounds the float32 computation's absolute error
before the one rounding (u = 2**-24, gamma(n) = n u / (1 - n u), Higham's
bound for a float32 sum of n products):

* logits: dz_rc = gamma(D + 1) (|h_r| . |w_c| + |b_c|);
* the logits' gradient G_r = s_r (p_r - q_r) (s_r the row's scale: the
  upstream gradient, weights, the mean's 1/denominator; q_r the smoothed
  one-hot or the probability target): dG_rc = s_r (2 p_rc max_c dz_rc
  + 8 u (p_rc + |q_rc|)) (the softmax's sensitivity to dz, and the
  kernel's float32 arithmetic);
* d_hidden = G @ W: A = |dG| @ |W| + gamma(C) |G| @ |W|;
  d_weight = G.T @ H: A = |dG|.T @ |H| + gamma(N) |G|.T @ |H|;
  d_bias = sum_r G: A = sum_r |dG| + gamma(N) sum_r |G|;
* a row's loss lse_r - q_r . z_r: A = 2 max_c dz_rc + 8 u (|lse_r| + |q_r| . |z_r|)
  (summed over rows with the rows' weights for a reduced loss).

(The factor 2 on A: a value pushed across a power of two by its error is
rounded in the coarser binade.) At the sizes here A is under ~1 % of a
unit of either format, so a gradient rounded twice (or accumulated in 16
bits) fails."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.special import logsumexp, softmax

import ce_fast
from ce_fast import _chunked, _linear
from ce_fast import reference as ref
from ce_fast._validation import _arrays
from tests.test_half import HALVES, IDS, ulp, wide
from tests.test_half_binary import _peak

U = 2.0**-24


def gamma(n: int) -> float:
    return n * U / (1 - n * U)


def ulps_beyond(dt: np.dtype, got: Any, exact: Any, allowance: Any) -> float:
    """max (|got - exact| - allowance) in units of the 16-bit format at exact."""
    err = np.abs(np.asarray(got).astype(np.float64) - exact) - allowance
    return float(np.max(np.maximum(err, 0.0) / ulp(dt, exact), initial=0.0))


def problem(dt: np.dtype, target: str, bias: bool, N: int = 70, C: int = 45, D: int = 24) -> dict[str, Any]:
    rng = np.random.default_rng(30)
    h = rng.standard_normal((N, D)).astype(dt)
    w = (rng.standard_normal((C, D)) * 3 / np.sqrt(D)).astype(dt)
    kw: dict[str, Any] = {"bias": rng.standard_normal(C).astype(dt) if bias else None}
    if target == "probs":
        t = softmax(rng.standard_normal((N, C)) * 2, axis=1).astype(dt)
    else:
        t = rng.integers(0, C, N)
        if target == "ignore":
            t[::5] = -100
    if target == "smooth":
        kw["label_smoothing"] = 0.1
    return {"hidden": h, "weight": w, "target": t, **kw}


def allowances(args: dict[str, Any], kw: dict[str, Any]) -> dict[str, Any]:
    """A (see the module's docstring) for the loss, d_hidden, d_weight and d_bias."""
    h, w, t = wide(args["hidden"]), wide(args["weight"]), args["target"]
    b = np.zeros(w.shape[0]) if args["bias"] is None else wide(args["bias"])
    N, C, D = h.shape[0], w.shape[0], h.shape[1]
    z = h @ w.T + b
    dz = gamma(D + 1) * (np.abs(h) @ np.abs(w).T + np.abs(b))
    dz_row = dz.max(axis=1, keepdims=True)
    p = softmax(z, axis=1)
    eps = args.get("label_smoothing", 0.0)
    if t.ndim == 2:
        q = wide(t)
    else:
        q = np.full((N, C), eps / C)
        ok = t >= 0
        q[np.flatnonzero(ok), t[ok]] += 1 - eps
    opts = {k: args[k] for k in ("label_smoothing",) if k in args}
    red = kw.get("reduction", "mean")
    G = ref.cross_entropy_grad(z, wide(t) if t.ndim == 2 else t, reduction=red, **opts,
                               grad_output=kw.get("grad_output"))  # fmt: skip
    G1 = ref.cross_entropy_grad(z, wide(t) if t.ndim == 2 else t, reduction=red, **opts)
    dev = np.abs(p - q).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(dev > 0, np.abs(G).sum(axis=1) / dev, 0.0)[:, None]
        a = np.where(dev > 0, np.abs(G1).sum(axis=1) / dev, 0.0)  # the loss rows' weights
    dG = s * (2 * p * dz_row + 8 * U * (p + np.abs(q)))
    aG = np.abs(G)
    row_loss = 2 * dz_row[:, 0] + 8 * U * (np.abs(logsumexp(z, axis=1)) + (np.abs(q) * np.abs(z)).sum(axis=1))
    return {
        "loss": row_loss if red == "none" else float((a * row_loss).sum()),
        "d_hidden": dG @ np.abs(w) + gamma(C) * aG @ np.abs(w),
        "d_weight": dG.T @ np.abs(h) + gamma(N) * aG.T @ np.abs(h),
        "d_bias": dG.sum(axis=0) + gamma(N) * aG.sum(axis=0),
    }


@pytest.fixture
def small_slabs(monkeypatch: Any) -> None:
    """Weight slabs of 10 classes at D = 24 (45 classes: 5 slabs, the last
    one short), so the slab loops run as they do for a real vocabulary."""
    monkeypatch.setattr(_chunked, "_ACCUMULATE_BYTES", 10 * 24 * 4)


@pytest.mark.usefixtures("small_slabs")
@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target", ["labels", "ignore", "smooth", "probs"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("upstream", [False, True], ids=["up1", "upstream"])
def test_against_float64(dt: np.dtype, reduction: str, target: str, bias: bool, upstream: bool) -> None:
    args = problem(dt, target, bias)
    N = args["hidden"].shape[0]
    kw: dict[str, Any] = {"reduction": reduction}
    if upstream:
        kw["grad_output"] = np.linspace(0.5, 2.0, N) if reduction == "none" else 0.75
    loss, dh, dw, db = ce_fast.linear_cross_entropy_and_grad(**args, **kw, chunk_size=16)
    assert np.asarray(loss).dtype == np.float32
    assert dh.dtype == dw.dtype == dt and (db is None) == (not bias)
    wide_args = {k: wide(v) if isinstance(v, np.ndarray) and v.dtype == dt else v for k, v in args.items()}
    exact = ref.linear_cross_entropy_and_grad(**wide_args, **kw)
    allow = allowances(args, kw)
    # the loss: float32, within A and its own float32 rounding
    err = np.abs(np.asarray(loss, np.float64) - exact[0]) - allow["loss"] - U * np.abs(exact[0])
    assert np.all(err <= 0)
    for name, got, want in zip(("d_hidden", "d_weight", "d_bias"), (dh, dw, db), exact[1:]):
        if got is not None:
            assert ulps_beyond(dt, got, want, 2 * allow[name]) <= 0.5 + 1e-3, name
    # the bound is sharp for most elements (2 A under 0.3 units of the
    # format; those with cancelling terms get more), so a second rounding
    # (half a unit more) fails
    for name, want in zip(("d_hidden", "d_weight"), exact[1:]):
        assert float(np.median(2 * allow[name] / ulp(dt, want))) < 0.3
    # the loss alone: the same bits as with the gradients
    kw.pop("grad_output", None)
    alone = ce_fast.linear_cross_entropy(**args, **kw, chunk_size=16)
    np.testing.assert_array_equal(alone, loss)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_chunks_and_slabs_change_no_rounding_rule(dt: np.dtype, monkeypatch: Any) -> None:
    """One chunk and one slab: bitwise the float32 path's values, rounded
    once (its gradients rounded to the 16-bit dtype); several chunks and
    slabs: within the same bound of them."""
    args = problem(dt, "labels", True)
    wide32 = {k: v.astype(np.float32) if k != "target" else v for k, v in args.items()}
    want = ce_fast.linear_cross_entropy_and_grad(**wide32)
    got = ce_fast.linear_cross_entropy_and_grad(**args)
    assert got[0] == want[0]
    for a, b in zip(got[1:], want[1:]):
        np.testing.assert_array_equal(a.view(np.uint16), b.astype(dt).view(np.uint16))
    monkeypatch.setattr(_chunked, "_ACCUMULATE_BYTES", 7 * 24 * 4)
    split = ce_fast.linear_cross_entropy_and_grad(**args, chunk_size=9)
    for a, b in zip(split[1:], want[1:]):
        assert ulps_beyond(dt, a, b.astype(np.float64), 64 * U * np.abs(b)) <= 0.5 + 1e-3


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_threads_give_the_same_bits(dt: np.dtype) -> None:
    args = problem(dt, "smooth", True, N=300, C=200, D=32)
    a = ce_fast.linear_cross_entropy_and_grad(**args, num_threads=1, chunk_size=64)
    b = ce_fast.linear_cross_entropy_and_grad(**args, num_threads=2, chunk_size=64)
    for x, y in zip(a, b):
        assert np.asarray(x).tobytes() == np.asarray(y).tobytes()


def test_mixed_dtypes_are_promoted() -> None:
    """A float16 hidden with a float32 weight (or a float32 bias): NumPy's
    promotion, float32 results (the 16-bit path needs one 16-bit dtype)."""
    args = problem(np.dtype(np.float16), "labels", True)
    for key in ("weight", "bias"):
        mixed = dict(args, **{key: args[key].astype(np.float32)})
        _, dh, dw, db = ce_fast.linear_cross_entropy_and_grad(**mixed)
        assert dh.dtype == dw.dtype == db.dtype == np.float32


def test_without_ml_dtypes_bfloat16_gradients_are_float32(monkeypatch: Any) -> None:
    """bfloat16 tensors read through DLPack as tagged uint16: still computed
    a chunk at a time, the gradients float32 (NumPy cannot name bfloat16)."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(_arrays, "BFLOAT16", np.dtype(np.uint16, metadata={"ce_fast": "bfloat16"}))
    args = problem(HALVES[0], "labels", False)
    h, w = (torch.from_numpy(args[k].view(np.int16)).view(torch.bfloat16) for k in ("hidden", "weight"))
    loss, dh, dw, _ = ce_fast.linear_cross_entropy_and_grad(h, w, args["target"])
    assert dh.dtype == dw.dtype == np.float32
    want = ce_fast.linear_cross_entropy_and_grad(wide(args["hidden"]), wide(args["weight"]), args["target"])
    np.testing.assert_allclose(loss, want[0], rtol=1e-5)
    np.testing.assert_allclose(dw, want[2], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_peak_memory_has_no_float32_copy(dt: np.dtype, monkeypatch: Any) -> None:
    """The float32 weight (here 16 MiB) is never materialised: the loss alone
    peaks at a chunk of logits and a slab of weight (1 MiB here); with
    d_hidden only (a frozen weight), the same plus the 16-bit d_hidden;
    with d_weight, the one float32 array of the weight's size is d_weight's
    float32 accumulator (plus its 16-bit result), where a float32 copy of
    the inputs would add the float32 weight and hidden."""
    monkeypatch.setattr(_chunked, "_ACCUMULATE_BYTES", 1 << 20)
    rng = np.random.default_rng(31)
    N, C, D, chunk = 256, 8192, 512, 32
    h = rng.standard_normal((N, D)).astype(dt)
    w = (rng.standard_normal((C, D)) / np.sqrt(D)).astype(dt)
    t = rng.integers(0, C, N)
    w32, logits_chunk, slab = C * D * 4, chunk * C * 4, 1 << 20
    loss_only = _peak(lambda: ce_fast.linear_cross_entropy(h, w, t, chunk_size=chunk))
    assert loss_only < logits_chunk + 3 * slab + N * 8
    p = _linear._Problem(h, w, t, dict(bias=None, class_weight=None, sample_weight=None, ignore_index=-100,
                                       reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None,
                                       num_threads=None, chunk_size=chunk))  # fmt: skip
    frozen = _peak(lambda: _linear.run(p, grads=(True, False, False)))
    assert frozen < N * D * 2 + logits_chunk + 3 * slab + 3 * chunk * D * 4 + N * 8
    assert frozen < w32 / 4
    # one float32 array of the weight's size (d_weight's accumulator), not two
    both = _peak(lambda: ce_fast.linear_cross_entropy_and_grad(h, w, t, chunk_size=chunk))
    assert both < w32 + C * D * 2 + N * D * 2 + logits_chunk + 4 * slab + 3 * chunk * D * 4 + N * 8


def test_narrow_is_numpys_float16_rounding() -> None:
    """_arrays.narrow (float16 subnormal results rounded in float32 first, so
    that NumPy's conversion is exact and fast): bitwise NumPy's own
    conversion, on every float16 subnormal and its halfway points, signed
    zeros, the normal boundary, overflow, inf and NaN, and random values."""
    grid = np.arange(-1024, 1025, dtype=np.float64) * 2.0**-24  # the subnormals and the smallest normal
    special = [0.0, -0.0, 2.0**-14, -(2.0**-14), 2.0**-14 - 2.0**-26, 65504.0, 65520.0, 1e6]
    special += [np.inf, -np.inf, np.nan]
    rng = np.random.default_rng(32)
    v = np.concatenate([grid, grid + 2.0**-25, grid - 2.0**-25, grid + 2.0**-27, special,
                        rng.standard_normal(300_000) * 10.0 ** rng.integers(-9, 3, 300_000)])  # fmt: skip
    v = v.astype(np.float32)
    got = np.empty(v.shape, np.float16)
    with np.errstate(over="ignore"):
        _arrays.narrow(v, got)
        want = v.astype(np.float16)
    np.testing.assert_array_equal(got.view(np.uint16), want.view(np.uint16))
