"""ce_fast.dask on bfloat16 and float16 (issue 15): 16-bit blocks go to the
kernels as they are, the lazy results carry the NumPy functions' dtypes
(losses and logsumexp float32; gradients, softmax and log_softmax in the
logits' dtype), and, with the class axis in one chunk, every per-element or
per-row result equals the NumPy function's bit for bit. With the class axis
in several chunks the results are checked against the float64 reference
with tests/test_half.py's contract."""

from __future__ import annotations

import numpy as np
import pytest

da = pytest.importorskip("dask.array")

import dask  # noqa: E402

import ce_fast  # noqa: E402
import ce_fast.dask as cfd  # noqa: E402
from ce_fast import reference as ref  # noqa: E402
from ce_fast._validation import _arrays  # noqa: E402
from tests.conftest import assert_bitwise  # noqa: E402
from tests.test_half import EPS32, HALVES, IDS, half_logits, materialise, record, ulp_error, wide  # noqa: E402

F32 = np.dtype(np.float32)
SYNC = {"scheduler": "sync"}


def computed(*lazy):
    return dask.compute(*lazy, **SYNC)


def reduced_close(got, want) -> None:
    """A "mean"/"sum" loss: dask sums the blocks' float64 partials in its
    own order, so the float32 result may differ from the NumPy function's
    in its last bit."""
    assert np.asarray(got).dtype == np.asarray(want).dtype == F32
    np.testing.assert_allclose(got, want, rtol=2 * EPS32, atol=0)


def check_lazy(lazy, result) -> None:
    """The lazy dtype and meta say what compute() gives."""
    assert lazy.dtype == np.asarray(result).dtype
    assert lazy._meta.dtype == np.asarray(result).dtype


