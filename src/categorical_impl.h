/* categorical_impl.h — the categorical cross-entropy kernel, written once and
 * instantiated per dtype: include it with
 *     CE_T     element type (float | double)
 *     CE_SFX   name suffix  (f32   | f64)
 *     CE_EXP   vector-friendly exp for CE_T
 *     CE_EXP_NONPOS  the same for arguments <= 0 (cheaper)
 * Scalars per row (sums, losses, scales) are kept in double for both dtypes.
 *
 * Per row (sample) r, with x the row of logits (after soft-capping):
 *   pass 1  m = max x, and whether the row holds NaN (or +inf / all -inf);
 *   pass 2  e_c = exp(x_c - m), written straight into the gradient row when a
 *           gradient is wanted (so it is computed once), and the sums
 *           s' = sum_{x_c < m} e_c + (#{x_c == m} - 1)  -- i.e. sum e - 1
 *           without cancellation -- plus the dot products smoothing needs;
 *   then    log-sum-exp lse = m + log1p(s'), loss from (m - x) + log1p(s');
 *   pass 3  gradient in place of e: g_c = scale * (A e_c / (1 + s') - b_c),
 *           with p_c - 1 taken as -s'/(1 + s') wherever e_c == 1 so the
 *           true-class gradient of a confident row keeps relative accuracy.
 * The row is cache-resident after pass 1, so DRAM sees one read of the
 * logits and one write of the gradient. */

#define CE_FN(name) CE_CAT(name, CE_CAT(_, CE_SFX))

/* Row sums are accumulated in CE_T over chunks of CE_CHUNK elements (full
 * vector width, no conversions in the hot loop) and folded into double per
 * chunk, so the rounding error is that of a 256-term sum whatever C is. */
#ifndef CE_CHUNK
#define CE_CHUNK 256
#endif

/* Everything that is constant over the rows of one call. */
typedef struct {
    int64_t C;
    const CE_T *w;    /* class weights or NULL */
    double W;         /* sum of class weights (C without weights) */
    double eps;       /* label smoothing */
    double eps_c;     /* eps / C */
    double lambda;    /* z-loss */
    double cap;       /* softcap, 0 = off */
} CE_FN(cat_ctx);

/* What one row produces. */
typedef struct {
    double loss;
} CE_FN(row_out);

CE_INLINE void CE_FN(fill_row)(CE_T *g, ptrdiff_t sg, int64_t C, CE_T v) {
    for (int64_t c = 0; c < C; ++c) g[c * sg] = v;
}

/* One row. Strides are element strides; the caller specialises the
 * all-unit-stride case so that the loops vectorise. `fac` (softcap only) holds
 * the chain-rule factors 1 - tanh^2 written by the capping pass. */
