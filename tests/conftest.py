"""Shared fixtures and helpers for the ce_fast test-suite.

* ``rng``: a NumPy generator seeded from the test's node id (reproducible,
  independent of PYTHONHASHSEED and of test order).
* ``isa``: runs a test once per SIMD level this CPU supports (forced with
  ``ce_fast._core.set_isa``), restoring the previous level afterwards.
* ``TOL`` / :func:`assert_close`: dtype-aware comparison with the reference
  (NaN and +-inf positions must match exactly; finite values within
  ``rtol`` relative plus an ``atol`` scaled by the array's magnitude).
* Hypothesis profiles ``ci`` (default) and ``long``; choose with the
  environment variable ``HYPOTHESIS_PROFILE``.
* ``@pytest.mark.slow`` tests are skipped unless ``--run-slow`` is given or
  the ``-m`` expression mentions ``slow`` (e.g. ``pytest -m slow``).
"""

from __future__ import annotations

import os
import zlib

import numpy as np
import pytest

# ---------------------------------------------------------------------------
# Hypothesis profiles
# ---------------------------------------------------------------------------

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # pragma: no cover - hypothesis is a test dependency
    settings = None

if settings is not None:
    _common = {
        "deadline": None,
        "print_blob": True,
        "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    }
    settings.register_profile("ci", max_examples=60, **_common)
    settings.register_profile("long", max_examples=2000, **_common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# ---------------------------------------------------------------------------
# slow marker
# ---------------------------------------------------------------------------


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run @pytest.mark.slow tests",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow") or "slow" in (config.getoption("-m") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with --run-slow or -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


# ---------------------------------------------------------------------------
# Random numbers
# ---------------------------------------------------------------------------


def seed_for(*args) -> int:
    """A stable seed from arbitrary (repr-able) arguments."""
    return zlib.crc32(repr(args).encode())


@pytest.fixture
def rng(request):
    """A generator seeded by the test's node id: every parametrisation gets
    its own, reproducible stream."""
    return np.random.default_rng(seed_for(request.node.nodeid))


# ---------------------------------------------------------------------------
# SIMD levels
# ---------------------------------------------------------------------------


def _supported_isas() -> list[str]:
    try:
        from ce_fast import _core
    except ImportError:  # pragma: no cover - package not built
        return []
    return list(_core.build_facts()["isa_supported"])


SUPPORTED_ISAS = _supported_isas()


@pytest.fixture(params=SUPPORTED_ISAS, ids=[f"isa={n}" for n in SUPPORTED_ISAS])
def isa(request):
    """Run the test under each SIMD level this CPU supports; yields its name.

    Works for every kernel family: it switches the process-wide dispatch
    table, so any ce_fast call inside the test uses that level."""
    from ce_fast import _core

    previous = _core.isa()
    name = request.param
    if not _core.set_isa(name):
        pytest.fail(f"set_isa({name!r}) refused a level listed as supported")
    assert _core.isa() == name
    try:
        yield name
    finally:
        assert _core.set_isa(previous), f"could not restore ISA level {previous!r}"


# ---------------------------------------------------------------------------
# Thread counts
# ---------------------------------------------------------------------------


@pytest.fixture
def oversubscribed():
    """``num_threads`` up to 4 is used as asked, even on a machine with fewer
    processors, so that tests comparing 1, 2 and 3 threads compare three
    different splits anywhere. ce_fast clamps a request to max(default,
    processors); this raises the OpenMP default of the calling thread to 4
    (as OMP_NUM_THREADS=4 would) for the test, through threadpoolctl."""
    from ce_fast import _core

    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a test dependency
        yield  # requests above the processors are clamped: fewer splits
        return
    default = _core.build_facts()["default_threads"]
    with threadpool_limits(limits=max(4, default), user_api="openmp"):
        if _core.build_facts()["openmp"]:
            assert _core.threads_for(4, 4, 1 << 20) == 4
        yield


# ---------------------------------------------------------------------------
# Tolerances and comparisons
# ---------------------------------------------------------------------------

#: (rtol, atol factor) per result dtype; the absolute tolerance is the factor
#: times the largest finite magnitude of the expected array, so entries that
#: are tiny *because of cancellation* (p_j * A - a_j ~ 0) are judged on the
#: scale of the row rather than relatively.
TOL = {
    np.dtype(np.float64): (1e-12, 1e-13),
    np.dtype(np.float32): (2e-6, 1e-6),
}


def tol(dtype) -> tuple[float, float]:
    return TOL[np.dtype(dtype)]


def assert_close(
    actual,
    desired,
    dtype=None,
    *,
    rtol=None,
    atol_factor=None,
    scale=None,
    atol_extra=None,
    err_msg="",
):
    """``actual`` matches ``desired`` to the dtype's tolerance.

    NaN positions and infinities (with sign) must match exactly; finite
    entries must satisfy ``|a - d| <= atol + rtol * |d|`` with
    ``atol = atol_factor * max(max|d_finite|, scale)`` (at least one
    subnormal spacing of the dtype); pass ``scale`` when
    the result can be much smaller than the terms it is computed from (e.g.
    an exactly cancelling gradient); ``atol_extra`` (broadcastable to the
    shape) adds a per-entry absolute tolerance.  Shapes must match exactly
    (no broadcasting)."""
    a = np.asarray(actual)
    d = np.asarray(desired)
    if dtype is None:
        dtype = d.dtype if d.dtype.kind == "f" else np.float64
    r0, f0 = tol(dtype)
    rtol = r0 if rtol is None else rtol
    atol_factor = f0 if atol_factor is None else atol_factor
    assert a.shape == d.shape, f"shape {a.shape} != expected {d.shape}. {err_msg}"
    a64 = a.astype(np.float64)
    d64 = d.astype(np.float64)
    nan_a, nan_d = np.isnan(a64), np.isnan(d64)
    if not np.array_equal(nan_a, nan_d):
        raise AssertionError(
            f"NaN positions differ: actual NaN at {np.argwhere(nan_a & ~nan_d)[:5].tolist()}, "
            f"expected NaN at {np.argwhere(nan_d & ~nan_a)[:5].tolist()}. {err_msg}"
        )
    inf_a, inf_d = np.isinf(a64), np.isinf(d64)
    if not np.array_equal(inf_a, inf_d) or not np.array_equal(a64[inf_a], d64[inf_d]):
        raise AssertionError(
            f"infinities differ: actual {a64[inf_a | inf_d]}, expected {d64[inf_a | inf_d]} "
            f"at {np.argwhere(inf_a | inf_d)[:5].tolist()}. {err_msg}"
        )
    fin = np.isfinite(d64)
    if not fin.any():
        return
    scale = max(float(np.max(np.abs(d64[fin]))), 0.0 if scale is None else float(scale))
    # never below one subnormal spacing: an intermediate stored in the dtype
    # (e.g. a soft-cap factor of 1e-40 in float32) keeps only that much
    atol = max(atol_factor * scale, float(np.finfo(dtype).smallest_subnormal))
    if atol_extra is not None:
        extra = np.broadcast_to(np.asarray(atol_extra, np.float64), d64.shape)[fin]
        bad = np.abs(a64[fin] - d64[fin]) > atol + extra + rtol * np.abs(d64[fin])
        if not bad.any():
            return
        a64, d64 = a64[fin][bad], d64[fin][bad]  # report only the violations
        fin = np.ones(a64.shape, bool)
    np.testing.assert_allclose(
        a64[fin], d64[fin], rtol=rtol, atol=atol, err_msg=err_msg
    )


def assert_bitwise(actual, desired, err_msg=""):
    """Same dtype, shape and bits (NaNs with the same payload-agnostic
    positions compare equal)."""
    a = np.asarray(actual)
    d = np.asarray(desired)
    assert a.dtype == d.dtype, f"dtype {a.dtype} != {d.dtype}. {err_msg}"
    assert a.shape == d.shape, f"shape {a.shape} != {d.shape}. {err_msg}"
    same = (a == d) | (np.isnan(a) & np.isnan(d))
    # +0.0 and -0.0 compare equal but are different bits: check signs too
    same &= (np.signbit(a) == np.signbit(d)) | np.isnan(a)
    if not same.all():
        bad = np.argwhere(~same)[:5]
        raise AssertionError(
            f"not bitwise identical at {bad.tolist()}: "
            f"{a[tuple(bad.T)]} vs {d[tuple(bad.T)]}. {err_msg}"
        )


def fingerprint(a) -> bytes:
    """Bytes, dtype, shape and strides of an array (to prove it was not
    modified)."""
    a = np.asarray(a)
    return (
        repr((a.dtype.str, a.shape, a.strides)).encode()
        + np.ascontiguousarray(a).tobytes()
    )


# ---------------------------------------------------------------------------
# Family-specific helpers
# ---------------------------------------------------------------------------


def _categorical_terms(x, t, kw, go):
    """Per-row quantities of a categorical problem in float64, rows = the
    samples in C order, classes last: (p, a, B, gs, fac, moved_shape, axis)
    with the notation of :func:`categorical_grad_term_scale`."""
    x = np.asarray(x)
    t = np.asarray(t)
    ax = kw.get("axis", -1) % x.ndim
    C = x.shape[ax]
    moved_shape = np.moveaxis(x, ax, -1).shape
    sshape = moved_shape[:-1]  # () for 1-D logits
    with np.errstate(all="ignore"):
        x2 = np.moveaxis(x.astype(np.float64), ax, -1).reshape(-1, C)
        n = x2.shape[0]
        fac = np.ones_like(x2)
        if kw.get("softcap"):
            u = x2 / kw["softcap"]
            a_ = np.exp(-2.0 * np.abs(u))
            x2, fac = kw["softcap"] * np.tanh(u), 4.0 * a_ / (1.0 + a_) ** 2
        m = np.max(x2, axis=1, keepdims=True) if C else np.zeros((n, 1))
        e = np.exp(x2 - np.where(np.isfinite(m), m, 0.0))
        p = np.nan_to_num(e / e.sum(axis=1, keepdims=True))
        lse = np.nan_to_num(np.log(e.sum(axis=1)) + m[:, 0], posinf=0.0, neginf=0.0)
        w = (
            np.ones(C)
            if kw.get("weight") is None
            else np.asarray(kw["weight"], np.float64)
        )
        eps = float(kw.get("label_smoothing", 0.0))
        s_in = kw.get("sample_weight")
        sw = np.broadcast_to(
            np.asarray(1.0 if s_in is None else s_in, float), sshape
        ).reshape(-1)
        if np.issubdtype(t.dtype, np.integer):
            y = t.reshape(-1).astype(np.int64)
            keep = y != kw.get("ignore_index", -100)
            a = np.tile(eps / C * w, (n, 1))
            yk = np.where(keep, y, 0)
            a[np.arange(n), yk] += (1 - eps) * w[yk]
            a[~keep] = 0.0
            zc = np.where(keep, w[yk], 0.0)
            denom = np.sum(sw * zc)
        else:
            q = np.moveaxis(t.astype(np.float64), ax, -1).reshape(-1, C)
            a = w * ((1 - eps) * q + eps / C)
            zc = np.ones(n)
            denom = np.sum(sw)
        B = a.sum(axis=1) + 2 * float(kw.get("z_loss", 0.0)) * zc * np.abs(lse)
        red = kw.get("reduction", "mean")
        if red == "none":
            gs = (
                np.broadcast_to(
                    np.asarray(1.0 if go is None else go, float), sshape
                ).reshape(-1)
                * sw
            )
        else:
            gs = (1.0 if go is None else float(np.asarray(go))) * sw
            if red == "mean":
                gs = gs / denom if denom != 0 else np.zeros_like(gs)
    return x2, p, a, B, gs, fac, moved_shape, ax


def categorical_grad_term_scale(x, t, kw, go=None):
    """Categorical cross-entropy: the largest |term| its gradient is computed
    from, max over samples i and classes j of |gs_i| (B_i p_ij + a_ij) cap'_ij,
    with a_ij the target coefficients ((1-eps) w_y [j == y] + eps/C w_j, or
    w_j q'_j), B_i = sum_j a_ij + 2 z_loss zc_i |lse_i|, gs_i the upstream
    scale (grad_output * sample_weight [/ mean denominator]) and cap' the
    soft-cap chain-rule factor.  ``kw`` holds the call's keywords (axis,
    reduction, weight, ...).  Pass it as ``assert_close(..., scale=...)``:
    a gradient entry g = gs (B p - a) that cancels (p B ~ a) can only be
    computed to a few ulps of its terms, not of itself."""
    if np.size(x) == 0:
        return 0.0
    _, p, a, B, gs, fac, _, _ = _categorical_terms(x, t, kw, go)
    with np.errstate(all="ignore"):
        M = np.abs(gs)[:, None] * (B[:, None] * p + a) * fac
    M = M[np.isfinite(M)]
    return float(M.max()) if M.size else 0.0

