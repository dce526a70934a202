/* divergence_impl.h — KL(P || Q), KL(Q || P) and the generalised
 * Jensen-Shannon divergence between a teacher distribution P and the
 * student's Q = softmax(x / T), per row, with the gradient with respect to the
 * student's logits x; instantiated per dtype like every kernel (see
 * kernels_for_dtype.h). Row scalars are kept in double for both dtypes.
 *
 * Per row pair, with a = x / T and b = t / T (teacher logits) or b = t:
 *   scans   m_a = max a and e_a = exp(a - m_a) with its sum 1 + s'_a by the
 *           shared row scans (rowscan_impl.h), and the same for b (teacher
 *           logits or log-probabilities); e_a and e_b go to per-thread scratch
 *           rows, so the student and teacher rows are read from memory once;
 *   then    Q_c = e_a,c / (1 + s'_a), P_c = e_b,c * kappa (kappa = 1 / (1 + s'_b)
 *           for logits, exp(m_b) for log-probabilities; P = t for
 *           probabilities), and r_c = log P_c - log Q_c formed from
 *           differences of logits, never from two rounded log-probabilities:
 *               logits     r = ((b - a) - (m_b - m_a)) + (L_a - L_b);
 *               log-probs  r = b + ((m_a - a) + L_a)   (= b - log_softmax(a),
 *                          in log_softmax's own order: 0 where b is it);
 *               probs      r = log t + ((m_a - a) + L_a);
 *           for teacher logits and a small KL (below CE_DIV_REFINE), the gap
 *           L_b - L_a = log1p(sum_c e_a,c expm1(u_c) / S_a),
 *           u = (b - a) - (m_b - m_a), from per-class differences (see
 *           div_lse_gap; the JSD does without it, see div_js), so for P ~ Q
 *           the error common to a row's r is ulps of r itself, not of the
 *           log-sum-exps: a KL of 1e-9 (rows 1e-4 apart) keeps ~5e-12
 *           relative accuracy in float64, where the naive sum of
 *           P (log P - log Q) loses ~1e-7 (1e-3 at 1e-6 apart). The rounding
 *           of these shifts to CE_T is taken back in the row sums (corr).
 *           Identical teacher and student rows give r = 0 and Q = P bit for
 *           bit: divergence 0, gradient 0;
 *   pass    the divergence's terms (classes with a zero weight contribute 0,
 *           whatever r is: -inf logits mask classes) and the gradient:
 *               forward  sum P r,            d/da_j = Z Q_j - P_j  (Z = sum P)
 *               reverse  sum Q (-r),         d/da_j = Q_j (-r_j - KL)
 *               JS       sum b P rho_P + (1 - b) Q rho_Q, rho_Q = log(Q / M) =
 *                        -log1p(beta (P - Q) / Q), rho_P = r + rho_Q,
 *                                            d/da_j = (1 - b) Q_j (rho_Q,j - sum Q rho_Q)
 *           (reverse and JS need a row sum first: a second pass over the
 *           cached row). The gradient with respect to x is 1/T times that.
 * Each divergence is clamped below at its mathematical lower bound -- 0 for a
 * normalised teacher (logits; JS always), Z log Z (forward) and -log Z
 * (reverse) for given (log-)probabilities summing to Z -- which a sum can
 * only cross by rounding.
 *
 * Row rules: NaN, +inf or all -inf in the student row, NaN or +inf in the
 * teacher row, all -inf teacher logits, negative teacher probabilities:
 * loss NaN, gradient row NaN. An infinite reverse KL (Q > 0 where P = 0) has a
 * NaN gradient row (the derivative does not exist); an infinite forward KL
 * has the finite gradient above.
 *
 * Rows are grouped in blocks of ce_rows_per_block(C) rows, a function of C
 * only, and block partials are combined in a fixed order: results are bitwise
 * identical for every thread count. */

/* Per-row values the class loops use, in CE_T (loop-invariant broadcasts),
 * and corr = (exact r) - (r as the loops form it): the rounding of those
 * shifts to CE_T, common to every class of the row, which the row's sums
 * take back exactly (a sum of w_c r_c gains corr * sum w_c). */