CE_INLINE double CE_FN(cat_row)(const CE_FN(cat_ctx) * k, const CE_T *x, ptrdiff_t sx,
                                const CE_T *q, ptrdiff_t sq, int64_t y, CE_T *g, ptrdiff_t sg,
                                const CE_T *fac, double sw, double gscale) {
    const int64_t C = k->C;
    const CE_T *w = k->w;

    /* pass 1: max, and NaN detection (a NaN never wins a > comparison) */
    CE_T m = -INFINITY;
    int bad = 0;
#pragma omp simd reduction(max : m) reduction(| : bad)
    for (int64_t c = 0; c < C; ++c) {
        CE_T v = x[c * sx];
        m = v > m ? v : m;
        bad |= (v != v);
    }
    if (bad || m == INFINITY || m == -INFINITY) {
        if (g) CE_FN(fill_row)(g, sg, C, (CE_T)NAN);
        return NAN;
    }
    /* in place (g == x) pass 2 overwrites x: read the target logit first */
    const double xy = q ? 0.0 : (double)x[y * sx];

    /* pass 2: exponentials and sums, in chunks (see CE_CHUNK) */
    double s_less = 0.0, n_max = 0.0, dot = 0.0, Q = 0.0;
    const CE_T eps_c = (CE_T)k->eps_c, one_m_eps = (CE_T)(1.0 - k->eps);
    const int smooth = k->eps > 0.0;
    for (int64_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
        const int64_t c1 = c0 + CE_CHUNK < C ? c0 + CE_CHUNK : C;
        CE_T cs = 0, cn = 0, cd = 0, cq = 0;
        if (!q && !smooth) {
#pragma omp simd reduction(+ : cs, cn)
            for (int64_t c = c0; c < c1; ++c) {
                CE_T d = x[c * sx] - m;
                CE_T e = CE_EXP_NONPOS(d);
                if (g) g[c * sg] = e;
                cs += d < 0 ? e : (CE_T)0;
                cn += d == 0 ? (CE_T)1 : (CE_T)0;
            }
        } else if (!q) { /* integer target with label smoothing: sum_c w_c (m - x_c) */
#pragma omp simd reduction(+ : cs, cn, cd)
            for (int64_t c = c0; c < c1; ++c) {
                CE_T d = x[c * sx] - m;
                CE_T e = CE_EXP_NONPOS(d);
                if (g) g[c * sg] = e;
                cs += d < 0 ? e : (CE_T)0;
                cn += d == 0 ? (CE_T)1 : (CE_T)0;
                cd += (w ? w[c] : (CE_T)1) * -d;
            }
        } else { /* probability target: sum_c w_c q'_c (m - x_c), 0 log 0 = 0 */
#pragma omp simd reduction(+ : cs, cn, cd, cq)
            for (int64_t c = c0; c < c1; ++c) {
                CE_T d = x[c * sx] - m;
                CE_T e = CE_EXP_NONPOS(d);
                if (g) g[c * sg] = e;
                cs += d < 0 ? e : (CE_T)0;
                cn += d == 0 ? (CE_T)1 : (CE_T)0;
                CE_T qc = one_m_eps * q[c * sq] + eps_c;
                CE_T wq = (w ? w[c] : (CE_T)1) * qc;
                cq += wq;
                cd += qc == 0 ? (CE_T)0 : wq * -d;
            }
        }
        s_less += (double)cs;
        n_max += (double)cn;
        dot += (double)cd;
        Q += (double)cq;
    }
    const double sp = s_less + (n_max - 1.0); /* sum exp(x - m) - 1 */
    const double S = 1.0 + sp;
    const double L1 = log1p(sp);
    const double lse = (double)m + L1;

    /* loss */
    double loss, A, Bself, wy = 1.0;
    if (!q) {
        wy = w ? (double)w[y] : 1.0;
        loss = (1.0 - k->eps) * wy * (((double)m - xy) + L1);
        if (smooth) loss += k->eps_c * (dot + k->W * L1);
        if (k->lambda > 0.0) loss += wy * k->lambda * lse * lse;
        /* d loss / d x_j = A p_j - (1-eps) w_y [j == y] - eps/C w_j */
        A = (1.0 - k->eps) * wy + k->eps_c * k->W + 2.0 * k->lambda * wy * lse;
        Bself = (1.0 - k->eps) * wy + k->eps_c * wy; /* the subtracted term at j == y */
    } else {
        loss = dot + Q * L1;
        if (k->lambda > 0.0) loss += k->lambda * lse * lse;
        /* d loss / d x_j = A p_j - w_j q'_j */
        A = Q + 2.0 * k->lambda * lse;
        Bself = 0.0;
    }
    loss *= sw;
    if (!g) return loss;

    /* pass 3: gradient, in place of the exponentials */
    const double gs = gscale * sw;
    const CE_T a = (CE_T)(gs * A / S);
    const CE_T near_one = (CE_T)(gs * A * (-sp / S)); /* A (p - 1) where e == 1 */
    const CE_T gs_t = (CE_T)gs;
    if (!q) {
        const double gy_e = (double)g[y * sg];
        if (!smooth) {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) g[c * sg] = a * g[c * sg];
        } else {
            const CE_T b = (CE_T)(gs * k->eps_c);
#pragma omp simd
            for (int64_t c = 0; c < C; ++c)
                g[c * sg] = a * g[c * sg] - b * (w ? w[c] : (CE_T)1);
        }
        /* the true class: A p_y - Bself, accurately when p_y ~ 1 */
        const double gy = gy_e == 1.0 ? gs * (A * (-sp / S) + (A - Bself))
                                      : gs * (A * gy_e / S - Bself);
        g[y * sg] = (CE_T)gy;
    } else {
        const CE_T gsA = (CE_T)(gs * A);
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) {
            CE_T e = g[c * sg];
            CE_T qc = one_m_eps * q[c * sq] + eps_c;
            CE_T wq = (w ? w[c] : (CE_T)1) * qc;
            /* A p - wq, and where e == 1 (p ~ 1): A (p - 1) + (A - wq) */
            g[c * sg] = e == (CE_T)1 ? near_one + (gsA - gs_t * wq) : a * e - gs_t * wq;
        }
    }
    if (fac) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) g[c * sg] *= fac[c];
    }
    (void)wy;
    return loss;
}

