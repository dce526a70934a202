"""Each drop-in against its original, side by side in one run.

    python benchmarks/bench_dropins.py [--repeat 5] [--threads 1 2] [--quick] [--only log_loss] [--json out.json]

scipy.special.logsumexp / softmax / log_softmax (axis=-1) at 1M x 10 and
4096 x 32000, scipy.stats.entropy(pk, qk, axis=1) at 4096 x 32000 (float64),
sklearn.metrics.log_loss at 1M x 10 and 100k x 1000, float32 and float64,
on 1 and 2 threads. The thread count is set with threadpoolctl for both
sides (the originals' BLAS / OpenMP pools, and ce_fast's OpenMP default);
the originals are single-threaded NumPy compositions. Original and drop-in
are timed alternately, ``--repeat`` times each; the table gives medians (ms)
and original / drop-in. The machine load (``/proc/loadavg``) is printed
before and after: on a shared machine, read the ratios with it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.special as sps
import scipy.stats as st
from sklearn.metrics import log_loss as sk_log_loss
from threadpoolctl import threadpool_limits

import ce_fast.scipy as cfs
import ce_fast.sklearn as cfk


def _probs(rng: np.random.Generator, n: int, c: int, dt: Any) -> np.ndarray:
    p = rng.random((n, c)) + 0.01
    p /= p.sum(axis=1, keepdims=True)
    return p.astype(dt)


def cases(quick: bool) -> list[tuple[str, str, Any, Callable[[], Any], Callable[[], Any]]]:
    """(function, shape, dtype, original, drop-in) with the data bound."""
    rng = np.random.default_rng(0)
    big = (512, 32000) if quick else (4096, 32000)
    tall = (100_000, 10) if quick else (1_000_000, 10)
    wide_ll = (10_000, 1000) if quick else (100_000, 1000)
    out = []
    for dt in (np.float32, np.float64):
        for n, c in (tall, big):
            x = rng.standard_normal((n, c)).astype(dt)
            shape = f"{n}x{c}"
            for name, orig, new in (
                ("logsumexp", sps.logsumexp, cfs.logsumexp),
                ("softmax", sps.softmax, cfs.softmax),
                ("log_softmax", sps.log_softmax, cfs.log_softmax),
            ):
                out.append(
                    (name, shape, dt, lambda o=orig, x=x: o(x, axis=-1), lambda f=new, x=x: f(x, axis=-1))
                )
    n, c = big
    pk, qk = rng.random((n, c)), rng.random((n, c))
    out.append(
        ("entropy(pk, qk)", f"{n}x{c}", np.float64, lambda: st.entropy(pk, qk, axis=1),
         lambda: cfs.entropy(pk, qk, axis=1))
    )  # fmt: skip
    for dt in (np.float32, np.float64):
        for n, c in (tall, wide_ll):
            p = _probs(rng, n, c, dt)
            y = rng.integers(0, c, n)
            y[:c] = np.arange(c)  # every class present
            out.append(
                ("log_loss", f"{n}x{c}", dt, lambda p=p, y=y: sk_log_loss(y, p), lambda p=p, y=y: cfk.log_loss(y, p))
            )  # fmt: skip
    return out


def _time(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(repeat: int, threads: list[int], quick: bool, only: list[str] | None = None) -> list[dict[str, Any]]:
    rows = []
    for name, shape, dt, orig, new in cases(quick):
        if only and not any(name.startswith(o) for o in only):
            continue
        for nt in threads:
            with threadpool_limits(limits=nt):
                a, b = float(np.asarray(orig()).ravel()[0]), float(np.asarray(new()).ravel()[0])  # warm up
                if not np.isclose(a, b, rtol=1e-4, atol=1e-6):
                    raise AssertionError(f"{name} {shape}: {a} != {b}")
                t_orig, t_new = [], []
                for _ in range(repeat):
                    t_orig.append(_time(orig))
                    t_new.append(_time(new))
            mo, mn = statistics.median(t_orig) * 1e3, statistics.median(t_new) * 1e3
            rows.append(
                {"function": name, "shape": shape, "dtype": np.dtype(dt).name, "threads": nt,
                 "original_ms": mo, "ce_fast_ms": mn, "speedup": mo / mn}
            )  # fmt: skip
            r = rows[-1]
            print(
                f"{name:16s} {shape:>12s} {r['dtype']:8s} {nt:2d}  {mo:9.1f} {mn:9.1f}  {mo / mn:6.1f}x",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5, help="timed repeats per case; medians are reported")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="thread counts (default 1 2)")
    ap.add_argument("--quick", action="store_true", help="smaller shapes (a smoke run)")
    ap.add_argument("--json", help="write the rows here")
    ap.add_argument("--only", nargs="+", help="only the functions whose names start with these")
    args = ap.parse_args(argv)
    print(f"load average before: {os.getloadavg()}")
    print(f"{'function':16s} {'shape':>12s} {'dtype':8s} {'nt':>2s}  {'orig ms':>9s} {'ce ms':>9s}  speedup")
    rows = run(args.repeat, args.threads, args.quick, args.only)
    print(f"load average after: {os.getloadavg()}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"load": os.getloadavg(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
