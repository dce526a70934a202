# cython: language_level=3, boundscheck=False, wraparound=False
"""Thin binding over the C kernels: unpack arrays into pointers, release the
GIL, call, and hand back the C layer's status. All validation and all
allocation happen in the Python layer (the parsers of ce_fast._validation),
except in the *_fast functions: the common call's checks, done in C so that
a tiny call costs little more than the kernel. The C interface and its enums
are declared in _core.pxd."""

from libc.stdint cimport int64_t
from libc.string cimport memset
cimport numpy as cnp

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # (commented out in NumPy's pxd) a NumPy scalar of the dtype from C data
    object PyArray_Scalar(void *data, void *descr, object base)

# after fork(), a stale OpenMP pool is never waited on (ce_fork.c)
ce_fork_init()


cdef inline const void *_ptr(object a):
    """Data pointer of an ndarray, or NULL for None."""
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


# ---- the fast paths: the common call of each family, checked in C ------
# Each takes its arguments as the user passed them and returns None (the
# Python layer then takes the general path, which validates, converts and
# raises) unless every array is exactly an aligned, C-contiguous, native
# float32/float64 ndarray that needs no conversion. Each call that one of
# them completes is counted, so that tests can prove which path ran.

cdef enum:
    FAST_CATEGORICAL, FAST_SOFTMAX, FAST_BINARY, N_FAST

cdef long long _fast_hits[N_FAST]
cdef bint _fast_enabled = True
_FAST_NAMES = ("categorical", "softmax_family", "binary_logits")


def fast_path_hits():
    """How many calls each fast path has completed in this process (a test
    hook: a fast path that stops being taken shows as a count that stays)."""
    return {name: _fast_hits[i] for i, name in enumerate(_FAST_NAMES)}


def set_fast_paths(bint enabled):
    """Switch every fast path on or off (a test hook: with them off, each
    call takes the general path, which tests compare bit for bit). Returns
    the previous setting."""
    global _fast_enabled
    prev = _fast_enabled
    _fast_enabled = enabled
    return prev


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


cdef int _bf16_type = -1  # ml_dtypes.bfloat16's type number, once registered


def register_bfloat16(dt):
    """Tell the fast paths bfloat16's NumPy dtype (ml_dtypes.bfloat16)."""
    global _bf16_type
    _bf16_type = (<cnp.dtype?>dt).type_num


cdef inline int _logits_type(object x):
    """x's type number if it is a float32/float64/float16/bfloat16 ndarray
    (the dtypes with categorical kernels), else -1."""
    if type(x) is not cnp.ndarray:
        return -1
    cdef int tn = cnp.PyArray_TYPE(<cnp.ndarray>x)
    if tn == cnp.NPY_FLOAT or tn == cnp.NPY_DOUBLE or tn == cnp.NPY_FLOAT16 or tn == _bf16_type:
        return tn
    return -1


cdef inline int _dtype_code(object x):
    """The ce_dtype of a general-path operand: float32, float64, float16, or
    any other 2-byte type, which the Python layer passes only for bfloat16
    (ml_dtypes.bfloat16, or the tagged uint16 of a DLPack import)."""
    cdef int tn = (<cnp.ndarray>x).descr.type_num
    if tn == cnp.NPY_DOUBLE:
        return CE_DT_F64
    if tn == cnp.NPY_FLOAT16:
        return CE_DT_F16
    if cnp.PyArray_ITEMSIZE(<cnp.ndarray>x) == 2:
        return CE_DT_BF16
    return CE_DT_F32


cdef inline bint _wide(object x, object out):
    """16-bit x with a float32 output (out= in the compute dtype)."""
    return (out is not None and cnp.PyArray_ITEMSIZE(<cnp.ndarray>x) == 2
            and cnp.PyArray_ITEMSIZE(<cnp.ndarray>out) == 4)


cdef inline bint _overlap(cnp.ndarray a, cnp.ndarray b):
    cdef char *pa = <char *>cnp.PyArray_DATA(a)
    cdef char *pb = <char *>cnp.PyArray_DATA(b)
    return pa < pb + cnp.PyArray_NBYTES(b) and pb < pa + cnp.PyArray_NBYTES(a)


