"""Real workloads: training with ce_fast on scikit-learn's digits data.

Two small models on ``sklearn.datasets.load_digits`` (1797 x 64, 10 classes,
features standardised), each trained once with every loss backend that is
available and compared:

(a) Multinomial logistic regression fitted with SciPy's L-BFGS-B, with the
    objective of scikit-learn's ``LogisticRegression(C=C)`` (lbfgs,
    multinomial, L2, intercept unpenalised), i.e. for n samples

        mean_i CE(x_i @ W + b, y_i)  +  ||W||_F^2 / (2 * C * n)

    (sklearn/linear_model/_logistic.py: ``l2_reg_strength = 1.0 / (C * sw_sum)``
    with ``sw_sum = n_samples``; sklearn/linear_model/_linear_loss.py:
    ``LinearModelLoss.loss_gradient`` = mean loss + ``0.5 * l2_reg_strength *
    ||weights||^2``, ``weights`` without the intercept column). The loss and
    its gradient w.r.t. the logits come from ``ce_fast.cross_entropy_and_grad``
    (or ``ce_fast.reference`` / PyTorch for comparison); the chain rule to
    (W, b) is two NumPy matmuls. Reported: final objective and log-loss, their
    relative difference to sklearn's own fit, L-BFGS iterations and function
    evaluations, the median time of one objective evaluation (at this size
    dominated by the matmuls) and of the loss+gradient call alone.

(b) A two-layer network 64 -> 64 (tanh) -> 10 trained with minibatch SGD
    (seeded shuffles and initialisation, batch 64, lr 0.1, 30 epochs, 75/25
    seeded train/test split); the output-layer loss and gradient come from the
    backend, written into one reused ``out=`` buffer. Reported: train/test
    accuracy, the median epoch time and the part of it spent in the loss call,
    and the largest difference of each backend's per-epoch loss curve from
    ce_fast's (float64: equal to rounding).

Everything is float64. ``--png FILE`` writes the loss curves of (b) to FILE
(needs matplotlib; without ``--png`` no file is written). The default run
takes about 20-40 s on 2 cores.

Usage: python benchmarks/bench_training.py [--no-torch] [--no-reference]
       [--png FILE] [--C 1.0] [--epochs 30] [--hidden 64] [--batch 64]
       [--lr 0.1] [--seed 0] [--repeats 7]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import statistics
import sys
import time

import numpy as np
from scipy.optimize import minimize

import ce_fast
import ce_fast.reference

# ---------------------------------------------------------------------------
# The reusable pieces: `loss_and_grad(logits, y, out=None) -> (loss, dloss/dlogits)`
# is ce_fast.cross_entropy_and_grad or anything with its signature.
# ---------------------------------------------------------------------------


def logistic_objective(theta, X, y, C, loss_and_grad):
    """sklearn's multinomial LogisticRegression objective and its gradient:
    mean cross-entropy + ||W||^2 / (2 C n), intercept b not penalised."""
    n, d = X.shape
    k = theta.size // (d + 1)  # theta = [W.ravel(), b] with W: d x k
    W, b = theta[: d * k].reshape(d, k), theta[d * k :]
    loss, G = loss_and_grad(X @ W + b, y)  # G = d(mean loss)/d(logits), n x k
    obj = loss + np.sum(W * W) / (2 * C * n)
    grad = np.concatenate([(X.T @ G + W / (C * n)).ravel(), G.sum(axis=0)])
    return float(obj), grad


def fit_logistic(X, y, C, loss_and_grad, **options):
    """Fit W (d x k), b (k) with L-BFGS-B; returns (W, b, scipy's result)."""
    d, k = X.shape[1], int(y.max()) + 1
    opts = {"maxiter": 10000, "maxls": 50, "gtol": 1e-10, "ftol": 1e-14, **options}
    res = minimize(
        logistic_objective,
        np.zeros(d * k + k),
        args=(X, y, C, loss_and_grad),
        method="L-BFGS-B",
        jac=True,
        options=opts,
    )
    return res.x[: d * k].reshape(d, k), res.x[d * k :], res


def train_mlp(X, y, loss_and_grad, *, hidden=64, epochs=30, batch=64, lr=0.1, seed=0):
    """d -> hidden (tanh) -> k network, minibatch SGD on the mean cross-entropy.
    Returns (params, per-epoch mean training loss)."""
    rng = np.random.default_rng(seed)
    (n, d), k = X.shape, int(y.max()) + 1
    W1, b1 = rng.standard_normal((d, hidden)) / np.sqrt(d), np.zeros(hidden)
    W2, b2 = rng.standard_normal((hidden, k)) / np.sqrt(hidden), np.zeros(k)
    G = np.empty((batch, k))  # gradient buffer, reused by every step
    curve = []
    for _ in range(epochs):
        order, total = rng.permutation(n), 0.0
        for s in range(0, n, batch):
            i = order[s : s + batch]
            x, t = X[i], y[i]
            h = np.tanh(x @ W1 + b1)
            loss, g = loss_and_grad(h @ W2 + b2, t, out=G[: len(i)])  # d loss/d logits
            gh = (g @ W2.T) * (1.0 - h * h)  # back through W2 and tanh
            W2 -= lr * (h.T @ g)
            b2 -= lr * g.sum(axis=0)
            W1 -= lr * (x.T @ gh)
            b1 -= lr * gh.sum(axis=0)
            total += float(loss) * len(i)
        curve.append(total / n)
    return (W1, b1, W2, b2), curve


def mlp_predict(params, X):
    W1, b1, W2, b2 = params
    return np.argmax(np.tanh(X @ W1 + b1) @ W2 + b2, axis=1)


# ---------------------------------------------------------------------------
# Backends, data, timing
# ---------------------------------------------------------------------------


def torch_loss_and_grad(logits, y, out=None):
    """torch.nn.functional.cross_entropy + autograd, float64, same signature."""
    import torch

    z = torch.from_numpy(logits).requires_grad_()
    loss = torch.nn.functional.cross_entropy(z, torch.from_numpy(y))
    loss.backward()
    g = z.grad.numpy()
    if out is not None:
        out[...] = g
        g = out
    return loss.item(), g


def backends(use_torch, use_reference):
    b = {"ce_fast": ce_fast.cross_entropy_and_grad}
    if use_reference:
        b["reference"] = ce_fast.reference.cross_entropy_and_grad
    if use_torch:
        try:
            import torch  # noqa: F401
        except ImportError:
            print("(PyTorch not installed: skipped)\n")
        else:
            b["torch"] = torch_loss_and_grad
    return b


def standardise(X, like=None):
    """(X - mean) / std with the statistics of `like` (default X); constant
    features (std 0) are only centred, as sklearn's StandardScaler."""
    like = X if like is None else like
    mu, sd = like.mean(axis=0), like.std(axis=0)
    return (X - mu) / np.where(sd == 0, 1.0, sd)


def median_time(fn, repeats, number):
    """Median over `repeats` of the mean time of `number` calls, in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - t0) / number)
    return statistics.median(times)


def us(t):
    return f"{t * 1e6:.1f} µs"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    print("\n".join(out) + "\n")


@contextlib.contextmanager
def thread_limit(n, torch_too):
    """Every library at n threads (n = 0: leave the defaults). At these sizes
    (1797 x 64 @ 64 x 10) threads mostly add contention: spinning OpenMP
    workers of one library steal the cores another library's BLAS threads
    are waiting for."""
    if n <= 0:
        yield
        return
    old = None
    if torch_too:
        import torch

        old = torch.get_num_threads()
        torch.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        print("(threadpoolctl not installed: BLAS/OpenMP thread counts left at their defaults)\n")
        threadpool_limits = None
    try:
        if threadpool_limits is None:
            yield
        else:
            with threadpool_limits(limits=n):
                yield
    finally:
        if old is not None:
            torch.set_num_threads(old)


class Timed:
    """Wraps a loss_and_grad and accumulates the time spent inside it."""

    def __init__(self, fn):
        self.fn, self.seconds = fn, 0.0

    def __call__(self, *args, **kw):
        t0 = time.perf_counter()
        r = self.fn(*args, **kw)
        self.seconds += time.perf_counter() - t0
        return r


# ---------------------------------------------------------------------------
# The two workloads
# ---------------------------------------------------------------------------


def bench_logistic(X, y, C, bk, repeats):
    from sklearn.linear_model import LogisticRegression

    n, d = X.shape
    xent = ce_fast.reference.cross_entropy  # one yardstick for every log-loss

    t0 = time.perf_counter()
    sk = LogisticRegression(C=C, tol=1e-10, max_iter=10000).fit(X, y)
    sk_time = time.perf_counter() - t0
    W_sk, b_sk = sk.coef_.T, sk.intercept_
    theta_sk = np.concatenate([W_sk.ravel(), b_sk])
    sk_obj = logistic_objective(theta_sk, X, y, C, ce_fast.reference.cross_entropy_and_grad)[0]
    sk_ll = float(xent(X @ W_sk + b_sk, y))

    rows = []
    for name, lg in bk.items():
        t0 = time.perf_counter()
        W, b, res = fit_logistic(X, y, C, lg)
        fit_time = time.perf_counter() - t0
        ll = float(xent(X @ W + b, y))
        Z = X @ W + b
        t_eval = median_time(lambda: logistic_objective(res.x, X, y, C, lg), repeats, 50)
        t_lg = median_time(lambda: lg(Z, y), repeats, 200)
        rows.append(
            [
                name,
                f"{res.fun:.12f}",
                f"{(res.fun - sk_obj) / sk_obj:+.1e}",
                f"{ll:.12f}",
                f"{(ll - sk_ll) / sk_ll:+.1e}",
                f"{np.max(np.abs(W - W_sk)):.1e}",
                res.nit,
                res.nfev,
                f"{fit_time:.2f} s",
                us(t_eval),
                us(t_lg),
            ]
        )
    rows.append(
        [
            "sklearn LogisticRegression",
            f"{sk_obj:.12f}",
            "0",
            f"{sk_ll:.12f}",
            "0",
            "0",
            int(sk.n_iter_[0]),
            "-",
            f"{sk_time:.2f} s",
            "-",
            "-",
        ]
    )
    print(f"## (a) Multinomial logistic regression, L-BFGS-B, C={C} (digits, {n}x{d}, 10 classes)\n")
    print(
        "objective = mean cross-entropy + ||W||²/(2·C·n), intercept unpenalised "
        "(sklearn's lbfgs objective). Log-loss = mean cross-entropy on the training data. "
        "Time/eval = one objective+gradient evaluation (two matmuls + the loss call), "
        f"median of {repeats}×50; loss+grad = the backend call alone on the 1797×10 logits, "
        f"median of {repeats}×200.\n"
    )
    table(
        [
            "backend",
            "objective",
            "rel. Δ obj vs sklearn",
            "log-loss",
            "rel. Δ log-loss vs sklearn",
            "max abs ΔW vs sklearn",
            "iterations",
            "f-evals",
            "fit time",
            "time/eval",
            "loss+grad only",
        ],
        rows,
    )


def bench_mlp(X, y, bk, args):
    rng = np.random.default_rng(args.seed)
    perm = rng.permutation(len(y))
    ntr = int(0.75 * len(y))
    tr, te = perm[:ntr], perm[ntr:]
    Xtr, Xte = standardise(X[tr]), standardise(X[te], like=X[tr])
    ytr, yte = y[tr], y[te]
    kw = dict(hidden=args.hidden, epochs=args.epochs, batch=args.batch, lr=args.lr, seed=args.seed)

    curves, rows = {}, []
    for name, lg in bk.items():
        epoch_times, loss_times = [], []
        for _ in range(max(1, args.repeats // 2)):
            timed = Timed(lg)
            t0 = time.perf_counter()
            params, curve = train_mlp(Xtr, ytr, timed, **kw)
            epoch_times.append((time.perf_counter() - t0) / args.epochs)
            loss_times.append(timed.seconds / args.epochs)
        curves[name] = np.array(curve)
        rows.append(
            [
                name,
                f"{curve[-1]:.10f}",
                f"{np.mean(mlp_predict(params, Xtr) == ytr):.4f}",
                f"{np.mean(mlp_predict(params, Xte) == yte):.4f}",
                f"{statistics.median(epoch_times) * 1e3:.2f} ms",
                f"{statistics.median(loss_times) * 1e3:.2f} ms",
                f"{np.max(np.abs(curves[name] - curves['ce_fast'])):.1e}",
            ]
        )
    steps = -(-len(ytr) // args.batch)
    print(
        f"## (b) Two-layer network 64→{args.hidden} (tanh)→10, SGD batch {args.batch}, lr {args.lr}, "
        f"{args.epochs} epochs ({steps} steps/epoch; train {len(ytr)}, test {len(yte)})\n"
    )
    print(
        f"Epoch time and the part spent in the loss+grad call: medians of "
        f"{max(1, args.repeats // 2)} trainings. Last column: largest difference of the "
        "per-epoch mean training loss from ce_fast's curve.\n"
    )
    table(
        [
            "backend",
            "final train loss",
            "train acc",
            "test acc",
            "epoch time",
            "in loss+grad",
            "max abs Δ curve vs ce_fast",
        ],
        rows,
    )
    marks = sorted({1, 2, 5, 10, 20, args.epochs} & set(range(1, args.epochs + 1)))
    table(["epoch"] + list(curves), [[e] + [f"{c[e - 1]:.12f}" for c in curves.values()] for e in marks])
    return curves


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for (name, c), style in zip(curves.items(), ["-", "--", ":"]):
        ax.plot(np.arange(1, len(c) + 1), c, style, label=name, lw=2)
    ax.set(xlabel="epoch", ylabel="mean training cross-entropy", yscale="log")
    ax.set_title("digits MLP, SGD: loss curve per backend")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"loss curves written to {path}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch")
    p.add_argument("--no-reference", action="store_true", help="skip ce_fast.reference")
    p.add_argument("--png", metavar="FILE", help="write the MLP loss curves to FILE (matplotlib)")
    p.add_argument("--C", type=float, default=1.0, help="inverse L2 strength, as sklearn (default 1)")
    p.add_argument("--epochs", type=int, default=30, help="MLP training epochs (default 30)")
    p.add_argument("--hidden", type=int, default=64, help="MLP hidden units (default 64)")
    p.add_argument("--batch", type=int, default=64, help="MLP minibatch size (default 64)")
    p.add_argument("--lr", type=float, default=0.1, help="MLP SGD learning rate (default 0.1)")
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the split and the initial weights (default 0)"
    )
    p.add_argument("--repeats", type=int, default=7, help="timing repeats (medians)")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads for BLAS, OpenMP (ce_fast) and PyTorch, via threadpoolctl and "
        "torch.set_num_threads (default 1; 0 = each library's default)",
    )
    args = p.parse_args(argv)
    if args.png and importlib.util.find_spec("matplotlib") is None:  # before the run, not after it
        sys.exit(
            '--png needs matplotlib: pip install matplotlib (or pip install ".[plot]" in the ce_fast clone)'
        )

    try:
        import sklearn
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("this benchmark needs scikit-learn (for the digits data and the reference fit)")
    import scipy

    X, y = load_digits(return_X_y=True)
    y = y.astype(np.int64)
    bk = backends(not args.no_torch, not args.no_reference)
    info = ce_fast.build_info()
    versions = f"ce_fast {ce_fast.__version__}, NumPy {np.__version__}, SciPy {scipy.__version__}, "
    versions += f"scikit-learn {sklearn.__version__}"
    if "torch" in bk:
        import torch

        versions += f", PyTorch {torch.__version__}"
    build = f"{info['isa']}, OpenMP {'on' if info['openmp'] else 'off'}"
    threads = f"{args.threads} each" if args.threads > 0 else "each library's default"
    print(f"# Training with ce_fast\n\n{versions}; ce_fast: {build}; float64 throughout.")
    print(f"Threads (--threads): {threads} for BLAS, OpenMP (ce_fast) and PyTorch.\n")

    with thread_limit(args.threads, "torch" in bk):
        bench_logistic(standardise(X.astype(np.float64)), y, args.C, bk, args.repeats)
        curves = bench_mlp(X.astype(np.float64), y, bk, args)
    if args.png:
        plot(curves, args.png)


if __name__ == "__main__":
    main()
