"""Array interop: DLPack producers (CPU PyTorch tensors, also ones that require
grad and non-contiguous ones), memmaps, read-only, big-endian, Fortran-ordered
and strided inputs, and labels of every integer dtype. Results must equal
those for a plain C-contiguous copy, and memory is shared (not copied) where
the kernels can walk the layout."""

from __future__ import annotations

import numpy as np
import pytest

import ce_fast
import ce_fast.reference as ref
from ce_fast._validation import as_array, as_float, strided_view

INT_DTYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]


def _data(rng, n=37, c=11, dtype=np.float32):
    x = rng.standard_normal((n, c)).astype(dtype)
    y = rng.integers(0, c, n)
    return x, y


def _all_results(x, y):
    """Every family on (x, y): a dict of name -> result (arrays or scalars)."""
    xa = as_array(x, "x")
    p = ref.softmax(xa.astype(np.float64))
    return {
        "ce": ce_fast.cross_entropy(x, y, reduction="none"),
        "ce_grad": ce_fast.cross_entropy_grad(x, y),
        "ce_prob": ce_fast.cross_entropy(x, p.astype(xa.dtype.newbyteorder("="))),
        "bce": ce_fast.binary_cross_entropy_with_logits(x, (xa > 0).astype(np.float32)),
        "lse": ce_fast.logsumexp(x),
        "softmax": ce_fast.softmax(x),
        "ent": ce_fast.softmax_entropy(x),
    }


def _assert_same(got, want, exact=True):
    """Equal results. ``exact=False`` for a different memory layout: a class
    axis walked with a stride may sum in another order (a few ulp apart);
    the thread-count invariance is bitwise, the layout invariance is not."""
    assert got.keys() == want.keys()
    for k in want:
        g, w = np.asarray(got[k]), np.asarray(want[k])
        if exact:
            np.testing.assert_array_equal(g, w, err_msg=k)
        else:
            rtol = 8 * np.finfo(w.dtype).eps
            np.testing.assert_allclose(g, w, rtol=rtol, atol=rtol * np.abs(w).max(), err_msg=k)
        assert np.asarray(got[k]).dtype == np.asarray(want[k]).dtype, k


# ---------------------------------------------------------------------------
# DLPack / PyTorch
# ---------------------------------------------------------------------------


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def test_torch_tensor_is_not_copied(torch, rng):
    x, y = _data(rng)
    t = torch.from_numpy(x)
    a = as_array(t, "logits")
    assert np.shares_memory(a, x)
    assert strided_view(as_float(t, "logits"), 1)[0].ctypes.data == x.ctypes.data
    _assert_same(_all_results(t, torch.from_numpy(y)), _all_results(x, y))


def test_torch_tensor_requiring_grad_is_detached(torch, rng):
    x, y = _data(rng)
    t = torch.from_numpy(x.copy()).requires_grad_(True)
    a = as_array(t, "logits")
    assert np.shares_memory(a, t.detach().numpy())  # the same memory, no copy
    _assert_same(_all_results(t, y), _all_results(x, y))
    loss, grad = ce_fast.cross_entropy_and_grad(t, y)
    assert isinstance(grad, np.ndarray)
    assert t.grad is None  # nothing recorded for autograd
    tl = torch.nn.functional.cross_entropy(t.double(), torch.from_numpy(y))
    tl.backward()
    np.testing.assert_allclose(grad, t.grad.numpy(), rtol=1e-5, atol=1e-8)


def test_torch_noncontiguous_tensor(torch, rng):
    base = torch.from_numpy(rng.standard_normal((11, 37)).astype(np.float32))
    t = base.t()  # (37, 11), Fortran-ordered view
    assert not t.is_contiguous()
    a = as_array(t, "logits")
    assert np.shares_memory(a, base.numpy())
    assert strided_view(as_float(t, "logits"), 1)[0].ctypes.data == base.numpy().ctypes.data
    y = rng.integers(0, 11, 37)
    _assert_same(_all_results(t, y), _all_results(np.ascontiguousarray(t.numpy()), y), False)
    sliced = torch.from_numpy(rng.standard_normal((40, 30))).narrow(1, 5, 11)[::2]
    y2 = rng.integers(0, 11, sliced.shape[0])
    _assert_same(_all_results(sliced, y2), _all_results(np.ascontiguousarray(sliced.numpy()), y2), False)


@pytest.mark.parametrize("tdtype", ["int64", "int32", "uint8", "int16"])
def test_torch_integer_targets(torch, rng, tdtype):
    x, y = _data(rng)
    ty = torch.from_numpy(y).to(getattr(torch, tdtype))
    assert ce_fast.cross_entropy(x, ty) == ce_fast.cross_entropy(x, y)


def test_torch_half_and_bfloat16(torch, rng):
    x, y = _data(rng)
    got = ce_fast.cross_entropy(torch.from_numpy(x).half(), y)
    assert got.dtype == np.float32
    assert got == ce_fast.cross_entropy(x.astype(np.float16), y)
    # bfloat16 has no NumPy dtype: ce_fast's DLPack reader imports it
    xb = torch.from_numpy(x).bfloat16()
    assert ce_fast.cross_entropy(xb, y) == ce_fast.cross_entropy(xb.float().numpy(), y)


# ---------------------------------------------------------------------------
# NumPy layouts
# ---------------------------------------------------------------------------