typedef struct {
    CE_T m_a, l1_a, inv_sa; /* student: max, log1p(s'), 1 / (1 + s') */
    CE_T dm, dl;            /* teacher logits: m_b - m_a, L_a - L_b */
    CE_T kappa;             /* P = e_b kappa (logits, log-probabilities) */
    CE_T z;                 /* sum P (1 for logits) */
    double corr;
    int refine;      /* teacher logits, a KL: div_refine applies */
    double s_a, dl0; /* 1 + s'_a; the sums' own L_a - L_b */
} CE_FN(div_row);

/* expm1(u) for |u| <= CE_DIV_TAU by its Taylor series (degree 6 / 11: below
 * half an ulp there), the one place a difference of two exponentials would
 * cancel: for |u| > CE_DIV_TAU, e^u - 1 from two rounded exponentials loses
 * at most a factor 1 / CE_DIV_TAU in relative accuracy. */
#define CE_DIV_TAU ((CE_T)0.125)
CE_INLINE CE_T CE_FN(div_expm1_small)(CE_T u) {
    static const double inv_fact[12] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120,
                                        1.0 / 720, 1.0 / 5040, 1.0 / 40320, 1.0 / 362880,
                                        1.0 / 3628800, 1.0 / 39916800};
    const int n = sizeof(CE_T) == 4 ? 6 : 11;
    CE_T p = (CE_T)inv_fact[n];
#pragma GCC unroll 16
    for (int k = n - 1; k >= 1; --k) p = p * u + (CE_T)inv_fact[k];
    return p * u;
}

/* (S_b - S_a) / S_a for teacher logits, S = sum exp(. - m) over the row:
 * sum_c e_a,c (e^{u_c} - 1) with u_c = (b_c - a_c) - (m_b - m_a), so that
 * the difference of the two log-sum-exps, L_b - L_a = log1p of it, is
 * accurate to ulps of itself when the rows are close -- not to ulps of the
 * log-sum-exps, whose separately rounded sums would set the accuracy of a
 * small divergence. */
CE_INLINE double CE_FN(div_lse_gap)(const CE_T *a, const CE_T *b, const CE_T *e_a, const CE_T *e_b,
                                    int64_t C, CE_T dm) {
    double sum = 0.0;
    for (int64_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
        const int64_t c1 = c0 + CE_CHUNK < C ? c0 + CE_CHUNK : C;
        CE_T cs = 0;
#pragma omp simd reduction(+ : cs)
        for (int64_t c = c0; c < c1; ++c) {
            const CE_T u = (b[c] - a[c]) - dm;
            /* masked classes (u = +-inf, NaN) take the difference: e are 0 there */
            const int near = u <= CE_DIV_TAU && u >= -CE_DIV_TAU;
            cs += near ? e_a[c] * CE_FN(div_expm1_small)(u) : e_b[c] - e_a[c];
        }
        sum += (double)cs;
    }
    return sum;
}

/* P_c (mode is a compile-time constant after inlining). */
CE_INLINE CE_T CE_FN(div_p)(const int mode, CE_T b, CE_T e_b, CE_T kappa) {
    return mode == CE_TEACHER_PROBS ? b : e_b * kappa;
}

/* r_c = log P_c - log Q_c. */
CE_INLINE CE_T CE_FN(div_r)(const int mode, CE_T a, CE_T b, const CE_FN(div_row) * w) {
    if (mode == CE_TEACHER_LOGITS) return ((b - a) - w->dm) + w->dl;
    const CE_T nlq = (w->m_a - a) + w->l1_a; /* -log Q_c, as log_softmax rounds it */
    return (mode == CE_TEACHER_PROBS ? CE_LOG(b) : b) + nlq;
}

/* Rows whose divergence is below this are refined (div_refine): above it,
 * the lse gap of the scans' own sums (a few ulps of 1) costs at most ~2e-9
 * (float64) / 5e-5 (float32) of relative accuracy, and the exact-gap pass
 * (~30 % of the kernel) is skipped. */
#define CE_DIV_REFINE (64.0 * (sizeof(CE_T) == 4 ? 3.4526698300124393e-04 : 1.4901161193847656e-08))

/* Teacher logits: the exact lse gap (div_lse_gap) for a row whose first sum
 * s is small, folded into w->corr (the loops' r used the sums' own gap). */
