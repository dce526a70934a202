"""Build and runtime configuration: which compiler, OpenMP runtime and SIMD
level this installation uses."""

from __future__ import annotations

import os
import sys
from typing import Any

import numpy as np

from . import _core
from ._version import __version__

_ISA_ENV = "CE_FAST_ISA"


def _apply_isa_override() -> None:
    """Honour CE_FAST_ISA=baseline|avx2|avx512 at import."""
    want = os.environ.get(_ISA_ENV, "").strip().lower()
    if not want or want == "auto":
        return
    if not _core.set_isa(want):
        import warnings

        warnings.warn(
            f"{_ISA_ENV}={want!r} is unknown or not supported by this CPU/build "
            f"(supported: {', '.join(_core.build_facts()['isa_supported'])}); "
            f"using {_core.isa()}",
            RuntimeWarning,
            stacklevel=3,
        )


def _openmp_runtime() -> str | None:
    """The OpenMP library this extension is linked against, if threadpoolctl
    can see it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    pools = [p for p in threadpool_info() if p.get("user_api") == "openmp"]
    # A repaired wheel vendors its runtime next to the package (ce_fast.libs/,
    # a distinct soname): prefer that one over others loaded in the process
    # (e.g. PyTorch's). Otherwise the runtime is shared by soname: the first.
    vendored = os.path.join(
        os.path.dirname(os.path.dirname(os.path.realpath(_core.__file__))), "ce_fast.libs"
    )
    pools.sort(key=lambda p: not os.path.realpath(str(p.get("filepath"))).startswith(vendored + os.sep))
    for pool in pools:
        return f"{pool.get('internal_api')} ({pool.get('filepath')})"
    return None


def build_info() -> dict[str, Any]:
    """Version, compiler, OpenMP and SIMD facts of this build, as a dict.

    Threads. ``default_threads`` is what ``num_threads=None`` uses: the
    OpenMP default, which follows ``OMP_NUM_THREADS`` and threadpoolctl. A
    call uses at most its ``num_threads``, the OpenMP thread limit
    (``OMP_THREAD_LIMIT``), one thread per block of work (about 64k
    elements; one thread below 32768 elements), and
    ``max(default_threads, processors)``: a larger request is clamped, never
    an error, since threads beyond the processors would only take turns.
    Results are bitwise identical for every thread count.

    Fork. A child forked from a multi-threaded process (``multiprocessing``
    fork pools, PyTorch DataLoader workers) runs the ce_fast calls of its
    first thread -- the one that forked -- on that thread alone, with the
    same results: GNU libgomp's thread pool does not survive ``fork()`` (a
    child would wait forever on its parent's workers), and no runtime is
    trusted to (LLVM's libomp in libgomp's place still hung now and then).
    Threads the child starts, ``spawn`` children, and children forked from a
    single-threaded process (a ``forkserver`` server without BLAS threads)
    use threads as usual. The check costs one thread-local read per call
    large enough for threads.

    Examples
    --------
    >>> import ce_fast
    >>> info = ce_fast.build_info()
    >>> sorted(info)[:3]
    ['compiler', 'default_threads', 'isa']
    >>> info["version"] == ce_fast.__version__
    True
    """
    facts = _core.build_facts()
    omp = facts["openmp"]
    return {
        "version": __version__,
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "compiler": facts["compiler"],
        "openmp": bool(omp),
        "openmp_version": omp or None,
        "openmp_runtime": _openmp_runtime() if omp else None,
        "default_threads": facts["default_threads"],
        "isa": facts["isa"],
        "isa_compiled": facts["isa_compiled"],
        "isa_supported": facts["isa_supported"],
        "isa_override": os.environ.get(_ISA_ENV) or None,
    }


def show_config() -> None:
    """Print :func:`build_info` in a readable form.

    Examples
    --------
    >>> import ce_fast
    >>> ce_fast.show_config()  # doctest: +ELLIPSIS
    ce_fast ...
    """
    info = build_info()
    print(f"ce_fast {info['version']}")
    omp = (
        f"yes (OpenMP {info['openmp_version']}, runtime {info['openmp_runtime'] or 'unknown'})"
        if info["openmp"]
        else "no: built without OpenMP, every call runs on one thread"
    )
    fork = "one, on the thread that forked a multi-threaded process" if info["openmp"] else "n/a"
    rows = [
        ("python", info["python"]),
        ("numpy", info["numpy"]),
        ("compiler", info["compiler"]),
        ("openmp", omp),
        ("default threads", info["default_threads"]),
        ("threads after fork()", fork),
        ("simd level in use", info["isa"]),
        ("simd levels compiled", ", ".join(info["isa_compiled"])),
        ("simd levels this CPU runs", ", ".join(info["isa_supported"])),
        (f"{_ISA_ENV}", info["isa_override"] or "(not set)"),
    ]
    for k, v in rows:
        print(f"  {k:<26} {v}")
