/* softmax_impl.h — logsumexp, log_softmax, softmax, entropy and
 * softmax_entropy over the class axis of an (outer, C, inner) strided array,
 * written once and instantiated per dtype by kernels_for_dtype.h (CE_T,
 * CE_FN, CE_EXP_NONPOS from ce_vecmath.h, CE_LOG from ce_vecmath_log.h).
 * Row scalars (sums, lse) are kept in double for both dtypes.
 *
 * Per row x (C elements), for the softmax-based operations:
 *   pass 1  m = max x, and whether the row holds NaN; +inf shows as m = +inf,
 *           an all -inf row as m = -inf;
 *   pass 2  e_c = exp(x_c - m) (computed once: softmax stores it straight
 *           into the output row), s' = sum_{x_c < m} e_c + (#{x_c == m} - 1),
 *           i.e. sum e - 1 without cancellation, and for softmax_entropy
 *           sum_c e_c (m - x_c) (terms with e_c == 0 are 0);
 *   then    L1 = log1p(s'), lse = m + L1;
 *   pass 3  log_softmax_c = -((m - x_c) + L1), softmax_c = e_c / (1 + s').
 * The row is cache-resident after pass 1, so DRAM sees one read of x (and one
 * write of the output). entropy is a single pass: -sum p log p, 0 log 0 = 0.
 * Edge rules (the reference's, SciPy's for logsumexp): NaN -> NaN; else +inf
 * -> logsumexp +inf, all -inf -> logsumexp -inf; log_softmax, softmax and
 * softmax_entropy give NaN for rows with NaN or +inf or all -inf.
 *
 * Rows are grouped in blocks of ce_rows_per_block(C) rows, a function of C
 * only; every row is computed by the same code whatever the thread count, so
 * results are bitwise identical for every num_threads. */

CE_INLINE void CE_FN(sm_fill)(CE_T *y, ptrdiff_t sy, int64_t C, CE_T v) {
    for (int64_t c = 0; c < C; ++c) y[c * sy] = v;
}

/* One row of a softmax-based operation (op is a constant after inlining, and
 * so are the strides in the unit-stride specialisation). Returns the row
 * result for the reducing operations. y may alias x exactly. */
CE_INLINE double CE_FN(sm_row)(const CE_T *x, ptrdiff_t sx, int64_t C, CE_T *y, ptrdiff_t sy,
                               const int op, const ce_prefetch *pf) {
    int nan;
    const CE_T m = CE_FN(row_max)(x, sx, C, &nan);
    if (nan || m == INFINITY || m == -INFINITY) {
        if (op == CE_SM_LOGSUMEXP) return nan ? NAN : (double)m;
        if (op == CE_SM_LOG_SOFTMAX || op == CE_SM_SOFTMAX) CE_FN(sm_fill)(y, sy, C, (CE_T)NAN);
        return NAN;
    }
    double s_less = 0.0, n_max = 0.0, dot = 0.0;
    if (op == CE_SM_SOFTMAX_ENTROPY) { /* also sum_c e_c (m - x_c), 0 where e_c == 0 */
        for (int64_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
            const int64_t c1 = c0 + CE_CHUNK < C ? c0 + CE_CHUNK : C;
            if (pf) ce_prefetch_bytes(pf, c0 * (int64_t)sizeof(CE_S), c1 * (int64_t)sizeof(CE_S));
            CE_T cs = 0, cn = 0, cd = 0;
#pragma omp simd reduction(+ : cs, cn, cd)
            for (int64_t c = c0; c < c1; ++c) {
                const CE_T d = x[c * sx] - m;
                const CE_T e = CE_EXP_NONPOS(d);
                cs += CE_FN(keep_if)(e, d < 0);
                cn += d == 0 ? (CE_T)1 : (CE_T)0;
                cd += e == 0 ? (CE_T)0 : e * -d;
            }
            s_less += (double)cs;
            n_max += (double)cn;
            dot += (double)cd;
        }
    } else { /* softmax stores the exponentials in the output, to scale below */
        CE_FN(row_expsum)(x, sx, C, m, op == CE_SM_SOFTMAX ? y : NULL, sy, &s_less, &n_max, pf);
    }
    const double sp = s_less + (n_max - 1.0);
    const double L1 = log1p(sp);
    if (op == CE_SM_LOGSUMEXP) return (double)m + L1;
    if (op == CE_SM_SOFTMAX_ENTROPY) return L1 + dot / (1.0 + sp);
    if (op == CE_SM_LOG_SOFTMAX) {
        const CE_T l1 = (CE_T)L1;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) y[c * sy] = -((m - x[c * sx]) + l1);
    } else { /* softmax: scale the stored exponentials */
        const CE_T inv = (CE_T)(1.0 / (1.0 + sp));
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) y[c * sy] *= inv;
    }
    return 0.0;
}

