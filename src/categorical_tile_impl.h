/* categorical_tile_impl.h — the categorical kernel for narrow rows (small C)
 * and for a class axis that is not the last one, vectorised ACROSS rows.
 *
 * With few classes, a row is too short for vector loops: their prologues,
 * remainders and horizontal reductions cost more than the arithmetic. With
 * the class axis not last, a row is strided and touches a new cache line per
 * element. Both are served by tiles of CE_TILE consecutive rows held
 * class-major in a per-thread scratch xt[c * CE_TILE + j] (class c of the
 * tile's row j), so that every pass is a unit-stride vector loop over the rows
 * j for each class c:
 *   in       the tile transposed into xt (ce_transpose.h: in registers for
 *            whole tiles of contiguous rows, else an element loop);
 *   pass 1   per-row max, NaN, and the target's logit (tilescan_impl.h);
 *   pass 2   e = exp(x - m) into xt, the sums, the target's e (tilescan);
 *   finish   loss, gradient coefficients and the target's own gradient of
 *            every row at once, in double lanes;
 *   pass 3   the gradient in place of e, the target's entry selected by a
 *            compare per class (no scalar stores into the tile);
 *   out      transposed back into the gradient rows.
 * Its arithmetic is the row path's (int_loss, int_coef_A/B, target_grad_k,
 * split_scale), so the two paths agree to rounding, and the choice between
 * them depends on the shape only (never on the thread count).
 *
 * Integer targets only (with every option but softcap); probability targets
 * and softcap take the row path. */

/* The widest rows (class axis last) that take the tile path: measured where
 * the row path's vector loops overtake it (see use_tile). */
#define CE_TILE_MAX_C 64

/* Scratch per thread: the tile, and the staging of ce_tile_out. */
CE_INLINE size_t CE_FN(tile_scratch_len)(int64_t C) {
    return (size_t)(2 * CE_TILE * C + CE_TILE_STAGE_PAD);
}

CE_INLINE int CE_FN(use_tile)(const ce_cat_args *a) {
    return !a->q && a->softcap <= 0.0 && (a->C <= CE_TILE_MAX_C || a->inner > 1) &&
           a->C <= (int64_t)1 << 20;
}

/* Per-row inputs of a tile: the target class (-1: ignored row, or a lane
 * past the tile's nb rows), its weight, the sample weight and the upstream
 * scale; lane state st (every finish operand a double: with float or int
 * operands mixed in, GCC 12 leaves that loop scalar). Returns whether a lane
 * is skipped. */
CE_INLINE int CE_FN(tile_lanes)(const ce_cat_args *a, const CE_FN(cat_ctx) * k, double gscale,
                                int64_t r0, int64_t nb, CE_I *restrict y, double *restrict wy,
                                double *restrict sw, double *restrict gs) {
    const int64_t *restrict t = a->target + r0, ign = a->ignore_index;
    const CE_T *restrict sw_in = (const CE_T *)a->sample_weight, *restrict go_in = (const CE_T *)a->grad_output;
    int skips = nb < CE_TILE;
    for (int64_t j = 0; j < CE_TILE; ++j) {
        const int live = j < nb && t[j < nb ? j : 0] != ign;
        y[j] = live ? (CE_I)t[j] : (CE_I)-1;
        skips |= !live;
    }
    for (int64_t j = 0; j < CE_TILE; ++j) {
        wy[j] = k->w && y[j] >= 0 ? (double)k->w[y[j]] : 1.0;
        sw[j] = sw_in && j < nb ? (double)sw_in[r0 + j] : 1.0;
        gs[j] = go_in && j < nb ? (double)go_in[r0 + j] : gscale;
    }
    return skips;
}

/* The per-row finish, across the tile: inputs in (double lanes), outputs the
 * loss, the gradient's coefficients (g_c = ga e_c - gb w_c), the target's own
 * gradient and the post scale (split_scale). */
typedef struct {
    const double *m, *sl, *nm, *dot, *xy, *wy, *sw, *gs, *st, *e_y;
} CE_FN(tile_in);
typedef struct {
    double *loss, *ga, *gb, *g_y, *post;
} CE_FN(tile_out);

