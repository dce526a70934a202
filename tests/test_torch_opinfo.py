"""ce_fast.torch against PyTorch's own test inputs: every OpInfo sample of
the functions it replaces (torch.testing._internal.common_methods_invocations
.op_db), in float32 and float64, must match torch's forward and backward,
and pass gradcheck in float64 -- and each must have run through ce_fast's
kernels, except the documented fall-throughs (0-d and empty inputs of the
softmax family, binary_cross_entropy on probabilities), which are counted."""

from __future__ import annotations

import warnings
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")  # op_db imports it

import ce_fast.torch as ct  # noqa: E402
from ce_fast.torch import _bridge  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from torch.testing._internal.common_methods_invocations import op_db  # noqa: E402

OURS = {
    ("nn.functional.cross_entropy", ""): ct.cross_entropy,
    ("nn.functional.binary_cross_entropy_with_logits", ""): ct.binary_cross_entropy_with_logits,
    ("nn.functional.binary_cross_entropy", ""): ct.binary_cross_entropy,
    ("log_softmax", ""): ct.log_softmax,
    ("log_softmax", "with_dtype"): ct.log_softmax,
    ("softmax", ""): ct.softmax,
    ("softmax", "with_dtype"): ct.softmax,
    ("logsumexp", ""): ct.logsumexp,
    ("nn.functional.linear_cross_entropy", ""): ct.linear_cross_entropy,
    ("nn.functional.linear_cross_entropy", "chunked"): ct.linear_cross_entropy,
    ("nn.functional.linear_cross_entropy", "chunked_none"): ct.linear_cross_entropy,
}
OPS = {(op.name, op.variant_test_name): op for op in op_db if (op.name, op.variant_test_name) in OURS}
# 16-bit: torch rounds its log-softmax to the input's format before the loss,
# ce_fast rounds only its results, so they differ by about torch's rounding
TOL = {
    torch.float32: (2e-5, 2e-6),
    torch.float64: (1e-11, 1e-13),
    torch.bfloat16: (3e-2, 3e-2),
    torch.float16: (4e-3, 4e-3),
}


def _close(got: Any, expected: Any, dtype: Any) -> None:
    """Elementwise within rtol, and within atol times the tensor's scale:
    torch rounds log-softmax terms in the input's dtype, so an entry near 0
    carries the absolute error of the largest ones."""
    rtol, atol = TOL[dtype]
    scale = max(1.0, float(expected.detach().abs().max())) if expected.numel() else 1.0
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol * scale, equal_nan=True)


def test_every_op_is_in_op_db() -> None:
    assert set(OPS) == set(OURS)


def _expected_fallback(name: str, sample: Any) -> bool:
    """The samples the kernels do not take, by design."""
    x = sample.input
    if name == "nn.functional.binary_cross_entropy":
        return True  # torch's own, always (see ce_fast.torch.binary_cross_entropy)
    if name in ("log_softmax", "softmax"):
        return x.dim() == 0 or x.numel() == 0
    if name == "logsumexp":
        return x.dim() == 0
    return False


def _grad_leaves(sample: Any) -> list[Any]:
    ts = [sample.input, *sample.args, *sample.kwargs.values()]
    return [t for t in ts if isinstance(t, torch.Tensor) and t.requires_grad]


def _call(fn: Any, sample: Any, leaves: list[Any], values: tuple[Any, ...]) -> Any:
    """fn on the sample with each leaf replaced by the matching value."""
    swap = {id(t): v for t, v in zip(leaves, values)}

    def sub(a: Any) -> Any:
        return swap.get(id(a), a) if isinstance(a, torch.Tensor) else a

    args = [sub(a) for a in sample.args]
    kwargs = {k: sub(v) for k, v in sample.kwargs.items()}
    return fn(sub(sample.input), *args, **kwargs)


