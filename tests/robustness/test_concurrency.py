"""Concurrency: many Python threads calling every kernel at once, thread
pools with more OpenMP threads than cores, nested parallelism, and
KeyboardInterrupt delivered during a long call.

Every kernel releases the GIL, so Python threads really run kernels
concurrently; each call has its own outputs and shares only read-only
inputs, so results must be bitwise identical to serial calls."""

from __future__ import annotations

import _thread
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import ce_fast
from tests.conftest import assert_bitwise

TIMEOUT = 120  # seconds; a deadlock fails instead of hanging the suite


def _inputs(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((257, 531)).astype(dtype) * 3
    x[5, 7] = np.nan
    x[9, :4] = -np.inf
    y = rng.integers(0, 531, 257)
    y[::17] = -100
    p = ce_fast.softmax(x[10:])
    t = (rng.random(x.shape) < 0.3).astype(dtype)
    for a in (x, y, p, t):
        a.flags.writeable = False  # shared and read-only: nobody may write
    return x, y, p, t


def _calls(x, y, p, t, nt):
    """Every public function (its own outputs), in a fixed order."""
    sw = np.linspace(0.5, 2.0, x.shape[0]).astype(x.dtype)
    w = np.linspace(0.1, 3.0, x.shape[1]).astype(x.dtype)
    return [
        lambda: ce_fast.cross_entropy(x, y, num_threads=nt),
        lambda: ce_fast.cross_entropy(x, y, reduction="none", weight=w, num_threads=nt),
        lambda: ce_fast.cross_entropy_grad(x, y, label_smoothing=0.1, sample_weight=sw, num_threads=nt),
        lambda: ce_fast.cross_entropy_and_grad(x, y, z_loss=1e-3, softcap=20.0, num_threads=nt),
        lambda: ce_fast.cross_entropy_and_grad(x[10:], p, axis=-1, num_threads=nt),
        lambda: ce_fast.cross_entropy(x.T, y, axis=0, num_threads=nt),
        lambda: ce_fast.binary_cross_entropy_with_logits(x, t, num_threads=nt),
        lambda: ce_fast.binary_cross_entropy_with_logits_grad(x, t, pos_weight=w, num_threads=nt),
        lambda: ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, weight=w, reduction="none", num_threads=nt),
        lambda: ce_fast.binary_cross_entropy(p, t[10:], num_threads=nt),
        lambda: ce_fast.logsumexp(x, num_threads=nt),
        lambda: ce_fast.log_softmax(x, axis=0, num_threads=nt),
        lambda: ce_fast.softmax(x, num_threads=nt),
        lambda: ce_fast.entropy(p, num_threads=nt),
        lambda: ce_fast.softmax_entropy(x, num_threads=nt),
    ]


def _flat(r):
    return list(r) if isinstance(r, tuple) else [r]


def _check_same(got, want):
    for g, w in zip(got, want):
        for a, b in zip(_flat(g), _flat(w)):
            assert_bitwise(a, b)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_many_threads_bitwise_identical_to_serial(dtype):
    x, y, p, t = _inputs(dtype)
    before = [a.tobytes() for a in (x, y, p, t)]
    serial = [f() for f in _calls(x, y, p, t, 1)]
    n_threads, rounds = 8, 4
    barrier = threading.Barrier(n_threads)
    results: dict = {}

    def worker(k):
        barrier.wait(timeout=TIMEOUT)
        nt = [None, 1, 2, 3][k % 4]  # mixed OpenMP team sizes at once
        calls = _calls(x, y, p, t, nt)
        order = np.random.default_rng(k).permutation(len(calls))
        mine = {}
        for _ in range(rounds):
            for i in order:
                mine[int(i)] = calls[i]()
        results[k] = [mine[i] for i in range(len(calls))]

    with ThreadPoolExecutor(n_threads) as ex:
        futs = [ex.submit(worker, k) for k in range(n_threads)]
        for f in futs:
            f.result(timeout=TIMEOUT)
    for k in range(n_threads):
        _check_same(results[k], serial)
    assert [a.tobytes() for a in (x, y, p, t)] == before


