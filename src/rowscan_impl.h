/* rowscan_impl.h — the two passes every softmax-style kernel makes over a
 * row, written once (instantiated per dtype like the kernels; see
 * kernels_for_dtype.h). Used by categorical_impl.h and softmax_impl.h.
 *
 *   row_max     pass 1: the max of n strided elements, and whether one is NaN
 *               (a NaN never wins a > comparison, so it is tracked apart);
 *   row_expsum  pass 2: e = exp(x - r) for a reference r >= max (stored into
 *               y when y is not NULL -- y may alias x exactly), and
 *                 s_less = sum_{x < r} e,   n_max = #{x == r},
 *               so that sum e - 1 = s_less + (n_max - 1) has no cancellation.
 *
 * Sums are accumulated in CE_T over chunks of CE_CHUNK elements (full vector
 * width, no conversions in the hot loop) and folded into double per chunk, so
 * the rounding error is that of a CE_CHUNK-term sum whatever n is. */

#define CE_FN(name) CE_CAT(name, CE_CAT(_, CE_SFX))

#ifndef CE_CHUNK
#define CE_CHUNK 256
#endif

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

/* `store` is a compile-time constant at both call sites below: a runtime
 * "is there an output" test inside the vector loop becomes a masked store
 * (vmaskmovps), which costs ~30 % of the pass on AMD Zen. */
CE_INLINE void CE_FN(row_expsum_k)(const CE_T *x, ptrdiff_t sx, int64_t n, CE_T r, CE_T *y,
                                   ptrdiff_t sy, double *s_less, double *n_max, const int store) {
    double sl = 0.0, nm = 0.0;
    for (int64_t c0 = 0; c0 < n; c0 += CE_CHUNK) {
        const int64_t c1 = c0 + CE_CHUNK < n ? c0 + CE_CHUNK : n;
        CE_T cs = 0;
        CE_I cn = 0; /* an integer count: one subtraction of the compare mask */
#pragma omp simd reduction(+ : cs, cn)
        for (int64_t c = c0; c < c1; ++c) {
            const CE_T d = x[c * sx] - r;
            const CE_T e = CE_EXP_NONPOS(d);
            if (store) y[c * sy] = e;
            cs += CE_FN(keep_if)(e, d < 0);
            cn += d == 0;
        }
        sl += (double)cs;
        nm += (double)cn;
    }
    *s_less = sl;
    *n_max = nm;
}

CE_INLINE void CE_FN(row_expsum)(const CE_T *x, ptrdiff_t sx, int64_t n, CE_T r, CE_T *y,
                                 ptrdiff_t sy, double *s_less, double *n_max) {
    if (y)
        CE_FN(row_expsum_k)(x, sx, n, r, y, sy, s_less, n_max, 1);
    else
        CE_FN(row_expsum_k)(x, sx, n, r, NULL, sy, s_less, n_max, 0);
}

#undef CE_FN
