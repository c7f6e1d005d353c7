"""L1 versus L2 regularisation, and gradient clipping (lectures.md section 7: 7.9 what
regularisation is, 7.10 L2 / weight decay, 7.12 L1, 7.13 "L1 prefers sparse weights, L2
spread-out ones", 7.14 elastic net, 7.15 weight decay as a gradient term; section 5: 5.12
and 5.13 the L2 and L1 update rules; section 8: 8.18 and 8.22 exploding gradients and
cliffs; section 9: 9.18 the lecture's L1-vs-L2 example; Appendix B.14).

1. The lecture's example (9.18): x = [1, 1, 2, 1], W₁ = [0, 0, 1, 0], W₂ = [0.5, 0.5, 0.25, 0.5]
   give the same W·x = 2; graphc.optim's penalties say which each norm prefers.
2. Softmax regression on the digits (a Linear(64, 10) trained with SGD), unregularised, with
   an L1 penalty λΣ|w| and with an L2 penalty (λ/2)Σw² added to the loss, all in one
   compiled step: L1 drives many weights to (nearly) zero, L2 shrinks all of them a little.
3. Gradient clipping: an MLP trained with SGD at a too-large learning rate (0.5, momentum
   0.9) blows up into dead ReLUs; clipping the global gradient norm to 1
   (optim.clip_grad_norm, inside the compiled step) keeps it training.

    python examples/regularization.py [--backend numpy] [--quick] [--epochs N] [--out out/]

writes out/regularization_weights.png (each class's 8x8 weight image under none / L1 / L2,
and the histogram of |w|) and out/regularization_clipping.png (loss and gradient norm per
step, with and without clipping).
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
from _common import blas_threads, load_digits_split, pyplot  # noqa: E402
from _common import parse_and_announce as parse_args  # noqa: E402

ZERO = 1e-3   # |w| below this counts as zero (subgradient SGD jitters around 0 by ~lr·λ)
PENALTIES = {"none": (None, 0.0), "L1": ("l1", 3e-3), "L2": ("l2", 3e-2)}


def lecture_example():
    """9.18: the two weight vectors, their scores and their L1 and L2 penalties."""
    x = np.array([1, 1, 2, 1], np.float32)
    W = {"W1": np.array([0, 0, 1, 0], np.float32),
         "W2": np.array([0.5, 0.5, 0.25, 0.5], np.float32)}
    return {k: {"score": float(w @ x), "l1": float(optim.l1_penalty(w, 1.0)),
                "l2": float(np.sum(w * w))} for k, w in W.items()}


def make_step(model, opt, penalty=None, lam=0.0, clip=None, backend="numpy"):
    """One compiled step: loss (+ penalty on the weights, not the biases), gradient,
    optional clipping of the global norm, update. Returns (loss, grad norm, params, state)."""
    def step(params, state, x, y, lr):
        def loss(p):
            out = nn.functional_call(model, p, x)
            value = F.cross_entropy(out, y)
            weights = {k: v for k, v in p.items() if k.endswith("weight")}
            if penalty == "l1":
                value = value + optim.l1_penalty(weights, lam)
            elif penalty == "l2":
                value = value + optim.l2_penalty(weights, lam)
            return value
        value, grads = gc.value_and_grad(loss)(params)
        if clip is not None:
            grads, norm = optim.clip_grad_norm(grads, clip)       # norm before clipping
        else:
            norm = gc.sqrt(sum(gc.sum(g * g) for g in grads.values()))
        params, state = opt.update(grads, state, params, lr=lr)
        return value, norm, params, state
    return gc.compile(step, backend=backend)


def train(model, opt, data, epochs, seed=0, **kw):
    xtr, ytr, xte, yte = data
    step = make_step(model, opt, **kw)
    params = model.param_dict()
    state = opt.init(params)
    rng = np.random.default_rng(seed)
    losses, norms = [], []
    for _ in range(epochs):
        order = rng.permutation(len(xtr))
        for i in range(0, len(xtr) - 31, 32):
            b = order[i:i + 32]
            value, norm, params, state = step(params, state, xtr[b], ytr[b], opt.lr)
            losses.append(float(value))
            norms.append(float(norm))
    predict = gc.compile(lambda p, x: nn.functional_call(model, p, x),
                         backend=kw.get("backend", "numpy"))
    acc = float(np.mean(predict(params, xte).argmax(1) == yte))
    return params, acc, np.array(losses), np.array(norms)


def mlp():
    return nn.Sequential(nn.Linear(64, 64, seed=0), nn.ReLU(), nn.Linear(64, 64, seed=1), nn.ReLU(),
                         nn.Linear(64, 10, seed=2))


def plot_weights(weights, path):
    """One mosaic image (a row of ten 8x8 class images per penalty) and a histogram of |w|
    (a single imshow: 30 small axes would cost seconds to lay out)."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 4.2), gridspec_kw={"width_ratios": [3, 1]})
    vmax = max(np.abs(w).max() for w in weights.values())
    rows = len(weights)
    mosaic = np.full((rows * 9 - 1, 10 * 9 - 1), np.nan)
    for r, w in enumerate(weights.values()):
        for c in range(10):
            mosaic[r * 9:r * 9 + 8, c * 9:c * 9 + 8] = w[c].reshape(8, 8)
    im = axes[0].imshow(mosaic, cmap="RdBu_r", vmin=-vmax, vmax=vmax)
    axes[0].set_xticks([c * 9 + 3.5 for c in range(10)], [f"class {c}" for c in range(10)], fontsize=8)
    axes[0].set_yticks([r * 9 + 3.5 for r in range(rows)], list(weights))
    axes[0].set_title("weights of each class as an 8x8 image")
    fig.colorbar(im, ax=axes[0], fraction=0.02)
    bins = np.logspace(-6, 1, 40)
    for name, w in weights.items():
        axes[1].hist(np.abs(w).ravel() + 1e-7, bins=bins, histtype="step", lw=1.5, label=name)
    axes[1].set_xscale("log")
    axes[1].axvline(ZERO, color="k", ls=":", lw=1)
    axes[1].set(xlabel="|w|", ylabel="count", title="weight magnitudes")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def plot_clipping(runs, path):
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4))
    for name, (losses, norms) in runs.items():
        axes[0].plot(losses, lw=1, label=name)
        axes[1].semilogy(norms, lw=1, label=name)
    axes[0].set(xlabel="step", ylabel="minibatch loss", title="SGD lr 0.5, momentum 0.9")
    axes[1].set(xlabel="step", ylabel="global gradient norm (before clipping)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> dict:
    args = parse_args(argv, __doc__, "L1 vs L2 regularisation, gradient clipping", epochs=20,
                      quick_epochs=8)
    with blas_threads(1):
        return run(args)


def run(args) -> dict:
    t0 = time.perf_counter()
    ex = lecture_example()
    print("Lecture 9.18: x = [1, 1, 2, 1]")
    for k, r in ex.items():
        print(f"  {k}: W·x = {r['score']:.2f}   ‖W‖₁ = {r['l1']:.4f}   ‖W‖₂² = {r['l2']:.4f}")
    prefer_l1 = min(ex, key=lambda k: ex[k]["l1"])
    prefer_l2 = min(ex, key=lambda k: ex[k]["l2"])
    print(f"  L1 prefers {prefer_l1} (sparse), L2 prefers {prefer_l2} (spread out)")

    data = load_digits_split(args.seed)
    epochs = args.epochs
    print(f"\nSoftmax regression on digits, SGD lr 0.1, batch 32, {epochs} epochs; "
          f"'zero' means |w| < {ZERO}")
    print(f"  {'penalty':12s} {'λ':>6s} {'test acc':>9s} {'zero weights':>13s} {'‖W‖₁':>8s} "
          f"{'‖W‖₂²':>8s}")
    weights, reg = {}, {}
    for name, (pen, lam) in PENALTIES.items():
        params, acc, _, _ = train(nn.Linear(64, 10, seed=0), optim.SGD(lr=0.1), data, epochs,
                                  penalty=pen, lam=lam, backend=args.backend)
        w = params["weight"]
        weights[name] = w
        reg[name] = {"lambda": lam, "test_acc": acc, "zero_fraction": float(np.mean(np.abs(w) < ZERO)),
                     "l1": float(np.abs(w).sum()), "l2": float((w * w).sum())}
        r = reg[name]
        print(f"  {name:12s} {lam:6.0e} {acc:9.3f} {r['zero_fraction']:13.1%} {r['l1']:8.2f} "
              f"{r['l2']:8.2f}")

    clip_epochs = 2 if args.quick else 3
    print(f"\nGradient clipping: MLP 64-64-64-10, SGD lr 0.5 momentum 0.9 (too large), "
          f"{clip_epochs} epochs")
    clip_runs, clipping = {}, {}
    for name, clip in (("no clipping", None), ("clip_grad_norm 1.0", 1.0)):
        _, acc, losses, norms = train(mlp(), optim.SGD(lr=0.5, momentum=0.9), data, clip_epochs,
                                      clip=clip, backend=args.backend)
        clip_runs[name] = (losses, norms)
        clipping[name] = {"test_acc": acc, "final_loss": float(np.mean(losses[-20:])),
                          "max_norm": float(np.max(norms))}
        print(f"  {name:20s} test acc {acc:.3f}   loss (last 20 steps) "
              f"{clipping[name]['final_loss']:.3f}   largest gradient norm {np.max(norms):.1f}")

    pictures = [os.path.join(args.out, "regularization_weights.png"),
                os.path.join(args.out, "regularization_clipping.png")]
    plot_weights(weights, pictures[0])
    plot_clipping(clip_runs, pictures[1])
    seconds = time.perf_counter() - t0
    print(f"\nwrote {', '.join(pictures)} ({seconds:.1f} s)")
    return {"lecture": ex, "prefer_l1": prefer_l1, "prefer_l2": prefer_l2,
            "penalties": reg, "clipping": clipping, "pictures": pictures, "seconds": seconds}


if __name__ == "__main__":
    main(sys.argv[1:])
