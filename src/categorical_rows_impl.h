/* categorical_rows_impl.h — the row driver of the categorical kernel: blocks
 * of whole rows per thread, each row by the row math (categorical_math_impl.h)
 * or, for narrow rows and a class axis that is not last, in tiles of rows
 * (categorical_tile_impl.h).
 *
 * Work is split into fixed blocks of rows (ce_rows_per_block, a function of C
 * only) and per-block loss partials are combined in a fixed order, so results
 * are bitwise identical for every thread count. */

/* A 16-bit row's plain gradient (integer target, no smoothing, no cap, a
 * finite scale) is g_c = a e_c but at the target, gy: the multiply is left to
 * the store pass that rounds it (storage_impl.h), one pass fewer. */
typedef struct {
    CE_T a, gy;
    int on;
} CE_FN(row_defer);

/* One whole row on one thread. `fac` (softcap only) holds the chain-rule
 * factors written by the capping pass; *lse gets the row's log-sum-exp.
 * dfr (or NULL): where the row may leave its last factor (row_defer). */
CE_INLINE double CE_FN(cat_row)(const CE_FN(cat_ctx) * k, const CE_T *x, ptrdiff_t sx,
                                const CE_T *q, ptrdiff_t sq, int64_t y, CE_T *g, ptrdiff_t sg,
                                const CE_T *fac, double sw, double gscale, const ce_prefetch *pf,
                                double *lse, CE_FN(row_defer) * dfr) {
    const int64_t C = k->C;
    /* in place (g == x) pass 2 overwrites x: read the target logit first */
    const double xy = k->prob ? 0.0 : (double)x[y * sx];
    CE_FN(span_stats) st;
    CE_FN(scan_span)(k, x, sx, q, sq, k->w, C, g, sg, &st, pf);
    if (st.bad || st.empty) {
        if (g) CE_FN(fill_span)(g, sg, C, (CE_T)NAN);
        *lse = NAN;
        return NAN;
    }
    CE_FN(row_coef) cf;
    const double sp = st.s_less + (st.n_max - 1.0);
    const double loss = CE_FN(row_finish)(k, st.r, sp, log1p(sp), st.dot, st.W, xy,
                                          y, sw, gscale, &cf);
    *lse = (double)st.r + log1p(sp);
    if (!g) return loss;
    const double e_y = k->prob ? 0.0 : (double)g[y * sg];
    if (dfr && !k->prob && k->eps <= 0.0 && !fac && cf.post == 1.0) {
        dfr->a = CE_FN(grad_factor)(&cf, 1.0);
        dfr->gy = CE_FN(target_grad)(&cf, e_y, 1.0, 1, (CE_T)1);
        dfr->on = 1;
        return loss;
    }
    CE_FN(span_grad)(k, &cf, 1.0, 1, q, sq, k->w, C, g, sg, fac);
    if (cf.post != 1.0) CE_FN(scale_span)(g, sg, C, (CE_T)cf.post);
    if (!k->prob) g[y * sg] = CE_FN(target_grad)(&cf, e_y, 1.0, 1, fac ? fac[y] : (CE_T)1);
    return loss;
}

/* Specialise the row for unit strides and for loss-only calls, so that the
 * compiler sees constant strides and no per-element "is there a gradient"
 * test in the hot loops. */
CE_INLINE double CE_FN(cat_row_any)(const CE_FN(cat_ctx) * k, const CE_T *x, ptrdiff_t sx,
                                    const CE_T *q, ptrdiff_t sq, int64_t y, CE_T *g, ptrdiff_t sg,
                                    const CE_T *fac, double sw, double gscale,
                                    const ce_prefetch *pf, double *lse, CE_FN(row_defer) * dfr) {
    if (sx == 1 && sg == 1 && (!q || sq == 1)) {
        return g ? CE_FN(cat_row)(k, x, 1, q, 1, y, g, 1, fac, sw, gscale, pf, lse, dfr)
                 : CE_FN(cat_row)(k, x, 1, q, 1, y, NULL, 1, fac, sw, gscale, pf, lse, NULL);
    }
    return g ? CE_FN(cat_row)(k, x, sx, q, sq, y, g, sg, fac, sw, gscale, pf, lse, dfr)
             : CE_FN(cat_row)(k, x, sx, q, sq, y, NULL, sg, fac, sw, gscale, pf, lse, NULL);
}