CE_INLINE void CE_FN(tile_finish)(const CE_FN(cat_ctx) * k, const CE_FN(tile_in) * in,
                                  const CE_FN(tile_out) * out, const int smooth, const int zl) {
    const double *restrict m = in->m, *restrict sl = in->sl, *restrict nm = in->nm;
    const double *restrict sw = in->sw, *restrict gs = in->gs, *restrict st = in->st;
    const double *restrict wy = in->wy, *restrict xy = in->xy, *restrict e_y = in->e_y;
    const double *restrict dot = in->dot;
    double *restrict loss = out->loss, *restrict ga = out->ga, *restrict gb = out->gb;
    double *restrict g_y = out->g_y, *restrict post = out->post;
    const double eps_c = k->eps_c;
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) {
        const double sp = sl[j] + (nm[j] - 1.0), S = 1.0 + sp, inv = 1.0 / S;
        const double L1 = ce_log1p_f64(sp);
        const double l = CE_FN(int_loss)(k, m[j], L1, smooth ? dot[j] : 0.0, xy[j], wy[j], smooth, zl);
        const double A = CE_FN(int_coef_A)(k, m[j], L1, wy[j], smooth, zl);
        const double B = CE_FN(int_coef_B)(k, wy[j], smooth);
        double g, pg;
        CE_FN(split_scale)(gs[j] * sw[j], &g, &pg);
        const double gy = CE_FN(target_grad_k)(g, A, B, S, inv, sp, e_y[j], 1.0, 1);
        /* st: 0 live, 1 skipped, 2 bad (NaN / +inf / all -inf) */
        loss[j] = st[j] == 1.0 ? 0.0 : st[j] == 2.0 ? (double)NAN : l * sw[j];
        ga[j] = st[j] == 1.0 ? 0.0 : st[j] == 2.0 ? (double)NAN : g * A * inv;
        gb[j] = st[j] == 0.0 ? g * eps_c : 0.0;
        g_y[j] = st[j] == 1.0 ? 0.0 : st[j] == 2.0 ? (double)NAN : gy;
        post[j] = st[j] == 0.0 ? pg : 1.0;
    }
}

/* Pass 3 for one class c: the gradient in place of e, the target's own entry
 * where y == c (flags constant after inlining). */