CE_INLINE void CE_FN(div_refine)(double s, const CE_T *a, const CE_T *b, const CE_T *e_a,
                                 const CE_T *e_b, int64_t C, CE_FN(div_row) * w) {
    if (!w->refine || !(fabs(s) < CE_DIV_REFINE)) return;
    const double dl = -log1p(CE_FN(div_lse_gap)(a, b, e_a, e_b, C, w->dm) / w->s_a);
    w->corr += dl - w->dl0;
}

/* The forward KL's terms (sum P r, with sum P in *sw), and its gradient
 * (grad: a compile-time constant) scaled by gs, in one pass. */
CE_INLINE double CE_FN(div_forward)(const int mode, const int grad, const CE_T *a, const CE_T *b,
                                    const CE_T *e_a, const CE_T *e_b, int64_t C,
                                    const CE_FN(div_row) * w, CE_T *g, ptrdiff_t sg, CE_T gs,
                                    double *sw) {
    const CE_FN(div_row) v = *w;
    double sum = 0.0, wsum = 0.0;
    for (int64_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
        const int64_t c1 = c0 + CE_CHUNK < C ? c0 + CE_CHUNK : C;
        CE_T cs = 0, cp = 0;
#pragma omp simd reduction(+ : cs, cp)
        for (int64_t c = c0; c < c1; ++c) {
            const CE_T p = CE_FN(div_p)(mode, b[c], e_b[c], v.kappa);
            const CE_T q = e_a[c] * v.inv_sa;
            const CE_T r = CE_FN(div_r)(mode, a[c], b[c], &v);
            cs += CE_FN(keep_if)(p * r, p != 0);
            cp += p;
            /* a[c] (maybe x itself) is read above, before g[c] is written */
            if (grad) g[c * sg] = (q * v.z - p) * gs;
        }
        sum += (double)cs;
        wsum += (double)cp;
    }
    *sw = wsum;
    return sum;
}

/* The reverse KL: sum Q (-r), corrected for w->corr and clamped below at
 * `lower`, then (grad) Q (-r - S) scaled by gs, S the uncorrected sum (so
 * that the shift of r cancels in -r - S). */
CE_INLINE double CE_FN(div_reverse)(const int mode, const int grad, const CE_T *a, const CE_T *b,
                                    const CE_T *e_a, const CE_T *e_b, int64_t C, const CE_FN(div_row) * w,
                                    double lower, CE_T *g, ptrdiff_t sg, CE_T gs) {
    const CE_FN(div_row) v = *w;
    double sum = 0.0, wsum = 0.0;
    for (int64_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
        const int64_t c1 = c0 + CE_CHUNK < C ? c0 + CE_CHUNK : C;
        CE_T cs = 0, cq = 0;
#pragma omp simd reduction(+ : cs, cq)
        for (int64_t c = c0; c < c1; ++c) {
            const CE_T q = e_a[c] * v.inv_sa;
            cs += CE_FN(keep_if)(-(q * CE_FN(div_r)(mode, a[c], b[c], &v)), q != 0);
            cq += q;
        }
        sum += (double)cs;
        wsum += (double)cq;
    }
    CE_FN(div_row) u = *w;
    CE_FN(div_refine)(sum, a, b, e_a, e_b, C, &u);
    const double kl0 = sum - u.corr * wsum;
    const double kl = kl0 > lower ? kl0 : lower;
    if (!grad) return kl;
    if (kl == INFINITY) {
        CE_FN(fill_span)(g, sg, C, (CE_T)NAN);
        return kl;
    }
    const CE_T k = (CE_T)sum;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
        const CE_T q = e_a[c] * v.inv_sa;
        const CE_T d = q * (-CE_FN(div_r)(mode, a[c], b[c], &v) - k);
        g[c * sg] = CE_FN(keep_if)(d, q != 0) * gs;
    }
    return kl;
}

/* Unlike the KLs, the JSD's sum is stationary under a shift of r common to
 * the row, as long as r is the one the stored P and Q imply (d/dr of
 * b P (r + rho_Q) + (1 - b) Q rho_Q is b P - b P M / M = 0): it takes r with
 * the log-sum-exp gap of the scans' own sums, and needs no correction.
 *
 * The generalised JSD (0 < beta < 1): its terms, with rho_Q = log(Q / M)
 * stored over e_b (read first), then (grad) (1 - beta) Q (rho_Q - sum Q rho_Q)
 * scaled by gs. */
