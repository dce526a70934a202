"""bfloat16 and float16 in the binary family (issue 15): logits (and
probabilities) read in place, a chunk at a time converted to float32 inside
the kernel, the loss float32 and the gradient in the logits' dtype (rounded
to nearest even once) or float32 with a float32 out=.

Oracle and contract as tests/test_half.py: ce_fast.reference on the 16-bit
values widened to float64; the loss to float32 accuracy, each gradient
element within 1 unit of the 16-bit format of the exact gradient (plus a few
float32 ulps of the cancelling terms' magnitude)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import ce_fast
from ce_fast import _core
from ce_fast import reference as ref
from ce_fast._validation import _arrays
from tests.test_half import BF16, EPS32, HALVES, IDS, half_logits, record, ulp_error, wide

F32 = np.dtype(np.float32)
BCE = ce_fast.binary_cross_entropy_with_logits
BCE_GRAD = ce_fast.binary_cross_entropy_with_logits_grad
BCE_BOTH = ce_fast.binary_cross_entropy_with_logits_and_grad


def bits(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a).view(np.uint16).tobytes()


def term_scale(x: np.ndarray, t: np.ndarray, kw: dict) -> np.ndarray:
    """|w| ((1 - t) sigmoid(x) + |pw| t sigmoid(-x)) |go| (/N for "mean"):
    the magnitude of the two terms whose difference is the gradient."""
    xd = wide(x)
    with np.errstate(over="ignore"):
        sig, sig_neg = 1.0 / (1.0 + np.exp(-xd)), 1.0 / (1.0 + np.exp(xd))
    s = np.abs(1.0 - t) * sig + np.abs(kw.get("pos_weight", 1.0)) * np.abs(t) * sig_neg
    s = s * np.abs(kw.get("weight", 1.0)) * np.abs(kw.get("grad_output", 1.0))
    return s / x.size if kw.get("reduction", "mean") == "mean" else s


OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"weight": "w"},
    {"pos_weight": "pw"},
    {"grad_output": "go", "reduction": "none"},
    {"weight": "w", "pos_weight": "pw", "grad_output": "go", "reduction": "none"},
]


def materialise(opts: dict, shape: tuple[int, ...], seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    out = dict(opts)
    if opts.get("weight") == "w":
        out["weight"] = rng.uniform(0.2, 2.0, shape[-1]).astype(np.float32)  # broadcast (K,)
    if opts.get("pos_weight") == "pw":
        out["pos_weight"] = rng.uniform(0.5, 3.0, shape[-1]).astype(np.float32)
    if opts.get("grad_output") == "go":
        out["grad_output"] = rng.uniform(-2.0, 2.0, shape).astype(np.float32)
    return out


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_logits_against_float64(dt, soft, opts):
    shape = (67, 40)
    x = half_logits(dt, shape, seed=20)
    rng = np.random.default_rng(21)
    t = (rng.random(shape) if soft else rng.integers(0, 2, shape)).astype(np.float32)
    kw = materialise(opts, shape)
    loss, g = BCE_BOTH(x, t, **kw)
    rloss, rg = ref.binary_cross_entropy_with_logits_and_grad(wide(x), t, **kw)
    assert g.dtype == dt and g.shape == shape
    loss = np.asarray(loss)
    assert loss.dtype == F32
    np.testing.assert_allclose(loss, rloss, rtol=8 * EPS32, atol=0)
    e = ulp_error(dt, g, rg, term_scale(x, wide(t), kw))
    record(dt, e)
    assert e <= 1.0
    # the same computation, rounded only to float32, rounds to the same bits
    g32 = BCE_GRAD(x, t, out=np.empty(shape, F32), **kw)
    assert bits(g32.astype(dt)) == bits(g)
    # loss alone and gradient alone: the fused pass's values
    kw.pop("grad_output", None)
    np.testing.assert_array_equal(BCE(x, t, **kw), loss)
    assert bits(BCE_GRAD(x, t, **materialise(opts, shape))) == bits(g)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_small_losses_and_tails(dt):
    """Confident elements: loss ~ exp(-|x|) to relative float32 accuracy and
    the gradient ~ -exp(-|x|) to 1 unit of the format (subnormal float16
    gradients included)."""
    x = np.linspace(5.0, 80.0, 300).astype(dt).astype(np.float64)
    x = np.concatenate([x, -x]).astype(dt)
    t = (wide(x) > 0).astype(np.float32)
    x = x[np.isfinite(wide(x))]
    t = t[: x.size]
    loss, g = BCE_BOTH(x, t, reduction="none")
    rloss, rg = ref.binary_cross_entropy_with_logits_and_grad(wide(x), t, reduction="none")
    assert rloss.min() < 1e-30
    rel = np.max(np.abs(loss.astype(np.float64) - rloss) / rloss)
    assert rel <= 8 * EPS32
    e = ulp_error(dt, g, rg)
    record(dt, e)
    assert e <= 0.51  # one term: the exact value rounded once


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_edge_values(dt):
    x = np.array([0.0, np.nan, np.inf, -np.inf, np.inf, -np.inf, 1e-40, -3.0]).astype(dt)
    t = np.array([1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.5, 0.25], np.float32)
    loss, g = BCE_BOTH(x, t, reduction="none")
    rloss, rg = ref.binary_cross_entropy_with_logits_and_grad(wide(x), t, reduction="none")
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(rloss))
    np.testing.assert_array_equal(np.isnan(wide(g)), np.isnan(rg))
    ok = ~np.isnan(rloss)
    np.testing.assert_allclose(loss[ok], rloss[ok], rtol=8 * EPS32)
    assert ulp_error(dt, g, rg) <= 0.51
    assert np.isnan(BCE(x, t))


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize(
    "shape,view,tshape",
    [
        ((0, 5), None, (5,)),
        ((), None, ()),
        ((1,), None, (1,)),
        ((30, 24), "strided", (1,)),
        ((24, 30), "transposed", (30, 1)),
        ((5, 7, 9), "strided3", (7, 1)),
        ((6, 40), "broadcast-logits", (6, 40)),
    ],
    ids=["empty", "0-d", "one", "strided", "transposed", "strided3", "broadcast-logits"],
)
def test_layouts_and_broadcast_targets(dt, shape, view, tshape):
    x = half_logits(dt, shape, seed=22)
    if view == "strided":
        x = x[::2, ::3]
    elif view == "transposed":
        x = x.T
    elif view == "strided3":
        x = x[::2, :, ::2]
    elif view == "broadcast-logits":
        x = np.broadcast_to(x[0], shape)  # a zero row stride, read in place
    t = np.random.default_rng(23).random(tshape).astype(np.float32)
    pw = np.float32(1.5)
    for red in ("mean", "sum", "none"):
        loss, g = BCE_BOTH(x, t, pos_weight=pw, reduction=red)
        rloss, rg = ref.binary_cross_entropy_with_logits_and_grad(wide(x), t, pos_weight=pw, reduction=red)
        assert np.asarray(loss).dtype == F32 and np.shape(loss) == np.shape(rloss)
        assert g.dtype == dt and g.shape == x.shape and g.flags.c_contiguous
        np.testing.assert_allclose(loss, rloss, rtol=8 * EPS32)
        scale = term_scale(x, np.broadcast_to(wide(t), x.shape), {"pos_weight": 1.5, "reduction": red})
        assert ulp_error(dt, g, rg, scale) <= 1.0


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_bitwise_identical_across_threads(dt):
    shape = (3001, 97)  # ~4.5 blocks of the kernel's 65536 elements
    x = half_logits(dt, shape, seed=24)
    t = np.random.default_rng(25).random(shape[-1]).astype(np.float32)
    w = np.float32(0.7)
    r = [BCE_BOTH(x, t, weight=w, num_threads=nt) for nt in (1, 2, 3)]
    for loss, g in r[1:]:
        assert loss.tobytes() == r[0][0].tobytes()
        assert bits(g) == bits(r[0][1])
    n = [BCE(x, t, reduction="none", num_threads=nt) for nt in (1, 2)]
    assert n[0].tobytes() == n[1].tobytes()
    p = (wide(x) > 0).astype(dt)
    s = [ce_fast.binary_cross_entropy(p, t, num_threads=nt) for nt in (1, 2, 3)]
    assert s[0].tobytes() == s[1].tobytes() == s[2].tobytes()


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_every_isa_meets_the_contract(dt):
    """Each ISA's instantiation (F16C conversions in the AVX2 / AVX-512
    builds, portable ones in the baseline) meets the contract, and its
    16-bit gradient is its own float32 gradient rounded once. (The binary
    kernel's float32 arithmetic is not bitwise identical across ISAs, for
    float32 logits neither, so neither are these.)"""
    x = half_logits(dt, (48, 77), seed=26)
    t = np.random.default_rng(27).random(77).astype(np.float32)
    rloss, rg = ref.binary_cross_entropy_with_logits_and_grad(wide(x), t, reduction="none")
    scale = term_scale(x, np.broadcast_to(wide(t), x.shape), {"reduction": "none"})
    prev = _core.isa()
    try:
        for isa in _core.build_facts()["isa_supported"]:
            assert _core.set_isa(isa)
            loss, g = BCE_BOTH(x, t, reduction="none")
            np.testing.assert_allclose(loss, rloss, rtol=8 * EPS32)
            assert ulp_error(dt, g, rg, scale) <= 1.0
            g32 = BCE_GRAD(x, t, reduction="none", out=np.empty(x.shape, F32))
            assert bits(g32.astype(dt)) == bits(g)
    finally:
        _core.set_isa(prev)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_out_dtypes_and_in_place(dt):
    x = half_logits(dt, (33, 17), seed=28)
    t = np.random.default_rng(29).random((33, 17)).astype(np.float32)
    g = BCE_GRAD(x, t)
    g32 = np.empty(x.shape, F32)
    assert BCE_GRAD(x, t, out=g32) is g32
    assert bits(g32.astype(dt)) == bits(g)
    g16 = np.empty_like(x)
    assert BCE_GRAD(x, t, out=g16) is g16 and bits(g16) == bits(g)
    xc = x.copy()
    loss, gi = BCE_BOTH(xc, t, out=xc)
    assert gi is xc and bits(gi) == bits(g)
    assert loss == BCE(x, t)
    # the target in the output's memory: snapshotted first
    tt = t.astype(dt)
    want = BCE_GRAD(x, tt)
    assert bits(BCE_GRAD(x, tt, out=tt)) == bits(want)
    other = BF16 if dt != BF16 else np.dtype(np.float16)
    for bad in (np.empty(x.shape, np.float64), np.empty(x.shape, other), np.empty((17, 33), dt)):
        with pytest.raises(ValueError, match="dtype"):
            BCE_GRAD(x, t, out=bad)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_operands_of_any_float_dtype(dt):
    """Targets, weights, pos_weight and grad_output of any float dtype (16-bit
    ones too) are converted to float32 (16-bit exactly)."""
    x = half_logits(dt, (20, 11), seed=30)
    rng = np.random.default_rng(31)
    ops = {
        "weight": rng.uniform(0.5, 2.0, 11).astype(dt),
        "pos_weight": rng.uniform(0.5, 2.0, 11).astype(np.float64),
        "grad_output": rng.uniform(-1.0, 1.0, (20, 11)).astype(dt),
    }
    t = rng.random((20, 11)).astype(dt)
    loss, g = BCE_BOTH(x, t, reduction="none", **ops)
    as32 = {k: v.astype(F32) for k, v in ops.items()}
    loss32, g32 = BCE_BOTH(x, t.astype(F32), reduction="none", **as32)
    np.testing.assert_array_equal(loss, loss32)
    assert bits(g) == bits(g32)
    wide_ops = {k: v.astype(F32).astype(np.float64) for k, v in ops.items()}
    rg = ref.binary_cross_entropy_with_logits_grad(wide(x), wide(t), reduction="none", **wide_ops)
    assert ulp_error(dt, g, rg, term_scale(x, wide(t), {**wide_ops, "reduction": "none"})) <= 1.0


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_probabilities(dt):
    rng = np.random.default_rng(32)
    p = rng.random((40, 25)).astype(dt)
    p[0, :3] = [0.0, 1.0, 0.5]
    t = rng.random((40, 25)).astype(np.float32)
    w = rng.uniform(0.5, 2.0, 25)
    eps = float(np.finfo(np.float32).eps)  # the compute dtype's: float32
    for red in ("mean", "sum", "none"):
        got = ce_fast.binary_cross_entropy(p, t, weight=w, reduction=red)
        want = ref.binary_cross_entropy(wide(p), t, weight=w.astype(F32), eps=eps, reduction=red)
        assert np.asarray(got).dtype == F32
        np.testing.assert_allclose(got, want, rtol=8 * EPS32)
    same = ce_fast.binary_cross_entropy(p.astype(F32), t)
    np.testing.assert_array_equal(ce_fast.binary_cross_entropy(p, t), same)
    bad = p.copy()
    bad[3, 4] = 1.5
    with pytest.raises(ValueError, match="probs must lie in .* found 1.5 at flat position 79"):
        ce_fast.binary_cross_entropy(bad[:, ::-1][:, ::-1], t)
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="found nan at flat position 79"):
        ce_fast.binary_cross_entropy(bad, t)
    empty = ce_fast.binary_cross_entropy(p[:0], t[:0])
    assert np.isnan(empty) and np.asarray(empty).dtype == F32


def _peak(fn) -> int:
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_no_float32_copy_of_the_logits(dt):
    """The peak extra memory (NumPy's allocations, traced) is far below a
    float32 copy of the logits (2x their bytes): nothing for a loss, the
    16-bit gradient alone for a gradient, nothing with out=logits."""
    x = half_logits(dt, (1000, 1000), seed=33)
    t = np.float32(1.0)
    copy32 = 2 * x.nbytes
    BCE_BOTH(x[:2], t)  # warm up (imports, caches)
    assert _peak(lambda: x.astype(np.float32)) >= copy32  # the measure sees a copy
    assert _peak(lambda: BCE(x, t)) < copy32 / 100
    assert _peak(lambda: BCE(x, t, reduction="none")) < 1.1 * copy32  # the float32 losses
    p = np.abs(np.sin(wide(x))).astype(dt)
    assert _peak(lambda: ce_fast.binary_cross_entropy(p, t)) < copy32 / 100
    assert _peak(lambda: BCE_GRAD(x, t)) < 1.1 * x.nbytes
    xc = x.copy()
    assert _peak(lambda: BCE_BOTH(xc, t, out=xc)) < copy32 / 100


def test_without_ml_dtypes_bfloat16_comes_back_float32(monkeypatch):
    """Without ml_dtypes, bfloat16 from DLPack (tagged uint16) is computed
    natively and the gradient is float32 (the same values, unrounded)."""
    torch = pytest.importorskip("torch")
    tagged = np.dtype(np.uint16, metadata={"ce_fast": "bfloat16"})
    monkeypatch.setattr(_arrays, "BFLOAT16", tagged)
    tx = torch.randn(20, 30).to(torch.bfloat16)
    t = np.random.default_rng(34).random((20, 30)).astype(np.float32)
    loss, g = BCE_BOTH(tx, t)
    assert g.dtype == F32 and np.asarray(loss).dtype == F32
    x64 = tx.double().numpy()
    rloss, rg = ref.binary_cross_entropy_with_logits_and_grad(x64, t)
    np.testing.assert_allclose(loss, rloss, rtol=8 * EPS32)
    np.testing.assert_allclose(g, rg, rtol=1e-5, atol=1e-7 * np.abs(rg).max())


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_torch_tensors_through_dlpack(name):
    torch = pytest.importorskip("torch")
    tx = (torch.randn(24, 40) * 3).to(getattr(torch, name))
    tt = torch.rand(24, 40)
    loss, g = BCE_BOTH(tx, tt.numpy())
    assert g.dtype == _arrays.as_array(tx, "x").dtype
    ref_x = tx.float().requires_grad_()
    tl = torch.nn.functional.binary_cross_entropy_with_logits(ref_x, tt)
    tl.backward()
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-6)
    # the gradient written into the tensor's own memory
    x_np = _arrays.as_array(tx, "x")
    assert BCE_GRAD(tx, tt.numpy(), out=x_np) is x_np
    np.testing.assert_array_equal(tx.view(torch.int16).numpy(), g.view(np.int16))
