/* prob_divergence_impl.h — Shannon entropy and Kullback-Leibler divergence
 * of probability vectors normalised per row (scipy.stats.entropy(pk, qk),
 * SciPy 1.17.1), written once and instantiated per dtype by
 * kernels_for_dtype.h (CE_T, CE_FN; the log is ce_log_f64 for both dtypes).
 *
 * Per row of the (outer, C, inner) layout:
 *   pass 1  Sp = sum p, Sq = sum q (in double, rounded once to CE_T, as
 *           SciPy's sums are in the element type: a float32 sum that
 *           overflows is infinite here too);
 *   pass 2  u = p / Sp, v = q / Sq in CE_T (SciPy's rounding of the
 *           normalised vectors, so u == v exactly wherever SciPy's are), and
 *             entropy  sum entr(u),       entr(u) = -u log u, 0 at u = 0,
 *                                         -inf for u < 0;
 *             KL       sum rel_entr(u, v), u log(u / v) for u, v > 0 (in
 *                                         SciPy's three forms, see pd_rel),
 *                                         0 for u = 0 <= v, +inf otherwise;
 *           NaN in gives NaN, as SciPy's special functions. The terms are
 *           evaluated in double whatever CE_T is (SciPy's float32 loops do
 *           too: rel_entr(1, 1e-45) is 103.3 in float32, not inf), summed
 *           in double.
 * IEEE arithmetic does the rest exactly as in SciPy: a NaN anywhere makes
 * the sum and so every term NaN; an all-zero row gives 0 / 0 = NaN; an
 * infinite p makes Sp infinite, so u is 0 or NaN.
 * omit_nan (nan_policy="omit") leaves out every position whose p or q is
 * NaN, from the sums and the terms alike; a row left empty gives 0.
 *
 * Layouts: rows along a unit or strided class axis one at a time (the row
 * stays in cache between the passes); when the class axis is not last and
 * the rows are unit-stride neighbours, a tile of rows one cache line wide is
 * processed together, vectorised across the rows, as the softmax family
 * does. The blocking depends on the shape only: results are bitwise
 * identical for every thread count. */

/* SciPy's rel_entr for u, v > 0: u log1p((u - v) / v) when 0.5 < u / v < 2
 * (the small terms of close distributions keep their relative accuracy),
 * u log(u / v) otherwise, and u (log u - log v) where u / v over- or
 * underflows. The first two are one log evaluation here (log1p(d) as
 * log(1 + d) plus the rounding error of 1 + d over 1 + d, as ce_log1p_f64);
 * *extreme gets whether the third case arose (the caller redoes those rows
 * with pd_term_exact, which is rare: a ratio beyond 1e308). */
CE_INLINE double CE_FN(pd_rel)(double du, double dv, int *extreme) {
    const double ratio = du / dv;
    const int near = (ratio > 0.5) & (ratio < 2.0);
    const double d = (du - dv) / dv; /* in (-0.5, 1) where near */
    const double a1 = near ? 1.0 + d : ratio;
    const double c = near ? d - (a1 - 1.0) : 0.0;
    *extreme = !((ratio > 2.2250738585072014e-308) & (ratio < INFINITY));
    return du * ce_logc_f64(a1, c, 1);
}

/* entr(u), or rel_entr(u, v) when has_q (a constant after inlining). */
CE_INLINE double CE_FN(pd_term)(CE_T u, CE_T v, const int has_q, int *extreme) {
    const double du = (double)u;
    if (!has_q) {
        const double t = du > 0 ? -du * ce_log_f64(du) : (du == 0 ? 0.0 : -INFINITY);
        *extreme = 0;
        return u != u ? NAN : t;
    }
    const double dv = (double)v;
    int ext = 0;
    const double r = CE_FN(pd_rel)(du, dv, &ext);
    const int pos = (du > 0) & (dv > 0);
    *extreme = ext & pos;
    const double t = pos ? r : ((du == 0) & (dv >= 0) ? 0.0 : INFINITY);
    return (u != u) | (v != v) ? NAN : t;
}

/* rel_entr(u, v) of one element by SciPy's three cases (the rare path). */
static double CE_FN(pd_term_exact)(CE_T u, CE_T v) {
    const double du = (double)u, dv = (double)v;
    if (u != u || v != v) return NAN;
    if (!(du > 0 && dv > 0)) return du == 0 && dv >= 0 ? 0.0 : INFINITY;
    const double ratio = du / dv;
    if (ratio > 0.5 && ratio < 2.0) return du * log1p((du - dv) / dv);
    if (ratio > 2.2250738585072014e-308 && ratio < INFINITY) return du * log(ratio);
    return du * (log(du) - log(dv));
}

