/* kernels.c — every kernel, instantiated for float32 and float64. CMake
 * compiles this file once per ISA level with CE_ISA set to the level's name
 * (baseline, avx2, avx512) and the matching -m flags; dispatch.c picks one
 * table at import. */
#include <math.h>
#include <stdlib.h>

#include "ce_kernels.h"
#include "ce_util.h"
#include "ce_vecmath.h"
#include "ce_vecmath_log.h"

#ifndef CE_ISA
#define CE_ISA baseline
#endif
#define CE_STR_(s) #s
#define CE_STR(s) CE_STR_(s)

/* Each instantiation gets the ISA in its symbol names, so the per-ISA objects
 * link side by side. */
#define CE_SFX CE_CAT(f32_, CE_ISA)
#define CE_T float
#define CE_EXP ce_exp_f32
#define CE_EXP_NONPOS ce_exp_nonpos_f32
#include "categorical_impl.h"
#undef CE_SFX
#undef CE_T
#undef CE_EXP
#undef CE_EXP_NONPOS

#define CE_SFX CE_CAT(f64_, CE_ISA)
#define CE_T double
#define CE_EXP ce_exp_f64
#define CE_EXP_NONPOS ce_exp_nonpos_f64
#include "categorical_impl.h"
#undef CE_SFX
#undef CE_T
#undef CE_EXP
#undef CE_EXP_NONPOS

/* Binary cross-entropy and the softmax family (same instantiation scheme). */
#define CE_SFX CE_CAT(f32_, CE_ISA)
#define CE_T float
#define CE_EXP ce_exp_f32
#define CE_LOG ce_log_f32
#define CE_LOG1P ce_log1p_f32
#define CE_EXP_NONPOS ce_exp_nonpos_f32
#include "binary_impl.h"
#include "softmax_impl.h"
#undef CE_SFX
#undef CE_T
#undef CE_EXP
#undef CE_LOG
#undef CE_LOG1P
#undef CE_EXP_NONPOS

#define CE_SFX CE_CAT(f64_, CE_ISA)
#define CE_T double
#define CE_EXP ce_exp_f64
#define CE_LOG ce_log_f64
#define CE_LOG1P ce_log1p_f64
#define CE_EXP_NONPOS ce_exp_nonpos_f64
#include "binary_impl.h"
#include "softmax_impl.h"
#undef CE_SFX
#undef CE_T
#undef CE_EXP
#undef CE_LOG
#undef CE_LOG1P
#undef CE_EXP_NONPOS

/* Test hook: the vector log / log1p at this ISA level, for the accuracy
 * tests (tests/test_binary.py::test_vec_log_accuracy). */
static void CE_CAT(ce_veclog_f32_, CE_ISA)(int kind, const void *xv, void *yv, int64_t n) {
    const float *x = (const float *)xv;
    float *y = (float *)yv;
    if (kind == 0) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) y[i] = ce_log_f32(x[i]);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) y[i] = ce_log1p_f32(x[i]);
    }
}

static void CE_CAT(ce_veclog_f64_, CE_ISA)(int kind, const void *xv, void *yv, int64_t n) {
    const double *x = (const double *)xv;
    double *y = (double *)yv;
    if (kind == 0) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) y[i] = ce_log_f64(x[i]);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) y[i] = ce_log1p_f64(x[i]);
    }
}

const ce_kernel_table CE_CAT(ce_table_, CE_ISA) = {
    CE_STR(CE_ISA),
    CE_CAT(ce_categorical_f32_, CE_ISA),
    CE_CAT(ce_categorical_f64_, CE_ISA),
    CE_CAT(ce_binary_f32_, CE_ISA),
    CE_CAT(ce_binary_f64_, CE_ISA),
    CE_CAT(ce_softmax_family_f32_, CE_ISA),
    CE_CAT(ce_softmax_family_f64_, CE_ISA),
    CE_CAT(ce_veclog_f32_, CE_ISA),
    CE_CAT(ce_veclog_f64_, CE_ISA),
};
