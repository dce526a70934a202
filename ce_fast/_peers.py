"""Optional peers for the benchmark (PyTorch, JAX, scikit-learn): each is
used only if it is installed, never required."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np


def available() -> list[str]:
    return [m for m in ("torch", "jax", "sklearn") if importlib.util.find_spec(m) is not None]


@contextlib.contextmanager
def limit_threads(n: int) -> Iterator[None]:
    """Limit every thread pool we know of (OpenMP/BLAS via threadpoolctl,
    PyTorch's intra-op pool) to n threads for the duration."""
    stack = contextlib.ExitStack()
    try:
        from threadpoolctl import threadpool_limits

        stack.enter_context(threadpool_limits(limits=n))
    except ImportError:
        pass
    torch_prev = None
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch_prev = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        with stack:
            yield
    finally:
        if torch_prev is not None:
            import torch

            torch.set_num_threads(torch_prev)


def loss_and_grad_peers(x: np.ndarray, y: np.ndarray, nt: int) -> dict[str, Callable[[], Any]]:
    """Callables computing the mean cross-entropy and its gradient w.r.t. the
    logits with each installed peer, on the same data."""
    fns: dict[str, Callable[[], Any]] = {}
    avail = available()
    if "torch" in avail:
        import torch
        import torch.nn.functional as F

        xt = torch.from_numpy(x)
        yt = torch.from_numpy(y)

        def torch_fwd_bwd() -> Any:
            xr = xt.detach().requires_grad_(True)
            loss = F.cross_entropy(xr, yt)
            loss.backward()
            return loss.item(), xr.grad

        fns["torch fwd+bwd"] = torch_fwd_bwd
    if "jax" in avail:
        try:
            import jax
            import jax.numpy as jnp

            if x.dtype == np.float64:
                jax.config.update("jax_enable_x64", True)

            def loss_fn(logits: Any, labels: Any) -> Any:
                logp = jax.nn.log_softmax(logits, axis=-1)
                return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=-1))

            vg = jax.jit(jax.value_and_grad(loss_fn))
            xj, yj = jnp.asarray(x), jnp.asarray(y)

            def jax_vg() -> Any:
                v, g = vg(xj, yj)
                g.block_until_ready()
                return v, g

            fns["jax jit value_and_grad"] = jax_vg
        except Exception:  # a broken JAX install must not break the benchmark
            pass
    if "sklearn" in avail:
        try:
            from sklearn._loss.loss import HalfMultinomialLoss

            loss = HalfMultinomialLoss(n_classes=x.shape[1])
            yf = y.astype(x.dtype)
            g = np.empty_like(x)

            def sklearn_loss_gradient() -> Any:
                return loss.loss_gradient(yf, x, gradient_out=g, n_threads=nt)

            fns["sklearn HalfMultinomialLoss"] = sklearn_loss_gradient
        except Exception:
            pass
    return fns