def _check_sample(op: Any, fn: Any, sample: Any, dtype: Any, fast: bool) -> str | None:
    """None if the sample passes, else what failed. ``fast``: gradcheck's
    fast mode (random projections of the Jacobian, not every entry)."""
    leaves = _grad_leaves(sample)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = op.op(sample.input, *sample.args, **sample.kwargs)
        got = fn(sample.input, *sample.args, **sample.kwargs)
        try:
            _close(got, expected, dtype)
        except AssertionError as exc:
            return f"forward: {exc}"
        if not leaves:
            return None
        gen = torch.Generator().manual_seed(0)
        up = torch.randn(expected.shape, generator=gen, dtype=expected.dtype)
        g_exp = torch.autograd.grad(expected, leaves, up, allow_unused=True)
        g_got = torch.autograd.grad(got, leaves, up, allow_unused=True)
        for i, (a, b) in enumerate(zip(g_got, g_exp)):
            try:
                _close(a, b, dtype)
            except AssertionError as exc:
                return f"backward (leaf {i}): {exc}"
        if dtype == torch.float64:

            def call(*vs: Any) -> Any:
                return _call(fn, sample, leaves, vs)

            ok = torch.autograd.gradcheck(call, tuple(leaves), raise_exception=False, fast_mode=fast)
            if not ok:
                return "gradcheck"
    return None


def _run_samples(key: tuple[str, str], dtype: Any, fast: bool, capsys: Any) -> None:
    op, fn = OPS[key], OURS[key]
    torch.manual_seed(0)
    samples = list(op.sample_inputs("cpu", dtype, requires_grad=True))
    assert samples
    failures, kernel, fell = [], 0, 0
    for i, sample in enumerate(samples):
        before = sum(_bridge.FALLBACKS.values())
        problem = _check_sample(op, fn, sample, dtype, fast)
        fell_through = sum(_bridge.FALLBACKS.values()) > before
        if fell_through != _expected_fallback(key[0], sample):
            problem = problem or f"fell through to torch: {fell_through}, expected {not fell_through}"
        kernel += not fell_through
        fell += fell_through
        if problem:
            failures.append(f"sample {i} {sample}: {problem}")
    with capsys.disabled():
        name = ".".join(p for p in key if p)
        passed = len(samples) - len(failures)
        print(f"\n  {name} {dtype}: {len(samples)} samples, {passed} passed, "
              f"{kernel} through ce_fast's kernels, {fell} to torch")  # fmt: skip
    assert not failures, "\n".join(failures[:5])


DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
KEYS = pytest.mark.parametrize("key", sorted(OURS), ids=lambda k: ".".join(p for p in k if p))


@DTYPES
@KEYS
def test_opinfo_samples(key: tuple[str, str], dtype: Any, capsys: Any) -> None:
    """Forward and backward against torch; gradcheck (float64) in fast mode."""
    _run_samples(key, dtype, True, capsys)


HALF_KEYS = [
    ("nn.functional.cross_entropy", ""),
    ("nn.functional.binary_cross_entropy_with_logits", ""),
    ("log_softmax", ""),
    ("log_softmax", "with_dtype"),
    ("softmax", ""),
    ("softmax", "with_dtype"),
    ("logsumexp", ""),
    ("nn.functional.linear_cross_entropy", ""),
    ("nn.functional.linear_cross_entropy", "chunked"),
    ("nn.functional.linear_cross_entropy", "chunked_none"),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
@pytest.mark.parametrize("key", HALF_KEYS, ids=lambda k: ".".join(p for p in k if p))
def test_opinfo_samples_16bit(key: tuple[str, str], dtype: Any, capsys: Any) -> None:
    """The samples of the functions with 16-bit kernels in ce_fast.torch, in
    bfloat16 and float16, forward and backward, through those kernels (but
    the documented fall-throughs)."""
    _run_samples(key, dtype, True, capsys)


@pytest.mark.slow
@KEYS
def test_opinfo_samples_full_gradcheck(key: tuple[str, str], capsys: Any) -> None:
    """As above in float64, with gradcheck comparing every Jacobian entry."""
    _run_samples(key, torch.float64, False, capsys)
