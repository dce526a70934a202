/* categorical_impl.h — the categorical cross-entropy kernel, written once and
 * instantiated per dtype: include it with
 *     CE_T           element type (float | double)
 *     CE_SFX         name suffix  (f32_<isa> | f64_<isa>)
 *     CE_EXP_NONPOS  vector-friendly exp for arguments <= 0
 * Scalars per row (sums, losses, scales) are kept in double for both dtypes.
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
 * and one write of the gradient.
 *
 * Work is split into fixed blocks of rows (ce_rows_per_block, a function of C
 * only) and per-block loss partials are combined in a fixed order, so results
 * are bitwise identical for every thread count. When there are only a few
 * huge rows, each row is cut into fixed chunks of CE_SPLIT_CHUNK classes that
 * threads share; the chunks' statistics are merged in chunk order. */

#define CE_FN(name) CE_CAT(name, CE_CAT(_, CE_SFX))

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
    double gs;    /* upstream scale times the sample weight */
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
        if (pf) ce_prefetch_bytes(pf, c0 * (int64_t)sizeof(CE_T), c1 * (int64_t)sizeof(CE_T));
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
                cd += wc == 0 ? 0.0 : (double)wc * ((double)r - (double)xv);
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
                cd += wq == 0 ? 0.0 : (double)wq * ((double)r - (double)xv);
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

/* (the smoothing terms only with smoothing: 0 * a NaN weight is NaN) */
CE_INLINE double CE_FN(int_coef_A)(const CE_FN(cat_ctx) * k, double m, double L1, double wy,
                                   const int smooth, const int zl) {
    double a = (1.0 - k->eps) * wy;
    if (smooth) a += k->eps_c * k->W;
    if (zl) a += 2.0 * k->lambda * wy * (m + L1);
    return a;
}

CE_INLINE double CE_FN(int_coef_B)(const CE_FN(cat_ctx) * k, double wy, const int smooth) {
    return smooth ? (1.0 - k->eps) * wy + k->eps_c * wy : (1.0 - k->eps) * wy;
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
        cf->A = CE_FN(int_coef_A)(k, (double)m, L1, wy, smooth, zl);
        cf->Bself = CE_FN(int_coef_B)(k, wy, smooth);
    } else {
        const double lse = (double)m + L1;
        loss = dot + W * L1;
        if (k->lambda > 0.0) loss += k->lambda * lse * lse;
        /* d loss / d x_j = A p_j - w_j q'_j */
        cf->A = W + 2.0 * k->lambda * lse;
        cf->Bself = 0.0;
    }
    cf->gs = gscale * sw;
    cf->S = 1.0 + sp;
    cf->sp = sp;
    cf->m = m;
    return loss * sw;
}

/* Pass 3 over n elements holding e = exp(x - r): the gradient in their place.
 * f = exp(r - m) rescales a chunk's e to the row max; `top` says r == m (only
 * there can e == 1 mean p ~ 1). The integer target's own entry is fixed up by
 * the caller (target_grad). */
