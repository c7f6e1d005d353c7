"""SGD with minibatches of 1, 2 and all examples: how much the loss oscillates.

Lecture items (see /work/shared/lectures.md): §9.23 (a minibatch of m = 2 is "oscillating
less" than SGD with one example; the lecture states it qualitatively).

A least-squares toy problem (200 points, 5 features, noisy linear targets) is trained with
plain SGD at one fixed learning rate from the same start, with batch size 1, 2 and 200
(full batch). The gradient is one compiled `gc.value_and_grad`; after every step the full
training loss is recorded. Printed per batch size: the final loss, and the standard deviation
of the loss over the second half of the run (once it has reached its noise floor) — the size
of the oscillation. The minibatch gradient's variance falls like 1/m, and so does the
oscillation: m = 2 oscillates less than m = 1, and full batch not at all.

    python examples/minibatch_oscillation.py [--backend numpy] [--quick] [--out out/]

writes out/minibatch_oscillation.svg (loss per step for the three batch sizes).
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc

import _common as C

N, D, LR = 200, 5, 0.05


def loss(w, x, t):
    return 0.5 * gc.mean((gc.matmul(x, w) - t) ** 2)


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv, epochs=800, quick_epochs=300)   # "epochs" = steps here
    args.out.mkdir(parents=True, exist_ok=True)
    C.banner("Loss oscillation of SGD with batch size 1, 2 and full", args)
    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    x = rng.standard_normal((N, D))
    t = x @ rng.standard_normal(D) + 0.5 * rng.standard_normal(N)
    step = gc.compile(gc.value_and_grad(loss), backend=args.backend)
    full = gc.compile(loss, backend=args.backend)
    curves, stds, finals = {}, {}, {}
    for m in (1, 2, N):
        name = "full" if m == N else str(m)
        w, order_rng, curve = np.zeros(D), np.random.default_rng(args.seed + 1), []
        for _ in range(args.epochs):
            idx = order_rng.choice(N, m, replace=False)
            _, g = step(w, x[idx], t[idx])
            w = w - LR * np.asarray(g)
            curve.append(float(full(w, x, t)))
        tail = np.array(curve[len(curve) // 2:])
        curves[name], stds[name], finals[name] = curve, float(tail.std()), curve[-1]
        print(f"   batch {name:>4}: final loss {curve[-1]:.4f}, std of the loss over the last "
              f"{len(tail)} steps {tail.std():.5f}")
    plt = C.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, curve in curves.items():
        ax.plot(curve, label=f"batch {name}", lw=0.8)
    ax.set(xlabel="step", ylabel="training loss", yscale="log")
    ax.legend()
    path = args.out / "minibatch_oscillation.svg"
    fig.savefig(path)
    plt.close(fig)
    print(f"   picture -> {path}")
    return C.finish({"loss_std": stds, "final_loss": finals, "pictures": [path]}, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
