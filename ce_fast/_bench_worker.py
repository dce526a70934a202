"""One peer timed in a process of its own, pinned to the row's cores.

XLA sizes its thread pool when it starts and ignores its thread flags, and
PyTorch brings an OpenMP runtime of its own; a process per peer and thread
count, started with its CPU affinity set to ``threads`` CPUs, keeps every
peer to the row's cores and out of ce_fast's way. In that process the peer
and ce_fast (``num_threads=threads``, on the same cores) are timed in turns,
and each result is checked against ce_fast's float64 result.

The parent calls :func:`run_worker`; the child runs :func:`main`, reading
its orders as JSON on stdin and answering with one JSON line on stdout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

_MARK = "@@ce_fast_bench_worker@@ "


def pinned_cpus(n: int) -> list[int] | None:
    """The first ``n`` CPUs this process may run on; None where CPU
    affinity cannot be set (macOS, Windows)."""
    if not hasattr(os, "sched_getaffinity"):
        return None
    return sorted(os.sched_getaffinity(0))[:n]


def run_worker(
    peer: str,
    threads: int,
    cases: list[tuple[int, int, str]],
    repeats: int,
    budget: float,
    memory: bool,
    timeout: float = 900.0,
) -> dict[str, Any]:
    """Time ``peer`` on every case in a child process pinned to ``threads``
    CPUs. Returns the child's answer, or ``{"error": ...}`` when it failed."""
    import ce_fast

    cpus = pinned_cpus(threads)
    orders = {
        "peer": peer,
        "threads": threads,
        "cases": cases,
        "repeats": repeats,
        "budget": budget,
        "memory": memory,
        "ce_fast": ce_fast.__file__,
    }
    # the ce_fast this process runs, whatever the child's working directory
    root = os.path.dirname(os.path.dirname(os.path.abspath(ce_fast.__file__)))
    code = (
        f"import sys; sys.path.insert(0, {root!r}); from ce_fast._bench_worker import main; sys.exit(main())"
    )
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)

    def pin() -> None:  # in the child, before the interpreter (and any thread pool) starts
        os.sched_setaffinity(0, cpus or [])

    try:
        p = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(orders),
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            preexec_fn=pin if cpus is not None else None,  # Windows has no preexec_fn
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(_MARK):
            answer: dict[str, Any] = json.loads(line[len(_MARK) :])
            return answer
    tail = (p.stderr.strip().splitlines() or [f"exit status {p.returncode}"])[-1]
    return {"error": f"worker failed: {tail}"}


def _check(name: str, result: Any, x: Any, y: Any) -> dict[str, float]:
    """The peer's mean loss and gradient against ce_fast's in float64 on the
    same (already rounded) logits: relative loss error and largest gradient
    error relative to the largest gradient entry."""
    import numpy as np

    import ce_fast
    from ce_fast import _peers

    loss, grad = _peers.as_mean_loss_and_grad(name, result, x.shape[0])
    ref_loss, ref_grad = ce_fast.cross_entropy_and_grad(x.astype(np.float64), y)
    return {
        "loss": loss,
        "loss_rel_err": abs(loss - float(ref_loss)) / max(abs(float(ref_loss)), 1e-300),
        "grad_rel_err": float(np.max(np.abs(grad - ref_grad)) / max(np.max(np.abs(ref_grad)), 1e-300)),
    }


def _one_case(name: str, nt: int, N: int, C: int, dtype: str, o: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    import ce_fast
    from ce_fast import _bench_memory, _peers
    from ce_fast._bench_timing import paired_ratio, round_robin

    x, y = _peers.make_data(N, C, dtype)
    try:
        fn = _peers.peer_call(name, x, y, nt)
        first = fn()  # compiles (JAX) and is checked
    except _peers.Unsupported as e:
        return {"skipped": str(e)}
    except Exception as e:  # a peer's failure is reported, never fatal to the run
        return {"error": f"{type(e).__name__}: {e}"}
    out: dict[str, Any] = {"check": _check(name, first, x, y)}
    del first
    fns = {"peer": fn}
    gdt, _ = _peers.ce_fast_grad_dtype(x, y)
    if gdt is not None:  # else a dtype ce_fast refuses: the peer is timed alone
        buf = np.empty(x.shape, gdt)
        fns["ce_fast"] = lambda: ce_fast.cross_entropy_and_grad(x, y, out=buf, num_threads=nt)
    t = round_robin(fns, o["repeats"], o["budget"], pause=0.002)
    out.update(median_s=t["peer"].median_s, cores=t["peer"].cores)
    if "ce_fast" in t:
        c = t["ce_fast"]
        out.update(ce_fast_median_s=c.median_s, ce_fast_cores=c.cores, ratio=paired_ratio(t["peer"], c))
    if o["memory"]:
        out["peak_extra_bytes"] = _bench_memory.peak_extra_bytes(fn, repeats=2)
    return out


def main() -> int:
    import ce_fast
    from ce_fast import _peers

    o = json.load(sys.stdin)
    if os.path.abspath(ce_fast.__file__) != os.path.abspath(o["ce_fast"]):
        print(f"imported {ce_fast.__file__}, not {o['ce_fast']}", file=sys.stderr)
        return 1
    name, nt = o["peer"], o["threads"]
    answer: dict[str, Any] = {
        "version": _peers.available().get(name, "?"),
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cases": {},
    }
    for N, C, dtype in o["cases"]:
        answer["cases"][f"{N}x{C} {dtype}"] = _one_case(name, nt, N, C, dtype, o)
    print(_MARK + json.dumps(answer), flush=True)
    return 0
