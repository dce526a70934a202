/* tilescan_impl.h — the two passes every softmax-style kernel makes over a
 * TILE of rows (rowscan_impl.h's row_max and row_expsum, vectorised across
 * rows instead of along one), written once for the categorical tile path
 * (categorical_tile_impl.h) and the softmax family's tiles (softmax_impl.h).
 *
 * A tile holds nb <= CE_TILE rows class-major: class c of row j at
 * x[c * sc + j], so each pass is, per class, one unit-stride vector loop over
 * the rows (lanes). CE_TILE = 16 rows fill one or two cache lines per class
 * (float, double) and one or two vector registers (AVX-512).
 *
 *   tile_max     pass 1: per-lane max and whether the lane holds NaN;
 *   tile_expsum  pass 2: e = exp(x - m) (stored when asked: e may alias x
 *                exactly), per lane s_less = sum of e over x < m and
 *                n_max = #{x == m} (so s' = s_less + (n_max - 1) has no
 *                cancellation), and optionally a dot product:
 *                sum w_c (m - x_c) (label smoothing; w NULL means 1) or
 *                sum e_c (m - x_c) (softmax_entropy), a term being 0 where its
 *                coefficient or m - x_c is 0 (no 0 * inf, no inf * 0).
 * Sums are accumulated in CE_T and folded into double every CE_CHUNK classes,
 * as rowscan_impl.h does, so the error is that of a CE_CHUNK-term sum. Lanes
 * with NaN, +inf or all -inf compute garbage (never a trap: the exp clamps its
 * argument); the callers overwrite them. The flags are constants after
 * inlining, so every variant is a branch-free vector loop. */

#define CE_TILE ((int64_t)CE_TILE_ROWS)

#define CE_DOT_NONE 0
#define CE_DOT_SMOOTH 1  /* sum w_c (m - x_c) */
#define CE_DOT_ENTROPY 2 /* sum e_c (m - x_c) */

CE_INLINE void CE_FN(tile_max)(const CE_T *x, ptrdiff_t sc, int64_t C, int64_t nb, CE_T *restrict m,
                               CE_I *restrict nan) {
    for (int64_t j = 0; j < nb; ++j) m[j] = -INFINITY, nan[j] = 0;
    for (int64_t c = 0; c < C; ++c) {
        const CE_T *restrict xc = x + c * sc;
#pragma omp simd
        for (int64_t j = 0; j < nb; ++j) {
            const CE_T v = xc[j];
            m[j] = v > m[j] ? v : m[j];
            nan[j] |= (CE_I)(v != v);
        }
    }
}

/* One class of pass 2 (see tile_expsum). */
CE_INLINE void CE_FN(tile_exp_class)(const CE_T *xc, CE_T *ec, int64_t nb, const CE_T *restrict m,
                                     CE_T *restrict cs, CE_T *restrict cn, double *restrict dot, double wc,
                                     const int store, const int dotkind) {
#pragma omp simd
    for (int64_t j = 0; j < nb; ++j) {
        const CE_T xv = xc[j]; /* read before ec (may alias xc) is written */
        const CE_T d = xv - m[j];
        const CE_T e = CE_EXP_NONPOS(d);
        if (store) ec[j] = e;
        cs[j] += CE_FN(keep_if)(e, d < 0);
        cn[j] += (CE_T)(d == 0);
        if (dotkind == CE_DOT_SMOOTH) dot[j] += d == 0 ? 0.0 : wc * ((double)m[j] - (double)xv);
        if (dotkind == CE_DOT_ENTROPY) dot[j] += e == 0 ? 0.0 : (double)e * -(double)d;
    }
}

CE_INLINE void CE_FN(tile_expsum)(const CE_T *x, ptrdiff_t sc, int64_t C, int64_t nb,
                                  const CE_T *restrict m, CE_T *e, ptrdiff_t se, const CE_T *restrict w,
                                  double *restrict sl, double *restrict nm, double *restrict dot,
                                  const int store, const int dotkind) {
#pragma omp simd
    for (int64_t j = 0; j < nb; ++j) sl[j] = nm[j] = 0.0;
    if (dotkind != CE_DOT_NONE)
        for (int64_t j = 0; j < nb; ++j) dot[j] = 0.0;
    for (int64_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
        const int64_t c1 = c0 + CE_CHUNK < C ? c0 + CE_CHUNK : C;
        CE_T cs[CE_TILE], cn[CE_TILE];
        for (int64_t j = 0; j < nb; ++j) cs[j] = cn[j] = 0;
        for (int64_t c = c0; c < c1; ++c) {
            const CE_T *xc = x + c * sc;
            CE_T *ec = store ? e + c * se : NULL;
            const CE_T wc = w ? w[c] : (CE_T)1;
            /* a class of weight 0 adds nothing to the smoothing sum */
            if (dotkind == CE_DOT_SMOOTH && wc != 0)
                CE_FN(tile_exp_class)(xc, ec, nb, m, cs, cn, dot, (double)wc, store, CE_DOT_SMOOTH);
            else if (dotkind == CE_DOT_ENTROPY)
                CE_FN(tile_exp_class)(xc, ec, nb, m, cs, cn, dot, 0.0, store, CE_DOT_ENTROPY);
            else
                CE_FN(tile_exp_class)(xc, ec, nb, m, cs, cn, dot, 0.0, store, CE_DOT_NONE);
        }
#pragma omp simd
        for (int64_t j = 0; j < nb; ++j) {
            sl[j] += (double)cs[j];
            nm[j] += (double)cn[j];
        }
    }
}
