"""kl_divergence / js_divergence (and ``_and_grad``): against the reference,
PyTorch float64 compositions, finite differences, mpmath for small
divergences, hypothesis properties, edge values and the aliasing contract."""

from __future__ import annotations

import itertools

import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ce_fast
import ce_fast.reference as ref
from tests.conftest import assert_bitwise, assert_close

torch = pytest.importorskip("torch")
F = torch.nn.functional

DTYPES = [np.float32, np.float64]
MODES = ["logits", "log_probs", "probs"]
# (function name, keyword): the three kinds of divergence
KINDS = {
    "forward": ("kl_divergence", {"direction": "forward"}),
    "reverse": ("kl_divergence", {"direction": "reverse"}),
    "js": ("js_divergence", {"beta": 0.3}),
}


def fns(kind, module=ce_fast):
    name, kw = KINDS[kind]
    return getattr(module, name), getattr(module, name + "_and_grad"), kw


def teacher_for(mode, t, T=1.0):
    """The teacher in the form ``mode`` takes, from logits t (P = softmax(t / T)
    for logits; the same distribution for the other modes)."""
    if mode == "logits":
        return t
    lp = ref.log_softmax(t)
    return lp if mode == "log_probs" else np.exp(lp)


def pair(rng, shape, dtype=np.float64, scale=2.0):
    s = (rng.standard_normal(shape) * scale).astype(dtype)
    t = (rng.standard_normal(shape) * scale).astype(dtype)
    return s, t


def tol(dtype):
    return {} if np.dtype(dtype) == np.float64 else {"rtol": 3e-5, "atol_factor": 3e-6}


# ---------------------------------------------------------------------------
# against the reference
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("T", [1.0, 2.5])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_reference(rng, isa, dtype, kind, mode, T, reduction):
    f, fg, kw = fns(kind)
    rf, rfg, _ = fns(kind, ref)
    s, t = pair(rng, (37, 29), dtype)
    t = teacher_for(mode, t).astype(dtype)
    sw = rng.random(37) + 0.5
    y = rng.integers(0, 5, 37)
    kw = dict(
        kw, teacher_is=mode, temperature=T, reduction=reduction, sample_weight=sw, target=y, ignore_index=3
    )
    go = rng.random(37) if reduction == "none" else 0.7
    want, wgrad = rfg(s, t, grad_output=go, **kw)
    got, grad = fg(s, t, grad_output=go, **kw)
    assert np.asarray(got).dtype == dtype and grad.dtype == dtype
    assert_close(got, want, dtype, **tol(dtype))
    assert_close(f(s, t, **kw), want, dtype, **tol(dtype))
    assert_close(grad, wgrad, dtype, **tol(dtype))
    assert np.all(grad[y == 3] == 0)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_any_axis(rng, kind, axis):
    f, fg, kw = fns(kind)
    rf, rfg, _ = fns(kind, ref)
    s, t = pair(rng, (5, 7, 6))
    sw = rng.random(tuple(n for i, n in enumerate((5, 7, 6)) if i != axis % 3))
    want = rfg(s, t, axis=axis, sample_weight=sw, reduction="none", temperature=0.7, **kw)
    got = fg(s, t, axis=axis, sample_weight=sw, reduction="none", temperature=0.7, **kw)
    assert_close(got[0], want[0])
    assert_close(got[1], want[1])
    # a Fortran-ordered student and a strided teacher view (walked in place)
    wide = np.zeros((5, 7, 12))
    wide[..., ::2] = t
    got2 = fg(np.asfortranarray(s), wide[..., ::2], axis=axis, sample_weight=sw, reduction="none",
              temperature=0.7, **kw)  # fmt: skip
    assert_close(got2[0], want[0])
    assert_close(got2[1], want[1])


def test_torch_dlpack_and_mixed_dtypes(rng):
    s, t = pair(rng, (8, 5), np.float32)
    want = ce_fast.kl_divergence(s, t.astype(np.float32))
    assert ce_fast.kl_divergence(torch.from_numpy(s), torch.from_numpy(t.astype(np.float64))) == want
    loss, g = ce_fast.kl_divergence_and_grad(s.astype(np.float16), t)
    assert g.dtype == np.float32 and np.asarray(loss).dtype == np.float32


