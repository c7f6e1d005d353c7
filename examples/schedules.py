"""Learning-rate schedules: the table of every schedule the lectures teach, their curves, the
lecture's linear-to-floor table, training with a few of them, and an LR range test
(lectures.md section 5: 5.14 constant, 5.15 step / multistep, 5.16 exponential, 5.17 1/t,
5.18 1/√t, 5.19 cosine, 5.20 linear, 5.21 warmup, 5.22 cyclical, 5.23 warm restarts (SGDR),
5.24 LR range test; section 9: 9.17 the τ = 4 linear schedule table; Appendix B.15 the
mapping onto PyTorch-style schedulers).

Schedules are host-side Python (graphc.optim); the compiled training step takes the LR as a
graph input, so changing it every epoch or every iteration never retraces.

    python examples/schedules.py [--backend numpy] [--quick] [--epochs N] [--out out/]

writes out/schedules.png (one panel per schedule) and out/schedules_training.png (test
accuracy per epoch under four schedules; the LR range test).
"""
from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

import graphc as gc
from graphc import nn, optim
from graphc.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import blas_threads, load_digits_split, pyplot  # noqa: E402
from _common import parse_and_announce as parse_args  # noqa: E402

BASE_LR = 0.1
T = 100  # epochs shown in the table and the curves


def all_schedules(base=BASE_LR, total=T) -> dict:
    """name -> (scheduler, formula), each stepped once per epoch for `total` epochs."""
    k = 0.03
    return {
        "constant": (optim.LambdaLR(base, lambda t: 1.0), "α₀"),
        "step": (optim.StepLR(base, step_size=20, gamma=0.5), "α₀·0.5^⌊t/20⌋"),
        "multistep": (optim.MultiStepLR(base, [30, 60, 90], gamma=0.1),
                      "×0.1 at 30, 60, 90"),
        "exponential": (optim.ExponentialLR(base, gamma=math.exp(-k)), f"α₀e^(−{k}t)"),
        "1/t": (optim.LambdaLR(base, optim.inverse_time(0.1)), "α₀/(1 + 0.1t)"),
        "1/sqrt(t)": (optim.LambdaLR(base, optim.inverse_sqrt(1.0)), "α₀/√(1 + t)"),
        "cosine": (optim.CosineAnnealingLR(base, T_max=total), "½α₀(1 + cos(πt/T))"),
        "linear": (optim.LinearLR(base, start_factor=1.0, end_factor=0.0, total_iters=total),
                   "α₀(1 − t/T)"),
        "warmup+cosine": (optim.warmup(optim.CosineAnnealingLR(base, T_max=total - 10), 10),
                          "0 → α₀ in 10, then cosine"),
        "cyclic (triangular)": (optim.CyclicLR(None, base / 10, base, step_size_up=10),
                                "α₀/10 ↔ α₀, period 20"),
        "cyclic (triangular2)": (optim.CyclicLR(None, base / 10, base, step_size_up=10,
                                                mode="triangular2"), "amplitude halves"),
        "cosine restarts": (optim.CosineAnnealingWarmRestarts(base, T_0=25),
                            "SGDR, T₀ = 25"),
    }


TABLE_EPOCHS = (0, 1, 5, 10, 20, 25, 30, 40, 50, 60, 75, 90, 99)


def print_table(curves):
    head = f"{'schedule':22s}" + "".join(f"{'t=' + str(t):>9s}" for t in TABLE_EPOCHS)
    print(head)
    print("-" * len(head))
    for name, lrs in curves.items():
        print(f"{name:22s}" + "".join(f"{lrs[t]:9.4f}" for t in TABLE_EPOCHS))


def linear_floor_table(a0=BASE_LR, a_tau=0.01, tau=4):
    """Lecture 9.17: α_t = (1 − t/τ)α₀ + (t/τ)α_τ for t ≤ τ, α_τ after, as LinearLR."""
    s = optim.LinearLR(a0, start_factor=1.0, end_factor=a_tau / a0, total_iters=tau)
    rows = []
    for t in range(tau + 3):
        f = min(t, tau) / tau
        rows.append((t, f, s.lr_at(t), (1 - f) * a0 + f * a_tau))
    return rows


def lr_range_test(backend, x, y, lo=1e-4, hi=3.0, n=120, batch=32, seed=0):
    """Lecture 5.24: raise the LR exponentially after every minibatch, record the loss;
    suggest the LR where the (smoothed) loss falls fastest."""
    step = gc.train.TrainStep(mlp(seed), F.cross_entropy, optim.SGD(lr=lo, momentum=0.9),
                              backend=backend)
    rng = np.random.default_rng(seed)
    lrs = lo * (hi / lo) ** (np.arange(n) / (n - 1))
    losses = []
    for lr in lrs:
        idx = rng.integers(0, len(x), batch)
        step.lr = float(lr)
        losses.append(step(x[idx], y[idx]).loss)
        if not np.isfinite(losses[-1]) or losses[-1] > 4 * losses[0]:
            break  # diverged: the end of the useful range
    losses = np.array(losses)
    smooth = np.convolve(losses, np.ones(5) / 5, mode="valid")
    slope = np.diff(smooth) / np.diff(np.log(lrs[2:2 + len(smooth)]))
    best = float(lrs[2 + int(np.argmin(slope))])
    return lrs[:len(losses)], losses, best


def mlp(seed=0):
    return nn.Sequential(nn.Linear(64, 64, seed=seed), nn.ReLU(), nn.Linear(64, 10, seed=seed + 1))


