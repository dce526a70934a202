# The C interface of the kernels (ce_kernels.h) as Cython sees it. The enums
# are `cpdef`: the binding module exposes each as a Python enum class of the
# same name (ce_status, ce_reduction, ...), so the Python layer names every
# constant it passes to C instead of repeating its number.

from libc.stdint cimport int64_t

cdef extern from "ce_kernels.h" nogil:
    cpdef enum ce_status:
        CE_OK
        CE_ERR_TARGET_INDEX
        CE_ERR_NOMEM
        CE_ERR_DOMAIN

    cpdef enum ce_reduction:
        CE_RED_NONE
        CE_RED_SUM
        CE_RED_MEAN

    cpdef enum ce_dtype:
        CE_DT_F32
        CE_DT_F64
        CE_DT_BF16
        CE_DT_F16

    cpdef enum ce_bin_mode:
        CE_BIN_LOGITS
        CE_BIN_PROBS
        CE_BIN_KL_DIV
        CE_BIN_KL_DIV_LOG

    cpdef enum ce_sm_op:
        CE_SM_LOGSUMEXP
        CE_SM_LOG_SOFTMAX
        CE_SM_SOFTMAX
        CE_SM_ENTROPY
        CE_SM_SOFTMAX_ENTROPY

    cpdef enum ce_div_kind:
        CE_DIV_KL_FORWARD
        CE_DIV_KL_REVERSE
        CE_DIV_JS

    cpdef enum ce_teacher_kind:
        CE_TEACHER_LOGITS
        CE_TEACHER_LOG_PROBS
        CE_TEACHER_PROBS

    cpdef enum ce_vm_kind:
        CE_VM_LOG
        CE_VM_LOG1P
        CE_VM_EXP

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
        int out_wide
        int num_threads
        double *lse_out
        const double *lse
        double loss
        int64_t err_pos, err_val

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
        int out_wide
        double loss
        int err_arg
        int64_t err_pos
        double err_fval

    ctypedef struct ce_sm_args:
        int op
        const void *x
        int64_t outer, C, inner
        int64_t xs_o, xs_c, xs_i
        void *out
        int out_wide
        int num_threads
        int64_t err_pos
        double err_fval

    ctypedef struct ce_div_args:
        int kind
        int teacher_is
        const void *x
        int64_t outer, C, inner
        int64_t xs_o, xs_c, xs_i
        const void *t
        int64_t ts_o, ts_c, ts_i
        double inv_temperature
        double beta
        const int64_t *target
        int64_t ignore_index
        const void *sample_weight
        const void *grad_output
        double grad_output_scalar
        int reduction
        void *loss_out
        void *grad
        int num_threads
        double loss
    ctypedef struct ce_wlse_args:
        const void *a
        int64_t outer, C, inner
        int64_t as_o, as_c, as_i
        const void *b
        int64_t bs_o, bs_c, bs_i
        void *out
        void *sign
        int num_threads

    ctypedef struct ce_prob_args:
        const void *p
        int64_t outer, C, inner
        int64_t ps_o, ps_c, ps_i
        const void *q
        int64_t qs_o, qs_c, qs_i
        int omit_nan
        void *out
        int num_threads

    ctypedef struct ce_logloss_args:
        const void *p
        int64_t N, C
        int64_t ps_r, ps_c
        const int64_t *label
        const double *w
        double eps
        double sum_tol
        int num_threads
        double loss_sum, weight_sum
        int nonfinite, out_of_range, not_normalised
        int64_t err_pos

    int ce_categorical(int dtype, ce_cat_args *a)
    int ce_wlse(int is_double, ce_wlse_args *a)
    int ce_prob(int is_double, ce_prob_args *a)
    int ce_logloss(int is_double, ce_logloss_args *a)
    int ce_binary(int dtype, ce_bin_args *a)
    int ce_softmax_family(int dtype, ce_sm_args *a)
    int ce_divergence(int is_double, ce_div_args *a)
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
