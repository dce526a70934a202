/* ce_kernels.h — the C interface between the Cython binding and the kernels.
 *
 * The kernels never allocate result arrays and never raise Python errors: the
 * binding passes pointers to arrays it allocated, and the kernels return an
 * error code (CE_OK, CE_ERR_*) plus, where it helps, the offending position. */
#ifndef CE_KERNELS_H
#define CE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* The binding (src/_core.pxd) declares these enums too and exposes them to
 * Python by name: every constant crossing the boundary is named on both sides. */
typedef enum ce_status {
    CE_OK = 0,
    CE_ERR_TARGET_INDEX = 1, /* class index outside [0, C) and != ignore_index */
    CE_ERR_NOMEM = 2,        /* a per-thread scratch row could not be allocated */
    CE_ERR_DOMAIN = 3        /* a value outside the function's domain (err_pos, err_fval) */
} ce_status;

typedef enum ce_reduction { CE_RED_NONE = 0, CE_RED_SUM = 1, CE_RED_MEAN = 2 } ce_reduction;

/* The logits' element type, ce_categorical's and ce_softmax_family's first
 * argument, and ce_binary's (the other families take is_double: 0 or 1). 16-bit storage is
 * computed in float32; every other floating operand of such a call (weights,
 * probability targets, per-sample arrays, per-sample losses, row results) is
 * float32, and the outputs the logits' shape (gradient, softmax, log_softmax)
 * are in the 16-bit type, or float32 with out_wide. */
typedef enum ce_dtype { CE_DT_F32 = 0, CE_DT_F64 = 1, CE_DT_BF16 = 2, CE_DT_F16 = 3 } ce_dtype;

/* Categorical cross-entropy over logits laid out as (outer, C, inner).
 * Element (o, c, i) of the logits is x[o*xs_o + c*xs_c + i*xs_i] (strides in
 * elements, may be negative); a probability target q has its own strides.
 * Samples are numbered r = o*inner + i; per-sample arrays (integer targets,
 * sample weights, grad_output, per-sample losses) are contiguous in r.
 * The gradient is contiguous (outer, C, inner) and may alias the logits
 * exactly (out=logits): every kernel reads an element before it writes it. */
typedef struct {
    const void *x;
    int64_t outer, C, inner;
    int64_t xs_o, xs_c, xs_i;

    const int64_t *target;   /* integer targets, or NULL for probability targets */
    const void *q;           /* probability targets (same dtype as x), or NULL */
    int64_t qs_o, qs_c, qs_i;

    const void *weight;        /* class weights [C], or NULL (all 1) */
    const void *sample_weight; /* per-sample weights [N], or NULL (all 1) */
    const void *grad_output;   /* per-sample upstream gradient [N] ("none"), or NULL */
    double grad_output_scalar; /* used when grad_output is NULL */

    int64_t ignore_index;
    double label_smoothing; /* epsilon in [0, 1] */
    double z_loss;          /* lambda >= 0 */
    double softcap;         /* > 0 caps the logits; 0 = off */
    int reduction;          /* CE_RED_* */

    void *loss_out; /* per-sample losses [N] for "none", else NULL */
    void *grad;     /* gradient (outer, C, inner) contiguous, or NULL for loss only */
    int out_wide;   /* 16-bit logits: grad is float32 (else the logits' type) */
    int num_threads;

    /* the per-sample log-sum-exp of the (capped) logits, float64 whatever
     * the dtype: stored into lse_out [N] when it is not NULL (NaN for ignored
     * samples and NaN rows); with lse [N] and grad, the gradient alone is
     * computed from it (categorical_from_lse_impl.h), no loss */
    double *lse_out;
    const double *lse;

    /* results */
    double loss;     /* the reduced loss for "sum" / "mean" */
    int64_t err_pos; /* CE_ERR_TARGET_INDEX: first offending flat position ... */
    int64_t err_val; /* ... and its value */
} ce_cat_args;

