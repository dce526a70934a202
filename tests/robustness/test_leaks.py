"""Leaks: many calls of every public function -- successful and raising --
leave the process RSS and the inputs' reference counts flat.

Default: 3000 rounds (3000 calls of each of 24 call kinds, ~72 000 calls,
~10 s); ``-m slow`` / ``--run-slow``: 10**5 rounds (2.4 million calls)."""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import pytest

import ce_fast

_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def _workload():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 37)).astype(np.float32)
    y = rng.integers(0, 37, 16)
    bad_y = y.copy()
    bad_y[3] = 99
    p = ce_fast.softmax(x)
    t = (x > 0).astype(np.float32)
    w = np.linspace(0.5, 1.5, 37).astype(np.float32)
    out = np.empty_like(x)
    calls = [
        lambda: ce_fast.cross_entropy(x, y),
        lambda: ce_fast.cross_entropy(x, y, weight=w, label_smoothing=0.1, reduction="none"),
        lambda: ce_fast.cross_entropy_grad(x, y, out=out),
        lambda: ce_fast.cross_entropy_and_grad(x, p, z_loss=1e-3, softcap=10.0),
        lambda: ce_fast.binary_cross_entropy_with_logits(x, t),
        lambda: ce_fast.binary_cross_entropy_with_logits_grad(x, t, pos_weight=w),
        lambda: ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, reduction="none"),
        lambda: ce_fast.binary_cross_entropy(p, t),
        lambda: ce_fast.logsumexp(x),
        lambda: ce_fast.log_softmax(x, out=out),
        lambda: ce_fast.softmax(x, axis=0),
        lambda: ce_fast.entropy(p),
        lambda: ce_fast.softmax_entropy(x.T, axis=0),
        lambda: ce_fast.softmax(x[:, :0]),  # an empty class axis: an empty result
        lambda: ce_fast.logsumexp(x, axis=(0, 1), keepdims=True),
    ]
    raising = [
        (IndexError, lambda: ce_fast.cross_entropy(x, bad_y)),
        (IndexError, lambda: ce_fast.cross_entropy_and_grad(x, bad_y)),
        (ValueError, lambda: ce_fast.cross_entropy(x, y, reduction="avg")),
        (ValueError, lambda: ce_fast.cross_entropy_grad(x, y, out=out[:, :3])),
        (TypeError, lambda: ce_fast.cross_entropy(x.astype(np.complex64), y)),
        (ValueError, lambda: ce_fast.binary_cross_entropy(x, t)),  # probs outside [0, 1]
        (ValueError, lambda: ce_fast.binary_cross_entropy_with_logits(x, t[:, :3])),
        (ValueError, lambda: ce_fast.softmax_entropy(x[:, :0])),
        (ValueError, lambda: ce_fast.entropy(x)),  # negative probabilities
    ]
    return (x, y, bad_y, p, t, w, out), calls, raising


def _one_round(calls, raising):
    for f in calls:
        f()
    for exc, f in raising:
        try:
            f()
        except exc:
            pass
        else:  # pragma: no cover
            raise AssertionError("expected an exception")


def _check(n):
    inputs, calls, raising = _workload()
    for _ in range(200):  # warm up caches, allocator pools, lazy imports
        _one_round(calls, raising)
    gc.collect()
    refs = [sys.getrefcount(a) for a in inputs]
    rss0 = _rss()
    for _ in range(n):
        _one_round(calls, raising)
    gc.collect()
    grown = _rss() - rss0
    assert [sys.getrefcount(a) for a in inputs] == refs
    # a leak of even one 16x37 float32 array per call would be 2.4 kB x n
    assert grown < 8 * 2**20, f"RSS grew by {grown / 2**20:.1f} MiB over {n} rounds"
    return grown


def test_no_leaks():
    _check(3000)


@pytest.mark.slow
def test_no_leaks_long():
    _check(10**5)