CE_INLINE void CE_FN(tile_grad_class)(CE_T *restrict xc, CE_I c, CE_T wc, const CE_I *restrict y,
                                      const CE_T *restrict ga, const CE_T *restrict gb,
                                      const CE_T *restrict g_y, const int smooth) {
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) {
        const CE_T v = smooth ? ga[j] * xc[j] - gb[j] * wc : ga[j] * xc[j];
        xc[j] = y[j] == c ? g_y[j] : v;
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
    const int want_g = a->grad != NULL, smooth = k->eps > 0.0, zl = k->lambda > 0.0;
    const CE_FN(row_ptrs) p0 = CE_FN(locate_row)(a, r0, gscale);
    const ptrdiff_t xr = inner == 1 ? a->xs_o : a->xs_i, xs = a->xs_c;
    /* whole tiles of rows with unit class stride go through the registers */
    const int vec = nb == CE_TILE && inner == 1 && xs == 1;
    CE_T *stage = xt + CE_TILE * C;

    CE_I y[CE_TILE];
    double wy[CE_TILE], sw[CE_TILE], gs[CE_TILE];
    const int skips = CE_FN(tile_lanes)(a, k, gscale, r0, nb, y, wy, sw, gs);

    /* in: the tile, transposed. Ignored rows are read (harmlessly: their lanes
     * are overwritten) except on the element path, which reads only what a
     * row path would; lanes past nb are zeros. */
    if (vec) {
        CE_TILE_IN(p0.x, xr, C, xt);
    } else if (inner > 1) {
        for (int64_t c = 0; c < C; ++c) {
            const CE_T *xc = p0.x + c * xs;
            for (int64_t j = 0; j < CE_TILE; ++j) xt[c * CE_TILE + j] = j < nb ? xc[j * xr] : 0;
        }
    } else {
        for (int64_t j = 0; j < CE_TILE; ++j) {
            const CE_T *x = y[j] < 0 ? NULL : p0.x + j * xr;
            for (int64_t c = 0; c < C; ++c) xt[c * CE_TILE + j] = x ? x[c * xs] : 0;
        }
    }

    CE_T m[CE_TILE], xy[CE_TILE], e_y[CE_TILE];
    CE_I nan[CE_TILE];
    CE_FN(tile_max)(xt, CE_TILE, C, CE_TILE, m, nan, y, xy);
    double st[CE_TILE];
    for (int64_t j = 0; j < CE_TILE; ++j) {
        const int bad = nan[j] || m[j] == INFINITY || m[j] == -INFINITY;
        st[j] = y[j] < 0 ? 1.0 : bad ? 2.0 : 0.0;
        if (st[j] != 0.0) m[j] = 0; /* any finite reference: the lane is overwritten */
    }
    double sl[CE_TILE], nm[CE_TILE], dot[CE_TILE];
    if (want_g && !smooth)
        CE_FN(tile_expsum)(xt, CE_TILE, C, CE_TILE, m, xt, CE_TILE, NULL, y, e_y, sl, nm, NULL, 1, CE_DOT_NONE);
    else if (!want_g && !smooth)
        CE_FN(tile_expsum)(xt, CE_TILE, C, CE_TILE, m, NULL, 0, NULL, NULL, NULL, sl, nm, NULL, 0, CE_DOT_NONE);
    else if (want_g)
        CE_FN(tile_expsum)(xt, CE_TILE, C, CE_TILE, m, xt, CE_TILE, k->w, y, e_y, sl, nm, dot, 1, CE_DOT_SMOOTH);
    else
        CE_FN(tile_expsum)(xt, CE_TILE, C, CE_TILE, m, NULL, 0, k->w, NULL, NULL, sl, nm, dot, 0, CE_DOT_SMOOTH);

    double md[CE_TILE], xyd[CE_TILE], eyd[CE_TILE];
    for (int64_t j = 0; j < CE_TILE; ++j) {
        md[j] = (double)m[j];
        xyd[j] = (double)xy[j];
        eyd[j] = want_g ? (double)e_y[j] : 0.0;
    }
    double loss[CE_TILE], gad[CE_TILE], gbd[CE_TILE], gyd[CE_TILE], post[CE_TILE];
    const CE_FN(tile_in) in = {md, sl, nm, dot, xyd, wy, sw, gs, st, eyd};
    const CE_FN(tile_out) out = {loss, gad, gbd, gyd, post};
    if (!smooth && !zl) CE_FN(tile_finish)(k, &in, &out, 0, 0);
    else if (!smooth) CE_FN(tile_finish)(k, &in, &out, 0, 1);
    else if (!zl) CE_FN(tile_finish)(k, &in, &out, 1, 0);
    else CE_FN(tile_finish)(k, &in, &out, 1, 1);
    double acc = 0.0;
    for (int64_t j = 0; j < nb; ++j) {
        if (loss_out) loss_out[r0 + j] = (CE_T)loss[j];
        acc += loss[j];
    }
    if (!want_g) return acc;

    /* pass 3: the gradient in place of e (NaN for bad rows through ga, g_y) */
    CE_T ga[CE_TILE], gb[CE_TILE], g_y[CE_TILE];
    int posts = 0;
    for (int64_t j = 0; j < CE_TILE; ++j) {
        ga[j] = (CE_T)gad[j];
        gb[j] = (CE_T)gbd[j];
        g_y[j] = (CE_T)gyd[j];
        posts |= post[j] != 1.0;
    }
    for (int64_t c = 0; c < C; ++c) {
        const CE_T wc = k->w ? k->w[c] : (CE_T)1;
        if (smooth) CE_FN(tile_grad_class)(xt + c * CE_TILE, (CE_I)c, wc, y, ga, gb, g_y, 1);
        else CE_FN(tile_grad_class)(xt + c * CE_TILE, (CE_I)c, wc, y, ga, gb, g_y, 0);
    }
    if (skips || posts) { /* rare: ignored rows exactly 0 whatever their logits; post scales */
        for (int64_t j = 0; j < CE_TILE; ++j) {
            for (int64_t c = 0; c < C; ++c) {
                CE_T *v = xt + c * CE_TILE + j;
                *v = y[j] < 0 ? (CE_T)0 : *v * (CE_T)post[j];
            }
        }
    }
    /* out: each row's gradient */
    if (vec) {
        CE_TILE_OUT(xt, C, p0.g, stage);
    } else if (inner > 1) {
        for (int64_t c = 0; c < C; ++c) {
            CE_T *gc = p0.g + c * inner;
            for (int64_t j = 0; j < nb; ++j) gc[j] = xt[c * CE_TILE + j];
        }
    } else {
        for (int64_t j = 0; j < nb; ++j) {
            CE_T *g = p0.g + j * C;
            for (int64_t c = 0; c < C; ++c) g[c] = xt[c * CE_TILE + j];
        }
    }
    return acc;
}
