/* binary_impl.h — elementwise binary cross-entropy (on logits and on
 * probabilities) and torch's elementwise kl_div (kldiv_chunk, on the same
 * blocking, staging and reductions), written once and instantiated per dtype by
 * kernels_for_dtype.h (CE_T, CE_FN, and the vector math it uses: CE_EXP_NONPOS
 * from ce_vecmath.h, CE_LOG and CE_LOG1P from ce_vecmath_log.h).
 *
 * Per element, with x the logit, t the target, w the weight, pw the
 * pos_weight (PyTorch semantics) and e = exp(-|x|), l = log1p(e):
 *   softplus(x)  = max(x, 0) + l,   softplus(-x) = max(-x, 0) + l,
 *   loss         = w (pw t softplus(-x) + (1 - t) softplus(x))
 *     (two non-negative terms for t in [0, 1]: the e^-40 tail of x = 40,
 *      t = 1 survives, and nothing overflows for any finite x);
 *   sigmoid(x)   = 1 / (1 + e) or e / (1 + e) by the sign of x, likewise
 *                  sigmoid(-x), so neither overflows nor cancels;
 *   d loss / dx  = w ((1 - t) sigmoid(x) - pw t sigmoid(-x)).
 * On probabilities p (clipped to [eps, 1 - eps] in the element type):
 *   loss = -w (t log p + (1 - t) log1p(-p)), a term with coefficient 0 being 0,
 * and every p and t is checked to lie in [0, 1] in the same pass.
 *
 * Layout: flat elements f = r*cols + c are processed in fixed chunks of
 * CE_BIN_CHUNK (blocks of CE_BIN_BLOCK for the threads; both independent of
 * the thread count, so every rounding is too). Operands that are contiguous
 * in f are used in place; broadcast or strided ones are gathered chunk by
 * chunk into a small per-thread buffer (L1-resident), so the arithmetic is a
 * single unit-stride vector loop and broadcasting never materialises.
 *
 * 16-bit storage (CE_HALF): only x (logits or probabilities) and the gradient
 * are 16-bit. A chunk of x is always staged, converted to float32 (exact), and
 * the gradient is computed into a float32 chunk, then stored rounded to
 * nearest even (storage_impl.h), or written as float32 directly (out_wide).
 * A chunk is read whole before it is stored, so out=logits stays exact. */

#ifndef CE_BIN_CHUNK
#define CE_BIN_CHUNK 512
#define CE_BIN_BLOCK 65536 /* a multiple of CE_BIN_CHUNK */
#endif

/* m elements of stride s (0: broadcast) from src into d: a CE_T operand, or
 * (half) 16-bit storage converted to CE_T. */
CE_INLINE void CE_FN(bin_span)(CE_T *restrict d, const void *src, int half, int64_t s, int64_t m) {
#if CE_HALF
    if (half) {
        CE_FN(load_span)(d, (const CE_S *)src, s, m);
        return;
    }
#else
    (void)half;
#endif
    const CE_T *v = (const CE_T *)src;
    if (s == 0) {
        const CE_T c = v[0];
        for (int64_t j = 0; j < m; ++j) d[j] = c;
    } else if (s == 1) {
        memcpy(d, v, (size_t)m * sizeof(CE_T));
    } else {
        for (int64_t j = 0; j < m; ++j) d[j] = v[j * s];
    }
}

/* The operand's values for flat elements [f0, f0 + n): a pointer into the
 * operand itself when it is CE_T and contiguous in f, else `buf` filled by
 * a gather (half: an operand in 16-bit storage, always converted into buf). */
CE_INLINE const CE_T *CE_FN(bin_stage)(const void *base, int half, int64_t rs, int64_t cs, int64_t rows,
                                       int64_t cols, int64_t f0, int64_t n, CE_T *buf) {
    const int64_t size = half ? (int64_t)sizeof(CE_S) : (int64_t)sizeof(CE_T);
    if (cs == 1 && (rs == cols || rows == 1)) {
        if (!half) return (const CE_T *)base + f0;
        CE_FN(bin_span)(buf, (const char *)base + f0 * size, half, 1, n);
        return buf;
    }
    int64_t r = f0 / cols, c = f0 - r * cols, k = 0;
    while (k < n) {
        int64_t m = cols - c < n - k ? cols - c : n - k;
        CE_FN(bin_span)(buf + k, (const char *)base + (r * rs + c * cs) * size, half, cs, m);
        k += m;
        ++r;
        c = 0;
    }
    return buf;
}

