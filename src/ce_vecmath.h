/* ce_vecmath.h — branch-free exp for float and double, written so that GCC
 * and Clang vectorise the loops that call it (`#pragma omp simd`) at whatever
 * ISA the translation unit is compiled for.
 *
 * Method: n = round(x / ln 2), r = x - n ln 2 (Cody-Waite, two constants),
 * exp(r) by its Taylor polynomial in Horner form (degree 7 for float, 13 for
 * double: truncation error < 0.1 ulp on |r| <= ln2/2), then scaling by 2^n as
 * two factors 2^(n/2) * 2^(n - n/2) so that results in the subnormal range
 * underflow gradually instead of flushing to zero.
 *
 * Accuracy (measured by tests/test_vecmath.py against float64 / long double
 * over the whole range): <= 2 ulp for float32, <= 2 ulp for float64 on normal
 * results; subnormal results are within 1 ulp of the subnormal spacing.
 *
 * Special values: exp(NaN) = NaN, exp(+inf) = +inf, exp(-inf) = +0, overflow
 * gives +inf, underflow gives +0 — all handled explicitly by clamping and a
 * final NaN select, never by relying on -ffast-math (which this build does
 * not use). */
#ifndef CE_VECMATH_H
#define CE_VECMATH_H

#include <stdint.h>
#include <string.h>
#include "ce_util.h"

/* ---- float32 ---------------------------------------------------------- */
CE_INLINE float ce_exp_f32(float x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    const float log2e = 1.44269504088896341f;
    const float ln2_hi = 0.693145751953125f; /* few bits: n * ln2_hi is exact */
    const float ln2_lo = 1.428606765330187045e-06f;
    /* Outside [-104, 88.8] the result is 0 or inf anyway; clamping keeps n in
     * the range where the two-factor scaling below is exact. */
    float xc = x < -104.0f ? -104.0f : x;
    xc = xc > 88.8f ? 88.8f : xc;
    float t = xc * log2e + magic;
    float n = t - magic;
    float r = CE_FMA_F32(-n, ln2_hi, xc);
    r = CE_FMA_F32(-n, ln2_lo, r);
    float p = 1.0f / 5040.0f;
    p = CE_FMA_F32(p, r, 1.0f / 720.0f);
    p = CE_FMA_F32(p, r, 1.0f / 120.0f);
    p = CE_FMA_F32(p, r, 1.0f / 24.0f);
    p = CE_FMA_F32(p, r, 1.0f / 6.0f);
    p = CE_FMA_F32(p, r, 0.5f);
    p = CE_FMA_F32(p, r, 1.0f);
    p = CE_FMA_F32(p, r, 1.0f);
    /* split n = n1 + n2 with both halves inside the normal exponent range */
    float n1 = (n * 0.5f + magic) - magic;
    float n2 = n - n1;
    int32_t i1, i2, im;
    float t1 = n1 + magic, t2 = n2 + magic;
    memcpy(&i1, &t1, 4);
    memcpy(&i2, &t2, 4);
    memcpy(&im, &magic, 4);
    int32_t b1 = (i1 - im + 127) << 23, b2 = (i2 - im + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, 4);
    memcpy(&s2, &b2, 4);
    float res = (p * s1) * s2;
    return x != x ? x : res;
}

/* ---- float64 ---------------------------------------------------------- */
CE_INLINE double ce_exp_f64(double x) {
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    const double log2e = 1.4426950408889634074;
    const double ln2_hi = 0.693147180369123816490; /* low 32 bits zero */
    const double ln2_lo = 1.90821492927058770002e-10;
    double xc = x < -746.0 ? -746.0 : x;
    xc = xc > 709.9 ? 709.9 : xc;
    double t = xc * log2e + magic;
    double n = t - magic;
    double r = CE_FMA_F64(-n, ln2_hi, xc);
    r = CE_FMA_F64(-n, ln2_lo, r);
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = CE_FMA_F64(p, r, 1.0 / 479001600.0);
    p = CE_FMA_F64(p, r, 1.0 / 39916800.0);
    p = CE_FMA_F64(p, r, 1.0 / 3628800.0);
    p = CE_FMA_F64(p, r, 1.0 / 362880.0);
    p = CE_FMA_F64(p, r, 1.0 / 40320.0);
    p = CE_FMA_F64(p, r, 1.0 / 5040.0);
    p = CE_FMA_F64(p, r, 1.0 / 720.0);
    p = CE_FMA_F64(p, r, 1.0 / 120.0);
    p = CE_FMA_F64(p, r, 1.0 / 24.0);
    p = CE_FMA_F64(p, r, 1.0 / 6.0);
    p = CE_FMA_F64(p, r, 0.5);
    p = CE_FMA_F64(p, r, 1.0);
    p = CE_FMA_F64(p, r, 1.0);
    double n1 = (n * 0.5 + magic) - magic;
    double n2 = n - n1;
    int64_t i1, i2, im;
    double t1 = n1 + magic, t2 = n2 + magic;
    memcpy(&i1, &t1, 8);
    memcpy(&i2, &t2, 8);
    memcpy(&im, &magic, 8);
    int64_t b1 = (i1 - im + 1023) << 52, b2 = (i2 - im + 1023) << 52;
    double s1, s2;
    memcpy(&s1, &b1, 8);
    memcpy(&s2, &b2, 8);
    double res = (p * s1) * s2;
    return x != x ? x : res;
}

