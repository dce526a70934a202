"""bfloat16 and float16 logits, computed natively (issue 15): read in place,
computed in float32, results of the logits' shape stored rounded to nearest
even in the input's dtype (or float32 with a float32 out=).

Oracle: ce_fast.reference on the 16-bit values widened to float64 (exact),
i.e. the exact result for the rounded inputs. The contract: the loss to
float32 accuracy (relative, small losses included); each gradient, softmax
and log_softmax element within 1 unit of the 16-bit format of the exact
value (the float32 arithmetic adds a few float32 ulps of the row's scale on
top of the final rounding, which the bound allows for where values cancel)."""

from __future__ import annotations

import importlib

import numpy as np
import pytest

import ce_fast
from ce_fast import _categorical, _core
from ce_fast import reference as ref
from ce_fast._validation import _arrays
from tests.conftest import assert_bitwise

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
F16 = np.dtype(np.float16)
HALVES = [BF16, F16]
IDS = ["bfloat16", "float16"]
# (mantissa bits incl. the implicit one, smallest normal exponent)
FORMAT = {BF16: (8, -126), F16: (11, -14)}
EPS32 = 2.0**-24


def ulp(dt: np.dtype, v: np.ndarray) -> np.ndarray:
    """The spacing of the 16-bit format at |v| (its subnormal spacing below
    the smallest normal)."""
    p, emin = FORMAT[dt]
    a = np.abs(np.asarray(v, np.float64))
    e = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    return 2.0 ** (np.maximum(e, emin) - (p - 1))


def ulp_error(dt: np.dtype, got: np.ndarray, exact: np.ndarray, scale: np.ndarray | float = 0.0) -> float:
    """max |got - exact| in units of the format at exact; an absolute error
    of a few float32 ulps of `scale` (the row's magnitude, where terms
    cancel) is forgiven."""
    g = np.asarray(got).astype(np.float64)
    e = np.asarray(exact, np.float64)
    both_nan = np.isnan(g) & np.isnan(e)
    same_inf = np.isinf(e) & (g == e)
    with np.errstate(invalid="ignore"):
        err = np.abs(g - e) - 8 * EPS32 * np.asarray(scale)
    err = np.where(both_nan | same_inf, 0.0, np.maximum(err, 0.0))
    return float(np.max(err / ulp(dt, e), initial=0.0))


