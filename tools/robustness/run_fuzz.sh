#!/usr/bin/env bash
# Coverage-guided fuzzing of the ce_fast public API for SECONDS (default 600).
#   tools/robustness/run_fuzz.sh 600
# Corpus: tools/robustness/corpus/ (kept between runs); crash-*/timeout-*
# reproducers and oracle mismatches land in tools/robustness/findings/.
# Replay one input:  python tools/robustness/fuzz_atheris.py findings/crash-...
set -euo pipefail
SECONDS_BUDGET="${1:-600}"
HERE="$(cd "$(dirname "$0")" && pwd)"
mkdir -p "$HERE/corpus" "$HERE/findings"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export FUZZ_FINDINGS="$HERE/findings"
cd "$HERE/findings"
exec python "$HERE/fuzz_atheris.py" "$HERE/corpus" \
    -max_total_time="$SECONDS_BUDGET" -timeout=60 -rss_limit_mb=6144 \
    -max_len=512 -print_final_stats=1 -artifact_prefix="$HERE/findings/"
