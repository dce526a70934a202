"""The benchmark's text output: the summary first, then the full tables."""

from __future__ import annotations

import math
from typing import Any

from ce_fast import _peers

# Looser than any honest kernel's rounding, far tighter than a wrong formula
# (a sum for a mean, a missing 1/N): relative errors against ce_fast's
# float64 result on the same logits.
_CHECK_TOL = {2: 3e-2, 4: 1e-4, 8: 1e-9}


def _x(r: float) -> str:
    return f"{r:.1f}x" if r >= 9.95 else f"{r:.2f}x"


def _ms(t: float) -> str:
    return f"{t * 1e3:.3g} ms" if t < 1 else f"{t:.3g} s"


def check_failed(peer: dict[str, Any], itemsize: int) -> bool:
    c = peer.get("check")
    if not c:
        return False
    tol = _CHECK_TOL.get(itemsize, 3e-2)
    errs = (c["loss_rel_err"], c["grad_rel_err"])
    return not all(math.isfinite(e) and e <= tol for e in errs)


def _peer_cell(p: dict[str, Any], itemsize: int) -> str:
    """The summary's cell of a peer: how long it takes, (its cores)."""
    if not p:
        return ""
    if "error" in p:
        return "failed (below)"
    if "skipped" in p:
        return str(p["skipped"])
    cores = f" ({p['cores']:.1f})"
    mark = "!" if check_failed(p, itemsize) else ""
    if "ratio" not in p:  # ce_fast refused the dtype: the peer's own time
        return _ms(p["median_s"]) + cores + mark
    return f"{_x(p['ratio'])} as long{cores}{mark}"


