"""The built-in multi-threaded benchmark: ``python -m ce_fast.bench``.

For every shape x dtype x thread count it times, side by side in one run
(interleaved, median of repeats):

* the *ceilings* -- what merely moving the bytes costs on this machine:
  one read of the logits (``np.add.reduce``), a copy into an existing buffer
  (``np.copyto``) and a copy into a freshly allocated one (``np.empty`` +
  ``np.copyto``, which pays the page faults of first touch);
* the *exp floor*: ce_fast's vector exp of every logit into an existing
  buffer, the arithmetic no exact softmax can skip (column "vs exp");
* ce_fast: loss only, loss + gradient into an existing buffer (``out=``),
  in place (``out=logits``) and into a fresh gradient (the default call);
* the NumPy reference and, when installed, PyTorch, JAX and scikit-learn;
* tiny calls (``--tiny``, default 32x10), whose cost is the Python call
  itself: each against one ``np.exp`` call on the same array and PyTorch.

and prints, per shape and dtype, a table of median times, effective GB/s,
ratios to the ceilings and speed-ups over the peers.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import ce_fast
from ce_fast import _core, _peers, reference
from ce_fast._bench_tiny import fmt_tiny, run_tiny

# Small enough that the default run (2 dtypes x every thread count) ends in
# about a minute; the reference shapes are
# --shapes 16384x1000,4096x32000,65536x10,1024x128256,8x1000000.
DEFAULT_SHAPES = "4096x1000,512x32000,65536x10"


def _median_times(fns: dict[str, Callable[[], Any]], repeats: int, budget: float) -> dict[str, float]:
    """Median wall time of each callable, run round-robin so that all of
    them see the same machine state. The first (warm-up) call pays first
    touch, caches and thread start-up and is not counted, except for a
    callable slower than ``budget`` seconds, which is timed only by it."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    slow = set()
    for k, f in fns.items():
        t0 = time.perf_counter()
        f()
        dt = time.perf_counter() - t0
        if dt > budget:
            times[k].append(dt)
            slow.add(k)
    for _ in range(repeats):
        for k, f in fns.items():
            if k in slow or sum(times[k]) > 3 * budget:
                continue
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    return {k: float(np.median(v)) for k, v in times.items()}


def _exp_floor(x: np.ndarray, nt: int) -> Callable[[], Any]:
    """exp of every element into an existing buffer, with ce_fast's own
    vector exp on ``nt`` OpenMP threads: the arithmetic no exact softmax can
    skip, a compute floor beside the memory ceilings."""
    src = -np.abs(x).ravel()  # the kernels' exp takes arguments <= 0
    dst = np.empty_like(src)
    return lambda: _core.vecmath(2, src, dst, nt)


def _cases(x: np.ndarray, y: np.ndarray, nt: int) -> dict[str, Callable[[], Any]]:
    buf = np.empty_like(x)
    work = x.copy()

    def in_place() -> Any:
        # out=logits overwrites the input, so each call gets a fresh copy;
        # the copy's median is subtracted afterwards
        np.copyto(work, x)
        return ce_fast.cross_entropy_and_grad(work, y, out=work, num_threads=nt)

    return {
        "read": lambda: np.add.reduce(x, axis=None),
        "copy": lambda: np.copyto(buf, x),
        "alloc+copy": lambda: np.copyto(np.empty_like(x), x),
        "exp": _exp_floor(x, nt),
        "loss": lambda: ce_fast.cross_entropy(x, y, num_threads=nt),
        "grad out=": lambda: ce_fast.cross_entropy_and_grad(x, y, out=buf, num_threads=nt),
        "grad in place+copy": in_place,
        "grad fresh": lambda: ce_fast.cross_entropy_and_grad(x, y, num_threads=nt),
    }


def _peer_cases(
    x: np.ndarray, y: np.ndarray, nt: int, peers: bool, ref: bool
) -> dict[str, Callable[[], Any]]:
    fns: dict[str, Callable[[], Any]] = {}
    if ref:
        fns["numpy reference"] = lambda: reference.cross_entropy_and_grad(x, y)
    if peers:
        fns.update(_peers.loss_and_grad_peers(x, y, nt))
    return fns


def run(
    shapes: list[tuple[int, int]],
    dtypes: list[str],
    threads: list[int],
    repeats: int,
    peers: bool = True,
    ref: bool = True,
    progress: bool = True,
) -> list[dict[str, Any]]:
    results = []
    rng = np.random.default_rng(0)
    total = len(shapes) * len(dtypes) * len(threads)
    step = 0
    for N, C in shapes:
        for dt in dtypes:
            x = (rng.standard_normal((N, C), dtype=np.float32) * 3).astype(dt)
            y = rng.integers(0, C, N)
            for nt in threads:
                step += 1
                if progress:
                    print(f"[{step}/{total}] {N}x{C} {dt} threads={nt} ...", file=sys.stderr, flush=True)
                with _peers.limit_threads(nt):
                    # ce_fast and the ceilings round-robin; the peers apart, so
                    # that their thread pools (a second OpenMP runtime, for
                    # PyTorch) spin down instead of competing with ours
                    med = _median_times(_cases(x, y, nt), repeats, budget=1.0)
                    others = _peer_cases(x, y, nt, peers, ref)
                    if others:
                        med.update(_median_times(others, repeats, budget=0.5))
                med["grad in place"] = max(med.pop("grad in place+copy") - med["copy"], 0.0)
                results.append(
                    {"N": N, "C": C, "dtype": dt, "threads": nt, "bytes": x.nbytes, "median_s": med}
                )
    return results


