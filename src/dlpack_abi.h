/* dlpack_abi.h — the DLPack C ABI (data exchange between array libraries),
 * versions 0.x ("dltensor" capsules) and 1.x ("dltensor_versioned"), as far
 * as a consumer needs it. Written from the DLPack specification
 * (https://dmlc.github.io/dlpack/latest/c_api.html); only the layouts and
 * the constants matter, and they are fixed by the ABI. */
#ifndef CE_DLPACK_ABI_H
#define CE_DLPACK_ABI_H

#include <stdint.h>

enum { CE_DL_CPU = 1, CE_DL_CUDA_HOST = 3 };                        /* DLDeviceType */
enum { CE_DL_INT = 0, CE_DL_UINT = 1, CE_DL_FLOAT = 2, CE_DL_BFLOAT = 4,
       CE_DL_COMPLEX = 5, CE_DL_BOOL = 6 };                           /* DLDataTypeCode */
enum { CE_DL_FLAG_READ_ONLY = 1 };                                   /* DLPACK_FLAG_BITMASK_* */

typedef struct { int32_t device_type; int32_t device_id; } ce_dl_device;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } ce_dl_dtype;

typedef struct {
    void *data;
    ce_dl_device device;
    int32_t ndim;
    ce_dl_dtype dtype;
    int64_t *shape;
    int64_t *strides; /* in elements; NULL: compact row-major */
    uint64_t byte_offset;
} ce_dl_tensor;

typedef struct ce_dl_managed {
    ce_dl_tensor dl_tensor;
    void *manager_ctx;
    void (*deleter)(struct ce_dl_managed *self);
} ce_dl_managed;

typedef struct { uint32_t major; uint32_t minor; } ce_dl_version;

typedef struct ce_dl_managed_versioned {
    ce_dl_version version;
    void *manager_ctx;
    void (*deleter)(struct ce_dl_managed_versioned *self);
    uint64_t flags;
    ce_dl_tensor dl_tensor;
} ce_dl_managed_versioned;

#endif
