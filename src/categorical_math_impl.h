/* categorical_math_impl.h — the categorical cross-entropy of one row (or one
 * span of a row), shared by the row, tile and class-split drivers. Scalars per
 * row (sums, losses, scales) are kept in double for both dtypes.
 *
 * Per row (sample), with x the row of logits (after soft-capping):
 *   pass 1  m = max x, and whether the row holds NaN or +inf;
 *   pass 2  e_c = exp(x_c - m), written straight into the gradient row when a
 *           gradient is wanted (so exp runs once per element), and the sums
 *           s' = sum_{x_c < m} e_c + (#{x_c == m} - 1)  -- i.e. sum e - 1
 *           without cancellation -- plus the dot products smoothing needs;
 *   then    lse = m + log1p(s'), and lse - x_y = (m - x_y) + log1p(s'), so a
 *           loss of 1e-12 keeps its relative accuracy;
 *   pass 3  the gradient in place of e: g_c = scale * (A e_c / (1 + s') - b_c),
 *           with p_c - 1 taken as -s'/(1 + s') wherever e_c == 1 so the
 *           true-class gradient of a confident row is not lost to cancellation.
 * The row is cache-resident after pass 1, so DRAM sees one read of the logits
 * and one write of the gradient. */

/* Everything that is constant over the rows of one call. */
typedef struct {
    int64_t C;
    const CE_T *w;  /* class weights or NULL */
    double W;       /* sum of class weights (C without weights) */
    double eps;     /* label smoothing */
    double eps_c;   /* eps / C */
    double lambda;  /* z-loss */
    int prob;       /* probability targets */
} CE_FN(cat_ctx);

/* Statistics of a span of a row (the whole row, or one chunk of a split row),
 * relative to the span's own maximum r. */
typedef struct {
    CE_T r;        /* the span's max; 0 if the span is all -inf ("empty") */
    int bad;       /* NaN or +inf in the span */
    int empty;     /* every element is -inf */
    double s_less; /* sum of exp(x - r) over x < r */
    double n_max;  /* number of x == r */
    double dot;    /* sum w (r - x) [smoothing], or sum_{q' != 0} w q' (r - x) [prob] */
    double W;      /* sum w [smoothing], or sum w q' [prob] over the span */
} CE_FN(span_stats);

/* The per-row coefficients of the gradient. */
typedef struct {
    double gs;    /* upstream scale times the sample weight (1 if that is not finite) */
    double post;  /* ... and that scale when it is not finite (else 1), applied last */
    double A;     /* g_j = gs (A p_j - b_j) */
    double Bself; /* b_y for an integer target (the subtracted term at j == y) */
    double S, sp; /* sum exp(x - m) = 1 + s' */
    CE_T m;       /* the row max */
    int bad;      /* NaN / +inf / all -inf row (split path) */
} CE_FN(row_coef);

CE_INLINE void CE_FN(fill_span)(CE_T *g, ptrdiff_t sg, int64_t n, CE_T v) {
    for (int64_t c = 0; c < n; ++c) g[c * sg] = v;
}

