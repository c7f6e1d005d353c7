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


def _out_label(path: str) -> str:
    """An output's pytree path as an index expression: '1.0' -> 'out[1][0]',
    '1.W1' -> 'out[1].W1' (a bare '1.0' would read as the number 1.0)."""
    if path == "out" or (path.startswith("out") and path[3:].isdigit()):
        return path
    parts = path.split(".")
    return "out" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in parts)


def _legend(graph: Graph, columns: int = 3) -> str:
    """One compact node: an HTML-like table of the colours, the derived (backward) style last."""
    entries = list(LEGEND)
    present = {kind(n.op) for n in graph.nodes}
    if "grad" in present:
        entries.insert(-1, ("grad marker", COLOURS["grad"]))
    if "rand" in present:
        entries.insert(-1, ("random", COLOURS["rand"]))
    cells = [f'<TD BGCOLOR="{c}" STYLE="rounded">{k}</TD>' for k, c in entries]
    cells.append('<TD COLOR="#c92a2a" STYLE="dashed"><FONT COLOR="#862e2e">backward (derived)'
                 '</FONT></TD>')
    cells += ['<TD BORDER="0"></TD>'] * (-len(cells) % columns)
    rows = "".join("<TR>" + "".join(cells[i:i + columns]) + "</TR>"
                   for i in range(0, len(cells), columns))
    return ('  legend [shape=plaintext, style="", fontsize=8, margin=0, label=<'
            '<TABLE BORDER="1" STYLE="dotted" CELLBORDER="1" CELLSPACING="3" CELLPADDING="2">'
            f'<TR><TD BORDER="0" COLSPAN="{columns}">legend</TD></TR>{rows}</TABLE>>];')


def param_inputs(graph: Graph) -> set[int]:
    """Inputs something is differentiated against (drawn as parameters)."""
    return {id(n.inputs[1]) for n in graph.nodes if n.op is Op.GRAD}


KERNEL_FILL = {"elementwise": "#f1f6ff", "reduce": "#fff4e6", "matmul": "#fff0f0",
               "movement": "#f8f9fa", "view": "#f8f9fa"}


ADDED, REMOVED = "#2f9e44", "#adb5bd"  # diff colours: ops a pass added / removed


def to_dot(graph: Graph, title: str | None = None, params: set[int] | None = None,
           highlight: set[int] | None = None, legend: bool = True,
           added: set[int] | None = None, removed: list | None = None) -> str:
    """The DOT text of a graph picture. `params`: ids of inputs to draw as parameters;
    `highlight`: ids of nodes to draw with a thick red border. A fused kernel is drawn as a
    cluster holding its body's ops, labelled with its kind and why it was formed. For a
    diff, `added` ops get a thick green border and `removed` ops (of the stage before) are
    listed, greyed, in a cluster of their own."""
    params = param_inputs(graph) if params is None else params
    highlight = highlight or set()
    added = added or set()
    lines = ["digraph graphc {", '  rankdir=TB; nodesep=0.25; ranksep=0.35; newrank=true;',
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
             '  edge [fontname="Helvetica", fontsize=8, color="#495057"];']
    if title:
        lines.append(f'  labelloc=t; label="{_esc(title)}"; fontname="Helvetica"; fontsize=14;')
    edges: list[str] = []        # emitted last, at top level, so clusters keep only their own nodes
    dot_id: dict[int, str] = {}  # node -> DOT node name (a kernel -> its body's result node)

    def emit(g: Graph, prefix: str, inmap: dict[int, str], indent: str):
        names = node_names(g)
        for n in g.nodes:
            if id(n) in inmap:
                dot_id[id(n)] = inmap[id(n)]
                continue
            nid = names[id(n)][1:]
            did = f"{prefix}n{nid}"
            if n.op is Op.FUSED:
                body, k = n.attrs["body"], n.attrs["kind"]
                mem = ""
                if "buffer" in n.attrs:
                    b = n.attrs["buffer"]
                    mem = (f", arena+{b}" if b >= 0 else ", own buffer") + \
                        (", in place" if n.attrs["inplace"] else "")
                reason = n.attrs["reason"].split("; ")[0]
                pen = '; penwidth=4; color="#e03131"' if id(n) in highlight else ""
                lines.append(f'{indent}subgraph cluster_{prefix}{n.attrs["name"]} {{')
                lines.append(f'{indent}  label="{n.attrs["name"]}: {k} kernel{mem}\\l'
                             f'{_esc(reason[:70])}\\l"; labeljust=l; fontsize=9; '
                             f'style="rounded,filled"; fillcolor="{KERNEL_FILL.get(k, "#ffffff")}"'
                             f'; color="#868e96"{pen};')
                bmap = {id(b): dot_id[id(x)] for b, x in zip(body.inputs, n.inputs)}
                emit(body, f"{prefix}{n.attrs['name']}_", bmap, indent + "  ")
                lines.append(f"{indent}}}")
                dot_id[id(n)] = dot_id[id(body.outputs[0])]
                continue
            dot_id[id(n)] = did
            loc = f"\\n{_esc(str(n.loc))}" if n.loc else ""
            style, extra = "rounded,filled", ""
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
            backward = n.loc is not None and n.loc.backward
            if backward:
                style += ",dashed"
                extra += ', color="#c92a2a", fontcolor="#862e2e"'
            if id(n) in highlight:
                extra += ', color="#e03131", penwidth=4'
            elif id(n) in added:
                extra += f', color="{ADDED}", penwidth=3'
            lines.append(f'{indent}{did} [label="{label}", fillcolor="{fill}", style="{style}"{extra}];')
            colour = ', color="#c92a2a"' if backward else ""
            for x in n.inputs:
                edges.append(f'  {dot_id[id(x)]} -> {did} [label=" {x.type}"{colour}];')

    emit(graph, "", {}, "  ")
    if removed:
        lines.append(f'  subgraph cluster_removed {{ label="removed by the pass ({len(removed)} ops)";'
                     f' fontsize=9; style="rounded,dashed"; color="{REMOVED}";')
        for i, n in enumerate(removed):
            where = f"\\n{_esc(str(n.loc))}" if n.loc else ""
            lines.append(f'    removed{i} [label="{n.op.value} {n.type}{where}", fontsize=8, '
                         f'style="rounded,dashed", color="{REMOVED}", fontcolor="#868e96"];')
        lines.append("  }")
    lines.extend(edges)
    out_names = graph.output_names or tuple(f"out{i}" for i in range(len(graph.outputs)))
    for i, (o, nm) in enumerate(zip(graph.outputs, out_names)):
        lines.append(f'  out{i} [label="{_esc(_out_label(str(nm)))}\\noutput", shape=ellipse, '
                     f'fillcolor="#d0bfff"];')
        lines.append(f'  {dot_id[id(o)]} -> out{i} [label=" {o.type}"];')
    if legend:
        lines.append(_legend(graph))
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
         highlight=None, diff_from: str | None = None) -> Path:
    """Draw a Graph, or one stage of a compiled function, to `path` (.svg, .png or .dot).
    `diff_from="simplified"` (with stage="fused") draws what the passes between the two
    stages did: ops they added outlined green, ops they removed listed greyed.

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
    added, removed = None, None
    if diff_from is not None:
        from graphc.report import diff
        removed, new_ops = diff(graph_or_compiled.graph(diff_from), graph)
        added = {id(n) for n in new_ops}
        title = f"{graph.name}: {diff_from} -> {stage} ({len(removed)} ops removed, " \
                f"{len(new_ops)} added)"
    return render(to_dot(graph, title=title, params=params, highlight=hl, added=added,
                         removed=removed), path)
