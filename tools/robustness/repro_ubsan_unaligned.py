"""UBSan reproducer: unaligned C-contiguous float64 logits reach the softmax-family
and categorical kernels (misaligned double loads, rowscan_impl.h:27,
categorical_tile_impl.h:66).  python repro_ubsan_unaligned.py softmax|lse|ce|ce_opt"""
import numpy as np, ce_fast
buf = np.zeros(8 * 6 + 1, np.uint8)[1:]
x = buf.view(np.float64).reshape(2, 3)
x[...] = [[1.0, 2.0, 3.0], [0.0, -1.0, 0.5]]
assert not x.flags.aligned and x.flags.c_contiguous
import sys
which = sys.argv[1]
if which == "softmax": print(ce_fast.softmax(x))
if which == "ce": print(ce_fast.cross_entropy(x, np.array([0, 2])))
if which == "ce_opt": print(ce_fast.cross_entropy(x, np.array([0, 2]), label_smoothing=0.1))
if which == "lse": print(ce_fast.logsumexp(x))
if which == "bce": print(ce_fast.binary_cross_entropy_with_logits(x, np.ones((2, 3))))
if which == "prob_target":
    print(ce_fast.cross_entropy(np.ones((2, 3)), x / 10))
