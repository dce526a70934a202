"""The categorical tile path (src/categorical_tile_impl.h): small class counts
with rows in vector lanes, 16 rows per tile, transposed in registers (AVX2,
AVX-512) or element by element (baseline, a strided class axis, the last
partial tile of a batch).

These tests show the path ran -- the kernel counts the driver each call
takes (ce_path_count in src/dispatch.c, read here through ctypes) -- and
that it agrees with the reference for every option at class counts around
the vector and tile widths, with partial tiles, special values and ignored
rows; bitwise across thread counts, between the two transposes, and in
place."""

from __future__ import annotations

import ctypes

import numpy as np
import pytest

import ce_fast
import ce_fast.reference as ref
from ce_fast import _core
from tests.conftest import assert_bitwise, assert_close, seed_for
from tests.test_categorical import check_vs_reference

DTYPES = [np.float32, np.float64]
CS = [1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65]
#: The widest rows the tile path takes (CE_TILE_MAX_C in categorical_tile_impl.h),
#: with the transposes in registers (AVX2, AVX-512) and without (baseline).
TILE_MAX_C = {
    True: {np.float32: 64, np.float64: 40},
    False: {np.float32: 32, np.float64: 8},
}


def tile_max_c(dtype, isa):
    return TILE_MAX_C[isa != "baseline"][dtype]


PATHS = ["row", "tile_elements", "tile_registers", "split", "stream"]
N_ODD = 16 * 3 + 5  # three whole tiles and a partial one


def _path_counter():
    try:
        lib = ctypes.CDLL(_core.__file__)
        fn = lib.ce_path_count
    except (OSError, AttributeError):  # pragma: no cover - symbols not exported here
        return None
    fn.restype = ctypes.c_int64
    fn.argtypes = [ctypes.c_int]
    return fn


_COUNT = _path_counter()


def paths_taken(fn, *args, **kw):
    """The drivers one call ``fn(*args, **kw)`` took (names from PATHS)."""
    if _COUNT is None:  # pragma: no cover
        pytest.skip("the kernel's path counters are not exported on this platform")
    before = [_COUNT(i) for i in range(len(PATHS))]
    fn(*args, **kw)
    after = [_COUNT(i) for i in range(len(PATHS))]
    return {PATHS[i] for i in range(len(PATHS)) if after[i] != before[i]}


def expected_path(dtype, C, isa):
    if C > tile_max_c(dtype, isa):
        return "row"
    return "tile_elements" if isa == "baseline" else "tile_registers"


