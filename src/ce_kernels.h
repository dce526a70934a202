/* ce_kernels.h — the C interface between the Cython binding and the kernels.
 *
 * The kernels never allocate result arrays and never raise Python errors: the
 * binding passes pointers to arrays it allocated, and the kernels return an
 * error code (CE_OK, CE_ERR_*) plus, where it helps, the offending position. */
#ifndef CE_KERNELS_H
#define CE_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#define CE_OK 0
#define CE_ERR_TARGET_INDEX 1 /* class index outside [0, C) and != ignore_index */
#define CE_ERR_NOMEM 2        /* a per-thread scratch row could not be allocated */

#define CE_RED_NONE 0
#define CE_RED_SUM 1
#define CE_RED_MEAN 2

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
    int num_threads;

    /* results */
    double loss;     /* the reduced loss for "sum" / "mean" */
    int64_t err_pos; /* CE_ERR_TARGET_INDEX: first offending flat position ... */
    int64_t err_val; /* ... and its value */
} ce_cat_args;

typedef int (*ce_cat_fn)(ce_cat_args *a);

/* One set of kernels, compiled once per instruction-set level. */
typedef struct {
    const char *isa;
    ce_cat_fn categorical_f32;
    ce_cat_fn categorical_f64;
} ce_kernel_table;

/* Entry points used by the binding (dispatch.c). */
int ce_categorical(int is_double, ce_cat_args *a);

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
