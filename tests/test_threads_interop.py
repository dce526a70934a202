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
    # two workers for that call, and the default stays 1.
    out = run_python(_COUNT_THREADS.format(nt=3), env={"OMP_NUM_THREADS": "1"})
    default, t0, t1 = map(int, out.split())
    assert default == 1
    assert t1 == t0 + 2


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
