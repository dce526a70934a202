/* kernels_for_dtype.h — every kernel body for one element type. kernels.c
 * includes it once per dtype with CE_T, CE_U, CE_I (integers of CE_T's
 * width), CE_SFX (f32_<isa> | f64_<isa>) and the vector-math macros
 * (CE_EXP_NONPOS, CE_LOG, CE_LOG1P) and the tile transposes (CE_TILE_IN,
 * CE_TILE_OUT) defined; it undefines them afterwards.
 * CE_FN(name) names a function of this instantiation (name_<CE_SFX>). */
#define CE_FN(name) CE_CAT(name, CE_CAT(_, CE_SFX))

/* in dependency order: each file uses only those above it */
#include "rowscan_impl.h"
#include "tilescan_impl.h"
#include "categorical_math_impl.h"
#include "categorical_tile_impl.h"
#include "categorical_rows_impl.h"
#include "categorical_split_impl.h"
#include "categorical_from_lse_impl.h"
#include "categorical_impl.h"
#include "binary_impl.h"
#include "softmax_impl.h"
#include "divergence_impl.h"
#include "weighted_lse_impl.h"
#include "prob_divergence_impl.h"
#include "log_loss_impl.h"

/* Test hook: the vector math of this ISA level, elementwise over n
 * contiguous elements (tests/test_vecmath.py): kind 0 log, 1 log1p,
 * 2 exp of arguments <= 0. */
static void CE_FN(ce_vecmath)(int kind, const void *xv, void *yv, int64_t n) {
    const CE_T *x = (const CE_T *)xv;
    CE_T *y = (CE_T *)yv;
    if (kind == 0) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) y[i] = CE_LOG(x[i]);
    } else if (kind == 1) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) y[i] = CE_LOG1P(x[i]);
    } else {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) y[i] = CE_EXP_NONPOS(x[i]);
    }
}
#undef CE_FN

#undef CE_SFX
#undef CE_T
#undef CE_U
#undef CE_I
#undef CE_EXP_NONPOS
#undef CE_LOG
#undef CE_LOG1P
#undef CE_TILE_IN
#undef CE_TILE_OUT
#undef CE_TILE
#undef CE_TILE_MAX_C
#undef CE_DOT_NONE
#undef CE_DOT_SMOOTH
#undef CE_DOT_ENTROPY
