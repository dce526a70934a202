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
 *   pass 1   per-row max and NaN (tilescan_impl.h);
 *   pass 2   e = exp(x - m) into xt, and the sums (tilescan);
 *   finish   loss, gradient coefficients and the target's own gradient of
 *            every row at once, in double lanes;
 *   pass 3   the gradient in place of e, then the target's own entry;
 *   out      transposed back into the gradient rows.
 * Its arithmetic is the row path's (int_loss, int_coef_A/B, target_grad_k,
 * split_scale), so the two paths agree to rounding, and the choice between
 * them depends on the shape only (never on the thread count).
 *
 * Integer targets only (with every option but softcap); probability targets
 * and softcap take the row path. */

/* The widest rows (class axis last) that take the tile path: where the row
 * path's vector loops overtake it, measured with 65536 rows, 1 thread (Zen 5,
 * loss and gradient): C ~ 64 (float) and ~40 (double) with the transposes in
 * registers, ~32 and ~8 without (two-lane SSE2 doubles gain nothing). */
#if CE_TILE_IN_REGISTERS && !CE_HALF
#define CE_TILE_MAX_C ((int64_t)(sizeof(CE_T) == 4 ? 64 : 40))
#else
#define CE_TILE_MAX_C ((int64_t)(sizeof(CE_T) == 4 ? 32 : 8))
#endif

/* Scratch per thread: the tile, and the staging of ce_tile_out. */
CE_INLINE size_t CE_FN(tile_scratch_len)(int64_t C) {
    return (size_t)(2 * CE_TILE * C + CE_TILE_STAGE_PAD);
}

CE_INLINE int CE_FN(use_tile)(const ce_cat_args *a) {
    return !a->q && a->softcap <= 0.0 && (a->C <= CE_TILE_MAX_C || a->inner > 1) &&
           a->C <= (int64_t)1 << 20;
}

/* Per-row inputs of a tile: the target class (-1 for an ignored row or a
 * lane past the tile's nb rows), its weight, the sample weight and the
 * upstream scale. Returns whether a lane is skipped. */
CE_INLINE int CE_FN(tile_lanes)(const ce_cat_args *a, const CE_FN(cat_ctx) * k, double gscale,
                                int64_t r0, int64_t nb, int64_t *restrict y, CE_T *restrict wy,
                                CE_T *restrict sw, CE_T *restrict gs) {
    const int64_t *restrict t = a->target + r0, ign = a->ignore_index;
    const CE_T *restrict sw_in = (const CE_T *)a->sample_weight, *restrict go_in = (const CE_T *)a->grad_output;
    int64_t skips = nb < CE_TILE;
    for (int64_t j = 0; j < CE_TILE; ++j) {
        y[j] = j < nb && t[j < nb ? j : 0] != ign ? t[j] : -1;
        skips |= y[j] < 0;
    }
    /* (no loads under a mask from a NULL array: a masked-off load from an
     * unmapped page takes a microcode assist, ~100s of cycles on AMD) */
    for (int64_t j = 0; j < CE_TILE; ++j) wy[j] = sw[j] = 1, gs[j] = (CE_T)gscale;
    if (k->w)
        for (int64_t j = 0; j < CE_TILE; ++j) wy[j] = k->w[y[j] >= 0 ? y[j] : 0];
    if (sw_in)
        for (int64_t j = 0; j < nb; ++j) sw[j] = sw_in[r0 + j];
    if (go_in)
        for (int64_t j = 0; j < nb; ++j) gs[j] = go_in[r0 + j];
    return skips != 0;
}

/* The per-row finish, across the tile, in two vector loops: the gradient's
 * coefficients (g_c = ga e_c - gb w_c), the target's own gradient, the post
 * scale (split_scale) and L1 = log1p(s') in CE_T lanes; then the loss in
 * double lanes (each loop in one element width: GCC 12 leaves a loop that
 * mixes widths scalar). Lane state st: 0 live, 1 skipped, 2 bad (NaN, +inf,
 * all -inf), whose outputs are 0 and NaN. */
