/* ce_half.h — bfloat16 and float16 storage: one element to float32 and back,
 * the conversions the 16-bit kernels use at their loads and stores (see
 * storage_impl.h). Both formats are stored as uint16_t bits.
 *
 * Every conversion is exact (widening) or IEEE round-to-nearest-even
 * (narrowing), with NaN kept a quiet NaN of the same sign, so every ISA gives
 * the same bits:
 *   bfloat16  in integer arithmetic everywhere. AVX-512 BF16's vcvtneps2bf16
 *             is NOT used: it flushes float32 denormals to zero, so it is not
 *             round-to-nearest-even on them (a gradient of 1e-39 would become
 *             0 on one CPU and not on another). GCC 12 vectorises the integer
 *             form under `omp simd` (a few integer ops per vector).
 *   float16   through _Float16, which GCC compiles to F16C's
 *             vcvtph2ps / vcvtps2ph (IEEE RNE) with -mf16c (the AVX2 and
 *             AVX-512 builds) and to libgcc's soft-float (also IEEE RNE)
 *             otherwise; compilers without _Float16 (MSVC) get the integer
 *             form below. */
#ifndef CE_HALF_H
#define CE_HALF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__F16C__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

static inline float ce_bits_f32(uint32_t b) {
    float f;
    memcpy(&f, &b, sizeof f);
    return f;
}

static inline uint32_t ce_f32_bits(float f) {
    uint32_t b;
    memcpy(&b, &f, sizeof b);
    return b;
}

/* bfloat16 is the upper half of a float32 */
static inline float ce_bf16_to_f32(uint16_t h) { return ce_bits_f32((uint32_t)h << 16); }

/* round to nearest even; correct for every value but NaN (which it may
 * turn into an infinity or the other sign's zero) */
static inline uint16_t ce_f32_to_bf16_notnan(float f) {
    const uint32_t b = ce_f32_bits(f);
    return (uint16_t)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

static inline uint16_t ce_f32_to_bf16(float f) {
    const uint32_t b = ce_f32_bits(f);
    const uint32_t quiet = (b >> 16) | 0x40u;
    return (b & 0x7fffffffu) > 0x7f800000u ? (uint16_t)quiet : ce_f32_to_bf16_notnan(f);
}

#if defined(__FLT16_MANT_DIG__) && !defined(CE_HALF_SOFT)
static inline float ce_f16_to_f32(uint16_t h) {
    _Float16 v;
    memcpy(&v, &h, sizeof v);
    return (float)v;
}

static inline uint16_t ce_f32_to_f16(float f) {
    const _Float16 v = (_Float16)f;
    uint16_t h;
    memcpy(&h, &v, sizeof h);
    return h;
}
#else
static inline float ce_f16_to_f32(uint16_t h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return ce_bits_f32(sign | 0x7f800000u | (m << 13)); /* inf, NaN */
    if (e != 0) return ce_bits_f32(sign | ((e + 112u) << 23) | (m << 13));
    const float v = (float)m * 5.9604644775390625e-8f; /* subnormal: m * 2^-24, exact */
    return sign ? -v : v;
}

static inline uint16_t ce_f32_to_f16(float f) {
    const uint32_t b = ce_f32_bits(f), sign = (b >> 16) & 0x8000u, a = b & 0x7fffffffu;
    if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) return (uint16_t)(sign | 0x7c00u); /* >= 65520 (and inf): inf */
    if (a >= 0x38800000u) {                                 /* normal: rebias, round the 13 bits */
        const uint32_t r = a - 0x38000000u;
        return (uint16_t)(sign | ((r + 0xfffu + ((r >> 13) & 1u)) >> 13));
    }
    /* subnormal or zero: adding 0.5 leaves the rounded multiple of 2^-24 (the
     * ulp of 0.5) in the low bits, rounded to nearest even by the addition */
    return (uint16_t)(sign | (ce_f32_bits(ce_bits_f32(a) + 0.5f) - 0x3f000000u));
}
#endif

/* Spans of n elements, 16-bit side strided (s), float side contiguous; the
 * float side never aliases the other. */
static inline void ce_bf16_load(float *restrict d, const uint16_t *s, ptrdiff_t ss, int64_t n) {
    if (ss == 1) { /* (a constant stride: plain vector loads, not gathers) */
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) d[i] = ce_bf16_to_f32(s[i]);
    } else {
        for (int64_t i = 0; i < n; ++i) d[i] = ce_bf16_to_f32(s[i * ss]);
    }
}

/* How a span is stored (flags):
 *   CE_STORE_NOTNAN  the caller knows no a * s is NaN: bfloat16 rounding
 *                    skips its NaN test (a third of the vector loop);
 *   CE_STORE_STREAM  contiguous results written once and not read again by
 *                    the kernel, part of an output larger than the caches:
 *                    non-temporal stores (AVX-512) send whole lines to memory
 *                    without first reading them, a third of the DRAM traffic
 *                    of a 16-bit row. Stores round a * s (a row's last factor
 *                    is applied in its store pass, rounded once; a = 1 stores
 *                    s as it is); every variant gives the same bits. */