/* Whether position (p, q) takes part: always, unless omit and a NaN. */
CE_INLINE int CE_FN(pd_keep)(CE_T p, CE_T q, const int has_q, const int omit) {
    return !omit || ((p == p) & (!has_q || q == q));
}

/* The KL sum of a row holding an extreme ratio, element by element. */
static double CE_FN(pd_row_exact)(const CE_T *p, ptrdiff_t sp, const CE_T *q, ptrdiff_t sq, int64_t C,
                                  int omit, CE_T np_, CE_T nq) {
    double h = 0.0;
    for (int64_t c = 0; c < C; ++c) {
        const CE_T pv = p[c * sp], qv = q[c * sq];
        if (CE_FN(pd_keep)(pv, qv, 1, omit)) h += CE_FN(pd_term_exact)(pv / np_, qv / nq);
    }
    return h;
}

/* One row; sp, sq element strides (q ignored unless has_q). */
CE_INLINE double CE_FN(pd_row)(const CE_T *p, ptrdiff_t sp, const CE_T *q, ptrdiff_t sq, int64_t C,
                               const int has_q, const int omit) {
    double Sp = 0.0, Sq = 0.0;
#pragma omp simd reduction(+ : Sp, Sq)
    for (int64_t c = 0; c < C; ++c) {
        const CE_T pv = p[c * sp], qv = has_q ? q[c * sq] : (CE_T)0;
        const int k = CE_FN(pd_keep)(pv, qv, has_q, omit);
        Sp += k ? (double)pv : 0.0;
        Sq += k ? (double)qv : 0.0;
    }
    const CE_T np_ = (CE_T)Sp, nq = (CE_T)Sq;
    double h = 0.0;
    int ext = 0;
#pragma omp simd reduction(+ : h) reduction(| : ext)
    for (int64_t c = 0; c < C; ++c) {
        const CE_T pv = p[c * sp], qv = has_q ? q[c * sq] : (CE_T)1;
        const int k = CE_FN(pd_keep)(pv, qv, has_q, omit);
        int e;
        const double t = CE_FN(pd_term)(pv / np_, qv / nq, has_q, &e);
        h += k ? t : 0.0;
        ext |= k & e;
    }
    return ext ? CE_FN(pd_row_exact)(p, sp, q, sq, C, omit, np_, nq) : h;
}

/* A tile of nb <= CE_PD_TILE neighbouring rows (unit inner stride), the
 * class axis with strides sp / sq between classes; res[j] gets row j. */
#define CE_PD_TILE ((int64_t)(64 / sizeof(CE_T)))

CE_INLINE void CE_FN(pd_tile)(const CE_T *p, ptrdiff_t sp, const CE_T *q, ptrdiff_t sq, int64_t C,
                              int64_t nb, CE_T *res, const int has_q, const int omit) {
    double Sp[CE_PD_TILE], Sq[CE_PD_TILE], h[CE_PD_TILE];
    CE_T np_[CE_PD_TILE], nq[CE_PD_TILE];
    for (int64_t j = 0; j < CE_PD_TILE; ++j) Sp[j] = Sq[j] = h[j] = 0.0;
    for (int64_t c = 0; c < C; ++c) {
        const CE_T *pc = p + c * sp, *qc = has_q ? q + c * sq : NULL;
#pragma omp simd
        for (int64_t j = 0; j < nb; ++j) {
            const CE_T pv = pc[j], qv = has_q ? qc[j] : (CE_T)0;
            const int k = CE_FN(pd_keep)(pv, qv, has_q, omit);
            Sp[j] += k ? (double)pv : 0.0;
            Sq[j] += k ? (double)qv : 0.0;
        }
    }
    for (int64_t j = 0; j < nb; ++j) {
        np_[j] = (CE_T)Sp[j];
        nq[j] = (CE_T)Sq[j];
    }
    int ext[CE_PD_TILE];
    for (int64_t j = 0; j < CE_PD_TILE; ++j) ext[j] = 0;
    for (int64_t c = 0; c < C; ++c) {
        const CE_T *pc = p + c * sp, *qc = has_q ? q + c * sq : NULL;
#pragma omp simd
        for (int64_t j = 0; j < nb; ++j) {
            const CE_T pv = pc[j], qv = has_q ? qc[j] : (CE_T)1;
            const int k = CE_FN(pd_keep)(pv, qv, has_q, omit);
            int e;
            const double t = CE_FN(pd_term)(pv / np_[j], qv / nq[j], has_q, &e);
            h[j] += k ? t : 0.0;
            ext[j] |= k & e;
        }
    }
    for (int64_t j = 0; j < nb; ++j)
        res[j] = (CE_T)(ext[j] ? CE_FN(pd_row_exact)(p + j, sp, q + j, sq, C, omit, np_[j], nq[j]) : h[j]);
}

