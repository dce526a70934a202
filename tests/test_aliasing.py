"""The aliasing contract of every ``out=``: when ``out`` shares memory with
any other operand, the result equals the unaliased computation (or the call
raises ValueError naming the operand); ``out=`` the input itself, in place,
stays supported. One test per operand per family, each building the aliased
call inside one buffer and comparing with the same call on private copies."""

from __future__ import annotations

import numpy as np
import pytest

import ce_fast
from tests.conftest import assert_bitwise

N, C = 40, 50
CATEGORICAL = ["cross_entropy_grad", "cross_entropy_and_grad"]
BINARY = ["binary_cross_entropy_with_logits_grad", "binary_cross_entropy_with_logits_and_grad"]


def _check(fn, build, **kw):
    """build(buf) -> (args, call_kw, out) laid out in buf; the same call on
    copies of every operand gives the expected result."""
    buf = np.empty(1 << 14)
    args, call_kw, out = build(buf)
    want = fn(*[np.array(a, copy=True) for a in args],
              **{k: np.array(v, copy=True) if isinstance(v, np.ndarray) else v for k, v in call_kw.items()},
              **kw)  # fmt: skip
    got = fn(*args, **call_kw, out=out, **kw)
    want = want if isinstance(want, tuple) else (want,)
    got = got if isinstance(got, tuple) else (got,)
    assert got[-1] is out
    for g, w in zip(got, want):
        assert_bitwise(g, w)


def _logits(rng, n=N, c=C):
    return rng.standard_normal((n, c)) * 3


@pytest.mark.parametrize("name", CATEGORICAL)
@pytest.mark.parametrize(
    "operand", ["logits_shifted", "int_target", "prob_target", "weight", "sample_weight", "grad_output"]
)
def test_categorical_out_aliasing_an_operand(rng, name, operand):
    fn = getattr(ce_fast, name)
    x0 = _logits(rng)
    y0 = rng.integers(0, C, N)
    q0 = rng.dirichlet(np.ones(C), N)

    def build(buf):
        out = buf[N * C : 2 * N * C].reshape(N, C)
        x, y, kw = x0.copy(), y0.copy(), {}
        if operand == "logits_shifted":  # out starts a few elements into the logits
            x = buf[N * C + 3 : 2 * N * C + 3].reshape(N, C)
            x[...] = x0
        elif operand == "int_target":
            y = out.reshape(-1).view(np.int64)[:N]
            y[...] = y0
        elif operand == "prob_target":
            y = buf[N * C + 5 : 2 * N * C + 5].reshape(N, C)
            y[...] = q0
        elif operand == "weight":
            kw["weight"] = out.reshape(-1)[:C]
            kw["weight"][...] = rng.random(C) + 0.5
        elif operand == "sample_weight":
            kw["sample_weight"] = out.reshape(-1)[10 : 10 + N]
            kw["sample_weight"][...] = rng.random(N)
        else:
            kw["grad_output"] = out.reshape(-1)[:N]
            kw["grad_output"][...] = rng.random(N)
            kw["reduction"] = "none"
        return (x, y), kw, out

    _check(fn, build)


def test_issue_repro_weight_aliasing_out_gives_the_unaliased_loss(rng):
    x = rng.standard_normal((N, C))
    y = rng.integers(0, C, N)
    w = rng.random(C) + 0.5
    want = ce_fast.cross_entropy(x, y, weight=w)
    buf = np.empty(N * C)
    buf[:C] = w
    loss, g = ce_fast.cross_entropy_and_grad(x, y, weight=buf[:C], out=buf.reshape(N, C))
    assert loss == want


def test_int_labels_inside_the_gradient_buffer_do_not_crash(rng):
    """The labels live in the logits' memory, which out=logits overwrites."""
    x = rng.standard_normal((64, 16))
    t = x.reshape(-1).view(np.int64)[:64]
    t[:] = np.arange(64) % 16
    want = ce_fast.cross_entropy_and_grad(x.copy(), t.copy())
    got = ce_fast.cross_entropy_and_grad(x, t, out=x)
    assert_bitwise(got[0], want[0])
    assert_bitwise(got[1], want[1])


@pytest.mark.parametrize("name", BINARY)
@pytest.mark.parametrize("operand", ["logits_shifted", "target", "weight", "pos_weight", "grad_output"])
def test_binary_out_aliasing_an_operand(rng, name, operand):
    fn = getattr(ce_fast, name)
    x0 = _logits(rng, 31, 8)
    t0 = rng.random((31, 8))

    def build(buf):
        n = 31 * 8
        out = buf[n : 2 * n].reshape(31, 8)
        x, t, kw = x0.copy(), t0.copy(), {}
        if operand == "logits_shifted":
            x = buf[n + 8 : 2 * n + 8].reshape(31, 8)
            x[...] = x0
        elif operand == "target":
            t = buf[n - 8 : 2 * n - 8].reshape(31, 8)
            t[...] = t0
        elif operand in ("weight", "pos_weight"):
            kw[operand] = out.reshape(-1)[:8]
            kw[operand][...] = rng.random(8) + 0.5
        else:
            kw["grad_output"] = buf[n + 3 : 2 * n + 3].reshape(31, 8)
            kw["grad_output"][...] = rng.random((31, 8))
            kw["reduction"] = "none"
        return (x, t), kw, out

    _check(fn, build)


def test_issue_repro_binary_fast_path_with_the_target_inside_out(rng):
    buf = rng.random((1001, 8))
    x, t = buf[1:], buf[:-1]
    want = ce_fast.binary_cross_entropy_with_logits(x.copy(), t.copy())
    loss, g = ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, out=x)
    assert loss == want and g is x


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shift", [1, 7, -3])
def test_softmax_out_overlapping_the_input(rng, name, shift):
    fn = getattr(ce_fast, name)
    x0 = _logits(rng, 20, 9)
    buf = np.empty(1000)
    base = 300
    x = buf[base : base + 180].reshape(20, 9)
    x[...] = x0
    out = buf[base + shift : base + shift + 180].reshape(20, 9)
    got = fn(x, out=out)
    assert got is out
    assert_bitwise(got, fn(x0))


@pytest.mark.parametrize(
    "name", ["softmax", "log_softmax", "cross_entropy_grad", "binary_cross_entropy_with_logits_grad"]
)
def test_out_equal_to_the_input_stays_in_place(rng, name):
    x = _logits(rng, 12, 5)
    fn = getattr(ce_fast, name)
    if name.startswith("cross"):
        args = (x, rng.integers(0, 5, 12))
    elif name.startswith("binary"):
        args = (x, rng.random((12, 5)))
    else:
        args = (x,)
    want = fn(*[a.copy() for a in args])
    assert fn(*args, out=x) is x
    assert_bitwise(x, want if not isinstance(want, tuple) else want[-1])
