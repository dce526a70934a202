"""Threads the ecosystem's way: threadpoolctl sees and limits ce_fast's OpenMP
runtime, OMP_NUM_THREADS and ``num_threads=`` are honoured, and ce_fast lives
in one process with PyTorch (whatever the import order) without wrong results,
crashes or deadlocks.

Each process-level property is checked in a fresh interpreter (subprocess with
a timeout), so a deadlock fails the test instead of hanging the suite."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import ce_fast
from ce_fast import _core

OPENMP = bool(_core.build_facts()["openmp"])
needs_openmp = pytest.mark.skipif(not OPENMP, reason="ce_fast was built without OpenMP")

TIMEOUT = 180  # seconds for one child interpreter; a deadlock fails, never hangs


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    """Run ``code`` in a fresh interpreter (outside the repository, so the
    installed ce_fast is imported) and return its stdout; fail on a non-zero
    exit or a timeout."""
    full_env = dict(os.environ)
    full_env.pop("OMP_NUM_THREADS", None)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        env=full_env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(ce_fast.__file__))),
    )
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def linked_openmp() -> str | None:
    """The OpenMP library the compiled extension is linked to (by ``ldd``),
    resolved to its real path; None where ldd is unavailable."""
    ldd = shutil.which("ldd")
    if ldd is None or not sys.platform.startswith("linux"):
        return None
    out = subprocess.run([ldd, _core.__file__], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*(\S*(?:gomp|iomp|libomp)\S*)\s+=>\s+(\S+)", line)
        if m and os.path.exists(m.group(2)):
            return os.path.realpath(m.group(2))
    return None


# ---------------------------------------------------------------------------
# threadpoolctl
# ---------------------------------------------------------------------------


@needs_openmp
def test_threadpool_info_lists_the_linked_openmp():
    pytest.importorskip("threadpoolctl")
    # A fresh process that loads only NumPy and ce_fast: the OpenMP runtime
    # threadpoolctl lists is the one the extension is linked to.
    out = run_python(
        """
        import ce_fast, threadpoolctl
        pools = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "openmp"]
        for p in pools:
            print(p["filepath"])
        """
    )
    paths = {os.path.realpath(p) for p in out.split()}
    assert paths, "threadpoolctl sees no OpenMP runtime although ce_fast links one"
    lib = linked_openmp()
    if lib is not None:
        assert lib in paths, f"ce_fast links {lib}; threadpoolctl lists {paths}"
    # in this process too (whatever else is loaded), build_info names a runtime
    assert ce_fast.build_info()["openmp_runtime"] is not None


@needs_openmp
def test_threadpool_limits_limits_ce_fast():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = _core.build_facts()["default_threads"]
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert _core.build_facts()["default_threads"] == 1
        assert ce_fast.build_info()["default_threads"] == 1
        x = np.random.default_rng(0).standard_normal((512, 300))
        y = np.arange(512) % 300
        assert ce_fast.cross_entropy(x, y) == ce_fast.cross_entropy(x, y, num_threads=2)
    assert _core.build_facts()["default_threads"] == before


# ---------------------------------------------------------------------------
# OMP_NUM_THREADS and num_threads=
# ---------------------------------------------------------------------------

_COUNT_THREADS = """
import os, numpy as np, ce_fast
def tasks():
    return len(os.listdir("/proc/self/task"))
