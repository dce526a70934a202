"""The built-in multi-threaded benchmark: ``python -m ce_fast.bench``.

For every shape x dtype x thread count it times, side by side in one run
(interleaved, median of repeats):

* the *ceilings* -- what merely moving the bytes costs on this machine:
  one read of the logits (``np.add.reduce``), a copy into an existing buffer
  (``np.copyto``) and a copy into a freshly allocated one (``np.empty`` +
  ``np.copyto``, which pays the page faults of first touch);
* the *exp floor*: ce_fast's vector exp of every logit into an existing
  buffer, in the dtype the kernels compute in (float32 for float16 and
  bfloat16), the arithmetic no exact softmax can skip (column "vs exp"); beside it NumPy's
  own ``np.exp(x, out=buf)`` of the same array, a yardstick ce_fast did not
  write;
* ce_fast: loss only, loss + gradient into an existing buffer (``out=``),
  in place (``out=logits``) and into a fresh gradient (the default call),
  with the cores each kept busy and its peak extra memory;
* the NumPy reference and, when installed, PyTorch, JAX and scikit-learn,
  each written as its users write it and timed in a process of its own
  pinned to the row's cores, in turns with ce_fast (``_bench_worker``);
* tiny calls (``--tiny``, default 32x10), whose cost is the Python call
  itself: each against one ``np.exp`` call on the same array and PyTorch.

It prints a summary first (per row, ce_fast's time and how many times as
long each peer takes), then per shape and dtype a table of median times,
effective GB/s, ratios to the ceilings and floors, cores and memory.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

import ce_fast
from ce_fast import _bench_memory, _core, _peers, reference
from ce_fast._bench_report import fmt_summary, fmt_table
from ce_fast._bench_timing import round_robin
from ce_fast._bench_tiny import fmt_tiny, run_tiny
from ce_fast._bench_worker import run_worker

# Small enough that the default run (2 dtypes x every thread count, with the
# peers) ends in a minute or two on 2 cores. The larger reference shapes:
# --shapes 16384x1000,4096x32000,65536x10,65536x100,1024x128256,8x1000000.
DEFAULT_SHAPES = "4096x1000,512x32000,65536x10,65536x100"

PLOT_HINT = 'needs matplotlib: pip install matplotlib (or pip install ".[plot]" in the ce_fast clone)'


def vecmath_exp(src: np.ndarray, dst: np.ndarray, nt: int) -> Callable[[], None]:
    """``dst = exp(src)`` by ce_fast's vector exp on ``nt`` threads.
    ``_core.vecmath`` trusts its caller: it reads and writes ``src.size``
    elements of the dtype it is told, so only contiguous float32/float64
    arrays of one dtype and size ever reach it."""
    ok = (
        src.dtype in (np.float32, np.float64)
        and dst.dtype == src.dtype
        and dst.size == src.size
        and src.flags.c_contiguous
        and dst.flags.c_contiguous
        and dst.flags.writeable
    )
    if not ok:
        raise ValueError(
            f"vecmath needs contiguous float32/float64 arrays of one dtype and size, got "
            f"{src.dtype}[{src.size}] -> {dst.dtype}[{dst.size}]"
        )
    return lambda: _core.vecmath(2, src, dst, nt)


def _exp_floor(x: np.ndarray, compute: np.dtype[Any], nt: int) -> Callable[[], None]:
    """exp of every logit into an existing buffer, in the dtype the kernels
    compute in: the arithmetic no exact softmax can skip."""
    src = np.ascontiguousarray(-np.abs(x.astype(compute)).ravel())  # the kernels' exp takes x <= 0
    return vecmath_exp(src, np.empty_like(src), nt)


def _compute(gdt: np.dtype[Any]) -> np.dtype[Any]:
    """The dtype the kernels compute in, for a gradient of dtype gdt (the
    16-bit ones compute in float32)."""
    return np.dtype(np.float32) if gdt.itemsize == 2 else gdt


def _cases(x: np.ndarray, y: np.ndarray, gdt: np.dtype[Any] | None, nt: int) -> dict[str, Callable[[], Any]]:
    """The ceilings, the floors and (for a dtype it takes) ce_fast."""
    same = np.empty_like(x)
    fns: dict[str, Callable[[], Any]] = {"read": lambda: np.add.reduce(x, axis=None)}
    if x.dtype.itemsize == 2:
        # NumPy and ml_dtypes reduce and exp 16-bit floats element by element
        # (~1 s at 4096 x 32000), and their temporaries slow the next fresh
        # allocations of the run: read the same bytes as integers, no np.exp
        bits = x.view(np.uint16)
        fns["read"] = lambda: np.add.reduce(bits, axis=None)
    else:
        fns["np.exp"] = lambda: np.exp(x, out=same)
    if gdt is None:
        fns["copy"] = lambda: np.copyto(same, x)
        return fns
    buf = np.empty(x.shape, gdt)
    fns.update(
        {
            # the ceiling of the gradient calls: read the logits, write a gradient
            "copy": lambda: np.copyto(buf, x),
            "alloc+copy": lambda: np.copyto(np.empty(x.shape, gdt), x),
            "exp": _exp_floor(x, _compute(gdt), nt),
            "loss": lambda: ce_fast.cross_entropy(x, y, num_threads=nt),
            "grad out=": lambda: ce_fast.cross_entropy_and_grad(x, y, out=buf, num_threads=nt),
            "grad fresh": lambda: ce_fast.cross_entropy_and_grad(x, y, num_threads=nt),
        }
    )
    if gdt == x.dtype:
        work = x.copy()

        def in_place() -> Any:
            # out=logits overwrites the input, so each call gets a fresh copy;
            # the copy's median is subtracted afterwards
            np.copyto(work, x)
            return ce_fast.cross_entropy_and_grad(work, y, out=work, num_threads=nt)

        fns["grad in place+copy"] = in_place
    return fns


@contextlib.contextmanager
def _limit_blas(n: int) -> Iterator[None]:
    """Keep NumPy's BLAS (the reference) to the row's thread count."""
    if importlib.util.find_spec("threadpoolctl") is None:
        yield
        return
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n):
        yield


def _one_row(x: np.ndarray, y: np.ndarray, nt: int, repeats: int, ref: bool) -> dict[str, Any]:
    gdt, why = _peers.ce_fast_grad_dtype(x, y)
    fns = _cases(x, y, gdt, nt)
    with np.errstate(over="ignore"):  # np.exp of float16 logits overflows to inf, as it should
        t = round_robin(fns, repeats, budget=0.5)
    if ref and gdt is not None:
        with _limit_blas(nt):
            t.update(
                round_robin({"numpy reference": lambda: reference.cross_entropy_and_grad(x, y)}, repeats, 0.5)
            )
    med = {k: v.median_s for k, v in t.items()}
    if "grad in place+copy" in med:
        t_in_place = max(med["grad in place+copy"] - med["copy"], 0.0)
        med = {("grad in place" if k == "grad in place+copy" else k): v for k, v in med.items()}
        med["grad in place"] = t_in_place
    row: dict[str, Any] = {
        "median_s": med,
        "compute_dtype": None if gdt is None else _compute(gdt).name,
        "grad_dtype": None if gdt is None else gdt.name,
    }
    if gdt is None:
        row["ce_fast_skipped"] = why
        return row
    row["cores"] = {k: t[k].cores for k in ("loss", "grad out=", "grad fresh")}
    peak = {}
    for k in ("loss", "grad out=", "grad fresh"):
        peak[k] = _bench_memory.peak_extra_bytes(fns[k], repeats=2)
    row["peak_extra_bytes"] = peak
    return row


def run(
    shapes: list[tuple[int, int]],
    dtypes: list[str],
    threads: list[int],
    repeats: int,
    peers: bool = True,
    ref: bool = True,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """The rows (one per shape x dtype x thread count) and the peers used."""

    start = time.perf_counter()

    def say(msg: str) -> None:
        if progress:
            print(f"{time.perf_counter() - start:5.0f} s  {msg}", file=sys.stderr, flush=True)

    results = []
    cases = [(N, C, dt) for N, C in shapes for dt in dtypes]
    step, total = 0, len(cases) * len(threads)
    for N, C, dt in cases:
        x, y = _peers.make_data(N, C, dt)
        for nt in threads:
            step += 1
            say(f"[{step}/{total}] {N}x{C} {dt} threads={nt} ...")
            row: dict[str, Any] = {"N": N, "C": C, "dtype": dt, "threads": nt, "bytes": x.nbytes}
            # the reference is single-threaded NumPy: timed once per shape and dtype
            row.update(_one_row(x, y, nt, repeats, ref and nt == threads[0]))
            row["peers"] = {}
            results.append(row)
        del x, y
    found = _peers.available() if peers else {}
    for name in found:
        for nt in threads:
            say(f"{_peers.label(name)}, threads={nt}: every shape in a process pinned to {nt} CPU(s) ...")
            # memory hardly depends on the thread count: measured at the first
            answer = run_worker(name, nt, cases, repeats, budget=0.25, memory=nt == threads[0])
            for row in results:
                if row["threads"] == nt:
                    key = f"{row['N']}x{row['C']} {row['dtype']}"
                    case = answer["cases"].get(key, {}) if "cases" in answer else answer
                    row["peers"][name] = {**case, "cpus": answer.get("cpus")}
    return results, found


def _shapes(s: str) -> list[tuple[int, int]]:
    out = []
    for part in s.split(","):
        n, _, c = part.lower().partition("x")
        if not (n.isdigit() and c.isdigit() and int(n) >= 1 and int(c) >= 1):
            raise argparse.ArgumentTypeError(f"expected NxC,... with N, C >= 1, got {s!r}")
        out.append((int(n), int(c)))
    return out


def _counts(s: str) -> list[int]:
    try:
        out = [int(v) for v in s.split(",")]
    except ValueError:
        out = []
    if not out or min(out) < 1:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {s!r}")
    return out


def _known_dtypes(names: list[str]) -> tuple[list[str], list[str]]:
    ok, unknown = [], []
    for d in names:
        try:
            _peers.resolve_dtype(d)
            ok.append(d)
        except TypeError:
            unknown.append(d)
    return ok, unknown


def parser() -> argparse.ArgumentParser:
    ncores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    p = argparse.ArgumentParser(prog="python -m ce_fast.bench", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--shapes",
        type=_shapes,
        default=DEFAULT_SHAPES,
        help=f"N x C of the logits, NxC,... (default {DEFAULT_SHAPES})",
    )
    p.add_argument(
        "--dtypes",
        default="float32,float64",
        help="logit dtypes, comma-separated: float32, float64, float16, bfloat16 (needs ml_dtypes); "
        "a dtype the installed ce_fast refuses is reported as skipped, its peers still timed "
        "(default float32,float64)",
    )
    threads = "1" if ncores == 1 else f"1,{ncores}"
    p.add_argument(
        "--threads",
        type=_counts,
        default=threads,
        help="thread counts, comma-separated; ce_fast gets num_threads=n, each peer runs pinned to n CPUs "
        f"(default {threads}: one and all of this machine's cores)",
    )
    p.add_argument(
        "--repeats",
        type=lambda s: _counts(s)[0],
        default=5,
        help="timed samples per call; medians are reported (default 5)",
    )
    p.add_argument("--no-peers", action="store_true", help="skip PyTorch / JAX / scikit-learn")
    p.add_argument("--no-reference", action="store_true", help="skip the (slow) NumPy reference")
    p.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    p.add_argument(
        "--plot",
        metavar="FILE.png",
        help="draw the time per call of ce_fast and each peer, per shape, with the copy and exp floors "
        "(needs matplotlib)",
    )
    p.add_argument("--tiny", type=_shapes, default="32x10", help="NxC of the tiny-call table (default 32x10)")
    p.add_argument("--no-tiny", action="store_true", help="skip the tiny-call table")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        print(f"--plot: {PLOT_HINT}", file=sys.stderr)
        return 2

    dtypes, unknown = _known_dtypes([d.strip() for d in args.dtypes.split(",") if d.strip()])
    found = _peers.available()
    res, used = run(
        args.shapes,
        dtypes,
        args.threads,
        args.repeats,
        peers=not args.no_peers,
        ref=not args.no_reference,
    )
    (n_tiny, c_tiny), *_ = args.tiny
    tiny = [] if args.no_tiny else run_tiny(n_tiny, c_tiny, dtypes)
    if args.json:  # first: a long run's numbers survive any later failure
        with open(args.json, "w") as f:
            doc = {"build": ce_fast.build_info(), "peers": used, "unknown_dtypes": unknown}
            json.dump({**doc, "results": res, "tiny": tiny}, f, indent=1)
    print(fmt_summary(res, used))
    if not args.no_peers and not found:
        print(_peers.INSTALL_HINT)
    for d in unknown:
        print(f"dtype {d!r} skipped: neither NumPy nor ml_dtypes knows it")
    print()
    ce_fast.show_config()
    print(fmt_table(res))
    if tiny:
        print(fmt_tiny(tiny))
    if args.plot:
        from ce_fast._plot import plot_results

        plot_results(res, used, args.plot)
        print(f"plot written to {args.plot}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