/* Entropy of one row of probabilities: -sum p log p with 0 log 0 = 0.
 * *neg gets whether the row holds a negative value. */
CE_INLINE double CE_FN(ent_row)(const CE_T *p, ptrdiff_t sp, int64_t C, int *neg) {
    double h = 0.0;
    int ng = 0;
#pragma omp simd reduction(+ : h) reduction(| : ng)
    for (int64_t c = 0; c < C; ++c) {
        const CE_T v = p[c * sp];
        ng |= v < 0;
        h += v == 0 ? 0.0 : (double)(-v * CE_LOG(v));
    }
    *neg = ng;
    return h;
}

/* Class axis not last (inner > 1, unit inner stride): rows are columns of a
 * (C, inner) slab. Walking one row at a time would touch a new cache line
 * (and often a new page) per element, so a tile of CE_TILE neighbouring rows
 * (one or two cache lines wide) is processed together, vectorised across the rows, in
 * place in the slab: the same passes as sm_row, by the tile scan the
 * categorical tile path uses too (tilescan_impl.h). The tiling is a function
 * of the shape only (never of the thread count). Returns, for entropy, the
 * first flat position of a negative value in the tile, else -1. res[j]
 * receives the reducing operations' results. */
CE_INLINE int64_t CE_FN(sm_tile)(const CE_T *x, ptrdiff_t sc, int64_t C, int64_t nb, CE_T *y,
                                 ptrdiff_t syc, CE_T *res, const int op, int64_t flat0,
                                 int64_t inner) {
    if (op == CE_SM_ENTROPY) {
        double s[CE_TILE];
        int neg[CE_TILE];
        for (int64_t j = 0; j < nb; ++j) {
            s[j] = 0.0;
            neg[j] = 0;
        }
        for (int64_t c = 0; c < C; ++c) {
            const CE_T *xc = x + c * sc;
#pragma omp simd
            for (int64_t j = 0; j < nb; ++j) {
                const CE_T v = xc[j];
                neg[j] |= v < 0;
                s[j] += v == 0 ? 0.0 : (double)(-v * CE_LOG(v));
            }
        }
        int64_t first = -1;
        for (int64_t j = 0; j < nb; ++j) {
            res[j] = (CE_T)s[j];
            if (neg[j]) {
                int64_t c = 0;
                while (!(x[c * sc + j] < 0)) ++c;
                const int64_t f = flat0 + c * inner + j;
                if (first < 0 || f < first) first = f;
            }
        }
        return first;
    }
    CE_T m[CE_TILE];
    CE_I nan[CE_TILE];
    double sl[CE_TILE], nm[CE_TILE], dot[CE_TILE];
    CE_FN(tile_max)(x, sc, C, nb, m, nan);
    /* bad lanes (NaN, +inf, all -inf) compute garbage (see tilescan_impl.h)
     * and are overwritten at the end; softmax stores e in the output */
    if (op == CE_SM_SOFTMAX)
        CE_FN(tile_expsum)(x, sc, C, nb, m, y, syc, NULL, sl, nm, NULL, 1, CE_DOT_NONE);
    else if (op == CE_SM_SOFTMAX_ENTROPY)
        CE_FN(tile_expsum)(x, sc, C, nb, m, NULL, 0, NULL, sl, nm, dot, 0, CE_DOT_ENTROPY);
    else
        CE_FN(tile_expsum)(x, sc, C, nb, m, NULL, 0, NULL, sl, nm, NULL, 0, CE_DOT_NONE);
    CE_T k[CE_TILE]; /* log_softmax: L1; softmax: 1 / (1 + s') */
    int bad[CE_TILE];
    for (int64_t j = 0; j < nb; ++j) {
        bad[j] = nan[j] || m[j] == INFINITY || m[j] == -INFINITY;
        const double sp = sl[j] + (nm[j] - 1.0);
        const double L1 = log1p(sp);
        k[j] = op == CE_SM_SOFTMAX ? (CE_T)(1.0 / (1.0 + sp)) : (CE_T)L1;
        if (op == CE_SM_LOGSUMEXP)
            res[j] = (CE_T)(bad[j] ? (nan[j] ? NAN : (double)m[j]) : (double)m[j] + L1);
        else if (op == CE_SM_SOFTMAX_ENTROPY)
            res[j] = (CE_T)(bad[j] ? NAN : L1 + dot[j] / (1.0 + sp));
    }
    if (op == CE_SM_LOG_SOFTMAX || op == CE_SM_SOFTMAX) {
        for (int64_t c = 0; c < C; ++c) {
            const CE_T *xc = x + c * sc;
            CE_T *yc = y + c * syc;
            if (op == CE_SM_LOG_SOFTMAX) {
#pragma omp simd
                for (int64_t j = 0; j < nb; ++j) yc[j] = -((m[j] - xc[j]) + k[j]);
            } else {
#pragma omp simd
                for (int64_t j = 0; j < nb; ++j) yc[j] *= k[j];
            }
        }
        for (int64_t j = 0; j < nb; ++j)
            if (bad[j]) CE_FN(sm_fill)(y + j, syc, C, (CE_T)NAN);
    }
    return -1;
}

