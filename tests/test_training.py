"""Training with ce_fast: the workloads of benchmarks/bench_training.py, small.

* L-BFGS-B multinomial logistic regression driven by
  ``ce_fast.cross_entropy_and_grad`` reaches scikit-learn's
  ``LogisticRegression`` fit on the digits data (same objective:
  mean cross-entropy + ||W||^2 / (2 C n), intercept unpenalised);
* the chain-rule gradient w.r.t. (W, b) agrees with finite differences;
* SGD on a two-layer tanh network gives the same losses with ce_fast and with
  ``ce_fast.reference`` (float64) and the loss goes down.

The helpers are repeated here (not imported from benchmarks/) so that the
test runs against an installed wheel.
"""

from __future__ import annotations

import numpy as np
import pytest

import ce_fast
import ce_fast.reference as ref

optimize = pytest.importorskip("scipy.optimize")


@pytest.fixture(autouse=True)
def _one_thread():
    """Small matmuls: extra BLAS/OpenMP threads only add contention (on a busy
    2-core machine, 20x slower fits)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        yield
        return
    with threadpool_limits(limits=1):
        yield


def objective(theta, X, y, C, loss_and_grad):
    """sklearn's lbfgs multinomial objective and its gradient; theta = [W.ravel(), b]."""
    n, d = X.shape
    k = theta.size // (d + 1)
    W, b = theta[: d * k].reshape(d, k), theta[d * k :]
    loss, G = loss_and_grad(X @ W + b, y)
    grad = np.concatenate([(X.T @ G + W / (C * n)).ravel(), G.sum(axis=0)])
    return float(loss + np.sum(W * W) / (2 * C * n)), grad


def fit_logistic(X, y, C, loss_and_grad):
    d, k = X.shape[1], int(y.max()) + 1
    res = optimize.minimize(
        objective,
        np.zeros(d * k + k),
        args=(X, y, C, loss_and_grad),
        method="L-BFGS-B",
        jac=True,
        options={"maxiter": 10000, "maxls": 50, "gtol": 1e-10, "ftol": 1e-14},
    )
    return res.x[: d * k].reshape(d, k), res.x[d * k :], res


def train_mlp(X, y, loss_and_grad, *, hidden=16, epochs=5, batch=32, lr=0.1, seed=0):
    rng = np.random.default_rng(seed)
    (n, d), k = X.shape, int(y.max()) + 1
    W1, b1 = rng.standard_normal((d, hidden)) / np.sqrt(d), np.zeros(hidden)
    W2, b2 = rng.standard_normal((hidden, k)) / np.sqrt(hidden), np.zeros(k)
    G = np.empty((batch, k))  # reused gradient buffer (the last batch is shorter)
    losses = []
    for _ in range(epochs):
        order = rng.permutation(n)
        for s in range(0, n, batch):
            i = order[s : s + batch]
            h = np.tanh(X[i] @ W1 + b1)
            loss, g = loss_and_grad(h @ W2 + b2, y[i], out=G[: len(i)])
            gh = (g @ W2.T) * (1.0 - h * h)
            W2 -= lr * (h.T @ g)
            b2 -= lr * g.sum(axis=0)
            W1 -= lr * (X[i].T @ gh)
            b1 -= lr * gh.sum(axis=0)
            losses.append(float(loss))
    return np.array(losses), (W1, b1, W2, b2)


def blobs(rng, n=200, d=8, k=5):
    centres = rng.standard_normal((k, d)) * 2.0
    y = rng.integers(0, k, n)
    return centres[y] + rng.standard_normal((n, d)), y.astype(np.int64)


def test_lbfgs_reaches_sklearn_logistic_regression():
    datasets = pytest.importorskip("sklearn.datasets")
    linear_model = pytest.importorskip("sklearn.linear_model")
    X, y = datasets.load_digits(return_X_y=True)
    sd = X.std(axis=0)
    X = (X - X.mean(axis=0)) / np.where(sd == 0, 1.0, sd)
    y = y.astype(np.int64)
    C = 1.0

    W, b, res = fit_logistic(X, y, C, ce_fast.cross_entropy_and_grad)
    assert res.success, res.message
    sk = linear_model.LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(X, y)
    W_sk, b_sk = sk.coef_.T, sk.intercept_

    log_loss = float(ref.cross_entropy(X @ W + b, y))
    log_loss_sk = float(ref.cross_entropy(X @ W_sk + b_sk, y))
    assert abs(log_loss - log_loss_sk) <= 1e-6 * log_loss_sk
    obj_sk = objective(np.concatenate([W_sk.ravel(), b_sk]), X, y, C, ref.cross_entropy_and_grad)[0]
    assert abs(res.fun - obj_sk) <= 1e-9 * obj_sk  # same objective, same minimum
    np.testing.assert_allclose(W, W_sk, rtol=0, atol=2e-5 * np.abs(W_sk).max())
    # the intercept is unpenalised, hence defined up to a common shift
    np.testing.assert_allclose(b - b.mean(), b_sk - b_sk.mean(), rtol=0, atol=2e-5 * np.abs(b_sk).max())
    assert np.mean(np.argmax(X @ W + b, axis=1) == sk.predict(X)) == 1.0


def test_chain_rule_gradient_matches_finite_differences(rng):
    X, y = blobs(rng, n=60, d=6, k=4)
    theta = 0.3 * rng.standard_normal(6 * 4 + 4)
    h = 1e-5 * np.eye(theta.size)
    for lg in (ce_fast.cross_entropy_and_grad, ref.cross_entropy_and_grad):
        f = lambda t, lg=lg: objective(t, X, y, 0.5, lg)[0]  # noqa: E731
        g = objective(theta, X, y, 0.5, lg)[1]
        central = np.array([(f(theta + e) - f(theta - e)) / 2e-5 for e in h])
        np.testing.assert_allclose(g, central, rtol=0, atol=1e-8 * np.abs(g).max())
        assert optimize.check_grad(f, lambda t, lg=lg: objective(t, X, y, 0.5, lg)[1], theta) < 1e-5
    # and ce_fast's value and gradient are the reference's to rounding
    v, gv = objective(theta, X, y, 0.5, ce_fast.cross_entropy_and_grad)
    v_ref, gv_ref = objective(theta, X, y, 0.5, ref.cross_entropy_and_grad)
    assert v == pytest.approx(v_ref, rel=1e-13)
    np.testing.assert_allclose(gv, gv_ref, rtol=1e-11, atol=1e-14)


def test_mlp_sgd_same_losses_as_reference_and_learns(rng):
    X, y = blobs(rng, n=200, d=8, k=5)  # 200 = 6 full batches of 32 + one of 8
    losses, params = train_mlp(X, y, ce_fast.cross_entropy_and_grad)
    losses_ref, params_ref = train_mlp(X, y, ref.cross_entropy_and_grad)
    np.testing.assert_allclose(losses, losses_ref, rtol=1e-10, atol=0)
    for p, p_ref in zip(params, params_ref):
        np.testing.assert_allclose(p, p_ref, rtol=1e-10, atol=1e-12)
    steps = losses.size // 5
    assert losses[-steps:].mean() < 0.5 * losses[:steps].mean()