cdef object _fast_out(object out, cnp.ndarray x, cnp.ndarray other):
    """The result buffer of a fast call: a new array like x (out None), x
    itself (out is x and writable: in place), or out when it is a writable
    fast-path array of x's shape and dtype that does not overlap x; in every
    case one that does not overlap `other` (the target, or None). None
    declines: the general path then snapshots what overlaps."""
    if out is None:
        return cnp.PyArray_EMPTY(cnp.PyArray_NDIM(x), cnp.PyArray_DIMS(x), cnp.PyArray_TYPE(x), 0)
    if other is not None and _c_array(out, cnp.PyArray_TYPE(x), -1) and _overlap(<cnp.ndarray>out, other):
        return None
    if out is x:
        return x if cnp.PyArray_ISWRITEABLE(x) else None
    if not _c_array(out, cnp.PyArray_TYPE(x), cnp.PyArray_NDIM(x)):
        return None
    cdef cnp.ndarray g = <cnp.ndarray>out
    if not cnp.PyArray_SAMESHAPE(g, x) or not cnp.PyArray_ISWRITEABLE(g) or _overlap(g, x):
        return None
    return g


cdef inline double _in_dtype(double v, int tn):
    """A scalar grad_output as the general path sees it: converted to the
    compute dtype first (rounded to float32 for float32 logits)."""
    return <double><float>v if tn == cnp.NPY_FLOAT else v


cdef cnp.dtype _F64 = cnp.PyArray_DescrFromType(cnp.NPY_DOUBLE)
cdef cnp.dtype _F32 = cnp.PyArray_DescrFromType(cnp.NPY_FLOAT)


cdef object _scalar(double v, bint f64):
    """A NumPy float64 (f64) or float32 scalar."""
    cdef float v32 = <float>v
    if f64:
        return PyArray_Scalar(&v, <void *>_F64, None)
    return PyArray_Scalar(&v32, <void *>_F32, None)


def categorical_fast(x, target, ce_reduction reduction, int num_threads, double grad_output_scalar,
                     bint want_grad, out):
    """cross_entropy(_grad) on 2-d logits and int64 labels with no options.
    Returns (loss, grad) or None. 16-bit logits give a float32 loss and a
    gradient in their dtype (an out= of another dtype declines)."""
    cdef int tn = _logits_type(x)
    if not _fast_enabled or tn < 0 or not _c_array(x, tn, 2) or not _c_array(target, cnp.NPY_INT64, 1):
        return None
    cdef cnp.ndarray ax = <cnp.ndarray>x, at = <cnp.ndarray>target
    cdef cnp.npy_intp N = cnp.PyArray_DIM(ax, 0), C = cnp.PyArray_DIM(ax, 1)
    if C == 0 or cnp.PyArray_DIM(at, 0) != N:
        return None
    g = _fast_out(out, ax, at) if want_grad else None
    if want_grad and g is None:
        return None
    cdef int loss_tn = cnp.NPY_DOUBLE if tn == cnp.NPY_DOUBLE else cnp.NPY_FLOAT
    loss_out = cnp.PyArray_EMPTY(1, cnp.PyArray_DIMS(ax), loss_tn, 0) if reduction == CE_RED_NONE else None
    cdef ce_cat_args a
    memset(&a, 0, sizeof(a))
    a.x = cnp.PyArray_DATA(ax)
    a.outer = N
    a.C = C
    a.inner = 1
    a.xs_o, a.xs_c, a.xs_i = C, 1, 1
    a.target = <const int64_t *>cnp.PyArray_DATA(at)
    a.grad_output_scalar = _in_dtype(grad_output_scalar, loss_tn)
    a.ignore_index = -100
    a.reduction = reduction
    a.loss_out = <void *>_ptr(loss_out)
    a.grad = <void *>_ptr(g)
    a.num_threads = num_threads
    cdef int rc, dtype = _dtype_code(ax)
    with nogil:
        rc = ce_categorical(dtype, &a)
    if rc != CE_OK:
        return None
    _fast_hits[FAST_CATEGORICAL] += 1
    return (loss_out if reduction == CE_RED_NONE else _scalar(a.loss, loss_tn == cnp.NPY_DOUBLE)), g


