/* ce_vecmath.h — branch-free exp for float and double, written so that GCC
 * and Clang vectorise the loops that call it (`#pragma omp simd`) at whatever
 * ISA the translation unit is compiled for. Every kernel needs exp only of
 * arguments <= 0 (softmax: exp(x - max); softplus: exp(-|x|)), which is what
 * these compute.
 *
 * Method: n = round(x / ln 2), r = x - n ln 2 (Cody-Waite, two constants),
 * exp(r) by a polynomial 1 + r + r^2 Q(r) (float: degree 6; double: degree
 * 11), Q fitted for minimax relative error on |r| <= ln2/2 (approximation
 * error 5e-9 for float, 8e-18 for double: < 0.05 ulp; every FMA saved
 * counts, the exp is FMA-bound on the CPUs we measure), then
 * p * 2^n built by adding n + 64 to p's exponent field (always a normal
 * number) and multiplying by 2^-64, which rounds subnormal results correctly,
 * once: results underflow gradually, never flush to zero early.
 *
 * Accuracy against long double over [log(FLT_MIN | DBL_MIN), 0], 2e6 random
 * arguments: max 1.00 ulp (float32) and 1.01 ulp (float64) with FMA (AVX2),
 * 0.96 / 0.99 ulp at baseline; tests/test_vecmath.py asserts <= 2 ulp on
 * normal results and one subnormal spacing below them, at every ISA level.
 *
 * Special values: exp(-inf) = +0, underflow gives +0. NaN input returns an
 * unspecified value: every caller screens NaN first (the row passes detect
 * NaN rows; softplus tests x != x), which keeps the hot loop short. Nothing
 * relies on -ffast-math (which this build does not use). */
#ifndef CE_VECMATH_H
#define CE_VECMATH_H

#include <stdint.h>
#include <string.h>
#include "ce_util.h"

/* ---- float32 ---------------------------------------------------------- */
CE_INLINE float ce_exp_nonpos_f32(float x) {
    const float magic = 12582912.0f; /* 1.5 * 2^23 */
    float xc = x > -104.0f ? x : -104.0f;
    float t = CE_FMA_F32(xc, 1.44269504088896341f, magic);
    float n = t - magic;
    float r = CE_FMA_F32(-n, 0.693359375f, xc);
    r = CE_FMA_F32(-n, -2.12194440e-4f, r);
    float z = r * r;
    float p = 1.3887262903e-3f;
    p = CE_FMA_F32(p, r, 8.3732949570e-3f);
    p = CE_FMA_F32(p, r, 4.1667584330e-2f);
    p = CE_FMA_F32(p, r, 1.6666473448e-1f);
    p = CE_FMA_F32(p, r, 4.9999994040e-1f);
    p = CE_FMA_F32(p, z, r) + 1.0f;
    uint32_t ti, im, pb; /* unsigned: wraps (defined) for arguments outside the domain */
    memcpy(&ti, &t, 4);
    memcpy(&im, &magic, 4);
    memcpy(&pb, &p, 4);
    pb += (ti - im + 64u) << 23;
    float res;
    memcpy(&res, &pb, 4);
    return res * 0x1p-64f;
}

#ifdef __AVX512F__
#include <immintrin.h>
/* ce_exp_nonpos_f32 on 16 lanes, with the same bits: the last step, p * 2^n
 * rounded once, is AVX-512's vscalefps instead of the exponent-field add and
 * the multiply by 2^-64 (four instructions fewer, which GCC cannot derive
 * from the scalar form); the rest is the same operations in the same order. */