/* has_q and omit as compile-time constants for the row and tile bodies. */
#define CE_PD_DISPATCH(call_)                 \
    do {                                      \
        if (has_q && omit) {                  \
            call_(1, 1);                      \
        } else if (has_q) {                   \
            call_(1, 0);                      \
        } else if (omit) {                    \
            call_(0, 1);                      \
        } else {                              \
            call_(0, 0);                      \
        }                                     \
    } while (0)

static void CE_FN(pd_tiled)(ce_prob_args *a) {
    const int64_t outer = a->outer, C = a->C, inner = a->inner;
    const CE_T *P = (const CE_T *)a->p, *Q = (const CE_T *)a->q;
    CE_T *out = (CE_T *)a->out;
    const int has_q = Q != NULL, omit = a->omit_nan;
    const int64_t ntiles = (inner + CE_PD_TILE - 1) / CE_PD_TILE, items = outer * ntiles;
    const int nt = ce_threads_for(a->num_threads, items, outer * C * inner);

#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t it = 0; it < items; ++it) {
        const int64_t o = it / ntiles, i0 = (it - o * ntiles) * CE_PD_TILE;
        const int64_t nb = inner - i0 < CE_PD_TILE ? inner - i0 : CE_PD_TILE;
        const CE_T *pt = P + o * a->ps_o + i0;
        const CE_T *qt = has_q ? Q + o * a->qs_o + i0 : NULL;
        CE_T *res = out + o * inner + i0;
#define CE_PD_TILE_CALL(hq, om) CE_FN(pd_tile)(pt, a->ps_c, qt, a->qs_c, C, nb, res, hq, om)
        CE_PD_DISPATCH(CE_PD_TILE_CALL);
#undef CE_PD_TILE_CALL
    }
}

int CE_FN(ce_prob)(ce_prob_args *a) {
    const int64_t outer = a->outer, C = a->C, inner = a->inner, N = outer * inner;
    const CE_T *P = (const CE_T *)a->p, *Q = (const CE_T *)a->q;
    CE_T *out = (CE_T *)a->out;
    const int has_q = Q != NULL, omit = a->omit_nan;
    if (inner >= 4 && a->ps_i == 1 && (!has_q || a->qs_i == 1)) {
        CE_FN(pd_tiled)(a);
        return CE_OK;
    }
    const int unit = a->ps_c == 1 && (!has_q || a->qs_c == 1);
    const int64_t rb = ce_rows_per_block(C);
    const int64_t nblocks = (N + rb - 1) / rb;
    const int nt = ce_threads_for(a->num_threads, nblocks, N * C);

#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int64_t blk = 0; blk < nblocks; ++blk) {
        const int64_t r_end = (blk + 1) * rb < N ? (blk + 1) * rb : N;
        for (int64_t r = blk * rb; r < r_end; ++r) {
            const int64_t o = r / inner, i = r - o * inner;
            const CE_T *pr = P + o * a->ps_o + i * a->ps_i;
            const CE_T *qr = has_q ? Q + o * a->qs_o + i * a->qs_i : NULL;
            double h = 0.0;
#define CE_PD_ROW_CALL(hq, om)                                              \
    h = unit ? CE_FN(pd_row)(pr, 1, qr, 1, C, hq, om)                       \
             : CE_FN(pd_row)(pr, a->ps_c, qr, a->qs_c, C, hq, om)
            CE_PD_DISPATCH(CE_PD_ROW_CALL);
#undef CE_PD_ROW_CALL
            out[r] = (CE_T)h;
        }
    }
    return CE_OK;
}

#undef CE_PD_DISPATCH
#undef CE_PD_TILE