CE_INLINE double CE_FN(div_js)(const int mode, const int grad, const CE_T *a, const CE_T *b,
                               const CE_T *e_a, CE_T *e_b, int64_t C, const CE_FN(div_row) * w,
                               double beta, CE_T *g, ptrdiff_t sg, CE_T gs) {
    const CE_FN(div_row) v = *w;
    const CE_T bt = (CE_T)beta, cb = (CE_T)(1.0 - beta);
    const CE_T rho_p_only = (CE_T)-log(beta); /* log(P / M) where Q = 0 */
    /* (P - Q) / Q overflows only where Q is negligible next to P; capped there
     * so that its term stays finite (the largest finite CE_T) */
    const CE_T big = (CE_T)(sizeof(CE_T) == 4 ? 3.4028234663852886e38 : 1.7976931348623157e308);
    double sum = 0.0, sq = 0.0;
    for (int64_t c0 = 0; c0 < C; c0 += CE_CHUNK) {
        const int64_t c1 = c0 + CE_CHUNK < C ? c0 + CE_CHUNK : C;
        CE_T cs = 0, cq = 0;
#pragma omp simd reduction(+ : cs, cq)
        for (int64_t c = c0; c < c1; ++c) {
            const CE_T p = CE_FN(div_p)(mode, b[c], e_b[c], v.kappa);
            const CE_T q = e_a[c] * v.inv_sa;
            const CE_T r = CE_FN(div_r)(mode, a[c], b[c], &v);
            /* P / Q - 1 = e^r - 1, from r where the difference would cancel */
            CE_T y = r <= CE_DIV_TAU && r >= -CE_DIV_TAU ? CE_FN(div_expm1_small)(r) : (p - q) / q;
            y = y < big ? y : big;
            const CE_T rho_q = -CE_LOG1P(bt * y);
            const CE_T rho_p = q != 0 ? r + rho_q : rho_p_only;
            const CE_T tq = CE_FN(keep_if)(q * rho_q, q != 0);
            cs += CE_FN(keep_if)(bt * p * rho_p, p != 0) + cb * tq;
            cq += tq;
            if (grad) e_b[c] = rho_q;
        }
        sum += (double)cs;
        sq += (double)cq;
    }
    if (!grad) return sum;
    const CE_T s = (CE_T)sq, k = cb * gs;
#pragma omp simd
    for (int64_t c = 0; c < C; ++c) {
        const CE_T q = e_a[c] * v.inv_sa;
        g[c * sg] = CE_FN(keep_if)(q * (e_b[c] - s), q != 0) * k;
    }
    return sum;
}

/* A row of n strided elements times f, into contiguous scratch. */
CE_INLINE void CE_FN(div_copy)(const CE_T *x, ptrdiff_t sx, int64_t n, CE_T f, CE_T *y) {
#pragma omp simd
    for (int64_t c = 0; c < n; ++c) y[c] = x[c * sx] * f;
}

/* A row of probabilities: its sum, and whether it holds NaN, +inf or a
 * negative value. */
CE_INLINE double CE_FN(div_prob_sum)(const CE_T *b, int64_t n, int *bad) {
    double z = 0.0;
    int bd = 0;
    for (int64_t c0 = 0; c0 < n; c0 += CE_CHUNK) {
        const int64_t c1 = c0 + CE_CHUNK < n ? c0 + CE_CHUNK : n;
        CE_T cs = 0;
#pragma omp simd reduction(+ : cs) reduction(| : bd)
        for (int64_t c = c0; c < c1; ++c) {
            const CE_T v = b[c];
            bd |= !(v >= 0) | (v == (CE_T)INFINITY);
            cs += v;
        }
        z += (double)cs;
    }
    *bad = bd;
    return z;
}

/* Everything that is constant over the rows of one call. */
typedef struct {
    int kind, mode;
    int64_t C;
    CE_T inv_t; /* 1 / T */
    int scaled; /* T != 1 */
    double beta;
} CE_FN(div_ctx);

/* The scratch of one thread: the student's and the teacher's rows (scaled or
 * gathered when needed), and their exponentials. */
typedef struct {
    CE_T *a, *b, *e_a, *e_b;
} CE_FN(div_scratch);