def fmt_summary(results: list[dict[str, Any]], peers: dict[str, str]) -> str:
    names = list(peers)
    head = [
        "== Summary: mean cross-entropy and its gradient w.r.t. the logits, time per call ==",
        "ce_fast: cross_entropy_and_grad(x, y, out=buf, num_threads=threads), median; cores: its CPU time",
        "over wall time; /exp: its time over its own exp floor (the table below has NumPy's np.exp too).",
    ]
    if names:
        head += [
            "\"PyTorch takes 7.2x as long (1.0)\": the peer's time over ce_fast's, the median of runs in",
            "turns in one process pinned to `threads` CPUs (below 1x the peer is faster), and (the cores the",
            "peer kept busy). Each peer as its users write it:",
        ]
        head += [f"  {_peers.label(n)} {peers[n]}: {_peers.describe(n)}" for n in names]
    cols = ["shape", "dtype", "threads", "ce_fast", "cores", "/exp"]
    cols += [f"{_peers.label(n)} takes" for n in names]
    rows = [cols]
    notes = []
    for e in results:
        m = e["median_s"]
        row = [f"{e['N']}x{e['C']}", e["dtype"], str(e["threads"])]
        if "grad out=" in m:
            t = m["grad out="]
            row += [_ms(t), f"{e['cores']['grad out=']:.1f}", _x(t / m["exp"])]
        else:
            row += ["unsupported", "", ""]
            note = f"{e['dtype']}: the installed ce_fast refuses it ({e['ce_fast_skipped']})"
            if note not in notes:
                notes.append(note)
        itemsize = e["bytes"] // (e["N"] * e["C"]) if e["N"] * e["C"] else 4
        for n in names:
            p = e["peers"].get(n, {})
            cpus = p.get("cpus")
            if cpus is not None and len(cpus) < e["threads"]:
                note = f"threads={e['threads']}: the peers ran on the {len(cpus)} CPU(s) this process may use"
                if note not in notes:
                    notes.append(note)
            row.append(_peer_cell(p, itemsize))
            shape = f"{e['N']}x{e['C']} {e['dtype']}, {e['threads']} thread(s)"
            if "error" in p:
                notes.append(f"{_peers.label(n)} at {shape}: {p['error']}")
            elif check_failed(p, itemsize):
                c = p["check"]
                notes.append(
                    f"! {_peers.label(n)} at {shape} does not compute the same thing: loss rel. error "
                    f"{c['loss_rel_err']:.2g}, gradient {c['grad_rel_err']:.2g} (vs ce_fast in float64)"
                )
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = head + [""]
    for i, r in enumerate(rows):
        cells = [c.ljust(w) if j < 3 else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
        if i == 0:
            lines.append("-" * len(lines[-1]))
    return "\n".join(lines + notes)


_ITEMSIZE = {"float64": 8, "float32": 4, "float16": 2, "bfloat16": 2}


def _table_lines(e: dict[str, Any]) -> list[str]:
    m = e["median_s"]
    nbytes = e["bytes"]
    n = e["N"] * e["C"]
    csize = 4 if e["compute_dtype"] == "float32" else 8
    gsize = _ITEMSIZE.get(e.get("grad_dtype") or "", csize)
    grad_moved = nbytes + n * gsize
    ceilings = {
        "loss": ("read", nbytes),
        "grad out=": ("copy", grad_moved),
        "grad in place": ("copy", grad_moved),
        "grad fresh": ("alloc+copy", grad_moved),
    }
    moved = {"read": nbytes, "np.exp": 2 * nbytes, "exp": 2 * n * csize, "numpy reference": grad_moved}
    moved.update({k: v[1] for k, v in ceilings.items()})
    moved["copy"] = moved["alloc+copy"] = grad_moved if e["compute_dtype"] else 2 * nbytes
    cores = e.get("cores", {})
    peak = e.get("peak_extra_bytes", {})
    lines = []
    for name, t in m.items():
        if t <= 0:  # "grad in place" is a difference of two medians: noise can zero it
            lines.append(f"{e['threads']:>7} {name:<24} {'(noise)':>10}")
            continue
        ceil = ceilings.get(name)
        vs = f"{t / m[ceil[0]]:.2f}x {ceil[0]}" if ceil else ""
        floor = f"{t / m['exp']:.2f}x" if ceil and m.get("exp") else ""
        c = f"{cores[name]:.2f}" if name in cores else ""
        mb = f"{peak[name] / 1e6:.1f}" if peak.get(name) is not None and name in peak else ""
        cells = f"{t * 1e3:>10.3f} {moved.get(name, 0) / t / 1e9:>7.1f} {vs:>18} {floor:>7} {c:>6} {mb:>8}"
        lines.append(f"{e['threads']:>7} {name:<24} {cells}".rstrip())
    for pname, p in e["peers"].items():
        label = f"{_peers.label(pname)}"
        if "median_s" not in p:
            why = p.get("skipped") or p.get("error") or "not run"
            lines.append(f"{e['threads']:>7} {label:<24} {why}")
            continue
        t = p["median_s"]
        floor = f"{t / m['exp']:.2f}x" if m.get("exp") else ""
        mb = f"{p['peak_extra_bytes'] / 1e6:.1f}" if p.get("peak_extra_bytes") is not None else ""
        beside = ""
        if "ratio" in p:
            beside = f"  {_x(p['ratio'])} as long as ce_fast beside it ({_ms(p['ce_fast_median_s'])})"
        if check_failed(p, nbytes // n if n else 4):
            beside += "  DIFFERENT RESULT"
        cells = (
            f"{t * 1e3:>10.3f} {2 * nbytes / t / 1e9:>7.1f} {'':>18} {floor:>7} {p['cores']:>6.2f} {mb:>8}"
        )
        lines.append(f"{e['threads']:>7} {label:<24} {cells}{beside}")
    return lines


def fmt_table(results: list[dict[str, Any]]) -> str:
    lines = []
    groups: dict[tuple[int, int, str], list[dict[str, Any]]] = {}
    for e in results:
        groups.setdefault((e["N"], e["C"], e["dtype"]), []).append(e)
    for (N, C, dt), rows in groups.items():
        first = rows[0]
        how = ""
        if first["compute_dtype"] is None:
            how = "; ce_fast refuses it"
        elif first["compute_dtype"] != dt:
            cdt = first["compute_dtype"]
            how = f"; ce_fast computes in {cdt} and returns a {first.get('grad_dtype') or cdt} gradient"
        lines.append(f"\n== cross_entropy_and_grad  {N} x {C}  {dt}  ({first['bytes'] / 1e6:.1f} MB{how}) ==")
        lines.append(
            f"{'threads':>7} {'variant':<24} {'median ms':>10} {'GB/s':>7} {'vs ceiling':>18} {'vs exp':>7}"
            f" {'cores':>6} {'peak MB':>8}"
        )
        for e in rows:
            lines += _table_lines(e)
    lines.append(
        "\nGB/s: bytes read + written per second. vs exp: over ce_fast's exp floor of the row. cores: CPU"
        "\ntime over wall time. peak MB: resident-set growth during one call (a lower bound for a peer with"
        "\na buffer pool of its own). Peers: their own time in their pinned process."
    )
    return "\n".join(lines)
