# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin binding over the C kernels: unpack arrays into pointers, release the
GIL, call, and hand back the C layer's error code. All validation and all
allocation happen in the Python layer (ce_fast/_validation.py), except in
the *_fast functions: the common call's checks, done in C so that a tiny call
costs little more than the kernel."""

from libc.stdint cimport int64_t
from libc.string cimport memset
cimport numpy as cnp

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # (commented out in NumPy's pxd) a NumPy scalar of the dtype from C data
    object PyArray_Scalar(void *data, void *descr, object base)

cdef extern from "ce_kernels.h" nogil:
    int CE_OK, CE_ERR_TARGET_INDEX, CE_ERR_NOMEM
    ctypedef struct ce_cat_args:
        const void *x
        int64_t outer, C, inner
        int64_t xs_o, xs_c, xs_i
        const int64_t *target
        const void *q
        int64_t qs_o, qs_c, qs_i
        const void *weight
        const void *sample_weight
        const void *grad_output
        double grad_output_scalar
        int64_t ignore_index
        double label_smoothing, z_loss, softcap
        int reduction
        void *loss_out
        void *grad
        int num_threads
        double loss
        int64_t err_pos, err_val
    int ce_categorical(int is_double, ce_cat_args *a)
    int CE_ERR_DOMAIN
    ctypedef struct ce_bin_args:
        int mode
        int64_t rows, cols
        const void *x
        int64_t xs_r, xs_c
        const void *t
        int64_t ts_r, ts_c
        const void *w
        int64_t ws_r, ws_c
        const void *pw
        int64_t pws_r, pws_c
        const void *go
        int64_t gos_r, gos_c
        double grad_output_scalar
        double eps
        int reduction
        void *loss_out
        void *grad
        int num_threads
        double loss
        int err_arg
        int64_t err_pos
        double err_fval
    int ce_binary(int is_double, ce_bin_args *a)
    ctypedef struct ce_sm_args:
        int op
        const void *x
        int64_t outer, C, inner
        int64_t xs_o, xs_c, xs_i
        void *out
        int num_threads
        int64_t err_pos
        double err_fval
    int ce_softmax_family(int is_double, ce_sm_args *a)
    void ce_vecmath(int is_double, int kind, const void *x, void *y, int64_t n, int num_threads)
    const char *ce_isa()
    const char *ce_isa_compiled()
    const char *ce_isa_supported()
    int ce_set_isa(const char *name)
    const char *ce_compiler()
    int ce_openmp_version()
    int ce_default_threads()

cdef extern from "ce_util.h" nogil:
    int ce_threads_for(int requested, int64_t blocks, int64_t elements)

cdef extern from "ce_fork.h" nogil:
    void ce_fork_init()
    int ce_fork_serial()
    int ce_fork_runtime_safe()

ce_fork_init()

ERR_TARGET_INDEX = CE_ERR_TARGET_INDEX
ERR_NOMEM = CE_ERR_NOMEM
ERR_DOMAIN = CE_ERR_DOMAIN


cdef inline const void *_ptr(object a):
    """Data pointer of an ndarray, or NULL for None."""
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


# ---- the fast paths: the common call of each family, checked in C ------
# Each takes its arguments as the user passed them and returns None (the
# Python layer then takes the general path, which validates, converts and
# raises) unless every array is exactly an aligned, C-contiguous, native
# float32/float64 ndarray that needs no conversion.

cdef inline bint _c_array(object a, int type_num, int ndim):
    """An aligned, C-contiguous, native-byte-order ndarray (exactly, not a
    subclass) of the type; any ndim when ndim < 0."""
    if type(a) is not cnp.ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return ((ndim < 0 or cnp.PyArray_NDIM(arr) == ndim) and cnp.PyArray_TYPE(arr) == type_num
            and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISALIGNED(arr)
            and cnp.PyArray_ISNOTSWAPPED(arr))


cdef inline int _float_type(object x):
    """x's type number if it is a float32/float64 ndarray, else -1."""
    if type(x) is not cnp.ndarray:
        return -1
    cdef int tn = cnp.PyArray_TYPE(<cnp.ndarray>x)
    return tn if tn == cnp.NPY_FLOAT or tn == cnp.NPY_DOUBLE else -1


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b):
    cdef char *pa = <char *>cnp.PyArray_DATA(a)
    cdef char *pb = <char *>cnp.PyArray_DATA(b)
    return pa < pb + cnp.PyArray_NBYTES(b) and pb < pa + cnp.PyArray_NBYTES(a)


