"""Timing for the benchmark: callables run round-robin, so that all of them
see the same machine state, with the wall time and the CPU time of each."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# A sample of a fast call loops it until the sample lasts about this long, so
# that the timer's resolution and one-off hiccups do not decide the median.
_SAMPLE_S = 0.005
_MAX_LOOP = 64


@dataclass
class Timing:
    samples: list[float] = field(default_factory=list)  # seconds per call
    wall_s: float = 0.0
    cpu_s: float = 0.0

    @property
    def median_s(self) -> float:
        return float(np.median(self.samples))

    @property
    def cores(self) -> float:
        """Cores kept busy: the process's CPU time over the wall time while
        this callable ran (so a run on one thread reads about 1.0)."""
        return self.cpu_s / self.wall_s if self.wall_s > 0 else float("nan")


def _timed(f: Callable[[], Any], loops: int, t: Timing) -> float:
    c0, t0 = time.process_time(), time.perf_counter()
    for _ in range(loops):
        f()
    t1, c1 = time.perf_counter(), time.process_time()
    t.wall_s += t1 - t0
    t.cpu_s += c1 - c0
    return (t1 - t0) / loops


def round_robin(
    fns: dict[str, Callable[[], Any]], repeats: int, budget: float, pause: float = 0.0
) -> dict[str, Timing]:
    """``repeats`` samples of each callable, taken in turn.

    The first call of each (first touch, caches, thread start-up) is not
    counted, except for a callable slower than ``budget`` seconds, which is
    timed by that call alone; a callable stops early once its samples add
    up to 3 x ``budget``. ``pause`` seconds of sleep before each sample let
    the spinning worker threads of the previous callable's pool go to sleep
    (peers bring OpenMP runtimes of their own)."""
    out = {k: Timing() for k in fns}
    loops = {}
    for k, f in fns.items():
        first = _timed(f, 1, out[k])
        if first > budget:
            out[k].samples.append(first)
            loops[k] = 0
        else:
            out[k] = Timing()
            loops[k] = max(1, min(_MAX_LOOP, int(_SAMPLE_S / max(first, 1e-9))))
    for _ in range(repeats):
        for k, f in fns.items():
            t = out[k]
            if loops[k] == 0 or sum(t.samples) > 3 * budget:
                continue
            if pause:
                time.sleep(pause)
            t.samples.append(_timed(f, loops[k], t))
    return out


def paired_ratio(a: Timing, b: Timing) -> float:
    """Median over the rounds of a's time over b's (both sampled in the
    same rounds); the ratio of the medians when their samples do not pair."""
    if len(a.samples) == len(b.samples) and a.samples:
        return float(np.median(np.divide(a.samples, b.samples)))
    return a.median_s / b.median_s