/* Passes 1 and 2 over n elements: statistics, and e = exp(x - r) into g. */
CE_INLINE void CE_FN(scan_span)(const CE_FN(cat_ctx) * k, const CE_T *x, ptrdiff_t sx,
                                 const CE_T *q, ptrdiff_t sq, const CE_T *w, int64_t n, CE_T *g,
                                 ptrdiff_t sg, CE_FN(span_stats) * st, const ce_prefetch *pf) {
    /* pass 1: max, and NaN detection */
    int bad;
    const CE_T m = CE_FN(row_max)(x, sx, n, &bad);
    st->bad = bad || m == INFINITY;
    st->empty = m == -INFINITY;
    st->s_less = st->n_max = st->dot = st->W = 0.0;
    st->r = 0;
    if (st->bad) return;
    /* a masked (all -inf) span gets any finite reference: its e are all 0 */
    const CE_T r = st->empty ? (CE_T)0 : m;
    st->r = r;

    /* pass 2: exponentials and sums, in chunks (see rowscan_impl.h) */
    if (!k->prob && k->eps <= 0.0) {
        CE_FN(row_expsum)(x, sx, n, r, g, sg, &st->s_less, &st->n_max, pf);
        return;
    }
    const CE_T eps_c = (CE_T)k->eps_c, one_m_eps = (CE_T)(1.0 - k->eps);
    for (int64_t c0 = 0; c0 < n; c0 += CE_CHUNK) {
        const int64_t c1 = c0 + CE_CHUNK < n ? c0 + CE_CHUNK : n;
        if (pf) ce_prefetch_bytes(pf, c0 * (int64_t)sizeof(CE_S), c1 * (int64_t)sizeof(CE_S));
        CE_T cs = 0, cn = 0, cw = 0;
        double cd = 0.0; /* in double: in float32, r - x may exceed FLT_MAX */
        if (!k->prob) { /* integer target with label smoothing */
#pragma omp simd reduction(+ : cs, cn, cd, cw)
            for (int64_t c = c0; c < c1; ++c) {
                const CE_T xv = x[c * sx]; /* read before g (may alias x) is written */
                CE_T d = xv - r;
                CE_T e = CE_EXP_NONPOS(d);
                if (g) g[c * sg] = e;
                cs += CE_FN(keep_if)(e, d < 0);
                cn += d == 0 ? (CE_T)1 : (CE_T)0;
                CE_T wc = w ? w[c] : (CE_T)1;
                /* 0 where w or r - x is 0: an infinite weight at the max
                 * contributes its w L1 (below), not inf * 0 */
                cd += wc == 0 || d == 0 ? 0.0 : (double)wc * ((double)r - (double)xv);
                cw += wc;
            }
        } else { /* probability target: 0 log 0 = 0 */
#pragma omp simd reduction(+ : cs, cn, cd, cw)
            for (int64_t c = c0; c < c1; ++c) {
                const CE_T xv = x[c * sx]; /* read before g (may alias x) is written */
                CE_T d = xv - r;
                CE_T e = CE_EXP_NONPOS(d);
                if (g) g[c * sg] = e;
                cs += CE_FN(keep_if)(e, d < 0);
                cn += d == 0 ? (CE_T)1 : (CE_T)0;
                CE_T qc = one_m_eps * q[c * sq] + eps_c;
                CE_T wq = (w ? w[c] : (CE_T)1) * qc;
                cw += wq;
                /* a zero coefficient contributes 0, even against a -inf logit */
                cd += wq == 0 || d == 0 ? 0.0 : (double)wq * ((double)r - (double)xv);
            }
        }
        st->s_less += (double)cs;
        st->n_max += (double)cn;
        st->dot += cd;
        st->W += (double)cw;
    }
}

/* An integer-target row's loss (before the sample weight) and gradient
 * coefficients A and B (d loss / d x_j = A p_j - B [j == y] - eps/C w_j),
 * from m = row max, L1 = log1p(s'), dot relative to m, the target logit xy
 * and its class weight wy. `smooth` (eps > 0) and `zl` (lambda > 0) are
 * passed in so that the tile path (categorical_tile_impl.h) can make them
 * constants: GCC 12 does not vectorise a select on a loop-invariant flag. */
CE_INLINE double CE_FN(int_loss)(const CE_FN(cat_ctx) * k, double m, double L1, double dot,
                                 double xy, double wy, const int smooth, const int zl) {
    const double lse = m + L1;
    const double ct = (1.0 - k->eps) * wy; /* a zero coefficient masks a -inf target */
    double loss = ct == 0.0 ? 0.0 : ct * ((m - xy) + L1);
    if (smooth) loss += k->eps_c * (dot + k->W * L1);
    if (zl) loss += wy * k->lambda * lse * lse;
    return loss;
}

/* The gradient's coefficients are computed in the element type (the tile
 * path does so for a tile of rows in vector lanes, which double operands
 * would halve); the loss is summed, so it stays in double.
 * (the smoothing terms only with smoothing: 0 * a NaN weight is NaN) */
