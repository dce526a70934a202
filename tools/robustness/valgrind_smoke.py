"""A small, valgrind-friendly workout of every public function: the fuzz
oracle over a fixed set of seeds (all layouts, dtypes, options, error paths)
plus a few inputs large enough for the SIMD main loops, tails and the
multi-threaded paths. Used by asan_build_and_test.sh (valgrind memcheck) and
runnable on its own:  python tools/robustness/valgrind_smoke.py [N_CASES]"""

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import ce_fast  # noqa: E402
from tests.robustness import _oracle  # noqa: E402

n = int(sys.argv[1]) if len(sys.argv) > 1 else 300
bad = 0
for seed in range(n):
    case = _oracle.make_case(_oracle.RandomChooser(seed))
    try:
        _oracle.check_case(case)
    except _oracle.Mismatch as exc:  # reported, not fatal: valgrind looks for memory errors
        bad += 1
        print("oracle mismatch:", str(exc)[-200:])

rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    for shape in ((67, 1031), (3, 70001), (1000, 3)):
        x = rng.standard_normal(shape).astype(dt)
        y = rng.integers(0, shape[1], shape[0])
        for nt in (1, 2):
            ce_fast.cross_entropy_and_grad(x, y, num_threads=nt, label_smoothing=0.1, z_loss=1e-4)
            ce_fast.cross_entropy_and_grad(x, ce_fast.softmax(x), num_threads=nt, reduction="none")
            ce_fast.binary_cross_entropy_with_logits_and_grad(x, (x > 0).astype(dt), num_threads=nt)
            ce_fast.binary_cross_entropy(ce_fast.softmax(x), (x > 0), num_threads=nt)
            ce_fast.logsumexp(x, num_threads=nt)
            ce_fast.log_softmax(x, axis=0, num_threads=nt)
            ce_fast.softmax_entropy(x, num_threads=nt)
            ce_fast.entropy(ce_fast.softmax(x), num_threads=nt)
        x2 = x.copy()
        ce_fast.cross_entropy_grad(x2, y, out=x2)
print(f"valgrind_smoke: {n} oracle cases ({bad} mismatches) + large inputs done")