# ---------------------------------------------------------------------------
# against PyTorch float64 compositions
# ---------------------------------------------------------------------------


def torch_loss(kind, mode, s, t, T, beta=0.3):
    """The composition a PyTorch user writes, "batchmean"."""
    ls = F.log_softmax(s / T, dim=-1)
    if mode == "logits":
        lt = F.log_softmax(t / T, dim=-1)
    elif mode == "log_probs":
        lt = t
    if kind == "forward":
        if mode == "probs":
            return F.kl_div(ls, t, reduction="batchmean")
        return F.kl_div(ls, lt, log_target=True, reduction="batchmean")
    if kind == "reverse":
        if mode == "probs":
            lt = torch.log(t)
        return F.kl_div(lt, ls, log_target=True, reduction="batchmean")
    p = t if mode == "probs" else lt.exp()
    lm = torch.log(beta * p + (1 - beta) * ls.exp())
    pt = lt if mode != "probs" else p
    return beta * F.kl_div(lm, pt, log_target=mode != "probs", reduction="batchmean") + (1 - beta) * F.kl_div(
        lm, ls, log_target=True, reduction="batchmean"
    )


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("T", [1.0, 3.0])
def test_matches_torch_float64(rng, kind, mode, T):
    f, fg, kw = fns(kind)
    s, t = pair(rng, (33, 50))
    t = teacher_for(mode, t)
    if mode != "logits":  # not renormalised, as torch kl_div
        t = t + (np.log(0.9) if mode == "log_probs" else -0.1 * t)
    st_, tt = torch.tensor(s, requires_grad=True), torch.tensor(t)
    loss = torch_loss(kind, mode, st_, tt, T)
    loss.backward()
    got, grad = fg(s, t, teacher_is=mode, temperature=T, **kw)
    assert_close(got, loss.item(), rtol=1e-11)
    assert_close(grad, st_.grad.numpy())


@pytest.mark.parametrize("kind", ["forward", "reverse"])
def test_torch_sum_and_none(rng, kind):
    s, t = pair(rng, (9, 12))
    ls, lt = F.log_softmax(torch.tensor(s), -1), F.log_softmax(torch.tensor(t), -1)
    a, b = (ls, lt) if kind == "reverse" else (lt, ls)
    per = F.kl_div(b, a, log_target=True, reduction="none").sum(-1).numpy()
    assert_close(ce_fast.kl_divergence(s, t, direction=kind, reduction="none"), per)
    assert_close(ce_fast.kl_divergence(s, t, direction=kind, reduction="sum"), per.sum())


# ---------------------------------------------------------------------------
# finite differences (float64)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mode", MODES)
def test_gradient_finite_differences(rng, kind, mode):
    f, fg, kw = fns(kind)
    s, t = pair(rng, (4, 6), scale=1.5)
    t = teacher_for(mode, t) * (1.0 if mode == "logits" else 0.95 if mode == "probs" else 1.0)
    sw = rng.random(4) + 0.5
    kw = dict(kw, teacher_is=mode, temperature=1.7, sample_weight=sw)
    _, g = fg(s, t, **kw)
    h = 1e-6
    num = np.zeros_like(s)
    for idx in itertools.product(range(4), range(6)):
        sp, sm = s.copy(), s.copy()
        sp[idx] += h
        sm[idx] -= h
        num[idx] = (f(sp, t, **kw) - f(sm, t, **kw)) / (2 * h)
    assert_close(g, num, rtol=1e-6, atol_factor=1e-7)


# ---------------------------------------------------------------------------
# numerics: small divergences against mpmath, >= 0, exact zero
# ---------------------------------------------------------------------------


def mp_divergence(kind, s, t, beta=0.3):
    """The exact divergence of each row of float64 logits, by mpmath."""
    mpmath.mp.dps = 50
    out = []
    for a, b in zip(s, t):
        la = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in a))
        lb = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in b))
        lq = [mpmath.mpf(v) - la for v in a]
        lp = [mpmath.mpf(v) - lb for v in b]
        if kind == "forward":
            d = mpmath.fsum(mpmath.exp(p) * (p - q) for p, q in zip(lp, lq))
        elif kind == "reverse":
            d = mpmath.fsum(mpmath.exp(q) * (q - p) for p, q in zip(lp, lq))
        else:
            b_, cb = mpmath.mpf(beta), 1 - mpmath.mpf(beta)  # 1 - beta exactly, not in float64
            terms = []
            for p, q in zip(lp, lq):
                lm = mpmath.log(b_ * mpmath.exp(p) + cb * mpmath.exp(q))
                terms.append(b_ * mpmath.exp(p) * (p - lm) + cb * mpmath.exp(q) * (q - lm))
            d = mpmath.fsum(terms)
        out.append(float(d))
    return np.array(out)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("C", [50, 1000])
