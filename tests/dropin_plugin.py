"""pytest plugin: SciPy's and scikit-learn's own tests, run against ce_fast's
drop-ins.

Before collection it replaces ``scipy.special.logsumexp``, ``softmax``,
``log_softmax``, ``scipy.stats.entropy`` and ``sklearn.metrics.log_loss``
(the public names the peers' test modules import) by ``ce_fast.scipy`` /
``ce_fast.sklearn``'s, and registers each replacement in
``scipy._lib._array_api.xp_capabilities_table`` under its original's entry
(SciPy's ``make_xp_test_case`` looks the function it is given up there).
SciPy's private modules keep the originals: the drop-ins delegate to them
for the inputs their kernels do not take, and the rest of SciPy is
untouched. Of scikit-learn's ``test_classification.py`` only the tests
named ``*log_loss*`` are kept.

Run it in a pytest process of its own (tests/test_dropin_peers.py does)::

    python -m pytest -p tests.dropin_plugin --pyargs scipy.special.tests.test_logsumexp \\
        scipy.stats.tests.test_entropy sklearn.metrics.tests.test_classification
"""

from __future__ import annotations

import importlib
from typing import Any

import pytest

# (public module, name, ce_fast module)
SCIPY_TARGETS = [
    ("scipy.special", "logsumexp"),
    ("scipy.special", "softmax"),
    ("scipy.special", "log_softmax"),
    ("scipy.stats", "entropy"),
]
SKLEARN_TARGETS = [("sklearn.metrics", "log_loss")]
_installed: list[str] = []


def install() -> list[str]:
    """Replace the peers' public functions by the drop-ins (idempotent);
    returns the names replaced."""
    if _installed:
        return _installed
    try:
        from scipy._lib._array_api import xp_capabilities_table

        import ce_fast.scipy as cfs
    except ImportError:
        pass
    else:
        for module, name in SCIPY_TARGETS:
            mod = importlib.import_module(module)
            orig, new = getattr(mod, name), getattr(cfs, name)
            xp_capabilities_table[new] = xp_capabilities_table[orig]
            setattr(mod, name, new)
            _installed.append(f"{module}.{name}")
    try:
        import sklearn.metrics  # noqa: F401

        import ce_fast.sklearn as cfk
    except ImportError:
        pass
    else:
        for module, name in SKLEARN_TARGETS:
            setattr(importlib.import_module(module), name, getattr(cfk, name))
            _installed.append(f"{module}.{name}")
    return _installed


def pytest_configure(config: Any) -> None:
    install()


def pytest_report_header(config: Any) -> str:
    return "ce_fast drop-ins installed for: " + ", ".join(_installed)


def pytest_collection_modifyitems(config: Any, items: list[Any]) -> None:
    keep, drop = [], []
    for item in items:
        path = str(getattr(item, "path", "")).replace("\\", "/")
        sklearn_cls = path.endswith("sklearn/metrics/tests/test_classification.py")
        (drop if sklearn_cls and "log_loss" not in item.name else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Which path each drop-in took in these tests (a line per function and
    path: ``ce_fast-dropin-calls <function> <path> <count>``)."""
    counts: dict[tuple[str, str], int] = {}
    for front in ("scipy", "sklearn"):
        try:
            counts.update(importlib.import_module("ce_fast." + front).path_counts())
        except ImportError:
            pass
    for (name, path), n in sorted(counts.items()):
        terminalreporter.write_line(f"ce_fast-dropin-calls {name} {path} {n}")


@pytest.fixture(autouse=True)
def _drop_ins_in_place() -> None:
    """Every test runs with the replacements in place (a test or fixture that
    restored an original would otherwise test SciPy against itself)."""
    for module, name in SCIPY_TARGETS + SKLEARN_TARGETS:
        if f"{module}.{name}" in _installed:
            dropin = importlib.import_module("ce_fast." + module.split(".")[0])
            assert getattr(importlib.import_module(module), name) is getattr(dropin, name)
