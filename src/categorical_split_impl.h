/* categorical_split_impl.h — the class-split driver of the categorical kernel,
 * for a few huge rows: each row is cut into fixed chunks of CE_SPLIT_CHUNK
 * classes that the threads share, and the chunks' statistics are merged in
 * chunk order (so the result does not depend on the thread count). */

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
            if (a->lse_out) a->lse_out[r] = NAN;
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
            if (a->lse_out) a->lse_out[r] = (double)m + log1p(sp);
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
                if (cf[r].post != 1.0) CE_FN(scale_span)(gc, sg, n, (CE_T)cf[r].post);
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
