/* ce_transpose.h — a tile of rows to lanes and back, for the tile paths
 * (categorical_tile_impl.h): a tile is CE_TILE_ROWS = 16 rows, held
 * class-major in a scratch xt[c * 16 + j] (class c of the tile's row j) so
 * that every pass over it is a vector loop across the rows.
 *
 *   ce_tile_in_T   xt[c * 16 + j] = x[j * rs + c]  (16 rows of C classes,
 *                  class stride 1, row stride rs; reads nothing outside them)
 *   ce_tile_out_T  g[j * C + c] = xt[c * 16 + j]   (16 contiguous rows of C)
 *
 * With AVX-512 or AVX2 the tile is cut into square blocks of one vector
 * register per row (16 or 8 floats, 8 or 4 doubles), each transposed in
 * registers by the usual unpack / shuffle network; a row's last block is
 * loaded with a mask. The blocks go out through a small staging copy of the
 * tile's contiguous output (unmasked stores whose overhang a later store
 * overwrites), copied out in whole vectors: AVX2's masked store is slow on
 * AMD, and one body then serves both ISAs. Elsewhere a plain element loop
 * serves (scalar fallback). A transpose moves data only, so every ISA gives
 * the same bits. */
#ifndef CE_TRANSPOSE_H
#define CE_TRANSPOSE_H

#include <stddef.h>
#include <stdint.h>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

#define CE_TILE_ROWS 16
/* whether ce_tile_in / ce_tile_out below work in registers */
#if defined(__AVX512F__) || defined(__AVX2__)
#define CE_TILE_IN_REGISTERS 1
#else
#define CE_TILE_IN_REGISTERS 0
#endif
/* The staging a tile_out needs beyond 16 * C elements (the overhang). */
#define CE_TILE_STAGE_PAD 16

/* ---- portable fallback ------------------------------------------------- */
#define CE_TILE_SCALAR(T)                                                              \
    static inline void ce_tile_in_scalar_##T(const T *x, ptrdiff_t rs, int64_t C, T *xt) { \
        for (int64_t j = 0; j < 16; ++j)                                               \
            for (int64_t c = 0; c < C; ++c) xt[c * 16 + j] = x[j * rs + c];            \
    }                                                                                  \
    static inline void ce_tile_out_scalar_##T(const T *xt, int64_t C, T *g) {          \
        for (int64_t j = 0; j < 16; ++j)                                               \
            for (int64_t c = 0; c < C; ++c) g[j * C + c] = xt[c * 16 + j];             \
    }
CE_TILE_SCALAR(float)
CE_TILE_SCALAR(double)
#undef CE_TILE_SCALAR

/* ---- in registers ------------------------------------------------------- */
/* The tile in square blocks of B rows by B classes, one register V per row:
 * LOADN(p, n) loads n <= B elements (the rest zero, nothing read past them),
 * STORE an unaligned full store, ZERO a zero register, TR(r) the in-register
 * transpose (r[i] = row i -> r[c] = column c). */
#define CE_TILE_BLOCKS(T, V, B, LOADN, STORE, LOAD, ZERO, TR)                           \
    static inline void ce_tile_in_##T(const T *x, ptrdiff_t rs, int64_t C, T *xt) {     \
        for (int64_t c0 = 0; c0 < C; c0 += B) {                                        \
            const int64_t n = C - c0 < B ? C - c0 : B;                                 \
            for (int h = 0; h < 16; h += B) {                                          \
                V r[B];                                                                \
                for (int j = 0; j < B; ++j) r[j] = LOADN(x + (h + j) * rs + c0, n);    \
                TR(r);                                                                 \
                for (int64_t c = 0; c < n; ++c) STORE(xt + (c0 + c) * 16 + h, r[c]);    \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    /* chunks last to first, rows in order: a row's store overhangs into the rows  \
     * after it, which their own stores (later) put right */                          \
    static inline void ce_tile_out_##T(const T *xt, int64_t C, T *g, T *stage) {       \
        for (int64_t c0 = (C - 1) / B * B; c0 >= 0; c0 -= B) {                         \
            const int64_t n = C - c0 < B ? C - c0 : B;                                 \
            for (int h = 0; h < 16; h += B) {                                          \
                V r[B];                                                                \
                for (int c = 0; c < B; ++c) r[c] = c < n ? LOAD(xt + (c0 + c) * 16 + h) : ZERO(); \
                TR(r);                                                                 \
                for (int j = 0; j < B; ++j) STORE(stage + (h + j) * C + c0, r[j]);     \
            }                                                                          \
        }                                                                              \
        for (int64_t i = 0; i < 16 * C; i += B) STORE(g + i, LOAD(stage + i));         \
    }

#if defined(__AVX512F__)
/* ---- AVX-512: 16 x 16 floats, 8 x 8 doubles ----------------------------- */

/* r[i] = row i  ->  r[c] = column c */
static inline void ce_tr16_ps(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        const __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 2]);
        const __m512d c = _mm512_castps_pd(t[i + 1]), d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int i = 0; i < 4; ++i) {
        t[i] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0x88);
        t[i + 4] = _mm512_shuffle_f32x4(r[i], r[i + 4], 0xdd);
        t[i + 8] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0x88);
        t[i + 12] = _mm512_shuffle_f32x4(r[i + 8], r[i + 12], 0xdd);
    }
    for (int i = 0; i < 4; ++i) {
        r[i] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0x88);
        r[i + 4] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0x88);
        r[i + 8] = _mm512_shuffle_f32x4(t[i], t[i + 8], 0xdd);
        r[i + 12] = _mm512_shuffle_f32x4(t[i + 4], t[i + 12], 0xdd);
    }
}