/* Specialise the row for unit strides and for loss-only calls, so that the
 * compiler sees constant strides and no per-element "is there a gradient"
 * test in the hot loops. */
CE_INLINE double CE_FN(cat_row_any)(const CE_FN(cat_ctx) * k, const CE_T *x, ptrdiff_t sx,
                                    const CE_T *q, ptrdiff_t sq, int64_t y, CE_T *g, ptrdiff_t sg,
                                    const CE_T *fac, double sw, double gscale) {
    if (sx == 1 && sg == 1 && (!q || sq == 1)) {
        return g ? CE_FN(cat_row)(k, x, 1, q, 1, y, g, 1, fac, sw, gscale)
                 : CE_FN(cat_row)(k, x, 1, q, 1, y, NULL, 1, fac, sw, gscale);
    }
    return g ? CE_FN(cat_row)(k, x, sx, q, sq, y, g, sg, fac, sw, gscale)
             : CE_FN(cat_row)(k, x, sx, q, sq, y, NULL, sg, fac, sw, gscale);
}

/* Soft-capping: xc = cap * tanh(x / cap) into scratch, and the chain-rule
 * factor 1 - tanh^2(x / cap) = 4a / (1 + a)^2 with a = exp(-2|x / cap|),
 * which keeps relative accuracy where tanh rounds to +-1. */
static void CE_FN(softcap_row)(const CE_T *x, ptrdiff_t sx, int64_t C, double cap, CE_T *xc,
                               CE_T *fac) {
    for (int64_t c = 0; c < C; ++c) {
        double u = (double)x[c * sx] / cap;
        double a = exp(-2.0 * fabs(u));
        xc[c] = (CE_T)(cap * tanh(u));
        fac[c] = (CE_T)(4.0 * a / ((1.0 + a) * (1.0 + a)));
    }
}

/* Validate integer targets (the first offending flat position wins) and
 * compute the "mean" denominator, before anything is written. */
static int CE_FN(cat_prepass)(ce_cat_args *a, double *denom) {
    const int64_t N = a->outer * a->inner, C = a->C;
    const CE_T *w = (const CE_T *)a->weight;
    const CE_T *sw = (const CE_T *)a->sample_weight;
    double d = 0.0;
    if (a->target) {
        for (int64_t r = 0; r < N; ++r) {
            int64_t y = a->target[r];
            if (y == a->ignore_index) continue;
            if (y < 0 || y >= C) {
                a->err_pos = r;
                a->err_val = y;
                return CE_ERR_TARGET_INDEX;
            }
            d += (sw ? (double)sw[r] : 1.0) * (w ? (double)w[y] : 1.0);
        }
    } else if (sw) {
        for (int64_t r = 0; r < N; ++r) d += (double)sw[r];
    } else {
        d = (double)N;
    }
    *denom = d;
    return CE_OK;
}