def softmax_family_fast(ce_sm_op op, x, int num_threads, out):
    """A softmax-family op over the last axis of a non-empty array (out only
    for log_softmax and softmax). Returns the result array (reduced over the
    last axis for the other ops, in float32 for 16-bit x) or None."""
    cdef int tn = _logits_type(x)
    if not _fast_enabled or tn < 0 or not _c_array(x, tn, -1):
        return None
    cdef cnp.ndarray ax = <cnp.ndarray>x
    cdef int nd = cnp.PyArray_NDIM(ax)
    if nd == 0 or cnp.PyArray_SIZE(ax) == 0:
        return None
    cdef cnp.npy_intp C = cnp.PyArray_DIM(ax, nd - 1)
    if op == CE_SM_LOG_SOFTMAX or op == CE_SM_SOFTMAX:
        res = _fast_out(out, ax, None)
        if res is None:
            return None
    else:
        res = cnp.PyArray_EMPTY(nd - 1, cnp.PyArray_DIMS(ax), cnp.NPY_DOUBLE if tn == cnp.NPY_DOUBLE else cnp.NPY_FLOAT, 0)
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
    cdef int rc, dtype = _dtype_code(ax)
    with nogil:
        rc = ce_softmax_family(dtype, &a)
    if rc != CE_OK:
        return None
    _fast_hits[FAST_SOFTMAX] += 1
    return res


def binary_logits_fast(x, target, ce_reduction reduction, int num_threads, double grad_output_scalar,
                       bint want_loss, bint want_grad, out):
    """binary_cross_entropy_with_logits(_grad) on a non-empty array and a
    target of the same shape and dtype, no weights. Returns (loss, grad)
    (loss None when not wanted) or None."""
    cdef int tn = _float_type(x)
    if not _fast_enabled or tn < 0 or not _c_array(x, tn, -1) or not _c_array(target, tn, -1):
        return None
    cdef cnp.ndarray ax = <cnp.ndarray>x, at = <cnp.ndarray>target
    cdef cnp.npy_intp n = cnp.PyArray_SIZE(ax)
    if n == 0 or not cnp.PyArray_SAMESHAPE(ax, at):
        return None
    g = _fast_out(out, ax, at) if want_grad else None
    if want_grad and g is None:
        return None
    loss_out = None
    if want_loss and reduction == CE_RED_NONE:
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
        a.reduction = CE_RED_NONE
        if reduction == CE_RED_MEAN:
            a.grad_output_scalar = a.grad_output_scalar / <double>n
    a.loss_out = <void *>_ptr(loss_out)
    a.grad = <void *>_ptr(g)
    a.num_threads = num_threads
    cdef int rc
    with nogil:
        rc = ce_binary(tn == cnp.NPY_DOUBLE, &a)
    if rc != CE_OK:
        return None
    _fast_hits[FAST_BINARY] += 1
    if not want_loss:
        return None, g
    return (loss_out if reduction == CE_RED_NONE else _scalar(a.loss, tn == cnp.NPY_DOUBLE)), g


# ---- the general paths: validated arrays in, the kernel's status out ----
# Every argument is keyword-only and every struct is zeroed before it is
# filled, so a field the caller does not name is 0 / NULL.

def categorical(*, x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, tuple xs,
                target=None, q=None, tuple qs=(0, 0, 0), weight=None, sample_weight=None,
                grad_output=None, double grad_output_scalar=1.0, int64_t ignore_index=-100,
                double label_smoothing=0.0, double z_loss=0.0, double softcap=0.0,
                ce_reduction reduction=CE_RED_MEAN, loss_out=None, grad=None,
                int num_threads=0, lse_out=None, lse=None):
    """Run the categorical kernel. Returns (status, loss, err_pos, err_val).
    lse_out / lse: float64 [N] (see ce_cat_args). 16-bit x: every other
    floating operand is float32, grad the x's type or float32."""
    cdef ce_cat_args a
    memset(&a, 0, sizeof(a))
    cdef int dtype = _dtype_code(x)
    a.x = _ptr(x)
    a.outer, a.C, a.inner = outer, C, inner
    a.xs_o, a.xs_c, a.xs_i = xs
    a.target = <const int64_t *>_ptr(target)
    a.q = _ptr(q)
    a.qs_o, a.qs_c, a.qs_i = qs
    a.weight = _ptr(weight)
    a.sample_weight = _ptr(sample_weight)
    a.grad_output = _ptr(grad_output)
    a.grad_output_scalar = grad_output_scalar
    a.ignore_index = ignore_index
    a.label_smoothing, a.z_loss, a.softcap = label_smoothing, z_loss, softcap
    a.reduction = reduction
    a.loss_out = <void *>_ptr(loss_out)
    a.grad = <void *>_ptr(grad)
    a.out_wide = _wide(x, grad)
    a.num_threads = num_threads
    a.lse_out = <double *>_ptr(lse_out)
    a.lse = <const double *>_ptr(lse)
    cdef int rc
    with nogil:
        rc = ce_categorical(dtype, &a)
    return ce_status(rc), a.loss, a.err_pos, a.err_val


