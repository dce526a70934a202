/* categorical_from_lse_impl.h — the gradient of the categorical loss from a
 * saved per-row log-sum-exp (ce_cat_args.lse, float64, as the forward stored
 * it in lse_out): one pass over the logits, p_c = exp(x_c - lse), with
 * neither the max nor the sum pass (an autograd backward after a forward
 * that kept only lse). The coefficients are the row path's (int_coef_A/B,
 * categorical_math_impl.h), so the two gradients agree to rounding.
 *
 * Accuracy: x - lse is formed as (x - hi) - lo with lse = hi + lo split at
 * the element type, so for the classes that carry the probability mass
 * (x close to lse) x - hi is exact and p has the accuracy of the float64 lse.
 * Where p > 1/2 the gradient A p - b (which cancels when b ~ A) is taken as
 * A expm1(x - lse) + (A - b), in double: for an integer target at its own
 * class (found directly), for probability targets at the one class that can
 * have p > 1/2 (found by a test in the vector loop, fixed up after it).
 *
 * Work is split into units of (row, span of CE_SPLIT_CHUNK classes), shared
 * by the threads; no unit's result depends on another's, so the gradient is
 * bitwise the same for every thread count. */

#define CE_LN2 0.693147180559945309

/* Per-row coefficients of d loss / d x_j = gs (A p_j - b_j). */
typedef struct {
    double gs;  /* upstream scale times the sample weight */
    double A;   /* A */
    double B;   /* b_y for an integer target: (1 - eps) w_y (+ eps/C w_y) */
    double AmB; /* A - B without cancellation (integer target) */
} CE_FN(lse_coef);

/* One span of n classes of a row (class j of the span is class c0 + j);
 * `yj` is the integer target's index in the span, or -1. */
CE_INLINE void CE_FN(lse_span)(const CE_FN(cat_ctx) * k, const CE_FN(lse_coef) * cf, double lse,
                               const CE_T *x, ptrdiff_t sx, const CE_T *q, ptrdiff_t sq,
                               const CE_T *w, int64_t n, int64_t yj, CE_T *g, ptrdiff_t sg,
                               const CE_T *fac) {
    const CE_T hi = (CE_T)lse, lo = (CE_T)(lse - (double)hi);
    const CE_T a = (CE_T)(cf->gs * cf->A), gs_t = (CE_T)cf->gs;
    const double xy = yj >= 0 ? (double)x[yj * sx] : 0.0; /* before g (may alias x) is written */
    if (!k->prob) {
        const CE_T b = (CE_T)(cf->gs * k->eps_c);
        if (k->eps <= 0.0) {
#pragma omp simd
            for (int64_t c = 0; c < n; ++c) {
                CE_T d = (x[c * sx] - hi) - lo;
                g[c * sg] = a * CE_EXP_NONPOS(d > 0 ? (CE_T)0 : d);
            }
        } else {
#pragma omp simd
            for (int64_t c = 0; c < n; ++c) {
                CE_T d = (x[c * sx] - hi) - lo;
                g[c * sg] = a * CE_EXP_NONPOS(d > 0 ? (CE_T)0 : d) - b * (w ? w[c] : (CE_T)1);
            }
        }
        if (yj >= 0) {
            const double d = xy - lse;
            const double gy = d > -CE_LN2 ? cf->A * expm1(d) + cf->AmB : cf->A * exp(d) - cf->B;
            g[yj * sg] = (CE_T)(cf->gs * gy);
        }
    } else {
        const CE_T eps_c = (CE_T)k->eps_c, one_m_eps = (CE_T)(1.0 - k->eps);
        for (int64_t c0 = 0; c0 < n; c0 += CE_CHUNK) {
            const int64_t c1 = c0 + CE_CHUNK < n ? c0 + CE_CHUNK : n;
            CE_T dv[CE_CHUNK]; /* x - lse of the chunk: x may be overwritten in place */
            int big = 0;
#pragma omp simd reduction(| : big)
            for (int64_t c = c0; c < c1; ++c) {
                CE_T d = (x[c * sx] - hi) - lo;
                d = d > 0 ? (CE_T)0 : d;
                dv[c - c0] = d;
                const CE_T wq = (w ? w[c] : (CE_T)1) * (one_m_eps * q[c * sq] + eps_c);
                g[c * sg] = a * CE_EXP_NONPOS(d) - gs_t * wq;
                big |= d > (CE_T)-CE_LN2;
            }
            for (int64_t c = c0; big && c < c1; ++c) {
                if (!(dv[c - c0] > (CE_T)-CE_LN2)) continue;
                const double wq = (w ? (double)w[c] : 1.0) * ((1.0 - k->eps) * (double)q[c * sq] + k->eps_c);
                g[c * sg] = (CE_T)(cf->gs * (cf->A * expm1((double)dv[c - c0]) + (cf->A - wq)));
            }
        }
    }
    if (fac) {
#pragma omp simd
        for (int64_t c = 0; c < n; ++c) g[c * sg] *= fac[c];
    }
}

