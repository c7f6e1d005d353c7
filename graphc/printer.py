"""The deterministic text form of a graph, in the style of a jaxpr:

    graph f(%0:f32[2] a, %1:f32[2] b) {
      %2:f32[2] = add %0 %1        # model.py:3
      return %2
    }

Names are a counter in graph order, never `id()`, so the text is stable across runs.
"""
from __future__ import annotations

from typing import Mapping

from graphc.ops import Op
from graphc.types import DType

_HIDDEN = {Op.INPUT: {"name", "shape", "dtype", "role"}, Op.FUSED: {"body", "reason", "name"}}


def format_value(v) -> str:
    if isinstance(v, DType):
        return v.name
    if isinstance(v, tuple):
        return "(" + ",".join(format_value(x) for x in v) + ("," if len(v) == 1 else "") + ")"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    return repr(v) if isinstance(v, str) else str(v)


def format_attrs(attrs: Mapping, op: Op | None = None) -> str:
    hidden = _HIDDEN.get(op, set())
    return " ".join(f"{k}={format_value(v)}" for k, v in attrs.items() if k not in hidden)


def format_node(node, names: Mapping[int, str]) -> str:
    """`%3:f32[4,8] = mul %1 %2 axes=(0,)` (without the location comment)."""
    args = " ".join(names.get(id(i), "?") for i in node.inputs)
    if node.op is Op.CONST:
        args = repr(node.attrs["value"])
        attrs = ""
    elif node.op is Op.FUSED:
        ops = " ".join(n.op.value for n in node.attrs["body"].nodes
                       if n.op not in (Op.INPUT, Op.CONST))
        mem = ""
        if "buffer" in node.attrs:
            b = node.attrs["buffer"]
            mem = (f" @arena+{b}" if b >= 0 else " @own") + (" inplace" if node.attrs["inplace"] else "")
            if "donated" in node.attrs:
                mem = f" @into-input{node.attrs['donated']}"
        return (f"{names.get(id(node), '%?')}:{node.type} = fused.{node.attrs['name']} {args} "
                f"kind={node.attrs['kind']}{mem} {{{ops}}}")
    else:
        attrs = format_attrs(node.attrs, node.op)
    rhs = " ".join(p for p in (node.op.value, args, attrs) if p)
    return f"{names.get(id(node), '%?')}:{node.type} = {rhs}"


def node_names(graph) -> dict[int, str]:
    return {id(n): f"%{i}" for i, n in enumerate(graph.nodes)}


def format_graph(graph, width: int = 56) -> str:
    names = node_names(graph)
    params = ", ".join(f"{names[id(n)]}:{n.type} {n.attrs['name']}" for n in graph.inputs)
    lines = [f"graph {graph.name}({params}) {{"]
    for n in graph.nodes:
        if n.op is Op.INPUT:
            continue
        text = "  " + format_node(n, names)
        if n.loc is not None:
            text = f"{text:<{width}}  # {n.loc}"
        lines.append(text)
        if n.op is Op.FUSED:  # the body, indented, like a nested jaxpr
            body = format_graph(n.attrs["body"], width - 4).splitlines()
            lines.extend("      " + b for b in body[1:-2])
    outs = ", ".join(names[id(o)] for o in graph.outputs)
    if graph.output_names:
        outs += "  # " + ", ".join(graph.output_names)
    lines.append(f"  return {outs}")
    lines.append("}")
    return "\n".join(lines)
