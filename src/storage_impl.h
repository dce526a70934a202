/* storage_impl.h — between the storage type CE_S of the logits and outputs
 * and the compute type CE_T (instantiated per dtype, kernels_for_dtype.h).
 * For float32 and float64 the two are one type: rows are read and written
 * where they lie, and these helpers are not called. For 16-bit storage a row
 * is loaded into a CE_T scratch (exact), computed there in place by the
 * float32 code, and stored rounded to nearest even, or as float32 when the
 * caller's output is float32 (`wide`: out= in the compute dtype). Loading a
 * whole row before anything is stored keeps out=logits (in place) exact. */

/* The address of element `off` of an output of CE_S (or, wide, CE_T). */
CE_INLINE void *CE_FN(out_at)(void *base, int64_t off, int wide) {
    return (char *)base + off * (int64_t)(wide ? sizeof(CE_T) : sizeof(CE_S));
}

#if CE_HALF
/* n elements of stride sx into the contiguous scratch d */
CE_INLINE void CE_FN(load_span)(CE_T *restrict d, const CE_S *x, ptrdiff_t sx, int64_t n) {
    CE_LOAD_SPAN(d, x, sx, n);
}

/* n contiguous values of s, times a, into the output at `off`, stride sd
 * (a: a row's last factor, applied in the same pass as the rounding;
 * flags: CE_STORE_NOTNAN / CE_STORE_STREAM, see ce_half.h) */
CE_INLINE void CE_FN(store_span_scaled)(void *base, int64_t off, ptrdiff_t sd, const CE_T *restrict s,
                                        int64_t n, CE_T a, int flags, int wide) {
    if (wide) {
        CE_T *d = (CE_T *)base + off;
        if (sd == 1) {
#pragma omp simd
            for (int64_t c = 0; c < n; ++c) d[c] = a * s[c];
        } else {
            for (int64_t c = 0; c < n; ++c) d[c * sd] = a * s[c];
        }
    } else {
        CE_STORE_SPAN((CE_S *)base + off, sd, s, n, a, flags);
    }
}

/* n contiguous values of s into the output at `off`, stride sd */
CE_INLINE void CE_FN(store_span)(void *base, int64_t off, ptrdiff_t sd, const CE_T *restrict s,
                                 int64_t n, int wide) {
    CE_FN(store_span_scaled)(base, off, sd, s, n, (CE_T)1, 0, wide);
}

/* one value */
CE_INLINE void CE_FN(store_one)(void *base, int64_t off, CE_T v, int wide) {
    if (wide)
        ((CE_T *)base)[off] = v;
    else
        ((CE_S *)base)[off] = CE_ST(v);
}

/* n copies of v (zeros of ignored rows, NaN of bad ones) */
CE_INLINE void CE_FN(fill_out)(void *base, int64_t off, ptrdiff_t sd, int64_t n, CE_T v, int wide) {
    for (int64_t c = 0; c < n; ++c) CE_FN(store_one)(base, off + c * sd, v, wide);
}
#endif
