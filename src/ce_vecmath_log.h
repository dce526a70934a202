/* ce_vecmath_log.h — branch-free log and log1p for float and double, written
 * (like ce_vecmath.h) so that GCC and Clang vectorise the `#pragma omp simd`
 * loops that call them at whatever ISA the translation unit targets.
 *
 * Method (both types): write u = 2^k * m with m in [sqrt(2)/2, sqrt(2)) by
 * integer arithmetic on the bits (subnormal u is first scaled by 2^24 / 2^54),
 * f = m - 1 (exact, Sterbenz), then
 *   float:  log(1 + f) = f - f^2/2 + f^3 P(f), P of degree 8 (Cephes logf),
 *           no division;
 *   double: log(1 + f) = f - f^2/2 + s (f^2/2 + R(s^2)), s = f / (2 + f),
 *           R of degree 7 in s^2 (fdlibm e_log.c, |error of R| < 2^-58.45);
 * and log u = k ln2_hi + (log(1 + f) + k ln2_lo), ln2_hi short enough that
 * k ln2_hi is exact.
 *
 * log1p(x): u = 1 + x rounded, c = (1 + x) - u recovered exactly by Fast2Sum,
 * and log1p(x) = log(u) + c / u (first-order correction for the rounding of
 * u; it keeps relative accuracy for tiny x, where u == 1 and the result is x).
 *
 * Accuracy, measured against long double references on 10^6 log-uniform
 * points on [1e-30, 1e30], 10^6 on [0.5, 2], 10^6 on [-1, 1] (log1p) and the
 * subnormals, at every ISA level this CPU runs: max error 0.85 ulp for log
 * and log1p, float32 and float64 alike. tests/test_vecmath.py::
 * test_vec_log_accuracy re-checks < 1 ulp at every ISA level this CPU runs,
 * on 4e5 points per run (log1p: also their negatives in (-1, 0) and 2e5 on
 * [-1, 1]).
 *
 * Special values, handled by explicit selects (never by -ffast-math):
 *   log(NaN) = NaN, log(x < 0) = NaN, log(+-0) = -inf, log(+inf) = +inf,
 *   log(subnormal) accurate (gradual underflow is honoured);
 *   log1p(NaN) = NaN, log1p(x < -1) = NaN, log1p(-1) = -inf,
 *   log1p(+inf) = +inf, log1p(+-0) = +0, and log1p(x) = x exactly where
 *   1 + x rounds to 1. */
#ifndef CE_VECMATH_LOG_H
#define CE_VECMATH_LOG_H

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "ce_util.h"

/* ---- float32 ---------------------------------------------------------- */

/* log(u) + c / u for u >= 0 (has_c is a compile-time constant after
 * inlining: 0 for plain log, so the division disappears). */
CE_INLINE float ce_logc_f32(float u, float c, const int has_c) {
    const int sub = u < 1.17549435e-38f; /* subnormal or zero */
    const float us = sub ? u * 16777216.0f : u; /* 2^24 */
    uint32_t ix;
    memcpy(&ix, &us, 4);
    ix += 0x3f800000u - 0x3f3504f3u;
    const int32_t k = (int32_t)(ix >> 23) - 0x7f - (sub ? 24 : 0);
    ix = (ix & 0x007fffffu) + 0x3f3504f3u;
    float m;
    memcpy(&m, &ix, 4);
    const float f = m - 1.0f;
    const float z = f * f;
    float y = 7.0376836292e-2f;
    y = CE_FMA_F32(y, f, -1.1514610310e-1f);
    y = CE_FMA_F32(y, f, 1.1676998740e-1f);
    y = CE_FMA_F32(y, f, -1.2420140846e-1f);
    y = CE_FMA_F32(y, f, 1.4249322787e-1f);
    y = CE_FMA_F32(y, f, -1.6668057665e-1f);
    y = CE_FMA_F32(y, f, 2.0000714765e-1f);
    y = CE_FMA_F32(y, f, -2.4999993993e-1f);
    y = CE_FMA_F32(y, f, 3.3333331174e-1f);
    y = y * f * z;
    const float dk = (float)k;
    y = CE_FMA_F32(dk, -2.12194440e-4f, y); /* k ln2_lo */
    if (has_c) y += c / u;
    y = CE_FMA_F32(-0.5f, z, y);
    float r = f + y;
    r = CE_FMA_F32(dk, 0.693359375f, r); /* k ln2_hi, exact product */
    r = u == INFINITY ? INFINITY : r;
    r = u == 0.0f ? -INFINITY : r;
    r = u < 0.0f ? NAN : r;
    return u != u ? u : r;
}

