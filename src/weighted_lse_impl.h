/* weighted_lse_impl.h — SciPy's b-weighted log-sum-exp with its sign
 * (scipy.special.logsumexp(a, b=b, return_sign=...), SciPy 1.17.1), written
 * once and instantiated per dtype by kernels_for_dtype.h (CE_T, CE_FN,
 * CE_EXP_NONPOS; keep_if from rowscan_impl.h).
 *
 * Per row, SciPy's algorithm with its sums kept in double:
 *   a'_c = a_c where b_c != 0, else -inf (a zero weight hides even an
 *          infinite or NaN a_c);
 *   m    = max a' (NaN if an a' is NaN);
 *   M    = sum of b_c over the maxima (a'_c == m), s = sum of
 *          b_c exp(a'_c - m) over the rest (each exp of an argument <= 0,
 *          computed once); s = s / M unless s == 0;
 *   sign = sign(s + 1) sign(M); s = -s - 2 where s < -1 (so that
 *          log1p(s) = log|1 + s|);
 *   out  = log1p(s) + log|M| + m, NaN where sign < 0 unless the sign is
 *          returned.
 * The maxima are summed apart from the rest, so a dominant term keeps its
 * relative accuracy (log1p of a small s). Where that result is not finite
 * in CE_T (an infinite or NaN a, NaN b, every weight 0, an exact
 * cancellation M = 0), SciPy falls back to the direct form, and so does this
 * kernel: S = sum_c b_c exp(a_c) over every c with the products in CE_T (an
 * exp that overflows CE_T is infinite, as in SciPy, and 0 * inf is NaN),
 * out = log S (log|S| when the sign is returned), sign = sign(S). That
 * fallback rereads the row only for such rows.
 *
 * Rows are grouped in blocks of ce_rows_per_block(C) rows and each row is
 * computed by the same code whatever the thread count: results are bitwise
 * identical for every num_threads. */

CE_INLINE double CE_FN(wlse_sign)(double v) { return v > 0 ? 1.0 : v < 0 ? -1.0 : v == 0 ? 0.0 : v; }

/* The direct form (see above) for one row. */
static void CE_FN(wlse_direct)(const CE_T *a, ptrdiff_t sa, const CE_T *b, ptrdiff_t sb, int64_t C,
                               int with_sign, double *out, double *sgn) {
    double S = 0.0;
    for (int64_t c = 0; c < C; ++c) S += (double)(b[c * sb] * (CE_T)exp((double)a[c * sa]));
    *sgn = CE_FN(wlse_sign)(S);
    *out = with_sign ? log(fabs(S)) : log(S);
}

/* One row (the strides are constants after inlining at the unit-stride
 * call sites). */
CE_INLINE void CE_FN(wlse_row)(const CE_T *a, ptrdiff_t sa, const CE_T *b, ptrdiff_t sb, int64_t C,
                               int with_sign, double *out, double *sgn) {
    CE_T m = -INFINITY;
    int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
    for (int64_t c = 0; c < C; ++c) {
        const CE_T v = b[c * sb] != 0 ? a[c * sa] : (CE_T)-INFINITY;
        m = v > m ? v : m;
        nan |= v != v;
    }
    if (!nan && m > -INFINITY && m < INFINITY) {
        double M = 0.0, s = 0.0;
        for (int64_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
            const int64_t c1 = c0 + CE_CHUNK < C ? c0 + CE_CHUNK : C;
            CE_T cs = 0, cm = 0;
#pragma omp simd reduction(+ : cs, cm)
            for (int64_t c = c0; c < c1; ++c) {
                const CE_T bv = b[c * sb];
                const int live = bv != 0;
                const CE_T d = a[c * sa] - m; /* NaN or +-inf only where !live */
                const int at_max = live & (d == 0);
                const CE_T e = CE_EXP_NONPOS(live ? d : (CE_T)-INFINITY);
                cs += CE_FN(keep_if)(bv * e, live & !at_max);
                cm += CE_FN(keep_if)(bv, at_max);
            }
            s += (double)cs;
            M += (double)cm;
        }
        if (s != 0) s /= M;
        const double sg = CE_FN(wlse_sign)(s + 1.0) * CE_FN(wlse_sign)(M);
        if (s < -1) s = -s - 2.0;
        double o = log1p(s) + log(fabs(M)) + (double)m;
        if (!with_sign && sg < 0) o = NAN;
        const CE_T ot = (CE_T)o;
        if (ot - ot == 0) { /* finite in CE_T */
            *out = o;
            *sgn = sg;
            return;
        }
    }
    CE_FN(wlse_direct)(a, sa, b, sb, C, with_sign, out, sgn);
}

int CE_FN(ce_wlse)(ce_wlse_args *w) {
    const int64_t outer = w->outer, C = w->C, inner = w->inner, N = outer * inner;
    const CE_T *A = (const CE_T *)w->a, *B = (const CE_T *)w->b;
    CE_T *out = (CE_T *)w->out, *sign = (CE_T *)w->sign;
    const int with_sign = sign != NULL;
    const int64_t rb = ce_rows_per_block(C);
    const int64_t nblocks = (N + rb - 1) / rb;
    const int nt = ce_threads_for(w->num_threads, nblocks, N * C);

#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
        const int64_t r_end = (blk + 1) * rb < N ? (blk + 1) * rb : N;
        for (int64_t r = blk * rb; r < r_end; ++r) {
            const int64_t o = r / inner, i = r - o * inner;
            const CE_T *ar = A + o * w->as_o + i * w->as_i;
            const CE_T *br = B + o * w->bs_o + i * w->bs_i;
            double v, sg;
            if (w->as_c == 1 && w->bs_c == 1)
                CE_FN(wlse_row)(ar, 1, br, 1, C, with_sign, &v, &sg);
            else if (w->as_c == 1 && w->bs_c == 0)
                CE_FN(wlse_row)(ar, 1, br, 0, C, with_sign, &v, &sg);
            else
                CE_FN(wlse_row)(ar, w->as_c, br, w->bs_c, C, with_sign, &v, &sg);
            out[r] = (CE_T)v;
            if (sign) sign[r] = (CE_T)sg;
        }
    }
    return CE_OK;
}