/* entropy's domain error: the smallest first-negative flat position over the
 * n work items (-1 where none), reported with its value; frees first_neg. */
static int CE_FN(sm_first_negative)(ce_sm_args *a, int64_t *first_neg, int64_t n) {
    if (!first_neg) return CE_OK;
    int rc = CE_OK;
    for (int64_t b = 0; b < n; ++b) {
        const int64_t f = first_neg[b];
        if (f >= 0 && (rc == CE_OK || f < a->err_pos)) {
            rc = CE_ERR_DOMAIN;
            a->err_pos = f;
        }
    }
    if (rc != CE_OK) {
        const CE_S *x = (const CE_S *)a->x;
        const int64_t C = a->C, inner = a->inner;
        const int64_t f = a->err_pos, i = f % inner, oc = f / inner, c = oc % C, o = oc / C;
        a->err_fval = (double)CE_LD(x[o * a->xs_o + c * a->xs_c + i * a->xs_i]);
    }
    free(first_neg);
    return rc;
}

/* The driver for the tiled layout (see sm_tile): work items are (o, tile)
 * pairs, a function of the shape only. */
static int CE_FN(sm_tiled)(ce_sm_args *a) {
    const int64_t outer = a->outer, C = a->C, inner = a->inner;
    const int op = a->op;
    const CE_S *x = (const CE_S *)a->x;
    CE_T *out = (CE_T *)a->out; /* row results: the compute type */
    const int rowwise = op == CE_SM_LOG_SOFTMAX || op == CE_SM_SOFTMAX;
    const int64_t ntiles = (inner + CE_TILE - 1) / CE_TILE;
    const int64_t items = outer * ntiles;
    int64_t *first_neg = NULL;
    if (op == CE_SM_ENTROPY && items > 0) {
        first_neg = (int64_t *)malloc((size_t)items * sizeof(int64_t));
        if (!first_neg) return CE_ERR_NOMEM;
    }
    const int nt = ce_threads_for(a->num_threads, items, outer * C * inner);
    int nomem = 0;

#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static) reduction(| : nomem)
    for (int64_t it = 0; it < items; ++it) {
        const int64_t o = it / ntiles, i0 = (it - o * ntiles) * CE_TILE;
        const int64_t nb = inner - i0 < CE_TILE ? inner - i0 : CE_TILE;
        CE_T *res = rowwise ? NULL : out + o * inner + i0;
        int64_t f;
#if CE_HALF
        /* the tile class-major in scratch, computed in place there */
        CE_T *xt = (CE_T *)malloc((size_t)(C * CE_TILE) * sizeof(CE_T)), *yt = rowwise ? xt : NULL;
        if (!xt) {
            nomem = 1;
            continue;
        }
        for (int64_t c = 0; c < C; ++c) CE_FN(load_span)(xt + c * CE_TILE, x + o * a->xs_o + i0 + c * a->xs_c, 1, nb);
        const ptrdiff_t sc = CE_TILE, syc = CE_TILE;
#else
        const CE_T *xt = x + o * a->xs_o + i0;
        CE_T *yt = rowwise ? out + o * C * inner + i0 : NULL;
        const ptrdiff_t sc = a->xs_c, syc = inner;
#endif
        /* full tiles get a constant lane count: the lane loops unroll and the
         * per-lane accumulators live in registers */
        if (nb == CE_TILE) {
            switch (op) {
            case CE_SM_LOGSUMEXP:
                f = CE_FN(sm_tile)(xt, sc, C, CE_TILE, yt, syc, res, CE_SM_LOGSUMEXP, 0, inner);
                break;
            case CE_SM_LOG_SOFTMAX:
                f = CE_FN(sm_tile)(xt, sc, C, CE_TILE, yt, syc, res, CE_SM_LOG_SOFTMAX, 0, inner);
                break;
            case CE_SM_SOFTMAX:
                f = CE_FN(sm_tile)(xt, sc, C, CE_TILE, yt, syc, res, CE_SM_SOFTMAX, 0, inner);
                break;
            case CE_SM_ENTROPY:
                f = CE_FN(sm_tile)(xt, sc, C, CE_TILE, yt, syc, res, CE_SM_ENTROPY,
                                   o * C * inner + i0, inner);
                break;
            default:
                f = CE_FN(sm_tile)(xt, sc, C, CE_TILE, yt, syc, res, CE_SM_SOFTMAX_ENTROPY, 0,
                                   inner);
                break;
            }
        } else {
            f = CE_FN(sm_tile)(xt, sc, C, nb, yt, syc, res, op, o * C * inner + i0, inner);
        }
#if CE_HALF
        for (int64_t c = 0; rowwise && c < C; ++c)
            CE_FN(store_span)(a->out, o * C * inner + i0 + c * inner, 1, xt + c * CE_TILE, nb, a->out_wide);
        free(xt);
#endif
        if (first_neg) first_neg[it] = f;
    }
    if (nomem) {
        free(first_neg);
        return CE_ERR_NOMEM;
    }
    return CE_FN(sm_first_negative)(a, first_neg, items);
}