/* Natural logarithm, float32. */
CE_INLINE float ce_log_f32(float x) { return ce_logc_f32(x, 0.0f, 0); }

/* log(1 + x), float32, accurate for tiny |x|. */
CE_INLINE float ce_log1p_f32(float x) {
    const float u = 1.0f + x;
    /* Fast2Sum: the exact rounding error of 1 + x (bigger operand first) */
    const float c = fabsf(x) <= 1.0f ? x - (u - 1.0f) : 1.0f - (u - x);
    const float r = ce_logc_f32(u, u == INFINITY ? 0.0f : c, 1);
    return x != x ? x : r;
}

/* ---- float64 ---------------------------------------------------------- */

CE_INLINE double ce_logc_f64(double u, double c, const int has_c) {
    const int sub = u < 2.2250738585072014e-308;
    const double us = sub ? u * 18014398509481984.0 : u; /* 2^54 */
    uint64_t ix;
    memcpy(&ix, &us, 8);
    ix += (uint64_t)(0x3ff00000u - 0x3fe6a09eu) << 32;
    /* k as a double without an int64 -> double conversion (none on AVX2):
     * the biased exponent e placed in the mantissa of 2^52 */
    const uint64_t kb = (ix >> 52) | 0x4330000000000000ull;
    double dk;
    memcpy(&dk, &kb, 8);
    dk = dk - (4503599627370496.0 + 1023.0) - (sub ? 54.0 : 0.0);
    ix = (ix & 0x000fffffffffffffull) + ((uint64_t)0x3fe6a09eu << 32);
    double m;
    memcpy(&m, &ix, 8);
    const double f = m - 1.0;
    const double hfsq = 0.5 * f * f;
    const double s = f / (2.0 + f);
    const double z = s * s;
    const double w = z * z;
    const double t1 = w * CE_FMA_F64(w, CE_FMA_F64(w, 1.531383769920937332e-01, 2.222219843214978396e-01),
                                     3.999999999940941908e-01);
    const double t2 =
        z * CE_FMA_F64(w, CE_FMA_F64(w, CE_FMA_F64(w, 1.479819860511658591e-01, 1.818357216161805012e-01),
                                     2.857142874366239149e-01),
                       6.666666666666735130e-01);
    const double R = t2 + t1;
    double lo = dk * 1.90821492927058770002e-10; /* k ln2_lo */
    if (has_c) lo += c / u;
    double r = CE_FMA_F64(s, hfsq + R, lo) - hfsq + f;
    r = CE_FMA_F64(dk, 6.93147180369123816490e-01, r); /* k ln2_hi, exact product */
    r = u == INFINITY ? INFINITY : r;
    r = u == 0.0 ? -INFINITY : r;
    r = u < 0.0 ? NAN : r;
    return u != u ? u : r;
}

/* Natural logarithm, float64. */
CE_INLINE double ce_log_f64(double x) { return ce_logc_f64(x, 0.0, 0); }

/* log(1 + x), float64, accurate for tiny |x|. */
CE_INLINE double ce_log1p_f64(double x) {
    const double u = 1.0 + x;
    const double c = fabs(x) <= 1.0 ? x - (u - 1.0) : 1.0 - (u - x);
    const double r = ce_logc_f64(u, u == INFINITY ? 0.0 : c, 1);
    return x != x ? x : r;
}

#endif