def binary(*, ce_bin_mode mode, x, Py_ssize_t rows, Py_ssize_t cols, tuple xs, t, tuple ts,
           w=None, tuple ws=(0, 0), pw=None, tuple pws=(0, 0), go=None, tuple gos=(0, 0),
           double grad_output_scalar=1.0, double eps=0.0, ce_reduction reduction=CE_RED_MEAN,
           loss_out=None, grad=None, int num_threads=0):
    """Run the binary cross-entropy kernel. Returns (status, loss, err_arg,
    err_pos, err_val). 16-bit x: every other floating operand is float32,
    grad the x's type or float32."""
    cdef ce_bin_args a
    memset(&a, 0, sizeof(a))
    cdef int dtype = _dtype_code(x)
    a.mode = mode
    a.rows, a.cols = rows, cols
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
    a.out_wide = _wide(x, grad)
    a.num_threads = num_threads
    cdef int rc
    with nogil:
        rc = ce_binary(dtype, &a)
    return ce_status(rc), a.loss, a.err_arg, a.err_pos, a.err_fval


def softmax_family(*, ce_sm_op op, x, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner,
                   tuple xs, out, int num_threads=0):
    """Run a softmax-family kernel. Returns (status, err_pos, err_val).
    16-bit x: row results are float32, log_softmax / softmax out the x's
    type or float32."""
    cdef ce_sm_args a
    memset(&a, 0, sizeof(a))
    cdef int dtype = _dtype_code(x)
    a.op = op
    a.x = _ptr(x)
    a.outer, a.C, a.inner = outer, C, inner
    a.xs_o, a.xs_c, a.xs_i = xs
    a.out = <void *>_ptr(out)
    a.out_wide = (op == CE_SM_LOG_SOFTMAX or op == CE_SM_SOFTMAX) and _wide(x, out)
    a.num_threads = num_threads
    cdef int rc
    with nogil:
        rc = ce_softmax_family(dtype, &a)
    return ce_status(rc), a.err_pos, a.err_fval


def divergence(*, ce_div_kind kind, ce_teacher_kind teacher_is, x, Py_ssize_t outer, Py_ssize_t C,
               Py_ssize_t inner, tuple xs, t, tuple ts, double inv_temperature=1.0, double beta=0.5,
               target=None, int64_t ignore_index=0, sample_weight=None, grad_output=None,
               double grad_output_scalar=1.0, ce_reduction reduction=CE_RED_MEAN, loss_out=None,
               grad=None, int num_threads=0):
    """Run the divergence kernel. Returns (status, loss)."""
    cdef ce_div_args a
    memset(&a, 0, sizeof(a))
    cdef int is_double = (<cnp.ndarray>x).descr.type_num == cnp.NPY_DOUBLE
    a.kind = kind
    a.teacher_is = teacher_is
    a.x = _ptr(x)
    a.outer, a.C, a.inner = outer, C, inner
    a.xs_o, a.xs_c, a.xs_i = xs
    a.t = _ptr(t)
    a.ts_o, a.ts_c, a.ts_i = ts
    a.inv_temperature = inv_temperature
    a.beta = beta
    a.target = <const int64_t *>_ptr(target)
    a.ignore_index = ignore_index
    a.sample_weight = _ptr(sample_weight)
    a.grad_output = _ptr(grad_output)
    a.grad_output_scalar = grad_output_scalar
    a.reduction = reduction
    a.loss_out = <void *>_ptr(loss_out)
    a.grad = <void *>_ptr(grad)
    a.num_threads = num_threads
    cdef int rc
    with nogil:
        rc = ce_divergence(is_double, &a)
    return ce_status(rc), a.loss