/* The row's coefficients; prob_W = sum_c w_c q'_c for probability targets. */
CE_INLINE CE_FN(lse_coef) CE_FN(lse_coefs)(const CE_FN(cat_ctx) * k, double lse, int64_t y, double gs,
                                           double prob_W) {
    CE_FN(lse_coef) cf;
    cf.gs = gs;
    const int smooth = k->eps > 0.0, zl = k->lambda > 0.0;
    if (k->prob) {
        cf.A = prob_W + (zl ? 2.0 * k->lambda * lse : 0.0);
        cf.B = cf.AmB = 0.0;
        return cf;
    }
    const double wy = k->w ? (double)k->w[y] : 1.0;
    cf.A = CE_FN(int_coef_A)(k, lse, 0.0, wy, smooth, zl);
    cf.B = CE_FN(int_coef_B)(k, wy, smooth);
    cf.AmB = (smooth ? k->eps_c * (k->W - wy) : 0.0) + (zl ? 2.0 * k->lambda * wy * lse : 0.0);
    return cf;
}

/* sum_c w_c q'_c of row r (probability targets). */
static double CE_FN(lse_prob_W)(const ce_cat_args *a, const CE_FN(cat_ctx) * k, const CE_T *q) {
    double s = 0.0;
    for (int64_t c = 0; c < k->C; ++c) {
        const double qc = (1.0 - k->eps) * (double)q[c * a->qs_c] + k->eps_c;
        s += (k->w ? (double)k->w[c] : 1.0) * qc;
    }
    return s;
}

static int CE_FN(cat_from_lse)(ce_cat_args *a, const CE_FN(cat_ctx) * k, double gscale) {
    const int64_t N = a->outer * a->inner, C = a->C, inner = a->inner;
    const int64_t nch = (C + CE_SPLIT_CHUNK - 1) / CE_SPLIT_CHUNK, units = N * nch;
    const double cap = a->softcap;
    double *prob_W = NULL;
    if (k->prob && N > 0) {
        prob_W = (double *)malloc((size_t)N * sizeof(double));
        if (!prob_W) return CE_ERR_NOMEM;
    }
    const int nt = ce_threads_for(a->num_threads, units, N * C);
    int nomem = 0;
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : nomem)
    {
        /* softcap: the span's capped logits and chain-rule factors; 16-bit
         * storage: the span's logits, and its gradient in their place */
        const int use_scratch = cap > 0.0 || CE_HALF;
        CE_T *scratch = use_scratch ? (CE_T *)malloc(2 * CE_SPLIT_CHUNK * sizeof(CE_T)) : NULL;
        nomem = use_scratch && !scratch;
        if (prob_W) {
#pragma omp for schedule(static)
            for (int64_t r = 0; r < N; ++r) {
                const CE_FN(row_ptrs) p = CE_FN(locate_row)(a, r, gscale);
                prob_W[r] = CE_FN(lse_prob_W)(a, k, p.q);
            }
        }
#pragma omp for schedule(static)
        for (int64_t u = 0; u < units; ++u) {
            const int64_t r = nch == 1 ? u : u / nch, c0 = (u - r * nch) * CE_SPLIT_CHUNK;
            const int64_t n = c0 + CE_SPLIT_CHUNK < C ? CE_SPLIT_CHUNK : C - c0;
            const CE_FN(row_ptrs) p = CE_FN(locate_row)(a, r, gscale);
            const double lse = a->lse[r];
            if (p.ignored || lse != lse || (use_scratch && !scratch)) {
                /* ignored rows are never read; a NaN lse marks a NaN row */
#if CE_HALF
                CE_FN(fill_out)(a->grad, p.goff + c0 * inner, inner, n, p.ignored ? (CE_T)0 : (CE_T)NAN,
                                a->out_wide);
#else
                CE_FN(fill_span)(p.g + c0 * inner, inner, n, p.ignored ? (CE_T)0 : (CE_T)NAN);
#endif
                continue;
            }
            const CE_FN(lse_coef) cf = CE_FN(lse_coefs)(k, lse, p.y, p.gs * p.sw, prob_W ? prob_W[r] : 0.0);
            const int64_t yj = !k->prob && p.y >= c0 && p.y < c0 + n ? p.y - c0 : -1;
            const CE_S *xs0 = p.x + c0 * a->xs_c;
            const CE_T *q = p.q ? p.q + c0 * a->qs_c : NULL;
            const CE_T *w = k->w ? k->w + c0 : NULL, *fac = NULL;
            ptrdiff_t sx = a->xs_c;
#if CE_HALF
            const CE_T *x = scratch;
            CE_T *g = scratch;
            const ptrdiff_t sg = 1;
            if (cap > 0.0) {
                CE_FN(softcap_row)(xs0, sx, n, cap, scratch, scratch + CE_SPLIT_CHUNK);
                fac = scratch + CE_SPLIT_CHUNK;
            } else {
                CE_FN(load_span)(scratch, xs0, sx, n);
            }
            sx = 1;
#else
            const CE_T *x = xs0;
            CE_T *g = p.g + c0 * inner;
            const ptrdiff_t sg = inner;
            if (scratch) {
                CE_FN(softcap_row)(x, sx, n, cap, scratch, scratch + CE_SPLIT_CHUNK);
                x = scratch, sx = 1, fac = scratch + CE_SPLIT_CHUNK;
            }
#endif
            if (sx == 1 && sg == 1 && (!q || a->qs_c == 1))
                CE_FN(lse_span)(k, &cf, lse, x, 1, q, 1, w, n, yj, g, 1, fac);
            else
                CE_FN(lse_span)(k, &cf, lse, x, sx, q, a->qs_c, w, n, yj, g, sg, fac);
#if CE_HALF
            CE_FN(store_span)(a->grad, p.goff + c0 * inner, inner, scratch, n, a->out_wide);
#endif
        }
        free(scratch);
    }
    free(prob_W);
    return nomem ? CE_ERR_NOMEM : CE_OK;
}

#undef CE_LN2
