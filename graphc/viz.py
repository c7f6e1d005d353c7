"""Graphviz pictures of any stage: ops coloured by kind, shapes and dtypes on the edges,
inputs, parameters, constants and outputs drawn distinctly, and the backward part (nodes
the autodiff pass derived) drawn dashed in red so it stands apart from the forward part.

Rendering uses a system `dot` when there is one, else the `graphviz-pure` program that
pip installs, so no system package is needed.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from graphc.errors import GraphcError
from graphc.ir import Graph
from graphc.ops import Op, kind
from graphc.printer import format_attrs, node_names

COLOURS = {  # op kind -> fill colour
    "elementwise": "#cfe2ff", "reduce": "#ffd8a8", "movement": "#e9ecef",
    "matmul": "#ffc9c9", "grad": "#fff3bf", "rand": "#e6fcf5",
}
LEGEND = [("input", "#b2f2bb"), ("parameter", "#ffec99"), ("const", "#f8f9fa"),
          ("elementwise", COLOURS["elementwise"]), ("reduce", COLOURS["reduce"]),
          ("movement", COLOURS["movement"]), ("matmul", COLOURS["matmul"]),
          ("output", "#d0bfff")]


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("<", "\\<").replace(">", "\\>")


def param_inputs(graph: Graph) -> set[int]:
    """Inputs something is differentiated against (drawn as parameters)."""
    return {id(n.inputs[1]) for n in graph.nodes if n.op is Op.GRAD}


def to_dot(graph: Graph, title: str | None = None, params: set[int] | None = None,
           highlight: set[int] | None = None, legend: bool = True) -> str:
    """The DOT text of a graph picture. `params`: ids of inputs to draw as parameters;
    `highlight`: ids of nodes to draw with a thick red border."""
    names = node_names(graph)
    params = param_inputs(graph) if params is None else params
    highlight = highlight or set()
    lines = ["digraph graphc {", '  rankdir=TB; nodesep=0.25; ranksep=0.35;',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8, color="#495057"];']
    if title:
        lines.append(f'  labelloc=t; label="{_esc(title)}"; fontname="Helvetica"; fontsize=14;')
    backward = set()
    for n in graph.nodes:
        nid = names[id(n)][1:]
        loc = f"\\n{_esc(str(n.loc))}" if n.loc else ""
        style = "rounded,filled"
        extra = ""
        if n.op is Op.INPUT:
            is_param = id(n) in params
            fill = "#ffec99" if is_param else "#b2f2bb"
            label = f"{n.attrs['name']}\\n{'parameter' if is_param else 'input'} {n.type}"
            extra = ", shape=ellipse"
        elif n.op is Op.CONST:
            fill = "#f8f9fa"
            label = f"const {_esc(repr(n.attrs['value']))}"
            extra = ", fontsize=8, height=0.2"
        else:
            fill = COLOURS.get(kind(n.op), "#ffffff")
            attrs = format_attrs(n.attrs, n.op)
            label = f"%{nid} {n.op.value}" + (f"\\n{_esc(attrs)}" if attrs else "") + loc
        if n.loc is not None and n.loc.backward:
            backward.add(id(n))
            style += ",dashed"
            extra += ', color="#c92a2a", fontcolor="#862e2e"'
        if id(n) in highlight:
            extra += ', color="#e03131", penwidth=4'
        lines.append(f'  n{nid} [label="{label}", fillcolor="{fill}", style="{style}"{extra}];')
    for n in graph.nodes:
        for x in n.inputs:
            colour = ', color="#c92a2a"' if id(n) in backward else ""
            lines.append(f'  n{names[id(x)][1:]} -> n{names[id(n)][1:]} '
                         f'[label=" {x.type}"{colour}];')
    out_names = graph.output_names or tuple(f"out{i}" for i in range(len(graph.outputs)))
    for i, (o, nm) in enumerate(zip(graph.outputs, out_names)):
        lines.append(f'  out{i} [label="{_esc(str(nm))}\\noutput", shape=ellipse, '
                     f'fillcolor="#d0bfff"];')
        lines.append(f'  n{names[id(o)][1:]} -> out{i} [label=" {o.type}"];')
    if legend:
        lines.append('  subgraph cluster_legend { label="legend"; fontsize=9; style=dotted;')
        for k, c in LEGEND:
            lines.append(f'    "legend_{k}" [label="{k}", fillcolor="{c}", fontsize=8, height=0.2];')
        lines.append('    "legend_backward" [label="backward (derived)", style="rounded,dashed", '
                     'color="#c92a2a", fontsize=8, height=0.2];')
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def dot_program() -> list[str]:
    """The layout program: a system `dot` if present, else pip's `graphviz-pure`."""
    dot = shutil.which("dot")
    if dot:
        return [dot]
    for cand in (shutil.which("graphviz-pure"), str(Path(sys.executable).parent / "graphviz-pure")):
        if cand and os.path.exists(cand):
            return [cand]
    raise GraphcError("no graphviz layout program found", stage="draw",
                      hint='pip install graphviz-pure (or write DOT with path="x.dot")')


def render(dot_text: str, path: str | os.PathLike) -> Path:
    """Write DOT text as .dot, .svg or .png (chosen by the path's suffix)."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "svg"
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt in ("dot", "gv"):
        path.write_text(dot_text)
        return path
    if fmt not in ("svg", "png"):
        raise GraphcError(f"cannot draw to {path.name}: use .svg, .png or .dot", stage="draw")
    proc = subprocess.run(dot_program() + [f"-T{fmt}", "-o", str(path)], input=dot_text.encode(),
                          capture_output=True)
    if proc.returncode != 0:
        raise GraphcError(f"graphviz failed: {proc.stderr.decode(errors='replace')}", stage="draw")
    return path


def draw(graph_or_compiled, stage: str = "optimized", path="graph.svg",
         highlight=None) -> Path:
    """Draw a Graph, or one stage of a compiled function, to `path` (.svg, .png or .dot).

    >>> import numpy as np, graphc as gc
    >>> f = gc.compile(gc.grad(lambda w: gc.tanh(w).sum()))
    >>> _ = f(np.ones(3))
    >>> gc.draw(f, stage="backward", path="/tmp/graphc_doc.dot").suffix
    '.dot'
    """
    if isinstance(graph_or_compiled, Graph):
        graph, params, title = graph_or_compiled, None, graph_or_compiled.name
    else:
        stages = graph_or_compiled.stages
        graph = graph_or_compiled.graph(stage)
        params = param_inputs(stages["traced"])
        title = f"{graph.name}: stage {stage}"
    hl = {id(n) for n in highlight} if highlight else None
    return render(to_dot(graph, title=title, params=params, highlight=hl), path)