def weighted_logsumexp(*, a, b, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, tuple as_,
                       tuple bs, out, sign=None, int num_threads=0):
    """Run the b-weighted log-sum-exp kernel (sign: the sign output, or
    None). Returns the status."""
    cdef ce_wlse_args w
    memset(&w, 0, sizeof(w))
    cdef int is_double = (<cnp.ndarray>a).descr.type_num == cnp.NPY_DOUBLE
    w.a = _ptr(a)
    w.outer, w.C, w.inner = outer, C, inner
    w.as_o, w.as_c, w.as_i = as_
    w.b = _ptr(b)
    w.bs_o, w.bs_c, w.bs_i = bs
    w.out = <void *>_ptr(out)
    w.sign = <void *>_ptr(sign)
    w.num_threads = num_threads
    cdef int rc
    with nogil:
        rc = ce_wlse(is_double, &w)
    return ce_status(rc)


def prob_divergence(*, p, Py_ssize_t outer, Py_ssize_t C, Py_ssize_t inner, tuple ps, q=None,
                    tuple qs=(0, 0, 0), bint omit_nan=False, out, int num_threads=0):
    """Run the entropy (q None) / KL kernel of normalised probability
    vectors. Returns the status."""
    cdef ce_prob_args a
    memset(&a, 0, sizeof(a))
    cdef int is_double = (<cnp.ndarray>p).descr.type_num == cnp.NPY_DOUBLE
    a.p = _ptr(p)
    a.outer, a.C, a.inner = outer, C, inner
    a.ps_o, a.ps_c, a.ps_i = ps
    a.q = _ptr(q)
    a.qs_o, a.qs_c, a.qs_i = qs
    a.omit_nan = omit_nan
    a.out = <void *>_ptr(out)
    a.num_threads = num_threads
    cdef int rc
    with nogil:
        rc = ce_prob(is_double, &a)
    return ce_status(rc)


def log_loss(*, p, Py_ssize_t N, Py_ssize_t C, tuple ps, label, w=None, double eps,
             double sum_tol, int num_threads=0):
    """Run the log-loss kernel (label: int64 class indices, w: float64
    sample weights or None). Returns (status, loss_sum, weight_sum,
    nonfinite, out_of_range, not_normalised, err_pos)."""
    cdef ce_logloss_args a
    memset(&a, 0, sizeof(a))
    cdef int is_double = (<cnp.ndarray>p).descr.type_num == cnp.NPY_DOUBLE
    a.p = _ptr(p)
    a.N, a.C = N, C
    a.ps_r, a.ps_c = ps
    a.label = <const int64_t *>_ptr(label)
    a.w = <const double *>_ptr(w)
    a.eps = eps
    a.sum_tol = sum_tol
    a.num_threads = num_threads
    cdef int rc
    with nogil:
        rc = ce_logloss(is_double, &a)
    return (ce_status(rc), a.loss_sum, a.weight_sum, bool(a.nonfinite), bool(a.out_of_range),
            bool(a.not_normalised), a.err_pos)


def vecmath(kind, x, y, num_threads=1):
    """Test hook (and the benchmark's exp floor): y = log(x), log1p(x) or
    exp(x) for x <= 0 (kind: a ce_vm_kind) with the vector code of the
    active ISA level, split over num_threads OpenMP threads. x and y are
    C-contiguous, aligned, native float32 or float64 ndarrays of one dtype
    and size; y is writable."""
    if kind not in (CE_VM_LOG, CE_VM_LOG1P, CE_VM_EXP):
        raise ValueError(f"vecmath: kind must be a ce_vm_kind, got {kind!r}")
    cdef int k = kind
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
    cdef int tn = _float_type(x)
    if tn < 0 or not _c_array(x, tn, -1) or not _c_array(y, tn, -1):
        raise TypeError("vecmath: x and y must be aligned, C-contiguous, native float32 or "
                        "float64 ndarrays of one dtype")
    if cnp.PyArray_SIZE(<cnp.ndarray>x) != cnp.PyArray_SIZE(<cnp.ndarray>y):
        raise ValueError("vecmath: x and y must have the same size")
    if not cnp.PyArray_ISWRITEABLE(<cnp.ndarray>y):
        raise ValueError("vecmath: y must be writable")
    cdef int64_t n = cnp.PyArray_SIZE(<cnp.ndarray>x)
    cdef const void *xp = _ptr(x)
    cdef void *yp = <void *>_ptr(y)
    cdef int nt = min(num_threads, 1 << 16)
    with nogil:
        ce_vecmath(tn == cnp.NPY_DOUBLE, k, xp, yp, n, nt)


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
        "isa": ce_isa().decode(),
        "isa_compiled": ce_isa_compiled().decode().split(","),
        "isa_supported": ce_isa_supported().decode().split(","),
    }