@pytest.mark.parametrize("delta", [1e-4, 1e-6])
def test_small_divergence_relative_accuracy(rng, kind, C, delta):
    """Divergences between softmax(x) and softmax(x + delta): 1e-6 relative
    in float64 (measured: ~eps / delta, 5e-12 at 1e-4), where the naive sum
    of P (log P - log Q) over rounded log-probabilities loses ~1e-7 at
    delta = 1e-4 and ~1e-3 at 1e-6 (asserted below: the test can fail)."""
    s = rng.standard_normal((6, C)) * 3
    t = s + rng.standard_normal((6, C)) * delta
    want = mp_divergence(kind, s, t)
    f, _, kw = fns(kind)
    got = f(s, t, reduction="none", **kw)
    assert np.all(want > 0)
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=0)
    if kind == "forward" and delta == 1e-6:
        lp, lq = ref.log_softmax(t), ref.log_softmax(s)
        naive = np.sum(np.exp(lp) * (lp - lq), axis=-1)
        assert np.max(np.abs(naive / want - 1)) > 1e-5


@pytest.mark.parametrize("kind", list(KINDS))
def test_small_divergence_float32(rng, kind):
    """float32: ~eps32 / delta relative (the rounded exponentials set it)."""
    s = (rng.standard_normal((6, 200)) * 3).astype(np.float32)
    t = (s + rng.standard_normal((6, 200)) * 1e-2).astype(np.float32)
    f, _, kw = fns(kind)
    got = f(s, t, reduction="none", **kw)
    np.testing.assert_allclose(got, mp_divergence(kind, s.astype(float), t.astype(float)), rtol=5e-4)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("dtype", DTYPES)
def test_identical_rows_are_exactly_zero(rng, isa, kind, dtype):
    f, fg, kw = fns(kind)
    s = (rng.standard_normal((20, 300)) * 5).astype(dtype)
    s[3, :50] = -np.inf  # masked classes too
    loss, g = fg(s, s.copy(), reduction="none", temperature=0.6, **kw)
    assert np.all(loss == 0) and np.all(g == 0)
    # a teacher that is log_softmax(student) rounded: its exact divergence is
    # that rounding (ulps), not 0
    lp = ce_fast.log_softmax(s)
    near = fg(s, lp, teacher_is="log_probs", reduction="none", temperature=1.0, **kw)[0]
    assert np.all(np.abs(near) <= 8 * np.finfo(dtype).eps)


finite_rows = hnp.arrays(
    np.float64,
    st.tuples(st.integers(1, 6), st.integers(1, 40)),
    elements=st.floats(-30, 30, allow_nan=False),
)


@given(s=finite_rows, data=st.data())
def test_property_nonnegative(s, data):
    t = data.draw(hnp.arrays(np.float64, s.shape, elements=st.floats(-30, 30)))
    beta = data.draw(st.floats(0, 1))
    T = data.draw(st.floats(0.05, 20))
    for kw in ({"direction": "forward"}, {"direction": "reverse"}):
        assert np.all(ce_fast.kl_divergence(s, t, temperature=T, reduction="none", **kw) >= 0)
    assert np.all(ce_fast.js_divergence(s, t, beta=beta, temperature=T, reduction="none") >= 0)
    near = s + data.draw(st.floats(-1e-9, 1e-9)) * np.arange(s.shape[-1])
    assert np.all(ce_fast.kl_divergence(s, near, reduction="none") >= 0)
    assert np.all(ce_fast.kl_divergence(s, s, reduction="none") == 0)


