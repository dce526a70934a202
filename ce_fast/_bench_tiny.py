"""Tiny calls for ``python -m ce_fast.bench``: on a small batch the cost of a
call is its Python overhead, so it is measured against one NumPy ufunc call
(``np.exp``) on the same array, side by side, and against PyTorch's call."""

from __future__ import annotations

import importlib.util
import timeit
from collections.abc import Callable
from typing import Any

import numpy as np

import ce_fast
from ce_fast._peers import ce_fast_grad_dtype, resolve_dtype


def _per_call(fn: Callable[[], Any], repeats: int) -> float:
    """Median seconds per call over `repeats` samples of ~20 ms each."""
    fn()
    number = max(1, int(0.02 / max(timeit.timeit(fn, number=1), 1e-7)))
    return float(np.median(timeit.repeat(fn, number=number, repeat=repeats)) / number)


def _cases(x: np.ndarray, y: np.ndarray, t: np.ndarray) -> dict[str, Callable[[], Any]]:
    g = np.empty(x.shape, ce_fast_grad_dtype(x, y)[0] or x.dtype)
    fns: dict[str, Callable[[], Any]] = {
        "np.exp (the yardstick)": lambda: np.exp(x),
        "cross_entropy": lambda: ce_fast.cross_entropy(x, y),
        "cross_entropy_and_grad": lambda: ce_fast.cross_entropy_and_grad(x, y),
        "cross_entropy_and_grad out=": lambda: ce_fast.cross_entropy_and_grad(x, y, out=g),
        "softmax": lambda: ce_fast.softmax(x),
        "log_softmax": lambda: ce_fast.log_softmax(x),
        "binary_cross_entropy_with_logits": lambda: ce_fast.binary_cross_entropy_with_logits(x, t),
    }
    if importlib.util.find_spec("torch") is not None:
        import torch
        import torch.nn.functional as F

        from ce_fast._peers import Unsupported, to_torch

        try:
            xt, yt, tt = to_torch(x), torch.from_numpy(y), to_torch(t)
        except Unsupported:
            return fns

        def torch_fwd_bwd() -> Any:
            xr = xt.detach().requires_grad_(True)
            F.cross_entropy(xr, yt).backward()
            return xr.grad

        fns["torch cross_entropy"] = lambda: F.cross_entropy(xt, yt)
        fns["torch fwd+bwd"] = torch_fwd_bwd
        fns["torch softmax"] = lambda: torch.softmax(xt, -1)
        fns["torch BCE with logits"] = lambda: F.binary_cross_entropy_with_logits(xt, tt)
    return fns


def run_tiny(N: int, C: int, dtypes: list[str], repeats: int = 7) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    out = []
    for dt in dtypes:
        x = rng.standard_normal((N, C)).astype(resolve_dtype(dt))
        y = rng.integers(0, C, N)
        t = (rng.random((N, C)) < 0.5).astype(x.dtype)
        med, skipped = {}, {}
        for k, f in _cases(x, y, t).items():
            try:
                f()
            except (TypeError, ValueError, RuntimeError) as e:  # a dtype this call refuses
                skipped[k] = f"{type(e).__name__}: {e}"
                continue
            med[k] = _per_call(f, repeats)
        out.append({"N": N, "C": C, "dtype": dt, "median_s": med, "skipped": skipped})
    return out


def fmt_tiny(rows: list[dict[str, Any]]) -> str:
    lines = []
    for r in rows:
        m = r["median_s"]
        yard = m["np.exp (the yardstick)"]
        lines.append(f"\n== tiny calls  {r['N']} x {r['C']}  {r['dtype']}  (one Python call each) ==")
        lines.append(f"{'call':<36} {'median us':>10} {'vs np.exp':>10}")
        for k, v in m.items():
            lines.append(f"{k:<36} {v * 1e6:>10.2f} {v / yard:>9.1f}x")
        for k in r.get("skipped", {}):
            lines.append(f"{k:<36} {'refuses ' + r['dtype']:>21}")
    return "\n".join(lines)
