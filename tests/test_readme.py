"""The README runs as written.

Every fenced ``python`` block of README.md is executed statement by
statement, and what its comments claim is asserted right after the statement
that makes the claim (``CHECKS`` maps a piece of the statement's source to its
check). The two training blocks share one namespace, as a reader runs them
one after the other; every other block runs alone.

Sizes are shrunk by textual substitution (``SHRINK``: the README's sizes, as
written, are replaced by small ones). Every substitution and every check must
find its text exactly once, and every block must be checked, so a README edit
that this file does not follow fails here instead of going stale."""

from __future__ import annotations

import ast
import contextlib
import copy
import io
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import ce_fast
import ce_fast.reference as ref
from tests.conftest import assert_close

README = Path(__file__).resolve().parents[1] / "README.md"
pytestmark = pytest.mark.skipif(not README.exists(), reason="README.md is not beside the tests")

# which block is which: a piece of text that only that block contains
MARKERS = {
    "using": "labels = rng.integers(0, C, N)",
    "train_a": "def objective(theta, X, y, C):",
    "train_b": "W1, b1 = ",
    "linear": "ce_fast.linear_cross_entropy_and_grad(",
    "dask": "import ce_fast.dask as cfd",
    "dropins": "from ce_fast.scipy import",
    "torch": "import ce_fast.torch as cft",
    "distill": "ce_fast.kl_divergence_and_grad(",
}

SHRINK = {
    "using": [("N, C = 4096, 32000", "N, C = 300, 50")],
    "train_a": [],  # the digits data: small already
    "train_b": [],
    "linear": [("N, D, C = 2048, 256, 32000", "N, D, C = 70, 12, 40")],
    "dask": [
        ("N, C = 65536, 128256", "N, C = 96, 200"),
        ("chunks=(1024, C // 4)", "chunks=(32, C // 4)"),
        ("chunks=1024)", "chunks=32)"),
    ],
    "dropins": [("rng.standard_normal((100_000, 10))", "rng.standard_normal((500, 10))")],
    "torch": [],
    "distill": [("(512, 1000)", "(40, 30)")],
}

Check = Callable[[dict, dict, str], None]  # (namespace after, namespace before, printed text)


def python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(encoding="utf-8"), re.S | re.M)


def block(name: str) -> str:
    found = [b for b in python_blocks() if MARKERS[name] in b]
    assert len(found) == 1, f"{len(found)} README blocks contain {MARKERS[name]!r}"
    src = found[0]
    for old, new in SHRINK[name]:
        assert src.count(old) == 1, f"the README block no longer contains {old!r} once: update SHRINK"
        src = src.replace(old, new)
    return src


def snapshot(ns: dict) -> dict:
    """The namespace as it is, arrays and generators copied."""
    out = {}
    for k, v in ns.items():
        if isinstance(v, np.ndarray):
            out[k] = v.copy()
        elif isinstance(v, np.random.Generator):
            out[k] = copy.deepcopy(v)
        else:
            out[k] = v
    return out


def run(src: str, checks: dict[str, Check], ns: dict | None = None) -> dict:
    """Execute ``src`` statement by statement; after each statement whose
    source contains a key of ``checks``, call that check."""
    ns = {} if ns is None else ns
    used = dict.fromkeys(checks, 0)
    for stmt in ast.parse(src).body:
        text = ast.get_source_segment(src, stmt) or ""
        mine = [k for k in checks if k in text]
        before = snapshot(ns) if mine else {}
        printed = io.StringIO()
        with contextlib.redirect_stdout(printed):
            exec(compile(ast.Module([stmt], []), "<README.md>", "exec"), ns)
        for k in mine:
            used[k] += 1
            checks[k](ns, before, printed.getvalue())
    assert all(n == 1 for n in used.values()), f"each check must match one statement: {used}"
    return ns


def test_every_block_is_checked():
    blocks = python_blocks()
    assert len(blocks) == len(MARKERS), "a README python block without a test here"
    for b in blocks:
        assert sum(m in b for m in MARKERS.values()) == 1, b[:200]


# ---------------------------------------------------------------------------
# Using it
# ---------------------------------------------------------------------------


