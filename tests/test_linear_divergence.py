"""linear_kl_divergence / linear_js_divergence (and ``_and_grad``): the
chunked student head (and teacher head) against the reference, which
materialises the logits, and their memory promise."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import ce_fast
import ce_fast.reference as ref
from tests.conftest import assert_close

# float32 logits come from a float32 BLAS matmul here and a float64 one in the
# reference: results differ by ~D eps32 |h| |w|, not by the kernel's ulps
F32 = {"rtol": 2e-4, "atol_factor": 2e-4}
NAMES = ["linear_kl_divergence", "linear_js_divergence"]


def heads(rng, N, C, D, Dt, dtype, bias=True):
    h = rng.standard_normal((N, D)).astype(dtype)
    w = (rng.standard_normal((C, D)) / np.sqrt(max(D, 1))).astype(dtype)
    b = rng.standard_normal(C).astype(dtype) if bias else None
    th = rng.standard_normal((N, Dt)).astype(dtype)
    tw = (rng.standard_normal((C, Dt)) / np.sqrt(max(Dt, 1))).astype(dtype)
    tb = rng.standard_normal(C).astype(dtype) if bias else None
    return h, w, b, th, tw, tb


def check(name, dtype, args, kw):
    tol = {} if np.dtype(dtype) == np.float64 else F32
    got = getattr(ce_fast, name + "_and_grad")(*args, **kw)
    kw_ref = {k: v for k, v in kw.items() if k not in ("num_threads",)}
    want = getattr(ref, name + "_and_grad")(*args, **kw_ref)
    kw_ref.pop("grad_output", None)
    kw.pop("grad_output", None)
    only = getattr(ce_fast, name)(*args, **kw)
    assert_close(only, want[0], dtype, **tol)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
            continue
        assert np.asarray(g).dtype == np.dtype(dtype)
        assert_close(g, w, dtype, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("teacher_form", ["layer", "logits", "log_probs"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_reference(rng, dtype, name, teacher_form, reduction):
    N, C, D, Dt = 37, 23, 8, 5
    h, w, b, th, tw, tb = heads(rng, N, C, D, Dt, dtype)
    kw = dict(bias=b, temperature=1.7, reduction=reduction, chunk_size=5, sample_weight=rng.random(N))
    kw.update(target=rng.integers(0, 4, N), ignore_index=2)
    kw["grad_output"] = rng.random(N) if reduction == "none" else 0.5
    if name == "linear_kl_divergence":
        kw["direction"] = "reverse"
    else:
        kw["beta"] = 0.2
    if teacher_form == "layer":
        kw.update(teacher_hidden=th, teacher_weight=tw, teacher_bias=tb)
        args = (h, w)
    else:
        t = th @ tw.T
        if teacher_form == "log_probs":
            t = ref.log_softmax(t).astype(dtype)
            kw["teacher_is"] = "log_probs"
        args = (h, w, t)
    check(name, dtype, args, kw)


@pytest.mark.parametrize("name", NAMES)
def test_sample_axes_and_no_bias(rng, name):
    h, w, _, th, tw, _ = heads(rng, 12, 9, 4, 6, np.float64, bias=False)
    h3, th3 = h.reshape(3, 4, 4), th.reshape(3, 4, 6)
    got = getattr(ce_fast, name + "_and_grad")(h3, w, teacher_hidden=th3, teacher_weight=tw, chunk_size=5)
    want = getattr(ref, name + "_and_grad")(h3, w, teacher_hidden=th3, teacher_weight=tw)
    assert got[1].shape == (3, 4, 4) and got[3] is None
    for g, wv in zip(got[:3], want[:3]):
        assert_close(g, wv)


@given(
    N=st.integers(0, 11),
    C=st.integers(1, 8),
    D=st.integers(0, 4),
    chunk=st.integers(1, 12),
    reduction=st.sampled_from(["mean", "sum", "none"]),
    kind=st.sampled_from(["forward", "reverse", "js"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_matches_reference(N, C, D, chunk, reduction, kind, seed):
    rng = np.random.default_rng(seed)
    h, w, b, th, tw, tb = heads(rng, N, C, D, 3, np.float64)
    kw = dict(
        bias=b, teacher_hidden=th, teacher_weight=tw, teacher_bias=tb, reduction=reduction, chunk_size=chunk
    )
    name = "linear_js_divergence" if kind == "js" else "linear_kl_divergence"
    if kind != "js":
        kw["direction"] = kind
    check(name, np.float64, (h, w), kw)


def test_errors(rng):
    h, w, b, th, tw, tb = heads(rng, 6, 5, 3, 2, np.float64)
    t = th @ tw.T
    with pytest.raises(ValueError, match="teacher"):
        ce_fast.linear_kl_divergence(h, w)
    with pytest.raises(ValueError, match="teacher"):
        ce_fast.linear_kl_divergence(h, w, t, teacher_hidden=th, teacher_weight=tw)
    with pytest.raises(ValueError, match="gives logits"):
        ce_fast.linear_kl_divergence(h, w, teacher_hidden=th, teacher_weight=tw, teacher_is="probs")
    with pytest.raises(ValueError, match="teacher's logits would have shape"):
        ce_fast.linear_kl_divergence(h, w, teacher_hidden=th[:4], teacher_weight=tw)
    with pytest.raises(ValueError, match="teacher must have"):
        ce_fast.linear_kl_divergence(h, w, t[:, :4])
    with pytest.raises(ValueError, match="teacher_weight has 2 features|teacher_hidden has"):
        ce_fast.linear_js_divergence(h, w, teacher_hidden=th, teacher_weight=w)
    with pytest.raises(ValueError, match="chunk_size"):
        ce_fast.linear_kl_divergence(h, w, t, chunk_size=0)
    with pytest.raises(ValueError, match="target and ignore_index"):
        ce_fast.linear_kl_divergence(h, w, t, ignore_index=0)


def test_all_ignored_mean_is_nan_with_zero_gradients(rng):
    h, w, b, th, tw, tb = heads(rng, 6, 5, 3, 2, np.float64)
    loss, dh, dw, db = ce_fast.linear_kl_divergence_and_grad(
        h, w, th @ tw.T, bias=b, target=np.zeros(6, int), ignore_index=0, chunk_size=4
    )
    assert np.isnan(loss) and not dh.any() and not dw.any() and not db.any()


def test_peak_memory_is_a_fraction_of_the_materialised_composition(rng):
    """Student and teacher heads: the chunks' logits, never N x C at once."""
    N, C, D = 2048, 4000, 16
    h, w, b, th, tw, tb = heads(rng, N, C, D, D, np.float32)
    chunk = 128
    tracemalloc.start()
    try:
        ce_fast.linear_kl_divergence_and_grad(
            h, w, bias=b, teacher_hidden=th, teacher_weight=tw, chunk_size=chunk
        )
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    outputs = (N * D + C * D + C) * 4
    logits = N * C * 4
    assert peak < outputs + 2.5 * chunk * C * 4 + (8 << 20)
    assert peak < 0.3 * 2 * logits  # the composition holds both heads' logits