#define CE_STORE_NOTNAN 1
#define CE_STORE_STREAM 2

/* After a thread's streamed stores, before its results count as written:
 * orders them before its later stores (and the team's barrier). Once per
 * block of rows: each fence waits for the lines in flight to drain. */
static inline void ce_stream_fence(void) {
#ifdef __AVX512F__
    _mm_sfence();
#endif
}

#ifdef __AVX512F__
/* The 16 32-bit lanes' low halves of v0 then v1, as 32 uint16 in order. */
static inline __m512i ce_low_halves(__m512i v0, __m512i v1) {
    const __m512i idx = _mm512_set_epi16(62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40, 38, 36, 34, 32, 30,
                                         28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    return _mm512_permutex2var_epi16(v0, idx, v1);
}

/* ce_f32_to_bf16_notnan of a * v on 16 lanes, in the low halves */
static inline __m512i ce_bf16_round16(__m512 v, __m512 a) {
    const __m512i b = _mm512_castps_si512(_mm512_mul_ps(a, v));
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1));
    return _mm512_srli_epi32(_mm512_add_epi32(_mm512_add_epi32(b, _mm512_set1_epi32(0x7fff)), lsb), 16);
}

/* The elements before d's next 64-byte boundary (<= n), for stores that
 * stream whole lines. */
static inline int64_t ce_head_to_line(const uint16_t *d, int64_t n) {
    const int64_t h = (int64_t)((64 - ((uintptr_t)d & 63)) & 63) / 2;
    return h < n ? h : n;
}
#endif

static inline void ce_bf16_store(uint16_t *d, ptrdiff_t sd, const float *restrict s, int64_t n, float a,
                                 int flags) {
    int64_t i = 0;
    if (sd == 1 && (flags & CE_STORE_NOTNAN)) {
#ifdef __AVX512F__
        if (flags & CE_STORE_STREAM) {
            for (const int64_t h = ce_head_to_line(d, n); i < h; ++i) d[i] = ce_f32_to_bf16_notnan(a * s[i]);
            const __m512 va = _mm512_set1_ps(a);
            for (; i + 32 <= n; i += 32) {
                const __m512i lo = ce_bf16_round16(_mm512_loadu_ps(s + i), va);
                const __m512i hi = ce_bf16_round16(_mm512_loadu_ps(s + i + 16), va);
                _mm512_stream_si512((void *)(d + i), ce_low_halves(lo, hi));
            }
        }
#endif
#pragma omp simd
        for (int64_t j = i; j < n; ++j) d[j] = ce_f32_to_bf16_notnan(a * s[j]);
    } else if (sd == 1) {
#pragma omp simd
        for (int64_t j = 0; j < n; ++j) d[j] = ce_f32_to_bf16(a * s[j]);
    } else {
        for (int64_t j = 0; j < n; ++j) d[j * sd] = ce_f32_to_bf16(a * s[j]);
    }
}

/* GCC 12 does not vectorise _Float16 conversions: F16C's forms (AVX-512's
 * 16-lane ones where compiled) are called for contiguous spans (the same
 * IEEE conversion, so the same bits) */
static inline void ce_f16_load(float *restrict d, const uint16_t *s, ptrdiff_t ss, int64_t n) {
    int64_t i = 0;
#ifdef __AVX512F__
    for (; ss == 1 && i + 16 <= n; i += 16)
        _mm512_storeu_ps(d + i, _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(s + i))));
#endif
#ifdef __F16C__
    for (; ss == 1 && i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
#endif
    for (; i < n; ++i) d[i] = ce_f16_to_f32(s[i * ss]);
}

static inline void ce_f16_store(uint16_t *d, ptrdiff_t sd, const float *restrict s, int64_t n, float a,
                                int flags) {
    int64_t i = 0;
#ifdef __AVX512F__
    if (sd == 1) {
        const __m512 va = _mm512_set1_ps(a);
        const int stream = flags & CE_STORE_STREAM;
        if (stream)
            for (const int64_t h = ce_head_to_line(d, n); i < h; ++i) d[i] = ce_f32_to_f16(a * s[i]);
        for (; i + 32 <= n; i += 32) {
            const __m256i lo = _mm512_cvtps_ph(_mm512_mul_ps(va, _mm512_loadu_ps(s + i)), _MM_FROUND_TO_NEAREST_INT);
            const __m256i hi = _mm512_cvtps_ph(_mm512_mul_ps(va, _mm512_loadu_ps(s + i + 16)), _MM_FROUND_TO_NEAREST_INT);
            const __m512i v = _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
            if (stream)
                _mm512_stream_si512((void *)(d + i), v);
            else
                _mm512_storeu_si512((void *)(d + i), v);
        }
    }
#endif
#ifdef __F16C__
    const __m256 va8 = _mm256_set1_ps(a);
    for (; sd == 1 && i + 8 <= n; i += 8) {
        const __m256 v = _mm256_mul_ps(va8, _mm256_loadu_ps(s + i));
        _mm_storeu_si128((__m128i *)(d + i), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    }
#endif
    for (; i < n; ++i) d[i * sd] = ce_f32_to_f16(a * s[i]);
    (void)flags;
}

#endif