def test_oversubscribed_pool_does_not_deadlock():
    """A thread pool whose tasks each ask for 4 OpenMP threads (2 on 2 cores:
    a request is clamped to the processors), 6 tasks at once on 2 cores,
    and tasks that themselves start Python threads calling ce_fast
    (nested parallelism): everything finishes, results unchanged."""
    x, y, p, t = _inputs(np.float32, seed=1)
    want = ce_fast.cross_entropy_and_grad(x, y, num_threads=1)

    def task(_):
        return ce_fast.cross_entropy_and_grad(x, y, num_threads=4)

    def nested(_):
        with ThreadPoolExecutor(3) as inner:
            return list(inner.map(task, range(3)))

    with ThreadPoolExecutor(6) as ex:
        flat = list(ex.map(task, range(24), timeout=TIMEOUT))
        for group in ex.map(nested, range(4), timeout=TIMEOUT):
            flat.extend(group)
    for r in flat:
        _check_same([r], [want])


def test_openmp_inside_openmp_threads_via_threadpoolctl():
    """Calls from threads while a process-wide limit is in force (if
    threadpoolctl is available) are still bitwise identical."""
    threadpoolctl = pytest.importorskip("threadpoolctl")
    x, y, _, _ = _inputs(np.float64, seed=2)
    want = ce_fast.cross_entropy_grad(x, y, num_threads=1)
    with threadpoolctl.threadpool_limits(1):
        with ThreadPoolExecutor(4) as ex:
            got = list(ex.map(lambda _: ce_fast.cross_entropy_grad(x, y), range(8), timeout=TIMEOUT))
    for g in got:
        assert_bitwise(g, want)


def _interrupted(call, delay):
    """Run ``call`` while another thread raises KeyboardInterrupt in this one
    ``delay`` seconds after the call began; return when it began, when the
    interrupt fired and when the call (or its interruption) ended."""
    go = threading.Event()
    fired: list[float] = []

    def interrupter():
        go.wait(TIMEOUT)
        time.sleep(delay)
        fired.append(time.perf_counter())
        _thread.interrupt_main()

    th = threading.Thread(target=interrupter)
    th.start()
    raised_in_call = False
    try:
        try:
            go.set()
            start = time.perf_counter()
            call()
        except KeyboardInterrupt:
            raised_in_call = True
        end = time.perf_counter()
        if not raised_in_call:  # delivered after the wrapper returned
            try:
                time.sleep(1)
                for _ in range(10**6):
                    pass
            except KeyboardInterrupt:
                pass
            else:  # pragma: no cover
                pytest.fail("the interrupt was lost")
    finally:
        th.join()
    return start, fired[0], end


def test_keyboard_interrupt_waits_for_the_kernel():
    """A KeyboardInterrupt raised (``_thread.interrupt_main``, i.e. Ctrl-C)
    while a kernel runs does not abort the kernel: kernels release the GIL
    and do not poll for signals, so the C code runs to the end and the
    interrupt is raised at the next Python bytecode boundary -- in practice
    still inside ce_fast's thin Python wrapper, so the call raises
    KeyboardInterrupt *after* the full computation (its return value is lost,
    but an ``out=`` buffer holds the complete, correct gradient and nothing is
    left half-written or locked: the next call works).

    The input is fixed (3 x 48 MiB in all); the interrupt fires a quarter of
    the way through a call whose length is first measured on the same input,
    so the test takes the same memory on every machine and the interrupt
    lands mid-call on a fast one as on a slow one. One thread and softcap (a
    tanh per logit) make the call long: 0.7 s on a 2-vCPU AVX-512 machine."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1536, 8192)).astype(np.float32)  # 48 MiB
    y = rng.integers(0, 8192, 1536)
    kw = dict(reduction="sum", num_threads=1, softcap=30.0, label_smoothing=0.1)
    want = np.empty_like(x)
    t0 = time.perf_counter()
    ce_fast.cross_entropy_grad(x, y, out=want, **kw)
    duration = time.perf_counter() - t0
    out = np.zeros_like(x)
    # Python's own Ctrl-C handler, even where the suite started with SIGINT
    # ignored (a background job of a non-interactive shell): interrupt_main
    # does nothing then
    handler = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        for _ in range(3):  # a scheduler stall may delay the interrupter past the call
            out[...] = 0
            call = lambda: ce_fast.cross_entropy_grad(x, y, out=out, **kw)  # noqa: E731
            start, fired, end = _interrupted(call, duration / 4)
            if start < fired < end:
                break
    finally:
        signal.signal(signal.SIGINT, handler)
    # the interrupt was issued mid-call, but the kernel was not cut short: every
    # row of out= is complete and exact (an aborted kernel would have left the
    # zeros of the later rows in place)
    assert start < fired < end, "the interrupt never fired during the call"
    assert_bitwise(out, want)
    # and the library is still fully usable
    assert_bitwise(ce_fast.cross_entropy_grad(x, y, **dict(kw, num_threads=2)), want)
