"""Race of the optimisers: SGD, momentum, Nesterov, Adagrad, RMSprop and Adam driving the same
compiled loss and gradient (lectures.md section 5: 5.1-5.3 GD/SGD, 5.5 momentum, 5.6 Nesterov,
5.7 Adagrad, 5.8 RMSProp, 5.9 Adam, 5.29 the "race of the optimizers"; section 9: 9.21 the
toy functions, 9.22 momentum vs GD, 9.24 Adagrad's sparse features).

Three races, each optimiser stepping through ONE compiled graph (loss, gradient and update):

1. the lecture's ill-conditioned quadratic R(θ) = 10θ₁² + 0.5θ₂² (9.21), 100 steps, and the
   Rosenbrock function (1 − x)² + 100(y − x²)² (a curved, narrow valley);
2. an MLP (64-64-10, ReLU) on the scikit-learn digits, trained with graphc.train.TrainStep;
3. Adagrad's per-coordinate step sizes on the lecture's 8-row sparse-feature table (9.24).

The SGD family (plain, momentum 0.9, Nesterov) shares one learning rate so that the difference
is the momentum term alone (lecture 9.22: after 100 steps momentum is far ahead of plain GD);
the adaptive methods use their own customary rates, printed in the tables.

    python examples/optimizers.py [--backend numpy] [--quick] [--epochs N] [--out out/]

writes out/optimizers_toy.png (paths over contour lines, loss curves) and
out/optimizers_mlp.png (MLP training loss per epoch).
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C  # noqa: E402


from _common import blas_threads, load_digits_split, pyplot  # noqa: E402
from _common import parse_and_announce as parse_args  # noqa: E402


# ---- 1. toy functions -------------------------------------------------------------------------
def quadratic(p):
    """The lecture's ill-conditioned quadratic R(θ) = 10θ₁² + 0.5θ₂² (Hessian eigenvalues 20
    and 1: condition number 20)."""
    x = p["theta"]
    return 10.0 * x[0] ** 2 + 0.5 * x[1] ** 2


def rosenbrock(p):
    x = p["theta"]
    return (1.0 - x[0]) ** 2 + 100.0 * (x[1] - x[0] ** 2) ** 2


def toy_optimizers(problem):
    """(name -> optimiser) for a toy problem; the SGD family shares one LR."""
    if problem == "quadratic":
        lr, ada = 0.01, dict(Adagrad=1.0, RMSprop=0.1, Adam=0.5)
    else:
        lr, ada = 1e-3, dict(Adagrad=0.5, RMSprop=1e-2, Adam=0.05)
    return {
        "SGD": optim.SGD(lr=lr),
        "Momentum": optim.SGD(lr=lr, momentum=0.9),
        "Nesterov": optim.SGD(lr=lr, momentum=0.9, nesterov=True),
        "Adagrad": optim.Adagrad(lr=ada["Adagrad"], eps=1e-7),   # the lectures' δ = 1e-7
        "RMSprop": optim.RMSprop(lr=ada["RMSprop"], alpha=0.9, eps=1e-6),  # δ = 1e-6
        "Adam": optim.Adam(lr=ada["Adam"]),
    }


def race(loss_fn, opt, start, steps, backend):
    """Minimise loss_fn from `start` for `steps` compiled steps -> (losses (steps+1,), path)."""
    def step(p, s, lr):
        value, g = gc.value_and_grad(loss_fn)(p)
        p, s = opt.update(g, s, p, lr=lr)
        return value, p, s

    step = gc.compile(step, backend=backend)
    p = {"theta": np.array(start, np.float64)}
    s = opt.init(p)
    losses, path = [], [p["theta"].copy()]
    for _ in range(steps):
        value, p, s = step(p, s, opt.lr)
        losses.append(float(value))
        path.append(np.array(p["theta"]))
    losses.append(float(loss_fn(p)))
    return np.array(losses), np.array(path)


# ---- 2. an MLP on digits ------------------------------------------------------------------------
def mlp(seed=0):
    return nn.Sequential(nn.Linear(64, 64, seed=seed), nn.ReLU(), nn.Linear(64, 10, seed=seed + 1))


def mlp_optimizers():
    lr = 0.02
    return {
        "SGD": optim.SGD(lr=lr),
        "Momentum": optim.SGD(lr=lr, momentum=0.9),
        "Nesterov": optim.SGD(lr=lr, momentum=0.9, nesterov=True),
        "Adagrad": optim.Adagrad(lr=0.05),
        "RMSprop": optim.RMSprop(lr=1e-3),
        "Adam": optim.Adam(lr=1e-3),
    }


# ---- 3. Adagrad's sparse features (9.24) -------------------------------------------------------
ADAGRAD_TABLE = np.array([  # y, φ1 (frequent, irrelevant), φ2, φ3 (rare, predictive)
    [1, 1, 0, 0], [-1, .5, 0, 1], [1, -.5, 1, 0], [-1, 0, 0, 0],
    [1, .5, 0, 0], [-1, 1, 0, 0], [1, -1, 1, 0], [-1, -.5, 0, 1]], np.float64)


def adagrad_sparse(backend, epochs=5):
    """Per-sample Adagrad on the squared error of a linear model w·φ ≈ y over the table:
    returns (the effective per-coordinate step sizes lr/(√G + δ) after `epochs` passes, w)."""
    y, phi = ADAGRAD_TABLE[:, 0], ADAGRAD_TABLE[:, 1:]
    opt = optim.Adagrad(lr=0.5, eps=1e-7)

    def loss(p, x, t):
        return 0.5 * (gc.sum(p["w"] * x) - t) ** 2

    def step(p, s, x, t):
        g = gc.grad(loss)(p, x, t)
        return opt.update(g, s, p)

    step = gc.compile(step, backend=backend)
    p = {"w": np.zeros(3)}
    s = opt.init(p)
    for _ in range(epochs):
        for x, t in zip(phi, y):
            p, s = step(p, s, x, t)
    eff = opt.lr / (np.sqrt(s["sum"]["w"]) + opt.eps)
    return eff, p["w"]


# ---- pictures -----------------------------------------------------------------------------------
def plot_toys(results, path):
    plt = pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 9))
    grids = {"quadratic": (np.linspace(-2, 2, 200), np.linspace(-2, 9, 200)),
             "rosenbrock": (np.linspace(-2, 2, 200), np.linspace(-1, 3, 200))}
    for col, (problem, runs) in enumerate(results.items()):
        gx, gy = grids[problem]
        X, Y = np.meshgrid(gx, gy)
        fn = quadratic if problem == "quadratic" else rosenbrock
        Z = fn({"theta": np.stack([X, Y])})
        ax = axes[0, col]
        ax.contour(X, Y, np.log10(Z + 1e-3), levels=25, cmap="Greys", linewidths=0.6)
        for name, (losses, path_) in runs.items():
            ax.plot(path_[:, 0], path_[:, 1], ".-", ms=2, lw=1, label=name)
        ax.plot(*((0, 0) if problem == "quadratic" else (1, 1)), "k*", ms=12)
        ax.set_xlim(gx[0], gx[-1])
        ax.set_ylim(gy[0], gy[-1])
        formula = {"quadratic": "10θ₁² + 0.5θ₂²", "rosenbrock": "(1 − x)² + 100(y − x²)²"}
        ax.set_title(f"{formula[problem]}: paths")
        ax.legend(fontsize=8)
        ax = axes[1, col]
        for name, (losses, _) in runs.items():
            ax.semilogy(np.maximum(losses, 1e-16), label=name)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_title(f"{problem}: loss")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_mlp(histories, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, h in histories.items():
        ep = np.arange(1, len(h.train_loss) + 1)
        axes[0].semilogy(ep, h.train_loss, ".-", label=name)
        axes[1].plot(ep, h.val_acc, ".-", label=name)
    axes[0].set(xlabel="epoch", ylabel="training loss", title="MLP on digits: training loss")
    axes[1].set(xlabel="epoch", ylabel="test accuracy", title="MLP on digits: test accuracy")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# ---- main ----------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    args = parse_args(argv, __doc__, "Race of the optimisers", epochs=15, quick_epochs=3)
    with blas_threads(1):
        return run(args)


def run(args) -> dict:
    t0 = time.perf_counter()
    steps = {"quadratic": 100, "rosenbrock": 400 if args.quick else 2000}
    starts = {"quadratic": [-1.5, 8.0], "rosenbrock": [-1.5, 2.0]}
    metrics: dict = {"toy": {}, "mlp": {}}
    toy_runs = {}
    for problem, fn in (("quadratic", quadratic), ("rosenbrock", rosenbrock)):
        print(f"\n{problem}: {steps[problem]} steps from {starts[problem]}")
        print(f"  {'optimiser':10s} {'lr':>7s} {'initial':>10s} {'final loss':>12s}")
        toy_runs[problem] = {}
        for name, opt in toy_optimizers(problem).items():
            losses, path = race(fn, opt, starts[problem], steps[problem], args.backend)
            toy_runs[problem][name] = (losses, path)
            metrics["toy"].setdefault(problem, {})[name] = float(losses[-1])
            print(f"  {name:10s} {opt.lr:7.3g} {losses[0]:10.4g} {losses[-1]:12.4g}")

    epochs = args.epochs
    xtr, ytr, xte, yte = load_digits_split(args.seed)
    print(f"\nMLP 64-64-10 on digits ({len(xtr)} train / {len(xte)} test), {epochs} epochs, "
          f"batch 32")
    print(f"  {'optimiser':10s} {'lr':>7s} {'train loss':>11s} {'test acc':>9s} {'s/epoch':>8s}")
    histories = {}
    for name, opt in mlp_optimizers().items():
        step = gc.train.TrainStep(mlp(), F.cross_entropy, opt, backend=args.backend)
        h = gc.train.fit(step, xtr, ytr, epochs=epochs, batch_size=32, val=(xte, yte),
                         restore_best=False, progress=False)
        histories[name] = h
        metrics["mlp"][name] = {"train_loss": h.train_loss[-1], "test_acc": h.val_acc[-1]}
        last = step
        print(f"  {name:10s} {opt.lr:7.3g} {h.train_loss[-1]:11.4f} {h.val_acc[-1]:9.3f} "
              f"{h.seconds / epochs:8.3f}")

    C.show_code(last.compiled, args)
    eff, w = adagrad_sparse(args.backend)
    metrics["adagrad_step_sizes"] = eff.tolist()
    print("\nAdagrad on the lecture's sparse features (9.24), effective step lr/(√G+δ) per "
          "feature:\n  " + "  ".join(f"φ{i + 1}: {e:.3f}" for i, e in enumerate(eff))
          + f"\n  (φ1 is frequent and irrelevant: its step shrinks; the rare φ2, φ3 keep large"
            f" steps); weights {np.round(w, 3).tolist()}")

    pictures = [os.path.join(args.out, "optimizers_toy.png"),
                os.path.join(args.out, "optimizers_mlp.png")]
    plot_toys(toy_runs, pictures[0])
    plot_mlp(histories, pictures[1])
    metrics["pictures"] = pictures
    metrics["seconds"] = time.perf_counter() - t0
    print(f"\nwrote {', '.join(pictures)} ({metrics['seconds']:.1f} s)")
    return metrics


if __name__ == "__main__":
    main(sys.argv[1:])