/* ---- exp for arguments <= 0 (softmax: exp(x - max)) --------------------
 * The hot path of every softmax-style kernel. Cheaper than the general exp:
 * no upper clamp, a Cephes-style degree-5 polynomial for float (minimax on
 * |r| <= ln2/2, < 1 ulp), and one scaling step: p * 2^(n+64) is built by
 * adding to p's exponent field (always a normal number for n >= -150), then
 * multiplied by 2^-64, which rounds subnormal results correctly once.
 * Domain: x <= 0, including -inf (-> +0). NaN input returns an unspecified
 * value: callers screen NaN rows before calling (categorical_impl.h does). */
CE_INLINE float ce_exp_nonpos_f32(float x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    float xc = x > -104.0f ? x : -104.0f;
    float t = CE_FMA_F32(xc, 1.44269504088896341f, magic);
    float n = t - magic;
    float r = CE_FMA_F32(-n, 0.693359375f, xc);
    r = CE_FMA_F32(-n, -2.12194440e-4f, r);
    float z = r * r;
    float p = 1.9875691500e-4f;
    p = CE_FMA_F32(p, r, 1.3981999507e-3f);
    p = CE_FMA_F32(p, r, 8.3334519073e-3f);
    p = CE_FMA_F32(p, r, 4.1665795894e-2f);
    p = CE_FMA_F32(p, r, 1.6666665459e-1f);
    p = CE_FMA_F32(p, r, 5.0000001201e-1f);
    p = CE_FMA_F32(p, z, r) + 1.0f;
    int32_t ti, im, pb;
    memcpy(&ti, &t, 4);
    memcpy(&im, &magic, 4);
    memcpy(&pb, &p, 4);
    pb += (ti - im + 64) * (1 << 23);
    float res;
    memcpy(&res, &pb, 4);
    return res * 0x1p-64f;
}

CE_INLINE double ce_exp_nonpos_f64(double x) {
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    double xc = x > -746.0 ? x : -746.0;
    double t = CE_FMA_F64(xc, 1.4426950408889634074, magic);
    double n = t - magic;
    double r = CE_FMA_F64(-n, 0.693147180369123816490, xc);
    r = CE_FMA_F64(-n, 1.90821492927058770002e-10, r);
    double p = 1.0 / 6227020800.0; /* Taylor to r^13 / 13! */
    p = CE_FMA_F64(p, r, 1.0 / 479001600.0);
    p = CE_FMA_F64(p, r, 1.0 / 39916800.0);
    p = CE_FMA_F64(p, r, 1.0 / 3628800.0);
    p = CE_FMA_F64(p, r, 1.0 / 362880.0);
    p = CE_FMA_F64(p, r, 1.0 / 40320.0);
    p = CE_FMA_F64(p, r, 1.0 / 5040.0);
    p = CE_FMA_F64(p, r, 1.0 / 720.0);
    p = CE_FMA_F64(p, r, 1.0 / 120.0);
    p = CE_FMA_F64(p, r, 1.0 / 24.0);
    p = CE_FMA_F64(p, r, 1.0 / 6.0);
    p = CE_FMA_F64(p, r, 0.5);
    p = CE_FMA_F64(p, r * r, r) + 1.0;
    int64_t ti, im, pb;
    memcpy(&ti, &t, 8);
    memcpy(&im, &magic, 8);
    memcpy(&pb, &p, 8);
    pb += (ti - im + 64) * ((int64_t)1 << 52);
    double res;
    memcpy(&res, &pb, 8);
    return res * 0x1p-64;
}

#endif
