#!/usr/bin/env bash
# Build ce_fast with AddressSanitizer + UndefinedBehaviorSanitizer into a
# separate venv (the main editable install is not touched), run the test
# suite under it, then run a small subset under valgrind memcheck.
#
#   tools/robustness/asan_build_and_test.sh [pytest args...]
#
# Environment: ASAN_VENV (default /tmp/asanvenv), ASAN_BUILD_DIR (default
# build/asan), SKIP_VALGRIND=1, VALGRIND_TESTS (pytest node ids / -k expr).
# The clean venv (no --system-site-packages: the main environment's editable
# import hook would otherwise win over the sanitized build) gets numpy,
# pytest, hypothesis and scipy from the package index. tests/test_wheel.py
# (which builds wheels itself) is skipped.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
VENV="${ASAN_VENV:-/tmp/asanvenv}"
BUILD_DIR="${ASAN_BUILD_DIR:-build/asan}"
WHEELDIR="$(mktemp -d)"
cd "$REPO"

SAN="-fsanitize=address,undefined ${SAN_RECOVER:--fno-sanitize-recover=undefined} -fno-omit-frame-pointer -g"
echo "== building the sanitized wheel in $BUILD_DIR"
python -m pip wheel --no-build-isolation --no-deps -w "$WHEELDIR" \
    -Cbuild-dir="$BUILD_DIR" -Ccmake.build-type=RelWithDebInfo \
    -Ccmake.define.CMAKE_C_FLAGS="$SAN" \
    -Ccmake.define.CMAKE_MODULE_LINKER_FLAGS="-fsanitize=address,undefined" \
    -Ccmake.define.CMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
    . > "$WHEELDIR/build.log" 2>&1 || { tail -50 "$WHEELDIR/build.log"; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV"
    python -m venv "$VENV"
    NUMPY_VERSION="$(python -c 'import numpy; print(numpy.__version__)')"
    "$VENV/bin/pip" install -q "numpy==$NUMPY_VERSION" pytest hypothesis scipy
fi
"$VENV/bin/pip" install -q --force-reinstall --no-deps "$WHEELDIR"/ce_fast-*.whl

LIBASAN="$(gcc -print-file-name=libasan.so)"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1:detect_odr_violation=0"
export UBSAN_OPTIONS="${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}"  # SAN_RECOVER=-fsanitize-recover=undefined + halt_on_error=0 lists every report
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
SO="$(cd /tmp && LD_PRELOAD="$LIBASAN" "$VENV/bin/python" -c 'import ce_fast._core as c; print(c.__file__)')"
echo "== sanitized module: $SO"
ldd "$SO" | grep -E "asan|ubsan" || { echo "module is not linked against the sanitizers"; exit 1; }

# `python -m pytest` puts the repo on sys.path (for `from tests.conftest
# import ...`); ce_fast/__init__ extends its __path__, and the check below
# proves the compiled module is the sanitized one.
echo "== pytest under ASan+UBSan"
LD_PRELOAD="$LIBASAN" "$VENV/bin/python" -c \
    "import ce_fast._core as c, sys; assert c.__file__ == '$SO', c.__file__; print('ok', c.__file__)"
LD_PRELOAD="$LIBASAN" "$VENV/bin/python" -m pytest -q -p no:cacheprovider -x \
    "${@:-tests}" --ignore=tests/test_wheel.py 2>&1 | tee /tmp/asan_pytest.log | tail -30
status=${PIPESTATUS[0]}
if grep -qE "ERROR: AddressSanitizer|runtime error:|SUMMARY: UndefinedBehaviorSanitizer" /tmp/asan_pytest.log; then
    echo "!! sanitizer reports found (see /tmp/asan_pytest.log)"; status=1
else
    echo "== no ASan/UBSan reports"
fi

if [ "${SKIP_VALGRIND:-0}" != "1" ]; then
    echo "== valgrind memcheck (subset) on the regular build"
    # the regular (unsanitized) install from the main environment
    PYTHONMALLOC=malloc valgrind --tool=memcheck --error-exitcode=99 \
        --suppressions="$HERE/valgrind-python.supp" --gen-suppressions=no \
        --errors-for-leak-kinds=none --leak-check=no --track-origins=no \
        "$(python -c "import sys; print(sys.executable)")" "$HERE/valgrind_smoke.py" 2>&1 | tee /tmp/valgrind.log | tail -15
    vstatus=${PIPESTATUS[0]}
    grep -E "ERROR SUMMARY" /tmp/valgrind.log || true
    [ "$vstatus" = 0 ] || status=1
fi
rm -rf "$WHEELDIR"
exit "$status"
