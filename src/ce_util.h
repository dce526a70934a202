/* ce_util.h — small shared helpers: token pasting, FMA, thread counts,
 * deterministic sums. */
#ifndef CE_UTIL_H
#define CE_UTIL_H

#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "ce_fork.h"

#define CE_CAT_(a, b) a##b
#define CE_CAT(a, b) CE_CAT_(a, b)
#ifdef _MSC_VER
#define CE_INLINE static __forceinline
#else
#define CE_INLINE static inline __attribute__((always_inline))
#endif

/* Fused multiply-add where the ISA has it; a*b + c otherwise. The build uses
 * -ffp-contract=off, so this is the only place FMAs come from. */
#if defined(_MSC_VER) && defined(__AVX2__)
#define CE_FMA_F32(a, b, c) fmaf((a), (b), (c))
#define CE_FMA_F64(a, b, c) fma((a), (b), (c))
#elif !defined(_MSC_VER) && (defined(__FMA__) || defined(__AVX512F__) || defined(__aarch64__))
#define CE_FMA_F32(a, b, c) __builtin_fmaf((a), (b), (c))
#define CE_FMA_F64(a, b, c) __builtin_fma((a), (b), (c))
#else
#define CE_FMA_F32(a, b, c) ((a) * (b) + (c))
#define CE_FMA_F64(a, b, c) ((a) * (b) + (c))
#endif

/* Below this many elements a call runs on one thread: a thread team costs
 * more than it saves. */
#define CE_PARALLEL_MIN_ELEMENTS 32768

/* The thread count for a call: requested > 0 wins, otherwise the OpenMP
 * default (which honours OMP_NUM_THREADS and threadpoolctl); but never more
 * than the OpenMP thread limit, than the number of work blocks, or than the
 * processors unless the default is higher still; one below the parallel
 * threshold, or on a thread whose pool a fork left stale (ce_fork.c). The
 * kernels never block, so threads beyond the processors only take turns, and
 * far beyond them the runtime cannot create them: it aborts or crashes.
 * Results never depend on the count. */
static inline int ce_threads_for(int requested, int64_t blocks, int64_t elements) {
    if (elements < CE_PARALLEL_MIN_ELEMENTS || blocks <= 1) return 1;
#ifdef _OPENMP
    const int dflt = omp_get_max_threads(), limit = omp_get_thread_limit();
    int nt = requested > 0 ? requested : dflt;
    if (nt > dflt) { /* omp_get_num_procs is a system call: only here */
        const int procs = omp_get_num_procs();
        nt = nt < procs ? nt : procs > dflt ? procs : dflt;
    }
    if (nt > limit && limit > 0) nt = limit;
    if (nt > 1 && ce_fork_serial()) nt = 1;
#else
    int nt = 1;
    (void)requested;
#endif
    if ((int64_t)nt > blocks) nt = (int)blocks;
    return nt < 1 ? 1 : nt;
}

/* Rows per work block: about 64k elements, a function of C only, so the
 * blocking (and with it every rounding) is independent of the thread count. */
static inline int64_t ce_rows_per_block(int64_t C) {
    int64_t rb = 65536 / (C > 0 ? C : 1);
    return rb < 1 ? 1 : (rb > 1024 ? 1024 : rb);
}

/* A few huge rows are split along the class axis into chunks of this many
 * classes, shared by the threads. The choice depends on the shape only, so it
 * never makes results depend on the thread count. */
#define CE_SPLIT_CHUNK 32768

/* Outputs of at least this many bytes are written with streaming
 * (non-temporal) stores where a kernel can: beyond the caches a plain store
 * first reads the line it writes. */
#define CE_STREAM_MIN_BYTES ((int64_t)16 << 20)
#define CE_STREAM_MIN_ROW 4096 /* elements: rows of 1000 measured 1.6x slower streamed */

/* The bytes of one vector register of the ISA this unit is compiled for:
 * loops that keep per-lane partial sums use that many bytes of lanes. */
#if defined(__AVX512F__)
#define CE_VEC_BYTES 64
#elif defined(__AVX__)
#define CE_VEC_BYTES 32
#else
#define CE_VEC_BYTES 16
#endif
static inline int ce_split_rows(int64_t N, int64_t C) {
    return N > 0 && N < 16 && C >= 2 * CE_SPLIT_CHUNK;
}

/* The next row's bytes, requested while the current row is computed: a row
 * pass is arithmetic-bound, so between two rows the hardware prefetcher sees
 * no misses and stops, and every row would begin with a stall on DRAM. The
 * row pass issues the requests a chunk at a time (see rowscan_impl.h). */
typedef struct {
    const char *x; /* the next row of logits, or NULL */
    char *g;       /* the next row of the output (written: fetched for writing), or NULL */
} ce_prefetch;

CE_INLINE void ce_prefetch_span(const ce_prefetch *pf, int64_t from, int64_t to, const int l2) {
#if defined(__GNUC__) || defined(__clang__)
    for (int64_t o = from; o < to; o += 64) {
        if (l2) {
            __builtin_prefetch(pf->x + o, 0, 2);
            if (pf->g) __builtin_prefetch(pf->g + o, 1, 2);
        } else {
            __builtin_prefetch(pf->x + o, 0, 3);
            if (pf->g) __builtin_prefetch(pf->g + o, 1, 3);
        }
    }
#else
    (void)pf, (void)from, (void)to, (void)l2;
#endif
}

CE_INLINE void ce_prefetch_bytes(const ce_prefetch *pf, int64_t from, int64_t to) {
    ce_prefetch_span(pf, from, to, 0);
}

/* The same into L2 only: for a whole tile of rows requested at once, which
 * in L1 would evict the tile being computed. */
CE_INLINE void ce_prefetch_bytes_l2(const ce_prefetch *pf, int64_t from, int64_t to) {
    ce_prefetch_span(pf, from, to, 1);
}

/* Which driver a categorical call took (and whether it streamed its
 * gradient), counted (dispatch.c) so that the tests
 * can show a path ran, not only that its results are right: they read
 * ce_path_count through ctypes (tests/test_tile_path.py). The shape alone
 * decides the driver; one relaxed atomic add per call. */
enum {
    CE_PATH_ROW = 0,            /* whole rows, vectorised along each row */
    CE_PATH_TILE_ELEMENTS = 1,  /* tiles of rows, transposed element by element */
    CE_PATH_TILE_REGISTERS = 2, /* tiles of rows, transposed in registers (AVX2, AVX-512) */
    CE_PATH_SPLIT = 3,          /* a few huge rows split along the classes */
    CE_PATH_STREAM = 4,         /* (also) a 16-bit gradient to stream (AVX-512 does; others store) */
    CE_PATH_COUNT = 5
};
void ce_path_hit(int path);
int64_t ce_path_count(int path);

/* Pairwise sum of n doubles in a fixed order (the order depends on n only,
 * never on the thread count). */
static inline double ce_pairwise_sum(const double *v, int64_t n) {
    if (n <= 8) {
        double s = 0.0;
        for (int64_t i = 0; i < n; ++i) s += v[i];
        return s;
    }
    int64_t h = n / 2;
    return ce_pairwise_sum(v, h) + ce_pairwise_sum(v + h, n - h);
}

#endif
