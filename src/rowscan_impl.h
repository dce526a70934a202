/* rowscan_impl.h — the two passes every softmax-style kernel makes over a
 * row, written once (instantiated per dtype like the kernels; see
 * kernels_for_dtype.h). Used by categorical_impl.h and softmax_impl.h.
 *
 *   row_max     pass 1: the max of n strided elements, and whether one is NaN
 *               (a NaN never wins a > comparison, so it is tracked apart);
 *   row_expsum  pass 2: e = exp(x - r) for a reference r >= max (stored into
 *               y when y is not NULL -- y may alias x exactly), and two
 *               sums with s_less + n_max = sum e, where s_less + (n_max - 1)
 *               = sum e - 1 has no cancellation: n_max = #{e == 1} and
 *               s_less the rest when sum e < 2, else n_max = 0.
 *
 * Sums are accumulated in CE_T over chunks of CE_CHUNK elements (full vector
 * width, no conversions in the hot loop) and folded into double per chunk, so
 * the rounding error is that of a CE_CHUNK-term sum whatever n is. */

#ifndef CE_CHUNK
#define CE_CHUNK 256
#endif
/* The fast exp-sum's chunk: with AVX2, a float32 lane folds into double
 * every 32 terms and a float64 lane every 16, so that the lane holding a
 * row's 1 adds few terms to it; the fold costs ~2 % of a float64 chunk. */
#define CE_SUM_CHUNK (sizeof(CE_T) == 4 ? 256 : 64)

CE_INLINE CE_T CE_FN(row_max)(const CE_T *x, ptrdiff_t sx, int64_t n, int *has_nan) {
    CE_T m = -INFINITY;
    int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
    for (int64_t c = 0; c < n; ++c) {
        const CE_T v = x[c * sx];
        m = v > m ? v : m;
        nan |= (v != v);
    }
    *has_nan = nan;
    return m;
}

/* v where keep, else +0, as a bitwise AND: GCC 12 compiles a conditional
 * expression inside a sum reduction to an add plus a blend (with a "+ 0"
 * kept for the other arm), twice the work. */
CE_INLINE CE_T CE_FN(keep_if)(CE_T v, int keep) {
    CE_U b;
    memcpy(&b, &v, sizeof b);
    b &= (CE_U)0 - (CE_U)keep;
    memcpy(&v, &b, sizeof b);
    return v;
}

/* The exact form of the sums, after the fast one found s' < 1: from the
 * stored e (x may have been overwritten in place), else from e recomputed.
 * "At the max" is e == 1, which also takes in an x within half an ulp of r:
 * that changes s' by < 1 ulp, and it is what the stored e show. */
CE_INLINE void CE_FN(row_expsum_exact)(const CE_T *x, ptrdiff_t sx, int64_t n, CE_T r,
                                       const CE_T *y, ptrdiff_t sy, double *s_less,
                                       double *n_max, const int stored) {
    double sl = 0.0, nm = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += CE_CHUNK) {
        const int64_t c1 = c0 + CE_CHUNK < n ? c0 + CE_CHUNK : n;
        CE_T cs = 0;
        CE_I cn = 0; /* an integer count: one subtraction of the compare mask */
#pragma omp simd reduction(+ : cs, cn)
        for (int64_t c = c0; c < c1; ++c) {
            const CE_T e = stored ? y[c * sy] : CE_EXP_NONPOS(x[c * sx] - r);
            cs += CE_FN(keep_if)(e, e < 1);
            cn += e == 1;
        }
        sl += (double)cs;
        nm += (double)cn;
    }
    *s_less = sl;
    *n_max = nm;
}

/* `store` is a compile-time constant at both call sites below: a runtime
 * "is there an output" test inside the vector loop becomes a masked store
 * (vmaskmovps), which costs ~30 % of the pass on AMD Zen.
 *
 * The hot loop sums every e, maxima included (each contributes exactly 1):
 * s = 1 + s'. For s' >= 1 that is as accurate as summing the two parts apart
 * and saves two compares and two adds per vector (~15 % of the pass). For
 * s' < 1 a lane holding a 1 has lost the small terms, so the row is recounted
 * exactly (one more pass over a cached row, only for confident rows).
 *
 * The lanes are written out (CE_LANES partial sums, one vector register) and
 * each chunk's lanes are folded into double lanes, added as a tree once per
 * row: a `reduction(+)` clause would end every chunk with its lanes added one
 * by one in order, a chain of dependent scalar adds that cost ~9 % of the
 * pass (AVX-512). */
