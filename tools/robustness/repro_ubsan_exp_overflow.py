"""UBSan reproducer (run under the sanitized build, see asan_build_and_test.sh):
src/ce_vecmath.h:49 ce_exp_nonpos_f32: signed integer overflow in
(ti - im + 64) * (1 << 23) when a float32 row holds +inf (the exp argument is
then not <= 0). The result is still NaN on x86 (wrapping), but it is UB."""
import numpy as np, ce_fast
x = np.zeros((2, 5), np.float32)
x[0, 1] = np.inf          # a row holding +inf (or NaN) -> exp argument is not <= 0
y = np.array([0, 1])
with np.errstate(all="ignore"):
    print(ce_fast.cross_entropy(x, y, reduction="none", label_smoothing=0.25))