def _fmt_table(r: list[dict[str, Any]]) -> str:
    lines = []
    key = lambda e: (e["N"], e["C"], e["dtype"])  # noqa: E731
    groups: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for e in r:
        groups.setdefault(key(e), []).append(e)
    for (N, C, dt), rows in groups.items():
        nbytes = rows[0]["bytes"]
        lines.append(f"\n== cross_entropy_and_grad  {N} x {C}  {dt}  ({nbytes / 1e6:.0f} MB) ==")
        lines.append(
            f"{'threads':>7} {'variant':<28} {'median ms':>10} {'GB/s':>7} {'vs ceiling':>18} {'vs exp':>7}"
            f" {'speed-up':>9}"
        )
        for e in rows:
            m = e["median_s"]
            ceilings = {
                "loss": ("read", m["read"]),
                "grad out=": ("copy", m["copy"]),
                "grad in place": ("copy", m["copy"]),
                "grad fresh": ("alloc+copy", m["alloc+copy"]),
            }
            ref_t = m.get("numpy reference")
            for name, t in m.items():
                if t <= 0:  # "grad in place" is a difference of two medians: noise can zero it
                    lines.append(f"{e['threads']:>7} {name:<28} {'(noise)':>10}")
                    continue
                moved = nbytes if name in ("read", "loss") else 2 * nbytes
                ceil = ceilings.get(name)
                vs = f"{t / ceil[1]:.2f}x {ceil[0]}" if ceil else ""
                floor = f"{t / m['exp']:.2f}x" if ceil and m.get("exp") else ""
                speed = ""
                if ref_t and name.startswith("grad"):
                    speed = f"{ref_t / t:.1f}x"
                gbs = moved / t / 1e9
                cells = f"{t * 1e3:>10.2f} {gbs:>7.1f} {vs:>18} {floor:>7} {speed:>9}"
                lines.append(f"{e['threads']:>7} {name:<28} {cells}")
            peers = {k: v for k, v in m.items() if k.startswith(("torch", "jax", "sklearn", "numpy"))}
            fused = m["grad out="]
            if peers:
                summary = ", ".join(f"{k} {v / fused:.1f}x slower" for k, v in peers.items())
                lines.append(f"{'':>7} ce_fast (out=) vs peers: {summary}")
    return "\n".join(lines)


def _parse_shapes(s: str) -> list[tuple[int, int]]:
    out = []
    for part in s.split(","):
        n, c = part.lower().split("x")
        out.append((int(n), int(c)))
    return out


def main(argv: list[str] | None = None) -> int:
    ncores = os.cpu_count() or 1
    p = argparse.ArgumentParser(prog="python -m ce_fast.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=DEFAULT_SHAPES, help=f"NxC,... (default {DEFAULT_SHAPES})")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument(
        "--threads", default=",".join(str(t) for t in range(1, ncores + 1)), help="default: 1..all cores"
    )
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-peers", action="store_true", help="skip PyTorch / JAX / scikit-learn")
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) NumPy reference")
    p.add_argument("--json", metavar="FILE", help="write the raw medians as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot throughput vs threads (needs matplotlib)")
    p.add_argument("--tiny", default="32x10", help="NxC of the tiny-call table (default 32x10)")
    p.add_argument("--no-tiny", action="store_true", help="skip the tiny-call table")
    args = p.parse_args(argv)

    ce_fast.show_config()
    print("peers available:", ", ".join(_peers.available()) or "none")
    res = run(
        _parse_shapes(args.shapes),
        [d.strip() for d in args.dtypes.split(",")],
        [int(t) for t in args.threads.split(",")],
        args.repeats,
        peers=not args.no_peers,
        ref=not args.no_reference,
    )
    dtypes = [d.strip() for d in args.dtypes.split(",")]
    tiny = [] if args.no_tiny else run_tiny(*_parse_shapes(args.tiny)[0], dtypes)
    if args.json:  # first: a long run's numbers survive any later failure
        with open(args.json, "w") as f:
            json.dump({"build": ce_fast.build_info(), "results": res, "tiny": tiny}, f, indent=1)
    print(_fmt_table(res))
    if tiny:
        print(fmt_tiny(tiny))
    if args.plot:
        from ce_fast._plot import plot_results

        plot_results(res, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