typedef struct {
    const CE_T *m, *xy, *e_y, *sp, *wy, *sw, *gs, *st;
    const double *dot;
} CE_FN(tile_in);
typedef struct {
    CE_T *ga, *gb, *g_y, *post;
    double *loss;
} CE_FN(tile_out);

CE_INLINE void CE_FN(tile_finish)(const CE_FN(cat_ctx) * k, const CE_FN(tile_in) * in,
                                  const CE_FN(tile_out) * out, const int smooth, const int zl) {
    const CE_T *restrict m = in->m, *restrict xy = in->xy, *restrict e_y = in->e_y, *restrict sp = in->sp;
    const CE_T *restrict wy = in->wy, *restrict sw = in->sw, *restrict gs = in->gs, *restrict st = in->st;
    CE_T *restrict ga = out->ga, *restrict gb = out->gb, *restrict g_y = out->g_y, *restrict post = out->post;
    const CE_T eps_c = (CE_T)k->eps_c, nan = (CE_T)NAN;
    CE_T L1[CE_TILE];
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) {
        const CE_T S = 1 + sp[j], inv = 1 / S;
        L1[j] = CE_LOG1P(sp[j]);
        const CE_T A = CE_FN(int_coef_A)(k, m[j], L1[j], wy[j], smooth, zl);
        const CE_T B = CE_FN(int_coef_B)(k, wy[j], smooth);
        CE_T g, pg;
        CE_FN(split_scale)(gs[j] * sw[j], &g, &pg);
        const CE_T gy = CE_FN(target_grad_k)(g, A, B, S, inv, sp[j], e_y[j], 1, 1);
        ga[j] = st[j] == 1 ? 0 : st[j] == 2 ? nan : g * A * inv;
        gb[j] = st[j] == 0 ? g * eps_c : 0;
        g_y[j] = st[j] == 1 ? 0 : st[j] == 2 ? nan : gy;
        post[j] = st[j] == 0 ? pg : 1;
    }
    double md[CE_TILE], L1d[CE_TILE], xyd[CE_TILE], wyd[CE_TILE], swd[CE_TILE], std_[CE_TILE];
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) {
        md[j] = (double)m[j];
        L1d[j] = (double)L1[j];
        xyd[j] = (double)xy[j];
        wyd[j] = (double)wy[j];
        swd[j] = (double)sw[j];
        std_[j] = (double)st[j];
    }
    double *restrict loss = out->loss;
    const double *restrict dot = in->dot;
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) {
        const double l = CE_FN(int_loss)(k, md[j], L1d[j], smooth ? dot[j] : 0.0, xyd[j], wyd[j], smooth, zl);
        loss[j] = std_[j] == 1.0 ? 0.0 : std_[j] == 2.0 ? (double)NAN : l * swd[j];
    }
}

/* Pass 3 for one class: the gradient in place of e (flags constant after
 * inlining). */
CE_INLINE void CE_FN(tile_grad_class)(CE_T *restrict xc, CE_T wc, const CE_T *restrict ga,
                                      const CE_T *restrict gb, const int smooth) {
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) xc[j] = smooth ? ga[j] * xc[j] - gb[j] * wc : ga[j] * xc[j];
}

/* Rows r0 .. r0 + nb - 1; returns their loss sum and writes per-row losses;
 * pf (or NULL): the next tile to request.
 * Row j of the tile starts at x0 + j * xr (class stride a->xs_c) and its
 * gradient at g0 + j * gr (class stride inner): with the class axis last the
 * rows are consecutive samples, otherwise neighbours along the inner axis
 * (the caller never lets a tile cross an outer index). */