typedef int (*ce_cat_fn)(ce_cat_args *a);

/* Elementwise binary cross-entropy, and torch's elementwise kl_div (w, pw
 * unused; the gradient is with respect to x). The logits (or probabilities) have some
 * shape seen as (rows, cols); flat element f = r*cols + c (C order of that
 * shape). Every operand is described by element strides (s_r, s_c) over that
 * (rows, cols) view, so broadcast operands carry zero strides and are never
 * materialised. Per-element outputs (loss_out, grad) are contiguous in f; grad
 * may alias x exactly when x is contiguous (out=logits). 16-bit x (ce_dtype):
 * t, w, pw, go and loss_out are float32, grad x's type or float32 (out_wide). */
typedef enum ce_bin_mode {
    CE_BIN_LOGITS = 0, /* binary_cross_entropy_with_logits */
    CE_BIN_PROBS = 1,  /* binary_cross_entropy (clipped probabilities) */
    CE_BIN_KL_DIV = 2, /* torch's kl_div: x log-probabilities, t probabilities */
    CE_BIN_KL_DIV_LOG = 3 /* torch's kl_div with log_target: t log-probabilities */
} ce_bin_mode;
typedef struct {
    int mode; /* CE_BIN_* */
    int64_t rows, cols;
    const void *x;  int64_t xs_r, xs_c;   /* logits / probabilities */
    const void *t;  int64_t ts_r, ts_c;   /* target */
    const void *w;  int64_t ws_r, ws_c;   /* weight, or NULL (1) */
    const void *pw; int64_t pws_r, pws_c; /* pos_weight, or NULL (1); logits only */
    const void *go; int64_t gos_r, gos_c; /* per-element grad_output ("none"), or NULL */
    double grad_output_scalar;            /* used when go is NULL */
    double eps;                           /* probs: clip to [eps, 1 - eps] */
    int reduction;                        /* CE_RED_* */
    void *loss_out;                       /* per-element losses for "none", else NULL */
    void *grad;                           /* gradient, or NULL (logits only) */
    int num_threads;
    int out_wide;                         /* 16-bit x: grad is float32 (else x's type) */

    /* results */
    double loss;
    int err_arg;     /* CE_ERR_DOMAIN: 0 = probabilities, 1 = target ... */
    int64_t err_pos; /* ... first offending flat position ... */
    double err_fval; /* ... and its value */
} ce_bin_args;

typedef int (*ce_bin_fn)(ce_bin_args *a);

/* The softmax family over (outer, C, inner) laid out as ce_cat_args' logits.
 * Row results (logsumexp, entropies) go to out[r], r = o*inner + i;
 * softmax / log_softmax write out contiguous (outer, C, inner), which may alias
 * x exactly (in place). */
typedef enum ce_sm_op {
    CE_SM_LOGSUMEXP = 0,
    CE_SM_LOG_SOFTMAX = 1,
    CE_SM_SOFTMAX = 2,
    CE_SM_ENTROPY = 3,
    CE_SM_SOFTMAX_ENTROPY = 4
} ce_sm_op;
typedef struct {
    int op; /* CE_SM_* */
    const void *x;
    int64_t outer, C, inner;
    int64_t xs_o, xs_c, xs_i;
    void *out;
    int out_wide; /* 16-bit x: log_softmax / softmax out is float32 (else x's type) */
    int num_threads;

    /* results: CE_ERR_DOMAIN (entropy: a negative probability) */
    int64_t err_pos; /* first offending flat C-order position */
    double err_fval;
} ce_sm_args;

typedef int (*ce_sm_fn)(ce_sm_args *a);

/* Divergences between a teacher distribution P and the student's
 * Q = softmax(x / T), per row, with the gradient with respect to the student's
 * logits x. Student and teacher are laid out as ce_cat_args' logits, each with
 * its own strides; samples r = o*inner + i; per-sample arrays (target,
 * sample_weight, grad_output, loss_out) are contiguous in r; the gradient is
 * contiguous (outer, C, inner) and may alias x exactly (out=student). */