def train_with(schedules, backend, epochs, data):
    xtr, ytr, xte, yte = data
    out = {}
    for name, sched in schedules.items():
        step = gc.train.TrainStep(mlp(), F.cross_entropy, optim.SGD(lr=BASE_LR, momentum=0.9),
                                  backend=backend)
        h = gc.train.fit(step, xtr, ytr, epochs=epochs, batch_size=32, val=(xte, yte),
                         scheduler=sched, restore_best=False, progress=False)
        out[name] = (h, step.compiled)
    return out


def plot_schedules(curves, formulas, path):
    plt = pyplot()
    fig, axes = plt.subplots(3, 4, figsize=(14, 9), sharex=True)
    for ax, (name, lrs) in zip(axes.flat, curves.items()):
        ax.plot(np.arange(len(lrs)), lrs, lw=1.5)
        ax.set_title(f"{name}\n{formulas[name]}", fontsize=9)
        ax.set_ylim(-0.005, BASE_LR * 1.08)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("epoch t")
    for ax in axes[:, 0]:
        ax.set_ylabel("learning rate")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def plot_training(runs, rangetest, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for name, (h, _) in runs.items():
        ep = np.arange(1, len(h.lr) + 1)
        axes[0].plot(ep, h.lr, ".-", label=name)
        axes[1].semilogy(ep, h.train_loss, ".-", label=f"{name} (test acc {h.val_acc[-1]:.3f})")
    axes[0].set(xlabel="epoch", ylabel="learning rate", title="schedules used")
    axes[1].set(xlabel="epoch", ylabel="training loss", title="MLP on digits, SGD momentum 0.9")
    axes[1].legend()
    lrs, losses, best = rangetest
    axes[2].semilogx(lrs, losses)
    axes[2].set_ylim(0, 1.5 * losses[0])
    axes[2].axvline(best, color="r", ls="--", label=f"steepest descent: {best:.3g}")
    axes[2].set(xlabel="learning rate", ylabel="minibatch loss", title="LR range test (5.24)")
    axes[2].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv, __doc__, "Learning-rate schedules", epochs=20, quick_epochs=5)
    with blas_threads(1):
        return run(args)


def run(args) -> dict:
    t0 = time.perf_counter()
    scheds = all_schedules()
    curves = {name: np.array(s.lrs(T)) for name, (s, _) in scheds.items()}
    formulas = {name: f for name, (_, f) in scheds.items()}
    print(f"Learning rate per epoch, base α₀ = {BASE_LR}, T = {T} epochs:\n")
    print_table(curves)

    rows = linear_floor_table()
    print("\nLecture 9.17, linear decay to a floor (α₀ = 0.1, α_τ = 0.01, τ = 4) as LinearLR:")
    print(f"  {'t':>2s} {'t/τ':>5s} {'LinearLR':>9s} {'(1−t/τ)α₀+(t/τ)α_τ':>20s}")
    for t, f, lr, ref in rows:
        print(f"  {t:2d} {f:5.2f} {lr:9.4f} {ref:20.4f}")

    epochs = args.epochs
    data = load_digits_split(args.seed)
    train_scheds = {
        "constant": optim.LambdaLR(BASE_LR, lambda t: 1.0),
        "multistep": optim.MultiStepLR(BASE_LR, [epochs // 2, 3 * epochs // 4], gamma=0.1),
        "cosine": optim.CosineAnnealingLR(BASE_LR, T_max=epochs),
        "warmup+cosine": optim.warmup(optim.CosineAnnealingLR(BASE_LR, T_max=epochs - 2), 2,
                                      start_factor=0.1),
    }
    print(f"\nMLP 64-64-10 on digits, SGD momentum 0.9, α₀ = {BASE_LR}, {epochs} epochs "
          f"(the LR is a graph input: one trace per run)")
    runs = train_with(train_scheds, args.backend, epochs, data)
    print(f"  {'schedule':15s} {'final lr':>9s} {'train loss':>11s} {'test acc':>9s} {'traces':>7s}")
    training = {}
    for name, (h, compiled) in runs.items():
        traces = len(compiled._cache)
        training[name] = {"test_acc": h.val_acc[-1], "train_loss": h.train_loss[-1],
                          "lrs": list(h.lr), "traces": traces}
        print(f"  {name:15s} {h.lr[-1]:9.4g} {h.train_loss[-1]:11.4f} {h.val_acc[-1]:9.3f} "
              f"{traces:7d}")

    rangetest = lr_range_test(args.backend, data[0], data[1], n=60 if args.quick else 120)
    print(f"\nLR range test (5.24): {len(rangetest[0])} minibatches, LR from "
          f"{rangetest[0][0]:.0e} to {rangetest[0][-1]:.2g}; steepest loss decline at "
          f"lr ≈ {rangetest[2]:.3g}")

    pictures = [os.path.join(args.out, "schedules.png"),
                os.path.join(args.out, "schedules_training.png")]
    plot_schedules(curves, formulas, pictures[0])
    plot_training(runs, rangetest, pictures[1])
    seconds = time.perf_counter() - t0
    print(f"\nwrote {', '.join(pictures)} ({seconds:.1f} s)")
    return {"curves": {k: v.tolist() for k, v in curves.items()},
            "linear_floor": rows, "training": training,
            "range_test_lr": rangetest[2], "pictures": pictures, "seconds": seconds}


if __name__ == "__main__":
    main(sys.argv[1:])
