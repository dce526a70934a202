"""Regenerate the exp polynomials of src/ce_vecmath.h: Q such that
exp(r) ~ 1 + r + r^2 Q(r) with minimal relative error on |r| <= ln2/2.

float32 (Q of degree 4): a linear program (scipy HiGHS) on 3000 Chebyshev
points in double precision, plenty for float coefficients. float64 (Q of
degree 9): a Remez exchange in 50-digit mpmath. Prints the coefficients (Q's
constant term first) and the achieved maximum relative error.

    python tools/exp_minimax.py      # needs numpy, scipy, mpmath
"""

import mpmath as mp
import numpy as np
from scipy.optimize import linprog

A = np.log(2) / 2 * (1 + 1e-6)  # a hair beyond ln2/2: the reduction's rounding


def rel_err(q, x):
    x = mp.mpf(x)
    return abs((1 + x + x * x * mp.polyval([mp.mpf(c) for c in q[::-1]], x) - mp.exp(x)) / mp.exp(x))


def fit_lp(dq):
    r = np.cos(np.linspace(0, np.pi, 3001)) * A
    r = r[np.abs(r) > 1e-4]
    g = np.array([float(mp.expm1(mp.mpf(x)) - mp.mpf(x)) for x in r])  # exp(r) - 1 - r
    w = np.exp(-r)
    V = np.stack([r ** (j + 2) for j in range(dq + 1)], 1) * w[:, None]
    ones = np.ones((len(r), 1))
    res = linprog(
        np.r_[np.zeros(dq + 1), 1.0],
        A_ub=np.vstack([np.hstack([V, -ones]), np.hstack([-V, -ones])]),
        b_ub=np.r_[g * w, -g * w],
        bounds=[(None, None)] * (dq + 1) + [(0, None)],
        method="highs",
    )
    return [float(c) for c in res.x[: dq + 1]]


def fit_remez(dq, iters=30):
    mp.mp.dps = 50
    a = mp.log(2) / 2 * (1 + mp.mpf("1e-6"))
    n = dq + 2
    xs = [a * mp.cos(mp.pi * (n - 1 - i) / (n - 1)) for i in range(n)]
    grid = [a * mp.cos(mp.pi * k / 4000) for k in range(4001)][::-1]
    for _ in range(iters):
        M = mp.matrix(n, n)
        b = mp.matrix(n, 1)
        for i, x in enumerate(xs):
            for j in range(dq + 1):
                M[i, j] = x ** (j + 2)
            M[i, dq + 1] = (-1) ** i * mp.e**x
            b[i] = mp.e**x - 1 - x
        sol = mp.lu_solve(M, b)
        q = [sol[j] for j in range(dq + 1)]
        vals = [(1 + x + x * x * mp.polyval(q[::-1], x) - mp.e**x) / mp.e**x for x in grid]
        ext, seg = [], [0]
        for k in range(1, len(grid)):
            if (vals[k] >= 0) != (vals[seg[-1]] >= 0):
                ext.append(max(seg, key=lambda i: abs(vals[i])))
                seg = [k]
            else:
                seg.append(k)
        ext.append(max(seg, key=lambda i: abs(vals[i])))
        while len(ext) > n:
            ext.pop(0 if abs(vals[ext[0]]) < abs(vals[ext[-1]]) else -1)
        if len(ext) < n:
            break
        xs = [grid[i] for i in ext]
    return q


if __name__ == "__main__":
    check = np.linspace(-A, A, 2001)
    q32 = [float(np.float32(c)) for c in fit_lp(4)]
    print("float32 Q:", ", ".join(f"{c:.10e}" for c in q32))
    print("  max rel err", max(rel_err(q32, x) for x in check))
    q64 = [float(c) for c in fit_remez(9)]
    print("float64 Q:", ", ".join(f"{c:.18e}" for c in q64))
    print("  max rel err", max(rel_err(q64, x) for x in check))