cdef object _fast_out(object out, cnp.ndarray x, cnp.ndarray other):
    """The result buffer of a fast call: a new array like x (out None), x
    itself (out is x and writable: in place), or out when it is a writable
    fast-path array of x's shape and dtype overlapping neither x nor `other`
    (which may be None); None to decline."""
    if out is None:
        return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x), 0)
    if out is x:
        return x if cnp.PyArray_ISWRITEABLE(x) else None
    if not _c_array(out, cnp.PyArray_TYPE(x), cnp.PyArray_NDIM(x)):
        return None
    cdef cnp.ndarray g = <cnp.ndarray>out
    if (not cnp.PyArray_SAMESHAPE(g, x) or not cnp.PyArray_ISWRITEABLE(g) or _overlap(g, x)
            or (other is not None and _overlap(g, <cnp.ndarray>other))):
        return None
    return g


cdef inline double _in_dtype(double v, int tn):
    """A scalar grad_output as the general path sees it: converted to the
    compute dtype first (rounded to float32 for float32 logits)."""
    return <double><float>v if tn == cnp.NPY_FLOAT else v


cdef object _scalar(double v, cnp.ndarray like):
    """A NumPy scalar of like's dtype."""
    cdef float v32 = <float>v
    if cnp.PyArray_TYPE(like) == cnp.NPY_DOUBLE:
        return PyArray_Scalar(&v, <void *>cnp.PyArray_DESCR(like), None)
    return PyArray_Scalar(&v32, <void *>cnp.PyArray_DESCR(like), None)


def categorical_fast(x, target, int reduction, int num_threads, double grad_output_scalar,
                     bint want_grad, out):
    """cross_entropy(_grad) on 2-d logits and int64 labels with no options.
    Returns (loss, grad) or None."""
    cdef int tn = _float_type(x)
    if tn < 0 or not _c_array(x, tn, 2) or not _c_array(target, cnp.NPY_INT64, 1):
        return None
    cdef cnp.ndarray ax = <cnp.ndarray>x, at = <cnp.ndarray>target
    cdef cnp.npy_intp N = cnp.PyArray_DIM(ax, 0), C = cnp.PyArray_DIM(ax, 1)
    if C == 0 or cnp.PyArray_DIM(at, 0) != N:
        return None
    g = _fast_out(out, ax, at) if want_grad else None
    if want_grad and g is None:
        return None
    loss_out = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(ax), tn, 0) if reduction == 0 else None
    cdef ce_cat_args a
    memset(&a, 0, sizeof(a))
    a.x = cnp.PyArray_DATA(ax)
    a.outer = N
    a.C = C
    a.inner = 1
    a.xs_o, a.xs_c, a.xs_i = C, 1, 1
    a.target = <const int64_t *>cnp.PyArray_DATA(at)
    a.grad_output_scalar = _in_dtype(grad_output_scalar, tn)
    a.ignore_index = -100
    a.reduction = reduction
    a.loss_out = <void *>_ptr(loss_out)
    a.grad = <void *>_ptr(g)
    a.num_threads = num_threads
    cdef int rc
    with nogil:
        rc = ce_categorical(tn == cnp.NPY_DOUBLE, &a)
    if rc != CE_OK:
        return None
    return (loss_out if reduction == 0 else _scalar(a.loss, ax)), g


def softmax_family_fast(int op, x, int num_threads, out):
    """A softmax-family op over the last axis of a non-empty array (op as in
    softmax_family; out only for 1 log_softmax and 2 softmax). Returns the
    result array (reduced over the last axis for ops 0, 3, 4) or None."""
    cdef int tn = _float_type(x)
    if tn < 0 or not _c_array(x, tn, -1):
        return None
    cdef cnp.ndarray ax = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(ax)
    if nd == 0 or cnp.PyArray_SIZE(ax) == 0:
        return None
    cdef cnp.npy_intp C = cnp.PyArray_DIM(ax, nd - 1)
    if op == 1 or op == 2:
        res = _fast_out(out, ax, None)
        if res is None:
            return None
    else:
        res = cnp.PyArray_EMPTY(nd - 1, cnp.PyArray_DIMS(ax), tn, 0)
    cdef ce_sm_args a
    memset(&a, 0, sizeof(a))
    a.op = op
    a.x = cnp.PyArray_DATA(ax)
    a.outer = cnp.PyArray_SIZE(ax) // C
    a.C = C
    a.inner = 1
    a.xs_o, a.xs_c, a.xs_i = C, 1, 1
    a.out = <void *>_ptr(res)
    a.num_threads = num_threads
    cdef int rc
    with nogil:
        rc = ce_softmax_family(tn == cnp.NPY_DOUBLE, &a)
    return res if rc == CE_OK else None


