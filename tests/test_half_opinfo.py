"""PyTorch's own bfloat16 / float16 test inputs (the OpInfo samples of
torch.testing._internal.common_methods_invocations.op_db) through ce_fast's
NumPy API, which reads the 16-bit tensors in place through DLPack: every
sample must agree with torch to the format's precision (torch computes these
ops in float32 internally and rounds), the gradient of cross_entropy too.
(ce_fast.torch still hands 16-bit tensors to torch, so its own OpInfo test,
test_torch_opinfo.py, stays float32/float64.) 0-d inputs of the softmax
family are refused by ce_fast's API by design and are counted apart."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import ce_fast

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")  # op_db imports it
pytest.importorskip("ml_dtypes")

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

KEYS = [
    ("nn.functional.cross_entropy", ""),
    ("log_softmax", ""),
    ("log_softmax", "with_dtype"),
    ("softmax", ""),
    ("softmax", "with_dtype"),
    ("logsumexp", ""),
]
OPS = {(op.name, op.variant_test_name): op for op in op_db if (op.name, op.variant_test_name) in KEYS}
# one unit of the format (relative), and an absolute floor relative to the
# tensor's scale: torch rounds its intermediates (the log-softmax terms, the
# gradient's p - 1) to the format too
UNIT = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}


def _np(t: Any) -> Any:
    return t.detach() if isinstance(t, torch.Tensor) else t


def _close(got: Any, expected: Any, dtype: Any) -> None:
    exp = expected.detach().double()
    g = torch.as_tensor(np.asarray(got).astype(np.float64))
    u = UNIT[dtype]
    scale = max(1.0, float(exp.abs().max())) if exp.numel() else 1.0
    torch.testing.assert_close(g.reshape(exp.shape), exp, rtol=2 * u, atol=2 * u * scale, equal_nan=True)


def _cross_entropy(sample: Any, dtype: Any) -> None:
    x, t = sample.input, sample.args[0]
    kw = dict(sample.kwargs)
    expected = torch.nn.functional.cross_entropy(x, t, **kw)
    ours = {k: _np(v) for k, v in kw.items()}
    axis = 0 if x.dim() == 1 else 1
    target = _np(t)
    target = target.numpy() if target.dtype == torch.int64 else target
    up = torch.randn(expected.shape, generator=torch.Generator().manual_seed(0)).to(dtype)
    loss, g = ce_fast.cross_entropy_and_grad(
        _np(x), target, axis=axis, grad_output=up.float().numpy() if up.dim() else float(up), **ours
    )
    assert np.asarray(loss).dtype == np.float32
    _close(loss, expected, dtype)
    (g_exp,) = torch.autograd.grad(expected, [x], up)
    assert g.dtype == np.asarray(ce_fast._validation.as_array(_np(x), "x")).dtype
    _close(g, g_exp, dtype)


def _softmax_like(name: str, sample: Any, dtype: Any) -> None:
    x, dim = sample.input, sample.args[0]
    expected = getattr(torch, name)(x, dim, **sample.kwargs)
    got = getattr(ce_fast, name)(_np(x), axis=dim)
    _close(got, expected, dtype)


def _logsumexp(sample: Any, dtype: Any) -> None:
    x, dims = sample.input, sample.args[0]
    keep = sample.args[1] if len(sample.args) > 1 else False
    expected = torch.logsumexp(x, dims, keep)
    got = ce_fast.logsumexp(
        _np(x), axis=tuple(dims) if isinstance(dims, (tuple, list)) else dims, keepdims=keep
    )
    _close(got, expected, dtype)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("key", KEYS, ids=lambda k: ".".join(p for p in k if p))
def test_opinfo_16bit_samples(key: tuple[str, str], dtype: Any, capsys: Any) -> None:
    assert key in OPS
    torch.manual_seed(0)
    samples = list(OPS[key].sample_inputs("cpu", dtype, requires_grad=key[0].endswith("cross_entropy")))
    assert samples
    failures, refused = [], 0
    for i, sample in enumerate(samples):
        if key[0] != "nn.functional.cross_entropy" and sample.input.dim() == 0:
            with pytest.raises(ValueError, match="0-d"):
                _softmax_like("softmax", sample, dtype) if key[0] != "logsumexp" else _logsumexp(
                    sample, dtype
                )
            refused += 1
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if key[0] == "nn.functional.cross_entropy":
                    _cross_entropy(sample, dtype)
                elif key[0] == "logsumexp":
                    _logsumexp(sample, dtype)
                else:
                    _softmax_like(key[0], sample, dtype)
        except AssertionError as exc:
            failures.append(f"sample {i} {sample}: {exc}")
    with capsys.disabled():
        name = ".".join(p for p in key if p)
        passed = len(samples) - refused - len(failures)
        print(f"\n  {name} {dtype}: {len(samples)} samples, {passed} passed, {refused} 0-d refused")
    assert not failures, "\n".join(failures[:3])
