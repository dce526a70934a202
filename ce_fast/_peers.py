"""The benchmark's peers (PyTorch, JAX, scikit-learn), each written the way
its users write a mean cross-entropy with its gradient w.r.t. the logits.
Each is used only if it is installed, never required, and is timed in a
worker process of its own pinned to the row's cores (``_bench_worker``)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

# name -> (importable module, distribution, label in the tables)
PEERS = {
    "torch": ("torch", "torch", "PyTorch"),
    "jax": ("jax", "jax", "JAX"),
    "sklearn": ("sklearn", "scikit-learn", "scikit-learn"),
}

# ce_fast is not on PyPI: its extras install from a clone.
INSTALL_HINT = (
    'no peer installed: add scikit-learn and JAX with pip install ".[bench]" in the ce_fast clone (or '
    "pip install scikit-learn jax), PyTorch with pip install torch --index-url "
    "https://download.pytorch.org/whl/cpu (its CPU build; a plain `pip install torch` pulls a multi-GB "
    "CUDA build on Linux)"
)


class Unsupported(Exception):
    """The peer has no kernel for this dtype (a skip, not a failure)."""


def available() -> dict[str, str]:
    """Installed peers and their versions."""
    out = {}
    for name, (module, dist, _) in PEERS.items():
        if importlib.util.find_spec(module) is not None:
            try:
                out[name] = importlib.metadata.version(dist)
            except importlib.metadata.PackageNotFoundError:
                out[name] = "?"
    return out


def label(name: str) -> str:
    return PEERS[name][2] if name in PEERS else name


def describe(name: str) -> str:
    """What the peer's timed call computes, in its own words."""
    if name == "jax":
        if importlib.util.find_spec("optax") is not None:
            return "jit(value_and_grad(optax.softmax_cross_entropy_with_integer_labels(z, y).mean()))"
        return "jit(value_and_grad(mean(logsumexp(z) - take_along_axis(z, y))))"
    if name == "torch":
        return "F.cross_entropy(z, y) forward + backward, torch.set_num_threads(threads)"
    return "HalfMultinomialLoss().loss_gradient(..., n_threads=threads) (a private API)"


def resolve_dtype(name: str) -> np.dtype[Any]:
    """A NumPy dtype by name, bfloat16 (and the other ml_dtypes) included;
    TypeError for a name neither knows."""
    try:
        return np.dtype(name)
    except TypeError:
        pass
    try:
        import ml_dtypes

        dt: np.dtype[Any] = np.dtype(getattr(ml_dtypes, name))
        return dt
    except (ImportError, AttributeError, TypeError):
        raise TypeError(f"unknown dtype {name!r}") from None


def ce_fast_grad_dtype(x: np.ndarray, y: np.ndarray) -> tuple[np.dtype[Any] | None, str]:
    """The dtype of ce_fast's gradient for logits like ``x`` (float32 for
    float16), or None and the reason where the installed ce_fast refuses
    them."""
    import ce_fast

    try:
        _, g = ce_fast.cross_entropy_and_grad(x[:1], y[:1])
    except (TypeError, ValueError) as e:
        return None, f"{type(e).__name__}: {e}"
    return np.dtype(g.dtype), ""


def make_data(N: int, C: int, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """The logits and labels of one benchmark case; the same in every
    process (the seed depends only on the shape)."""
    rng = np.random.default_rng([N, C])
    x = (rng.standard_normal((N, C), dtype=np.float32) * 3).astype(resolve_dtype(dtype))
    y = rng.integers(0, C, N)
    return x, y


def to_torch(x: np.ndarray) -> Any:
    """A tensor sharing x's memory; Unsupported for a dtype PyTorch lacks."""
    import torch

    if x.dtype.name == "bfloat16":  # NumPy knows bfloat16 only through ml_dtypes
        return torch.from_numpy(x.view(np.uint16)).view(torch.bfloat16)
    try:
        return torch.from_numpy(x)
    except TypeError as e:
        raise Unsupported(str(e)) from None


def _torch(x: np.ndarray, y: np.ndarray, nt: int) -> Callable[[], Any]:
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(nt)
    xt, yt = to_torch(x), torch.from_numpy(y)

    def torch_fwd_bwd() -> Any:
        xr = xt.detach().requires_grad_(True)
        loss = F.cross_entropy(xr, yt)
        loss.backward()
        return loss.detach(), xr.grad

    return torch_fwd_bwd


def _jax(x: np.ndarray, y: np.ndarray, nt: int) -> Callable[[], Any]:
    import jax
    import jax.numpy as jnp

    # float64 needs x64 mode; without it JAX would silently compute in float32
    jax.config.update("jax_enable_x64", x.dtype == np.float64)
    try:
        optax = importlib.import_module("optax")

        def loss_fn(z: Any, labels: Any) -> Any:
            return optax.softmax_cross_entropy_with_integer_labels(z, labels).mean()

    except ImportError:

        def loss_fn(z: Any, labels: Any) -> Any:
            picked = jnp.take_along_axis(z, labels[:, None], axis=-1)[:, 0]
            return jnp.mean(jax.nn.logsumexp(z, axis=-1) - picked)

    vg = jax.jit(jax.value_and_grad(loss_fn))
    xj, yj = jnp.asarray(x), jnp.asarray(y.astype(np.int32))
    if xj.dtype != x.dtype:
        raise Unsupported(f"JAX turned {x.dtype} into {xj.dtype}")

    def jax_value_and_grad() -> Any:
        return jax.block_until_ready(vg(xj, yj))

    return jax_value_and_grad


def _sklearn(x: np.ndarray, y: np.ndarray, nt: int) -> Callable[[], Any]:
    from sklearn._loss.loss import HalfMultinomialLoss

    if x.dtype not in (np.float32, np.float64):
        raise Unsupported(f"no {x.dtype} kernel")
    loss = HalfMultinomialLoss(n_classes=x.shape[1])
    yf = y.astype(x.dtype)
    g = np.empty_like(x)
    lo = np.empty(x.shape[0], x.dtype)

    def sklearn_loss_gradient() -> Any:
        return loss.loss_gradient(yf, x, loss_out=lo, gradient_out=g, n_threads=nt)

    return sklearn_loss_gradient


_FACTORIES = {"torch": _torch, "jax": _jax, "sklearn": _sklearn}


def peer_call(name: str, x: np.ndarray, y: np.ndarray, nt: int) -> Callable[[], Any]:
    """The peer's loss + gradient call on (x, y) with ``nt`` threads; it
    returns the peer's own objects (see :func:`as_mean_loss_and_grad`)."""
    return _FACTORIES[name](x, y, nt)


def as_mean_loss_and_grad(name: str, result: Any, n_rows: int) -> tuple[float, np.ndarray]:
    """A peer call's result as (mean loss, float64 gradient of the mean), to
    check it against ce_fast's."""
    loss, grad = result
    if name == "torch":
        return float(loss.double().item()), grad.double().numpy()
    grad = np.asarray(grad).astype(np.float64)
    if name == "sklearn":  # per-sample losses and per-sample (unscaled) gradients
        return float(np.mean(loss, dtype=np.float64)), grad / n_rows
    return float(np.asarray(loss).astype(np.float64)), grad
