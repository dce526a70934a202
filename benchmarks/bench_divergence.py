"""Distillation losses: ce_fast's fused KL / JSD (loss + gradient with respect
to the student's logits) against the PyTorch composition, the NumPy
reference and ce_fast's own cross_entropy_and_grad on the same shape, and
the peak memory of each.

Time (``--what time``): per shape, dtype and thread count, the variants run
interleaved (one call of each per round, ``--repeat`` rounds) and the
median is reported:
* ``ce``: ``ce_fast.cross_entropy_and_grad(s, y, out=g)`` (the yardstick:
  the KL reads twice its bytes);
* ``kl``, ``kl_rev``, ``js``: ``ce_fast.kl_divergence_and_grad(s, t, out=g)``
  (forward, reverse) and ``js_divergence_and_grad`` (beta 0.5);
* ``torch``: ``F.kl_div(F.log_softmax(s), F.log_softmax(t), log_target=True,
  reduction="batchmean")`` + ``backward()``, ``torch.set_num_threads(n)``;
* ``ce_torch``: ``ce_fast.torch.kl_divergence(s, t)`` + ``backward()`` (the
  same loss through the torch front end: the fused kernel and its glue);
* ``reference``: ``ce_fast.reference.kl_divergence_and_grad`` (one call; at
  most --reference-max elements: it holds ~10 float64 copies of the input).

Memory (``--what memory``): each variant in its own subprocess, the peak RSS
of one call minus the RSS just before (Linux: /proc/self/clear_refs):
* ``kl`` / ``torch`` on the shapes above (inputs allocated before);
* ``linear`` / ``materialised``: ``linear_kl_divergence_and_grad`` with a
  teacher layer against ``z_s = h @ W.T; z_t = th @ tW.T;
  kl_divergence_and_grad(z_s, z_t, out=z_s); G @ W; G.T @ h``, at
  ``--linear`` N,D,C (default 4096,1024,32000), float32.

Usage: python benchmarks/bench_divergence.py [--what time memory]
       [--shapes 16384x1000 4096x32000] [--dtypes float32 float64]
       [--threads 1 2] [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ce_fast import _bench_memory  # the peak-RSS measurement every benchmark uses

TIME_VARIANTS = ("ce", "kl", "kl_rev", "js", "torch", "ce_torch")


def shape_arg(text: str) -> tuple[int, int]:
    n, c = text.lower().split("x")
    return int(n), int(c)


def pair(N: int, C: int, dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    s = (rng.standard_normal((N, C), dtype=np.float32) * 2).astype(dtype)
    t = (s + rng.standard_normal((N, C), dtype=np.float32)).astype(dtype)
    return s, t


def calls(N: int, C: int, dtype: Any, nt: int) -> dict[str, Callable[[], Any]]:
    import ce_fast

    s, t = pair(N, C, dtype)
    y = np.random.default_rng(1).integers(0, C, N)
    g = np.empty_like(s)
    out: dict[str, Callable[[], Any]] = {
        "ce": lambda: ce_fast.cross_entropy_and_grad(s, y, out=g, num_threads=nt),
        "kl": lambda: ce_fast.kl_divergence_and_grad(s, t, out=g, num_threads=nt),
        "kl_rev": lambda: ce_fast.kl_divergence_and_grad(s, t, out=g, num_threads=nt, direction="reverse"),
        "js": lambda: ce_fast.js_divergence_and_grad(s, t, out=g, num_threads=nt),
    }
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return out
    ts, tt = torch.from_numpy(s), torch.from_numpy(t)

    def torch_call() -> Any:
        torch.set_num_threads(nt)
        x = ts.detach().requires_grad_(True)
        loss = F.kl_div(F.log_softmax(x, -1), F.log_softmax(tt, -1), log_target=True, reduction="batchmean")
        loss.backward()
        return x.grad

    def ce_torch_call() -> Any:
        import ce_fast.torch as ct

        torch.set_num_threads(nt)
        x = ts.detach().requires_grad_(True)
        ct.kl_divergence(x, tt).backward()
        return x.grad

    out["torch"] = torch_call
    out["ce_torch"] = ce_torch_call
    return out


def time_shape(N: int, C: int, dtype: str, nt: int, repeat: int, reference_max: int) -> dict[str, float]:
    fns = calls(N, C, np.dtype(dtype), nt)
    for f in fns.values():  # warm-up: first touch of the output, thread pools
        f()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    res = {k: statistics.median(v) for k, v in times.items()}
    if N * C <= reference_max:
        import ce_fast.reference as ref

        s, t = pair(N, C, np.dtype(dtype))
        t0 = time.perf_counter()
        ref.kl_divergence_and_grad(s, t)
        res["reference"] = time.perf_counter() - t0
    return res


def memory_child(variant: str, spec: str) -> None:
    """Run one call of ``variant`` and print its peak extra memory (bytes)."""
    import ce_fast

    if variant in ("linear", "materialised"):
        N, D, C = (int(v) for v in spec.split(","))
        rng = np.random.default_rng(0)
        h = rng.standard_normal((N, D), dtype=np.float32)
        w = rng.standard_normal((C, D), dtype=np.float32) / np.float32(np.sqrt(D))
        th = rng.standard_normal((N, D), dtype=np.float32)
        tw = rng.standard_normal((C, D), dtype=np.float32) / np.float32(np.sqrt(D))

        def run() -> Any:
            if variant == "linear":
                return ce_fast.linear_kl_divergence_and_grad(h, w, teacher_hidden=th, teacher_weight=tw)
            zs, zt = h @ w.T, th @ tw.T
            loss, g = ce_fast.kl_divergence_and_grad(zs, zt, out=zs)
            return loss, g @ w, g.T @ h

    else:
        N, C, dtype = spec.split(",")
        f = calls(int(N), int(C), np.dtype(dtype), 1)[variant]

        def run() -> Any:
            return f()

    t0 = time.perf_counter()
    peak = _bench_memory.peak_extra_bytes(run, repeats=1)
    elapsed = time.perf_counter() - t0
    print(json.dumps({"peak": peak, "seconds": elapsed}))


def memory(variant: str, spec: str) -> dict[str, float] | None:
    cmd = [sys.executable, __file__, "--child", variant, spec]
    r = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    if r.returncode != 0:
        print(f"  {variant} {spec}: failed: {r.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(r.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--what",
        nargs="+",
        default=["time", "memory"],
        choices=["time", "memory"],
        help="what to measure: times, peak memory, or both (default)",
    )
    p.add_argument(
        "--shapes",
        nargs="+",
        type=shape_arg,
        default=[(16384, 1000), (4096, 32000)],
        help="NxC shapes (default 16384x1000 4096x32000)",
    )
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"], help="dtypes (default both)")
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2], help="thread counts (default 1 2)")
    p.add_argument("--repeat", type=int, default=5, help="timed repeats per case; medians are reported")
    p.add_argument(
        "--reference-max",
        type=int,
        default=20_000_000,
        help="largest N*C at which the (slow) NumPy reference is timed",
    )
    p.add_argument(
        "--linear", default="4096,1024,32000", help="N,D,C of the linear_kl_divergence memory case"
    )
    p.add_argument("--json", help="write the raw results as JSON to this file")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        memory_child(*a.child)
        return
    with open("/proc/loadavg") as f:
        print("load average:", f.read().strip())
    results: dict[str, Any] = {"time": [], "memory": []}
    if "time" in a.what:
        print(
            f"{'shape':>12} {'dtype':>8} {'thr':>3} "
            + " ".join(f"{k:>9}" for k in (*TIME_VARIANTS, "reference"))
        )
        print(f"{'':>26}" + "   (median ms)" + " " * 30 + "kl/ce  torch/kl")
        for (N, C), dt, nt in ((s, d, n) for s in a.shapes for d in a.dtypes for n in a.threads):
            r = time_shape(N, C, dt, nt, a.repeat, a.reference_max)
            cells = " ".join(
                f"{r[k] * 1e3:9.1f}" if k in r else f"{'-':>9}" for k in (*TIME_VARIANTS, "reference")
            )
            ratio = f"{r['kl'] / r['ce']:6.2f} " + (f"{r['torch'] / r['kl']:8.1f}" if "torch" in r else "")
            print(f"{N:>6}x{C:<5} {dt:>8} {nt:>3} {cells}  {ratio}", flush=True)
            results["time"].append({"N": N, "C": C, "dtype": dt, "threads": nt, "seconds": r})
    if "memory" in a.what:
        specs = [(v, f"{N},{C},{dt}") for (N, C) in a.shapes for dt in a.dtypes for v in ("kl", "torch")]
        specs += [("linear", a.linear), ("materialised", a.linear)]
        for v, spec in specs:
            m = memory(v, spec)
            if m is not None:
                peak = "-" if m["peak"] is None else f"{m['peak'] / 2**20:9.1f}"
                print(f"  peak memory {v:>12} {spec:>22}: {peak:>9} MiB ({m['seconds']:.2f} s)")
                results["memory"].append({"variant": v, "spec": spec, **m})
    with open("/proc/loadavg") as f:
        print("load average:", f.read().strip())
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