x = np.random.default_rng(0).standard_normal((4096, 512), dtype=np.float32)
y = np.arange(4096) % 512
t0 = tasks()
ce_fast.cross_entropy_and_grad(x, y, num_threads={nt})
print(ce_fast.build_info()["default_threads"], t0, tasks())
"""


@needs_openmp
def test_omp_num_threads_is_honoured():
    out = run_python(_COUNT_THREADS.format(nt=None), env={"OMP_NUM_THREADS": "1"})
    default, t0, t1 = map(int, out.split())
    assert default == 1
    if os.path.isdir("/proc/self/task"):
        assert t1 == t0, "a call with OMP_NUM_THREADS=1 started worker threads"
    out = run_python(_COUNT_THREADS.format(nt=None), env={"OMP_NUM_THREADS": "3"})
    assert int(out.split()[0]) == 3


@needs_openmp
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs /proc/self/task")
def test_num_threads_per_call():
    # OMP_NUM_THREADS=1 as default, but the call asks for 3: the runtime starts
    # workers for that call -- two, or fewer on a machine with fewer than 3
    # processors (a request is clamped to max(default, processors)) -- and the
    # default stays 1.
    out = run_python(_COUNT_THREADS.format(nt=3), env={"OMP_NUM_THREADS": "1"})
    default, t0, t1 = map(int, out.split())
    assert default == 1
    assert t1 == t0 + min(3, len(os.sched_getaffinity(0))) - 1


@pytest.mark.usefixtures("oversubscribed")
def test_num_threads_results_identical(rng):
    x = rng.standard_normal((300, 257)).astype(np.float32)
    y = rng.integers(0, 257, 300)
    ref = ce_fast.cross_entropy_and_grad(x, y, reduction="none", num_threads=1)
    for nt in (2, 3, 8):
        got = ce_fast.cross_entropy_and_grad(x, y, reduction="none", num_threads=nt)
        np.testing.assert_array_equal(got[0], ref[0])
        np.testing.assert_array_equal(got[1], ref[1])


# ---------------------------------------------------------------------------
# PyTorch in the same process
# ---------------------------------------------------------------------------

_TORCH_MIX = """
import numpy as np
{imports}
import ce_fast.reference as ref

torch.set_num_threads(2)
rng = np.random.default_rng(0)
x = rng.standard_normal((2048, 1000), dtype=np.float32)
y = rng.integers(0, 1000, 2048)
want_loss, want_grad = ref.cross_entropy_and_grad(x.astype(np.float64), y)
a = torch.randn(256, 256)
for i in range(6):
    # torch's OpenMP pool and ce_fast's, alternately, both multi-threaded
    b = (a @ a).relu().sum()
    tl = torch.nn.functional.cross_entropy(torch.from_numpy(x), torch.from_numpy(y))
    loss, grad = ce_fast.cross_entropy_and_grad(x, y, num_threads=2)
    loss_t = ce_fast.cross_entropy(torch.from_numpy(x), torch.from_numpy(y))
    assert abs(float(loss) - want_loss) <= 1e-5 * abs(want_loss), (loss, want_loss)
    assert float(loss_t) == float(loss)
    assert abs(float(tl) - float(loss)) <= 1e-5 * abs(want_loss)
    np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-9)
    assert bool(torch.isfinite(b))