int CE_FN(ce_softmax_family)(ce_sm_args *a) {
    const int64_t outer = a->outer, C = a->C, inner = a->inner, N = outer * inner;
    const int op = a->op;
    const CE_S *x = (const CE_S *)a->x;
    CE_T *out = (CE_T *)a->out; /* row results: the compute type */
    const int64_t rb = ce_rows_per_block(C);
    const int64_t nblocks = (N + rb - 1) / rb;
    const int unit = a->xs_c == 1 && inner == 1;
    const int rowwise = op == CE_SM_LOG_SOFTMAX || op == CE_SM_SOFTMAX;
    if (inner >= 4 && a->xs_i == 1) return CE_FN(sm_tiled)(a);
    int64_t *first_neg = NULL; /* entropy: first negative flat position per block */
    if (op == CE_SM_ENTROPY && nblocks > 0) {
        first_neg = (int64_t *)malloc((size_t)nblocks * sizeof(int64_t));
        if (!first_neg) return CE_ERR_NOMEM;
    }
    const int nt = ce_threads_for(a->num_threads, nblocks, N * C);
    int nomem = 0;

#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static) reduction(| : nomem)
    for (int64_t b = 0; b < nblocks; ++b) {
        const int64_t r_end = (b + 1) * rb < N ? (b + 1) * rb : N;
        int64_t fneg = -1;
#if CE_HALF
        /* each row in scratch, computed in place there */
        CE_T *scratch = (CE_T *)malloc((size_t)(C > 0 ? C : 1) * sizeof(CE_T));
        if (!scratch) {
            nomem = 1;
            continue;
        }
        const int unit_c = 1;
        const ptrdiff_t sxc = 1;
#else
        const int unit_c = unit;
        const ptrdiff_t sxc = a->xs_c;
#endif
        for (int64_t r = b * rb; r < r_end; ++r) {
            const int64_t o = r / inner, i = r - o * inner;
#if CE_HALF
            const CE_S *xs_r = x + o * a->xs_o + i * a->xs_i;
            CE_FN(load_span)(scratch, xs_r, a->xs_c, C);
            const CE_T *xr = scratch;
            CE_T *yr = rowwise ? scratch : NULL;
            const ptrdiff_t syr = 1;
            const char *next_x = (const char *)(xs_r + a->xs_o);
            char *next_y = yr ? (char *)CE_FN(out_at)(a->out, o * C * inner + i + C, a->out_wide) : NULL;
#else
            const CE_T *xr = x + o * a->xs_o + i * a->xs_i;
            CE_T *yr = rowwise ? out + o * C * inner + i : NULL;
            const ptrdiff_t syr = inner;
            const char *next_x = (const char *)(xr + a->xs_o);
            char *next_y = yr ? (char *)(yr + C) : NULL;
#endif
            double v = 0.0;
            if (op == CE_SM_ENTROPY) {
                int neg = 0;
                v = unit_c ? CE_FN(ent_row)(xr, 1, C, &neg) : CE_FN(ent_row)(xr, sxc, C, &neg);
                if (neg) {
                    int64_t c = 0;
                    while (!(xr[c * sxc] < 0)) ++c;
                    const int64_t f = (o * C + c) * inner + i;
                    if (fneg < 0 || f < fneg) fneg = f;
                }
            } else if (unit_c) {
                /* the next row of a block, requested during this one */
                const int ahead = r + 1 < r_end && (!CE_HALF || unit);
                const ce_prefetch next = {ahead ? next_x : NULL, ahead ? next_y : NULL};
                const ce_prefetch *pf = ahead ? &next : NULL;
                switch (op) {
                case CE_SM_LOGSUMEXP: v = CE_FN(sm_row)(xr, 1, C, yr, 1, CE_SM_LOGSUMEXP, pf); break;
                case CE_SM_LOG_SOFTMAX: CE_FN(sm_row)(xr, 1, C, yr, 1, CE_SM_LOG_SOFTMAX, pf); break;
                case CE_SM_SOFTMAX: CE_FN(sm_row)(xr, 1, C, yr, 1, CE_SM_SOFTMAX, pf); break;
                default: v = CE_FN(sm_row)(xr, 1, C, yr, 1, CE_SM_SOFTMAX_ENTROPY, pf); break;
                }
            } else {
                v = CE_FN(sm_row)(xr, sxc, C, yr, syr, op, NULL);
            }
#if CE_HALF
            if (rowwise) CE_FN(store_span)(a->out, o * C * inner + i, inner, scratch, C, a->out_wide);
#endif
            if (!rowwise) out[r] = (CE_T)v;
        }
#if CE_HALF
        free(scratch);
#endif
        if (first_neg) first_neg[b] = fneg;
    }
    if (nomem) {
        free(first_neg);
        return CE_ERR_NOMEM;
    }

    return CE_FN(sm_first_negative)(a, first_neg, nblocks);
}