def test_memmap(tmp_path, rng):
    x, y = _data(rng, dtype=np.float64)
    mm = np.lib.format.open_memmap(tmp_path / "x.npy", mode="w+", dtype=x.dtype, shape=x.shape)
    mm[...] = x
    mm.flush()
    ro = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert not ro.flags.writeable
    assert strided_view(as_float(ro, "logits"), 1)[0] is ro  # walked in place
    _assert_same(_all_results(ro, y), _all_results(x, y))
    # memmapped targets too
    ym = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+", dtype=np.int32, shape=y.shape)
    ym[...] = y
    assert ce_fast.cross_entropy(ro, ym) == ce_fast.cross_entropy(x, y)


def test_read_only_input_never_written(rng):
    x, y = _data(rng)
    xr = x.copy()
    xr.flags.writeable = False
    yr = y.copy()
    yr.flags.writeable = False
    _assert_same(_all_results(xr, yr), _all_results(x, y))
    loss, grad = ce_fast.cross_entropy_and_grad(xr, yr)
    assert grad.flags.writeable and not np.shares_memory(grad, xr)
    np.testing.assert_array_equal(xr, x)
    with pytest.raises(ValueError, match="writable"):
        ce_fast.cross_entropy_grad(xr, yr, out=xr)


@pytest.mark.parametrize("dt", [">f4", ">f8", "<f4", "<f8"])
@pytest.mark.parametrize("tdt", [">i8", ">i4", "<i8", ">u2"])
def test_byte_order(rng, dt, tdt):
    x, y = _data(rng, dtype=np.dtype(dt).newbyteorder("="))
    got = _all_results(x.astype(dt), y.astype(tdt))
    want = _all_results(x, y)
    _assert_same(got, want)
    for k in ("ce", "ce_grad", "softmax"):
        assert got[k].dtype.isnative


def test_big_endian_probability_target_and_weights(rng):
    x, y = _data(rng, dtype=np.float64)
    q = ref.softmax(rng.standard_normal(x.shape))
    w = rng.random(x.shape[1])
    want = ce_fast.cross_entropy(x, q, weight=w)
    assert ce_fast.cross_entropy(x.astype(">f8"), q.astype(">f8"), weight=w.astype(">f8")) == want
    want_i = ce_fast.cross_entropy(x, y, weight=w, sample_weight=w[y])
    got_i = ce_fast.cross_entropy(
        x, y.astype(">i8"), weight=w.astype(">f8"), sample_weight=w[y].astype(">f8")
    )
    assert got_i == want_i


def test_fortran_order_is_walked_in_place(rng):
    x, y = _data(rng)
    xf = np.asfortranarray(x)
    assert strided_view(xf, 1)[0] is xf
    _assert_same(_all_results(xf, y), _all_results(x, y), exact=False)


@pytest.mark.parametrize(
    "make",
    [
        lambda a: a[::2],
        lambda a: a[:, ::3],
        lambda a: a[::-1],
        lambda a: a[:, ::-2],
        lambda a: a[3:30:4, 1:10],
    ],
    ids=["rows", "cols", "rev_rows", "rev_cols", "both"],
)
def test_strided_views(rng, make):
    base = rng.standard_normal((60, 33))
    v = make(base)
    assert strided_view(v, 1)[0] is v  # 2-d strided views need no copy
    y = rng.integers(0, v.shape[1], v.shape[0])
    _assert_same(_all_results(v, y), _all_results(np.ascontiguousarray(v), y), exact=False)


def test_3d_views_any_axis(rng):
    base = rng.standard_normal((6, 8, 10))
    v = base.transpose(2, 0, 1)[:, ::2]  # (10, 3, 8): the non-class axes do not collapse
    for axis in (0, 1, 2):
        C = v.shape[axis]
        y = rng.integers(0, C, np.delete(v.shape, axis))
        got = ce_fast.cross_entropy(v, y, axis=axis, reduction="none")
        want = ce_fast.cross_entropy(np.ascontiguousarray(v), y, axis=axis, reduction="none")
        np.testing.assert_allclose(got, want, rtol=1e-14)
        np.testing.assert_allclose(got, ref.cross_entropy(v, y, axis=axis, reduction="none"), rtol=1e-12)


def test_unaligned_input(rng):
    x, y = _data(rng, dtype=np.float64)
    buf = np.zeros(x.nbytes + 1, np.uint8)
    xu = buf[1:].view(np.float64).reshape(x.shape)
    xu[...] = x
    assert not xu.flags.aligned
    _assert_same(_all_results(xu, y), _all_results(x, y))


@pytest.mark.parametrize("dt", INT_DTYPES + [np.intp, np.uintp, np.longlong, np.ulonglong])
def test_label_dtypes(rng, dt):
    x, y = _data(rng, c=100)
    y = y.astype(dt)
    want = ce_fast.cross_entropy(x, y.astype(np.int64), reduction="none")
    np.testing.assert_array_equal(ce_fast.cross_entropy(x, y, reduction="none"), want)
    np.testing.assert_array_equal(
        ce_fast.cross_entropy_grad(x, y[::-1]), ce_fast.cross_entropy_grad(x, y[::-1].astype(np.int64))
    )


@pytest.mark.parametrize("dt", [np.uint8, np.uint16, np.uint32, np.uint64, np.int8])
def test_label_dtypes_out_of_range(dt):
    x = np.zeros((3, 5), np.float32)
    y = np.array([0, np.iinfo(dt).max, 1], dtype=dt)
    with pytest.raises(IndexError, match="1"):
        ce_fast.cross_entropy(x, y)


def test_lists_and_scalars_like_arrays():
    x = [[1.0, 2.0, 3.0], [0.5, 0.5, 0.5]]
    y = [2, 0]
    assert ce_fast.cross_entropy(x, y) == ce_fast.cross_entropy(np.array(x), np.array(y))
