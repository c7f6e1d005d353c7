"""The compiler pipeline: one readable list of named stages.

    traced  --backward-->  backward  --optimized-->  optimized  --> backend.compile

The stage names are the ones the CLI (`--stage`), the pictures and the errors use.
"""
from __future__ import annotations

from typing import Callable

from graphc.ir import Graph
from graphc.passes.autodiff import expand_grads
from graphc.passes.simplify import simplify
from graphc.verify import verify

PIPELINE: list[tuple[str, Callable[[Graph], Graph]]] = [
    ("backward", expand_grads),   # replace grad markers by the derived backward graph
    ("optimized", simplify),      # constant folding, CSE, dead-code elimination
]
STAGES = ("traced",) + tuple(name for name, _ in PIPELINE)


def run_pipeline(graph: Graph) -> dict[str, Graph]:
    """Run every stage on a traced graph; returns {stage name: graph}, verified after each.
    `backward` is present only when the graph contains grad markers."""
    stages = {"traced": verify(graph, "traced")}
    g = graph
    for name, fn in PIPELINE:
        new = fn(g)
        if name == "backward" and new is g:
            continue
        g = stages[name] = verify(new, name, allow_grad=False)
    return stages
