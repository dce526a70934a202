"""Peak extra memory of one call, as the growth of the process's resident
set (Linux with glibc; None elsewhere).

tracemalloc would see NumPy's buffers only: PyTorch's, XLA's and the C
kernels' own allocations bypass it. The resident set sees them all once
malloc has handed its free pages back (``malloc_trim``): a block the call
reuses must then be faulted in again and counts like a fresh one."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any


def _libc_trim() -> Callable[[], Any] | None:
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    return lambda: trim(0)


_trim = _libc_trim()


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM (the peak) to the current resident set
        return True
    except OSError:
        return False


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"no {field} in /proc/self/status")


def peak_extra_bytes(fn: Callable[[], Any], repeats: int = 5) -> int | None:
    """The peak resident set during a call minus the resident set before
    it (what the call returns included): the largest over ``repeats``
    calls, since what escapes the trim can only hide growth, never add it."""
    if _trim is None:
        return None
    vals = []
    for _ in range(repeats):
        _trim()
        if not _reset_peak():
            return None
        before = _status_kib("VmRSS")
        result = fn()
        vals.append(max(_status_kib("VmHWM") - before, 0) * 1024)
        del result
    return max(vals)
