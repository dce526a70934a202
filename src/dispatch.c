/* dispatch.c — choose the kernel table for this CPU, once, at import.
 *
 * The choice is the best ISA level that is both compiled in and supported by
 * the CPU (and the OS, which __builtin_cpu_supports checks via XGETBV). The
 * environment variable CE_FAST_ISA=baseline|avx2|avx512 forces a level:
 * ce_fast/_config.py reads it at import and calls ce_set_isa (through the
 * binding's set_isa), which tests also call to run every supported level. */
#include <string.h>
#ifdef _MSC_VER
#include <intrin.h>
#endif

#include "ce_kernels.h"
#include "ce_util.h"

extern const ce_kernel_table ce_table_baseline;
#ifdef CE_HAVE_AVX2
extern const ce_kernel_table ce_table_avx2;
#endif
#ifdef CE_HAVE_AVX512
extern const ce_kernel_table ce_table_avx512;
#endif

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define CE_X86 1
#endif

static int cpu_has_avx2(void) {
#ifdef CE_X86
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#else
    return 0;
#endif
}

static int cpu_has_avx512(void) {
#ifdef CE_X86
    __builtin_cpu_init();
    return cpu_has_avx2() && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
#else
    return 0;
#endif
}

static const ce_kernel_table *table_for(const char *name) {
    if (strcmp(name, "baseline") == 0) return &ce_table_baseline;
#ifdef CE_HAVE_AVX2
    if (strcmp(name, "avx2") == 0 && cpu_has_avx2()) return &ce_table_avx2;
#endif
#ifdef CE_HAVE_AVX512
    if (strcmp(name, "avx512") == 0 && cpu_has_avx512()) return &ce_table_avx512;
#endif
    return NULL;
}

static const ce_kernel_table *best_table(void) {
    const ce_kernel_table *t = NULL;
    if (!t) t = table_for("avx512");
    if (!t) t = table_for("avx2");
    return t ? t : &ce_table_baseline;
}

static const ce_kernel_table *active = NULL;

static const ce_kernel_table *table(void) {
    if (!active) active = best_table();
    return active;
}

int ce_set_isa(const char *name) {
    const ce_kernel_table *t = table_for(name);
    if (!t) return -1;
    active = t;
    return 0;
}

const char *ce_isa(void) { return table()->isa; }

const char *ce_isa_compiled(void) {
    return "baseline"
#ifdef CE_HAVE_AVX2
           ",avx2"
#endif
#ifdef CE_HAVE_AVX512
           ",avx512"
#endif
        ;
}

const char *ce_isa_supported(void) {
    if (table_for("avx512")) return "baseline,avx2,avx512";
    if (table_for("avx2")) return "baseline,avx2";
    return "baseline";
}

int ce_categorical(int dtype, ce_cat_args *a) {
    const ce_kernel_table *t = table();
    const ce_cat_fn f[] = {t->categorical_f32, t->categorical_f64, t->categorical_bf16, t->categorical_f16};
    return f[dtype](a);
}

int ce_binary(int dtype, ce_bin_args *a) {
    const ce_kernel_table *t = table();
    const ce_bin_fn f[] = {t->binary_f32, t->binary_f64, t->binary_bf16, t->binary_f16};
    return f[dtype](a);
}

int ce_softmax_family(int dtype, ce_sm_args *a) {
    const ce_kernel_table *t = table();
    const ce_sm_fn f[] = {t->softmax_family_f32, t->softmax_family_f64, t->softmax_family_bf16,
                          t->softmax_family_f16};
    return f[dtype](a);
}

int ce_divergence(int is_double, ce_div_args *a) {
    const ce_kernel_table *t = table();
    return is_double ? t->divergence_f64(a) : t->divergence_f32(a);
}

int ce_wlse(int is_double, ce_wlse_args *a) {
    const ce_kernel_table *t = table();
    return is_double ? t->wlse_f64(a) : t->wlse_f32(a);
}

int ce_prob(int is_double, ce_prob_args *a) {
    const ce_kernel_table *t = table();
    return is_double ? t->prob_f64(a) : t->prob_f32(a);
}

int ce_logloss(int is_double, ce_logloss_args *a) {
    const ce_kernel_table *t = table();
    return is_double ? t->logloss_f64(a) : t->logloss_f32(a);
}

void ce_vecmath(int is_double, int kind, const void *x, void *y, int64_t n, int num_threads) {
    const ce_kernel_table *t = table();
    const ce_vecmath_fn f = is_double ? t->vecmath_f64 : t->vecmath_f32;
    const size_t size = is_double ? 8 : 4;
    /* contiguous parts, one per thread (the benchmark's exp floor) */
    const int nt = ce_threads_for(num_threads, n, n);
    const int64_t part = (n + nt - 1) / nt;
#pragma omp parallel for num_threads(nt) if (nt > 1) schedule(static)
    for (int i = 0; i < nt; ++i) {
        const int64_t lo = i * part, hi = lo + part < n ? lo + part : n;
        if (lo < hi) f(kind, (const char *)x + lo * size, (char *)y + lo * size, hi - lo);
    }
}

static int64_t path_counts[CE_PATH_COUNT];

void ce_path_hit(int path) {
#if defined(_MSC_VER)
    _InterlockedIncrement64((volatile long long *)&path_counts[path]);
#else
    __atomic_fetch_add(&path_counts[path], 1, __ATOMIC_RELAXED);
#endif
}

int64_t ce_path_count(int path) {
    if (path < 0 || path >= CE_PATH_COUNT) return -1;
#if defined(_MSC_VER)
    return path_counts[path];
#else
    return __atomic_load_n(&path_counts[path], __ATOMIC_RELAXED);
#endif
}

const char *ce_compiler(void) {
#if defined(__clang__)
    return "clang " __clang_version__;
#elif defined(__GNUC__)
    return "gcc " __VERSION__;
#elif defined(_MSC_VER)
    return "msvc";
#else
    return "unknown";
#endif
}

int ce_openmp_version(void) {
#ifdef _OPENMP
    return _OPENMP;
#else
    return 0;
#endif
}

int ce_default_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}