/* Soft-capping: xc = cap * tanh(x / cap) into scratch, and the chain-rule
 * factor 1 - tanh^2(x / cap) = 4a / (1 + a)^2 with a = exp(-2|x / cap|),
 * which keeps relative accuracy where tanh rounds to +-1. */
static void CE_FN(softcap_row)(const CE_S *x, ptrdiff_t sx, int64_t C, double cap, CE_T *xc,
                               CE_T *fac) {
    for (int64_t c = 0; c < C; ++c) {
        double u = (double)CE_LD(x[c * sx]) / cap;
        double a = exp(-2.0 * fabs(u));
        xc[c] = (CE_T)(cap * tanh(u));
        fac[c] = (CE_T)(4.0 * a / ((1.0 + a) * (1.0 + a)));
    }
}


/* Whether a 16-bit row path call streams its gradient (ce_half.h): larger
 * than the caches, in whole contiguous rows long enough that the unaligned
 * ends of each row (stored plainly) are few. */
CE_INLINE int CE_FN(streams)(const ce_cat_args *a) {
    const int64_t bytes = a->outer * a->inner * a->C * (int64_t)sizeof(CE_S);
    return CE_HALF && a->grad && !a->out_wide && a->inner == 1 && a->C >= CE_STREAM_MIN_ROW &&
           bytes >= CE_STREAM_MIN_BYTES;
}

/* The blocks of rows one thread computes (an orphaned `omp for`: inside a
 * parallel region the team shares the blocks, outside one it runs them all).
 * Returns 1 if its scratch could not be allocated. */
