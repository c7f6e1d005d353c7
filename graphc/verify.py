"""The IR verifier, run between pipeline stages: arity, types, acyclicity, stage invariants."""
from __future__ import annotations

from graphc.errors import VerifyError
from graphc.ir import Graph
from graphc.ops import OPS, Op
from graphc.printer import format_node, node_names


def verify(graph: Graph, stage: str = "verify", allow_grad: bool = True) -> Graph:
    """Check `graph` and return it; raise VerifyError naming the stage and the node otherwise.

    `allow_grad=False` is the invariant after the backward stage: no `grad` node is left.
    """
    names = node_names(graph)

    def fail(msg, n=None):
        loc = str(n.loc.full) if n is not None and n.loc else None
        raise VerifyError(msg, stage=stage, node=format_node(n, names) if n is not None else None,
                          loc=loc)

    input_ids = {id(n) for n in graph.inputs}
    if len(input_ids) != len(graph.inputs):
        fail("an input node is listed twice")
    seen_names = set()
    for n in graph.inputs:
        if n.op is not Op.INPUT:
            fail("graph inputs must be input nodes", n)
        if n.attrs["name"] in seen_names:
            fail(f"two inputs are named {n.attrs['name']!r}", n)
        seen_names.add(n.attrs["name"])
    if graph.output_names is not None and len(graph.output_names) != len(graph.outputs):
        fail("output_names does not match the outputs")
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    for n in graph.nodes:
        d = OPS.get(n.op)
        if d is None:
            fail(f"unknown op {n.op}", n)
        if n.op is Op.INPUT and id(n) not in input_ids:
            fail("input node is not among the graph's inputs", n)
        if n.op is Op.GRAD and not allow_grad:
            fail("grad node left after the backward stage", n)
        if d.arity >= 0 and len(n.inputs) != d.arity:
            fail(f"{n.op.value} takes {d.arity} inputs, has {len(n.inputs)}", n)
        for i in n.inputs:
            if position[id(i)] >= position[id(n)]:
                fail("an input comes after its user (cycle or bad order)", n)
        try:
            t = d.infer(tuple(i.type for i in n.inputs), **n.attrs)
        except (ValueError, TypeError) as e:
            fail(f"type rule rejects the node: {e}", n)
        if t != n.type:
            fail(f"recorded type {n.type} but the rule gives {t}", n)
        if n.op is Op.FUSED:
            verify(n.attrs["body"], f"{stage}: body of {n.attrs['name']}", allow_grad=False)
    return graph
