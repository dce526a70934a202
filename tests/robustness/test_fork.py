"""Fork safety: a child process computes what its parent computes, whatever
the start method, after the parent has run multi-threaded calls.

GNU libgomp's thread pool does not survive fork(): in a forked child, the
thread that forked would wait forever for its pool's workers. ce_fast detects
this (src/ce_fork.c) and runs that thread's calls on one thread; threads the
child starts, and children of spawn and forkserver, use OpenMP teams as usual.
Each scenario runs in a fresh interpreter with a timeout, so a hang fails the
test instead of blocking the suite."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

import ce_fast
from ce_fast import _core

OPENMP = bool(_core.build_facts()["openmp"])
TIMEOUT = 120  # seconds for one scenario; a hang fails, never blocks

# Run as a script (spawn and forkserver children import it by path). argv:
# start method, and "before" (the parent runs multi-threaded calls, then
# starts the pool) or "after" (a single-threaded parent starts the pool first).
_SCRIPT = r'''
import json, os, sys, threading
import multiprocessing as mp
import numpy as np
import ce_fast
from ce_fast import _core

BIG = 1 << 22  # elements and blocks of a call that may use every thread


def inputs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4096, 96), dtype=np.float32)
    y = rng.integers(0, 96, 4096)
    t = (rng.random(x.shape) < 0.5).astype(np.float32)
    z = rng.standard_normal((8, 64, 600))  # softmax along a non-last axis: the tiled path
    s = rng.standard_normal((4, 70000), dtype=np.float32)  # a few huge rows: the class-split path
    return x, y, t, z, s


def every_family(nt):
    x, y, t, z, s = inputs()
    loss, grad = ce_fast.cross_entropy_and_grad(x, y, label_smoothing=0.1, num_threads=nt)
    bl, bg = ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, num_threads=nt)
    sl, sg = ce_fast.cross_entropy_and_grad(s, np.arange(4) * 7, num_threads=nt)
    return [
        np.asarray(loss), grad, np.asarray(bl), bg, np.asarray(sl), sg,
        ce_fast.softmax(z, axis=1, num_threads=nt),
        ce_fast.logsumexp(x, num_threads=nt),
        ce_fast.entropy(ce_fast.softmax(x), num_threads=nt),
    ]


def in_child():
    """Results and thread facts on the child's first thread and on a thread it starts."""
    facts = {"serial": _core.serial_after_fork(), "threads": _core.threads_for(2, BIG, BIG)}
    first = every_family(2)
    other = {}

    def on_new_thread():
        other["serial"] = _core.serial_after_fork()
        other["threads"] = _core.threads_for(2, BIG, BIG)
        other["results"] = every_family(2)

    th = threading.Thread(target=on_new_thread)
    th.start()
    th.join()
    facts["new_thread_serial"] = other["serial"]
    facts["new_thread_threads"] = other["threads"]
    return facts, first, other["results"]


if __name__ == "__main__":
    method, when = sys.argv[1], sys.argv[2]
    ctx = mp.get_context(method)
    report = {"parent_threads_for": _core.threads_for(2, BIG, BIG)}
    if when == "before":
        want = every_family(2)
        pool = ctx.Pool(1)
    else:
        report["parent_os_threads"] = len(os.listdir("/proc/self/task"))
        pool = ctx.Pool(1)
        want = every_family(2)
    with pool:
        facts, first, second = pool.apply_async(in_child).get(timeout=60)
    for got in (first, second):
        for a, b in zip(got, want, strict=True):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), "the child computed something else"
    report.update(facts)
    print(json.dumps(report))
