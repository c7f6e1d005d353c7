"""XOR: a single perceptron cannot learn it, an MLP with 4 hidden units can.

Lecture items (see /work/shared/lectures.md): §9.3 (the XOR truth table and the infeasibility
proof: a perceptron needs w0 < 0, w2 ≥ −w0, w1 ≥ −w0 and w1 + w2 < −w0, and the last condition
contradicts the two before it), §9.2 (the perceptron rule does not converge on XOR: it cycles),
§4.7 / §9.5 (homework "Solve XOR using an MLP with 4 hidden units": MLP 2-4-1, sigmoid + binary
cross-entropy, trained to 100% with a fixed seed), §4.8 / §9.6 (one hidden layer of 2ⁿ = 4
perceptrons, one per input pattern, plus an output perceptron represents any Boolean
function of n = 2 inputs), §9.4 (the hidden representation), §3.5 (BCE on logits).

Three parts:
1. the perceptron rule of examples/perceptron.py on XOR, visiting the inputs in table order:
   the weights after some epoch equal those after an earlier one, so it cycles forever;
   accuracy stays below 100% (at most 3 of 4 rows) and the violated inequality is printed;
2. the 2ⁿ-hidden-perceptron construction of §9.6, with hand-set weights (no training);
3. an MLP 2-4-1 (sigmoid hidden units) trained with `graphc.train.TrainStep`: the whole step
   (forward, BCE-with-logits, backward, Adam update) is one compiled graph; full batch.

    python examples/xor.py [--backend numpy] [--quick] [--epochs N] [--out out/]

Pictures: out/xor_mlp_step.{traced,backward,fused}.svg (the training step's stages).
"""
from __future__ import annotations

import sys
import time
from collections import OrderedDict

import numpy as np

import graphc as gc
from graphc import nn
from graphc.nn import functional as F

import _common as C
from perceptron import Perceptron, describe, gate_data

HIDDEN = 4
LR = 0.1


def perceptron_part(args) -> dict:
    X, y = gate_data("XOR")
    r = Perceptron(args.backend, args.seed).train(X, y, order="fixed")
    w0, w1, w2 = (float(v) for v in r["w"])
    best = r["best"]
    print(f"   1. perceptron rule on XOR: converged = {r['converged']} after {r['epochs']} epochs "
          f"({r['updates']} updates); accuracy {C.percent(r['accuracy'][-1])} at the end, "
          f"{C.percent(best)} at best (over every weight vector it visited)")
    if r["cycle"]:
        i, j = r["cycle"]
        print(f"      the weights after epoch {j} equal those after epoch {i}: the rule cycles "
              f"with period {j - i} epoch(s) and never stops")
    print(f"      last {describe(r['w'])}")
    # §9.3: the four rows demand w0 < 0, w0 + w2 >= 0, w0 + w1 >= 0, w0 + w1 + w2 < 0;
    # adding the middle two gives 2·w0 + w1 + w2 >= 0, so w0 + w1 + w2 >= −w0 > 0: impossible.
    conds = [("00 -> 0 needs w0 < 0", w0 < 0), ("01 -> 1 needs w0 + w2 ≥ 0", w0 + w2 >= 0),
             ("10 -> 1 needs w0 + w1 ≥ 0", w0 + w1 >= 0),
             ("11 -> 0 needs w0 + w1 + w2 < 0", w0 + w1 + w2 < 0)]
    print("      conditions (§9.3): " + "; ".join(f"{c}: {'ok' if ok else 'VIOLATED'}"
                                                 for c, ok in conds))
    print("      conditions 2 and 3 give w1 + w2 ≥ −2·w0 > −w0, contradicting condition 4: "
          "no line separates XOR's classes")
    return {"perceptron_accuracy": r["accuracy"][-1], "perceptron_best_accuracy": best,
            "perceptron_converged": r["converged"], "perceptron_cycle": r["cycle"]}


def boolean_network(x, target):
    """§9.6: hidden perceptron j fires only for input pattern j (weights +1 where the pattern
    has a 1, −1 where it has a 0, bias −(number of ones)); the output perceptron sums the
    hidden units of the patterns whose target is 1 and fires at ≥ 1."""
    patterns = C.truth_table(2)
    W = 2 * patterns - 1                              # (4 hidden, 2 inputs), the (out, in) layout
    b = -patterns.sum(1)
    h = F.step(x @ W.T + b, threshold=0.0)            # one-hot code of the input pattern
    return F.step(h @ target, threshold=1.0), h


# The model file convention of the `graphc` CLI: example inputs for each traceable function.
EXAMPLES = {"boolean_network": (C.truth_table(2), np.array([0, 1, 1, 0], np.float32))}
ENTRY = "boolean_network"


def construction_part(args) -> dict:
    X, y = gate_data("XOR")
    x = X[:, 1:]
    out, h = gc.compile(boolean_network, backend=args.backend)(x, y)
    acc = float(np.mean(out == y))
    rows = "  ".join(f"{int(a)}{int(b)}->({''.join(str(int(v)) for v in hi)})->{int(o)}"
                     for (a, b), hi, o in zip(x, h, out))
    print(f"   2. 2ⁿ = 4 hidden perceptrons (§9.6), hand-set weights: {rows}   "
          f"accuracy {C.percent(acc)}")
    return {"construction_accuracy": acc}


def mlp_part(args) -> dict:
    X, y = gate_data("XOR")
    x, t = X[:, 1:], y.reshape(4, 1)
    model = nn.Sequential(OrderedDict(
        hidden=nn.Linear(2, HIDDEN, seed=args.seed), act=nn.Sigmoid(),
        out=nn.Linear(HIDDEN, 1, seed=args.seed + 1)))
    step = gc.train.TrainStep(model, F.binary_cross_entropy_with_logits, gc.optim.Adam(lr=LR),
                              backend=args.backend)
    with C.Timer() as tm:
        for epoch in range(args.epochs):
            r = step(x, t)                        # full batch: one step per epoch
    acc = gc.train.accuracy(step.evaluate(x), y)
    ms = 1e3 * tm.seconds / args.epochs
    print(f"   3. MLP 2-{HIDDEN}-1 (sigmoid, BCE with logits, Adam lr {LR}): {args.epochs} "
          f"full-batch steps in {tm.seconds:.2f} s ({ms:.2f} ms per step); final loss "
          f"{r.loss:.4f}, accuracy {C.percent(acc)}")
    print(f"      {C.compile_times(step.compiled)}")
    step.sync()
    hidden = model[:2](x)                         # the hidden representation (§9.4)
    prob = F.sigmoid(step.evaluate(x))[:, 0]
    for xi, hi, p in zip(x.astype(int), hidden, prob):
        h = ", ".join(f"{v:.2f}" for v in hi)
        print(f"      x = {xi[0]}{xi[1]}  hidden σ(W1 x + b1) = [{h}]  p(y=1) = {p:.3f}")
    pictures = C.draw(step.compiled, args.out, "xor_mlp_step")
    C.show_code(step.compiled, args)
    return {"mlp_accuracy": acc, "mlp_loss": r.loss, "ms_per_step": ms, "pictures": pictures}


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv, epochs=1000, quick_epochs=500)
    C.banner("XOR: perceptron vs MLP with 4 hidden units", args)
    t0 = time.perf_counter()
    metrics = {}
    metrics.update(perceptron_part(args))
    metrics.update(construction_part(args))
    metrics.update(mlp_part(args))
    return C.finish(metrics, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