CE_INLINE void CE_FN(span_grad)(const CE_FN(cat_ctx) * k, const CE_FN(row_coef) * cf, double f,
                                int top, const CE_T *q, ptrdiff_t sq, const CE_T *w, int64_t n,
                                CE_T *g, ptrdiff_t sg, const CE_T *fac) {
    const double gs = cf->gs;
    const CE_T a = (CE_T)(gs * cf->A * f / cf->S);
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
        const CE_T near_one = (CE_T)(gs * cf->A * (-cf->sp / cf->S)); /* A (p - 1) at e == 1 */
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
 * e_y = exp(x_y - r) as pass 2 stored it, f = exp(r - m), S = 1 + s'. */
CE_INLINE double CE_FN(target_grad_k)(double gs, double A, double B, double S, double sp,
                                      double e_y, double f, int top) {
    return top && e_y == 1.0 && S < 2.0 ? gs * (A * (-sp / S) + (A - B)) : gs * (A * e_y * f / S - B);
}

CE_INLINE CE_T CE_FN(target_grad)(const CE_FN(row_coef) * cf, double e_y, double f, int top,
                                  CE_T fac_y) {
    return (CE_T)CE_FN(target_grad_k)(cf->gs, cf->A, cf->Bself, cf->S, cf->sp, e_y, f, top) * fac_y;
}

/* One whole row on one thread. `fac` (softcap only) holds the chain-rule
 * factors written by the capping pass. */
CE_INLINE double CE_FN(cat_row)(const CE_FN(cat_ctx) * k, const CE_T *x, ptrdiff_t sx,
                                const CE_T *q, ptrdiff_t sq, int64_t y, CE_T *g, ptrdiff_t sg,
                                const CE_T *fac, double sw, double gscale, const ce_prefetch *pf) {
    const int64_t C = k->C;
    /* in place (g == x) pass 2 overwrites x: read the target logit first */
    const double xy = k->prob ? 0.0 : (double)x[y * sx];
    CE_FN(span_stats) st;
    CE_FN(scan_span)(k, x, sx, q, sq, k->w, C, g, sg, &st, pf);
    if (st.bad || st.empty) {
        if (g) CE_FN(fill_span)(g, sg, C, (CE_T)NAN);
        return NAN;
    }
    CE_FN(row_coef) cf;
    const double sp = st.s_less + (st.n_max - 1.0);
    const double loss = CE_FN(row_finish)(k, st.r, sp, log1p(sp), st.dot, st.W, xy,
                                          y, sw, gscale, &cf);
    if (!g) return loss;
    const double e_y = k->prob ? 0.0 : (double)g[y * sg];
    CE_FN(span_grad)(k, &cf, 1.0, 1, q, sq, k->w, C, g, sg, fac);
    if (!k->prob) g[y * sg] = CE_FN(target_grad)(&cf, e_y, 1.0, 1, fac ? fac[y] : (CE_T)1);
    return loss;
}

/* Specialise the row for unit strides and for loss-only calls, so that the
 * compiler sees constant strides and no per-element "is there a gradient"
 * test in the hot loops. */
CE_INLINE double CE_FN(cat_row_any)(const CE_FN(cat_ctx) * k, const CE_T *x, ptrdiff_t sx,
                                    const CE_T *q, ptrdiff_t sq, int64_t y, CE_T *g, ptrdiff_t sg,
                                    const CE_T *fac, double sw, double gscale,
                                    const ce_prefetch *pf) {
    if (sx == 1 && sg == 1 && (!q || sq == 1)) {
        return g ? CE_FN(cat_row)(k, x, 1, q, 1, y, g, 1, fac, sw, gscale, pf)
                 : CE_FN(cat_row)(k, x, 1, q, 1, y, NULL, 1, fac, sw, gscale, pf);
    }
    return g ? CE_FN(cat_row)(k, x, sx, q, sq, y, g, sg, fac, sw, gscale, pf)
             : CE_FN(cat_row)(k, x, sx, q, sq, y, NULL, sg, fac, sw, gscale, pf);
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

/* Where row r's data starts. */
typedef struct {
    const CE_T *x, *q;
    CE_T *g;
    int ignored;
    int64_t y;
    double sw, gs;
} CE_FN(row_ptrs);

CE_INLINE CE_FN(row_ptrs) CE_FN(locate_row)(const ce_cat_args *a, int64_t r, double gscale) {
    CE_FN(row_ptrs) p;
    /* a 64-bit division costs ~40 cycles, more than a 10-class row's arithmetic */
    const int64_t o = a->inner == 1 ? r : r / a->inner, i = r - o * a->inner;
    p.x = (const CE_T *)a->x + o * a->xs_o + i * a->xs_i;
    p.q = a->q ? (const CE_T *)a->q + o * a->qs_o + i * a->qs_i : NULL;
    p.g = a->grad ? (CE_T *)a->grad + o * a->C * a->inner + i : NULL;
    p.y = a->target ? a->target[r] : 0;
    p.ignored = a->target && p.y == a->ignore_index;
    p.sw = a->sample_weight ? (double)((const CE_T *)a->sample_weight)[r] : 1.0;
    p.gs = a->grad_output ? (double)((const CE_T *)a->grad_output)[r] : gscale;
    return p;
}

#include "categorical_tile_impl.h"

/* The blocks of rows one thread computes (an orphaned `omp for`: inside a
 * parallel region the team shares the blocks, outside one it runs them all).
 * Returns 1 if its scratch could not be allocated. */
static int CE_FN(cat_blocks)(ce_cat_args *a, const CE_FN(cat_ctx) * k, double gscale,
                             double *partial, int64_t rb, int64_t nblocks, double cap, int tile,
                             size_t scratch_len) {
    const int64_t N = a->outer * a->inner, C = a->C, inner = a->inner;
    CE_T *loss_out = (CE_T *)a->loss_out;
    CE_T *scratch = NULL;
    if (scratch_len) scratch = (CE_T *)malloc(scratch_len * sizeof(CE_T));
#pragma omp for schedule(static)
    for (int64_t b = 0; b < nblocks; ++b) {
        if (scratch_len && !scratch) continue;
        double acc = 0.0;
        const int64_t r_end = (b + 1) * rb < N ? (b + 1) * rb : N;
        for (int64_t r = b * rb; tile && r < r_end;) {
            int64_t nb = r_end - r < CE_TILE ? r_end - r : CE_TILE;
            if (inner > 1 && nb > inner - r % inner) nb = inner - r % inner;
            acc += CE_FN(cat_tile)(a, k, gscale, r, nb, scratch, loss_out);
            r += nb;
        }
        for (int64_t r = b * rb; !tile && r < r_end; ++r) {
            CE_FN(row_ptrs) p = CE_FN(locate_row)(a, r, gscale);
            double loss = 0.0;
            if (p.ignored) { /* ignored samples are never read: loss 0, gradient 0 */
                if (p.g) CE_FN(fill_span)(p.g, inner, C, (CE_T)0);
            } else if (cap > 0.0) {
                CE_FN(softcap_row)(p.x, a->xs_c, C, cap, scratch, scratch + C);
                loss = CE_FN(cat_row_any)(k, scratch, 1, p.q, a->qs_c, p.y, p.g, inner, scratch + C,
                                          p.sw, p.gs, NULL);
            } else {
                /* the next row of a block, requested during this one */
                const int ahead = a->xs_c == 1 && inner == 1 && r + 1 < r_end;
                const ce_prefetch next = {ahead ? (const char *)(p.x + a->xs_o) : NULL,
                                          ahead && p.g ? (char *)(p.g + C) : NULL};
                const ce_prefetch *pf = ahead ? &next : NULL;
                loss = CE_FN(cat_row_any)(k, p.x, a->xs_c, p.q, a->qs_c, p.y, p.g, inner, NULL, p.sw,
                                          p.gs, pf);
            }
            if (loss_out) loss_out[r] = (CE_T)loss;
            acc += loss;
        }
        if (partial) partial[b] = acc;
    }
    const int nomem = scratch_len && !scratch;
    free(scratch);
    return nomem;
}

/* The row-parallel path: blocks of whole rows per thread (in tiles of rows
 * for narrow rows and non-last class axes, see categorical_tile_impl.h). */
static int CE_FN(cat_rows)(ce_cat_args *a, const CE_FN(cat_ctx) * k, double gscale, double *partial,
                           int64_t rb, int64_t nblocks, double cap) {
    const int64_t N = a->outer * a->inner, C = a->C;
    const int nt = ce_threads_for(a->num_threads, nblocks, N * C);
    const int tile = CE_FN(use_tile)(a);
    const size_t scratch_len = tile ? (size_t)(CE_TILE * C) : cap > 0.0 ? (size_t)(2 * C) : 0;
    int nomem = 0;
    if (nt > 1) {
#pragma omp parallel num_threads(nt) reduction(| : nomem)
        nomem |= CE_FN(cat_blocks)(a, k, gscale, partial, rb, nblocks, cap, tile, scratch_len);
    } else { /* no thread team at all: it would cost more than a small call */
        nomem = CE_FN(cat_blocks)(a, k, gscale, partial, rb, nblocks, cap, tile, scratch_len);
    }
    return nomem ? CE_ERR_NOMEM : CE_OK;
}

/* The class-split path for a few huge rows: every (row, chunk) pair is a unit
 * of parallel work. Phase 1 computes each chunk's statistics relative to its
 * own max (and e into the gradient); a serial merge in chunk order gives each
 * row's max, s', loss and coefficients; phase 2 rescales each chunk's e by
 * exp(r_chunk - m) into the gradient. */
static int CE_FN(cat_split)(ce_cat_args *a, const CE_FN(cat_ctx) * k, double gscale,
                            double *row_loss) {
    const int64_t N = a->outer * a->inner, C = a->C, inner = a->inner;
    const int64_t nch = (C + CE_SPLIT_CHUNK - 1) / CE_SPLIT_CHUNK, units = N * nch;
    const ptrdiff_t sx = a->xs_c, sq = a->qs_c, sg = inner;
    CE_FN(span_stats) *st = (CE_FN(span_stats) *)malloc((size_t)units * sizeof(*st));
    CE_FN(row_coef) *cf = (CE_FN(row_coef) *)malloc((size_t)N * sizeof(*cf));
    double *e_y = (double *)malloc((size_t)N * 2 * sizeof(double));
    if (!st || !cf || !e_y) {
        free(st), free(cf), free(e_y);
        return CE_ERR_NOMEM;
    }
    const int nt = ce_threads_for(a->num_threads, units, N * C);
    const int want_g = a->grad != NULL;
    for (int64_t r = 0; r < N && !k->prob; ++r) { /* the target logits, before in place */
        CE_FN(row_ptrs) p = CE_FN(locate_row)(a, r, gscale);
        e_y[2 * r] = p.ignored ? 0.0 : (double)p.x[p.y * sx];
    }
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
#pragma omp for schedule(static)
        for (int64_t u = 0; u < units; ++u) {
            const int64_t r = u / nch, c0 = (u - r * nch) * CE_SPLIT_CHUNK;
            const int64_t n = c0 + CE_SPLIT_CHUNK < C ? CE_SPLIT_CHUNK : C - c0;
            CE_FN(row_ptrs) p = CE_FN(locate_row)(a, r, gscale);
            if (p.ignored) continue;
            CE_T *gc = want_g ? p.g + c0 * sg : NULL;
            const CE_T *qc = p.q ? p.q + c0 * sq : NULL;
            const CE_T *wc = k->w ? k->w + c0 : NULL;
            if (sx == 1 && sg == 1 && (!qc || sq == 1)) {
                if (gc) CE_FN(scan_span)(k, p.x + c0, 1, qc, 1, wc, n, gc, 1, &st[u], NULL);
                else CE_FN(scan_span)(k, p.x + c0, 1, qc, 1, wc, n, NULL, 1, &st[u], NULL);
            } else {
                CE_FN(scan_span)(k, p.x + c0 * sx, sx, qc, sq, wc, n, gc, sg, &st[u], NULL);
            }
        }
#pragma omp single
        for (int64_t r = 0; r < N; ++r) { /* merge, in chunk order */
            CE_FN(row_ptrs) p = CE_FN(locate_row)(a, r, gscale);
            const CE_FN(span_stats) *s = st + r * nch;
            row_loss[r] = 0.0;
            cf[r].bad = 0;
            if (p.ignored) continue;
            int bad = 0, all_empty = 1;
            CE_T m = -INFINITY;
            for (int64_t j = 0; j < nch; ++j) {
                bad |= s[j].bad;
                if (!s[j].bad && !s[j].empty) {
                    all_empty = 0;
                    m = s[j].r > m ? s[j].r : m;
                }
            }
            cf[r].bad = bad || all_empty;
            if (cf[r].bad) {
                row_loss[r] = NAN;
                continue;
            }
            double sl = 0.0, nm = 0.0, dot = 0.0, W = 0.0;
            for (int64_t j = 0; j < nch; ++j) {
                if (s[j].empty) {
                    /* contributes no exponentials, only its (infinite) dot terms */
                } else if (s[j].r == m) {
                    sl += s[j].s_less;
                    nm += s[j].n_max;
                } else {
                    sl += exp((double)s[j].r - (double)m) * (s[j].s_less + s[j].n_max);
                }
                dot += s[j].dot + ((double)m - (double)s[j].r) * s[j].W;
                W += s[j].W;
            }
            if (want_g && !k->prob) e_y[2 * r + 1] = (double)p.g[p.y * sg]; /* before phase 2 */
            const double sp = sl + (nm - 1.0);
            row_loss[r] = CE_FN(row_finish)(k, m, sp, log1p(sp), dot, W, e_y[2 * r], p.y, p.sw,
                                            p.gs, &cf[r]);
        }
        if (want_g) {
#pragma omp for schedule(static)
            for (int64_t u = 0; u < units; ++u) {
                const int64_t r = u / nch, c0 = (u - r * nch) * CE_SPLIT_CHUNK;
                const int64_t n = c0 + CE_SPLIT_CHUNK < C ? CE_SPLIT_CHUNK : C - c0;
                CE_FN(row_ptrs) p = CE_FN(locate_row)(a, r, gscale);
                CE_T *gc = p.g + c0 * sg;
                if (p.ignored) {
                    CE_FN(fill_span)(gc, sg, n, (CE_T)0);
                    continue;
                }
                if (cf[r].bad) {
                    CE_FN(fill_span)(gc, sg, n, (CE_T)NAN);
                    continue;
                }
                const int top = !st[u].empty && st[u].r == cf[r].m;
                const double f = top ? 1.0 : st[u].empty ? 0.0 : exp((double)st[u].r - (double)cf[r].m);
                const CE_T *qc = p.q ? p.q + c0 * sq : NULL;
                const CE_T *wc = k->w ? k->w + c0 : NULL;
                if (sg == 1 && (!qc || sq == 1))
                    CE_FN(span_grad)(k, &cf[r], f, top, qc, 1, wc, n, gc, 1, NULL);
                else
                    CE_FN(span_grad)(k, &cf[r], f, top, qc, sq, wc, n, gc, sg, NULL);
            }
        }
    }
    if (want_g && !k->prob) { /* the integer targets' own entries */
        for (int64_t r = 0; r < N; ++r) {
            CE_FN(row_ptrs) p = CE_FN(locate_row)(a, r, gscale);
            if (p.ignored || cf[r].bad) continue;
            const CE_FN(span_stats) *s = st + r * nch + p.y / CE_SPLIT_CHUNK;
            const int top = !s->empty && s->r == cf[r].m;
            const double f = top ? 1.0 : s->empty ? 0.0 : exp((double)s->r - (double)cf[r].m);
            p.g[p.y * sg] = CE_FN(target_grad)(&cf[r], e_y[2 * r + 1], f, top, 1);
        }
    }
    free(st), free(cf), free(e_y);
    return CE_OK;
}

int CE_FN(ce_categorical)(ce_cat_args *a) {
    const int64_t N = a->outer * a->inner, C = a->C;
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
    k.prob = a->q != NULL;

    /* upstream scale of the gradient; "mean" over nothing is 0/0 */
    double gscale = a->grad_output_scalar;
    if (a->reduction == CE_RED_MEAN) gscale = denom != 0.0 ? gscale / denom : NAN;

    double total = 0.0;
    if (ce_split_rows(N, C) && a->softcap <= 0.0) {
        double *row_loss = (double *)malloc((size_t)(N > 0 ? N : 1) * sizeof(double));
        if (!row_loss) return CE_ERR_NOMEM;
        rc = CE_FN(cat_split)(a, &k, gscale, row_loss);
        for (int64_t r = 0; rc == CE_OK && r < N; ++r) {
            if (a->loss_out) ((CE_T *)a->loss_out)[r] = (CE_T)row_loss[r];
            total += row_loss[r];
        }
        free(row_loss);
    } else {
        const int64_t rb = ce_rows_per_block(C);
        const int64_t nblocks = (N + rb - 1) / rb;
        double *partial = NULL;
        if (a->reduction != CE_RED_NONE && nblocks > 0) {
            partial = (double *)malloc((size_t)nblocks * sizeof(double));
            if (!partial) return CE_ERR_NOMEM;
        }
        rc = CE_FN(cat_rows)(a, &k, gscale, partial, rb, nblocks, a->softcap);
        if (partial && rc == CE_OK) total = ce_pairwise_sum(partial, nblocks);
        free(partial);
    }
    if (rc != CE_OK) return rc;
    a->loss = a->reduction == CE_RED_MEAN ? (denom != 0.0 ? total / denom : NAN) : total;
    return CE_OK;
}

#undef CE_FN