@given(
    n=st.integers(1, 300),
    c=st.integers(1, 700),
    kind=st.sampled_from(list(KINDS)),
    mode=st.sampled_from(MODES),
    seed=st.integers(0, 2**32 - 1),
)
def test_property_bitwise_identical_for_every_thread_count(n, c, kind, mode, seed):
    rng = np.random.default_rng(seed)
    s, t = pair(rng, (n, c), np.float32)
    t = teacher_for(mode, t.astype(np.float64)).astype(np.float32)
    _, fg, kw = fns(kind)
    runs = [fg(s, t, teacher_is=mode, num_threads=k, temperature=1.3, **kw) for k in (1, 2, 3)]
    for loss, g in runs[1:]:
        assert_bitwise(loss, runs[0][0])
        assert_bitwise(g, runs[0][1])


def test_many_threads_large_input_bitwise(rng):
    s, t = pair(rng, (700, 1000), np.float32)
    runs = [ce_fast.kl_divergence_and_grad(s, t, num_threads=k) for k in (1, 2, 4, 7)]
    for loss, g in runs[1:]:
        assert_bitwise(loss, runs[0][0])
        assert_bitwise(g, runs[0][1])


# ---------------------------------------------------------------------------
# beta endpoints, temperature, options
# ---------------------------------------------------------------------------


def test_js_endpoints_are_the_two_kls(rng):
    s, t = pair(rng, (10, 8))
    for beta, direction in ((0.0, "forward"), (1.0, "reverse")):
        a = ce_fast.js_divergence_and_grad(s, t, beta=beta, temperature=2.0)
        b = ce_fast.kl_divergence_and_grad(s, t, direction=direction, temperature=2.0)
        assert_bitwise(a[0], b[0])
        assert_bitwise(a[1], b[1])
    # the formula itself tends to 0 at the endpoints
    assert ce_fast.js_divergence(s, t, beta=1e-9) < 1e-7


def test_symmetric_js_is_symmetric(rng):
    s, t = pair(rng, (10, 8))
    assert_close(ce_fast.js_divergence(s, t), ce_fast.js_divergence(t, s))


def test_no_temperature_squared_and_the_gradient_chain_factor(rng):
    s, t = pair(rng, (6, 9))
    T = 4.0
    loss, g = ce_fast.kl_divergence_and_grad(s, t, temperature=T)
    loss1, g1 = ce_fast.kl_divergence_and_grad(s / T, t / T)
    assert_close(loss, loss1)
    assert_close(g, g1 / T)


# ---------------------------------------------------------------------------
# edge values
# ---------------------------------------------------------------------------


def test_row_rules():
    C = 4
    s = np.zeros((8, C))
    t = np.zeros((8, C))
    s[0, 1] = np.nan  # NaN student
    t[1, 2] = np.nan  # NaN teacher
    s[2, 0] = np.inf  # +inf student
    t[3] = -np.inf  # all -inf teacher logits
    s[4] = -np.inf  # all -inf student
    s[5, 0] = -np.inf  # masked student class where P > 0: forward KL = +inf
    t[6, 0] = -np.inf  # P = 0 on a class: contributes 0 (forward); reverse infinite
    loss, g = ce_fast.kl_divergence_and_grad(s, t, reduction="none")
    assert np.isnan(loss[:5]).all() and np.isnan(g[:5]).all()
    assert loss[5] == np.inf and np.isfinite(g[5]).all()
    assert np.isfinite(loss[6]) and loss[6] > 0 and loss[7] == 0
    rl, rg = ce_fast.kl_divergence_and_grad(s, t, direction="reverse", reduction="none")
    assert rl[6] == np.inf and np.isnan(rg[6]).all()
    assert np.isfinite(rl[5]) and np.isfinite(rg[5]).all()
    for fn, kw in ((ce_fast.kl_divergence_and_grad, {}), (ce_fast.js_divergence_and_grad, {"beta": 0.4})):
        want = fns("forward" if not kw else "js", ref)[1](s, t, reduction="none", **kw)
        got = fn(s, t, reduction="none", **kw)
        assert_close(got[0], want[0])
        assert_close(got[1], want[1])


def test_probability_teacher_rules():
    s = np.zeros((3, 3))
    p = np.array([[0.5, 0.5, 0.0], [0.5, -0.1, 0.6], [0.2, 0.3, np.inf]])
    loss, g = ce_fast.kl_divergence_and_grad(s, p, teacher_is="probs", reduction="none")
    assert np.isfinite(loss[0]) and np.isnan(loss[1:]).all() and np.isnan(g[1:]).all()
    assert_close(loss[0], np.log(1.5))