/* One chunk on logits. want_loss / want_none / want_grad are constants at
 * every call site, so each combination compiles to its own vector loop.
 * g may alias x exactly (in place); nothing else aliases. */
CE_INLINE double CE_FN(bcel_chunk)(int64_t n, const CE_T *x, const CE_T *t, const CE_T *w,
                                   const CE_T *pw, const CE_T *go, CE_T *loss_out, CE_T *g,
                                   const int want_loss, const int want_none, const int want_grad) {
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < n; ++c) {
        const CE_T xv = x[c], tv = t[c], wv = w[c], pv = pw[c];
        const CE_T ax = xv < 0 ? -xv : xv;
        /* in [0, 1], never overflows; the cheap exp has no NaN rule of its own */
        const CE_T e = xv != xv ? xv : CE_EXP_NONPOS(-ax);
        if (want_loss) {
            const CE_T l = CE_LOG1P(e);
            const CE_T sp_pos = (xv > 0 ? xv : (CE_T)0) + l; /* softplus(x) */
            const CE_T sp_neg = (xv < 0 ? -xv : (CE_T)0) + l; /* softplus(-x) */
            /* NaN x: l is NaN, so both are NaN, as the reference */
            const CE_T per = wv * (pv * tv * sp_neg + ((CE_T)1 - tv) * sp_pos);
            if (want_none) loss_out[c] = per;
            acc += (double)per;
        }
        if (want_grad) {
            const CE_T r = (CE_T)1 / ((CE_T)1 + e);
            const CE_T er = e * r;
            const CE_T sg_pos = xv >= 0 ? r : er; /* sigmoid(x) */
            const CE_T sg_neg = xv >= 0 ? er : r; /* sigmoid(-x) */
            const CE_T gv = wv * (((CE_T)1 - tv) * sg_pos - pv * tv * sg_neg);
            g[c] = gv * go[c];
        }
    }
    return acc;
}

/* One chunk on logits with the flags as constants at each call. */
CE_INLINE double CE_FN(bcel_dispatch)(int64_t n, const CE_T *x, const CE_T *t, const CE_T *w, const CE_T *pw,
                                      const CE_T *go, CE_T *loss_out, CE_T *g, int want_loss, int want_none,
                                      int want_grad) {
#define CE_BL_CALL(wl, wn, wg) CE_FN(bcel_chunk)(n, x, t, w, pw, go, loss_out, g, wl, wn, wg)
    if (want_grad)
        return want_none ? CE_BL_CALL(1, 1, 1) : want_loss ? CE_BL_CALL(1, 0, 1) : CE_BL_CALL(0, 0, 1);
    return want_none ? CE_BL_CALL(1, 1, 0) : CE_BL_CALL(1, 0, 0);
#undef CE_BL_CALL
}

/* One chunk on probabilities: returns the loss sum; *bad gets whether some
 * p or t lies outside [0, 1] (or is NaN). */
CE_INLINE double CE_FN(bcep_chunk)(int64_t n, const CE_T *p, const CE_T *t, const CE_T *w, CE_T lo,
                                   CE_T hi, CE_T *loss_out, const int want_none, int *bad) {
    double acc = 0.0;
    int b = 0;
#pragma omp simd reduction(+ : acc) reduction(| : b)
    for (int64_t c = 0; c < n; ++c) {
        const CE_T pv = p[c], tv = t[c];
        b |= !(pv >= 0 && pv <= 1) | !(tv >= 0 && tv <= 1);
        CE_T pc = pv < lo ? lo : pv;
        pc = pc > hi ? hi : pc;
        const CE_T lp = CE_LOG(pc), lq = CE_LOG1P(-pc);
        const CE_T pos = tv != 0 ? tv * lp : (CE_T)0;
        const CE_T neg = tv != 1 ? ((CE_T)1 - tv) * lq : (CE_T)0;
        const CE_T per = w[c] * -(pos + neg);
        if (want_none) loss_out[c] = per;
        acc += (double)per;
    }
    *bad = b;
    return acc;
}

/* One chunk of torch's kl_div (x log-probabilities, t the target), in the
 * element type as torch: loss = xlogy(t, t) - t x (xlogy: 0 at t = 0, so
 * 0 * -inf is still NaN), or exp(t) (t - x) for log_t; d loss / dx = -t,
 * resp. -exp(t). exp(t) is the cheap exp for t <= 0 (every log-probability)
 * and 1 / exp(-t) above (one more rounding; inf at t = +inf). Returns the
 * loss sum. */
