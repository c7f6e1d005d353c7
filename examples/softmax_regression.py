"""Softmax regression on iris (3 classes): one linear layer, softmax, categorical cross-entropy.

Lecture items (see /work/shared/lectures.md): §4.5 (softmax regression π(x) = softmax(Wx + b),
the Categorical likelihood), §1.9 / §2.11 (softmax as the output activation, computed stably
by subtracting the maximum), §3.6 / §8.9 (categorical cross-entropy; its gradient with respect
to the logits is −(y − softmax(z)), so ∇_W = (1/n) Σ (softmax(z_i) − onehot(y_i)) x_iᵀ), §3.1 (the
empirical risk is the mean loss, B.2), B.1 (W has the (out, in) layout: `nn.Linear(4, 3)`),
§5.3 (minibatch SGD), §9.28-style end-to-end training with `graphc.train`.

The closed-form gradient above is checked against graphc's reverse-mode gradient first; then
`graphc.train.TrainStep` compiles forward, `F.cross_entropy` (a fused log-softmax + NLL),
backward and the SGD update into ONE graph, and `graphc.train.fit` runs minibatch epochs with
a validation split.

    python examples/softmax_regression.py [--backend numpy] [--quick] [--epochs N] [--out out/]

Pictures: out/softmax_regression_step.{traced,backward,fused}.svg.
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc import nn
from graphc.nn import functional as F

import _common as C

LR = 0.1
BATCH = 15


def closed_form_grad(W, b, x, y):
    """§3.6: with P = softmax(xWᵀ + b) and Y one-hot, ∂L/∂W = (P − Y)ᵀx/n, ∂L/∂b = mean(P − Y)."""
    z = x @ W.T + b
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    r = p - np.eye(W.shape[0], dtype=x.dtype)[y]
    return r.T @ x / len(y), r.mean(0)


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv, epochs=60, quick_epochs=25)
    C.banner("Softmax regression on iris", args)
    t0 = time.perf_counter()
    data = C.iris(seed=args.seed)
    print(f"   data {data}, classes {', '.join(data.names)}")
    model = nn.Linear(4, 3, seed=args.seed)

    def risk(W, b, x, y):
        return F.cross_entropy(F.linear(x, W, b), y)
    grad = gc.compile(gc.grad(risk, argnums=(0, 1)), backend=args.backend)
    gW, gb = grad(model.weight, model.bias, data.x_train, data.y_train)
    rW, rb = closed_form_grad(model.weight, model.bias, data.x_train, data.y_train)
    err = max(float(np.abs(gW - rW).max()), float(np.abs(gb - rb).max()))
    print(f"   graphc gradient vs closed form (softmax − onehot)ᵀx/n: max |difference| {err:.2e}")

    step = gc.train.TrainStep(model, F.cross_entropy, gc.optim.SGD(lr=LR, momentum=0.9),
                              backend=args.backend, seed=args.seed)
    hist = gc.train.fit(step, data.x_train, data.y_train, epochs=args.epochs, batch_size=BATCH,
                        val=(data.x_test, data.y_test), seed=args.seed, progress=args.progress,
                        restore_best=False)
    timing = C.train_report(step, hist, len(data.x_train), BATCH)
    out = step.evaluate(data.x_test)
    test_acc = gc.train.accuracy(out, data.y_test)
    train_acc = gc.train.accuracy(step.evaluate(data.x_train), data.y_train)
    print(f"   final train loss {hist.train_loss[-1]:.4f}, test loss {hist.val_loss[-1]:.4f}")
    print(f"   train accuracy {C.percent(train_acc)}, test accuracy {C.percent(test_acc)}")
    pred = out.argmax(1)
    confusion = np.zeros((3, 3), int)
    np.add.at(confusion, (data.y_test, pred), 1)
    print("   confusion matrix (rows: true class, columns: predicted):")
    for name, row in zip(data.names, confusion):
        print(f"      {name:<11} {' '.join(f'{v:3d}' for v in row)}")
    pictures = C.draw(step.compiled, args.out, "softmax_regression_step")
    C.show_code(step.compiled, args)
    return C.finish({"train_accuracy": train_acc, "test_accuracy": test_acc,
                     "grad_error": err, **timing, "pictures": pictures}, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
