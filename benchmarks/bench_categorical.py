"""Developer benchmark of the categorical kernels, asv-style.

Functions named ``time_*`` are timed, ``peakmem_*`` report the peak extra
memory of one call (bytes allocated beyond its inputs, via tracemalloc, which
NumPy reports its buffers to). The module runs without asv:

    python benchmarks/bench_categorical.py [--shapes 16384x1000,...] [--repeat 9]

prints, per shape and dtype, medians of every case, each beside the ceilings
measured in the same run (one read of the logits; a copy into an existing
buffer; a copy into a fresh one), the NumPy reference and PyTorch when
installed, and the peak extra memory of loss-only, default and in-place
calls. (``python -m ce_fast.bench`` is the user-facing version.)
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

import ce_fast
from ce_fast import reference

SHAPES = [(16384, 1000), (4096, 32000), (65536, 10), (1024, 128256), (8, 1_000_000)]


def setup(N: int, C: int, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((N, C), dtype=np.float32) * 3).astype(dtype)
    return x, rng.integers(0, C, N), np.empty((N, C), dtype)


# ---- asv-style cases: each takes (x, y, buf, nt) ------------------------------


def time_loss(x: np.ndarray, y: np.ndarray, buf: np.ndarray, nt: int) -> Any:
    return ce_fast.cross_entropy(x, y, num_threads=nt)


def time_loss_and_grad_out(x: np.ndarray, y: np.ndarray, buf: np.ndarray, nt: int) -> Any:
    return ce_fast.cross_entropy_and_grad(x, y, out=buf, num_threads=nt)


def time_loss_and_grad_fresh(x: np.ndarray, y: np.ndarray, buf: np.ndarray, nt: int) -> Any:
    return ce_fast.cross_entropy_and_grad(x, y, num_threads=nt)


def time_grad_only_out(x: np.ndarray, y: np.ndarray, buf: np.ndarray, nt: int) -> Any:
    return ce_fast.cross_entropy_grad(x, y, out=buf, num_threads=nt)


def time_ceiling_read(x: np.ndarray, y: np.ndarray, buf: np.ndarray, nt: int) -> Any:
    return np.add.reduce(x, axis=None)


def time_ceiling_copy(x: np.ndarray, y: np.ndarray, buf: np.ndarray, nt: int) -> Any:
    return np.copyto(buf, x)


def time_ceiling_alloc_copy(x: np.ndarray, y: np.ndarray, buf: np.ndarray, nt: int) -> Any:
    out = np.empty_like(x)
    np.copyto(out, x)
    return out


def peakmem_loss(x: np.ndarray, y: np.ndarray) -> int:
    return _peak(lambda: ce_fast.cross_entropy(x, y))


def peakmem_loss_and_grad(x: np.ndarray, y: np.ndarray) -> int:
    return _peak(lambda: ce_fast.cross_entropy_and_grad(x, y))


def peakmem_loss_and_grad_in_place(x: np.ndarray, y: np.ndarray) -> int:
    work = x.copy()
    return _peak(lambda: ce_fast.cross_entropy_and_grad(work, y, out=work))


def _peak(fn: Callable[[], Any]) -> int:
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    del result
    return peak


# ---- the runner ---------------------------------------------------------------


def _medians(cases: dict[str, Callable[[], Any]], repeat: int) -> dict[str, float]:
    times: dict[str, list[float]] = {k: [] for k in cases}
    for f in cases.values():
        f()
    for i in range(repeat):
        for k, f in cases.items():  # round-robin: every case sees the same machine
            if i >= 3 and sum(times[k]) > 5.0:
                continue
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    shapes = ",".join(f"{n}x{c}" for n, c in SHAPES)
    p.add_argument("--shapes", default=shapes, help=f"N x C of the logits, NxC,... (default {shapes})")
    p.add_argument("--dtypes", default="float32,float64", help="comma-separated (default float32,float64)")
    p.add_argument("--threads", default="1,2", help="num_threads values, comma-separated (default 1,2)")
    p.add_argument("--repeat", type=int, default=9, help="timed runs per case; medians reported (default 9)")
    p.add_argument("--no-ref", action="store_true", help="skip the NumPy reference and PyTorch")
    args = p.parse_args()
    peers: dict[str, Callable[..., Any]] = {}
    if not args.no_ref:
        peers["numpy reference"] = lambda x, y: reference.cross_entropy_and_grad(x, y)
        try:
            import torch
            import torch.nn.functional as F

            def torch_fwd_bwd(x: np.ndarray, y: np.ndarray) -> Any:
                xt = torch.from_numpy(x).requires_grad_(True)
                F.cross_entropy(xt, torch.from_numpy(y)).backward()
                return xt.grad

            peers["torch fwd+bwd"] = torch_fwd_bwd
        except ImportError:
            torch = None  # type: ignore[assignment]
    fns = {k[5:]: v for k, v in globals().items() if k.startswith("time_")}
    for shape in args.shapes.split(","):
        N, C = (int(v) for v in shape.split("x"))
        for dt in args.dtypes.split(","):
            x, y, buf = setup(N, C, dt)
            mem = {k: globals()[k](x, y) for k in globals() if k.startswith("peakmem_")}
            print(
                f"\n== {N} x {C} {dt} ({x.nbytes / 1e6:.0f} MB) ==  peak extra memory: "
                + ", ".join(f"{k[8:]} {v / x.nbytes:.2f}x logits" for k, v in mem.items())
            )
            for nt in (int(t) for t in args.threads.split(",")):
                cases = {k: (lambda f=f: f(x, y, buf, nt)) for k, f in fns.items()}
                for name, peer in peers.items():
                    if "torch" in name:
                        torch.set_num_threads(nt)
                    cases[name] = lambda peer=peer: peer(x, y)
                m = _medians(cases, args.repeat)
                ceil = {
                    "loss": m["ceiling_read"],
                    "loss_and_grad_out": m["ceiling_copy"],
                    "grad_only_out": m["ceiling_copy"],
                    "loss_and_grad_fresh": m["ceiling_alloc_copy"],
                }
                print(f"  threads={nt}")
                for k, t in m.items():
                    extra = f"  {t / ceil[k]:5.2f}x its ceiling" if k in ceil else ""
                    extra += f"  ({t / m['loss_and_grad_out']:.1f}x ce_fast out=)" if k in peers else ""
                    print(f"    {k:<24} {t * 1e3:9.2f} ms{extra}")


if __name__ == "__main__":
    main()
