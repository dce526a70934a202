"""The release wheel installs and runs where no compiler is.

``tools/build_wheel.sh`` builds the sdist and the wheel (isolated build, the
wheel from the sdist) and repairs the wheel with auditwheel (libgomp
vendored). The repaired wheel is then installed into a fresh venv whose PATH
holds no C compiler (and ``CC=/nonexistent``), with binary-only installs, and
the default test suite runs against it from a directory outside the
repository. Slow (a few minutes, and it needs PyPI): ``pytest --run-slow
tests/test_wheel.py``."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "tools" / "build_wheel.sh"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="auditwheel is Linux-only"),
    pytest.mark.skipif(not SCRIPT.exists(), reason="needs the source tree (tools/build_wheel.sh)"),
]


def _run(cmd, timeout, **kw):
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert proc.returncode == 0, (
        f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-8000:]}\n{proc.stderr[-8000:]}"
    )
    return proc.stdout


def _source_version() -> str:
    text = (ROOT / "ce_fast" / "_version.py").read_text()
    m = re.search(r'^__version__\s*=\s*"([^"]+)"', text, re.M)
    assert m
    return m.group(1)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("release")
    log = _run(["bash", str(SCRIPT), str(out)], timeout=1800)
    wheels = sorted((out / "wheelhouse").glob("*.whl"))
    sdists = sorted((out / "dist").glob("*.tar.gz"))
    assert len(wheels) == 1 and len(sdists) == 1, log
    return wheels[0], sdists[0], log


def test_wheel_is_manylinux_with_vendored_openmp(built):
    wheel, _, log = built
    assert re.search(r"-manylinux_\d+_\d+_(x86_64|aarch64)\.whl$", wheel.name), wheel.name
    names = zipfile.ZipFile(wheel).namelist()
    assert any(re.match(r"ce_fast\.libs/libgomp-[0-9a-f]+\.so", n) for n in names), names
    assert "ce_fast/py.typed" in names
    assert "ce_fast/_core.pyi" in names
    assert any(re.match(r"ce_fast/_core\..*\.so$", n) for n in names)
    assert "is consistent with" in log  # auditwheel show ran


def test_metadata(built):
    wheel, sdist, _ = built
    version = _source_version()
    assert wheel.name.startswith(f"ce_fast-{version}-")
    with zipfile.ZipFile(wheel) as z:
        meta_name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        meta = z.read(meta_name).decode()
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in z.namelist())
    assert f"\nVersion: {version}\n" in meta
    assert "License-Expression: BSD-3-Clause" in meta
    assert "Requires-Python: >=3.10" in meta
    for extra in ("test", "bench", "plot"):
        assert f"Provides-Extra: {extra}" in meta
    with tarfile.open(sdist) as t:
        members = {m.split("/", 1)[1] for m in t.getnames() if "/" in m}
    for need in ("LICENSE", "CMakeLists.txt", "pyproject.toml", "src/_core.pyx", "ce_fast/py.typed"):
        assert need in members, need


def test_installs_and_passes_without_a_compiler(built, tmp_path):
    wheel, _, _ = built
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    vbin = venv / "bin"
    vpy = vbin / "python"

    # PATH: the venv's bin and a directory with the few tools the suite uses;
    # no cc/gcc/clang anywhere on it, and CC/CXX point nowhere.
    tools = tmp_path / "tools"
    tools.mkdir()
    for tool in ("ldd", "uname"):
        found = shutil.which(tool)
        if found:
            (tools / tool).symlink_to(found)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{vbin}{os.pathsep}{tools}", CC="/nonexistent", CXX="/nonexistent")
    env.pop("OMP_NUM_THREADS", None)
    for cc in ("cc", "gcc", "clang", "c99"):
        assert shutil.which(cc, path=env["PATH"]) is None

    deps = ["pytest>=7", "hypothesis>=6", "scipy>=1.10", "threadpoolctl>=3"]
    _run(
        [str(vpy), "-m", "pip", "install", "--only-binary", ":all:", str(wheel), *deps],
        timeout=900,
        env=env,
    )

    # Run the suite from outside the repository: only the installed wheel is
    # importable as ce_fast.
    run = tmp_path / "run"
    shutil.copytree(ROOT / "tests", run / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (run / "pytest.ini").write_text(
        "[pytest]\naddopts = --import-mode=importlib -ra -p no:cacheprovider\n"
        "testpaths = tests\nmarkers =\n    slow: long-running tests\n"
    )
    where = _run(
        [
            str(vpy),
            "-c",
            "import ce_fast, os; print(os.path.dirname(ce_fast.__file__)); "
            "print(ce_fast.build_info()['openmp_runtime'])",
        ],
        timeout=120,
        env=env,
        cwd=run,
    ).split("\n")
    assert where[0].startswith(str(venv)), where
    assert "ce_fast.libs" in where[1], where  # the vendored libgomp is the one in use

    proc = subprocess.run(
        [str(vpy), "-m", "pytest", "-q", "tests"],
        capture_output=True,
        text=True,
        timeout=1800,
        env=env,
        cwd=run,
    )
    tail = proc.stdout[-3000:]
    print(tail)
    assert proc.returncode == 0, tail + proc.stderr[-3000:]
    assert re.search(r"\d+ passed", tail)
