/* categorical_tile_impl.h — the categorical kernel for narrow rows (small C)
 * and for a class axis that is not the last one, vectorised ACROSS rows.
 *
 * With few classes, a row is too short for vector loops: their prologues,
 * remainders and horizontal reductions cost more than the arithmetic. With
 * the class axis not last, a row is strided and touches a new cache line per
 * element. Both are served by tiles of CE_TILE consecutive rows, copied
 * (transposed) into a per-thread scratch tile xt[c * CE_TILE + j] (class c of
 * the tile's row j), so that every pass is a unit-stride vector loop over the
 * rows j for each class c, and the per-row finish runs across the tile too.
 * Its arithmetic is that of the row path (int_loss, int_coef_A/B,
 * target_grad_k), so the two paths agree to rounding, and the
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
 * when want_g) and the row sums, accumulated in CE_T (cs, cn: the caller
 * folds them into double every CE_CHUNK classes, as rowscan_impl.h does).
 * The flags are constants after inlining, so the loop is branch-free. */
CE_INLINE void CE_FN(tile_exp)(CE_T *restrict xc, const CE_T *restrict m, CE_T *restrict cs,
                               CE_T *restrict cn, double *restrict dot, double wc,
                               const int want_g, const int smooth) {
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) {
        const CE_T xv = xc[j];
        const CE_T d = xv - m[j];
        const CE_T e = CE_EXP_NONPOS(d);
        if (want_g) xc[j] = e;
        cs[j] += CE_FN(keep_if)(e, d < 0);
        cn[j] += (CE_T)(d == 0);
        if (smooth) dot[j] += wc * ((double)m[j] - (double)xv);
    }
}

/* Pass 2 over a tile. A class of weight 0 adds nothing to the smoothing sum
 * (not 0 * inf against a -inf logit). */
CE_INLINE void CE_FN(tile_pass2)(CE_T *restrict xt, int64_t C, const CE_T *restrict w,
                                 const CE_T *restrict m, double *restrict sl,
                                 double *restrict nm, double *restrict dot, const int want_g,
                                 const int smooth) {
    /* (one loop over the classes with the fold inside it: with a nested
     * chunk loop GCC 12 no longer vectorises tile_exp) */
    CE_T cs[CE_TILE], cn[CE_TILE];
    for (int64_t j = 0; j < CE_TILE; ++j) cs[j] = cn[j] = 0;
    for (int64_t c = 0; c < C; ++c) {
        const CE_T wc = w ? w[c] : (CE_T)1;
        if (smooth && wc != 0)
            CE_FN(tile_exp)(xt + c * CE_TILE, m, cs, cn, dot, (double)wc, want_g, 1);
        else
            CE_FN(tile_exp)(xt + c * CE_TILE, m, cs, cn, dot, 0.0, want_g, 0);
        if ((c + 1) % CE_CHUNK == 0 || c + 1 == C) {
            for (int64_t j = 0; j < CE_TILE; ++j) {
                sl[j] += (double)cs[j];
                nm[j] += (double)cn[j];
                cs[j] = cn[j] = 0;
            }
        }
    }
}

/* The per-row inputs and outputs of the tile's finish, one double per lane
 * (every operand a double: with float or int operands mixed in, GCC 12
 * leaves the loop scalar). Lane state st: 0 live, 1 skipped, 2 bad. */
typedef struct {
    const double *m, *sp, *L1, *dot, *xy, *wy, *sw, *gs, *st, *e_y;
} CE_FN(tile_lanes);
typedef struct {
    double *loss, *ga, *gb, *g_y;
} CE_FN(tile_coefs);

/* Loss, gradient coefficients and the target's own gradient of every row of
 * a tile, in one vector loop (the flags are constants after inlining). */