CE_INLINE CE_T CE_FN(int_coef_A)(const CE_FN(cat_ctx) * k, CE_T m, CE_T L1, CE_T wy, const int smooth,
                                 const int zl) {
    CE_T a = (CE_T)(1.0 - k->eps) * wy;
    if (smooth) a += (CE_T)(k->eps_c * k->W);
    if (zl) a += (CE_T)(2.0 * k->lambda) * wy * (m + L1);
    return a;
}

CE_INLINE CE_T CE_FN(int_coef_B)(const CE_FN(cat_ctx) * k, CE_T wy, const int smooth) {
    return smooth ? (CE_T)(1.0 - k->eps) * wy + (CE_T)k->eps_c * wy : (CE_T)(1.0 - k->eps) * wy;
}

/* The upstream scale g of a row's gradient, as gs (folded into the
 * coefficients) and post (a factor applied last): an infinite g times
 * (A p_j - b_j) is +-inf by the sign of the bracket, as the formula says,
 * where folded in it would be inf - inf. */
CE_INLINE void CE_FN(split_scale)(CE_T g, CE_T *gs, CE_T *post) {
    const int finite = g - g == 0; /* NaN for +-inf and NaN */
    *gs = finite ? g : (CE_T)1;
    *post = finite ? (CE_T)1 : g;
}

CE_INLINE void CE_FN(scale_span)(CE_T *g, ptrdiff_t sg, int64_t n, CE_T f) {
    for (int64_t c = 0; c < n; ++c) g[c * sg] *= f;
}

/* The row's loss and gradient coefficients from its merged statistics:
 * m = row max, sp = s', L1 = log1p(s'), dot and W relative to m. */
CE_INLINE double CE_FN(row_finish)(const CE_FN(cat_ctx) * k, CE_T m, double sp, double L1, double dot,
                                   double W, double xy, int64_t y, double sw, double gscale,
                                   CE_FN(row_coef) * cf) {
    double loss;
    if (!k->prob) {
        const double wy = k->w ? (double)k->w[y] : 1.0;
        const int smooth = k->eps > 0.0, zl = k->lambda > 0.0;
        loss = CE_FN(int_loss)(k, (double)m, L1, dot, xy, wy, smooth, zl);
        cf->A = (double)CE_FN(int_coef_A)(k, m, (CE_T)L1, (CE_T)wy, smooth, zl);
        cf->Bself = (double)CE_FN(int_coef_B)(k, (CE_T)wy, smooth);
    } else {
        const double lse = (double)m + L1;
        loss = dot + W * L1;
        if (k->lambda > 0.0) loss += k->lambda * lse * lse;
        /* d loss / d x_j = A p_j - w_j q'_j */
        cf->A = W + 2.0 * k->lambda * lse;
        cf->Bself = 0.0;
    }
    CE_T gs, post;
    CE_FN(split_scale)((CE_T)(gscale * sw), &gs, &post);
    cf->gs = (double)gs;
    cf->post = (double)post;
    cf->S = 1.0 + sp;
    cf->sp = sp;
    cf->m = m;
    return loss * sw;
}

/* Pass 3 over n elements holding e = exp(x - r): the gradient in their place.
 * f = exp(r - m) rescales a chunk's e to the row max; `top` says r == m (only
 * there can e == 1 mean p ~ 1). The integer target's own entry is fixed up by
 * the caller (target_grad). */
/* The factor of e in every entry of an integer target's gradient but its own
 * (before the smoothing term): gs A f / S. */
CE_INLINE CE_T CE_FN(grad_factor)(const CE_FN(row_coef) * cf, double f) {
    return (CE_T)(cf->gs * cf->A * f * (1.0 / cf->S));
}