def test_using_it():
    first: dict = {}

    def loss_only(ns, before, out):
        loss = ns["loss"]
        assert type(loss) is np.float32  # "an np.float32 scalar"
        assert_close(loss, ref.cross_entropy(ns["logits"], ns["labels"]), np.float32)
        first["loss"], first["logits"] = loss, ns["logits"].copy()

    def fused(ns, before, out):
        assert ns["loss"] == first["loss"]  # "the same loss"
        want = ref.cross_entropy_and_grad(ns["logits"], ns["labels"])[1]
        assert_close(ns["grad"], want, np.float32)

    def every_option(ns, before, out):
        losses, labels = ns["losses"], ns["labels"]
        assert np.array_equal(before["logits"], first["logits"])  # not yet overwritten by out=
        assert losses.shape == (ns["N"],)  # "one loss per row"
        assert np.all(losses[labels == -100] == 0) and np.any(labels == -100)  # "0 where ignored"
        twin = dict(before, ce_fast=ref)  # the same call, rng replayed, on the NumPy twin
        exec(_stmt(ns, "losses = ce_fast.cross_entropy(").replace("losses =", "want =", 1), twin)
        assert_close(losses, twin["want"], np.float32)
        assert not np.allclose(losses, ref.cross_entropy(before["logits"], labels, reduction="none"))

    def in_place(ns, before, out):
        assert ns["grad"] is ns["logits"]  # "grad is logits"
        want_loss, want_grad = ref.cross_entropy_and_grad(before["logits"], ns["labels"])
        assert_close(ns["loss"], want_loss, np.float32)
        assert_close(ns["grad"], want_grad, np.float32)

    def config(ns, before, out):
        assert out.startswith(f"ce_fast {ce_fast.__version__}\n")
        for word in ("compiler", "openmp", "simd level in use"):
            assert word in out

    src = block("using")
    run(
        src,
        {
            "loss = ce_fast.cross_entropy(logits, labels)": loss_only,
            "ce_fast.cross_entropy_and_grad(logits, labels)": fused,
            "losses = ce_fast.cross_entropy(": every_option,
            "out=logits)": in_place,
            "ce_fast.show_config()": config,
        },
        {"__src__": src},
    )


def _stmt(ns: dict, start: str) -> str:
    """The statement of the block being run (ns["__src__"]) that starts so."""
    src = ns["__src__"]
    hits = [ast.get_source_segment(src, s) or "" for s in ast.parse(src).body]
    hits = [h for h in hits if h.startswith(start)]
    assert len(hits) == 1
    return hits[0]


# ---------------------------------------------------------------------------
# Training with ce_fast
# ---------------------------------------------------------------------------


