"""Benchmark of the binary cross-entropy and softmax-family kernels.

For every kernel at ~10^7 elements (default 10000 x 1000, float32 and
float64), with 1 and 2 threads (or the counts given), prints the median time
of repeated runs, the ratio to its memory ceiling, and the speed-up over the
plain-NumPy reference (``ce_fast.reference``) and over SciPy where SciPy has
the function.

Ceilings (single-threaded NumPy, measured on the same arrays):
* read-once kernels (logsumexp, entropy, softmax_entropy; the binary losses,
  which read logits and target): ``np.add.reduce`` of every input read;
* read + write kernels (softmax, log_softmax into ``out=``; the binary
  gradients, which also read the target): ``np.copyto`` into an existing
  buffer (+ ``np.add.reduce`` of the target).
A ratio of 1.0 means "as fast as touching the bytes once"; below 1 is
possible with 2 threads since the ceiling is one NumPy thread.

Usage: python benchmarks/bench_family.py [--rows 10000] [--cols 1000]
       [--threads 1 2] [--repeat 7] [--ref-repeat 3] [--no-ref]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import ce_fast
import ce_fast.reference as ref

try:
    import scipy.special as sps
except ImportError:  # pragma: no cover
    sps = None


def median_time(fn: Callable[[], Any], repeat: int) -> float:
    fn()  # warm-up (page faults, thread team)
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def cases(x: np.ndarray, t: np.ndarray, p: np.ndarray, buf: np.ndarray):
    """(name, ce_fast call(nt), ceiling call, reference call, scipy call or None)."""
    red_x = lambda: np.add.reduce(x, axis=None)  # noqa: E731
    red_xt = lambda: (np.add.reduce(x, axis=None), np.add.reduce(t, axis=None))  # noqa: E731
    red_pt = lambda: (np.add.reduce(p, axis=None), np.add.reduce(t, axis=None))  # noqa: E731
    copy_x = lambda: np.copyto(buf, x)  # noqa: E731
    copy_xt = lambda: (np.copyto(buf, x), np.add.reduce(t, axis=None))  # noqa: E731
    pw = np.full(x.shape[1], 2.0, x.dtype)
    S = sps
    return [
        ("bce_logits (loss)",
         lambda nt: ce_fast.binary_cross_entropy_with_logits(x, t, num_threads=nt),
         red_xt, lambda: ref.binary_cross_entropy_with_logits(x, t), None),
        ("bce_logits pos_weight",
         lambda nt: ce_fast.binary_cross_entropy_with_logits(x, t, pos_weight=pw, num_threads=nt),
         red_xt, lambda: ref.binary_cross_entropy_with_logits(x, t, pos_weight=pw), None),
        ("bce_logits_grad (out=)",
         lambda nt: ce_fast.binary_cross_entropy_with_logits_grad(x, t, out=buf, num_threads=nt),
         copy_xt, lambda: ref.binary_cross_entropy_with_logits_grad(x, t), None),
        ("bce_logits_and_grad (out=)",
         lambda nt: ce_fast.binary_cross_entropy_with_logits_and_grad(x, t, out=buf, num_threads=nt),
         copy_xt, lambda: ref.binary_cross_entropy_with_logits_and_grad(x, t), None),
        ("binary_cross_entropy",
         lambda nt: ce_fast.binary_cross_entropy(p, t, num_threads=nt),
         red_pt, lambda: ref.binary_cross_entropy(p, t), None),
        ("logsumexp",
         lambda nt: ce_fast.logsumexp(x, num_threads=nt),
         red_x, lambda: ref.logsumexp(x), S and (lambda: S.logsumexp(x, axis=-1))),
        ("log_softmax (out=)",
         lambda nt: ce_fast.log_softmax(x, out=buf, num_threads=nt),
         copy_x, lambda: ref.log_softmax(x), S and (lambda: S.log_softmax(x, axis=-1))),
        ("softmax (out=)",
         lambda nt: ce_fast.softmax(x, out=buf, num_threads=nt),
         copy_x, lambda: ref.softmax(x), S and (lambda: S.softmax(x, axis=-1))),
        ("entropy",
         lambda nt: ce_fast.entropy(p, num_threads=nt),
         lambda: np.add.reduce(p, axis=None), lambda: ref.entropy(p),
         S and (lambda: S.entr(p).sum(axis=-1))),
        ("softmax_entropy",
         lambda nt: ce_fast.softmax_entropy(x, num_threads=nt),
         red_x, lambda: ref.softmax_entropy(x), None),
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10000, help="rows of the input (default 10000)")
    ap.add_argument("--cols", type=int, default=1000, help="columns, the reduced axis (default 1000)")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="num_threads values (default 1 2)")
    ap.add_argument("--dtypes", nargs="+", default=["float32", "float64"], help="(default float32 float64)")
    ap.add_argument("--repeat", type=int, default=7, help="timed runs of ce_fast; medians (default 7)")
    ap.add_argument(
        "--ref-repeat", type=int, default=3, help="timed runs of the reference and SciPy (default 3)"
    )
    ap.add_argument("--no-ref", action="store_true", help="skip the (slow) reference and SciPy timings")
    args = ap.parse_args(argv)

    info = ce_fast.build_info() if hasattr(ce_fast, "build_info") else {}
    print(f"ce_fast {ce_fast.__version__}  isa={info.get('isa', '?')}  "
          f"shape=({args.rows}, {args.cols})  median of {args.repeat} runs (reference/SciPy: {args.ref_repeat})")  # fmt: skip
    head = f"{'kernel':28} {'dtype':8} {'thr':>3} {'time ms':>9} {'ceil ms':>8} {'x ceil':>7} {'vs ref':>8} {'vs SciPy':>9}"
    print(head)
    print("-" * len(head))
    rng = np.random.default_rng(0)
    for dname in args.dtypes:
        dt = np.dtype(dname)
        shape = (args.rows, args.cols)
        x = (rng.standard_normal(shape) * 4).astype(dt)
        t = (rng.random(shape) < 0.3).astype(dt)
        p = rng.random(shape).astype(dt)
        buf = np.empty(shape, dt)
        for name, fn, ceil, rfn, sfn in cases(x, t, p, buf):
            t_ceil = median_time(ceil, args.repeat)
            t_ref = None if args.no_ref else median_time(rfn, args.ref_repeat)
            t_sp = None if (args.no_ref or not sfn) else median_time(sfn, args.ref_repeat)
            for nt in args.threads:
                tk = median_time(lambda: fn(nt), args.repeat)
                vs_ref = f"{t_ref / tk:7.1f}x" if t_ref else f"{'-':>8}"
                vs_sp = f"{t_sp / tk:8.1f}x" if t_sp else f"{'-':>9}"
                print(f"{name:28} {dname:8} {nt:>3} {tk * 1e3:9.2f} {t_ceil * 1e3:8.2f} "
                      f"{tk / t_ceil:7.2f} {vs_ref} {vs_sp}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
