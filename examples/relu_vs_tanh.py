"""ReLU versus tanh: SGD steps until a deep MLP reaches a target training accuracy on the digits.

Lecture items (see /work/shared/lectures.md): §9.27 (Krizhevsky et al. 2012: a four-layer CNN
with ReLUs reaches 25% training error on CIFAR-10 six times faster than with tanh). This is a
small stand-in, not a reproduction: a 64 → 64 → 64 → 64 → 10 MLP on the 8x8 digits, identical
in everything (data order, learning rate, minibatch size, the same initial weights drawn with
He's scale √(2/fan_in)) except the hidden activation. Plain minibatch SGD; every
EVAL_EVERY steps the full training accuracy is measured, and the first step at which it
reaches TARGET is printed for both, with their ratio. Whatever the ratio comes out as is
what is reported (on this tiny problem it is far from AlexNet's 6x and can differ by seed).

    python examples/relu_vs_tanh.py [--backend numpy] [--quick] [--out out/]
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc.nn import functional as F

import _common as C

WIDTH, DEPTH, BATCH, LR, TARGET, EVAL_EVERY = 64, 3, 32, 0.02, 0.95, 10


def make_forward(act):
    def forward(params, x):
        h = x
        for i in range(DEPTH):
            h = act(h @ params[f"W{i}"] + params[f"b{i}"])
        return h @ params["Wout"] + params["bout"]
    return forward


def init(seed):
    rng = np.random.default_rng(seed)
    p, fan = {}, 64
    for i in range(DEPTH):
        p[f"W{i}"] = (rng.standard_normal((fan, WIDTH)) * np.sqrt(2 / fan)).astype(np.float32)
        p[f"b{i}"] = np.zeros(WIDTH, np.float32)
        fan = WIDTH
    p["Wout"] = (rng.standard_normal((fan, 10)) * np.sqrt(1 / fan)).astype(np.float32)
    p["bout"] = np.zeros(10, np.float32)
    return p


def steps_to_target(act, d, max_steps, seed, backend):
    forward = make_forward(act)
    step = gc.compile(gc.value_and_grad(lambda p, x, y: F.cross_entropy(forward(p, x), y)),
                      backend=backend)
    predict = gc.compile(forward, backend=backend)
    params, rng, n = init(seed), np.random.default_rng(seed + 1), len(d.x_train)
    order, pos, accs = rng.permutation(n), 0, []
    for s in range(1, max_steps + 1):
        if pos + BATCH > n:
            order, pos = rng.permutation(n), 0
        idx = order[pos:pos + BATCH]
        pos += BATCH
        _, g = step(params, d.x_train[idx], d.y_train[idx])
        params = {k: params[k] - LR * np.asarray(g[k]) for k in params}
        if s % EVAL_EVERY == 0:
            acc = float(np.mean(np.argmax(predict(params, d.x_train), 1) == d.y_train))
            accs.append(acc)
            if acc >= TARGET:
                return s, accs, step
    return None, accs, step


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv, epochs=4000, quick_epochs=1500)  # "epochs" = max steps
    args.out.mkdir(parents=True, exist_ok=True)
    C.banner("ReLU vs tanh: SGD steps to reach a training accuracy", args)
    t0 = time.perf_counter()
    d = C.digits(seed=args.seed)
    metrics = {}
    with C.blas_threads():
        for name, act in (("relu", F.relu), ("tanh", F.tanh)):
            steps, accs, step = steps_to_target(act, d, args.epochs, args.seed, args.backend)
            metrics[f"{name}_steps"] = steps
            metrics[f"{name}_accuracy_curve"] = accs
            shown = steps if steps is not None else f"> {args.epochs} (not reached)"
            print(f"   {name}: {shown} steps of SGD (batch {BATCH}, lr {LR}) to reach "
                  f"{C.percent(TARGET)} training accuracy")
    r, t = metrics["relu_steps"], metrics["tanh_steps"]
    metrics["tanh_over_relu"] = (t / r) if (r and t) else None
    if metrics["tanh_over_relu"] is not None:
        print(f"   tanh needed {metrics['tanh_over_relu']:.2f}x the steps of ReLU "
              f"(AlexNet on CIFAR-10: 6x)")
    metrics["pictures"] = C.draw(step, args.out, "relu_vs_tanh_step", stages=("traced",),
                                 fmt="dot")
    return C.finish(metrics, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
