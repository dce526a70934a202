# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin binding over the C kernels: unpack arrays into pointers, release the
GIL, call, and hand back the C layer's error code. All validation and all
allocation happen in the Python layer (ce_fast/_validation.py), except in
categorical_fast: the common call's checks, done in C so that a tiny call
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
    void ce_vecmath(int is_double, int kind, const void *x, void *y, int64_t n)
    const char *ce_isa()
    const char *ce_isa_compiled()
    const char *ce_isa_supported()
    int ce_set_isa(const char *name)
    const char *ce_compiler()
    int ce_openmp_version()
    int ce_default_threads()

ERR_TARGET_INDEX = CE_ERR_TARGET_INDEX
ERR_NOMEM = CE_ERR_NOMEM
ERR_DOMAIN = CE_ERR_DOMAIN


cdef inline const void *_ptr(object a):
    """Data pointer of an ndarray, or NULL for None."""
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline bint _c_array(object a, int type_num, int ndim):
    """An aligned, C-contiguous, native-byte-order ndarray (exactly, not a
    subclass) of the type."""
    if type(a) is not cnp.ndarray:
        return False
    cdef cnp.ndarray arr = <cnp.ndarray>a
    return (cnp.PyArray_NDIM(arr) == ndim and cnp.PyArray_TYPE(arr) == type_num
            and cnp.PyArray_IS_C_CONTIGUOUS(arr) and cnp.PyArray_ISALIGNED(arr)
            and cnp.PyArray_ISNOTSWAPPED(arr))


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b):
    cdef char *pa = <char *>cnp.PyArray_DATA(a)
    cdef char *pb = <char *>cnp.PyArray_DATA(b)
    return pa < pb + cnp.PyArray_NBYTES(b) and pb < pa + cnp.PyArray_NBYTES(a)


def categorical_fast(x, target, int reduction, int num_threads, double grad_output_scalar,
                     bint want_grad, out):
    """The common call -- 2-d aligned C-contiguous float logits, int64 labels,
    no options -- checked and run in one step. Returns (loss, grad), or None
    when the call is not that case or the kernel reports an error: the
    general path then re-runs it and produces the precise error."""
    cdef int tn
    if type(x) is not cnp.ndarray:
        return None
    tn = cnp.PyArray_TYPE(<cnp.ndarray>x)
    if (tn != cnp.NPY_FLOAT and tn != cnp.NPY_DOUBLE) or not _c_array(x, tn, 2):
        return None
    cdef cnp.ndarray ax = <cnp.ndarray>x
    cdef cnp.npy_intp N = cnp.PyArray_DIM(ax, 0), C = cnp.PyArray_DIM(ax, 1)
    if C == 0 or not _c_array(target, cnp.NPY_INT64, 1):
        return None
    cdef cnp.ndarray at = <cnp.ndarray>target
    if cnp.PyArray_DIM(at, 0) != N:
        return None
    cdef cnp.ndarray g = None
    if want_grad:
        if out is None:
            g = cnp.PyArray_EMPTY(2, cnp.PyArray_DIMS(ax), tn, 0)
        elif out is x:
            if not cnp.PyArray_ISWRITEABLE(ax):
                return None
            g = ax
        else:
            if not _c_array(out, tn, 2):
                return None
            g = <cnp.ndarray>out
            if (cnp.PyArray_DIM(g, 0) != N or cnp.PyArray_DIM(g, 1) != C
                    or not cnp.PyArray_ISWRITEABLE(g) or _overlap(g, ax) or _overlap(g, at)):
                return None
    cdef cnp.ndarray loss_out = None
    if reduction == 0:
        loss_out = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(ax), tn, 0)
    cdef ce_cat_args a
    memset(&a, 0, sizeof(a))
    a.x = cnp.PyArray_DATA(ax)
    a.outer = N
    a.C = C
    a.inner = 1
    a.xs_o, a.xs_c, a.xs_i = C, 1, 1
    a.target = <const int64_t *>cnp.PyArray_DATA(at)
    a.grad_output_scalar = grad_output_scalar
    a.ignore_index = -100
    a.reduction = reduction
    a.loss_out = <void *>_ptr(loss_out)
    a.grad = <void *>_ptr(g)
    a.num_threads = num_threads
    cdef int rc
    cdef float loss32
    with nogil:
        rc = ce_categorical(tn == cnp.NPY_DOUBLE, &a)
    if rc != CE_OK:
        return None
    if reduction == 0:
        return loss_out, g
    if tn == cnp.NPY_DOUBLE:
        return PyArray_Scalar(&a.loss, <void *>cnp.PyArray_DESCR(ax), None), g
    loss32 = <float>a.loss
    return PyArray_Scalar(&loss32, <void *>cnp.PyArray_DESCR(ax), None), g


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


def vecmath(int kind, x, y):
    """Test hook: y = log(x) (kind 0), log1p(x) (kind 1) or exp(x) for x <= 0
    (kind 2) with the vector code of the active ISA level; x, y contiguous,
    same float dtype."""
    cdef int is_double = (<cnp.ndarray>x).descr.type_num == cnp.NPY_DOUBLE
    cdef int64_t n = (<cnp.ndarray>x).size
    cdef const void *xp = _ptr(x)
    cdef void *yp = <void *>_ptr(y)
    with nogil:
        ce_vecmath(is_double, kind, xp, yp, n)


def isa():
    return ce_isa().decode()


def set_isa(str name):
    """Force an ISA level; False if it is unknown or this CPU cannot run it."""
    return ce_set_isa(name.encode()) == 0


def build_facts():
    return {
        "compiler": ce_compiler().decode(),
        "openmp": ce_openmp_version(),
        "default_threads": ce_default_threads(),
        "isa": ce_isa().decode(),
        "isa_compiled": ce_isa_compiled().decode().split(","),
        "isa_supported": ce_isa_supported().decode().split(","),
    }
