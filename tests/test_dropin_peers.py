"""SciPy's and scikit-learn's own tests, run against ce_fast's drop-ins.

The tests ship inside the installed wheels (scipy/special/tests/
test_logsumexp.py, scipy/stats/tests/test_entropy.py, and the log_loss tests
of sklearn/metrics/tests/test_classification.py). They run in a pytest
process of their own with tests/dropin_plugin.py, which swaps the drop-ins
in before collection, so that the rest of this suite still compares
against the originals. Every one of them must pass, and each drop-in must
have run on ce_fast's kernels in them (not only handed its calls to the
original)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = {
    "scipy": ["scipy.special.tests.test_logsumexp", "scipy.stats.tests.test_entropy"],
    "sklearn": ["sklearn.metrics.tests.test_classification"],
}
# the drop-ins each peer's tests must have exercised on the kernels
KERNEL_CALLS = {
    "scipy": ["logsumexp", "softmax", "log_softmax", "entropy"],
    "sklearn": ["log_loss"],
}


def _available(peer: str) -> bool:
    try:
        __import__(peer)
        return all(__import__("importlib").util.find_spec(m) for m in MODULES[peer])
    except ImportError:
        return False


@pytest.mark.parametrize("peer", ["scipy", "sklearn"])
def test_peer_suite_passes_against_the_drop_ins(peer):
    if not _available(peer):
        pytest.skip(f"{peer} (with its tests) is not installed")
    if peer == "sklearn":
        pytest.importorskip("scipy")  # scikit-learn's tests import it
    cmd = [
        sys.executable, "-m", "pytest", "-p", "tests.dropin_plugin", "-p", "no:cacheprovider",
        "-q", "-W", "ignore::pytest.PytestUnknownMarkWarning", "--pyargs", *MODULES[peer],
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    summary = re.search(r"(\d+) passed", out)
    assert summary and int(summary.group(1)) > 0, out[-3000:]
    assert not re.search(r"\d+ (failed|error)", out), out[-6000:]
    calls = {
        (m.group(1), m.group(2)): int(m.group(3))
        for m in re.finditer(r"ce_fast-dropin-calls (\w+) (\w+) (\d+)", out)
    }
    for name in KERNEL_CALLS[peer]:
        assert calls.get((name, "kernel"), 0) > 0, (name, calls)
