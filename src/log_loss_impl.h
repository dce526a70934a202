/* log_loss_impl.h — sklearn.metrics.log_loss (scikit-learn 1.9.1) on class
 * indices, written once and instantiated per dtype by kernels_for_dtype.h
 * (CE_T, CE_FN, CE_LOG).
 *
 * scikit-learn multiplies the clipped probabilities by a one-hot matrix of
 * the labels; every product but one is xlogy(0, p) = 0, so row i's loss is
 * exactly -log(clip(p[i, y_i], eps, 1 - eps)) (clipped in CE_T), and only
 * that element is needed for the loss. The checks scikit-learn makes on
 * every element run in the same single pass: finiteness (check_array), the
 * range [0, 1], and whether each row sums to 1 within its tolerance (the
 * row sum in double, rounded to CE_T, compared in CE_T). For contiguous rows
 * the first two are one vector loop over the block, so that a short row
 * (C = 10) costs a few scalar adds and one clipped element. A binary problem
 * given as one column p (C == 1) has the rows (1 - p, p), 1 - p in CE_T.
 *
 * Rows are grouped in blocks of a fixed size (a function of C only); each
 * block's weighted loss sum and weight sum are combined pairwise in a fixed
 * order, so results are bitwise identical for every thread count. */

#define CE_LL_BLOCK 1024 /* rows per block, at most */

typedef struct {
    double loss, weight;
    int nonfinite, out_of_range, not_normalised;
    int64_t bad_label; /* first row with a label out of range, or -1 */
} CE_FN(ll_part);

/* The finiteness and range checks of n contiguous elements (one vector
 * loop: for small C a row is too short for a vector loop of its own). */
CE_INLINE void CE_FN(ll_flags)(const CE_T *v, int64_t n, int *nf, int *rg) {
    int f = 0, r = 0;
#pragma omp simd reduction(| : f, r)
    for (int64_t k = 0; k < n; ++k) {
        f |= !(v[k] - v[k] == 0);
        r |= (v[k] > 1) | (v[k] < 0);
    }
    *nf |= f;
    *rg |= r;
}

/* Rows [r0, r1): the checks, and the clipped probability of each row's
 * class into py[r - r0]. */
CE_INLINE void CE_FN(ll_scan)(const ce_logloss_args *a, int64_t r0, int64_t r1, CE_T lo, CE_T hi,
                              CE_T tol, CE_T *py, CE_FN(ll_part) *part) {
    const CE_T *P = (const CE_T *)a->p;
    const int64_t C = a->C, ncls = C == 1 ? 2 : C;
    const ptrdiff_t sr = a->ps_r, sc = a->ps_c;
    /* rows that are one contiguous run: the checks in one flat pass */
    const int flat = (C == 1 ? sr == 1 : sc == 1 && sr == C);
    int nf = 0, rg = 0, nn = 0;
    if (flat) CE_FN(ll_flags)(P + r0 * sr, (r1 - r0) * (C == 1 ? 1 : C), &nf, &rg);
    for (int64_t r = r0; r < r1; ++r) {
        const CE_T *row = P + r * sr;
        double s = 0.0;
        if (C == 1) {
            const CE_T v = row[0];
            if (!flat) CE_FN(ll_flags)(row, 1, &nf, &rg);
            s = (double)(((CE_T)1 - v) + v);
        } else if (flat && C <= 32) {
            /* four chains: the sum of a short row is latency-bound */
            double s4[4] = {0.0, 0.0, 0.0, 0.0};
            int64_t c = 0;
            for (; c + 4 <= C; c += 4)
                for (int k = 0; k < 4; ++k) s4[k] += (double)row[c + k];
            for (; c < C; ++c) s4[0] += (double)row[c];
            s = (s4[0] + s4[1]) + (s4[2] + s4[3]);
        } else if (sc == 1) {
            int rf = 0, rr = 0;
#pragma omp simd reduction(+ : s) reduction(| : rf, rr)
            for (int64_t c = 0; c < C; ++c) {
                const CE_T v = row[c];
                s += (double)v;
                rf |= !(v - v == 0);
                rr |= (v > 1) | (v < 0);
            }
            nf |= rf;
            rg |= rr;
        } else {
            for (int64_t c = 0; c < C; ++c) {
                const CE_T v = row[c * sc];
                s += (double)v;
                CE_FN(ll_flags)(&v, 1, &nf, &rg);
            }
        }
        const CE_T st = (CE_T)s, dev = st > 1 ? st - 1 : 1 - st;
        nn |= !(dev <= tol);
        const int64_t y = a->label[r];
        CE_T v = (CE_T)1;
        if (y < 0 || y >= ncls) {
            if (part->bad_label < 0) part->bad_label = r;
        } else if (C == 1) {
            v = y == 1 ? row[0] : (CE_T)1 - row[0];
        } else {
            v = row[y * sc];
        }
        v = v < lo ? lo : v;
        py[r - r0] = v > hi ? hi : v;
    }
    part->nonfinite |= nf;
    part->out_of_range |= rg; /* with a non-finite value the input is refused anyway */
    part->not_normalised |= nn;
}