CE_OPTIONS = [
    {},
    {"reduction": "sum", "grad_output": 0.5},
    {"reduction": "none", "grad_output": "go"},
    {"weight": "w", "label_smoothing": 0.1, "z_loss": 1e-3, "ignore_index": 2},
    {"softcap": 4.0, "reduction": "sum"},
    {"sample_weight": "sw", "reduction": "none", "grad_output": "go"},
]


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("opts", CE_OPTIONS, ids=lambda o: ",".join(o) or "default")
def test_cross_entropy_rows_equal_numpy_bitwise(dt, opts):
    N, C = 45, 33
    x = half_logits(dt, (N, C), seed=41)
    y = np.random.default_rng(42).integers(0, C, N)
    kw = materialise(opts, N, C)
    X = da.from_array(x, chunks=(7, C))
    loss, g = cfd.cross_entropy_and_grad(X, y, **kw)
    assert g.dtype == dt
    lc, gc = computed(loss, g)
    want_loss, want_g = ce_fast.cross_entropy_and_grad(x, y, **kw)
    check_lazy(loss, want_loss)
    check_lazy(g, want_g)
    assert_bitwise(gc, want_g)
    kw.pop("grad_output", None)
    alone = cfd.cross_entropy(X, y, **kw)
    check_lazy(alone, want_loss)
    if kw.get("reduction") == "none":
        assert_bitwise(lc, want_loss)
        assert_bitwise(alone.compute(**SYNC), want_loss)
    else:
        reduced_close(lc, want_loss)
        reduced_close(alone.compute(**SYNC), want_loss)
    grad_alone = cfd.cross_entropy_grad(X, y, **materialise(opts, N, C))
    check_lazy(grad_alone, want_g)
    assert_bitwise(grad_alone.compute(**SYNC), want_g)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_cross_entropy_layouts(dt):
    """The class axis not last (moved lazily: the contract, as the kernel
    may take another path for the NumPy function's strided layout),
    probability targets of a 16-bit dtype, NaN / inf rows; a 1-d problem
    (bitwise)."""
    x = half_logits(dt, (6, 9, 8), seed=43)
    x[0, 0, 0] = np.nan
    x[1, 0, 1] = np.inf
    x[2, :, 2] = -np.inf
    q = ce_fast.softmax(half_logits(dt, (6, 9, 8), seed=44), axis=1)
    assert q.dtype == dt
    for t in (np.random.default_rng(45).integers(0, 9, (6, 8)), q):
        X = da.from_array(x, chunks=(2, 9, 3))
        loss, g = computed(*cfd.cross_entropy_and_grad(X, t, axis=1, reduction="none"))
        assert loss.dtype == F32 and g.dtype == dt
        rloss, rg = ref.cross_entropy_and_grad(
            wide(x), t if t.dtype.kind == "i" else wide(t), axis=1, reduction="none"
        )
        np.testing.assert_allclose(loss, rloss, rtol=8 * EPS32)
        assert ulp_error(dt, g, rg, np.max(np.abs(rg), axis=1, keepdims=True)) <= 1.0
    x1 = half_logits(dt, (11,), seed=46)
    loss, g = computed(*cfd.cross_entropy_and_grad(da.from_array(x1, chunks=11), 3, reduction="none"))
    want = ce_fast.cross_entropy_and_grad(x1, 3, reduction="none")
    assert_bitwise(loss, want[0])
    assert_bitwise(g, want[1])


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize(
    "opts", [{}, {"label_smoothing": 0.1, "z_loss": 1e-3}, {"softcap": 3.0}, {"probs": 1}]
)
def test_cross_entropy_class_chunks_against_float64(dt, opts):
    """Class-chunked blocks (widened to float32 for the merge arithmetic,
    rounded once): the contract against the float64 reference."""
    N, C = 30, 50
    x = half_logits(dt, (N, C), seed=47)
    x[4, 7] = -np.inf
    kw = {k: v for k, v in opts.items() if k != "probs"}
    if opts.get("probs"):
        t = ce_fast.softmax(half_logits(np.dtype(np.float32), (N, C), seed=48))
    else:
        t = np.random.default_rng(49).integers(0, C, N)
    X = da.from_array(x, chunks=(10, 13))
    loss, g = cfd.cross_entropy_and_grad(X, t, reduction="sum", **kw)
    assert g.dtype == dt and loss.dtype == F32
    lc, gc = computed(loss, g)
    assert gc.dtype == dt and np.asarray(lc).dtype == F32
    rloss, rg = ref.cross_entropy_and_grad(wide(x), t, reduction="sum", **kw)
    np.testing.assert_allclose(lc, rloss, rtol=8 * EPS32)
    e = ulp_error(dt, gc, rg, np.max(np.abs(rg), axis=1, keepdims=True))
    record(dt, e)
    assert e <= 1.0


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_family(dt, name, axis):
    x = half_logits(dt, (24, 40), seed=50)
    x[3, 5] = -np.inf
    x[7, :] = -np.inf
    x[9, 2] = np.nan
    want = getattr(ce_fast, name)(x, axis=axis)
    exact = getattr(ref, name)(wide(x), axis=axis)
    # the class axis in one chunk: last, the kernel's bits; moved last
    # (blocks of transposed rows, which the kernel sums in another order than
    # the NumPy function's strided layout, for float32 too): the contract
    rows = getattr(cfd, name)(da.from_array(x, chunks=(8, 40) if axis == -1 else (24, 10)), axis=axis)
    # in several chunks: the contract
    split = getattr(cfd, name)(da.from_array(x, chunks=(8, 15)), axis=axis)
    for lazy in (rows, split):
        check_lazy(lazy, want)
        got = lazy.compute(**SYNC)
        if lazy is rows and axis == -1:
            assert_bitwise(got, want)
        elif name == "logsumexp":
            np.testing.assert_allclose(got, exact, rtol=8 * EPS32, atol=8 * EPS32)
        else:
            e = ulp_error(dt, got, exact)
            record(dt, e)
            assert e <= 1.0