static inline void ce_tr8_pd(__m512d r[8]) {
    __m512d t[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm512_unpacklo_pd(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_pd(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) { /* rows i .. i + 3 */
        r[i] = _mm512_shuffle_f64x2(t[i], t[i + 2], 0x88);
        r[i + 1] = _mm512_shuffle_f64x2(t[i], t[i + 2], 0xdd);
        r[i + 2] = _mm512_shuffle_f64x2(t[i + 1], t[i + 3], 0x88);
        r[i + 3] = _mm512_shuffle_f64x2(t[i + 1], t[i + 3], 0xdd);
    }
    /* r[0..3] hold columns {0,4}, {2,6}, {1,5}, {3,7} of rows 0-3; r[4..7] of rows 4-7 */
    t[0] = _mm512_shuffle_f64x2(r[0], r[4], 0x88);
    t[4] = _mm512_shuffle_f64x2(r[0], r[4], 0xdd);
    t[2] = _mm512_shuffle_f64x2(r[1], r[5], 0x88);
    t[6] = _mm512_shuffle_f64x2(r[1], r[5], 0xdd);
    t[1] = _mm512_shuffle_f64x2(r[2], r[6], 0x88);
    t[5] = _mm512_shuffle_f64x2(r[2], r[6], 0xdd);
    t[3] = _mm512_shuffle_f64x2(r[3], r[7], 0x88);
    t[7] = _mm512_shuffle_f64x2(r[3], r[7], 0xdd);
    for (int i = 0; i < 8; ++i) r[i] = t[i];
}

static inline __m512 ce_loadn_ps(const float *p, int64_t n) {
    return _mm512_maskz_loadu_ps((__mmask16)((1u << n) - 1u), p);
}
static inline __m512d ce_loadn_pd(const double *p, int64_t n) {
    return _mm512_maskz_loadu_pd((__mmask8)((1u << n) - 1u), p);
}
CE_TILE_BLOCKS(float, __m512, 16, ce_loadn_ps, _mm512_storeu_ps, _mm512_loadu_ps, _mm512_setzero_ps, ce_tr16_ps)
CE_TILE_BLOCKS(double, __m512d, 8, ce_loadn_pd, _mm512_storeu_pd, _mm512_loadu_pd, _mm512_setzero_pd, ce_tr8_pd)

#elif defined(__AVX2__)
/* ---- AVX2: 8 x 8 floats, 4 x 4 doubles ---------------------------------- */

static inline void ce_tr8_ps(__m256 r[8]) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xee);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    for (int i = 0; i < 4; ++i) {
        r[i] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x20);
        r[i + 4] = _mm256_permute2f128_ps(u[i], u[i + 4], 0x31);
    }
}

static inline void ce_tr4_pd(__m256d r[4]) {
    const __m256d t0 = _mm256_unpacklo_pd(r[0], r[1]), t1 = _mm256_unpackhi_pd(r[0], r[1]);
    const __m256d t2 = _mm256_unpacklo_pd(r[2], r[3]), t3 = _mm256_unpackhi_pd(r[2], r[3]);
    r[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    r[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    r[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    r[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
}

static inline __m256 ce_loadn_ps(const float *p, int64_t n) {
    const __m256i k = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return n == 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, k);
}
static inline __m256d ce_loadn_pd(const double *p, int64_t n) {
    const __m256i k = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    return n == 4 ? _mm256_loadu_pd(p) : _mm256_maskload_pd(p, k);
}
CE_TILE_BLOCKS(float, __m256, 8, ce_loadn_ps, _mm256_storeu_ps, _mm256_loadu_ps, _mm256_setzero_ps, ce_tr8_ps)
CE_TILE_BLOCKS(double, __m256d, 4, ce_loadn_pd, _mm256_storeu_pd, _mm256_loadu_pd, _mm256_setzero_pd, ce_tr4_pd)

#else
static inline void ce_tile_in_float(const float *x, ptrdiff_t rs, int64_t C, float *xt) {
    ce_tile_in_scalar_float(x, rs, C, xt);
}
static inline void ce_tile_out_float(const float *xt, int64_t C, float *g, float *stage) {
    (void)stage;
    ce_tile_out_scalar_float(xt, C, g);
}
static inline void ce_tile_in_double(const double *x, ptrdiff_t rs, int64_t C, double *xt) {
    ce_tile_in_scalar_double(x, rs, C, xt);
}
static inline void ce_tile_out_double(const double *xt, int64_t C, double *g, double *stage) {
    (void)stage;
    ce_tile_out_scalar_double(xt, C, g);
}
#endif
#undef CE_TILE_BLOCKS

#endif