def binary_logits_fast(x, target, int reduction, int num_threads, double grad_output_scalar,
                       bint want_loss, bint want_grad, out):
    """binary_cross_entropy_with_logits(_grad) on a non-empty array and a
    target of the same shape and dtype, no weights. Returns (loss, grad)
    (loss None when not wanted) or None."""
    cdef int tn = _float_type(x)
    if tn < 0 or not _c_array(x, tn, -1) or not _c_array(target, tn, -1):
        return None
    cdef cnp.ndarray ax = <cnp.ndarray>x, at = <cnp.ndarray>target
    cdef cnp.npy_intp n = cnp.PyArray_SIZE(ax)
    if n == 0 or not cnp.PyArray_SAMESHAPE(ax, at):
        return None
    g = _fast_out(out, ax, at) if want_grad else None
    if want_grad and g is None:
        return None
    loss_out = None
    if want_loss and reduction == 0:
        loss_out = cnp.PyArray_EMPTY(cnp.PyArray_NDIM(ax), cnp.PyArray_DIMS(ax), tn, 0)
    cdef ce_bin_args a
    memset(&a, 0, sizeof(a))
    a.rows = 1
    a.cols = n
    a.x = cnp.PyArray_DATA(ax)
    a.xs_r, a.xs_c = 1, 1
    a.t = cnp.PyArray_DATA(at)
    a.ts_r, a.ts_c = 1, 1
    a.grad_output_scalar = _in_dtype(grad_output_scalar, tn)
    a.reduction = reduction
    if not want_loss:
        # as the general path: "none" without a loss buffer (no loss at all),
        # the mean's 1/N folded into the scale by the same double division
        a.reduction = 0
        if reduction == 2:
            a.grad_output_scalar = a.grad_output_scalar / <double>n
    a.loss_out = <void *>_ptr(loss_out)
    a.grad = <void *>_ptr(g)
    a.num_threads = num_threads
    cdef int rc
    with nogil:
        rc = ce_binary(tn == cnp.NPY_DOUBLE, &a)
    if rc != CE_OK:
        return None
    if not want_loss:
        return None, g
    return (loss_out if reduction == 0 else _scalar(a.loss, ax)), g


def categorical(x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, tuple xs,
                target, q, tuple qs, weight, sample_weight, grad_output,
                double grad_output_scalar, int64_t ignore_index,
                double label_smoothing, double z_loss, double softcap,
                int reduction, loss_out, grad, int num_threads):
    """Run the categorical kernel. Returns (code, loss, err_pos, err_val)."""
    cdef ce_cat_args a
    cdef int rc
    cdef int is_double = (<cnp.ndarray>x).descr.type_num == cnp.NPY_DOUBLE
    a.x = _ptr(x)
    a.outer = outer
    a.C = C
    a.inner = inner
    a.xs_o, a.xs_c, a.xs_i = xs
    a.target = <const int64_t *>_ptr(target)
    a.q = _ptr(q)
    a.qs_o, a.qs_c, a.qs_i = qs
    a.weight = _ptr(weight)
    a.sample_weight = _ptr(sample_weight)
    a.grad_output = _ptr(grad_output)
    a.grad_output_scalar = grad_output_scalar
    a.ignore_index = ignore_index
    a.label_smoothing = label_smoothing
    a.z_loss = z_loss
    a.softcap = softcap
    a.reduction = reduction
    a.loss_out = <void *>_ptr(loss_out)
    a.grad = <void *>_ptr(grad)
    a.num_threads = num_threads
    a.loss = 0.0
    a.err_pos = 0
    a.err_val = 0
    with nogil:
        rc = ce_categorical(is_double, &a)
    return rc, a.loss, a.err_pos, a.err_val