static double CE_FN(cat_tile)(const ce_cat_args *a, const CE_FN(cat_ctx) * k, double gscale,
                              int64_t r0, int64_t nb, CE_T *xt, CE_T *loss_out, const ce_prefetch *pf) {
    const int64_t C = k->C, inner = a->inner;
    const int want_g = a->grad != NULL, smooth = k->eps > 0.0, zl = k->lambda > 0.0;
    const CE_FN(row_ptrs) p0 = CE_FN(locate_row)(a, r0, gscale);
    const ptrdiff_t xr = inner == 1 ? a->xs_o : a->xs_i, xs = a->xs_c;
    /* whole tiles of rows with unit class stride go through the registers */
    const int vec = !CE_HALF && nb == CE_TILE && inner == 1 && xs == 1;
    CE_T *stage = xt + CE_TILE * C;

    int64_t y[CE_TILE];
    CE_T wy[CE_TILE], sw[CE_TILE], gs[CE_TILE];
    const int skips = CE_FN(tile_lanes)(a, k, gscale, r0, nb, y, wy, sw, gs);

    /* in: the tile, transposed. Ignored rows are read (harmlessly: their lanes
     * are overwritten) except on the element path, which reads only what a
     * row path would; lanes past nb are zeros. */
    if (pf) ce_prefetch_bytes_l2(pf, 0, CE_TILE * C * (int64_t)sizeof(CE_S));
#if CE_HALF
    /* 16-bit: converted a span at a time (a class's lanes, or the tile's
     * contiguous rows through the staging), then transposed */
    (void)vec;
    if (inner > 1) {
        for (int64_t c = 0; c < C; ++c) {
            CE_FN(load_span)(xt + c * CE_TILE, p0.x + c * xs, xr, nb);
            for (int64_t j = nb; j < CE_TILE; ++j) xt[c * CE_TILE + j] = 0;
        }
    } else if (xs == 1 && xr == C) {
        CE_FN(load_span)(stage, p0.x, 1, nb * C);
        for (int64_t j = 0; j < CE_TILE; ++j)
            for (int64_t c = 0; c < C; ++c) xt[c * CE_TILE + j] = j < nb ? stage[j * C + c] : 0;
    } else
#else
    if (vec) {
        CE_TILE_IN(p0.x, xr, C, xt);
    } else
#endif
    if (inner > 1) {
        for (int64_t c = 0; c < C; ++c) {
            const CE_S *xc = p0.x + c * xs;
            for (int64_t j = 0; j < CE_TILE; ++j) xt[c * CE_TILE + j] = j < nb ? CE_LD(xc[j * xr]) : 0;
        }
    } else {
        for (int64_t j = 0; j < CE_TILE; ++j) {
            const CE_S *x = y[j] < 0 ? NULL : p0.x + j * xr;
            for (int64_t c = 0; c < C; ++c) xt[c * CE_TILE + j] = x ? CE_LD(x[c * xs]) : 0;
        }
    }

    /* the target's entries of the tile are read and written one per row:
     * a compare-and-select per class and row costs more from C ~ 4 (and
     * far more with two-lane SSE2 vectors) */
    CE_T m[CE_TILE], xy[CE_TILE], e_y[CE_TILE], sk[CE_TILE];
    CE_I nan[CE_TILE];
    for (int64_t j = 0; j < CE_TILE; ++j) {
        xy[j] = y[j] >= 0 ? xt[y[j] * CE_TILE + j] : 0;
        sk[j] = y[j] < 0 ? (CE_T)1 : (CE_T)0;
    }
    CE_FN(tile_max)(xt, CE_TILE, C, CE_TILE, m, nan);
    CE_T st[CE_TILE];
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) {
        const int bad = nan[j] || m[j] == INFINITY || m[j] == -INFINITY;
        st[j] = sk[j] != 0 ? (CE_T)1 : bad ? (CE_T)2 : (CE_T)0;
        m[j] = st[j] != 0 ? (CE_T)0 : m[j]; /* any finite reference: the lane is overwritten */
    }
    double sl[CE_TILE], nm[CE_TILE], dot[CE_TILE];
    if (want_g && !smooth)
        CE_FN(tile_expsum)(xt, CE_TILE, C, CE_TILE, m, xt, CE_TILE, NULL, sl, nm, NULL, 1, CE_DOT_NONE);
    else if (!want_g && !smooth)
        CE_FN(tile_expsum)(xt, CE_TILE, C, CE_TILE, m, NULL, 0, NULL, sl, nm, NULL, 0, CE_DOT_NONE);
    else if (want_g)
        CE_FN(tile_expsum)(xt, CE_TILE, C, CE_TILE, m, xt, CE_TILE, k->w, sl, nm, dot, 1, CE_DOT_SMOOTH);
    else
        CE_FN(tile_expsum)(xt, CE_TILE, C, CE_TILE, m, NULL, 0, k->w, sl, nm, dot, 0, CE_DOT_SMOOTH);

    CE_T sp[CE_TILE];