CE_INLINE void CE_FN(tile_finish)(const CE_FN(cat_ctx) * k, const CE_FN(tile_lanes) * in,
                                  const CE_FN(tile_coefs) * out, const int smooth, const int zl) {
    const double *restrict m = in->m, *restrict sp = in->sp, *restrict L1 = in->L1;
    const double *restrict sw = in->sw, *restrict gs = in->gs, *restrict st = in->st;
    const double *restrict wy = in->wy;
    double *restrict loss = out->loss, *restrict ga = out->ga, *restrict gb = out->gb;
    double *restrict g_y = out->g_y;
    const double eps_c = k->eps_c;
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) {
        const double S = 1.0 + sp[j];
        const double l = CE_FN(int_loss)(k, m[j], L1[j], in->dot[j], in->xy[j], wy[j], smooth, zl);
        const double A = CE_FN(int_coef_A)(k, m[j], L1[j], wy[j], smooth, zl);
        const double B = CE_FN(int_coef_B)(k, wy[j], smooth);
        const double g = gs[j] * sw[j];
        loss[j] = st[j] == 1.0 ? 0.0 : st[j] == 2.0 ? (double)NAN : l * sw[j];
        ga[j] = st[j] == 1.0 ? 0.0 : st[j] == 2.0 ? (double)NAN : g * A / S;
        gb[j] = st[j] == 0.0 ? g * eps_c : 0.0;
        g_y[j] = CE_FN(target_grad_k)(g, A, B, S, sp[j], in->e_y[j], 1.0, 1);
    }
}

/* Rows r0 .. r0 + nb - 1; returns their loss sum and writes per-row losses.
 * Row j of the tile starts at x0 + j * xr (class stride a->xs_c) and its
 * gradient at g0 + j * gr (class stride inner): with the class axis last the
 * rows are consecutive samples, otherwise neighbours along the inner axis
 * (the caller never lets a tile cross an outer index). */
