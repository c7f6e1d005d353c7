"""The compiler pipeline: one readable list of named stages.

    traced -> backward -> simplified -> fused -> scheduled -> backend.compile

`optimized` names the graph handed to the backend (the last stage that ran). The stage
names are the ones the CLI (`--stage`), the pictures and the errors use. Passes can be
turned off by name (`passes="-fusion,-cse"`) to measure what each one buys.
"""
from __future__ import annotations

from typing import Callable

from graphc.errors import GraphcError
from graphc.ir import Graph
from graphc.passes.autodiff import expand_grads
from graphc.passes.fusion import fuse
from graphc.passes.schedule import schedule
from graphc.passes.simplify import simplify
from graphc.verify import verify

PIPELINE: list[tuple[str, str, Callable[..., Graph]]] = [
    # (stage name, pass name, function)
    ("backward", "autodiff", lambda g, off: expand_grads(g)),   # grad markers -> backward graph
    ("simplified", "simplify", lambda g, off: simplify(          # folding, identities, CSE, DCE,
        g, use_cse="cse" not in off, use_rules="rules" not in off,  # sums of matmuls merged
        use_merge="merge" not in off)),
    ("fused", "fusion", lambda g, off: fuse(g)),                 # ops grouped into kernels
    ("scheduled", "memory", lambda g, off: schedule(g)),         # kernel order, buffer plan
]
STAGES = ("traced",) + tuple(name for name, _, _ in PIPELINE) + ("optimized",)
PASSES = ("simplify", "rules", "cse", "merge", "fusion", "memory")  # what `passes=` can turn off


def parse_passes(spec: str | None) -> frozenset[str]:
    """'-fusion,-cse' -> {'fusion', 'cse'} (the passes turned off)."""
    off = set()
    for part in (spec or "").split(","):
        part = part.strip()
        if not part:
            continue
        name = part.lstrip("-")
        if not part.startswith("-") or name not in PASSES:
            raise GraphcError(f"bad pass spec {part!r}: write -NAME with NAME one of "
                              f"{', '.join(PASSES)}", stage="pipeline")
        off.add(name)
    if "fusion" in off:
        off.add("memory")  # the memory plan is made over kernels
    return frozenset(off)


def run_pipeline(graph: Graph, passes: str | None = None) -> dict[str, Graph]:
    """Run every stage on a traced graph; returns {stage name: graph}, verified after each.
    `backward` is present only when the graph has grad markers; `optimized` is the last."""
    off = parse_passes(passes)
    stages = {"traced": verify(graph, "traced")}
    g = graph
    for name, pass_name, fn in PIPELINE:
        if pass_name in off:
            continue
        new = fn(g, off)
        if name == "backward" and new is g:
            continue
        g = stages[name] = verify(new, name, allow_grad=False)
    if "backward" not in stages and g is graph:
        verify(g, "optimized", allow_grad=False)
    stages["optimized"] = g
    return stages