def test_unnormalised_teacher_follows_torch_and_its_lower_bound(rng):
    s = rng.standard_normal((5, 7))
    p = ref.softmax(rng.standard_normal((5, 7))) * 0.5  # sums to 1/2: KL can be < 0
    got = ce_fast.kl_divergence(s, p, teacher_is="probs", reduction="none")
    want = F.kl_div(F.log_softmax(torch.tensor(s), -1), torch.tensor(p), reduction="none").sum(-1).numpy()
    assert_close(got, want)
    same = ce_fast.kl_divergence(s, ref.softmax(s) * 0.5, teacher_is="probs", reduction="none")
    assert_close(same, np.full(5, 0.5 * np.log(0.5)))  # Z log Z exactly, never below


def test_ignored_rows_are_never_read_and_mean_over_the_rest(rng):
    s, t = pair(rng, (6, 5))
    y = np.array([1, -100, 2, -100, 0, 0])
    s[1] = np.nan
    t[3] = np.nan
    loss, g = ce_fast.kl_divergence_and_grad(s, t, target=y, ignore_index=-100)
    keep = y != -100
    assert_close(loss, ce_fast.kl_divergence(s[keep], t[keep]))
    assert np.all(g[~keep] == 0)
    loss, g = ce_fast.kl_divergence_and_grad(s, t, target=np.full(6, 7), ignore_index=7)
    assert np.isnan(loss) and np.all(g == 0)


def test_empty_batch_and_single_class():
    e = np.zeros((0, 4))
    assert np.isnan(ce_fast.kl_divergence(e, e))
    assert ce_fast.kl_divergence(e, e, reduction="sum") == 0
    assert ce_fast.kl_divergence_and_grad(e, e)[1].shape == (0, 4)
    one = np.array([[3.0], [-2.0]])
    loss, g = ce_fast.js_divergence_and_grad(one, -one)
    assert loss == 0 and np.all(g == 0)


def test_huge_logit_gaps_stay_finite(rng):
    s = np.array([[0.0, -700.0, 5.0], [0.0, 0.0, 0.0]], np.float64)
    t = np.array([[-700.0, 0.0, 5.0], [0.0, 0.0, -745.0]])
    for kind in KINDS:
        _, fg, kw = fns(kind)
        rl, rg = fns(kind, ref)[1](s, t, reduction="none", **kw)
        loss, g = fg(s, t, reduction="none", **kw)
        assert np.isfinite(loss).all() and np.isfinite(g).all()
        assert_close(loss, rl, rtol=1e-9)
        assert_close(g, rg, rtol=1e-9)


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw, exc, match",
    [
        ({"teacher_is": "prob"}, ValueError, "teacher_is"),
        ({"direction": "backward"}, ValueError, "direction"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"temperature": np.nan}, ValueError, "temperature"),
        ({"reduction": "batchmean"}, ValueError, "reduction"),
        ({"ignore_index": -100}, ValueError, "target and ignore_index"),
        ({"target": np.zeros(3, int)}, ValueError, "target and ignore_index"),
        ({"target": np.zeros(3), "ignore_index": 0}, TypeError, "integer tokens"),
        ({"target": np.zeros(4, int), "ignore_index": 0}, ValueError, "shape"),
        ({"num_threads": 0}, ValueError, "num_threads"),
        ({"axis": 2}, np.exceptions.AxisError, None),
    ],
)
def test_errors(kw, exc, match):
    with pytest.raises(exc, match=match):
        ce_fast.kl_divergence(np.zeros((3, 4)), np.zeros((3, 4)), **kw)
    with pytest.raises(exc, match=match):
        ref.kl_divergence(np.zeros((3, 4)), np.zeros((3, 4)), **kw)


