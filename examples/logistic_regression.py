"""Logistic regression: a single sigmoid neuron trained with binary cross-entropy on logits.

Lecture items (see /work/shared/lectures.md): §4.3 (a single neuron with logistic activation
is logistic regression: p(y=1|x) = σ(wᵀx + b), classify as 1 if p > 0.5, the decision
boundary is the hyperplane wᵀx + b = 0 with w normal to it), §4.4 (the sigmoid neuron),
§2.2 (σ and σ' = σ(1 − σ)), §3.5 (binary cross-entropy / Bernoulli loss, computed on logits
in the stable form max(z, 0) − z·y + log(1 + e^{−|z|}), B.12), §5.1 (full-batch gradient
descent), §8.7 / §8.8 (the sigmoid identities and the logistic-regression gradient: graphc's
reverse-mode gradient is compared with the closed form ∇_w = (1/n) Σ (σ(wᵀx_i + b) − y_i) x_i).

This one shows the mechanism without the training helpers: the loss is a plain function of
a parameter dict, `gc.compile(gc.value_and_grad(loss))` traces it, derives the backward graph,
optimises and compiles both, and the loop applies w ← w − η∇w on the host.

Data (--data): "moons" (default; two half-moons, 400 points: not linearly separable, so a
linear model tops out near 85-90%), "digits01" (8x8 digits 0 vs 1, 64 features, separable),
"iris" (versicolor vs virginica, 4 features).

    python examples/logistic_regression.py [--backend numpy] [--quick] [--data moons] [--out out/]
    graphc viz examples/logistic_regression.py:loss --grad --stage backward -o out/logreg.svg

Pictures: out/logreg_value_and_grad.{traced,backward,fused}.svg.
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc.nn import functional as F

import _common as C

LR = 0.5
DATA = {
    "moons": lambda seed: C.moons(seed=seed),
    "digits01": lambda seed: C.digits(classes=(0, 1), seed=seed),
    "iris": lambda seed: C.iris(classes=(1, 2), seed=seed),
}


def logits(params, x):
    return x @ params["w"] + params["b"]


def loss(params, x, y):
    """Mean binary cross-entropy of σ(xw + b) against y ∈ {0, 1}, on the logits."""
    return F.binary_cross_entropy_with_logits(logits(params, x), y)


def closed_form_grad(params, x, y):
    """§3.5 / §4.3: ∂L/∂w = Xᵀ(σ(Xw + b) − y)/n, ∂L/∂b = mean(σ(Xw + b) − y), in numpy."""
    r = 1 / (1 + np.exp(-(x @ params["w"] + params["b"]))) - y
    return {"w": x.T @ r / len(y), "b": r.mean()}


def _example_args(n=16, d=3, seed=0):
    rng = np.random.default_rng(seed)
    params = {"w": rng.standard_normal(d).astype(np.float32), "b": np.float32(0.1)}
    return params, rng.standard_normal((n, d)).astype(np.float32), \
        (rng.random(n) < 0.5).astype(np.float32)


# The model file convention of the `graphc` CLI (`graphc viz examples/logistic_regression.py
# --grad`): example inputs for each traceable function.
EXAMPLES = {"loss": _example_args(), "logits": _example_args()[:2]}
ENTRY = "loss"


def main(argv=None) -> dict:
    def setup(p):
        p.add_argument("--data", default="moons", choices=sorted(DATA))
    args = C.parse_args(__doc__, argv, epochs=500, quick_epochs=150, setup=setup)
    C.banner(f"Logistic regression on {args.data}", args)
    t0 = time.perf_counter()
    data = DATA[args.data](args.seed)
    x, y = data.x_train, data.y_train.astype(np.float32)
    print(f"   data {data}")
    rng = np.random.default_rng(args.seed)
    params = {"w": (0.01 * rng.standard_normal(x.shape[1])).astype(np.float32),
              "b": np.float32(0.0)}

    value_and_grad = gc.compile(gc.value_and_grad(loss), backend=args.backend)
    _, g = value_and_grad(params, x, y)
    ref = closed_form_grad(params, x, y)
    err = max(float(np.max(np.abs(g[k] - ref[k]))) for k in g)
    print(f"   graphc gradient vs closed form Xᵀ(σ(Xw + b) − y)/n: max |difference| {err:.2e}")
    print(f"   {C.compile_times(value_and_grad)}")

    with C.Timer() as tm:
        for epoch in range(args.epochs):                 # full-batch gradient descent
            value, g = value_and_grad(params, x, y)
            params = {k: params[k] - np.float32(LR) * g[k] for k in params}
            if epoch % max(args.epochs // 5, 1) == 0:
                print(f"   step {epoch:4d}  loss {float(value):.4f}")
    predict = gc.compile(lambda p, x: logits(p, x) > 0, backend=args.backend)
    train_acc = float(np.mean(predict(params, x) == data.y_train))
    test_acc = float(np.mean(predict(params, data.x_test) == data.y_test))
    final = float(value_and_grad(params, x, y)[0])
    ms = 1e3 * tm.seconds / args.epochs
    print(f"   {args.epochs} steps (lr {LR}) in {tm.seconds:.2f} s, {ms:.2f} ms per step; "
          f"final loss {final:.4f}")
    if x.shape[1] == 2:
        w1, w2 = (float(v) for v in params["w"])
        b = float(params["b"])
        print(f"   decision boundary (§4.3): {w1:.3f}·x1 {'+-'[w2 < 0]} {abs(w2):.3f}·x2 "
              f"{'+-'[b < 0]} {abs(b):.3f} = 0")
    print(f"   train accuracy {C.percent(train_acc)}, test accuracy {C.percent(test_acc)}")
    pictures = C.draw(value_and_grad, args.out, "logreg_value_and_grad")
    C.show_code(value_and_grad, args)
    return C.finish({"data": args.data, "train_accuracy": train_acc, "test_accuracy": test_acc,
                     "loss": final, "grad_error": err, "ms_per_step": ms,
                     "pictures": pictures}, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
