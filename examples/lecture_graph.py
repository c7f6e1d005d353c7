"""The lecture's computational-graph example: f(a, b) = (a + b) * (b + 1).

By the chain rule, at a = 2, b = 1:  f = 6,  df/da = b + 1 = 2,  df/db = (b + 1) + (a + b) = 5.

    python examples/lecture_graph.py                                 # value, grads, out/*.svg
    graphc viz examples/lecture_graph.py --stage all -o out/lecture.svg   # ENTRY: f_and_grads
    graphc show examples/lecture_graph.py:f --grad --stage backward       # f, grads via --grad
"""
import argparse
from pathlib import Path

import numpy as np

import graphc as gc
from graphc import backends


def f(a, b):
    return (a + b) * (b + 1)


def f_and_grads(a, b):
    """(f(a, b), (df/da, df/db)): the gradient is part of the traced function."""
    return gc.value_and_grad(f, argnums=(0, 1))(a, b)


# The model file convention of the `graphc` CLI: example inputs for each traceable function.
EXAMPLES = {
    "f": (np.float32(2.0), np.float32(1.0)),
    "f_and_grads": (np.float32(2.0), np.float32(1.0)),
}
ENTRY = "f_and_grads"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="numpy", choices=backends.names())
    parser.add_argument("--out", default="out", help="folder for the pictures (default out/)")
    args = parser.parse_args(argv)

    fc = gc.compile(f_and_grads, backend=args.backend)
    a, b = EXAMPLES["f_and_grads"]
    value, (da, db) = fc(a, b)
    print(f"f({a}, {b}) = {value}")
    print(f"df/da = {da}   (b + 1)")
    print(f"df/db = {db}   ((b + 1) + (a + b))")
    for stage, graph in fc.stages.items():
        path = gc.draw(fc, stage=stage, path=Path(args.out) / f"lecture.{stage}.svg")
        print(f"{stage:<10} {len(graph.nodes):>3} nodes -> {path}")
    print()
    print(fc.graph("backward"))


if __name__ == "__main__":
    main()