typedef enum ce_div_kind {
    CE_DIV_KL_FORWARD = 0, /* KL(P || Q) */
    CE_DIV_KL_REVERSE = 1, /* KL(Q || P) */
    CE_DIV_JS = 2          /* beta KL(P || M) + (1 - beta) KL(Q || M), M = beta P + (1 - beta) Q */
} ce_div_kind;
typedef enum ce_teacher_kind {
    CE_TEACHER_LOGITS = 0,    /* P = softmax(t / T) */
    CE_TEACHER_LOG_PROBS = 1, /* P = exp(t) */
    CE_TEACHER_PROBS = 2      /* P = t */
} ce_teacher_kind;
typedef struct {
    int kind;       /* CE_DIV_* */
    int teacher_is; /* CE_TEACHER_* */
    const void *x;  /* the student's logits */
    int64_t outer, C, inner;
    int64_t xs_o, xs_c, xs_i;
    const void *t; /* the teacher (same dtype as x) */
    int64_t ts_o, ts_c, ts_i;
    double inv_temperature; /* 1 / T > 0 */
    double beta;            /* CE_DIV_JS: in (0, 1) */

    const int64_t *target; /* per-sample tokens, or NULL: rows equal to ignore_index are skipped */
    int64_t ignore_index;
    const void *sample_weight; /* [N] or NULL (all 1) */
    const void *grad_output;   /* [N] ("none") or NULL */
    double grad_output_scalar; /* used when grad_output is NULL */
    int reduction;             /* CE_RED_* */

    void *loss_out; /* per-sample divergences [N] for "none", else NULL */
    void *grad;     /* gradient (outer, C, inner) contiguous, or NULL */
    int num_threads;

    /* results */
    double loss; /* the reduced divergence for "sum" / "mean" */
} ce_div_args;

typedef int (*ce_div_fn)(ce_div_args *a);
/* SciPy's b-weighted log-sum-exp with its sign (scipy.special.logsumexp with
 * b=): per row r = o*inner + i of the (outer, C, inner) layout of a (strides
 * in elements), S = sum_c b_c exp(a_c) with b laid out in the same index
 * space with its own strides (zero strides broadcast); out[r] = log|S| and
 * sign[r] = sign(S) (sign NULL: out[r] = NaN where S < 0). out and sign are
 * contiguous in r. */
typedef struct {
    const void *a;
    int64_t outer, C, inner;
    int64_t as_o, as_c, as_i;
    const void *b;
    int64_t bs_o, bs_c, bs_i;
    void *out;
    void *sign;
    int num_threads;
} ce_wlse_args;

typedef int (*ce_wlse_fn)(ce_wlse_args *a);

/* Shannon entropy and Kullback-Leibler divergence of probability vectors
 * that are normalised per row first (scipy.stats.entropy): per row of the
 * (outer, C, inner) layout, u = p / sum p and (q not NULL) v = q / sum q,
 * out[r] = -sum u log u, or sum u log(u / v), with 0 log 0 = 0 and an
 * infinite term where v = 0 < u. omit_nan leaves out every position where
 * p (or q) is NaN (nan_policy="omit"); an empty row gives 0. */
typedef struct {
    const void *p;
    int64_t outer, C, inner;
    int64_t ps_o, ps_c, ps_i;
    const void *q; /* or NULL: entropy of p */
    int64_t qs_o, qs_c, qs_i;
    int omit_nan;
    void *out;
    int num_threads;
} ce_prob_args;

typedef int (*ce_prob_fn)(ce_prob_args *a);

/* sklearn.metrics.log_loss on class indices: probabilities p laid out as
 * (N, C) with element strides (C == 1: the positive class of a binary
 * problem, whose other column is 1 - p), label[i] in [0, max(C, 2)); loss_i =
 * -log(clip(p[i, label[i]], eps, 1 - eps)); results: sum_i w_i loss_i and
 * sum_i w_i (w NULL: all 1), and the checks made in the same pass. */
