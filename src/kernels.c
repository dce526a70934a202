/* kernels.c — every kernel, instantiated for float32 and float64. CMake
 * compiles this file once per ISA level with CE_ISA set to the level's name
 * (baseline, avx2, avx512) and the matching -m flags; dispatch.c picks one
 * table at import. */
#include <math.h>
#include <stdlib.h>

#include "ce_kernels.h"
#include "ce_util.h"
#include "ce_vecmath.h"

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
#include "categorical_impl.h"
#undef CE_SFX
#undef CE_T
#undef CE_EXP

#define CE_SFX CE_CAT(f64_, CE_ISA)
#define CE_T double
#define CE_EXP ce_exp_f64
#include "categorical_impl.h"
#undef CE_SFX
#undef CE_T
#undef CE_EXP

const ce_kernel_table CE_CAT(ce_table_, CE_ISA) = {
    CE_STR(CE_ISA),
    CE_CAT(ce_categorical_f32_, CE_ISA),
    CE_CAT(ce_categorical_f64_, CE_ISA),
};
