/* categorical_impl.h — the categorical cross-entropy entry point: validates
 * the integer targets, computes the "mean" denominator and the per-call
 * constants, and hands the rows to the class-split driver (a few huge rows,
 * categorical_split_impl.h) or the row driver (categorical_rows_impl.h). */

/* Validate integer targets (the first offending flat position wins) and
 * compute the "mean" denominator, before anything is written. */
static int CE_FN(cat_prepass)(ce_cat_args *a, double *denom) {
    const int64_t N = a->outer * a->inner, C = a->C;
    const CE_T *w = (const CE_T *)a->weight;
    const CE_T *sw = (const CE_T *)a->sample_weight;
    double d = 0.0;
    if (a->target) {
        const int64_t *t = a->target, ign = a->ignore_index;
        int64_t n = 0, bad = 0;
        if (!w && !sw) { /* a count and a range check, in one vector pass */
#pragma omp simd reduction(+ : n) reduction(| : bad)
            for (int64_t r = 0; r < N; ++r) {
                const int64_t keep = t[r] != ign;
                n += keep;
                bad |= keep & ((uint64_t)t[r] >= (uint64_t)C);
            }
            d = (double)n;
        }
        for (int64_t r = 0; (w || sw || bad) && r < N; ++r) { /* (which also finds the offender) */
            const int64_t y = t[r];
            if (y == ign) continue;
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
    if (a->lse && a->grad) {
        a->loss = 0.0;
        return CE_FN(cat_from_lse)(a, &k, gscale);
    }

    double total = 0.0;
#if !CE_HALF /* (16-bit storage: huge rows are computed whole, one per thread) */
    if (ce_split_rows(N, C) && a->softcap <= 0.0) {
        double *row_loss = (double *)malloc((size_t)(N > 0 ? N : 1) * sizeof(double));
        if (!row_loss) return CE_ERR_NOMEM;
        ce_path_hit(CE_PATH_SPLIT);
        rc = CE_FN(cat_split)(a, &k, gscale, row_loss);
        for (int64_t r = 0; rc == CE_OK && r < N; ++r) {
            if (a->loss_out) ((CE_T *)a->loss_out)[r] = (CE_T)row_loss[r];
            total += row_loss[r];
        }
        free(row_loss);
    } else
#endif
    {
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