static int CE_FN(cat_blocks)(ce_cat_args *a, const CE_FN(cat_ctx) * k, double gscale,
                             double *partial, int64_t rb, int64_t nblocks, double cap, int tile,
                             size_t scratch_len) {
    const int64_t N = a->outer * a->inner, C = a->C, inner = a->inner;
    CE_T *loss_out = (CE_T *)a->loss_out;
#if CE_HALF
    /* a 16-bit gradient larger than the caches is streamed (ce_half.h) */
    const int stream = CE_FN(streams)(a);
#endif
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
            /* the next whole tile of a block, requested during this one, when
             * rows are contiguous (its logits and gradient are one span each) */
            const int ahead = inner == 1 && a->xs_c == 1 && a->xs_o == C && r + 2 * CE_TILE <= r_end;
            const ce_prefetch next = {ahead ? (const char *)((const CE_S *)a->x + (r + CE_TILE) * C) : NULL,
                                      ahead && a->grad ? (char *)((CE_S *)a->grad + (r + CE_TILE) * C) : NULL};
            acc += CE_FN(cat_tile)(a, k, gscale, r, nb, scratch, loss_out, ahead ? &next : NULL);
            r += nb;
        }
        for (int64_t r = b * rb; !tile && r < r_end; ++r) {
            CE_FN(row_ptrs) p = CE_FN(locate_row)(a, r, gscale);
            double loss = 0.0, lse = NAN;
#if CE_HALF
            /* the row in scratch (capped, its factors behind it), and its
             * gradient in place there (see storage_impl.h) */
            if (p.ignored) {
                if (a->grad) CE_FN(fill_out)(a->grad, p.goff, inner, C, 0, a->out_wide);
            } else {
                const CE_T *fac = NULL;
                if (cap > 0.0) {
                    CE_FN(softcap_row)(p.x, a->xs_c, C, cap, scratch, scratch + C);
                    fac = scratch + C;
                } else {
                    CE_FN(load_span)(scratch, p.x, a->xs_c, C);
                }
                CE_T *g = a->grad ? scratch : NULL;
                /* the next row of a block, requested during this one (its
                 * output too, unless that is streamed: a request would read
                 * the lines that streaming writes without reading) */
                const int ahead = cap <= 0.0 && a->xs_c == 1 && inner == 1 && r + 1 < r_end;
                const ce_prefetch next = {ahead ? (const char *)(p.x + a->xs_o) : NULL,
                                          ahead && g && !stream ? (char *)CE_FN(out_at)(a->grad, p.goff + C, a->out_wide)
                                                                : NULL};
                CE_FN(row_defer) dfr = {0, 0, 0};
                loss = CE_FN(cat_row_any)(k, scratch, 1, p.q, a->qs_c, p.y, g, 1, fac, p.sw, p.gs,
                                          ahead ? &next : NULL, &lse, &dfr);
                if (g) {
                    /* a finite factor of e in [0, 1] makes no NaN */
                    const int notnan = dfr.on && dfr.a - dfr.a == 0;
                    const int flags = notnan ? CE_STORE_NOTNAN | (stream ? CE_STORE_STREAM : 0) : 0;
                    CE_FN(store_span_scaled)(a->grad, p.goff, inner, scratch, C, dfr.on ? dfr.a : 1, flags,
                                             a->out_wide);
                    if (dfr.on) CE_FN(store_one)(a->grad, p.goff + p.y * inner, dfr.gy, a->out_wide);
                }
            }
#else
            if (p.ignored) { /* ignored samples are never read: loss 0, gradient 0 */
                if (p.g) CE_FN(fill_span)(p.g, inner, C, (CE_T)0);
            } else if (cap > 0.0) {
                CE_FN(softcap_row)(p.x, a->xs_c, C, cap, scratch, scratch + C);
                loss = CE_FN(cat_row_any)(k, scratch, 1, p.q, a->qs_c, p.y, p.g, inner, scratch + C,
                                          p.sw, p.gs, NULL, &lse, NULL);
            } else {
                /* the next row of a block, requested during this one */
                const int ahead = a->xs_c == 1 && inner == 1 && r + 1 < r_end;
                const ce_prefetch next = {ahead ? (const char *)(p.x + a->xs_o) : NULL,
                                          ahead && p.g ? (char *)(p.g + C) : NULL};
                const ce_prefetch *pf = ahead ? &next : NULL;
                loss = CE_FN(cat_row_any)(k, p.x, a->xs_c, p.q, a->qs_c, p.y, p.g, inner, NULL, p.sw,
                                          p.gs, pf, &lse, NULL);
            }
#endif
            if (a->lse_out) a->lse_out[r] = lse;
            if (loss_out) loss_out[r] = (CE_T)loss;
            acc += loss;
        }
        if (partial) partial[b] = acc;
    }
#if CE_HALF
    if (stream) ce_stream_fence();
#endif
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
    const int regs = CE_TILE_IN_REGISTERS && !CE_HALF && a->inner == 1 && a->xs_c == 1 && N >= CE_TILE;
    ce_path_hit(!tile ? CE_PATH_ROW : regs ? CE_PATH_TILE_REGISTERS : CE_PATH_TILE_ELEMENTS);
    if (CE_HALF && !tile && CE_FN(streams)(a)) ce_path_hit(CE_PATH_STREAM);
    const size_t scratch_len = tile ? CE_FN(tile_scratch_len)(C)
                               : cap > 0.0 ? (size_t)(2 * C)
                               : CE_HALF ? (size_t)C : 0;
    int nomem = 0;
    if (nt > 1) {
#pragma omp parallel num_threads(nt) reduction(| : nomem)
        nomem |= CE_FN(cat_blocks)(a, k, gscale, partial, rb, nblocks, cap, tile, scratch_len);
    } else { /* no thread team at all: it would cost more than a small call */
        nomem = CE_FN(cat_blocks)(a, k, gscale, partial, rb, nblocks, cap, tile, scratch_len);
    }
    return nomem ? CE_ERR_NOMEM : CE_OK;
}