def test_more_errors():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match="beta"):
        ce_fast.js_divergence(x, x, beta=1.5)
    with pytest.raises(ValueError, match="teacher must have"):
        ce_fast.kl_divergence(x, x[:, :3])
    with pytest.raises(ValueError, match="empty"):
        ce_fast.kl_divergence(x[:, :0], x[:, :0])
    with pytest.raises(TypeError, match="teacher"):
        ce_fast.kl_divergence(x, x.astype(complex))
    with pytest.raises(ValueError, match="out"):
        ce_fast.kl_divergence_and_grad(x, x, out=np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="grad_output must be a scalar"):
        ce_fast.kl_divergence_and_grad(x, x, grad_output=np.ones(3))
    with pytest.raises(TypeError):
        ce_fast.kl_divergence(x, x, direction="forward", beta=0.5)  # beta is js_divergence's


def test_uint64_tokens_beyond_int64_never_match(rng):
    s, t = pair(rng, (3, 4))
    y = np.array([2**64 - 1, 5, 2**63 + 5], np.uint64)
    got = ce_fast.kl_divergence(s, t, target=y, ignore_index=5, reduction="none")
    assert got[1] == 0 and got[0] > 0 and got[2] > 0


# ---------------------------------------------------------------------------
# out= and the aliasing contract, one operand at a time
# ---------------------------------------------------------------------------

N, C = 40, 50


@pytest.mark.parametrize("name", ["kl_divergence_and_grad", "js_divergence_and_grad"])
@pytest.mark.parametrize(
    "operand", ["in_place", "student_shifted", "teacher", "sample_weight", "target", "grad_output"]
)
def test_out_aliasing_each_operand(rng, name, operand):
    fn = getattr(ce_fast, name)
    s0, t0 = pair(rng, (N, C))
    y0 = rng.integers(0, 3, N)
    sw0, go0 = rng.random(N), rng.random(N)
    buf = np.zeros(1 << 14)
    out = buf[N * C : 2 * N * C].reshape(N, C)
    s, t, kw = s0.copy(), t0.copy(), {"reduction": "none", "grad_output": go0.copy(), "temperature": 1.5}
    kw.update(sample_weight=sw0.copy(), target=y0.copy(), ignore_index=1)
    if operand == "in_place":
        s = out
        s[...] = s0
    elif operand == "student_shifted":
        s = buf[N * C + 3 : 2 * N * C + 3].reshape(N, C)
        s[...] = s0
    elif operand == "teacher":
        t = buf[N * C - 7 : 2 * N * C - 7].reshape(N, C)
        t[...] = t0
    elif operand == "target":
        kw["target"] = out.reshape(-1).view(np.int64)[5 : 5 + N]
        kw["target"][...] = y0
    else:
        kw[operand] = out.reshape(-1)[10 : 10 + N]
        kw[operand][...] = {"sample_weight": sw0, "grad_output": go0}[operand]
    want = fn(s0, t0, reduction="none", grad_output=go0, temperature=1.5, sample_weight=sw0, target=y0,
              ignore_index=1)  # fmt: skip
    got = fn(s, t, out=out, **kw)
    assert got[1] is out
    assert_bitwise(got[0], want[0])
    assert_bitwise(got[1], want[1])


def test_out_student_in_place_unscaled_is_bitwise(rng):
    s, t = pair(rng, (64, 33), np.float32)
    want = ce_fast.kl_divergence_and_grad(s.copy(), t, direction="reverse")
    got = ce_fast.kl_divergence_and_grad(s, t, direction="reverse", out=s)
    assert got[1] is s
    assert_bitwise(got[0], want[0])
    assert_bitwise(got[1], want[1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("direction", ["forward", "reverse"])
def test_out_student_in_place_with_small_divergences(rng, dtype, direction):
    """Rows close to the teacher take the refinement pass, which reads the
    student again: in place it must read the logits, not the gradient."""
    t = rng.standard_normal((40, 7)).astype(dtype)
    s = (t + 1e-5 * rng.standard_normal(t.shape)).astype(dtype)
    s[::3] = t[::3]  # identical rows: exactly 0
    s[:, :1] = t[:, :1]
    s1 = s[:, :1].copy()  # one class: always 0
    for x in (s, s1):
        tt = t if x.shape == t.shape else t[:, :1]
        want = ce_fast.kl_divergence_and_grad(x.copy(), tt, direction=direction, reduction="none")
        got = ce_fast.kl_divergence_and_grad(x, tt, direction=direction, reduction="none", out=x)
        assert got[1] is x
        assert_bitwise(got[0], want[0])
        assert_bitwise(got[1], want[1])