'''


def run_scenario(tmp_path, method: str, when: str, **extra_env: str) -> dict:
    script = tmp_path / "fork_scenario.py"
    script.write_text(_SCRIPT)
    env = dict(os.environ)
    # two threads are allowed even on one processor; no BLAS threads, so the
    # parent is single-threaded until ce_fast starts a team
    env.update(OMP_NUM_THREADS="2", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", **extra_env)
    try:
        proc = subprocess.run(
            [sys.executable, str(script), method, when],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            env=env,
            cwd=os.path.dirname(os.path.dirname(os.path.abspath(ce_fast.__file__))),
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{method} ({when}): the child hung")
    assert proc.returncode == 0, f"{method} ({when}) failed:\n{proc.stdout}\n{proc.stderr}"
    report: dict = json.loads(proc.stdout.strip().splitlines()[-1])
    return report


needs_fork = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")


@needs_fork
def test_fork_after_threaded_calls(tmp_path):
    r = run_scenario(tmp_path, "fork", "before")
    if OPENMP:
        assert r["parent_threads_for"] == 2
        # the thread that forked runs alone, whatever the runtime
        assert r["serial"] is True
        assert r["threads"] == 1
        # a thread the child starts has a pool of its own
        assert r["new_thread_serial"] is False
        assert r["new_thread_threads"] == 2


@needs_fork
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc")
def test_fork_from_a_single_threaded_parent_keeps_threads(tmp_path):
    # no team before the fork: nothing went stale, the child uses threads
    r = run_scenario(tmp_path, "fork", "after")
    assert r["parent_os_threads"] == 1
    assert r["serial"] is False
    if OPENMP:
        assert r["threads"] == 2


@needs_fork
@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_forkserver_and_spawn(tmp_path, method):
    r = run_scenario(tmp_path, method, "before")
    assert r["serial"] is False and r["new_thread_serial"] is False
    if OPENMP:
        assert r["threads"] == 2 and r["new_thread_threads"] == 2


def llvm_openmp() -> str | None:
    """LLVM's OpenMP runtime (Debian: libomp5), if this machine has it."""
    for path in ("/usr/lib/x86_64-linux-gnu/libomp.so.5", "/usr/lib/aarch64-linux-gnu/libomp.so.5"):
        if os.path.exists(path):
            return path
    return None


@needs_fork
@pytest.mark.skipif(not OPENMP or llvm_openmp() is None, reason="needs libomp5")
def test_fork_with_llvm_openmp(tmp_path):
    """LLVM's runtime, preloaded in place of libgomp (it has libgomp's entry
    points): the same rule, and the same results."""
    r = run_scenario(tmp_path, "fork", "before", LD_PRELOAD=str(llvm_openmp()))
    assert r["parent_threads_for"] == 2
    assert r["serial"] is True and r["threads"] == 1
    assert r["new_thread_serial"] is False


@needs_fork
def test_dataloader_workers(tmp_path):
    """PyTorch DataLoader workers (forked on Linux) after the parent ran a
    multi-threaded call."""
    pytest.importorskip("torch")
    script = tmp_path / "loader.py"
    script.write_text(
        """
import numpy as np, torch, ce_fast
rng = np.random.default_rng(0)
x = rng.standard_normal((8, 4096, 64), dtype=np.float32)
y = rng.integers(0, 64, (8, 4096))

class Losses(torch.utils.data.Dataset):
    def __len__(self):
        return 8
    def __getitem__(self, i):
        return ce_fast.cross_entropy_and_grad(x[i], y[i], num_threads=2)[1]

if __name__ == "__main__":
    want = [ce_fast.cross_entropy_and_grad(x[i], y[i], num_threads=2)[1] for i in range(8)]
    loader = torch.utils.data.DataLoader(Losses(), batch_size=None, num_workers=2, timeout=60)
    got = [g.numpy() for g in loader]
    assert all(a.tobytes() == b.tobytes() for a, b in zip(got, want, strict=True))
    print("ok")
"""
    )
    env = dict(os.environ, OMP_NUM_THREADS="2")
    try:
        proc = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, timeout=TIMEOUT, env=env
        )
    except subprocess.TimeoutExpired:
        pytest.fail("a DataLoader worker hung")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stdout + proc.stderr


def test_show_config_reports_fork_behaviour(capsys):
    ce_fast.show_config()
    assert "thread that forked" in capsys.readouterr().out or not OPENMP
