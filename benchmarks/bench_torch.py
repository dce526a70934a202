"""ce_fast.torch against PyTorch's own losses, on the CPU, float32.

Parts (each in its own subprocess where peak memory is reported, so that
the peak is that part's own):

* ``loss``: cross-entropy forward + backward, ``F.cross_entropy`` against
  ``ce_fast.torch.cross_entropy``, at 16384 x 1000 and 4096 x 32000, with 1
  and 2 threads (``torch.set_num_threads``), and the per-call cost at 32 x 10
  (forward alone, and forward + backward). Minimum over repeats, A/B
  interleaved.
* ``lce``: ``linear_cross_entropy`` forward + backward at N = 4096 tokens,
  D = 1024, C = 32000, 2 threads: torch 2.13's chunked path
  (``options=LinearCrossEntropyOptions()``), its reference path
  (``options=None``, the N x C logits materialised) and ce_fast.torch; time
  (median) and peak extra memory (peak RSS of the first call minus the RSS
  before it, Linux: /proc/self/clear_refs).
* ``train``: two training loops, once with torch's losses and once under
  ``ce_fast.torch.patch()`` (the same code): a small MLP on scikit-learn's
  digits (``F.cross_entropy``), and an LM head (``F.linear_cross_entropy``,
  N = 4096, D = 1024, C = 32000, SGD on the head's weight). Loss curve, time
  per step and peak memory.

Usage: python benchmarks/bench_torch.py [--parts loss lce train] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from typing import Any

from ce_fast import _bench_memory

PARTS = ("loss", "lce", "train")


def _min_time(fn: Any, repeat: int, number: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best


def part_loss(repeat: int) -> list[dict[str, Any]]:
    import torch
    import torch.nn.functional as F

    import ce_fast.torch as ct

    rows = []
    for N, C in ((16384, 1000), (4096, 32000)):
        x = torch.randn(N, C) * 3
        y = torch.randint(0, C, (N,))
        for nt in (1, 2):
            torch.set_num_threads(nt)
            res: dict[str, float] = {}
            for name, fn in (("torch", F.cross_entropy), ("ce_fast", ct.cross_entropy)):
                xg = x.clone().requires_grad_()

                def step(fn: Any = fn, xg: Any = xg) -> None:
                    fn(xg, y).backward()
                    xg.grad = None

                step()
                res[name] = _min_time(step, 1)
            for _ in range(repeat - 1):  # interleaved A/B
                for name, fn in (("torch", F.cross_entropy), ("ce_fast", ct.cross_entropy)):
                    xg = x.clone().requires_grad_()

                    def step2(fn: Any = fn, xg: Any = xg) -> None:
                        fn(xg, y).backward()
                        xg.grad = None

                    res[name] = min(res[name], _min_time(step2, 1))
            rows.append({"shape": f"{N}x{C}", "threads": nt, **res, "speedup": res["torch"] / res["ce_fast"]})
    torch.set_num_threads(1)
    x = torch.randn(32, 10)
    y = torch.randint(0, 10, (32,))
    xg = x.clone().requires_grad_()
    tiny: dict[str, float] = {}
    for name, fn in (("torch", F.cross_entropy), ("ce_fast", ct.cross_entropy)):
        tiny[f"{name} fwd"] = _min_time(lambda fn=fn: fn(x, y), repeat, 2000)

        def both(fn: Any = fn) -> None:
            fn(xg, y).backward()
            xg.grad = None

        tiny[f"{name} fwd+bwd"] = _min_time(both, repeat, 1000)
    rows.append({"shape": "32x10", "threads": 1, **tiny})
    return rows


def _lce_call(variant: str, N: int, D: int, C: int) -> Any:
    import torch
    import torch.nn.functional as F

    import ce_fast.torch as ct

    g = torch.Generator().manual_seed(0)
    h = torch.randn(N, D, generator=g)
    w = torch.randn(C, D, generator=g) / D**0.5
    y = torch.randint(0, C, (N,), generator=g)
    fn = ct.linear_cross_entropy if variant == "ce_fast" else F.linear_cross_entropy
    opts = None if variant == "torch reference" else torch.nn.LinearCrossEntropyOptions()
    h.requires_grad_()
    w.requires_grad_()

    def call() -> float:
        h.grad = w.grad = None
        loss = fn(h, w, y, options=opts)
        loss.backward()  # the gradients are allocated in the call
        return float(loss.detach())

    return call


def lce_child(variant: str, N: int, D: int, C: int, repeat: int) -> None:
    import torch

    torch.set_num_threads(2)
    call = _lce_call(variant, N, D, C)
    got: dict[str, float] = {}

    def first_call() -> None:
        t0 = time.perf_counter()
        got["loss"] = call()
        got["time"] = time.perf_counter() - t0

    peak = _bench_memory.peak_extra_bytes(first_call, repeats=1) or 0
    loss, times = got["loss"], [got["time"]]
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"variant": variant, "loss": loss, "peak_mb": peak / 1e6, "time": statistics.median(times),
                      "times": times}))  # fmt: skip


def _train_mlp(patched: bool, steps: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits

    import ce_fast.torch as ct

    if patched:
        ct.patch()
    X, Y = load_digits(return_X_y=True)
    x = torch.tensor(X / 16.0, dtype=torch.float32)
    y = torch.tensor(Y, dtype=torch.int64)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses: list[float] = []
    times: list[float] = []

    def loop() -> None:
        for i in range(steps):
            batch = slice((i * 256) % 1536, (i * 256) % 1536 + 256)
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = F.cross_entropy(model(x[batch]), y[batch])
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            losses.append(float(loss))

    peak = _bench_memory.peak_extra_bytes(loop, repeats=1) or 0
    return {"losses": losses, "step_ms": 1e3 * statistics.median(times), "peak_mb": peak / 1e6}


def _train_head(patched: bool, steps: int, N: int, D: int, C: int) -> dict[str, Any]:
    import torch
    import torch.nn.functional as F

    import ce_fast.torch as ct

    torch.set_num_threads(2)
    if patched:
        ct.patch()
    g = torch.Generator().manual_seed(0)
    h = torch.randn(N, D, generator=g)
    w = (torch.randn(C, D, generator=g) / D**0.5).requires_grad_()
    y = torch.randint(0, C, (N,), generator=g)
    opt = torch.optim.SGD([w], lr=50.0)
    opts = torch.nn.LinearCrossEntropyOptions()
    losses: list[float] = []
    times: list[float] = []

    def loop() -> None:
        for _ in range(steps):
            t0 = time.perf_counter()
            opt.zero_grad()
            loss = F.linear_cross_entropy(h, w, y, options=opts)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
            losses.append(float(loss))

    peak = _bench_memory.peak_extra_bytes(loop, repeats=1) or 0
    return {"losses": losses, "step_s": statistics.median(times), "peak_mb": peak / 1e6}


def train_child(which: str, patched: bool, steps: int) -> None:
    out = _train_mlp(patched, steps) if which == "mlp" else _train_head(patched, steps, 4096, 1024, 32000)
    print(json.dumps(out))


def _child(*args: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        kind, *rest = sys.argv[2:]
        if kind == "lce":
            lce_child(rest[0], *(int(v) for v in rest[1:]))
        else:
            train_child(rest[0], rest[1] == "1", int(rest[2]))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--parts", nargs="+", default=list(PARTS), choices=PARTS, help="what to run (default: all)"
    )
    ap.add_argument("--repeat", type=int, default=5, help="repeats of each timing (minimum or median taken)")
    ap.add_argument("--steps", type=int, default=30, help="MLP training steps (the LM head: 3)")
    args = ap.parse_args()
    with open("/proc/loadavg") as f:
        print(f"load average before: {f.read().split()[:3]}")
    if "loss" in args.parts:
        print("\n## Cross-entropy forward + backward, float32 (min of", args.repeat, "interleaved runs)\n")
        print("| shape | threads | torch (ms) | ce_fast.torch (ms) | speed-up |")
        print("| --- | --- | --- | --- | --- |")
        rows = part_loss(args.repeat)
        for r in rows[:-1]:
            print(f"| {r['shape']} | {r['threads']} | {1e3 * r['torch']:.1f} | {1e3 * r['ce_fast']:.1f} | "
                  f"{r['speedup']:.1f}x |")  # fmt: skip
        t = rows[-1]
        print("\n| 32 x 10, 1 thread | torch (us) | ce_fast.torch (us) |\n| --- | --- | --- |")
        for k in ("fwd", "fwd+bwd"):
            print(f"| {k} | {1e6 * t[f'torch {k}']:.1f} | {1e6 * t[f'ce_fast {k}']:.1f} |")
    if "lce" in args.parts:
        print(
            "\n## linear_cross_entropy forward + backward, N = 4096, D = 1024, C = 32000, float32, 2 threads\n"
        )
        print("| variant | time (s, median) | peak extra (MB) | loss |\n| --- | --- | --- | --- |")
        res = {}
        for v in ("torch chunked", "ce_fast", "torch reference"):
            r = res[v] = _child("lce", v, "4096", "1024", "32000", str(min(args.repeat, 3)))
            print(f"| {v} | {r['time']:.2f} | {r['peak_mb']:.0f} | {r['loss']:.6f} |", flush=True)
        a, b = res["ce_fast"], res["torch chunked"]
        print(
            f"\nce_fast / torch chunked: time {a['time'] / b['time']:.2f}x, memory {a['peak_mb'] / b['peak_mb']:.2f}x"
        )
    if "train" in args.parts:
        print("\n## Training loops: torch's losses, then the same code under ce_fast.torch.patch()\n")
        for which, steps, unit in (("mlp", args.steps, "step_ms"), ("head", 3, "step_s")):
            a, b = _child("train", which, "0", str(steps)), _child("train", which, "1", str(steps))
            diff = max(abs(u - v) for u, v in zip(a["losses"], b["losses"]))
            print(f"{which}: {steps} steps; losses torch {a['losses'][0]:.6f} -> {a['losses'][-1]:.6f}, "
                  f"patched {b['losses'][0]:.6f} -> {b['losses'][-1]:.6f} (max |difference| {diff:.2e}); "
                  f"{unit.replace('_', ' per ')} torch {a[unit]:.3g}, patched {b[unit]:.3g}; "
                  f"peak extra MB torch {a['peak_mb']:.0f}, patched {b['peak_mb']:.0f}")  # fmt: skip
    with open("/proc/loadavg") as f:
        print(f"\nload average after: {f.read().split()[:3]}")


if __name__ == "__main__":
    main()