def _problem(rng, n, C, dtype, option):
    x = (rng.standard_normal((n, C)) * 3).astype(dtype)
    y = rng.integers(0, C, n)
    kw: dict = {"reduction": "mean"}
    if option in ("weight", "all"):
        kw["weight"] = rng.uniform(0.2, 2.0, C)
    if option in ("smoothing", "all"):
        kw["label_smoothing"] = 0.2
    if option in ("z_loss", "all"):
        kw["z_loss"] = 0.05
    if option in ("ignore", "all"):
        y[rng.random(n) < 0.3] = -100
        x[y == -100] = np.nan  # an ignored row is harmless whatever it holds
    if option in ("sample_weight", "all"):
        kw["sample_weight"] = rng.uniform(0.0, 2.0, n)
    if option in ("grad_output", "all"):
        kw["reduction"] = "none"
        kw["grad_output"] = rng.uniform(-2.0, 2.0, n)
    if option == "sum":
        kw["reduction"] = "sum"
    if option == "specials":
        kw["reduction"] = "none"
        kw["label_smoothing"] = 0.1
        x[0] = np.nan  # NaN row
        x[1, 0] = np.inf  # +inf row
        x[2] = -np.inf  # all -inf row
        x[3, y[3]] = -np.inf  # -inf target: infinite loss, finite gradient (C > 1)
        x[4] = 0.0  # all equal
        x[5, 0] = 80.0  # a confident row: tiny loss
        y[5] = 0
        x[6] = np.array([1e4, -1e4] * C, dtype)[:C]
        y[7] = -100
        x[7] = np.inf  # ignored: loss 0, gradient 0
        kw["grad_output"] = np.ones(n)
        kw["grad_output"][8:11] = [np.inf, -np.inf, np.nan]
    if option == "inf_weight":
        w = rng.uniform(0.2, 2.0, C)
        w[C // 2] = np.inf
        kw["weight"] = w
        kw["label_smoothing"] = 0.3
        kw["reduction"] = "none"
    if option == "softcap":
        kw["softcap"] = 5.0
    if option == "prob":
        q = rng.random((n, C)).astype(dtype)
        return x, q / q.sum(axis=1, keepdims=True), kw
    return x, y, kw


TILE_OPTIONS = ["plain", "weight", "smoothing", "z_loss", "ignore", "sample_weight", "grad_output",
                "sum", "all", "specials", "inf_weight"]  # fmt: skip


@pytest.mark.parametrize("option", TILE_OPTIONS)
@pytest.mark.parametrize("C", CS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_path_runs_and_matches_reference(isa, dtype, C, option):
    rng = np.random.default_rng(seed_for(dtype, C, option))
    x, y, kw = _problem(rng, N_ODD, C, dtype, option)
    if option == "specials" and C == 1:
        kw.pop("label_smoothing")  # (x[3]: the only class is the target)
    with np.errstate(all="ignore"):
        taken = paths_taken(ce_fast.cross_entropy_and_grad, x, y, **kw)
        assert taken == {expected_path(dtype, C, isa)}
        if option != "inf_weight":
            check_vs_reference(x, y, **kw)
            return
        # an infinite weight: the loss is +inf where the formula says so; the
        # gradient is inf - inf (NaN) in places that depend on the form used
        loss = ce_fast.cross_entropy(x, y, **kw)
        want = ref.cross_entropy(x, y, **kw)
    assert_close(loss, want, dtype)
    assert np.isinf(want).any() or C == 1  # (C == 1: inf * log1p(0), NaN)


@pytest.mark.parametrize("option", ["softcap", "prob"])
@pytest.mark.parametrize("C", [1, 7, 16, 33])
@pytest.mark.parametrize("dtype", DTYPES)
def test_row_path_options_at_small_c(dtype, C, option):
    """Soft-capping and probability targets keep the row path at any C."""
    rng = np.random.default_rng(seed_for(dtype, C, option))
    x, t, kw = _problem(rng, N_ODD, C, dtype, option)
    assert paths_taken(ce_fast.cross_entropy_and_grad, x, t, **kw) == {"row"}
    check_vs_reference(x, t, **kw)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_row_switch(isa, dtype):
    """Either side of CE_TILE_MAX_C, and a class axis that is not last
    (tiles along it at any C)."""
    rng = np.random.default_rng(seed_for(dtype))
    for C in (tile_max_c(dtype, isa), tile_max_c(dtype, isa) + 1):
        x, y, kw = _problem(rng, N_ODD, C, dtype, "all")
        assert paths_taken(ce_fast.cross_entropy_and_grad, x, y, **kw) == {expected_path(dtype, C, isa)}
        check_vs_reference(x, y, **kw)
    x = rng.standard_normal((3, 300, 21)).astype(dtype)
    y = rng.integers(0, 300, (3, 21))
    kw = {"axis": 1, "label_smoothing": 0.1, "weight": rng.uniform(0.5, 1.5, 300)}
    assert paths_taken(ce_fast.cross_entropy_and_grad, x, y, **kw) == {"tile_elements"}
    check_vs_reference(x, y, **kw)


@pytest.mark.parametrize("C", [1, 2, 7, 10, 17, 33, 64])
@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_bitwise_across_thread_counts(dtype, C):
    """Several blocks of rows (1024 each) and a partial last tile, above the
    parallel threshold: every thread count gives the same bits."""
    rng = np.random.default_rng(seed_for(dtype, C))
    n = max(3000, 40_000 // C) | 1
    x, y, kw = _problem(rng, n, C, dtype, "all")
    x[5] = np.inf
    with np.errstate(all="ignore"):
        base = ce_fast.cross_entropy_and_grad(x, y, num_threads=1, **kw)
        for reduction in ("sum", "mean"):
            kr = dict(kw, reduction=reduction, grad_output=1.5)
            one = ce_fast.cross_entropy_and_grad(x, y, num_threads=1, **kr)
            for nt in (2, 3, 4):
                got = ce_fast.cross_entropy_and_grad(x, y, num_threads=nt, **kr)
                assert_bitwise(got[0], one[0], f"{reduction} loss, {nt} threads")
                assert_bitwise(got[1], one[1], f"{reduction} grad, {nt} threads")
        for nt in (2, 3, 4):
            got = ce_fast.cross_entropy_and_grad(x, y, num_threads=nt, **kw)
            assert_bitwise(got[0], base[0], f"losses, {nt} threads")
            assert_bitwise(got[1], base[1], f"grad, {nt} threads")


@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_transposes_agree_bitwise(isa, dtype):
    """The register transposes move data only: the same rows through the
    element transposes (class stride 2) give the same bits, and so does the
    gradient written in place over the logits (every C of CS the tile path
    takes at this ISA level)."""
    for C in (c for c in CS if c <= tile_max_c(dtype, isa)):
        try:
            _transposes_agree(isa, dtype, C)
        except AssertionError as e:
            raise AssertionError(f"C = {C}: {e}") from e


def _transposes_agree(isa, dtype, C):
    rng = np.random.default_rng(seed_for(dtype, C))
    x, y, kw = _problem(rng, N_ODD, C, dtype, "all")
    wide = np.zeros((N_ODD, 2 * C), dtype)
    wide[:, ::2] = x
    strided = wide[:, ::2]
    with np.errstate(all="ignore"):
        want = {"tile_elements"} if isa == "baseline" else {"tile_registers"}
        assert paths_taken(ce_fast.cross_entropy_and_grad, x, y, **kw) == want
        assert paths_taken(ce_fast.cross_entropy_and_grad, strided, y, **kw) == {"tile_elements"}
        loss, grad = ce_fast.cross_entropy_and_grad(x, y, **kw)
        loss_s, grad_s = ce_fast.cross_entropy_and_grad(strided, y, **kw)
        xin = x.copy()
        loss_i, grad_i = ce_fast.cross_entropy_and_grad(xin, y, out=xin, **kw)
    assert_bitwise(loss_s, loss)
    assert_bitwise(grad_s, grad)
    assert grad_i is xin
    assert_bitwise(loss_i, loss)
    assert_bitwise(grad_i, grad)


@pytest.mark.parametrize("dtype", DTYPES)
def test_tile_row_stride_larger_than_c(dtype):
    """Rows that are not adjacent (a column slice) still go through the
    registers: masked loads read nothing outside the rows."""
    rng = np.random.default_rng(seed_for(dtype))
    big = rng.standard_normal((N_ODD, 40)).astype(dtype)
    x = big[:, 3:14]  # C = 11, row stride 40
    y = rng.integers(0, 11, N_ODD)
    isa = _core.isa()
    assert paths_taken(ce_fast.cross_entropy_and_grad, x, y) == {expected_path(dtype, 11, isa)}
    check_vs_reference(x, y, reduction="none", label_smoothing=0.1)