CE_INLINE double CE_FN(kldiv_chunk)(int64_t n, const CE_T *x, const CE_T *t, const CE_T *go,
                                    CE_T *loss_out, CE_T *g, const int log_t, const int want_loss,
                                    const int want_none, const int want_grad) {
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < n; ++c) {
        const CE_T xv = x[c], tv = t[c];
        CE_T coef = tv; /* the weight of -x in the term, and -d/dx */
        if (log_t) {
            const CE_T e = CE_EXP_NONPOS(tv <= 0 ? tv : -tv);
            coef = tv != tv ? tv : (tv <= 0 ? e : (CE_T)1 / e);
        }
        if (want_loss) {
            const CE_T per = log_t ? coef * (tv - xv) : (tv == 0 ? (CE_T)0 : tv * CE_LOG(tv)) - tv * xv;
            if (want_none) loss_out[c] = per;
            acc += (double)per;
        }
        if (want_grad) g[c] = -coef * go[c];
    }
    return acc;
}

/* One chunk of kl_div with the flags as constants at each call. */
CE_INLINE double CE_FN(kldiv_dispatch)(int64_t n, const CE_T *x, const CE_T *t, const CE_T *go,
                                       CE_T *loss_out, CE_T *g, int log_t, int want_loss, int want_none,
                                       int want_grad) {
#define CE_KL_CALL(lt, wl, wn, wg) CE_FN(kldiv_chunk)(n, x, t, go, loss_out, g, lt, wl, wn, wg)
#define CE_KL_FLAGS(lt)                                                                     \
    (want_grad ? (want_none ? CE_KL_CALL(lt, 1, 1, 1)                                       \
                            : (want_loss ? CE_KL_CALL(lt, 1, 0, 1) : CE_KL_CALL(lt, 0, 0, 1))) \
               : (want_none ? CE_KL_CALL(lt, 1, 1, 0) : CE_KL_CALL(lt, 1, 0, 0)))
    return log_t ? CE_KL_FLAGS(1) : CE_KL_FLAGS(0);
#undef CE_KL_FLAGS
#undef CE_KL_CALL
}

/* First position in [0, n) whose value is outside [0, 1] (or NaN), or -1. */
CE_INLINE int64_t CE_FN(bin_first_bad)(const CE_T *v, int64_t n) {
    for (int64_t c = 0; c < n; ++c)
        if (!(v[c] >= 0 && v[c] <= 1)) return c;
    return -1;
}