def binary(int mode, x, Py_ssize_t rows, Py_ssize_t cols, tuple xs, t, tuple ts,
           w, tuple ws, pw, tuple pws, go, tuple gos, double grad_output_scalar,
           double eps, int reduction, loss_out, grad, int num_threads):
    """Run the binary cross-entropy kernel (mode 0: logits, 1: probabilities).
    Returns (code, loss, err_arg, err_pos, err_val)."""
    cdef ce_bin_args a
    cdef int rc
    cdef int is_double = (<cnp.ndarray>x).descr.type_num == cnp.NPY_DOUBLE
    a.mode = mode
    a.rows = rows
    a.cols = cols
    a.x = _ptr(x)
    a.xs_r, a.xs_c = xs
    a.t = _ptr(t)
    a.ts_r, a.ts_c = ts
    a.w = _ptr(w)
    a.ws_r, a.ws_c = ws
    a.pw = _ptr(pw)
    a.pws_r, a.pws_c = pws
    a.go = _ptr(go)
    a.gos_r, a.gos_c = gos
    a.grad_output_scalar = grad_output_scalar
    a.eps = eps
    a.reduction = reduction
    a.loss_out = <void *>_ptr(loss_out)
    a.grad = <void *>_ptr(grad)
    a.num_threads = num_threads
    a.loss = 0.0
    a.err_arg = 0
    a.err_pos = 0
    a.err_fval = 0.0
    with nogil:
        rc = ce_binary(is_double, &a)
    return rc, a.loss, a.err_arg, a.err_pos, a.err_fval


def softmax_family(int op, x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                   tuple xs, out, int num_threads):
    """Run a softmax-family kernel (op: 0 logsumexp, 1 log_softmax, 2 softmax,
    3 entropy, 4 softmax_entropy). Returns (code, err_pos, err_val)."""
    cdef ce_sm_args a
    cdef int rc
    cdef int is_double = (<cnp.ndarray>x).descr.type_num == cnp.NPY_DOUBLE
    a.op = op
    a.x = _ptr(x)
    a.outer = outer
    a.C = C
    a.inner = inner
    a.xs_o, a.xs_c, a.xs_i = xs
    a.out = <void *>_ptr(out)
    a.num_threads = num_threads
    a.err_pos = 0
    a.err_fval = 0.0
    with nogil:
        rc = ce_softmax_family(is_double, &a)
    return rc, a.err_pos, a.err_fval


def vecmath(int kind, x, y, int num_threads=1):
    """Test hook: y = log(x) (kind 0), log1p(x) (kind 1) or exp(x) for x <= 0
    (kind 2) with the vector code of the active ISA level; x, y contiguous,
    same float dtype. num_threads > 1 splits the work (the benchmark's exp
    floor; one thread below the kernels' parallel threshold)."""
    cdef int is_double = (<cnp.ndarray>x).descr.type_num == cnp.NPY_DOUBLE
    cdef int64_t n = (<cnp.ndarray>x).size
    cdef const void *xp = _ptr(x)
    cdef void *yp = <void *>_ptr(y)
    with nogil:
        ce_vecmath(is_double, kind, xp, yp, n, num_threads)


def isa():
    return ce_isa().decode()


def set_isa(str name):
    """Force an ISA level; False if it is unknown or this CPU cannot run it."""
    return ce_set_isa(name.encode()) == 0


def threads_for(int requested, int64_t blocks, int64_t elements):
    """The thread count a kernel call with these many work blocks and
    elements would use on this thread (the rule of ce_util.h)."""
    return ce_threads_for(requested, blocks, elements)


def serial_after_fork():
    """True on a thread whose OpenMP pool a fork left stale: its calls run on
    that thread alone (ce_fork.c)."""
    return ce_fork_serial() != 0


def build_facts():
    return {
        "compiler": ce_compiler().decode(),
        "openmp": ce_openmp_version(),
        "default_threads": ce_default_threads(),
        "fork_safe_runtime": ce_fork_runtime_safe() != 0,
        "isa": ce_isa().decode(),
        "isa_compiled": ce_isa_compiled().decode().split(","),
        "isa_supported": ce_isa_supported().decode().split(","),
    }