/* The last pass of a row, specialised for the kind, the teacher and the
 * gradient so that every loop sees constants. */
CE_INLINE double CE_FN(div_finish_k)(const CE_FN(div_ctx) * k, const int mode, const int grad,
                                     const CE_T *a, const CE_T *b, const CE_FN(div_scratch) * s,
                                     const CE_FN(div_row) * w, double lower, CE_T *g, ptrdiff_t sg,
                                     CE_T gs) {
    const int64_t C = k->C;
    if (k->kind == CE_DIV_KL_FORWARD) {
        double sp;
        const double s1 = CE_FN(div_forward)(mode, grad, a, b, s->e_a, s->e_b, C, w, g, sg, gs, &sp);
        CE_FN(div_row) v = *w;
        CE_FN(div_refine)(s1, a, b, s->e_a, s->e_b, C, &v);
        const double kl = s1 + v.corr * sp;
        return kl > lower ? kl : lower;
    }
    if (k->kind == CE_DIV_KL_REVERSE)
        return CE_FN(div_reverse)(mode, grad, a, b, s->e_a, s->e_b, C, w, lower, g, sg, gs);
    const double js = CE_FN(div_js)(mode, grad, a, b, s->e_a, s->e_b, C, w, k->beta, g, sg, gs);
    return js > 0.0 ? js : 0.0;
}

CE_INLINE double CE_FN(div_finish)(const CE_FN(div_ctx) * k, const CE_T *a, const CE_T *b,
                                   const CE_FN(div_scratch) * s, const CE_FN(div_row) * w,
                                   double lower, CE_T *g, ptrdiff_t sg, CE_T gs) {
    switch (k->mode) {
    case CE_TEACHER_LOGITS:
        return g ? (sg == 1 ? CE_FN(div_finish_k)(k, CE_TEACHER_LOGITS, 1, a, b, s, w, lower, g, 1, gs)
                            : CE_FN(div_finish_k)(k, CE_TEACHER_LOGITS, 1, a, b, s, w, lower, g, sg, gs))
                 : CE_FN(div_finish_k)(k, CE_TEACHER_LOGITS, 0, a, b, s, w, lower, NULL, 1, gs);
    case CE_TEACHER_LOG_PROBS:
        return g ? (sg == 1 ? CE_FN(div_finish_k)(k, CE_TEACHER_LOG_PROBS, 1, a, b, s, w, lower, g, 1, gs)
                            : CE_FN(div_finish_k)(k, CE_TEACHER_LOG_PROBS, 1, a, b, s, w, lower, g, sg, gs))
                 : CE_FN(div_finish_k)(k, CE_TEACHER_LOG_PROBS, 0, a, b, s, w, lower, NULL, 1, gs);
    default:
        return g ? (sg == 1 ? CE_FN(div_finish_k)(k, CE_TEACHER_PROBS, 1, a, b, s, w, lower, g, 1, gs)
                            : CE_FN(div_finish_k)(k, CE_TEACHER_PROBS, 1, a, b, s, w, lower, g, sg, gs))
                 : CE_FN(div_finish_k)(k, CE_TEACHER_PROBS, 0, a, b, s, w, lower, NULL, 1, gs);
    }
}

/* One row pair: x (student) and t (teacher) with class strides sx, st; the
 * gradient row g (stride sg) or NULL; gs the gradient's scale (upstream,
 * sample weight, 1/T). Returns the row's divergence (before the sample
 * weight). */
