"""Plot benchmark results (optional: needs matplotlib)."""

from __future__ import annotations

from typing import Any


def plot_results(results: list[dict[str, Any]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    series: dict[tuple[int, int, str], list[tuple[int, float]]] = {}
    for e in results:
        t = e["median_s"]["grad out="]
        series.setdefault((e["N"], e["C"], e["dtype"]), []).append((e["threads"], 2 * e["bytes"] / t / 1e9))
    for (N, C, dt), pts in series.items():
        pts.sort()
        axes[0].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{N}x{C} {dt}")
    axes[0].set_xlabel("threads")
    axes[0].set_ylabel("GB/s moved (read + write)")
    axes[0].set_title("cross_entropy_and_grad(out=) throughput vs threads")
    axes[0].legend(fontsize=8)
    by_c: dict[tuple[str, int], list[tuple[int, float]]] = {}
    for e in results:
        t = e["median_s"]["grad out="]
        by_c.setdefault((e["dtype"], e["threads"]), []).append((e["C"], 2 * e["bytes"] / t / 1e9))
    for (dt, nt), pts in by_c.items():
        pts.sort()
        axes[1].plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=f"{dt}, {nt} thr")
    axes[1].set_xscale("log")
    axes[1].set_xlabel("C (classes)")
    axes[1].set_ylabel("GB/s moved")
    axes[1].set_title("throughput vs C")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