int CE_FN(ce_binary)(ce_bin_args *a) {
    const int64_t rows = a->rows, cols = a->cols, N = rows * cols;
    const int probs = a->mode == CE_BIN_PROBS;
    const int kl = a->mode == CE_BIN_KL_DIV || a->mode == CE_BIN_KL_DIV_LOG;
    const int red = a->reduction;
    const int64_t nblocks = (N + CE_BIN_BLOCK - 1) / CE_BIN_BLOCK;
    double gscale = a->grad_output_scalar;
    if (red == CE_RED_MEAN) gscale = N > 0 ? gscale / (double)N : NAN;

    /* per block: partial loss sum, and (probs) the first bad position of
     * p and of t, so the reported position does not depend on threads */
    double *partial = NULL;
    int64_t *bad_p = NULL, *bad_t = NULL;
    if (nblocks > 0) {
        partial = (double *)malloc((size_t)nblocks * sizeof(double));
        if (probs) {
            bad_p = (int64_t *)malloc((size_t)nblocks * sizeof(int64_t));
            bad_t = (int64_t *)malloc((size_t)nblocks * sizeof(int64_t));
        }
        if (!partial || (probs && (!bad_p || !bad_t))) {
            free(partial);
            free(bad_p);
            free(bad_t);
            return CE_ERR_NOMEM;
        }
    }
    const void *x = a->x;
    const CE_T *t = (const CE_T *)a->t;
    const CE_T *w = (const CE_T *)a->w, *pw = (const CE_T *)a->pw;
    const CE_T *go = (const CE_T *)a->go;
    CE_T *loss_out = (CE_T *)a->loss_out;
    void *g = a->grad;
    /* the gradient goes through a float32 chunk to be rounded to 16 bits */
    const int narrow = CE_HALF && !a->out_wide;
    const int want_loss = probs || red != CE_RED_NONE || loss_out != NULL;
    const int want_none = loss_out != NULL;
    const int want_grad = !probs && g != NULL;
    const CE_T lo = (CE_T)a->eps, hi = (CE_T)(1.0 - a->eps);
    const int nt = ce_threads_for(a->num_threads, nblocks, N);

#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        /* per-thread staging buffers (L1): x, t, w, pw, grad_output, ones,
         * and the gradient (narrow) */
        CE_T buf[7][CE_BIN_CHUNK];
        for (int j = 0; j < CE_BIN_CHUNK; ++j) buf[5][j] = (CE_T)1;
        if (!go)
            for (int j = 0; j < CE_BIN_CHUNK; ++j) buf[4][j] = (CE_T)gscale;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nblocks; ++b) {
            const int64_t f_end = (b + 1) * CE_BIN_BLOCK < N ? (b + 1) * CE_BIN_BLOCK : N;
            double acc = 0.0;
            int64_t first_p = -1, first_t = -1;
            for (int64_t f = b * CE_BIN_BLOCK; f < f_end; f += CE_BIN_CHUNK) {
                const int64_t n = f_end - f < CE_BIN_CHUNK ? f_end - f : CE_BIN_CHUNK;
                const CE_T *xc = CE_FN(bin_stage)(x, CE_HALF, a->xs_r, a->xs_c, rows, cols, f, n, buf[0]);
                const CE_T *tc = CE_FN(bin_stage)(t, 0, a->ts_r, a->ts_c, rows, cols, f, n, buf[1]);
                CE_T *lc = loss_out ? loss_out + f : NULL;
                const CE_T *wc = w ? CE_FN(bin_stage)(w, 0, a->ws_r, a->ws_c, rows, cols, f, n, buf[2])
                                   : buf[5];
                if (probs) {
                    int bad = 0;
                    if (want_none)
                        acc += CE_FN(bcep_chunk)(n, xc, tc, wc, lo, hi, lc, 1, &bad);
                    else
                        acc += CE_FN(bcep_chunk)(n, xc, tc, wc, lo, hi, lc, 0, &bad);
                    if (bad) {
                        const int64_t bp = CE_FN(bin_first_bad)(xc, n);
                        const int64_t bt = CE_FN(bin_first_bad)(tc, n);
                        if (bp >= 0 && first_p < 0) first_p = f + bp;
                        if (bt >= 0 && first_t < 0) first_t = f + bt;
                        if (first_p >= 0) break; /* nothing later can matter */
                    }
                    continue;
                }
                const CE_T *gc = go ? CE_FN(bin_stage)(go, 0, a->gos_r, a->gos_c, rows, cols, f, n, buf[4])
                                    : buf[4];
                CE_T *gg = !g ? NULL : narrow ? buf[6] : (CE_T *)g + f;
                if (kl) {
                    acc += CE_FN(kldiv_dispatch)(n, xc, tc, gc, lc, gg, a->mode == CE_BIN_KL_DIV_LOG,
                                                 want_loss, want_none, want_grad);
                } else {
                    const CE_T *pc = pw ? CE_FN(bin_stage)(pw, 0, a->pws_r, a->pws_c, rows, cols, f, n, buf[3])
                                        : buf[5];
                    acc += CE_FN(bcel_dispatch)(n, xc, tc, wc, pc, gc, lc, gg, want_loss, want_none, want_grad);
                }
#if CE_HALF
                if (g && narrow) CE_FN(store_span)(g, f, 1, gg, n, 0);
#endif
            }
            partial[b] = acc;
            if (probs) {
                bad_p[b] = first_p;
                bad_t[b] = first_t;
            }
        }
    }

    int rc = CE_OK;
    if (probs) {
        /* probabilities are reported before targets, each at its first position */
        for (int64_t b = 0; b < nblocks && rc == CE_OK; ++b)
            if (bad_p[b] >= 0) {
                rc = CE_ERR_DOMAIN;
                a->err_arg = 0;
                a->err_pos = bad_p[b];
            }
        for (int64_t b = 0; b < nblocks && rc == CE_OK; ++b)
            if (bad_t[b] >= 0) {
                rc = CE_ERR_DOMAIN;
                a->err_arg = 1;
                a->err_pos = bad_t[b];
            }
        if (rc != CE_OK) {
            const int64_t f = a->err_pos, r = f / cols, c = f - r * cols;
            a->err_fval = a->err_arg == 0 ? (double)CE_LD(((const CE_S *)x)[r * a->xs_r + c * a->xs_c])
                                          : (double)t[r * a->ts_r + c * a->ts_c];
        }
    }
    if (rc == CE_OK) {
        const double total = nblocks > 0 ? ce_pairwise_sum(partial, nblocks) : 0.0;
        a->loss = red == CE_RED_MEAN ? (N > 0 ? total / (double)N : NAN) : total;
    }
    free(partial);
    free(bad_p);
    free(bad_t);
    return rc;
}

