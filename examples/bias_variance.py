"""The bias-variance experiment: a quartic MAP fit of a cubic over many resampled training sets.

Lecture items (see /work/shared/lectures.md): §9.26 (cubic ground truth, quartic model with a
Gaussian likelihood and a Gaussian prior, MAP fit, "Num runs: 1000"; bias² falls and variance
rises as the prior loosens, their sum tracks the test error); §3.10 (the decomposition
E_D[(y − f_D(x))²] = bias² + variance + noise).

Ground truth f(x) = x³ − x on [−1, 1], targets with Gaussian noise σ = 0.3, N = 15 points per
training set. The model is a quartic in the Legendre basis P₀..P₄ (well conditioned on
[−1, 1]); MAP with prior w ~ N(0, σ₀² I) is ridge regression with λ = σ²/σ₀². For each prior
width all R training sets (R = 1000, 200 with --quick) are fitted at once by gradient descent
(heavy-ball momentum) on the negative log posterior, batched over the runs (one compiled `gc.value_and_grad` on a
(R, N, 5) design tensor), and checked against the closed form solved on the host. On a test
grid: bias² = mean_x (E_D f_D(x) − f(x))², variance = mean_x Var_D f_D(x), and the expected
test error bias² + variance + σ².

    python examples/bias_variance.py [--backend numpy] [--quick] [--out out/]

writes out/bias_variance.svg (bias², variance and their sum against the prior width).
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc

import _common as C

N, SIGMA, DEGREE, STEPS = 15, 0.3, 4, 1500
PRIOR_SD = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)        # σ₀, from a tight to a loose prior


def truth(x):
    return x ** 3 - x


def features(x):
    return np.polynomial.legendre.legvander(x, DEGREE)   # (..., 5)


def neg_log_posterior(w, X, t, lam):
    """Sum over the R runs of  ½Σ(Xw − t)² + ½λ|w|²  (w: (R, 5, 1), X: (R, N, 5))."""
    r = gc.matmul(X, w)[..., 0] - t
    return 0.5 * gc.sum(r * r) + 0.5 * lam * gc.sum(w * w)


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv, epochs=1000, quick_epochs=200)  # "epochs" = runs here
    args.out.mkdir(parents=True, exist_ok=True)
    C.banner("Bias-variance experiment: quartic MAP fits of a cubic", args)
    t0 = time.perf_counter()
    R = args.epochs
    rng = np.random.default_rng(args.seed)
    xs = rng.uniform(-1, 1, (R, N))
    ts = truth(xs) + SIGMA * rng.standard_normal((R, N))
    X = features(xs)                                   # (R, N, 5)
    grid = np.linspace(-1, 1, 101)
    G = features(grid)                                 # (101, 5)
    step = gc.compile(gc.value_and_grad(neg_log_posterior), backend=args.backend)
    rows, max_diff = [], 0.0
    eig = np.linalg.eigvalsh(np.transpose(X, (0, 2, 1)) @ X)          # (R, 5), ascending
    for sd in PRIOR_SD:
        lam = SIGMA ** 2 / sd ** 2
        # heavy-ball momentum with each run's optimal step and momentum (from the extreme
        # eigenvalues L, mu of its Hessian X'X + lam I): converges in ~sqrt(L/mu) steps
        L, mu = np.sqrt(eig[:, -1] + lam), np.sqrt(eig[:, 0] + lam)
        lr = (4 / (L + mu) ** 2)[:, None, None]
        beta = (((L - mu) / (L + mu)) ** 2)[:, None, None]
        w, v = np.zeros((R, DEGREE + 1, 1)), np.zeros((R, DEGREE + 1, 1))
        for _ in range(STEPS):                         # all runs at once
            _, g = step(w, X, ts, lam)
            v = beta * v - lr * np.asarray(g)
            w = w + v
        closed = np.linalg.solve(np.transpose(X, (0, 2, 1)) @ X + lam * np.eye(DEGREE + 1),
                                 np.transpose(X, (0, 2, 1)) @ ts[..., None])
        max_diff = max(max_diff, float(np.abs(w - closed).max()))
        preds = (G @ w)[..., 0]                        # (R, 101)
        bias2 = float(np.mean((preds.mean(0) - truth(grid)) ** 2))
        variance = float(np.mean(preds.var(0)))
        rows.append({"prior_sd": sd, "lambda": lam, "bias2": bias2, "variance": variance,
                     "test_error": bias2 + variance + SIGMA ** 2})
        print(f"   prior sd {sd:6.2f} (lambda {lam:8.3f}): bias^2 {bias2:.4f}  variance "
              f"{variance:.4f}  bias^2+variance {bias2 + variance:.4f}")
    best = min(rows, key=lambda r: r["test_error"])
    print(f"   lowest expected test error at prior sd {best['prior_sd']} ({R} runs); "
          f"gradient descent vs closed form: max |dw| {max_diff:.1e}")
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    sds = [r["prior_sd"] for r in rows]
    for key, label in (("bias2", "bias²"), ("variance", "variance")):
        ax.plot(sds, [r[key] for r in rows], "o-", label=label)
    ax.plot(sds, [r["bias2"] + r["variance"] for r in rows], "k--", label="bias² + variance")
    ax.set(xscale="log", xlabel="prior standard deviation σ₀", ylabel="squared error")
    ax.legend()
    path = args.out / "bias_variance.svg"
    fig.savefig(path)
    plt.close(fig)
    print(f"   picture -> {path}")
    return C.finish({"rows": rows, "best_prior_sd": best["prior_sd"], "runs": R,
                     "max_gd_vs_closed_form": max_diff, "pictures": [path]}, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
