"""Plot benchmark results (optional: needs matplotlib): per shape and dtype,
bars of the time per call of ce_fast and each peer at every thread count,
with the copy and exp floors of that row drawn as lines across its bars."""

from __future__ import annotations

from typing import Any

from ce_fast import _peers

_FLOORS = {"copy": ("copy", "--"), "exp": ("ce_fast exp floor", ":"), "np.exp": ("np.exp(x, out=)", "-.")}


def _bars(e: dict[str, Any], names: list[str]) -> list[tuple[str, float | None]]:
    """(label, seconds per call) of ce_fast and each peer in one row."""
    out: list[tuple[str, float | None]] = [("ce_fast", e["median_s"].get("grad out="))]
    for n in names:
        out.append((_peers.label(n), e["peers"].get(n, {}).get("median_s")))
    return out


def plot_results(results: list[dict[str, Any]], peers: dict[str, str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(peers)
    groups: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for e in results:
        groups.setdefault((e["N"], e["C"], e["dtype"]), []).append(e)
    ncol = min(4, len(groups))
    nrow = -(-len(groups) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.2 * ncol, 3.6 * nrow), squeeze=False)
    nbar = 1 + len(names)
    width = 0.8 / nbar
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, ((N, C, dt), rows) in zip(axes.flat, groups.items()):
        for g, e in enumerate(rows):
            for b, (lab, t) in enumerate(_bars(e, names)):
                if t is not None:
                    x = g - 0.4 + (b + 0.5) * width
                    ax.bar(x, t * 1e3, width, color=colors[b % len(colors)], label=lab if g == 0 else None)
            for key, (lab, style) in _FLOORS.items():
                t = e["median_s"].get(key)
                if t:
                    lab_g = lab if g == 0 else None
                    ax.hlines(t * 1e3, g - 0.45, g + 0.45, colors="k", linestyles=style, label=lab_g)
        ax.set_xticks(range(len(rows)), [f"{e['threads']} thr" for e in rows])
        ax.set_yscale("log")
        if ax in axes[:, 0]:
            ax.set_ylabel("ms per call (loss + gradient)")
        ax.set_title(f"{N} x {C} {dt}", fontsize=10)
    for ax in list(axes.flat)[len(groups) :]:
        ax.set_visible(False)
    legend: dict[str, Any] = {}  # every label once, whichever panel has it
    for ax in axes.flat:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    handles, labels = list(legend.values()), list(legend)
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 7), fontsize=8)
    fig.suptitle(
        "cross-entropy loss + gradient: time per call (lower is better), with the copy and exp floors"
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)