#define CE_LANES ((int64_t)(CE_VEC_BYTES / sizeof(CE_T)))
/* The sum of e = exp(x - r) over n elements (stored into y when `store`):
 * CE_LANES partial sums in CE_T per chunk, folded into double lanes, the
 * lanes added as a tree (halves) at the end. */
CE_INLINE double CE_FN(expsum_lanes)(const CE_T *x, ptrdiff_t sx, int64_t n, CE_T r, CE_T *y, ptrdiff_t sy,
                                     const int store, const ce_prefetch *pf) {
#ifdef __AVX512F__
    if (sizeof(CE_T) == 4 && CE_LANES == 16 && sx == 1 && (!store || sy == 1))
        return ce_expsum_f32x16((const float *)x, n, (float)r, (float *)y, store, pf, (int64_t)sizeof(CE_S),
                                CE_SUM_CHUNK);
#endif
    double acc[CE_LANES];
    for (int64_t j = 0; j < CE_LANES; ++j) acc[j] = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += CE_SUM_CHUNK) {
        const int64_t c1 = c0 + CE_SUM_CHUNK < n ? c0 + CE_SUM_CHUNK : n;
        if (pf) ce_prefetch_bytes(pf, c0 * (int64_t)sizeof(CE_S), c1 * (int64_t)sizeof(CE_S));
        CE_T cs[CE_LANES];
        for (int64_t j = 0; j < CE_LANES; ++j) cs[j] = 0;
        int64_t c = c0;
        for (; c + CE_LANES <= c1; c += CE_LANES) {
#pragma omp simd
            for (int64_t j = 0; j < CE_LANES; ++j) {
                const CE_T e = CE_EXP_NONPOS(x[(c + j) * sx] - r);
                if (store) y[(c + j) * sy] = e;
                cs[j] += e;
            }
        }
        for (int64_t j = 0; c + j < c1; ++j) { /* the last < CE_LANES elements, lanes 0.. */
            const CE_T e = CE_EXP_NONPOS(x[(c + j) * sx] - r);
            if (store) y[(c + j) * sy] = e;
            cs[j] += e;
        }
#pragma omp simd
        for (int64_t j = 0; j < CE_LANES; ++j) acc[j] += (double)cs[j];
    }
    for (int64_t h = CE_LANES / 2; h >= 1; h /= 2)
        for (int64_t j = 0; j < h; ++j) acc[j] += acc[j + h];
    return acc[0];
}

CE_INLINE void CE_FN(row_expsum_k)(const CE_T *x, ptrdiff_t sx, int64_t n, CE_T r, CE_T *y,
                                   ptrdiff_t sy, double *s_less, double *n_max, const int store,
                                   const ce_prefetch *pf) {
    const double s = CE_FN(expsum_lanes)(x, sx, n, r, y, sy, store, pf);
    if (s >= 2.0) {
        *s_less = s;
        *n_max = 0.0;
    } else {
        CE_FN(row_expsum_exact)(x, sx, n, r, y, sy, s_less, n_max, store);
    }
}

/* pf (or NULL): the next row to request, when rows are contiguous. */
CE_INLINE void CE_FN(row_expsum)(const CE_T *x, ptrdiff_t sx, int64_t n, CE_T r, CE_T *y,
                                 ptrdiff_t sy, double *s_less, double *n_max,
                                 const ce_prefetch *pf) {
    if (y)
        CE_FN(row_expsum_k)(x, sx, n, r, y, sy, s_less, n_max, 1, pf);
    else
        CE_FN(row_expsum_k)(x, sx, n, r, NULL, sy, s_less, n_max, 0, pf);
}