static double CE_FN(cat_tile)(const ce_cat_args *a, const CE_FN(cat_ctx) * k, double gscale,
                              int64_t r0, int64_t nb, CE_T *xt, CE_T *loss_out) {
    const int64_t C = k->C, inner = a->inner;
    const int want_g = a->grad != NULL, smooth = k->eps > 0.0;
    const CE_FN(row_ptrs) p0 = CE_FN(locate_row)(a, r0, gscale);
    const ptrdiff_t xr = inner == 1 ? a->xs_o : a->xs_i, xs = a->xs_c, gr = inner == 1 ? C : 1;
    const CE_T *sw_in = (const CE_T *)a->sample_weight, *go_in = (const CE_T *)a->grad_output;

    /* per-row inputs; lanes past nb are "skipped" like ignored rows */
    int64_t y[CE_TILE];
    int skip[CE_TILE], bad[CE_TILE], any_ignored = 0;
    double sw[CE_TILE], gs[CE_TILE], wy[CE_TILE];
    for (int64_t j = 0; j < CE_TILE; ++j) {
        const int64_t r = r0 + j;
        y[j] = j < nb ? a->target[r] : 0;
        skip[j] = j >= nb || y[j] == a->ignore_index;
        any_ignored |= j < nb && skip[j];
        if (skip[j]) y[j] = 0;
        sw[j] = j < nb && sw_in ? (double)sw_in[r] : 1.0;
        gs[j] = j < nb && go_in ? (double)go_in[r] : gscale;
        wy[j] = k->w ? (double)k->w[y[j]] : 1.0;
    }

    /* in: the tile, transposed to xt[c * CE_TILE + j]. With the class axis
     * last ignored rows are never read (zeros instead); otherwise each class
     * is one short run along the inner axis. */
    if (inner > 1) {
        for (int64_t c = 0; c < C; ++c) {
            const CE_T *xc = p0.x + c * xs;
            for (int64_t j = 0; j < CE_TILE; ++j) xt[c * CE_TILE + j] = j < nb ? xc[j * xr] : 0;
        }
    } else {
        for (int64_t j = 0; j < CE_TILE; ++j) {
            const CE_T *x = skip[j] ? NULL : p0.x + j * xr;
            if (x && xs == 1) {
                for (int64_t c = 0; c < C; ++c) xt[c * CE_TILE + j] = x[c];
            } else {
                for (int64_t c = 0; c < C; ++c) xt[c * CE_TILE + j] = x ? x[c * xs] : 0;
            }
        }
    }
    CE_T m[CE_TILE], xy[CE_TILE];
    double sl[CE_TILE], nm[CE_TILE], dot[CE_TILE];
    for (int64_t j = 0; j < CE_TILE; ++j) {
        xy[j] = xt[y[j] * CE_TILE + j];
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
        bad[j] = !skip[j] && (bad[j] || m[j] == INFINITY || m[j] == -INFINITY);
        if (bad[j] || skip[j]) m[j] = 0; /* any finite reference: the lane is overwritten */
    }
    /* pass 2: exponentials (into the tile when a gradient is wanted) and sums;
     * constant flags, so that each variant is a branch-free vector loop */
    if (want_g && !smooth) CE_FN(tile_pass2)(xt, C, k->w, m, sl, nm, dot, 1, 0);
    else if (!want_g && !smooth) CE_FN(tile_pass2)(xt, C, k->w, m, sl, nm, dot, 0, 0);
    else if (want_g) CE_FN(tile_pass2)(xt, C, k->w, m, sl, nm, dot, 1, 1);
    else CE_FN(tile_pass2)(xt, C, k->w, m, sl, nm, dot, 0, 1);

    /* per row, across the tile: loss, gradient coefficients and the target's
     * own gradient (from its e, before pass 3 overwrites it) */
    double md[CE_TILE], xyd[CE_TILE], st[CE_TILE], e_y[CE_TILE];
    for (int64_t j = 0; j < CE_TILE; ++j) {
        md[j] = (double)m[j];
        xyd[j] = (double)xy[j];
        st[j] = skip[j] ? 1.0 : bad[j] ? 2.0 : 0.0;
        e_y[j] = want_g ? (double)xt[y[j] * CE_TILE + j] : 0.0;
    }
    double sp[CE_TILE], L1[CE_TILE];
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) {
        sp[j] = sl[j] + (nm[j] - 1.0);
        L1[j] = ce_log1p_f64(sp[j]);
    }
    for (int64_t j = 0; a->lse_out && j < nb; ++j) a->lse_out[r0 + j] = st[j] == 0.0 ? md[j] + L1[j] : NAN;
    double loss[CE_TILE], g_y[CE_TILE], gad[CE_TILE], gbd[CE_TILE];
    const CE_FN(tile_lanes) in = {md, sp, L1, dot, xyd, wy, sw, gs, st, e_y};
    const CE_FN(tile_coefs) out = {loss, gad, gbd, g_y};
    const int zl = k->lambda > 0.0;
    if (!smooth && !zl) CE_FN(tile_finish)(k, &in, &out, 0, 0);
    else if (!smooth) CE_FN(tile_finish)(k, &in, &out, 0, 1);
    else if (!zl) CE_FN(tile_finish)(k, &in, &out, 1, 0);
    else CE_FN(tile_finish)(k, &in, &out, 1, 1);
    CE_T ga[CE_TILE], gb[CE_TILE];
    for (int64_t j = 0; j < CE_TILE; ++j) {
        ga[j] = (CE_T)gad[j];
        gb[j] = (CE_T)gbd[j];
    }
    double acc = 0.0;
    for (int64_t j = 0; j < nb; ++j) {
        if (loss_out) loss_out[r0 + j] = (CE_T)loss[j];
        acc += loss[j];
    }
    if (!want_g) return acc;

    /* pass 3: the gradient in place of e (NaN for bad rows through ga) */
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
    for (int64_t j = 0; j < nb; ++j) { /* the targets; ignored rows 0 whatever their logits */
        if (!skip[j] && !bad[j]) xt[y[j] * CE_TILE + j] = (CE_T)g_y[j];
        if (any_ignored && skip[j])
            for (int64_t c = 0; c < C; ++c) xt[c * CE_TILE + j] = 0;
    }
    /* out: each row's gradient */
    if (inner > 1) {
        for (int64_t c = 0; c < C; ++c) {
            CE_T *gc = p0.g + c * inner;
            for (int64_t j = 0; j < nb; ++j) gc[j * gr] = xt[c * CE_TILE + j];
        }
    } else {
        for (int64_t j = 0; j < nb; ++j) {
            CE_T *g = p0.g + j * gr;
            for (int64_t c = 0; c < C; ++c) g[c] = xt[c * CE_TILE + j];
        }
    }
    return acc;
}