CE_INLINE void CE_FN(span_grad)(const CE_FN(cat_ctx) * k, const CE_FN(row_coef) * cf, double f,
                                int top, const CE_T *q, ptrdiff_t sq, const CE_T *w, int64_t n,
                                CE_T *g, ptrdiff_t sg, const CE_T *fac) {
    const double gs = cf->gs;
    const CE_T a = CE_FN(grad_factor)(cf, f);
    if (!k->prob) {
        if (k->eps <= 0.0) {
#pragma omp simd
            for (int64_t c = 0; c < n; ++c) g[c * sg] = a * g[c * sg];
        } else {
            const CE_T b = (CE_T)(gs * k->eps_c);
#pragma omp simd
            for (int64_t c = 0; c < n; ++c) g[c * sg] = a * g[c * sg] - b * (w ? w[c] : (CE_T)1);
        }
    } else {
        const CE_T eps_c = (CE_T)k->eps_c, one_m_eps = (CE_T)(1.0 - k->eps);
        const CE_T near_one = (CE_T)(gs * cf->A * (-cf->sp * (1.0 / cf->S))); /* A (p - 1) at e == 1 */
        const CE_T gsA = (CE_T)(gs * cf->A), gs_t = (CE_T)gs;
        /* the p ~ 1 form only where it is one: at the row max, when p_max > 1/2
         * (elsewhere it would cancel instead); e never equals 2 */
        const CE_T one = top && cf->S < 2.0 ? (CE_T)1 : (CE_T)2;
#pragma omp simd
        for (int64_t c = 0; c < n; ++c) {
            CE_T e = g[c * sg];
            CE_T qc = one_m_eps * q[c * sq] + eps_c;
            CE_T wq = (w ? w[c] : (CE_T)1) * qc;
            /* A p - wq, and where p ~ 1: A (p - 1) + (A - wq) */
            g[c * sg] = e == one ? near_one + (gsA - gs_t * wq) : a * e - gs_t * wq;
        }
    }
    if (fac) {
#pragma omp simd
        for (int64_t c = 0; c < n; ++c) g[c * sg] *= fac[c];
    }
}

/* The integer target's gradient gs (A p_y - B), accurately when p_y ~ 1:
 * e_y = exp(x_y - r) as pass 2 stored it, f = exp(r - m), S = 1 + s',
 * inv = 1 / S (one division per row, shared with the other entries). */
CE_INLINE CE_T CE_FN(target_grad_k)(CE_T gs, CE_T A, CE_T B, CE_T S, CE_T inv, CE_T sp, CE_T e_y, CE_T f,
                                    int top) {
    return top && e_y == 1 && S < 2 ? gs * (A * (-sp * inv) + (A - B)) : gs * (A * e_y * f * inv - B);
}

/* (times the row's post scale and the soft-cap factor) */
CE_INLINE CE_T CE_FN(target_grad)(const CE_FN(row_coef) * cf, double e_y, double f, int top,
                                  CE_T fac_y) {
    const CE_T S = (CE_T)cf->S;
    const CE_T v = CE_FN(target_grad_k)((CE_T)cf->gs, (CE_T)cf->A, (CE_T)cf->Bself, S, (CE_T)1 / S,
                                        (CE_T)cf->sp, (CE_T)e_y, (CE_T)f, top);
    return v * (CE_T)cf->post * fac_y;
}

/* Where row r's data starts (g: at element goff of the gradient). */
typedef struct {
    const CE_S *x;
    const CE_T *q;
    CE_S *g;
    int64_t goff;
    int ignored;
    int64_t y;
    double sw, gs;
} CE_FN(row_ptrs);

CE_INLINE CE_FN(row_ptrs) CE_FN(locate_row)(const ce_cat_args *a, int64_t r, double gscale) {
    CE_FN(row_ptrs) p;
    /* a 64-bit division costs ~40 cycles, more than a 10-class row's arithmetic */
    const int64_t o = a->inner == 1 ? r : r / a->inner, i = r - o * a->inner;
    p.x = (const CE_S *)a->x + o * a->xs_o + i * a->xs_i;
    p.q = a->q ? (const CE_T *)a->q + o * a->qs_o + i * a->qs_i : NULL;
    p.goff = o * a->C * a->inner + i;
    p.g = a->grad ? (CE_S *)a->grad + p.goff : NULL;
    p.y = a->target ? a->target[r] : 0;
    p.ignored = a->target && p.y == a->ignore_index;
    p.sw = a->sample_weight ? (double)((const CE_T *)a->sample_weight)[r] : 1.0;
    p.gs = a->grad_output ? (double)((const CE_T *)a->grad_output)[r] : gscale;
    return p;
}