@pytest.fixture
def one_blas_thread():
    """As the README says: one BLAS thread for these small matmuls."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a test dependency
        yield
        return
    with threadpool_limits(limits=1):
        yield


@pytest.mark.usefixtures("one_blas_thread")
def test_training_examples():
    pytest.importorskip("scipy.optimize")
    sklearn = pytest.importorskip("sklearn.linear_model")

    def fitted(ns, before, out):
        res = ns["res"]
        assert res.success
        # the minimum of scikit-learn's objective: its own fit lands on the same value
        X, y = ns["X"], ns["y"]
        m = sklearn.LogisticRegression(C=1.0, tol=1e-10, max_iter=10000).fit(X, y)
        theta = np.concatenate([m.coef_.T.ravel(), m.intercept_])
        assert abs(res.fun - ns["objective"](theta, X, y, 1.0)[0]) < 1e-6

    def printed_fit(ns, before, out):
        ok, fun = out.split()
        assert ok == "True" and fun.startswith("0.1995")  # "True 0.1995..."

    ns = run(block("train_a"), {"res = minimize(": fitted, "print(res.success": printed_fit})

    def trained(ns, before, out):
        means = [float(line.split()[1]) for line in out.splitlines()]
        assert len(means) == 5 and all(a > b for a, b in zip(means, means[1:]))  # "falls"
        assert round(means[0], 2) == 1.41 and round(means[1], 2) == 0.49  # "1.41, 0.49, …, 0.18"
        assert round(means[-1], 2) == 0.18
        assert np.shares_memory(ns["g"], ns["G"])  # "the buffer of every step"

    run(block("train_b"), {"for epoch in range(5):": trained}, ns)


# ---------------------------------------------------------------------------
# Huge vocabularies without the logits
# ---------------------------------------------------------------------------


def test_linear_cross_entropy():
    def composed(ns, before, out):
        h, w, b, t = ns["hidden"], ns["weight"], ns["bias"], ns["target"]
        loss, G = ce_fast.cross_entropy_and_grad(h @ w.T + b, t, label_smoothing=0.1)
        assert_close(ns["loss"], loss, np.float32)
        for got, want in [(ns["d_hidden"], G @ w), (ns["d_weight"], G.T @ h), (ns["d_bias"], G.sum(0))]:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())

    run(block("linear"), {"ce_fast.linear_cross_entropy_and_grad(": composed}, {"np": np, "ce_fast": ce_fast})


# ---------------------------------------------------------------------------
# Dask
# ---------------------------------------------------------------------------


def test_dask():
    pytest.importorskip("dask.array")
    uniform_lse = math.log(math.e - 1)  # E[log Σ e^x] - log C for x ~ U[0, 1)

    def computed(ns, before, out):
        x, y = ns["logits"].compute(), ns["labels"].compute()
        loss, grad = ce_fast.cross_entropy_and_grad(x, y, label_smoothing=0.1)
        assert_close(ns["loss"], loss, np.float32)
        np.testing.assert_allclose(ns["gnorm2"], np.sum(grad.astype(np.float64) ** 2), rtol=1e-5)
        assert_close(ns["lse"], ce_fast.logsumexp(x), np.float32)

    def printed(ns, before, out):
        loss, gnorm2, lse_mean = map(float, out.split())
        N, C = ns["N"], ns["C"]
        assert abs(lse_mean - (math.log(C) + uniform_lse)) < 0.05  # "log C + log(e - 1)"
        assert abs(loss - (math.log(C) + uniform_lse - 0.5)) < 0.15  # "≈ 11.80" at full size
        # each row's gradient is (p - q) / N, q the smoothed one-hot target: 0.9
        # (plus 0.1 / C) on the label, p ≈ 1/C: |p - q|² ≈ 0.81
        assert abs(gnorm2 * N / 0.81 - 1) < 0.05

    run(block("dask"), {"dask.compute(": computed, "print(loss, gnorm2": printed})


def test_full_size_dask_claims():
    """The printed values the comment gives for N, C = 65536, 128256 follow
    from the formulas checked above at small size."""
    N, C = 65536, 128256
    assert f"{math.log(C) + math.log(math.e - 1):.2f}" == "12.30"
    assert f"{math.log(C) + math.log(math.e - 1) - 0.5:.2f}" == "11.80"
    assert f"{0.81 / N:.1e}" == "1.2e-05"
    assert "≈ 11.80, 1.2e-05, 12.30 (= log C + log(e - 1))" in block("dask")


# ---------------------------------------------------------------------------
# Drop-ins and distillation
# ---------------------------------------------------------------------------


def test_dropins():
    special = pytest.importorskip("scipy.special")
    stats = pytest.importorskip("scipy.stats")
    metrics = pytest.importorskip("sklearn.metrics")

    def lse(ns, before, out):
        np.testing.assert_allclose(ns["lse"], special.logsumexp(ns["x"], axis=1, b=0.5), rtol=1e-12)

    def kl(ns, before, out):
        np.testing.assert_allclose(ns["kl"], stats.entropy(ns["p"], ns["q"], axis=1), rtol=1e-10)

    def loss(ns, before, out):
        want = metrics.log_loss(ns["y"], ns["p"])
        assert math.isclose(float(out), want, rel_tol=1e-6) and abs(want - 2.8) < 0.3

    run(block("dropins"), {"lse = logsumexp(": lse, "kl = entropy(": kl, "print(log_loss(": loss})


def test_distillation():
    def kl(ns, before, out):
        want = ref.kl_divergence_and_grad(ns["student"], ns["teacher"], temperature=2.0)
        assert_close(ns["loss"], want[0], np.float32)
        assert_close(ns["grad"], want[1], np.float32)

    def js(ns, before, out):
        assert_close(ns["jsd"], ref.js_divergence(ns["student"], ns["teacher"], beta=0.5), np.float32)

    run(block("distill"), {"ce_fast.kl_divergence_and_grad(": kl, "ce_fast.js_divergence(": js})


def test_torch():
    torch = pytest.importorskip("torch")
    F = torch.nn.functional

    def backward(ns, before, out):
        x, y = ns["logits"], ns["target"]
        want = torch.autograd.grad(
            F.cross_entropy(x, y, label_smoothing=0.1) + 1e-4 * torch.logsumexp(x, 1).square().mean(), x
        )[0]  # z_loss: λ·lse², meaned like the loss
        torch.testing.assert_close(x.grad, want, rtol=1e-5, atol=1e-7)

    def patched(ns, before, out):
        x, y = ns["logits"], ns["target"]
        torch.testing.assert_close(ns["loss"], F.cross_entropy(x, y), rtol=1e-6, atol=0)
        assert type(ns["loss"].grad_fn).__name__ != "NllLossBackward0"  # ce_fast's, not torch's

    run(block("torch"), {"loss.backward()": backward, "loss = torch.nn.CrossEntropyLoss()": patched})
