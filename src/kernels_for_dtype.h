/* kernels_for_dtype.h — every kernel body for one element type. kernels.c
 * includes it once per dtype with CE_T (the compute type), CE_S (the storage
 * type of the logits and of the gradient / softmax outputs; CE_T itself),
 * CE_HALF (0), CE_LD / CE_ST (the identity), CE_U, CE_I (integers of CE_T's
 * width), CE_SFX (f32_<isa> | f64_<isa>) and the vector-math macros
 * (CE_EXP_NONPOS, CE_LOG, CE_LOG1P) and the tile transposes (CE_TILE_IN,
 * CE_TILE_OUT) defined -- or, for 16-bit storage, with CE_HALF_FMT alone
 * (bf16 | f16), from which the rest is derived below (CE_HALF 1, CE_S
 * uint16_t, CE_T float, and the conversions of ce_half.h: CE_LD, CE_ST one
 * element, CE_LOAD_SPAN, CE_STORE_SPAN a span). It undefines them afterwards.
 * CE_FN(name) names a function of this instantiation (name_<CE_SFX>).
 *
 * 16-bit storage is converted at the edges only: a row (or a tile of rows)
 * is loaded into a float32 scratch, computed there by the float32 code, and
 * its results stored back rounded to nearest even (storage_impl.h); every
 * other operand (weights, targets, per-sample arrays, losses) is float32.
 * The elementwise binary kernel converts a chunk of 16-bit logits into its
 * float32 staging buffer instead (binary_impl.h). Only the categorical,
 * softmax-family and binary kernels have 16-bit instantiations; the Python
 * layer converts 16-bit operands of the other families to float32. */
#ifdef CE_HALF_FMT
/* 16-bit storage in the format CE_HALF_FMT (bf16 | f16: ce_half.h's
 * conversions), float32 arithmetic with float32's vector math; the register
 * transposes named are float32's and never called (16-bit tiles are
 * converted element by element, categorical_tile_impl.h) */
#define CE_SFX CE_CAT(CE_CAT(CE_HALF_FMT, _), CE_ISA)
#define CE_HALF 1
#define CE_S uint16_t
#define CE_T float
#define CE_U uint32_t
#define CE_I int32_t
#define CE_LD CE_CAT(ce_, CE_CAT(CE_HALF_FMT, _to_f32))
#define CE_ST CE_CAT(ce_f32_to_, CE_HALF_FMT)
#define CE_LOAD_SPAN CE_CAT(ce_, CE_CAT(CE_HALF_FMT, _load))
#define CE_STORE_SPAN CE_CAT(ce_, CE_CAT(CE_HALF_FMT, _store))
#define CE_EXP_NONPOS ce_exp_nonpos_f32
#define CE_LOG ce_log_f32
#define CE_LOG1P ce_log1p_f32
#define CE_TILE_IN ce_tile_in_float
#define CE_TILE_OUT ce_tile_out_float
#endif
#define CE_FN(name) CE_CAT(name, CE_CAT(_, CE_SFX))

/* in dependency order: each file uses only those above it */
#include "storage_impl.h"
#include "rowscan_impl.h"
#include "tilescan_impl.h"
#include "categorical_math_impl.h"
#include "categorical_tile_impl.h"
#include "categorical_rows_impl.h"
#if !CE_HALF
#include "categorical_split_impl.h"
#endif
#include "categorical_from_lse_impl.h"
#include "categorical_impl.h"
#include "softmax_impl.h"
#include "binary_impl.h"
#if !CE_HALF
#include "divergence_impl.h"
#include "weighted_lse_impl.h"
#include "prob_divergence_impl.h"
#include "log_loss_impl.h"
#endif

/* Test hook: the vector math of this ISA level, elementwise over n
 * contiguous elements (tests/test_vecmath.py): kind 0 log, 1 log1p,
 * 2 exp of arguments <= 0. */
#if !CE_HALF
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
#endif
#undef CE_FN

#undef CE_SFX
#undef CE_T
#undef CE_S
#undef CE_HALF
#undef CE_HALF_FMT
#undef CE_LD
#undef CE_ST
#undef CE_LOAD_SPAN
#undef CE_STORE_SPAN
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
