/* categorical_tile_impl.h — the categorical kernel for narrow rows (small C)
 * and for a class axis that is not the last one, vectorised ACROSS rows.
 * Included by categorical_impl.h (same instantiation macros).
 *
 * With few classes, a row is too short for vector loops: their prologues,
 * remainders and horizontal reductions cost more than the arithmetic. With
 * the class axis not last, a row is strided and touches a new cache line per
 * element. Both are served by tiles of CE_TILE consecutive rows, copied
 * (transposed) into a per-thread scratch tile xt[c * CE_TILE + j] (class c of
 * the tile's row j), so that every pass is a unit-stride vector loop over the
 * rows j for each class c. The per-row arithmetic is that of the row path
 * (row_finish, target_grad), so the two paths agree to rounding, and the
 * choice between them depends on the shape only (never on the thread count).
 *
 * Integer targets only (with every option but softcap); probability targets
 * and softcap take the row path. */

#define CE_TILE 16

/* Tile scratch: CE_TILE * C elements of xt (which becomes e, then g). */
CE_INLINE int CE_FN(use_tile)(const ce_cat_args *a) {
    return !a->q && a->softcap <= 0.0 && (a->C <= 32 || a->inner > 1) &&
           a->C <= (int64_t)1 << 20;
}

/* Pass 2 for one class of a tile: e = exp(x - m) per row (stored in place
 * when want_g) and the row sums, accumulated straight into double (a tile
 * has CE_TILE independent sums, so no chunking is needed to keep float32
 * sums accurate). The masks are products and the flags constants after
 * inlining: in this form GCC if-converts and vectorises the loop reliably
 * (with conditional expressions inside a chunk loop it did not). */
CE_INLINE void CE_FN(tile_exp)(CE_T *restrict xc, const CE_T *restrict m, double *restrict sl,
                               double *restrict nm, double *restrict dot, double wc,
                               const int want_g, const int smooth) {
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) {
        const CE_T xv = xc[j];
        const CE_T d = xv - m[j];
        const CE_T e = CE_EXP_NONPOS(d);
        if (want_g) xc[j] = e;
        sl[j] += (double)(e * (CE_T)(d < 0));
        nm[j] += (double)(d == 0);
        if (smooth) dot[j] += wc * ((double)m[j] - (double)xv);
    }
}

/* Pass 2 over a tile. A class of weight 0 adds nothing to the smoothing sum
 * (not 0 * inf against a -inf logit). */
CE_INLINE void CE_FN(tile_pass2)(CE_T *restrict xt, int64_t C, const CE_T *restrict w,
                                 const CE_T *restrict m, double *restrict sl,
                                 double *restrict nm, double *restrict dot, const int want_g,
                                 const int smooth) {
    for (int64_t c = 0; c < C; ++c) {
        const CE_T wc = w ? w[c] : (CE_T)1;
        if (smooth && wc != 0)
            CE_FN(tile_exp)(xt + c * CE_TILE, m, sl, nm, dot, (double)wc, want_g, 1);
        else
            CE_FN(tile_exp)(xt + c * CE_TILE, m, sl, nm, dot, 0.0, want_g, 0);
    }
}