int CE_FN(ce_logloss)(ce_logloss_args *a) {
    const int64_t N = a->N, C = a->C;
    const int64_t rb = ce_rows_per_block(C) < CE_LL_BLOCK ? ce_rows_per_block(C) : CE_LL_BLOCK;
    const int64_t nblocks = (N + rb - 1) / rb;
    CE_FN(ll_part) *parts = NULL;
    if (nblocks > 0) {
        parts = (CE_FN(ll_part) *)malloc((size_t)nblocks * sizeof(*parts));
        if (!parts) return CE_ERR_NOMEM;
    }
    const CE_T lo = (CE_T)a->eps, hi = (CE_T)1 - (CE_T)a->eps, tol = (CE_T)a->sum_tol;
    const double *w = a->w;
    const int nt = ce_threads_for(a->num_threads, nblocks, N * C);
    int nomem = 0;

#pragma omp parallel num_threads(nt) if (nt > 1) reduction(| : nomem)
    {
        CE_T *py = (CE_T *)malloc((size_t)rb * sizeof(CE_T));
        nomem = py == NULL;
#pragma omp for schedule(static)
        for (int64_t b = 0; b < nblocks; ++b) {
            if (!py) continue;
            const int64_t r0 = b * rb, r1 = r0 + rb < N ? r0 + rb : N, n = r1 - r0;
            CE_FN(ll_part) part = {0.0, 0.0, 0, 0, 0, -1};
            CE_FN(ll_scan)(a, r0, r1, lo, hi, tol, py, &part);
            double acc = 0.0, wacc = 0.0;
            if (w) {
#pragma omp simd reduction(+ : acc, wacc)
                for (int64_t k = 0; k < n; ++k) {
                    acc += w[r0 + k] * (double)-CE_LOG(py[k]);
                    wacc += w[r0 + k];
                }
            } else {
#pragma omp simd reduction(+ : acc)
                for (int64_t k = 0; k < n; ++k) acc += (double)-CE_LOG(py[k]);
                wacc = (double)n;
            }
            part.loss = acc;
            part.weight = wacc;
            parts[b] = part;
        }
        free(py);
    }
    if (nomem) {
        free(parts);
        return CE_ERR_NOMEM;
    }

    int rc = CE_OK;
    a->nonfinite = a->out_of_range = a->not_normalised = 0;
    a->err_pos = -1;
    double *sums = nblocks > 0 ? (double *)malloc(2 * (size_t)nblocks * sizeof(double)) : NULL;
    if (nblocks > 0 && !sums) rc = CE_ERR_NOMEM;
    for (int64_t b = 0; b < nblocks && rc != CE_ERR_NOMEM; ++b) {
        const CE_FN(ll_part) pb = parts[b];
        a->nonfinite |= pb.nonfinite;
        a->out_of_range |= pb.out_of_range;
        a->not_normalised |= pb.not_normalised;
        if (pb.bad_label >= 0 && rc == CE_OK) {
            rc = CE_ERR_TARGET_INDEX;
            a->err_pos = pb.bad_label;
        }
        sums[b] = pb.loss;
        sums[nblocks + b] = pb.weight;
    }
    if (rc == CE_OK) {
        a->loss_sum = nblocks > 0 ? ce_pairwise_sum(sums, nblocks) : 0.0;
        a->weight_sum = nblocks > 0 ? ce_pairwise_sum(sums + nblocks, nblocks) : 0.0;
    }
    free(sums);
    free(parts);
    return rc;
}

#undef CE_LL_BLOCK
