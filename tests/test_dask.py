"""ce_fast.dask against the NumPy ce_fast functions on the materialised arrays.

Every chunking -- whole rows per block, the class axis in several blocks
(vocabulary-sharded), both at once, a single block -- must give the NumPy
result to rounding (the conftest tolerances: 1e-12 relative in float64, 2e-6
in float32, NaN and +-inf in exactly the same places), for every option,
reduction and target kind. The broad matrix runs on the threaded scheduler;
a representative set runs on a real two-process ``distributed.LocalCluster``
(created once for the module). Determinism (bitwise, for a fixed chunking,
whatever the scheduler) and the eager errors are checked too.

Run from the repository root; the tests need ``ce_fast.dask`` to be
importable (an installed ce_fast that contains it, or the source tree on
``sys.path``, e.g. ``python -m pytest tests/test_dask.py``).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")

import dask  # noqa: E402

import ce_fast  # noqa: E402
import ce_fast.dask as cfd  # noqa: E402
import ce_fast.reference as ref  # noqa: E402
from tests.conftest import assert_bitwise, assert_close, categorical_grad_term_scale, seed_for  # noqa: E402

DTYPES = [np.float32, np.float64]
REDUCTIONS = ["mean", "sum", "none"]
N, C = 29, 23
CHUNKINGS = {
    "single": (N, C),
    "rows": (8, C),
    "classes": (N, 6),
    "both": (10, 8),
}
OPTIONS = {
    "plain": {},
    "weight": {"weight": "W"},
    "sample_smooth": {"sample_weight": "SW", "label_smoothing": 0.15},
    "zloss_cap": {"z_loss": 1e-3, "softcap": 4.0},
    "all": {"weight": "W", "sample_weight": "SW", "label_smoothing": 0.1, "z_loss": 1e-2, "softcap": 6.0},
}
THREADS = {"scheduler": "threads"}


def _rng(*key):
    return np.random.default_rng(seed_for(*key))


def _problem(dt, kind, opts, *key, n=N, c=C):
    """Logits with some -inf masked classes (not on targets, not where
    label smoothing would make the loss infinite), a target with ignored
    samples (integer) or probabilities with no mass on masked classes, and
    the options with "W"/"SW" replaced by class / sample weights."""
    rng = _rng(dt, kind, tuple(sorted(opts)), *key)
    x = rng.standard_normal((n, c)) * 3.0
    y = rng.integers(0, c, n)
    mask = (rng.random((n, c)) < 0.15) & (np.arange(c) != y[:, None])
    if opts.get("label_smoothing", 0) == 0:
        x[mask] = -np.inf
    kw = dict(opts)
    if kw.get("weight") == "W":
        kw["weight"] = rng.uniform(0.5, 2.0, c)
    if kw.get("sample_weight") == "SW":
        kw["sample_weight"] = rng.uniform(0.0, 2.0, n)
    if kind == "int":
        y[[2, 11, 20]] = -100
        t = y
    else:
        q = rng.random((n, c))
        if opts.get("label_smoothing", 0) == 0:
            q[mask] = 0.0
        t = (q / q.sum(axis=1, keepdims=True)).astype(dt)
    return x.astype(dt), t, kw


def _go(red, n, dt):
    return np.linspace(0.5, 1.5, n).astype(dt) if red == "none" else 0.75


# ---------------------------------------------------------------------------
# the categorical matrix (threaded scheduler)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("kind", ["int", "prob"])
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_cross_entropy_matches_numpy(dt, chunking, kind, option):
    x, t, kw = _problem(dt, kind, OPTIONS[option])
    X = da.from_array(x, chunks=CHUNKINGS[chunking])
    lazy = []
    for red in REDUCTIONS:
        go = _go(red, N, dt)
        lazy += [
            cfd.cross_entropy(X, t, reduction=red, **kw),
            *cfd.cross_entropy_and_grad(X, t, reduction=red, grad_output=go, **kw),
            cfd.cross_entropy_grad(X, t, reduction=red, **kw),
        ]
    for obj in lazy:
        assert isinstance(obj, da.Array)
    got = dask.compute(*lazy, **THREADS)
    for i, red in enumerate(REDUCTIONS):
        go = _go(red, N, dt)
        loss, loss2, grad, grad1 = got[4 * i : 4 * i + 4]
        L = ce_fast.cross_entropy(x, t, reduction=red, **kw)
        L2, G = ce_fast.cross_entropy_and_grad(x, t, reduction=red, grad_output=go, **kw)
        G1 = ce_fast.cross_entropy_grad(x, t, reduction=red, **kw)
        if red == "none":
            assert isinstance(loss, np.ndarray) and loss.shape == (N,)
        else:
            assert type(loss) is np.dtype(dt).type and type(loss2) is np.dtype(dt).type
        assert grad.dtype == dt and grad1.dtype == dt
        assert_close(loss, L, dt, err_msg=red)
        assert_close(loss2, L2, dt, err_msg=red)
        assert_close(
            grad, G, dt, scale=categorical_grad_term_scale(x, t, dict(kw, reduction=red), go), err_msg=red
        )
        assert_close(
            grad1, G1, dt, scale=categorical_grad_term_scale(x, t, dict(kw, reduction=red)), err_msg=red
        )
        assert np.isfinite(G1).all() and np.abs(G1).max() > 0  # the comparison is not vacuous


@pytest.mark.parametrize("kind", ["int", "prob"])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_reference_spot_check(dt, kind):
    """Class- and row-chunked, every option: against the plain-NumPy spec."""
    x, t, kw = _problem(dt, kind, OPTIONS["all"], "ref")
    X = da.from_array(x, chunks=(10, 7))
    for red in REDUCTIONS:
        loss, grad = dask.compute(*cfd.cross_entropy_and_grad(X, t, reduction=red, **kw), **THREADS)
        L, G = ref.cross_entropy_and_grad(x, t, reduction=red, **kw)
        rtol = 1e-5 if dt == np.float32 else 1e-12
        assert_close(loss, L, dt, rtol=rtol)
        assert_close(grad, G, dt, rtol=rtol, scale=categorical_grad_term_scale(x, t, dict(kw, reduction=red)))


def _special_rows(dt):
    """Rows that exercise the merge: -inf over a whole class block (block
    width 5), an all -inf row (NaN), NaN, +inf, a masked target, a confident
    row (tiny loss), a row of ties."""
    rng = _rng("special", dt)
    x = rng.standard_normal((12, 10))
    x[0, :5] = -np.inf  # class block 0 all -inf
    x[1, 5:] = -np.inf  # class block 1 all -inf
    x[2, :] = -np.inf  # the whole row: NaN
    x[3, 3] = np.nan
    x[4, 7] = np.inf
    x[5, 2] = -np.inf  # the target's logit (loss +inf)
    x[6, ::2] = -np.inf
    x[7, :] = 0.0
    x[7, 4] = 30.0  # confident: loss ~ 9 e^-30
    x[8, :] = 1.5  # ties across blocks
    y = np.array([7, 2, 0, 1, 1, 2, 1, 4, 8, 4, -100, 0])
    q = rng.random((12, 10))
    q[0, :5] = 0.0
    q[1, 5:] = 0.0
    q[6, ::2] = 0.0
    q /= q.sum(axis=1, keepdims=True)
    return x.astype(dt), y, q.astype(dt)


@pytest.mark.parametrize("chunks", [(5, 5), (12, 5), (4, 3), (3, 2), (12, 10)])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_special_rows(dt, chunks):
    x, y, q = _special_rows(dt)
    X = da.from_array(x, chunks=chunks)
    w = np.linspace(0.0, 2.0, 10)
    cases = [(y, {}), (y, {"label_smoothing": 0.1, "weight": w}), (y, {"softcap": 3.0}),
             (q, {}), (q, {"z_loss": 0.01, "label_smoothing": 0.2})]  # fmt: skip
    lazy = [cfd.cross_entropy_and_grad(X, t, reduction=red, **kw) for t, kw in cases for red in REDUCTIONS]
    got = dask.compute(*lazy, **THREADS)
    i = 0
    for t, kw in cases:
        for red in REDUCTIONS:
            L, G = ce_fast.cross_entropy_and_grad(x, t, reduction=red, **kw)
            assert_close(got[i][0], L, dt, err_msg=f"{kw} {red}")
            assert_close(got[i][1], G, dt, scale=categorical_grad_term_scale(x, t, dict(kw, reduction=red)),
                         err_msg=f"{kw} {red}")  # fmt: skip
            i += 1
    # NaN propagation is really exercised: rows 2 (all -inf), 3 (NaN), 4 (+inf)
    loss = got[2][0]
    assert np.isnan(loss[[2, 3, 4]]).all() and np.isfinite(loss[[0, 1, 6, 7, 8]]).all()
    assert np.isinf(loss[5]) and loss[10] == 0.0
    grad = got[2][1]
    assert np.isnan(grad[[2, 3, 4]]).all() and np.isfinite(grad[[0, 1, 5, 6, 7, 8]]).all()
    assert np.isnan(got[0][0]) and np.isnan(got[1][0])  # mean / sum of a NaN row
    # the confident row keeps its relative accuracy, loss and p_y - 1
    L, G = ce_fast.cross_entropy_and_grad(x, y, reduction="none")
    assert 0 < L[7] < 1e-11
    rtol = 1e-5 if dt == np.float32 else 1e-13
    np.testing.assert_allclose(loss[7], L[7], rtol=rtol)
    np.testing.assert_allclose(grad[7, 4], G[7, 4], rtol=rtol)


@pytest.mark.parametrize("chunks", [(4, 6), (4, 3), (12, 2)])
def test_ignored_row_chunk_and_zero_denominator(chunks):
    rng = _rng("ignored", chunks)
    x = rng.standard_normal((12, 6))
    y = rng.integers(0, 6, 12)
    y[4:8] = -100  # one whole row chunk ignored (with chunks (4, .))
    x[5, 1] = np.nan  # ignored rows are never read
    X = da.from_array(x, chunks=chunks)
    for kw in [
        {},
        {"weight": rng.uniform(0.5, 2, 6)},
        {"label_smoothing": 0.2, "sample_weight": rng.random(12)},
    ]:
        for red in REDUCTIONS:
            loss, grad = dask.compute(*cfd.cross_entropy_and_grad(X, y, reduction=red, **kw), **THREADS)
            L, G = ce_fast.cross_entropy_and_grad(x, y, reduction=red, **kw)
            assert_close(loss, L)
            assert_close(grad, G, scale=categorical_grad_term_scale(x, y, dict(kw, reduction=red)))
            assert np.isfinite(loss).all() and (grad[4:8] == 0).all()
    # everything ignored: mean is NaN, the gradient all zeros (as ce_fast)
    yi = np.full(12, -100)
    loss, grad = dask.compute(*cfd.cross_entropy_and_grad(X, yi), **THREADS)
    assert np.isnan(loss) and np.isnan(ce_fast.cross_entropy(x, yi))
    assert (grad == 0).all() and not np.signbit(grad).any()
    # zero total weight of non-ignored samples: NaN mean, NaN gradient rows (as ce_fast)
    for kw in [{"sample_weight": np.zeros(12)}, {"weight": np.zeros(6)}]:
        loss, grad = dask.compute(*cfd.cross_entropy_and_grad(X, y, **kw), **THREADS)
        L, G = ce_fast.cross_entropy_and_grad(x, y, **kw)
        assert np.isnan(loss) and np.isnan(L)
        assert_close(grad, G)
        assert np.isnan(grad[0]).all() and (grad[4:8] == 0).all()


@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("chunks", [(2, 7, 5), (4, 3, 5), (2, 3, 2), (4, 7, 2)])
def test_three_dims_and_axis(chunks, axis):
    rng = _rng("3d", chunks, axis)
    x = rng.standard_normal((4, 7, 5))
    X = da.from_array(x, chunks=chunks)
    sshape = tuple(n for i, n in enumerate(x.shape) if i != axis % 3)
    cls = x.shape[axis]
    y = rng.integers(0, cls, sshape)
    y.reshape(-1)[::5] = -100
    q = rng.random(x.shape)
    sw = rng.random((1,) + sshape[1:])
    go = rng.random(sshape)
    go_dask = da.from_array(go, chunks=1)
    for t in (y, q):
        for red, g in [("none", go), ("none", go_dask), ("mean", 2.0), ("sum", None)]:
            kw = dict(axis=axis, sample_weight=sw, label_smoothing=0.05, reduction=red)
            loss, grad = dask.compute(*cfd.cross_entropy_and_grad(X, t, grad_output=g, **kw), **THREADS)
            gn = np.asarray(g) if isinstance(g, da.Array) else g
            L, G = ce_fast.cross_entropy_and_grad(x, t, grad_output=gn, **kw)
            assert_close(loss, L)
            assert_close(grad, G, scale=categorical_grad_term_scale(x, t, kw, gn))
    for name in ("logsumexp", "log_softmax", "softmax"):
        assert_close(
            getattr(cfd, name)(X, axis=axis).compute(**THREADS), getattr(ce_fast, name)(x, axis=axis)
        )


@pytest.mark.parametrize("chunks", [9, 4])
def test_one_dimensional(chunks):
    x = _rng("1d").standard_normal(9)
    X = da.from_array(x, chunks=chunks)
    loss, grad = dask.compute(*cfd.cross_entropy_and_grad(X, 3), **THREADS)
    L, G = ce_fast.cross_entropy_and_grad(x, 3)
    assert type(loss) is np.float64
    assert_close(loss, L)
    assert_close(grad, G)
    none = cfd.cross_entropy(X, np.int64(3), reduction="none").compute(**THREADS)
    assert isinstance(none, np.ndarray) and none.shape == ()
    assert_close(none, ce_fast.cross_entropy(x, 3, reduction="none"))
    lse = cfd.logsumexp(X).compute(**THREADS)
    assert type(lse) is np.float64
    assert_close(lse, ce_fast.logsumexp(x))
    assert_close(cfd.softmax(X).compute(**THREADS), ce_fast.softmax(x))


@pytest.mark.parametrize("chunks", [(3, 4), (3, 2)])
def test_empty_batch(chunks):
    """N == 0 (dask gives a single empty block): "sum" 0, "mean" NaN, "none"
    and the gradient empty, as ce_fast."""
    X = da.zeros((0, 4), chunks=chunks)
    for red in REDUCTIONS:
        loss, grad = dask.compute(
            *cfd.cross_entropy_and_grad(X, np.zeros(0, np.int64), reduction=red), **THREADS
        )
        L, G = ce_fast.cross_entropy_and_grad(np.zeros((0, 4)), np.zeros(0, np.int64), reduction=red)
        assert_close(loss, L)
        assert grad.shape == G.shape == (0, 4)
    assert cfd.logsumexp(X).compute(**THREADS).shape == (0,)
    assert cfd.softmax(X).compute(**THREADS).shape == (0, 4)
    # an empty class axis, as the NumPy API: log(0) = -inf, empty softmaxes
    E = da.zeros((4, 0), chunks=(2, 2))
    np.testing.assert_array_equal(cfd.logsumexp(E).compute(**THREADS), np.full(4, -np.inf))
    assert cfd.softmax(E).compute(**THREADS).shape == cfd.log_softmax(E).compute(**THREADS).shape == (4, 0)


def test_target_forms_and_numpy_inputs():
    """Integer targets of any dtype, dask targets / weights chunked
    differently from the logits, NumPy logits (default chunking)."""
    rng = _rng("forms")
    x = rng.standard_normal((40, 12)).astype(np.float32)
    y = rng.integers(0, 12, 40)
    sw = rng.random(40)
    X = da.from_array(x, chunks=(9, 5))
    L, G = ce_fast.cross_entropy_and_grad(x, y, sample_weight=sw, label_smoothing=0.1)
    for t in (y.astype(np.uint8), y.astype(np.int32), y.astype(np.uint64), da.from_array(y, chunks=7)):
        for s in (sw, da.from_array(sw, chunks=13)):
            loss, grad = dask.compute(
                *cfd.cross_entropy_and_grad(X, t, sample_weight=s, label_smoothing=0.1), **THREADS
            )
            assert_close(loss, L)
            assert_close(
                grad,
                G,
                scale=categorical_grad_term_scale(x, y, {"label_smoothing": 0.1, "sample_weight": sw}),
            )
    loss = cfd.cross_entropy(x, y).compute(**THREADS)  # a NumPy array in
    assert_close(loss, ce_fast.cross_entropy(x, y))
    q = rng.random((40, 12))
    assert_close(
        cfd.cross_entropy(X, da.from_array(q, chunks=(20, 12)), reduction="none").compute(**THREADS),
        ce_fast.cross_entropy(x, q, reduction="none"),
    )
    # float16 / integer logits compute in float32 / float64, as ce_fast
    for xx in (x.astype(np.float16), (x * 4).astype(np.int16)):
        got = cfd.cross_entropy(da.from_array(xx, chunks=(9, 5)), y, reduction="none").compute(**THREADS)
        want = ce_fast.cross_entropy(xx, y, reduction="none")
        assert got.dtype == want.dtype
        assert_close(got, want)


def test_class_chunked_blocks_never_see_a_whole_row(monkeypatch):
    """With class chunks, no kernel call (nor our own code) gets a whole row."""
    seen = []
    for name in ("cross_entropy", "cross_entropy_and_grad", "softmax", "log_softmax", "logsumexp"):
        fn = getattr(ce_fast, name)

        def spy(x, *a, _fn=fn, **k):
            seen.append(np.shape(x)[-1])
            return _fn(x, *a, **k)

        monkeypatch.setattr(ce_fast, name, spy)
    x, y, kw = _problem(np.float64, "int", OPTIONS["all"], "spy")
    X = da.from_array(x, chunks=(10, 8))
    lazy = [*cfd.cross_entropy_and_grad(X, y, **kw), cfd.softmax(X), cfd.log_softmax(X), cfd.logsumexp(X)]
    dask.compute(*lazy, scheduler="sync")
    assert seen and max(seen) <= 8 < C


def test_fused_kernel_runs_once_per_block(monkeypatch):
    """Rows path: computing loss and gradient together calls the fused
    kernel once per block (and never the loss-only kernel)."""
    calls = {"and_grad": 0, "loss": 0}
    fused, loss_only = ce_fast.cross_entropy_and_grad, ce_fast.cross_entropy

    def count_fused(*a, **k):
        calls["and_grad"] += 1
        return fused(*a, **k)

    def count_loss(*a, **k):
        calls["loss"] += 1
        return loss_only(*a, **k)

    monkeypatch.setattr(ce_fast, "cross_entropy_and_grad", count_fused)
    monkeypatch.setattr(ce_fast, "cross_entropy", count_loss)
    x, y, _ = _problem(np.float32, "int", {}, "fused")
    X = da.from_array(x, chunks=(6, C))
    for red in REDUCTIONS:
        calls.update(and_grad=0, loss=0)
        dask.compute(*cfd.cross_entropy_and_grad(X, y, reduction=red), **THREADS)
        assert calls == {"and_grad": X.numblocks[0], "loss": 0}, red


def test_num_threads_is_passed_to_every_block(monkeypatch):
    got = []
    for name in ("cross_entropy", "softmax"):
        fn = getattr(ce_fast, name)

        def spy(*a, _fn=fn, **k):
            got.append(k.get("num_threads"))
            return _fn(*a, **k)

        monkeypatch.setattr(ce_fast, name, spy)
    x, y, _ = _problem(np.float64, "int", {}, "nt")
    for chunks in [(10, C), (10, 8)]:
        X = da.from_array(x, chunks=chunks)
        dask.compute(cfd.cross_entropy(X, y, num_threads=1), cfd.softmax(X, num_threads=1), **THREADS)
    assert got and set(got) == {1}


# ---------------------------------------------------------------------------
# the softmax family and binary cross-entropy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("chunking", list(CHUNKINGS))
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_softmax_family(dt, chunking):
    rng = _rng("sm", dt, chunking)
    x = rng.standard_normal((N, C)) * 4.0
    x[rng.random((N, C)) < 0.2] = -np.inf
    x[3, :12] = -np.inf  # a whole class block (and more) -inf
    x[4, :] = -np.inf
    x[5, 7] = np.nan
    x[6, 20] = np.inf
    x[7, 2] = 60.0  # dominant: log_softmax near 0 keeps relative accuracy
    x = x.astype(dt)
    X = da.from_array(x, chunks=CHUNKINGS[chunking])
    names = ("logsumexp", "log_softmax", "softmax")
    got = dask.compute(*(getattr(cfd, n)(X) for n in names), **THREADS)
    for name, r in zip(names, got):
        want = getattr(ce_fast, name)(x)
        assert r.dtype == want.dtype and r.shape == want.shape
        assert_close(r, want, dt, err_msg=name)
    assert np.isnan(got[2][[4, 5, 6]]).all() and np.isinf(got[0][6]) and got[0][4] == -np.inf
    assert (got[2][3, :12] == 0).all() and np.isfinite(got[1][7, 2])
    # ce_fast's own check: entries near 0 of log_softmax keep their relative accuracy
    np.testing.assert_allclose(
        got[1][7, 2], ce_fast.log_softmax(x)[7, 2], rtol=1e-5 if dt == np.float32 else 1e-12
    )


BCE_OPERANDS = {
    "plain": lambda rng, n, c: {},
    "numpy": lambda rng, n, c: {"weight": rng.random((n, 1)), "pos_weight": rng.random(c) + 0.5},
    "dask": lambda rng, n, c: {
        "weight": da.from_array(rng.random((n, 1)), chunks=(5, 1)),
        "pos_weight": da.from_array(rng.random(c) + 0.5, chunks=4),
    },
}


def _np(v):
    return np.asarray(v) if isinstance(v, da.Array) else v


@pytest.mark.parametrize("operands", list(BCE_OPERANDS))
@pytest.mark.parametrize("chunks", [(N, C), (8, C), (7, 5)])
@pytest.mark.parametrize("dt", DTYPES, ids=["f32", "f64"])
def test_binary_cross_entropy_with_logits(dt, chunks, operands):
    rng = _rng("bce", dt, chunks, operands)
    x = (rng.standard_normal((N, C)) * 6.0).astype(dt)
    x[1, 1] = np.nan
    t = rng.random((N, C))
    ops = BCE_OPERANDS[operands](rng, N, C)
    ops_np = {k: _np(v) for k, v in ops.items()}
    X = da.from_array(x, chunks=chunks)
    lazy = []
    for red in REDUCTIONS:
        go = rng.random((N, C)) if red == "none" else 0.5
        lazy.append(cfd.binary_cross_entropy_with_logits(X, t, reduction=red, **ops))
        lazy.extend(cfd.binary_cross_entropy_with_logits_and_grad(X, t, reduction=red, grad_output=go, **ops))
        lazy.append(cfd.binary_cross_entropy_with_logits_grad(X, t, reduction=red, **ops))
        lazy.append(go)
    got = dask.compute(*lazy, **THREADS)
    for i, red in enumerate(REDUCTIONS):
        loss, loss2, grad, grad1, go = got[5 * i : 5 * i + 5]
        L = ce_fast.binary_cross_entropy_with_logits(x, t, reduction=red, **ops_np)
        L2, G = ce_fast.binary_cross_entropy_with_logits_and_grad(
            x, t, reduction=red, grad_output=go, **ops_np
        )
        G1 = ce_fast.binary_cross_entropy_with_logits_grad(x, t, reduction=red, **ops_np)
        if red != "none":
            assert type(loss) is np.dtype(dt).type and np.isnan(loss)  # the NaN logit propagates
        assert_close(loss, L, dt, err_msg=red)
        assert_close(loss2, L2, dt, err_msg=red)
        assert_close(grad, G, dt, err_msg=red)
        assert_close(grad1, G1, dt, err_msg=red)
    finite = cfd.binary_cross_entropy_with_logits(X[2:], t[2:], pos_weight=ops_np.get("pos_weight"))
    want = ce_fast.binary_cross_entropy_with_logits(x[2:], t[2:], pos_weight=ops_np.get("pos_weight"))
    assert np.isfinite(want) and want > 0
    assert_close(finite.compute(**THREADS), want, dt)


def test_binary_zero_d_and_empty():
    loss, grad = dask.compute(
        *cfd.binary_cross_entropy_with_logits_and_grad(np.float64(0.3), 1.0, reduction="none"), **THREADS
    )
    L, G = ce_fast.binary_cross_entropy_with_logits_and_grad(np.float64(0.3), 1.0, reduction="none")
    assert loss.shape == grad.shape == () and loss == L and grad == G
    assert np.isnan(cfd.binary_cross_entropy_with_logits(da.zeros((0, 3), chunks=2), 1.0).compute(**THREADS))
    assert (
        cfd.binary_cross_entropy_with_logits(da.zeros((0, 3)), 1.0, reduction="sum").compute(**THREADS) == 0
    )


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


def _boom(block):
    raise RuntimeError("the graph was computed")


def _untouchable(shape, chunks, dtype=np.float64):
    """A dask array that raises if any block is computed."""
    return da.zeros(shape, chunks=chunks, dtype=dtype).map_blocks(
        _boom, meta=np.empty((0,) * len(shape), dtype)
    )


_X = None  # replaced by the untouchable array inside the test


ERROR_CASES = [
    ("cross_entropy", lambda X: ((X, np.zeros(4, int)), {"reduction": "Mean"})),
    ("cross_entropy", lambda X: ((X, np.zeros(4, int)), {"label_smoothing": 1.5})),
    ("cross_entropy", lambda X: ((X, np.zeros(4, int)), {"label_smoothing": float("nan")})),
    ("cross_entropy", lambda X: ((X, np.zeros(4, int)), {"z_loss": -1.0})),
    ("cross_entropy", lambda X: ((X, np.zeros(4, int)), {"softcap": 0.0})),
    ("cross_entropy", lambda X: ((X, np.zeros(4, int)), {"weight": np.ones(4)})),
    ("cross_entropy", lambda X: ((X, np.zeros(5, int)), {})),
    ("cross_entropy", lambda X: ((X, np.zeros((4, 4))), {})),
    ("cross_entropy", lambda X: ((X, np.zeros(4, bool)), {})),
    ("cross_entropy", lambda X: ((X, np.zeros(4, complex)), {})),
    ("cross_entropy", lambda X: ((X, np.zeros((4, 5))), {"ignore_index": 0})),
    ("cross_entropy", lambda X: ((X, np.zeros(4, int)), {"sample_weight": np.ones(3)})),
    ("cross_entropy", lambda X: ((X, np.zeros(4, int)), {"num_threads": 0})),
    ("cross_entropy", lambda X: ((X, np.zeros(4, int)), {"axis": 2})),
    ("cross_entropy", lambda X: ((X, np.zeros(4, int)), {"ignore_index": 1.5})),
    ("cross_entropy", lambda X: ((X[:, :0], np.zeros(4, int)), {})),
    ("cross_entropy", lambda X: ((X.astype(complex), np.zeros(4, int)), {})),
    ("cross_entropy_and_grad", lambda X: ((X, np.zeros(4, int)), {"grad_output": np.ones(4)})),
    (
        "cross_entropy_and_grad",
        lambda X: ((X, np.zeros(4, int)), {"reduction": "none", "grad_output": np.ones(3)}),
    ),
    ("logsumexp", lambda X: ((X,), {"axis": 1.5})),
    ("softmax", lambda X: ((X,), {"axis": 3})),
    ("log_softmax", lambda X: ((X,), {"num_threads": -1})),
    ("binary_cross_entropy_with_logits", lambda X: ((X, np.ones(3)), {})),
    ("binary_cross_entropy_with_logits", lambda X: ((X, np.ones(5)), {"reduction": "avg"})),
    ("binary_cross_entropy_with_logits", lambda X: ((X, np.ones(5)), {"pos_weight": np.ones((2, 5))})),
    ("binary_cross_entropy_with_logits", lambda X: ((X, np.ones(5, complex)), {})),
    ("binary_cross_entropy_with_logits_and_grad", lambda X: ((X, np.ones(5)), {"grad_output": np.ones(5)})),
]


@pytest.mark.parametrize("case", range(len(ERROR_CASES)))
@pytest.mark.parametrize("chunks", [(2, 5), (2, 2)])
def test_errors_are_eager_and_match_numpy(case, chunks):
    """The NumPy function's exception and message, raised while building the
    graph: the logits here raise if any block is ever computed."""
    name, make = ERROR_CASES[case]
    X = _untouchable((4, 5), chunks)
    args, kw = make(X)
    with pytest.raises(Exception) as dask_err:
        getattr(cfd, name)(*args, **kw)
    np_args = [np.zeros(a.shape, a.dtype) if isinstance(a, da.Array) else a for a in args]
    with pytest.raises(Exception) as np_err:
        getattr(ce_fast, name)(*np_args, **kw)
    assert type(dask_err.value) is type(np_err.value)
    assert str(dask_err.value) == str(np_err.value)
    assert "computed" not in str(dask_err.value)


@pytest.mark.parametrize("chunks", [(4, 6), (4, 3), (3, 2)])
def test_out_of_range_class_index_raises_at_compute(chunks):
    rng = _rng("idx", chunks)
    x = rng.standard_normal((8, 6))
    X = da.from_array(x, chunks=chunks)
    for y in (np.array([0, 1, 2, 3, -100, 5, 6, 1]), np.array([0, 1, 2, 3, 4, 5, -1, 1]),
              np.array([0, 1, 2, 3, 4, 5, 0, 2**64 - 1], np.uint64)):  # fmt: skip
        with pytest.raises(IndexError) as np_err:
            ce_fast.cross_entropy(x, y)
        for lazy in (cfd.cross_entropy(X, y), cfd.cross_entropy_grad(X, y, reduction="none")):
            with pytest.raises(IndexError) as dask_err:
                lazy.compute(**THREADS)
            assert str(dask_err.value) == str(np_err.value)  # one bad index: the same flat position


# ---------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------


def _determinism_graphs(x, y, q, chunks):
    X = da.from_array(x, chunks=chunks)
    kw = {"label_smoothing": 0.1, "z_loss": 1e-3, "sample_weight": np.linspace(0.1, 2.0, x.shape[0])}
    return [*cfd.cross_entropy_and_grad(X, y, **kw), *cfd.cross_entropy_and_grad(X, q, reduction="sum", **kw),
            cfd.logsumexp(X), cfd.softmax(X)]  # fmt: skip


@pytest.mark.parametrize("chunks", [(16, 64), (16, 13), (64, 13)])
def test_bitwise_reproducible_for_a_chunking(chunks):
    rng = _rng("det", chunks)
    x = (rng.standard_normal((64, 64)) * 3).astype(np.float32)
    y = rng.integers(0, 64, 64)
    q = rng.random((64, 64)).astype(np.float32)
    first = dask.compute(*_determinism_graphs(x, y, q, chunks), scheduler="threads", num_workers=4)
    for sched in ({"scheduler": "sync"}, {"scheduler": "threads", "num_workers": 2}):
        again = dask.compute(*_determinism_graphs(x, y, q, chunks), **sched)
        for a, b in zip(first, again):
            assert_bitwise(a, b)


# ---------------------------------------------------------------------------
# documentation, scalar upstream gradients, the import error
# ---------------------------------------------------------------------------


def test_doctests():
    """The Examples in ce_fast.dask's docstrings (tests/test_doctests.py
    lists the NumPy modules only)."""
    import doctest

    with np.printoptions(legacy=False):
        res = doctest.testmod(cfd, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=True)
    assert res.attempted >= 5 and res.failed == 0


def test_dask_scalar_grad_output():
    rng = _rng("go")
    x = rng.standard_normal((12, 9)).astype(np.float32)
    y = rng.integers(0, 9, 12)
    t = rng.random((12, 9))
    go = da.from_array(np.float32(0.3))
    for chunks in [(4, 9), (4, 4)]:
        X = da.from_array(x, chunks=chunks)
        for red in REDUCTIONS:
            got = cfd.cross_entropy_grad(X, y, reduction=red, grad_output=go).compute(**THREADS)
            assert_close(got, ce_fast.cross_entropy_grad(x, y, reduction=red, grad_output=0.3), np.float32)
            got = cfd.binary_cross_entropy_with_logits_grad(X, t, reduction=red, grad_output=go).compute(
                **THREADS
            )
            want = ce_fast.binary_cross_entropy_with_logits_grad(x, t, reduction=red, grad_output=0.3)
            assert_close(got, want, np.float32)


def test_import_error_without_dask():
    import os
    import subprocess
    import sys

    code = (
        "import sys\n"
        "sys.modules['dask'] = None\nsys.modules['dask.array'] = None\n"
        "try:\n    import ce_fast.dask\nexcept ImportError as e:\n    print(e)\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert 'pip install "dask[array]"' in out.stdout, out.stdout + out.stderr
    assert 'pip install ".[dask]"' in out.stdout, out.stdout + out.stderr
    assert "ce_fast[" not in out.stdout  # not on PyPI: no install command may name it


# ---------------------------------------------------------------------------
# a real two-process cluster
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        host="127.0.0.1", silence_logs=logging.ERROR,
    )  # fmt: skip
    cl = distributed.Client(cluster)
    try:
        yield cl
    finally:
        cl.close()
        cluster.close()


DIST_CASES = [
    # (dtype, chunks, kind, options)
    (np.float64, (8, C), "int", {}),
    (np.float32, (N, 6), "int", {"weight": "W"}),
    (np.float64, (10, 8), "int", {"sample_weight": "SW", "label_smoothing": 0.15}),
    (np.float32, (10, 8), "int", {"z_loss": 1e-3, "softcap": 4.0}),
    (np.float64, (N, 6), "prob", {"weight": "W", "label_smoothing": 0.1}),
    (np.float32, (8, C), "prob", {"sample_weight": "SW", "z_loss": 1e-2}),
    (np.float64, (10, 7), "int", OPTIONS["all"]),
    (np.float32, (10, 7), "prob", OPTIONS["all"]),
]


@pytest.mark.parametrize("case", range(len(DIST_CASES)))
def test_distributed_matches_numpy(client, case):
    dt, chunks, kind, opts = DIST_CASES[case]
    x, t, kw = _problem(dt, kind, opts, "dist")
    X = da.from_array(x, chunks=chunks)
    lazy = [
        a
        for red in REDUCTIONS
        for a in cfd.cross_entropy_and_grad(X, t, reduction=red, grad_output=_go(red, N, dt), **kw)
    ]
    got = client.gather(client.compute(lazy))
    threaded = dask.compute(*lazy, **THREADS)
    for i, red in enumerate(REDUCTIONS):
        loss, grad = got[2 * i : 2 * i + 2]
        tl, tg = threaded[2 * i : 2 * i + 2]
        go = _go(red, N, dt)
        L, G = ce_fast.cross_entropy_and_grad(x, t, reduction=red, grad_output=go, **kw)
        assert_close(loss, L, dt, err_msg=red)
        assert_close(
            grad, G, dt, scale=categorical_grad_term_scale(x, t, dict(kw, reduction=red), go), err_msg=red
        )
        # the same graph on another scheduler: the same bits
        assert_bitwise(loss, tl)
        assert_bitwise(grad, tg)


def test_distributed_softmax_family_binary_and_errors(client):
    x, y, q = _special_rows(np.float64)
    X = da.from_array(x, chunks=(5, 5))
    names = ("logsumexp", "log_softmax", "softmax")
    got = client.gather(client.compute([getattr(cfd, n)(X) for n in names]))
    for name, r in zip(names, got):
        assert_close(r, getattr(ce_fast, name)(x), err_msg=name)
    xb = np.nan_to_num(x, nan=0.0, posinf=5.0, neginf=-5.0).astype(np.float32)
    t = _rng("dbce").random(xb.shape)
    Xb = da.from_array(xb, chunks=(5, 4))
    loss, grad = client.gather(
        client.compute(list(cfd.binary_cross_entropy_with_logits_and_grad(Xb, t, pos_weight=2.0)))
    )
    L, G = ce_fast.binary_cross_entropy_with_logits_and_grad(xb, t, pos_weight=2.0)
    assert_close(loss, L, np.float32)
    assert_close(grad, G, np.float32)
    # an out-of-range index raises IndexError through the cluster, class-chunked or not
    bad = y.copy()
    bad[3] = 10
    for chunks in [(6, 10), (6, 5)]:
        with pytest.raises(IndexError, match="flat position 3"):
            client.compute(cfd.cross_entropy(da.from_array(x, chunks=chunks), bad)).result()