static double CE_FN(div_row_pair)(const CE_FN(div_ctx) * k, const CE_T *x, ptrdiff_t sx,
                                  const CE_T *t, ptrdiff_t st, CE_T *g, ptrdiff_t sg, double gs,
                                  const CE_FN(div_scratch) * s, const ce_prefetch *pf) {
    const int64_t C = k->C;
    const int mode = k->mode;
    /* the rows the scans read: in place when contiguous and unscaled, but
     * not when the forward KL's gradient overwrites x (g == x) before the
     * refinement (div_refine) reads it again */
    const CE_T *a = x, *b = t;
    const int reread = (const void *)g == (const void *)x && k->kind == CE_DIV_KL_FORWARD &&
                       mode == CE_TEACHER_LOGITS;
    if (k->scaled || sx != 1 || reread) {
        CE_FN(div_copy)(x, sx, C, k->inv_t, s->a);
        a = s->a;
    }
    if ((k->scaled && mode == CE_TEACHER_LOGITS) || st != 1) {
        CE_FN(div_copy)(t, st, C, mode == CE_TEACHER_LOGITS ? k->inv_t : (CE_T)1, s->b);
        b = s->b;
    }
    int nan_a, nan_b = 0;
    const CE_T m_a = CE_FN(row_max)(a, 1, C, &nan_a);
    int bad = nan_a || m_a == INFINITY || m_a == -INFINITY;
    CE_T m_b = 0;
    double z = 1.0;
    if (mode == CE_TEACHER_PROBS) {
        z = CE_FN(div_prob_sum)(b, C, &nan_b);
    } else {
        m_b = CE_FN(row_max)(b, 1, C, &nan_b);
        nan_b |= m_b == INFINITY || (mode == CE_TEACHER_LOGITS && m_b == -INFINITY);
    }
    if (bad || nan_b) {
        if (g) CE_FN(fill_span)(g, sg, C, (CE_T)NAN);
        return NAN;
    }
    double sl, nm;
    CE_FN(row_expsum)(a, 1, C, m_a, s->e_a, 1, &sl, &nm, pf);
    const double sp_a = sl + (nm - 1.0);
    const double l1_a = log1p(sp_a);
    CE_FN(div_row) w;
    w.m_a = m_a;
    w.l1_a = (CE_T)l1_a;
    w.inv_sa = (CE_T)(1.0 / (1.0 + sp_a));
    w.dm = w.dl = 0;
    w.kappa = 1;
    w.z = 1;
    w.corr = l1_a - (double)w.l1_a; /* -log Q in the loops: (m_a - a) + l1_a */
    w.refine = 0;
    w.s_a = w.dl0 = 0.0;
    double lower = 0.0; /* the divergence's lower bound */
    if (mode == CE_TEACHER_LOGITS) {
        CE_FN(row_expsum)(b, 1, C, m_b, s->e_b, 1, &sl, &nm, pf ? pf + 1 : NULL);
        const double sp_b = sl + (nm - 1.0), dm = (double)m_b - (double)m_a;
        w.kappa = (CE_T)(1.0 / (1.0 + sp_b));
        w.dm = (CE_T)dm;
        const double dl = -log1p((sp_b - sp_a) / (1.0 + sp_a));
        w.dl = (CE_T)dl;
        w.refine = k->kind != CE_DIV_JS;
        w.s_a = 1.0 + sp_a;
        w.dl0 = dl;
        /* r = ((b - a) - dm) + dl, exactly; the loops use the rounded shifts */
        w.corr = ((double)w.dm - dm) + (dl - (double)w.dl);
    } else {
        if (mode == CE_TEACHER_LOG_PROBS) {
            /* P = exp(b - r) exp(r); an all -inf row (P = 0) takes r = 0 */
            const CE_T r = m_b == -INFINITY ? (CE_T)0 : m_b;
            CE_FN(row_expsum)(b, 1, C, r, s->e_b, 1, &sl, &nm, pf ? pf + 1 : NULL);
            z = (sl + nm) * exp((double)r);
            w.kappa = (CE_T)exp((double)r);
        }
        w.z = (CE_T)z;
        /* forward >= Z log Z, reverse >= -log Z (Gibbs' inequality) */
        if (k->kind == CE_DIV_KL_FORWARD) lower = z > 0.0 ? z * log(z) : 0.0;
        if (k->kind == CE_DIV_KL_REVERSE) lower = -log(z);
    }
    return CE_FN(div_finish)(k, a, b, s, &w, lower, g, sg, (CE_T)gs);
}

/* The blocks of rows one thread computes (an orphaned `omp for`, as
 * cat_blocks). Returns 1 if its scratch could not be allocated. */