BCE_OPTIONS = [
    {},
    {"reduction": "sum", "grad_output": 2.0},
    {"reduction": "none", "grad_output": "go"},
    {"weight": "w", "pos_weight": "pw"},
]


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
@pytest.mark.parametrize("opts", BCE_OPTIONS, ids=lambda o: ",".join(o) or "default")
@pytest.mark.parametrize(
    "shape,chunks", [((30, 20), (7, 6)), ((), ()), ((0, 4), (0, 2))], ids=["2d", "0d", "empty"]
)
def test_binary_equals_numpy_bitwise(dt, opts, shape, chunks):
    rng = np.random.default_rng(51)
    x = half_logits(dt, shape, seed=52)
    t = rng.random(shape[-1:]).astype(np.float32)  # broadcast along the rows
    kw = dict(opts)
    if opts.get("weight") == "w":
        kw["weight"] = rng.uniform(0.5, 2.0, shape).astype(dt)
        kw["pos_weight"] = rng.uniform(0.5, 2.0, shape[-1:]).astype(np.float32)
    if opts.get("grad_output") == "go":
        kw["grad_output"] = da.from_array(rng.uniform(-1, 1, shape).astype(np.float32), chunks=chunks or ())
    X = da.from_array(x, chunks=chunks or ())
    loss, g = cfd.binary_cross_entropy_with_logits_and_grad(X, t, **kw)
    lc, gc = computed(loss, g)
    np_kw = {k: (v.compute() if hasattr(v, "compute") else v) for k, v in kw.items()}
    want_loss, want_g = ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, **np_kw)
    check_lazy(g, want_g)
    check_lazy(loss, want_loss)
    assert gc.dtype == dt
    assert_bitwise(gc, want_g)
    if kw.get("reduction") == "none":
        assert_bitwise(lc, want_loss)
    elif x.size:
        reduced_close(lc, want_loss)
    else:
        assert np.isnan(lc) == np.isnan(want_loss)
    gonly = cfd.binary_cross_entropy_with_logits_grad(X, t, **kw)
    check_lazy(gonly, want_g)
    assert_bitwise(gonly.compute(**SYNC), want_g)


@pytest.mark.parametrize("dt", HALVES, ids=IDS)
def test_blocks_reach_the_kernels_in_16_bits(dt, monkeypatch):
    """No float32 copy of a block on the way: every kernel call of the
    rows paths and of binary gets the 16-bit block."""
    seen = []
    kernels = {
        "cross_entropy",
        "cross_entropy_and_grad",
        "softmax",
        "log_softmax",
        "logsumexp",
        "binary_cross_entropy_with_logits_and_grad",
    }
    for name in kernels:
        fn = getattr(ce_fast, name)

        def spy(x, *a, _fn=fn, _name=name, **k):
            seen.append((_name, np.asarray(x).dtype))
            return _fn(x, *a, **k)

        monkeypatch.setattr(ce_fast, name, spy)
    x = half_logits(dt, (20, 12), seed=53)
    X = da.from_array(x, chunks=(5, 12))
    y = np.arange(20) % 12
    computed(
        *cfd.cross_entropy_and_grad(X, y),
        cfd.cross_entropy(X, y),
        cfd.softmax(X),
        cfd.log_softmax(X),
        cfd.logsumexp(X),
        *cfd.binary_cross_entropy_with_logits_and_grad(X, np.float32(1.0)),
    )
    assert {n for n, _ in seen} == kernels
    assert all(d == dt for _, d in seen), seen


def test_without_ml_dtypes_bfloat16_comes_back_float32(monkeypatch):
    """Without ml_dtypes (bfloat16 as tagged uint16, from DLPack), the lazy
    gradient and softmax are float32, as the NumPy functions return, in
    both the rows and the class-chunked paths."""
    torch = pytest.importorskip("torch")
    tagged = np.dtype(np.uint16, metadata={"ce_fast": "bfloat16"})
    monkeypatch.setattr(_arrays, "BFLOAT16", tagged)
    x = _arrays.as_array(torch.randn(16, 24).to(torch.bfloat16), "x")
    assert x.dtype == tagged
    y = np.arange(16) % 24
    want_g = ce_fast.cross_entropy_grad(x, y)
    assert want_g.dtype == F32
    x64 = torch.from_numpy(x.view(np.int16)).view(torch.bfloat16).double().numpy()
    for chunks in ((4, 24), (4, 10)):
        X = da.from_array(x, chunks=chunks)
        g = cfd.cross_entropy_grad(X, y)
        s = cfd.softmax(X)
        assert g.dtype == s.dtype == F32
        gc, sc = computed(g, s)
        assert gc.dtype == sc.dtype == F32
        np.testing.assert_allclose(gc, ref.cross_entropy_grad(x64, y), rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(sc, ref.softmax(x64), rtol=1e-5, atol=1e-7)
        if chunks[1] == 24:
            assert_bitwise(gc, want_g)
