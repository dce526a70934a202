"""The Examples sections of the installed package's docstrings, run as
doctests (``doctest.testmod`` on each public module: simpler and more robust
than ``--doctest-modules`` with ``--import-mode=importlib``), and a check that
every public function has one."""

from __future__ import annotations

import doctest
import importlib
import inspect

import numpy as np
import pytest

import ce_fast
import ce_fast.reference

MODULES = [
    "ce_fast",
    "ce_fast._categorical",
    "ce_fast._binary",
    "ce_fast._softmax",
    "ce_fast._linear",
    "ce_fast._divergence",
    "ce_fast._config",
    "ce_fast.reference",
    "ce_fast.scipy",
    "ce_fast.sklearn",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name, monkeypatch):
    monkeypatch.delenv("CE_FAST_ISA", raising=False)
    if name == "ce_fast.sklearn":
        pytest.importorskip("sklearn")
    mod = importlib.import_module(name)
    with np.printoptions(legacy=False):
        res = doctest.testmod(
            mod,
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
            raise_on_error=False,
            report=True,
            verbose=False,
        )
    assert res.failed == 0, f"{res.failed} of {res.attempted} doctest examples failed in {name}"


@pytest.mark.parametrize("module", [ce_fast, ce_fast.reference], ids=["ce_fast", "reference"])
def test_every_public_function_has_examples(module):
    names = [n for n in ce_fast.__all__ if callable(getattr(ce_fast, n))]
    missing = []
    for n in names:
        f = getattr(module, n, None)
        if f is None:
            continue
        doc = inspect.getdoc(f) or ""
        if "Examples\n--------" not in doc or ">>>" not in doc:
            missing.append(n)
    assert not missing, f"no Examples section in {module.__name__}: {missing}"