CE_INLINE __m512 ce_exp_nonpos_f32x16(__m512 x) {
    const __m512 magic = _mm512_set1_ps(12582912.0f);
    const __m512 xc = _mm512_max_ps(x, _mm512_set1_ps(-104.0f)); /* NaN -> -104, as above */
    const __m512 t = _mm512_fmadd_ps(xc, _mm512_set1_ps(1.44269504088896341f), magic);
    const __m512 n = _mm512_sub_ps(t, magic);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), xc);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    const __m512 z = _mm512_mul_ps(r, r);
    __m512 p = _mm512_set1_ps(1.3887262903e-3f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3732949570e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1667584330e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666473448e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.9999994040e-1f));
    p = _mm512_add_ps(_mm512_fmadd_ps(p, z, r), _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* rowscan_impl.h's expsum_lanes for 16 float32 lanes, kept in registers
 * (the partial sums, their double lanes, a masked last vector): the same
 * operations in the same order, so the same bits, and no lane arrays in
 * memory. pf: the next row's bytes (item bytes an element) to request. */
CE_INLINE double ce_expsum_f32x16(const float *x, int64_t n, float r, float *y, const int store,
                                  const ce_prefetch *pf, int64_t item, int64_t chunk) {
    const __m512 vr = _mm512_set1_ps(r);
    __m512d lo = _mm512_setzero_pd(), hi = _mm512_setzero_pd();
    for (int64_t c0 = 0; c0 < n; c0 += chunk) {
        const int64_t c1 = c0 + chunk < n ? c0 + chunk : n;
        if (pf) ce_prefetch_bytes(pf, c0 * item, c1 * item);
        __m512 vs = _mm512_setzero_ps();
        int64_t c = c0;
        for (; c + 16 <= c1; c += 16) {
            const __m512 e = ce_exp_nonpos_f32x16(_mm512_sub_ps(_mm512_loadu_ps(x + c), vr));
            if (store) _mm512_storeu_ps(y + c, e);
            vs = _mm512_add_ps(vs, e);
        }
        if (c < c1) {
            const __mmask16 m = (__mmask16)((1u << (c1 - c)) - 1u);
            const __m512 e = ce_exp_nonpos_f32x16(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + c), vr));
            if (store) _mm512_mask_storeu_ps(y + c, m, e);
            vs = _mm512_mask_add_ps(vs, m, vs, e);
        }
        lo = _mm512_add_pd(lo, _mm512_cvtps_pd(_mm512_castps512_ps256(vs)));
        hi = _mm512_add_pd(hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(vs), 1))));
    }
    return _mm512_reduce_add_pd(_mm512_add_pd(lo, hi)); /* halves added, as expsum_lanes does */
}
#endif

/* ---- float64 ---------------------------------------------------------- */
CE_INLINE double ce_exp_nonpos_f64(double x) {
    const double magic = 6755399441055744.0; /* 1.5 * 2^52 */
    double xc = x > -746.0 ? x : -746.0;
    double t = CE_FMA_F64(xc, 1.4426950408889634074, magic);
    double n = t - magic;
    double r = CE_FMA_F64(-n, 0.693147180369123816490, xc);
    r = CE_FMA_F64(-n, 1.90821492927058770002e-10, r);
    double p = 2.511003841271279177e-8;
    p = CE_FMA_F64(p, r, 2.763264082626175014e-7);
    p = CE_FMA_F64(p, r, 2.755724236714201052e-6);
    p = CE_FMA_F64(p, r, 2.480148736562560229e-5);
    p = CE_FMA_F64(p, r, 1.984126988656407358e-4);
    p = CE_FMA_F64(p, r, 1.388888894778587645e-3);
    p = CE_FMA_F64(p, r, 8.333333333322216107e-3);
    p = CE_FMA_F64(p, r, 4.166666666652210533e-2);
    p = CE_FMA_F64(p, r, 1.666666666666667452e-1);
    p = CE_FMA_F64(p, r, 5.000000000000010214e-1);
    p = CE_FMA_F64(p, r * r, r) + 1.0;
    uint64_t ti, im, pb;
    memcpy(&ti, &t, 8);
    memcpy(&im, &magic, 8);
    memcpy(&pb, &p, 8);
    pb += (ti - im + 64u) << 52;
    double res;
    memcpy(&res, &pb, 8);
    return res * 0x1p-64;
}

#endif