static int CE_FN(div_blocks)(ce_div_args *a, const CE_FN(div_ctx) * k, double gscale,
                             double *partial, int64_t rb, int64_t nblocks) {
    const int64_t N = a->outer * a->inner, C = a->C, inner = a->inner;
    const CE_T *sw = (const CE_T *)a->sample_weight, *go = (const CE_T *)a->grad_output;
    CE_T *loss_out = (CE_T *)a->loss_out;
    CE_T *mem = (CE_T *)malloc((size_t)(4 * C) * sizeof(CE_T));
    CE_FN(div_scratch) s = {mem, mem ? mem + C : NULL, mem ? mem + 2 * C : NULL,
                            mem ? mem + 3 * C : NULL};
#pragma omp for schedule(static)
    for (int64_t b = 0; b < nblocks; ++b) {
        if (!mem) continue;
        double acc = 0.0;
        const int64_t r_end = (b + 1) * rb < N ? (b + 1) * rb : N;
        for (int64_t r = b * rb; r < r_end; ++r) {
            const int64_t o = inner == 1 ? r : r / inner, i = r - o * inner;
            const CE_T *x = (const CE_T *)a->x + o * a->xs_o + i * a->xs_i;
            const CE_T *t = (const CE_T *)a->t + o * a->ts_o + i * a->ts_i;
            CE_T *g = a->grad ? (CE_T *)a->grad + o * C * inner + i : NULL;
            double loss = 0.0;
            if (a->target && a->target[r] == a->ignore_index) {
                /* ignored rows are never read: divergence 0, gradient 0 */
                if (g) CE_FN(fill_span)(g, inner, C, (CE_T)0);
            } else {
                const double w = sw ? (double)sw[r] : 1.0;
                const double gs = (go ? (double)go[r] : gscale) * w * (double)k->inv_t;
                /* the next row pair of a block, requested during this one */
                const int ahead = a->xs_c == 1 && a->ts_c == 1 && inner == 1 && r + 1 < r_end;
                const ce_prefetch next[2] = {
                    {ahead ? (const char *)(x + a->xs_o) : NULL, NULL},
                    {ahead ? (const char *)(t + a->ts_o) : NULL, ahead && g ? (char *)(g + C) : NULL}};
                loss = w * CE_FN(div_row_pair)(k, x, a->xs_c, t, a->ts_c, g, inner, gs, &s,
                                               ahead ? next : NULL);
            }
            if (loss_out) loss_out[r] = (CE_T)loss;
            acc += loss;
        }
        if (partial) partial[b] = acc;
    }
    free(mem);
    return mem == NULL;
}

int CE_FN(ce_divergence)(ce_div_args *a) {
    const int64_t N = a->outer * a->inner, C = a->C;
    const CE_T *sw = (const CE_T *)a->sample_weight;
    /* the "mean" denominator: the sample weights (or the count) of the rows
     * that are not ignored */
    double denom = 0.0;
    for (int64_t r = 0; r < N; ++r)
        if (!a->target || a->target[r] != a->ignore_index) denom += sw ? (double)sw[r] : 1.0;
    double gscale = a->grad_output_scalar;
    if (a->reduction == CE_RED_MEAN) gscale = denom != 0.0 ? gscale / denom : NAN;

    CE_FN(div_ctx) k;
    k.kind = a->kind;
    k.mode = a->teacher_is;
    k.C = C;
    k.inv_t = (CE_T)a->inv_temperature;
    k.scaled = a->inv_temperature != 1.0;
    k.beta = a->beta;

    const int64_t rb = ce_rows_per_block(C);
    const int64_t nblocks = (N + rb - 1) / rb;
    double *partial = NULL;
    if (a->reduction != CE_RED_NONE && nblocks > 0) {
        partial = (double *)malloc((size_t)nblocks * sizeof(double));
        if (!partial) return CE_ERR_NOMEM;
    }
    /* two rows are read per row pair: the thread threshold counts both */
    const int nt = ce_threads_for(a->num_threads, nblocks, 2 * N * C);
    int nomem = 0;
    if (nt > 1) {
#pragma omp parallel num_threads(nt) reduction(| : nomem)
        nomem |= CE_FN(div_blocks)(a, &k, gscale, partial, rb, nblocks);
    } else {
        nomem = CE_FN(div_blocks)(a, &k, gscale, partial, rb, nblocks);
    }
    double total = 0.0;
    if (partial && !nomem) total = ce_pairwise_sum(partial, nblocks);
    free(partial);
    if (nomem) return CE_ERR_NOMEM;
    a->loss = a->reduction == CE_RED_MEAN ? (denom != 0.0 ? total / denom : NAN) : total;
    return CE_OK;
}