/* Rows r0 .. r0 + nb - 1; returns their loss sum and writes per-row losses. */
static double CE_FN(cat_tile)(const ce_cat_args *a, const CE_FN(cat_ctx) * k, double gscale,
                              int64_t r0, int64_t nb, CE_T *xt, CE_T *loss_out) {
    const int64_t C = k->C, inner = a->inner;
    const int want_g = a->grad != NULL;
    CE_FN(row_ptrs) p[CE_TILE];
    CE_T m[CE_TILE], xy[CE_TILE];
    int bad[CE_TILE];
    double sl[CE_TILE], nm[CE_TILE], dot[CE_TILE];

    /* in: the tile, transposed. With the class axis last, each row is copied
     * (ignored rows are never read: zeros instead); otherwise the tile's rows
     * are neighbours along the inner axis (the caller never lets a tile cross
     * an outer index), so every class is one short contiguous run. */
    for (int64_t j = 0; j < nb; ++j) p[j] = CE_FN(locate_row)(a, r0 + j, gscale);
    if (inner > 1) {
        for (int64_t c = 0; c < C; ++c) {
            const CE_T *xc = p[0].x + c * a->xs_c;
            for (int64_t j = 0; j < CE_TILE; ++j) xt[c * CE_TILE + j] = j < nb ? xc[j * a->xs_i] : 0;
        }
    } else {
        for (int64_t j = 0; j < CE_TILE; ++j) {
            const CE_T *x = j < nb && !p[j].ignored ? p[j].x : NULL;
            if (x && a->xs_c == 1) {
                for (int64_t c = 0; c < C; ++c) xt[c * CE_TILE + j] = x[c];
            } else {
                for (int64_t c = 0; c < C; ++c) xt[c * CE_TILE + j] = x ? x[c * a->xs_c] : 0;
            }
        }
    }
    for (int64_t j = 0; j < CE_TILE; ++j) {
        xy[j] = j < nb && !p[j].ignored ? xt[p[j].y * CE_TILE + j] : (CE_T)0;
        m[j] = -INFINITY;
        bad[j] = 0;
        sl[j] = nm[j] = dot[j] = 0.0;
    }
    /* pass 1: per-row max and NaN */
    for (int64_t c = 0; c < C; ++c) {
        const CE_T *xc = xt + c * CE_TILE;
#pragma omp simd
        for (int64_t j = 0; j < CE_TILE; ++j) {
            const CE_T v = xc[j];
            m[j] = v > m[j] ? v : m[j];
            bad[j] |= v != v;
        }
    }
    for (int64_t j = 0; j < CE_TILE; ++j) {
        bad[j] |= m[j] == INFINITY || m[j] == -INFINITY;
        if (bad[j]) m[j] = 0; /* any finite reference: the lane is overwritten */
    }
    /* pass 2: exponentials (into the tile when a gradient is wanted) and sums,
     * accumulated in CE_T over CE_CHUNK classes and folded into double */
    const int smooth = k->eps > 0.0;
    /* constant flags, so that each variant is a branch-free vector loop */
    if (want_g && !smooth) CE_FN(tile_pass2)(xt, C, k->w, m, sl, nm, dot, 1, 0);
    else if (!want_g && !smooth) CE_FN(tile_pass2)(xt, C, k->w, m, sl, nm, dot, 0, 0);
    else if (want_g) CE_FN(tile_pass2)(xt, C, k->w, m, sl, nm, dot, 1, 1);
    else CE_FN(tile_pass2)(xt, C, k->w, m, sl, nm, dot, 0, 1);
    /* per row: loss and gradient coefficients (log1p vectorised over the tile) */
    double sp[CE_TILE], L1[CE_TILE];
    for (int64_t j = 0; j < CE_TILE; ++j) sp[j] = bad[j] ? 0.0 : sl[j] + (nm[j] - 1.0);
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) L1[j] = ce_log1p_f64(sp[j]);
    CE_FN(row_coef) cf[CE_TILE];
    CE_T ga[CE_TILE];
    double acc = 0.0;
    for (int64_t j = 0; j < nb; ++j) {
        double loss = 0.0;
        ga[j] = 0;
        if (p[j].ignored) {
            cf[j].bad = 0;
        } else if (bad[j]) {
            loss = NAN;
            cf[j].bad = 1;
            ga[j] = NAN;
        } else {
            loss = CE_FN(row_finish)(k, m[j], sp[j], L1[j], dot[j], 0.0, (double)xy[j],
                                     p[j].y, p[j].sw, p[j].gs, &cf[j]);
            cf[j].bad = 0;
            ga[j] = (CE_T)(cf[j].gs * cf[j].A / cf[j].S);
        }
        if (loss_out) loss_out[r0 + j] = (CE_T)loss;
        acc += loss;
    }
    if (!want_g) return acc;

    /* pass 3: the gradient in place of e, then out to each row */
    CE_T e_y[CE_TILE], gb[CE_TILE];
    for (int64_t j = 0; j < CE_TILE; ++j) {
        const int live = j < nb && !p[j].ignored && !bad[j];
        e_y[j] = live ? xt[p[j].y * CE_TILE + j] : (CE_T)0;
        gb[j] = live ? (CE_T)(cf[j].gs * k->eps_c) : (CE_T)0;
        if (j >= nb) ga[j] = 0;
    }
    for (int64_t c = 0; c < C; ++c) {
        CE_T *xc = xt + c * CE_TILE;
        const CE_T wc = k->w ? k->w[c] : (CE_T)1;
        if (smooth) {
#pragma omp simd
            for (int64_t j = 0; j < CE_TILE; ++j) xc[j] = ga[j] * xc[j] - gb[j] * wc;
        } else {
#pragma omp simd
            for (int64_t j = 0; j < CE_TILE; ++j) xc[j] = ga[j] * xc[j];
        }
    }
    for (int64_t j = 0; j < nb; ++j) { /* ignored rows 0, bad rows NaN, then the targets */
        const int ign = p[j].ignored;
        if (ign || bad[j]) {
            for (int64_t c = 0; c < C; ++c) xt[c * CE_TILE + j] = ign ? (CE_T)0 : (CE_T)NAN;
        } else {
            xt[p[j].y * CE_TILE + j] = CE_FN(target_grad)(&cf[j], (double)e_y[j], 1.0, 1, 1);
        }
    }
    if (inner > 1) {
        for (int64_t c = 0; c < C; ++c) {
            CE_T *gc = p[0].g + c * inner;
            for (int64_t j = 0; j < nb; ++j) gc[j] = xt[c * CE_TILE + j];
        }
    } else {
        for (int64_t j = 0; j < nb; ++j) {
            CE_T *g = p[j].g;
            for (int64_t c = 0; c < C; ++c) g[c] = xt[c * CE_TILE + j];
        }
    }
    return acc;
}
