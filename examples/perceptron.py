"""The perceptron learning algorithm (Rosenblatt 1958) on AND and OR.

Lecture items (see /work/shared/lectures.md): §4.2 (the perceptron, y = 1 iff Σ_{i=0}^n w_i x_i ≥ 0
with x_0 = 1 and w_0 = −θ), §5.11 (the learning algorithm: initialise w randomly; while not
converged pick an input x; if x ∈ P and wᵀx < 0 then w = w + x; if x ∈ N and wᵀx ≥ 0 then
w = w − x; stop when every input is classified correctly), §9.2 (target: zero training errors
on AND and OR; XOR never converges, see examples/xor.py), §2.1 (the step activation).

Both the prediction and the update rule are graphc functions compiled for the chosen backend:

    update(w, x, y) = w + (y − step(wᵀx ≥ 0)) · x

which is the lecture's two cases in one line (y − ŷ is +1 for a missed positive, −1 for a
false positive, 0 otherwise). Each epoch visits the four inputs in a random order (seeded);
training stops after the first epoch without a mistake. (The rule is SGD with learning rate 1
on the perceptron criterion max(0, −(2y − 1)·wᵀx), except on the boundary wᵀx = 0, where the
lecture counts a negative input as misclassified and the criterion's subgradient is 0.)

    python examples/perceptron.py [--backend numpy] [--out out/]
    graphc show examples/perceptron.py:update --stage optimized

Pictures: out/perceptron_update.{traced,optimized}.svg, the compiled update rule.
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc.nn import functional as F

import _common as C

GATES = {"AND": lambda a, b: a & b, "OR": lambda a, b: a | b, "XOR": lambda a, b: a ^ b}
MAX_EPOCHS = 100


def gate_data(gate: str):
    """The 4 rows of a 2-input gate with the bias input x0 = 1 first: X (4, 3), y (4,)."""
    x = C.truth_table(2)
    X = np.concatenate([np.ones((4, 1), np.float32), x], axis=1)
    y = GATES[gate](x[:, 0].astype(int), x[:, 1].astype(int)).astype(np.float32)
    return X, y


def predict(w, X):
    """ŷ = 1 iff wᵀx ≥ 0, for every row of X."""
    return F.step(X @ w, threshold=0.0)


def update(w, x, y):
    """One step of the perceptron rule on one input x (with x0 = 1) and its label y ∈ {0, 1}."""
    y_hat = F.step(gc.sum(w * x), threshold=0.0)
    return w + (y - y_hat) * x


class Perceptron:
    """The learning algorithm driving the compiled `update` and `predict`."""

    def __init__(self, backend="numpy", seed=0):
        self.update = gc.compile(update, backend=backend)
        self.predict = gc.compile(predict, backend=backend)
        self.seed = seed

    def init(self):
        return np.random.default_rng(self.seed).standard_normal(3).astype(np.float32)

    def train(self, X, y, max_epochs=MAX_EPOCHS, order="random"):
        """Train until an epoch makes no mistake, or max_epochs. order "random" shuffles the
        inputs every epoch (seeded); "fixed" visits them in table order, so that the weights
        after each epoch are a deterministic sequence: if one repeats, the rule cycles forever.
        Returns a dict: w, converged, epochs, updates, accuracy (after each epoch), best
        (the best accuracy of any weight vector visited, after any single update), cycle
        (epochs i < j after which the weights were equal, or None)."""
        rng = np.random.default_rng(self.seed + 1)
        w = self.init()
        seen, cycle = {w.tobytes(): 0}, None
        accs, updates, best = [], 0, float(np.mean(self.predict(w, X) == y))
        for epoch in range(1, max_epochs + 1):
            mistakes = 0
            for i in (rng.permutation(len(X)) if order == "random" else range(len(X))):
                new = self.update(w, X[i], y[i])
                if not np.array_equal(new, w):
                    mistakes += 1
                    best = max(best, float(np.mean(self.predict(new, X) == y)))
                w = new
            updates += mistakes
            accs.append(float(np.mean(self.predict(w, X) == y)))
            if mistakes == 0:
                return dict(w=w, converged=True, epochs=epoch, updates=updates, accuracy=accs,
                            best=best, cycle=None)
            if order == "fixed" and cycle is None:
                key = w.tobytes()
                if key in seen:
                    cycle = (seen[key], epoch)
                seen.setdefault(key, epoch)
        return dict(w=w, converged=False, epochs=max_epochs, updates=updates, accuracy=accs,
                    best=best, cycle=cycle)


# The model file convention of the `graphc` CLI: example inputs for each traceable function.
EXAMPLES = {
    "update": (np.array([0.5, -1.0, 0.25], np.float32), gate_data("AND")[0][3], np.float32(1)),
    "predict": (np.array([0.5, -1.0, 0.25], np.float32), gate_data("AND")[0]),
}
ENTRY = "update"


def describe(w) -> str:
    w0, w1, w2 = (float(v) for v in w)
    return (f"w = [w0 {w0:+.3f}, w1 {w1:+.3f}, w2 {w2:+.3f}]: "
            f"y = 1 iff {w1:.3f}·x1 + {w2:.3f}·x2 ≥ θ = {-w0:.3f}")


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv)
    C.banner("Perceptron learning rule on AND and OR", args)
    t0 = time.perf_counter()
    p = Perceptron(args.backend, args.seed)
    print(f"   initial {describe(p.init())}")
    metrics = {}
    for gate in ("AND", "OR"):
        X, y = gate_data(gate)
        r = p.train(X, y)
        acc = r["accuracy"][-1]
        status = "converged" if r["converged"] else "did NOT converge"
        print(f"   {gate:<3} {status} after {r['epochs']} epochs ({r['updates']} updates); "
              f"accuracy {C.percent(acc)}")
        print(f"       learned {describe(r['w'])}")
        table = "  ".join(f"{int(a)}{int(b)}->{int(o)}" for (_, a, b), o in
                          zip(X, p.predict(r["w"], X)))
        print(f"       predictions {table}")
        metrics[f"{gate}_accuracy"] = acc
        metrics[f"{gate}_epochs"] = r["epochs"]
        metrics[f"{gate}_converged"] = r["converged"]
        metrics[f"{gate}_weights"] = [float(v) for v in r["w"]]
    metrics["pictures"] = C.draw(p.update, args.out, "perceptron_update",
                                 stages=("traced", "optimized"))
    C.show_code(p.update, args)
    return C.finish(metrics, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
