# cython: language_level=3, boundscheck=False, wraparound=False
"""DLPack import, the same way for every producer (CPU PyTorch tensors, JAX
arrays, NumPy, CuPy's host arrays...): the capsule is read here, its
version, device, flags and dtype checked, and its memory wrapped in an
ndarray without a copy. numpy.from_dlpack cannot represent bfloat16, which
is why this is not left to NumPy."""

from cpython.object cimport PyTypeObject
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_IsValid, PyCapsule_SetName
from cpython.ref cimport Py_INCREF
from libc.stdint cimport int64_t, uint64_t
cimport numpy as cnp

cnp.import_array()

cdef extern from "numpy/arrayobject.h":
    # (commented out in NumPy's pxd) steals a reference to descr
    object PyArray_NewFromDescr(PyTypeObject *subtype, cnp.dtype descr, int nd, cnp.npy_intp *dims,
                                cnp.npy_intp *strides, void *data, int flags, object obj)

cdef extern from "dlpack_abi.h" nogil:
    enum:
        CE_DL_CPU, CE_DL_CUDA_HOST
        CE_DL_INT, CE_DL_UINT, CE_DL_FLOAT, CE_DL_BFLOAT, CE_DL_COMPLEX, CE_DL_BOOL
        CE_DL_FLAG_READ_ONLY
    ctypedef struct ce_dl_device:
        int device_type
        int device_id
    ctypedef struct ce_dl_dtype:
        unsigned char code
        unsigned char bits
        unsigned short lanes
    ctypedef struct ce_dl_tensor:
        void *data
        ce_dl_device device
        int ndim
        ce_dl_dtype dtype
        int64_t *shape
        int64_t *strides
        uint64_t byte_offset
    ctypedef struct ce_dl_managed:
        ce_dl_tensor dl_tensor
        void (*deleter)(ce_dl_managed *self)
    ctypedef struct ce_dl_version:
        unsigned int major
        unsigned int minor
    ctypedef struct ce_dl_managed_versioned:
        ce_dl_version version
        void (*deleter)(ce_dl_managed_versioned *self)
        uint64_t flags
        ce_dl_tensor dl_tensor


cdef class _Owner:
    """Holds the producer's tensor while an ndarray views its memory, and
    releases it (the producer's deleter) when the last view is gone."""
    cdef ce_dl_managed *legacy
    cdef ce_dl_managed_versioned *versioned

    def __dealloc__(self):
        if self.versioned != NULL and self.versioned.deleter != NULL:
            self.versioned.deleter(self.versioned)
        elif self.legacy != NULL and self.legacy.deleter != NULL:
            self.legacy.deleter(self.legacy)


_FIXED = {
    (CE_DL_INT, 8): "i1", (CE_DL_INT, 16): "i2", (CE_DL_INT, 32): "i4", (CE_DL_INT, 64): "i8",
    (CE_DL_UINT, 8): "u1", (CE_DL_UINT, 16): "u2", (CE_DL_UINT, 32): "u4", (CE_DL_UINT, 64): "u8",
    (CE_DL_FLOAT, 16): "f2", (CE_DL_FLOAT, 32): "f4", (CE_DL_FLOAT, 64): "f8",
    (CE_DL_COMPLEX, 64): "c8", (CE_DL_COMPLEX, 128): "c16", (CE_DL_BOOL, 8): "?",
}


cdef object _dtype(ce_dl_dtype dt, object bfloat16):
    if dt.lanes != 1:
        raise BufferError(f"DLPack: vector dtypes ({dt.lanes} lanes) are not supported")
    if dt.code == CE_DL_BFLOAT and dt.bits == 16:
        return bfloat16
    name = _FIXED.get((dt.code, dt.bits))
    if name is None:
        raise BufferError(f"DLPack: dtype code {dt.code} with {dt.bits} bits is not supported")
    return cnp.dtype(name)


def from_dlpack(obj, bfloat16):
    """An ndarray viewing the memory of ``obj`` (a ``__dlpack__`` producer),
    read-only when the producer says so; ``bfloat16`` is the NumPy dtype that
    stands for bfloat16 elements. BufferError when the producer's tensor is
    not on the CPU or has a layout or dtype that NumPy cannot view."""
    device = getattr(obj, "__dlpack_device__", None)
    if device is not None and int(device()[0]) not in (CE_DL_CPU, CE_DL_CUDA_HOST):
        raise BufferError(f"DLPack: the data is on device {device()}, not in CPU memory")
    try:
        capsule = obj.__dlpack__(max_version=(1, 0))
    except TypeError:  # a producer older than DLPack 1.0 takes no max_version
        capsule = obj.__dlpack__()
    owner = _Owner()
    cdef ce_dl_tensor *t
    cdef bint read_only = False
    if PyCapsule_IsValid(capsule, b"dltensor_versioned"):
        owner.versioned = <ce_dl_managed_versioned *>PyCapsule_GetPointer(capsule, b"dltensor_versioned")
        PyCapsule_SetName(capsule, b"used_dltensor_versioned")  # ours now: the capsule must not free it
        if owner.versioned.version.major != 1:
            raise BufferError(f"DLPack: version {owner.versioned.version.major}.x is not supported (1.x is)")
        read_only = (owner.versioned.flags & CE_DL_FLAG_READ_ONLY) != 0
        t = &owner.versioned.dl_tensor
    elif PyCapsule_IsValid(capsule, b"dltensor"):
        owner.legacy = <ce_dl_managed *>PyCapsule_GetPointer(capsule, b"dltensor")
        PyCapsule_SetName(capsule, b"used_dltensor")
        t = &owner.legacy.dl_tensor
    else:
        raise BufferError("DLPack: __dlpack__ returned no (unused) DLPack capsule")
    if t.device.device_type not in (CE_DL_CPU, CE_DL_CUDA_HOST):
        raise BufferError("DLPack: the data is not in CPU memory")
    descr = _dtype(t.dtype, bfloat16)
    cdef int nd = t.ndim, i
    cdef cnp.npy_intp item = descr.itemsize
    cdef cnp.npy_intp dims[64]
    cdef cnp.npy_intp strides[64]
    if nd < 0 or nd > 64:
        raise BufferError(f"DLPack: {nd} dimensions")
    for i in range(nd):
        dims[i] = t.shape[i]
    for i in range(nd - 1, -1, -1):  # compact row-major when the producer gives no strides
        strides[i] = t.strides[i] * item if t.strides != NULL else (
            item if i == nd - 1 else strides[i + 1] * dims[i + 1])
    cdef char *data = <char *>t.data + t.byte_offset
    Py_INCREF(descr)  # PyArray_NewFromDescr steals it
    arr = PyArray_NewFromDescr(<PyTypeObject *>cnp.ndarray, descr, nd, dims, strides, <void *>data,
                               0 if read_only else cnp.NPY_ARRAY_WRITEABLE, None)
    cnp.set_array_base(arr, owner)
    return arr