#pragma omp simd
    for (int64_t j = 0; j < CE_TILE; ++j) sp[j] = (CE_T)(sl[j] + (nm[j] - 1.0));
    for (int64_t j = 0; j < CE_TILE; ++j) e_y[j] = want_g && y[j] >= 0 ? xt[y[j] * CE_TILE + j] : 0;
    /* the per-row log-sum-exp for a later backward: log1p in double here (the
     * lanes' CE_T one would lose float32's rounding twice) */
    for (int64_t j = 0; a->lse_out && j < nb; ++j)
        a->lse_out[r0 + j] = st[j] == 0 ? (double)m[j] + log1p(sl[j] + (nm[j] - 1.0)) : NAN;
    double loss[CE_TILE];
    CE_T ga[CE_TILE], gb[CE_TILE], g_y[CE_TILE], post[CE_TILE];
    const CE_FN(tile_in) in = {m, xy, e_y, sp, wy, sw, gs, st, dot};
    const CE_FN(tile_out) out = {ga, gb, g_y, post, loss};
    if (!smooth && !zl) CE_FN(tile_finish)(k, &in, &out, 0, 0);
    else if (!smooth) CE_FN(tile_finish)(k, &in, &out, 0, 1);
    else if (!zl) CE_FN(tile_finish)(k, &in, &out, 1, 0);
    else CE_FN(tile_finish)(k, &in, &out, 1, 1);
    double acc = 0.0;
    for (int64_t j = 0; j < nb; ++j) acc += loss[j];
    if (loss_out)
        for (int64_t j = 0; j < nb; ++j) loss_out[r0 + j] = (CE_T)loss[j];
    if (!want_g) return acc;

    /* pass 3: the gradient in place of e (NaN for bad rows through ga, g_y) */
    CE_I posts = 0;
#pragma omp simd reduction(| : posts)
    for (int64_t j = 0; j < CE_TILE; ++j) posts |= post[j] != 1;
    for (int64_t c = 0; c < C; ++c) {
        const CE_T wc = k->w ? k->w[c] : (CE_T)1;
        if (smooth) CE_FN(tile_grad_class)(xt + c * CE_TILE, wc, ga, gb, 1);
        else CE_FN(tile_grad_class)(xt + c * CE_TILE, wc, ga, gb, 0);
    }
    for (int64_t j = 0; j < CE_TILE; ++j)
        if (y[j] >= 0) xt[y[j] * CE_TILE + j] = g_y[j];
    if (skips || posts) { /* rare: ignored rows exactly 0 whatever their logits; post scales */
        for (int64_t j = 0; j < CE_TILE; ++j) {
            for (int64_t c = 0; c < C; ++c) {
                CE_T *v = xt + c * CE_TILE + j;
                *v = y[j] < 0 ? (CE_T)0 : *v * post[j];
            }
        }
    }
    /* out: each row's gradient */
#if CE_HALF
    if (inner > 1) {
        for (int64_t c = 0; c < C; ++c)
            CE_FN(store_span)(a->grad, p0.goff + c * inner, 1, xt + c * CE_TILE, nb, a->out_wide);
    } else { /* the rows are contiguous: transposed into the staging, stored at once */
        for (int64_t j = 0; j < nb; ++j)
            for (int64_t c = 0; c < C; ++c) stage[j * C + c] = xt[c * CE_TILE + j];
        CE_FN(store_span)(a->grad, p0.goff, 1, stage, nb * C, a->out_wide);
    }
#else
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
#endif
    return acc;
}