def half_logits(dt: np.dtype, shape: tuple[int, ...], seed: int = 0, scale: float = 3.0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(dt)


def wide(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float64)


MAX_ULP: dict[str, float] = {}  # the worst measured, per dtype (printed by the summary test)


def record(dt: np.dtype, e: float) -> None:
    key = IDS[HALVES.index(dt)]
    MAX_ULP[key] = max(MAX_ULP.get(key, 0.0), e)


OPTIONS = [
    {},
    {"reduction": "sum"},
    {"reduction": "none"},
    {"weight": "w"},
    {"sample_weight": "sw"},
    {"ignore_index": 1},
    {"label_smoothing": 0.1},
    {"z_loss": 1e-3},
    {"softcap": 5.0},
    {"grad_output": "go", "reduction": "none"},
    {"weight": "w", "sample_weight": "sw", "label_smoothing": 0.2, "z_loss": 1e-2, "ignore_index": 0},
]


def materialise(opts: dict, N: int, C: int, seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    out = dict(opts)
    if opts.get("weight") == "w":
        out["weight"] = rng.uniform(0.2, 2.0, C).astype(np.float32)
    if opts.get("sample_weight") == "sw":
        out["sample_weight"] = rng.uniform(0.2, 2.0, N).astype(np.float32)
    if opts.get("grad_output") == "go":
        out["grad_output"] = rng.uniform(-2.0, 2.0, N).astype(np.float32)
    return out


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("C", [5, 40, 300])
@pytest.mark.parametrize("opts", OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_categorical_against_float64(dt, C, opts):
    N = 67
    x = half_logits(dt, (N, C), seed=C)
    y = np.random.default_rng(2).integers(0, C, N)
    kw = materialise(opts, N, C)
    loss, g = ce_fast.cross_entropy_and_grad(x, y, **kw)
    rloss, rg = ref.cross_entropy_and_grad(wide(x), y, **kw)
    assert g.dtype == dt and g.shape == x.shape
    loss = np.asarray(loss)
    assert loss.dtype == np.float32
    np.testing.assert_allclose(loss, rloss, rtol=8 * EPS32, atol=0)
    scale = np.max(np.abs(rg), axis=1, keepdims=True)
    e = ulp_error(dt, g, rg, scale)
    record(dt, e)
    assert e <= 1.0
    # loss alone: the same loss as the fused pass
    kw.pop("grad_output", None)
    np.testing.assert_array_equal(ce_fast.cross_entropy(x, y, **kw), loss)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_gradient_is_correctly_rounded_without_options(dt):
    """Without cancelling options, every element is the exact gradient
    rounded once: within half a unit (plus float32 noise)."""
    x = half_logits(dt, (50, 1000), seed=3)
    y = np.arange(50) * 7 % 1000
    g = ce_fast.cross_entropy_grad(x, y, reduction="sum")
    rg = ref.cross_entropy_grad(wide(x), y, reduction="sum")
    e = ulp_error(dt, g, rg)
    record(dt, e)
    assert e <= 0.51


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_small_losses_keep_relative_accuracy(dt):
    """Confident rows: losses ~1e-6..1e-30 and their gradients (p_y - 1 ~
    -loss) to relative float32 accuracy / 1 unit of the format."""
    N, C = 64, 50
    x = np.zeros((N, C), np.float64)
    y = np.arange(N) % C
    margin = np.linspace(10.0, 60.0, N)
    x[np.arange(N), y] = margin
    x = x.astype(dt)
    loss, g = ce_fast.cross_entropy_and_grad(x, y, reduction="none")
    rloss, rg = ref.cross_entropy_and_grad(wide(x), y, reduction="none")
    assert np.all(rloss > 0) and rloss.min() < 1e-8
    rel = np.max(np.abs(loss.astype(np.float64) - rloss) / rloss)
    MAX_ULP[f"small-loss rel {IDS[HALVES.index(dt)]}"] = float(rel)
    assert rel <= 8 * EPS32
    e = ulp_error(dt, g, rg)
    record(dt, e)
    assert e <= 1.0


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize(
    "shape,axis,sliced",
    [((40, 7, 9), 1, False), ((6, 30, 20), 1, False), ((300, 24), -1, True), ((4, 70000), -1, False)],
    ids=["tile-inner", "tile-inner-wide", "strided", "huge-rows"],
)
def test_categorical_layouts(dt, shape, axis, sliced):
    x = half_logits(dt, shape, seed=4)
    if sliced:
        x = x[::2, ::2]
    C = x.shape[axis]
    sample_shape = tuple(n for k, n in enumerate(x.shape) if k != axis % x.ndim)
    y = np.random.default_rng(5).integers(0, C, sample_shape)
    loss, g = ce_fast.cross_entropy_and_grad(x, y, axis=axis, label_smoothing=0.05)
    rloss, rg = ref.cross_entropy_and_grad(wide(x), y, axis=axis, label_smoothing=0.05)
    np.testing.assert_allclose(loss, rloss, rtol=8 * EPS32)
    e = ulp_error(dt, g, rg, np.max(np.abs(rg), axis=axis, keepdims=True))
    record(dt, e)
    assert e <= 1.0


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("C", [5, 3000])
def test_bitwise_identical_across_threads(dt, C):
    N = 40000 // C * 4
    x = half_logits(dt, (N, C), seed=6)
    y = np.random.default_rng(7).integers(0, C, N)
    r = [ce_fast.cross_entropy_and_grad(x, y, num_threads=nt, z_loss=1e-3) for nt in (1, 2, 3)]
    for loss, g in r[1:]:
        assert loss.tobytes() == r[0][0].tobytes()
        assert g.view(np.uint16).tobytes() == r[0][1].view(np.uint16).tobytes()
    s = [ce_fast.softmax(x, num_threads=nt) for nt in (1, 2)]
    assert s[0].view(np.uint16).tobytes() == s[1].view(np.uint16).tobytes()


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_streamed_gradient_has_the_bits_of_the_cached_one(isa, dt):
    """A 16-bit gradient of >= 16 MiB is written by streaming stores (at
    AVX-512, from a 64-byte boundary, the row's ragged ends by plain ones):
    the same bits as the rows computed in calls too small to stream, for a
    misaligned output and a row length that is not a multiple of 32; the
    kernel's counter shows the streaming call took that path."""
    from tests.test_tile_path import paths_taken

    N, C = 257, 32771  # 16.8 MB of gradient
    x = half_logits(dt, (N, C), seed=3)
    x[7, 11] = np.nan  # a bad row: NaN-filled by plain stores
    y = np.random.default_rng(4).integers(0, C, N)
    buf = np.empty(N * C + 5, dt)
    out = buf[5:].reshape(N, C)  # 10 bytes past the allocation's alignment
    assert "stream" in paths_taken(ce_fast.cross_entropy_and_grad, x, y, out=out, reduction="none")
    loss, _ = ce_fast.cross_entropy_and_grad(x, y, out=out, reduction="none")
    parts = [
        ce_fast.cross_entropy_and_grad(x[i : i + 64], y[i : i + 64], reduction="none")
        for i in range(0, N, 64)
    ]
    assert_bitwise(out, np.concatenate([g for _, g in parts]))
    assert_bitwise(loss, np.concatenate([v for v, _ in parts]))


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("C", [5, 300])
def test_out_dtypes_and_in_place(dt, C):
    x = half_logits(dt, (33, C), seed=8)
    y = np.arange(33) % C
    g = ce_fast.cross_entropy_grad(x, y)
    # out= in float32: the same computation, rounded only to float32
    g32 = np.empty(x.shape, np.float32)
    assert ce_fast.cross_entropy_grad(x, y, out=g32) is g32
    rg = ref.cross_entropy_grad(wide(x), y)
    np.testing.assert_allclose(g32, rg, rtol=1e-5, atol=1e-6 * np.abs(rg).max())
    np.testing.assert_array_equal(g32.astype(dt).view(np.uint16), g.view(np.uint16))
    # out= in the input's dtype, and out=logits in place
    g16 = np.empty_like(x)
    assert ce_fast.cross_entropy_grad(x, y, out=g16) is g16
    assert g16.view(np.uint16).tobytes() == g.view(np.uint16).tobytes()
    xc = x.copy()
    loss, gi = ce_fast.cross_entropy_and_grad(xc, y, out=xc)
    assert gi is xc and gi.view(np.uint16).tobytes() == g.view(np.uint16).tobytes()
    with pytest.raises(ValueError, match="dtype"):
        ce_fast.cross_entropy_grad(x, y, out=np.empty(x.shape, np.float64))
    # softmax / log_softmax likewise
    for fn in (ce_fast.softmax, ce_fast.log_softmax):
        s = fn(x)
        assert s.dtype == dt
        s32 = fn(x, out=np.empty(x.shape, np.float32))
        np.testing.assert_array_equal(s32.astype(dt).view(np.uint16), s.view(np.uint16))
        xc = x.copy()
        assert fn(xc, out=xc) is xc and xc.view(np.uint16).tobytes() == s.view(np.uint16).tobytes()


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize(
    "shape,axis", [((30, 257), -1), ((8, 12, 33), 1), ((5, 6, 7), (1, 2)), ((20, 3), 0)], ids=str
)
def test_softmax_family_against_float64(dt, shape, axis):
    x = half_logits(dt, shape, seed=9)
    x.flat[3] = -np.inf
    for name in ("softmax", "log_softmax"):
        got = getattr(ce_fast, name)(x, axis=axis)
        exact = getattr(ref, name)(wide(x), axis=axis)
        assert got.dtype == dt
        e = ulp_error(dt, got, exact)
        record(dt, e)
        assert e <= 0.51 if name == "softmax" else e <= 1.0
    lse = ce_fast.logsumexp(x, axis=axis)
    assert np.asarray(lse).dtype == np.float32
    np.testing.assert_allclose(lse, ref.logsumexp(wide(x), axis=axis), rtol=8 * EPS32, atol=8 * EPS32)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_edge_values(dt):
    x = np.array(
        [
            [0.0, 1.0, np.nan],
            [np.inf, 0.0, 1.0],
            [-np.inf, -np.inf, -np.inf],
            [-np.inf, 2.0, 1.0],
            [1e-40, 0, 0],
        ]
    ).astype(dt)
    y = np.array([0, 1, 2, 1, 0])
    loss, g = ce_fast.cross_entropy_and_grad(x, y, reduction="none")
    rloss, rg = ref.cross_entropy_and_grad(wide(x), y, reduction="none")
    np.testing.assert_array_equal(np.isnan(loss), np.isnan(rloss))
    assert ulp_error(dt, g, rg) <= 1.0
    s = ce_fast.softmax(x)
    assert np.isnan(s[:3].astype(np.float32)).all() and s[3, 0] == 0


def test_bf16_rounding_is_nearest_even_everywhere():
    """The stores round to nearest even (denormals included) and keep NaN
    quiet: a softmax of rows [v, -inf] is exactly [1, 0], and the gradient
    of a sum-reduced loss scaled by grad_output lands on float32 values
    whose bf16 rounding ml_dtypes (RNE) agrees with, on every ISA."""
    rng = np.random.default_rng(10)
    x = rng.standard_normal((64, 300)).astype(BF16)
    y = np.arange(64)
    ref32 = np.empty(x.shape, np.float32)
    for isa in _core.build_facts()["isa_supported"]:
        prev = _core.isa()
        try:
            assert _core.set_isa(isa)
            for go in (1.0, 1e-38, 3e-39):  # float32 denormal gradients
                ce_fast.cross_entropy_grad(x, y, reduction="sum", grad_output=go, out=ref32)
                g = ce_fast.cross_entropy_grad(x, y, reduction="sum", grad_output=go)
                np.testing.assert_array_equal(g.view(np.uint16), ref32.astype(BF16).view(np.uint16))
                assert go > 1e-38 or np.count_nonzero(g.astype(np.float32)) > 0
        finally:
            _core.set_isa(prev)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_every_isa_gives_the_same_bits(dt):
    x = half_logits(dt, (48, 77), seed=11)
    y = np.arange(48) % 77
    prev = _core.isa()
    results = []
    try:
        for isa in _core.build_facts()["isa_supported"]:
            assert _core.set_isa(isa)
            _, g = ce_fast.cross_entropy_and_grad(x, y, label_smoothing=0.1)
            results.append((g.view(np.uint16).tobytes(), ce_fast.softmax(x).view(np.uint16).tobytes()))
    finally:
        _core.set_isa(prev)
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_read_in_place(dt):
    """No copy of the logits: the kernel gets the caller's memory."""
    x = half_logits(dt, (16, 10))
    call = _categorical.prepare(
        x, np.zeros(16, np.int64), axis=-1, weight=None, sample_weight=None, ignore_index=-100,
        reduction="mean", label_smoothing=0.0, z_loss=0.0, softcap=None, num_threads=None,
    )  # fmt: skip
    assert call.x is x


@pytest.mark.parametrize("name", ["bfloat16", "float16"])
def test_torch_tensors_through_dlpack(name):
    torch = pytest.importorskip("torch")
    dt = {"bfloat16": BF16, "float16": F16}[name]
    t = torch.randn(24, 40).to(getattr(torch, name))
    y = torch.arange(24) % 40
    x_np = _arrays.as_array(t, "logits")
    assert x_np.dtype == dt and x_np.__array_interface__["data"][0] == t.data_ptr()
    loss, g = ce_fast.cross_entropy_and_grad(t, y.numpy())
    assert g.dtype == dt
    tt = t.float().requires_grad_()
    tl = torch.nn.functional.cross_entropy(tt, y)
    tl.backward()
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-6)
    assert ulp_error(dt, g, tt.grad.double().numpy()) <= 1.0
    # out= the tensor's own memory: the gradient is written into the tensor
    before = t.clone()
    g2 = ce_fast.cross_entropy_grad(t, y.numpy(), out=x_np)
    assert g2 is x_np
    np.testing.assert_array_equal(t.view(torch.int16).numpy(), g.view(np.int16))
    assert not torch.equal(t, before)


def test_without_ml_dtypes_bfloat16_comes_back_float32(monkeypatch):
    """ml_dtypes is optional: bfloat16 memory (from DLPack) is then tagged
    uint16, computed natively, and results of the logits' shape are float32."""
    torch = pytest.importorskip("torch")
    tagged = np.dtype(np.uint16, metadata={"ce_fast": "bfloat16"})
    monkeypatch.setattr(_arrays, "BFLOAT16", tagged)
    t = torch.randn(20, 30).to(torch.bfloat16)
    y = np.arange(20) % 30
    x_np = _arrays.as_array(t, "logits")
    assert x_np.dtype == np.uint16 and _arrays.is_bfloat16(x_np.dtype)
    loss, g = ce_fast.cross_entropy_and_grad(t, y)
    assert g.dtype == np.float32 and np.asarray(loss).dtype == np.float32
    exact = ref.cross_entropy_grad(t.double().numpy(), y)
    np.testing.assert_allclose(g, exact, rtol=1e-5, atol=1e-7)
    s = ce_fast.softmax(t)
    assert s.dtype == np.float32
    np.testing.assert_allclose(s, ref.softmax(t.double().numpy()), rtol=1e-5, atol=1e-7)
    # a plain uint16 array is still integers
    assert ce_fast.softmax(np.arange(3, dtype=np.uint16)).dtype == np.float64


def test_module_reload_without_ml_dtypes(monkeypatch):
    """The import fallback itself: with ml_dtypes unimportable, BFLOAT16 is
    the tagged uint16."""
    import builtins

    real_import = builtins.__import__

    def no_ml_dtypes(name, *args, **kw):
        if name == "ml_dtypes":
            raise ImportError("no ml_dtypes")
        return real_import(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_ml_dtypes)
    fresh = importlib.reload(_arrays)
    try:
        assert fresh.BFLOAT16 == np.uint16 and fresh.BFLOAT16.metadata
        assert fresh.result_dtype(fresh.BFLOAT16) == np.float32
    finally:
        monkeypatch.setattr(builtins, "__import__", real_import)
        importlib.reload(_arrays)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_other_families_compute_a_float32_conversion(dt):
    """Documented: the divergences (ce_fast.dask's too) convert 16-bit
    inputs to float32 (exactly) and return float32; linear_cross_entropy
    computes in float32 and returns its gradients in the 16-bit dtype, each
    the float32 value rounded once (in one chunk: exactly the float32 path's
    gradients, rounded; more in tests/test_linear_half.py); entropy and
    softmax_entropy (the softmax kernels) read them natively and return
    float32. (The binary family: tests/test_half_binary.py; the rest of
    ce_fast.dask: tests/test_dask_half.py.)"""
    da = pytest.importorskip("dask.array")
    import ce_fast.dask as cd

    x = half_logits(dt, (32, 9), seed=12)
    x32 = x.astype(np.float32)
    y = np.arange(32) % 9
    h, w = half_logits(dt, (32, 6), seed=13), half_logits(dt, (9, 6), seed=14)
    got = ce_fast.linear_cross_entropy_and_grad(h, w, y)
    want = ce_fast.linear_cross_entropy_and_grad(h.astype(np.float32), w.astype(np.float32), y)
    assert np.asarray(got[0]).dtype == np.float32 and got[0] == want[0]
    for a, b in zip(got[1:3], want[1:3]):
        assert a.dtype == dt
        np.testing.assert_array_equal(a.view(np.uint16), b.astype(dt).view(np.uint16))
    dx, t = da.from_array(x, chunks=(8, 9)), x[::-1]
    d, g = cd.kl_divergence_and_grad(dx, t)
    assert g.dtype == np.float32 and g.compute().dtype == np.float32
    want = ce_fast.kl_divergence_and_grad(x32, t.astype(np.float32))
    np.testing.assert_allclose(d.compute(), want[0], rtol=1e-6)
    np.testing.assert_array_equal(g.compute(), want[1])
    p = ce_fast.softmax(x)
    for fn, arg in ((ce_fast.entropy, p), (ce_fast.softmax_entropy, x)):
        got_h = fn(arg)
        assert got_h.dtype == np.float32
        np.testing.assert_allclose(got_h, getattr(ref, fn.__name__)(wide(arg)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("C", [7, 500])
@pytest.mark.parametrize("softcap", [None, 4.0])
def test_gradient_from_saved_lse(dt, C, softcap):
    """The saved-lse backward (an autograd's) reads 16-bit logits too, into
    16-bit or float32 gradients, in place included."""
    x = half_logits(dt, (40, C), seed=15)
    y = np.arange(40) % C
    y[3] = -100
    kw = {"softcap": softcap, "label_smoothing": 0.1, "reduction": "sum"}
    _, lse = ce_fast.cross_entropy(x, y, return_lse=True, **kw)
    assert lse.dtype == np.float64
    g = ce_fast.cross_entropy_grad(x, y, lse=lse, **kw)
    rg = ref.cross_entropy_grad(wide(x), y, **kw)
    assert g.dtype == dt
    e = ulp_error(dt, g, rg, np.max(np.abs(rg), axis=1, keepdims=True))
    record(dt, e)
    assert e <= 1.0
    g32 = ce_fast.cross_entropy_grad(x, y, lse=lse, out=np.empty(x.shape, np.float32), **kw)
    np.testing.assert_array_equal(g32.astype(dt).view(np.uint16), g.view(np.uint16))
    xc = x.copy()
    assert ce_fast.cross_entropy_grad(xc, y, lse=lse, out=xc, **kw) is xc
    np.testing.assert_array_equal(xc.view(np.uint16), g.view(np.uint16))


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("tdt", ["same", np.float32, np.float64])
def test_probability_targets(dt, tdt):
    """Probability targets of any float dtype (converted to float32, the
    compute dtype); 16-bit targets exactly."""
    x = half_logits(dt, (30, 12), seed=16)
    q = ce_fast.softmax(half_logits(np.dtype(np.float32), (30, 12), seed=17)).astype(np.float64)
    q = q.astype(dt if tdt == "same" else tdt)
    loss, g = ce_fast.cross_entropy_and_grad(x, q, weight=np.linspace(0.5, 2, 12), z_loss=1e-3)
    q32 = q.astype(np.float32).astype(np.float64)  # what the kernel reads
    rloss, rg = ref.cross_entropy_and_grad(wide(x), q32, weight=np.linspace(0.5, 2, 12), z_loss=1e-3)
    np.testing.assert_allclose(loss, rloss, rtol=8 * EPS32)
    e = ulp_error(dt, g, rg, np.max(np.abs(rg), axis=1, keepdims=True))
    record(dt, e)
    assert e <= 1.0


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_16bit_weights_and_entropy_errors(dt):
    x = half_logits(dt, (25, 6), seed=18)
    y = np.arange(25) % 6
    w, sw = np.linspace(0.5, 2, 6).astype(dt), np.linspace(1, 3, 25).astype(dt)
    loss, g = ce_fast.cross_entropy_and_grad(x, y, weight=w, sample_weight=sw)
    rloss, rg = ref.cross_entropy_and_grad(wide(x), y, weight=wide(w), sample_weight=wide(sw))
    np.testing.assert_allclose(loss, rloss, rtol=8 * EPS32)
    assert ulp_error(dt, g, rg, np.max(np.abs(rg), axis=1, keepdims=True)) <= 1.0
    for shape, axis, where in (((4, 9), -1, (2, 5)), ((3, 5, 8), 1, (1, 3, 6))):
        p = np.full(shape, 0.1).astype(dt)
        p[where] = -0.25
        flat = int(np.ravel_multi_index(where, shape))
        with pytest.raises(ValueError, match=f"-0.25 at flat position {flat}"):
            ce_fast.entropy(p, axis=axis)


def test_bfloat16_store_rounding_exhaustive_around_halfway():
    """The bf16 store is round-to-nearest-even on every float32 pattern class
    (ties, NaNs, infinities, denormals): softmax of [v, -inf] rows stores
    exactly 1 and 0, and out=float32 vs bf16 output agree with ml_dtypes'
    RNE for gradients spanning many binades."""
    rng = np.random.default_rng(19)
    x = (rng.standard_normal((256, 40)) * np.logspace(-3, 2, 256)[:, None]).astype(BF16)
    y = np.arange(256) % 40
    g32 = ce_fast.cross_entropy_grad(x, y, out=np.empty(x.shape, np.float32), reduction="sum")
    g16 = ce_fast.cross_entropy_grad(x, y, reduction="sum")
    np.testing.assert_array_equal(g16.view(np.uint16), g32.astype(BF16).view(np.uint16))
    s = ce_fast.softmax(np.array([[0.0, -np.inf]] * 20, dtype=BF16))
    np.testing.assert_array_equal(s.astype(np.float32), [[1.0, 0.0]] * 20)


def test_zz_report_max_ulp():
    """(prints the worst gradient / softmax error measured above, in units
    of the format; pytest -s shows it)"""
    print("\nmax error (ulp of the 16-bit format; small-loss: relative):", MAX_ULP)
