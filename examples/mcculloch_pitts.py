"""McCulloch-Pitts units (1943): AND, OR, NOR, NOT, and an XOR network built from them.

Lecture items (see /work/shared/lectures.md): §4.1 (the McCulloch-Pitts neuron), §2.1 (the
Heaviside / step threshold, gradient 0 by B.11), §9.1 (AND / OR / NOR / NOT with the standard
thresholds: 3-input AND θ = 3, OR θ = 1, NOR θ = 0 with every input inhibitory, NOT θ = 0
with one inhibitory input, tested against the Boolean truth tables) and §4.8 / §9.6
("feedforward MP networks can compute any Boolean function": XOR as two MP layers).

A unit sees Boolean inputs, some of them inhibitory: y = 0 if any inhibitory input is on,
otherwise y = 1 iff g(x) = Σ x_i ≥ θ. Here it is written with graphc ops (`gc.sum`, `gc.max`,
`F.step`), compiled for the chosen backend and evaluated on every row of each truth table.
The last part differentiates a unit with respect to its threshold: the step function has
gradient 0 everywhere, which is why these units cannot be trained by gradient descent (the
perceptron rule, examples/perceptron.py, and the sigmoid neuron, examples/xor.py, follow).

    python examples/mcculloch_pitts.py [--backend numpy] [--out out/]
    graphc viz examples/mcculloch_pitts.py:units --stage all -o out/mp.svg

Pictures: out/mcculloch_pitts.{traced,optimized}.svg (all units as one graph) and
out/mp_threshold_grad.{traced,backward}.svg (d output / d θ).
"""
from __future__ import annotations

import sys
import time

import numpy as np

import graphc as gc
from graphc.nn import functional as F

import _common as C

# name -> (number of inputs, threshold θ, inhibitory mask), §9.1
UNITS = {
    "AND": (3, 3.0, (0, 0, 0)),
    "OR": (3, 1.0, (0, 0, 0)),
    "NOR": (3, 0.0, (1, 1, 1)),
    "NOT": (1, 0.0, (1,)),
}
TRUTH = {
    "AND": lambda x: np.all(x, axis=1),
    "OR": lambda x: np.any(x, axis=1),
    "NOR": lambda x: ~np.any(x, axis=1),
    "NOT": lambda x: ~x[:, 0],
    "XOR": lambda x: x[:, 0] != x[:, 1],
}


def mp_unit(x, theta, inhibitory):
    """A McCulloch-Pitts unit on a batch of Boolean rows x (N, n): 0 if any inhibitory input
    is on, else step(Σ excitatory x_i ≥ θ). `inhibitory` is a constant 0/1 mask (n,)."""
    inh = np.asarray(inhibitory, np.float32)
    g = gc.sum(x * (1 - inh), axis=1)                  # g(x): sum of the excitatory inputs
    vetoed = gc.max(x * inh, axis=1)                   # 1 if any inhibitory input is on
    return F.step(g, threshold=theta) * (1 - vetoed)


def units(x3, x1, x2):
    """Every unit of UNITS on its truth table, plus XOR = OR(x1 AND NOT x2, NOT x1 AND x2) as
    a two-layer MP network (§9.6): the hidden units use one inhibitory input each."""
    out = {}
    for name, (n, theta, inh) in UNITS.items():
        out[name] = mp_unit(x3 if n == 3 else x1, theta, inh)
    h1 = mp_unit(x2, 1.0, (0, 1))                      # x1 AND NOT x2
    h2 = mp_unit(x2, 1.0, (1, 0))                      # NOT x1 AND x2
    hidden = gc.stack([h1, h2], axis=1)
    out["XOR"] = mp_unit(hidden, 1.0, (0, 0))          # OR of the two hidden units
    return out


# The model file convention of the `graphc` CLI (`graphc viz examples/mcculloch_pitts.py`):
# example inputs for each traceable function.
EXAMPLES = {"units": (C.truth_table(3), C.truth_table(1), C.truth_table(2))}
ENTRY = "units"


def main(argv=None) -> dict:
    args = C.parse_args(__doc__, argv)
    C.banner("McCulloch-Pitts units", args)
    t0 = time.perf_counter()
    tables = {1: C.truth_table(1), 2: C.truth_table(2), 3: C.truth_table(3)}
    f = gc.compile(units, backend=args.backend)
    outs = f(tables[3], tables[1], tables[2])
    metrics = {}
    for name, y in outs.items():
        n, theta, inh = UNITS.get(name, (2, None, None))
        x = tables[n]
        want = TRUTH[name](x.astype(bool)).astype(np.float32)
        acc = float(np.mean(y == want))
        metrics[f"{name}_accuracy"] = acc
        desc = f"θ = {theta:g}, inhibitory {inh}" if theta is not None else "two MP layers"
        table = "  ".join(f"{''.join(map(str, row))}->{yi}" for row, yi in
                          zip(x.astype(int), y.astype(int)))
        print(f"   {name:<4} {desc:<28} {table}   matches the truth table: {C.percent(acc)}")
    pictures = C.draw(f, args.out, "mcculloch_pitts", stages=("traced", "optimized"))

    # d(Σ outputs)/dθ of the AND unit: the step has gradient 0, so there is nothing to learn from
    dtheta = gc.compile(gc.grad(lambda theta, x: gc.sum(mp_unit(x, theta, (0, 0, 0)))),
                        backend=args.backend)
    g = float(dtheta(np.float32(2.5), tables[3]))
    print(f"   d(Σ AND outputs)/dθ at θ = 2.5: {g} (the step function's gradient is 0, B.11)")
    metrics["threshold_gradient"] = g
    pictures += C.draw(dtheta, args.out, "mp_threshold_grad", stages=("traced", "backward"))
    C.show_code(f, args)
    metrics["pictures"] = pictures
    return C.finish(metrics, t0)


if __name__ == "__main__":
    main(sys.argv[1:])
