"""Accuracy and special values of the vector math (src/ce_vecmath*.h) at
every ISA level this CPU runs, through the binding's test hook
``_core.vecmath(kind, x, y)``: kind 0 log, 1 log1p, 2 exp of x <= 0."""

import numpy as np
import pytest

import ce_fast
from ce_fast import _core
from tests.conftest import assert_bitwise

DTYPES = [np.float32, np.float64]

# ---------------------------------------------------------------------------
# Vector log / log1p accuracy (src/ce_vecmath_log.h)
# ---------------------------------------------------------------------------


def _ulps(got, exact, dtype):
    ref_d = exact.astype(dtype)
    fin = np.isfinite(ref_d) & (ref_d != 0)
    spacing = np.spacing(np.abs(ref_d[fin])).astype(np.longdouble)
    return float(np.max(np.abs(got[fin].astype(np.longdouble) - exact[fin]) / spacing))


@pytest.mark.parametrize("dtype", DTYPES)
def test_vec_log_accuracy(isa, dtype, rng):
    """log and log1p within 1 ulp (the bound stated in ce_vecmath_log.h)."""
    fi = np.finfo(dtype)
    x = np.concatenate(
        [
            np.exp(rng.uniform(np.log(1e-30), np.log(1e30), 200_000)),
            rng.uniform(0.5, 2.0, 200_000),
        ]
    ).astype(dtype)
    x = np.concatenate([x, np.array([fi.tiny, fi.tiny / 3, fi.smallest_subnormal, fi.max], dtype)])
    y = np.empty_like(x)
    _core.vecmath(0, x, y)
    assert _ulps(y, np.log(x.astype(np.longdouble)), dtype) < 1.0
    z = np.concatenate([x, -x[x < 1], rng.uniform(-1, 1, 200_000).astype(dtype),
                        np.array([1e-30, -1e-30, 1e-8, -0.5, 1.0], dtype)])  # fmt: skip
    y = np.empty_like(z)
    _core.vecmath(1, z, y)
    assert _ulps(y, np.log1p(z.astype(np.longdouble)), dtype) < 1.0
    # log1p(x) == x exactly where 1 + x rounds to 1
    tiny = np.array([1e-30, -1e-30, fi.smallest_subnormal], dtype)
    y = np.empty_like(tiny)
    _core.vecmath(1, tiny, y)
    assert_bitwise(y, tiny)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vec_log_special_values(isa, dtype):
    x = np.array([np.nan, -1.0, -np.inf, np.inf, 0.0, -0.0, -2.0, 1.0], dtype)
    y = np.empty_like(x)
    _core.vecmath(0, x, y)
    assert_bitwise(y, np.array([np.nan, np.nan, np.nan, np.inf, -np.inf, -np.inf, np.nan, 0.0], dtype))
    _core.vecmath(1, x, y)
    assert_bitwise(y, np.array([np.nan, -np.inf, np.nan, np.inf, 0.0, 0.0, np.nan, np.log(2.0)], dtype))


# ---------------------------------------------------------------------------
# exp of arguments <= 0 (src/ce_vecmath.h)
# ---------------------------------------------------------------------------

EXP_ULPS = {np.float32: 2.0, np.float64: 2.0}


@pytest.mark.parametrize("dtype", DTYPES)
def test_vec_exp_accuracy(isa, dtype, rng):
    """exp within 2 ulp over the whole non-positive range where the result
    is normal, and within one subnormal spacing where it underflows."""
    fi = np.finfo(dtype)
    lo = float(np.log(fi.smallest_subnormal)) - 1.0
    x = np.concatenate(
        [
            rng.uniform(lo, 0.0, 400_000),
            -np.exp(rng.uniform(np.log(1e-30), np.log(-lo), 200_000)),  # many magnitudes
            -rng.uniform(0.0, 1e-6, 10_000),
            np.arange(0, int(lo), -1, dtype=np.float64) * np.log(2.0),  # reduction boundaries
        ]
    ).astype(dtype)
    y = np.empty_like(x)
    _core.vecmath(2, x, y)
    exact = np.exp(x.astype(np.longdouble))
    normal = exact >= fi.tiny
    spacing = np.spacing(exact[normal].astype(dtype)).astype(np.longdouble)
    err = np.abs(y[normal].astype(np.longdouble) - exact[normal]) / spacing
    assert err.max() <= EXP_ULPS[dtype], f"max error {err.max():.3f} ulp"
    sub = ~normal
    assert np.all(np.abs(y[sub].astype(np.longdouble) - exact[sub]) <= fi.smallest_subnormal)
    assert np.all(y >= 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_vec_exp_special_values(isa, dtype):
    fi = np.finfo(dtype)
    x = np.array([0.0, -0.0, -np.inf, -1e30, float(np.log(fi.smallest_subnormal)) - 1, -1.0], dtype)
    y = np.empty_like(x)
    _core.vecmath(2, x, y)
    assert_bitwise(y[:5], np.array([1.0, 1.0, 0.0, 0.0, 0.0], dtype))
    assert y[5] == pytest.approx(np.exp(-1.0), rel=4 * float(fi.eps))
    # gradual underflow: the smallest results are subnormal, not flushed to 0
    x = np.array([float(np.log(fi.tiny)) - 2.0], dtype)
    _core.vecmath(2, x, y[:1])
    assert 0 < y[0] < fi.tiny


@pytest.mark.parametrize("C", [16, 1000, 32003])
@pytest.mark.parametrize("name", ["cross_entropy_and_grad", "softmax", "logsumexp"])
def test_row_exp_vector_form_has_the_scalar_bits(isa, rng, C, name):
    """Contiguous float32 rows take the vector exp-sum (at AVX-512 its own
    vscalefps form of the exp), rows read through a stride the scalar form of
    the same lanes: the bits must be the same."""
    base = (rng.standard_normal((5, 2 * C)) * 30).astype(np.float32)
    base[0, 4] = -np.inf  # a masked class in row 0
    base[0, 2] = -200.0  # exp underflows to a subnormal / zero
    strided, contiguous = base[:, ::2], np.ascontiguousarray(base[:, ::2])
    y = rng.integers(0, C, 5)
    args = (y,) if name == "cross_entropy_and_grad" else ()
    fn = getattr(ce_fast, name)
    got, want = fn(contiguous, *args), fn(strided, *args)
    for a, b in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        np.testing.assert_array_equal(np.asarray(a).view(np.uint32), np.asarray(b).view(np.uint32))