print("ok", ce_fast.build_info()["openmp_runtime"])
"""


@pytest.mark.parametrize("order", ["torch_first", "ce_fast_first"])
def test_coexists_with_torch(order):
    pytest.importorskip("torch")
    imports = "import torch\nimport ce_fast" if order == "torch_first" else "import ce_fast\nimport torch"
    out = run_python(_TORCH_MIX.format(imports=imports))
    assert out.startswith("ok")


def test_torch_threads_and_ce_fast_threads_interleaved():
    """torch ops running in a Python thread while ce_fast runs multi-threaded
    in the main thread (both release the GIL): no deadlock, right answers."""
    pytest.importorskip("torch")
    code = """
    import threading
    import numpy as np
    import torch, ce_fast
    import ce_fast.reference as ref
    torch.set_num_threads(2)
    stop = threading.Event()
    def torch_work():
        a = torch.randn(300, 300)
        while not stop.is_set():
            (a @ a).sum()
    th = threading.Thread(target=torch_work)
    th.start()
    try:
        rng = np.random.default_rng(1)
        x = rng.standard_normal((1024, 700))
        y = rng.integers(0, 700, 1024)
        want = ref.cross_entropy(x, y)
        for _ in range(20):
            got = ce_fast.cross_entropy(x, y, num_threads=2)
            assert abs(got - want) <= 1e-12 * abs(want), (got, want)
    finally:
        stop.set()
        th.join()
    print("ok")
    """
    assert run_python(code).startswith("ok")


# ---------------------------------------------------------------------------
# num_threads beyond what the machine can run
# ---------------------------------------------------------------------------

_HUGE_THREADS = """
import numpy as np, ce_fast
rng = np.random.default_rng(0)
x = rng.standard_normal((4096, 96), dtype=np.float32)
y = rng.integers(0, 96, 4096)
t = (rng.random(x.shape) < 0.5).astype(np.float32)
z = rng.standard_normal((1, 3, 1 << 20), dtype=np.float32)  # tiles along axis 2: crashed at 10**9
s = rng.standard_normal((8, 100000))  # a few huge rows: the class-split path
p = ce_fast.softmax(x)
calls = [
    lambda nt: ce_fast.cross_entropy_and_grad(x, y, label_smoothing=0.1, num_threads=nt),
    lambda nt: ce_fast.cross_entropy_and_grad(x.T, y, axis=0, num_threads=nt),
    lambda nt: ce_fast.cross_entropy_and_grad(s, np.arange(8) * 999, num_threads=nt),
    lambda nt: ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, num_threads=nt),
    lambda nt: ce_fast.binary_cross_entropy(p, t, num_threads=nt),
    lambda nt: ce_fast.softmax(z, axis=1, num_threads=nt),
    lambda nt: ce_fast.log_softmax(z, axis=1, num_threads=nt),
    lambda nt: ce_fast.logsumexp(z, axis=1, num_threads=nt),
    lambda nt: ce_fast.softmax(x, num_threads=nt),
    lambda nt: ce_fast.entropy(p, num_threads=nt),
    lambda nt: ce_fast.entropy(ce_fast.softmax(z, axis=1), axis=1, num_threads=nt),
    lambda nt: ce_fast.softmax_entropy(x, num_threads=nt),
]
def flat(r):
    return [np.asarray(a) for a in (r if isinstance(r, tuple) else (r,))]
for i, f in enumerate(calls):
    want = flat(f(1))
    for nt in [{nts}]:
        for a, b in zip(flat(f(nt)), want, strict=True):
            assert a.tobytes() == b.tobytes(), (i, nt)
print("ok")
"""


@pytest.mark.parametrize("nts", ["10**9", "50000, 2**31 - 1, 3"])
def test_huge_num_threads_is_clamped(nts):
    # every family, each in-process parallel path; before the clamp, 10**9
    # crashed the softmax family along a non-last axis and 50000 aborted
    # ("libgomp: Thread creation failed")
    assert run_python(_HUGE_THREADS.replace("{nts}", nts)).strip() == "ok"


@needs_openmp
def test_thread_count_rule():
    """min(num_threads, OMP_THREAD_LIMIT, max(default, processors), blocks);
    one thread below 32768 elements."""
    big = 1 << 30
    procs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    default = _core.build_facts()["default_threads"]
    cap = max(default, procs)
    assert _core.threads_for(10**9, big, big) == cap
    assert _core.threads_for(0, big, big) == default
    assert _core.threads_for(1, big, big) == 1
    assert _core.threads_for(cap, big, big) == cap
    assert _core.threads_for(10**9, 3, big) == min(3, cap)
    assert _core.threads_for(10**9, big, 32767) == 1
    assert _core.threads_for(10**9, 1, big) == 1
    # the default above the processors is honoured; the thread limit is not passed
    code = """
    from ce_fast import _core
    print(*(_core.threads_for(n, 1 << 30, 1 << 30) for n in (0, 5, 7, 10**9)))
    """
    out = run_python(code, env={"OMP_NUM_THREADS": str(procs + 5)})
    assert out.split() == [str(procs + 5), str(min(5, procs + 5)), str(min(7, procs + 5)), str(procs + 5)]
    out = run_python(code, env={"OMP_NUM_THREADS": str(procs + 5), "OMP_THREAD_LIMIT": "4"})
    assert out.split() == ["4", "4", "4", "4"]
