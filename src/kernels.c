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
#define CE_U uint32_t /* the unsigned and signed integers of CE_T's width */
#define CE_I int32_t
#define CE_EXP_NONPOS ce_exp_nonpos_f32
#define CE_LOG ce_log_f32
#define CE_LOG1P ce_log1p_f32
#include "kernels_for_dtype.h"

#define CE_SFX CE_CAT(f64_, CE_ISA)
#define CE_T double
#define CE_U uint64_t
#define CE_I int64_t
#define CE_EXP_NONPOS ce_exp_nonpos_f64
#define CE_LOG ce_log_f64
#define CE_LOG1P ce_log1p_f64
#include "kernels_for_dtype.h"

const ce_kernel_table CE_CAT(ce_table_, CE_ISA) = {
    CE_STR(CE_ISA),
    CE_CAT(ce_categorical_f32_, CE_ISA),
    CE_CAT(ce_categorical_f64_, CE_ISA),
    CE_CAT(ce_binary_f32_, CE_ISA),
    CE_CAT(ce_binary_f64_, CE_ISA),
    CE_CAT(ce_softmax_family_f32_, CE_ISA),
    CE_CAT(ce_softmax_family_f64_, CE_ISA),
    CE_CAT(ce_divergence_f32_, CE_ISA),
    CE_CAT(ce_divergence_f64_, CE_ISA),
    CE_CAT(ce_vecmath_f32_, CE_ISA),
    CE_CAT(ce_vecmath_f64_, CE_ISA),
};
