"""ce_fast's own DLPack reader (ce_fast._dlpack): every producer is imported
the same way, without a copy, with its version, device, read-only flag and
dtype honoured (bfloat16 included, which numpy.from_dlpack cannot import)."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import ce_fast
from ce_fast import _dlpack
from ce_fast._validation import as_array
from ce_fast._validation._arrays import BFLOAT16, is_bfloat16


class Producer:
    """A minimal __dlpack__ producer around another one (or a capsule maker)."""

    def __init__(self, inner, device=(1, 0), legacy=False):
        self.inner, self.device, self.legacy = inner, device, legacy

    def __dlpack_device__(self):
        return self.device

    def __dlpack__(self, *args, **kw):
        if self.legacy:
            if kw:  # a pre-1.0 producer knows no max_version
                raise TypeError("unexpected keyword argument")
            return self.inner.__dlpack__()
        return self.inner.__dlpack__(*args, **kw)


def test_numpy_producer_round_trip_shares_memory(rng):
    x = rng.standard_normal((5, 7))[:, ::2]
    a = _dlpack.from_dlpack(Producer(x), BFLOAT16)
    assert a.dtype == x.dtype and a.shape == x.shape and a.strides == x.strides
    assert np.shares_memory(a, x)
    np.testing.assert_array_equal(a, x)


def test_read_only_flag_is_honoured(rng):
    x = rng.standard_normal(6)
    x.flags.writeable = False
    a = _dlpack.from_dlpack(Producer(x), BFLOAT16)
    assert not a.flags.writeable


def test_legacy_capsule_producer(rng):
    x = rng.standard_normal((3, 4))
    a = _dlpack.from_dlpack(Producer(x, legacy=True), BFLOAT16)
    np.testing.assert_array_equal(a, x)


def test_device_memory_is_a_type_error(rng):
    with pytest.raises(BufferError, match="device"):
        _dlpack.from_dlpack(Producer(rng.standard_normal(3), device=(2, 0)), BFLOAT16)
    with pytest.raises(TypeError, match="x: .*device"):
        ce_fast.softmax(Producer(rng.standard_normal(3), device=(2, 0)))


def test_memory_outlives_the_producer():
    torch = pytest.importorskip("torch")
    t = torch.arange(10_000, dtype=torch.float32)
    a = _dlpack.from_dlpack(t, BFLOAT16)
    del t
    gc.collect()
    assert a[-1] == 9999.0


DL_DTYPES = ["float16", "bfloat16", "float32", "float64", "int8", "uint8", "int16", "int32", "int64", "bool",
             "complex64", "complex128"]  # fmt: skip


def test_torch_dtypes_and_strides():
    torch = pytest.importorskip("torch")
    for dtype in DL_DTYPES:
        t = (torch.arange(60).reshape(3, 4, 5) % 7).to(getattr(torch, dtype))
        t = t.permute(2, 0, 1)[1:, :, ::2]  # offset, permuted and strided
        a = as_array(t, "x")
        ref = t.to(torch.complex128 if t.is_complex() else torch.float64).numpy()
        if dtype == "bfloat16":
            assert is_bfloat16(a.dtype)
        else:
            assert a.dtype == np.dtype(dtype), dtype
        widened = a.astype(np.float32) if is_bfloat16(a.dtype) else a
        np.testing.assert_array_equal(widened.astype(ref.dtype), ref, err_msg=dtype)
        assert a.__array_interface__["data"][0] == t.data_ptr(), dtype


def test_jax_bfloat16_is_read_in_place():
    jnp = pytest.importorskip("jax.numpy")
    j = jnp.arange(12, dtype=jnp.bfloat16).reshape(3, 4) / 3
    a = as_array(j, "x")
    assert is_bfloat16(a.dtype)
    np.testing.assert_array_equal(np.asarray(a, np.float32), np.asarray(j, np.float32))


def test_bfloat16_results_equal_the_float32_computation():
    torch = pytest.importorskip("torch")
    x = torch.randn(16, 9, dtype=torch.bfloat16)
    y = torch.randint(0, 9, (16,))
    assert ce_fast.cross_entropy(x, y) == ce_fast.cross_entropy(x.float(), y)
