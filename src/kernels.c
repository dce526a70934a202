/* kernels.c — every kernel, instantiated for float32 and float64, and the
 * categorical, softmax-family and binary kernels for bfloat16 and float16 storage
 * (computed in float32, see kernels_for_dtype.h). CMake
 * compiles this file once per ISA level with CE_ISA set to the level's name
 * (baseline, avx2, avx512) and the matching -m flags; dispatch.c picks one
 * table at import. */
#include <float.h>
#include <math.h>
#include <stdlib.h>

#include "ce_kernels.h"
#include "ce_util.h"
#include "ce_vecmath.h"
#include "ce_vecmath_log.h"
#include "ce_transpose.h"
#include "ce_half.h"

#ifndef CE_ISA
#define CE_ISA baseline
#endif
#define CE_STR_(s) #s
#define CE_STR(s) CE_STR_(s)

/* Each instantiation gets the ISA in its symbol names, so the per-ISA objects
 * link side by side. */
#define CE_SFX CE_CAT(f32_, CE_ISA)
#define CE_T float
#define CE_S float
#define CE_HALF 0
#define CE_LD(v) (v)
#define CE_ST(v) (v)
#define CE_U uint32_t /* the unsigned and signed integers of CE_T's width */
#define CE_I int32_t
#define CE_EXP_NONPOS ce_exp_nonpos_f32
#define CE_LOG ce_log_f32
#define CE_LOG1P ce_log1p_f32
#define CE_TILE_IN ce_tile_in_float
#define CE_TILE_OUT ce_tile_out_float
#include "kernels_for_dtype.h"

#define CE_SFX CE_CAT(f64_, CE_ISA)
#define CE_T double
#define CE_S double
#define CE_HALF 0
#define CE_LD(v) (v)
#define CE_ST(v) (v)
#define CE_U uint64_t
#define CE_I int64_t
#define CE_EXP_NONPOS ce_exp_nonpos_f64
#define CE_LOG ce_log_f64
#define CE_LOG1P ce_log1p_f64
#define CE_TILE_IN ce_tile_in_double
#define CE_TILE_OUT ce_tile_out_double
#include "kernels_for_dtype.h"

/* 16-bit storage, float32 arithmetic (kernels_for_dtype.h derives the rest
 * from the format's name) */
#define CE_HALF_FMT bf16
#include "kernels_for_dtype.h"

#define CE_HALF_FMT f16
#include "kernels_for_dtype.h"

/* Designated: each entry names its field, so the order of the struct does
 * not matter here. */
#define CE_ENTRY(name) .name = CE_CAT(ce_##name##_, CE_ISA)
const ce_kernel_table CE_CAT(ce_table_, CE_ISA) = {
    .isa = CE_STR(CE_ISA),
    CE_ENTRY(categorical_f32),
    CE_ENTRY(categorical_f64),
    CE_ENTRY(categorical_bf16),
    CE_ENTRY(categorical_f16),
    CE_ENTRY(binary_f32),
    CE_ENTRY(binary_f64),
    CE_ENTRY(binary_bf16),
    CE_ENTRY(binary_f16),
    CE_ENTRY(softmax_family_f32),
    CE_ENTRY(softmax_family_f64),
    CE_ENTRY(softmax_family_bf16),
    CE_ENTRY(softmax_family_f16),
    CE_ENTRY(divergence_f32),
    CE_ENTRY(divergence_f64),
    CE_ENTRY(vecmath_f32),
    CE_ENTRY(vecmath_f64),
    CE_ENTRY(wlse_f32),
    CE_ENTRY(wlse_f64),
    CE_ENTRY(prob_f32),
    CE_ENTRY(prob_f64),
    CE_ENTRY(logloss_f32),
    CE_ENTRY(logloss_f64),
};
#undef CE_ENTRY
