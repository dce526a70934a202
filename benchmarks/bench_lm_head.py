"""Language-model head benchmark: loss and gradients of
``cross_entropy(hidden @ weight.T + bias, target)`` for N tokens, D features
and a vocabulary of C classes, float32.

Variants, each run in its own subprocess (so peak memory is its own):
* ``fused``: ``ce_fast.linear_cross_entropy_and_grad`` (chunks of rows; the
  N x C logits never exist);
* ``materialised``: the NumPy composition with ce_fast's kernel in place:
  ``z = h @ W.T + b``; ``cross_entropy_and_grad(z, y, out=z)``;
  ``dh = G @ W``; ``dW = G.T @ h``; ``db = G.sum(0)``;
* ``torch``: ``F.linear`` + ``F.cross_entropy`` + ``backward()`` (when
  PyTorch is installed).

Peak memory is the process's peak RSS during the first call minus its RSS
just before (``ce_fast._bench_memory``: the kernel's peak mark is reset
through /proc/self/clear_refs, so this is Linux-only), so it counts every
allocation, NumPy's, BLAS's and PyTorch's alike. Time is the median of ``--repeat``
calls after it. The matmuls dominate the time (3 x 2NDC flops).

Usage: python benchmarks/bench_lm_head.py [--tokens 2048] [--dim 1024]
       [--vocab 32000 ...] [--repeat 3] [--variants fused materialised torch]
Large vocabularies at training batch sizes: --tokens 8192 --vocab 32000 128256 --repeat 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import numpy as np

from ce_fast import _bench_memory

VARIANTS = ("fused", "materialised", "torch")


def inputs(N: int, D: int, C: int):
    rng = np.random.default_rng(0)
    h = rng.standard_normal((N, D), dtype=np.float32)
    w = rng.standard_normal((C, D), dtype=np.float32) / np.float32(np.sqrt(D))
    b = rng.standard_normal(C, dtype=np.float32)
    y = rng.integers(0, C, N)
    return h, w, b, y


def make_call(variant: str, h, w, b, y):
    if variant == "fused":
        import ce_fast

        return lambda: ce_fast.linear_cross_entropy_and_grad(h, w, y, bias=b)[0]
    if variant == "materialised":
        import ce_fast

        def materialised():
            z = h @ w.T
            z += b
            loss, g = ce_fast.cross_entropy_and_grad(z, y, out=z)
            _ = (g @ w, g.T @ h, g.sum(axis=0))
            return loss

        return materialised
    import torch

    th, tw, tb, ty = (torch.from_numpy(a) for a in (h, w, b, y))

    def torch_call():
        hh = th.clone().requires_grad_()
        ww = tw.clone().requires_grad_()
        bb = tb.clone().requires_grad_()
        loss = torch.nn.functional.cross_entropy(torch.nn.functional.linear(hh, ww, bb), ty)
        loss.backward()
        return loss.item()

    return torch_call


def child(variant: str, N: int, D: int, C: int, repeat: int) -> None:
    """Runs in the subprocess: prints one JSON line."""
    h, w, b, y = inputs(N, D, C)
    call = make_call(variant, h, w, b, y)
    got: dict[str, float] = {}

    def first_call() -> None:
        t0 = time.perf_counter()
        got["loss"] = float(call())
        got["time"] = time.perf_counter() - t0

    peak = _bench_memory.peak_extra_bytes(first_call, repeats=1)
    loss, times = got["loss"], [got["time"]]
    for _ in range(repeat - 1):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"loss": loss, "peak": peak, "time": statistics.median(times), "times": times}))


def run(variant: str, N: int, D: int, C: int, repeat: int) -> dict | None:
    cmd = [sys.executable, __file__, "--child", variant, str(N), str(D), str(C), str(repeat)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {variant}: failed ({proc.stderr.strip().splitlines()[-1:]})", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        v, N, D, C, r = sys.argv[2:7]
        child(v, int(N), int(D), int(C), int(r))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=2048, help="rows N of the hidden states (default 2048)")
    ap.add_argument("--dim", type=int, default=1024, help="features D (default 1024)")
    ap.add_argument(
        "--vocab", type=int, nargs="+", default=[32000], help="vocabulary sizes C (default 32000)"
    )
    ap.add_argument("--repeat", type=int, default=3, help="timed calls after the first; median (default 3)")
    ap.add_argument(
        "--variants",
        nargs="+",
        default=list(VARIANTS),
        choices=VARIANTS,
        help="which to run (default all; torch only when PyTorch is installed)",
    )
    args = ap.parse_args()
    try:
        import torch  # noqa: F401
    except ImportError:
        args.variants = [v for v in args.variants if v != "torch"]

    import ce_fast
    from ce_fast._linear import auto_chunk_size

    N, D = args.tokens, args.dim
    print(f"ce_fast {ce_fast.__version__}, float32, N = {N} tokens, D = {D}, median of {args.repeat}")
    print(
        "| C | variant | chunk rows | time (s) | vs materialised | peak extra (MB) | vs materialised | loss |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for C in args.vocab:
        res = {v: run(v, N, D, C, args.repeat) for v in args.variants}
        base = res.get("materialised")
        logits_mb = N * C * 4 / 1e6
        for v, r in res.items():
            if r is None:
                continue
            chunk = str(auto_chunk_size(N, C, D, 4)) if v == "fused" else "-"
            rt = f"{r['time'] / base['time']:.2f}" if base else "-"
            rm = f"{r['peak'] / base['peak']:.2f}" if base and base["peak"] and r["peak"] is not None else "-"
            pk = "-" if r["peak"] is None else f"{r['peak'] / 1e6:.0f}"  # None: no peak counter (not Linux)
            print(
                f"| {C} | {v} | {chunk} | {r['time']:.2f} | {rt} | {pk} | {rm} | {r['loss']:.6f} |",
                flush=True,
            )
        print(f"|  | (N x C logits alone: {logits_mb:.0f} MB) |  |  |  |  |  |  |")


if __name__ == "__main__":
    main()
