"""ce_fast.dask on an array larger than one worker's memory.

Starts a ``distributed.LocalCluster`` (default: 2 worker processes, 1 thread
each, ``memory_limit="400MB"`` per worker), generates float32 logits lazily
*on the workers* (``dask.array.random.default_rng(seed)``, one block at a
time; default 2048 x 128000 = 1.05 GB, more than the whole cluster's memory
limit), and times, per layout:

* ``baseline``  -- generate the logits and sum them (``x.sum()``): the cost
  of producing and reading the data once, which every other row pays too;
* ``loss``      -- ``ce_fast.dask.cross_entropy(x, labels)`` (mean);
* ``loss+grad`` -- ``ce_fast.dask.cross_entropy_and_grad`` computed together
  with ``(grad * grad).sum()`` (the gradient is reduced on the workers,
  never gathered).

Layouts: ``rows`` (blocks of whole rows, the class axis in one chunk) and
``classes`` (vocabulary-sharded: no block holds a whole row; two passes over
each row block, see ce_fast/dask.py).

For every case: the median wall time of ``--repeat`` runs, GB/s of logits
(``N * V * 4`` bytes / time), the same over the time beyond the layout's
baseline (an estimate of ce_fast.dask's own cost, since generating the
logits dominates here), and each worker's peak RSS during the runs (a
worker plugin samples the process RSS every 10 ms; reset before each case)
plus the bytes the worker spilled to disk. For comparison, the plain NumPy
``ce_fast`` functions on one in-memory piece of ``--numpy-rows`` rows (1 and
2 threads). A sanity check compares the dask loss of the first row block
with NumPy ce_fast. Prints a markdown table (and ``--json FILE``).

Usage: python benchmarks/bench_dask.py [--tokens 2048] [--vocab 128000]
       [--row-chunk 32] [--class-rows 128] [--class-chunk 16000]
       [--workers 2] [--memory-limit 400MB] [--repeat 3] [--num-threads 1]
       [--dist uniform|normal] [--numpy-rows 256] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import threading
import time
from typing import Any

import numpy as np

import ce_fast

try:
    import dask
    import dask.array as da
    import distributed
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError as exc:  # pragma: no cover
    raise SystemExit(
        'bench_dask.py needs dask and distributed: pip install "dask[array,distributed]"'
    ) from exc

import ce_fast.dask as cfd


class PeakRSS(WorkerPlugin):
    """Samples the worker process's RSS every ``interval`` seconds in a
    daemon thread; ``reset`` / ``peak`` through ``client.run``."""

    name = "ce-fast-peak-rss"

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval

    def setup(self, worker: Any) -> None:
        import psutil

        self.proc = psutil.Process()
        self.peak = self.proc.memory_info().rss
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True, name="peak-rss")
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            rss = self.proc.memory_info().rss
            if rss > self.peak:
                self.peak = rss

    def teardown(self, worker: Any) -> None:
        self.stop.set()


def _reset_peak(dask_worker: Any) -> None:
    p = dask_worker.plugins[PeakRSS.name]
    p.peak = p.proc.memory_info().rss


def _worker_mem(dask_worker: Any) -> dict[str, float]:
    import resource

    p = dask_worker.plugins[PeakRSS.name]
    spilled = 0.0
    data = dask_worker.data
    try:  # distributed's SpillBuffer: bytes written to disk since start
        spilled = float(data.cumulative_metrics.get(("disk-write", "bytes"), 0.0))
    except AttributeError:
        try:
            spilled = float(data.spilled_total.disk)
        except AttributeError:
            spilled = float("nan")
    return {
        "peak_rss": float(p.peak),
        "ru_maxrss": float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024.0,
        "spilled": spilled,
    }


def _mb(b: float) -> str:
    return "n/a" if b != b else f"{b / 1e6:.0f}"


def numpy_times(rows: int, vocab: int, repeat: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    x = rng.random((rows, vocab), dtype=np.float32)
    y = rng.integers(0, vocab, rows)
    out = []
    for nt in (1, 2):
        for op, fn in (
            ("loss", lambda: ce_fast.cross_entropy(x, y, num_threads=nt)),
            ("loss+grad", lambda: ce_fast.cross_entropy_and_grad(x, y, num_threads=nt)),
        ):
            fn()
            ts = []
            for _ in range(max(repeat, 3)):
                t0 = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t0)
            t = statistics.median(ts)
            out.append({"what": f"numpy ce_fast, {nt} thread{'s' if nt > 1 else ''}", "op": op,
                        "shape": f"{rows}x{vocab}", "time": t, "gbs": x.nbytes / t / 1e9})  # fmt: skip
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=2048, help="rows N (default 2048)")
    ap.add_argument("--vocab", type=int, default=128000, help="classes V (default 128000)")
    ap.add_argument("--row-chunk", type=int, default=32, help="rows per block, rows layout")
    ap.add_argument("--class-rows", type=int, default=128, help="rows per block, classes layout")
    ap.add_argument("--class-chunk", type=int, default=16000, help="classes per block, classes layout")
    ap.add_argument("--workers", type=int, default=2, help="worker processes, 1 thread each (default 2)")
    ap.add_argument("--memory-limit", default="400MB", help="per worker (default 400MB)")
    ap.add_argument("--repeat", type=int, default=3, help="timed runs per case; medians reported (default 3)")
    ap.add_argument("--num-threads", type=int, default=1, help="ce_fast threads per block call (default 1)")
    ap.add_argument("--dist", choices=["uniform", "normal"], default="uniform",
                    help="logits distribution (uniform is ~3x cheaper to generate)")  # fmt: skip
    ap.add_argument("--numpy-rows", type=int, default=256, help="rows of the in-memory NumPy comparison")
    ap.add_argument("--layouts", default="rows,classes", help="comma-separated: rows, classes (default both)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the logits and labels (default 0)")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    args = ap.parse_args(argv)

    N, V = args.tokens, args.vocab
    total = N * V * 4
    print(f"logits {N} x {V} float32 = {total / 1e9:.2f} GB, generated on the workers; "
          f"{args.workers} workers x 1 thread, memory_limit={args.memory_limit} each; "
          f"ce_fast num_threads={args.num_threads}; dask {dask.__version__}, "
          f"distributed {distributed.__version__}, ce_fast {ce_fast.__version__}")  # fmt: skip
    labels = np.random.default_rng(args.seed + 1).integers(0, V, N)
    layouts = {
        "rows": (args.row_chunk, V),
        "classes": (args.class_rows, args.class_chunk),
    }
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ce-fast-bench-dask-") as tmp:
        t_start = time.perf_counter()
        cluster = distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1, processes=True, memory_limit=args.memory_limit,
            dashboard_address=None, host="127.0.0.1", local_directory=tmp, silence_logs=logging.ERROR,
        )  # fmt: skip
        client = distributed.Client(cluster)
        try:
            client.register_plugin(PeakRSS())
            print(f"cluster up in {time.perf_counter() - t_start:.1f} s")
            for layout in args.layouts.split(","):
                chunks = layouts[layout]
                rng = da.random.default_rng(args.seed)

                def logits() -> Any:
                    if args.dist == "normal":
                        return rng.standard_normal((N, V), chunks=chunks, dtype=np.float32)
                    return rng.random((N, V), chunks=chunks, dtype=np.float32)

                y = da.from_array(labels, chunks=chunks[0])
                nt = args.num_threads

                def case_baseline() -> list[Any]:
                    return [logits().sum()]

                def case_loss() -> list[Any]:
                    return [cfd.cross_entropy(logits(), y, num_threads=nt)]

                def case_grad() -> list[Any]:
                    loss, grad = cfd.cross_entropy_and_grad(logits(), y, num_threads=nt)
                    return [loss, (grad * grad).sum(dtype=np.float64)]

                # sanity: the first row block against NumPy ce_fast
                x0 = logits()[: chunks[0]]
                xs, ls = dask.compute(x0, cfd.cross_entropy(x0, y[: chunks[0]], num_threads=nt))
                want = ce_fast.cross_entropy(xs, labels[: chunks[0]])
                rel = abs(float(ls) - float(want)) / abs(float(want))
                print(f"[{layout}] check vs NumPy ce_fast on rows 0:{chunks[0]}: rel. diff {rel:.1e}")
                assert rel < 1e-5, "dask result differs from NumPy ce_fast"
                del xs

                for op, make in (("baseline", case_baseline), ("loss", case_loss), ("loss+grad", case_grad)):
                    ts = []
                    client.run(_reset_peak)
                    before = client.run(_worker_mem)
                    value = None
                    for _ in range(args.repeat):
                        lazy = make()
                        t0 = time.perf_counter()
                        value = client.gather(client.compute(lazy))
                        ts.append(time.perf_counter() - t0)
                    after = client.run(_worker_mem)
                    t = statistics.median(ts)
                    rec = {
                        "what": f"dask, {layout}", "op": op, "shape": f"{N}x{V}",
                        "chunks": f"{chunks[0]}x{chunks[1]}", "time": t, "times": ts, "gbs": total / t / 1e9,
                        "peak_rss": [after[w]["peak_rss"] for w in sorted(after)],
                        "spilled": [after[w]["spilled"] - before[w]["spilled"] for w in sorted(after)],
                        "value": [float(v) for v in value] if value is not None else None,
                    }  # fmt: skip
                    results.append(rec)
                    print(f"[{layout}] {op}: median {t:.2f} s of {[f'{v:.2f}' for v in ts]}, "
                          f"peak RSS {[_mb(v) for v in rec['peak_rss']]} MB")  # fmt: skip
            lifetime = client.run(_worker_mem)
        finally:
            client.close()
            cluster.close()
    np_res = numpy_times(args.numpy_rows, V, args.repeat, args.seed) if args.numpy_rows > 0 else []

    print()
    print(
        "| what | op | shape (chunks) | median s | GB/s | s over baseline | GB/s over baseline "
        "| peak RSS per worker (MB) | spilled to disk (MB) |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|---|")
    base = {r["what"]: r["time"] for r in results if r["op"] == "baseline"}
    for r in results:
        rss = " / ".join(_mb(v) for v in r["peak_rss"])
        sp = " / ".join(_mb(v) for v in r["spilled"])
        net = r["time"] - base.get(r["what"], 0.0)
        r["net_time"] = None if r["op"] == "baseline" else net
        net_s = "-" if r["op"] == "baseline" else f"{net:.2f}"
        net_gbs = "-" if r["op"] == "baseline" or net <= 0 else f"{total / net / 1e9:.2f}"
        print(f"| {r['what']} | {r['op']} | {r['shape']} ({r['chunks']}) | {r['time']:.2f} | "
              f"{r['gbs']:.2f} | {net_s} | {net_gbs} | {rss} | {sp} |")  # fmt: skip
    for r in np_res:
        print(
            f"| {r['what']} | {r['op']} | {r['shape']} | {r['time']:.3f} | {r['gbs']:.2f} | - | - | - | - |"
        )
    print()
    print(f"worker lifetime peak RSS (ru_maxrss): "
          f"{' / '.join(_mb(v['ru_maxrss']) for v in lifetime.values())} MB; "
          f"memory_limit {args.memory_limit} per worker; logits {total / 1e6:.0f} MB in total")  # fmt: skip
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "dask": results, "numpy": np_res}, f, indent=1)


if __name__ == "__main__":
    main()