typedef struct {
    const void *p;
    int64_t N, C;
    int64_t ps_r, ps_c;
    const int64_t *label;
    const double *w; /* sample weights [N], or NULL */
    double eps;      /* clip bound */
    double sum_tol;  /* a row "sums to one" when |sum - 1| <= sum_tol */
    int num_threads;

    /* results */
    double loss_sum, weight_sum;
    int nonfinite;      /* a NaN or an infinity in p */
    int out_of_range;   /* a finite p > 1 or < 0 */
    int not_normalised; /* a row whose sum is not within sum_tol of 1 */
    int64_t err_pos;    /* CE_ERR_TARGET_INDEX: first row with a bad label */
} ce_logloss_args;

typedef int (*ce_logloss_fn)(ce_logloss_args *a);

/* Test hook for the vector math (ce_vecmath*.h): y[i] = log(x[i]) (CE_VM_LOG),
 * log1p(x[i]) (CE_VM_LOG1P) or exp(x[i]) for x[i] <= 0 (CE_VM_EXP), n contiguous
 * elements (ce_vecmath also splits them over threads, for the benchmark). */
typedef enum ce_vm_kind { CE_VM_LOG = 0, CE_VM_LOG1P = 1, CE_VM_EXP = 2 } ce_vm_kind;
typedef void (*ce_vecmath_fn)(int kind, const void *x, void *y, int64_t n);

/* One set of kernels, compiled once per instruction-set level. */
typedef struct {
    const char *isa;
    ce_cat_fn categorical_f32;
    ce_cat_fn categorical_f64;
    ce_cat_fn categorical_bf16;
    ce_cat_fn categorical_f16;
    ce_bin_fn binary_f32;
    ce_bin_fn binary_f64;
    ce_bin_fn binary_bf16;
    ce_bin_fn binary_f16;
    ce_sm_fn softmax_family_f32;
    ce_sm_fn softmax_family_f64;
    ce_sm_fn softmax_family_bf16;
    ce_sm_fn softmax_family_f16;
    ce_div_fn divergence_f32;
    ce_div_fn divergence_f64;
    ce_vecmath_fn vecmath_f32;
    ce_vecmath_fn vecmath_f64;
    ce_wlse_fn wlse_f32;
    ce_wlse_fn wlse_f64;
    ce_prob_fn prob_f32;
    ce_prob_fn prob_f64;
    ce_logloss_fn logloss_f32;
    ce_logloss_fn logloss_f64;
} ce_kernel_table;

/* Entry points used by the binding (dispatch.c). */
int ce_categorical(int dtype, ce_cat_args *a); /* dtype: a ce_dtype */
int ce_binary(int dtype, ce_bin_args *a);          /* dtype: a ce_dtype */
int ce_softmax_family(int dtype, ce_sm_args *a); /* dtype: a ce_dtype */
int ce_divergence(int is_double, ce_div_args *a);
int ce_wlse(int is_double, ce_wlse_args *a);
int ce_prob(int is_double, ce_prob_args *a);
int ce_logloss(int is_double, ce_logloss_args *a);
void ce_vecmath(int is_double, int kind, const void *x, void *y, int64_t n, int num_threads);

/* The ISA level in use: "baseline", "avx2" or "avx512". */
const char *ce_isa(void);
/* Comma-separated ISA levels compiled into this build. */
const char *ce_isa_compiled(void);
/* Comma-separated ISA levels this CPU can run. */
const char *ce_isa_supported(void);
/* Force an ISA level; returns 0 on success, -1 if unknown or unsupported here. */
int ce_set_isa(const char *name);

/* Build facts for show_config(). */
const char *ce_compiler(void);
int ce_openmp_version(void); /* _OPENMP (yyyymm), 0 when built without OpenMP */
int ce_default_threads(void);

#endif