int CE_FN(ce_categorical)(ce_cat_args *a) {
    const int64_t outer = a->outer, C = a->C, inner = a->inner, N = outer * inner;
    double denom = 0.0;
    int rc = CE_FN(cat_prepass)(a, &denom);
    if (rc != CE_OK) return rc;

    CE_FN(cat_ctx) k;
    k.C = C;
    k.w = (const CE_T *)a->weight;
    k.W = (double)C;
    if (k.w) {
        k.W = 0.0;
        for (int64_t c = 0; c < C; ++c) k.W += (double)k.w[c];
    }
    k.eps = a->label_smoothing;
    k.eps_c = a->label_smoothing / (double)C;
    k.lambda = a->z_loss;
    k.cap = a->softcap;

    /* upstream scale of the gradient */
    double gscale = a->grad_output_scalar;
    if (a->reduction == CE_RED_MEAN) gscale = denom != 0.0 ? gscale / denom : NAN;

    const CE_T *x = (const CE_T *)a->x;
    const CE_T *q = (const CE_T *)a->q;
    const CE_T *sw = (const CE_T *)a->sample_weight;
    const CE_T *go = (const CE_T *)a->grad_output;
    CE_T *g = (CE_T *)a->grad;
    CE_T *loss_out = (CE_T *)a->loss_out;

    const int64_t rb = ce_rows_per_block(C);
    const int64_t nblocks = (N + rb - 1) / rb;
    double *partial = NULL;
    if (a->reduction != CE_RED_NONE && nblocks > 0) {
        partial = (double *)malloc((size_t)nblocks * sizeof(double));
        if (!partial) return CE_ERR_NOMEM;
    }
    const int nt = ce_threads_for(a->num_threads, nblocks, N * C);
    int nomem = 0;

#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : nomem)
    {
        CE_T *scratch = NULL;
        if (k.cap > 0.0) {
            scratch = (CE_T *)malloc((size_t)(2 * C) * sizeof(CE_T));
            nomem |= scratch == NULL;
        }
        if (!nomem || k.cap <= 0.0) {
#pragma omp for schedule(static)
            for (int64_t b = 0; b < nblocks; ++b) {
                double acc = 0.0;
                const int64_t r_end = (b + 1) * rb < N ? (b + 1) * rb : N;
                for (int64_t r = b * rb; r < r_end; ++r) {
                    const int64_t o = r / inner, i = r - o * inner;
                    const int64_t y = a->target ? a->target[r] : 0;
                    CE_T *grow = g ? g + o * C * inner + i : NULL;
                    double loss;
                    if (a->target && y == a->ignore_index) {
                        /* ignored samples are never read: loss 0, gradient 0 */
                        if (grow) CE_FN(fill_row)(grow, inner, C, (CE_T)0);
                        loss = 0.0;
                    } else {
                        const CE_T *xrow = x + o * a->xs_o + i * a->xs_i;
                        const CE_T *qrow = q ? q + o * a->qs_o + i * a->qs_i : NULL;
                        const double swr = sw ? (double)sw[r] : 1.0;
                        const double gsr = go ? (double)go[r] : gscale;
                        if (scratch) {
                            CE_FN(softcap_row)(xrow, a->xs_c, C, k.cap, scratch, scratch + C);
                            xrow = scratch;
                        }
                        loss = CE_FN(cat_row_any)(&k, xrow, scratch ? 1 : a->xs_c, qrow, a->qs_c, y,
                                                  grow, inner, scratch ? scratch + C : NULL, swr,
                                                  gsr);
                    }
                    if (loss_out) loss_out[r] = (CE_T)loss;
                    acc += loss;
                }
                if (partial) partial[b] = acc;
            }
        }
        free(scratch);
    }
    if (nomem) {
        free(partial);
        return CE_ERR_NOMEM;
    }
    if (partial) {
        double total = ce_pairwise_sum(partial, nblocks);
        a->loss = a->reduction == CE_RED_MEAN ? (denom != 0.0 ? total / denom : NAN) : total;
        free(partial);
    } else {
        a->loss = a->reduction == CE_RED_MEAN ? NAN : 0.0;
    }
    return CE_OK;
}

#undef CE_FN
